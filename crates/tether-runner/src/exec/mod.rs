//! Runs the operations the control plane sends: a closed, typed set, never arbitrary shell.

#[cfg(feature = "aws")]
pub mod aws;
mod job;
pub mod k8s;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tether_proto::ops::OperationKind;
use tether_proto::tunnel::operation_request::Operation;
use tether_proto::tunnel::{ErrorCode, OperationRequest, OperationResult, RunnerMessage};
use tokio::sync::{mpsc, oneshot};

use crate::config::RunnerConfig;

/// Most operations running at once; more are answered with `runner_unavailable`.
const MAX_RUNNING: usize = 64;

/// Whether this build and configuration can run `kind`.
pub fn supported(kind: OperationKind, cfg: &RunnerConfig) -> bool {
    match kind {
        OperationKind::JobRun => !cfg.job.allowed_commands.is_empty(),
        // The AWS executors are built with the (default) feature `aws`.
        OperationKind::AwsStsGetCallerIdentity
        | OperationKind::AwsS3ListBuckets
        | OperationKind::AwsEc2DescribeVpcs
        | OperationKind::AwsEc2CreateVpc => cfg!(feature = "aws"),
        OperationKind::K8sListPods => cfg.k8s.kubeconfig.is_some(),
        OperationKind::Ping => true,
    }
}

type Running = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

/// Dispatches requests of one tunnel session and tracks them for cancellation.
pub struct Executor {
    cfg: Arc<RunnerConfig>,
    capabilities: Vec<OperationKind>,
    out: mpsc::Sender<RunnerMessage>,
    running: Running,
}

impl Executor {
    /// An executor sending logs and results to `out`.
    pub fn new(cfg: Arc<RunnerConfig>, out: mpsc::Sender<RunnerMessage>) -> Self {
        let capabilities = cfg.capabilities();
        Self {
            cfg,
            capabilities,
            out,
            running: Arc::default(),
        }
    }

    /// Starts `req` in the background; its result is sent when it ends.
    pub fn handle(&self, req: OperationRequest) {
        let id = req.request_id.clone();
        let refuse = |code, msg: String| {
            let out = self.out.clone();
            let result = OperationResult::err(id.clone(), code, msg);
            tokio::spawn(async move { out.send(RunnerMessage::result(result)).await });
        };
        let Some(kind) = req.kind() else {
            return refuse(ErrorCode::InvalidRequest, "unknown operation".into());
        };
        if !self.capabilities.contains(&kind) {
            let msg = format!("operation {} is not enabled on this runner", kind.name());
            return refuse(ErrorCode::InvalidRequest, msg);
        }
        if kind == OperationKind::Ping {
            return self.pong(id);
        }
        let cancel_rx = {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if running.contains_key(&id) {
                drop(running);
                return refuse(ErrorCode::InvalidRequest, "duplicate request id".into());
            }
            if running.len() >= MAX_RUNNING {
                drop(running);
                return refuse(ErrorCode::RunnerUnavailable, "runner busy".into());
            }
            let (tx, rx) = oneshot::channel();
            running.insert(id.clone(), tx);
            rx
        };
        tracing::info!(request_id = %id, operation = kind.name(), "operation started");
        let (cfg, out, running) = (self.cfg.clone(), self.out.clone(), self.running.clone());
        tokio::spawn(async move {
            let result = run(req, &cfg, cancel_rx, &out).await;
            running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            tracing::info!(request_id = %id, error = ?result.error_code(), "operation finished");
            let _ = out.send(RunnerMessage::result(result)).await;
        });
    }

    /// Answers a ping at once: no task, no table entry, no log line (it runs nothing).
    fn pong(&self, id: String) {
        match self
            .out
            .try_send(RunnerMessage::result(OperationResult::pong(id)))
        {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(msg)) => {
                let out = self.out.clone();
                tokio::spawn(async move { out.send(msg).await });
            }
        }
    }

    /// Cancels a running operation (no-op if it is not running).
    pub fn cancel(&self, request_id: &str) {
        let tx = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(request_id);
        if let Some(tx) = tx {
            tracing::info!(request_id, "cancel requested");
            let _ = tx.send(());
        }
    }

    /// Cancels everything (the session ended: no one is waiting for the results).
    pub fn cancel_all(&self) {
        let all: Vec<_> = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (_, tx) in all {
            let _ = tx.send(());
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

/// The deadline of a request: its own timeout, else the default, capped by the maximum.
fn deadline(req: &OperationRequest, cfg: &RunnerConfig) -> Duration {
    let max = Duration::from_secs(cfg.job.max_timeout_secs);
    let asked = match req.timeout_ms {
        0 => Duration::from_secs(cfg.job.default_timeout_secs),
        ms => Duration::from_millis(u64::from(ms)),
    };
    asked.min(max)
}

async fn run(
    mut req: OperationRequest,
    cfg: &RunnerConfig,
    cancel: oneshot::Receiver<()>,
    out: &mpsc::Sender<RunnerMessage>,
) -> OperationResult {
    let timeout = deadline(&req, cfg);
    let id = req.request_id.clone();
    match req.operation.take() {
        Some(Operation::JobRun(job)) => job::run(&id, job, &cfg.job, timeout, cancel, out).await,
        #[cfg(feature = "aws")]
        Some(
            op @ (Operation::AwsStsGetCallerIdentity(_)
            | Operation::AwsS3ListBuckets(_)
            | Operation::AwsEc2DescribeVpcs(_)
            | Operation::AwsEc2CreateVpc(_)),
        ) => {
            let auth = req.aws_auth.take();
            bounded(&id, aws::run(&id, auth, op), timeout, cancel).await
        }
        Some(Operation::K8sListPods(op)) => {
            let kubeconfig = cfg.k8s.kubeconfig.as_deref();
            bounded(&id, k8s::run(&id, kubeconfig, op, timeout), timeout, cancel).await
        }
        _ => OperationResult::err(id, ErrorCode::InvalidRequest, "operation not supported"),
    }
}

/// Runs `fut` until it ends, the deadline passes, or the request is cancelled.
#[cfg_attr(
    not(feature = "aws"),
    allow(dead_code, reason = "used by the AWS executors")
)]
async fn bounded(
    id: &str,
    fut: impl std::future::Future<Output = OperationResult>,
    timeout: Duration,
    cancel: oneshot::Receiver<()>,
) -> OperationResult {
    tokio::select! {
        result = fut => result,
        () = tokio::time::sleep(timeout) => {
            OperationResult::err(id, ErrorCode::RunnerTimeout, "operation timed out")
        }
        _ = cancel => OperationResult::err(id, ErrorCode::Cancelled, "operation cancelled"),
    }
}
