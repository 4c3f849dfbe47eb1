//! Size-checked, validating decoders for tunnel frames. They never panic on any input.
//!
//! tonic decodes the gRPC stream itself (with [`crate::MAX_MESSAGE_BYTES`] as its limit); the
//! server then runs [`validate_runner_message`] on every message it receives, and the runner runs
//! [`validate_control_message`]. [`decode_runner_message`] and [`decode_control_message`] do both
//! steps on raw bytes, for fuzzing and tests.

use prost::Message;

use crate::tunnel::{
    ControlMessage, Hello, LogChunk, OperationRequest, OperationResult, RunnerMessage,
    control_message, runner_message,
};
use crate::{MAX_CAPABILITIES, MAX_ID_LEN, MAX_LOG_CHUNK_BYTES, MAX_MESSAGE_BYTES};

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is larger than [`MAX_MESSAGE_BYTES`].
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the frame.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a protobuf message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The message has no known kind (empty, or a kind this version does not know).
    #[error("unknown message type")]
    UnknownKind,
    /// A field breaks a protocol rule.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Decodes and validates a message sent by a runner.
pub fn decode_runner_message(bytes: &[u8]) -> Result<RunnerMessage, FrameError> {
    check_len(bytes)?;
    let msg = RunnerMessage::decode(bytes).map_err(|e| FrameError::Malformed(e.to_string()))?;
    validate_runner_message(&msg)?;
    Ok(msg)
}

/// Decodes and validates a message sent by the control plane.
pub fn decode_control_message(bytes: &[u8]) -> Result<ControlMessage, FrameError> {
    check_len(bytes)?;
    let msg = ControlMessage::decode(bytes).map_err(|e| FrameError::Malformed(e.to_string()))?;
    validate_control_message(&msg)?;
    Ok(msg)
}

fn check_len(bytes: &[u8]) -> Result<(), FrameError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(FrameError::TooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    Ok(())
}

/// Checks the protocol rules of a runner message (not the session state: whether a request id
/// was issued, or belongs to this runner, is the server's to check).
pub fn validate_runner_message(msg: &RunnerMessage) -> Result<(), FrameError> {
    match &msg.kind {
        None => Err(FrameError::UnknownKind),
        Some(runner_message::Kind::Hello(h)) => validate_hello(h),
        Some(runner_message::Kind::Heartbeat(_)) => Ok(()),
        Some(runner_message::Kind::Result(r)) => validate_result(r),
        Some(runner_message::Kind::Log(l)) => validate_log(l),
    }
}

/// Checks the protocol rules of a control-plane message.
pub fn validate_control_message(msg: &ControlMessage) -> Result<(), FrameError> {
    match &msg.kind {
        None => Err(FrameError::UnknownKind),
        Some(control_message::Kind::Request(r)) => validate_request(r),
        Some(control_message::Kind::Cancel(c)) => check_id("request_id", &c.request_id),
        Some(
            control_message::Kind::Ack(_)
            | control_message::Kind::Heartbeat(_)
            | control_message::Kind::Close(_),
        ) => Ok(()),
    }
}

fn validate_hello(h: &Hello) -> Result<(), FrameError> {
    check_id("org_id", &h.org_id)?;
    check_id("runner_id", &h.runner_id)?;
    if h.capabilities.len() > MAX_CAPABILITIES {
        return Err(invalid("capabilities", "too many"));
    }
    if h.capabilities.iter().any(|c| c.len() > MAX_ID_LEN) || h.runner_version.len() > MAX_ID_LEN {
        return Err(invalid("hello", "string too long"));
    }
    Ok(())
}

fn validate_result(r: &OperationResult) -> Result<(), FrameError> {
    check_id("request_id", &r.request_id)?;
    if r.outcome.is_none() {
        return Err(invalid("outcome", "missing"));
    }
    Ok(())
}

fn validate_log(l: &LogChunk) -> Result<(), FrameError> {
    check_id("request_id", &l.request_id)?;
    if l.data.len() > MAX_LOG_CHUNK_BYTES {
        return Err(invalid("data", "log chunk too large"));
    }
    Ok(())
}

fn validate_request(r: &OperationRequest) -> Result<(), FrameError> {
    check_id("request_id", &r.request_id)?;
    let kind = r.kind().ok_or(FrameError::UnknownKind)?;
    if kind.is_aws() && r.aws_auth.as_ref().and_then(|a| a.mode.as_ref()).is_none() {
        return Err(invalid("aws_auth", "required for aws operations"));
    }
    Ok(())
}

/// Whether `id` is a well-formed protocol id: 1 to [`MAX_ID_LEN`] characters of
/// `[A-Za-z0-9_.:-]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

fn check_id(field: &'static str, id: &str) -> Result<(), FrameError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(invalid(field, "not a valid id"))
    }
}

fn invalid(field: &'static str, reason: &'static str) -> FrameError {
    FrameError::Invalid { field, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel::{
        AwsAuth, AwsS3ListBuckets, ErrorCode, JobRun, LogStream, RunnerIdentity, aws_auth,
        operation_request::Operation,
    };
    use proptest::prelude::*;

    fn hello() -> Hello {
        Hello {
            protocol_version: crate::PROTOCOL_VERSION,
            runner_version: "0.1.0".into(),
            capabilities: vec!["job.run".into()],
            org_id: "org_01".into(),
            runner_id: "res_01".into(),
        }
    }

    #[test]
    fn round_trips_every_runner_kind() {
        let msgs = [
            RunnerMessage::hello(hello()),
            RunnerMessage::heartbeat(7, 1),
            RunnerMessage::result(OperationResult::err("r1", ErrorCode::NotFound, "gone")),
            RunnerMessage::log("r1", LogStream::Stdout, 0, b"hi".to_vec()),
        ];
        for m in msgs {
            assert_eq!(decode_runner_message(&m.encode_to_vec()).unwrap(), m);
        }
    }

    #[test]
    fn refuses_empty_oversized_and_invalid_frames() {
        assert_eq!(decode_runner_message(&[]), Err(FrameError::UnknownKind));
        let big = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            decode_runner_message(&big),
            Err(FrameError::TooLarge { .. })
        ));
        let mut h = hello();
        h.org_id = "org/../x".into();
        let bytes = RunnerMessage::hello(h).encode_to_vec();
        assert!(matches!(
            decode_runner_message(&bytes),
            Err(FrameError::Invalid { .. })
        ));
        let log = RunnerMessage::log("r", LogStream::Stderr, 0, vec![0; MAX_LOG_CHUNK_BYTES + 1]);
        assert!(decode_runner_message(&log.encode_to_vec()).is_err());
        // An unknown field number (a future message kind) decodes to "no kind".
        assert_eq!(
            decode_runner_message(&[0x4a, 0x00]),
            Err(FrameError::UnknownKind)
        );
    }

    #[test]
    fn aws_requests_need_an_auth_mode() {
        let mut req = OperationRequest {
            request_id: "r1".into(),
            operation: Some(Operation::AwsS3ListBuckets(AwsS3ListBuckets {})),
            ..Default::default()
        };
        let bytes = ControlMessage::request(req.clone()).encode_to_vec();
        assert!(decode_control_message(&bytes).is_err());
        req.aws_auth = Some(AwsAuth {
            region: String::new(),
            mode: Some(aws_auth::Mode::Runner(RunnerIdentity {})),
        });
        let bytes = ControlMessage::request(req).encode_to_vec();
        assert!(decode_control_message(&bytes).is_ok());
        let job = OperationRequest {
            request_id: "r2".into(),
            operation: Some(Operation::JobRun(JobRun {
                command: "echo".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(decode_control_message(&ControlMessage::request(job).encode_to_vec()).is_ok());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_runner_message(&bytes);
            let _ = decode_control_message(&bytes);
        }

        #[test]
        fn valid_ids_round_trip(id in "[A-Za-z0-9_.:-]{1,128}") {
            prop_assert!(is_valid_id(&id));
        }
    }
}
