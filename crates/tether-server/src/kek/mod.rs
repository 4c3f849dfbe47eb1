//! Key-encryption-key providers behind one async trait: the platform-managed local KEK (an
//! org key wrapped by the root key), AWS KMS (feature `kms-aws`) and OpenBao / Vault Transit.
//!
//! A provider instance belongs to one organization and one KEK version (a row of `org_keks`),
//! and binds every wrap to that organization: AWS KMS through the EncryptionContext
//! `{"tether:org": ORG_ID}`, Transit through its associated data. A DEK wrapped for one
//! organization therefore cannot be unwrapped for another. Every remote call has a timeout;
//! any refusal (revoked, disabled, pending deletion, unreachable, slow) is
//! [`KekError::Unavailable`], which clients see as `kek_unavailable` (HTTP 503).

pub mod local;
pub mod openbao;

#[cfg(feature = "kms-aws")]
pub mod aws;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tether_crypto::{DataKey, KekError, KekRef, WrappedDek};

/// A boxed future returned by [`AsyncKek`] (object safe, `Send`).
pub type KekFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KekError>> + Send + 'a>>;

/// A key-encryption key that may live in a remote KMS.
pub trait AsyncKek: Send + Sync {
    /// The reference written into blobs sealed under this key.
    fn kek_ref(&self) -> &KekRef;

    /// Wraps a DEK.
    fn wrap<'a>(&'a self, dek: &'a DataKey) -> KekFuture<'a, WrappedDek>;

    /// Unwraps a DEK this key wrapped.
    fn unwrap<'a>(&'a self, wrapped: &'a WrappedDek) -> KekFuture<'a, DataKey>;
}

/// Provider ids, as stored in `org_keks.provider` and in blobs.
pub mod provider {
    /// An org KEK wrapped by the root key.
    pub const LOCAL: &str = "local";
    /// AWS KMS (customer-managed key).
    pub const AWS_KMS: &str = "aws-kms";
    /// OpenBao / Vault Transit.
    pub const OPENBAO_TRANSIT: &str = "openbao-transit";
}

/// The EncryptionContext / associated-data key that binds a wrap to an organization.
pub const ORG_CONTEXT_KEY: &str = "tether:org";

/// Settings and shared clients for the remote providers. Clients are built on first use, so a
/// server that never uses a KMS never loads cloud credentials.
pub struct Providers {
    /// The limit on every remote KMS call (connect, request and retries together).
    pub timeout: Duration,
    /// OpenBao / Vault address and token (`TETHER_OPENBAO_ADDR`, `TETHER_OPENBAO_TOKEN[_FILE]`).
    pub openbao: Option<openbao::BaoConfig>,
    http: reqwest::Client,
    #[cfg(feature = "kms-aws")]
    aws: tokio::sync::OnceCell<aws::AwsClients>,
}

impl Providers {
    /// Reads `TETHER_KMS_TIMEOUT_MS` (default 5000) and the OpenBao settings from the
    /// environment.
    pub fn from_env() -> Result<Self, String> {
        let timeout = match std::env::var("TETHER_KMS_TIMEOUT_MS") {
            Ok(v) if !v.is_empty() => Duration::from_millis(
                v.parse()
                    .map_err(|_| format!("TETHER_KMS_TIMEOUT_MS: '{v}' is not a number"))?,
            ),
            _ => Duration::from_secs(5),
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            timeout,
            openbao: openbao::BaoConfig::from_env()?,
            http,
            #[cfg(feature = "kms-aws")]
            aws: tokio::sync::OnceCell::new(),
        })
    }

    /// The shared HTTP client (timeouts set).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The AWS clients, loaded from the default credential chain on first use.
    #[cfg(feature = "kms-aws")]
    pub async fn aws(&self) -> &aws::AwsClients {
        self.aws
            .get_or_init(|| aws::AwsClients::load(self.timeout))
            .await
    }

    /// Builds the provider for a customer-managed KEK row.
    ///
    /// # Errors
    ///
    /// A message naming what is missing (an unsupported provider, no OpenBao settings).
    pub async fn remote(
        &self,
        org_id: &str,
        provider_id: &str,
        key_id: &str,
        kek_version: i64,
    ) -> Result<Arc<dyn AsyncKek>, String> {
        let kek_ref = KekRef::new(provider_id, key_id, &kek_version.to_string())
            .map_err(|e| e.to_string())?;
        match provider_id {
            #[cfg(feature = "kms-aws")]
            provider::AWS_KMS => Ok(Arc::new(aws::AwsKmsKek::new(
                self.aws().await.kms.clone(),
                kek_ref,
                org_id,
                self.timeout,
            ))),
            provider::OPENBAO_TRANSIT => {
                let cfg = self.openbao.clone().ok_or(
                    "OpenBao is not configured (TETHER_OPENBAO_ADDR and TETHER_OPENBAO_TOKEN[_FILE])",
                )?;
                Ok(Arc::new(openbao::TransitKek::new(
                    self.http.clone(),
                    cfg,
                    kek_ref,
                    org_id,
                    self.timeout,
                )?))
            }
            other => Err(format!(
                "KEK provider '{other}' is not supported by this build"
            )),
        }
    }
}

/// Runs a remote call under the timeout, turning a timeout into [`KekError::Unavailable`].
pub async fn with_timeout<T>(
    kek: &KekRef,
    timeout: Duration,
    fut: impl Future<Output = Result<T, KekError>>,
) -> Result<T, KekError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(KekError::Unavailable {
            kek: kek.clone(),
            reason: format!("the KMS did not answer within {} ms", timeout.as_millis()),
        }),
    }
}

/// Counts a remote KMS call (`tether_kms_calls_total{provider,op}`).
pub fn count_call(provider: &'static str, op: &'static str) {
    metrics::counter!("tether_kms_calls_total", "provider" => provider, "op" => op).increment(1);
}
