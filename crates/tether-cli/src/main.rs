//! `tether`: the Tether CLI, and `tether server` to run the control plane.

mod client;
mod cloud_cmd;
mod commands;
mod config;
mod kek_cmd;
mod log_format;
mod log_writer;
mod output;
mod runner_cmd;
mod secrets_cmd;
mod server;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{Global, run};

/// jemalloc: the server allocates on every request from two runtime threads, where glibc's
/// allocator spent a sixth of the request path's CPU (free-list consolidation included).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Tether: a self-hostable security control plane.
#[derive(Parser)]
#[command(name = "tether", version, about)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Top-level commands.
#[derive(Subcommand)]
pub enum Command {
    /// Run the Tether server.
    Server(server::ServerArgs),
    /// Log in, log out, see who you are.
    #[command(subcommand)]
    Auth(commands::AuthCmd),
    /// Show resources of a kind, or one resource.
    Get(commands::GetArgs),
    /// Create or update resources from YAML manifests.
    Apply(commands::ApplyArgs),
    /// Delete a resource.
    Delete(commands::DeleteArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Key(commands::KeyCmd),
    /// Manage users.
    #[command(subcommand)]
    User(commands::UserCmd),
    /// Secrets: versioned, encrypted KEY=VALUE maps.
    #[command(subcommand)]
    Secret(secrets_cmd::SecretCmd),
    /// Variables: non-sensitive values.
    #[command(subcommand)]
    Var(secrets_cmd::VarCmd),
    /// Find secrets and variables by name in the organization and all its environments
    /// (only those you may read).
    Search {
        /// Part of the name, any case (none: everything you may read).
        #[arg(default_value = "")]
        query: String,
        /// Only `secrets` or only `variables`.
        #[arg(long)]
        kind: Option<String>,
        /// Include deleted secrets.
        #[arg(long)]
        deleted: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = output::Format::Table)]
        output: output::Format,
    },
    /// Show an environment's resolved configuration (masked unless --reveal).
    EnvVars {
        #[command(flatten)]
        sel: secrets_cmd::Selection,
        /// Show values.
        #[arg(long)]
        reveal: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = output::Format::Table)]
        output: output::Format,
    },
    /// Write an environment's resolved configuration as a .env file.
    DotEnv {
        #[command(flatten)]
        sel: secrets_cmd::Selection,
        /// Write to this file (mode 0600) instead of standard output.
        #[arg(short, long)]
        out: Option<String>,
    },
    /// Run a command with an environment's resolved configuration in its environment.
    Run {
        #[command(flatten)]
        sel: secrets_cmd::Selection,
        /// Stay as the command's parent, and restart it when a value changes.
        #[arg(long)]
        watch: bool,
        /// With --watch: seconds between checks for changes.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600), requires = "watch")]
        watch_interval: u64,
        /// With --watch: seconds the command has to exit after SIGTERM before it is killed.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600), requires = "watch")]
        watch_grace: u64,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// An organization's key-encryption keys: list, rotate, switch to a customer key.
    #[command(subcommand)]
    Kek(kek_cmd::KekCmd),
    /// Where an organization's new secret versions are stored.
    #[command(subcommand)]
    Backend(kek_cmd::BackendCmd),
    /// Installation key operations (root key).
    #[command(subcommand)]
    Operator(kek_cmd::OperatorCmd),
    /// Resource history and the request log.
    #[command(subcommand)]
    Audit(commands::AuditCmd),
    /// Runners: registration, credentials, status.
    #[command(subcommand)]
    Runner(runner_cmd::RunnerCmd),
    /// Jobs run on a runner.
    #[command(subcommand)]
    Job(runner_cmd::JobCmd),
    /// Cloud operations run by a runner (AWS: sts, s3, ec2).
    #[command(subcommand)]
    Cloud(cloud_cmd::CloudCmd),
    /// Print shell completions.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<runner_cmd::ExitWith>() {
            Some(code) => ExitCode::from(code.0),
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
