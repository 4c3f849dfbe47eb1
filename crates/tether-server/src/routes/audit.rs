//! Audit: resource versions (history, show, diff, restore, verify) and the request log (search,
//! export as JSON lines or CSV). Reading audit data is itself authorized: a caller sees only
//! versions of resources it may read.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use similar::TextDiff;
use tether_core::{ErrorCode, Kind};
use tether_store::audit::get_version;
use tether_store::resources::{find_resource, get_resource};
use tether_store::{ChainBreak, RequestLogFilter, RequestLogRecord, VersionRecord};

use crate::error::{AppError, AppResult};
use crate::model::{env_object, org_object, resource_object};
use crate::resources::{self as svc, Change, ScopeNames};
use crate::routes::extract::{ApiPath, ApiQuery, CtxExt};
use crate::routes::guard::{Ctx, allowed, write_relation};
use crate::state::AppState;

/// Which history to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct VersionsQuery {
    /// Kind (e.g. `teams` or `Team`).
    pub kind: String,
    /// Resource name.
    pub name: String,
}

/// A version as listed (snapshots omitted).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionSummary {
    /// Version id.
    pub id: String,
    /// Position in the organization's chain.
    pub seq: i64,
    /// Event.
    pub event: String,
    /// Actor.
    pub actor: String,
    /// Time (RFC 3339).
    pub at: String,
    /// Kind.
    pub resource_kind: String,
    /// Name.
    pub resource_name: String,
    /// Previous version of the same resource.
    pub previous_version_id: Option<String>,
    /// Change message.
    pub message: Option<String>,
}

fn summary(v: &VersionRecord) -> VersionSummary {
    VersionSummary {
        id: v.id.clone(),
        seq: v.seq,
        event: v.event.clone(),
        actor: v.actor.clone(),
        at: tether_core::clock::rfc3339(v.at),
        resource_kind: v.resource_kind.clone(),
        resource_name: v.resource_name.clone(),
        previous_version_id: v.previous_version_id.clone(),
        message: v.message.clone(),
    }
}

fn the_org(ctx: &Ctx) -> AppResult<&tether_store::ResourceRow> {
    ctx.org
        .as_deref()
        .ok_or_else(|| AppError::internal("guard did not resolve the organization"))
}

/// The object that governs reading a version's resource.
async fn version_object(state: &AppState, v: &VersionRecord) -> AppResult<String> {
    let kind = Kind::parse(&v.resource_kind);
    Ok(match kind {
        Some(Kind::Organization) => org_object(&v.resource_id),
        Some(Kind::Environment) => env_object(&v.resource_id),
        _ if get_resource(state.store.reader(), &v.resource_id)
            .await?
            .is_some() =>
        {
            resource_object(&v.resource_id)
        }
        _ if !v.env_id.is_empty() => env_object(&v.env_id),
        _ => org_object(&v.org_id),
    })
}

async fn visible(state: &AppState, ctx: &Ctx, v: &VersionRecord) -> AppResult<bool> {
    let obj = version_object(state, v).await?;
    allowed(state, ctx, "can_read", &obj)
}

async fn load_visible(state: &AppState, ctx: &Ctx, id: &str) -> AppResult<VersionRecord> {
    let org = the_org(ctx)?;
    let v = get_version(state.store.reader(), id)
        .await?
        .filter(|v| v.org_id == org.id)
        .ok_or_else(|| AppError::not_found("version", id))?;
    if !visible(state, ctx, &v).await? {
        return Err(AppError::not_found("version", id));
    }
    Ok(v)
}

/// The history of one resource, oldest first.
#[utoipa::path(get, path = "/v1/audit/{org}/versions", tag = "audit", params(("org" = String, Path), VersionsQuery), responses((status = 200, body = Vec<VersionSummary>)))]
pub async fn list_versions(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiQuery(q): ApiQuery<VersionsQuery>,
) -> AppResult<Json<Vec<VersionSummary>>> {
    let org = the_org(&ctx)?;
    let kind = Kind::parse(&q.kind).ok_or_else(|| {
        AppError::new(
            ErrorCode::InvalidArgument,
            format!("unknown kind '{}'", q.kind),
        )
    })?;
    let chain = if kind == Kind::Organization {
        find_resource(state.store.reader(), "", "", "Organization", &q.name)
            .await?
            .map(|o| o.id)
            .unwrap_or_default()
    } else {
        org.id.clone()
    };
    let all = state
        .store
        .versions_named(&chain, &kind.to_string(), &q.name)
        .await?;
    let mut out = Vec::new();
    for v in &all {
        if visible(&state, &ctx, v).await? {
            out.push(summary(v));
        }
    }
    if out.is_empty() {
        return Err(AppError::not_found(kind.singular(), &q.name));
    }
    Ok(Json(out))
}

/// One version with its snapshots and diff.
#[utoipa::path(get, path = "/v1/audit/{org}/versions/{version}", tag = "audit", params(("org" = String, Path), ("version" = String, Path)), responses((status = 200, description = "the version")))]
pub async fn show_version(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(path_params): ApiPath<(String, String)>,
) -> AppResult<Json<VersionRecord>> {
    let (_, id) = path_params;
    Ok(Json(load_visible(&state, &ctx, &id).await?))
}

/// Two versions to compare.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// The older version.
    pub from: String,
    /// The newer version.
    pub to: String,
}

/// A unified diff between any two versions' snapshots.
#[utoipa::path(get, path = "/v1/audit/{org}/diff", tag = "audit", params(("org" = String, Path), DiffQuery), responses((status = 200, description = "unified diff")))]
pub async fn diff(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> AppResult<Json<serde_json::Value>> {
    let a = load_visible(&state, &ctx, &q.from).await?;
    let b = load_visible(&state, &ctx, &q.to).await?;
    let text = |v: &VersionRecord| v.yaml_after.clone().unwrap_or_default();
    let (ta, tb) = (text(&a), text(&b));
    let d = TextDiff::from_lines(&ta, &tb)
        .unified_diff()
        .header(&a.id, &b.id)
        .to_string();
    Ok(Json(
        serde_json::json!({"from": a.id, "to": b.id, "diff": d}),
    ))
}

/// Restores a resource to a version (writes a new version).
#[utoipa::path(post, path = "/v1/audit/{org}/versions/{version}/restore", tag = "audit", params(("org" = String, Path), ("version" = String, Path)), responses((status = 200, description = "restored")))]
pub async fn restore(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(path_params): ApiPath<(String, String)>,
) -> AppResult<Json<tether_core::Resource>> {
    let (_, id) = path_params;
    let v = load_visible(&state, &ctx, &id).await?;
    let kind = Kind::parse(&v.resource_kind).ok_or_else(|| AppError::internal("stored kind"))?;
    if kind == Kind::Secret {
        return Err(AppError::new(
            ErrorCode::Conflict,
            "secret data is versioned on its own: use `tether secret rollback NAME --to N`",
        ));
    }
    let obj = version_object(&state, &v).await?;
    if !allowed(&state, &ctx, write_relation(kind), &obj)? {
        return Err(AppError::new(
            ErrorCode::Forbidden,
            format!("restoring needs '{}'", write_relation(kind)),
        ));
    }
    let org = the_org(&ctx)?;
    let env_name = match v.env_id.as_str() {
        "" => None,
        e => get_resource(state.store.reader(), e).await?.map(|r| r.name),
    };
    let scope = match kind {
        Kind::Organization => ScopeNames {
            org: v.resource_name.clone(),
            ..ScopeNames::default()
        },
        _ => ScopeNames {
            org_id: org.id.clone(),
            org: org.name.clone(),
            env_id: v.env_id.clone(),
            env: env_name,
        },
    };
    let current = get_resource(state.store.reader(), &v.resource_id).await?;
    let change = Change {
        actor: ctx.principal()?,
        message: Some(format!("restore of {}", v.id)),
        event: Some("restore"),
    };
    let row = svc::restore(&state, &scope, current.as_ref(), &v, &change).await?;
    Ok(Json(svc::to_resource(&row, &scope, None)))
}

/// The result of a chain verification.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    /// True when both chains are intact.
    pub ok: bool,
    /// The first broken link of the organization's version chain.
    #[schema(value_type = Option<Object>)]
    pub versions: Option<ChainBreak>,
    /// The first broken link of the request log.
    #[schema(value_type = Option<Object>)]
    pub requests: Option<ChainBreak>,
}

/// Recomputes the hash chains and names the first broken link.
#[utoipa::path(get, path = "/v1/audit/{org}/verify", tag = "audit", params(("org" = String, Path)), responses((status = 200, body = VerifyReport)))]
pub async fn verify(State(state): State<AppState>, ctx: CtxExt) -> AppResult<Json<VerifyReport>> {
    let org = the_org(&ctx)?;
    state.reqlog.flush().await;
    let versions = state.store.verify_versions(&org.id).await?;
    let requests = state.store.verify_requests().await?;
    Ok(Json(VerifyReport {
        ok: versions.is_none() && requests.is_none(),
        versions,
        requests,
    }))
}

/// Request-log search parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// RFC 3339 time or a duration back from now (`15m`, `24h`, `7d`).
    pub since: Option<String>,
    /// RFC 3339 time or duration.
    pub until: Option<String>,
    /// Exact principal (`user:alice@default`).
    pub principal: Option<String>,
    /// Exact action.
    pub action: Option<String>,
    /// Resource path prefix.
    pub resource: Option<String>,
    /// allowed, denied, unauthenticated, error.
    pub result: Option<String>,
    /// Continue after this sequence number (oldest first).
    pub after: Option<i64>,
    /// Continue before this sequence number (newest first).
    pub before: Option<i64>,
    /// `oldest` (the default) or `newest` first.
    pub order: Option<String>,
    /// Maximum records (default 100, at most 10,000).
    pub limit: Option<i64>,
    /// Export format: `jsonl` (default) or `csv`.
    pub format: Option<String>,
}

fn filter_of(state: &AppState, org: &str, q: &LogQuery) -> AppResult<RequestLogFilter> {
    let now = state.clock.now_millis();
    let time = |s: &Option<String>, what: &str| -> AppResult<Option<i64>> {
        s.as_deref()
            .map(|t| {
                tether_core::clock::parse_time(t, now).ok_or_else(|| {
                    AppError::new(
                        ErrorCode::InvalidArgument,
                        format!("{what}: use RFC 3339 or a duration like 24h"),
                    )
                })
            })
            .transpose()
    };
    Ok(RequestLogFilter {
        since: time(&q.since, "since")?,
        until: time(&q.until, "until")?,
        principal: q.principal.clone(),
        action: q.action.clone(),
        resource: q.resource.clone(),
        result: q.result.clone(),
        org: Some(org.to_owned()),
        after_seq: q.after,
        before_seq: q.before,
        newest_first: match q.order.as_deref() {
            None | Some("oldest") => false,
            Some("newest") => true,
            Some(other) => {
                return Err(AppError::new(
                    ErrorCode::InvalidArgument,
                    format!("unknown order '{other}' (oldest or newest)"),
                ));
            }
        },
        limit: q.limit,
    })
}

/// Searches the organization's request log.
#[utoipa::path(get, path = "/v1/audit/{org}/log", tag = "audit", params(("org" = String, Path), LogQuery), responses((status = 200, description = "records")))]
pub async fn search_log(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> AppResult<Json<Vec<RequestLogRecord>>> {
    let org = the_org(&ctx)?;
    state.reqlog.flush().await;
    Ok(Json(
        state
            .store
            .search_requests(&filter_of(&state, &org.name, &q)?)
            .await?,
    ))
}

/// Exports the organization's request log as JSON lines or CSV.
#[utoipa::path(get, path = "/v1/audit/{org}/log/export", tag = "audit", params(("org" = String, Path), LogQuery), responses((status = 200, description = "JSON lines or CSV")))]
pub async fn export_log(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> AppResult<Response> {
    let org = the_org(&ctx)?;
    state.reqlog.flush().await;
    let mut f = filter_of(&state, &org.name, &q)?;
    f.limit = Some(q.limit.unwrap_or(10_000));
    let rows = state.store.search_requests(&f).await?;
    match q.format.as_deref().unwrap_or("jsonl") {
        "jsonl" | "json" => {
            let mut body = String::new();
            for r in &rows {
                body.push_str(&serde_json::to_string(r).map_err(AppError::internal)?);
                body.push('\n');
            }
            Ok(([(http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
        }
        "csv" => {
            let mut w = csv::Writer::from_writer(Vec::new());
            for r in &rows {
                w.serialize(r).map_err(AppError::internal)?;
            }
            let bytes = w.into_inner().map_err(AppError::internal)?;
            Ok(([(http::header::CONTENT_TYPE, "text/csv")], bytes).into_response())
        }
        other => Err(AppError::new(
            ErrorCode::InvalidArgument,
            format!("unknown format '{other}' (jsonl or csv)"),
        )),
    }
}
