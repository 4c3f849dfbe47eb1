//! OpenBao / Vault Transit as a KEK provider, over the Vault HTTP API (`X-Vault-Token`).
//!
//! The key id is `MOUNT/KEY` (e.g. `transit/acme`). A DEK is wrapped with
//! `POST /v1/MOUNT/encrypt/KEY` and unwrapped with `POST /v1/MOUNT/decrypt/KEY`, both with
//! `associated_data` naming the organization, so the key must be an AEAD type
//! (`aes256-gcm96`, the default). The stored wrapped DEK is the `vault:vN:...` ciphertext.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tether_crypto::{DataKey, KekError, KekRef, WrappedDek};
use zeroize::Zeroizing;

use super::{AsyncKek, KekFuture, ORG_CONTEXT_KEY, count_call, provider, with_timeout};

/// Where OpenBao is and the token Tether uses there.
#[derive(Clone)]
pub struct BaoConfig {
    /// Base address, e.g. `http://127.0.0.1:8200`.
    pub addr: String,
    /// The token (never logged).
    pub token: Arc<SecretString>,
}

impl BaoConfig {
    /// `TETHER_OPENBAO_ADDR` and `TETHER_OPENBAO_TOKEN` (or `TETHER_OPENBAO_TOKEN_FILE`, 0600).
    ///
    /// # Errors
    ///
    /// A message if the address is set without a token, or the token file is unusable.
    pub fn from_env() -> Result<Option<Self>, String> {
        let Some(addr) = std::env::var("TETHER_OPENBAO_ADDR")
            .ok()
            .filter(|v| !v.is_empty())
        else {
            return Ok(None);
        };
        let token = match (
            std::env::var("TETHER_OPENBAO_TOKEN")
                .ok()
                .filter(|v| !v.is_empty()),
            std::env::var("TETHER_OPENBAO_TOKEN_FILE")
                .ok()
                .filter(|v| !v.is_empty()),
        ) {
            (Some(t), None) => SecretString::from(t),
            (None, Some(path)) => {
                let text = tether_crypto::read_secret_file(std::path::Path::new(&path))
                    .map_err(|e| e.to_string())?;
                SecretString::from(text.trim().to_owned())
            }
            _ => {
                return Err(
                    "TETHER_OPENBAO_ADDR needs exactly one of TETHER_OPENBAO_TOKEN and \
                     TETHER_OPENBAO_TOKEN_FILE"
                        .into(),
                );
            }
        };
        Ok(Some(Self {
            addr: addr.trim_end_matches('/').to_owned(),
            token: Arc::new(token),
        }))
    }

    /// Sends a Vault API request; returns the JSON body of a 2xx answer, or a message that
    /// names the status and OpenBao's errors (which never contain request data).
    pub async fn call(
        &self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<Value, String> {
        let mut req = http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", self.token.expose_secret());
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_owned());
        }
        let res = req.send().await.map_err(|e| {
            if e.is_timeout() {
                format!("OpenBao at {} timed out", self.addr)
            } else {
                format!(
                    "OpenBao at {} is unreachable: {}",
                    self.addr,
                    e.without_url()
                )
            }
        })?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(json);
        }
        let errors = json
            .get("errors")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        Err(format!(
            "OpenBao answered HTTP {}: {errors}",
            status.as_u16()
        ))
    }
}

/// One organization's Transit key.
pub struct TransitKek {
    http: reqwest::Client,
    cfg: BaoConfig,
    kek_ref: KekRef,
    mount: String,
    key: String,
    associated_data: String,
    timeout: Duration,
}

impl TransitKek {
    /// A provider for `kek_ref.key_id()` = `MOUNT/KEY`.
    ///
    /// # Errors
    ///
    /// A message if the key id is not `MOUNT/KEY`.
    pub fn new(
        http: reqwest::Client,
        cfg: BaoConfig,
        kek_ref: KekRef,
        org_id: &str,
        timeout: Duration,
    ) -> Result<Self, String> {
        let (mount, key) = split_key_id(kek_ref.key_id())?;
        Ok(Self {
            http,
            cfg,
            mount,
            key,
            associated_data: STANDARD.encode(format!("{ORG_CONTEXT_KEY}={org_id}")),
            kek_ref,
            timeout,
        })
    }

    fn unavailable(&self, reason: String) -> KekError {
        KekError::Unavailable {
            kek: self.kek_ref.clone(),
            reason,
        }
    }
}

/// Splits `MOUNT/KEY` (the mount may contain `/`).
///
/// # Errors
///
/// A message for anything else.
pub fn split_key_id(key_id: &str) -> Result<(String, String), String> {
    // Every `/`-separated segment is non-empty, not `.` or `..`, and made of safe characters,
    // so the key id cannot steer the request to another API path.
    let ok = |s: &str| {
        s.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
    };
    match key_id.rsplit_once('/') {
        Some((mount, key)) if ok(mount) && ok(key) && !key.contains('/') => {
            Ok((mount.to_owned(), key.to_owned()))
        }
        _ => Err(format!(
            "an OpenBao Transit key id is MOUNT/KEY (e.g. transit/acme), not '{key_id}'"
        )),
    }
}

impl AsyncKek for TransitKek {
    fn kek_ref(&self) -> &KekRef {
        &self.kek_ref
    }

    fn wrap<'a>(&'a self, dek: &'a DataKey) -> KekFuture<'a, WrappedDek> {
        Box::pin(with_timeout(&self.kek_ref, self.timeout, async move {
            count_call(provider::OPENBAO_TRANSIT, "encrypt");
            // Built by hand (both values are base64) so the plaintext copy can be zeroized.
            let b64 = Zeroizing::new(STANDARD.encode(dek.expose_secret()));
            let body = Zeroizing::new(format!(
                r#"{{"plaintext":"{}","associated_data":"{}"}}"#,
                b64.as_str(),
                self.associated_data
            ));
            let out = self
                .cfg
                .call(
                    &self.http,
                    reqwest::Method::POST,
                    &format!("{}/encrypt/{}", self.mount, self.key),
                    Some(body.as_str()),
                )
                .await
                .map_err(|e| self.unavailable(format!("Transit encrypt: {e}")))?;
            let ct = out
                .pointer("/data/ciphertext")
                .and_then(Value::as_str)
                .ok_or(KekError::WrapFailed)?;
            WrappedDek::new(self.kek_ref.clone(), ct.as_bytes().to_vec())
                .map_err(|_| KekError::WrapFailed)
        }))
    }

    fn unwrap<'a>(&'a self, wrapped: &'a WrappedDek) -> KekFuture<'a, DataKey> {
        Box::pin(with_timeout(&self.kek_ref, self.timeout, async move {
            if wrapped.kek_ref().provider() != provider::OPENBAO_TRANSIT
                || wrapped.kek_ref().key_id() != self.kek_ref.key_id()
            {
                return Err(KekError::UnknownKek(wrapped.kek_ref().clone()));
            }
            let ct = std::str::from_utf8(wrapped.ciphertext())
                .map_err(|_| KekError::UnwrapFailed(self.kek_ref.clone()))?;
            count_call(provider::OPENBAO_TRANSIT, "decrypt");
            let out = self
                .cfg
                .call(
                    &self.http,
                    reqwest::Method::POST,
                    &format!("{}/decrypt/{}", self.mount, self.key),
                    Some(
                        &json!({"ciphertext": ct, "associated_data": self.associated_data})
                            .to_string(),
                    ),
                )
                .await
                .map_err(|e| self.unavailable(format!("Transit decrypt: {e}")))?;
            let b64 = Zeroizing::new(
                out.pointer("/data/plaintext")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            );
            let plain = Zeroizing::new(
                STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|_| KekError::UnwrapFailed(self.kek_ref.clone()))?,
            );
            DataKey::from_bytes(&plain).map_err(|_| KekError::UnwrapFailed(self.kek_ref.clone()))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transit_key_ids() {
        assert_eq!(
            split_key_id("transit/acme").unwrap(),
            ("transit".into(), "acme".into())
        );
        assert_eq!(
            split_key_id("team/transit/acme-1").unwrap(),
            ("team/transit".into(), "acme-1".into())
        );
        for bad in [
            "acme",
            "/acme",
            "transit/",
            "transit/a b",
            "../x/y",
            "transit/k?x=1",
        ] {
            assert!(split_key_id(bad).is_err(), "{bad}");
        }
    }
}
