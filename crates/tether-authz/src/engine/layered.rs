//! A reader that adds a request's contextual tuples to a base reader.

use crate::error::AuthzError;
use crate::store::{MemoryTupleStore, Subject, TupleReader, Visitor};
use crate::tuple::TupleCondition;

pub(crate) struct Layered<'a> {
    base: &'a dyn TupleReader,
    extra: Option<&'a MemoryTupleStore>,
}

impl<'a> Layered<'a> {
    pub(crate) fn new(base: &'a dyn TupleReader, extra: Option<&'a MemoryTupleStore>) -> Self {
        Self { base, extra }
    }
}

/// Run `visit` over the contextual store then the base, stopping early on `Break`.
fn both<'s>(
    extra: Option<&'s MemoryTupleStore>,
    base: &'s dyn TupleReader,
    visit: &mut Visitor<'_, 's>,
    read: &mut dyn FnMut(&'s dyn TupleReader, &mut Visitor<'_, 's>) -> Result<(), AuthzError>,
) -> Result<(), AuthzError> {
    let mut stopped = false;
    if let Some(extra) = extra {
        let mut wrapped = |id: &'s str, c: Option<&'s TupleCondition>| {
            let flow = visit(id, c);
            stopped = flow.is_break();
            flow
        };
        read(extra, &mut wrapped)?;
    }
    if stopped {
        return Ok(());
    }
    read(base, visit)
}

impl TupleReader for Layered<'_> {
    fn read_users<'s>(
        &'s self,
        object_type: &str,
        object_id: &str,
        relation: &str,
        user_type: &str,
        user_relation: Option<&str>,
        visit: &mut Visitor<'_, 's>,
    ) -> Result<(), AuthzError> {
        both(self.extra, self.base, visit, &mut |r, v| {
            r.read_users(
                object_type,
                object_id,
                relation,
                user_type,
                user_relation,
                v,
            )
        })
    }

    fn read_objects<'s>(
        &'s self,
        subject: Subject<'_>,
        relation: &str,
        object_type: &str,
        visit: &mut Visitor<'_, 's>,
    ) -> Result<(), AuthzError> {
        both(self.extra, self.base, visit, &mut |r, v| {
            r.read_objects(subject, relation, object_type, v)
        })
    }

    fn find<'s>(
        &'s self,
        object_type: &str,
        object_id: &str,
        relation: &str,
        subject: Subject<'_>,
    ) -> Result<Option<Option<&'s TupleCondition>>, AuthzError> {
        if let Some(extra) = self.extra
            && let Some(found) = extra.find(object_type, object_id, relation, subject)?
        {
            return Ok(Some(found));
        }
        self.base.find(object_type, object_id, relation, subject)
    }
}
