//! Tether's domain vocabulary: typed ids, resource envelope, names, roles, the error-code table and
//! the clock abstraction. This crate does no I/O and everything else depends on it.

pub mod clock;
pub mod error;
pub mod id;
pub mod manifest;
pub mod name;
pub mod resource;
pub mod role;

pub use clock::{Clock, ManualClock, SystemClock, UnixMillis};
pub use error::{ApiError, ErrorCode};
pub use name::Name;
pub use resource::{Kind, Metadata, Resource, ResourceStatus, VersionRef};
pub use role::Role;
