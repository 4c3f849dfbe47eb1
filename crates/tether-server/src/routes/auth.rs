//! Login, token refresh, `whoami`, passwords and API keys.

use axum::Json;
use axum::extract::State;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tether_core::{ErrorCode, Kind};
use tether_crypto::{ApiKey, KeyEnv, Password};
use tether_store::identity::{insert_api_key, revoke_api_key, set_password_hash};
use tether_store::resources::find_resource;
use tether_store::{ApiKeyRow, ResourceRow};

use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::routes::extract::{ApiJson, ApiPath, CtxExt};
use crate::state::AppState;
use crate::tokens::{SessionTokens, issue_session, refresh};

/// Password login.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Organization name (default `default`).
    #[serde(default)]
    pub org: Option<String>,
    /// User name.
    pub username: String,
    /// Password.
    #[schema(value_type = String)]
    pub password: secrecy::SecretString,
}

fn login_failed() -> AppError {
    AppError::new(
        ErrorCode::InvalidCredentials,
        "the user name or password is wrong",
    )
}

/// Logs in with a password and returns a session.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest, responses((status = 200, body = SessionTokens), (status = 401, description = "wrong credentials")))]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> AppResult<Json<SessionTokens>> {
    use secrecy::ExposeSecret;
    let org_name = req.org.as_deref().unwrap_or("default");
    let org = find_resource(state.store.reader(), "", "", "Organization", org_name)
        .await?
        .ok_or_else(login_failed)?;
    let user = find_resource(state.store.reader(), &org.id, "", "User", &req.username).await?;
    let phc = match &user {
        Some(u) => state.store.password_hash(&u.id).await?,
        None => None,
    };
    // Verify even when the user is missing, so timing does not reveal which names exist.
    let phc_ref = phc.clone().unwrap_or_else(|| DUMMY_PHC.to_owned());
    let password = Password::new(req.password.expose_secret().to_owned());
    let ok = tokio::task::spawn_blocking(move || {
        tether_crypto::verify_password(&password, &phc_ref).unwrap_or(false)
    })
    .await
    .map_err(AppError::internal)?;
    let (Some(user), true, Some(_)) = (user, ok, phc) else {
        return Err(login_failed());
    };
    let principal = crate::auth::load_principal(
        &state,
        &user.id,
        crate::auth::AuthVia::Session {
            token_id: String::new(),
        },
        Vec::new(),
    )
    .await
    .map_err(|_| login_failed())?;
    Ok(Json(
        issue_session(&state, &principal.id, &org.id, None).await?,
    ))
}

/// A valid Argon2id hash of a random string, verified when the user does not exist.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$N8TUxWHMHn8iWTcV3fnV4yLyb0hGiwrOvEm0E1XOcJg";

/// Refresh request.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last session.
    #[schema(value_type = String)]
    pub refresh_token: secrecy::SecretString,
}

/// Exchanges a refresh token (single use) for a new session.
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth", request_body = RefreshRequest, responses((status = 200, body = SessionTokens), (status = 401, description = "invalid or reused")))]
pub async fn token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> AppResult<Json<SessionTokens>> {
    use secrecy::ExposeSecret;
    Ok(Json(
        refresh(&state, req.refresh_token.expose_secret()).await?,
    ))
}

/// Who the caller is.
#[utoipa::path(get, path = "/v1/auth/whoami", tag = "auth", responses((status = 200, description = "the principal")))]
pub async fn whoami(ctx: CtxExt) -> AppResult<Json<Principal>> {
    Ok(Json(ctx.principal()?.clone()))
}

/// An API key as listed: never the key itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    /// Public key id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Prefix, id and last four characters.
    pub display: String,
    /// Scopes (empty: all of the owner's permissions).
    pub scopes: Vec<String>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Expires (RFC 3339), if set.
    pub expires_at: Option<String>,
    /// Last use (RFC 3339), recorded in batches.
    pub last_used_at: Option<String>,
    /// Revoked (RFC 3339), if revoked.
    pub revoked_at: Option<String>,
}

fn view(k: &ApiKeyRow) -> ApiKeyView {
    let ts = tether_core::clock::rfc3339;
    ApiKeyView {
        id: k.id.clone(),
        name: k.name.clone(),
        display: k.display.clone(),
        scopes: serde_json::from_str(&k.scopes).unwrap_or_default(),
        created_at: ts(k.created_at),
        expires_at: k.expires_at.map(ts),
        last_used_at: k.last_used_at.map(ts),
        revoked_at: k.revoked_at.map(ts),
    }
}

/// A new API key request.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyRequest {
    /// Name.
    pub name: String,
    /// Relative lifetime, e.g. `30d` or `12h`.
    #[serde(default)]
    pub expires_in: Option<String>,
    /// Relations the key may use (a subset of the owner's): can_read, can_write, can_manage,
    /// can_manage_iam, can_read_value.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `test` for a `tk_test_` key.
    #[serde(default)]
    pub test: bool,
}

/// A created key: shown once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NewKeyResponse {
    /// The full key. It is not stored and cannot be shown again.
    pub key: String,
    /// The listing view.
    pub info: ApiKeyView,
}

const SCOPES: [&str; 5] = [
    "can_read",
    "can_write",
    "can_manage",
    "can_manage_iam",
    "can_read_value",
];

/// Generates an API key for `owner` and the row that stores it: the public id, the keyed
/// hash and the listing display (prefix, id, last four characters), never the key itself.
pub(crate) fn new_api_key(
    state: &AppState,
    owner: &ResourceRow,
    name: String,
    created_by: String,
    scopes: String,
    env: KeyEnv,
    expires_at: Option<i64>,
) -> (ApiKey, ApiKeyRow) {
    let (key, id) = ApiKey::generate(env);
    let hint = key.hint();
    let row = ApiKeyRow {
        id: id.as_str().to_owned(),
        org_id: owner.org_id.clone(),
        owner_id: owner.id.clone(),
        owner_kind: owner.kind.clone(),
        name,
        hash: state.pepper.hash(key.secret()).as_bytes().to_vec(),
        display: format!("{}…{}", hint.prefix_and_id(), hint.last4()),
        scopes,
        created_at: state.clock.now_millis(),
        created_by,
        expires_at,
        last_used_at: None,
        revoked_at: None,
    };
    (key, row)
}

pub(crate) async fn mint_key(
    state: &AppState,
    owner: &ResourceRow,
    creator: &Principal,
    req: NewKeyRequest,
) -> AppResult<NewKeyResponse> {
    tether_core::Name::parse(&req.name)
        .map_err(|e| AppError::new(ErrorCode::InvalidName, e.to_string()))?;
    if let Some(bad) = req.scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            format!("unknown scope '{bad}' (one of {})", SCOPES.join(", ")),
        ));
    }
    let now = state.clock.now_millis();
    let expires_at = match req.expires_in.as_deref() {
        Some(d) => Some(
            now + tether_core::clock::parse_duration_millis(d)
                .filter(|v| *v > 0)
                .ok_or_else(|| {
                    AppError::new(
                        ErrorCode::InvalidArgument,
                        "expires_in is like 30d, 12h or 15m",
                    )
                })?,
        ),
        None => None,
    };
    let scopes = serde_json::to_string(&req.scopes).map_err(AppError::internal)?;
    let env = if req.test { KeyEnv::Test } else { KeyEnv::Live };
    let (key, row) = new_api_key(
        state,
        owner,
        req.name,
        creator.display(),
        scopes,
        env,
        expires_at,
    );
    let mut tx = state.store.begin().await?;
    insert_api_key(&mut tx, &row).await?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(NewKeyResponse {
        key: key.expose_secret().to_owned(),
        info: view(&row),
    })
}

async fn principal_row(state: &AppState, p: &Principal) -> AppResult<ResourceRow> {
    tether_store::resources::get_resource(state.store.reader(), &p.id)
        .await?
        .ok_or_else(|| {
            AppError::new(
                ErrorCode::InvalidCredentials,
                "the principal no longer exists",
            )
        })
}

/// Lists the caller's own API keys.
#[utoipa::path(get, path = "/v1/auth/keys", tag = "auth", responses((status = 200, body = Vec<ApiKeyView>)))]
pub async fn list_own_keys(
    State(state): State<AppState>,
    ctx: CtxExt,
) -> AppResult<Json<Vec<ApiKeyView>>> {
    let p = ctx.principal()?;
    Ok(Json(
        state
            .store
            .api_keys_of(&p.id)
            .await?
            .iter()
            .map(view)
            .collect(),
    ))
}

/// Creates an API key for the caller.
#[utoipa::path(post, path = "/v1/auth/keys", tag = "auth", request_body = NewKeyRequest, responses((status = 201, body = NewKeyResponse)))]
pub async fn create_own_key(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiJson(req): ApiJson<NewKeyRequest>,
) -> AppResult<(StatusCode, Json<NewKeyResponse>)> {
    let p = ctx.principal()?;
    let owner = principal_row(&state, p).await?;
    Ok((
        StatusCode::CREATED,
        Json(mint_key(&state, &owner, p, req).await?),
    ))
}

async fn revoke_owned(state: &AppState, owner_id: &str, key_id: &str) -> AppResult<StatusCode> {
    let key = state
        .store
        .api_key(key_id)
        .await?
        .filter(|k| k.owner_id == owner_id)
        .ok_or_else(|| AppError::not_found("API key", key_id))?;
    let mut tx = state.store.begin().await?;
    revoke_api_key(&mut tx, &key.id, state.clock.now_millis()).await?;
    tx.commit().await.map_err(AppError::internal)?;
    state.keys.forget(&key.id);
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes one of the caller's API keys.
#[utoipa::path(delete, path = "/v1/auth/keys/{key_id}", tag = "auth", params(("key_id" = String, Path)), responses((status = 204, description = "revoked")))]
pub async fn revoke_own_key(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(key_id): ApiPath<String>,
) -> AppResult<StatusCode> {
    revoke_owned(&state, &ctx.principal()?.id, &key_id).await
}

/// A new password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    /// The new password (at least 12 characters).
    #[schema(value_type = String)]
    pub password: secrecy::SecretString,
}

async fn store_password(
    state: &AppState,
    principal_id: &str,
    req: PasswordRequest,
) -> AppResult<StatusCode> {
    use secrecy::ExposeSecret;
    if req.password.expose_secret().chars().count() < 12 {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            "a password has at least 12 characters",
        ));
    }
    let password = Password::new(req.password.expose_secret().to_owned());
    let phc = tokio::task::spawn_blocking(move || tether_crypto::hash_password(&password))
        .await
        .map_err(AppError::internal)?
        .map_err(AppError::internal)?;
    let mut tx = state.store.begin().await?;
    set_password_hash(&mut tx, principal_id, &phc, state.clock.now_millis()).await?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes the caller's own password (users only).
#[utoipa::path(post, path = "/v1/auth/password", tag = "auth", request_body = PasswordRequest, responses((status = 204, description = "changed")))]
pub async fn change_own_password(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiJson(req): ApiJson<PasswordRequest>,
) -> AppResult<StatusCode> {
    let p = ctx.principal()?;
    if p.kind != Kind::User {
        return Err(AppError::new(
            ErrorCode::InvalidArgument,
            "service accounts have no password",
        ));
    }
    store_password(&state, &p.id, req).await
}

fn principal_item<'a>(
    ctx: &'a crate::routes::guard::Ctx,
    name: &str,
    kinds: &[Kind],
) -> AppResult<&'a ResourceRow> {
    let kind = ctx
        .kind
        .filter(|k| kinds.contains(k))
        .ok_or_else(|| AppError::not_found("collection", name))?;
    ctx.item
        .as_deref()
        .ok_or_else(|| AppError::not_found(kind.singular(), name))
}

/// Sets a user's password (IAM administrators).
#[utoipa::path(post, path = "/v1/orgs/{org}/{kind}/{name}/password", tag = "auth", params(("org" = String, Path), ("kind" = String, Path, description = "users"), ("name" = String, Path)), request_body = PasswordRequest, responses((status = 204, description = "set")))]
pub async fn set_password(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(path_params): ApiPath<(String, String, String)>,
    ApiJson(req): ApiJson<PasswordRequest>,
) -> AppResult<StatusCode> {
    let (_, _, name) = path_params;
    let user = principal_item(&ctx, &name, &[Kind::User])?;
    store_password(&state, &user.id, req).await
}

/// Lists a principal's API keys.
#[utoipa::path(get, path = "/v1/orgs/{org}/{kind}/{name}/keys", tag = "auth", params(("org" = String, Path), ("kind" = String, Path, description = "users or service-accounts"), ("name" = String, Path)), responses((status = 200, body = Vec<ApiKeyView>)))]
pub async fn list_keys(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(path_params): ApiPath<(String, String, String)>,
) -> AppResult<Json<Vec<ApiKeyView>>> {
    let (_, _, name) = path_params;
    let owner = principal_item(&ctx, &name, &[Kind::User, Kind::ServiceAccount])?;
    Ok(Json(
        state
            .store
            .api_keys_of(&owner.id)
            .await?
            .iter()
            .map(view)
            .collect(),
    ))
}

/// Creates an API key for a user or service account.
#[utoipa::path(post, path = "/v1/orgs/{org}/{kind}/{name}/keys", tag = "auth", params(("org" = String, Path), ("kind" = String, Path), ("name" = String, Path)), request_body = NewKeyRequest, responses((status = 201, body = NewKeyResponse)))]
pub async fn create_key(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(path_params): ApiPath<(String, String, String)>,
    ApiJson(req): ApiJson<NewKeyRequest>,
) -> AppResult<(StatusCode, Json<NewKeyResponse>)> {
    let (_, _, name) = path_params;
    let owner = principal_item(&ctx, &name, &[Kind::User, Kind::ServiceAccount])?;
    Ok((
        StatusCode::CREATED,
        Json(mint_key(&state, owner, ctx.principal()?, req).await?),
    ))
}

/// Revokes an API key of a user or service account.
#[utoipa::path(delete, path = "/v1/orgs/{org}/{kind}/{name}/keys/{key_id}", tag = "auth", params(("org" = String, Path), ("kind" = String, Path), ("name" = String, Path), ("key_id" = String, Path)), responses((status = 204, description = "revoked")))]
pub async fn revoke_key(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiPath(path_params): ApiPath<(String, String, String, String)>,
) -> AppResult<StatusCode> {
    let (_, _, name, key_id) = path_params;
    let owner = principal_item(&ctx, &name, &[Kind::User, Kind::ServiceAccount])?;
    revoke_owned(&state, &owner.id, &key_id).await
}
