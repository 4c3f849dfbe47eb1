//! The runner's local configuration (TOML): the `job.run` allowlist, capabilities, tunnel timing.
//!
//! ```toml
//! # Advertise only these operations (default: everything this build supports and is configured;
//! # `runner.ping` is always offered).
//! capabilities = ["job.run"]
//!
//! [job]
//! allowed_commands = ["tofu", "/usr/local/bin/pulumi"]
//! work_dir = "/var/lib/tether-runner/jobs"
//! default_timeout_secs = 3600
//! max_timeout_secs = 21600
//! inherit_env = ["PATH", "HOME", "LANG", "TMPDIR"]
//!
//! [k8s]
//! kubeconfig = "/etc/tether-runner/kubeconfig"
//!
//! [tunnel]
//! startup_timeout_secs = 60
//! healthy_after_secs = 60
//! backoff_initial_ms = 500
//! backoff_max_ms = 30000
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tether_proto::ops::OperationKind;

use crate::error::RunnerError;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// If set, the runner advertises (and accepts) only these operations.
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// `job.run` settings.
    #[serde(default)]
    pub job: JobConfig,
    /// Tunnel timing.
    #[serde(default)]
    pub tunnel: TunnelConfig,
    /// Kubernetes (`k8s.list_pods`).
    #[serde(default)]
    pub k8s: K8sConfig,
}

/// `job.run` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobConfig {
    /// Commands the control plane may run, matched exactly against `JobRun.command`.
    pub allowed_commands: Vec<String>,
    /// Directory jobs run in (and below). Defaults to the system temp directory.
    pub work_dir: Option<PathBuf>,
    /// Timeout when the request gives none.
    pub default_timeout_secs: u64,
    /// Upper bound on any requested timeout.
    pub max_timeout_secs: u64,
    /// Variables of the runner's own environment passed to jobs (nothing else is inherited).
    pub inherit_env: Vec<String>,
}

impl Default for JobConfig {
    fn default() -> Self {
        Self {
            allowed_commands: Vec::new(),
            work_dir: None,
            default_timeout_secs: 3600,
            max_timeout_secs: 6 * 3600,
            inherit_env: ["PATH", "HOME", "LANG", "TMPDIR"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// Tunnel timing.
/// Kubernetes: `k8s.list_pods` is offered only when a kubeconfig is configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K8sConfig {
    /// The kubeconfig (server URL + bearer token per context), read for each request.
    pub kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelConfig {
    /// Before the first Ack, give up (exit non-zero) after this long.
    pub startup_timeout_secs: u64,
    /// A session that lasted this long resets the reconnect backoff.
    pub healthy_after_secs: u64,
    /// First reconnect delay.
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay.
    pub backoff_max_ms: u64,
    /// How long to wait for the server's Ack.
    pub ack_timeout_secs: u64,
    /// TCP and proxy connect timeout.
    pub connect_timeout_secs: u64,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            startup_timeout_secs: 60,
            healthy_after_secs: 60,
            backoff_initial_ms: 500,
            backoff_max_ms: 30_000,
            ack_timeout_secs: 15,
            connect_timeout_secs: 10,
        }
    }
}

impl TunnelConfig {
    /// `startup_timeout_secs` as a duration.
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_secs(self.startup_timeout_secs)
    }
}

impl RunnerConfig {
    /// Parses and checks a TOML document.
    pub fn parse(text: &str) -> Result<Self, RunnerError> {
        let cfg: Self =
            toml::from_str(text).map_err(|e| RunnerError::Config(e.message().to_owned()))?;
        if let Some(caps) = &cfg.capabilities
            && let Some(bad) = caps.iter().find(|c| OperationKind::from_name(c).is_none())
        {
            return Err(RunnerError::Config(format!("unknown capability '{bad}'")));
        }
        if cfg.job.allowed_commands.iter().any(|c| c.trim().is_empty()) {
            return Err(RunnerError::Config(
                "job.allowed_commands has an empty entry".into(),
            ));
        }
        Ok(cfg)
    }

    /// Loads `path`, or `$XDG_CONFIG_HOME/tether/runner.toml` if it exists, else the defaults.
    pub fn load(
        path: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, RunnerError> {
        let default_path =
            crate::credentials::config_dir(env).map(|d| d.join("tether/runner.toml"));
        let path = match (path, default_path) {
            (Some(p), _) => p.to_path_buf(),
            (None, Some(p)) if p.exists() => p,
            _ => return Ok(Self::default()),
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| RunnerError::Config(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| RunnerError::Config(format!("{}: {e}", path.display())))
    }

    /// The operations this runner advertises in Hello and accepts. `runner.ping` runs nothing
    /// and is always offered, whatever `capabilities` says.
    pub fn capabilities(&self) -> Vec<OperationKind> {
        OperationKind::ALL
            .into_iter()
            .filter(|k| crate::exec::supported(*k, self))
            .filter(|k| {
                *k == OperationKind::Ping
                    || self
                        .capabilities
                        .as_ref()
                        .is_none_or(|c| c.iter().any(|n| n == k.name()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let cfg = RunnerConfig::parse(
            r#"
            capabilities = ["job.run"]
            [job]
            allowed_commands = ["tofu"]
            default_timeout_secs = 10
            [tunnel]
            startup_timeout_secs = 5
            "#,
        )
        .unwrap();
        assert_eq!(cfg.job.allowed_commands, ["tofu"]);
        assert_eq!(cfg.job.max_timeout_secs, 6 * 3600);
        assert_eq!(
            cfg.capabilities(),
            [OperationKind::JobRun, OperationKind::Ping]
        );
    }

    #[test]
    fn refuses_unknown_keys_and_capabilities() {
        assert!(RunnerConfig::parse("[job]\nallowed = []").is_err());
        assert!(RunnerConfig::parse("capabilities = [\"shell.exec\"]").is_err());
    }

    #[test]
    fn job_run_is_advertised_only_with_an_allowlist() {
        assert!(
            !RunnerConfig::default()
                .capabilities()
                .contains(&OperationKind::JobRun)
        );
    }
}
