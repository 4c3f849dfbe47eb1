//! AWS Secrets Manager as a secret backend (feature `kms-aws`): one secret per version, named
//! `PREFIX/ORG/SECRET/vN`, whose `SecretBinary` is the envelope. A rewrap puts a new value
//! (AWSCURRENT moves); a destroy force-deletes the secret.

use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::primitives::Blob;

use super::{backend_unavailable, kind};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

fn refused<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &str,
    e: &SdkError<E>,
) -> AppError {
    let reason = match e {
        SdkError::ServiceError(s) => format!(
            "{op}: {}: {} (HTTP {})",
            s.err().code().unwrap_or("error"),
            s.err().message().unwrap_or(""),
            s.raw().status().as_u16()
        ),
        SdkError::TimeoutError(_) => format!("{op} timed out"),
        other => format!("{op}: {}", DisplayErrorContext(other)),
    };
    backend_unavailable(kind::AWS_SECRETS_MANAGER, reason)
}

async fn client(state: &AppState) -> aws_sdk_secretsmanager::Client {
    state.secrets.providers.aws().await.secretsmanager.clone()
}

/// Creates the secret, or puts a new value if it exists.
pub async fn put(state: &AppState, name: &str, blob: &[u8]) -> AppResult<()> {
    let c = client(state).await;
    let created = c
        .create_secret()
        .name(name)
        .description("Tether secret version (encrypted envelope)")
        .secret_binary(Blob::new(blob.to_vec()))
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("ResourceExistsException") => {
            c.put_secret_value()
                .secret_id(name)
                .secret_binary(Blob::new(blob.to_vec()))
                .send()
                .await
                .map_err(|e| refused("PutSecretValue", &e))?;
            Ok(())
        }
        Err(e) => Err(refused("CreateSecret", &e)),
    }
}

/// Reads the current value.
pub async fn get(state: &AppState, name: &str) -> AppResult<Vec<u8>> {
    let out = client(state)
        .await
        .get_secret_value()
        .secret_id(name)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .map_err(|e| refused("GetSecretValue", &e))?;
    out.secret_binary.map(Blob::into_inner).ok_or_else(|| {
        backend_unavailable(kind::AWS_SECRETS_MANAGER, "the secret has no binary value")
    })
}

/// Deletes the secret without a recovery window.
pub async fn delete(state: &AppState, name: &str) -> AppResult<()> {
    let res = client(state)
        .await
        .delete_secret()
        .secret_id(name)
        .force_delete_without_recovery(true)
        .send()
        .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(()),
        Err(e) => Err(refused("DeleteSecret", &e)),
    }
}
