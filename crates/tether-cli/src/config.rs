//! The CLI's own configuration: `$XDG_CONFIG_HOME/tether/config.toml` (mode 0600), holding the
//! server address, the default organization and the session tokens from `tether auth login`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Stored CLI settings.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CliConfig {
    /// Server address.
    pub addr: Option<String>,
    /// Default organization.
    pub org: Option<String>,
    /// Session access token.
    pub access_token: Option<String>,
    /// Session refresh token.
    pub refresh_token: Option<String>,
}

/// The config directory: `$XDG_CONFIG_HOME/tether` or `~/.config/tether`.
pub fn config_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("tether"))
}

fn config_path() -> Option<PathBuf> {
    config_dir().map(|d| d.join("config.toml"))
}

impl CliConfig {
    /// Loads the config, or defaults when there is none.
    pub fn load() -> Result<CliConfig> {
        let Some(path) = config_path() else {
            return Ok(CliConfig::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CliConfig::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Saves the config with mode 0600 (it may hold tokens).
    pub fn save(&self) -> Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = config_path().context("no home directory for the config file")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let text = toml::to_string(self)?;
        let tmp = path.with_extension("toml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }
}
