//! The table of client-facing error codes (style guide habit 2).
//!
//! Every error a client can see has a stable machine-readable code and an HTTP status. Internal
//! causes are never part of an [`ApiError`]'s message: the server logs them in the request span.

use serde::Serialize;

macro_rules! error_codes {
    ($($variant:ident => ($status:expr, $code:literal, $default:literal),)+) => {
        /// A stable, machine-readable error code. The string form never changes once released.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant,)+ }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The stable string form, e.g. `not_found`.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)+ }
            }

            /// The HTTP status that carries this code.
            pub fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)+ }
            }

            /// A generic message, used when no more specific one is given.
            pub fn default_message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $default,)+ }
            }
        }
    };
}

error_codes! {
    BadRequest => (400, "bad_request", "the request is not valid"),
    InvalidJson => (400, "invalid_json", "the request body is not valid JSON for this operation"),
    InvalidYaml => (400, "invalid_yaml", "the manifest is not valid YAML for this operation"),
    InvalidName => (400, "invalid_name", "the name does not follow the naming rules"),
    InvalidId => (400, "invalid_id", "the id is malformed"),
    InvalidArgument => (400, "invalid_argument", "an argument is not valid"),
    InvalidCredentials => (401, "invalid_credentials", "the credentials are not valid"),
    Unauthenticated => (401, "unauthenticated", "this request needs a credential"),
    TokenExpired => (401, "token_expired", "the credential has expired"),
    Forbidden => (403, "forbidden", "the caller may not perform this operation"),
    NotFound => (404, "not_found", "the resource does not exist"),
    MethodNotAllowed => (405, "method_not_allowed", "this method is not allowed on this path"),
    RequestTimeout => (408, "request_timeout", "the request body stopped arriving"),
    AlreadyExists => (409, "already_exists", "a resource with this name already exists"),
    Conflict => (409, "conflict", "the request conflicts with the current state"),
    VersionConflict => (409, "version_conflict", "the resource changed since the given version"),
    TeamCycle => (409, "team_cycle", "the membership would create a cycle of teams"),
    VersionDestroyed => (410, "version_destroyed", "this version was destroyed"),
    PayloadTooLarge => (413, "payload_too_large", "the request body is too large"),
    CheckAndSetRequired => (428, "check_and_set_required", "this secret takes writes only with check-and-set (if_version)"),
    ReferenceError => (422, "reference_error", "a reference could not be resolved"),
    UnsupportedMediaType => (415, "unsupported_media_type", "the content type is not supported"),
    RateLimited => (429, "rate_limited", "too many requests"),
    Internal => (500, "internal", "an internal error occurred"),
    IntegrityError => (500, "integrity_error", "stored data failed its integrity check"),
    Unavailable => (503, "unavailable", "the service is temporarily unavailable"),
    KekUnavailable => (503, "kek_unavailable", "the key-encryption key is unavailable"),
    RunnerUnavailable => (503, "runner_unavailable", "the runner is not connected"),
    RunnerTimeout => (504, "runner_timeout", "the runner did not answer in time"),
    PermissionDenied => (403, "permission_denied", "the runner was denied the operation"),
}

/// The error a client sees: a code and a message that is safe to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// A message safe to return to the client. Never contains secrets or internals.
    pub message: String,
}

impl ApiError {
    /// An error with a specific client-safe message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An error with the code's default message.
    pub fn code(code: ErrorCode) -> Self {
        Self::new(code, code.default_message())
    }

    /// The uniform answer for an object that is missing *or* not visible to the caller.
    pub fn not_found(kind: &str, name: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{kind} '{name}' not found"))
    }

    /// A generic internal error. The cause must be logged by the caller, never returned.
    pub fn internal() -> Self {
        Self::code(ErrorCode::Internal)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

/// The JSON body of every error response: `{"error": {"code", "message", "request_id"}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The error object.
    pub error: ErrorDetail<'a>,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    /// The stable code.
    pub code: &'static str,
    /// The client-safe message.
    pub message: &'a str,
    /// The request id, also present in the server's logs.
    pub request_id: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_snake_case() {
        let mut seen = HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {}", c.as_str());
            assert!(
                c.as_str()
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch == '_')
            );
            assert!((400..600).contains(&c.http_status()));
        }
    }

    #[test]
    fn not_found_message_names_kind_only() {
        let e = ApiError::not_found("environment", "prod");
        assert_eq!(e.code.http_status(), 404);
        assert_eq!(e.message, "environment 'prod' not found");
    }
}
