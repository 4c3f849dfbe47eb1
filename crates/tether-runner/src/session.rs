//! One tunnel session: dial, Hello, wait for Ack (phase 1), then heartbeats and operations
//! until the stream ends.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tether_core::clock::Clock;
use tether_proto::frame::validate_control_message;
use tether_proto::tunnel::tunnel_service_client::TunnelServiceClient;
use tether_proto::tunnel::{
    Ack, Close, CloseReason, ControlMessage, ErrorCode, Hello, OperationResult, RunnerMessage,
    control_message,
};
use tether_proto::{MAX_HEARTBEAT_INTERVAL, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::config::RunnerConfig;
use crate::connector::TunnelConnector;
use crate::credentials::Credentials;
use crate::error::{FatalCause, RunnerError, classify};
use crate::exec::Executor;

/// Shortest heartbeat interval the runner accepts from an Ack.
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(50);

/// Outbound queue depth (logs apply backpressure to jobs through it).
const OUTBOUND_QUEUE: usize = 256;

/// Everything needed to open sessions.
pub struct Dialer {
    /// The credentials.
    pub creds: Arc<Credentials>,
    /// The local configuration.
    pub cfg: Arc<RunnerConfig>,
    /// The transport.
    pub connector: TunnelConnector,
    /// Wall clock, for heartbeat timestamps.
    pub clock: Arc<dyn Clock>,
}

/// An accepted session (the server sent Ack).
pub struct Session {
    inbound: tonic::Streaming<ControlMessage>,
    out: mpsc::Sender<RunnerMessage>,
    /// The server's Ack.
    pub ack: Ack,
    heartbeat: Duration,
    clock: Arc<dyn Clock>,
}

impl Dialer {
    /// Dials the tunnel, sends Hello and waits for Ack.
    pub async fn open(&self) -> Result<Session, RunnerError> {
        let uri = format!("http://{}", self.creds.tunnel_endpoint.authority());
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| RunnerError::Credentials(format!("tunnel_endpoint: {e}")))?
            .connect_timeout(Duration::from_secs(self.cfg.tunnel.connect_timeout_secs))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = endpoint
            .connect_with_connector(self.connector.clone())
            .await
            .map_err(|e| classify(&e))?;
        let mut client = TunnelServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (out, rx) = mpsc::channel(OUTBOUND_QUEUE);
        out.send(RunnerMessage::hello(self.hello()))
            .await
            .map_err(|_| RunnerError::Transient("outbound queue closed".into()))?;
        let response = client
            .attach(ReceiverStream::new(rx))
            .await
            .map_err(|s| classify(&s))?;
        let mut inbound = response.into_inner();
        let wait = Duration::from_secs(self.cfg.tunnel.ack_timeout_secs);
        let first = tokio::time::timeout(wait, inbound.message())
            .await
            .map_err(|_| RunnerError::Transient(format!("no Ack from the server within {wait:?}")))?
            .map_err(|s| classify(&s))?;
        let ack = expect_ack(first)?;
        let heartbeat = heartbeat_interval(ack.heartbeat_interval_ms);
        Ok(Session {
            inbound,
            out,
            ack,
            heartbeat,
            clock: self.clock.clone(),
        })
    }

    fn hello(&self) -> Hello {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            runner_version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: self
                .cfg
                .capabilities()
                .iter()
                .map(|k| k.name().to_owned())
                .collect(),
            org_id: self.creds.org_id.clone(),
            runner_id: self.creds.runner_id.clone(),
        }
    }
}

fn expect_ack(first: Option<ControlMessage>) -> Result<Ack, RunnerError> {
    let msg = first
        .ok_or_else(|| RunnerError::Transient("the server closed the stream before Ack".into()))?;
    match msg.kind {
        Some(control_message::Kind::Ack(ack)) if ack.protocol_version == PROTOCOL_VERSION => {
            Ok(ack)
        }
        Some(control_message::Kind::Ack(ack)) => Err(RunnerError::Fatal(FatalCause::Refused(
            format!("unsupported protocol version {}", ack.protocol_version),
        ))),
        Some(control_message::Kind::Close(close)) => Err(close_error(&close)),
        _ => Err(RunnerError::Transient(
            "the server sent something other than Ack first".into(),
        )),
    }
}

/// The Ack's interval, clamped to [50 ms, 30 s]; 0 means the protocol default.
fn heartbeat_interval(ms: u32) -> Duration {
    match ms {
        0 => tether_proto::DEFAULT_HEARTBEAT_INTERVAL,
        ms => Duration::from_millis(u64::from(ms))
            .clamp(MIN_HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL),
    }
}

/// What a Close from the server means for the runner.
pub fn close_error(close: &Close) -> RunnerError {
    let msg = if close.message.is_empty() {
        "closed by the server".to_owned()
    } else {
        close.message.clone()
    };
    match CloseReason::try_from(close.reason).unwrap_or(CloseReason::Unspecified) {
        CloseReason::Revoked => RunnerError::Fatal(FatalCause::Revoked(msg)),
        CloseReason::ProtocolViolation => RunnerError::Fatal(FatalCause::Refused(msg)),
        CloseReason::Superseded | CloseReason::ShuttingDown | CloseReason::Unspecified => {
            RunnerError::Transient(format!("session closed by the server: {msg}"))
        }
    }
}

impl Session {
    /// Runs the session until the stream ends (an error) or `shutdown` completes (Ok).
    pub async fn run(
        mut self,
        cfg: Arc<RunnerConfig>,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<(), RunnerError> {
        let exec = Executor::new(cfg, self.out.clone());
        let mut ticker = tokio::time::interval_at(Instant::now() + self.heartbeat, self.heartbeat);
        let mut sequence = 0u64;
        // Liveness from the server's own heartbeats is enforced only once it has sent one
        // (HTTP/2 PING keepalive covers servers that do not). One timer for the session, not
        // one per message: when it fires it is moved to the real deadline if something
        // arrived meanwhile.
        let mut server_beats = false;
        let mut last_inbound = Instant::now();
        let silence = tokio::time::sleep(Duration::from_secs(86_400));
        tokio::pin!(silence);
        loop {
            tokio::select! {
                () = &mut *shutdown => return Ok(()),
                _ = ticker.tick() => {
                    sequence += 1;
                    let beat = RunnerMessage::heartbeat(sequence, self.clock.now_millis());
                    if self.out.send(beat).await.is_err() {
                        return Err(RunnerError::Transient("tunnel stream closed".into()));
                    }
                }
                () = &mut silence => {
                    let deadline = last_inbound + self.heartbeat * 3;
                    if !server_beats || deadline > Instant::now() {
                        let next = if server_beats { deadline } else { Instant::now() + Duration::from_secs(86_400) };
                        silence.as_mut().reset(next);
                        continue;
                    }
                    return Err(RunnerError::Transient("the server stopped sending heartbeats".into()));
                }
                msg = self.inbound.message() => {
                    last_inbound = Instant::now();
                    match msg {
                        Ok(Some(m)) => {
                            if !server_beats && matches!(m.kind, Some(control_message::Kind::Heartbeat(_))) {
                                server_beats = true;
                                silence.as_mut().reset(last_inbound + self.heartbeat * 3);
                            }
                            self.dispatch(m, &exec).await?;
                        }
                        Ok(None) => return Err(RunnerError::Transient("the server ended the stream".into())),
                        Err(status) => return Err(classify(&status)),
                    }
                }
            }
        }
    }

    async fn dispatch(&self, msg: ControlMessage, exec: &Executor) -> Result<(), RunnerError> {
        if let Err(e) = validate_control_message(&msg) {
            tracing::warn!(error = %e, "invalid message from the server");
            if let Some(control_message::Kind::Request(r)) = &msg.kind
                && tether_proto::frame::is_valid_id(&r.request_id)
            {
                let id = r.request_id.clone();
                let result = OperationResult::err(id, ErrorCode::InvalidRequest, e.to_string());
                let _ = self.out.send(RunnerMessage::result(result)).await;
            }
            return Ok(());
        }
        match msg.kind {
            Some(control_message::Kind::Request(req)) => exec.handle(req),
            Some(control_message::Kind::Cancel(c)) => exec.cancel(&c.request_id),
            Some(control_message::Kind::Close(close)) => return Err(close_error(&close)),
            Some(control_message::Kind::Heartbeat(_) | control_message::Kind::Ack(_)) | None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_interval_is_clamped() {
        assert_eq!(
            heartbeat_interval(0),
            tether_proto::DEFAULT_HEARTBEAT_INTERVAL
        );
        assert_eq!(heartbeat_interval(1), MIN_HEARTBEAT_INTERVAL);
        assert_eq!(heartbeat_interval(600_000), MAX_HEARTBEAT_INTERVAL);
    }

    #[test]
    fn close_reasons_map_to_fatal_or_transient() {
        let close = |r: CloseReason| Close {
            reason: r as i32,
            message: "m".into(),
        };
        assert!(matches!(
            close_error(&close(CloseReason::Revoked)),
            RunnerError::Fatal(FatalCause::Revoked(_))
        ));
        assert!(close_error(&close(CloseReason::ShuttingDown)).is_transient());
        assert!(
            close_error(&Close {
                reason: 99,
                message: String::new()
            })
            .is_transient()
        );
    }
}
