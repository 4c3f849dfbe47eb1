//! TLS 1.3-only rustls configurations for both tunnel ends, and the server's client verifier
//! that consults the live set of active runner serials on every handshake.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::PkiError;
use crate::identity::{RunnerCertIdentity, Serial, parse_runner_certificate, pem_to_der};

/// The ALPN protocol of gRPC.
const ALPN_H2: &[u8] = b"h2";

/// The live revocation check: whether a runner certificate is in its runner's active set now.
/// It runs in every handshake, so it must be fast and must not block (an in-memory set).
pub trait ActiveSerials: Send + Sync + fmt::Debug {
    /// `true` if this certificate may connect.
    fn is_active(&self, identity: &RunnerCertIdentity) -> bool;
}

/// A simple in-memory [`ActiveSerials`]: the set of serials currently valid.
#[derive(Debug, Default)]
pub struct SerialSet(RwLock<HashSet<Serial>>);

impl SerialSet {
    /// Marks a serial active.
    pub fn insert(&self, serial: Serial) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(serial);
    }
    /// Revokes a serial.
    pub fn remove(&self, serial: &Serial) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(serial);
    }
    /// Whether a serial is active.
    pub fn contains(&self, serial: &Serial) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(serial)
    }
}

impl ActiveSerials for SerialSet {
    fn is_active(&self, identity: &RunnerCertIdentity) -> bool {
        self.contains(&identity.serial)
    }
}

/// The server's client-certificate verifier: the chain must lead to Tether's CA (webpki), the
/// leaf must be a valid runner X509-SVID, and its serial must be active right now. A revoked
/// serial gets the alert `CertificateRevoked`.
pub struct RunnerClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    active: Arc<dyn ActiveSerials>,
}

impl fmt::Debug for RunnerClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerClientVerifier")
            .finish_non_exhaustive()
    }
}

impl RunnerClientVerifier {
    /// A verifier trusting only `ca_pem`, with the live check `active`.
    pub fn new(ca_pem: &str, active: Arc<dyn ActiveSerials>) -> Result<Self, PkiError> {
        let roots = Arc::new(root_store(ca_pem)?);
        let inner = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))?;
        Ok(Self { inner, active })
    }
}

impl ClientCertVerifier for RunnerClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let identity = parse_runner_certificate(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if !self.active.is_active(&identity) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The tunnel server's TLS configuration: TLS 1.3 only, ALPN `h2`, client certificates
/// mandatory and checked by `verifier` (normally a [`RunnerClientVerifier`]).
pub fn tunnel_server_config(
    certificate_pem: &str,
    key_pem: &str,
    verifier: Arc<dyn ClientCertVerifier>,
) -> Result<ServerConfig, PkiError> {
    let chain = vec![pem_to_der(certificate_pem)?];
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key(key_pem)?)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// The runner's TLS configuration: TLS 1.3 only, ALPN `h2`, the server verified against the CA
/// in the credentials document only (never the system roots), and the runner's certificate.
pub fn runner_client_config(
    ca_pem: &str,
    certificate_pem: &str,
    key_pem: &str,
) -> Result<ClientConfig, PkiError> {
    let chain = vec![pem_to_der(certificate_pem)?];
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(ca_pem)?)
        .with_client_auth_cert(chain, private_key(key_pem)?)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn root_store(ca_pem: &str) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    roots.add(pem_to_der(ca_pem)?)?;
    Ok(roots)
}

fn private_key(key_pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| PkiError::Pem(e.to_string()))
}
