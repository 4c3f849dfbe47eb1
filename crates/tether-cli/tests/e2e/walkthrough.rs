//! The README walkthrough, end to end through the CLI.

use crate::{WALKTHROUGH, ok as stdout, server};

#[tokio::test]
async fn walkthrough_through_the_cli() {
    let s = server().await;
    let root = s.root_key.clone();
    let who = stdout(&s.cli(Some(&root), &["auth", "whoami", "-o", "json"]));
    assert!(who.contains("\"name\": \"admin\""), "{who}");

    let file = s.dir.path().join("walkthrough.yaml");
    std::fs::write(&file, WALKTHROUGH).unwrap();
    let first = stdout(&s.cli(Some(&root), &["apply", "-f", file.to_str().unwrap()]));
    assert_eq!(first.matches("created").count(), 5, "{first}");
    let again = stdout(&s.cli(Some(&root), &["apply", "-f", file.to_str().unwrap()]));
    assert_eq!(again.matches("unchanged").count(), 5, "{again}");

    let envs = stdout(&s.cli(Some(&root), &["get", "envs"]));
    assert!(
        envs.contains("production") && envs.contains("dev"),
        "{envs}"
    );
    let team = stdout(&s.cli(Some(&root), &["get", "teams", "ops", "-o", "yaml"]));
    assert!(team.contains("user:alice"), "{team}");

    let created = stdout(&s.cli(
        Some(&root),
        &[
            "key",
            "create",
            "deploy",
            "--service-account",
            "ci",
            "-o",
            "json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&created).unwrap();
    let ci_key = v["key"].as_str().unwrap().to_owned();
    s.remember(&ci_key);
    let listed = stdout(&s.cli(Some(&root), &["key", "list", "--service-account", "ci"]));
    assert!(!listed.contains(&ci_key), "listing shows the key itself");
    assert!(listed.contains("deploy"));

    // The service account is in team ops, which is admin on production only.
    let prod = stdout(&s.cli(
        Some(&ci_key),
        &["get", "role-bindings", "--env", "production"],
    ));
    assert!(prod.contains("ops-prod-admin"), "{prod}");
    let dev = s.cli(Some(&ci_key), &["get", "role-bindings", "--env", "dev"]);
    assert!(!dev.status.success());
    assert!(String::from_utf8_lossy(&dev.stderr).contains("not_found"));

    let history = stdout(&s.cli(Some(&root), &["audit", "versions", "teams", "ops"]));
    assert!(history.contains("create"), "{history}");
    let verify = stdout(&s.cli(Some(&root), &["audit", "verify"]));
    assert!(verify.contains("no broken link"));
    let log = stdout(&s.cli(
        Some(&root),
        &[
            "audit",
            "log",
            "--principal",
            "service_account:ci@default",
            "-o",
            "json",
        ],
    ));
    let records: serde_json::Value = serde_json::from_str(&log).unwrap();
    let results: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert!(
        results.contains(&"allowed") && results.contains(&"denied"),
        "{results:?}"
    );
}

#[tokio::test]
async fn role_bindings_grant_and_revoke_access() {
    let s = server().await;
    s.apply(WALKTHROUGH).await;
    let bob = s.user_key("bob").await;
    let path = "/v1/orgs/default/envs/production";
    assert_eq!(s.req("GET", path, Some(&bob), None).await.status, 404);
    s.apply("kind: RoleBinding\nmetadata: {name: bob-viewer, env: production}\nspec: {role: viewer, subject: 'user:bob'}\n").await;
    assert_eq!(s.req("GET", path, Some(&bob), None).await.status, 200);
    // A viewer may read but not change: the object is visible, so the answer is 403.
    let body =
        serde_json::json!({"metadata": {"name": "production"}, "spec": {"protected": false}});
    let r = s.req("PUT", path, Some(&bob), Some(&body)).await;
    r.assert_error(403, "forbidden");
    assert_eq!(
        s.admin(
            "DELETE",
            "/v1/orgs/default/role-bindings/bob-viewer?env=production",
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(s.req("GET", path, Some(&bob), None).await.status, 404);
}

/// A role binding may hold only for requests from a network, or only within a time window
/// (an expiring grant). The test client connects from 127.0.0.1.
#[tokio::test]
async fn conditional_role_bindings_hold_only_from_their_network_or_in_their_window() {
    let s = server().await;
    let erin = s.user_key("erin").await;
    let path = "/v1/orgs/default/envs/dev";
    let bind = |name: &str, condition: &str| {
        format!(
            "kind: RoleBinding\nmetadata: {{name: {name}}}\n\
             spec: {{role: viewer, subject: 'user:erin', condition: {condition}}}\n"
        )
    };
    let get = || s.req("GET", path, Some(&erin), None);
    let try_apply = |yaml: String| {
        s.raw(
            "POST",
            "/v1/apply",
            Some(&s.root_key),
            "application/yaml",
            yaml.into_bytes(),
        )
    };
    // Another network: no access, and nothing tells erin the object exists.
    assert_eq!(
        s.apply(&bind("erin-net", "{network: 10.0.0.0/8}"))
            .await
            .status,
        200
    );
    assert_eq!(get().await.status, 404);
    // Her own network.
    assert_eq!(
        s.apply(&bind("erin-net", "{network: 127.0.0.0/8}"))
            .await
            .status,
        200
    );
    assert_eq!(get().await.status, 200);
    // A window that has ended: an expired grant.
    let ended = "{not_before: '2020-01-01T00:00:00Z', not_after: '2021-01-01T00:00:00Z'}";
    assert_eq!(s.apply(&bind("erin-net", ended)).await.status, 200);
    assert_eq!(get().await.status, 404);
    // One that has not: open-ended before, ends in 2100.
    let open = "{not_after: '2100-01-01T00:00:00Z'}";
    assert_eq!(s.apply(&bind("erin-net", open)).await.status, 200);
    assert_eq!(get().await.status, 200);
    // Bad conditions are refused with a clear code, and the binding keeps its last condition.
    for bad in [
        "{network: '10.0.0.0/33'}",
        "{network: 'not-a-net'}",
        "{not_after: 'tomorrow'}",
        "{not_before: '2030-01-01T00:00:00Z', not_after: '2029-01-01T00:00:00Z'}",
        "{network: 10.0.0.0/8, not_after: '2100-01-01T00:00:00Z'}",
        "{}",
        "{networks: 10.0.0.0/8}",
    ] {
        let r = try_apply(bind("erin-net", bad)).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_argument"),
            "{bad}: {}",
            r.text
        );
        assert_eq!(get().await.status, 200, "{bad}");
    }
    let team = "kind: Team\nmetadata: {name: ops}\nspec: {members: ['user:erin']}\n---\n\
                kind: RoleBinding\nmetadata: {name: ops-net}\n\
                spec: {role: viewer, subject: 'team:ops', condition: {network: 10.0.0.0/8}}\n";
    let r = try_apply(team.to_owned()).await;
    r.assert_error(400, "invalid_argument");
    // The condition reads back as written.
    let b = s
        .admin("GET", "/v1/orgs/default/role-bindings/erin-net", None)
        .await;
    assert_eq!(
        b.body["spec"]["condition"]["not_after"], "2100-01-01T00:00:00Z",
        "{}",
        b.text
    );
}

#[tokio::test]
async fn nested_teams_inherit_and_cycles_are_refused() {
    let s = server().await;
    let carol = s.user_key("carol").await;
    s.apply("kind: Team\nmetadata: {name: inner}\nspec: {members: ['user:carol']}\n---\nkind: Team\nmetadata: {name: outer}\nspec: {members: ['team:inner']}\n---\nkind: RoleBinding\nmetadata: {name: outer-viewer}\nspec: {role: viewer, subject: 'team:outer'}\n").await;
    assert_eq!(
        s.req("GET", "/v1/orgs/default/envs/dev", Some(&carol), None)
            .await
            .status,
        200
    );
    let body = serde_json::json!({"metadata": {"name": "inner"}, "spec": {"members": ["user:carol", "team:outer"]}});
    let r = s
        .admin("PUT", "/v1/orgs/default/teams/inner", Some(&body))
        .await;
    r.assert_error(409, "team_cycle");
    // Nothing was half-written: carol still reads through the old membership.
    assert_eq!(
        s.req("GET", "/v1/orgs/default/envs/dev", Some(&carol), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn organizations_are_isolated() {
    let s = server().await;
    let r = s
        .admin(
            "POST",
            "/v1/orgs",
            Some(&serde_json::json!({"metadata": {"name": "acme"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.apply("kind: Environment\nmetadata: {name: staging, org: acme}\n")
        .await;
    let dave = s.user_key("dave").await;
    s.apply("kind: RoleBinding\nmetadata: {name: dave-admin}\nspec: {role: admin, subject: 'user:dave'}\n").await;
    assert_eq!(
        s.req("GET", "/v1/orgs/default/envs/dev", Some(&dave), None)
            .await
            .status,
        200
    );
    let other = s
        .req("GET", "/v1/orgs/acme/envs/staging", Some(&dave), None)
        .await;
    let missing = s
        .req("GET", "/v1/orgs/nope/envs/staging", Some(&dave), None)
        .await;
    assert_eq!((other.status, missing.status), (404, 404));
    let orgs = s.req("GET", "/v1/orgs", Some(&dave), None).await;
    let names: Vec<&str> = orgs
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["default"]);
}
