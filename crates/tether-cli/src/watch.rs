//! `tether run --watch`: the command runs as a child of the CLI, which polls the resolved
//! configuration and restarts the child when a value changes, as `infisical run --watch` does.
//!
//! Without `--watch`, `tether run` replaces itself with the command (`exec`). With it, the CLI
//! stays as the parent, so it passes on what `exec` gave for free:
//! - standard streams: the child inherits them;
//! - signals: SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 sent to the CLI are sent on to the child.
//!   So are SIGINT and SIGQUIT, unless the CLI runs in a terminal's foreground process group,
//!   where the terminal already sends Ctrl-C and Ctrl-\ to the child (which shares the group),
//!   and a second copy would look like a second Ctrl-C;
//! - the exit code: when the child exits on its own, the CLI exits with its code, or with
//!   128 + the signal's number when a signal ended it, as a shell reports it.
//!
//! A restart sends the child SIGTERM, waits up to the grace period, then sends SIGKILL. Only
//! the child is signalled: a command that starts its own children must pass the signal on, as
//! it must under any process supervisor. A failed poll keeps the running child and is retried
//! at the next interval.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::secrets_cmd::{Selection, Target, pairs, resolve};

/// How often to poll and how long a child has to stop.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Time between polls of the configuration.
    pub interval: Duration,
    /// Time a child has to exit after SIGTERM before SIGKILL.
    pub grace: Duration,
}

/// Runs `program` with the resolved values until it exits on its own, restarting it when the
/// values change. Returns the exit code the CLI should exit with.
pub async fn run_watched(
    t: Target<'_>,
    sel: &Selection,
    program: &str,
    args: &[String],
    opts: WatchOptions,
) -> Result<i32> {
    let mut values = pairs(&resolve(t.client, t.org, sel, true).await?);
    let mut signals = forwarded_signals()?;
    let mut child = spawn(program, args, &values)?;
    let start = tokio::time::Instant::now() + opts.interval;
    let mut tick = tokio::time::interval_at(start, opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            status = child.wait() => return Ok(exit_code(status?)),
            Some(sig) = signals.recv() => send(&child, sig),
            _ = tick.tick() => {
                // A poll that hangs must not stop the watch: it is retried next time.
                let poll = tokio::time::timeout(
                    opts.interval.max(Duration::from_secs(10)),
                    resolve(t.client, t.org, sel, true),
                );
                let fresh = match poll.await {
                    Ok(Ok(v)) => pairs(&v),
                    Ok(Err(e)) => {
                        eprintln!("tether: cannot refresh the configuration, the command keeps running: {e:#}");
                        continue;
                    }
                    Err(_) => {
                        eprintln!("tether: refreshing the configuration timed out, the command keeps running");
                        continue;
                    }
                };
                let changed = changed_names(&values, &fresh);
                if changed.is_empty() {
                    continue;
                }
                eprintln!("tether: {} changed, restarting the command", changed.join(", "));
                if let Some(status) = stop(&mut child, opts.grace).await? {
                    // It exited on its own before it was asked to stop.
                    return Ok(exit_code(status));
                }
                values = fresh;
                child = spawn(program, args, &values)?;
            }
        }
    }
}

fn spawn(program: &str, args: &[String], values: &[(String, String)]) -> Result<Child> {
    Command::new(program)
        .args(args)
        .envs(values.iter().map(|(k, v)| (k, v)))
        .spawn()
        .with_context(|| format!("cannot run '{program}'"))
}

/// Asks the child to stop (SIGTERM), then kills it after `grace`. Returns its status if it had
/// already exited before it was asked.
async fn stop(child: &mut Child, grace: Duration) -> Result<Option<std::process::ExitStatus>> {
    if let Some(status) = child.try_wait()? {
        return Ok(Some(status));
    }
    send(child, Signal::TERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        eprintln!(
            "tether: the command did not stop within {} s, killing it",
            grace.as_secs()
        );
        child.kill().await?;
    }
    Ok(None)
}

fn send(child: &Child, sig: Signal) {
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(Pid::from_raw);
    if let Some(pid) = pid {
        // The child may have just exited: nothing to do then.
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// The names whose values were added, removed or changed. Never the values.
fn changed_names(old: &[(String, String)], new: &[(String, String)]) -> Vec<String> {
    let old: BTreeMap<&str, &str> = old.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let new: BTreeMap<&str, &str> = new.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut names: Vec<String> = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| (*k).to_owned())
        .collect();
    names.extend(
        new.keys()
            .filter(|k| !old.contains_key(*k))
            .map(|k| (*k).to_owned()),
    );
    names.sort();
    names
}

/// The exit code a shell would report for `status`.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    }
}

/// The signals to pass on to the child, as they arrive.
fn forwarded_signals() -> Result<mpsc::UnboundedReceiver<Signal>> {
    // In a terminal's foreground group, Ctrl-C and Ctrl-\ reach the child from the terminal.
    // The CLI ignores its own copy: it must outlive the child to report its exit code.
    let interactive = in_terminal_foreground();
    let unless_interactive = |sig| (!interactive).then_some(sig);
    let kinds = [
        (SignalKind::terminate(), Some(Signal::TERM)),
        (SignalKind::hangup(), Some(Signal::HUP)),
        (SignalKind::user_defined1(), Some(Signal::USR1)),
        (SignalKind::user_defined2(), Some(Signal::USR2)),
        (SignalKind::interrupt(), unless_interactive(Signal::INT)),
        (SignalKind::quit(), unless_interactive(Signal::QUIT)),
    ];
    let (tx, rx) = mpsc::unbounded_channel();
    for (kind, forward) in kinds {
        let mut stream = signal(kind).map_err(|e| anyhow!("cannot handle signals: {e}"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if let Some(sig) = forward
                    && tx.send(sig).is_err()
                {
                    break;
                }
            }
        });
    }
    Ok(rx)
}

/// Whether standard input is a terminal whose foreground process group is this process's.
fn in_terminal_foreground() -> bool {
    rustix::termios::tcgetpgrp(std::io::stdin())
        .is_ok_and(|group| group == rustix::process::getpgrp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn changed_names_lists_added_removed_and_changed_names_only() {
        let old = kv(&[("A", "1"), ("B", "2"), ("C", "3")]);
        let new = kv(&[("A", "1"), ("B", "two"), ("D", "4")]);
        assert_eq!(changed_names(&old, &new), ["B", "C", "D"]);
        assert!(changed_names(&old, &old).is_empty());
    }

    #[test]
    fn exit_codes_are_reported_as_a_shell_does() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(7 << 8)), 7);
        // Killed by SIGTERM (15).
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(15)), 143);
    }
}
