//! The secrets CLI as a user drives it (output formats, one field, values from standard input,
//! patches, variables), how an environment's configuration is assembled when names collide,
//! and the edges of bad input: values never echoed in errors, configurable limits.

use serde_json::{Value, json};
use tether_testkit::{TestServer, test_python};

use crate::{fails, ok, server};

/// Writes a version through the API (remembering its values) and checks that it was created.
async fn set(s: &TestServer, name: &str, env: Option<&str>, data: Value) {
    let r = crate::secrets::set(s, name, env, data).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// The current data of an organization-level secret.
async fn data(s: &TestServer, name: &str) -> Value {
    data_at(s, &format!("{name}/data")).await
}

/// A secret's data at `path` under `/v1/orgs/default/secrets/` (e.g. `NAME/data?env=dev`).
async fn data_at(s: &TestServer, path: &str) -> Value {
    let r = s
        .admin("GET", &format!("/v1/orgs/default/secrets/{path}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

#[tokio::test]
async fn a_wrongly_typed_body_is_refused_without_echoing_its_values() {
    let s = server().await;
    let (pin, word) = ("982451653", "hunter2-body-77");
    s.remember(pin);
    s.remember(word);
    for body in [
        json!({"data": {"PIN": 982451653}}),
        json!({"data": word}),
        json!({"data": {"K": "v"}, "if_version": word}),
        json!({"data": {"K": [word]}}),
    ] {
        let r = s
            .admin(
                "POST",
                "/v1/orgs/default/secrets/typed/versions",
                Some(&body),
            )
            .await;
        r.assert_error(400, "invalid_json");
        assert!(
            !r.text.contains(pin) && !r.text.contains(word),
            "{}",
            r.text
        );
        // What is wrong is still said.
        assert!(r.text.contains("invalid type"), "{}", r.text);
    }
    let r = s.admin("GET", "/v1/orgs/default/secrets/typed", None).await;
    r.assert_error(404, "not_found");
}

#[tokio::test]
async fn secret_size_limits_are_configurable() {
    let s = TestServer::start_with_env(
        std::path::Path::new(env!("CARGO_BIN_EXE_tether")),
        &[
            ("TETHER_MAX_SECRET_VALUE_BYTES", "16"),
            ("TETHER_MAX_SECRET_KEYS", "2"),
        ],
    )
    .await;
    let post = |body: Value| {
        let s = &s;
        async move {
            s.admin(
                "POST",
                "/v1/orgs/default/secrets/small/versions",
                Some(&body),
            )
            .await
        }
    };
    post(json!({"data": {"K": "x".repeat(17)}}))
        .await
        .assert_error(413, "payload_too_large");
    post(json!({"data": {"A": "a", "B": "b", "C": "c"}}))
        .await
        .assert_error(400, "invalid_argument");
    // Nothing was written; at the limits, the write goes through.
    s.admin("GET", "/v1/orgs/default/secrets/small", None)
        .await
        .assert_error(404, "not_found");
    let r = post(json!({"data": {"K": "x".repeat(16), "L": "y"}})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // A patch is held to the same limits.
    let r = s
        .admin(
            "PATCH",
            "/v1/orgs/default/secrets/small/data",
            Some(&json!({"set": {"M": "z"}})),
        )
        .await;
    r.assert_error(400, "invalid_argument");
    assert_eq!(data(&s, "small").await["version"], 1);
}

#[tokio::test]
async fn a_limit_out_of_range_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["server", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("TETHER_MAX_SECRET_VALUE_BYTES", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TETHER_MAX_SECRET_VALUE_BYTES"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_cli_reads_fields_formats_stdin_and_patches() {
    let s = server().await;
    let root = s.root_key.clone();
    // A value from standard input, byte for byte (a trailing newline included).
    let piped = "piped-pass\nsecond line $HOME \"q\"\n";
    s.remember("piped-pass");
    ok(&s.cli_with_stdin(
        Some(&root),
        &["secret", "set", "app", "USER=svc", "PASSWORD=-"],
        piped.as_bytes(),
    ));
    let field = s.cli(
        Some(&root),
        &["secret", "get", "app", "--field", "PASSWORD"],
    );
    assert_eq!(ok(&field), piped);
    let missing = fails(&s.cli(Some(&root), &["secret", "get", "app", "--field", "NOPE"]));
    assert!(missing.contains("no key 'NOPE'"), "{missing}");
    // Two values cannot both come from standard input.
    let two = fails(&s.cli_with_stdin(Some(&root), &["secret", "set", "app", "A=-", "B=-"], b"x"));
    assert!(two.contains("standard input"), "{two}");
    // yaml and env output.
    let yaml = ok(&s.cli(Some(&root), &["secret", "get", "app", "-o", "yaml"]));
    let parsed: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(parsed["data"]["PASSWORD"], piped);
    assert_eq!(parsed["version"], 1);
    let env = ok(&s.cli(Some(&root), &["secret", "get", "app", "-o", "env"]));
    assert!(env.contains("USER=\"svc\"\n"), "{env}");
    assert!(env.contains("PASSWORD='piped-pass\n"), "{env}");
    // A patch keeps the other keys, sets some and removes others.
    ok(&s.cli(
        Some(&root),
        &["secret", "patch", "app", "PORT=5432", "--remove", "USER"],
    ));
    let d = data(&s, "app").await;
    assert_eq!(d["version"], 2);
    assert_eq!(d["data"], json!({"PASSWORD": piped, "PORT": "5432"}));
    // The audit trail says which keys a patch touched, never their values.
    let h = s
        .admin(
            "GET",
            "/v1/audit/default/versions?kind=secrets&name=app",
            None,
        )
        .await;
    let last = h.body.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["message"], "patch: set PORT; removed USER", "{last}");
    // Check-and-set, a key that is not there, and a secret that is not there: refused, and
    // nothing is written.
    let stale = fails(&s.cli(
        Some(&root),
        &["secret", "patch", "app", "PORT=1", "--if-version", "1"],
    ));
    assert!(stale.contains("version_conflict"), "{stale}");
    let nosecret = fails(&s.cli(Some(&root), &["secret", "patch", "nosuch", "K=v"]));
    assert!(nosecret.contains("not_found"), "{nosecret}");
    let empty = fails(&s.cli(Some(&root), &["secret", "patch", "app"]));
    assert!(empty.contains("at least one"), "{empty}");
    assert_eq!(data(&s, "app").await["version"], 2);
    // Removing a key that is not there is no error (an error would tell a caller who may not
    // read values which keys exist) and changes no value.
    ok(&s.cli(Some(&root), &["secret", "patch", "app", "--remove", "USER"]));
    let d = data(&s, "app").await;
    assert_eq!(d["data"], json!({"PASSWORD": piped, "PORT": "5432"}));
    // An empty name is refused with its code.
    let unnamed = fails(&s.cli(Some(&root), &["secret", "set", "", "K=v"]));
    assert!(unnamed.contains("invalid_name"), "{unnamed}");
}

#[tokio::test]
async fn concurrent_patches_of_different_keys_lose_nothing() {
    let s = server().await;
    set(&s, "shared", None, json!({"SEED": "seed-value"})).await;
    let url = format!("{}/v1/orgs/default/secrets/shared", s.url);
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    // Patches queue on the server; writers that read, add a key and write with check-and-set
    // (as a careful client of `set` does) keep taking the current version from under them, so
    // patches also take the retry path.
    for i in 0..6 {
        let (url, root, http) = (url.clone(), s.root_key.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .patch(format!("{url}/data"))
                .bearer_auth(root)
                .json(&json!({"set": {format!("P{i}"): format!("p{i}")}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        }));
    }
    for i in 0..6 {
        let (url, root, http) = (url.clone(), s.root_key.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let cur: Value = http
                    .get(format!("{url}/data"))
                    .bearer_auth(&root)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let mut data = cur["data"].as_object().unwrap().clone();
                data.insert(format!("S{i}"), json!(format!("s{i}")));
                let r = http
                    .post(format!("{url}/versions"))
                    .bearer_auth(&root)
                    .json(&json!({"data": data, "if_version": cur["version"]}))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    201 => break,
                    409 => continue,
                    other => panic!("{other}: {}", r.text().await.unwrap()),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let d = data(&s, "shared").await;
    assert_eq!(d["version"], 13);
    let keys: Vec<&String> = d["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 13, "{keys:?}");
}

#[tokio::test]
async fn variables_through_the_cli() {
    let s = server().await;
    let root = s.root_key.clone();
    ok(&s.cli(Some(&root), &["var", "set", "REGION", "eu-west-1"]));
    ok(&s.cli(
        Some(&root),
        &["var", "set", "REGION", "eu-central-1", "--env", "dev"],
    ));
    let org: Value = serde_json::from_str(&ok(
        &s.cli(Some(&root), &["var", "get", "REGION", "-o", "json"])
    ))
    .unwrap();
    assert_eq!(org["spec"]["value"], "eu-west-1");
    let dev: Value = serde_json::from_str(&ok(&s.cli(
        Some(&root),
        &["var", "get", "REGION", "--env", "dev", "-o", "json"],
    )))
    .unwrap();
    assert_eq!(dev["spec"]["value"], "eu-central-1");
    // A new value is a new version.
    ok(&s.cli(Some(&root), &["var", "set", "REGION", "us-east-1"]));
    let org: Value = serde_json::from_str(&ok(
        &s.cli(Some(&root), &["var", "get", "REGION", "-o", "json"])
    ))
    .unwrap();
    assert_eq!(org["spec"]["value"], "us-east-1");
    let list: Value = serde_json::from_str(&ok(
        &s.cli(Some(&root), &["var", "list", "--env", "dev", "-o", "json"])
    ))
    .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    ok(&s.cli(Some(&root), &["var", "delete", "REGION", "--env", "dev"]));
    let gone = fails(&s.cli(Some(&root), &["var", "get", "REGION", "--env", "dev"]));
    assert!(gone.contains("not_found"), "{gone}");
    // The organization's variable is untouched.
    ok(&s.cli(Some(&root), &["var", "get", "REGION"]));
}

#[tokio::test]
async fn an_environment_prefers_its_own_values_and_reports_what_it_hid() {
    let s = server().await;
    let root = s.root_key.clone();
    // The environment's secret of a name replaces the organization's: that is what an
    // environment-level secret is for, so it is not reported.
    set(&s, "shared", None, json!({"API_KEY": "org-api-key"})).await;
    set(&s, "shared", Some("dev"), json!({"API_KEY": "dev-api-key"})).await;
    // A deleted environment secret does not hide the organization's.
    set(&s, "gone", None, json!({"GONE_KEY": "org-gone-value"})).await;
    set(
        &s,
        "gone",
        Some("dev"),
        json!({"GONE_KEY": "dev-gone-value"}),
    )
    .await;
    ok(&s.cli(Some(&root), &["secret", "delete", "gone", "--env", "dev"]));
    // Two organization secrets exporting one key: the first by name wins, and it is reported.
    set(&s, "aaa", None, json!({"DUP": "from-aaa"})).await;
    set(&s, "bbb", None, json!({"DUP": "from-bbb"})).await;
    // An environment's variable beats the organization's secret; a secret beats a variable
    // at the same level.
    set(&s, "mode", None, json!({"MODE": "org-secret-mode"})).await;
    set(&s, "lvl", Some("dev"), json!({"LEVEL": "dev-secret-level"})).await;
    s.apply(concat!(
        "kind: Variable\nmetadata: {name: MODE, env: dev}\nspec: {value: dev-var-mode}\n---\n",
        "kind: Variable\nmetadata: {name: LEVEL, env: dev}\nspec: {value: dev-var-level}\n",
    ))
    .await;
    let out = s.cli(
        Some(&root),
        &["env-vars", "--env", "dev", "--reveal", "-o", "json"],
    );
    let values: Value = serde_json::from_str(&ok(&out)).unwrap();
    let get = |name: &str| {
        values
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].as_str().unwrap().to_owned())
    };
    assert_eq!(get("API_KEY").as_deref(), Some("dev-api-key"));
    assert_eq!(get("GONE_KEY").as_deref(), Some("org-gone-value"));
    assert_eq!(get("DUP").as_deref(), Some("from-aaa"));
    assert_eq!(get("MODE").as_deref(), Some("dev-var-mode"));
    assert_eq!(get("LEVEL").as_deref(), Some("dev-secret-level"));
    let warnings = String::from_utf8_lossy(&out.stderr);
    for hidden in [
        "DUP: secret:bbb.DUP (org), hidden by secret:aaa.DUP (org)",
        "MODE: secret:mode.MODE (org), hidden by var:MODE (dev)",
        "LEVEL: var:LEVEL (dev), hidden by secret:lvl.LEVEL (dev)",
    ] {
        assert!(warnings.contains(hidden), "{hidden} not in {warnings}");
    }
    assert!(
        !warnings.contains("GONE_KEY") && !warnings.contains("API_KEY"),
        "{warnings}"
    );
    // Without --reveal every value is masked, in the table too.
    let masked = ok(&s.cli(Some(&root), &["env-vars", "--env", "dev"]));
    assert!(
        masked.contains("********") && masked.contains("API_KEY"),
        "{masked}"
    );
    for v in [
        "dev-api-key",
        "from-aaa",
        "dev-var-mode",
        "dev-secret-level",
    ] {
        assert!(!masked.contains(v), "{masked}");
    }
}

#[tokio::test]
async fn dot_env_keeps_dollars_literal_for_shells_and_dotenv_readers() {
    let s = server().await;
    let root = s.root_key.clone();
    let dollars = "pa$$word $HOME `hostname` \\back\\";
    set(&s, "dollars", None, json!({"DOLLARS": dollars})).await;
    let file = s.dir.path().join("existing.env");
    // An existing file that others could read becomes 0600 before the values go into it.
    std::fs::write(&file, "OLD=1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = s.cli(
        Some(&root),
        &["dot-env", "--env", "dev", "-o", file.to_str().unwrap()],
    );
    ok(&out);
    // The trailing backslash needs an escape inside single quotes, which only python-dotenv
    // reads: the CLI says so.
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(warned.contains("warning: DOLLARS"), "{warned}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("OLD=1"), "{text}");
    // A POSIX shell sourcing the file gets the value as stored: nothing is expanded.
    let shell = std::process::Command::new("sh")
        .args(["-c", "set -a; . \"$1\"; printf %s \"$DOLLARS\"", "sh"])
        .arg(&file)
        .output()
        .unwrap();
    // The shell does not unescape inside single quotes; the only escape written here is the
    // trailing backslash's, which python-dotenv reads back.
    assert_eq!(
        String::from_utf8_lossy(&shell.stdout),
        dollars.replace("\\back\\", "\\back\\\\")
    );
    // python-dotenv with its default interpolation on expands only `${...}`, which this value
    // does not hold.
    let Some(python) = test_python() else { return };
    let script = "import json,sys\nfrom dotenv import dotenv_values\nprint(json.dumps(dotenv_values(sys.argv[1])))";
    let out = std::process::Command::new(python)
        .args(["-c", script, file.to_str().unwrap()])
        .output()
        .unwrap();
    let parsed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(parsed["DOLLARS"], dollars);
}

#[tokio::test]
async fn a_purge_removes_a_secret_for_good_and_keeps_its_history() {
    let s = server().await;
    let root = s.root_key.clone();
    set(&s, "doomed", Some("dev"), json!({"K": "doomed-one-3z"})).await;
    set(&s, "doomed", Some("dev"), json!({"K": "doomed-two-3z"})).await;
    set(&s, "kept", Some("dev"), json!({"K": "kept-value-3z"})).await;
    // A soft-deleted secret can be purged too.
    ok(&s.cli(Some(&root), &["secret", "delete", "doomed", "--env", "dev"]));
    ok(&s.cli(
        Some(&root),
        &["secret", "delete", "doomed", "--env", "dev", "--purge"],
    ));
    s.admin("GET", "/v1/orgs/default/secrets/doomed?env=dev", None)
        .await
        .assert_error(404, "not_found");
    let orphans = tether_testkit::query_strings(
        &s.database_url,
        "SELECT secret_id FROM secret_versions WHERE secret_id NOT IN (SELECT id FROM resources)",
    )
    .await;
    assert!(orphans.is_empty(), "version rows left: {orphans:?}");
    let kept =
        tether_testkit::query_strings(&s.database_url, "SELECT secret_id FROM secret_versions")
            .await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    // The history stays, ending in the purge; restoring it is refused, since the data is gone.
    let h = s
        .admin(
            "GET",
            "/v1/audit/default/versions?kind=secrets&name=doomed",
            None,
        )
        .await;
    let h = h.body.as_array().unwrap().clone();
    let last = h.last().unwrap();
    assert_eq!(last["event"], "purge", "{h:?}");
    let first = h.first().unwrap()["id"].as_str().unwrap().to_owned();
    s.admin(
        "POST",
        &format!("/v1/audit/default/versions/{first}/restore"),
        None,
    )
    .await
    .assert_error(409, "conflict");
    // The name is free again, and starts over at version 1.
    set(&s, "doomed", Some("dev"), json!({"K": "reborn-3z"})).await;
    assert_eq!(
        s.admin("GET", "/v1/orgs/default/secrets/doomed/data?env=dev", None)
            .await
            .body["version"],
        1
    );
    assert_eq!(
        data_at(&s, "kept/data?env=dev").await["data"]["K"],
        "kept-value-3z"
    );
    // Only secrets are purged; a purge of a missing secret is a 404.
    s.apply("kind: Variable\nmetadata: {name: PLAIN}\nspec: {value: p}\n")
        .await;
    s.admin(
        "DELETE",
        "/v1/orgs/default/variables/PLAIN?purge=true",
        None,
    )
    .await
    .assert_error(400, "invalid_argument");
    s.admin("DELETE", "/v1/orgs/default/secrets/nosuch?purge=true", None)
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn a_secret_can_require_check_and_set_on_every_write() {
    let s = server().await;
    let root = s.root_key.clone();
    set(&s, "guarded", None, json!({"K": "guarded-one-8w"})).await;
    ok(&s.cli(
        Some(&root),
        &["secret", "metadata", "guarded", "--cas-required", "true"],
    ));
    s.remember("guarded-two-8w");
    let blind = fails(&s.cli(
        Some(&root),
        &["secret", "set", "guarded", "K=guarded-two-8w"],
    ));
    assert!(blind.contains("check_and_set_required"), "{blind}");
    let blind = fails(&s.cli(Some(&root), &["secret", "patch", "guarded", "L=x"]));
    assert!(blind.contains("check_and_set_required"), "{blind}");
    s.admin(
        "POST",
        "/v1/orgs/default/secrets/guarded/rollback",
        Some(&json!({"to": 1})),
    )
    .await
    .assert_error(428, "check_and_set_required");
    assert_eq!(data(&s, "guarded").await["version"], 1);
    ok(&s.cli(
        Some(&root),
        &[
            "secret",
            "set",
            "guarded",
            "K=guarded-two-8w",
            "--if-version",
            "1",
        ],
    ));
    ok(&s.cli(
        Some(&root),
        &["secret", "patch", "guarded", "L=x", "--if-version", "2"],
    ));
    assert_eq!(data(&s, "guarded").await["version"], 3);
    // Metadata updates keep the setting; turning it off lets blind writes through again.
    ok(&s.cli(
        Some(&root),
        &["secret", "metadata", "guarded", "--description", "kept"],
    ));
    let still = fails(&s.cli(Some(&root), &["secret", "set", "guarded", "K=x"]));
    assert!(still.contains("check_and_set_required"), "{still}");
    ok(&s.cli(
        Some(&root),
        &["secret", "metadata", "guarded", "--cas-required", "false"],
    ));
    ok(&s.cli(Some(&root), &["secret", "set", "guarded", "K=x"]));
    assert_eq!(data(&s, "guarded").await["version"], 4);
}

#[tokio::test]
async fn versions_compare_key_by_key_with_values_masked() {
    let s = server().await;
    let root = s.root_key.clone();
    set(
        &s,
        "cfg",
        None,
        json!({"KEEP": "same-4k", "GONE": "gone-4k", "EDIT": "old-4k"}),
    )
    .await;
    set(
        &s,
        "cfg",
        None,
        json!({"KEEP": "same-4k", "EDIT": "new-4k", "NEW": "added-4k"}),
    )
    .await;
    let masked = ok(&s.cli(Some(&root), &["secret", "diff", "cfg", "-o", "json"]));
    let d: Value = serde_json::from_str(&masked).unwrap();
    assert_eq!((d["from"].as_i64(), d["to"].as_i64()), (Some(1), Some(2)));
    assert_eq!(d["unchanged"], 1);
    assert_eq!(
        d["changes"],
        json!([
            {"key": "EDIT", "change": "changed", "from": "********", "to": "********"},
            {"key": "GONE", "change": "removed", "from": "********"},
            {"key": "NEW", "change": "added", "to": "********"},
        ])
    );
    for v in ["same-4k", "gone-4k", "old-4k", "new-4k", "added-4k"] {
        assert!(!masked.contains(v), "{masked}");
    }
    let table = ok(&s.cli(
        Some(&root),
        &[
            "secret", "diff", "cfg", "--from", "1", "--to", "2", "--reveal",
        ],
    ));
    assert!(
        table.contains("old-4k") && table.contains("new-4k"),
        "{table}"
    );
    assert!(!table.contains("same-4k"), "{table}");
    // Bad ranges, and a caller who may not read values (a viewer) cannot diff them.
    s.admin("GET", "/v1/orgs/default/secrets/cfg/diff?from=2&to=2", None)
        .await
        .assert_error(400, "invalid_argument");
    s.admin("GET", "/v1/orgs/default/secrets/cfg/diff?from=0", None)
        .await
        .assert_error(400, "invalid_argument");
    let key = s.user_key("vera").await;
    s.apply("kind: RoleBinding\nmetadata: {name: vera-viewer}\nspec: {role: viewer, subject: 'user:vera'}\n")
        .await;
    // The viewer sees the secret's versions, but not how its values changed.
    let listed = s
        .req(
            "GET",
            "/v1/orgs/default/secrets/cfg/versions",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let r = s
        .req("GET", "/v1/orgs/default/secrets/cfg/diff", Some(&key), None)
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
}

#[tokio::test]
async fn references_to_an_item_are_listed_where_they_resolve_to_it() {
    let s = server().await;
    let root = s.root_key.clone();
    s.apply("kind: Environment\nmetadata: {name: production}\n")
        .await;
    set(&s, "db", None, json!({"USER": "u-7r", "PASSWORD": "p-7r"})).await;
    set(&s, "db", Some("production"), json!({"PASSWORD": "pp-7r"})).await;
    set(&s, "wrapper", None, json!({"TOKEN": "x-${secret:db.USER}"})).await;
    set(
        &s,
        "unrelated",
        None,
        json!({"K": "${secret:dbx} ${secret:db2.K}"}),
    )
    .await;
    s.apply(concat!(
        "kind: Variable\nmetadata: {name: HOST}\nspec: {value: db.internal}\n---\n",
        "kind: Variable\nmetadata: {name: DATABASE_URL}\nspec: {value: 'postgres://${secret:db.USER}:${secret:db.PASSWORD}@${var:HOST}/app'}\n---\n",
        "kind: Variable\nmetadata: {name: PROD_URL, env: production}\nspec: {value: '${secret:db.PASSWORD}'}\n---\n",
        "kind: Variable\nmetadata: {name: DEV_URL, env: dev}\nspec: {value: '${secret:db.PASSWORD}'}\n---\n",
        "kind: Variable\nmetadata: {name: LITERAL}\nspec: {value: 'cost: $${secret:db}'}\n",
    ))
    .await;
    let names = |v: &Value| -> Vec<String> {
        v["referrers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {} ({})",
                    r["kind"].as_str().unwrap(),
                    r["name"].as_str().unwrap(),
                    r["scope"].as_str().unwrap()
                )
            })
            .collect()
    };
    // The organization's db: the organization's items and dev's (dev has no db of its own),
    // not production's (its own db hides this one).
    let org: Value = serde_json::from_str(&ok(
        &s.cli(Some(&root), &["secret", "refs", "db", "-o", "json"])
    ))
    .unwrap();
    assert_eq!(
        names(&org),
        vec![
            "variable DATABASE_URL (org)",
            "variable DEV_URL (dev)",
            "secret wrapper (org)"
        ],
        "{org}"
    );
    let url = org["referrers"][0]["via"].clone();
    assert_eq!(url, json!(["${secret:db.PASSWORD}", "${secret:db.USER}"]));
    // production's db: production's items and the organization's.
    let prod: Value = serde_json::from_str(&ok(&s.cli(
        Some(&root),
        &["secret", "refs", "db", "--env", "production", "-o", "json"],
    )))
    .unwrap();
    assert_eq!(
        names(&prod),
        vec![
            "variable DATABASE_URL (org)",
            "variable PROD_URL (production)",
            "secret wrapper (org)"
        ],
        "{prod}"
    );
    let table = ok(&s.cli(Some(&root), &["var", "refs", "HOST"]));
    assert!(
        table.contains("DATABASE_URL") && table.contains("${var:HOST}"),
        "{table}"
    );
    assert!(!table.contains("PROD_URL"), "{table}");
    // A viewer sees the variables that refer to it, and which secrets it could not search;
    // no value comes back.
    let key = s.user_key("vic").await;
    s.apply("kind: RoleBinding\nmetadata: {name: vic-viewer}\nspec: {role: viewer, subject: 'user:vic'}\n")
        .await;
    let r = s
        .req(
            "GET",
            "/v1/orgs/default/secrets/db/references",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        names(&r.body),
        vec!["variable DATABASE_URL (org)", "variable DEV_URL (dev)"]
    );
    let unchecked: Vec<&str> = r.body["unchecked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(unchecked.contains(&"wrapper (org)"), "{unchecked:?}");
    for v in ["u-7r", "p-7r", "pp-7r"] {
        assert!(!r.text.contains(v), "{}", r.text);
    }
}
