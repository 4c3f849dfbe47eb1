//! The hub: one live session per runner, keyed by the runner id *from its certificate*. It sends
//! operation requests to a runner's session and pairs the results and log chunks that come back
//! by request id. Request ids are issued here and are only valid on the session that got them,
//! so a result for another runner's request is an unknown id and closes the session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tether_proto::tunnel::{
    CloseReason, ControlMessage, LogChunk, OperationRequest, OperationResult,
};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

use crate::tunnel::call::Pending;
pub use crate::tunnel::call::{Call, CallError, Event, LogRoute, Logs};

/// How often the hub looks for calls past their deadline: a call times out at most this long
/// after its deadline.
pub const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// The outbound half of a session's stream. Messages are boxed so that the channel's blocks
/// (32 slots, allocated whole) stay small on the many idle sessions: a `ControlMessage` is
/// 232 bytes, a box 8.
pub type Outbound = tokio::sync::mpsc::Sender<Result<Box<ControlMessage>, Status>>;

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
    /// Set by [`Session::end`] under the `pending` lock: no call may be added afterwards
    /// (nothing would ever complete or expire it).
    ended: AtomicBool,
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
            ended: AtomicBool::new(false),
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
        self.tx.try_send(Ok(Box::new(msg))).is_ok()
    }

    /// Ends the session on purpose: a Close, then the end of the stream, then every pending
    /// operation fails as unavailable.
    pub fn close(&self, reason: CloseReason, message: &str) {
        let tx = self.tx.clone();
        let close = Box::new(ControlMessage::close(reason, message));
        let status = Status::unavailable(message.to_owned());
        tokio::spawn(async move {
            let wait = Duration::from_secs(1);
            let _ = tokio::time::timeout(wait, tx.send(Ok(close))).await;
            let _ = tokio::time::timeout(wait, tx.send(Err(status))).await;
        });
        self.closed.send_replace(true);
        self.end();
    }

    /// The session is over: every pending operation fails as unavailable at once. Its request
    /// ids were valid only on this session, so no result can arrive any more.
    pub fn end(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        self.ended.store(true, Ordering::Relaxed);
        pending.clear();
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
                p.complete(result);
                true
            }
            None => false,
        }
    }

    /// Routes a log chunk: kept, counted, or to be forwarded to a streaming response.
    pub fn log(&self, chunk: LogChunk) -> LogRoute {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        match pending.get_mut(&chunk.request_id) {
            Some(p) => p.log(chunk),
            None => LogRoute::Unknown,
        }
    }

    /// A forward to a streaming response timed out: its remaining chunks are dropped.
    pub fn stalled(&self, request_id: &str, bytes: u64) {
        if let Some(p) = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(request_id)
        {
            p.stalled(bytes);
        }
    }

    /// Nobody waits for `request_id` any more; its late chunks and result are dropped quietly.
    pub(crate) fn abandon(&self, request_id: &str) {
        if let Some(p) = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(request_id)
        {
            p.abandon();
        }
    }

    /// Fails the calls past their deadline (see [`Pending::expire`]) and cancels them on the
    /// runner. Returns how many.
    fn expire(&self, now: Instant) -> usize {
        let expired: Vec<String> = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending
                .iter_mut()
                .filter_map(|(id, p)| p.expire(now).then(|| id.clone()))
                .collect()
        };
        for id in &expired {
            self.send(ControlMessage::cancel(id, "timed out"));
        }
        expired.len()
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

/// Publishes the number of live sessions (`tether_tunnel_sessions`), under the map's lock so
/// that concurrent updates cannot publish out of order.
fn publish_len(len: usize) {
    metrics::gauge!("tether_tunnel_sessions").set(len as f64);
}

/// Every live session, by runner id.
#[derive(Default)]
pub struct Hub {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl Hub {
    /// Registers a session, returning the one it replaces.
    pub fn register(&self, session: Arc<Session>) -> Option<Arc<Session>> {
        let mut map = self.lock();
        let old = map.insert(session.runner_id.clone(), session);
        publish_len(map.len());
        old
    }

    /// Removes a session if it is still the current one of its runner.
    pub fn unregister(&self, session: &Session) {
        let mut map = self.lock();
        if map
            .get(&session.runner_id)
            .is_some_and(|s| s.id == session.id)
        {
            map.remove(&session.runner_id);
            publish_len(map.len());
        }
    }

    /// The live session of a runner.
    pub fn session(&self, runner_id: &str) -> Option<Arc<Session>> {
        self.lock().get(runner_id).cloned()
    }

    /// Closes a runner's live session (revocation, deletion).
    pub fn close_runner(&self, runner_id: &str, reason: CloseReason, message: &str) -> bool {
        let session = {
            let mut map = self.lock();
            let removed = map.remove(runner_id);
            publish_len(map.len());
            removed
        };
        match session {
            Some(s) => {
                s.close(reason, message);
                true
            }
            None => false,
        }
    }

    /// Fails every call past its deadline, on every session; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let sessions: Vec<Arc<Session>> = self.lock().values().cloned().collect();
        sessions.iter().map(|s| s.expire(now)).sum()
    }

    /// Runs [`Hub::expire`] every [`EXPIRY_TICK`], forever (the tunnel listener spawns it).
    pub async fn run_expiry(&self) {
        let mut tick = tokio::time::interval(EXPIRY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let n = self.expire(Instant::now());
            if n > 0 {
                tracing::info!(calls = n, "runner operations timed out; cancelled");
            }
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

    /// Sends `request` to the runner `runner_id` of org `org_id` and waits for its result
    /// (logs buffered).
    pub async fn call(
        &self,
        org_id: &str,
        runner_id: &str,
        request: OperationRequest,
        wait: Duration,
    ) -> Result<(OperationResult, Logs), CallError> {
        self.start(org_id, runner_id, request, wait, false)?
            .finish()
            .await
    }

    /// Sends `request` to the runner `runner_id` of org `org_id` and returns the call to wait
    /// on; with `stream`, log chunks are handed out as they arrive. The org is checked against
    /// the session's certificate identity as well: a runner is only ever reached for its own
    /// org. Dropping the call before its result cancels the operation on the runner.
    pub fn start(
        &self,
        org_id: &str,
        runner_id: &str,
        mut request: OperationRequest,
        wait: Duration,
        stream: bool,
    ) -> Result<Call, CallError> {
        let session = self
            .session(runner_id)
            .filter(|s| s.org_id == org_id)
            .ok_or(CallError::Unavailable)?;
        let kind = request.kind().map(|k| k.name()).unwrap_or_default();
        if !session.capabilities.iter().any(|c| c == kind) {
            return Err(CallError::Unsupported(kind.to_owned()));
        }
        // Only ever matched for equality, on this session: no need for a time-ordered id.
        let request_id = tether_core::id::format_prefixed("op", tether_core::id::unordered());
        request.request_id.clone_from(&request_id);
        // The call keeps the session (to cancel on drop); borrow it from there.
        let (call, pending) = Call::register(session, request_id, wait, stream);
        let session = call.session();
        {
            let mut table = session
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // The session ended since it was looked up: its runner is gone.
            if session.ended.load(Ordering::Relaxed) {
                drop(table);
                call.discard();
                return Err(CallError::Unavailable);
            }
            table.insert(request.request_id.clone(), pending);
        }
        if !session.send(ControlMessage::request(request)) {
            session.forget(call.request_id());
            call.discard();
            return Err(CallError::Unavailable);
        }
        Ok(call)
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
        tokio::sync::mpsc::Receiver<Result<Box<ControlMessage>, Status>>,
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
        assert!(matches!(
            a.log(LogChunk {
                request_id: req.request_id.clone(),
                stream: tether_proto::tunnel::LogStream::Stdout as i32,
                sequence: 0,
                data: b"hi".to_vec(),
            }),
            LogRoute::Handled
        ));
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

    fn chunk(id: &str, data: &[u8]) -> LogChunk {
        LogChunk {
            request_id: id.into(),
            stream: tether_proto::tunnel::LogStream::Stdout as i32,
            sequence: 0,
            data: data.to_vec(),
        }
    }

    async fn sent_id(
        rx: &mut tokio::sync::mpsc::Receiver<Result<Box<ControlMessage>, Status>>,
    ) -> String {
        match rx.recv().await.unwrap().unwrap().kind {
            Some(control_message::Kind::Request(r)) => r.request_id,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_streamed_call_hands_out_chunks_in_order_then_the_result() {
        let hub = Hub::default();
        let (a, mut rx) = session("org_a", "run_a");
        hub.register(a.clone());
        let wait = Duration::from_secs(5);
        let mut call = hub.start("org_a", "run_a", job(), wait, true).unwrap();
        let id = sent_id(&mut rx).await;
        for data in [&b"one"[..], b"two"] {
            let LogRoute::Forward(tx, c) = a.log(chunk(&id, data)) else {
                panic!("a streamed chunk is forwarded")
            };
            tx.send(c).await.unwrap();
        }
        assert!(a.complete(OperationResult::err(&id, Default::default(), "x")));
        let mut seen = Vec::new();
        loop {
            match call.next().await.unwrap() {
                Event::Log(c) => seen.push(c.data),
                Event::Done(r, logs) => {
                    assert_eq!(r.request_id, id);
                    assert_eq!(logs.truncated, 0);
                    break;
                }
            }
        }
        assert_eq!(seen, [b"one".to_vec(), b"two".to_vec()]);
    }

    #[tokio::test]
    async fn a_dropped_call_cancels_and_its_late_answers_are_not_violations() {
        let hub = Hub::default();
        let (a, mut rx) = session("org_a", "run_a");
        hub.register(a.clone());
        let call = hub
            .start("org_a", "run_a", job(), Duration::from_secs(5), true)
            .unwrap();
        let id = sent_id(&mut rx).await;
        drop(call);
        match rx.recv().await.unwrap().unwrap().kind {
            Some(control_message::Kind::Cancel(c)) => assert_eq!(c.request_id, id),
            other => panic!("expected Cancel, got {other:?}"),
        }
        // The runner may still send output and its "cancelled" result: accepted, dropped.
        assert!(matches!(a.log(chunk(&id, b"late")), LogRoute::Handled));
        assert!(a.complete(OperationResult::err(&id, Default::default(), "cancelled")));
        // After that the id is spent.
        assert!(!a.complete(OperationResult::err(&id, Default::default(), "again")));
    }

    #[tokio::test]
    async fn a_stalled_reader_loses_further_chunks_which_are_counted() {
        let hub = Hub::default();
        let (a, mut rx) = session("org_a", "run_a");
        hub.register(a.clone());
        let mut call = hub
            .start("org_a", "run_a", job(), Duration::from_secs(5), true)
            .unwrap();
        let id = sent_id(&mut rx).await;
        a.stalled(&id, 10);
        assert!(matches!(a.log(chunk(&id, b"12345")), LogRoute::Handled));
        assert!(a.complete(OperationResult::err(&id, Default::default(), "x")));
        let Event::Done(_, logs) = call.next().await.unwrap() else {
            panic!("no chunk was forwarded")
        };
        assert_eq!(logs.truncated, 15);
    }

    #[tokio::test]
    async fn an_ended_session_takes_no_new_calls() {
        let hub = Hub::default();
        let (a, _rx) = session("org_a", "run_a");
        hub.register(a.clone());
        a.end();
        let err = hub
            .start("org_a", "run_a", job(), Duration::from_secs(5), false)
            .err();
        assert_eq!(err, Some(CallError::Unavailable));
    }

    #[tokio::test]
    async fn a_call_times_out_with_a_cancel() {
        let hub = Arc::new(Hub::default());
        let (a, mut rx) = session("org_a", "run_a");
        hub.register(a);
        let h = hub.clone();
        let expiry = tokio::spawn(async move { h.run_expiry().await });
        let wait = Duration::from_millis(50);
        let call = hub.start("org_a", "run_a", job(), wait, false).unwrap();
        let id = sent_id(&mut rx).await;
        let started = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(5), call.finish()).await;
        assert_eq!(
            ended.expect("never timed out").unwrap_err(),
            CallError::Timeout
        );
        let took = started.elapsed();
        // One tick after the deadline, give or take a loaded machine.
        assert!(
            took < wait + EXPIRY_TICK + Duration::from_secs(2),
            "timed out after {took:?}"
        );
        expiry.abort();
        match rx.recv().await.unwrap().unwrap().kind {
            Some(control_message::Kind::Cancel(c)) => assert_eq!(c.request_id, id),
            other => panic!("expected Cancel, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn expiry_fails_only_calls_past_their_deadline_and_only_once() {
        let hub = Hub::default();
        let (a, mut rx) = session("org_a", "run_a");
        hub.register(a);
        let short = hub
            .start("org_a", "run_a", job(), Duration::from_secs(1), false)
            .unwrap();
        let long = hub
            .start("org_a", "run_a", job(), Duration::from_secs(60), true)
            .unwrap();
        let (short_id, _) = (sent_id(&mut rx).await, sent_id(&mut rx).await);
        let now = Instant::now();
        assert_eq!(hub.expire(now), 0);
        let later = now + Duration::from_secs(2);
        assert_eq!(hub.expire(later), 1);
        // Expired already: not failed (nor cancelled) a second time.
        assert_eq!(hub.expire(later), 0);
        assert_eq!(short.finish().await.unwrap_err(), CallError::Timeout);
        match rx.recv().await.unwrap().unwrap().kind {
            Some(control_message::Kind::Cancel(c)) => assert_eq!(c.request_id, short_id),
            other => panic!("expected Cancel, got {other:?}"),
        }
        // The streamed call with a later deadline still waits, then times out in its turn.
        assert_eq!(hub.expire(later + Duration::from_secs(60)), 1);
        let mut long = long;
        assert_eq!(long.next().await.unwrap_err(), CallError::Timeout);
    }
}
