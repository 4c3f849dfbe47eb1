//! API keys, passwords, sessions.

use serde_json::json;

use crate::server;

#[tokio::test]
async fn api_keys_expire_revoke_and_record_use() {
    let s = server().await;
    let frank = s.user_key("frank").await;
    let r = s.req("GET", "/v1/auth/whoami", Some(&frank), None).await;
    assert_eq!(r.status, 200);
    // last_used_at is recorded in batches (every 2 s).
    let mut used = false;
    for _ in 0..40 {
        let keys = s
            .admin("GET", "/v1/orgs/default/users/frank/keys", None)
            .await;
        if keys.body[0]["last_used_at"].is_string() {
            used = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(used, "last_used_at was never recorded");
    let keys = s
        .admin("GET", "/v1/orgs/default/users/frank/keys", None)
        .await;
    let id = keys.body[0]["id"].as_str().unwrap().to_owned();
    assert!(!keys.text.contains(&frank), "the key itself is listed");
    assert!(
        keys.body[0]["display"]
            .as_str()
            .unwrap()
            .ends_with(&frank[frank.len() - 4..])
    );
    let r = s
        .admin(
            "DELETE",
            &format!("/v1/orgs/default/users/frank/keys/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = s.req("GET", "/v1/auth/whoami", Some(&frank), None).await;
    assert_eq!((r.status, r.code()), (401, "invalid_credentials"));
}

/// `key` with one character of its secret changed and the checksum recomputed: a well-formed
/// key with a real key id and the wrong secret.
fn with_another_secret(key: &str, at: usize) -> String {
    const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut body = key.as_bytes()[..key.len() - 6].to_vec();
    body[at] = if body[at] == b'a' { b'b' } else { b'a' };
    let mut crc = !0u32;
    for &b in &body {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    let (mut crc, mut digits) = (!crc, [b'0'; 6]);
    for d in digits.iter_mut().rev() {
        *d = BASE62[(crc % 62) as usize];
        crc /= 62;
    }
    body.extend(digits);
    String::from_utf8(body).unwrap()
}

/// A verified key is cached; a key with the same id and another secret is refused whether or
/// not the real one is in the cache, and does not evict it.
#[tokio::test]
async fn a_key_id_with_the_wrong_secret_is_refused() {
    let s = server().await;
    let gina = s.user_key("gina").await;
    let (first, last) = (21, gina.len() - 7);
    for at in [first, last] {
        let forged = with_another_secret(&gina, at);
        assert_ne!(forged, gina);
        for _ in 0..2 {
            let r = s.req("GET", "/v1/auth/whoami", Some(&forged), None).await;
            r.assert_error(401, "invalid_credentials");
            let r = s.req("GET", "/v1/auth/whoami", Some(&gina), None).await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
    }
    // A damaged checksum is refused before any lookup.
    let mut typo = gina.clone();
    typo.pop();
    typo.push(if gina.ends_with('a') { 'b' } else { 'a' });
    let r = s.req("GET", "/v1/auth/whoami", Some(&typo), None).await;
    r.assert_error(401, "invalid_credentials");
}

#[tokio::test]
async fn scoped_keys_cannot_exceed_their_scopes() {
    let s = server().await;
    let r = s
        .admin(
            "POST",
            "/v1/auth/keys",
            Some(&json!({"name": "readonly", "scopes": ["can_read"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ro = r.body["key"].as_str().unwrap().to_owned();
    s.remember(&ro);
    assert_eq!(
        s.req("GET", "/v1/orgs/default/envs/dev", Some(&ro), None)
            .await
            .status,
        200
    );
    let body = json!({"metadata": {"name": "x"}});
    let r = s
        .req("POST", "/v1/orgs/default/teams", Some(&ro), Some(&body))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = s
        .admin(
            "POST",
            "/v1/auth/keys",
            Some(&json!({"name": "bad", "scopes": ["root"]})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_argument"));
}

#[tokio::test]
async fn password_login_refresh_rotation_and_reuse_detection() {
    let s = server().await;
    s.user_key("grace").await;
    let password = "correct horse battery staple";
    s.remember(password);
    let r = s
        .admin(
            "POST",
            "/v1/orgs/default/users/grace/password",
            Some(&json!({"password": password})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let bad = s
        .req(
            "POST",
            "/v1/auth/login",
            None,
            Some(&json!({"username": "grace", "password": "wrong password!"})),
        )
        .await;
    assert_eq!((bad.status, bad.code()), (401, "invalid_credentials"));
    let ghost = s
        .req(
            "POST",
            "/v1/auth/login",
            None,
            Some(&json!({"username": "ghost", "password": "wrong password!"})),
        )
        .await;
    assert_eq!(ghost.body["error"]["message"], bad.body["error"]["message"]);

    let login = s
        .req(
            "POST",
            "/v1/auth/login",
            None,
            Some(&json!({"username": "grace", "password": password})),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.text);
    let access = login.body["access_token"].as_str().unwrap().to_owned();
    let refresh1 = login.body["refresh_token"].as_str().unwrap().to_owned();
    s.remember(&access);
    s.remember(&refresh1);
    let me = s.req("GET", "/v1/auth/whoami", Some(&access), None).await;
    assert_eq!(me.body["name"], "grace");
    assert_eq!(me.body["via"]["method"], "session");

    let jwks = s.req("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(jwks.body["keys"][0]["alg"], "EdDSA");

    let r2 = s
        .req(
            "POST",
            "/v1/auth/token",
            None,
            Some(&json!({"refresh_token": refresh1})),
        )
        .await;
    assert_eq!(r2.status, 200, "{}", r2.text);
    let refresh2 = r2.body["refresh_token"].as_str().unwrap().to_owned();
    s.remember(&refresh2);
    s.remember(r2.body["access_token"].as_str().unwrap());
    // Reusing the first token revokes the whole family, including the second.
    let replay = s
        .req(
            "POST",
            "/v1/auth/token",
            None,
            Some(&json!({"refresh_token": refresh1})),
        )
        .await;
    assert_eq!(replay.status, 401);
    let after = s
        .req(
            "POST",
            "/v1/auth/token",
            None,
            Some(&json!({"refresh_token": refresh2})),
        )
        .await;
    assert_eq!(after.status, 401);
}

#[tokio::test]
async fn cli_password_login_stores_a_private_session() {
    let s = server().await;
    s.user_key("heidi").await;
    let password = "a long enough password";
    s.remember(password);
    s.admin(
        "POST",
        "/v1/orgs/default/users/heidi/password",
        Some(&json!({"password": password})),
    )
    .await;
    let cfg = s.dir.path().join("cli-config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["auth", "login", "--password", "--username", "heidi"])
        .env("TETHER_ADDR", &s.url)
        .env("XDG_CONFIG_HOME", &cfg)
        .env("TETHER_PASSWORD", password)
        .env_remove("TETHER_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = cfg.join("tether/config.toml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let who = s.cli(None, &["auth", "whoami", "-o", "json"]);
    assert!(
        String::from_utf8_lossy(&who.stdout).contains("heidi"),
        "{}",
        String::from_utf8_lossy(&who.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    for line in text.lines().filter(|l| l.contains("token")) {
        if let Some(v) = line.split('"').nth(1) {
            s.remember(v);
        }
    }
}

#[tokio::test]
async fn deleting_a_principal_revokes_its_credentials() {
    let s = server().await;
    let ivan = s.user_key("ivan").await;
    assert_eq!(
        s.req("GET", "/v1/auth/whoami", Some(&ivan), None)
            .await
            .status,
        200
    );
    assert_eq!(
        s.admin("DELETE", "/v1/orgs/default/users/ivan", None)
            .await
            .status,
        204
    );
    assert_eq!(
        s.req("GET", "/v1/auth/whoami", Some(&ivan), None)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn expired_api_keys_are_refused() {
    let s = server().await;
    let r = s
        .admin(
            "POST",
            "/v1/auth/keys",
            Some(&json!({"name": "short", "expires_in": "1s"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let key = r.body["key"].as_str().unwrap().to_owned();
    s.remember(&key);
    assert!(r.body["info"]["expires_at"].is_string());
    assert_eq!(
        s.req("GET", "/v1/auth/whoami", Some(&key), None)
            .await
            .status,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let r = s.req("GET", "/v1/auth/whoami", Some(&key), None).await;
    assert_eq!((r.status, r.code()), (401, "token_expired"));
    let bad = s
        .admin(
            "POST",
            "/v1/auth/keys",
            Some(&json!({"name": "bad", "expires_in": "soon"})),
        )
        .await;
    assert_eq!((bad.status, bad.code()), (400, "invalid_argument"));
}
