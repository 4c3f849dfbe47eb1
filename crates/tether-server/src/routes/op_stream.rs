//! The streamed form of `POST .../operations` (`Accept: application/x-ndjson`): a chunked
//! response of JSON lines. Log chunks come as they arrive,
//! `{"type":"log","stream":"stdout","data":"..."}`, then exactly one last line: either
//! `{"type":"result", ...}` (the same fields as the JSON response, logs replaced by
//! `truncated_bytes`) or `{"type":"error","status":N,"error":{"code","message","request_id"}}`
//! with the status the plain form would have answered.
//!
//! The response body is fed through a small bounded channel by a task that owns the
//! [`Call`]: a slow client slows the task, which fills the hub's bounded log channel, which
//! holds the runner (see `tunnel::call`). When the client goes away the body is dropped, the
//! task sees its channel closed and drops the call, which sends Cancel to the runner.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tether_core::ApiError;
use tether_proto::tunnel::{LogChunk, LogStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::AppError;
use crate::tunnel::hub::{Call, Event};

/// The media type that selects the streamed form.
pub const NDJSON: &str = "application/x-ndjson";

/// Lines buffered between the task and the response body.
const BODY_LINES: usize = 8;

/// Whether the request's `Accept` asks for the streamed form.
pub fn wants_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with(NDJSON)))
}

/// What the last line needs besides the runner's answer.
pub struct Meta {
    /// The runner's name.
    pub runner: String,
    /// The operation's name.
    pub operation: String,
    /// This HTTP request's id (for error lines).
    pub http_request_id: String,
}

/// Turns a call's outcome into the final line's value.
pub type Finish =
    fn(&Meta, Result<Event, crate::tunnel::hub::CallError>) -> Result<Value, AppError>;

/// Starts the task and returns the streaming response.
pub fn respond(call: Call, meta: Meta, finish: Finish) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(BODY_LINES);
    tokio::spawn(pump(call, meta, finish, tx));
    (
        [
            (http::header::CONTENT_TYPE, NDJSON),
            (http::header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

async fn pump(
    mut call: Call,
    meta: Meta,
    finish: Finish,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let mut text = Utf8Carry::default();
    loop {
        let event = tokio::select! {
            e = call.next() => e,
            // The client went away: dropping `call` cancels the operation.
            () = tx.closed() => return,
        };
        let (line, last) = match event {
            Ok(Event::Log(chunk)) => match text.line(&chunk) {
                Some(line) => (line, false),
                None => continue,
            },
            other => (last_line(&meta, finish(&meta, other)), true),
        };
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        if tx.send(Ok(Bytes::from(bytes))).await.is_err() || last {
            return;
        }
    }
}

fn last_line(meta: &Meta, outcome: Result<Value, AppError>) -> Value {
    match outcome {
        Ok(mut v) => {
            if let Some(obj) = v.as_object_mut() {
                obj.insert("type".into(), "result".into());
            }
            v
        }
        Err(e) => {
            if let Some(cause) = &e.cause {
                tracing::error!(code = e.api.code.as_str(), %cause, "streamed operation failed");
            }
            error_line(&e.api, &meta.http_request_id)
        }
    }
}

fn error_line(api: &ApiError, request_id: &str) -> Value {
    json!({"type": "error", "status": api.code.http_status(), "error": {
        "code": api.code.as_str(), "message": api.message, "request_id": request_id,
    }})
}

/// Turns byte chunks into text lines without splitting a UTF-8 character across two lines:
/// an incomplete sequence at the end of a chunk waits for the next chunk of the same stream.
#[derive(Default)]
struct Utf8Carry {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Utf8Carry {
    fn line(&mut self, chunk: &LogChunk) -> Option<Value> {
        let stderr = chunk.stream == LogStream::Stderr as i32;
        let carry = if stderr {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        carry.extend_from_slice(&chunk.data);
        let whole = complete_prefix(carry);
        let rest = carry.split_off(whole);
        let data = String::from_utf8_lossy(carry).into_owned();
        *carry = rest;
        if data.is_empty() {
            return None;
        }
        let stream = if stderr { "stderr" } else { "stdout" };
        Some(json!({"type": "log", "stream": stream, "data": data}))
    }
}

/// The length of `bytes` without a trailing incomplete UTF-8 sequence (invalid bytes are left
/// in, to be replaced).
fn complete_prefix(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => {
            // Invalid somewhere: keep back at most the last 3 bytes if they start a sequence.
            let tail = bytes.len().saturating_sub(3);
            (tail..bytes.len())
                .find(|&i| {
                    bytes
                        .get(i..)
                        .is_some_and(|t| matches!(std::str::from_utf8(t), Err(e) if e.valid_up_to() == 0 && e.error_len().is_none()))
                })
                .unwrap_or(bytes.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(stream: LogStream, data: &[u8]) -> LogChunk {
        LogChunk {
            request_id: "op_1".into(),
            stream: stream as i32,
            sequence: 0,
            data: data.to_vec(),
        }
    }

    #[test]
    fn a_character_split_across_chunks_is_kept_whole() {
        let mut c = Utf8Carry::default();
        let euro = "€".as_bytes();
        let first = c.line(&chunk(LogStream::Stdout, &[b'a', euro[0], euro[1]]));
        assert_eq!(first.unwrap()["data"], "a");
        // Another stream in between does not disturb the carry.
        let err = c.line(&chunk(LogStream::Stderr, b"e"));
        assert_eq!(err.unwrap()["stream"], "stderr");
        let second = c.line(&chunk(LogStream::Stdout, &[euro[2], b'b']));
        assert_eq!(second.unwrap()["data"], "€b");
        assert!(c.line(&chunk(LogStream::Stdout, &[euro[0]])).is_none());
    }

    #[test]
    fn invalid_bytes_are_replaced_not_held() {
        let mut c = Utf8Carry::default();
        let line = c.line(&chunk(LogStream::Stdout, &[0xff, b'x'])).unwrap();
        assert_eq!(line["data"], "\u{fffd}x");
        assert_eq!(complete_prefix(&[0xff, b'x', 0xe2, 0x82]), 2);
    }

    #[test]
    fn accept_selects_the_stream() {
        let mut h = http::HeaderMap::new();
        assert!(!wants_stream(&h));
        h.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json, application/x-ndjson;q=0.9"),
        );
        assert!(wants_stream(&h));
    }
}
