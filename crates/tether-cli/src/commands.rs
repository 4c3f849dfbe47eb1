//! The client commands.

use std::io::Read;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, CommandFactory, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};
use tether_core::Kind;

use crate::client::{Client, enc, jp};
use crate::config::CliConfig;
use crate::output::{Format, RESOURCE_COLUMNS, print};
use crate::secrets_cmd::{self, Target};
use crate::{Cli, Command};

/// Options every client command takes.
#[derive(Args, Debug)]
pub struct Global {
    /// Server address.
    #[arg(long, global = true, env = "TETHER_ADDR")]
    addr: Option<String>,
    /// API key or access token (otherwise the session from `tether auth login`).
    #[arg(long, global = true, env = "TETHER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Organization (default: from the config, else `default`).
    #[arg(long, global = true, env = "TETHER_ORG")]
    org: Option<String>,
    /// A PEM CA certificate to trust for the server.
    #[arg(long, global = true, env = "TETHER_CACERT")]
    ca_cert: Option<String>,
}

struct Ctx {
    client: Client,
    org: String,
}

fn connect(g: &Global) -> Result<Ctx> {
    let cfg = CliConfig::load()?;
    let addr = g
        .addr
        .clone()
        .or(cfg.addr.clone())
        .unwrap_or_else(|| "http://127.0.0.1:8420".into());
    let (token, session) = match (&g.token, &cfg.access_token) {
        (Some(t), _) => (Some(t.clone()), false),
        (None, Some(t)) => (Some(t.clone()), true),
        (None, None) => (None, false),
    };
    let org = g
        .org
        .clone()
        .or(cfg.org.clone())
        .unwrap_or_else(|| "default".into());
    Ok(Ctx {
        client: Client::new(&addr, token, session, g.ca_cert.as_deref())?,
        org,
    })
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Server(args) => crate::server::run(args).await,
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "tether", &mut std::io::stdout());
            Ok(())
        }
        Command::Auth(cmd) => auth(&cli.global, cmd).await,
        Command::Get(a) => get(&mut connect(&cli.global)?, a).await,
        Command::Apply(a) => apply(&mut connect(&cli.global)?, a).await,
        Command::Delete(a) => delete(&mut connect(&cli.global)?, a).await,
        Command::Key(cmd) => key(&mut connect(&cli.global)?, cmd).await,
        Command::User(cmd) => user(&mut connect(&cli.global)?, cmd).await,
        Command::Audit(cmd) => audit(&mut connect(&cli.global)?, cmd).await,
        Command::Kek(cmd) => {
            let mut c = connect(&cli.global)?;
            crate::kek_cmd::kek(&mut c.client, &c.org, cmd).await
        }
        Command::Backend(cmd) => {
            let mut c = connect(&cli.global)?;
            crate::kek_cmd::backend(&mut c.client, &c.org, cmd).await
        }
        Command::Operator(cmd) => match cmd {
            crate::kek_cmd::OperatorCmd::GenerateRootKey { .. } => {
                crate::kek_cmd::operator(None, cmd).await
            }
            _ => {
                let mut c = connect(&cli.global)?;
                crate::kek_cmd::operator(Some(&mut c.client), cmd).await
            }
        },
        Command::Runner(cmd) => {
            let mut c = connect(&cli.global)?;
            crate::runner_cmd::runner(&mut c.client, &c.org, cmd).await
        }
        Command::Job(cmd) => {
            let mut c = connect(&cli.global)?;
            crate::runner_cmd::job(&mut c.client, &c.org, cmd).await
        }
        Command::Cloud(cmd) => {
            let mut c = connect(&cli.global)?;
            crate::cloud_cmd::cloud(&mut c.client, &c.org, cmd).await
        }
        Command::Secret(cmd) => {
            let mut c = connect(&cli.global)?;
            secrets_cmd::secret(
                Target {
                    client: &mut c.client,
                    org: &c.org,
                },
                cmd,
            )
            .await
        }
        Command::Var(cmd) => {
            let mut c = connect(&cli.global)?;
            secrets_cmd::var(
                Target {
                    client: &mut c.client,
                    org: &c.org,
                },
                cmd,
            )
            .await
        }
        Command::Search {
            query,
            kind,
            deleted,
            output,
        } => {
            let mut c = connect(&cli.global)?;
            let mut path = format!("/v1/orgs/{}/search?q={}", enc(&c.org), enc(&query));
            if let Some(k) = kind {
                path.push_str(&format!("&kind={}", enc(&k)));
            }
            if deleted {
                path.push_str("&deleted=true");
            }
            let found = c.client.call(Method::GET, &path, None).await?;
            print(
                &found,
                output,
                &[
                    ("KIND", "/kind"),
                    ("NAME", "/metadata/name"),
                    ("ENV", "/metadata/env"),
                    ("UPDATED", "/status/audit/updated_at"),
                ],
            )
        }
        Command::EnvVars {
            sel,
            reveal,
            output,
        } => {
            let mut c = connect(&cli.global)?;
            secrets_cmd::env_vars(
                Target {
                    client: &mut c.client,
                    org: &c.org,
                },
                sel,
                reveal,
                output,
            )
            .await
        }
        Command::DotEnv { sel, out } => {
            let mut c = connect(&cli.global)?;
            secrets_cmd::dot_env(
                Target {
                    client: &mut c.client,
                    org: &c.org,
                },
                sel,
                out,
            )
            .await
        }
        Command::Run {
            sel,
            watch,
            watch_interval,
            watch_grace,
            cmd,
        } => {
            let mut c = connect(&cli.global)?;
            let watch = watch.then(|| crate::watch::WatchOptions {
                interval: std::time::Duration::from_secs(watch_interval),
                grace: std::time::Duration::from_secs(watch_grace),
            });
            secrets_cmd::run(
                Target {
                    client: &mut c.client,
                    org: &c.org,
                },
                sel,
                cmd,
                watch,
            )
            .await
        }
    }
}

// ---- auth ----------------------------------------------------------------------------------

/// `tether auth ...`
#[derive(Subcommand, Debug)]
pub enum AuthCmd {
    /// Log in and store the session in the config directory (0600).
    Login {
        /// Log in with a user name and password (read from TETHER_PASSWORD or standard input).
        #[arg(long)]
        password: bool,
        /// User name.
        #[arg(long, default_value = "admin")]
        username: String,
    },
    /// Forget the stored session.
    Logout,
    /// Show who the current credential belongs to.
    Whoami {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

fn read_secret_input(env: &str, prompt: &str) -> Result<String> {
    if let Ok(v) = std::env::var(env) {
        return Ok(v);
    }
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprint!("{prompt}: ");
    }
    let mut s = String::new();
    std::io::stdin()
        .read_line(&mut s)
        .context("reading from standard input")?;
    Ok(s.trim_end_matches(['\r', '\n']).to_owned())
}

async fn auth(g: &Global, cmd: AuthCmd) -> Result<()> {
    match cmd {
        AuthCmd::Login { password, username } => {
            if !password {
                bail!(
                    "only --password login is available in this version (OIDC login comes later)"
                );
            }
            let mut ctx = connect(g)?;
            let secret = read_secret_input("TETHER_PASSWORD", "Password")?;
            let body = json!({"org": ctx.org, "username": username, "password": secret});
            let v = ctx
                .client
                .call(Method::POST, "/v1/auth/login", Some(&body))
                .await?;
            let mut cfg = CliConfig::load()?;
            cfg.access_token = jp(&v, "/access_token").as_str().map(str::to_owned);
            cfg.refresh_token = jp(&v, "/refresh_token").as_str().map(str::to_owned);
            cfg.addr = g.addr.clone().or(cfg.addr);
            cfg.org = Some(ctx.org.clone());
            let path = cfg.save()?;
            println!(
                "Logged in as {username}@{}; session stored in {}",
                ctx.org,
                path.display()
            );
            Ok(())
        }
        AuthCmd::Logout => {
            let mut cfg = CliConfig::load()?;
            cfg.access_token = None;
            cfg.refresh_token = None;
            cfg.save()?;
            println!("Logged out.");
            Ok(())
        }
        AuthCmd::Whoami { output } => {
            let mut ctx = connect(g)?;
            let v = ctx
                .client
                .call(Method::GET, "/v1/auth/whoami", None)
                .await?;
            print(
                &v,
                output,
                &[
                    ("NAME", "/name"),
                    ("KIND", "/kind"),
                    ("ORG", "/org"),
                    ("ID", "/id"),
                    ("VIA", "/via/method"),
                ],
            )
        }
    }
}

// ---- resources -----------------------------------------------------------------------------

fn kind_of(text: &str) -> Result<Kind> {
    Kind::parse(text).ok_or_else(|| {
        anyhow!("unknown kind '{text}' (orgs, envs, teams, users, service-accounts, role-bindings)")
    })
}

fn collection_path(org: &str, kind: Kind, env: Option<&str>) -> String {
    let q = env.map(|e| format!("?env={}", enc(e))).unwrap_or_default();
    match kind {
        Kind::Organization => "/v1/orgs".into(),
        k => format!("/v1/orgs/{}/{}{q}", enc(org), k.plural()),
    }
}

fn item_path(org: &str, kind: Kind, name: &str, env: Option<&str>) -> String {
    let q = env.map(|e| format!("?env={}", enc(e))).unwrap_or_default();
    match kind {
        Kind::Organization => format!("/v1/orgs/{}", enc(name)),
        k => format!("/v1/orgs/{}/{}/{}{q}", enc(org), k.plural(), enc(name)),
    }
}

/// `tether get KIND [NAME]`
#[derive(Args, Debug)]
pub struct GetArgs {
    /// Kind: orgs, envs, teams, users, service-accounts, role-bindings.
    kind: String,
    /// A name, to show one resource.
    name: Option<String>,
    /// Environment (for environment-scoped kinds).
    #[arg(long)]
    env: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

async fn get(ctx: &mut Ctx, a: GetArgs) -> Result<()> {
    let kind = kind_of(&a.kind)?;
    let path = match &a.name {
        Some(n) => item_path(&ctx.org, kind, n, a.env.as_deref()),
        None => collection_path(&ctx.org, kind, a.env.as_deref()),
    };
    let v = ctx.client.call(Method::GET, &path, None).await?;
    print(&v, a.output, RESOURCE_COLUMNS)
}

/// `tether apply -f FILE`
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// A YAML file with one or more documents, or `-` for standard input.
    #[arg(short = 'f', long = "filename")]
    file: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

async fn apply(ctx: &mut Ctx, a: ApplyArgs) -> Result<()> {
    let mut body = Vec::new();
    if a.file == "-" {
        std::io::stdin().read_to_end(&mut body)?;
    } else {
        body = std::fs::read(&a.file).with_context(|| format!("reading {}", a.file))?;
    }
    let v = ctx
        .client
        .call_raw(Method::POST, "/v1/apply", body, "application/yaml")
        .await?;
    print(
        &v,
        a.output,
        &[
            ("KIND", "/kind"),
            ("NAME", "/name"),
            ("ENV", "/env"),
            ("RESULT", "/result"),
        ],
    )
}

/// `tether delete KIND NAME`
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Kind.
    kind: String,
    /// Name.
    name: String,
    /// Environment.
    #[arg(long)]
    env: Option<String>,
}

async fn delete(ctx: &mut Ctx, a: DeleteArgs) -> Result<()> {
    let kind = kind_of(&a.kind)?;
    ctx.client
        .call(
            Method::DELETE,
            &item_path(&ctx.org, kind, &a.name, a.env.as_deref()),
            None,
        )
        .await?;
    println!("{} '{}' deleted", kind.singular(), a.name);
    Ok(())
}

// ---- keys and users ------------------------------------------------------------------------

/// `tether key ...`
#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Create an API key (shown once).
    Create {
        /// Key name.
        name: String,
        /// For this service account (default: for yourself).
        #[arg(long)]
        service_account: Option<String>,
        /// Lifetime, e.g. 30d.
        #[arg(long)]
        expires_in: Option<String>,
        /// Restrict to these relations (repeatable): can_read, can_write, can_manage, ...
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// List API keys (never the keys themselves).
    List {
        /// Of this service account (default: yours).
        #[arg(long)]
        service_account: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Revoke an API key by id.
    Revoke {
        /// Key id.
        id: String,
        /// Of this service account (default: yours).
        #[arg(long)]
        service_account: Option<String>,
    },
}

fn keys_path(org: &str, sa: Option<&str>) -> String {
    match sa {
        Some(sa) => format!("/v1/orgs/{}/service-accounts/{}/keys", enc(org), enc(sa)),
        None => "/v1/auth/keys".into(),
    }
}

const KEY_COLUMNS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("KEY", "/display"),
    ("SCOPES", "/scopes"),
    ("EXPIRES", "/expires_at"),
    ("LAST USED", "/last_used_at"),
    ("REVOKED", "/revoked_at"),
];

async fn key(ctx: &mut Ctx, cmd: KeyCmd) -> Result<()> {
    match cmd {
        KeyCmd::Create {
            name,
            service_account,
            expires_in,
            scopes,
            output,
        } => {
            let body = json!({"name": name, "expires_in": expires_in, "scopes": scopes});
            let v = ctx
                .client
                .call(
                    Method::POST,
                    &keys_path(&ctx.org, service_account.as_deref()),
                    Some(&body),
                )
                .await?;
            match output {
                Format::Table => {
                    println!("API key '{name}' created. It is shown only once:");
                    println!();
                    println!("    {}", jp(&v, "/key").as_str().unwrap_or_default());
                    println!();
                    Ok(())
                }
                f => print(&v, f, &[]),
            }
        }
        KeyCmd::List {
            service_account,
            output,
        } => {
            let v = ctx
                .client
                .call(
                    Method::GET,
                    &keys_path(&ctx.org, service_account.as_deref()),
                    None,
                )
                .await?;
            print(&v, output, KEY_COLUMNS)
        }
        KeyCmd::Revoke {
            id,
            service_account,
        } => {
            let path = format!(
                "{}/{}",
                keys_path(&ctx.org, service_account.as_deref()),
                enc(&id)
            );
            ctx.client.call(Method::DELETE, &path, None).await?;
            println!("API key {id} revoked");
            Ok(())
        }
    }
}

/// `tether user ...`
#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Set a user's password (read from TETHER_PASSWORD or standard input).
    SetPassword {
        /// User name.
        name: String,
    },
}

async fn user(ctx: &mut Ctx, cmd: UserCmd) -> Result<()> {
    match cmd {
        UserCmd::SetPassword { name } => {
            let password = read_secret_input("TETHER_PASSWORD", "New password")?;
            let path = format!("/v1/orgs/{}/users/{}/password", enc(&ctx.org), enc(&name));
            ctx.client
                .call(Method::POST, &path, Some(&json!({"password": password})))
                .await?;
            println!("password of '{name}' set");
            Ok(())
        }
    }
}

// ---- audit ---------------------------------------------------------------------------------

/// Request-log filters.
#[derive(Args, Debug, Default)]
pub struct LogFilters {
    /// RFC 3339 time or a duration back from now (15m, 24h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// RFC 3339 time or a duration back from now.
    #[arg(long)]
    until: Option<String>,
    /// Principal, e.g. user:alice@default.
    #[arg(long)]
    principal: Option<String>,
    /// Action.
    #[arg(long)]
    action: Option<String>,
    /// Resource path prefix.
    #[arg(long)]
    resource: Option<String>,
    /// allowed, denied, unauthenticated or error.
    #[arg(long)]
    result: Option<String>,
    /// Maximum records.
    #[arg(long)]
    limit: Option<i64>,
    /// The newest records first.
    #[arg(long)]
    newest: bool,
}

impl LogFilters {
    fn query(&self) -> String {
        let pairs = [
            ("since", self.since.clone()),
            ("until", self.until.clone()),
            ("principal", self.principal.clone()),
            ("action", self.action.clone()),
            ("resource", self.resource.clone()),
            ("result", self.result.clone()),
            ("limit", self.limit.map(|l| l.to_string())),
            ("order", self.newest.then(|| "newest".to_owned())),
        ];
        pairs
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", enc(v))))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// `tether audit ...`
#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// The versions of one resource.
    Versions {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// One version, with its snapshots and diff.
    Show {
        /// Version id.
        version: String,
        /// Output format (yaml or json).
        #[arg(short, long, value_enum, default_value_t = Format::Yaml)]
        output: Format,
    },
    /// The diff between two versions.
    Diff {
        /// Older version.
        from: String,
        /// Newer version.
        to: String,
    },
    /// Restore a resource to a version (writes a new version).
    Restore {
        /// Version id.
        version: String,
    },
    /// Search the request log.
    Log {
        #[command(flatten)]
        filters: LogFilters,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Export the request log as JSON lines or CSV.
    Export {
        #[command(flatten)]
        filters: LogFilters,
        /// jsonl or csv.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<String>,
    },
    /// Recompute the hash chains; fails naming the first broken link.
    Verify,
}

async fn audit(ctx: &mut Ctx, cmd: AuditCmd) -> Result<()> {
    let base = format!("/v1/audit/{}", enc(&ctx.org));
    match cmd {
        AuditCmd::Versions { kind, name, output } => {
            let path = format!("{base}/versions?kind={}&name={}", enc(&kind), enc(&name));
            let v = ctx.client.call(Method::GET, &path, None).await?;
            print(
                &v,
                output,
                &[
                    ("VERSION", "/id"),
                    ("SEQ", "/seq"),
                    ("EVENT", "/event"),
                    ("ACTOR", "/actor"),
                    ("AT", "/at"),
                    ("MESSAGE", "/message"),
                ],
            )
        }
        AuditCmd::Show { version, output } => {
            let v = ctx
                .client
                .call(
                    Method::GET,
                    &format!("{base}/versions/{}", enc(&version)),
                    None,
                )
                .await?;
            print(
                &v,
                output,
                &[
                    ("VERSION", "/id"),
                    ("EVENT", "/event"),
                    ("ACTOR", "/actor"),
                    ("AT", "/at"),
                ],
            )
        }
        AuditCmd::Diff { from, to } => {
            let v = ctx
                .client
                .call(
                    Method::GET,
                    &format!("{base}/diff?from={}&to={}", enc(&from), enc(&to)),
                    None,
                )
                .await?;
            print!("{}", jp(&v, "/diff").as_str().unwrap_or_default());
            Ok(())
        }
        AuditCmd::Restore { version } => {
            let v = ctx
                .client
                .call(
                    Method::POST,
                    &format!("{base}/versions/{}/restore", enc(&version)),
                    None,
                )
                .await?;
            println!(
                "restored {} '{}' (new version {})",
                jp(&v, "/kind").as_str().unwrap_or(""),
                jp(&v, "/metadata/name").as_str().unwrap_or(""),
                jp(&v, "/metadata/version/id").as_str().unwrap_or("")
            );
            Ok(())
        }
        AuditCmd::Log { filters, output } => {
            let v = ctx
                .client
                .call(
                    Method::GET,
                    &format!("{base}/log?{}", filters.query()),
                    None,
                )
                .await?;
            print(
                &v,
                output,
                &[
                    ("SEQ", "/seq"),
                    ("REQUEST", "/request_id"),
                    ("PRINCIPAL", "/principal"),
                    ("ACTION", "/action"),
                    ("RESULT", "/result"),
                    ("STATUS", "/status"),
                ],
            )
        }
        AuditCmd::Export {
            filters,
            format,
            out,
        } => {
            let text = ctx
                .client
                .text(&format!(
                    "{base}/log/export?format={}&{}",
                    enc(&format),
                    filters.query()
                ))
                .await?;
            match out {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("writing {path}"))?
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        AuditCmd::Verify => {
            let v = ctx
                .client
                .call(Method::GET, &format!("{base}/verify"), None)
                .await?;
            if jp(&v, "/ok").as_bool() == Some(true) {
                println!("audit chains verified: no broken link");
                return Ok(());
            }
            report_break("resource versions", jp(&v, "/versions"));
            report_break("request log", jp(&v, "/requests"));
            bail!("the audit trail has been tampered with")
        }
    }
}

fn report_break(what: &str, b: &Value) {
    if b.is_object() {
        eprintln!(
            "{what}: first broken link at seq {} ({}): {}",
            jp(b, "/seq"),
            jp(b, "/id").as_str().unwrap_or(""),
            jp(b, "/reason").as_str().unwrap_or("")
        );
    }
}
