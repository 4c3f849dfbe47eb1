//! Tether's built-in authorization model.
//!
//! Roles, strongest first: `owner` ⊃ `admin` ⊃ `iam_admin` ⊃ `member` ⊃ `viewer`.
//! Roles granted on an organization flow to its environments and resources;
//! roles on an environment flow to its resources. Teams nest (`team#member`).
//! `blocked` denies every permission (`but not blocked`) and is inherited too.
//! Grants to users and service accounts may carry a condition: `in_network`
//! (client IP inside a CIDR) or `in_time_window` (now within [not_before, not_after)).
//!
//! Permissions: `can_manage` (admin), `can_manage_iam` (iam_admin), `can_write`
//! (member), `can_read` (viewer: metadata) and, on resources, `can_read_value`
//! (member, or a direct grant: secret values are not visible to viewers).

/// The built-in model, in OpenFGA DSL.
pub const TETHER_MODEL_DSL: &str = r#"model
  schema 1.1

type user

type service_account

type team
  relations
    define member: [user, service_account, team#member]

type organization
  relations
    define owner: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member]
    define admin: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or owner
    define iam_admin: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or admin
    define member: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or iam_admin
    define viewer: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or member
    define blocked: [user, service_account, team#member]
    define can_manage: admin but not blocked
    define can_manage_iam: iam_admin but not blocked
    define can_write: member but not blocked
    define can_read: viewer but not blocked

type environment
  relations
    define organization: [organization]
    define owner: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or owner from organization
    define admin: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or owner or admin from organization
    define iam_admin: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or admin or iam_admin from organization
    define member: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or iam_admin or member from organization
    define viewer: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or member or viewer from organization
    define blocked: [user, service_account, team#member] or blocked from organization
    define can_manage: admin but not blocked
    define can_manage_iam: iam_admin but not blocked
    define can_write: member but not blocked
    define can_read: viewer but not blocked

type resource
  relations
    define parent_org: [organization]
    define parent_env: [environment]
    define owner: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or owner from parent_org or owner from parent_env
    define admin: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or owner or admin from parent_org or admin from parent_env
    define iam_admin: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or admin or iam_admin from parent_org or iam_admin from parent_env
    define member: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or iam_admin or member from parent_org or member from parent_env
    define viewer: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or member or viewer from parent_org or viewer from parent_env
    define value_reader: [user, user with in_network, user with in_time_window, service_account, service_account with in_network, service_account with in_time_window, team#member] or member
    define blocked: [user, service_account, team#member] or blocked from parent_org or blocked from parent_env
    define can_manage: admin but not blocked
    define can_manage_iam: iam_admin but not blocked
    define can_write: member but not blocked
    define can_read: viewer but not blocked
    define can_read_value: value_reader but not blocked

condition in_network(client_ip: ipaddress, allowed_cidr: string) {
  client_ip.in_cidr(allowed_cidr)
}

condition in_time_window(now: timestamp, not_after: timestamp, not_before: timestamp) {
  now >= not_before && now < not_after
}
"#;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::TETHER_MODEL_DSL;
    use crate::{
        AuthorizationModel, CheckRequest, Engine, ListObjectsRequest, MemoryTupleStore, Tuple,
    };

    fn setup() -> (AuthorizationModel, MemoryTupleStore) {
        let model = AuthorizationModel::from_dsl(TETHER_MODEL_DSL).unwrap();
        let mut s = MemoryTupleStore::new();
        let tuples = [
            ("environment:prod", "organization", "organization:acme"),
            ("resource:db-password", "parent_env", "environment:prod"),
            ("resource:db-password", "parent_org", "organization:acme"),
            ("organization:acme", "viewer", "team:eng#member"),
            ("team:eng", "member", "team:backend#member"),
            ("team:backend", "member", "user:ann"),
            ("environment:prod", "admin", "user:bob"),
            ("organization:acme", "blocked", "user:mallory"),
            ("organization:acme", "owner", "user:mallory"),
        ];
        for (o, r, u) in tuples {
            s.write_validated(&model, Tuple::new(o, r, u)).unwrap();
        }
        let ctx = json!({"allowed_cidr": "10.0.0.0/8"})
            .as_object()
            .cloned()
            .unwrap();
        let grant = Tuple::new("resource:db-password", "value_reader", "user:carol")
            .with_condition("in_network", ctx);
        s.write_validated(&model, grant).unwrap();
        (model, s)
    }

    #[test]
    fn builtin_model_parses_validates_and_round_trips() {
        let model = AuthorizationModel::from_dsl(TETHER_MODEL_DSL).unwrap();
        let again = AuthorizationModel::from_dsl(&model.to_dsl()).unwrap();
        assert_eq!(model.to_json(), again.to_json());
        let from_json = AuthorizationModel::from_json(&model.to_json().to_string()).unwrap();
        assert_eq!(from_json.to_json(), model.to_json());
    }

    #[test]
    fn builtin_model_semantics() {
        let (model, s) = setup();
        let e = Engine::default();
        let check =
            |o: &str, r: &str, u: &str| e.check(&model, &s, &CheckRequest::new(o, r, u)).unwrap();
        assert!(check("resource:db-password", "can_read", "user:ann"));
        assert!(!check("resource:db-password", "can_read_value", "user:ann"));
        assert!(check("resource:db-password", "can_read_value", "user:bob"));
        assert!(check("resource:db-password", "can_manage", "user:bob"));
        assert!(!check("organization:acme", "can_manage", "user:bob"));
        assert!(!check("resource:db-password", "can_read", "user:mallory"));
        let mut req = CheckRequest::new("resource:db-password", "can_read_value", "user:carol");
        req.context = json!({"client_ip": "10.1.2.3"})
            .as_object()
            .cloned()
            .unwrap();
        assert!(e.check(&model, &s, &req).unwrap());
        req.context = json!({"client_ip": "192.168.0.1"})
            .as_object()
            .cloned()
            .unwrap();
        assert!(!e.check(&model, &s, &req).unwrap());
    }

    #[test]
    fn builtin_list_objects_subtracts_blocked_in_bulk() {
        let (model, s) = setup();
        let e = Engine::default();
        let list = |t: &str, r: &str, u: &str| {
            let req = ListObjectsRequest {
                object_type: t.into(),
                relation: r.into(),
                user: u.into(),
                ..ListObjectsRequest::default()
            };
            let mut objects = e.list_objects(&model, &s, &req).unwrap().objects;
            objects.sort();
            objects
        };
        assert_eq!(
            list("resource", "can_read", "user:ann"),
            ["resource:db-password"]
        );
        assert!(list("resource", "can_read", "user:mallory").is_empty());
        assert!(list("organization", "can_manage", "user:mallory").is_empty());
        assert_eq!(
            list("resource", "viewer", "user:mallory"),
            ["resource:db-password"]
        );
        assert_eq!(
            list("resource", "can_manage", "user:bob"),
            ["resource:db-password"]
        );
        assert!(list("resource", "can_read_value", "user:ann").is_empty());
    }
}
