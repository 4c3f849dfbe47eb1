//! Tuple sources: the [`TupleReader`] trait and the in-memory index.

pub(crate) mod hash;
mod interner;
mod memory;

use std::ops::ControlFlow;

pub use memory::MemoryTupleStore;
pub(crate) use memory::SymReader;

use crate::error::AuthzError;
use crate::tuple::TupleCondition;

/// Called once per matching tuple with the other end's id and the tuple's
/// condition; return `ControlFlow::Break(())` to stop early.
pub type Visitor<'v, 's> = dyn FnMut(&'s str, Option<&'s TupleCondition>) -> ControlFlow<()> + 'v;

/// One end of a tuple, as a key for reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The user's type.
    pub user_type: &'a str,
    /// The user's id, `*` for a wildcard.
    pub user_id: &'a str,
    /// The userset relation, `None` for plain users and wildcards.
    pub user_relation: Option<&'a str>,
}

/// A read-only source of tuples. Object-safe: pass `&dyn TupleReader`.
///
/// The strings handed to visitors borrow from the reader for `'s`, so the
/// engine can keep them for the whole request without copying. A SQL-backed
/// implementation should therefore load what a request needs into a
/// per-request snapshot (for example a [`MemoryTupleStore`]) and read from it.
pub trait TupleReader {
    /// Visit the users `type:id` (with `user_relation`) of tuples
    /// `object_type:object_id#relation@user_type:id[#user_relation]`. Wildcards
    /// are visited with the id `*` when `user_relation` is `None`.
    fn read_users<'s>(
        &'s self,
        object_type: &str,
        object_id: &str,
        relation: &str,
        user_type: &str,
        user_relation: Option<&str>,
        visit: &mut Visitor<'_, 's>,
    ) -> Result<(), AuthzError>;

    /// Visit the ids of objects of `object_type` that have `relation` with the exact `subject`.
    fn read_objects<'s>(
        &'s self,
        subject: Subject<'_>,
        relation: &str,
        object_type: &str,
        visit: &mut Visitor<'_, 's>,
    ) -> Result<(), AuthzError>;

    /// Find one exact tuple; `Some(condition)` if it exists.
    fn find<'s>(
        &'s self,
        object_type: &str,
        object_id: &str,
        relation: &str,
        subject: Subject<'_>,
    ) -> Result<Option<Option<&'s TupleCondition>>, AuthzError>;

    /// The in-memory store behind this reader, if it is one: the engine then
    /// resolves strings to the store's symbols once per request.
    #[doc(hidden)]
    fn as_memory(&self) -> Option<&MemoryTupleStore> {
        None
    }
}
