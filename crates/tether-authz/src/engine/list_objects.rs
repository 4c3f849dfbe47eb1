//! ListObjects by reverse expansion: start from the user, walk the model's
//! edges backwards through the tuple index, and verify with Check only the
//! candidates that come through an intersection or a difference.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::time::Instant;

use serde_json::{Map, Value};

use super::check::{NodeKey, Resolver, restriction_kinds, validate_user};
use super::graph::{Leaf, Mode, leaves};
use super::{Engine, Layered};
use crate::error::AuthzError;
use crate::model::{AuthorizationModel, RelationDefinition, TypeRestriction};
use crate::store::{Subject, TupleReader};
use crate::tuple::{ObjectRef, Tuple, TupleCondition, UserRef, parse_user};

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
    direct: HashMap<Kind<'a>, Vec<(&'a RelationDefinition, &'a str, &'a TypeRestriction, Mode)>>,
    /// (type, relation) → relations on the same type computed from it.
    computed: HashMap<(&'a str, &'a str), Vec<(&'a str, Mode)>>,
    /// (parent type, relation) → (child type, child relation, tupleset def, restriction, mode).
    ttu: HashMap<(&'a str, &'a str), Vec<TtuEdge<'a>>>,
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

struct Lister<'a> {
    resolver: Resolver<'a>,
    graph: Graph<'a>,
    found: HashSet<NodeKey<'a>>,
    rejected: HashSet<NodeKey<'a>>,
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
        let reader = Layered::new(tuples, extra.as_ref());
        let mut lister = Lister {
            resolver: Resolver::new(model, &reader, user, &req.context, &self.limits),
            graph: Graph::build(model),
            found: HashSet::new(),
            rejected: HashSet::new(),
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
            .map(|id| format!("{}:{id}", req.object_type))
            .collect();
        Ok(ListObjectsResponse {
            objects,
            truncated: lister.truncated,
        })
    }
}

impl<'a> Lister<'a> {
    fn run(&mut self) -> Result<(), AuthzError> {
        self.seed()?;
        let mut steps = 0u32;
        while let Some(node) = self.queue.pop_front() {
            if self.truncated {
                break;
            }
            steps = steps.wrapping_add(1);
            if steps.is_multiple_of(256) && self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.truncated = true;
                break;
            }
            self.propagate(node)?;
        }
        Ok(())
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
        let edges = self.graph.direct.get(&kind).cloned().unwrap_or_default();
        for (rel, object_type, restriction, mode) in edges {
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
            let object = ObjectRef {
                object_type: node.0,
                id: node.1,
            };
            if !self.resolver.check(object, node.2)? {
                self.rejected.insert(node);
                return Ok(());
            }
        }
        self.found.insert(node);
        self.queue.push_back(node);
        if (node.0, node.2) == self.target {
            self.results.push(node.1);
            if self.results.len() >= self.max_results {
                self.truncated = true;
            }
        }
        Ok(())
    }

    fn propagate(&mut self, node: NodeKey<'a>) -> Result<(), AuthzError> {
        let (t, id, r) = node;
        let computed = self
            .graph
            .computed
            .get(&(t, r))
            .cloned()
            .unwrap_or_default();
        for (r2, mode) in computed {
            self.reach((t, id, r2), mode)?;
        }
        let edges: Vec<(
            &'a str,
            &'a str,
            &'a RelationDefinition,
            &'a TypeRestriction,
            Mode,
        )> = self
            .graph
            .ttu
            .get(&(t, r))
            .map(|v| {
                v.iter()
                    .map(|e| {
                        (
                            e.child_type,
                            e.child_relation,
                            e.tupleset,
                            e.restriction,
                            e.mode,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (child_type, child_rel, ts, restriction, mode) in edges {
            let ids =
                self.read_objects(subject(t, id, None), &ts.name, child_type, ts, restriction)?;
            for child in ids {
                self.reach((child_type, child, child_rel), mode)?;
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
