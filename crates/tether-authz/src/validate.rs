//! Semantic validation of models (placeholder; refined below).

use crate::dsl::SourceMap;
use crate::error::ModelError;
use crate::model::ModelData;

/// Validate a model; an empty list means valid.
pub fn validate_model(_data: &ModelData, _map: Option<&SourceMap>) -> Vec<ModelError> {
    Vec::new()
}
