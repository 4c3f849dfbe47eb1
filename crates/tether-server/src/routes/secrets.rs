//! Secret data routes under `/v1/orgs/{org}/secrets/{name}/...` (`?env=` for environment
//! secrets). Metadata goes through the generic collection routes.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tether_core::Kind;
use tether_store::ResourceRow;

use crate::error::{AppError, AppResult};
use crate::routes::extract::{ApiJson, ApiPath, ApiQuery, CtxExt};
use crate::routes::guard::Ctx;
use crate::secret_ops::{self as ops, NewVersion, VersionInfo};
use crate::state::AppState;

/// A new version.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest {
    /// KEY → VALUE.
    pub data: BTreeMap<String, String>,
    /// Check-and-set: the version you expect to be current (0: the secret must not exist).
    #[serde(default)]
    pub if_version: Option<i64>,
    /// Change message.
    #[serde(default)]
    pub message: Option<String>,
}

/// The result of a write.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WriteResponse {
    /// Secret name.
    pub name: String,
    /// The new version.
    pub version: i64,
}

/// Secret data.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DataResponse {
    /// Secret name.
    pub name: String,
    /// Version read.
    pub version: i64,
    /// KEY → VALUE.
    pub data: BTreeMap<String, String>,
}

fn only_secrets(ctx: &Ctx, name: &str) -> AppResult<()> {
    match ctx.kind {
        Some(Kind::Secret) => Ok(()),
        _ => Err(AppError::not_found("collection", name)),
    }
}

fn secret<'a>(ctx: &'a Ctx, name: &str) -> AppResult<&'a ResourceRow> {
    only_secrets(ctx, name)?;
    ctx.item
        .as_deref()
        .ok_or_else(|| AppError::not_found("secret", name))
}

/// Writes a new version (creating the secret on first write).
#[utoipa::path(post, path = "/v1/orgs/{org}/{kind}/{name}/versions", tag = "secrets",
    params(("org" = String, Path), ("kind" = String, Path, description = "secrets"), ("name" = String, Path), ("env" = Option<String>, Query)),
    request_body = WriteRequest, responses((status = 201, body = WriteResponse), (status = 409, description = "version conflict")))]
pub async fn write(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(p): ApiPath<(String, String, String)>,
    ApiJson(req): ApiJson<WriteRequest>,
) -> AppResult<(StatusCode, Json<WriteResponse>)> {
    let (_, _, name) = p;
    only_secrets(&ctx, &name)?;
    crate::resources::check_message(req.message.as_deref())?;
    let v = NewVersion {
        name: name.clone(),
        data: req.data,
        if_version: req.if_version,
        message: req.message,
        expect_id: None,
    };
    let version = ops::write_version(&state, &ctx.scope, ctx.principal()?, v).await?;
    Ok((StatusCode::CREATED, Json(WriteResponse { name, version })))
}

/// A change to some keys of a secret.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchRequest {
    /// KEY → VALUE to add or replace.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Keys to remove.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Check-and-set: the version the patch must apply to.
    #[serde(default)]
    pub if_version: Option<i64>,
    /// Change message.
    #[serde(default)]
    pub message: Option<String>,
}

/// Writes a new version: the current data with some keys set or removed (like `vault kv
/// patch`). The secret must exist. No value is returned, so a caller that may write but not
/// read values can change one key without seeing the others.
#[utoipa::path(patch, path = "/v1/orgs/{org}/{kind}/{name}/data", tag = "secrets",
    params(("org" = String, Path), ("kind" = String, Path, description = "secrets"), ("name" = String, Path), ("env" = Option<String>, Query)),
    request_body = PatchRequest, responses((status = 201, body = WriteResponse), (status = 409, description = "version conflict")))]
pub async fn patch(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(p): ApiPath<(String, String, String)>,
    ApiJson(req): ApiJson<PatchRequest>,
) -> AppResult<(StatusCode, Json<WriteResponse>)> {
    let (_, _, name) = p;
    crate::resources::check_message(req.message.as_deref())?;
    let patch = ops::Patch {
        set: req.set,
        remove: req.remove,
        if_version: req.if_version,
        message: req.message,
    };
    let row = secret(&ctx, &name)?;
    let version = ops::patch(&state, &ctx.scope, row, patch, ctx.principal()?).await?;
    Ok((StatusCode::CREATED, Json(WriteResponse { name, version })))
}

/// Lists a secret's versions (no data).
#[utoipa::path(get, path = "/v1/orgs/{org}/{kind}/{name}/versions", tag = "secrets",
    params(("org" = String, Path), ("kind" = String, Path), ("name" = String, Path), ("env" = Option<String>, Query)),
    responses((status = 200, body = Vec<VersionInfo>)))]
pub async fn versions(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(p): ApiPath<(String, String, String)>,
) -> AppResult<Json<Vec<VersionInfo>>> {
    let (_, _, name) = p;
    Ok(Json(
        ops::list_versions(&state, secret(&ctx, &name)?).await?,
    ))
}

/// Which version to read.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct DataQuery {
    /// Environment.
    pub env: Option<String>,
    /// Version (default: current).
    pub version: Option<i64>,
}

/// Reads a secret's data (needs `can_read_value`).
#[utoipa::path(get, path = "/v1/orgs/{org}/{kind}/{name}/data", tag = "secrets",
    params(("org" = String, Path), ("kind" = String, Path), ("name" = String, Path), DataQuery),
    responses((status = 200, body = DataResponse), (status = 410, description = "destroyed")))]
pub async fn data(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(p): ApiPath<(String, String, String)>,
    ApiQuery(q): ApiQuery<DataQuery>,
) -> AppResult<Response> {
    let (_, _, name) = p;
    let row = secret(&ctx, &name)?;
    let (version, data) = ops::read_version_json(&state, row, q.version).await?;
    // The data goes out as the JSON object it was sealed as, not parsed and written again:
    // the same bytes `Json(DataResponse)` gives, for less work on the hottest route.
    let name = serde_json::to_string(&name).map_err(AppError::internal)?;
    let mut body = Vec::with_capacity(40 + name.len() + data.len());
    body.extend_from_slice(b"{\"name\":");
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(b",\"version\":");
    body.extend_from_slice(version.to_string().as_bytes());
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(&data);
    body.push(b'}');
    Ok((
        [(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// Destroys one version's data for good.
#[utoipa::path(post, path = "/v1/orgs/{org}/{kind}/{name}/versions/{version}/destroy", tag = "secrets",
    params(("org" = String, Path), ("kind" = String, Path), ("name" = String, Path), ("version" = i64, Path), ("env" = Option<String>, Query)),
    responses((status = 204, description = "destroyed")))]
pub async fn destroy(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(p): ApiPath<(String, String, String, i64)>,
) -> AppResult<StatusCode> {
    let (_, _, name, version) = p;
    ops::destroy(
        &state,
        &ctx.scope,
        secret(&ctx, &name)?,
        version,
        ctx.principal()?,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A rollback.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version whose data becomes the new version.
    pub to: i64,
    /// Check-and-set.
    #[serde(default)]
    pub if_version: Option<i64>,
}

/// Which versions to compare.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// Environment.
    pub env: Option<String>,
    /// The older version (default: the one before `to`).
    pub from: Option<i64>,
    /// The newer version (default: current).
    pub to: Option<i64>,
    /// Include the values (otherwise `********`).
    #[serde(default)]
    pub reveal: bool,
}

/// How one key differs between two versions.
#[derive(Serialize, utoipa::ToSchema)]
pub struct KeyChange {
    /// The key.
    pub key: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// The value in `from` (absent when added; masked unless `reveal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The value in `to` (absent when removed; masked unless `reveal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// The difference between two versions of a secret.
#[derive(Serialize, utoipa::ToSchema)]
pub struct VersionDiff {
    /// Secret name.
    pub name: String,
    /// The older version.
    pub from: i64,
    /// The newer version.
    pub to: i64,
    /// The keys that differ, by key; keys with equal values are left out.
    pub changes: Vec<KeyChange>,
    /// How many keys are the same in both.
    pub unchanged: usize,
}

/// Compares two versions of a secret key by key (needs `can_read_value`: whether a value
/// changed says something about it). Values are masked unless `reveal=true`.
#[utoipa::path(get, path = "/v1/orgs/{org}/{kind}/{name}/diff", tag = "secrets",
    params(("org" = String, Path), ("kind" = String, Path), ("name" = String, Path), DiffQuery),
    responses((status = 200, body = VersionDiff), (status = 410, description = "a version was destroyed")))]
pub async fn diff(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(p): ApiPath<(String, String, String)>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> AppResult<Json<VersionDiff>> {
    let (_, _, name) = p;
    let row = secret(&ctx, &name)?;
    let (to, new) = ops::read_version(&state, row, q.to).await?;
    let from = q.from.unwrap_or(to - 1);
    if from < 1 || from >= to {
        return Err(AppError::new(
            tether_core::ErrorCode::InvalidArgument,
            format!("compare an older version with a newer one (from {from}, to {to})"),
        ));
    }
    let (_, old) = ops::read_version(&state, row, Some(from)).await?;
    let shown = |v: &String| {
        Some(if q.reveal {
            v.clone()
        } else {
            "********".to_owned()
        })
    };
    let mut changes = Vec::new();
    let mut unchanged = 0;
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (change, a, b) = match (old.get(key), new.get(key)) {
            (Some(a), Some(b)) if a == b => {
                unchanged += 1;
                continue;
            }
            (Some(a), Some(b)) => ("changed", shown(a), shown(b)),
            (Some(a), None) => ("removed", shown(a), None),
            (None, Some(b)) => ("added", None, shown(b)),
            (None, None) => continue,
        };
        changes.push(KeyChange {
            key: key.clone(),
            change,
            from: a,
            to: b,
        });
    }
    Ok(Json(VersionDiff {
        name,
        from,
        to,
        changes,
        unchanged,
    }))
}

/// Writes an old version's data as a new version.
#[utoipa::path(post, path = "/v1/orgs/{org}/{kind}/{name}/rollback", tag = "secrets",
    params(("org" = String, Path), ("kind" = String, Path), ("name" = String, Path), ("env" = Option<String>, Query)),
    request_body = RollbackRequest, responses((status = 201, body = WriteResponse)))]
pub async fn rollback(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(p): ApiPath<(String, String, String)>,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> AppResult<(StatusCode, Json<WriteResponse>)> {
    let (_, _, name) = p;
    let version = ops::rollback(
        &state,
        &ctx.scope,
        secret(&ctx, &name)?,
        req.to,
        req.if_version,
        ctx.principal()?,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(WriteResponse { name, version })))
}

/// Undeletes a soft-deleted secret.
#[utoipa::path(post, path = "/v1/orgs/{org}/{kind}/{name}/undelete", tag = "secrets",
    params(("org" = String, Path), ("kind" = String, Path), ("name" = String, Path), ("env" = Option<String>, Query)),
    responses((status = 204, description = "undeleted")))]
pub async fn undelete(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(p): ApiPath<(String, String, String)>,
) -> AppResult<StatusCode> {
    let (_, _, name) = p;
    ops::set_deleted(
        &state,
        &ctx.scope,
        secret(&ctx, &name)?,
        false,
        ctx.principal()?,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
