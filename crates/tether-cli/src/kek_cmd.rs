//! `tether kek` (an organization's key-encryption keys) and `tether operator` (the root key).

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use crate::client::{Client, enc, jp};
use crate::output::{Format, print};

/// `tether kek ...` (the organization is `--org`).
#[derive(Subcommand, Debug)]
pub enum KekCmd {
    /// List the organization's KEK versions and how many secret versions each wraps.
    List {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Rotate: a new KEK version of the same provider; every secret version's DEK is rewrapped
    /// (the data is never re-encrypted) and old versions keep reading.
    Rotate {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Drop every cached key of the organization on every server, so that reads go to the KMS
    /// again at once: the kill switch after revoking or disabling a customer key.
    FlushCache,
    /// Switch the organization's KEK, e.g. to a customer-managed key, and rewrap every secret
    /// version under it: `tether kek set --provider aws-kms --key-id arn:aws:kms:...`.
    Set {
        /// `local`, `aws-kms` or `openbao-transit`.
        #[arg(long)]
        provider: String,
        /// The key: a KMS key ARN or id, or `MOUNT/KEY` for OpenBao Transit.
        #[arg(long)]
        key_id: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

const KEK_COLUMNS: &[(&str, &str)] = &[
    ("VERSION", "/version"),
    ("PROVIDER", "/provider"),
    ("KEY ID", "/key_id"),
    ("ACTIVE", "/active"),
    ("SECRET VERSIONS", "/secret_versions"),
];

const REPORT_COLUMNS: &[(&str, &str)] = &[
    ("KEK VERSION", "/kek_version"),
    ("PROVIDER", "/provider"),
    ("KEY ID", "/key_id"),
    ("REWRAPPED", "/rewrapped"),
    ("FAILED", "/failed"),
];

/// Runs `tether kek ...`.
pub async fn kek(client: &mut Client, org: &str, cmd: KekCmd) -> Result<()> {
    let base = format!("/v1/orgs/{}/kek", enc(org));
    let (report, output) = match cmd {
        KekCmd::List { output } => {
            let v = client.call(Method::GET, &base, None).await?;
            return print(&v, output, KEK_COLUMNS);
        }
        KekCmd::FlushCache => {
            client
                .call(Method::POST, &format!("{base}/flush-cache"), None)
                .await?;
            println!(
                "cached keys of '{org}' dropped: every read unwraps its key again (through the KMS for a customer key)"
            );
            return Ok(());
        }
        KekCmd::Rotate { output } => (
            client
                .call(Method::POST, &format!("{base}/rotate"), None)
                .await?,
            output,
        ),
        KekCmd::Set {
            provider,
            key_id,
            output,
        } => (
            client
                .call(
                    Method::PUT,
                    &base,
                    Some(&json!({"provider": provider, "key_id": key_id})),
                )
                .await?,
            output,
        ),
    };
    print(&report, output, REPORT_COLUMNS)?;
    if jp(&report, "/failed").as_u64().unwrap_or(0) > 0 {
        return Err(anyhow!(
            "{} secret version(s) were not rewrapped (they still read with their old KEK): {}",
            jp(&report, "/failed"),
            jp(&report, "/first_error").as_str().unwrap_or("")
        ));
    }
    Ok(())
}

/// `tether operator ...`: installation-wide key operations.
#[derive(Subcommand, Debug)]
pub enum OperatorCmd {
    /// Write a new random root key to a file (mode 0600; the file must not exist).
    GenerateRootKey {
        /// The file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Rewrap every organization KEK and the system KEK under a new root key. The server reads
    /// the key from FILE on its own host (mode 0600); the key never travels over the API.
    /// Afterwards, point the server's root key setting (TETHER_ROOT_KEY_FILE, root_key_file,
    /// or the dev data directory's root.key) at the new key and restart every server.
    /// With auto-unseal (the root key sealed by a KMS key), omit the file: the server
    /// generates the new key and stores it sealed; nobody ever sees it.
    RotateRootKey {
        /// The new root key file, as a path on the server's host.
        #[arg(long)]
        new_root_key_file: Option<PathBuf>,
    },
}

/// Runs `tether operator ...`.
pub async fn operator(client: Option<&mut Client>, cmd: OperatorCmd) -> Result<()> {
    match cmd {
        OperatorCmd::GenerateRootKey { out } => {
            let key = tether_server::keys::generate_root_key_text();
            tether_server::keys::write_private(&out, key.as_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote a new root key to {} (mode 0600)", out.display());
            Ok(())
        }
        OperatorCmd::RotateRootKey { new_root_key_file } => {
            let client = client.ok_or_else(|| anyhow!("no server connection"))?;
            let path = new_root_key_file
                .map(|f| {
                    std::path::absolute(&f).with_context(|| format!("resolving {}", f.display()))
                })
                .transpose()?;
            let body = match &path {
                Some(p) => json!({"new_root_key_file": p}),
                None => json!({}),
            };
            let v = client
                .call(Method::POST, "/v1/operator/rotate-root-key", Some(&body))
                .await?;
            println!(
                "root key rotated: {} -> {} ({} organization KEKs and the system KEK rewrapped)",
                jp(&v, "/old_root_key_id").as_str().unwrap_or("?"),
                jp(&v, "/new_root_key_id").as_str().unwrap_or("?"),
                jp(&v, "/org_keks_rewrapped")
            );
            match path {
                Some(p) => println!(
                    "now restart every Tether server with the new root key ({}); the old key no \
                     longer opens this database",
                    p.display()
                ),
                None => println!(
                    "the new root key is sealed by the KMS key; restart the other servers so \
                     that they unseal it"
                ),
            }
            Ok(())
        }
    }
}

/// `tether backend ...`: where new secret versions of the organization are stored.
#[derive(Subcommand, Debug)]
pub enum BackendCmd {
    /// Show the organization's backend.
    Get {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Yaml)]
        output: Format,
    },
    /// Store new versions in `builtin` (Tether's database), `openbao-kv` (OpenBao / Vault KV
    /// v2) or `aws-secretsmanager`. Existing versions stay where they were written.
    Set {
        /// The backend kind.
        kind: String,
        /// KV v2 mount (openbao-kv; default `secret`).
        #[arg(long)]
        mount: Option<String>,
        /// Path or name prefix (default `tether`).
        #[arg(long)]
        prefix: Option<String>,
    },
}

/// Runs `tether backend ...`.
pub async fn backend(client: &mut Client, org: &str, cmd: BackendCmd) -> Result<()> {
    let path = format!("/v1/orgs/{}/backend", enc(org));
    match cmd {
        BackendCmd::Get { output } => {
            let v = client.call(Method::GET, &path, None).await?;
            print(&v, output, &[("KIND", "/kind"), ("CONFIG", "/config")])
        }
        BackendCmd::Set {
            kind,
            mount,
            prefix,
        } => {
            let mut config = serde_json::Map::new();
            if let Some(m) = mount {
                config.insert("mount".into(), json!(m));
            }
            if let Some(p) = prefix {
                config.insert("prefix".into(), json!(p));
            }
            client
                .call(
                    Method::PUT,
                    &path,
                    Some(&json!({"kind": kind, "config": config})),
                )
                .await?;
            println!("new secret versions of '{org}' are stored in {kind}");
            Ok(())
        }
    }
}
