//! A minimal tunnel server for the runner's tests: tonic `TunnelService` over mTLS with
//! tether-pki certificates on 127.0.0.1:0, a fake `whoami`, and a tiny CONNECT proxy.
#![allow(dead_code, reason = "each test binary uses part of this module")]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_pki::{
    CertificateAuthority, IssuedCertificate, RunnerClientVerifier, RunnerNames, SerialSet,
    Validity, accept_runner, parse_runner_certificate, tunnel_server_config,
};
use tether_proto::tunnel::tunnel_service_server::{TunnelService, TunnelServiceServer};
use tether_proto::tunnel::{CloseReason, ControlMessage, RunnerMessage, runner_message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub const ORG_ID: &str = "org_01test";
pub const RUNNER_ID: &str = "res_01runner";
pub const API_KEY: &str = "tether_test_key_abc";

pub fn now_ms() -> i64 {
    i64::try_from(std::time::UNIX_EPOCH.elapsed().unwrap().as_millis()).unwrap()
}

type Outbound = mpsc::Sender<Result<ControlMessage, Status>>;

#[derive(Default)]
struct State {
    sessions: Mutex<HashMap<String, Outbound>>,
    received: Mutex<Option<mpsc::UnboundedSender<RunnerMessage>>>,
    hellos: Mutex<u32>,
    whoami_calls: Mutex<u32>,
    api_keys: Mutex<HashSet<String>>,
}

#[derive(Clone)]
struct Svc {
    state: Arc<State>,
    heartbeat_ms: u32,
}

#[tonic::async_trait]
impl TunnelService for Svc {
    type AttachStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<ControlMessage, Status>> + Send>>;

    async fn attach(
        &self,
        request: Request<Streaming<RunnerMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no cert"))?;
        let id = parse_runner_certificate(&certs[0])
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let state = self.state.clone();
        let heartbeat_ms = self.heartbeat_ms;
        tokio::spawn(async move {
            let Ok(Some(first)) = inbound.message().await else {
                return;
            };
            let Some(runner_message::Kind::Hello(hello)) = &first.kind else {
                let _ = tx.send(Err(Status::invalid_argument("Hello first"))).await;
                return;
            };
            if hello.org_id != id.org_id || hello.runner_id != id.runner_id {
                let close =
                    ControlMessage::close(CloseReason::ProtocolViolation, "claimed identity");
                let _ = tx.send(Ok(close)).await;
                return;
            }
            *state.hellos.lock().unwrap() += 1;
            forward(&state, first);
            let _ = tx
                .send(Ok(ControlMessage::ack("sess-1", heartbeat_ms)))
                .await;
            state
                .sessions
                .lock()
                .unwrap()
                .insert(id.runner_id.clone(), tx.clone());
            drop(tx);
            while let Ok(Some(msg)) = inbound.message().await {
                forward(&state, msg);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn forward(state: &State, msg: RunnerMessage) {
    if let Some(tx) = state.received.lock().unwrap().as_ref() {
        let _ = tx.send(msg);
    }
}

pub struct TestServer {
    pub ca: CertificateAuthority,
    pub active: Arc<SerialSet>,
    pub port: u16,
    pub api_port: u16,
    state: Arc<State>,
    received: tokio::sync::Mutex<mpsc::UnboundedReceiver<RunnerMessage>>,
}

impl TestServer {
    /// Starts a tunnel server and a whoami endpoint. `server_names` go into the server cert.
    pub async fn start(heartbeat_ms: u32) -> Arc<TestServer> {
        let ca = CertificateAuthority::generate("test", Validity::days_from(now_ms(), 30).unwrap())
            .unwrap();
        let server_cert = ca
            .issue_server(
                &["localhost", "127.0.0.1", "tunnel.test"],
                Validity::days_from(now_ms(), 30).unwrap(),
            )
            .unwrap();
        let active = Arc::new(SerialSet::default());
        let state = Arc::new(State::default());
        let (rtx, rrx) = mpsc::unbounded_channel();
        *state.received.lock().unwrap() = Some(rtx);
        state.api_keys.lock().unwrap().insert(API_KEY.to_owned());
        let port = serve_tunnel(
            &ca,
            &server_cert,
            active.clone(),
            Svc {
                state: state.clone(),
                heartbeat_ms,
            },
        )
        .await;
        let api_port = serve_whoami(state.clone()).await;
        Arc::new(TestServer {
            ca,
            active,
            port,
            api_port,
            state,
            received: tokio::sync::Mutex::new(rrx),
        })
    }

    /// Issues an active runner certificate.
    pub fn issue(&self, validity: Validity) -> IssuedCertificate {
        let names = RunnerNames {
            org: "acme",
            runner: "r1",
            org_id: ORG_ID,
            runner_id: RUNNER_ID,
        };
        let issued = self.ca.issue_runner(names, validity).unwrap();
        self.active.insert(issued.serial.clone());
        issued
    }

    /// The credentials document for `issued`, dialing `tunnel_host`.
    pub fn credentials_json(
        &self,
        issued: &IssuedCertificate,
        tunnel_host: &str,
        ca_pem: &str,
    ) -> String {
        serde_json::json!({
            "type": "tether_runner",
            "org": "acme",
            "runner": "r1",
            "runner_id": RUNNER_ID,
            "api_key": API_KEY,
            "api_endpoint": format!("http://127.0.0.1:{}", self.api_port),
            "tunnel_endpoint": format!("https://{tunnel_host}:{}", self.port),
            "ca_certificate": ca_pem,
            "runner_certificate": issued.certificate_pem,
            "runner_private_key": issued.private_key_pem.as_str(),
        })
        .to_string()
    }

    /// Fresh, valid credentials dialing 127.0.0.1.
    pub fn credentials(&self) -> (String, IssuedCertificate) {
        let issued = self.issue(Validity::days_from(now_ms(), 1).unwrap());
        (
            self.credentials_json(&issued, "127.0.0.1", self.ca.certificate_pem()),
            issued,
        )
    }

    pub fn send(&self, msg: ControlMessage) {
        let tx = self
            .state
            .sessions
            .lock()
            .unwrap()
            .get(RUNNER_ID)
            .cloned()
            .expect("no session");
        tx.try_send(Ok(msg)).unwrap();
    }

    /// Revokes the serial and closes the live session, as regenerate-credentials does.
    pub fn revoke(&self, issued: &IssuedCertificate) {
        self.active.remove(&issued.serial);
        if let Some(tx) = self.state.sessions.lock().unwrap().remove(RUNNER_ID) {
            let _ = tx.try_send(Ok(ControlMessage::close(
                CloseReason::Revoked,
                "credentials regenerated",
            )));
        }
    }

    /// Ends the live session without a reason (as a restarting server would).
    pub fn drop_session(&self) {
        if let Some(tx) = self.state.sessions.lock().unwrap().remove(RUNNER_ID) {
            let _ = tx.try_send(Err(Status::unavailable("restarting")));
        }
    }

    pub fn revoke_api_key(&self) {
        self.state.api_keys.lock().unwrap().clear();
    }

    pub fn hellos(&self) -> u32 {
        *self.state.hellos.lock().unwrap()
    }

    pub fn whoami_calls(&self) -> u32 {
        *self.state.whoami_calls.lock().unwrap()
    }

    /// The next message the runner sent, skipping heartbeats unless `heartbeats`.
    pub async fn next(&self, heartbeats: bool) -> RunnerMessage {
        let mut rx = self.received.lock().await;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("timed out waiting for a runner message")
                .expect("channel closed");
            if heartbeats || !matches!(msg.kind, Some(runner_message::Kind::Heartbeat(_))) {
                return msg;
            }
        }
    }
}

async fn serve_tunnel(
    ca: &CertificateAuthority,
    cert: &IssuedCertificate,
    active: Arc<SerialSet>,
    svc: Svc,
) -> u16 {
    let verifier = RunnerClientVerifier::new(ca.certificate_pem(), active).unwrap();
    let config = tunnel_server_config(
        &cert.certificate_pem,
        &cert.private_key_pem,
        Arc::new(verifier),
    )
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (config, tx) = (config.clone(), tx.clone());
            tokio::spawn(async move {
                // The server's own handshake: a refused runner reads the alert.
                if let Ok(tls) = accept_runner(config, tcp, Duration::from_secs(10)).await {
                    let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                }
            });
        }
    });
    let service =
        TunnelServiceServer::new(svc).max_decoding_message_size(tether_proto::MAX_MESSAGE_BYTES);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(ReceiverStream::new(rx)),
    );
    port
}

async fn serve_whoami(state: Arc<State>) -> u16 {
    use axum::http::{HeaderMap, StatusCode};
    let app = axum::Router::new().route(
        "/v1/auth/whoami",
        axum::routing::get(move |headers: HeaderMap| {
            let state = state.clone();
            async move {
                *state.whoami_calls.lock().unwrap() += 1;
                let key = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or_default()
                    .to_owned();
                if state.api_keys.lock().unwrap().contains(&key) {
                    Ok(axum::Json(
                        serde_json::json!({"id": "sa_runner", "kind": "service_account"}),
                    ))
                } else {
                    Err(StatusCode::UNAUTHORIZED)
                }
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// A tiny HTTP CONNECT proxy on 127.0.0.1:0. It sends every CONNECT to `target` (so a
/// non-loopback name like `tunnel.test` reaches the test server), or refuses with 403.
pub struct Proxy {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<String>>>,
}

pub async fn connect_proxy(target: SocketAddr, refuse: bool) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 || head.len() > 8192 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                log.lock().unwrap().push(line);
                if refuse {
                    let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
                    return;
                }
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    Proxy { port, seen }
}
