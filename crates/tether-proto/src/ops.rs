//! Stable names for operations, capabilities and error codes, and message constructors.

use crate::tunnel::{
    Ack, Cancel, Close, CloseReason, ControlMessage, ErrorCode, Heartbeat, Hello, LogChunk,
    LogStream, OperationError, OperationOutput, OperationRequest, OperationResult, Ping, Pong,
    RunnerMessage, control_message, operation_output, operation_request::Operation,
    operation_result::Outcome, runner_message,
};

/// The closed set of operations a runner can be asked to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// `aws.sts.get_caller_identity`
    AwsStsGetCallerIdentity,
    /// `aws.s3.list_buckets`
    AwsS3ListBuckets,
    /// `aws.ec2.describe_vpcs`
    AwsEc2DescribeVpcs,
    /// `aws.ec2.create_vpc`
    AwsEc2CreateVpc,
    /// `k8s.list_pods`
    K8sListPods,
    /// `job.run`
    JobRun,
    /// `runner.ping`: runs nothing, answered at once (health check, round-trip probe).
    Ping,
}

impl OperationKind {
    /// Every operation, in protocol order.
    pub const ALL: [OperationKind; 7] = [
        Self::AwsStsGetCallerIdentity,
        Self::AwsS3ListBuckets,
        Self::AwsEc2DescribeVpcs,
        Self::AwsEc2CreateVpc,
        Self::K8sListPods,
        Self::JobRun,
        Self::Ping,
    ];

    /// The stable dotted name, also used as the capability string in `Hello`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AwsStsGetCallerIdentity => "aws.sts.get_caller_identity",
            Self::AwsS3ListBuckets => "aws.s3.list_buckets",
            Self::AwsEc2DescribeVpcs => "aws.ec2.describe_vpcs",
            Self::AwsEc2CreateVpc => "aws.ec2.create_vpc",
            Self::K8sListPods => "k8s.list_pods",
            Self::JobRun => "job.run",
            Self::Ping => "runner.ping",
        }
    }

    /// Parses a dotted name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the operation needs an `AwsAuth` block.
    pub fn is_aws(self) -> bool {
        self.name().starts_with("aws.")
    }

    /// The kind of a generated operation.
    pub fn of(op: &Operation) -> Self {
        match op {
            Operation::AwsStsGetCallerIdentity(_) => Self::AwsStsGetCallerIdentity,
            Operation::AwsS3ListBuckets(_) => Self::AwsS3ListBuckets,
            Operation::AwsEc2DescribeVpcs(_) => Self::AwsEc2DescribeVpcs,
            Operation::AwsEc2CreateVpc(_) => Self::AwsEc2CreateVpc,
            Operation::K8sListPods(_) => Self::K8sListPods,
            Operation::JobRun(_) => Self::JobRun,
            Operation::Ping(_) => Self::Ping,
        }
    }
}

impl OperationRequest {
    /// The kind of operation requested, if the oneof is set.
    pub fn kind(&self) -> Option<OperationKind> {
        self.operation.as_ref().map(OperationKind::of)
    }

    /// A `runner.ping` (the request id is issued by the hub).
    pub fn ping() -> Self {
        Self {
            operation: Some(Operation::Ping(Ping {})),
            ..Self::default()
        }
    }
}

impl ErrorCode {
    /// The stable lower-case machine code (`runner_timeout`), as used by the HTTP API.
    pub fn code(self) -> &'static str {
        match self {
            Self::Unspecified | Self::Internal => "internal",
            Self::RunnerUnavailable => "runner_unavailable",
            Self::RunnerTimeout => "runner_timeout",
            Self::PermissionDenied => "permission_denied",
            Self::NotFound => "not_found",
            Self::InvalidRequest => "invalid_request",
            Self::Cancelled => "cancelled",
        }
    }
}

impl OperationResult {
    /// A successful result.
    pub fn ok(request_id: impl Into<String>, output: OperationOutput) -> Self {
        Self {
            request_id: request_id.into(),
            outcome: Some(Outcome::Output(output)),
        }
    }

    /// The answer to a `runner.ping`.
    pub fn pong(request_id: impl Into<String>) -> Self {
        let output = OperationOutput {
            kind: Some(operation_output::Kind::Pong(Pong {})),
        };
        Self::ok(request_id, output)
    }

    /// A failed result. `message` is shown to the caller: never put a credential in it.
    pub fn err(request_id: impl Into<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        let error = OperationError {
            code: code as i32,
            message: message.into(),
        };
        Self {
            request_id: request_id.into(),
            outcome: Some(Outcome::Error(error)),
        }
    }

    /// The error code, if this result is an error (unknown numbers read as `Internal`).
    pub fn error_code(&self) -> Option<ErrorCode> {
        match &self.outcome {
            Some(Outcome::Error(e)) => {
                Some(ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Internal))
            }
            _ => None,
        }
    }
}

impl RunnerMessage {
    /// Wraps a Hello.
    pub fn hello(hello: Hello) -> Self {
        Self {
            kind: Some(runner_message::Kind::Hello(hello)),
        }
    }
    /// Wraps a Heartbeat.
    pub fn heartbeat(sequence: u64, sent_at_unix_ms: i64) -> Self {
        Self {
            kind: Some(runner_message::Kind::Heartbeat(Heartbeat {
                sequence,
                sent_at_unix_ms,
            })),
        }
    }
    /// Wraps an OperationResult.
    pub fn result(result: OperationResult) -> Self {
        Self {
            kind: Some(runner_message::Kind::Result(result)),
        }
    }
    /// Wraps a LogChunk.
    pub fn log(request_id: &str, stream: LogStream, sequence: u64, data: Vec<u8>) -> Self {
        let chunk = LogChunk {
            request_id: request_id.to_owned(),
            stream: stream as i32,
            sequence,
            data,
        };
        Self {
            kind: Some(runner_message::Kind::Log(chunk)),
        }
    }
}

impl ControlMessage {
    /// Wraps an Ack.
    pub fn ack(session_id: impl Into<String>, heartbeat_interval_ms: u32) -> Self {
        let ack = Ack {
            protocol_version: crate::PROTOCOL_VERSION,
            session_id: session_id.into(),
            heartbeat_interval_ms,
        };
        Self {
            kind: Some(control_message::Kind::Ack(ack)),
        }
    }
    /// Wraps a Heartbeat.
    pub fn heartbeat(sequence: u64, sent_at_unix_ms: i64) -> Self {
        let beat = Heartbeat {
            sequence,
            sent_at_unix_ms,
        };
        Self {
            kind: Some(control_message::Kind::Heartbeat(beat)),
        }
    }
    /// Wraps an OperationRequest.
    pub fn request(request: OperationRequest) -> Self {
        Self {
            kind: Some(control_message::Kind::Request(request)),
        }
    }
    /// Wraps a Cancel.
    pub fn cancel(request_id: impl Into<String>, reason: impl Into<String>) -> Self {
        let cancel = Cancel {
            request_id: request_id.into(),
            reason: reason.into(),
        };
        Self {
            kind: Some(control_message::Kind::Cancel(cancel)),
        }
    }
    /// Wraps a Close.
    pub fn close(reason: CloseReason, message: impl Into<String>) -> Self {
        let close = Close {
            reason: reason as i32,
            message: message.into(),
        };
        Self {
            kind: Some(control_message::Kind::Close(close)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_round_trip() {
        for kind in OperationKind::ALL {
            assert_eq!(OperationKind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(OperationKind::from_name("shell.exec"), None);
        assert!(OperationKind::AwsEc2CreateVpc.is_aws());
        assert!(!OperationKind::JobRun.is_aws());
        assert!(!OperationKind::Ping.is_aws());
        assert_eq!(OperationRequest::ping().kind(), Some(OperationKind::Ping));
        assert!(OperationResult::pong("r1").error_code().is_none());
    }

    #[test]
    fn error_codes_have_stable_machine_names() {
        assert_eq!(ErrorCode::RunnerUnavailable.code(), "runner_unavailable");
        assert_eq!(ErrorCode::RunnerTimeout.code(), "runner_timeout");
        assert_eq!(ErrorCode::PermissionDenied.code(), "permission_denied");
        assert_eq!(ErrorCode::NotFound.code(), "not_found");
        assert_eq!(ErrorCode::Internal.code(), "internal");
        let r = OperationResult::err("r1", ErrorCode::NotFound, "no such bucket");
        assert_eq!(r.error_code(), Some(ErrorCode::NotFound));
        let bogus = OperationResult {
            request_id: "r".into(),
            outcome: Some(Outcome::Error(OperationError {
                code: 99,
                message: String::new(),
            })),
        };
        assert_eq!(bogus.error_code(), Some(ErrorCode::Internal));
    }
}
