//! The server end of one tunnel connection's TLS handshake, with a refusal the runner can read.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a refused connection is drained before it is dropped.
const LINGER: Duration = Duration::from_secs(2);
/// At most this much is read from a refused connection while it lingers.
const LINGER_BYTES: usize = 256 * 1024;

/// Runs the TLS handshake of a tunnel connection within `timeout`. A refused runner (revoked,
/// expired, unknown CA) has been sent its alert when this returns the error, and the
/// connection is closed so that it reads that alert (see [`lingering_close`]).
pub async fn accept_runner(
    config: Arc<ServerConfig>,
    tcp: TcpStream,
    timeout: Duration,
) -> io::Result<TlsStream<TcpStream>> {
    let accept = TlsAcceptor::from(config).accept(tcp).into_fallible();
    match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err((e, tcp))) => {
            lingering_close(tcp).await;
            Err(e)
        }
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the TLS handshake timed out",
        )),
    }
}

/// Closes a refused connection so that the runner reads the alert. In TLS 1.3 the client
/// writes its first application data right after its Finished, before it has the server's
/// verdict on its certificate, and keeps writing (HTTP/2 settings, window updates). Dropping
/// the socket makes the kernel answer those bytes with a reset; the runner's next write then
/// fails with "broken pipe", and its HTTP/2 stack gives up on that error before it reads the
/// alert: it would retry as if the network had failed instead of stopping as revoked. So send
/// FIN, then read and discard until the runner closes (bounded in time and bytes).
async fn lingering_close(mut tcp: TcpStream) {
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        while total < LINGER_BYTES {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsConnector;

    use super::accept_runner;
    use crate::{
        CertificateAuthority, RunnerClientVerifier, RunnerNames, SerialSet, Validity,
        runner_client_config, tunnel_server_config,
    };

    fn now_ms() -> i64 {
        i64::try_from(std::time::UNIX_EPOCH.elapsed().unwrap().as_millis()).unwrap()
    }

    /// In TLS 1.3 a revoked runner finishes its side of the handshake and writes before it
    /// learns the verdict. Its bytes reach a server that has already refused it; the alert
    /// must still be what it reads, not a reset (which would make it retry forever).
    #[tokio::test]
    async fn a_refused_runner_reads_the_alert_although_its_data_arrives_after_the_refusal() {
        let validity = || Validity::days_from(now_ms(), 1).unwrap();
        let ca = CertificateAuthority::generate("test", validity()).unwrap();
        let server = ca.issue_server(&["127.0.0.1"], validity()).unwrap();
        // No serial is active: every runner certificate counts as revoked.
        let active = Arc::new(SerialSet::default());
        let verifier = RunnerClientVerifier::new(ca.certificate_pem(), active).unwrap();
        let config = tunnel_server_config(
            &server.certificate_pem,
            server.private_key_pem.as_str(),
            Arc::new(verifier),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            accept_runner(Arc::new(config), tcp, Duration::from_secs(5))
                .await
                .is_ok()
        });

        let names = RunnerNames {
            org: "acme",
            runner: "r1",
            org_id: "org_1",
            runner_id: "run_1",
        };
        let runner = ca.issue_runner(names, validity()).unwrap();
        let client = runner_client_config(
            ca.certificate_pem(),
            &runner.certificate_pem,
            runner.private_key_pem.as_str(),
        )
        .unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .unwrap();
        // The server has verified the certificate and refused it by now.
        // Writes keep working (hyper gives up on a connection whose write fails, before it
        // reads the alert): the first would draw a reset from a closed socket, and a write
        // after the reset fails.
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .await
                .unwrap();
            tls.flush().await.unwrap();
        }
        let mut buf = [0u8; 64];
        let err = tls.read(&mut buf).await.unwrap_err();
        assert!(err.to_string().contains("CertificateRevoked"), "{err}");
        drop(tls);
        assert!(!served.await.unwrap(), "a revoked runner was accepted");
    }
}
