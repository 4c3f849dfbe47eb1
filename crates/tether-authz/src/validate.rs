//! Semantic validation of models, with OpenFGA's error kinds and messages.
//!
//! Positions (0-based line and column) are found from the DSL source map the
//! way the OpenFGA language tools do: on the definition's line, by searching
//! for the offending symbol.

use std::collections::HashSet;

use crate::dsl::SourceMap;
use crate::error::{ModelError, ModelErrorKind, ModuleError, Span};
use crate::model::{ModelData, RelationDefinition, TypeDefinition, Userset};

/// Where an error points.
enum Loc<'a> {
    None,
    /// The start of the source (line 0, column 0).
    Start,
    Schema,
    Type(&'a str),
    RelationName(&'a str, &'a str),
    /// Search `needle` in the relation's line after the `:`; highlight
    /// `needle[offset..offset+len]`.
    InRelation {
        type_name: &'a str,
        relation: &'a str,
        needle: String,
        offset: usize,
        len: usize,
    },
    Condition(&'a str),
}

struct Validator<'a> {
    data: &'a ModelData,
    map: Option<&'a SourceMap>,
    /// The source map of each module file, for a modular model.
    files: &'a [(String, SourceMap)],
    errors: Vec<ModelError>,
    /// The file of each error (modular models only).
    error_files: Vec<Option<String>>,
}

/// Validate a model; an empty list means valid.
pub fn validate_model(data: &ModelData, map: Option<&SourceMap>) -> Vec<ModelError> {
    run(Validator {
        data,
        map,
        files: &[],
        errors: Vec::new(),
        error_files: Vec::new(),
    })
    .errors
}

/// Validate a model combined from module files, placing each error in its file.
pub(crate) fn validate_modules(
    data: &ModelData,
    files: &[(String, SourceMap)],
) -> Vec<ModuleError> {
    let v = run(Validator {
        data,
        map: None,
        files,
        errors: Vec::new(),
        error_files: Vec::new(),
    });
    v.errors
        .into_iter()
        .zip(v.error_files)
        .map(|(error, file)| ModuleError {
            file: file.unwrap_or_default(),
            error,
        })
        .collect()
}

fn run(mut v: Validator<'_>) -> Validator<'_> {
    v.schema();
    if !v.errors.is_empty() {
        return v;
    }
    v.names();
    v.references();
    if v.errors.is_empty() {
        v.entry_points();
    }
    v
}

fn in_rel<'a>(t: &'a str, r: &'a str, needle: String) -> Loc<'a> {
    let len = needle.chars().count();
    Loc::InRelation {
        type_name: t,
        relation: r,
        needle,
        offset: 0,
        len,
    }
}

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.chars().count() <= max
        && !s
            .chars()
            .any(|c| matches!(c, ':' | '#' | '@' | '*') || c.is_whitespace())
}

impl<'a> Validator<'a> {
    fn push(
        &mut self,
        kind: ModelErrorKind,
        message: String,
        symbol: Option<String>,
        loc: Loc<'_>,
    ) {
        let (file, map) = match self.map_for(&loc) {
            Some((file, map)) => (file, Some(map)),
            None => (None, None),
        };
        let span = self.locate(map, &loc);
        self.errors.push(ModelError {
            message,
            kind,
            symbol,
            span,
        });
        self.error_files.push(file);
    }

    /// The source map (and, for a modular model, the file) `loc` is in.
    fn map_for(&self, loc: &Loc<'_>) -> Option<(Option<String>, &'a SourceMap)> {
        if let Some(map) = self.map {
            return Some((None, map));
        }
        let src = &self.data.sources;
        let by_type = |t: &str| src.types.get(t);
        let source = match loc {
            Loc::Type(t) => by_type(t),
            Loc::RelationName(t, r)
            | Loc::InRelation {
                type_name: t,
                relation: r,
                ..
            } => src
                .relations
                .get(&((*t).to_owned(), (*r).to_owned()))
                .or_else(|| by_type(t)),
            Loc::Condition(c) => src.conditions.get(*c),
            Loc::None | Loc::Start | Loc::Schema => None,
        }?;
        let map = self
            .files
            .iter()
            .find(|(f, _)| *f == source.file)
            .map(|(_, m)| m)?;
        Some((Some(source.file.clone()), map))
    }

    fn schema(&mut self) {
        let v = self.data.schema_version.as_str();
        if v.is_empty() {
            self.push(
                ModelErrorKind::InvalidSchema,
                "schema version required".into(),
                Some(String::new()),
                Loc::Start,
            );
        } else if v != "1.1" && v != "1.2" {
            self.push(
                ModelErrorKind::InvalidSchema,
                format!("invalid schema {v}"),
                Some(v.into()),
                Loc::Schema,
            );
        }
    }

    fn names(&mut self) {
        let mut seen = HashSet::new();
        for t in &self.data.types {
            let n = t.name.as_str();
            if n == "self" || n == "this" {
                self.push(
                    ModelErrorKind::ReservedTypeKeywords,
                    "a type cannot be named 'self' or 'this'.".into(),
                    Some(n.into()),
                    Loc::Type(n),
                );
            } else if !valid_name(n, 254) {
                let msg =
                    format!("type '{n}' does not match naming rule: '^[^:#@\\*\\s]{{1,254}}$'.");
                self.push(
                    ModelErrorKind::InvalidName,
                    msg,
                    Some(n.into()),
                    Loc::Type(n),
                );
            }
            if !seen.insert(n) {
                self.push(
                    ModelErrorKind::DuplicatedError,
                    format!("the type `{n}` is a duplicate."),
                    Some(n.into()),
                    Loc::Type(n),
                );
            }
            for r in &t.relations {
                self.relation_names(t, r);
            }
        }
    }

    fn relation_names(&mut self, t: &'a TypeDefinition, r: &'a RelationDefinition) {
        let n = r.name.as_str();
        if n == "self" || n == "this" {
            let msg = "a relation cannot be named 'self' or 'this'.".to_owned();
            self.push(
                ModelErrorKind::ReservedRelationKeywords,
                msg,
                Some(n.into()),
                Loc::RelationName(&t.name, n),
            );
        } else if !valid_name(n, 50) {
            let msg = format!(
                "relation '{n}' of type '{}' does not match naming rule: '^[^:#@\\*\\s]{{1,50}}$'.",
                t.name
            );
            self.push(
                ModelErrorKind::InvalidName,
                msg,
                Some(n.into()),
                Loc::RelationName(&t.name, n),
            );
        }
        let mut seen = HashSet::new();
        for tr in &r.directly_related {
            if !seen.insert(tr) {
                let s = tr.dsl_subject();
                let msg =
                    format!("the type restriction `{s}` is a duplicate in the relation `{n}`.");
                self.push(
                    ModelErrorKind::DuplicatedError,
                    msg,
                    Some(s.clone()),
                    in_rel(&t.name, n, s),
                );
            }
        }
        self.partial_duplicates(t, r, &r.rewrite);
    }

    fn partial_duplicates(
        &mut self,
        t: &'a TypeDefinition,
        r: &'a RelationDefinition,
        u: &'a Userset,
    ) {
        let children = match u {
            Userset::Union(c) | Userset::Intersection(c) => c,
            Userset::Difference { base, subtract } => {
                self.duplicate_leaf(t, r, base, subtract);
                self.partial_duplicates(t, r, base);
                self.partial_duplicates(t, r, subtract);
                return;
            }
            _ => return,
        };
        let mut seen: Vec<&Userset> = Vec::new();
        for c in children {
            if let Some(earlier) = seen.iter().find(|s| **s == c) {
                self.duplicate_leaf(t, r, earlier, c);
            }
            seen.push(c);
            self.partial_duplicates(t, r, c);
        }
    }

    /// Report `later` when it is a leaf (`x` or `x from y`) equal to `earlier`.
    fn duplicate_leaf(
        &mut self,
        t: &'a TypeDefinition,
        r: &'a RelationDefinition,
        earlier: &Userset,
        later: &Userset,
    ) {
        let leaf = matches!(later, Userset::Computed(_) | Userset::TupleToUserset { .. });
        if !leaf || earlier != later {
            return;
        }
        let s = partial_text(later);
        let msg = format!(
            "the partial relation definition `{s}` is a duplicate in the relation `{}`.",
            r.name
        );
        self.push(
            ModelErrorKind::DuplicatedError,
            msg,
            Some(s.clone()),
            in_rel(&t.name, &r.name, s),
        );
    }

    fn references(&mut self) {
        let mut used_conditions = HashSet::new();
        for t in &self.data.types {
            for r in &t.relations {
                self.restrictions(t, r, &mut used_conditions);
                self.rewrite_refs(t, r, &r.rewrite);
            }
        }
        for (key, c) in &self.data.conditions {
            if c.name != *key {
                let msg = format!(
                    "condition key is `{key}` but nested name property is {}",
                    c.name
                );
                self.push(
                    ModelErrorKind::DifferentNestedConditionName,
                    msg,
                    Some(c.name.clone()),
                    Loc::None,
                );
            }
        }
        for name in self.data.conditions.keys() {
            if !used_conditions.contains(name.as_str()) {
                let msg = format!("`{name}` condition is not used in the model.");
                self.push(
                    ModelErrorKind::ConditionNotUsed,
                    msg,
                    Some(name.clone()),
                    Loc::Condition(name),
                );
            }
        }
    }

    fn restrictions(
        &mut self,
        t: &'a TypeDefinition,
        r: &'a RelationDefinition,
        used: &mut HashSet<&'a str>,
    ) {
        for tr in &r.directly_related {
            if let Some(c) = &tr.condition {
                used.insert(c);
                if !self.data.conditions.contains_key(c) {
                    let msg = format!("`{c}` is not a defined condition in the model.");
                    let needle = format!("with {c}");
                    let loc = Loc::InRelation {
                        type_name: &t.name,
                        relation: &r.name,
                        needle,
                        offset: 5,
                        len: c.chars().count(),
                    };
                    self.push(ModelErrorKind::InvalidCondition, msg, Some(c.clone()), loc);
                }
            }
            if self.data.type_def(&tr.type_name).is_none() {
                let msg = format!("`{}` is not a valid type.", tr.type_name);
                self.push(
                    ModelErrorKind::MissingDefinition,
                    msg,
                    Some(tr.type_name.clone()),
                    in_rel(&t.name, &r.name, tr.type_name.clone()),
                );
                continue;
            }
            if let Some(ur) = &tr.relation
                && self.data.relation(&tr.type_name, ur).is_none()
            {
                let s = tr.dsl_subject();
                let msg = format!("`{ur}` is not a valid relation for `{}`.", tr.type_name);
                let loc = in_rel(&t.name, &r.name, s);
                self.push(
                    ModelErrorKind::InvalidRelationType,
                    msg,
                    Some(ur.clone()),
                    loc,
                );
            }
        }
        if r.rewrite.contains_this() && r.directly_related.is_empty() {
            let msg = format!(
                "the relation `{}` on type `{}` has no type restrictions.",
                r.name, t.name
            );
            self.push(
                ModelErrorKind::AssignableRelationMustHaveTypes,
                msg,
                Some(r.name.clone()),
                Loc::RelationName(&t.name, &r.name),
            );
        }
    }

    fn rewrite_refs(&mut self, t: &'a TypeDefinition, r: &'a RelationDefinition, u: &'a Userset) {
        match u {
            Userset::This => {}
            Userset::Computed(c) => {
                if t.relation(c).is_none() {
                    let msg = format!("the relation `{c}` does not exist.");
                    self.push(
                        ModelErrorKind::MissingDefinition,
                        msg,
                        Some(c.clone()),
                        in_rel(&t.name, &r.name, c.clone()),
                    );
                }
            }
            Userset::TupleToUserset { tupleset, computed } => {
                self.ttu_refs(t, r, tupleset, computed)
            }
            Userset::Union(c) | Userset::Intersection(c) => {
                c.iter().for_each(|x| self.rewrite_refs(t, r, x))
            }
            Userset::Difference { base, subtract } => {
                self.rewrite_refs(t, r, base);
                self.rewrite_refs(t, r, subtract);
            }
        }
    }

    fn ttu_refs(
        &mut self,
        t: &'a TypeDefinition,
        r: &'a RelationDefinition,
        tupleset: &'a str,
        computed: &'a str,
    ) {
        let whole = format!("{computed} from {tupleset}");
        let Some(ts) = t.relation(tupleset) else {
            let msg = format!("`{tupleset}` is not a valid relation for `{}`.", t.name);
            self.push(
                ModelErrorKind::InvalidRelationType,
                msg,
                Some(tupleset.into()),
                in_rel(&t.name, &r.name, whole),
            );
            return;
        };
        let direct_only = ts.rewrite == Userset::This
            && ts
                .directly_related
                .iter()
                .all(|x| x.relation.is_none() && !x.wildcard);
        if !direct_only {
            let msg =
                format!("`{tupleset}` relation used inside from allows only direct relation.");
            let loc = Loc::InRelation {
                type_name: &t.name,
                relation: &r.name,
                offset: computed.chars().count() + 6,
                len: tupleset.chars().count(),
                needle: whole,
            };
            self.push(
                ModelErrorKind::TuplesetNotDirect,
                msg,
                Some(tupleset.into()),
                loc,
            );
            return;
        }
        let parents: Vec<&str> = ts
            .directly_related
            .iter()
            .map(|x| x.type_name.as_str())
            .collect();
        if parents
            .iter()
            .any(|p| self.data.relation(p, computed).is_some())
        {
            return;
        }
        // OpenFGA reports one error per tupleset type when none has the relation.
        let mut reported = HashSet::new();
        for p in parents.into_iter().filter(|p| reported.insert(*p)) {
            let msg = format!(
                "the `{computed}` relation definition on type `{}` is not valid: `{computed}` does not exist on `{tupleset}`, which is of type `{p}`.",
                t.name
            );
            self.push(
                ModelErrorKind::InvalidRelationType,
                msg,
                Some(whole.clone()),
                in_rel(&t.name, &r.name, whole.clone()),
            );
        }
    }

    fn entry_points(&mut self) {
        let cyclic = self.computed_cycles();
        for t in &self.data.types {
            for r in &t.relations {
                let mut visiting = Vec::new();
                let (mut entry, mut looped) = self.has_entry(&t.name, &r.name, &mut visiting, 0);
                if entry && cyclic.contains(&(t.name.as_str(), r.name.as_str())) {
                    // A cycle of computed relations: no evaluation order resolves it.
                    (entry, looped) = (false, true);
                }
                if !entry {
                    let why = if looped {
                        "potential loop"
                    } else {
                        "no entrypoint"
                    };
                    let msg = format!(
                        "`{}` is an impossible relation for `{}` ({why}).",
                        r.name, t.name
                    );
                    self.push(
                        ModelErrorKind::RelationNoEntrypoint,
                        msg,
                        Some(r.name.clone()),
                        Loc::RelationName(&t.name, &r.name),
                    );
                }
            }
        }
    }

    /// Directly assignable relations on a cycle made only of computed-relation
    /// references (`define x: [user] or y`, `define y: [user] or x`).
    fn computed_cycles(&self) -> Vec<(&'a str, &'a str)> {
        fn refs<'u>(u: &'u Userset, out: &mut Vec<&'u str>) {
            match u {
                Userset::Computed(c) => out.push(c),
                Userset::Union(c) | Userset::Intersection(c) => c.iter().for_each(|x| refs(x, out)),
                Userset::Difference { base, subtract } => {
                    refs(base, out);
                    refs(subtract, out);
                }
                Userset::This | Userset::TupleToUserset { .. } => {}
            }
        }
        let mut out = Vec::new();
        for t in &self.data.types {
            let edges: Vec<(&str, Vec<&str>)> = t
                .relations
                .iter()
                .map(|r| {
                    let mut v = Vec::new();
                    refs(&r.rewrite, &mut v);
                    (r.name.as_str(), v)
                })
                .collect();
            for (start, _) in &edges {
                // Does `start` reach itself through computed references?
                let mut seen: Vec<&str> = Vec::new();
                let mut stack: Vec<&str> = edges
                    .iter()
                    .find(|(n, _)| n == start)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let mut found = false;
                while let Some(n) = stack.pop() {
                    if n == *start {
                        found = true;
                        break;
                    }
                    if seen.contains(&n) {
                        continue;
                    }
                    seen.push(n);
                    if let Some((_, v)) = edges.iter().find(|(m, _)| *m == n) {
                        stack.extend(v.iter().copied());
                    }
                }
                // Only directly assignable relations are flagged (as OpenFGA's
                // validator does); `a: b or c` cycles with an entry elsewhere pass.
                let assignable = t.relation(start).is_some_and(|r| r.rewrite.contains_this());
                if found && assignable {
                    out.push((t.name.as_str(), *start));
                }
            }
        }
        out
    }

    /// (has an entry point, a loop was met), as OpenFGA's language
    /// validator computes them: `visiting` is the path; a computed relation
    /// already on the path is a loop, while a userset restriction or a
    /// tupleset target already on the path is skipped, and what is found
    /// below those two does not report loops.
    fn has_entry(
        &self,
        t: &'a str,
        r: &'a str,
        visiting: &mut Vec<(&'a str, &'a str)>,
        depth: usize,
    ) -> (bool, bool) {
        let Some(rel) = self.data.relation(t, r) else {
            return (false, false);
        };
        if depth > 256 {
            return (false, true);
        }
        visiting.push((t, r));
        let out = self.rewrite_entry(t, rel, &rel.rewrite, visiting, depth);
        visiting.pop();
        out
    }

    fn rewrite_entry(
        &self,
        t: &'a str,
        rel: &'a RelationDefinition,
        u: &'a Userset,
        visiting: &mut Vec<(&'a str, &'a str)>,
        depth: usize,
    ) -> (bool, bool) {
        match u {
            Userset::This => {
                for tr in &rel.directly_related {
                    let Some(ur) = tr.relation.as_deref().filter(|_| !tr.wildcard) else {
                        return (true, false);
                    };
                    if self.data.relation(&tr.type_name, ur).is_none() {
                        return (false, false);
                    }
                    if visiting.contains(&(tr.type_name.as_str(), ur)) {
                        continue;
                    }
                    if self.has_entry(&tr.type_name, ur, visiting, depth + 1).0 {
                        return (true, false);
                    }
                }
                (false, false)
            }
            Userset::Computed(c) => {
                if self.data.relation(t, c).is_none() {
                    return (false, false);
                }
                if visiting.contains(&(t, c.as_str())) {
                    return (false, true);
                }
                self.has_entry(t, c, visiting, depth + 1)
            }
            Userset::TupleToUserset { tupleset, computed } => {
                let Some(ts) = self.data.relation(t, tupleset) else {
                    return (false, false);
                };
                for tr in &ts.directly_related {
                    if self.data.relation(&tr.type_name, computed).is_none()
                        || visiting.contains(&(tr.type_name.as_str(), computed.as_str()))
                    {
                        continue;
                    }
                    if self
                        .has_entry(&tr.type_name, computed, visiting, depth + 1)
                        .0
                    {
                        return (true, false);
                    }
                }
                (false, false)
            }
            Userset::Union(c) => {
                let mut looped = false;
                for x in c {
                    let (e, l) = self.rewrite_entry(t, rel, x, visiting, depth);
                    if e {
                        return (true, false);
                    }
                    looped |= l;
                }
                (false, looped)
            }
            Userset::Intersection(c) => {
                for x in c {
                    let (e, l) = self.rewrite_entry(t, rel, x, visiting, depth);
                    if !e {
                        return (false, l);
                    }
                }
                (true, false)
            }
            Userset::Difference { base, subtract } => {
                let (e, l) = self.rewrite_entry(t, rel, base, visiting, depth);
                if !e {
                    return (false, l);
                }
                let (e, l) = self.rewrite_entry(t, rel, subtract, visiting, depth);
                if !e {
                    return (false, l);
                }
                (true, false)
            }
        }
    }

    fn locate(&self, map: Option<&SourceMap>, loc: &Loc<'_>) -> Option<Span> {
        let map = map?;
        let (line, needle, offset, len, after_colon) = match loc {
            Loc::None => return None,
            Loc::Start => {
                return Some(Span {
                    line: 0,
                    start_column: 0,
                    end_column: 0,
                });
            }
            Loc::Schema => (
                find_line(map, "schema")?,
                self.data.schema_version.clone(),
                0,
                self.data.schema_version.chars().count(),
                true,
            ),
            Loc::Type(t) => (
                *map.type_lines.get(*t)?,
                (*t).to_owned(),
                0,
                t.chars().count(),
                false,
            ),
            Loc::RelationName(t, r) => {
                let line = *map
                    .relation_lines
                    .get(&((*t).to_owned(), (*r).to_owned()))?;
                (line, (*r).to_owned(), 0, r.chars().count(), false)
            }
            Loc::InRelation {
                type_name,
                relation,
                needle,
                offset,
                len,
            } => {
                let line = *map
                    .relation_lines
                    .get(&((*type_name).to_owned(), (*relation).to_owned()))?;
                (line, needle.clone(), *offset, *len, true)
            }
            Loc::Condition(c) => (
                *map.condition_lines.get(*c)?,
                (*c).to_owned(),
                0,
                c.chars().count(),
                false,
            ),
        };
        let text = map.lines.get(line)?;
        let col = find_word(text, &needle, after_colon)? + offset;
        Some(Span {
            line,
            start_column: col,
            end_column: col + len,
        })
    }
}

fn find_line(map: &SourceMap, keyword: &str) -> Option<usize> {
    map.lines
        .iter()
        .position(|l| l.trim_start().starts_with(keyword))
}

/// Column (in chars) of `needle` as a whole word in `line`, after the first
/// `:` (or after the keyword and name for `type`/`define`/`condition` lines).
fn find_word(line: &str, needle: &str, after_colon: bool) -> Option<usize> {
    let chars: Vec<char> = line.chars().collect();
    let n: Vec<char> = needle.chars().collect();
    let start = if after_colon {
        chars.iter().position(|c| *c == ':').map_or(0, |p| p + 1)
    } else {
        let first = chars.iter().position(|c| !c.is_whitespace()).unwrap_or(0);
        chars
            .iter()
            .skip(first)
            .position(|c| c.is_whitespace())
            .map_or(0, |p| first + p)
    };
    let boundary = |c: Option<&char>| c.is_none_or(|c| !crate::dsl::is_word_char(*c));
    (start..chars.len()).find(|&i| {
        chars.get(i..i + n.len()) == Some(&n[..])
            && boundary(i.checked_sub(1).and_then(|p| chars.get(p)))
            && boundary(chars.get(i + n.len()))
    })
}

fn partial_text(u: &Userset) -> String {
    match u {
        Userset::Computed(c) => c.clone(),
        Userset::TupleToUserset { tupleset, computed } => format!("{computed} from {tupleset}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use crate::AuthorizationModel;

    fn messages(dsl: &str) -> Vec<String> {
        match AuthorizationModel::from_dsl(dsl) {
            Ok(_) => Vec::new(),
            Err(crate::AuthzError::InvalidModel(errors)) => {
                errors.into_iter().map(|e| e.message).collect()
            }
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn computed_cycles_of_assignable_relations_are_loops() {
        let m = messages(
            "model\n  schema 1.1\ntype user\ntype doc\n  relations\n    define x: [user] or y\n    define y: [user] or x\n    define z: [user]\n",
        );
        assert_eq!(
            m,
            [
                "`x` is an impossible relation for `doc` (potential loop).",
                "`y` is an impossible relation for `doc` (potential loop)."
            ]
        );
        // Not directly assignable, with an entry through `admin`: valid.
        let ok = messages(
            "model\n  schema 1.1\ntype user\ntype doc\n  relations\n    define admin: [user]\n    define a: admin or b\n    define b: admin or a\n",
        );
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn no_entrypoint_wording_through_tuplesets() {
        let m = messages(
            "model\n  schema 1.1\ntype folder\n  relations\n    define parent: [doc]\n    define viewer: viewer from parent\ntype doc\n  relations\n    define parent: [folder]\n    define viewer: viewer from parent\n",
        );
        assert_eq!(
            m,
            [
                "`viewer` is an impossible relation for `folder` (no entrypoint).",
                "`viewer` is an impossible relation for `doc` (no entrypoint)."
            ]
        );
    }
}
