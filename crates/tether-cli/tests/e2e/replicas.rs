//! Several servers on one PostgreSQL database, as replicas behind a load balancer. Each keeps
//! an in-memory authorization index, a hot-row cache and cached API keys; a write on one
//! server reaches the others through the changelog within a poll interval (200 ms). Without
//! it, server B would never learn of a grant made on A (its index is loaded at startup), would
//! serve a cached row for up to 5 s, and would accept a revoked key for up to 30 s.
//!
//! PostgreSQL only (`scripts/test.sh` runs this suite again with `TETHER_TEST_DATABASE_URL`);
//! an SQLite file has one server, so the test returns at once there.

use std::time::{Duration, Instant};

use tether_testkit::TestServer;

use crate::server;

pub(crate) fn on_postgres() -> bool {
    std::env::var("TETHER_TEST_DATABASE_URL").is_ok_and(|v| !v.is_empty())
}

/// Polls `path` on `s` with `token` until it answers `want`; returns how long that took.
async fn until_status(s: &TestServer, path: &str, token: &str, want: u16) -> Duration {
    let start = Instant::now();
    loop {
        let r = s.req("GET", path, Some(token), None).await;
        if r.status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{path} still answers {} (want {want}) after 3 s: {}",
            r.status,
            r.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_replica_reaches_the_others_memory() {
    if !on_postgres() {
        eprintln!("SKIPPED: replicas share a PostgreSQL database (second pass of scripts/test.sh)");
        return;
    }
    let a = server().await;
    let b = a.join().await;
    let rita = a.user_key("rita").await;
    let env = "/v1/orgs/default/envs/dev";
    assert_eq!(b.req("GET", env, Some(&rita), None).await.status, 404);

    // A grant made on A: B honours it at once (a denial first catches up with the changelog).
    a.apply("kind: RoleBinding\nmetadata: {name: rita-dev, env: dev}\nspec: {role: viewer, subject: 'user:rita'}\n")
        .await;
    assert_eq!(b.req("GET", env, Some(&rita), None).await.status, 200);

    // A row B has cached, changed on A: B serves the new one.
    let var = "/v1/orgs/default/variables/REGION?env=dev";
    let put = |v: &str| {
        format!("kind: Variable\nmetadata: {{name: REGION, env: dev}}\nspec: {{value: {v}}}\n")
    };
    a.apply(&put("eu-west-1")).await;
    // At once: B catches up with the changelog before it answers a denial, so a resource
    // (and its grants) created on A a moment ago is not reported missing.
    let before = b.admin("GET", var, None).await;
    assert_eq!(before.body["spec"]["value"], "eu-west-1", "{}", before.text);
    a.apply(&put("us-east-2")).await;
    let start = Instant::now();
    loop {
        let r = b.admin("GET", var, None).await;
        if r.body["spec"]["value"] == "us-east-2" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "B still serves {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "updated row seen by the other replica after {:?}",
        start.elapsed()
    );

    // The grant revoked on A: B denies again.
    let r = a
        .admin(
            "DELETE",
            "/v1/orgs/default/role-bindings/rita-dev?env=dev",
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let took = until_status(&b, env, &rita, 404).await;
    eprintln!("revoked grant seen by the other replica after {took:?}");

    // A key B has cached, revoked on A: B refuses it.
    assert_eq!(
        b.req("GET", "/v1/auth/whoami", Some(&rita), None)
            .await
            .status,
        200
    );
    let keys = a
        .admin("GET", "/v1/orgs/default/users/rita/keys", None)
        .await;
    let key_id = keys.body[0]["id"].as_str().unwrap().to_owned();
    let r = a
        .admin(
            "DELETE",
            &format!("/v1/orgs/default/users/rita/keys/{key_id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let took = until_status(&b, "/v1/auth/whoami", &rita, 401).await;
    eprintln!("revoked key refused by the other replica after {took:?}");
    b.assert_no_secrets_in_log();
}
