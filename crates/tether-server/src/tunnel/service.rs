//! `TunnelService.Attach`: one stream per runner session. The identity is the certificate's
//! (checked by the TLS verifier, then again here against the live serial set and the runner
//! resource); whatever the runner says about itself is only compared with it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tether_pki::{ActiveSerials, RunnerCertIdentity, parse_runner_certificate};
use tether_proto::frame::validate_runner_message;
use tether_proto::tunnel::tunnel_service_server::TunnelService;
use tether_proto::tunnel::{
    CloseReason, ControlMessage, Hello, LogChunk, RunnerMessage, runner_message,
};
use tether_store::RequestLogRecord;
use tether_store::resources::get_resource;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::state::AppState;
use crate::tunnel::call::STALL_TIMEOUT;
use crate::tunnel::hub::{LogRoute, Outbound, Session, SessionInfo};

/// How long a runner has to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// More heartbeats than this within one second is a flood.
const MAX_BEATS_PER_SECOND: u32 = 10;

/// The gRPC service.
#[derive(Clone)]
pub struct Service {
    state: AppState,
}

impl Service {
    /// A service over the application state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// Who is on the other end, from the certificate and the database.
#[derive(Debug, Clone)]
struct Peer {
    identity: RunnerCertIdentity,
    org_name: String,
    runner_name: String,
    ip: String,
}

type AttachStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ControlMessage, Status>> + Send>>;

#[tonic::async_trait]
impl TunnelService for Service {
    type AttachStream = AttachStream;

    async fn attach(
        &self,
        request: Request<Streaming<RunnerMessage>>,
    ) -> Result<Response<AttachStream>, Status> {
        let peer = self.peer(&request).await?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(run_session(self.state.clone(), peer, inbound, tx));
        let out = ReceiverStream::new(rx).map(|m| m.map(|b| *b));
        Ok(Response::new(Box::pin(out)))
    }
}

impl Service {
    async fn peer(&self, request: &Request<Streaming<RunnerMessage>>) -> Result<Peer, Status> {
        let denied = || Status::permission_denied("this runner certificate is not active");
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let leaf = certs.first().ok_or_else(denied)?;
        let identity = parse_runner_certificate(leaf).map_err(|_| denied())?;
        if !self.state.tunnel.active.is_active(&identity) {
            return Err(denied());
        }
        let reader = self.state.store.reader();
        let runner = get_resource(reader, &identity.runner_id)
            .await
            .map_err(|_| Status::unavailable("database"))?
            .filter(|r| r.kind == "Runner" && r.org_id == identity.org_id)
            .ok_or_else(denied)?;
        let org = get_resource(reader, &identity.org_id)
            .await
            .map_err(|_| Status::unavailable("database"))?
            .ok_or_else(denied)?;
        let ip = request
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        Ok(Peer {
            identity,
            org_name: org.name,
            runner_name: runner.name,
            ip,
        })
    }
}

/// Why a session ends.
enum End {
    /// The stream ended or broke.
    Gone,
    /// Closed from outside (revocation, superseded).
    Closed,
    /// Missed heartbeats.
    Silent,
    /// The runner broke the protocol.
    Violation(String),
}

async fn run_session(
    state: AppState,
    peer: Peer,
    mut inbound: Streaming<RunnerMessage>,
    tx: Outbound,
) {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(RunnerMessage {
            kind: Some(runner_message::Kind::Hello(h)),
        }))) => h,
        Ok(Ok(Some(_))) => return refuse(&state, &peer, &tx, "the first message must be Hello"),
        _ => return,
    };
    if let Err(reason) = check_hello(&hello, &peer.identity) {
        return refuse(&state, &peer, &tx, reason);
    }
    let now = state.clock.now_millis();
    let info = SessionInfo {
        org_id: peer.identity.org_id.clone(),
        runner_id: peer.identity.runner_id.clone(),
        version: hello.runner_version.clone(),
        capabilities: hello.capabilities.clone(),
    };
    let session_id = format!("sess_{:032x}", tether_core::id::fresh());
    let session = Session::new(session_id.clone(), info, tx, now);
    if let Some(old) = state.tunnel.hub.register(session.clone()) {
        old.close(
            CloseReason::Superseded,
            "a newer session of this runner replaced this one",
        );
    }
    let beat_ms = state.tunnel.heartbeat_ms();
    session.send(ControlMessage::ack(&session_id, beat_ms));
    super::registry::record_seen(&state, &session).await;
    tracing::info!(org = %peer.org_name, runner = %peer.runner_name, session = %session_id,
        version = %hello.runner_version, "runner connected");
    let end = serve(&state, &session, &mut inbound, beat_ms).await;
    state.tunnel.hub.unregister(&session);
    match &end {
        End::Violation(reason) => {
            session.close(CloseReason::ProtocolViolation, reason);
            audit_refusal(&state, &peer, reason);
        }
        End::Silent => session.close(CloseReason::Unspecified, "missed heartbeats"),
        // A runner that went away (killed, network lost) leaves no operation waiting for it.
        End::Gone => session.end(),
        // Closed from outside: `close` ended the session already.
        End::Closed => {}
    }
    super::registry::record_seen(&state, &session).await;
    tracing::info!(org = %peer.org_name, runner = %peer.runner_name, session = %session_id,
        reason = end.name(), "runner disconnected");
}

impl End {
    fn name(&self) -> &'static str {
        match self {
            End::Gone => "stream ended",
            End::Closed => "closed by the server",
            End::Silent => "missed heartbeats",
            End::Violation(_) => "protocol violation",
        }
    }
}

fn check_hello(hello: &Hello, identity: &RunnerCertIdentity) -> Result<(), &'static str> {
    let msg = RunnerMessage::hello(hello.clone());
    if validate_runner_message(&msg).is_err() {
        return Err("malformed Hello");
    }
    if hello.org_id != identity.org_id || hello.runner_id != identity.runner_id {
        return Err("the claimed org or runner does not match the certificate");
    }
    if hello.protocol_version != tether_proto::PROTOCOL_VERSION {
        return Err("unsupported protocol version");
    }
    Ok(())
}

/// Refuses a session before it started: Close(ProtocolViolation), an audit record, a log line.
fn refuse(state: &AppState, peer: &Peer, tx: &Outbound, reason: &str) {
    let close = ControlMessage::close(CloseReason::ProtocolViolation, reason);
    let _ = tx.try_send(Ok(Box::new(close)));
    let _ = tx.try_send(Err(Status::permission_denied(reason.to_owned())));
    audit_refusal(state, peer, reason);
}

/// Writes the refusal to the request log (the hash-chained audit of every access attempt).
fn audit_refusal(state: &AppState, peer: &Peer, reason: &str) {
    tracing::warn!(org = %peer.org_name, runner = %peer.runner_name,
        serial = %peer.identity.serial, %reason, "tunnel session refused");
    state.reqlog.record(RequestLogRecord {
        at: state.clock.now_millis(),
        request_id: tether_core::id::RequestId::generate().to_string(),
        org: peer.org_name.clone(),
        principal: format!("runner:{}@{}", peer.runner_name, peer.org_name),
        action: format!("tunnel.attach [{reason}]"),
        resource: format!("/v1/orgs/{}/runners/{}", peer.org_name, peer.runner_name),
        result: "denied".into(),
        status: 403,
        ip: peer.ip.clone(),
        user_agent: "tether-runner".into(),
        ..RequestLogRecord::default()
    });
}

/// The session loop: messages from the runner, the heartbeat watchdog, and outside closes.
async fn serve(
    state: &AppState,
    session: &Arc<Session>,
    inbound: &mut Streaming<RunnerMessage>,
    beat_ms: u32,
) -> End {
    let mut closed = session.closed();
    // One future for the whole session (not one per message): it ends the loop when it fires.
    let closed = closed.changed();
    tokio::pin!(closed);
    let period = Duration::from_millis(u64::from(beat_ms));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut flood = FloodGuard::default();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(m)) => {
                    if let Err(reason) = handle(state, session, m, &mut flood).await {
                        return End::Violation(reason);
                    }
                }
                Ok(None) | Err(_) => return End::Gone,
            },
            _ = &mut closed => return End::Closed,
            _ = tick.tick() => {
                let silent_for = state.clock.now_millis() - session.last_beat();
                if silent_for > i64::from(beat_ms) * i64::from(tether_proto::MISSED_HEARTBEATS_UNAVAILABLE) {
                    return End::Silent;
                }
                seq += 1;
                session.send(ControlMessage::heartbeat(seq, state.clock.now_millis()));
            }
        }
    }
}

async fn handle(
    state: &AppState,
    session: &Session,
    msg: RunnerMessage,
    flood: &mut FloodGuard,
) -> Result<(), String> {
    validate_runner_message(&msg).map_err(|e| format!("invalid frame: {e}"))?;
    let now = state.clock.now_millis();
    match msg.kind {
        Some(runner_message::Kind::Heartbeat(_)) => {
            if !flood.allow(now) {
                return Err("heartbeat flood".into());
            }
            session.beat(now);
            Ok(())
        }
        Some(runner_message::Kind::Result(r)) => {
            session.beat(now);
            if session.complete(r) {
                Ok(())
            } else {
                Err("a result for a request id this session was never given".into())
            }
        }
        Some(runner_message::Kind::Log(l)) => match session.log(l) {
            LogRoute::Unknown => {
                Err("a log chunk for a request id this session was never given".into())
            }
            LogRoute::Handled => Ok(()),
            LogRoute::Forward(tx, chunk) => {
                forward(session, tx, chunk).await;
                // The runner is alive (it sent this); time spent waiting for a slow reader
                // must not count as missed heartbeats.
                session.beat(state.clock.now_millis());
                Ok(())
            }
        },
        Some(runner_message::Kind::Hello(_)) => Err("a second Hello".into()),
        None => Err("unknown message type".into()),
    }
}

/// Hands a log chunk to a streaming response. While the response's channel is full this waits
/// (holding the session's reads, so the runner slows down), at most [`STALL_TIMEOUT`]; after
/// that the reader is considered stalled and its further chunks are dropped and counted. A
/// closed session stops the wait at once.
async fn forward(session: &Session, tx: mpsc::Sender<LogChunk>, chunk: LogChunk) {
    let id = chunk.request_id.clone();
    let len = chunk.data.len() as u64;
    let mut closed = session.closed();
    if *closed.borrow_and_update() {
        return;
    }
    tokio::select! {
        sent = tokio::time::timeout(STALL_TIMEOUT, tx.send(chunk)) => {
            // A send error means the reader is gone; its Call cancels the operation.
            if sent.is_err() {
                tracing::warn!(request_id = %id, "a log reader stalled; dropping its further logs");
                session.stalled(&id, len);
            }
        }
        _ = closed.changed() => {}
    }
}

/// Counts heartbeats per one-second window.
#[derive(Default)]
struct FloodGuard {
    window_start: i64,
    count: u32,
}

impl FloodGuard {
    fn allow(&mut self, now: i64) -> bool {
        if now - self.window_start >= 1000 {
            self.window_start = now;
            self.count = 0;
        }
        self.count += 1;
        self.count <= MAX_BEATS_PER_SECOND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_guard_allows_a_burst_then_refuses() {
        let mut g = FloodGuard::default();
        let t = 10_000;
        assert!((0..MAX_BEATS_PER_SECOND).all(|_| g.allow(t)));
        assert!(!g.allow(t + 10));
        assert!(g.allow(t + 1000));
    }
}
