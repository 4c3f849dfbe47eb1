//! The server's error type: a client-safe [`ApiError`] plus, optionally, an internal cause that
//! is logged in the request span and never sent to the client.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tether_core::error::{ErrorBody, ErrorDetail};
use tether_core::{ApiError, ErrorCode};
use tether_store::StoreError;

/// An error returned by a handler.
#[derive(Debug)]
pub struct AppError {
    /// What the client sees.
    pub api: ApiError,
    /// What the log sees (never secret values).
    pub cause: Option<String>,
}

/// Handler result.
pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// A client error with a specific message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            api: ApiError::new(code, message),
            cause: None,
        }
    }

    /// The uniform "missing or not yours" answer.
    pub fn not_found(kind: &str, name: &str) -> Self {
        Self {
            api: ApiError::not_found(kind, name),
            cause: None,
        }
    }

    /// An internal error; the cause goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self {
            api: ApiError::internal(),
            cause: Some(cause.to_string()),
        }
    }

    /// A stored secret version that does not open: its ciphertext, or the row it sits in, was
    /// changed outside Tether (the AAD binds each ciphertext to its row), or its key is wrong.
    /// Counted in `tether_secret_integrity_failures_total`, for alerting.
    pub fn integrity(secret_id: &str, version: i64, cause: impl std::fmt::Display) -> Self {
        metrics::counter!("tether_secret_integrity_failures_total").increment(1);
        Self {
            api: ApiError::new(
                ErrorCode::IntegrityError,
                format!("version {version} of this secret failed its integrity check"),
            ),
            cause: Some(format!("{secret_id} v{version} does not open: {cause}")),
        }
    }
}

impl From<ApiError> for AppError {
    fn from(api: ApiError) -> Self {
        Self { api, cause: None }
    }
}

/// The cause of an error that means "read the row again and retry the write"
/// ([`StoreError::Stale`]; see [`crate::resources::on_fresh_row`]).
const STALE: &str = "the row changed since it was read";

impl AppError {
    /// Whether the write was based on a row another writer has changed since.
    pub fn is_stale(&self) -> bool {
        self.cause.as_deref() == Some(STALE)
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => AppError::new(ErrorCode::NotFound, "not found"),
            StoreError::Stale => AppError {
                api: ApiError::internal(),
                cause: Some(STALE.into()),
            },
            StoreError::AlreadyExists => AppError::new(ErrorCode::AlreadyExists, "already exists"),
            other => AppError::internal(other),
        }
    }
}

/// The request id of the current request, set by the request-id middleware.
#[derive(Debug, Clone)]
pub struct RequestIdExt(pub String);

tokio::task_local! {
    /// The request id of the request being handled, for error bodies.
    pub static REQUEST_ID: String;
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            tracing::error!(code = self.api.code.as_str(), cause = %cause, "request failed");
        }
        error_response(&self.api)
    }
}

/// Builds the JSON error response for an [`ApiError`].
pub fn error_response(api: &ApiError) -> Response {
    let status =
        StatusCode::from_u16(api.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let request_id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
    let body = ErrorBody {
        error: ErrorDetail {
            code: api.code.as_str(),
            message: &api.message,
            request_id: &request_id,
        },
    };
    (status, Json(body)).into_response()
}
