//! Authorization models: data types, JSON and DSL forms, and the validated model.

pub(crate) mod compiled;
mod fga_mod;
mod json;
mod modules;
mod types;

use std::collections::HashMap;

pub use fga_mod::{ModFile, ModRange, ModValue, parse_mod_file};
pub use json::{model_from_value, model_to_value, parse_json_model};
pub use modules::{ModuleFile, model_from_modules};
pub use types::{
    ConditionDefinition, ModelData, ModuleSource, ModuleSources, ParamType, RelationDefinition,
    TypeDefinition, TypeRestriction, Userset,
};

use crate::condition::CompiledCondition;
use crate::dsl::{SourceMap, parse_dsl_all, print_dsl, syntax_errors};
use crate::error::AuthzError;
use crate::store::hash::FoldBuild;
use crate::validate::{validate_model, validate_modules};
use compiled::{Compiled, RelIdx};

/// A validated authorization model (schema 1.1), ready for queries.
#[derive(Debug, Clone)]
pub struct AuthorizationModel {
    data: ModelData,
    index: HashMap<String, TypeIndex, FoldBuild>,
    conditions: HashMap<String, CompiledCondition, FoldBuild>,
    compiled: Compiled,
}

#[derive(Debug, Clone)]
pub(crate) struct TypeIndex {
    pub(crate) position: usize,
    pub(crate) relations: HashMap<String, usize, FoldBuild>,
}

impl AuthorizationModel {
    /// Parse and validate a DSL model.
    pub fn from_dsl(src: &str) -> Result<Self, AuthzError> {
        let syntax = syntax_errors(src);
        if !syntax.is_empty() {
            return Err(AuthzError::InvalidModel(syntax));
        }
        let (data, map) = parse_dsl_all(src).map_err(AuthzError::InvalidModel)?;
        Self::from_data_with_source(data, Some(&map))
    }

    /// Parse and validate a JSON model.
    pub fn from_json(json: &str) -> Result<Self, AuthzError> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| {
            AuthzError::model(
                crate::error::ModelErrorKind::Syntax,
                format!("invalid JSON model: {e}"),
            )
        })?;
        let data = model_from_value(&value)?;
        let mut errors = json::module_file_errors(&value);
        if !errors.is_empty() {
            errors.extend(validate_model(&data, None));
            return Err(AuthzError::InvalidModel(errors));
        }
        Self::from_data(data)
    }

    /// Combine module files (schema 1.2) and validate the model; every error
    /// names its file (error 2056, [`AuthzError::InvalidModules`]).
    pub fn from_modules(files: &[ModuleFile<'_>]) -> Result<Self, AuthzError> {
        let (data, maps, mut errors) = modules::combine(files);
        errors.extend(validate_modules(&data, &maps));
        if !errors.is_empty() {
            return Err(AuthzError::InvalidModules(errors));
        }
        Self::from_data(data)
    }

    /// Validate model data.
    pub fn from_data(data: ModelData) -> Result<Self, AuthzError> {
        Self::from_data_with_source(data, None)
    }

    fn from_data_with_source(data: ModelData, map: Option<&SourceMap>) -> Result<Self, AuthzError> {
        let errors = validate_model(&data, map);
        if !errors.is_empty() {
            return Err(AuthzError::InvalidModel(errors));
        }
        let mut conditions = HashMap::default();
        for (name, def) in &data.conditions {
            conditions.insert(name.clone(), CompiledCondition::compile(def)?);
        }
        let index = build_index(&data);
        let compiled = Compiled::build(&data);
        Ok(Self {
            data,
            index,
            conditions,
            compiled,
        })
    }

    /// The OpenFGA JSON form.
    pub fn to_json(&self) -> serde_json::Value {
        model_to_value(&self.data)
    }

    /// The DSL form.
    pub fn to_dsl(&self) -> String {
        print_dsl(&self.data)
    }

    /// The underlying data.
    pub fn data(&self) -> &ModelData {
        &self.data
    }

    /// Look up a type definition.
    pub fn type_def(&self, name: &str) -> Option<&TypeDefinition> {
        let idx = self.index.get(name)?;
        self.data.types.get(idx.position)
    }

    /// Look up a relation definition.
    pub fn relation(&self, type_name: &str, relation: &str) -> Option<&RelationDefinition> {
        let idx = self.index.get(type_name)?;
        let t = self.data.types.get(idx.position)?;
        t.relations.get(*idx.relations.get(relation)?)
    }

    pub(crate) fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// The compiled index of `type_name#relation`.
    pub(crate) fn rel_idx(&self, type_name: &str, relation: &str) -> Option<RelIdx> {
        let idx = self.index.get(type_name)?;
        self.compiled
            .at(idx.position, *idx.relations.get(relation)?)
    }

    /// The definition of a compiled relation.
    pub(crate) fn rel_def(&self, c: &compiled::CRel) -> Option<&RelationDefinition> {
        self.data.types.get(c.type_pos)?.relations.get(c.rel_pos)
    }

    /// Whether a type exists.
    pub fn has_type(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub(crate) fn condition(&self, name: &str) -> Option<&CompiledCondition> {
        self.conditions.get(name)
    }
}

fn build_index(data: &ModelData) -> HashMap<String, TypeIndex, FoldBuild> {
    let mut index = HashMap::default();
    for (position, t) in data.types.iter().enumerate() {
        let relations = t
            .relations
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();
        index.insert(
            t.name.clone(),
            TypeIndex {
                position,
                relations,
            },
        );
    }
    index
}
