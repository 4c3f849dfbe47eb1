//! Organizations and the org-scoped collections (`envs`, `teams`, `users`, `service-accounts`,
//! `role-bindings`), all through the same envelope and write path.

use axum::Json;
use axum::extract::State;
use http::StatusCode;
use tether_core::{ErrorCode, Kind, Resource};
use tether_store::ResourceRow;
use tether_store::resources::get_resource;

use crate::error::{AppError, AppResult};
use crate::resources::{self as svc, Change, ScopeNames, to_resource};
use crate::routes::extract::{ApiJson, ApiPath, ApiQuery, CtxExt};
use crate::routes::guard::Ctx;
use crate::state::AppState;

/// A resource as a client sends it (see [`tether_core::manifest::Manifest`]).
pub type ManifestInput = tether_core::manifest::Manifest;

fn into_resource(input: ManifestInput, kind: Kind) -> AppResult<Resource> {
    input.into_resource(kind).map_err(AppError::from)
}

fn change_of<'a>(ctx: &'a Ctx, manifest: &Resource) -> AppResult<Change<'a>> {
    let message = manifest
        .metadata
        .version
        .as_ref()
        .and_then(|v| v.message.clone());
    svc::check_message(message.as_deref())?;
    Ok(Change {
        actor: ctx.principal()?,
        message,
        event: None,
    })
}

fn org_scope(org: &ResourceRow) -> ScopeNames {
    ScopeNames {
        org_id: String::new(),
        org: org.name.clone(),
        env_id: String::new(),
        env: None,
    }
}

fn render(row: &ResourceRow, scope: &ScopeNames) -> Resource {
    to_resource(row, scope, None)
}

/// Lists the organizations the caller can read.
#[utoipa::path(get, path = "/v1/orgs", tag = "resources", responses((status = 200, description = "organizations", body = Vec<Object>)))]
pub async fn list_orgs(
    State(state): State<AppState>,
    ctx: CtxExt,
) -> AppResult<Json<Vec<Resource>>> {
    let principal = ctx.principal()?;
    let ids =
        state
            .authz
            .list_objects(&principal.subject(), "can_read", "organization", &ctx.check)?;
    let mut out = Vec::new();
    for obj in ids {
        let id = obj.strip_prefix("organization:").unwrap_or(&obj);
        if let Some(row) = get_resource(state.store.reader(), id).await? {
            out.push(render(&row, &org_scope(&row)));
        }
    }
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(Json(out))
}

/// Creates an organization (platform administrators); the creator becomes its owner.
#[utoipa::path(post, path = "/v1/orgs", tag = "resources", request_body = Object, responses((status = 201, description = "created")))]
pub async fn create_org(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiJson(input): ApiJson<ManifestInput>,
) -> AppResult<(StatusCode, Json<Resource>)> {
    let manifest = into_resource(input, Kind::Organization)?;
    let scope = ScopeNames {
        org: manifest.metadata.name.clone(),
        ..ScopeNames::default()
    };
    let row = svc::create(
        &state,
        &scope,
        Kind::Organization,
        &manifest,
        &change_of(&ctx, &manifest)?,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(render(&row, &org_scope(&row)))))
}

fn ctx_org(ctx: &Ctx) -> AppResult<&ResourceRow> {
    ctx.org
        .as_deref()
        .ok_or_else(|| AppError::internal("guard did not resolve the organization"))
}

/// Reads an organization.
#[utoipa::path(get, path = "/v1/orgs/{org}", tag = "resources", params(("org" = String, Path)), responses((status = 200, description = "the organization"), (status = 404, description = "not found")))]
pub async fn get_org(ctx: CtxExt) -> AppResult<Json<Resource>> {
    let org = ctx_org(&ctx)?;
    Ok(Json(render(org, &org_scope(org))))
}

/// Replaces an organization's spec and labels.
#[utoipa::path(put, path = "/v1/orgs/{org}", tag = "resources", params(("org" = String, Path)), request_body = Object, responses((status = 200, description = "updated")))]
pub async fn put_org(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiJson(input): ApiJson<ManifestInput>,
) -> AppResult<Json<Resource>> {
    let org = ctx_org(&ctx)?;
    let manifest = into_resource(input, Kind::Organization)?;
    if manifest.metadata.name != org.name {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            "renaming an organization is not supported",
        ));
    }
    let (row, _) = svc::update(
        &state,
        &org_scope(org),
        org,
        &manifest,
        &change_of(&ctx, &manifest)?,
    )
    .await?;
    Ok(Json(render(&row, &org_scope(&row))))
}

/// Deletes an empty organization.
#[utoipa::path(delete, path = "/v1/orgs/{org}", tag = "resources", params(("org" = String, Path)), responses((status = 204, description = "deleted")))]
pub async fn delete_org(State(state): State<AppState>, ctx: CtxExt) -> AppResult<StatusCode> {
    let org = ctx_org(&ctx)?;
    let change = Change {
        actor: ctx.principal()?,
        message: None,
        event: None,
    };
    svc::delete(&state, &org_scope(org), org, &change).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn ctx_kind(ctx: &Ctx) -> AppResult<Kind> {
    ctx.kind
        .ok_or_else(|| AppError::internal("guard did not resolve the kind"))
}

/// The scope names for an item, including its environment's name when env-scoped.
async fn item_scope(state: &AppState, ctx: &Ctx, row: &ResourceRow) -> AppResult<ScopeNames> {
    let mut scope = ctx.scope.clone();
    if !row.env_id.is_empty() && scope.env.is_none() {
        let env = get_resource(state.store.reader(), &row.env_id).await?;
        scope.env_id = row.env_id.clone();
        scope.env = env.map(|e| e.name);
    }
    Ok(scope)
}

/// Search options.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
pub struct SearchQuery {
    /// Part of the name, any case (empty: every name).
    #[serde(default)]
    pub q: String,
    /// `secrets` or `variables` (both when absent).
    pub kind: Option<String>,
    /// Include soft-deleted secrets.
    #[serde(default)]
    pub deleted: bool,
}

/// Searches an organization's secrets and variables by name, at the organization level and in
/// every environment at once, and returns only those the caller may read (`can_read` on each,
/// so a role on one environment or one secret shows just that). An organization the caller
/// cannot see answers as one that does not exist: with nothing.
#[utoipa::path(get, path = "/v1/orgs/{org}/search", tag = "resources",
    params(("org" = String, Path), SearchQuery),
    responses((status = 200, description = "the matching items the caller may read")))]
pub async fn search(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(org): ApiPath<String>,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> AppResult<Json<Vec<Resource>>> {
    let kinds = match q.kind.as_deref() {
        None => vec![Kind::Secret, Kind::Variable],
        Some(k) => match Kind::parse(k) {
            Some(kind @ (Kind::Secret | Kind::Variable)) => vec![kind],
            _ => {
                return Err(AppError::new(
                    ErrorCode::InvalidArgument,
                    "kind must be 'secrets' or 'variables'",
                ));
            }
        },
    };
    let principal = ctx.principal()?;
    let found = state
        .store
        .find_resource_cached("", "", "Organization", &org)
        .await?;
    let Some(org_row) = found.filter(|_| principal.scope_allows("can_read")) else {
        return Ok(Json(Vec::new()));
    };
    let subject = principal.subject();
    let needle = q.q.to_lowercase();
    let envs: std::collections::HashMap<String, String> = state
        .store
        .list_resources(&org_row.id, None, "Environment")
        .await?
        .into_iter()
        .map(|e| (e.id, e.name))
        .collect();
    let mut out = Vec::new();
    for kind in kinds {
        for row in state
            .store
            .list_resources(&org_row.id, None, &kind.to_string())
            .await?
        {
            let wanted = row.name.to_lowercase().contains(&needle)
                && (q.deleted || !crate::secret_ops::is_deleted_secret(&row));
            let object = crate::model::item_object(kind, &row.id);
            if !wanted
                || !state
                    .authz
                    .check(&subject, "can_read", &object, &ctx.check)?
            {
                continue;
            }
            let scope = ScopeNames {
                org_id: org_row.id.clone(),
                org: org_row.name.clone(),
                env_id: row.env_id.clone(),
                env: envs.get(&row.env_id).cloned(),
            };
            out.push(render(&row, &scope));
        }
    }
    Ok(Json(out))
}

/// Listing options.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Environment, for environment-scoped kinds.
    pub env: Option<String>,
    /// Include soft-deleted secrets.
    #[serde(default)]
    pub deleted: bool,
}

/// Lists a collection (`?env=NAME` for environment-scoped kinds).
#[utoipa::path(get, path = "/v1/orgs/{org}/{kind}", tag = "resources",
    params(("org" = String, Path), ("kind" = String, Path, description = "envs, teams, users, service-accounts, role-bindings, secrets or variables"), ListQuery),
    responses((status = 200, description = "items")))]
pub async fn list_items(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> AppResult<Json<Vec<Resource>>> {
    let kind = ctx_kind(&ctx)?;
    let rows = state
        .store
        .list_resources(
            &ctx.scope.org_id,
            Some(&ctx.scope.env_id),
            &kind.to_string(),
        )
        .await?;
    let visible = rows
        .iter()
        .filter(|r| q.deleted || !crate::secret_ops::is_deleted_secret(r));
    Ok(Json(visible.map(|r| render(r, &ctx.scope)).collect()))
}

/// Creates an item in a collection.
#[utoipa::path(post, path = "/v1/orgs/{org}/{kind}", tag = "resources",
    params(("org" = String, Path), ("kind" = String, Path), ("env" = Option<String>, Query)),
    request_body = Object, responses((status = 201, description = "created"), (status = 409, description = "exists")))]
pub async fn create_item(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiJson(input): ApiJson<ManifestInput>,
) -> AppResult<(StatusCode, Json<Resource>)> {
    let kind = ctx_kind(&ctx)?;
    let manifest = into_resource(input, kind)?;
    check_scope_fields(&ctx, &manifest)?;
    let row = svc::create(
        &state,
        &ctx.scope,
        kind,
        &manifest,
        &change_of(&ctx, &manifest)?,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(render(&row, &ctx.scope))))
}

/// Refuses a manifest whose `metadata.org`/`metadata.env` disagree with the URL.
fn check_scope_fields(ctx: &Ctx, manifest: &Resource) -> AppResult<()> {
    if manifest
        .metadata
        .org
        .as_deref()
        .is_some_and(|o| o != ctx.scope.org)
    {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            "metadata.org does not match the URL",
        ));
    }
    if manifest.metadata.env.as_deref() != ctx.scope.env.as_deref()
        && manifest.metadata.env.is_some()
    {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            "metadata.env does not match ?env=",
        ));
    }
    Ok(())
}

fn ctx_item<'a>(ctx: &'a Ctx, name: &str) -> AppResult<&'a ResourceRow> {
    let kind = ctx_kind(ctx)?;
    ctx.item
        .as_deref()
        .ok_or_else(|| AppError::not_found(kind.singular(), name))
}

/// A new name.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    /// The new name, in the same scope.
    pub name: String,
}

/// Renames a secret or a variable; it keeps its versions and its history.
#[utoipa::path(post, path = "/v1/orgs/{org}/{kind}/{name}/rename", tag = "resources",
    params(("org" = String, Path), ("kind" = String, Path, description = "secrets or variables"), ("name" = String, Path), ("env" = Option<String>, Query)),
    request_body = RenameRequest,
    responses((status = 200, description = "renamed"), (status = 409, description = "the new name is taken")))]
pub async fn rename_item(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(path_params): ApiPath<(String, String, String)>,
    ApiJson(req): ApiJson<RenameRequest>,
) -> AppResult<Json<Resource>> {
    let (_, _, name) = path_params;
    let row = ctx_item(&ctx, &name)?;
    let scope = item_scope(&state, &ctx, row).await?;
    let change = Change {
        actor: ctx.principal()?,
        message: Some(format!("renamed from '{name}'")),
        event: None,
    };
    let renamed = svc::rename(&state, &scope, row, &req.name, &change).await?;
    Ok(Json(render(&renamed, &scope)))
}

/// Where to move an item: exactly one of `env` and `org_level`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The environment to move it to.
    #[serde(default)]
    pub env: Option<String>,
    /// Move it to the organization level (where every environment's resolution finds it).
    #[serde(default)]
    pub org_level: bool,
    /// A new name on the way (the current one by default).
    #[serde(default)]
    pub name: Option<String>,
}

/// Moves a secret or a variable to another environment or to the organization level (or from
/// it). It keeps its versions, grants and history; a secret's versions are sealed again for
/// their new place and its values never leave the server. Needs the write relation on the item
/// and on the destination.
#[utoipa::path(post, path = "/v1/orgs/{org}/{kind}/{name}/move", tag = "resources",
    params(("org" = String, Path), ("kind" = String, Path, description = "secrets or variables"), ("name" = String, Path), ("env" = Option<String>, Query)),
    request_body = MoveRequest,
    responses((status = 200, description = "moved"), (status = 409, description = "the name is taken at the destination")))]
pub async fn move_item(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(path_params): ApiPath<(String, String, String)>,
    ApiJson(req): ApiJson<MoveRequest>,
) -> AppResult<Json<Resource>> {
    let (_, _, name) = path_params;
    let kind = ctx_kind(&ctx)?;
    let row = ctx_item(&ctx, &name)?;
    let from = item_scope(&state, &ctx, row).await?;
    let (to, object, what) = match (req.env.as_deref(), req.org_level) {
        (Some(env_name), false) => {
            let env = state
                .store
                .find_resource_cached(&from.org_id, "", "Environment", env_name)
                .await?;
            // An environment the caller cannot see answers as one that does not exist.
            let env_id = env.as_ref().map_or("-", |e| e.id.as_str());
            let to = ScopeNames {
                env_id: env_id.to_owned(),
                env: Some(env_name.to_owned()),
                ..from.clone()
            };
            (
                to,
                crate::model::env_object(env_id),
                ("environment", env_name),
            )
        }
        (None, true) => {
            let to = ScopeNames {
                env_id: String::new(),
                env: None,
                ..from.clone()
            };
            let what = ("organization", from.org.as_str());
            (to, crate::model::org_object(&from.org_id), what)
        }
        _ => {
            return Err(AppError::new(
                ErrorCode::InvalidArgument,
                "give the destination: either `env` or `org_level: true`",
            ));
        }
    };
    crate::routes::guard::require(
        &state,
        &ctx,
        crate::routes::guard::write_relation(kind),
        &object,
        Some(what),
    )
    .await?;
    // Moving a secret takes its values out of their place: it needs their reader's right too
    // (a write-only key may write new versions, never carry the old ones elsewhere).
    if kind == Kind::Secret {
        let item = crate::model::item_object(kind, &row.id);
        let rel = "can_read_value";
        crate::routes::guard::require(&state, &ctx, rel, &item, Some(("secret", &name))).await?;
    }
    let message = match &from.env {
        Some(env) => format!("moved from environment '{env}' as '{name}'"),
        None => format!("moved from the organization level as '{name}'"),
    };
    let change = Change {
        actor: ctx.principal()?,
        message: Some(message),
        event: None,
    };
    let dest = crate::moves::Destination {
        scope: &to,
        name: req.name.as_deref().unwrap_or(&name),
    };
    let moved = crate::moves::move_item(&state, &from, row, &dest, &change).await?;
    Ok(Json(render(&moved, &to)))
}

/// Reads an item.
#[utoipa::path(get, path = "/v1/orgs/{org}/{kind}/{name}", tag = "resources",
    params(("org" = String, Path), ("kind" = String, Path), ("name" = String, Path), ("env" = Option<String>, Query)),
    responses((status = 200, description = "the item"), (status = 404, description = "not found")))]
pub async fn get_item(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(path_params): ApiPath<(String, String, String)>,
) -> AppResult<Json<Resource>> {
    let (_, _, name) = path_params;
    let row = ctx_item(&ctx, &name)?;
    Ok(Json(render(row, &item_scope(&state, &ctx, row).await?)))
}

/// Creates or replaces an item (idempotent).
#[utoipa::path(put, path = "/v1/orgs/{org}/{kind}/{name}", tag = "resources",
    params(("org" = String, Path), ("kind" = String, Path), ("name" = String, Path), ("env" = Option<String>, Query)),
    request_body = Object, responses((status = 200, description = "updated"), (status = 201, description = "created")))]
pub async fn put_item(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(path_params): ApiPath<(String, String, String)>,
    ApiJson(input): ApiJson<ManifestInput>,
) -> AppResult<(StatusCode, Json<Resource>)> {
    let (_, _, name) = path_params;
    let kind = ctx_kind(&ctx)?;
    let manifest = into_resource(input, kind)?;
    if manifest.metadata.name != name {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            "metadata.name does not match the URL",
        ));
    }
    check_scope_fields(&ctx, &manifest)?;
    let change = change_of(&ctx, &manifest)?;
    match &ctx.item {
        Some(existing) => {
            let (row, _) = svc::update(&state, &ctx.scope, existing, &manifest, &change).await?;
            Ok((StatusCode::OK, Json(render(&row, &ctx.scope))))
        }
        None => match svc::create(&state, &ctx.scope, kind, &manifest, &change).await {
            Ok(row) => Ok((StatusCode::CREATED, Json(render(&row, &ctx.scope)))),
            // Another writer created it since the guard looked: this write comes second and
            // updates it, if the caller may write the item itself.
            Err(e) if e.api.code == ErrorCode::AlreadyExists => {
                let existing = state
                    .store
                    .find_resource_cached(
                        &ctx.scope.org_id,
                        &ctx.scope.env_id,
                        &kind.to_string(),
                        &name,
                    )
                    .await?
                    .ok_or(e)?;
                let rel = crate::routes::guard::write_relation(kind);
                let object = crate::model::item_object(kind, &existing.id);
                // As the guard would have, had the item been there (catching up with the
                // changelog if another server created it).
                let what = Some((kind.singular(), name.as_str()));
                crate::routes::guard::require(&state, &ctx, rel, &object, what).await?;
                let (row, _) =
                    svc::update(&state, &ctx.scope, &existing, &manifest, &change).await?;
                Ok((StatusCode::OK, Json(render(&row, &ctx.scope))))
            }
            Err(e) => Err(e),
        },
    }
}

/// How to delete an item.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Environment.
    pub env: Option<String>,
    /// Secrets only: remove the secret and every version's data for good instead of a soft
    /// delete.
    #[serde(default)]
    pub purge: bool,
}

/// Deletes an item (a secret is soft-deleted unless `purge=true`).
#[utoipa::path(delete, path = "/v1/orgs/{org}/{kind}/{name}", tag = "resources",
    params(("org" = String, Path), ("kind" = String, Path), ("name" = String, Path), DeleteQuery),
    responses((status = 204, description = "deleted"), (status = 404, description = "not found")))]
pub async fn delete_item(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(path_params): ApiPath<(String, String, String)>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> AppResult<StatusCode> {
    let (_, _, name) = path_params;
    let row = ctx_item(&ctx, &name)?;
    if q.purge {
        if row.kind != Kind::Secret.to_string() {
            return Err(AppError::new(
                ErrorCode::InvalidArgument,
                "only secrets are purged; other items are deleted for good already",
            ));
        }
        let scope = item_scope(&state, &ctx, row).await?;
        crate::secret_ops::purge(&state, &scope, row, ctx.principal()?).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    if row.kind == Kind::Secret.to_string() {
        // Secrets are soft-deleted: reads fail until `undelete`; versions stay.
        let scope = item_scope(&state, &ctx, row).await?;
        crate::secret_ops::set_deleted(&state, &scope, row, true, ctx.principal()?).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    let change = Change {
        actor: ctx.principal()?,
        message: None,
        event: None,
    };
    svc::delete(&state, &item_scope(&state, &ctx, row).await?, row, &change).await?;
    Ok(StatusCode::NO_CONTENT)
}
