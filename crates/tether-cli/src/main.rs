//! `tether`: the Tether CLI, and `tether server` to run the control plane.

mod client;
mod commands;
mod config;
mod output;
mod server;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{Global, run};

/// Tether: a self-hostable security control plane.
#[derive(Parser)]
#[command(name = "tether", version, about, propagate_version = true)]
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
    /// Resource history and the request log.
    #[command(subcommand)]
    Audit(commands::AuditCmd),
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
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
