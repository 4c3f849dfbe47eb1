//! OpenBao / Vault KV v2 as a secret backend. Reference: `MOUNT:PATH`; the entry's data is
//! `{"blob": BASE64(envelope)}`. A rewrap writes a new KV version of the same path; a destroy
//! deletes the path's metadata (every KV version).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::{backend_unavailable, kind};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

fn split(reference: &str) -> AppResult<(&str, &str)> {
    reference
        .split_once(':')
        .ok_or_else(|| AppError::internal("malformed openbao-kv reference"))
}

fn cfg(state: &AppState) -> AppResult<crate::kek::openbao::BaoConfig> {
    state.secrets.providers.openbao.clone().ok_or_else(|| {
        backend_unavailable(
            kind::OPENBAO_KV,
            "OpenBao is not configured (TETHER_OPENBAO_ADDR, TETHER_OPENBAO_TOKEN[_FILE])",
        )
    })
}

/// Writes a blob.
pub async fn put(state: &AppState, reference: &str, blob: &[u8]) -> AppResult<()> {
    let (mount, path) = split(reference)?;
    let body = json!({"data": {"blob": STANDARD.encode(blob)}}).to_string();
    cfg(state)?
        .call(
            state.secrets.providers.http(),
            reqwest::Method::POST,
            &format!("{mount}/data/{path}"),
            Some(&body),
        )
        .await
        .map_err(|e| backend_unavailable(kind::OPENBAO_KV, e))?;
    Ok(())
}

/// Reads a blob (the latest KV version).
pub async fn get(state: &AppState, reference: &str) -> AppResult<Vec<u8>> {
    let (mount, path) = split(reference)?;
    let out = cfg(state)?
        .call(
            state.secrets.providers.http(),
            reqwest::Method::GET,
            &format!("{mount}/data/{path}"),
            None,
        )
        .await
        .map_err(|e| backend_unavailable(kind::OPENBAO_KV, e))?;
    let b64 = out
        .pointer("/data/data/blob")
        .and_then(Value::as_str)
        .ok_or_else(|| backend_unavailable(kind::OPENBAO_KV, "the entry has no blob"))?;
    STANDARD.decode(b64).map_err(AppError::internal)
}

/// Deletes every KV version of a blob's path.
pub async fn delete(state: &AppState, reference: &str) -> AppResult<()> {
    let (mount, path) = split(reference)?;
    cfg(state)?
        .call(
            state.secrets.providers.http(),
            reqwest::Method::DELETE,
            &format!("{mount}/metadata/{path}"),
            None,
        )
        .await
        .map_err(|e| backend_unavailable(kind::OPENBAO_KV, e))?;
    Ok(())
}
