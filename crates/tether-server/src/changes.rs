//! Keeps this server's memory in step with writes made by the other servers on the same
//! PostgreSQL database: a task polls the changelog ([`tether_store::changes`]) and applies each
//! event in order. The hot-row cache is handled by the store itself; this applies the rest:
//! the authorization index, cached API keys, and the active runner certificates (closing a
//! runner's live tunnel when another server revoked its certificates).
//!
//! The writer applies its own effects when it commits; reading its own rows back again is
//! harmless (tuple events replayed in order converge on the committed state) except for
//! closing tunnels, which is done only for other servers' revocations.

use std::time::{Duration, Instant};

use tether_proto::tunnel::CloseReason;
use tether_store::changes::{Change, ChangeFeed, Event};

use crate::state::AppState;
use tether_pki::Serial;

/// How often the changelog is read.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// A denial re-reads the changelog unless it was read this recently.
const CATCH_UP_AGE: Duration = Duration::from_millis(5);

/// This server's position in the changelog (PostgreSQL only).
pub struct Feed {
    feed: ChangeFeed,
    polled: Instant,
}

impl Feed {
    /// The position taken at startup.
    pub fn new(feed: ChangeFeed) -> Self {
        Self {
            feed,
            polled: Instant::now(),
        }
    }
}

/// Reads and applies the changelog unless it was read within `max_age`. Returns whether the
/// changelog is in use (PostgreSQL).
pub async fn poll(state: &AppState, max_age: Duration) -> bool {
    let mut guard = state.change_feed.lock().await;
    let Some(f) = guard.as_mut() else {
        return false;
    };
    if f.polled.elapsed() < max_age {
        return true;
    }
    match state.store.poll_changes(&mut f.feed).await {
        Ok(changes) => {
            f.polled = Instant::now();
            apply(state, &changes);
        }
        Err(e) => tracing::warn!(error = %e, "changelog: poll failed; retrying"),
    }
    true
}

/// Before a denial is answered, catches up with the other servers' writes, so a grant made
/// on another server a moment ago is honoured (read-your-writes across replicas for grants;
/// a revocation is seen within [`POLL_INTERVAL`]). Returns whether anything may have changed.
pub async fn catch_up(state: &AppState) -> bool {
    poll(state, CATCH_UP_AGE).await
}

/// Starts the poller (nothing to do on SQLite).
pub fn spawn(state: AppState) {
    tokio::spawn(async move {
        let mut pruned = Instant::now();
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            if !poll(&state, Duration::ZERO).await {
                return;
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = Instant::now();
                if let Err(e) = state.store.prune_changes().await {
                    tracing::warn!(error = %e, "changelog: prune failed");
                }
            }
        }
    });
}

/// Applies events in order.
pub fn apply(state: &AppState, changes: &[Change]) {
    for c in changes {
        match &c.event {
            Event::TupleWritten(t) => state.authz.apply(std::slice::from_ref(t), &[]),
            Event::TupleDeleted(t) => state.authz.apply(&[], std::slice::from_ref(t)),
            Event::ApiKeyRevoked { key_id } => state.keys.forget(key_id),
            Event::KeysOfOwnerRevoked { owner_id } => state.keys.forget_owner(owner_id),
            Event::RunnerCertIssued {
                serial,
                org_id,
                runner_id,
            } => {
                if let Some(s) = Serial::from_hex(serial) {
                    state.tunnel.active.insert(s, org_id, runner_id);
                }
            }
            Event::KeyCacheFlushed { org_id } => state.secrets.flush_org(org_id),
            Event::RunnerCertsRevoked { runner_id, serials } => {
                state.tunnel.active.remove_hex(serials);
                if !c.own && !serials.is_empty() {
                    let closed = state.tunnel.hub.close_runner(
                        runner_id,
                        CloseReason::Revoked,
                        "the runner's credentials were revoked",
                    );
                    tracing::info!(runner = %runner_id, closed, "changelog: runner credentials revoked by another server");
                }
            }
        }
    }
}
