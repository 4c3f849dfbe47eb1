//! `job.run`: one allowlisted command, environment injection, streamed logs, timeout, cancel.

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tether_proto::tunnel::operation_output::Kind as OutputKind;
use tether_proto::tunnel::{
    ErrorCode, JobOutcome, JobRun, LogStream, OperationOutput, OperationResult, RunnerMessage,
};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

use crate::config::JobConfig;

/// Size of one read of the child's output (below `MAX_LOG_CHUNK_BYTES`).
const READ_CHUNK: usize = 16 * 1024;

/// Variables the control plane may never set: they would let it run code other than the
/// allowlisted command (loader preload, shell start-up files, lookup path).
const FORBIDDEN_ENV: [&str; 7] = [
    "PATH",
    "BASH_ENV",
    "ENV",
    "IFS",
    "SHELLOPTS",
    "PS4",
    "NODE_OPTIONS",
];

fn env_name_allowed(name: &str) -> bool {
    let well_formed = name.bytes().enumerate().all(|(i, b)| {
        b == b'_'
            || b.is_ascii_uppercase()
            || b.is_ascii_lowercase()
            || (i > 0 && b.is_ascii_digit())
    });
    let upper = name.to_ascii_uppercase();
    !name.is_empty()
        && name.len() <= 128
        && well_formed
        && !upper.starts_with("LD_")
        && !upper.starts_with("DYLD_")
        && !FORBIDDEN_ENV.contains(&upper.as_str())
}

/// The working directory: `work_dir` joined with a relative path that cannot climb out.
fn working_dir(cfg: &JobConfig, relative: &str) -> Option<PathBuf> {
    let base = cfg.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let rel = Path::new(relative);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| base.join(rel))
}

fn refuse(id: &str, code: ErrorCode, msg: &str) -> OperationResult {
    OperationResult::err(id, code, msg)
}

/// Runs the job to completion, timeout or cancellation.
pub async fn run(
    id: &str,
    job: JobRun,
    cfg: &JobConfig,
    timeout: Duration,
    cancel: oneshot::Receiver<()>,
    out: &mpsc::Sender<RunnerMessage>,
) -> OperationResult {
    if !cfg.allowed_commands.contains(&job.command) {
        return refuse(
            id,
            ErrorCode::PermissionDenied,
            "command is not on the runner's allowlist",
        );
    }
    if let Some(bad) = job.env.iter().find(|v| !env_name_allowed(&v.name)) {
        let msg = format!("environment variable '{}' may not be set", bad.name);
        return refuse(id, ErrorCode::InvalidRequest, &msg);
    }
    let Some(dir) = working_dir(cfg, &job.working_dir) else {
        return refuse(
            id,
            ErrorCode::InvalidRequest,
            "working_dir must be a relative path",
        );
    };
    let mut cmd = Command::new(&job.command);
    cmd.args(&job.args)
        .current_dir(dir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout or a cancel ends what it started too.
        .process_group(0)
        .kill_on_drop(true);
    for name in &cfg.inherit_env {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    for var in &job.env {
        cmd.env(&var.name, &var.value);
    }
    let started = Instant::now();
    let spawned = cmd.spawn();
    // The injected values are wiped now (EnvVar zeroizes on drop); `cmd` keeps copies only
    // until it is dropped below.
    drop(job);
    drop(cmd);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return refuse(
                id,
                ErrorCode::Internal,
                &format!("could not start the command: {e}"),
            );
        }
    };
    let seq = Arc::new(AtomicU64::new(0));
    let readers = [
        child
            .stdout
            .take()
            .map(|r| pump(id, r, LogStream::Stdout, seq.clone(), out.clone())),
        child
            .stderr
            .take()
            .map(|r| pump(id, r, LogStream::Stderr, seq.clone(), out.clone())),
    ];
    let status = tokio::select! {
        status = child.wait() => Ok(status),
        () = tokio::time::sleep(timeout) => Err(ErrorCode::RunnerTimeout),
        _ = cancel => Err(ErrorCode::Cancelled),
    };
    let status = match status {
        Ok(s) => s,
        Err(code) => {
            stop_group(&mut child).await;
            for r in readers.into_iter().flatten() {
                r.abort();
            }
            let msg = if code == ErrorCode::RunnerTimeout {
                "job timed out"
            } else {
                "job cancelled"
            };
            return refuse(id, code, msg);
        }
    };
    for r in readers.into_iter().flatten() {
        let _ = r.await;
    }
    match status {
        Ok(status) => OperationResult::ok(id, job_output(status, started.elapsed())),
        Err(e) => refuse(
            id,
            ErrorCode::Internal,
            &format!("waiting for the command: {e}"),
        ),
    }
}

/// How long a job's processes get to exit after SIGTERM before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// Ends a job's whole process group (the job leads it): SIGTERM, then SIGKILL after
/// [`KILL_GRACE`] or as soon as the leader is gone, so that processes the command started
/// (a provider plugin, a pipeline, a background `&`) do not outlive a timeout or a cancel.
async fn stop_group(child: &mut tokio::process::Child) {
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(group) = group {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
        let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
        // The group outlives its leader while any member is left; none may stay.
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    let _ = child.kill().await;
}

fn job_output(status: std::process::ExitStatus, elapsed: Duration) -> OperationOutput {
    #[cfg(unix)]
    let signal = std::os::unix::process::ExitStatusExt::signal(&status);
    #[cfg(not(unix))]
    let signal = None;
    let outcome = JobOutcome {
        exit_code: status.code(),
        signal,
        duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
    };
    OperationOutput {
        kind: Some(OutputKind::Job(outcome)),
    }
}

/// Streams one output pipe as LogChunks, in order, until it closes.
fn pump<R: AsyncRead + Unpin + Send + 'static>(
    id: &str,
    mut reader: R,
    stream: LogStream,
    seq: Arc<AtomicU64>,
    out: mpsc::Sender<RunnerMessage>,
) -> tokio::task::JoinHandle<()> {
    let id = id.to_owned();
    tokio::spawn(async move {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let data = buf.get(..n).map(<[u8]>::to_vec).unwrap_or_default();
            let sequence = seq.fetch_add(1, Ordering::Relaxed);
            if out
                .send(RunnerMessage::log(&id, stream, sequence, data))
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::tunnel::{EnvVar, operation_result::Outcome, runner_message::Kind};

    fn cfg() -> JobConfig {
        JobConfig {
            allowed_commands: vec!["sh".into(), "sleep".into()],
            ..JobConfig::default()
        }
    }

    fn job(command: &str, args: &[&str], env: &[(&str, &str)]) -> JobRun {
        JobRun {
            command: command.into(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: env
                .iter()
                .map(|(n, v)| EnvVar {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            working_dir: String::new(),
        }
    }

    async fn run_collect(j: JobRun, timeout: Duration) -> (OperationResult, Vec<RunnerMessage>) {
        let (tx, mut rx) = mpsc::channel(64);
        let (_cancel_tx, cancel_rx) = oneshot::channel();
        let result = run("r1", j, &cfg(), timeout, cancel_rx, &tx).await;
        drop(tx);
        let mut logs = Vec::new();
        while let Some(m) = rx.recv().await {
            logs.push(m);
        }
        (result, logs)
    }

    fn stdout_of(logs: &[RunnerMessage]) -> String {
        logs.iter()
            .filter_map(|m| match &m.kind {
                Some(Kind::Log(l)) if l.stream == LogStream::Stdout as i32 => {
                    Some(String::from_utf8_lossy(&l.data).into_owned())
                }
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn runs_an_allowlisted_command_with_injected_env_and_streams_output() {
        let j = job(
            "sh",
            &["-c", "echo hello $GREETING; echo oops >&2; exit 3"],
            &[("GREETING", "world")],
        );
        let (result, logs) = run_collect(j, Duration::from_secs(10)).await;
        assert_eq!(stdout_of(&logs), "hello world\n");
        let Some(Outcome::Output(OperationOutput {
            kind: Some(OutputKind::Job(o)),
        })) = result.outcome
        else {
            panic!("{result:?}")
        };
        assert_eq!(o.exit_code, Some(3));
    }

    #[tokio::test]
    async fn refuses_commands_off_the_allowlist_and_dangerous_env() {
        let (r, _) = run_collect(job("rm", &["-rf", "/tmp/x"], &[]), Duration::from_secs(1)).await;
        assert_eq!(r.error_code(), Some(ErrorCode::PermissionDenied));
        for name in ["LD_PRELOAD", "PATH", "BASH_ENV", "1X", "A=B", ""] {
            let (r, _) = run_collect(
                job("sh", &["-c", "true"], &[(name, "x")]),
                Duration::from_secs(1),
            )
            .await;
            assert_eq!(r.error_code(), Some(ErrorCode::InvalidRequest), "{name}");
        }
        let mut j = job("sh", &["-c", "true"], &[]);
        j.working_dir = "../etc".into();
        let (r, _) = run_collect(j, Duration::from_secs(1)).await;
        assert_eq!(r.error_code(), Some(ErrorCode::InvalidRequest));
    }

    #[tokio::test]
    async fn times_out() {
        let started = Instant::now();
        let (r, _) = run_collect(job("sleep", &["30"], &[]), Duration::from_millis(200)).await;
        assert_eq!(r.error_code(), Some(ErrorCode::RunnerTimeout));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn cancels() {
        let (tx, _rx) = mpsc::channel(64);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let c = cfg();
        let task = tokio::spawn(async move {
            run(
                "r1",
                job("sleep", &["30"], &[]),
                &c,
                Duration::from_secs(30),
                cancel_rx,
                &tx,
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel_tx.send(()).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.error_code(), Some(ErrorCode::Cancelled));
    }

    /// A cancel ends the job's whole process group: a process the command started in the
    /// background (which would otherwise be re-parented and keep running) is gone too.
    #[tokio::test]
    async fn cancel_ends_the_processes_the_job_started() {
        let (tx, mut rx) = mpsc::channel(64);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let c = cfg();
        let task = tokio::spawn(async move {
            run(
                "r1",
                job("sh", &["-c", "sleep 300 & echo $!; wait"], &[]),
                &c,
                Duration::from_secs(30),
                cancel_rx,
                &tx,
            )
            .await
        });
        // The background sleep's pid, from the job's first output line.
        let mut out = String::new();
        while !out.contains('\n') {
            let Some(m) = rx.recv().await else { break };
            out.push_str(&stdout_of(&[m]));
        }
        let pid: i32 = out.trim().parse().unwrap();
        let alive = |pid: i32| {
            std::path::Path::new(&format!("/proc/{pid}")).exists()
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ")
        };
        assert!(alive(pid), "the background process did not start");
        cancel_tx.send(()).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.error_code(), Some(ErrorCode::Cancelled));
        let gone = Instant::now();
        while alive(pid) && gone.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !alive(pid),
            "the job's background process outlived the cancel"
        );
    }

    #[test]
    fn env_names() {
        assert!(env_name_allowed("AWS_ACCESS_KEY_ID"));
        assert!(env_name_allowed("tf_var_x1"));
        assert!(!env_name_allowed("ld_preload"));
        assert!(!env_name_allowed("DYLD_INSERT_LIBRARIES"));
    }
}
