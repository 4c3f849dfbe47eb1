//! Serving: plain HTTP (dev mode, loopback only) or TLS 1.3 with rustls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use crate::config::TlsConfig;

/// The client at the other end of a connection, its address formatted once per connection: the
/// request log and the authorization conditions read it on every request.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The address and port.
    pub addr: SocketAddr,
    /// The IP address as text.
    pub ip: Arc<str>,
}

impl Peer {
    /// The peer at `addr`.
    pub fn new(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            ip: addr.ip().to_string().into(),
        }
    }
}

/// Turns Nagle's algorithm off on an accepted connection. With it on, a response that leaves
/// in two writes (a TLS record after another, a streamed body) holds its second write until
/// the client acknowledges the first, and a client that delays its ACK adds up to 40 ms.
fn no_delay(tcp: &mut TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// Builds a TLS 1.3-only acceptor from PEM files. The key file must be 0600.
pub fn tls_acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .map_err(|e| format!("TLS certificate {}: {e}", tls.cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("TLS certificate {}: {e}", tls.cert_file.display()))?;
    let key_pem = tether_crypto::read_secret_file(&tls.key_file)
        .map_err(|e| format!("TLS key {}: {e}", tls.key_file.display()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("TLS key {}: {e}", tls.key_file.display()))?;
    let mut config = ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How long a client may take to finish its TLS handshake, or to send the headers of a request
/// (including the wait for the next request on a kept-alive connection), and how long a
/// request body may stall. A client that sends nothing, or a byte at a time, holds a
/// connection and its task only this long.
pub const DEFAULT_HEADER_TIMEOUT_MS: u32 = 30_000;

/// Serves HTTP/1.1 and HTTP/2 on `listener`, over TLS when `tls` is given: one task per
/// connection, and a failed handshake, a slow client or a broken connection ends only that
/// connection.
pub async fn serve(
    mut listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    header_timeout: Duration,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    // An HTTP/2 connection that does not answer a ping within the timeout is closed.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(header_timeout)
        .keep_alive_timeout(header_timeout);
    loop {
        // axum's accept retries (and backs off) on errors itself.
        let (mut tcp, remote) = Listener::accept(&mut listener).await;
        no_delay(&mut tcp);
        let (builder, router, tls) = (builder.clone(), router.clone(), tls.clone());
        tokio::spawn(async move {
            let peer = ConnectInfo(Peer::new(remote));
            // A request body that stalls for the header timeout fails to read (the handler
            // answers 408 request_timeout): a slow body cannot hold a handler.
            let svc = TowerToHyperService::new(router.map_request(move |r: Request<Incoming>| {
                let mut r = r.map(|body| TimeoutBody::new(header_timeout, body));
                r.extensions_mut().insert(peer.clone());
                r
            }));
            let served = match tls {
                None => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                        .await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, %remote, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                return;
                            }
                        };
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, %remote, "connection ended with an error");
            }
        });
    }
}
