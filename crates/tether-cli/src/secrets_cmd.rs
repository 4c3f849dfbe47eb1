//! `tether secret`, `tether var`, `tether env-vars`, `tether dot-env`, `tether run`.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, enc, jp};
use crate::output::{Format, RESOURCE_COLUMNS, print};

/// The org and client a command runs with.
pub struct Target<'a> {
    /// HTTP client.
    pub client: &'a mut Client,
    /// Organization.
    pub org: &'a str,
}

fn env_q(env: Option<&str>) -> String {
    env.map(|e| format!("?env={}", enc(e))).unwrap_or_default()
}

fn secret_path(org: &str, name: &str, suffix: &str, env: Option<&str>) -> String {
    format!(
        "/v1/orgs/{}/secrets/{}{suffix}{}",
        enc(org),
        enc(name),
        env_q(env)
    )
}

/// `tether secret move` and `tether var move`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["to_env", "to_org"])))]
pub struct MoveArgs {
    /// Current name.
    name: String,
    /// The environment it is in now (the organization level when absent).
    #[arg(long)]
    env: Option<String>,
    /// The environment to move it to.
    #[arg(long)]
    to_env: Option<String>,
    /// Move it to the organization level, where every environment finds it.
    #[arg(long)]
    to_org: bool,
    /// A new name on the way.
    #[arg(long)]
    new_name: Option<String>,
}

/// Moves a secret or a variable (`collection`: `secrets` or `variables`).
async fn move_item(t: Target<'_>, collection: &str, noun: &str, a: MoveArgs) -> Result<()> {
    let body = match &a.to_env {
        Some(env) => json!({ "env": env, "name": a.new_name }),
        None => json!({ "org_level": a.to_org, "name": a.new_name }),
    };
    let path = format!(
        "/v1/orgs/{}/{collection}/{}/move{}",
        enc(t.org),
        enc(&a.name),
        env_q(a.env.as_deref())
    );
    t.client.call(Method::POST, &path, Some(&body)).await?;
    let name = a.new_name.as_deref().unwrap_or(&a.name);
    match &a.to_env {
        Some(env) => println!(
            "{noun} '{}' moved to environment '{env}' as '{name}'",
            a.name
        ),
        None => println!(
            "{noun} '{}' moved to the organization level as '{name}'",
            a.name
        ),
    }
    Ok(())
}

/// The values of a new version and how to write it (`secret set` and `secret patch`).
#[derive(clap::Args, Debug)]
pub struct NewData {
    /// KEY=VALUE pairs; `KEY=-` reads the value from standard input (so it stays out of the
    /// shell's history), exactly as given.
    pairs: Vec<String>,
    /// Environment (default: organization level).
    #[arg(long)]
    env: Option<String>,
    /// KEY=PATH: the file's content becomes KEY's value (UTF-8, or see --base64).
    #[arg(long = "from-file")]
    from_file: Vec<String>,
    /// Store file contents base64-encoded (for binary files).
    #[arg(long)]
    base64: bool,
    /// Check-and-set: fail unless the current version is N (with `set`, 0: the secret must
    /// not exist yet).
    #[arg(long)]
    if_version: Option<i64>,
    /// Change message.
    #[arg(short, long)]
    message: Option<String>,
}

/// `tether secret ...`
#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Write a new version: `tether secret set NAME KEY=VALUE...` (the whole data).
    Set {
        /// Secret name.
        name: String,
        #[command(flatten)]
        data: NewData,
    },
    /// Write a new version that changes some keys and keeps the others (like `vault kv
    /// patch`): `tether secret patch NAME KEY=VALUE... [--remove KEY]`.
    Patch {
        /// Secret name.
        name: String,
        #[command(flatten)]
        data: NewData,
        /// Keys to remove (repeatable).
        #[arg(long)]
        remove: Vec<String>,
    },
    /// Read a secret's data.
    Get {
        /// Secret name.
        name: String,
        /// Environment.
        #[arg(long)]
        env: Option<String>,
        /// Version (default: current).
        #[arg(long)]
        version: Option<i64>,
        /// Print only this key's value, as it is (no quoting, no newline added), for
        /// `$(tether secret get db --field PASSWORD)` and pipes.
        #[arg(long, conflicts_with = "output")]
        field: Option<String>,
        /// table, json, yaml, or env (KEY="VALUE" lines).
        #[arg(short, long, default_value = "table")]
        output: String,
    },
    /// List secrets (metadata only).
    List {
        /// Environment.
        #[arg(long)]
        env: Option<String>,
        /// Include deleted secrets.
        #[arg(long)]
        deleted: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// List a secret's versions.
    Versions {
        /// Secret name.
        name: String,
        /// Environment.
        #[arg(long)]
        env: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Soft-delete a secret (undo with `undelete`), or with `--purge` remove it for good.
    Delete {
        /// Secret name.
        name: String,
        /// Environment.
        #[arg(long)]
        env: Option<String>,
        /// Remove the secret and every version's data for good (like `vault kv metadata
        /// delete`); its history stays in the audit trail and the name is free again.
        #[arg(long)]
        purge: bool,
    },
    /// Rename a secret in its scope; it keeps its versions and its history.
    Rename {
        /// Current name.
        name: String,
        /// New name.
        new_name: String,
        /// Environment.
        #[arg(long)]
        env: Option<String>,
    },
    /// Move a secret to another environment or to the organization level (or from it); it
    /// keeps its versions and history, and its values never leave the server.
    Move(MoveArgs),
    /// List the variables and secrets whose references resolve to this secret (update them
    /// before a rename, move or delete: references are not rewritten).
    Refs(RefsArgs),
    /// Undelete a secret.
    Undelete {
        /// Secret name.
        name: String,
        /// Environment.
        #[arg(long)]
        env: Option<String>,
    },
    /// Destroy one version's data for good.
    Destroy {
        /// Secret name.
        name: String,
        /// Version.
        #[arg(long)]
        version: i64,
        /// Environment.
        #[arg(long)]
        env: Option<String>,
    },
    /// Write an old version's data as a new version.
    Rollback {
        /// Secret name.
        name: String,
        /// The version to go back to.
        #[arg(long)]
        to: i64,
        /// Environment.
        #[arg(long)]
        env: Option<String>,
        /// Check-and-set.
        #[arg(long)]
        if_version: Option<i64>,
    },
    /// Compare two versions key by key (values masked unless --reveal).
    Diff {
        /// Secret name.
        name: String,
        /// The older version (default: the one before --to).
        #[arg(long)]
        from: Option<i64>,
        /// The newer version (default: current).
        #[arg(long)]
        to: Option<i64>,
        /// Environment.
        #[arg(long)]
        env: Option<String>,
        /// Show the values.
        #[arg(long)]
        reveal: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Show or change metadata: description, max versions, custom metadata.
    Metadata {
        /// Secret name.
        name: String,
        /// Environment.
        #[arg(long)]
        env: Option<String>,
        /// Description.
        #[arg(long)]
        description: Option<String>,
        /// Keep at most N versions with data (0: all).
        #[arg(long)]
        max_versions: Option<u32>,
        /// Require check-and-set (`--if-version`) on every write: true or false.
        #[arg(long)]
        cas_required: Option<bool>,
        /// Custom metadata KEY=VALUE (repeatable).
        #[arg(long = "meta")]
        meta: Vec<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Yaml)]
        output: Format,
    },
}

fn split_pair(p: &str) -> Result<(String, String)> {
    // The argument is not echoed: it may be a value typed without its key.
    let (k, v) = p
        .split_once('=')
        .ok_or_else(|| anyhow!("an argument is not KEY=VALUE (or KEY=PATH)"))?;
    Ok((k.to_owned(), v.to_owned()))
}

fn collect_data(pairs: &[String], files: &[String], b64: bool) -> Result<BTreeMap<String, String>> {
    let data = collect_pairs(pairs, files, b64)?;
    if data.is_empty() {
        bail!("give at least one KEY=VALUE or --from-file KEY=PATH");
    }
    Ok(data)
}

/// The values given on the command line: `KEY=VALUE`, `KEY=-` (standard input, once) and
/// `--from-file KEY=PATH`.
fn collect_pairs(
    pairs: &[String],
    files: &[String],
    b64: bool,
) -> Result<BTreeMap<String, String>> {
    let mut data = BTreeMap::new();
    let mut stdin_key: Option<String> = None;
    for p in pairs {
        let (k, v) = split_pair(p)?;
        let v = if v == "-" {
            if let Some(first) = stdin_key.replace(k.clone()) {
                bail!("only one value can come from standard input ('{first}' and '{k}' ask)");
            }
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .context("reading standard input")?;
            String::from_utf8(buf).map_err(|_| {
                anyhow!("standard input is not UTF-8 text; use --from-file with --base64")
            })?
        } else {
            v
        };
        data.insert(k, v);
    }
    for f in files {
        let (k, path) = split_pair(f)?;
        let bytes = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
        let value = if b64 {
            base64::engine::general_purpose::STANDARD.encode(&bytes)
        } else {
            String::from_utf8(bytes).map_err(|_| {
                anyhow!("{path} is not UTF-8 text; use --base64 to store binary data")
            })?
        };
        data.insert(k, value);
    }
    Ok(data)
}

/// Runs `tether secret ...`.
pub async fn secret(t: Target<'_>, cmd: SecretCmd) -> Result<()> {
    let org = t.org;
    match cmd {
        SecretCmd::Set { name, data: d } => {
            let data = collect_data(&d.pairs, &d.from_file, d.base64)?;
            let body = json!({"data": data, "if_version": d.if_version, "message": d.message});
            let v = t
                .client
                .call(
                    Method::POST,
                    &secret_path(org, &name, "/versions", d.env.as_deref()),
                    Some(&body),
                )
                .await?;
            println!("secret '{name}' is now at version {}", jp(&v, "/version"));
            Ok(())
        }
        SecretCmd::Patch {
            name,
            data: d,
            remove,
        } => {
            let set = collect_pairs(&d.pairs, &d.from_file, d.base64)?;
            if set.is_empty() && remove.is_empty() {
                bail!("give at least one KEY=VALUE, --from-file KEY=PATH or --remove KEY");
            }
            let body = json!({"set": set, "remove": remove, "if_version": d.if_version, "message": d.message});
            let v = t
                .client
                .call(
                    Method::PATCH,
                    &secret_path(org, &name, "/data", d.env.as_deref()),
                    Some(&body),
                )
                .await?;
            println!("secret '{name}' is now at version {}", jp(&v, "/version"));
            Ok(())
        }
        SecretCmd::Get {
            name,
            env,
            version,
            field,
            output,
        } => {
            let mut path = secret_path(org, &name, "/data", env.as_deref());
            if let Some(n) = version {
                path.push_str(&format!(
                    "{}version={n}",
                    if env.is_some() { "&" } else { "?" }
                ));
            }
            let v = t.client.call(Method::GET, &path, None).await?;
            match field {
                Some(key) => {
                    let value = jp(&v, "/data")
                        .get(&key)
                        .and_then(Value::as_str)
                        .ok_or_else(|| anyhow!("secret '{name}' has no key '{key}'"))?;
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    out.write_all(value.as_bytes())?;
                    out.flush()?;
                    Ok(())
                }
                None => print_data(&v, &output),
            }
        }
        SecretCmd::List {
            env,
            deleted,
            output,
        } => {
            let mut path = format!("/v1/orgs/{}/secrets{}", enc(org), env_q(env.as_deref()));
            if deleted {
                path.push_str(if env.is_some() {
                    "&deleted=true"
                } else {
                    "?deleted=true"
                });
            }
            let v = t.client.call(Method::GET, &path, None).await?;
            print(
                &v,
                output,
                &[
                    ("NAME", "/metadata/name"),
                    ("ENV", "/metadata/env"),
                    ("VERSION", "/spec/current_version"),
                    ("DELETED", "/spec/deleted"),
                    ("UPDATED", "/status/audit/updated_at"),
                    ("BY", "/status/audit/updated_by"),
                ],
            )
        }
        SecretCmd::Versions { name, env, output } => {
            let v = t
                .client
                .call(
                    Method::GET,
                    &secret_path(org, &name, "/versions", env.as_deref()),
                    None,
                )
                .await?;
            print(
                &v,
                output,
                &[
                    ("VERSION", "/version"),
                    ("CREATED", "/created_at"),
                    ("BY", "/created_by"),
                    ("DESTROYED", "/destroyed_at"),
                    ("CURRENT", "/current"),
                ],
            )
        }
        SecretCmd::Delete { name, env, purge } => {
            let mut path = secret_path(org, &name, "", env.as_deref());
            if purge {
                path.push_str(if env.is_some() {
                    "&purge=true"
                } else {
                    "?purge=true"
                });
            }
            t.client.call(Method::DELETE, &path, None).await?;
            if purge {
                println!("secret '{name}' purged: every version's data is gone");
            } else {
                println!("secret '{name}' deleted (undo with `tether secret undelete {name}`)");
            }
            Ok(())
        }
        SecretCmd::Move(a) => move_item(t, "secrets", "secret", a).await,
        SecretCmd::Refs(a) => refs(t, "secrets", a).await,
        SecretCmd::Rename {
            name,
            new_name,
            env,
        } => {
            t.client
                .call(
                    Method::POST,
                    &secret_path(org, &name, "/rename", env.as_deref()),
                    Some(&json!({ "name": new_name })),
                )
                .await?;
            println!("secret '{name}' renamed to '{new_name}'");
            Ok(())
        }
        SecretCmd::Undelete { name, env } => {
            t.client
                .call(
                    Method::POST,
                    &secret_path(org, &name, "/undelete", env.as_deref()),
                    None,
                )
                .await?;
            println!("secret '{name}' undeleted");
            Ok(())
        }
        SecretCmd::Destroy { name, version, env } => {
            t.client
                .call(
                    Method::POST,
                    &secret_path(
                        org,
                        &name,
                        &format!("/versions/{version}/destroy"),
                        env.as_deref(),
                    ),
                    None,
                )
                .await?;
            println!("version {version} of secret '{name}' destroyed");
            Ok(())
        }
        SecretCmd::Rollback {
            name,
            to,
            env,
            if_version,
        } => {
            let body = json!({"to": to, "if_version": if_version});
            let v = t
                .client
                .call(
                    Method::POST,
                    &secret_path(org, &name, "/rollback", env.as_deref()),
                    Some(&body),
                )
                .await?;
            println!(
                "secret '{name}' rolled back to the data of version {to}; new version {}",
                jp(&v, "/version")
            );
            Ok(())
        }
        SecretCmd::Diff {
            name,
            from,
            to,
            env,
            reveal,
            output,
        } => {
            let mut path = secret_path(org, &name, "/diff", env.as_deref());
            let mut sep = if env.is_some() { '&' } else { '?' };
            for (k, v) in [("from", from), ("to", to)] {
                if let Some(n) = v {
                    path.push_str(&format!("{sep}{k}={n}"));
                    sep = '&';
                }
            }
            if reveal {
                path.push_str(&format!("{sep}reveal=true"));
            }
            let v = t.client.call(Method::GET, &path, None).await?;
            if !matches!(output, Format::Table) {
                return print(&v, output, &[]);
            }
            println!(
                "secret '{name}': version {} -> {} ({} keys unchanged)",
                jp(&v, "/from"),
                jp(&v, "/to"),
                jp(&v, "/unchanged")
            );
            print(
                jp(&v, "/changes"),
                Format::Table,
                &[
                    ("KEY", "/key"),
                    ("CHANGE", "/change"),
                    ("FROM", "/from"),
                    ("TO", "/to"),
                ],
            )
        }
        SecretCmd::Metadata {
            name,
            env,
            description,
            max_versions,
            cas_required,
            meta,
            output,
        } => {
            let path = secret_path(org, &name, "", env.as_deref());
            let mut current = t.client.call(Method::GET, &path, None).await?;
            if description.is_none()
                && max_versions.is_none()
                && cas_required.is_none()
                && meta.is_empty()
            {
                return print(&current, output, RESOURCE_COLUMNS);
            }
            let spec = current
                .pointer_mut("/spec")
                .and_then(Value::as_object_mut)
                .ok_or_else(|| anyhow!("the server sent no spec"))?;
            if let Some(d) = description {
                spec.insert("description".into(), Value::String(d));
            }
            if let Some(m) = max_versions {
                spec.insert("max_versions".into(), json!(m));
            }
            if let Some(c) = cas_required {
                spec.insert("cas_required".into(), json!(c));
            }
            let mut custom = spec
                .get("custom_metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for m in &meta {
                let (k, v) = split_pair(m)?;
                custom.insert(k, Value::String(v));
            }
            spec.insert("custom_metadata".into(), Value::Object(custom));
            let labels = jp(&current, "/metadata/labels")
                .as_object()
                .cloned()
                .unwrap_or_default();
            let body = json!({"metadata": {"name": name, "env": env, "labels": labels}, "spec": jp(&current, "/spec")});
            let v = t.client.call(Method::PUT, &path, Some(&body)).await?;
            print(&v, output, RESOURCE_COLUMNS)
        }
    }
}

fn print_data(v: &Value, output: &str) -> Result<()> {
    let data = jp(v, "/data").as_object().cloned().unwrap_or_default();
    match output {
        "json" => println!("{}", serde_json::to_string_pretty(v)?),
        "yaml" => print!("{}", serde_saphyr::to_string(v)?),
        "env" => {
            for (k, val) in &data {
                println!("{k}={}", dotenv_quote(val.as_str().unwrap_or_default()));
            }
        }
        "table" => {
            let rows: Vec<Value> = data
                .iter()
                .map(|(k, val)| json!({"key": k, "value": val}))
                .collect();
            print(
                &Value::Array(rows),
                Format::Table,
                &[("KEY", "/key"), ("VALUE", "/value")],
            )?;
        }
        other => bail!("unknown output '{other}' (table, json, yaml, env)"),
    }
    Ok(())
}

/// Quotes a value for a `.env` file. Values are double-quoted with `\`, `"`, newlines and
/// carriage returns escaped, so `#`, `=`, spaces and quotes survive every common dotenv
/// reader. A value holding `$` or a backtick is single-quoted instead, with newlines kept,
/// because docker compose and a shell's `source` expand `$VAR` inside double quotes but not
/// inside single ones (python-dotenv expands `${VAR}` in both). Inside single quotes only what
/// python-dotenv would misread is escaped: a `'`, and a `\` that comes before another `\`, a
/// `'` or the closing quote. A shell and docker compose do not unescape there, so a value
/// holding both `$` and `'` reads back differently in them ([`dotenv_portable`] says which).
pub fn dotenv_quote(value: &str) -> String {
    let single = value.contains(['$', '`']);
    let mut out = String::with_capacity(value.len() + 2);
    out.push(if single { '\'' } else { '"' });
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, single) {
            ('\\', true) if matches!(chars.peek(), None | Some('\\' | '\'')) => {
                out.push_str("\\\\")
            }
            ('\\', false) => out.push_str("\\\\"),
            ('\'', true) => out.push_str("\\'"),
            ('"', false) => out.push_str("\\\""),
            ('\n', false) => out.push_str("\\n"),
            ('\r', false) => out.push_str("\\r"),
            (c, _) => out.push(c),
        }
    }
    out.push(if single { '\'' } else { '"' });
    out
}

/// Whether [`dotenv_quote`] single-quoted `value` without an escape, or did not single-quote
/// it: an escaped single-quoted value reads back differently in a shell's `source` and in
/// docker compose, which do not unescape inside single quotes, than in python-dotenv.
pub fn dotenv_portable(value: &str) -> bool {
    !value.contains(['$', '`']) || dotenv_quote(value).len() == value.len() + 2
}

/// `tether var ...`
#[derive(Subcommand, Debug)]
pub enum VarCmd {
    /// Set a variable.
    Set {
        /// Name.
        name: String,
        /// Value (may reference ${var:X} or ${secret:X.KEY}).
        value: String,
        /// Environment.
        #[arg(long)]
        env: Option<String>,
        /// Description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Show a variable.
    Get {
        /// Name.
        name: String,
        /// Environment.
        #[arg(long)]
        env: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// List variables.
    List {
        /// Environment.
        #[arg(long)]
        env: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Delete a variable.
    Delete {
        /// Name.
        name: String,
        /// Environment.
        #[arg(long)]
        env: Option<String>,
    },
    /// Move a variable to another environment or to the organization level (or from it).
    Move(MoveArgs),
    /// Rename a variable in its scope; it keeps its history.
    Rename {
        /// Current name.
        name: String,
        /// New name.
        new_name: String,
        /// Environment.
        #[arg(long)]
        env: Option<String>,
    },
    /// List the variables and secrets whose references resolve to this variable.
    Refs(RefsArgs),
}

/// `tether secret refs` and `tether var refs`.
#[derive(Args, Debug)]
pub struct RefsArgs {
    /// Name.
    name: String,
    /// Environment (default: organization level).
    #[arg(long)]
    env: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// Prints what refers to a secret or a variable (`collection`: `secrets` or `variables`).
async fn refs(t: Target<'_>, collection: &str, a: RefsArgs) -> Result<()> {
    let path = format!(
        "/v1/orgs/{}/{collection}/{}/references{}",
        enc(t.org),
        enc(&a.name),
        env_q(a.env.as_deref())
    );
    let v = t.client.call(Method::GET, &path, None).await?;
    if !matches!(a.output, Format::Table) {
        return print(&v, a.output, &[]);
    }
    let rows: Vec<Value> = jp(&v, "/referrers")
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let via: Vec<&str> = jp(r, "/via")
                        .as_array()
                        .map(|v| v.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    json!({"kind": r["kind"], "name": r["name"], "scope": r["scope"], "via": via.join(" ")})
                })
                .collect()
        })
        .unwrap_or_default();
    print(
        &Value::Array(rows),
        Format::Table,
        &[
            ("KIND", "/kind"),
            ("NAME", "/name"),
            ("SCOPE", "/scope"),
            ("VIA", "/via"),
        ],
    )?;
    if let Some(u) = jp(&v, "/unchecked").as_array().filter(|u| !u.is_empty()) {
        let names: Vec<&str> = u.iter().filter_map(Value::as_str).collect();
        eprintln!(
            "not searched (no permission to read values, or key unavailable): {}",
            names.join(", ")
        );
    }
    Ok(())
}

const VAR_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "/metadata/name"),
    ("ENV", "/metadata/env"),
    ("VALUE", "/spec/value"),
    ("UPDATED", "/status/audit/updated_at"),
];

/// Runs `tether var ...`.
pub async fn var(t: Target<'_>, cmd: VarCmd) -> Result<()> {
    let item_at = |name: &str, suffix: &str, env: Option<&str>| {
        format!(
            "/v1/orgs/{}/variables/{}{suffix}{}",
            enc(t.org),
            enc(name),
            env_q(env)
        )
    };
    let item = |name: &str, env: Option<&str>| item_at(name, "", env);
    match cmd {
        VarCmd::Set {
            name,
            value,
            env,
            description,
        } => {
            let body = json!({"metadata": {"name": name, "env": env}, "spec": {"value": value, "description": description}});
            t.client
                .call(Method::PUT, &item(&name, env.as_deref()), Some(&body))
                .await?;
            println!("variable '{name}' set");
            Ok(())
        }
        VarCmd::Get { name, env, output } => {
            let v = t
                .client
                .call(Method::GET, &item(&name, env.as_deref()), None)
                .await?;
            print(&v, output, VAR_COLUMNS)
        }
        VarCmd::List { env, output } => {
            let v = t
                .client
                .call(
                    Method::GET,
                    &format!("/v1/orgs/{}/variables{}", enc(t.org), env_q(env.as_deref())),
                    None,
                )
                .await?;
            print(&v, output, VAR_COLUMNS)
        }
        VarCmd::Delete { name, env } => {
            t.client
                .call(Method::DELETE, &item(&name, env.as_deref()), None)
                .await?;
            println!("variable '{name}' deleted");
            Ok(())
        }
        VarCmd::Move(a) => move_item(t, "variables", "variable", a).await,
        VarCmd::Refs(a) => refs(t, "variables", a).await,
        VarCmd::Rename {
            name,
            new_name,
            env,
        } => {
            let body = json!({ "name": new_name });
            t.client
                .call(
                    Method::POST,
                    &item_at(&name, "/rename", env.as_deref()),
                    Some(&body),
                )
                .await?;
            println!("variable '{name}' renamed to '{new_name}'");
            Ok(())
        }
    }
}

/// Which names to export.
#[derive(Args, Debug, Clone)]
pub struct Selection {
    /// Environment.
    #[arg(long)]
    pub env: String,
    /// Only these names (comma-separated).
    #[arg(long)]
    pub only: Option<String>,
    /// Only names starting with this prefix.
    #[arg(long)]
    pub prefix: Option<String>,
}

/// Fetches the resolved configuration of an environment.
pub async fn resolve(
    client: &mut Client,
    org: &str,
    sel: &Selection,
    reveal: bool,
) -> Result<Value> {
    let mut path = format!(
        "/v1/orgs/{}/envs/{}/resolved?reveal={reveal}",
        enc(org),
        enc(&sel.env)
    );
    if let Some(o) = &sel.only {
        path.push_str(&format!("&only={}", enc(o)));
    }
    if let Some(p) = &sel.prefix {
        path.push_str(&format!("&prefix={}", enc(p)));
    }
    client.call(Method::GET, &path, None).await
}

/// The resolved `(name, value)` pairs.
pub fn pairs(v: &Value) -> Vec<(String, String)> {
    jp(v, "/values")
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        jp(e, "/name").as_str().unwrap_or("").to_owned(),
                        jp(e, "/value").as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `tether env-vars`: the resolved configuration, masked unless `--reveal`.
pub async fn env_vars(t: Target<'_>, sel: Selection, reveal: bool, output: Format) -> Result<()> {
    let v = resolve(t.client, t.org, &sel, reveal).await?;
    print(
        jp(&v, "/values"),
        output,
        &[
            ("NAME", "/name"),
            ("VALUE", "/value"),
            ("SOURCE", "/source"),
        ],
    )?;
    warn_unexported(&v);
    Ok(())
}

/// Says on standard error what a resolution left out: secrets the caller may not read, and
/// names that another source's value hid.
fn warn_unexported(v: &Value) {
    let list = |p: &str| -> Vec<String> {
        jp(v, p)
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let skipped = list("/skipped");
    if !skipped.is_empty() {
        eprintln!(
            "left out (no permission to read values): {}",
            skipped.join(", ")
        );
    }
    for s in list("/shadowed") {
        eprintln!("warning: {s}");
    }
}

/// `tether dot-env`: writes a `.env` file (or standard output).
pub async fn dot_env(t: Target<'_>, sel: Selection, out: Option<String>) -> Result<()> {
    let v = resolve(t.client, t.org, &sel, true).await?;
    warn_unexported(&v);
    let mut text = String::new();
    for (k, val) in pairs(&v) {
        if !dotenv_portable(&val) {
            eprintln!(
                "warning: {k} holds '$' with a quote or backslash: written for python-dotenv; \
                 a shell or docker compose reads it differently"
            );
        }
        text.push_str(&format!("{k}={}\n", dotenv_quote(&val)));
    }
    match out {
        Some(path) => {
            use std::io::Write;
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            // An existing file is made 0600 before the values go into it.
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("writing {path}"))?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {path} 0600"))?;
            f.set_len(0)?;
            f.write_all(text.as_bytes())?;
            eprintln!("wrote {} values to {path}", pairs(&v).len());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// `tether run -- CMD ARGS...`: replaces this process with the command, its environment
/// extended with the resolved values, so signals, standard streams and the exit code are the
/// command's own. With `--watch`, runs it as a child instead, restarted when a value changes
/// (see [`crate::watch`]).
pub async fn run(
    t: Target<'_>,
    sel: Selection,
    cmd: Vec<String>,
    watch: Option<crate::watch::WatchOptions>,
) -> Result<()> {
    let (program, args) = cmd
        .split_first()
        .ok_or_else(|| anyhow!("give the command to run after --"))?;
    if let Some(opts) = watch {
        return match crate::watch::run_watched(t, &sel, program, args, opts).await? {
            0 => Ok(()),
            code => Err(crate::runner_cmd::ExitWith(u8::try_from(code).unwrap_or(1)).into()),
        };
    }
    let v = resolve(t.client, t.org, &sel, true).await?;
    let mut command = std::process::Command::new(program);
    command.args(args).envs(pairs(&v));
    use std::os::unix::process::CommandExt;
    let err = command.exec();
    Err(anyhow!("cannot run '{program}': {err}"))
}
