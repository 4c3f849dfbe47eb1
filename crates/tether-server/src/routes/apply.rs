//! `POST /v1/apply`: create or update many resources from multi-document YAML (or JSON), each
//! authorized on its own. Applying the same manifests twice changes nothing the second time.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Serialize;
use tether_core::{ErrorCode, Kind, Resource};
use tether_store::ResourceRow;
use tether_store::resources::find_resource;

use crate::error::{AppError, AppResult};
use crate::model::{PLATFORM, env_object, item_object, org_object};
use crate::resources::{self as svc, Change, ScopeNames};
use crate::routes::extract::CtxExt;
use crate::routes::guard::{Ctx, allowed, write_relation};
use crate::state::AppState;

/// The outcome for one document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApplyResult {
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Organization.
    pub org: Option<String>,
    /// Environment.
    pub env: Option<String>,
    /// `created`, `updated` or `unchanged`.
    pub result: &'static str,
}

/// Applies manifests in dependency order (organizations, environments, identities, teams,
/// bindings). It stops at the first failing document; earlier ones stay applied.
#[utoipa::path(post, path = "/v1/apply", tag = "resources", request_body(content = String, content_type = "application/yaml"), responses((status = 200, body = Vec<ApplyResult>)))]
pub async fn apply(
    State(state): State<AppState>,
    ctx: CtxExt,
    body: Bytes,
) -> AppResult<Json<Vec<ApplyResult>>> {
    let mut manifests = tether_core::manifest::parse_manifests(&body)?;
    manifests.sort_by_key(|m| Kind::ALL.iter().position(|k| *k == m.kind));
    let mut results = Vec::new();
    for (i, m) in manifests.iter().enumerate() {
        let r = apply_one(&state, &ctx, m).await.map_err(|mut e| {
            e.api.message = format!(
                "document {} ({} {}): {}",
                i + 1,
                m.kind,
                m.metadata.name,
                e.api.message
            );
            e
        })?;
        results.push(r);
    }
    Ok(Json(results))
}

async fn apply_one(state: &AppState, ctx: &Ctx, m: &Resource) -> AppResult<ApplyResult> {
    let principal = ctx.principal()?;
    let change = Change {
        actor: principal,
        message: m.metadata.version.as_ref().and_then(|v| v.message.clone()),
        event: None,
    };
    let (scope, existing) = if m.kind == Kind::Organization {
        org_target(state, ctx, m).await?
    } else {
        item_target(state, ctx, m).await?
    };
    let result = match existing {
        Some(row) => {
            if svc::update(state, &scope, &row, m, &change).await?.1 {
                "updated"
            } else {
                "unchanged"
            }
        }
        None => {
            svc::create(state, &scope, m.kind, m, &change).await?;
            "created"
        }
    };
    Ok(ApplyResult {
        kind: m.kind.to_string(),
        name: m.metadata.name.clone(),
        org: scope_org(m, &scope),
        env: scope.env.clone(),
        result,
    })
}

fn scope_org(m: &Resource, scope: &ScopeNames) -> Option<String> {
    (m.kind != Kind::Organization).then(|| scope.org.clone())
}

fn deny(kind: Kind, name: &str) -> AppError {
    AppError::not_found(kind.singular(), name)
}

async fn org_target(
    state: &AppState,
    ctx: &Ctx,
    m: &Resource,
) -> AppResult<(ScopeNames, Option<ResourceRow>)> {
    let existing = find_resource(
        state.store.reader(),
        "",
        "",
        "Organization",
        &m.metadata.name,
    )
    .await?;
    let scope = ScopeNames {
        org: m.metadata.name.clone(),
        ..ScopeNames::default()
    };
    let ok = match &existing {
        Some(org) => allowed(state, ctx, "can_manage", &org_object(&org.id))?,
        None => allowed(state, ctx, "admin", PLATFORM)?,
    };
    if !ok {
        return Err(match existing {
            Some(_) => deny(Kind::Organization, &m.metadata.name),
            None => AppError::new(
                ErrorCode::Forbidden,
                "creating organizations needs platform admin",
            ),
        });
    }
    Ok((scope, existing))
}

async fn item_target(
    state: &AppState,
    ctx: &Ctx,
    m: &Resource,
) -> AppResult<(ScopeNames, Option<ResourceRow>)> {
    let principal = ctx.principal()?;
    let org_name = m
        .metadata
        .org
        .clone()
        .unwrap_or_else(|| principal.org.clone());
    let org = find_resource(state.store.reader(), "", "", "Organization", &org_name)
        .await?
        .ok_or_else(|| deny(Kind::Organization, &org_name))?;
    let mut scope = ScopeNames {
        org_id: org.id.clone(),
        org: org.name.clone(),
        env_id: String::new(),
        env: None,
    };
    let mut scope_obj = org_object(&org.id);
    if let Some(env_name) = &m.metadata.env {
        if m.kind.scope() != tether_core::resource::Scope::OrgOrEnv {
            return Err(AppError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "{} resources live at the organization level",
                    m.kind.singular()
                ),
            ));
        }
        let env = find_resource(state.store.reader(), &org.id, "", "Environment", env_name)
            .await?
            .ok_or_else(|| deny(Kind::Environment, env_name))?;
        scope_obj = env_object(&env.id);
        scope.env_id = env.id;
        scope.env = Some(env.name);
    }
    let existing = find_resource(
        state.store.reader(),
        &org.id,
        &scope.env_id,
        &m.kind.to_string(),
        &m.metadata.name,
    )
    .await?;
    let object = match (&existing, m.kind) {
        (Some(row), kind) => item_object(kind, &row.id),
        (None, _) => scope_obj,
    };
    if !allowed(state, ctx, write_relation(m.kind), &object)? {
        let visible = allowed(state, ctx, "can_read", &object)?;
        return Err(if visible {
            AppError::new(
                ErrorCode::Forbidden,
                format!("this needs '{}'", write_relation(m.kind)),
            )
        } else {
            deny(m.kind, &m.metadata.name)
        });
    }
    Ok((scope, existing))
}
