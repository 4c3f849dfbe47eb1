//! Authorization wiring. Every route declares a relation on an object; the decision comes from
//! the `tether-authz` engine evaluating Tether's built-in model over the tuples that the store
//! wrote in the same transaction as each resource. The engine sits behind [`Authorizer`], so a
//! remote OpenFGA-compatible server can replace it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::RwLock;

use serde_json::{Map, Value};
use tether_authz::{AuthorizationModel, CheckRequest, Engine, MemoryTupleStore, Tuple};
use tether_store::TupleRow;

use crate::error::AppError;

/// Request attributes that conditions may use.
#[derive(Debug, Clone, Default)]
pub struct CheckContext {
    /// The client's IP address.
    pub ip: Option<std::sync::Arc<str>>,
    /// The current time (Unix milliseconds), given to conditions as RFC 3339.
    pub now_ms: Option<i64>,
}

impl CheckContext {
    fn to_map(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some(ip) = &self.ip {
            m.insert("client_ip".into(), Value::String(ip.to_string()));
        }
        if let Some(now) = self.now_ms {
            m.insert(
                "now".into(),
                Value::String(tether_core::clock::rfc3339(now)),
            );
        }
        m
    }
}

/// The decision point used by every route.
pub trait Authorizer: Send + Sync {
    /// Does `subject` have `relation` on `object`?
    fn check(
        &self,
        subject: &str,
        relation: &str,
        object: &str,
        ctx: &CheckContext,
    ) -> Result<bool, AppError>;
    /// The objects of `object_type` on which `subject` has `relation`.
    fn list_objects(
        &self,
        subject: &str,
        relation: &str,
        object_type: &str,
        ctx: &CheckContext,
    ) -> Result<Vec<String>, AppError>;
    /// Mirrors tuples that a committed transaction wrote and deleted.
    fn apply(&self, writes: &[TupleRow], deletes: &[TupleRow]);
}

/// The embedded engine over an in-memory index of every tuple, loaded at startup and kept in
/// step with committed writes, its own and (through [`crate::changes`]) other servers'.
///
/// Answers that did not depend on a condition are cached until the tuples next change (any
/// change empties the cache), so a repeated check is one hash lookup. An answer that evaluated
/// a condition (client IP, time window) is never cached.
pub struct EmbeddedAuthorizer {
    model: AuthorizationModel,
    engine: Engine,
    tuples: RwLock<MemoryTupleStore>,
    /// `subject \0 relation \0 object` to the answer. Written only under the tuples' read lock
    /// and emptied under their write lock, so no answer outlives the tuples it came from.
    decisions: RwLock<HashMap<Box<str>, bool>>,
}

/// Cached answers kept at most; a full cache is emptied.
const DECISIONS_MAX: usize = 100_000;

thread_local! {
    static DECISION_KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

fn decision_key(key: &mut String, subject: &str, relation: &str, object: &str) {
    key.clear();
    key.push_str(subject);
    key.push('\0');
    key.push_str(relation);
    key.push('\0');
    key.push_str(object);
}

/// Converts a stored row to an engine tuple.
fn to_tuple(row: &TupleRow) -> Tuple {
    let mut t = Tuple::new(&row.object, &row.relation, &row.subject);
    if let Some(cond) = row
        .condition
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok())
    {
        t.condition = Some(cond);
    }
    t
}

impl EmbeddedAuthorizer {
    /// Builds the authorizer from the built-in model and the stored tuples.
    pub fn new(rows: &[TupleRow]) -> Result<Self, String> {
        let model =
            AuthorizationModel::from_dsl(&crate::model::model_dsl()).map_err(|e| e.to_string())?;
        let mut store = MemoryTupleStore::new();
        for row in rows {
            store.write(to_tuple(row)).map_err(|e| e.to_string())?;
        }
        Ok(Self {
            model,
            engine: Engine::default(),
            tuples: RwLock::new(store),
            decisions: RwLock::new(HashMap::new()),
        })
    }
}

impl Authorizer for EmbeddedAuthorizer {
    fn check(
        &self,
        subject: &str,
        relation: &str,
        object: &str,
        ctx: &CheckContext,
    ) -> Result<bool, AppError> {
        // A relation the object's type does not define is simply not held.
        let object_type = object.split_once(':').map_or(object, |(t, _)| t);
        if self.model.relation(object_type, relation).is_none() {
            return Ok(false);
        }
        let cached = DECISION_KEY.with_borrow_mut(|key| {
            decision_key(key, subject, relation, object);
            self.decisions
                .read()
                .ok()
                .and_then(|d| d.get(key.as_str()).copied())
        });
        if let Some(allowed) = cached {
            return Ok(allowed);
        }
        let req = CheckRequest {
            object: object.to_owned(),
            relation: relation.to_owned(),
            user: subject.to_owned(),
            contextual_tuples: Vec::new(),
            context: ctx.to_map(),
        };
        let guard = self
            .tuples
            .read()
            .map_err(|_| AppError::internal("authz lock poisoned"))?;
        let outcome = self
            .engine
            .check_outcome(&self.model, &*guard, &req)
            .map_err(|e| AppError::internal(format!("authz check: {e}")))?;
        if !outcome.used_conditions
            && let Ok(mut d) = self.decisions.write()
        {
            if d.len() >= DECISIONS_MAX {
                d.clear();
            }
            // The thread's key buffer still holds this check's key.
            DECISION_KEY.with_borrow(|key| d.insert(key.as_str().into(), outcome.allowed));
        }
        drop(guard);
        Ok(outcome.allowed)
    }

    fn list_objects(
        &self,
        subject: &str,
        relation: &str,
        object_type: &str,
        ctx: &CheckContext,
    ) -> Result<Vec<String>, AppError> {
        let req = tether_authz::ListObjectsRequest {
            object_type: object_type.to_owned(),
            relation: relation.to_owned(),
            user: subject.to_owned(),
            contextual_tuples: Vec::new(),
            context: ctx.to_map(),
        };
        let guard = self
            .tuples
            .read()
            .map_err(|_| AppError::internal("authz lock poisoned"))?;
        let resp = self
            .engine
            .list_objects(&self.model, &*guard, &req)
            .map_err(|e| AppError::internal(format!("authz list: {e}")))?;
        Ok(resp.objects)
    }

    fn apply(&self, writes: &[TupleRow], deletes: &[TupleRow]) {
        let Ok(mut guard) = self.tuples.write() else {
            tracing::error!("authz lock poisoned; tuples not applied");
            return;
        };
        match self.decisions.write() {
            Ok(mut d) => d.clear(),
            Err(_) => tracing::error!("authz decision cache poisoned"),
        }
        for row in deletes {
            guard.delete(&to_tuple(row));
        }
        for row in writes {
            if let Err(e) = guard.write(to_tuple(row)) {
                tracing::error!(error = %e, "could not index a committed tuple");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(object: &str, relation: &str, subject: &str) -> TupleRow {
        TupleRow {
            object: object.into(),
            relation: relation.into(),
            subject: subject.into(),
            org_id: "o".into(),
            source_id: "s".into(),
            condition: None,
        }
    }

    #[test]
    fn relations_a_type_lacks_are_not_held() {
        let a = EmbeddedAuthorizer::new(&[
            row("environment:e", "organization", "organization:o"),
            row("organization:o", "owner", "user:u"),
        ])
        .unwrap();
        let ctx = CheckContext {
            ip: Some("127.0.0.1".into()),
            now_ms: Some(1_767_225_600_000),
        };
        assert!(
            a.check("user:u", "can_read", "environment:e", &ctx)
                .unwrap()
        );
        assert!(
            !a.check("user:u", "can_read_value", "environment:e", &ctx)
                .unwrap()
        );
        assert!(!a.check("user:u", "can_read", "widget:w", &ctx).unwrap());
    }

    #[test]
    fn cached_answers_follow_tuple_changes() {
        let a = EmbeddedAuthorizer::new(&[row("environment:e", "organization", "organization:o")])
            .unwrap();
        let ctx = CheckContext::default();
        let grant = row("organization:o", "owner", "user:u");
        for _ in 0..2 {
            assert!(
                !a.check("user:u", "can_read", "environment:e", &ctx)
                    .unwrap()
            );
        }
        a.apply(std::slice::from_ref(&grant), &[]);
        for _ in 0..2 {
            assert!(
                a.check("user:u", "can_read", "environment:e", &ctx)
                    .unwrap()
            );
        }
        a.apply(&[], std::slice::from_ref(&grant));
        assert!(
            !a.check("user:u", "can_read", "environment:e", &ctx)
                .unwrap()
        );
    }

    #[test]
    fn answers_that_used_a_condition_are_not_cached() {
        let mut grant = row("organization:o", "owner", "user:u");
        grant.condition =
            Some(r#"{"name":"in_network","context":{"allowed_cidr":"10.0.0.0/8"}}"#.into());
        let a = EmbeddedAuthorizer::new(&[
            row("environment:e", "organization", "organization:o"),
            grant,
        ])
        .unwrap();
        let at = |ip: &str| CheckContext {
            ip: Some(ip.into()),
            now_ms: None,
        };
        assert!(
            a.check("user:u", "can_read", "environment:e", &at("10.0.0.7"))
                .unwrap()
        );
        assert!(
            !a.check("user:u", "can_read", "environment:e", &at("192.0.2.1"))
                .unwrap()
        );
        assert!(
            a.check("user:u", "can_read", "environment:e", &at("10.9.9.9"))
                .unwrap()
        );
    }
}
