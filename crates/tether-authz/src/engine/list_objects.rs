//! ListObjects by reverse expansion: start from the user, walk the model's
//! edges backwards through the tuple index, and verify with Check only the
//! candidates that come through an intersection or a difference.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::ops::ControlFlow;
use std::time::Instant;

use serde_json::{Map, Value};

use super::check::{AnyOf, CKey, NodeKey, Resolver, restriction_kinds, validate_user};
use super::graph::{Leaf, Mode, leaves};
use super::{Engine, Layered};
use crate::error::AuthzError;
use crate::model::compiled::CNode;
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

/// Reverse edges of a model.
#[derive(Default)]
struct Graph<'a> {
    /// Subject kind → relations whose direct assignment accepts it.
    direct: FoldMap<Kind<'a>, Vec<(&'a RelationDefinition, &'a str, &'a TypeRestriction, Mode)>>,
    /// (type, relation) → relations on the same type computed from it.
    computed: FoldMap<(&'a str, &'a str), Vec<(&'a str, Mode)>>,
    /// (parent type, relation) → (child type, child relation, tupleset def, restriction, mode).
    ttu: FoldMap<(&'a str, &'a str), Vec<TtuEdge<'a>>>,
    /// Relations whose rewrite, and every relation it depends on, uses only
    /// unions: reverse expansion finds all their nodes before any candidate
    /// that needs verification is resolved.
    pure: HashSet<(&'a str, &'a str)>,
}

struct TtuEdge<'a> {
    child_type: &'a str,
    child_relation: &'a str,
    tupleset: &'a RelationDefinition,
    restriction: &'a TypeRestriction,
    mode: Mode,
}

impl<'a> Graph<'a> {
    fn build(model: &'a AuthorizationModel) -> Self {
        let mut g = Graph::default();
        for t in &model.data().types {
            for rel in &t.relations {
                for (leaf, mode) in leaves(&rel.rewrite, false) {
                    g.add_leaf(model, &t.name, rel, leaf, mode);
                }
            }
        }
        g.pure = pure_relations(model);
        g
    }

    fn add_leaf(
        &mut self,
        model: &'a AuthorizationModel,
        type_name: &'a str,
        rel: &'a RelationDefinition,
        leaf: Leaf<'a>,
        mode: Mode,
    ) {
        match leaf {
            Leaf::This => {
                for k in restriction_kinds(rel) {
                    let kind = (k.type_name.as_str(), k.relation.as_deref(), k.wildcard);
                    self.direct
                        .entry(kind)
                        .or_default()
                        .push((rel, type_name, k, mode));
                }
            }
            Leaf::Computed(r) => self
                .computed
                .entry((type_name, r))
                .or_default()
                .push((&rel.name, mode)),
            Leaf::Ttu { tupleset, computed } => {
                let Some(ts) = model.relation(type_name, tupleset) else {
                    return;
                };
                for k in restriction_kinds(ts) {
                    if k.relation.is_some() || k.wildcard {
                        continue;
                    }
                    let edge = TtuEdge {
                        child_type: type_name,
                        child_relation: &rel.name,
                        tupleset: ts,
                        restriction: k,
                        mode,
                    };
                    self.ttu
                        .entry((&k.type_name, computed))
                        .or_default()
                        .push(edge);
                }
            }
        }
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

type FxSet<T> = HashSet<T, BuildHasherDefault<FxHasher>>;
type FoldMap<K, V> = HashMap<K, V, FoldBuild>;

struct Lister<'a, 'g> {
    resolver: Resolver<'a>,
    graph: &'g Graph<'a>,
    found: FxSet<NodeKey<'a>>,
    rejected: FxSet<NodeKey<'a>>,
    /// Candidates reached under an intersection or a difference, resolved
    /// once the queue is empty (every node of a pure relation is then known).
    pending: Vec<NodeKey<'a>>,
    pending_seen: FxSet<NodeKey<'a>>,
    queue: VecDeque<NodeKey<'a>>,
    target: (&'a str, &'a str),
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
            found: FxSet::default(),
            rejected: FxSet::default(),
            pending: Vec::new(),
            pending_seen: FxSet::default(),
            queue: VecDeque::new(),
            target: (&req.object_type, &req.relation),
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
            let pending = std::mem::take(&mut self.pending);
            for node in pending {
                self.pending_seen.remove(&node);
                if self.truncated {
                    return Ok(());
                }
                steps = steps.wrapping_add(1);
                if steps.is_multiple_of(256) && self.past_deadline() {
                    return Ok(());
                }
                if self.found.contains(&node) || self.rejected.contains(&node) {
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
    fn verify(&mut self, node: NodeKey<'a>) -> Result<bool, AuthzError> {
        let Some(key) = self.resolver.node(node) else {
            return Ok(false);
        };
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
        let r = self.eval_known(node.0, key, &crel.rewrite);
        self.resolver.pop_frame();
        r
    }

    /// Check's semantics for a rewrite in a positive position (not under a
    /// subtracted set, where a cycle denies and only Check can tell).
    fn eval_known(
        &mut self,
        object_type: &'a str,
        key: CKey<'a>,
        rewrite: &'a CNode,
    ) -> Result<bool, AuthzError> {
        let compiled = self.resolver.model.compiled();
        let (rel, id) = key;
        match rewrite {
            CNode::Computed(Some(r)) => {
                let name = compiled.rel(*r).map_or("", |c| compiled.name(c.name));
                if self.found.contains(&(object_type, id, name)) {
                    Ok(true)
                } else if self.graph.pure.contains(&(object_type, name)) {
                    Ok(false)
                } else {
                    self.resolver.eval_part(rel, id, rewrite, 0)
                }
            }
            CNode::Union(children) => {
                let mut acc = AnyOf::new();
                for c in children {
                    if acc.add(self.eval_known(object_type, key, c)).is_break() {
                        break;
                    }
                }
                acc.finish()
            }
            CNode::Intersection(children) => {
                let mut error = None;
                for c in children {
                    match self.eval_known(object_type, key, c) {
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
                let base = self.eval_known(object_type, key, base);
                if matches!(base, Ok(false)) {
                    return Ok(false);
                }
                if let CNode::Computed(Some(r)) = subtract.as_ref() {
                    let name = compiled.rel(*r).map_or("", |c| compiled.name(c.name));
                    if self.found.contains(&(object_type, id, name)) {
                        return Ok(false);
                    }
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
            UserRef::Userset(o, r) => self.reach((o.object_type, o.id, r), Mode::Sure),
        }
    }

    /// Every relation that directly holds `subj` (of `kind`).
    fn reach_from_subject(&mut self, subj: Subject<'a>, kind: Kind<'a>) -> Result<(), AuthzError> {
        let graph = self.graph;
        let Some(edges) = graph.direct.get(&kind) else {
            return Ok(());
        };
        for &(rel, object_type, restriction, mode) in edges {
            let ids = self.read_objects(subj, &rel.name, object_type, rel, restriction)?;
            for id in ids {
                self.reach((object_type, id, &rel.name), mode)?;
            }
        }
        Ok(())
    }

    /// Object ids related to `subj` whose tuple condition holds.
    fn read_objects(
        &self,
        subj: Subject<'a>,
        relation: &'a str,
        object_type: &'a str,
        rel: &'a RelationDefinition,
        restriction: &'a TypeRestriction,
    ) -> Result<Vec<&'a str>, AuthzError> {
        let mut hits: Vec<(&'a str, Option<&'a TupleCondition>)> = Vec::new();
        self.resolver
            .reader
            .read_objects(subj, relation, object_type, &mut |id, c| {
                hits.push((id, c));
                ControlFlow::Continue(())
            })?;
        let mut ids = Vec::with_capacity(hits.len());
        for (id, cond) in hits {
            if self.resolver.condition_ok(rel, restriction, cond)? {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn reach(&mut self, node: NodeKey<'a>, mode: Mode) -> Result<(), AuthzError> {
        if self.found.contains(&node) || self.rejected.contains(&node) || self.truncated {
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

    fn accept(&mut self, node: NodeKey<'a>) {
        self.found.insert(node);
        self.queue.push_back(node);
        if (node.0, node.2) == self.target {
            self.results.push(node.1);
            if self.results.len() >= self.max_results {
                self.truncated = true;
            }
        }
    }

    fn propagate(&mut self, node: NodeKey<'a>) -> Result<(), AuthzError> {
        let (t, id, r) = node;
        let graph = self.graph;
        for &(r2, mode) in graph.computed.get(&(t, r)).map_or(&[][..], Vec::as_slice) {
            self.reach((t, id, r2), mode)?;
        }
        for e in graph.ttu.get(&(t, r)).map_or(&[][..], Vec::as_slice) {
            let ids = self.read_objects(
                subject(t, id, None),
                &e.tupleset.name,
                e.child_type,
                e.tupleset,
                e.restriction,
            )?;
            for child in ids {
                self.reach((e.child_type, child, e.child_relation), e.mode)?;
            }
        }
        self.reach_from_subject(subject(t, id, Some(r)), (t, Some(r), false))
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
