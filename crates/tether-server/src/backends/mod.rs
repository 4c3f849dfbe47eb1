//! Where a secret version's encrypted blob is stored. `builtin` keeps it in Tether's database;
//! `openbao-kv` (OpenBao / Vault KV v2) and `aws-secretsmanager` (feature `kms-aws`) keep the
//! same envelope bytes in the customer's store, one entry per secret version. Tether keeps its
//! own version history (the `secret_versions` row, with an empty blob and a `backend_ref`)
//! in every case, so versions, check-and-set, rollback and audit work the same.
//!
//! An organization's backend applies to versions written after it is set; older versions stay
//! where they were written (each row records its backend). The external stores only ever see
//! ciphertext: the envelope is sealed before it leaves Tether.

pub mod openbao_kv;

#[cfg(feature = "kms-aws")]
pub mod aws_sm;

use serde::{Deserialize, Serialize};
use tether_core::ErrorCode;
use tether_store::kms::{OrgBackendRow, org_backend, version_backend};
use tether_store::secrets::SecretVersionRow;

use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Backend kinds.
pub mod kind {
    /// Tether's database.
    pub const BUILTIN: &str = "builtin";
    /// OpenBao / Vault KV v2.
    pub const OPENBAO_KV: &str = "openbao-kv";
    /// AWS Secrets Manager.
    pub const AWS_SECRETS_MANAGER: &str = "aws-secretsmanager";
}

/// A backend's settings (never credentials: those come from the server's environment).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// KV v2 mount (default `secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// Path / name prefix (default `tether`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl BackendConfig {
    fn prefix(&self) -> String {
        self.prefix
            .as_deref()
            .unwrap_or("tether")
            .trim_matches('/')
            .to_owned()
    }
}

/// The `unavailable` answer for a backend that refused or could not be reached.
pub fn backend_unavailable(kind: &str, reason: impl std::fmt::Display) -> AppError {
    let reason = reason.to_string();
    AppError {
        api: tether_core::ApiError::new(
            ErrorCode::Unavailable,
            format!("the secret backend {kind} is unavailable: {reason}"),
        ),
        cause: Some(reason),
    }
}

fn safe_segment(s: &str) -> bool {
    s.len() <= 128
        && s.trim_matches('/').split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// Checks a backend setting before it is stored, and that the backend is configured here.
pub fn validate(kind_id: &str, cfg: &BackendConfig) -> AppResult<()> {
    let bad = |m: &str| AppError::new(ErrorCode::InvalidArgument, m.to_owned());
    for v in [cfg.mount.as_deref(), cfg.prefix.as_deref()]
        .into_iter()
        .flatten()
    {
        if !safe_segment(v) {
            return Err(bad(
                "mount and prefix are 1-128 characters of letters, digits, '-', '_', '.', '/'",
            ));
        }
    }
    match kind_id {
        kind::BUILTIN => Ok(()),
        kind::OPENBAO_KV => Ok(()),
        #[cfg(feature = "kms-aws")]
        kind::AWS_SECRETS_MANAGER => {
            if cfg.mount.is_some() {
                return Err(bad("aws-secretsmanager takes a prefix, not a mount"));
            }
            Ok(())
        }
        other => Err(AppError::new(
            ErrorCode::InvalidArgument,
            format!(
                "unknown or unsupported backend '{other}' (builtin, openbao-kv, aws-secretsmanager)"
            ),
        )),
    }
}

/// The organization's backend row, if it is not builtin.
pub async fn for_org(state: &AppState, org_id: &str) -> AppResult<Option<OrgBackendRow>> {
    Ok(org_backend(state.store.reader(), org_id).await?)
}

/// Stores a sealed blob in the organization's backend (`None`: the built-in one, looked up with
/// [`for_org`]). Returns the blob to keep in the database (empty when it went elsewhere) and the
/// backend and reference to record.
pub async fn store_blob(
    state: &AppState,
    backend: Option<OrgBackendRow>,
    org_id: &str,
    secret_id: &str,
    version: i64,
    blob: Vec<u8>,
) -> AppResult<(Vec<u8>, Option<(String, String)>)> {
    let Some(row) = backend else {
        return Ok((blob, None));
    };
    let cfg: BackendConfig = serde_json::from_str(&row.config).map_err(AppError::internal)?;
    let name = format!("{}/{org_id}/{secret_id}/v{version}", cfg.prefix());
    let reference = match row.kind.as_str() {
        kind::OPENBAO_KV => {
            let mount = cfg.mount.as_deref().unwrap_or("secret");
            let r = format!("{mount}:{name}");
            openbao_kv::put(state, &r, &blob).await?;
            r
        }
        #[cfg(feature = "kms-aws")]
        kind::AWS_SECRETS_MANAGER => {
            aws_sm::put(state, &name, &blob).await?;
            name
        }
        other => return Err(backend_unavailable(other, "not supported by this build")),
    };
    Ok((Vec::new(), Some((row.kind, reference))))
}

/// Writes a blob at a reference of an external backend.
async fn put_at(state: &AppState, kind_id: &str, reference: &str, blob: &[u8]) -> AppResult<()> {
    match kind_id {
        kind::OPENBAO_KV => openbao_kv::put(state, reference, blob).await,
        #[cfg(feature = "kms-aws")]
        kind::AWS_SECRETS_MANAGER => aws_sm::put(state, reference, blob).await,
        other => Err(backend_unavailable(other, "not supported by this build")),
    }
}

/// Reads the blob at a reference of an external backend.
pub async fn fetch_at(state: &AppState, kind_id: &str, reference: &str) -> AppResult<Vec<u8>> {
    match kind_id {
        kind::OPENBAO_KV => openbao_kv::get(state, reference).await,
        #[cfg(feature = "kms-aws")]
        kind::AWS_SECRETS_MANAGER => aws_sm::get(state, reference).await,
        other => Err(backend_unavailable(other, "not supported by this build")),
    }
}

/// Stores a version's blob, sealed again for a move, beside its current copy (which readers
/// keep using until the move commits): at the reference of the version's name with `tag`
/// appended. Returns the new reference.
pub async fn store_beside(
    state: &AppState,
    kind_id: &str,
    reference: &str,
    version: i64,
    tag: &str,
    blob: &[u8],
) -> AppResult<String> {
    let new = beside(reference, version, tag);
    put_at(state, kind_id, &new, blob).await?;
    Ok(new)
}

/// `…/v{version}` (with any earlier tag dropped) followed by `-{tag}`.
fn beside(reference: &str, version: i64, tag: &str) -> String {
    let stem = format!("/v{version}");
    let base = match reference.rfind(&stem) {
        Some(at) => &reference[..at + stem.len()],
        None => reference,
    };
    format!("{base}-{tag}")
}

/// After a write that put a new copy (`new_ref`) beside the one that the version row `v` (as
/// the writer read it) names has ended, whether it committed, failed, or lost the row to
/// another writer: deletes the copies that the row, as it is now, does not name. If the row
/// cannot be read, nothing is deleted (a copy left behind is ciphertext; a copy deleted under
/// its row would be data lost).
pub async fn settle(state: &AppState, v: &SecretVersionRow, new_ref: String) {
    let named = match version_backend(state.store.reader(), &v.secret_id, v.version).await {
        Ok(row) => row.and_then(|(_, r)| r),
        Err(e) => {
            tracing::warn!(secret_id = %v.secret_id, version = v.version, error = %e,
                "could not tell which external copy a version names; both are kept");
            return;
        }
    };
    let old_ref = v.backend_ref.clone().unwrap_or_default();
    let unnamed = [old_ref, new_ref]
        .into_iter()
        .filter(|r| named.as_ref() != Some(r))
        .map(|r| (v.backend.clone(), r))
        .collect();
    forget_unreferenced(state, unnamed);
}

/// Deletes external copies that nothing refers to any more (the old copies of moved versions,
/// or the new copies of a move that failed), in the background; a failure is logged with the
/// reference for an operator to remove.
pub fn forget_unreferenced(state: &AppState, copies: Vec<(String, String)>) {
    if copies.is_empty() {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        for (kind_id, reference) in copies {
            if let Err(e) = forget_external(&state, &kind_id, &reference).await {
                tracing::warn!(backend = %kind_id, %reference, cause = ?e.cause,
                    code = ?e.api.code, "could not delete an unreferenced copy from its backend");
            }
        }
    });
}

/// Deletes a version's blob from its backend, if it has one (destroy). Returns the reference it
/// deleted.
pub async fn forget_blob(
    state: &AppState,
    secret_id: &str,
    version: i64,
) -> AppResult<Option<String>> {
    let Some((kind_id, Some(reference))) =
        version_backend(state.store.reader(), secret_id, version).await?
    else {
        return Ok(None);
    };
    forget_external(state, &kind_id, &reference).await?;
    Ok(Some(reference))
}

/// Deletes pruned versions' external copies after their commit, in the background: their
/// rows already hold no data, so a failure leaves only ciphertext behind, which is logged
/// with its reference for an operator to remove.
pub fn forget_pruned(state: &AppState, pruned: Vec<(String, i64, String, String)>) {
    let copies = pruned
        .into_iter()
        .map(|(_, _, kind_id, reference)| (kind_id, reference))
        .collect();
    forget_unreferenced(state, copies);
}

pub(crate) async fn forget_external(
    state: &AppState,
    kind_id: &str,
    reference: &str,
) -> AppResult<()> {
    match kind_id {
        kind::BUILTIN => Ok(()),
        kind::OPENBAO_KV => openbao_kv::delete(state, reference).await,
        #[cfg(feature = "kms-aws")]
        kind::AWS_SECRETS_MANAGER => aws_sm::delete(state, reference).await,
        other => Err(backend_unavailable(other, "not supported by this build")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_settings_are_checked() {
        let cfg = |mount: Option<&str>, prefix: Option<&str>| BackendConfig {
            mount: mount.map(str::to_owned),
            prefix: prefix.map(str::to_owned),
        };
        assert!(validate(kind::BUILTIN, &cfg(None, None)).is_ok());
        assert!(validate(kind::OPENBAO_KV, &cfg(Some("secret"), Some("tether/prod"))).is_ok());
        assert!(validate("s3", &cfg(None, None)).is_err());
        for bad in ["../etc", "a b", "", "x?y", "a//b", "a/./b", "/"] {
            assert!(
                validate(kind::OPENBAO_KV, &cfg(Some(bad), None)).is_err(),
                "{bad}"
            );
            assert!(
                validate(kind::OPENBAO_KV, &cfg(None, Some(bad))).is_err(),
                "{bad}"
            );
        }
        assert_eq!(cfg(None, Some("/p/")).prefix(), "p");
        assert_eq!(cfg(None, None).prefix(), "tether");
    }

    #[test]
    fn a_moved_copy_sits_beside_the_version_with_one_tag() {
        assert_eq!(beside("secret:t/o/s/v3", 3, "a"), "secret:t/o/s/v3-a");
        assert_eq!(beside("secret:t/o/s/v3-a", 3, "b"), "secret:t/o/s/v3-b");
        assert_eq!(beside("t/v1/o/s/v12-a", 12, "b"), "t/v1/o/s/v12-b");
        assert_eq!(beside("odd", 1, "b"), "odd-b");
    }
}
