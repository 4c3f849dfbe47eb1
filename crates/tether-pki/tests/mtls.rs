#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code"
)]
//! mTLS handshakes over loopback TCP with certificates from this crate, TLS 1.3 only.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ProtocolVersion};
use tether_pki::{
    CertificateAuthority, IssuedCertificate, RunnerClientVerifier, RunnerNames, SerialSet,
    Validity, parse_runner_certificate, runner_client_config, tunnel_server_config,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn now_ms() -> i64 {
    let d = std::time::UNIX_EPOCH.elapsed().unwrap();
    i64::try_from(d.as_millis()).unwrap()
}

struct Pki {
    ca: CertificateAuthority,
    server: IssuedCertificate,
    runner: IssuedCertificate,
    active: Arc<SerialSet>,
}

fn pki() -> Pki {
    let ca =
        CertificateAuthority::generate("t", Validity::days_from(now_ms(), 30).unwrap()).unwrap();
    let v = Validity::days_from(now_ms(), 1).unwrap();
    let server = ca.issue_server(&["localhost", "127.0.0.1"], v).unwrap();
    let runner = issue_runner(&ca, v);
    let active = Arc::new(SerialSet::default());
    active.insert(runner.serial.clone());
    Pki {
        ca,
        server,
        runner,
        active,
    }
}

fn issue_runner(ca: &CertificateAuthority, v: Validity) -> IssuedCertificate {
    let names = RunnerNames {
        org: "acme",
        runner: "r1",
        org_id: "org_1",
        runner_id: "res_1",
    };
    ca.issue_runner(names, v).unwrap()
}

/// Accepts one connection; on success returns what the server saw and echoes one line.
async fn serve_once(pki: &Pki) -> (u16, tokio::task::JoinHandle<Result<String, String>>) {
    let verifier = RunnerClientVerifier::new(pki.ca.certificate_pem(), pki.active.clone()).unwrap();
    let config = tunnel_server_config(
        &pki.server.certificate_pem,
        &pki.server.private_key_pem,
        Arc::new(verifier),
    )
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
        let peer = conn.peer_certificates().unwrap()[0].clone();
        let id = parse_runner_certificate(&peer).unwrap();
        tls.write_all(b"ack\n").await.unwrap();
        tls.flush().await.unwrap();
        Ok(format!("{}/{}", id.org_id, id.runner_id))
    });
    (port, task)
}

async fn dial(port: u16, config: rustls::ClientConfig) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let mut buf = vec![0u8; 4];
    tls.read_exact(&mut buf).await?;
    Ok(buf)
}

fn client_config(pki: &Pki, runner: &IssuedCertificate) -> rustls::ClientConfig {
    runner_client_config(
        pki.ca.certificate_pem(),
        &runner.certificate_pem,
        &runner.private_key_pem,
    )
    .unwrap()
}

fn rustls_error(e: &std::io::Error) -> rustls::Error {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
        .unwrap_or_else(|| panic!("not a rustls error: {e:?}"))
}

#[tokio::test]
async fn handshake_succeeds_with_tls13_and_binds_the_identity() {
    let pki = pki();
    let (port, server) = serve_once(&pki).await;
    let got = dial(port, client_config(&pki, &pki.runner)).await.unwrap();
    assert_eq!(got, b"ack\n");
    assert_eq!(server.await.unwrap().unwrap(), "org_1/res_1");
}

#[tokio::test]
async fn revoked_serial_fails_at_first_read_with_certificate_revoked() {
    let pki = pki();
    pki.active.remove(&pki.runner.serial);
    let (port, server) = serve_once(&pki).await;
    let err = dial(port, client_config(&pki, &pki.runner))
        .await
        .unwrap_err();
    assert_eq!(
        rustls_error(&err),
        rustls::Error::AlertReceived(AlertDescription::CertificateRevoked)
    );
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn runner_from_another_ca_is_refused_with_unknown_ca() {
    let pki = pki();
    let other =
        CertificateAuthority::generate("x", Validity::days_from(now_ms(), 30).unwrap()).unwrap();
    let foreign = issue_runner(&other, Validity::days_from(now_ms(), 1).unwrap());
    pki.active.insert(foreign.serial.clone());
    let (port, _server) = serve_once(&pki).await;
    let err = dial(port, client_config(&pki, &foreign)).await.unwrap_err();
    assert_eq!(
        rustls_error(&err),
        rustls::Error::AlertReceived(AlertDescription::UnknownCA)
    );
}

#[tokio::test]
async fn expired_runner_certificate_is_refused() {
    let pki = pki();
    let past = Validity::from_unix_millis(now_ms() - 86_400_000, now_ms() - 3_600_000).unwrap();
    let expired = issue_runner(&pki.ca, past);
    pki.active.insert(expired.serial.clone());
    let (port, _server) = serve_once(&pki).await;
    let err = dial(port, client_config(&pki, &expired)).await.unwrap_err();
    assert_eq!(
        rustls_error(&err),
        rustls::Error::AlertReceived(AlertDescription::CertificateExpired)
    );
}

#[tokio::test]
async fn runner_refuses_a_server_from_another_ca() {
    let pki = pki();
    let (port, _server) = serve_once(&pki).await;
    let other =
        CertificateAuthority::generate("x", Validity::days_from(now_ms(), 30).unwrap()).unwrap();
    let config = runner_client_config(
        other.certificate_pem(),
        &pki.runner.certificate_pem,
        &pki.runner.private_key_pem,
    )
    .unwrap();
    let err = dial(port, config).await.unwrap_err();
    assert_eq!(
        rustls_error(&err),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[tokio::test]
async fn tls12_clients_are_refused() {
    let pki = pki();
    let (port, server) = serve_once(&pki).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.certificate_der().clone()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(
        rustls::pki_types::pem::PemObject::from_pem_slice(pki.runner.private_key_pem.as_bytes())
            .map(|k: rustls::pki_types::PrivatePkcs8KeyDer<'static>| k.secret_pkcs8_der().to_vec())
            .unwrap(),
    )
    .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(vec![pki.runner.certificate_der.clone()], key)
    .unwrap();
    assert!(dial(port, config).await.is_err());
    assert!(server.await.unwrap().is_err());
}
