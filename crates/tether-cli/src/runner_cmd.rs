//! `tether runner ...` (registration, credentials, status) and `tether job run`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, enc, failure_from, jp};
use crate::output::{Format, print};

/// `tether runner`.
#[derive(Subcommand, Debug)]
pub enum RunnerCmd {
    /// Register a runner (a Runner resource).
    Register {
        /// Runner name.
        name: String,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// Generate a credentials document (shown once; earlier ones stay valid).
    GenerateCredentials {
        /// Runner name.
        name: String,
        /// Write to this file (mode 0600) instead of standard output.
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// Revoke every earlier certificate and API key of the runner (its live tunnel closes)
    /// and generate a new credentials document.
    RegenerateCredentials {
        /// Runner name.
        name: String,
        /// Write to this file (mode 0600) instead of standard output.
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// List runners with their status.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Show one runner and its status.
    Get {
        /// Runner name.
        name: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Yaml)]
        output: Format,
    },
    /// Delete a runner: revokes its credentials, closes its tunnel, deletes its service account.
    Delete {
        /// Runner name.
        name: String,
    },
    /// Send `runner.ping` through the tunnel and print each round trip (as seen by the CLI:
    /// HTTP request, authorization, tunnel, runner and back).
    Ping {
        /// Runner name.
        name: String,
        /// How many pings (one after the other).
        #[arg(short, long, default_value_t = 1)]
        count: u32,
    },
}

/// `tether job`.
#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Run an allowlisted command on a runner (`tether job run --runner R -- tofu plan`).
    Run {
        /// The runner.
        #[arg(long)]
        runner: String,
        /// Deadline in seconds.
        #[arg(long)]
        timeout: Option<u32>,
        /// KEY=VALUE injected into the job's environment (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

const STATUS_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "/name"),
    ("STATUS", "/status"),
    ("LAST HEARTBEAT", "/last_heartbeat"),
    ("VERSION", "/version"),
    ("ID", "/id"),
];

fn item_path(org: &str, name: &str) -> String {
    format!("/v1/orgs/{}/runners/{}", enc(org), enc(name))
}

/// Runs a `tether runner` command.
pub async fn runner(client: &mut Client, org: &str, cmd: RunnerCmd) -> Result<()> {
    match cmd {
        RunnerCmd::Register { name, description } => {
            let body = json!({"metadata": {"name": name}, "spec": {"description": description}});
            let path = format!("/v1/orgs/{}/runners", enc(org));
            client.call(Method::POST, &path, Some(&body)).await?;
            println!("runner '{name}' registered");
        }
        RunnerCmd::GenerateCredentials { name, out } => {
            let path = format!("{}/credentials", item_path(org, &name));
            let doc = client.call(Method::POST, &path, None).await?;
            emit_credentials(&doc, out)?;
        }
        RunnerCmd::RegenerateCredentials { name, out } => {
            let path = format!("{}/credentials/regenerate", item_path(org, &name));
            let doc = client.call(Method::POST, &path, None).await?;
            eprintln!("every earlier credential of runner '{name}' is revoked");
            emit_credentials(&doc, out)?;
        }
        RunnerCmd::List { output } => {
            let path = format!("/v1/tunnel/{}/runners", enc(org));
            let list = client.call(Method::GET, &path, None).await?;
            print(&list, output, STATUS_COLUMNS)?;
        }
        RunnerCmd::Get { name, output } => {
            let item = client
                .call(Method::GET, &item_path(org, &name), None)
                .await?;
            let path = format!("{}/status", item_path(org, &name));
            let status = client.call(Method::GET, &path, None).await?;
            let mut shown = item;
            if let Some(obj) = shown.as_object_mut() {
                obj.insert("runner_status".into(), status);
            }
            print(&shown, output, STATUS_COLUMNS)?;
        }
        RunnerCmd::Delete { name } => {
            client
                .call(Method::DELETE, &item_path(org, &name), None)
                .await?;
            println!("runner '{name}' deleted; its credentials are revoked");
        }
        RunnerCmd::Ping { name, count } => ping(client, org, &name, count).await?,
    }
    Ok(())
}

/// `tether runner ping`: one line per answer with the round-trip time.
async fn ping(client: &mut Client, org: &str, name: &str, count: u32) -> Result<()> {
    let path = format!("{}/operations", item_path(org, name));
    let body = json!({"operation": {"type": "runner.ping"}, "timeout_secs": 10});
    for seq in 0..count.max(1) {
        let started = std::time::Instant::now();
        client.call(Method::POST, &path, Some(&body)).await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        println!("pong from runner '{name}': seq={seq} time={ms:.2} ms");
    }
    Ok(())
}

/// Prints the credentials document, or writes it to a 0600 file.
fn emit_credentials(doc: &Value, out: Option<PathBuf>) -> Result<()> {
    let text = serde_json::to_string_pretty(doc)?;
    match out {
        None => println!("{text}"),
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            eprintln!(
                "credentials written to {} (shown once; keep the file private)",
                path.display()
            );
        }
    }
    Ok(())
}

/// The CLI ends with this exit code (the job's own), without an error message of its own.
#[derive(Debug)]
pub struct ExitWith(pub u8);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// Runs a `tether job` command: the job's output is streamed to this process's stdout and
/// stderr as it arrives, and the CLI exits with the job's exit code (128 + N for a signal).
pub async fn job(client: &mut Client, org: &str, cmd: JobCmd) -> Result<()> {
    let JobCmd::Run {
        runner,
        timeout,
        env,
        cmd,
    } = cmd;
    let Some((command, args)) = cmd.split_first() else {
        bail!("give the command after --");
    };
    let mut vars = serde_json::Map::new();
    for pair in env {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--env takes KEY=VALUE, got '{pair}'");
        };
        vars.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    let body = json!({
        "operation": {"type": "job.run", "command": command, "args": args, "env": vars},
        "timeout_secs": timeout,
    });
    let path = format!("{}/operations", item_path(org, &runner));
    let mut last = None;
    client
        .stream_lines(&path, &body, |line| {
            match jp(&line, "/type").as_str() {
                Some("log") => write_log(&line)?,
                Some("result" | "error") => last = Some(line),
                _ => {}
            }
            Ok(())
        })
        .await?;
    let Some(last) = last else {
        bail!("the stream from the server ended before the job's result");
    };
    if jp(&last, "/type") == "error" {
        let status = jp(&last, "/status")
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| reqwest::StatusCode::from_u16(s).ok())
            .unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
        return Err(failure_from(status, &last).into());
    }
    if let Some(n) = jp(&last, "/truncated_bytes").as_u64().filter(|n| *n > 0) {
        eprintln!("tether: {n} bytes of the job's output were not shown (log cap)");
    }
    match jp(&last, "/output/job/exit_code").as_i64() {
        Some(0) => Ok(()),
        Some(code) => Err(ExitWith(u8::try_from(code).unwrap_or(1)).into()),
        None => {
            let signal = jp(&last, "/output/job/signal").as_i64().unwrap_or(0);
            let code = u8::try_from(128 + signal).unwrap_or(1);
            Err(ExitWith(code).into())
        }
    }
}

/// Writes a log line's data to stdout or stderr at once.
fn write_log(line: &Value) -> Result<()> {
    let data = jp(line, "/data").as_str().unwrap_or_default();
    if jp(line, "/stream") == "stderr" {
        let mut err = std::io::stderr().lock();
        err.write_all(data.as_bytes())?;
        err.flush()?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(data.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}
