//! Recursive-descent parser for the OpenFGA DSL (schema 1.1).

use std::collections::BTreeMap;

use super::scanner::{Scanner, Tok, Token};
use crate::error::{ModelError, ModelErrorKind, Span};
use crate::model::{
    ConditionDefinition, ModelData, ParamType, RelationDefinition, TypeDefinition, TypeRestriction,
    Userset,
};

/// Maximum nesting of parentheses in a relation definition.
const MAX_NESTING: usize = 64;

/// Where things were defined in the DSL source (0-based lines).
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    /// Line of each `type` declaration.
    pub type_lines: BTreeMap<String, usize>,
    /// Line of each `define` keyed by (type, relation).
    pub relation_lines: BTreeMap<(String, String), usize>,
    /// Line of each `condition` declaration.
    pub condition_lines: BTreeMap<String, usize>,
    /// The source lines.
    pub lines: Vec<String>,
    /// The module name, for a module file (`module x`).
    pub module: Option<String>,
    /// Types the file extends (`extend type x`), in order.
    pub extended: Vec<String>,
}

type PResult<T> = Result<T, ModelError>;

pub(crate) struct Parser<'a> {
    scanner: Scanner<'a>,
    current: Token,
    nesting: usize,
    map: SourceMap,
    /// Whether the file is a module (`module name` header, schema 1.2).
    modular: bool,
    /// Types extended in this file (`extend type x`).
    extended: Vec<String>,
    /// Problems that do not stop the parse (OpenFGA's listener errors).
    soft: Vec<ModelError>,
}

fn err_at(tok: &Token, message: String) -> ModelError {
    ModelError {
        message,
        kind: ModelErrorKind::Syntax,
        symbol: Some(tok.display()),
        span: Some(Span {
            line: tok.line,
            start_column: tok.col,
            end_column: tok.col + tok.len.max(1),
        }),
    }
}

/// Parse DSL text into model data and a source map.
pub fn parse_dsl(src: &str) -> PResult<(ModelData, SourceMap)> {
    parse_dsl_all(src).map_err(|mut errors| {
        if errors.is_empty() {
            err_at(
                &Token {
                    tok: Tok::Eof,
                    line: 0,
                    col: 0,
                    len: 0,
                },
                "invalid model".into(),
            )
        } else {
            errors.swap_remove(0)
        }
    })
}

/// Parse DSL text, returning every problem found when it is not valid.
pub fn parse_dsl_all(src: &str) -> Result<(ModelData, SourceMap), Vec<ModelError>> {
    let mut p = Parser::new(src);
    let data = p.parse_file().map_err(|e| vec![e])?;
    if !p.soft.is_empty() {
        return Err(p.soft);
    }
    Ok((data, p.map))
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        let mut scanner = Scanner::new(src);
        let current = scanner.next_token();
        let map = SourceMap {
            lines: src.split('\n').map(str::to_owned).collect(),
            ..SourceMap::default()
        };
        Self {
            scanner,
            current,
            nesting: 0,
            map,
            modular: false,
            extended: Vec::new(),
            soft: Vec::new(),
        }
    }

    fn advance(&mut self) -> Token {
        let next = self.scanner.next_token();
        std::mem::replace(&mut self.current, next)
    }

    fn mismatch(&self, expecting: &str) -> ModelError {
        err_at(
            &self.current,
            format!(
                "mismatched input '{}' expecting {expecting}",
                self.current.display()
            ),
        )
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(&self.current.tok, Tok::Word(x) if x == w)
    }

    fn is_punct(&self, c: char) -> bool {
        self.current.tok == Tok::Punct(c)
    }

    fn expect_word(&mut self, w: &str) -> PResult<Token> {
        if self.is_word(w) {
            Ok(self.advance())
        } else {
            Err(self.mismatch(&format!("'{w}'")))
        }
    }

    fn expect_punct(&mut self, c: char) -> PResult<Token> {
        if self.is_punct(c) {
            Ok(self.advance())
        } else {
            Err(self.mismatch(&format!("'{c}'")))
        }
    }

    fn expect_ident(&mut self, what: &str) -> PResult<(String, Token)> {
        match &self.current.tok {
            Tok::Word(w) => {
                let w = w.clone();
                Ok((w, self.advance()))
            }
            _ => Err(self.mismatch(what)),
        }
    }

    fn skip_newlines(&mut self) {
        while self.current.tok == Tok::Newline {
            self.advance();
        }
    }

    fn expect_line_end(&mut self) -> PResult<()> {
        match self.current.tok {
            Tok::Newline => {
                self.skip_newlines();
                Ok(())
            }
            Tok::Eof => Ok(()),
            _ => Err(self.mismatch("{<EOF>, NEWLINE}")),
        }
    }

    fn parse_file(&mut self) -> PResult<ModelData> {
        self.skip_newlines();
        if self.is_word("module") {
            // A module file has no schema line; it is combined with others
            // (schema 1.2) through an `fga.mod` manifest.
            self.advance();
            let (module, _) = self.expect_ident("IDENTIFIER")?;
            self.map.module = Some(module);
            self.expect_line_end()?;
            self.modular = true;
            let mut data = ModelData::default();
            self.parse_items(&mut data)?;
            return Ok(data);
        }
        self.expect_word("model")?;
        self.expect_line_end()?;
        self.expect_word("schema")?;
        let version = match &self.current.tok {
            // Any dotted version parses; semantic validation rejects all but 1.1.
            Tok::Word(v)
                if v.contains('.') && v.chars().all(|c| c.is_ascii_digit() || c == '.') =>
            {
                v.clone()
            }
            _ => return Err(self.mismatch("SCHEMA_VERSION")),
        };
        self.advance();
        self.expect_line_end()?;
        let mut data = ModelData {
            schema_version: version,
            ..ModelData::default()
        };
        self.parse_items(&mut data)?;
        Ok(data)
    }

    fn parse_items(&mut self, data: &mut ModelData) -> PResult<()> {
        loop {
            self.skip_newlines();
            if self.current.tok == Tok::Eof {
                return Ok(());
            }
            if self.is_word("extend") {
                self.advance();
                if !self.is_word("type") {
                    return Err(self.mismatch("'type'"));
                }
                let t = self.parse_type(true)?;
                data.types.push(t);
            } else if self.is_word("type") {
                let t = self.parse_type(false)?;
                data.types.push(t);
            } else if self.is_word("condition") {
                self.parse_condition(data)?;
            } else {
                return Err(self.mismatch("{'type', 'condition'}"));
            }
        }
    }

    fn parse_type(&mut self, extend: bool) -> PResult<TypeDefinition> {
        let type_tok = self.advance();
        let (name, name_tok) = self.expect_ident("IDENTIFIER")?;
        if extend {
            self.check_extend(&name, &name_tok);
        }
        self.map
            .type_lines
            .entry(name.clone())
            .or_insert(type_tok.line);
        self.expect_line_end()?;
        let mut def = TypeDefinition {
            name,
            relations: Vec::new(),
        };
        if !self.is_word("relations") {
            return Ok(def);
        }
        self.advance();
        self.expect_line_end()?;
        if !self.is_word("define") {
            return Err(self.mismatch("'define'"));
        }
        while self.is_word("define") {
            let rel = self.parse_define(&def.name, &def.relations)?;
            def.relations.push(rel);
            self.expect_line_end()?;
        }
        Ok(def)
    }

    /// OpenFGA's rules for `extend type`: modules only, once per type and file.
    fn check_extend(&mut self, name: &str, name_tok: &Token) {
        let message = if !self.modular {
            "extend can only be used in a modular model".to_owned()
        } else if self.extended.iter().any(|n| n == name) {
            format!("'{name}' is already extended in file.")
        } else {
            self.extended.push(name.to_owned());
            self.map.extended.push(name.to_owned());
            return;
        };
        self.soft.push(err_at(name_tok, message));
    }

    fn parse_define(
        &mut self,
        type_name: &str,
        existing: &[RelationDefinition],
    ) -> PResult<RelationDefinition> {
        let define_tok = self.advance();
        let (name, name_tok) = self.expect_ident("IDENTIFIER")?;
        if existing.iter().any(|r| r.name == name) {
            let mut e = err_at(
                &name_tok,
                format!("'{name}' is already defined in '{type_name}'"),
            );
            e.kind = ModelErrorKind::DuplicatedError;
            return Err(e);
        }
        self.map
            .relation_lines
            .insert((type_name.to_owned(), name.clone()), define_tok.line);
        self.expect_punct(':')?;
        let mut directly_related = Vec::new();
        let rewrite = self.parse_expr(&mut directly_related)?;
        Ok(RelationDefinition {
            name,
            rewrite,
            directly_related,
        })
    }

    fn parse_expr(&mut self, direct: &mut Vec<TypeRestriction>) -> PResult<Userset> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(err_at(
                &self.current,
                "relation definition nested too deeply".into(),
            ));
        }
        let first = self.parse_term(direct, true)?;
        let result = self.parse_partials(first, direct);
        self.nesting -= 1;
        result
    }

    fn parse_partials(
        &mut self,
        first: Userset,
        direct: &mut Vec<TypeRestriction>,
    ) -> PResult<Userset> {
        if self.is_word("but") {
            self.advance();
            self.expect_word("not")?;
            let subtract = self.parse_term(direct, false)?;
            return Ok(Userset::Difference {
                base: Box::new(first),
                subtract: Box::new(subtract),
            });
        }
        let op = if self.is_word("or") {
            "or"
        } else if self.is_word("and") {
            "and"
        } else {
            return Ok(first);
        };
        let mut children = vec![first];
        while self.is_word(op) {
            self.advance();
            children.push(self.parse_term(direct, false)?);
        }
        if self.is_word("or") || self.is_word("and") || self.is_word("but") {
            return Err(self.mismatch("{<EOF>, NEWLINE}"));
        }
        Ok(if op == "or" {
            Userset::Union(children)
        } else {
            Userset::Intersection(children)
        })
    }

    fn parse_term(&mut self, direct: &mut Vec<TypeRestriction>, first: bool) -> PResult<Userset> {
        if self.is_punct('[') {
            if !first {
                return Err(self.mismatch("{'(', IDENTIFIER}"));
            }
            self.parse_direct(direct)?;
            return Ok(Userset::This);
        }
        if self.is_punct('(') {
            self.advance();
            let inner = self.parse_expr(direct)?;
            self.expect_punct(')')?;
            return Ok(inner);
        }
        if ["or", "and", "but", "from"].iter().any(|k| self.is_word(k)) {
            return Err(self.mismatch("{'[', '(', IDENTIFIER}"));
        }
        let (name, _) = self.expect_ident("{'[', '(', IDENTIFIER}")?;
        if self.is_word("from") {
            self.advance();
            let (tupleset, _) = self.expect_ident("IDENTIFIER")?;
            return Ok(Userset::TupleToUserset {
                tupleset,
                computed: name,
            });
        }
        Ok(Userset::Computed(name))
    }

    fn parse_direct(&mut self, direct: &mut Vec<TypeRestriction>) -> PResult<()> {
        self.advance();
        loop {
            direct.push(self.parse_restriction()?);
            if self.is_punct(',') {
                self.advance();
                continue;
            }
            self.expect_punct(']')?;
            return Ok(());
        }
    }

    fn parse_restriction(&mut self) -> PResult<TypeRestriction> {
        let (type_name, _) = self.expect_ident("IDENTIFIER")?;
        let mut r = TypeRestriction::direct(&type_name);
        if self.is_punct(':') {
            self.advance();
            self.expect_punct('*')?;
            r.wildcard = true;
        } else if self.is_punct('#') {
            self.advance();
            let (rel, _) = self.expect_ident("IDENTIFIER")?;
            r.relation = Some(rel);
        }
        if self.is_word("with") {
            self.advance();
            let (cond, _) = self.expect_ident("IDENTIFIER")?;
            r.condition = Some(cond);
        }
        if !self.is_punct(',') && !self.is_punct(']') {
            return Err(self.mismatch("{',', ']'}"));
        }
        Ok(r)
    }

    fn parse_condition(&mut self, data: &mut ModelData) -> PResult<()> {
        let cond_tok = self.advance();
        let (name, name_tok) = self.expect_ident("IDENTIFIER")?;
        if data.conditions.contains_key(&name) {
            let mut e = err_at(
                &name_tok,
                format!("condition '{name}' is already defined in the model"),
            );
            e.kind = ModelErrorKind::DuplicatedError;
            return Err(e);
        }
        self.map.condition_lines.insert(name.clone(), cond_tok.line);
        self.expect_punct('(')?;
        let parameters = self.parse_params(&name)?;
        self.skip_newlines();
        if !self.is_punct('{') {
            return Err(self.mismatch("'{'"));
        }
        // The scanner is already past the `{` token (it is `current`), so the raw
        // block starts right after it.
        let open = self.current.clone();
        let body = self
            .scanner
            .raw_block()
            .ok_or_else(|| err_at(&open, "missing '}' to close the condition".into()))?;
        self.current = self.scanner.next_token();
        let expression = body.trim().to_owned();
        data.conditions.insert(
            name.clone(),
            ConditionDefinition {
                name,
                parameters,
                expression,
            },
        );
        self.expect_line_end()
    }

    fn parse_params(&mut self, cond: &str) -> PResult<Vec<(String, ParamType)>> {
        let mut params: Vec<(String, ParamType)> = Vec::new();
        loop {
            self.skip_newlines();
            let (pname, ptok) = self.expect_ident("IDENTIFIER")?;
            if params.iter().any(|(n, _)| *n == pname) {
                let mut e = err_at(
                    &ptok,
                    format!("parameter '{pname}' is already defined in the condition '{cond}'"),
                );
                e.kind = ModelErrorKind::DuplicatedError;
                return Err(e);
            }
            self.expect_punct(':')?;
            let ptype = self.parse_param_type(0)?;
            params.push((pname, ptype));
            self.skip_newlines();
            if self.is_punct(',') {
                self.advance();
                continue;
            }
            self.expect_punct(')')?;
            return Ok(params);
        }
    }

    fn parse_param_type(&mut self, depth: usize) -> PResult<ParamType> {
        if depth > 8 {
            return Err(err_at(
                &self.current,
                "parameter type nested too deeply".into(),
            ));
        }
        let (tname, _) = self.expect_ident("CONDITION_PARAM_TYPE")?;
        if tname == "list" || tname == "map" {
            self.expect_punct('<')?;
            let inner = self.parse_param_type(depth + 1)?;
            self.expect_punct('>')?;
            return Ok(if tname == "list" {
                ParamType::List(Box::new(inner))
            } else {
                ParamType::Map(Box::new(inner))
            });
        }
        ParamType::from_scalar_name(&tname).ok_or_else(|| {
            let mut e = err_at(
                &self.current,
                format!("mismatched input '{tname}' expecting CONDITION_PARAM_TYPE"),
            );
            e.symbol = Some(tname);
            e
        })
    }
}
