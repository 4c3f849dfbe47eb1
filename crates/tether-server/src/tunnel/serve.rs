//! The tunnel listener: TLS 1.3 with mandatory runner certificates, then HTTP/2 gRPC (tonic)
//! over the accepted streams. Until the CA exists (no credentials were ever generated) every
//! connection is dropped. A refused runner is closed gently, so that it reads the alert
//! ([`accept_runner`]).

use std::time::Duration;

use tether_pki::accept_runner;
use tether_proto::tunnel::tunnel_service_server::TunnelServiceServer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::state::AppState;
use crate::tunnel::service::Service;

/// A TLS handshake must finish within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the tunnel on `listener` until the process ends.
pub fn spawn(listener: TcpListener, state: AppState) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, state.clone(), tx));
    let expiry = state.clone();
    tokio::spawn(async move { expiry.tunnel.hub.run_expiry().await });
    let service = TunnelServiceServer::new(Service::new(state))
        .max_decoding_message_size(tether_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(tether_proto::MAX_MESSAGE_BYTES);
    tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(service)
            .serve_with_incoming(ReceiverStream::new(rx))
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "tunnel server stopped");
        }
    })
}

type Accepted = Result<TlsStream<TcpStream>, std::io::Error>;

async fn accept_loop(listener: TcpListener, state: AppState, tx: mpsc::Sender<Accepted>) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "tunnel accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small frames both ways (requests, results, heartbeats): never wait for Nagle. The
        // runner sets the same on its side.
        let _ = tcp.set_nodelay(true);
        let Some(config) = state.tunnel.tls_config() else {
            tracing::debug!(%remote, "tunnel connection before any runner credentials exist");
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            match accept_runner(config, tcp, HANDSHAKE_TIMEOUT).await {
                Ok(tls) => {
                    let _ = tx.send(Ok(tls)).await;
                }
                // Revoked, expired, unknown CA: the alert went out; log the cause only.
                Err(e) => tracing::info!(%remote, error = %e, "tunnel handshake refused"),
            }
        });
    }
}
