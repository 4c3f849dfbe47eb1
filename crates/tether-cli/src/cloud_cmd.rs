//! `tether cloud aws ...`: typed AWS operations run by a runner, in one of three auth modes.
//!
//! Inline keys are never taken from the command line (argv is visible to every local user
//! and kept in shell history): they come from the `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` variables, or from a JSON file (mode 0600) or
//! standard input with `--aws-credentials-file PATH|-`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Client, enc, jp};
use crate::output::{Format, print};

/// `tether cloud`.
#[derive(Subcommand, Debug)]
pub enum CloudCmd {
    /// Amazon Web Services, through a runner.
    #[command(subcommand)]
    Aws(AwsCmd),
}

/// `tether cloud aws`.
#[derive(Subcommand, Debug)]
pub enum AwsCmd {
    /// AWS STS.
    #[command(subcommand)]
    Sts(StsCmd),
    /// Amazon S3.
    #[command(subcommand)]
    S3(S3Cmd),
    /// Amazon EC2.
    #[command(subcommand)]
    Ec2(Ec2Cmd),
}

/// `tether cloud aws sts`.
#[derive(Subcommand, Debug)]
pub enum StsCmd {
    /// The identity the runner acts as (GetCallerIdentity).
    Whoami(#[command(flatten)] Common),
}

/// `tether cloud aws s3`.
#[derive(Subcommand, Debug)]
pub enum S3Cmd {
    /// List buckets.
    Ls(#[command(flatten)] Common),
}

/// `tether cloud aws ec2`.
#[derive(Subcommand, Debug)]
pub enum Ec2Cmd {
    /// Describe VPCs.
    DescribeVpcs {
        #[command(flatten)]
        common: Common,
        /// Only these VPC ids (repeatable).
        #[arg(long = "vpc-id")]
        vpc_ids: Vec<String>,
    },
    /// Create a VPC.
    CreateVpc {
        #[command(flatten)]
        common: Common,
        /// IPv4 CIDR block, e.g. 10.0.0.0/16.
        #[arg(long)]
        cidr: String,
        /// KEY=VALUE tag (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
    },
}

/// What every AWS command takes.
#[derive(Args, Debug)]
pub struct Common {
    /// The runner that runs the operation.
    #[arg(long)]
    runner: String,
    #[command(flatten)]
    auth: AuthArgs,
    /// Deadline in seconds.
    #[arg(long)]
    timeout: Option<u32>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// How the runner gets AWS credentials.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum AuthMode {
    /// The runner's own environment (SDK default chain); no credential leaves this machine.
    #[default]
    Runner,
    /// Keys from this machine (environment, or --aws-credentials-file), used once.
    Inline,
    /// The runner assumes --role-arn with --external-id, using its own identity.
    AssumeRole,
}

/// Auth-mode flags.
#[derive(Args, Debug)]
pub struct AuthArgs {
    /// Auth mode.
    #[arg(long, value_enum, default_value_t = AuthMode::Runner)]
    auth: AuthMode,
    /// AWS region (default: the runner's).
    #[arg(long)]
    region: Option<String>,
    /// Role to assume (assume-role).
    #[arg(long)]
    role_arn: Option<String>,
    /// External id the role's trust policy requires (assume-role).
    #[arg(long)]
    external_id: Option<String>,
    /// Session name (assume-role).
    #[arg(long)]
    session_name: Option<String>,
    /// Inline keys as JSON from this file (mode 0600) or `-` for standard input; else the
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN variables.
    #[arg(long, value_name = "PATH|-")]
    aws_credentials_file: Option<PathBuf>,
}

/// Inline keys as read from a file or standard input (`aws configure export-credentials`
/// field names are accepted too).
#[derive(Deserialize)]
struct KeyFile {
    #[serde(alias = "AccessKeyId")]
    access_key_id: String,
    #[serde(alias = "SecretAccessKey")]
    secret_access_key: SecretString,
    #[serde(default, alias = "SessionToken")]
    session_token: Option<SecretString>,
}

impl AuthArgs {
    /// The `auth` object of the operation request.
    fn to_json(&self) -> Result<Value> {
        let region = self.region.clone().unwrap_or_default();
        match self.auth {
            AuthMode::Runner => {
                self.refuse_unused(false)?;
                Ok(json!({"mode": "runner", "region": region}))
            }
            AuthMode::AssumeRole => {
                self.refuse_unused(true)?;
                let Some(role_arn) = &self.role_arn else {
                    bail!("--auth assume-role needs --role-arn");
                };
                Ok(json!({"mode": "cross_account_trust", "region": region,
                    "role_arn": role_arn,
                    "external_id": self.external_id.clone().unwrap_or_default(),
                    "session_name": self.session_name.clone().unwrap_or_default()}))
            }
            AuthMode::Inline => {
                if self.role_arn.is_some() || self.external_id.is_some() {
                    bail!("--role-arn and --external-id go with --auth assume-role");
                }
                let keys = self.inline_keys()?;
                let token = keys
                    .session_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned())
                    .unwrap_or_default();
                Ok(json!({"mode": "inline", "region": region,
                    "access_key_id": keys.access_key_id,
                    "secret_access_key": keys.secret_access_key.expose_secret(),
                    "session_token": token}))
            }
        }
    }

    fn refuse_unused(&self, assume: bool) -> Result<()> {
        if self.aws_credentials_file.is_some() {
            bail!("--aws-credentials-file goes with --auth inline");
        }
        if !assume && (self.role_arn.is_some() || self.external_id.is_some()) {
            bail!("--role-arn and --external-id go with --auth assume-role");
        }
        Ok(())
    }

    fn inline_keys(&self) -> Result<KeyFile> {
        let text = match self.aws_credentials_file.as_deref() {
            Some(p) if p.as_os_str() == "-" => {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading AWS credentials from standard input")?;
                s
            }
            Some(path) => read_private(path)?,
            None => return keys_from_env(),
        };
        serde_json::from_str(&text).map_err(|_| {
            anyhow::anyhow!(
                "the AWS credentials must be JSON with access_key_id and secret_access_key"
            )
        })
    }
}

fn keys_from_env() -> Result<KeyFile> {
    let (Ok(id), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) else {
        bail!(
            "--auth inline needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --aws-credentials-file"
        );
    };
    Ok(KeyFile {
        access_key_id: id,
        secret_access_key: SecretString::from(secret),
        session_token: std::env::var("AWS_SESSION_TOKEN")
            .ok()
            .map(SecretString::from),
    })
}

/// Reads a secret file, refusing one that others can read.
fn read_private(path: &std::path::Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "{} is readable by other users: chmod 600 it first",
            path.display()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

const IDENTITY_COLUMNS: &[(&str, &str)] = &[
    ("ACCOUNT", "/account"),
    ("ARN", "/arn"),
    ("USER ID", "/user_id"),
];
const BUCKET_COLUMNS: &[(&str, &str)] = &[("NAME", "/name"), ("CREATED", "/created_at")];
const VPC_COLUMNS: &[(&str, &str)] = &[
    ("VPC ID", "/vpc_id"),
    ("CIDR", "/cidr_block"),
    ("STATE", "/state"),
    ("DEFAULT", "/is_default"),
    ("NAME", "/tags/Name"),
];

/// Runs a `tether cloud` command.
pub async fn cloud(client: &mut Client, org: &str, cmd: CloudCmd) -> Result<()> {
    let CloudCmd::Aws(cmd) = cmd;
    let (common, op, pointer, columns) = match cmd {
        AwsCmd::Sts(StsCmd::Whoami(c)) => (
            c,
            json!({"type": "aws.sts.get_caller_identity"}),
            "/caller_identity",
            IDENTITY_COLUMNS,
        ),
        AwsCmd::S3(S3Cmd::Ls(c)) => (
            c,
            json!({"type": "aws.s3.list_buckets"}),
            "/buckets",
            BUCKET_COLUMNS,
        ),
        AwsCmd::Ec2(Ec2Cmd::DescribeVpcs { common, vpc_ids }) => (
            common,
            json!({"type": "aws.ec2.describe_vpcs", "vpc_ids": vpc_ids}),
            "/vpcs",
            VPC_COLUMNS,
        ),
        AwsCmd::Ec2(Ec2Cmd::CreateVpc { common, cidr, tags }) => (
            common,
            json!({"type": "aws.ec2.create_vpc", "cidr_block": cidr, "tags": parse_tags(&tags)?}),
            "/created_vpc",
            VPC_COLUMNS,
        ),
    };
    let mut operation = op;
    if let Some(obj) = operation.as_object_mut() {
        obj.insert("auth".into(), common.auth.to_json()?);
    }
    let body = json!({"operation": operation, "timeout_secs": common.timeout});
    let path = format!(
        "/v1/orgs/{}/runners/{}/operations",
        enc(org),
        enc(&common.runner)
    );
    let res = client.call(Method::POST, &path, Some(&body)).await?;
    let shown = jp(&res, &format!("/output{pointer}"));
    print(shown, common.output, columns)
}

fn parse_tags(tags: &[String]) -> Result<BTreeMap<String, String>> {
    tags.iter()
        .map(|t| match t.split_once('=') {
            Some((k, v)) => Ok((k.to_owned(), v.to_owned())),
            None => bail!("--tag takes KEY=VALUE, got '{t}'"),
        })
        .collect()
}
