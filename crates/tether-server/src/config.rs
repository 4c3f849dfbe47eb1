//! Server configuration: a TOML file plus `TETHER_*` environment variables. Secret settings may
//! also come from a `*_FILE`, which must be mode 0600. Without `--dev` the server fails closed: it
//! refuses to start unless TLS, a root key and a database URL are all configured.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8420";

/// TLS certificate and key files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key (must be 0600).
    pub key_file: PathBuf,
}

/// Request-log settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestLogConfig {
    /// Records older than this many days are pruned. Default: 730 (2 years).
    pub retention_days: u32,
    /// Also stream each record as a JSON line to `stdout` or to a file path.
    pub stream: Option<String>,
    /// Capacity of the bounded queue between requests and the writer.
    pub queue_capacity: usize,
}

impl Default for RequestLogConfig {
    fn default() -> Self {
        Self {
            retention_days: 730,
            stream: None,
            queue_capacity: 10_000,
        }
    }
}

/// The file form of the configuration. Secrets are not accepted inline in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Listen address.
    pub listen: Option<SocketAddr>,
    /// Database URL (`sqlite://...` or `postgres://...`). May contain a password: prefer
    /// `TETHER_DATABASE_URL_FILE`.
    pub database_url_file: Option<PathBuf>,
    /// Root key file (0600).
    pub root_key_file: Option<PathBuf>,
    /// TLS.
    pub tls: Option<TlsConfig>,
    /// Request log.
    pub request_log: Option<RequestLogConfig>,
    /// Maximum request body in bytes.
    pub max_body_bytes: Option<usize>,
    /// Public URL of this server, as clients reach it.
    pub public_url: Option<String>,
    /// `true`: SQLite fsyncs every commit (`synchronous=FULL`), surviving power loss. The
    /// default (`NORMAL`, WAL) already loses nothing when the process is killed.
    pub sqlite_fsync_every_commit: Option<bool>,
}

/// Where the root key comes from.
pub enum RootKeySource {
    /// A file, mode 0600.
    File(PathBuf),
    /// The value of `TETHER_ROOT_KEY`.
    Env(SecretString),
    /// Generated and kept in the dev data directory.
    DevFile(PathBuf),
}

/// The resolved configuration.
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Database URL.
    pub database_url: SecretString,
    /// Create the SQLite file if missing (dev mode).
    pub create_sqlite: bool,
    /// TLS, or None for plain HTTP on loopback (dev mode only).
    pub tls: Option<TlsConfig>,
    /// Root key source.
    pub root_key: RootKeySource,
    /// Request log.
    pub request_log: RequestLogConfig,
    /// Maximum request body size.
    pub max_body_bytes: usize,
    /// Dev mode.
    pub dev: bool,
    /// Data directory (dev mode).
    pub data_dir: Option<PathBuf>,
    /// Public URL.
    pub public_url: String,
    /// SQLite fsync on every commit.
    pub sqlite_fsync_every_commit: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &"[REDACTED]")
            .field("tls", &self.tls)
            .field("dev", &self.dev)
            .finish_non_exhaustive()
    }
}

/// Options from the command line.
#[derive(Debug, Clone, Default)]
pub struct CliOptions {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--dev`.
    pub dev: bool,
    /// `--listen ADDR`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--database-url URL`.
    pub database_url: Option<String>,
}

/// A configuration problem. Every missing setting is named.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Required settings are missing (fail closed).
    #[error("refusing to start without {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    /// A setting is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// Reads an environment variable or its `_FILE` twin (0600). Both set is an error.
fn env_secret(name: &str) -> Result<Option<SecretString>, ConfigError> {
    let direct = std::env::var(name).ok().filter(|v| !v.is_empty());
    let file_var = format!("{name}_FILE");
    let file = std::env::var(&file_var).ok().filter(|v| !v.is_empty());
    match (direct, file) {
        (Some(_), Some(_)) => Err(ConfigError::Invalid(format!(
            "set only one of {name} and {file_var}"
        ))),
        (Some(v), None) => Ok(Some(SecretString::from(v))),
        (None, Some(path)) => read_file_secret(Path::new(&path)).map(Some),
        (None, None) => Ok(None),
    }
}

fn read_file_secret(path: &Path) -> Result<SecretString, ConfigError> {
    let text = tether_crypto::read_secret_file(path)
        .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(SecretString::from(text.trim_end().to_owned()))
}

fn env_listen() -> Result<Option<SocketAddr>, ConfigError> {
    match std::env::var("TETHER_LISTEN") {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::Invalid(format!("TETHER_LISTEN: '{v}' is not an address"))),
        _ => Ok(None),
    }
}

fn load_file(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))
}

impl Config {
    /// Resolves the configuration from the CLI, the file and the environment.
    pub fn resolve(cli: &CliOptions) -> Result<Config, ConfigError> {
        let env_file = std::env::var("TETHER_CONFIG").ok().map(PathBuf::from);
        let file = load_file(cli.config_file.as_deref().or(env_file.as_deref()))?;
        let listen = match cli.listen.or(env_listen()?).or(file.listen) {
            Some(a) => a,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|_| ConfigError::Invalid("listen".into()))?,
        };
        if cli.dev {
            return Self::dev(cli, file, listen);
        }
        Self::production(cli, file, listen)
    }

    fn dev(cli: &CliOptions, file: FileConfig, listen: SocketAddr) -> Result<Config, ConfigError> {
        if !listen.ip().is_loopback() && file.tls.is_none() {
            return Err(ConfigError::Invalid(
                "--dev serves plain HTTP only on a loopback address; configure TLS to listen on \
                 another address"
                    .into(),
            ));
        }
        let data_dir = cli.data_dir.clone().unwrap_or_else(|| PathBuf::from("."));
        let db = match cli.database_url.clone() {
            Some(u) => u,
            None => format!("sqlite://{}", data_dir.join("tether.db").display()),
        };
        Ok(Config {
            listen,
            database_url: SecretString::from(db),
            create_sqlite: true,
            tls: file.tls,
            root_key: RootKeySource::DevFile(data_dir.join("root.key")),
            request_log: file.request_log.unwrap_or_default(),
            max_body_bytes: file.max_body_bytes.unwrap_or(1 << 20),
            dev: true,
            sqlite_fsync_every_commit: file.sqlite_fsync_every_commit.unwrap_or(false),
            public_url: file
                .public_url
                .unwrap_or_else(|| format!("http://{listen}")),
            data_dir: Some(data_dir),
        })
    }

    fn production(
        cli: &CliOptions,
        file: FileConfig,
        listen: SocketAddr,
    ) -> Result<Config, ConfigError> {
        let mut missing = Vec::new();
        let db = match (
            &cli.database_url,
            env_secret("TETHER_DATABASE_URL")?,
            &file.database_url_file,
        ) {
            (Some(u), _, _) => Some(SecretString::from(u.clone())),
            (None, Some(s), _) => Some(s),
            (None, None, Some(p)) => Some(read_file_secret(p)?),
            _ => None,
        };
        if db.is_none() {
            missing.push("a database URL (--database-url or TETHER_DATABASE_URL[_FILE])");
        }
        let tls = file.tls.clone().or_else(env_tls);
        if tls.is_none() {
            missing.push(
                "TLS (TETHER_TLS_CERT_FILE and TETHER_TLS_KEY_FILE, or [tls] in the config file)",
            );
        }
        let root = match (env_secret("TETHER_ROOT_KEY")?, &file.root_key_file) {
            (Some(s), _) => Some(RootKeySource::Env(s)),
            (None, Some(p)) => Some(RootKeySource::File(p.clone())),
            _ => None,
        };
        if root.is_none() {
            missing.push("a root key (TETHER_ROOT_KEY[_FILE] or root_key_file)");
        }
        let (Some(db), Some(tls), Some(root)) = (db, tls, root) else {
            return Err(ConfigError::Missing(missing));
        };
        Ok(Config {
            listen,
            database_url: db,
            create_sqlite: true,
            tls: Some(tls),
            root_key: root,
            request_log: file.request_log.unwrap_or_default(),
            max_body_bytes: file.max_body_bytes.unwrap_or(1 << 20),
            dev: false,
            sqlite_fsync_every_commit: file.sqlite_fsync_every_commit.unwrap_or(false),
            public_url: file
                .public_url
                .unwrap_or_else(|| format!("https://{listen}")),
            data_dir: None,
        })
    }

    /// The database URL (for opening the store only).
    pub fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }
}

fn env_tls() -> Option<TlsConfig> {
    let cert = std::env::var("TETHER_TLS_CERT_FILE")
        .ok()
        .filter(|v| !v.is_empty())?;
    let key = std::env::var("TETHER_TLS_KEY_FILE")
        .ok()
        .filter(|v| !v.is_empty())?;
    Some(TlsConfig {
        cert_file: cert.into(),
        key_file: key.into(),
    })
}
