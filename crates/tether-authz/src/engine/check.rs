//! Check: depth-first evaluation of rewrites with cycle detection,
//! short-circuiting union/intersection/difference, and a per-request memo.

use std::collections::HashMap;
use std::ops::ControlFlow;

use serde_json::{Map, Value};

use super::Limits;
use crate::error::AuthzError;
use crate::model::{AuthorizationModel, RelRef, RelationDefinition, TypeRestriction, Userset};
use crate::store::hash::FoldBuild;
use crate::store::{Subject, TupleReader};
use crate::tuple::{ObjectRef, TupleCondition, UserRef, parse_object, parse_user};

/// A node of the resolution: `object#relation`.
pub(crate) type NodeKey<'a> = (&'a str, &'a str, &'a str);

pub(crate) struct Resolver<'a> {
    pub(crate) model: &'a AuthorizationModel,
    pub(crate) reader: &'a dyn TupleReader,
    pub(crate) user: UserRef<'a>,
    pub(crate) context: &'a Map<String, Value>,
    limits: &'a Limits,
    memo: HashMap<NodeKey<'a>, bool, FoldBuild>,
    stack: Vec<NodeKey<'a>>,
    cycle_cuts: u64,
}

/// Parse and validate the object, relation and user of a Check (errors are 2000).
pub(crate) fn parse_check_input<'a>(
    model: &AuthorizationModel,
    object: &'a str,
    relation: &str,
    user: &'a str,
) -> Result<(ObjectRef<'a>, UserRef<'a>), AuthzError> {
    let object = parse_object(object).map_err(AuthzError::Validation)?;
    let user = parse_user(user).map_err(AuthzError::Validation)?;
    if !model.has_type(object.object_type) {
        return Err(AuthzError::Validation(format!(
            "type '{}' not found",
            object.object_type
        )));
    }
    if model.relation(object.object_type, relation).is_none() {
        return Err(AuthzError::Validation(format!(
            "relation '{}#{relation}' not found",
            object.object_type
        )));
    }
    validate_user(model, &user).map_err(|e| AuthzError::Validation(e.to_string()))?;
    Ok((object, user))
}

/// The user's type (and userset relation) must exist in the model.
pub(crate) fn validate_user(
    model: &AuthorizationModel,
    user: &UserRef<'_>,
) -> Result<(), AuthzError> {
    if !model.has_type(user.user_type()) {
        return Err(AuthzError::TypeNotFound(user.user_type().to_owned()));
    }
    if let Some(r) = user.relation()
        && model.relation(user.user_type(), r).is_none()
    {
        return Err(AuthzError::RelationNotFound {
            type_name: user.user_type().to_owned(),
            relation: r.to_owned(),
        });
    }
    Ok(())
}

/// Fold results of alternatives: any `true` wins, otherwise the first error.
pub(crate) struct AnyOf {
    pub(crate) found: bool,
    pub(crate) error: Option<AuthzError>,
}

impl AnyOf {
    pub(crate) fn new() -> Self {
        Self {
            found: false,
            error: None,
        }
    }

    /// Record one result; returns `Break` once something is found.
    pub(crate) fn add(&mut self, r: Result<bool, AuthzError>) -> ControlFlow<()> {
        match r {
            Ok(true) => {
                self.found = true;
                ControlFlow::Break(())
            }
            Ok(false) => ControlFlow::Continue(()),
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(e);
                }
                ControlFlow::Continue(())
            }
        }
    }

    pub(crate) fn finish(self) -> Result<bool, AuthzError> {
        match (self.found, self.error) {
            (true, _) => Ok(true),
            (false, Some(e)) => Err(e),
            (false, None) => Ok(false),
        }
    }
}

/// Distinct user kinds `(type, relation, wildcard)` of a relation's direct restrictions.
pub(crate) fn restriction_kinds(rel: &RelationDefinition) -> Vec<&TypeRestriction> {
    let mut kinds: Vec<&TypeRestriction> = Vec::new();
    for r in &rel.directly_related {
        let dup = kinds.iter().any(|k| {
            k.type_name == r.type_name && k.relation == r.relation && k.wildcard == r.wildcard
        });
        if !dup {
            kinds.push(r);
        }
    }
    kinds
}

/// Evaluate a tuple's condition against the restrictions of its kind: the
/// tuple counts only if the model allows its kind with that condition name.
pub(crate) fn condition_ok(
    model: &AuthorizationModel,
    context: &Map<String, Value>,
    rel: &RelationDefinition,
    kind: &TypeRestriction,
    cond: Option<&TupleCondition>,
) -> Result<bool, AuthzError> {
    let name = cond.map(|c| c.name.as_str()).filter(|n| !n.is_empty());
    let allowed = rel.directly_related.iter().any(|r| {
        r.condition.as_deref() == name
            && r.wildcard == kind.wildcard
            && r.relation == kind.relation
            && r.type_name == kind.type_name
    });
    if !allowed {
        return Ok(false);
    }
    let (Some(name), Some(c)) = (name, cond) else {
        return Ok(true);
    };
    let Some(compiled) = model.condition(name) else {
        return Ok(false);
    };
    compiled.evaluate(context, Some(&c.context))
}

impl<'a> Resolver<'a> {
    pub(crate) fn new(
        model: &'a AuthorizationModel,
        reader: &'a dyn TupleReader,
        user: UserRef<'a>,
        context: &'a Map<String, Value>,
        limits: &'a Limits,
    ) -> Self {
        Self {
            model,
            reader,
            user,
            context,
            limits,
            memo: HashMap::with_capacity_and_hasher(32, FoldBuild::default()),
            stack: Vec::new(),
            cycle_cuts: 0,
        }
    }

    /// Check `object#relation` for the resolver's user.
    pub(crate) fn check(
        &mut self,
        object: ObjectRef<'a>,
        relation: &'a str,
    ) -> Result<bool, AuthzError> {
        self.check_node(object, relation, 0)
    }

    /// Memoized result of `object#relation`, if any.
    pub(crate) fn memo_get(&self, key: &NodeKey<'a>) -> Option<bool> {
        self.memo.get(key).copied()
    }

    /// Whether the user is the userset `object#relation` itself.
    pub(crate) fn is_user_userset(&self, key: NodeKey<'a>) -> bool {
        matches!(self.user, UserRef::Userset(u, r)
            if u.object_type == key.0 && u.id == key.1 && r == key.2)
    }

    /// Push `key` on the resolution stack (for a caller that evaluates its rewrite).
    pub(crate) fn push_frame(&mut self, key: NodeKey<'a>) {
        self.stack.push(key);
    }

    /// Pop the frame pushed by [`Self::push_frame`].
    pub(crate) fn pop_frame(&mut self) {
        self.stack.pop();
    }

    /// Number of cycle cuts so far (a cut under a subtracted set denies).
    pub(crate) fn cycle_cuts(&self) -> u64 {
        self.cycle_cuts
    }

    /// Evaluate part of a rewrite of `object#rel` (the caller pushed the frame).
    pub(crate) fn eval_part(
        &mut self,
        object: ObjectRef<'a>,
        rel: RelRef<'a>,
        rewrite: &'a Userset,
        depth: u32,
    ) -> Result<bool, AuthzError> {
        self.eval(object, rel, rewrite, depth)
    }

    pub(crate) fn check_node(
        &mut self,
        object: ObjectRef<'a>,
        relation: &'a str,
        depth: u32,
    ) -> Result<bool, AuthzError> {
        if depth >= self.limits.max_resolution_depth {
            return Err(AuthzError::ResolutionTooComplex {
                limit: self.limits.max_resolution_depth,
            });
        }
        if let UserRef::Userset(u, r) = self.user
            && u == object
            && r == relation
        {
            return Ok(true);
        }
        let key = (object.object_type, object.id, relation);
        if let Some(hit) = self.memo.get(&key) {
            return Ok(*hit);
        }
        if self.stack.contains(&key) {
            self.cycle_cuts += 1;
            return Ok(false);
        }
        let Some(rel) = self.model.rel(object.object_type, relation) else {
            return Ok(false);
        };
        let cuts_before = self.cycle_cuts;
        self.stack.push(key);
        let result = self.eval(object, rel, &rel.def.rewrite, depth);
        self.stack.pop();
        if let Ok(b) = result
            && self.cycle_cuts == cuts_before
        {
            self.memo.insert(key, b);
        }
        result
    }

    fn eval(
        &mut self,
        object: ObjectRef<'a>,
        rel: RelRef<'a>,
        rewrite: &'a Userset,
        depth: u32,
    ) -> Result<bool, AuthzError> {
        match rewrite {
            Userset::This => self.direct(object, rel, depth),
            Userset::Computed(r) => self.check_node(object, r, depth + 1),
            Userset::TupleToUserset { tupleset, computed } => {
                self.ttu(object, tupleset, computed, depth)
            }
            Userset::Union(children) => {
                let mut acc = AnyOf::new();
                for c in children {
                    if acc.add(self.eval(object, rel, c, depth)).is_break() {
                        break;
                    }
                }
                acc.finish()
            }
            Userset::Intersection(children) => self.intersection(object, rel, children, depth),
            Userset::Difference { base, subtract } => {
                let base = self.eval(object, rel, base, depth);
                if matches!(base, Ok(false)) {
                    return Ok(false);
                }
                let cuts_before = self.cycle_cuts;
                let subtract = self.eval(object, rel, subtract, depth);
                if matches!(subtract, Ok(false)) && self.cycle_cuts != cuts_before {
                    // As in OpenFGA, a cycle in the subtracted set denies.
                    return Ok(false);
                }
                match (base, subtract) {
                    (_, Ok(true)) => Ok(false),
                    (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                    (Ok(b), Ok(false)) => Ok(b),
                }
            }
        }
    }

    fn intersection(
        &mut self,
        object: ObjectRef<'a>,
        rel: RelRef<'a>,
        children: &'a [Userset],
        depth: u32,
    ) -> Result<bool, AuthzError> {
        let mut error = None;
        for c in children {
            match self.eval(object, rel, c, depth) {
                Ok(true) => {}
                Ok(false) => return Ok(false),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        error.map_or(Ok(true), Err)
    }

    pub(crate) fn condition_ok(
        &self,
        rel: &RelationDefinition,
        kind: &TypeRestriction,
        cond: Option<&TupleCondition>,
    ) -> Result<bool, AuthzError> {
        condition_ok(self.model, self.context, rel, kind, cond)
    }

    fn direct(
        &mut self,
        object: ObjectRef<'a>,
        rel: RelRef<'a>,
        depth: u32,
    ) -> Result<bool, AuthzError> {
        let mut acc = AnyOf::new();
        for kind in rel.kinds() {
            let r = if kind.relation.is_some() {
                self.direct_userset(object, rel, kind, depth)
            } else {
                self.direct_user(object, rel, kind)
            };
            if acc.add(r).is_break() {
                break;
            }
        }
        acc.finish()
    }

    /// A plain or wildcard restriction: look up the exact tuple.
    fn direct_user(
        &mut self,
        object: ObjectRef<'a>,
        rel: RelRef<'a>,
        kind: &'a TypeRestriction,
    ) -> Result<bool, AuthzError> {
        if kind.type_name != self.user.user_type() || self.user.relation().is_some() {
            return Ok(false);
        }
        let user_id = match (kind.wildcard, self.user) {
            (true, _) => "*",
            (false, UserRef::Object(o)) => o.id,
            (false, _) => return Ok(false),
        };
        let subject = Subject {
            user_type: &kind.type_name,
            user_id,
            user_relation: None,
        };
        match self
            .reader
            .find(object.object_type, object.id, &rel.def.name, subject)?
        {
            Some(cond) => self.condition_ok(rel.def, kind, cond),
            None => Ok(false),
        }
    }

    /// A `type#relation` restriction: the exact userset, then each userset's members.
    fn direct_userset(
        &mut self,
        object: ObjectRef<'a>,
        rel: RelRef<'a>,
        kind: &'a TypeRestriction,
        depth: u32,
    ) -> Result<bool, AuthzError> {
        let urel = kind.relation.as_deref().unwrap_or_default();
        let mut usersets = Hits::default();
        self.reader.read_users(
            object.object_type,
            object.id,
            &rel.def.name,
            &kind.type_name,
            Some(urel),
            &mut |id, c| {
                usersets.push(id, c);
                ControlFlow::Continue(())
            },
        )?;
        let mut acc = AnyOf::new();
        for (id, cond) in usersets.iter() {
            let r = match self.condition_ok(rel.def, kind, cond) {
                Ok(true) => {
                    let o = ObjectRef {
                        object_type: &kind.type_name,
                        id,
                    };
                    self.check_node(o, urel, depth + 1)
                }
                other => other,
            };
            if acc.add(r).is_break() {
                break;
            }
        }
        acc.finish()
    }

    fn ttu(
        &mut self,
        object: ObjectRef<'a>,
        tupleset: &'a str,
        computed: &'a str,
        depth: u32,
    ) -> Result<bool, AuthzError> {
        let Some(ts) = self.model.rel(object.object_type, tupleset) else {
            return Ok(false);
        };
        let mut acc = AnyOf::new();
        for kind in ts.kinds() {
            if kind.relation.is_some()
                || kind.wildcard
                || self.model.relation(&kind.type_name, computed).is_none()
            {
                continue;
            }
            let mut parents = Hits::default();
            self.reader.read_users(
                object.object_type,
                object.id,
                tupleset,
                &kind.type_name,
                None,
                &mut |id, c| {
                    if id != "*" {
                        parents.push(id, c);
                    }
                    ControlFlow::Continue(())
                },
            )?;
            for (id, cond) in parents.iter() {
                let r = match self.condition_ok(ts.def, kind, cond) {
                    Ok(true) => {
                        let o = ObjectRef {
                            object_type: &kind.type_name,
                            id,
                        };
                        self.check_node(o, computed, depth + 1)
                    }
                    other => other,
                };
                if acc.add(r).is_break() {
                    return acc.finish();
                }
            }
        }
        acc.finish()
    }
}

/// Tuples read for one step: up to four inline, more on the heap.
#[derive(Default)]
struct Hits<'a> {
    inline: [(&'a str, Option<&'a TupleCondition>); 4],
    len: usize,
    spill: Vec<(&'a str, Option<&'a TupleCondition>)>,
}

impl<'a> Hits<'a> {
    fn push(&mut self, id: &'a str, c: Option<&'a TupleCondition>) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = (id, c);
                self.len += 1;
            }
            None => self.spill.push((id, c)),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a TupleCondition>)> + '_ {
        self.inline
            .iter()
            .take(self.len)
            .chain(self.spill.iter())
            .copied()
    }
}
