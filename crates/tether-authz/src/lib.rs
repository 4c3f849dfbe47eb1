//! `tether-authz`: an OpenFGA-compatible relationship-based authorization engine.
//!
//! A pure library: no I/O, no async, no database. See the crate README.

pub mod condition;
pub mod dsl;
pub mod error;
pub mod model;
mod validate;

pub use error::{AuthzError, ModelError, ModelErrorKind, Span};
pub use model::AuthorizationModel;
