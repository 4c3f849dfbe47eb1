//! Resource versions, diff, restore, verify, and the request log.

use serde_json::json;
use tether_testkit::tamper;

use crate::server;

async fn history(s: &tether_testkit::TestServer, kind: &str, name: &str) -> Vec<serde_json::Value> {
    let r = s
        .admin(
            "GET",
            &format!("/v1/audit/default/versions?kind={kind}&name={name}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body.as_array().unwrap().clone()
}

#[tokio::test]
async fn versions_diff_and_restore() {
    let s = server().await;
    s.apply("kind: Team\nmetadata: {name: web}\nspec: {description: first}\n")
        .await;
    s.apply("kind: Team\nmetadata: {name: web, version: {message: second pass}}\nspec: {description: second}\n").await;
    let h = history(&s, "teams", "web").await;
    assert_eq!(h.len(), 2);
    assert_eq!(h[1]["message"], "second pass");
    let (v1, v2) = (h[0]["id"].as_str().unwrap(), h[1]["id"].as_str().unwrap());
    let shown = s
        .admin("GET", &format!("/v1/audit/default/versions/{v2}"), None)
        .await;
    assert!(
        shown.body["diff"]
            .as_str()
            .unwrap()
            .contains("-  description: first"),
        "{}",
        shown.text
    );
    assert_eq!(shown.body["previous_version_id"], v1);
    let d = s
        .admin(
            "GET",
            &format!("/v1/audit/default/diff?from={v1}&to={v2}"),
            None,
        )
        .await;
    assert!(
        d.body["diff"]
            .as_str()
            .unwrap()
            .contains("+  description: second"),
        "{}",
        d.text
    );

    let r = s
        .admin(
            "POST",
            &format!("/v1/audit/default/versions/{v1}/restore"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let team = s.admin("GET", "/v1/orgs/default/teams/web", None).await;
    assert_eq!(team.body["spec"]["description"], "first");
    let h = history(&s, "teams", "web").await;
    assert_eq!(h.len(), 3);
    assert_eq!(h[2]["event"], "restore");

    // A deleted resource comes back with its old id.
    let id = team.body["metadata"]["id"].clone();
    assert_eq!(
        s.admin("DELETE", "/v1/orgs/default/teams/web", None)
            .await
            .status,
        204
    );
    let h = history(&s, "teams", "web").await;
    assert_eq!(h[3]["event"], "delete");
    let r = s
        .admin(
            "POST",
            &format!(
                "/v1/audit/default/versions/{}/restore",
                h[2]["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["metadata"]["id"], id, "{}", r.text);
    let back = s.admin("GET", "/v1/orgs/default/teams/web", None).await;
    assert_eq!(back.status, 200, "{}", back.text);
    assert_eq!(back.body["metadata"]["id"], id, "{}", back.text);
    assert_eq!(
        s.admin("GET", "/v1/audit/default/verify", None).await.body["ok"],
        true
    );
}

#[tokio::test]
async fn versions_are_visible_only_to_readers() {
    let s = server().await;
    s.apply("kind: Environment\nmetadata: {name: hidden}\n")
        .await;
    let judy = s.user_key("judy").await;
    let h = history(&s, "envs", "hidden").await;
    let v = h[0]["id"].as_str().unwrap();
    // judy cannot read the org at all; give her viewer on dev only.
    s.apply("kind: RoleBinding\nmetadata: {name: judy-dev, env: dev}\nspec: {role: viewer, subject: 'user:judy'}\n").await;
    let r = s
        .req(
            "GET",
            &format!("/v1/audit/default/versions/{v}"),
            Some(&judy),
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
}

async fn tampered(s: &tether_testkit::TestServer, sql: &str) -> serde_json::Value {
    assert!(
        tamper(&s.database_url, sql).await >= 1,
        "the tampering statement changed nothing"
    );
    let r = s.admin("GET", "/v1/audit/default/verify", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["ok"], false, "{}", r.text);
    r.body
}

#[tokio::test]
async fn verify_detects_edited_deleted_and_reordered_rows() {
    let s = server().await;
    for i in 0..4 {
        s.apply(&format!("kind: Team\nmetadata: {{name: t{i}}}\n"))
            .await;
    }
    let ok = s.cli(Some(&s.root_key.clone()), &["audit", "verify"]);
    assert!(ok.status.success());

    let body = tampered(
        &s,
        "UPDATE versions SET actor = 'user:mallory@default' WHERE resource_name = 't1'",
    )
    .await;
    assert_eq!(
        body["versions"]["reason"],
        "the record was modified after it was written"
    );
    let cli = s.cli(Some(&s.root_key.clone()), &["audit", "verify"]);
    assert!(!cli.status.success());
    let err = String::from_utf8_lossy(&cli.stderr);
    assert!(err.contains("first broken link"), "{err}");

    let s = server().await;
    for i in 0..4 {
        s.apply(&format!("kind: Team\nmetadata: {{name: t{i}}}\n"))
            .await;
    }
    let body = tampered(&s, "DELETE FROM versions WHERE resource_name = 't2'").await;
    assert_eq!(
        body["versions"]["reason"],
        "a record is missing before this one"
    );

    let s = server().await;
    for i in 0..4 {
        s.apply(&format!("kind: Team\nmetadata: {{name: t{i}}}\n"))
            .await;
    }
    // Swap two records' positions (in three steps: (org_id, seq) is unique).
    tamper(
        &s.database_url,
        "UPDATE versions SET seq = seq + 1000 WHERE resource_name = 't1'",
    )
    .await;
    tamper(
        &s.database_url,
        "UPDATE versions SET seq = seq - 1 WHERE resource_name = 't2'",
    )
    .await;
    let body = tampered(
        &s,
        "UPDATE versions SET seq = seq - 999 WHERE resource_name = 't1'",
    )
    .await;
    assert!(body["versions"].is_object());

    let s = server().await;
    s.admin("GET", "/v1/orgs/default", None).await;
    s.admin("GET", "/v1/audit/default/log", None).await;
    // Search skips batches by their stored bounds: editing them is tampering too.
    let body = tampered(
        &s,
        "UPDATE request_log_batches SET max_at = max_at + 1 WHERE first_seq = 1",
    )
    .await;
    assert_eq!(body["requests"]["seq"], 1);
}

#[tokio::test]
async fn request_log_search_and_export() {
    let s = server().await;
    let kim = s.user_key("kim").await;
    s.req("GET", "/v1/orgs/default/envs/dev", Some(&kim), None)
        .await;
    s.req("GET", "/v1/orgs/default/envs/dev", None, None).await;
    let denied = s
        .admin(
            "GET",
            "/v1/audit/default/log?result=denied&principal=user:kim@default",
            None,
        )
        .await;
    assert_eq!(denied.status, 200, "{}", denied.text);
    let rows = denied.body.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{}", denied.text);
    assert_eq!(rows[0]["status"], 404);
    assert!(rows[0]["request_id"].as_str().unwrap().starts_with("req_"));
    let since = s
        .admin("GET", "/v1/audit/default/log?since=1h&limit=1000", None)
        .await;
    assert!(since.body.as_array().unwrap().len() >= 3);
    let future = s
        .admin(
            "GET",
            "/v1/audit/default/log?since=2999-01-01T00:00:00Z",
            None,
        )
        .await;
    assert_eq!(future.body.as_array().unwrap().len(), 0);
    let bad = s
        .admin("GET", "/v1/audit/default/log?since=yesterday", None)
        .await;
    assert_eq!((bad.status, bad.code()), (400, "invalid_argument"));
    // Newest first, from the API and then the CLI: the seqs descend, and the CLI's search,
    // made later, starts at a newer record.
    let newest = s
        .admin("GET", "/v1/audit/default/log?order=newest&limit=3", None)
        .await;
    let seqs: Vec<i64> = newest
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 3, "{}", newest.text);
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    let cli = s.cli(
        Some(&s.root_key.clone()),
        &["audit", "log", "--newest", "--limit", "2", "-o", "json"],
    );
    let rows: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    let first = rows[0]["seq"].as_i64().unwrap();
    assert!(
        first > seqs[0] && rows[1]["seq"].as_i64().unwrap() < first,
        "{rows}"
    );
    let bad = s
        .admin("GET", "/v1/audit/default/log?order=sideways", None)
        .await;
    assert_eq!((bad.status, bad.code()), (400, "invalid_argument"));

    let csv = s.cli(
        Some(&s.root_key.clone()),
        &["audit", "export", "--format", "csv"],
    );
    let text = String::from_utf8_lossy(&csv.stdout);
    assert!(
        text.starts_with("seq,at,request_id,org,principal,action,resource,result,status"),
        "{text}"
    );
    let jsonl = s.cli(Some(&s.root_key.clone()), &["audit", "export"]);
    let first = String::from_utf8_lossy(&jsonl.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    assert!(serde_json::from_str::<serde_json::Value>(&first).is_ok());
    // Never a header value or body: the keys used above are not in the log.
    let all = s
        .admin("GET", "/v1/audit/default/log/export?limit=10000", None)
        .await;
    assert!(!all.text.contains(&kim) && !all.text.contains(&s.root_key));
    let _ = json!({});
}

/// Strings a client chooses (an organization name in the URL, an unrouted path) are kept
/// short in a record's organization and action; the resource keeps the whole path.
#[tokio::test]
async fn client_chosen_log_strings_are_clipped() {
    let s = server().await;
    let org = "o".repeat(300);
    let path = format!("/{}", "x".repeat(3000));
    s.admin("GET", &format!("/v1/orgs/{org}/envs/dev"), None)
        .await;
    s.req("GET", &path, None, None).await;
    // NUL, which PostgreSQL's text refuses, decoded from the URL: refused before any lookup
    // (it was an internal error on PostgreSQL), and logged with the NUL replaced.
    for path in [
        "/v1/orgs/ooo%00/envs/dev",
        "/v1/orgs/default/secrets/a%00/data",
        "/v1/audit/default/log?principal=%00",
    ] {
        let r = s.admin("GET", path, None).await;
        assert_eq!((r.status, r.code()), (400, "invalid_argument"), "{path}");
    }
    // Verify flushes the request log.
    s.admin("GET", "/v1/audit/default/verify", None).await;
    let rows: Vec<String> = crate::request_log(&s)
        .await
        .iter()
        .filter(|r| r.resource.starts_with("/v1/orgs/ooo") || r.resource.starts_with("/xxx"))
        .map(|r| format!("{}|{}|{}", r.org, r.action, r.resource))
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let parts: Vec<Vec<&str>> = rows.iter().map(|r| r.split('|').collect()).collect();
    assert_eq!(parts[0][0], "o".repeat(128));
    assert_eq!(parts[0][2], format!("/v1/orgs/{org}/envs/dev"));
    assert_eq!(parts[1][1], format!("GET /{}", "x".repeat(127)));
    assert_eq!(parts[1][2], path);
    // Refused before routing: no organization, the raw path.
    assert_eq!(
        parts[2],
        [
            "",
            "GET /v1/orgs/ooo%00/envs/dev",
            "/v1/orgs/ooo%00/envs/dev"
        ]
    );
}
