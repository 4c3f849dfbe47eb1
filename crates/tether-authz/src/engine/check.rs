//! Check: depth-first evaluation of rewrites with cycle detection,
//! short-circuiting union/intersection/difference, and a per-request memo.

use std::collections::HashMap;
use std::ops::ControlFlow;

use serde_json::{Map, Value};

use super::Limits;
use super::list_objects::FxSet;
use crate::error::AuthzError;
use crate::model::compiled::{CKind, CNode, CRel, Compiled, NameId, RelIdx};
use crate::model::{AuthorizationModel, RelationDefinition, TypeRestriction};
use crate::store::hash::FoldBuild;
use crate::store::{Subject, SymReader, TupleReader};
use crate::tuple::{ObjectRef, TupleCondition, UserRef, parse_object, parse_user};

/// A node of the resolution: `object#relation`.
pub(crate) type NodeKey<'a> = (&'a str, &'a str, &'a str);

/// A compiled node: relation index and object id.
pub(crate) type CKey<'a> = (RelIdx, &'a str);

pub(crate) struct Resolver<'a> {
    pub(crate) model: &'a AuthorizationModel,
    compiled: &'a Compiled,
    pub(crate) reader: &'a dyn TupleReader,
    pub(crate) user: UserRef<'a>,
    pub(crate) context: &'a Map<String, Value>,
    limits: &'a Limits,
    /// The user's type as a model name id.
    user_type: Option<NameId>,
    /// A userset user as a node.
    user_node: Option<CKey<'a>>,
    memo: HashMap<CKey<'a>, bool, FoldBuild>,
    /// Symbol-level reads when the reader is a [`crate::MemoryTupleStore`].
    fast: Option<SymReader<'a>>,
    stack: Vec<CKey<'a>>,
    cycle_cuts: u64,
    /// ListObjects: nodes found to hold by the reverse expansion.
    pub(crate) found: FxSet<CKey<'a>>,
    /// ListObjects: `found` holds every node of the relations marked in `pure`,
    /// so a direct tuple of such a node outside `found` does not exist (or its
    /// condition does not hold).
    pub(crate) found_complete: bool,
    pub(crate) pure: Vec<bool>,
    /// Whether a tuple's condition was evaluated (the answer then depends on the context).
    conditions_used: std::cell::Cell<bool>,
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
        let compiled = model.compiled();
        let user_node = match user {
            UserRef::Userset(o, r) => model.rel_idx(o.object_type, r).map(|idx| (idx, o.id)),
            _ => None,
        };
        Self {
            model,
            compiled,
            reader,
            user,
            context,
            limits,
            user_type: compiled.name_id(user.user_type()),
            user_node,
            memo: HashMap::with_capacity_and_hasher(32, FoldBuild::default()),
            fast: reader
                .as_memory()
                .map(|m| SymReader::new(m, &compiled.names)),
            stack: Vec::new(),
            cycle_cuts: 0,
            found: FxSet::default(),
            found_complete: false,
            pure: Vec::new(),
            conditions_used: std::cell::Cell::new(false),
        }
    }

    /// Check `object#relation` for the resolver's user.
    pub(crate) fn check(
        &mut self,
        object: ObjectRef<'a>,
        relation: &str,
    ) -> Result<bool, AuthzError> {
        let idx = self.model.rel_idx(object.object_type, relation);
        self.check_rel(idx, object.id, 0)
    }

    /// Memoized result of a node, if any.
    pub(crate) fn memo_get(&self, key: &CKey<'a>) -> Option<bool> {
        self.memo.get(key).copied()
    }

    /// Whether the user is the userset of this node itself.
    pub(crate) fn is_user_userset(&self, key: CKey<'a>) -> bool {
        self.user_node == Some(key)
    }

    /// Push `key` on the resolution stack (for a caller that evaluates its rewrite).
    pub(crate) fn push_frame(&mut self, key: CKey<'a>) {
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

    /// Evaluate part of the rewrite of node `(rel, id)` (the caller pushed the frame).
    pub(crate) fn eval_part(
        &mut self,
        rel: RelIdx,
        id: &'a str,
        node: &'a CNode,
        depth: u32,
    ) -> Result<bool, AuthzError> {
        self.eval(rel, id, node, depth)
    }

    /// Check a node whose relation may be undefined (then `false`).
    fn check_rel(
        &mut self,
        rel: Option<RelIdx>,
        id: &'a str,
        depth: u32,
    ) -> Result<bool, AuthzError> {
        match rel {
            Some(rel) => self.check_node(rel, id, depth),
            None if depth >= self.limits.max_resolution_depth => {
                Err(AuthzError::ResolutionTooComplex {
                    limit: self.limits.max_resolution_depth,
                })
            }
            None => Ok(false),
        }
    }

    pub(crate) fn check_node(
        &mut self,
        rel: RelIdx,
        id: &'a str,
        depth: u32,
    ) -> Result<bool, AuthzError> {
        if depth >= self.limits.max_resolution_depth {
            return Err(AuthzError::ResolutionTooComplex {
                limit: self.limits.max_resolution_depth,
            });
        }
        let key = (rel, id);
        if self.user_node == Some(key) {
            return Ok(true);
        }
        if let Some(hit) = self.memo.get(&key) {
            return Ok(*hit);
        }
        if self.stack.contains(&key) {
            self.cycle_cuts += 1;
            return Ok(false);
        }
        let compiled = self.compiled;
        let Some(crel) = compiled.rel(rel) else {
            return Ok(false);
        };
        let cuts_before = self.cycle_cuts;
        self.stack.push(key);
        let result = self.eval(rel, id, &crel.rewrite, depth);
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
        rel: RelIdx,
        id: &'a str,
        node: &'a CNode,
        depth: u32,
    ) -> Result<bool, AuthzError> {
        match node {
            CNode::This => self.direct(rel, id, depth),
            CNode::Computed(r) => self.check_rel(*r, id, depth + 1),
            CNode::Ttu { tupleset, targets } => self.ttu(*tupleset, targets, id, depth),
            CNode::Union(children) => {
                let mut acc = AnyOf::new();
                for c in children {
                    if acc.add(self.eval(rel, id, c, depth)).is_break() {
                        break;
                    }
                }
                acc.finish()
            }
            CNode::Intersection(children) => {
                let mut error = None;
                for c in children {
                    match self.eval(rel, id, c, depth) {
                        Ok(true) => {}
                        Ok(false) => return Ok(false),
                        Err(e) => {
                            error.get_or_insert(e);
                        }
                    }
                }
                error.map_or(Ok(true), Err)
            }
            CNode::Difference(base, subtract) => {
                let base = self.eval(rel, id, base, depth);
                if matches!(base, Ok(false)) {
                    return Ok(false);
                }
                let cuts_before = self.cycle_cuts;
                let subtract = self.eval(rel, id, subtract, depth);
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

    pub(crate) fn condition_ok(
        &self,
        rel: &RelationDefinition,
        kind: &TypeRestriction,
        cond: Option<&TupleCondition>,
    ) -> Result<bool, AuthzError> {
        if cond.is_some_and(|c| !c.name.is_empty()) {
            self.conditions_used.set(true);
        }
        condition_ok(self.model, self.context, rel, kind, cond)
    }

    /// Whether any condition was evaluated so far.
    pub(crate) fn conditions_used(&self) -> bool {
        self.conditions_used.get()
    }

    /// [`condition_ok`] with the compiled kind's shortcut for unconditioned tuples.
    fn kind_condition_ok(
        &self,
        def: &'a RelationDefinition,
        kind: &CKind,
        cond: Option<&TupleCondition>,
    ) -> Result<bool, AuthzError> {
        if cond.is_none_or(|c| c.name.is_empty()) {
            return Ok(kind.plain_ok);
        }
        self.conditions_used.set(true);
        match def.directly_related.get(kind.restriction) {
            Some(r) => condition_ok(self.model, self.context, def, r, cond),
            None => Ok(false),
        }
    }

    fn def(&self, crel: &CRel) -> Option<&'a RelationDefinition> {
        let model: &'a AuthorizationModel = self.model;
        model.rel_def(crel)
    }

    fn direct(&mut self, rel: RelIdx, id: &'a str, depth: u32) -> Result<bool, AuthzError> {
        let compiled = self.compiled;
        let Some(crel) = compiled.rel(rel) else {
            return Ok(false);
        };
        let Some(def) = self.def(crel) else {
            return Ok(false);
        };
        let mut acc = AnyOf::new();
        for kind in &crel.kinds {
            let r = if kind.relation.is_some() {
                self.direct_userset(crel, def, id, kind, depth)
            } else {
                self.direct_user(rel, crel, def, id, kind)
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
        rel: RelIdx,
        crel: &'a CRel,
        def: &'a RelationDefinition,
        id: &'a str,
        kind: &'a CKind,
    ) -> Result<bool, AuthzError> {
        if Some(kind.type_name) != self.user_type || self.user.relation().is_some() {
            return Ok(false);
        }
        let user_id = match (kind.wildcard, self.user) {
            (true, _) => "*",
            (false, UserRef::Object(o)) => o.id,
            (false, _) => return Ok(false),
        };
        if self.found_complete
            && self.pure.get(rel as usize).copied().unwrap_or(false)
            && !self.found.contains(&(rel, id))
        {
            return Ok(false);
        }
        let found = match &mut self.fast {
            Some(fast) => fast.find(crel.type_name, id, crel.name, kind.type_name, user_id),
            None => {
                let c = self.compiled;
                let subject = Subject {
                    user_type: c.name(kind.type_name),
                    user_id,
                    user_relation: None,
                };
                self.reader
                    .find(c.name(crel.type_name), id, c.name(crel.name), subject)?
            }
        };
        match found {
            Some(cond) => self.kind_condition_ok(def, kind, cond),
            None => Ok(false),
        }
    }

    /// A `type#relation` restriction: the exact userset, then each userset's members.
    fn direct_userset(
        &mut self,
        crel: &'a CRel,
        def: &'a RelationDefinition,
        id: &'a str,
        kind: &'a CKind,
        depth: u32,
    ) -> Result<bool, AuthzError> {
        let mut usersets = Hits::default();
        self.read_users(
            crel.type_name,
            id,
            crel.name,
            kind.type_name,
            kind.relation,
            &mut usersets,
        )?;
        let mut acc = AnyOf::new();
        for (uid, cond) in usersets.iter() {
            let r = match self.kind_condition_ok(def, kind, cond) {
                Ok(true) => self.check_rel(kind.userset, uid, depth + 1),
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
        tupleset: Option<RelIdx>,
        targets: &'a [Option<RelIdx>],
        id: &'a str,
        depth: u32,
    ) -> Result<bool, AuthzError> {
        let compiled = self.compiled;
        let Some(ts) = tupleset.and_then(|t| compiled.rel(t)) else {
            return Ok(false);
        };
        let Some(def) = self.def(ts) else {
            return Ok(false);
        };
        let mut acc = AnyOf::new();
        for (kind, target) in ts.kinds.iter().zip(targets) {
            let Some(target) = *target else {
                continue;
            };
            let mut parents = Hits::default();
            self.read_users(
                ts.type_name,
                id,
                ts.name,
                kind.type_name,
                None,
                &mut parents,
            )?;
            for (pid, cond) in parents.iter() {
                if pid == "*" {
                    continue;
                }
                let r = match self.kind_condition_ok(def, kind, cond) {
                    Ok(true) => self.check_node(target, pid, depth + 1),
                    other => other,
                };
                if acc.add(r).is_break() {
                    return acc.finish();
                }
            }
        }
        acc.finish()
    }

    /// Objects of `object_type` with `relation` to `subject`, through the fast path if any.
    pub(crate) fn read_objects(
        &mut self,
        subject: Subject<'a>,
        relation: &'a str,
        object_type: &'a str,
        out: &mut Vec<(&'a str, Option<&'a TupleCondition>)>,
    ) -> Result<(), AuthzError> {
        match &mut self.fast {
            Some(fast) => {
                fast.read_objects(subject, relation, object_type, |id, c| out.push((id, c)));
                Ok(())
            }
            None => self
                .reader
                .read_objects(subject, relation, object_type, &mut |id, c| {
                    out.push((id, c));
                    ControlFlow::Continue(())
                }),
        }
    }

    /// Users of one kind of `object#relation`, through the fast path if any.
    fn read_users(
        &mut self,
        object_type: NameId,
        id: &'a str,
        relation: NameId,
        user_type: NameId,
        user_relation: Option<NameId>,
        out: &mut Hits<'a>,
    ) -> Result<(), AuthzError> {
        match &mut self.fast {
            Some(fast) => {
                fast.read_users(
                    object_type,
                    id,
                    relation,
                    user_type,
                    user_relation,
                    |u, c| {
                        out.push(u, c);
                    },
                );
                Ok(())
            }
            None => {
                let c = self.compiled;
                self.reader.read_users(
                    c.name(object_type),
                    id,
                    c.name(relation),
                    c.name(user_type),
                    user_relation.map(|r| c.name(r)),
                    &mut |u, cond| {
                        out.push(u, cond);
                        ControlFlow::Continue(())
                    },
                )
            }
        }
    }
}

/// Tuples read for one step: up to two inline, more on the heap.
#[derive(Default)]
struct Hits<'a> {
    inline: [(&'a str, Option<&'a TupleCondition>); 2],
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
