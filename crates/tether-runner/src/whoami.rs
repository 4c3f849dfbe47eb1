//! Phase 2 of startup: `GET {api_endpoint}/v1/auth/whoami` with the runner's API key.

use std::time::Duration;

use crate::credentials::Credentials;
use crate::error::{FatalCause, RunnerError};

/// Calls `whoami`; returns the principal document. 401 and 403 are fatal (key revoked or
/// invalid); any other failure names the API endpoint.
pub async fn whoami(creds: &Credentials) -> Result<serde_json::Value, RunnerError> {
    let url = creds
        .api_endpoint
        .join("v1/auth/whoami")
        .map_err(|_| RunnerError::Credentials("api_endpoint cannot be joined".into()))?;
    let ca = reqwest::Certificate::from_pem(creds.ca_certificate.as_bytes())
        .map_err(|e| RunnerError::Credentials(format!("ca_certificate: {e}")))?;
    let client = reqwest::Client::builder()
        .tls_certs_merge([ca])
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| RunnerError::Config(format!("HTTP client: {e}")))?;
    let response = client
        .get(url.clone())
        .bearer_auth(creds.api_key().expose())
        .send()
        .await
        .map_err(|e| {
            RunnerError::ApiUnreachable(format!("{url}: {}", crate::error::chain_text(&e)))
        })?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(RunnerError::Fatal(FatalCause::ApiKeyRejected(format!(
            "{url} ({status})"
        ))));
    }
    if !status.is_success() {
        return Err(RunnerError::ApiUnreachable(format!(
            "{url} answered {status}"
        )));
    }
    response
        .json()
        .await
        .map_err(|e| RunnerError::ApiUnreachable(format!("{url}: invalid whoami response: {e}")))
}
