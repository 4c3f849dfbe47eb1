//! Runner credentials and lifecycle: generating credentials (a service account with viewer on
//! the org, an API key and a certificate, returned once and never stored), revoking them all,
//! deleting a runner, and the status shown by `tether runner list`.

use serde::Serialize;
use serde_json::json;
use tether_core::resource::API_VERSION;
use tether_core::{ErrorCode, Kind, Metadata, Resource};
use tether_pki::{RunnerNames, Validity};
use tether_proto::tunnel::CloseReason;
use tether_store::ResourceRow;
use tether_store::resources::find_resource;
use tether_store::runners::{
    RunnerCertRow, RunnerStatusRow, delete_runner_status, insert_runner_cert, revoke_api_keys_of,
    revoke_runner_certs, runner_statuses, upsert_runner_status,
};

use crate::error::{AppError, AppResult};
use crate::resources::{self as svc, Change, ScopeNames};
use crate::routes::auth::{NewKeyRequest, mint_key};
use crate::state::AppState;
use crate::tunnel::hub::Session;

/// Runner certificates are valid for one year.
const CERT_DAYS: u32 = 365;

/// The credentials document (brief §10). Returned once; the server keeps neither the private
/// key nor the API key. No `Debug`: it holds secrets.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Credentials {
    /// Always `tether_runner`.
    #[serde(rename = "type")]
    pub doc_type: &'static str,
    /// Organization name.
    pub org: String,
    /// Runner name.
    pub runner: String,
    /// Runner id.
    pub runner_id: String,
    /// The runner service account's API key (shown once).
    pub api_key: String,
    /// Where the runner calls the REST API.
    pub api_endpoint: String,
    /// Where the runner dials the tunnel.
    pub tunnel_endpoint: String,
    /// The installation CA (PEM): the runner trusts only it.
    pub ca_certificate: String,
    /// The runner certificate (PEM).
    pub runner_certificate: String,
    /// The runner's private key (PEM, shown once).
    pub runner_private_key: String,
}

impl Drop for Credentials {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.api_key);
        zeroize::Zeroize::zeroize(&mut self.runner_private_key);
    }
}

/// The name of a runner's service account.
pub fn service_account_name(runner: &str) -> String {
    format!("runner-{runner}")
}

fn manifest(kind: Kind, name: &str, spec: serde_json::Value) -> Resource {
    Resource {
        api_version: API_VERSION.into(),
        kind,
        metadata: Metadata {
            name: name.to_owned(),
            ..Metadata::default()
        },
        spec,
        status: None,
    }
}

async fn find(
    state: &AppState,
    org_id: &str,
    kind: Kind,
    name: &str,
) -> AppResult<Option<ResourceRow>> {
    Ok(find_resource(state.store.reader(), org_id, "", &kind.to_string(), name).await?)
}

/// The runner's service account, with viewer on the org; created on first use.
async fn ensure_service_account(
    state: &AppState,
    scope: &ScopeNames,
    runner: &ResourceRow,
    change: &Change<'_>,
) -> AppResult<ResourceRow> {
    let sa_name = service_account_name(&runner.name);
    let sa = match find(state, &scope.org_id, Kind::ServiceAccount, &sa_name).await? {
        Some(sa) => sa,
        None => {
            let spec = json!({"description": format!("runner {}", runner.name)});
            let m = manifest(Kind::ServiceAccount, &sa_name, spec);
            svc::create(state, scope, Kind::ServiceAccount, &m, change).await?
        }
    };
    let binding = format!("{sa_name}-viewer");
    if find(state, &scope.org_id, Kind::RoleBinding, &binding)
        .await?
        .is_none()
    {
        let spec = json!({"role": "viewer", "subject": format!("service_account:{sa_name}")});
        let m = manifest(Kind::RoleBinding, &binding, spec);
        svc::create(state, scope, Kind::RoleBinding, &m, change).await?;
    }
    Ok(sa)
}

/// Generates a new set of credentials; earlier ones stay valid.
pub async fn generate(
    state: &AppState,
    scope: &ScopeNames,
    runner: &ResourceRow,
    change: &Change<'_>,
) -> AppResult<Credentials> {
    let now = state.clock.now_millis();
    let ca = state
        .tunnel
        .ca(&state.store, now)
        .await
        .map_err(AppError::internal)?;
    let sa = ensure_service_account(state, scope, runner, change).await?;
    let key_req = NewKeyRequest {
        name: "runner".into(),
        expires_in: None,
        scopes: Vec::new(),
        test: false,
    };
    let key = mint_key(state, &sa, change.actor, key_req).await?;
    let names = RunnerNames {
        org: &scope.org,
        runner: &runner.name,
        org_id: &runner.org_id,
        runner_id: &runner.id,
    };
    let validity = Validity::days_from(now, CERT_DAYS).map_err(AppError::internal)?;
    let issued = ca
        .issue_runner(names, validity)
        .map_err(AppError::internal)?;
    let row = RunnerCertRow {
        serial: issued.serial.to_hex(),
        org_id: runner.org_id.clone(),
        runner_id: runner.id.clone(),
        created_at: now,
        not_after: issued.not_after.unix_timestamp().saturating_mul(1000),
        revoked_at: None,
    };
    let mut tx = state.store.begin().await?;
    insert_runner_cert(&mut tx, &row).await?;
    tx.commit().await.map_err(AppError::internal)?;
    state
        .tunnel
        .active
        .insert(issued.serial.clone(), &runner.org_id, &runner.id);
    tracing::info!(runner = %runner.name, serial = %issued.serial, "runner credentials generated");
    let endpoints = state.tunnel.endpoints();
    Ok(Credentials {
        doc_type: "tether_runner",
        org: scope.org.clone(),
        runner: runner.name.clone(),
        runner_id: runner.id.clone(),
        api_key: key.key,
        api_endpoint: endpoints.api,
        tunnel_endpoint: endpoints.tunnel,
        ca_certificate: ca.certificate_pem().to_owned(),
        runner_certificate: issued.certificate_pem.clone(),
        runner_private_key: issued.private_key_pem.as_str().to_owned(),
    })
}

/// Revokes every certificate and API key of a runner and closes its live tunnel.
pub async fn revoke_all(state: &AppState, runner: &ResourceRow) -> AppResult<()> {
    let now = state.clock.now_millis();
    let sa = find(
        state,
        &runner.org_id,
        Kind::ServiceAccount,
        &service_account_name(&runner.name),
    )
    .await?;
    let mut tx = state.store.begin().await?;
    let serials = revoke_runner_certs(&mut tx, &runner.id, now).await?;
    if let Some(sa) = &sa {
        revoke_api_keys_of(&mut tx, &sa.id, now).await?;
    }
    tx.commit().await.map_err(AppError::internal)?;
    state.tunnel.active.remove_hex(&serials);
    if let Some(sa) = &sa {
        state.keys.forget_owner(&sa.id);
    }
    let closed = state.tunnel.hub.close_runner(
        &runner.id,
        CloseReason::Revoked,
        "the runner's credentials were revoked",
    );
    tracing::info!(runner = %runner.name, certificates = serials.len(), closed, "runner credentials revoked");
    Ok(())
}

/// Regenerates: revokes everything earlier, then generates a new set.
pub async fn regenerate(
    state: &AppState,
    scope: &ScopeNames,
    runner: &ResourceRow,
    change: &Change<'_>,
) -> AppResult<Credentials> {
    revoke_all(state, runner).await?;
    generate(state, scope, runner, change).await
}

/// Before a runner is deleted: revoke everything, close its tunnel, delete its role binding
/// and service account (which deletes its keys), and forget its status.
pub async fn before_delete(
    state: &AppState,
    scope: &ScopeNames,
    runner: &ResourceRow,
    change: &Change<'_>,
) -> AppResult<()> {
    revoke_all(state, runner).await?;
    let sa_name = service_account_name(&runner.name);
    let binding = format!("{sa_name}-viewer");
    if let Some(b) = find(state, &runner.org_id, Kind::RoleBinding, &binding).await? {
        svc::delete(state, scope, &b, change).await?;
    }
    if let Some(sa) = find(state, &runner.org_id, Kind::ServiceAccount, &sa_name).await? {
        svc::delete(state, scope, &sa, change).await?;
    }
    let mut tx = state.store.begin().await?;
    delete_runner_status(&mut tx, &runner.id).await?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(())
}

/// Records what a session told about its runner (at connect and at disconnect).
pub async fn record_seen(state: &AppState, session: &Session) {
    let row = RunnerStatusRow {
        runner_id: session.runner_id.clone(),
        org_id: session.org_id.clone(),
        last_seen_at: session.last_beat(),
        version: session.version.clone(),
        capabilities: serde_json::to_string(&session.capabilities).unwrap_or_default(),
    };
    let result = async {
        let mut tx = state.store.begin().await?;
        upsert_runner_status(&mut tx, &row).await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not record the runner status");
    }
}

/// A runner's status as `tether runner list` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunnerStatus {
    /// Runner name.
    pub name: String,
    /// Runner id.
    pub id: String,
    /// `connected`, `unavailable` or `never_seen`.
    pub status: &'static str,
    /// Last heartbeat (RFC 3339), if ever seen.
    pub last_heartbeat: Option<String>,
    /// Version reported in Hello.
    pub version: Option<String>,
    /// Operations it offers.
    pub capabilities: Vec<String>,
    /// Free text from the spec.
    pub description: Option<String>,
}

/// The status of each given runner of an organization.
pub async fn statuses(
    state: &AppState,
    org_id: &str,
    runners: &[ResourceRow],
) -> AppResult<Vec<RunnerStatus>> {
    let stored = runner_statuses(state.store.reader(), org_id).await?;
    let now = state.clock.now_millis();
    let limit = i64::from(state.tunnel.heartbeat_ms())
        * i64::from(tether_proto::MISSED_HEARTBEATS_UNAVAILABLE);
    Ok(runners
        .iter()
        .map(|r| {
            let live = state
                .tunnel
                .hub
                .session(&r.id)
                .filter(|s| s.org_id == org_id);
            let seen = stored.iter().find(|s| s.runner_id == r.id);
            let description = serde_json::from_str::<serde_json::Value>(&r.spec)
                .ok()
                .and_then(|v| {
                    v.get("description")
                        .and_then(|d| d.as_str())
                        .map(str::to_owned)
                });
            let mut out = RunnerStatus {
                name: r.name.clone(),
                id: r.id.clone(),
                status: "never_seen",
                last_heartbeat: None,
                version: None,
                capabilities: Vec::new(),
                description,
            };
            if let Some(s) = live {
                let fresh = now - s.last_beat() <= limit;
                out.status = if fresh { "connected" } else { "unavailable" };
                out.last_heartbeat = Some(tether_core::clock::rfc3339(s.last_beat()));
                out.version = Some(s.version.clone());
                out.capabilities.clone_from(&s.capabilities);
            } else if let Some(s) = seen {
                out.status = "unavailable";
                out.last_heartbeat = Some(tether_core::clock::rfc3339(s.last_seen_at));
                out.version = Some(s.version.clone());
                out.capabilities = serde_json::from_str(&s.capabilities).unwrap_or_default();
            }
            out
        })
        .collect())
}

/// Refuses anything but a runner in a `{kind}` route.
pub fn runner_item<'a>(
    kind: Option<Kind>,
    item: Option<&'a ResourceRow>,
    name: &str,
) -> AppResult<&'a ResourceRow> {
    match (kind, item) {
        (Some(Kind::Runner), Some(row)) => Ok(row),
        (Some(Kind::Runner), None) => Err(AppError::not_found("runner", name)),
        _ => Err(AppError::new(ErrorCode::NotFound, "no such route")),
    }
}
