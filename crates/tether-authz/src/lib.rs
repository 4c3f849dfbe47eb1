//! `tether-authz`: an OpenFGA-compatible relationship-based authorization engine.
//!
//! A pure library: no I/O, no async, no database. See the crate README.

mod builtin;
pub mod condition;
pub mod dsl;
pub mod engine;
pub mod error;
pub mod model;
pub mod store;
pub mod tuple;
mod validate;

pub use builtin::TETHER_MODEL_DSL;
pub use engine::{
    CheckOutcome, CheckRequest, Engine, ExpandNode, ExpandRequest, Limits, ListObjectsRequest,
    ListObjectsResponse, ListUsersRequest, ListUsersResponse, UserFilter, UsersetTree,
};
pub use error::{AuthzError, ModelError, ModelErrorKind, ModuleError, Span};
pub use model::AuthorizationModel;
pub use store::{MemoryTupleStore, Subject, TupleReader};
pub use tuple::{Tuple, TupleCondition, validate_tuple};
