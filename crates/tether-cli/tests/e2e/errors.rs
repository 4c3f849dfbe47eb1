//! Bad input gets a clear 4xx with a stable code, and loses nothing.

use serde_json::json;

use crate::server;

#[tokio::test]
async fn malformed_bodies_get_clear_codes() {
    let s = server().await;
    let key = s.root_key.clone();
    let path = "/v1/orgs/default/teams";
    let r = s
        .raw(
            "POST",
            path,
            Some(&key),
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_json"));
    let r = s
        .raw("POST", path, Some(&key), "text/plain", b"{}".to_vec())
        .await;
    assert_eq!((r.status, r.code()), (415, "unsupported_media_type"));
    let r = s
        .admin(
            "POST",
            path,
            Some(&json!({"metadata": {"name": "t"}, "bogus": 1})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_json"));
    let r = s
        .admin(
            "POST",
            path,
            Some(&json!({"metadata": {"name": "t"}, "spec": {"membrs": []}})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"));
    let r = s
        .admin(
            "POST",
            path,
            Some(&json!({"metadata": {"name": "Bad Name"}})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_name"));
    let (status, body) = oversized_post(&s.url, path, &key).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    let r = s
        .admin(
            "POST",
            path,
            Some(&json!({"metadata": {"name": "t"}, "spec": {"members": ["user:ghost"]}})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"));
    // None of the refused writes left anything behind.
    let teams = s.admin("GET", path, None).await;
    assert_eq!(teams.body.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn every_error_has_the_json_shape_and_a_request_id() {
    let s = server().await;
    for (method, path) in [
        ("GET", "/v1/nowhere"),
        ("PATCH", "/v1/orgs"),
        ("GET", "/v1/orgs/default/widgets"),
    ] {
        let r = s.admin(method, path, None).await;
        assert!(
            r.status >= 400 && r.status < 500,
            "{method} {path}: {}",
            r.status
        );
        assert!(r.body["error"]["code"].is_string(), "{}", r.text);
        assert!(
            r.body["error"]["request_id"]
                .as_str()
                .unwrap()
                .starts_with("req_"),
            "{}",
            r.text
        );
    }
    for path in [
        "/v1/audit/default/log?limit=lots",
        "/v1/audit/default/log?colour=red",
    ] {
        let r = s.admin("GET", path, None).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_argument"),
            "{path}: {}",
            r.text
        );
    }
    let r = s
        .admin(
            "POST",
            "/v1/orgs/default/secrets/x/versions",
            Some(&json!({"data": {"K": "v"}})),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = s
        .admin(
            "POST",
            "/v1/orgs/default/secrets/x/versions/latest/destroy",
            None,
        )
        .await;
    r.assert_error(400, "invalid_argument");
    let r = s.req("GET", "/v1/orgs/default", None, None).await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"));
    let r = s
        .req("GET", "/v1/orgs/default", Some("tk_live_garbage"), None)
        .await;
    assert_eq!((r.status, r.code()), (401, "invalid_credentials"));
}

#[tokio::test]
async fn bad_manifests_are_refused_with_the_document_named() {
    let s = server().await;
    let key = s.root_key.clone();
    let r = s
        .raw(
            "POST",
            "/v1/apply",
            Some(&key),
            "application/yaml",
            b"kind: Team\nmetadata: {name: [unclosed\n".to_vec(),
        )
        .await;
    r.assert_error(400, "invalid_yaml");
    let r = s
        .raw(
            "POST",
            "/v1/apply",
            Some(&key),
            "application/yaml",
            b"kind: Widget\nmetadata: {name: w}\n".to_vec(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s.raw("POST", "/v1/apply", Some(&key), "application/yaml", b"kind: Team\nmetadata: {name: a}\n---\nkind: Team\nmetadata: {name: b}\nspec: {members: ['user:nobody']}\n".to_vec()).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("document 2"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn not_found_and_not_yours_look_the_same() {
    let s = server().await;
    s.apply("kind: Environment\nmetadata: {name: secret-project}\n")
        .await;
    let eve = s.user_key("eve").await;
    let hidden = s
        .req(
            "GET",
            "/v1/orgs/default/envs/secret-project",
            Some(&eve),
            None,
        )
        .await;
    let absent = s
        .req("GET", "/v1/orgs/default/envs/no-such-env", Some(&eve), None)
        .await;
    assert_eq!((hidden.status, hidden.code()), (404, "not_found"));
    assert_eq!((absent.status, absent.code()), (404, "not_found"));
    let strip = |m: &str, name: &str| m.replace(name, "NAME");
    assert_eq!(
        strip(
            hidden.body["error"]["message"].as_str().unwrap(),
            "secret-project"
        ),
        strip(
            absent.body["error"]["message"].as_str().unwrap(),
            "no-such-env"
        )
    );
    let del = s
        .req(
            "DELETE",
            "/v1/orgs/default/envs/secret-project",
            Some(&eve),
            None,
        )
        .await;
    assert_eq!(del.status, 404);
}

/// Announces a 2 MiB body but sends only its start, then reads the answer: the server must
/// refuse from the Content-Length alone (a client writing the whole body could see the
/// connection closed under it, which would make the test flaky).
async fn oversized_post(url: &str, path: &str, key: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        2 << 20
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&vec![b' '; 4096]).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("}}") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The leak checks that every test runs on drop can fail: a value planted in a resource (and
/// so in its audit snapshot and the debug log) is found.
#[tokio::test]
async fn the_leak_checks_catch_a_planted_value() {
    let s = server().await;
    s.apply("kind: Team\nmetadata: {name: planted}\nspec: {description: planted-value-4242}\n")
        .await;
    s.remember("planted-value-4242");
    let audit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.assert_no_secrets_in_audit()
    }));
    assert!(
        audit.is_err(),
        "the audit check did not see a value that is in an audit snapshot"
    );
    s.forget_remembered();
    s.remember("/v1/apply");
    let audit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.assert_no_secrets_in_audit()
    }));
    assert!(
        audit.is_err(),
        "the audit check did not see a value in the request log"
    );
    s.forget_remembered();
    // A team's description is stored as it is, so on SQLite the database file holds it.
    if s.database_url.starts_with("sqlite") {
        let mut s = s;
        s.kill();
        s.remember("planted-value-4242");
        let files = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.assert_no_secrets_in_database_files()
        }));
        assert!(
            files.is_err(),
            "the database file check did not see a value stored in plain text"
        );
        s.forget_remembered();
    }
}
