//! Query engine: Check, ListObjects, ListUsers and Expand.

mod check;
mod expand;
mod graph;
mod layered;
mod list_objects;
mod list_users;

use std::time::Duration;

use serde_json::{Map, Value};

pub use expand::{ExpandNode, ExpandRequest, UsersetTree};
pub use list_objects::{ListObjectsRequest, ListObjectsResponse};
pub use list_users::{ListUsersRequest, ListUsersResponse, UserFilter};

use crate::error::AuthzError;
use crate::model::AuthorizationModel;
use crate::store::{MemoryTupleStore, TupleReader};
use crate::tuple::{Tuple, validate_tuple};
use check::Resolver;
use layered::Layered;

/// Engine limits; the defaults are OpenFGA's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum resolution depth of Check (error 2002 beyond it).
    pub max_resolution_depth: u32,
    /// ListObjects stops (and reports `truncated`) after this many results.
    pub list_objects_max_results: usize,
    /// ListObjects stops (and reports `truncated`) after this long.
    pub list_objects_deadline: Option<Duration>,
    /// ListUsers stops (and reports `truncated`) after this many results.
    pub list_users_max_results: usize,
    /// Maximum contextual tuples per request.
    pub max_contextual_tuples: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_resolution_depth: 25,
            list_objects_max_results: 1000,
            list_objects_deadline: Some(Duration::from_secs(3)),
            list_users_max_results: 1000,
            max_contextual_tuples: 100,
        }
    }
}

/// The authorization engine. Stateless apart from its limits; share it freely.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    /// Limits applied to every request.
    pub limits: Limits,
}

/// A Check request: does `user` have `relation` on `object`?
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckRequest {
    /// `type:id`.
    pub object: String,
    /// Relation name.
    pub relation: String,
    /// `type:id`, `type:*` or `type:id#relation`.
    pub user: String,
    /// Tuples that exist for this request only.
    pub contextual_tuples: Vec<Tuple>,
    /// Context for conditions.
    pub context: Map<String, Value>,
}

/// The answer of a Check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOutcome {
    /// The user has the relation.
    pub allowed: bool,
    /// A tuple's condition was evaluated, so the answer depends on the request's context.
    pub used_conditions: bool,
}

impl CheckRequest {
    /// A request without contextual tuples or context.
    pub fn new(object: &str, relation: &str, user: &str) -> Self {
        Self {
            object: object.to_owned(),
            relation: relation.to_owned(),
            user: user.to_owned(),
            ..Self::default()
        }
    }
}

impl Engine {
    /// An engine with the given limits.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// Check whether `req.user` has `req.relation` on `req.object`.
    pub fn check(
        &self,
        model: &AuthorizationModel,
        tuples: &dyn TupleReader,
        req: &CheckRequest,
    ) -> Result<bool, AuthzError> {
        self.check_outcome(model, tuples, req).map(|o| o.allowed)
    }

    /// [`Self::check`], also telling whether the answer depended on the request's context
    /// (a tuple's condition was evaluated). An answer that did not may be cached until the
    /// tuples change.
    pub fn check_outcome(
        &self,
        model: &AuthorizationModel,
        tuples: &dyn TupleReader,
        req: &CheckRequest,
    ) -> Result<CheckOutcome, AuthzError> {
        let extra = self.contextual_store(model, &req.contextual_tuples)?;
        let layered;
        let reader: &dyn TupleReader = match &extra {
            Some(extra) => {
                layered = Layered::new(tuples, Some(extra));
                &layered
            }
            None => tuples,
        };
        let (object, user) =
            check::parse_check_input(model, &req.object, &req.relation, &req.user)?;
        let mut resolver = Resolver::new(model, reader, user, &req.context, &self.limits);
        let allowed = resolver.check(object, &req.relation)?;
        Ok(CheckOutcome {
            allowed,
            used_conditions: resolver.conditions_used(),
        })
    }

    /// Validate contextual tuples and index them for the request.
    fn contextual_store(
        &self,
        model: &AuthorizationModel,
        tuples: &[Tuple],
    ) -> Result<Option<MemoryTupleStore>, AuthzError> {
        if tuples.is_empty() {
            return Ok(None);
        }
        if tuples.len() > self.limits.max_contextual_tuples {
            return Err(AuthzError::Validation(format!(
                "at most {} contextual tuples are allowed",
                self.limits.max_contextual_tuples
            )));
        }
        let mut store = MemoryTupleStore::new();
        for t in tuples {
            validate_tuple(model, t)?;
            store.write(t.clone())?;
        }
        Ok(Some(store))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TupleCondition;

    const DSL: &str = "model
  schema 1.1
type user
type doc
  relations
    define editor: [user]
    define viewer: [user, user with in_network]
condition in_network(client_ip: ipaddress, cidr: string) {
  client_ip.in_cidr(cidr)
}
";

    #[test]
    fn the_outcome_says_whether_a_condition_was_evaluated() {
        let model = AuthorizationModel::from_dsl(DSL).unwrap();
        let mut tuples = MemoryTupleStore::new();
        tuples
            .write(Tuple::new("doc:1", "editor", "user:b"))
            .unwrap();
        let mut t = Tuple::new("doc:1", "viewer", "user:a");
        let mut ctx = Map::new();
        ctx.insert("cidr".into(), Value::String("10.0.0.0/8".into()));
        t.condition = Some(TupleCondition {
            name: "in_network".into(),
            context: ctx,
        });
        tuples.write(t).unwrap();
        let engine = Engine::default();
        let ask = |rel: &str, user: &str, ip: &str| {
            let mut req = CheckRequest::new("doc:1", rel, user);
            req.context
                .insert("client_ip".into(), Value::String(ip.into()));
            engine.check_outcome(&model, &tuples, &req).unwrap()
        };
        let inside = ask("viewer", "user:a", "10.1.2.3");
        assert_eq!((inside.allowed, inside.used_conditions), (true, true));
        let outside = ask("viewer", "user:a", "192.168.0.1");
        assert_eq!((outside.allowed, outside.used_conditions), (false, true));
        let plain = ask("editor", "user:b", "10.1.2.3");
        assert_eq!((plain.allowed, plain.used_conditions), (true, false));
        let none = ask("editor", "user:a", "10.1.2.3");
        assert_eq!((none.allowed, none.used_conditions), (false, false));
    }
}
