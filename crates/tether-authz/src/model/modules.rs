//! Modular models (schema 1.2): module files combined into one model, as
//! OpenFGA's `TransformModuleFilesToModel` does.
//!
//! Each file starts with `module name`; it defines types and conditions and
//! may `extend type` a type defined in another file with more relations.
//! Problems are reported per file with OpenFGA's messages and positions.

use super::types::{ModelData, ModuleSource, TypeDefinition};
use crate::dsl::{SourceMap, parse_dsl_all, syntax_errors};
use crate::error::{AuthzError, ModelError, ModelErrorKind, ModuleError, Span};

/// One module file: its name (as listed in `fga.mod`) and its DSL text.
#[derive(Debug, Clone, Copy)]
pub struct ModuleFile<'a> {
    /// File name.
    pub name: &'a str,
    /// DSL contents.
    pub contents: &'a str,
}

/// An `extend type` block waiting for its type.
struct Extension<'a> {
    file: &'a ModuleFile<'a>,
    source: ModuleSource,
    def: TypeDefinition,
}

#[derive(Default)]
struct Combiner<'a> {
    data: ModelData,
    extensions: Vec<Extension<'a>>,
    maps: Vec<(String, SourceMap)>,
    errors: Vec<ModuleError>,
}

/// Combine module files into one schema 1.2 model, without validating it
/// (OpenFGA's `TransformModuleFilesToModel`). See
/// [`crate::AuthorizationModel::from_modules`] for a validated model.
pub fn model_from_modules(files: &[ModuleFile<'_>]) -> Result<ModelData, AuthzError> {
    let (data, _, errors) = combine(files);
    if errors.is_empty() {
        Ok(data)
    } else {
        Err(AuthzError::InvalidModules(errors))
    }
}

/// The combined model, each file's source map, and the combination errors.
pub(crate) fn combine(
    files: &[ModuleFile<'_>],
) -> (ModelData, Vec<(String, SourceMap)>, Vec<ModuleError>) {
    let mut c = Combiner::default();
    c.data.schema_version = "1.2".into();
    for file in files {
        c.add_file(file);
    }
    let extensions = std::mem::take(&mut c.extensions);
    for ext in extensions {
        c.extend(ext);
    }
    (c.data, c.maps, c.errors)
}

/// The 0-based line of the first line that, trimmed, starts with `prefix`
/// followed by `name` as a whole word.
fn line_of(contents: &str, prefix: &str, name: &str) -> Option<usize> {
    contents.split('\n').position(|l| {
        l.trim_start()
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(name))
            .is_some_and(|rest| {
                rest.chars()
                    .next()
                    .is_none_or(|c| !crate::dsl::is_word_char(c))
            })
    })
}

/// An error at the first occurrence of `symbol` on `line` (OpenFGA's
/// `ConstructLineAndColumnData`).
fn error_at(contents: &str, line: Option<usize>, symbol: &str, message: String) -> ModelError {
    let span = line.and_then(|l| {
        let text = contents.split('\n').nth(l)?;
        let byte = text.find(symbol)?;
        let col = text.get(..byte)?.chars().count();
        Some(Span {
            line: l,
            start_column: col,
            end_column: col + symbol.chars().count(),
        })
    });
    ModelError {
        message,
        kind: ModelErrorKind::Other,
        symbol: Some(symbol.to_owned()),
        span,
    }
}

impl<'a> Combiner<'a> {
    fn fail(&mut self, file: &ModuleFile<'_>, error: ModelError) {
        self.errors.push(ModuleError {
            file: file.name.to_owned(),
            error,
        });
    }

    fn add_file(&mut self, file: &'a ModuleFile<'a>) {
        let syntax = syntax_errors(file.contents);
        if !syntax.is_empty() {
            syntax.into_iter().for_each(|e| self.fail(file, e));
            return;
        }
        let (data, map) = match parse_dsl_all(file.contents) {
            Ok(parsed) => parsed,
            Err(errors) => {
                errors.into_iter().for_each(|e| self.fail(file, e));
                return;
            }
        };
        let Some(module) = map.module.clone() else {
            let e = ModelError {
                message: "file is not a module".into(),
                kind: ModelErrorKind::Other,
                symbol: None,
                span: Some(Span {
                    line: 0,
                    start_column: 0,
                    end_column: 0,
                }),
            };
            self.fail(file, e);
            return;
        };
        let source = ModuleSource {
            module,
            file: file.name.to_owned(),
        };
        for def in data.types {
            self.add_type(file, &source, map.extended.contains(&def.name), def);
        }
        self.maps.push((file.name.to_owned(), map));
        for (name, cond) in data.conditions {
            if self.data.conditions.contains_key(&name) {
                let line = line_of(file.contents, "condition ", &name);
                let msg = format!("duplicate condition {name}");
                self.fail(file, error_at(file.contents, line, &name, msg));
                continue;
            }
            self.data
                .sources
                .conditions
                .insert(name.clone(), source.clone());
            self.data.conditions.insert(name, cond);
        }
    }

    fn add_type(
        &mut self,
        file: &'a ModuleFile<'a>,
        source: &ModuleSource,
        extension: bool,
        def: TypeDefinition,
    ) {
        if extension {
            self.extensions.push(Extension {
                file,
                source: source.clone(),
                def,
            });
            return;
        }
        if self.data.type_def(&def.name).is_some() {
            let line = line_of(file.contents, "type ", &def.name);
            let msg = format!("duplicate type definition {}", def.name);
            self.fail(file, error_at(file.contents, line, &def.name, msg));
            return;
        }
        self.data
            .sources
            .types
            .insert(def.name.clone(), source.clone());
        self.data.types.push(def);
    }

    fn extend(&mut self, ext: Extension<'a>) {
        let file = ext.file;
        let type_name = ext.def.name;
        let Some(pos) = self.data.types.iter().position(|t| t.name == type_name) else {
            let line = line_of(file.contents, "extend type ", &type_name);
            let msg = format!("extended type {type_name} does not exist");
            self.fail(file, error_at(file.contents, line, &type_name, msg));
            return;
        };
        for rel in ext.def.relations {
            let exists = self
                .data
                .types
                .get(pos)
                .is_some_and(|t| t.relation(&rel.name).is_some());
            if exists {
                let line = line_of(file.contents, "define ", &rel.name);
                let msg = format!("relation {} already exists on type {type_name}", rel.name);
                self.fail(file, error_at(file.contents, line, &rel.name, msg));
                continue;
            }
            let key = (type_name.clone(), rel.name.clone());
            self.data.sources.relations.insert(key, ext.source.clone());
            if let Some(t) = self.data.types.get_mut(pos) {
                t.relations.push(rel);
            }
        }
    }
}
