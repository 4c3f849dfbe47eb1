//! ListObjects by reverse expansion: start from the user, walk the model's
//! edges backwards through the tuple index, and verify with Check only the
//! candidates that come through an intersection or a difference.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::time::Instant;

use serde_json::{Map, Value};

use super::check::{AnyOf, CKey, Resolver, restriction_kinds, validate_user};
use super::graph::{Leaf, Mode, leaves};
use super::{Engine, Layered};
use crate::error::AuthzError;
use crate::model::compiled::{CNode, RelIdx};
use crate::model::{AuthorizationModel, RelationDefinition, TypeRestriction, Userset};
use crate::store::hash::{FoldBuild, FxHasher};
use crate::store::{Subject, TupleReader};
use crate::tuple::{Tuple, TupleCondition, UserRef, parse_user};

/// A ListObjects request: which objects of `object_type` does `user` have `relation` on?
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListObjectsRequest {
    /// Object type to list.
    pub object_type: String,
    /// Relation name.
    pub relation: String,
    /// `type:id`, `type:*` or `type:id#relation`.
    pub user: String,
    /// Tuples that exist for this request only.
    pub contextual_tuples: Vec<Tuple>,
    /// Context for conditions.
    pub context: Map<String, Value>,
}

/// ListObjects result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListObjectsResponse {
    /// Objects as `type:id`, in discovery order.
    pub objects: Vec<String>,
    /// `true` when the max-results limit or the deadline cut the list short.
    pub truncated: bool,
}

/// A user kind: (type, userset relation, wildcard).
type Kind<'a> = (&'a str, Option<&'a str>, bool);

/// A node: relation index (which fixes the type) and object id.
type LKey<'a> = CKey<'a>;

/// An edge from a subject to a relation whose direct assignment accepts it.
#[derive(Clone, Copy)]
struct DirectEdge<'a> {
    target: RelIdx,
    object_type: &'a str,
    rel: &'a RelationDefinition,
    restriction: &'a TypeRestriction,
    mode: Mode,
}

/// An edge from a parent's relation to a child's relation through a tupleset.
struct TtuEdge<'a> {
    child: RelIdx,
    child_type: &'a str,
    tupleset: &'a RelationDefinition,
    restriction: &'a TypeRestriction,
    mode: Mode,
}

/// Reverse edges of a model, indexed by relation.
#[derive(Default)]
struct Graph<'a> {
    /// Per relation: its type name and its name.
    names: Vec<(&'a str, &'a str)>,
    /// Plain or wildcard subject kind → relations whose direct assignment accepts it.
    direct: FoldMap<Kind<'a>, Vec<DirectEdge<'a>>>,
    /// Per relation R: relations whose direct assignment accepts the userset `type#R`.
    userset: Vec<Vec<DirectEdge<'a>>>,
    /// Per relation: relations on the same type computed from it.
    computed: Vec<Vec<(RelIdx, Mode)>>,
    /// Per relation of a parent type: child relations through a tupleset.
    ttu: Vec<Vec<TtuEdge<'a>>>,
    /// Per relation: whether it and everything it depends on use only unions,
    /// so that reverse expansion finds all its nodes before any candidate
    /// that needs verification is resolved.
    pure: Vec<bool>,
}

impl<'a> Graph<'a> {
    fn build(model: &'a AuthorizationModel) -> Self {
        let n = model.compiled().rels.len();
        let mut g = Graph {
            names: vec![("", ""); n],
            userset: (0..n).map(|_| Vec::new()).collect(),
            computed: (0..n).map(|_| Vec::new()).collect(),
            ttu: (0..n).map(|_| Vec::new()).collect(),
            pure: vec![false; n],
            ..Graph::default()
        };
        for t in &model.data().types {
            for rel in &t.relations {
                let Some(idx) = model.rel_idx(&t.name, &rel.name) else {
                    continue;
                };
                if let Some(slot) = g.names.get_mut(idx as usize) {
                    *slot = (&t.name, &rel.name);
                }
                for (leaf, mode) in leaves(&rel.rewrite, false) {
                    g.add_leaf(model, &t.name, rel, idx, leaf, mode);
                }
            }
        }
        for (t, r) in pure_relations(model) {
            if let Some(slot) = model.rel_idx(t, r).and_then(|i| g.pure.get_mut(i as usize)) {
                *slot = true;
            }
        }
        g
    }

    fn add_leaf(
        &mut self,
        model: &'a AuthorizationModel,
        type_name: &'a str,
        rel: &'a RelationDefinition,
        idx: RelIdx,
        leaf: Leaf<'a>,
        mode: Mode,
    ) {
        match leaf {
            Leaf::This => {
                for k in restriction_kinds(rel) {
                    let edge = DirectEdge {
                        target: idx,
                        object_type: type_name,
                        rel,
                        restriction: k,
                        mode,
                    };
                    match &k.relation {
                        Some(r) => {
                            if let Some(v) = model
                                .rel_idx(&k.type_name, r)
                                .and_then(|u| self.userset.get_mut(u as usize))
                            {
                                v.push(edge);
                            }
                        }
                        None => {
                            let kind = (k.type_name.as_str(), None, k.wildcard);
                            self.direct.entry(kind).or_default().push(edge);
                        }
                    }
                }
            }
            Leaf::Computed(r) => {
                if let Some(v) = model
                    .rel_idx(type_name, r)
                    .and_then(|src| self.computed.get_mut(src as usize))
                {
                    v.push((idx, mode));
                }
            }
            Leaf::Ttu { tupleset, computed } => {
                let Some(ts) = model.relation(type_name, tupleset) else {
                    return;
                };
                for k in restriction_kinds(ts) {
                    if k.relation.is_some() || k.wildcard {
                        continue;
                    }
                    let Some(v) = model
                        .rel_idx(&k.type_name, computed)
                        .and_then(|p| self.ttu.get_mut(p as usize))
                    else {
                        continue;
                    };
                    v.push(TtuEdge {
                        child: idx,
                        child_type: type_name,
                        tupleset: ts,
                        restriction: k,
                        mode,
                    });
                }
            }
        }
    }

    fn names(&self, idx: RelIdx) -> (&'a str, &'a str) {
        self.names.get(idx as usize).copied().unwrap_or(("", ""))
    }

    fn is_pure(&self, idx: RelIdx) -> bool {
        self.pure.get(idx as usize).copied().unwrap_or(false)
    }
}

/// Relations built from unions only, directly and through everything they
/// depend on (computed relations, tupleset targets, userset restrictions).
fn pure_relations(model: &AuthorizationModel) -> HashSet<(&str, &str)> {
    type RelKey<'k> = (&'k str, &'k str);
    let mut deps: Vec<(RelKey<'_>, Vec<RelKey<'_>>)> = Vec::new();
    let mut pure = HashSet::new();
    for t in &model.data().types {
        for rel in &t.relations {
            let key = (t.name.as_str(), rel.name.as_str());
            let mut d = Vec::new();
            if !rewrite_deps(model, &t.name, rel, &rel.rewrite, &mut d) {
                continue;
            }
            pure.insert(key);
            deps.push((key, d));
        }
    }
    loop {
        let before = pure.len();
        for (key, d) in &deps {
            if pure.contains(key) && d.iter().any(|k| !pure.contains(k)) {
                pure.remove(key);
            }
        }
        if pure.len() == before {
            return pure;
        }
    }
}

/// Collect the relations a union-only rewrite depends on; `false` if the
/// rewrite has an intersection or a difference.
fn rewrite_deps<'a>(
    model: &'a AuthorizationModel,
    type_name: &'a str,
    rel: &'a RelationDefinition,
    u: &'a Userset,
    out: &mut Vec<(&'a str, &'a str)>,
) -> bool {
    match u {
        Userset::This => {
            for k in &rel.directly_related {
                if let Some(r) = &k.relation {
                    out.push((&k.type_name, r));
                }
            }
            true
        }
        Userset::Computed(r) => {
            out.push((type_name, r));
            true
        }
        Userset::TupleToUserset { tupleset, computed } => {
            if let Some(ts) = model.relation(type_name, tupleset) {
                for k in &ts.directly_related {
                    if k.relation.is_none() && !k.wildcard {
                        out.push((&k.type_name, computed));
                    }
                }
            }
            true
        }
        Userset::Union(children) => children
            .iter()
            .all(|c| rewrite_deps(model, type_name, rel, c, out)),
        Userset::Intersection(_) | Userset::Difference { .. } => false,
    }
}

pub(crate) type FxSet<T> = HashSet<T, BuildHasherDefault<FxHasher>>;
type FoldMap<K, V> = HashMap<K, V, FoldBuild>;

struct Lister<'a, 'g> {
    resolver: Resolver<'a>,
    graph: &'g Graph<'a>,
    rejected: FxSet<LKey<'a>>,
    /// Candidates reached under an intersection or a difference, resolved
    /// once the queue is empty (every node of a pure relation is then known).
    pending: Vec<LKey<'a>>,
    pending_seen: FxSet<LKey<'a>>,
    queue: VecDeque<LKey<'a>>,
    target: Option<RelIdx>,
    results: Vec<&'a str>,
    max_results: usize,
    deadline: Option<Instant>,
    truncated: bool,
}

impl Engine {
    /// List the objects of a type that the user has the relation on.
    pub fn list_objects(
        &self,
        model: &AuthorizationModel,
        tuples: &dyn TupleReader,
        req: &ListObjectsRequest,
    ) -> Result<ListObjectsResponse, AuthzError> {
        if !model.has_type(&req.object_type) {
            return Err(AuthzError::TypeNotFound(req.object_type.clone()));
        }
        if model.relation(&req.object_type, &req.relation).is_none() {
            return Err(AuthzError::RelationNotFound {
                type_name: req.object_type.clone(),
                relation: req.relation.clone(),
            });
        }
        let user = parse_user(&req.user).map_err(AuthzError::Validation)?;
        validate_user(model, &user).map_err(|e| AuthzError::Validation(e.to_string()))?;
        let extra = self.contextual_store(model, &req.contextual_tuples)?;
        let layered;
        let reader: &dyn TupleReader = match &extra {
            Some(extra) => {
                layered = Layered::new(tuples, Some(extra));
                &layered
            }
            None => tuples,
        };
        let graph = Graph::build(model);
        let mut lister = Lister {
            resolver: Resolver::new(model, reader, user, &req.context, &self.limits),
            graph: &graph,
            rejected: FxSet::default(),
            pending: Vec::new(),
            pending_seen: FxSet::default(),
            queue: VecDeque::new(),
            target: model.rel_idx(&req.object_type, &req.relation),
            results: Vec::new(),
            max_results: self.limits.list_objects_max_results,
            deadline: self
                .limits
                .list_objects_deadline
                .map(|d| Instant::now() + d),
            truncated: false,
        };
        lister.run()?;
        let objects = lister
            .results
            .iter()
            .map(|id| {
                let mut s = String::with_capacity(req.object_type.len() + 1 + id.len());
                s.push_str(&req.object_type);
                s.push(':');
                s.push_str(id);
                s
            })
            .collect();
        Ok(ListObjectsResponse {
            objects,
            truncated: lister.truncated,
        })
    }
}

impl<'a> Lister<'a, '_> {
    fn run(&mut self) -> Result<(), AuthzError> {
        self.seed()?;
        let mut steps = 0u32;
        loop {
            while let Some(node) = self.queue.pop_front() {
                if self.truncated {
                    return Ok(());
                }
                steps = steps.wrapping_add(1);
                if steps.is_multiple_of(256) && self.past_deadline() {
                    return Ok(());
                }
                self.propagate(node)?;
            }
            if self.pending.is_empty() || self.truncated {
                return Ok(());
            }
            // The queue is empty: every node of a pure relation is in `found`.
            if !self.resolver.found_complete {
                self.resolver.pure.clone_from(&self.graph.pure);
                self.resolver.found_complete = true;
            }
            let pending = std::mem::take(&mut self.pending);
            self.pending_seen.clear();
            for node in pending {
                if self.truncated {
                    return Ok(());
                }
                steps = steps.wrapping_add(1);
                if steps.is_multiple_of(256) && self.past_deadline() {
                    return Ok(());
                }
                if self.resolver.found.contains(&node) || self.rejected.contains(&node) {
                    continue;
                }
                if self.verify(node)? {
                    self.accept(node);
                } else {
                    self.rejected.insert(node);
                }
            }
        }
    }

    fn past_deadline(&mut self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.truncated = true;
        }
        self.truncated
    }

    /// Decide a candidate: evaluate its rewrite, answering the positive
    /// references to pure relations from `found` instead of a Check.
    fn verify(&mut self, key: LKey<'a>) -> Result<bool, AuthzError> {
        if let Some(hit) = self.resolver.memo_get(&key) {
            return Ok(hit);
        }
        if self.resolver.is_user_userset(key) {
            return Ok(true);
        }
        let compiled = self.resolver.model.compiled();
        let Some(crel) = compiled.rel(key.0) else {
            return Ok(false);
        };
        self.resolver.push_frame(key);
        let r = self.eval_known(key, &crel.rewrite);
        self.resolver.pop_frame();
        r
    }

    /// Check's semantics for a rewrite in a positive position (not under a
    /// subtracted set, where a cycle denies and only Check can tell).
    fn eval_known(&mut self, key: LKey<'a>, rewrite: &'a CNode) -> Result<bool, AuthzError> {
        let (rel, id) = key;
        match rewrite {
            CNode::Computed(Some(r)) => {
                if self.resolver.found.contains(&(*r, id)) {
                    Ok(true)
                } else if self.graph.is_pure(*r) {
                    Ok(false)
                } else {
                    self.resolver.eval_part(rel, id, rewrite, 0)
                }
            }
            CNode::Union(children) => {
                let mut acc = AnyOf::new();
                for c in children {
                    if acc.add(self.eval_known(key, c)).is_break() {
                        break;
                    }
                }
                acc.finish()
            }
            CNode::Intersection(children) => {
                let mut error = None;
                for c in children {
                    match self.eval_known(key, c) {
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
                let base = self.eval_known(key, base);
                if matches!(base, Ok(false)) {
                    return Ok(false);
                }
                if let CNode::Computed(Some(r)) = subtract.as_ref()
                    && self.resolver.found.contains(&(*r, id))
                {
                    return Ok(false);
                }
                let cuts_before = self.resolver.cycle_cuts();
                let subtract = self.resolver.eval_part(rel, id, subtract, 0);
                if matches!(subtract, Ok(false)) && self.resolver.cycle_cuts() != cuts_before {
                    return Ok(false);
                }
                match (base, subtract) {
                    (_, Ok(true)) => Ok(false),
                    (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                    (Ok(b), Ok(false)) => Ok(b),
                }
            }
            CNode::This | CNode::Computed(None) | CNode::Ttu { .. } => {
                self.resolver.eval_part(rel, id, rewrite, 0)
            }
        }
    }

    fn seed(&mut self) -> Result<(), AuthzError> {
        match self.resolver.user {
            UserRef::Object(o) => {
                self.reach_from_subject(
                    subject(o.object_type, o.id, None),
                    (o.object_type, None, false),
                )?;
                self.reach_from_subject(
                    subject(o.object_type, "*", None),
                    (o.object_type, None, true),
                )
            }
            UserRef::Wildcard(t) => self.reach_from_subject(subject(t, "*", None), (t, None, true)),
            UserRef::Userset(o, r) => match self.resolver.model.rel_idx(o.object_type, r) {
                Some(idx) => self.reach((idx, o.id), Mode::Sure),
                None => Ok(()),
            },
        }
    }

    /// Every relation that directly holds a plain or wildcard `subj` (of `kind`).
    fn reach_from_subject(&mut self, subj: Subject<'a>, kind: Kind<'a>) -> Result<(), AuthzError> {
        let graph = self.graph;
        let Some(edges) = graph.direct.get(&kind) else {
            return Ok(());
        };
        self.follow(subj, edges)
    }

    fn follow(&mut self, subj: Subject<'a>, edges: &[DirectEdge<'a>]) -> Result<(), AuthzError> {
        for e in edges {
            let ids = self.read_objects(subj, &e.rel.name, e.object_type, e.rel, e.restriction)?;
            for id in ids {
                self.reach((e.target, id), e.mode)?;
            }
        }
        Ok(())
    }

    /// Object ids related to `subj` whose tuple condition holds.
    fn read_objects(
        &mut self,
        subj: Subject<'a>,
        relation: &'a str,
        object_type: &'a str,
        rel: &'a RelationDefinition,
        restriction: &'a TypeRestriction,
    ) -> Result<Vec<&'a str>, AuthzError> {
        let mut hits: Vec<(&'a str, Option<&'a TupleCondition>)> = Vec::new();
        self.resolver
            .read_objects(subj, relation, object_type, &mut hits)?;
        let mut ids = Vec::with_capacity(hits.len());
        for (id, cond) in hits {
            if self.resolver.condition_ok(rel, restriction, cond)? {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn reach(&mut self, node: LKey<'a>, mode: Mode) -> Result<(), AuthzError> {
        if self.truncated || self.resolver.found.contains(&node) || self.rejected.contains(&node) {
            return Ok(());
        }
        if mode == Mode::Verify {
            if self.pending_seen.insert(node) {
                self.pending.push(node);
            }
            return Ok(());
        }
        self.accept(node);
        Ok(())
    }

    fn accept(&mut self, node: LKey<'a>) {
        self.resolver.found.insert(node);
        self.queue.push_back(node);
        if Some(node.0) == self.target {
            self.results.push(node.1);
            if self.results.len() >= self.max_results {
                self.truncated = true;
            }
        }
    }

    fn propagate(&mut self, node: LKey<'a>) -> Result<(), AuthzError> {
        let (idx, id) = node;
        let graph = self.graph;
        let (t, r) = graph.names(idx);
        for &(r2, mode) in graph
            .computed
            .get(idx as usize)
            .map_or(&[][..], Vec::as_slice)
        {
            self.reach((r2, id), mode)?;
        }
        for e in graph.ttu.get(idx as usize).map_or(&[][..], Vec::as_slice) {
            let ids = self.read_objects(
                subject(t, id, None),
                &e.tupleset.name,
                e.child_type,
                e.tupleset,
                e.restriction,
            )?;
            for child in ids {
                self.reach((e.child, child), e.mode)?;
            }
        }
        let edges = graph
            .userset
            .get(idx as usize)
            .map_or(&[][..], Vec::as_slice);
        self.follow(subject(t, id, Some(r)), edges)
    }
}

fn subject<'a>(
    user_type: &'a str,
    user_id: &'a str,
    user_relation: Option<&'a str>,
) -> Subject<'a> {
    Subject {
        user_type,
        user_id,
        user_relation,
    }
}
