//! The hub: one live session per runner, keyed by the runner id *from its certificate*. It sends
//! operation requests to a runner's session and pairs the results and log chunks that come back
//! by request id. Request ids are issued here and are only valid on the session that got them,
//! so a result for another runner's request is an unknown id and closes the session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tether_proto::tunnel::{
    CloseReason, ControlMessage, LogChunk, LogStream, OperationRequest, OperationResult,
};
use tokio::sync::{oneshot, watch};
use tonic::Status;

/// The outbound half of a session's stream.
pub type Outbound = tokio::sync::mpsc::Sender<Result<ControlMessage, Status>>;

/// At most this many bytes of logs are kept per operation (the rest is counted, not kept).
const MAX_LOG_BYTES: usize = 1 << 20;

/// Logs of one operation.
#[derive(Debug, Default, Clone)]
pub struct Logs {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Bytes dropped because of the cap.
    pub truncated: u64,
}

impl Logs {
    fn push(&mut self, chunk: LogChunk) {
        let kept = self.stdout.len() + self.stderr.len();
        if kept + chunk.data.len() > MAX_LOG_BYTES {
            self.truncated += chunk.data.len() as u64;
            return;
        }
        if chunk.stream == LogStream::Stderr as i32 {
            self.stderr.extend_from_slice(&chunk.data);
        } else {
            self.stdout.extend_from_slice(&chunk.data);
        }
    }
}

struct Pending {
    done: oneshot::Sender<(OperationResult, Logs)>,
    logs: Logs,
}

/// One connected runner.
pub struct Session {
    /// Opaque session id.
    pub id: String,
    /// Org id from the certificate.
    pub org_id: String,
    /// Runner id from the certificate.
    pub runner_id: String,
    /// The runner's version (from Hello).
    pub version: String,
    /// Operations it offers (from Hello).
    pub capabilities: Vec<String>,
    /// When the session started (ms).
    pub connected_at: i64,
    last_beat: AtomicI64,
    tx: Outbound,
    pending: Mutex<HashMap<String, Pending>>,
    closed: watch::Sender<bool>,
}

impl Session {
    /// A new session.
    pub fn new(id: String, hello: SessionInfo, tx: Outbound, now: i64) -> Arc<Session> {
        Arc::new(Session {
            id,
            org_id: hello.org_id,
            runner_id: hello.runner_id,
            version: hello.version,
            capabilities: hello.capabilities,
            connected_at: now,
            last_beat: AtomicI64::new(now),
            tx,
            pending: Mutex::new(HashMap::new()),
            closed: watch::Sender::new(false),
        })
    }

    /// Records a heartbeat.
    pub fn beat(&self, now: i64) {
        self.last_beat.store(now, Ordering::Relaxed);
    }

    /// The last heartbeat (ms).
    pub fn last_beat(&self) -> i64 {
        self.last_beat.load(Ordering::Relaxed)
    }

    /// A receiver that turns true when the session is closed from outside.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Sends a message without waiting (false if the queue is full or the stream gone).
    pub fn send(&self, msg: ControlMessage) -> bool {
        self.tx.try_send(Ok(msg)).is_ok()
    }

    /// Ends the session on purpose: a Close, then the end of the stream, then every pending
    /// operation fails as unavailable.
    pub fn close(&self, reason: CloseReason, message: &str) {
        let tx = self.tx.clone();
        let close = ControlMessage::close(reason, message);
        let status = Status::unavailable(message.to_owned());
        tokio::spawn(async move {
            let wait = Duration::from_secs(1);
            let _ = tokio::time::timeout(wait, tx.send(Ok(close))).await;
            let _ = tokio::time::timeout(wait, tx.send(Err(status))).await;
        });
        self.closed.send_replace(true);
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Delivers a result; false if the id was never issued on this session (or is done).
    pub fn complete(&self, result: OperationResult) -> bool {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&result.request_id);
        match pending {
            Some(p) => {
                let _ = p.done.send((result, p.logs));
                true
            }
            None => false,
        }
    }

    /// Appends a log chunk; false if the id was never issued on this session.
    pub fn log(&self, chunk: LogChunk) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        match pending.get_mut(&chunk.request_id) {
            Some(p) => {
                p.logs.push(chunk);
                true
            }
            None => false,
        }
    }

    fn forget(&self, request_id: &str) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(request_id);
    }
}

/// What a Hello established (after it was checked against the certificate).
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Org id (from the certificate).
    pub org_id: String,
    /// Runner id (from the certificate).
    pub runner_id: String,
    /// Runner version.
    pub version: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
}

/// Why an operation did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The runner is not connected (or its session ended meanwhile).
    Unavailable,
    /// The runner did not answer in time; a Cancel was sent.
    Timeout,
    /// The runner did not advertise this operation.
    Unsupported(String),
}

/// Every live session, by runner id.
#[derive(Default)]
pub struct Hub {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl Hub {
    /// Registers a session, returning the one it replaces.
    pub fn register(&self, session: Arc<Session>) -> Option<Arc<Session>> {
        self.lock().insert(session.runner_id.clone(), session)
    }

    /// Removes a session if it is still the current one of its runner.
    pub fn unregister(&self, session: &Session) {
        let mut map = self.lock();
        if map
            .get(&session.runner_id)
            .is_some_and(|s| s.id == session.id)
        {
            map.remove(&session.runner_id);
        }
    }

    /// The live session of a runner.
    pub fn session(&self, runner_id: &str) -> Option<Arc<Session>> {
        self.lock().get(runner_id).cloned()
    }

    /// Closes a runner's live session (revocation, deletion).
    pub fn close_runner(&self, runner_id: &str, reason: CloseReason, message: &str) -> bool {
        let session = self.lock().remove(runner_id);
        match session {
            Some(s) => {
                s.close(reason, message);
                true
            }
            None => false,
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no runner is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request` to the runner `runner_id` of org `org_id` and waits for its result.
    /// The org is checked against the session's certificate identity as well: a runner is only
    /// ever reached for its own org.
    pub async fn call(
        &self,
        org_id: &str,
        runner_id: &str,
        mut request: OperationRequest,
        wait: Duration,
    ) -> Result<(OperationResult, Logs), CallError> {
        let session = self
            .session(runner_id)
            .filter(|s| s.org_id == org_id)
            .ok_or(CallError::Unavailable)?;
        let kind = request.kind().map(|k| k.name()).unwrap_or_default();
        if !session.capabilities.iter().any(|c| c == kind) {
            return Err(CallError::Unsupported(kind.to_owned()));
        }
        let request_id = format!("op_{:032x}", tether_core::id::fresh());
        request.request_id.clone_from(&request_id);
        let (done, rx) = oneshot::channel();
        session
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                request_id.clone(),
                Pending {
                    done,
                    logs: Logs::default(),
                },
            );
        if !session.send(ControlMessage::request(request)) {
            session.forget(&request_id);
            return Err(CallError::Unavailable);
        }
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(_)) => Err(CallError::Unavailable),
            Err(_) => {
                session.forget(&request_id);
                session.send(ControlMessage::cancel(&request_id, "timed out"));
                Err(CallError::Timeout)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::tunnel::{JobRun, control_message, operation_request::Operation};

    fn session(
        org: &str,
        runner: &str,
    ) -> (
        Arc<Session>,
        tokio::sync::mpsc::Receiver<Result<ControlMessage, Status>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let info = SessionInfo {
            org_id: org.into(),
            runner_id: runner.into(),
            version: "t".into(),
            capabilities: vec!["job.run".into()],
        };
        (Session::new(format!("s-{runner}"), info, tx, 0), rx)
    }

    fn job() -> OperationRequest {
        OperationRequest {
            operation: Some(Operation::JobRun(JobRun {
                command: "echo".into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn results_pair_by_request_id_and_only_on_their_session() {
        let hub = Arc::new(Hub::default());
        let (a, mut rx_a) = session("org_a", "run_a");
        let (b, _rx_b) = session("org_b", "run_b");
        hub.register(a.clone());
        hub.register(b.clone());
        // Wrong org for the runner: never reaches it.
        let wait = Duration::from_secs(5);
        assert_eq!(
            hub.call("org_b", "run_a", job(), wait).await.unwrap_err(),
            CallError::Unavailable
        );
        let h = hub.clone();
        let call = tokio::spawn(async move { h.call("org_a", "run_a", job(), wait).await });
        let sent = rx_a.recv().await.unwrap().unwrap();
        let Some(control_message::Kind::Request(req)) = sent.kind else {
            panic!("expected a request");
        };
        // Runner B cannot answer A's request; an unknown id is refused.
        let forged = OperationResult::err(&req.request_id, Default::default(), "x");
        assert!(!b.complete(forged));
        assert!(!a.complete(OperationResult::err("op_other", Default::default(), "x")));
        assert!(a.log(LogChunk {
            request_id: req.request_id.clone(),
            stream: LogStream::Stdout as i32,
            sequence: 0,
            data: b"hi".to_vec(),
        }));
        assert!(a.complete(OperationResult::err(
            &req.request_id,
            Default::default(),
            "done"
        )));
        let (result, logs) = call.await.unwrap().unwrap();
        assert_eq!(result.request_id, req.request_id);
        assert_eq!(logs.stdout, b"hi");
    }

    #[tokio::test]
    async fn closing_a_session_fails_its_pending_calls() {
        let hub = Arc::new(Hub::default());
        let (a, mut rx) = session("org_a", "run_a");
        hub.register(a);
        let h = hub.clone();
        let wait = Duration::from_secs(5);
        let call = tokio::spawn(async move { h.call("org_a", "run_a", job(), wait).await });
        rx.recv().await.unwrap().unwrap();
        assert!(hub.close_runner("run_a", CloseReason::Revoked, "revoked"));
        assert_eq!(call.await.unwrap().unwrap_err(), CallError::Unavailable);
        assert!(hub.is_empty());
    }
}
