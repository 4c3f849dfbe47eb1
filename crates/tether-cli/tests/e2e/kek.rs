//! KEK rotation and root-key rotation, end to end: DEKs are rewrapped (the encrypted data is
//! byte-for-byte unchanged), every old version keeps reading, across restarts.

use serde_json::json;
use tether_testkit::{TestServer, query_strings};

use crate::{ok, server};

/// Writes a version of `name` with one key and remembers the value.
pub async fn put(s: &TestServer, org: &str, name: &str, value: &str) -> i64 {
    s.remember(value);
    let r = s
        .admin(
            "POST",
            &format!("/v1/orgs/{org}/secrets/{name}/versions"),
            Some(&json!({"data": {"V": value}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["version"].as_i64().unwrap()
}

/// Reads version `v` of `name` and returns its value, or the error code.
pub async fn read(s: &TestServer, org: &str, name: &str, v: i64) -> Result<String, String> {
    let r = s
        .admin(
            "GET",
            &format!("/v1/orgs/{org}/secrets/{name}/data?version={v}"),
            None,
        )
        .await;
    match r.status {
        200 => Ok(r.body["data"]["V"].as_str().unwrap().to_owned()),
        _ => Err(format!("{} {}", r.status, r.code())),
    }
}

/// Hex of every stored blob's last 48 bytes (nonce-independent tail: ciphertext and tag),
/// keyed by secret id and version, to prove rotation never re-encrypts data.
async fn data_tails(s: &TestServer) -> Vec<String> {
    let hex = if s.database_url.starts_with("sqlite") {
        "hex(blob)"
    } else {
        "upper(encode(blob, 'hex'))"
    };
    let sql = format!(
        "SELECT secret_id || ':' || CAST(version AS TEXT) || ':' || {hex} FROM secret_versions \
         WHERE blob IS NOT NULL ORDER BY secret_id, version"
    );
    query_strings(&s.database_url, &sql)
        .await
        .into_iter()
        .map(|row| {
            let (head, blob) = row.rsplit_once(':').unwrap();
            format!("{head}:{}", &blob[blob.len() - 96..])
        })
        .collect()
}

async fn kek_versions(s: &TestServer) -> Vec<String> {
    query_strings(
        &s.database_url,
        "SELECT DISTINCT CAST(kek_version AS TEXT) FROM secret_versions WHERE blob IS NOT NULL",
    )
    .await
}

#[tokio::test]
async fn kek_rotation_rewraps_deks_and_old_versions_keep_reading() {
    let mut s = server().await;
    let root = s.root_key.clone();
    for v in 1..=3 {
        put(&s, "default", "db", &format!("db-secret-v{v}")).await;
    }
    put(&s, "default", "api", "api-secret-v1").await;
    let tails_before = data_tails(&s).await;
    assert_eq!(kek_versions(&s).await, vec!["1"]);

    let out = ok(&s.cli(
        Some(&root),
        &["kek", "rotate", "--org", "default", "-o", "json"],
    ));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["kek_version"], 2);
    assert_eq!(report["provider"], "local");
    assert_eq!(report["rewrapped"], 4);
    assert_eq!(report["failed"], 0);
    assert_eq!(kek_versions(&s).await, vec!["2"]);
    assert_eq!(
        data_tails(&s).await,
        tails_before,
        "rotation must rewrap DEKs only, never re-encrypt data"
    );
    for v in 1..=3 {
        assert_eq!(
            read(&s, "default", "db", v).await.unwrap(),
            format!("db-secret-v{v}")
        );
    }
    // After a restart nothing is cached: every DEK is unwrapped by KEK version 2.
    s.restart().await;
    for v in 1..=3 {
        assert_eq!(
            read(&s, "default", "db", v).await.unwrap(),
            format!("db-secret-v{v}")
        );
    }
    assert_eq!(
        read(&s, "default", "api", 1).await.unwrap(),
        "api-secret-v1"
    );
    // New versions use the new KEK; a second rotation moves everything to version 3.
    put(&s, "default", "db", "db-secret-v4").await;
    let out = ok(&s.cli(
        Some(&root),
        &["kek", "rotate", "--org", "default", "-o", "json"],
    ));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report["kek_version"].as_i64(), report["rewrapped"].as_i64()),
        (Some(3), Some(5))
    );
    let list = ok(&s.cli(
        Some(&root),
        &["kek", "list", "--org", "default", "-o", "json"],
    ));
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[2]["active"], true);
    assert_eq!(list[2]["secret_versions"], 5);
    assert_eq!(list[0]["secret_versions"], 0);
    s.restart().await;
    assert_eq!(read(&s, "default", "db", 4).await.unwrap(), "db-secret-v4");
    assert_eq!(read(&s, "default", "db", 1).await.unwrap(), "db-secret-v1");
}

#[tokio::test]
async fn kek_routes_need_permissions() {
    let s = server().await;
    let bob = s.user_key("bob").await;
    let r = s
        .req("POST", "/v1/orgs/default/kek/rotate", Some(&bob), None)
        .await;
    assert!(r.status == 403 || r.status == 404, "{}", r.text);
    let r = s
        .req(
            "POST",
            "/v1/operator/rotate-root-key",
            Some(&bob),
            Some(&json!({"new_root_key_file": "/nonexistent"})),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = s
        .admin(
            "PUT",
            "/v1/orgs/default/kek",
            Some(&json!({"provider": "nope", "key_id": "k"})),
        )
        .await;
    r.assert_error(400, "invalid_argument");
    let r = s
        .admin(
            "PUT",
            "/v1/orgs/default/kek",
            Some(&json!({"provider": "aws-kms"})),
        )
        .await;
    r.assert_error(400, "invalid_argument");
}

#[tokio::test]
async fn root_key_rotation_rewraps_every_kek_and_needs_the_new_key_to_start() {
    let mut s = server().await;
    let root = s.root_key.clone();
    s.apply("kind: Organization\nmetadata: {name: acme}\nspec: {}\n")
        .await;
    put(&s, "default", "db", "root-rot-default-1").await;
    put(&s, "default", "db", "root-rot-default-2").await;
    put(&s, "acme", "db", "root-rot-acme-1").await;
    let tails_before = data_tails(&s).await;

    let new_key = s.dir.path().join("new-root.key");
    ok(&s.cli(
        None,
        &[
            "operator",
            "generate-root-key",
            "--out",
            new_key.to_str().unwrap(),
        ],
    ));
    s.remember(std::fs::read_to_string(&new_key).unwrap().trim());
    s.remember(
        std::fs::read_to_string(s.dir.path().join("root.key"))
            .unwrap()
            .trim(),
    );
    // A key file that group or others can read is refused.
    let loose = s.dir.path().join("loose.key");
    std::fs::copy(&new_key, &loose).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let bad = s.cli(
        Some(&root),
        &[
            "operator",
            "rotate-root-key",
            "--new-root-key-file",
            loose.to_str().unwrap(),
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("chmod 600"));

    let out = ok(&s.cli(
        Some(&root),
        &[
            "operator",
            "rotate-root-key",
            "--new-root-key-file",
            new_key.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("root key rotated"), "{out}");
    assert!(out.contains("2 organization KEKs"), "{out}");
    // The server uses the new key at once: reads, writes and a new organization's KEK.
    assert_eq!(
        read(&s, "default", "db", 1).await.unwrap(),
        "root-rot-default-1"
    );
    s.apply("kind: Organization\nmetadata: {name: beta}\nspec: {}\n")
        .await;
    put(&s, "beta", "db", "root-rot-beta-1").await;
    assert_eq!(data_tails(&s).await[..3].len(), 3);
    assert!(
        data_tails(&s)
            .await
            .iter()
            .filter(|t| tails_before.contains(t))
            .count()
            == 3
    );

    // Restarting with the old key fails closed with a clear message.
    s.kill();
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(s.dir.path().join("root.key"), other.path().join("root.key")).unwrap();
    let out = std::process::Command::new(s.bin())
        .args(["server", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(other.path())
        .args(["--database-url", &s.database_url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong root key"), "{err}");

    // With the new key in place, everything reads after the restart.
    std::fs::copy(&new_key, s.dir.path().join("root.key")).unwrap();
    s.restart().await;
    assert_eq!(
        read(&s, "default", "db", 1).await.unwrap(),
        "root-rot-default-1"
    );
    assert_eq!(
        read(&s, "default", "db", 2).await.unwrap(),
        "root-rot-default-2"
    );
    assert_eq!(read(&s, "acme", "db", 1).await.unwrap(), "root-rot-acme-1");
    assert_eq!(read(&s, "beta", "db", 1).await.unwrap(), "root-rot-beta-1");
    let who = s.admin("GET", "/v1/auth/whoami", None).await;
    assert_eq!(
        who.status, 200,
        "API keys still verify (the pepper is sealed by the system KEK)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_rotation_during_writes_to_new_organizations_loses_nothing() {
    let s = server().await;
    let root = s.root_key.clone();
    let new_key = s.dir.path().join("new-root.key");
    ok(&s.cli(
        None,
        &[
            "operator",
            "generate-root-key",
            "--out",
            new_key.to_str().unwrap(),
        ],
    ));
    s.remember(std::fs::read_to_string(&new_key).unwrap().trim());
    for i in 0..6 {
        s.apply(&format!(
            "kind: Organization\nmetadata: {{name: race{i}}}\nspec: {{}}\n"
        ))
        .await;
    }
    let s = std::sync::Arc::new(s);
    // Each organization's first write creates its KEK, racing the rotation.
    let writers: Vec<_> = (0..6)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                put(&s, &format!("race{i}"), "db", &format!("race-value-{i}")).await;
            })
        })
        .collect();
    let rotate = {
        let s = s.clone();
        let (root, key) = (root.clone(), new_key.clone());
        tokio::task::spawn_blocking(move || {
            ok(&s.cli(
                Some(&root),
                &[
                    "operator",
                    "rotate-root-key",
                    "--new-root-key-file",
                    key.to_str().unwrap(),
                ],
            ))
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    rotate.await.unwrap();
    let mut s = std::sync::Arc::into_inner(s).unwrap();
    std::fs::copy(&new_key, s.dir.path().join("root.key")).unwrap();
    s.restart().await;
    for i in 0..6 {
        assert_eq!(
            read(&s, &format!("race{i}"), "db", 1).await.unwrap(),
            format!("race-value-{i}")
        );
    }
}
