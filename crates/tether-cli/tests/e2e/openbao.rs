//! OpenBao (a real dev server started by `scripts/test.sh`): Transit as a KEK provider, and
//! KV v2 as a secret backend.

use serde_json::{Value, json};
use tether_testkit::TestServer;

use crate::kek::{ok, put, read};
use crate::kms::service;

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
    assert_eq!((r.status, r.code()), (503, "kek_unavailable"), "{}", r.text);
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
