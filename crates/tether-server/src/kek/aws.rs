//! AWS KMS as a KEK provider (feature `kms-aws`). The control plane calls `Encrypt` to wrap a
//! new DEK and `Decrypt` to unwrap one, always with the EncryptionContext
//! `{"tether:org": ORG_ID}`. Credentials, region and endpoint come from the default AWS chain
//! (`AWS_ACCESS_KEY_ID`, profiles, IMDS, `AWS_REGION`, `AWS_ENDPOINT_URL`). Every call has an
//! operation timeout and at most two attempts, so a KMS that hangs fails in bounded time.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use tether_crypto::{DataKey, KekError, KekRef, WrappedDek};
use zeroize::{Zeroize, Zeroizing};

use super::{AsyncKek, KekFuture, ORG_CONTEXT_KEY, count_call, provider, with_timeout};

/// The AWS clients of this process.
pub struct AwsClients {
    /// KMS.
    pub kms: aws_sdk_kms::Client,
    /// Secrets Manager (the secret backend).
    pub secretsmanager: aws_sdk_secretsmanager::Client,
}

impl AwsClients {
    /// Loads the shared configuration with bounded timeouts and retries.
    pub async fn load(timeout: Duration) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(timeout)
            .operation_attempt_timeout(timeout)
            .operation_timeout(timeout.saturating_mul(2))
            .build();
        let config = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .load()
            .await;
        Self {
            kms: aws_sdk_kms::Client::new(&config),
            secretsmanager: aws_sdk_secretsmanager::Client::new(&config),
        }
    }
}

/// One organization's customer-managed KMS key.
pub struct AwsKmsKek {
    client: aws_sdk_kms::Client,
    kek_ref: KekRef,
    org_id: String,
    timeout: Duration,
}

impl AwsKmsKek {
    /// A provider for `kek_ref.key_id()` (key id, ARN or alias) bound to `org_id`.
    pub fn new(
        client: aws_sdk_kms::Client,
        kek_ref: KekRef,
        org_id: &str,
        timeout: Duration,
    ) -> Self {
        Self {
            client,
            kek_ref,
            org_id: org_id.to_owned(),
            timeout,
        }
    }

    fn refused<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        op: &str,
        e: SdkError<E>,
    ) -> KekError {
        if let SdkError::ServiceError(s) = &e
            && s.err().code() == Some("InvalidCiphertextException")
        {
            return KekError::UnwrapFailed(self.kek_ref.clone());
        }
        KekError::Unavailable {
            kek: self.kek_ref.clone(),
            reason: refusal(op, &e),
        }
    }
}

/// What KMS said, in one line: the service's error code and message, a timeout, or the
/// transport failure. Never request or key material.
fn refusal<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &str,
    e: &SdkError<E>,
) -> String {
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            format!(
                "AWS KMS {op} refused: {}: {} (HTTP {})",
                err.code().unwrap_or("error"),
                err.message().unwrap_or(""),
                s.raw().status().as_u16()
            )
        }
        SdkError::TimeoutError(_) => format!("AWS KMS {op} timed out"),
        other => format!("AWS KMS {op} failed: {}", DisplayErrorContext(other)),
    }
}

/// The EncryptionContext of a sealed root key: a ciphertext of an org's DEK can never be
/// passed off as a root key, nor the reverse.
const ROOT_CONTEXT: (&str, &str) = ("tether:purpose", "root-key");

/// Runs one KMS call under `timeout`; a timeout or a refusal becomes a one-line reason.
async fn bounded<T, E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &str,
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, SdkError<E>>>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| {
            format!(
                "AWS KMS {op} did not answer within {} ms",
                timeout.as_millis()
            )
        })?
        .map_err(|e| refusal(op, &e))
}

/// Seals the root key's text under `key_id` (auto-unseal). Needs `kms:Encrypt`.
///
/// # Errors
///
/// KMS's refusal, a timeout or a transport failure, in one line.
pub async fn seal_root(
    client: &aws_sdk_kms::Client,
    key_id: &str,
    plain: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    count_call(provider::AWS_KMS, "encrypt");
    let call = client
        .encrypt()
        .key_id(key_id)
        .plaintext(Blob::new(plain.to_vec()))
        .encryption_context(ROOT_CONTEXT.0, ROOT_CONTEXT.1)
        .send();
    let out = bounded("Encrypt", timeout, call).await?;
    out.ciphertext_blob
        .map(Blob::into_inner)
        .ok_or_else(|| "AWS KMS Encrypt returned no ciphertext".to_owned())
}

/// Unseals a root key sealed by [`seal_root`]. Needs `kms:Decrypt`.
///
/// # Errors
///
/// KMS's refusal, a timeout or a transport failure, in one line.
pub async fn unseal_root(
    client: &aws_sdk_kms::Client,
    key_id: &str,
    sealed: &[u8],
    timeout: Duration,
) -> Result<Zeroizing<Vec<u8>>, String> {
    count_call(provider::AWS_KMS, "decrypt");
    let call = client
        .decrypt()
        .key_id(key_id)
        .ciphertext_blob(Blob::new(sealed.to_vec()))
        .encryption_context(ROOT_CONTEXT.0, ROOT_CONTEXT.1)
        .send();
    let out = bounded("Decrypt", timeout, call).await?;
    out.plaintext
        .map(|b| Zeroizing::new(b.into_inner()))
        .ok_or_else(|| "AWS KMS Decrypt returned no plaintext".to_owned())
}

impl AsyncKek for AwsKmsKek {
    fn kek_ref(&self) -> &KekRef {
        &self.kek_ref
    }

    fn wrap<'a>(&'a self, dek: &'a DataKey) -> KekFuture<'a, WrappedDek> {
        Box::pin(with_timeout(&self.kek_ref, self.timeout, async move {
            count_call(provider::AWS_KMS, "encrypt");
            let out = self
                .client
                .encrypt()
                .key_id(self.kek_ref.key_id())
                .plaintext(Blob::new(dek.expose_secret().to_vec()))
                .encryption_context(ORG_CONTEXT_KEY, &self.org_id)
                .send()
                .await
                .map_err(|e| self.refused("Encrypt", e))?;
            let blob = out
                .ciphertext_blob
                .ok_or(KekError::WrapFailed)?
                .into_inner();
            WrappedDek::new(self.kek_ref.clone(), blob).map_err(|_| KekError::WrapFailed)
        }))
    }

    fn unwrap<'a>(&'a self, wrapped: &'a WrappedDek) -> KekFuture<'a, DataKey> {
        Box::pin(with_timeout(&self.kek_ref, self.timeout, async move {
            if wrapped.kek_ref().provider() != provider::AWS_KMS
                || wrapped.kek_ref().key_id() != self.kek_ref.key_id()
            {
                return Err(KekError::UnknownKek(wrapped.kek_ref().clone()));
            }
            count_call(provider::AWS_KMS, "decrypt");
            let out = self
                .client
                .decrypt()
                .key_id(self.kek_ref.key_id())
                .ciphertext_blob(Blob::new(wrapped.ciphertext().to_vec()))
                .encryption_context(ORG_CONTEXT_KEY, &self.org_id)
                .send()
                .await
                .map_err(|e| self.refused("Decrypt", e))?;
            let mut plain = out
                .plaintext
                .ok_or_else(|| KekError::UnwrapFailed(self.kek_ref.clone()))?
                .into_inner();
            let dek = DataKey::from_bytes(&plain)
                .map_err(|_| KekError::UnwrapFailed(self.kek_ref.clone()));
            plain.zeroize();
            dek
        }))
    }
}
