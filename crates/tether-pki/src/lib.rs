//! Tether's PKI: one certificate authority per installation, the runner certificates it issues
//! (SPIFFE X509-SVIDs), the tunnel server's certificate, strict parsing of a presented runner
//! certificate, and the TLS 1.3-only rustls configurations of both tunnel ends.
//!
//! Layout of a runner certificate (brief §10):
//! - subject CN `org.{org}.runner.{runner}` (the names, for humans);
//! - exactly one URI SAN `spiffe://tether/org/{org_id}/runner/{runner_id}` (the ids, for machines);
//! - EKU clientAuth, key usage digitalSignature, basicConstraints `CA:false`;
//! - a random 128-bit serial, unique per certificate, which the server checks against the
//!   runner's active set.
//!
//! The CA key never leaves this crate in plaintext except through
//! [`CertificateAuthority::key_pem`], for the server to seal it with its root key.

mod accept;
mod ca;
mod identity;
mod tls;

pub use accept::accept_runner;
pub use ca::{CertificateAuthority, IssuedCertificate, RunnerNames, Validity};
pub use identity::{
    RunnerCertIdentity, Serial, parse_runner_certificate, parse_runner_certificate_pem, spiffe_id,
};
pub use tls::{
    ActiveSerials, RunnerClientVerifier, SerialSet, runner_client_config, tunnel_server_config,
};

/// Trust domain of every SPIFFE id Tether issues.
pub const TRUST_DOMAIN: &str = "tether";

/// Errors of this crate. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Key or certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// A PEM document could not be read.
    #[error("invalid PEM: {0}")]
    Pem(String),
    /// A certificate could not be parsed.
    #[error("invalid certificate: {0}")]
    Parse(String),
    /// The certificate parses, but is not a valid Tether runner certificate.
    #[error("not a valid runner certificate: {0}")]
    NotRunnerCertificate(&'static str),
    /// A name or id cannot be put in a certificate.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which input.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The CA key does not match the CA certificate.
    #[error("the CA key does not match the CA certificate")]
    KeyMismatch,
    /// Building a TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        PkiError::Generate(e.to_string())
    }
}
