//! ListUsers by forward expansion of `object#relation`, with Check
//! verification of candidates when an intersection or difference is involved.

use std::collections::HashSet;
use std::ops::ControlFlow;

use serde_json::{Map, Value};

use super::check::{NodeKey, Resolver, condition_ok, restriction_kinds};
use super::graph::{Leaf, Mode, leaves};
use super::{Engine, Layered};
use crate::error::AuthzError;
use crate::model::{AuthorizationModel, RelationDefinition, TypeRestriction};
use crate::store::TupleReader;
use crate::tuple::{ObjectRef, Tuple, TupleCondition, UserRef, parse_object, valid_relation_name};

/// A user filter: a type, or a `type#relation` userset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFilter {
    /// User type.
    pub type_name: String,
    /// Userset relation, if any.
    pub relation: Option<String>,
}

impl UserFilter {
    /// Parse `type` or `type#relation`.
    pub fn parse(s: &str) -> Self {
        match s.split_once('#') {
            Some((t, r)) => Self {
                type_name: t.to_owned(),
                relation: Some(r.to_owned()),
            },
            None => Self {
                type_name: s.to_owned(),
                relation: None,
            },
        }
    }
}

/// A ListUsers request: which users of the filtered kinds have `relation` on `object`?
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListUsersRequest {
    /// `type:id`.
    pub object: String,
    /// Relation name.
    pub relation: String,
    /// Kinds of users to return.
    pub user_filters: Vec<UserFilter>,
    /// Tuples that exist for this request only.
    pub contextual_tuples: Vec<Tuple>,
    /// Context for conditions.
    pub context: Map<String, Value>,
}

/// ListUsers result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListUsersResponse {
    /// Users as `type:id`, `type:*` or `type:id#relation`.
    pub users: Vec<String>,
    /// `true` when the max-results limit cut the list short.
    pub truncated: bool,
}

struct Collector<'a> {
    model: &'a AuthorizationModel,
    reader: &'a dyn TupleReader,
    context: &'a Map<String, Value>,
    filters: &'a [UserFilter],
    visited: HashSet<NodeKey<'a>>,
    max_depth: u32,
    candidates: Vec<(UserRef<'a>, bool)>,
    seen: HashSet<UserRef<'a>>,
}

impl Engine {
    /// List the users (of the filtered kinds) that have the relation on the object.
    pub fn list_users(
        &self,
        model: &AuthorizationModel,
        tuples: &dyn TupleReader,
        req: &ListUsersRequest,
    ) -> Result<ListUsersResponse, AuthzError> {
        let object = validate_request(model, req)?;
        let extra = self.contextual_store(model, &req.contextual_tuples)?;
        let reader = Layered::new(tuples, extra.as_ref());
        let mut c = Collector {
            model,
            reader: &reader,
            context: &req.context,
            filters: &req.user_filters,
            visited: HashSet::new(),
            max_depth: self.limits.max_resolution_depth,
            candidates: Vec::new(),
            seen: HashSet::new(),
        };
        c.expand((object.object_type, object.id, &req.relation), false, 0)?;
        let mut users = Vec::new();
        let mut truncated = false;
        for (user, verify) in std::mem::take(&mut c.candidates) {
            if verify {
                let mut r = Resolver::new(model, &reader, user, &req.context, &self.limits);
                if !r.check(object, &req.relation)? {
                    continue;
                }
            }
            if users.len() >= self.limits.list_users_max_results {
                truncated = true;
                break;
            }
            users.push(user.to_string());
        }
        Ok(ListUsersResponse { users, truncated })
    }
}

fn validate_request<'a>(
    model: &AuthorizationModel,
    req: &'a ListUsersRequest,
) -> Result<ObjectRef<'a>, AuthzError> {
    let object = parse_object(&req.object).map_err(AuthzError::Validation)?;
    if !model.has_type(object.object_type) {
        return Err(AuthzError::TypeNotFound(object.object_type.to_owned()));
    }
    if model.relation(object.object_type, &req.relation).is_none() {
        return Err(AuthzError::RelationNotFound {
            type_name: object.object_type.to_owned(),
            relation: req.relation.clone(),
        });
    }
    for f in &req.user_filters {
        if !model.has_type(&f.type_name) {
            return Err(AuthzError::TypeNotFound(f.type_name.clone()));
        }
        if let Some(r) = &f.relation
            && (!valid_relation_name(r) || model.relation(&f.type_name, r).is_none())
        {
            return Err(AuthzError::RelationNotFound {
                type_name: f.type_name.clone(),
                relation: r.clone(),
            });
        }
    }
    Ok(object)
}

impl<'a> Collector<'a> {
    fn matches(&self, user: &UserRef<'_>) -> bool {
        self.filters
            .iter()
            .any(|f| f.type_name == user.user_type() && f.relation.as_deref() == user.relation())
    }

    fn add(&mut self, user: UserRef<'a>, verify: bool) {
        if self.matches(&user) && self.seen.insert(user) {
            self.candidates.push((user, verify));
        }
    }

    fn expand(&mut self, node: NodeKey<'a>, verify: bool, depth: u32) -> Result<(), AuthzError> {
        if depth >= self.max_depth {
            return Err(AuthzError::ResolutionTooComplex {
                limit: self.max_depth,
            });
        }
        if !self.visited.insert(node) {
            return Ok(());
        }
        let (t, id, r) = node;
        let object = ObjectRef { object_type: t, id };
        self.add(UserRef::Userset(object, r), verify);
        let Some(rel) = self.model.relation(t, r) else {
            return Ok(());
        };
        for (leaf, mode) in leaves(&rel.rewrite, true) {
            let verify = verify || mode == Mode::Verify;
            match leaf {
                Leaf::This => self.direct(object, rel, verify, depth)?,
                Leaf::Computed(r2) => self.expand((t, id, r2), verify, depth + 1)?,
                Leaf::Ttu { tupleset, computed } => {
                    self.ttu(object, tupleset, computed, verify, depth)?
                }
            }
        }
        Ok(())
    }

    fn read(
        &self,
        object: ObjectRef<'a>,
        rel: &'a RelationDefinition,
        kind: &'a TypeRestriction,
    ) -> Result<Vec<&'a str>, AuthzError> {
        let mut hits: Vec<(&'a str, Option<&'a TupleCondition>)> = Vec::new();
        self.reader.read_users(
            object.object_type,
            object.id,
            &rel.name,
            &kind.type_name,
            kind.relation.as_deref(),
            &mut |uid, c| {
                hits.push((uid, c));
                ControlFlow::Continue(())
            },
        )?;
        let mut ids = Vec::with_capacity(hits.len());
        for (uid, cond) in hits {
            if (uid == "*") == kind.wildcard && self.condition_ok(rel, kind, cond)? {
                ids.push(uid);
            }
        }
        Ok(ids)
    }

    fn condition_ok(
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
        rel: &'a RelationDefinition,
        verify: bool,
        depth: u32,
    ) -> Result<(), AuthzError> {
        for kind in restriction_kinds(rel) {
            let ids = self.read(object, rel, kind)?;
            for uid in ids {
                let u = ObjectRef {
                    object_type: &kind.type_name,
                    id: uid,
                };
                match (&kind.relation, kind.wildcard) {
                    (Some(ur), _) => {
                        self.add(UserRef::Userset(u, ur), verify);
                        self.expand((&kind.type_name, uid, ur), verify, depth + 1)?;
                    }
                    (None, true) => self.add(UserRef::Wildcard(&kind.type_name), verify),
                    (None, false) => self.add(UserRef::Object(u), verify),
                }
            }
        }
        Ok(())
    }

    fn ttu(
        &mut self,
        object: ObjectRef<'a>,
        tupleset: &'a str,
        computed: &'a str,
        verify: bool,
        depth: u32,
    ) -> Result<(), AuthzError> {
        let Some(ts) = self.model.relation(object.object_type, tupleset) else {
            return Ok(());
        };
        for kind in restriction_kinds(ts) {
            if kind.relation.is_some() || kind.wildcard {
                continue;
            }
            for pid in self.read(object, ts, kind)? {
                self.expand((&kind.type_name, pid, computed), verify, depth + 1)?;
            }
        }
        Ok(())
    }
}
