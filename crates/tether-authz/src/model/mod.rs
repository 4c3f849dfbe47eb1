//! Authorization models: data types, JSON and DSL forms, and the validated model.

mod json;
mod types;

use std::collections::HashMap;

pub use json::{model_from_value, model_to_value, parse_json_model};
pub use types::{
    ConditionDefinition, ModelData, ParamType, RelationDefinition, TypeDefinition, TypeRestriction,
    Userset,
};

use crate::condition::CompiledCondition;
use crate::dsl::{SourceMap, parse_dsl, print_dsl};
use crate::error::AuthzError;
use crate::validate::validate_model;

/// A validated authorization model (schema 1.1), ready for queries.
#[derive(Debug, Clone)]
pub struct AuthorizationModel {
    data: ModelData,
    index: HashMap<String, TypeIndex>,
    conditions: HashMap<String, CompiledCondition>,
}

#[derive(Debug, Clone)]
pub(crate) struct TypeIndex {
    pub(crate) position: usize,
    pub(crate) relations: HashMap<String, usize>,
}

impl AuthorizationModel {
    /// Parse and validate a DSL model.
    pub fn from_dsl(src: &str) -> Result<Self, AuthzError> {
        let (data, map) = parse_dsl(src).map_err(|e| AuthzError::InvalidModel(vec![e]))?;
        Self::from_data_with_source(data, Some(&map))
    }

    /// Parse and validate a JSON model.
    pub fn from_json(json: &str) -> Result<Self, AuthzError> {
        Self::from_data(parse_json_model(json)?)
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
        let mut conditions = HashMap::new();
        for (name, def) in &data.conditions {
            conditions.insert(name.clone(), CompiledCondition::compile(def)?);
        }
        let index = build_index(&data);
        Ok(Self {
            data,
            index,
            conditions,
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

    /// Whether a type exists.
    pub fn has_type(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub(crate) fn condition(&self, name: &str) -> Option<&CompiledCondition> {
        self.conditions.get(name)
    }
}

fn build_index(data: &ModelData) -> HashMap<String, TypeIndex> {
    let mut index = HashMap::new();
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
