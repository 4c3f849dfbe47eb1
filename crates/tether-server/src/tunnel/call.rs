//! One operation in flight on a runner session: what the session keeps for it ([`Pending`])
//! and what the waiting HTTP request holds ([`Call`]).
//!
//! Logs either accumulate in memory (the plain JSON response) or are forwarded chunk by chunk
//! through a bounded channel (the NDJSON stream). A forward waits while the channel is full,
//! which holds the session's read loop and so, through HTTP/2 flow control, the runner; a
//! reader that stays stalled for [`STALL_TIMEOUT`] stops receiving chunks (they are counted as
//! truncated) so one slow client cannot hold a runner for long. Both forms keep a total-bytes
//! cap. Dropping a [`Call`] before its result (the client went away) sends Cancel.
//!
//! A call's deadline is not a timer of its own: the hub's expiry task looks at every pending
//! call each [`EXPIRY_TICK`](crate::tunnel::hub::EXPIRY_TICK) and fails the ones past their
//! deadline (see [`Pending::expire`]). A timer per call cost two trips through the runtime's
//! timer lock per operation, contended between the worker threads at high concurrency.

use std::sync::Arc;
use std::time::Duration;

use tether_proto::tunnel::{ControlMessage, LogChunk, LogStream, OperationResult};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::tunnel::hub::Session;

/// At most this many log bytes are kept per operation in the buffered form.
pub const MAX_LOG_BYTES: usize = 1 << 20;
/// At most this many log bytes are forwarded per operation in the streamed form.
pub const MAX_STREAMED_LOG_BYTES: u64 = 64 << 20;
/// Chunks in flight between a session and a streaming response (each ≤ 64 KiB).
pub const LOG_CHANNEL_CHUNKS: usize = 32;
/// How long a forward may wait for a stalled reader before its chunks are dropped.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Logs of one operation (buffered form; in the streamed form only `truncated` is used).
#[derive(Debug, Default, Clone)]
pub struct Logs {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Bytes dropped because of the cap (or a stalled reader).
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

/// Where an operation's log chunks go.
enum Sink {
    /// Kept for the final response.
    Buffer(Logs),
    /// Forwarded to a streaming response.
    Stream {
        tx: mpsc::Sender<LogChunk>,
        sent: u64,
        truncated: u64,
        stalled: bool,
    },
    /// Nobody waits any more (timed out, client gone): chunks and the result are dropped.
    Abandoned,
}

/// What a waiting call receives: the result, or why there is none.
type Outcome = Result<(OperationResult, Logs), CallError>;

/// What a session keeps for one request id it issued.
pub(crate) struct Pending {
    done: Option<oneshot::Sender<Outcome>>,
    sink: Sink,
    deadline: Instant,
}

/// What to do with a log chunk.
pub enum LogRoute {
    /// The id was never issued on this session (a protocol violation).
    Unknown,
    /// Kept, counted or dropped; nothing more to do.
    Handled,
    /// Send it to this channel (outside the session's lock).
    Forward(mpsc::Sender<LogChunk>, LogChunk),
}

impl Pending {
    pub(crate) fn log(&mut self, chunk: LogChunk) -> LogRoute {
        match &mut self.sink {
            Sink::Buffer(logs) => logs.push(chunk),
            Sink::Abandoned => {}
            Sink::Stream {
                tx,
                sent,
                truncated,
                stalled,
            } => {
                let len = chunk.data.len() as u64;
                if *stalled || *sent + len > MAX_STREAMED_LOG_BYTES {
                    *truncated += len;
                } else {
                    *sent += len;
                    return LogRoute::Forward(tx.clone(), chunk);
                }
            }
        }
        LogRoute::Handled
    }

    /// Delivers the result to the waiter, if there still is one.
    pub(crate) fn complete(self, result: OperationResult) {
        let logs = match self.sink {
            Sink::Buffer(logs) => logs,
            Sink::Stream { truncated, .. } => Logs {
                truncated,
                ..Logs::default()
            },
            Sink::Abandoned => return,
        };
        if let Some(done) = self.done {
            let _ = done.send(Ok((result, logs)));
        }
    }

    /// Past its deadline with a waiter: tells the waiter it timed out and stops waiting.
    /// Returns whether it did (the runner is then sent a Cancel).
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        if self.deadline > now {
            return false;
        }
        let Some(done) = self.done.take() else {
            return false;
        };
        let _ = done.send(Err(CallError::Timeout));
        self.abandon();
        true
    }

    /// A forward of `bytes` timed out: stop forwarding, count the rest as truncated.
    pub(crate) fn stalled(&mut self, bytes: u64) {
        if let Sink::Stream {
            truncated, stalled, ..
        } = &mut self.sink
        {
            *stalled = true;
            *truncated += bytes;
        }
    }

    /// Nobody waits any more; the entry stays until the runner's result so that a late result
    /// or log chunk is not mistaken for a forged one.
    pub(crate) fn abandon(&mut self) {
        self.done = None;
        self.sink = Sink::Abandoned;
    }
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

/// One step of a call.
#[derive(Debug)]
pub enum Event {
    /// A log chunk (streamed calls only).
    Log(LogChunk),
    /// The result, with the buffered logs (or only the truncated count when streamed).
    Done(OperationResult, Logs),
}

/// An operation sent to a runner, held by whoever waits for it.
pub struct Call {
    session: Arc<Session>,
    request_id: String,
    result: oneshot::Receiver<Outcome>,
    logs: Option<mpsc::Receiver<LogChunk>>,
    finished: bool,
}

impl Call {
    /// Registers a pending request on `session`; the caller sends the request afterwards.
    pub(crate) fn register(
        session: Arc<Session>,
        request_id: String,
        wait: Duration,
        stream: bool,
    ) -> (Call, Pending) {
        let (done, result) = oneshot::channel();
        let (sink, logs) = if stream {
            let (tx, rx) = mpsc::channel(LOG_CHANNEL_CHUNKS);
            let sink = Sink::Stream {
                tx,
                sent: 0,
                truncated: 0,
                stalled: false,
            };
            (sink, Some(rx))
        } else {
            (Sink::Buffer(Logs::default()), None)
        };
        let call = Call {
            session,
            request_id,
            result,
            logs,
            finished: false,
        };
        let pending = Pending {
            done: Some(done),
            sink,
            deadline: Instant::now() + wait,
        };
        (call, pending)
    }

    /// Forgets the call without cancelling (the request was never sent).
    pub(crate) fn discard(mut self) {
        self.finished = true;
    }

    /// The session the call went to.
    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The request id issued for this call.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The next log chunk, or the result. Chunks the runner sent before its result always
    /// come first. After `Done` or an error the call is over. Past the deadline this fails
    /// with `Timeout` (a Cancel was sent), within one expiry tick.
    pub async fn next(&mut self) -> Result<Event, CallError> {
        loop {
            let outcome = match self.logs.as_mut() {
                Some(rx) => tokio::select! {
                    biased;
                    chunk = rx.recv() => match chunk {
                        Some(c) => return Ok(Event::Log(c)),
                        None => { self.logs = None; continue; }
                    },
                    r = &mut self.result => r,
                },
                None => (&mut self.result).await,
            };
            // Chunks still queued were sent before the result: hand them out first.
            if let Some(c) = self.logs.as_mut().and_then(|rx| rx.try_recv().ok()) {
                self.result = requeue(outcome);
                return Ok(Event::Log(c));
            }
            self.finished = true;
            return match outcome {
                Ok(Ok((r, l))) => Ok(Event::Done(r, l)),
                Ok(Err(e)) => Err(e),
                // The session ended and dropped its pending calls.
                Err(_) => Err(CallError::Unavailable),
            };
        }
    }

    /// Waits for the result (buffered calls).
    pub async fn finish(mut self) -> Result<(OperationResult, Logs), CallError> {
        loop {
            if let Event::Done(result, logs) = self.next().await? {
                return Ok((result, logs));
            }
        }
    }

    fn cancel(&mut self, reason: &str) {
        self.finished = true;
        self.session.abandon(&self.request_id);
        self.session
            .send(ControlMessage::cancel(&self.request_id, reason));
    }
}

/// Puts a received result back into a fresh receiver (it was taken before queued chunks).
fn requeue(outcome: Result<Outcome, oneshot::error::RecvError>) -> oneshot::Receiver<Outcome> {
    let (tx, rx) = oneshot::channel();
    if let Ok(v) = outcome {
        let _ = tx.send(v);
    }
    rx
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.finished {
            tracing::info!(request_id = %self.request_id, "the caller went away; cancelling");
            self.cancel("the caller went away");
        }
    }
}
