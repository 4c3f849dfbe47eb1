//! OpenBao (a real dev server started by `scripts/test.sh`): Transit as a KEK provider, and
//! KV v2 as a secret backend.

use serde_json::{Value, json};
use tether_testkit::TestServer;

use crate::kek::{put, read};
use crate::kms::service;
use crate::ok;

pub struct Bao {
    pub addr: String,
    pub token: String,
    http: reqwest::Client,
}

impl Bao {
    pub fn from_env() -> Option<Self> {
        let addr = service("TETHER_TEST_BAO_ADDR")?;
        let token = std::env::var("TETHER_TEST_BAO_TOKEN").unwrap_or_else(|_| "root".into());
        Some(Self {
            addr,
            token,
            http: reqwest::Client::new(),
        })
    }

    /// A Vault API call with the root token; panics on a non-2xx answer.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut r = self
            .http
            .request(method.parse().unwrap(), format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// A token limited to one policy (so tests can revoke and restore capabilities).
    pub async fn token_with_policy(&self, policy: &str, hcl: &str) -> String {
        self.call(
            "PUT",
            &format!("sys/policies/acl/{policy}"),
            Some(json!({"policy": hcl})),
        )
        .await;
        let t = self
            .call(
                "POST",
                "auth/token/create",
                Some(json!({"policies": [policy], "no_default_policy": true, "ttl": "1h"})),
            )
            .await;
        t["auth"]["client_token"].as_str().unwrap().to_owned()
    }
}

pub fn tag() -> String {
    format!(
        "t{}x{}",
        std::process::id(),
        std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos() % 1_000_000_000
    )
}

pub async fn start(env: &[(&str, &str)]) -> TestServer {
    TestServer::start_with_env(std::path::Path::new(env!("CARGO_BIN_EXE_tether")), env).await
}

fn transit_policy(mount: &str, decrypt: bool) -> String {
    let mut p = format!("path \"{mount}/encrypt/acme\" {{ capabilities = [\"update\"] }}\n");
    if decrypt {
        p.push_str(&format!(
            "path \"{mount}/decrypt/acme\" {{ capabilities = [\"update\"] }}\n"
        ));
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_transit_kek_revoke_and_restore() {
    let Some(bao) = Bao::from_env() else {
        return;
    };
    let t = tag();
    let mount = format!("transit-{t}");
    bao.call(
        "POST",
        &format!("sys/mounts/{mount}"),
        Some(json!({"type": "transit"})),
    )
    .await;
    bao.call("POST", &format!("{mount}/keys/acme"), Some(json!({})))
        .await;
    let policy = format!("tether-{t}");
    let token = bao
        .token_with_policy(&policy, &transit_policy(&mount, true))
        .await;
    let s = start(&[
        ("TETHER_OPENBAO_ADDR", &bao.addr),
        ("TETHER_OPENBAO_TOKEN", &token),
        ("TETHER_DEK_CACHE_TTL_MS", "300"),
    ])
    .await;
    s.remember(&token);
    let root = s.root_key.clone();
    put(&s, "default", "db", "transit-v1").await;
    let out = ok(&s.cli(
        Some(&root),
        &[
            "kek",
            "set",
            "--provider",
            "openbao-transit",
            "--key-id",
            &format!("{mount}/acme"),
            "-o",
            "json",
        ],
    ));
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (r["provider"].as_str(), r["rewrapped"].as_i64()),
        (Some("openbao-transit"), Some(1))
    );
    put(&s, "default", "db", "transit-v2").await;
    assert_eq!(read(&s, "default", "db", 1).await.unwrap(), "transit-v1");
    assert_eq!(read(&s, "default", "db", 2).await.unwrap(), "transit-v2");

    // Revoke decrypt in the token's policy: reads fail with kek_unavailable, nothing is lost.
    bao.call(
        "PUT",
        &format!("sys/policies/acl/{policy}"),
        Some(json!({"policy": transit_policy(&mount, false)})),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let r = s
        .admin("GET", "/v1/orgs/default/secrets/db/data?version=1", None)
        .await;
    r.assert_error(503, "kek_unavailable");
    assert!(r.text.contains("403"), "{}", r.text);
    bao.call(
        "PUT",
        &format!("sys/policies/acl/{policy}"),
        Some(json!({"policy": transit_policy(&mount, true)})),
    )
    .await;
    assert_eq!(read(&s, "default", "db", 1).await.unwrap(), "transit-v1");
    assert_eq!(read(&s, "default", "db", 2).await.unwrap(), "transit-v2");
    // A rotation rewraps under the same Transit key.
    let r: Value =
        serde_json::from_str(&ok(&s.cli(Some(&root), &["kek", "rotate", "-o", "json"]))).unwrap();
    assert_eq!(r["rewrapped"], 2);
    assert_eq!(read(&s, "default", "db", 1).await.unwrap(), "transit-v1");
}

async fn refs(s: &TestServer) -> Vec<String> {
    tether_testkit::query_strings(
        &s.database_url,
        "SELECT backend || '|' || COALESCE(backend_ref, '') || '|' || \
         CAST(COALESCE(length(blob), -1) AS TEXT) FROM secret_versions ORDER BY created_at, version",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_kv_v2_backend_stores_only_ciphertext_and_tether_keeps_history() {
    let Some(bao) = Bao::from_env() else {
        return;
    };
    let t = tag();
    let s = start(&[
        ("TETHER_OPENBAO_ADDR", &bao.addr),
        ("TETHER_OPENBAO_TOKEN", &bao.token),
    ])
    .await;
    let root = s.root_key.clone();
    put(&s, "default", "db", "kv-builtin-v1").await;
    let prefix = format!("tether-{t}");
    ok(&s.cli(
        Some(&root),
        &["backend", "set", "openbao-kv", "--prefix", &prefix],
    ));
    let got = ok(&s.cli(Some(&root), &["backend", "get", "-o", "json"]));
    assert!(got.contains("openbao-kv") && got.contains(&prefix), "{got}");
    put(&s, "default", "db", "kv-bao-v2").await;
    put(&s, "default", "db", "kv-bao-v3").await;
    for (v, want) in [(1, "kv-builtin-v1"), (2, "kv-bao-v2"), (3, "kv-bao-v3")] {
        assert_eq!(read(&s, "default", "db", v).await.unwrap(), want);
    }
    let rows = refs(&s).await;
    assert!(rows[0].starts_with("builtin||"), "{rows:?}");
    let (backend, reference, len) = {
        let p: Vec<&str> = rows[1].split('|').collect();
        (p[0].to_owned(), p[1].to_owned(), p[2].to_owned())
    };
    assert_eq!(
        (backend.as_str(), len.as_str()),
        ("openbao-kv", "0"),
        "{rows:?}"
    );
    let (mount, path) = reference.split_once(':').unwrap();
    assert!(path.starts_with(&prefix), "{reference}");
    // OpenBao holds the envelope (ciphertext only), written by Tether.
    let entry = bao.call("GET", &format!("{mount}/data/{path}"), None).await;
    let b64 = entry["data"]["data"]["blob"].as_str().unwrap();
    use base64::Engine as _;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(blob[0], 1, "envelope format v1");
    assert!(!String::from_utf8_lossy(&blob).contains("kv-bao-v2"));
    // Tether keeps the history.
    let versions = s
        .admin("GET", "/v1/orgs/default/secrets/db/versions", None)
        .await;
    assert_eq!(versions.body.as_array().unwrap().len(), 3);

    // A KEK rotation rewraps the blobs in OpenBao too: each new copy is written beside the
    // old entry, the row then names it, and the old entry goes.
    let out = ok(&s.cli(Some(&root), &["kek", "rotate", "-o", "json"]));
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["rewrapped"], 3);
    let rotated = refs(&s).await;
    let new_ref = rotated[1].split('|').nth(1).unwrap().to_owned();
    assert_ne!(new_ref, reference, "{rotated:?}");
    wait_gone(&bao, mount, path).await;
    let (_, path) = new_ref.split_once(':').unwrap();
    let meta = bao
        .call("GET", &format!("{mount}/metadata/{path}"), None)
        .await;
    assert_eq!(meta["data"]["current_version"], 1, "{meta}");
    let mut s = s;
    s.restart().await;
    for (v, want) in [(1, "kv-builtin-v1"), (2, "kv-bao-v2"), (3, "kv-bao-v3")] {
        assert_eq!(read(&s, "default", "db", v).await.unwrap(), want);
    }

    // Destroy removes the entry from OpenBao.
    ok(&s.cli(Some(&root), &["secret", "destroy", "db", "--version", "2"]));
    assert_eq!(metadata_status(&bao, mount, path).await, 404);
    assert_eq!(
        read(&s, "default", "db", 2).await.unwrap_err(),
        "410 version_destroyed"
    );
    assert_eq!(read(&s, "default", "db", 3).await.unwrap(), "kv-bao-v3");

    // Pruning by max_versions removes the pruned versions' entries from OpenBao too.
    let v3_ref = refs(&s).await[2].split('|').nth(1).unwrap().to_owned();
    let (_, v3_path) = v3_ref.split_once(':').unwrap();
    ok(&s.cli(
        Some(&root),
        &["secret", "metadata", "db", "--max-versions", "2"],
    ));
    put(&s, "default", "db", "kv-bao-v4").await;
    put(&s, "default", "db", "kv-bao-v5").await;
    assert_eq!(
        read(&s, "default", "db", 3).await.unwrap_err(),
        "410 version_destroyed"
    );
    wait_gone(&bao, mount, v3_path).await;
    assert_eq!(read(&s, "default", "db", 5).await.unwrap(), "kv-bao-v5");

    // A move seals the versions again for their new place and writes them beside the old
    // entries in OpenBao; the old entries go once the move has committed.
    let before = refs(&s).await;
    let old_paths: Vec<String> = before[3..]
        .iter()
        .map(|r| {
            r.split('|')
                .nth(1)
                .unwrap()
                .split_once(':')
                .unwrap()
                .1
                .to_owned()
        })
        .collect();
    ok(&s.cli(Some(&root), &["secret", "move", "db", "--to-env", "dev"]));
    for (v, want) in [(4, "kv-bao-v4"), (5, "kv-bao-v5")] {
        let r = s
            .admin(
                "GET",
                &format!("/v1/orgs/default/secrets/db/data?env=dev&version={v}"),
                None,
            )
            .await;
        assert_eq!(r.body["data"]["V"], want, "{}", r.text);
    }
    let after = refs(&s).await;
    for (old, new) in before[3..].iter().zip(&after[3..]) {
        assert_ne!(old, new, "{after:?}");
        assert!(
            new.starts_with("openbao-kv|") && new.ends_with("|0"),
            "{new}"
        );
    }
    for old_path in old_paths {
        wait_gone(&bao, mount, &old_path).await;
    }

    // A purge deletes every remaining entry from OpenBao before it answers.
    let live: Vec<String> = refs(&s)
        .await
        .iter()
        .filter_map(|r| r.split('|').nth(1).filter(|x| !x.is_empty()))
        .map(|r| r.split_once(':').unwrap().1.to_owned())
        .collect();
    assert!(!live.is_empty());
    ok(&s.cli(
        Some(&root),
        &["secret", "delete", "db", "--env", "dev", "--purge"],
    ));
    assert!(refs(&s).await.is_empty());
    for path in live {
        assert_eq!(metadata_status(&bao, mount, &path).await, 404, "{path}");
    }
}

/// Two KEK rotations of one organization at once, over versions kept in OpenBao: both succeed,
/// one after the other (they once collided on the new KEK version's number, 409), and every
/// version reads afterwards. No DEK is cached, so every rewrap and read unwraps with the KEK
/// version the row names: before rewraps wrote beside the old copy, the rotation that lost a
/// row to the other left that row's copy wrapped by a KEK the row did not name, and this test
/// failed on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_kek_rotations_over_an_external_backend_keep_every_version_readable() {
    let Some(bao) = Bao::from_env() else {
        return;
    };
    let s = start(&[
        ("TETHER_OPENBAO_ADDR", &bao.addr),
        ("TETHER_OPENBAO_TOKEN", &bao.token),
        ("TETHER_DEK_CACHE_TTL_MS", "0"),
    ])
    .await;
    let root = s.root_key.clone();
    let prefix = format!("tether-{}", tag());
    ok(&s.cli(
        Some(&root),
        &["backend", "set", "openbao-kv", "--prefix", &prefix],
    ));
    let values: Vec<String> = (1..=12).map(|i| format!("race-rotate-{i}-x")).collect();
    for (i, v) in values.iter().enumerate() {
        put(&s, "default", &format!("s{}", i % 3), v).await;
    }
    for _ in 0..3 {
        std::thread::scope(|scope| {
            let a = scope.spawn(|| s.cli(Some(&root), &["kek", "rotate", "-o", "json"]));
            let b = scope.spawn(|| s.cli(Some(&root), &["kek", "rotate", "-o", "json"]));
            for out in [a.join().unwrap(), b.join().unwrap()] {
                ok(&out);
            }
        });
    }
    for (i, v) in values.iter().enumerate() {
        let version = i64::try_from(i / 3 + 1).unwrap();
        let got = read(&s, "default", &format!("s{}", i % 3), version).await;
        assert_eq!(got.as_deref(), Ok(v.as_str()), "s{} v{version}", i % 3);
    }
}

/// Waits (5 s at most) until OpenBao no longer has an entry at `path`: Tether deletes external
/// copies in the background after the commit that made them unreferenced.
/// The HTTP status of a KV v2 entry's metadata (404 once the entry is deleted).
async fn metadata_status(bao: &Bao, mount: &str, path: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/v1/{mount}/metadata/{path}", bao.addr))
        .header("X-Vault-Token", &bao.token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn wait_gone(bao: &Bao, mount: &str, path: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if metadata_status(bao, mount, path).await == 404 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{mount}:{path} is still in OpenBao"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
