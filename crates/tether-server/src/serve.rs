//! Serving: plain HTTP (dev mode, loopback only) or TLS 1.3 with rustls.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

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

impl Connected<IncomingStream<'_, NoDelayListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, NoDelayListener>) -> Peer {
        Peer::new(*stream.remote_addr())
    }
}

/// A TCP listener whose connections have Nagle's algorithm off (see [`no_delay`]).
pub struct NoDelayListener(TcpListener);

impl Listener for NoDelayListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        // axum's accept retries (and backs off) on errors itself.
        let (mut io, addr) = Listener::accept(&mut self.0).await;
        no_delay(&mut io);
        (io, addr)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Listener::local_addr(&self.0)
    }
}

/// Serves plain HTTP.
pub async fn serve_plain(listener: TcpListener, router: Router) {
    let svc = router.into_make_service_with_connect_info::<Peer>();
    let listener = NoDelayListener(listener);
    if let Err(e) = axum::serve(listener, svc).await {
        tracing::error!(error = %e, "server stopped");
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

/// Serves HTTPS: one task per connection; a failed handshake only ends that connection.
pub async fn serve_tls(listener: TcpListener, acceptor: TlsAcceptor, router: Router) {
    loop {
        let (mut tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        no_delay(&mut tcp);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e, %remote, "TLS handshake failed");
                    return;
                }
            };
            let svc = router.layer(axum::Extension(ConnectInfo(Peer::new(remote))));
            let hyper_svc = TowerToHyperService::new(svc);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), hyper_svc)
                .await
            {
                tracing::debug!(error = %e, %remote, "connection ended with an error");
            }
        });
    }
}
