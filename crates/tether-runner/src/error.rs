//! What can stop the runner, told apart into fatal and transient causes, with exit codes.

use std::error::Error as StdError;

use rustls::{AlertDescription, CertificateError};

/// A cause that stops the runner for good: retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FatalCause {
    /// The server refused the runner certificate as revoked (TLS alert `CertificateRevoked`).
    #[error(
        "runner certificate revoked (the server sent CertificateRevoked); generate new credentials"
    )]
    CertificateRevoked,
    /// The runner certificate is expired (TLS alert, or checked locally before dialing).
    #[error("runner certificate expired; generate new credentials")]
    CertificateExpired,
    /// The server does not know the CA that signed the runner certificate.
    #[error("unknown CA: the server does not trust the CA that signed this runner certificate")]
    UnknownCaAtServer,
    /// The server's certificate is not signed by the CA in the credentials document.
    #[error(
        "unknown CA: the tunnel server's certificate is not signed by the CA in the credentials"
    )]
    UnknownServerCa,
    /// The server's certificate does not name the tunnel endpoint.
    #[error("the tunnel server's certificate is not valid for the tunnel endpoint's host name")]
    ServerNameMismatch,
    /// The server refused the runner certificate for another reason.
    #[error("the server refused the runner certificate ({0})")]
    CertificateRejected(String),
    /// The server revoked the session (regenerated credentials, deleted runner).
    #[error("runner credentials revoked: {0}")]
    Revoked(String),
    /// The server refused the runner's claims or protocol.
    #[error("refused by the server: {0}")]
    Refused(String),
    /// `whoami` refused the API key.
    #[error("API key rejected by {0} (revoked or invalid); generate new credentials")]
    ApiKeyRejected(String),
}

/// Everything that ends `run` with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The credentials document is missing or invalid.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The local configuration is invalid.
    #[error("config: {0}")]
    Config(String),
    /// A fatal cause; the runner stops.
    #[error("fatal: {0}")]
    Fatal(FatalCause),
    /// The tunnel could not be established before the startup deadline.
    #[error("tunnel endpoint unreachable: {0}")]
    Unreachable(String),
    /// The API endpoint could not be reached for `whoami`.
    #[error("API endpoint unreachable: {0}")]
    ApiUnreachable(String),
    /// A transient failure; the runner reconnects.
    #[error("{0}")]
    Transient(String),
}

impl RunnerError {
    /// Whether reconnecting may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, RunnerError::Transient(_))
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunnerError::Credentials(_) | RunnerError::Config(_) => 2,
            RunnerError::Fatal(_) => 3,
            RunnerError::Unreachable(_) | RunnerError::ApiUnreachable(_) => 4,
            RunnerError::Transient(_) => 1,
        }
    }

    /// One line for stderr (no line breaks, whatever the causes contain).
    pub fn one_line(&self) -> String {
        self.to_string().replace(['\n', '\r'], " ")
    }
}

/// Classifies a failure of the tunnel (connect, TLS, gRPC) as fatal or transient, by walking
/// its source chain for the rustls error or the gRPC status that explains it.
pub fn classify(err: &(dyn StdError + 'static)) -> RunnerError {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    let mut status_code = None;
    while let Some(e) = current {
        if let Some(cause) = tls_cause(e) {
            return cause;
        }
        if let Some(status) = e.downcast_ref::<tonic::Status>() {
            status_code.get_or_insert((status.code(), status.message().to_owned()));
        }
        current = e.source();
    }
    // h2 re-creates I/O errors from their kind and text, so a TLS alert received after the
    // handshake (TLS 1.3: a revoked client certificate) arrives only as text.
    if let Some(cause) = alert_in_text(&chain_text(err)) {
        return RunnerError::Fatal(cause);
    }
    match status_code {
        Some((tonic::Code::Unauthenticated | tonic::Code::PermissionDenied, msg)) => {
            RunnerError::Fatal(FatalCause::Refused(msg))
        }
        _ => RunnerError::Transient(chain_text(err)),
    }
}

/// The fatal cause of a `received fatal alert: X` message, as rustls words it.
fn alert_in_text(text: &str) -> Option<FatalCause> {
    let (_, rest) = text.split_once("received fatal alert: ")?;
    let name: String = rest
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    match name.as_str() {
        "CertificateRevoked" => Some(FatalCause::CertificateRevoked),
        "CertificateExpired" => Some(FatalCause::CertificateExpired),
        "UnknownCA" => Some(FatalCause::UnknownCaAtServer),
        "BadCertificate"
        | "UnsupportedCertificate"
        | "CertificateUnknown"
        | "AccessDenied"
        | "CertificateRequired" => Some(FatalCause::CertificateRejected(name)),
        _ => None,
    }
}

fn tls_cause(e: &(dyn StdError + 'static)) -> Option<RunnerError> {
    let rustls_err = e.downcast_ref::<rustls::Error>().or_else(|| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    })?;
    let fatal = match rustls_err {
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRevoked => FatalCause::CertificateRevoked,
            AlertDescription::CertificateExpired => FatalCause::CertificateExpired,
            AlertDescription::UnknownCA => FatalCause::UnknownCaAtServer,
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied
            | AlertDescription::CertificateRequired => {
                FatalCause::CertificateRejected(format!("{alert:?}"))
            }
            _ => return Some(RunnerError::Transient(format!("TLS alert {alert:?}"))),
        },
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            FatalCause::UnknownServerCa
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => FatalCause::ServerNameMismatch,
        other => return Some(RunnerError::Transient(format!("TLS: {other}"))),
    };
    Some(RunnerError::Fatal(fatal))
}

/// `a: b: c` over the source chain.
pub fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_wrap(e: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn tls_alerts_are_fatal_with_named_causes() {
        let e = io_wrap(rustls::Error::AlertReceived(
            AlertDescription::CertificateRevoked,
        ));
        assert!(matches!(
            classify(&e),
            RunnerError::Fatal(FatalCause::CertificateRevoked)
        ));
        let e = io_wrap(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        let err = classify(&e);
        assert!(err.one_line().contains("unknown CA"));
        assert_eq!(err.exit_code(), 3);
    }

    #[test]
    fn alerts_known_only_as_text_are_recognised() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: CertificateRevoked",
        );
        assert!(matches!(
            classify(&e),
            RunnerError::Fatal(FatalCause::CertificateRevoked)
        ));
        let e = std::io::Error::other("received fatal alert: UnknownCA");
        assert!(matches!(
            classify(&e),
            RunnerError::Fatal(FatalCause::UnknownCaAtServer)
        ));
        let e = std::io::Error::other("received fatal alert: DecodeError");
        assert!(classify(&e).is_transient());
    }

    #[test]
    fn other_failures_are_transient() {
        let e = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(classify(&e).is_transient());
        let s = tonic::Status::unavailable("down");
        assert!(classify(&s).is_transient());
        let s = tonic::Status::permission_denied("claimed another org");
        assert!(matches!(
            classify(&s),
            RunnerError::Fatal(FatalCause::Refused(_))
        ));
    }
}
