//! The credentials document (brief §10) and where it is loaded from.
//!
//! ```json
//! {"type": "tether_runner", "org": "acme", "runner": "prod-1", "runner_id": "res_…",
//!  "api_key": "…", "api_endpoint": "https://tether.example.com",
//!  "tunnel_endpoint": "https://tether.example.com:8443", "ca_certificate": "-----BEGIN…",
//!  "runner_certificate": "-----BEGIN…", "runner_private_key": "-----BEGIN…"}
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};
use url::Url;
use zeroize::Zeroizing;

use crate::error::RunnerError;

/// The `type` of a runner credentials document.
pub const CREDENTIALS_TYPE: &str = "tether_runner";

/// Largest credentials document accepted.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Secret text: wiped on drop, no `Debug`, no `Clone`, no `Display`.
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    /// The secret, for the one place that must send or use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| SecretText(Zeroizing::new(s)))
    }
}

#[derive(Deserialize)]
struct Document {
    #[serde(rename = "type")]
    kind: String,
    org: String,
    runner: String,
    runner_id: String,
    api_key: SecretText,
    api_endpoint: String,
    tunnel_endpoint: String,
    ca_certificate: String,
    runner_certificate: String,
    runner_private_key: SecretText,
}

/// Host and port of the tunnel endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelEndpoint {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl TunnelEndpoint {
    /// Whether the host is a loopback name or address (never proxied).
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }
    /// `host:port`, with brackets around IPv6.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `localhost`, `*.localhost`, 127.0.0.0/8 and ::1.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let lower = host.to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// A validated credentials document.
pub struct Credentials {
    /// Org name.
    pub org: String,
    /// Runner name.
    pub runner: String,
    /// Runner id (also in the certificate's SPIFFE id).
    pub runner_id: String,
    /// Org id, read from the certificate's SPIFFE id.
    pub org_id: String,
    /// Base URL of the REST API.
    pub api_endpoint: Url,
    /// Where to dial the tunnel.
    pub tunnel_endpoint: TunnelEndpoint,
    /// Tether's CA, PEM: the only root the runner trusts for the tunnel.
    pub ca_certificate: String,
    /// The runner certificate, PEM.
    pub runner_certificate: String,
    /// End of the runner certificate's validity, Unix seconds.
    pub certificate_not_after: i64,
    /// Serial of the runner certificate, hex.
    pub certificate_serial: String,
    api_key: SecretText,
    runner_private_key: SecretText,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("org", &self.org)
            .field("runner", &self.runner)
            .field("runner_id", &self.runner_id)
            .field("org_id", &self.org_id)
            .field("api_endpoint", &self.api_endpoint.as_str())
            .field("tunnel_endpoint", &self.tunnel_endpoint)
            .field("certificate_serial", &self.certificate_serial)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Parses and validates a credentials document. Never panics, whatever the input.
    pub fn parse(text: &str) -> Result<Self, RunnerError> {
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(cred_err("the document is too large"));
        }
        let doc: Document = serde_json::from_str(text).map_err(|e| json_error(&e))?;
        if doc.kind != CREDENTIALS_TYPE {
            return Err(cred_err("\"type\" must be \"tether_runner\""));
        }
        let identity = tether_pki::parse_runner_certificate_pem(&doc.runner_certificate)
            .map_err(|e| cred_err(&format!("runner_certificate: {e}")))?;
        if identity.runner_id != doc.runner_id {
            return Err(cred_err("runner_id does not match the runner certificate"));
        }
        let expected_cn = format!("org.{}.runner.{}", doc.org, doc.runner);
        if identity.common_name != expected_cn {
            return Err(cred_err(
                "org and runner do not match the runner certificate",
            ));
        }
        // Builds the TLS client once, so every PEM (CA, certificate, key) is checked now.
        tether_pki::runner_client_config(
            &doc.ca_certificate,
            &doc.runner_certificate,
            doc.runner_private_key.expose(),
        )
        .map_err(|e| cred_err(&format!("certificates or key: {e}")))?;
        if doc.api_key.expose().trim().is_empty() {
            return Err(cred_err("api_key is empty"));
        }
        Ok(Self {
            api_endpoint: parse_api_endpoint(&doc.api_endpoint)?,
            tunnel_endpoint: parse_tunnel_endpoint(&doc.tunnel_endpoint)?,
            org: doc.org,
            runner: doc.runner,
            runner_id: doc.runner_id,
            org_id: identity.org_id,
            ca_certificate: doc.ca_certificate,
            runner_certificate: doc.runner_certificate,
            certificate_not_after: identity.not_after_unix,
            certificate_serial: identity.serial.to_hex(),
            api_key: doc.api_key,
            runner_private_key: doc.runner_private_key,
        })
    }

    /// The API key, for the `Authorization` header of `whoami`.
    pub fn api_key(&self) -> &SecretText {
        &self.api_key
    }

    /// The runner's private key, PEM, for the TLS client.
    pub fn private_key(&self) -> &SecretText {
        &self.runner_private_key
    }

    /// The TLS 1.3 client configuration of the tunnel.
    pub fn tls_config(&self) -> Result<rustls::ClientConfig, RunnerError> {
        tether_pki::runner_client_config(
            &self.ca_certificate,
            &self.runner_certificate,
            self.runner_private_key.expose(),
        )
        .map_err(|e| cred_err(&e.to_string()))
    }
}

/// A JSON error without the offending value (which may be a secret).
fn json_error(e: &serde_json::Error) -> RunnerError {
    let text = e.to_string();
    let detail = if text.starts_with("missing field") {
        text.split(" at line")
            .next()
            .unwrap_or("missing field")
            .to_owned()
    } else {
        format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        )
    };
    cred_err(&format!("not a credentials document: {detail}"))
}

fn cred_err(msg: &str) -> RunnerError {
    RunnerError::Credentials(msg.to_owned())
}

fn parse_api_endpoint(text: &str) -> Result<Url, RunnerError> {
    let url = Url::parse(text).map_err(|_| cred_err("api_endpoint is not a URL"))?;
    let host = url
        .host_str()
        .ok_or_else(|| cred_err("api_endpoint has no host"))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback_host(host) => Ok(url),
        _ => Err(cred_err(
            "api_endpoint must be https (http only on loopback)",
        )),
    }
}

/// `https://host:port` (port defaults to 443) or `host:port`.
fn parse_tunnel_endpoint(text: &str) -> Result<TunnelEndpoint, RunnerError> {
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("https://{text}")
    };
    let url = Url::parse(&with_scheme).map_err(|_| cred_err("tunnel_endpoint is not a URL"))?;
    if url.scheme() != "https" || url.path().len() > 1 || url.query().is_some() {
        return Err(cred_err("tunnel_endpoint must be https://host:port"));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(cred_err("tunnel_endpoint has no host")),
    };
    Ok(TunnelEndpoint {
        host,
        port: url.port().unwrap_or(443),
    })
}

/// Where the credentials came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsSource {
    /// `--credentials-file` or `TETHER_RUNNER_CREDENTIALS_FILE`.
    File(PathBuf),
    /// `TETHER_RUNNER_CREDENTIALS` (inline JSON).
    Env,
    /// `$XDG_CONFIG_HOME/tether/runner-credentials.json`.
    ConfigDir(PathBuf),
}

/// Loads the credentials, in order: `cli_file` or `TETHER_RUNNER_CREDENTIALS_FILE`, then
/// `TETHER_RUNNER_CREDENTIALS`, then `$XDG_CONFIG_HOME/tether/runner-credentials.json`
/// (`~/.config/...` when `XDG_CONFIG_HOME` is unset). `env` reads the environment.
pub fn load(
    cli_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Credentials, CredentialsSource), RunnerError> {
    let file = cli_file
        .map(Path::to_path_buf)
        .or_else(|| env("TETHER_RUNNER_CREDENTIALS_FILE").map(PathBuf::from));
    if let Some(path) = file {
        let text = read_secret_file(&path)?;
        return Ok((Credentials::parse(&text)?, CredentialsSource::File(path)));
    }
    if let Some(inline) = env("TETHER_RUNNER_CREDENTIALS") {
        let text = Zeroizing::new(inline);
        return Ok((Credentials::parse(&text)?, CredentialsSource::Env));
    }
    let path = config_dir(env)
        .map(|d| d.join("tether").join("runner-credentials.json"))
        .ok_or_else(|| cred_err("none found: set --credentials-file, TETHER_RUNNER_CREDENTIALS_FILE or TETHER_RUNNER_CREDENTIALS"))?;
    if !path.exists() {
        return Err(cred_err(&format!(
            "none found: set --credentials-file, TETHER_RUNNER_CREDENTIALS_FILE or TETHER_RUNNER_CREDENTIALS, or write {}",
            path.display()
        )));
    }
    let text = read_secret_file(&path)?;
    Ok((
        Credentials::parse(&text)?,
        CredentialsSource::ConfigDir(path),
    ))
}

/// `$XDG_CONFIG_HOME`, else `$HOME/.config`.
pub fn config_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("XDG_CONFIG_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".config")))
}

/// Reads a secret file, refusing one that others can read (style: secret files are 0600).
fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, RunnerError> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| cred_err(&format!("{shown}: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(cred_err(&format!(
                "{shown} is readable by other users; run chmod 600 on it"
            )));
        }
    }
    if meta.len() > MAX_DOCUMENT_BYTES as u64 {
        return Err(cred_err(&format!("{shown} is too large")));
    }
    let bytes =
        Zeroizing::new(std::fs::read(path).map_err(|e| cred_err(&format!("{shown}: {e}")))?);
    let text =
        std::str::from_utf8(&bytes).map_err(|_| cred_err(&format!("{shown} is not UTF-8")))?;
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn endpoints_are_checked() {
        assert!(parse_api_endpoint("https://tether.example.com").is_ok());
        assert!(parse_api_endpoint("http://127.0.0.1:8420").is_ok());
        assert!(parse_api_endpoint("http://tether.example.com").is_err());
        let t = parse_tunnel_endpoint("https://t.example.com:8443").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("t.example.com", 8443));
        let t = parse_tunnel_endpoint("[::1]:9").unwrap();
        assert!(t.is_loopback());
        assert_eq!(t.authority(), "[::1]:9");
        assert!(parse_tunnel_endpoint("http://t.example.com:1").is_err());
        assert!(parse_tunnel_endpoint("https://t.example.com/x").is_err());
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in [
            "localhost",
            "LOCALHOST",
            "a.localhost",
            "127.0.0.1",
            "127.8.0.1",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["example.com", "10.0.0.1", "localhost.example.com"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn wrong_type_and_garbage_are_refused() {
        assert!(Credentials::parse("{}").is_err());
        assert!(Credentials::parse("not json").is_err());
        let doc = r#"{"type":"other","org":"a","runner":"b","runner_id":"c","api_key":"k",
            "api_endpoint":"https://x","tunnel_endpoint":"https://x","ca_certificate":"",
            "runner_certificate":"","runner_private_key":""}"#;
        let err = Credentials::parse(doc).unwrap_err().to_string();
        assert!(err.contains("tether_runner"), "{err}");
    }

    #[test]
    fn source_order_is_file_then_env_then_config_dir() {
        let env = |k: &str| match k {
            "TETHER_RUNNER_CREDENTIALS" => Some("{}".to_owned()),
            "XDG_CONFIG_HOME" => Some("/nonexistent-dir".to_owned()),
            _ => None,
        };
        // Inline JSON is used (and refused as invalid), not the config dir.
        assert!(
            load(None, &env)
                .unwrap_err()
                .to_string()
                .contains("not a credentials document")
        );
        // A file given on the command line wins over the inline JSON.
        let err = load(Some(Path::new("/nonexistent/creds.json")), &env).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/creds.json"));
        let none = |k: &str| (k == "XDG_CONFIG_HOME").then(|| "/nonexistent-dir".to_owned());
        assert!(
            load(None, &none)
                .unwrap_err()
                .to_string()
                .contains("runner-credentials.json")
        );
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, "{}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            load(Some(&path), &|_| None)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in ".{0,400}") {
            let _ = Credentials::parse(&text);
        }

        #[test]
        fn parser_never_panics_on_near_documents(
            kind in "tether_runner|x", ep in ".{0,30}", pem in ".{0,60}"
        ) {
            let doc = serde_json::json!({
                "type": kind, "org": "a", "runner": "b", "runner_id": "c", "api_key": "k",
                "api_endpoint": ep, "tunnel_endpoint": ep, "ca_certificate": pem,
                "runner_certificate": pem, "runner_private_key": pem,
            });
            let _ = Credentials::parse(&doc.to_string());
        }
    }
}
