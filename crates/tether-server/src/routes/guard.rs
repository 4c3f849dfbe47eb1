//! Route guards. Every route of the router has an entry in [`GUARDS`] that declares the relation
//! it needs and on which object; the guard middleware authenticates the caller, resolves the
//! object from the path, asks the authorizer, and fails closed for a route with no entry. An
//! object the caller cannot see answers exactly like a missing one.

use std::sync::Arc;

use axum::RequestPartsExt;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::Method;
use tether_core::{ErrorCode, Kind};
use tether_store::ResourceRow;

use crate::auth::{Principal, authenticate};
use crate::authz::CheckContext;
use crate::error::{AppError, AppResult};
use crate::model::{PLATFORM, env_object, item_object, org_object};
use crate::resources::ScopeNames;
use crate::state::AppState;

/// Which relation a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rel {
    /// A fixed relation.
    Fixed(&'static str),
    /// The write relation of the `{kind}` in the path: `can_manage` for environments,
    /// `can_manage_iam` for identities, teams and role bindings.
    KindWrite,
}

impl Rel {
    /// The relation, with `kind_write` standing for [`Rel::KindWrite`].
    pub fn or(self, kind_write: &'static str) -> &'static str {
        match self {
            Rel::Fixed(r) => r,
            Rel::KindWrite => kind_write,
        }
    }
}

/// On which object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// No authentication (health, metrics, docs, login).
    Public,
    /// Any authenticated principal; the handler narrows further (lists are filtered).
    Authenticated,
    /// The installation (`platform:tether`).
    Platform,
    /// The organization in `{org}`.
    Org,
    /// The resource `{kind}/{name}` in `{org}` (and `?env=`), or the scope when there is no
    /// `{name}`.
    Kind,
}

/// One route's declared permission.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    /// HTTP method.
    pub method: &'static str,
    /// Path template as registered.
    pub path: &'static str,
    /// The relation.
    pub rel: Rel,
    /// The object.
    pub target: Target,
}

const fn g(method: &'static str, path: &'static str, rel: Rel, target: Target) -> Guard {
    Guard {
        method,
        path,
        rel,
        target,
    }
}

const READ: Rel = Rel::Fixed("can_read");
const NONE: Rel = Rel::Fixed("");

/// The route table. The route-matrix test fails if a route of the router is missing here.
pub const GUARDS: &[Guard] = &[
    g("GET", "/healthz", NONE, Target::Public),
    g("GET", "/readyz", NONE, Target::Public),
    g("GET", "/metrics", NONE, Target::Public),
    g("GET", "/.well-known/jwks.json", NONE, Target::Public),
    g("POST", "/v1/auth/login", NONE, Target::Public),
    g("POST", "/v1/auth/token", NONE, Target::Public),
    g("GET", "/v1/auth/whoami", NONE, Target::Authenticated),
    g("GET", "/v1/auth/keys", NONE, Target::Authenticated),
    g("POST", "/v1/auth/keys", NONE, Target::Authenticated),
    g(
        "DELETE",
        "/v1/auth/keys/{key_id}",
        NONE,
        Target::Authenticated,
    ),
    g("POST", "/v1/auth/password", NONE, Target::Authenticated),
    g("POST", "/v1/apply", NONE, Target::Authenticated),
    g("GET", "/v1/orgs", NONE, Target::Authenticated),
    // Search checks `can_read` on each item it returns.
    g("GET", "/v1/orgs/{org}/search", NONE, Target::Authenticated),
    g("POST", "/v1/orgs", Rel::Fixed("admin"), Target::Platform),
    g("GET", "/v1/orgs/{org}", READ, Target::Org),
    g(
        "PUT",
        "/v1/orgs/{org}",
        Rel::Fixed("can_manage"),
        Target::Org,
    ),
    g("DELETE", "/v1/orgs/{org}", Rel::Fixed("owner"), Target::Org),
    g("GET", "/v1/orgs/{org}/{kind}", READ, Target::Kind),
    g(
        "POST",
        "/v1/orgs/{org}/{kind}",
        Rel::KindWrite,
        Target::Kind,
    ),
    g("GET", "/v1/orgs/{org}/{kind}/{name}", READ, Target::Kind),
    g(
        "PUT",
        "/v1/orgs/{org}/{kind}/{name}",
        Rel::KindWrite,
        Target::Kind,
    ),
    g(
        "DELETE",
        "/v1/orgs/{org}/{kind}/{name}",
        Rel::KindWrite,
        Target::Kind,
    ),
    g(
        "POST",
        "/v1/orgs/{org}/{kind}/{name}/rename",
        Rel::KindWrite,
        Target::Kind,
    ),
    g(
        "POST",
        "/v1/orgs/{org}/{kind}/{name}/move",
        Rel::KindWrite,
        Target::Kind,
    ),
    g(
        "POST",
        "/v1/orgs/{org}/{kind}/{name}/password",
        Rel::Fixed("can_manage_iam"),
        Target::Kind,
    ),
    g(
        "GET",
        "/v1/orgs/{org}/{kind}/{name}/keys",
        Rel::Fixed("can_manage_iam"),
        Target::Kind,
    ),
    g(
        "POST",
        "/v1/orgs/{org}/{kind}/{name}/keys",
        Rel::Fixed("can_manage_iam"),
        Target::Kind,
    ),
    g(
        "DELETE",
        "/v1/orgs/{org}/{kind}/{name}/keys/{key_id}",
        Rel::Fixed("can_manage_iam"),
        Target::Kind,
    ),
    g(
        "POST",
        "/v1/orgs/{org}/{kind}/{name}/versions",
        Rel::KindWrite,
        Target::Kind,
    ),
    g(
        "GET",
        "/v1/orgs/{org}/{kind}/{name}/versions",
        READ,
        Target::Kind,
    ),
    g(
        "GET",
        "/v1/orgs/{org}/{kind}/{name}/data",
        Rel::Fixed("can_read_value"),
        Target::Kind,
    ),
    g(
        "PATCH",
        "/v1/orgs/{org}/{kind}/{name}/data",
        Rel::KindWrite,
        Target::Kind,
    ),
    g(
        "POST",
        "/v1/orgs/{org}/{kind}/{name}/versions/{version}/destroy",
        Rel::KindWrite,
        Target::Kind,
    ),
    g(
        "GET",
        "/v1/orgs/{org}/{kind}/{name}/diff",
        Rel::Fixed("can_read_value"),
        Target::Kind,
    ),
    g(
        "POST",
        "/v1/orgs/{org}/{kind}/{name}/rollback",
        Rel::KindWrite,
        Target::Kind,
    ),
    g(
        "POST",
        "/v1/orgs/{org}/{kind}/{name}/undelete",
        Rel::KindWrite,
        Target::Kind,
    ),
    g(
        "GET",
        "/v1/orgs/{org}/{kind}/{name}/resolved",
        READ,
        Target::Kind,
    ),
    g(
        "GET",
        "/v1/orgs/{org}/{kind}/{name}/references",
        READ,
        Target::Kind,
    ),
    // KEKs: listing and rotating need `can_manage`; switching to a customer key, which can
    // lock the organization out of its data if the key is revoked, needs `owner`.
    g(
        "GET",
        "/v1/orgs/{org}/kek",
        Rel::Fixed("can_manage"),
        Target::Org,
    ),
    g(
        "PUT",
        "/v1/orgs/{org}/kek",
        Rel::Fixed("owner"),
        Target::Org,
    ),
    g(
        "POST",
        "/v1/orgs/{org}/kek/rotate",
        Rel::Fixed("can_manage"),
        Target::Org,
    ),
    g(
        "POST",
        "/v1/orgs/{org}/kek/flush-cache",
        Rel::Fixed("can_manage"),
        Target::Org,
    ),
    g(
        "GET",
        "/v1/orgs/{org}/backend",
        Rel::Fixed("can_manage"),
        Target::Org,
    ),
    g(
        "PUT",
        "/v1/orgs/{org}/backend",
        Rel::Fixed("owner"),
        Target::Org,
    ),
    g(
        "POST",
        "/v1/operator/rotate-root-key",
        Rel::Fixed("admin"),
        Target::Platform,
    ),
    g("GET", "/v1/audit/{org}/versions", READ, Target::Org),
    g(
        "GET",
        "/v1/audit/{org}/versions/{version}",
        READ,
        Target::Org,
    ),
    g(
        "POST",
        "/v1/audit/{org}/versions/{version}/restore",
        READ,
        Target::Org,
    ),
    g("GET", "/v1/audit/{org}/diff", READ, Target::Org),
    g(
        "GET",
        "/v1/audit/{org}/verify",
        Rel::Fixed("can_manage"),
        Target::Org,
    ),
    g(
        "GET",
        "/v1/audit/{org}/log",
        Rel::Fixed("can_manage"),
        Target::Org,
    ),
    g(
        "GET",
        "/v1/audit/{org}/log/export",
        Rel::Fixed("can_manage"),
        Target::Org,
    ),
    // Runners (tunnel/registry.rs): credentials mint an identity, so they need can_manage_iam.
    g(
        "POST",
        "/v1/orgs/{org}/{kind}/{name}/credentials",
        Rel::Fixed("can_manage_iam"),
        Target::Kind,
    ),
    g(
        "POST",
        "/v1/orgs/{org}/{kind}/{name}/credentials/regenerate",
        Rel::Fixed("can_manage_iam"),
        Target::Kind,
    ),
    g(
        "GET",
        "/v1/orgs/{org}/{kind}/{name}/status",
        READ,
        Target::Kind,
    ),
    g(
        "POST",
        "/v1/orgs/{org}/{kind}/{name}/operations",
        Rel::Fixed("can_write"),
        Target::Kind,
    ),
    g("GET", "/v1/tunnel/{org}/runners", READ, Target::Org),
];

/// Looks up a route's guard.
pub fn guard_for(method: &Method, path: &str) -> Option<&'static Guard> {
    GUARDS
        .iter()
        .find(|g| g.method == method.as_str() && g.path == path)
}

/// What the guard resolved, for the handler.
#[derive(Clone)]
pub struct Ctx {
    /// The caller (absent on public routes), shared with the credential cache.
    pub principal: Option<Arc<Principal>>,
    /// Request attributes for conditions.
    pub check: CheckContext,
    /// `{org}` (shared with the row cache).
    pub org: Option<Arc<ResourceRow>>,
    /// `?env=` or the environment named by `{kind}=envs/{name}` scope.
    pub env: Option<Arc<ResourceRow>>,
    /// `{kind}`.
    pub kind: Option<Kind>,
    /// `{kind}/{name}`, when it exists.
    pub item: Option<Arc<ResourceRow>>,
    /// Names of the scope.
    pub scope: ScopeNames,
}

impl Ctx {
    /// The caller; handlers behind an authenticated guard can rely on it.
    pub fn principal(&self) -> AppResult<&Principal> {
        self.principal.as_deref().ok_or_else(|| {
            AppError::new(
                ErrorCode::Unauthenticated,
                "this request needs a credential",
            )
        })
    }
}

/// Facts about the request for the request log, attached to the response.
#[derive(Debug, Clone, Default)]
pub struct LogFacts {
    /// The principal's display name.
    pub principal: String,
    /// The organization name.
    pub org: String,
    /// The action (relation).
    pub action: String,
    /// `allowed`, `denied`, `unauthenticated`.
    pub result: &'static str,
}

/// The write relation for a kind.
pub fn write_relation(kind: Kind) -> &'static str {
    match kind {
        Kind::Organization | Kind::Environment => "can_manage",
        Kind::Team | Kind::User | Kind::ServiceAccount | Kind::RoleBinding | Kind::Runner => {
            "can_manage_iam"
        }
        Kind::Secret | Kind::Variable => "can_write",
    }
}

/// The guard middleware.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .extract::<MatchedPath>()
        .await
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let Some(guard) = guard_for(&parts.method, &path) else {
        tracing::error!(%path, method = %parts.method, "route has no declared permission; refusing");
        return AppError::internal("undeclared route").into_response();
    };
    let raw = parts.extract::<RawPathParams>().await.ok();
    let params = Params::of(raw.as_ref());
    let query = parts.uri.query().unwrap_or("").to_owned();
    let ip = parts
        .extensions
        .get::<axum::extract::ConnectInfo<crate::serve::Peer>>()
        .map(|c| c.0.ip.clone());
    let bearer = bearer_token(&parts.headers);
    let mut facts = LogFacts {
        action: action_name(guard),
        ..LogFacts::default()
    };
    let outcome = resolve(
        &state,
        guard,
        &params,
        &query,
        bearer.as_deref(),
        ip,
        &mut facts,
    )
    .await;
    let mut response = match outcome {
        Ok(ctx) => {
            facts.result = "allowed";
            let mut req = Request::from_parts(parts, body);
            req.extensions_mut().insert(ctx);
            next.run(req).await
        }
        Err(e) => {
            if facts.result.is_empty() {
                facts.result = "denied";
            }
            e.into_response()
        }
    };
    response.extensions_mut().insert(facts);
    response
}

/// The path's `{org}`, `{kind}` and `{name}`, percent-decoded.
#[derive(Default)]
struct Params<'a> {
    org: Option<&'a str>,
    kind: Option<&'a str>,
    name: Option<&'a str>,
}

impl<'a> Params<'a> {
    fn of(raw: Option<&'a RawPathParams>) -> Params<'a> {
        let mut params = Params::default();
        for (key, value) in raw.into_iter().flatten() {
            match key {
                "org" => params.org = Some(value),
                "kind" => params.kind = Some(value),
                "name" => params.name = Some(value),
                _ => {}
            }
        }
        params
    }
}

fn action_name(guard: &Guard) -> String {
    let rel = guard.rel.or("write");
    // Every request builds this: by concatenation, not through fmt.
    [guard.method, " ", guard.path, " [", rel, "]"].concat()
}

fn bearer_token(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

async fn resolve(
    state: &AppState,
    guard: &Guard,
    params: &Params<'_>,
    query: &str,
    bearer: Option<&str>,
    ip: Option<Arc<str>>,
    facts: &mut LogFacts,
) -> AppResult<Ctx> {
    let check = CheckContext {
        ip,
        now_ms: Some(state.clock.now_millis()),
    };
    let mut ctx = Ctx {
        principal: None,
        check,
        org: None,
        env: None,
        kind: None,
        item: None,
        scope: ScopeNames::default(),
    };
    if guard.target == Target::Public {
        return Ok(ctx);
    }
    let Some(token) = bearer else {
        facts.result = "unauthenticated";
        return Err(AppError::new(
            ErrorCode::Unauthenticated,
            "this request needs a credential: Authorization: Bearer <API key or token>",
        ));
    };
    let principal = authenticate(state, token)
        .await
        .inspect_err(|_| facts.result = "unauthenticated")?;
    facts.principal = principal.display();
    facts.org = principal.org.clone();
    ctx.principal = Some(principal);
    if guard.target == Target::Authenticated {
        return Ok(ctx);
    }
    if guard.target == Target::Platform {
        let rel = guard.rel.or("admin");
        require(state, &ctx, rel, PLATFORM, None).await?;
        return Ok(ctx);
    }
    resolve_scoped(state, guard, params, query, ctx, facts).await
}

async fn resolve_scoped(
    state: &AppState,
    guard: &Guard,
    params: &Params<'_>,
    query: &str,
    mut ctx: Ctx,
    facts: &mut LogFacts,
) -> AppResult<Ctx> {
    let org_name = params.org.unwrap_or_default();
    facts.org = org_name.to_owned();
    let org = state
        .store
        .find_resource_cached("", "", "Organization", org_name)
        .await?
        .ok_or_else(|| AppError::not_found("organization", org_name))?;
    let org_obj = org_object(&org.id);
    ctx.scope = ScopeNames {
        org_id: org.id.clone(),
        org: org.name.clone(),
        env_id: String::new(),
        env: None,
    };
    if guard.target == Target::Org {
        let rel = guard.rel.or("can_manage");
        require(state, &ctx, rel, &org_obj, Some(("organization", org_name))).await?;
        ctx.org = Some(org);
        return Ok(ctx);
    }
    let kind_text = params.kind.unwrap_or_default();
    let kind = Kind::parse(kind_text)
        .filter(|k| *k != Kind::Organization && kind_text == k.plural())
        .ok_or_else(|| AppError::not_found("collection", kind_text))?;
    ctx.kind = Some(kind);
    let mut scope_obj = org_obj.clone();
    if let Some(env_name) =
        query_param(query, "env").filter(|e| !e.is_empty() && kind != Kind::Environment)
    {
        let env = state
            .store
            .find_resource_cached(&org.id, "", "Environment", &env_name)
            .await?
            .ok_or_else(|| AppError::not_found("environment", &env_name))?;
        if kind.scope() != tether_core::resource::Scope::OrgOrEnv {
            return Err(AppError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "{} resources live at the organization level",
                    kind.singular()
                ),
            ));
        }
        scope_obj = env_object(&env.id);
        ctx.scope.env_id = env.id.clone();
        ctx.scope.env = Some(env.name.clone());
        ctx.env = Some(env);
    }
    let rel = guard.rel.or(write_relation(kind));
    let object = match params.name {
        Some(name) => {
            let item = state
                .store
                .find_resource_cached(&org.id, &ctx.scope.env_id, &kind.to_string(), name)
                .await?;
            match item {
                Some(item) => {
                    let obj = item_object(kind, &item.id);
                    ctx.item = Some(item);
                    obj
                }
                // A missing item: answer as the scope would (404 if the scope is not visible,
                // else the handler answers 404 or creates it).
                None => {
                    if rel == "can_read_value" {
                        require(
                            state,
                            &ctx,
                            "can_read",
                            &scope_obj,
                            Some((kind.singular(), name)),
                        )
                        .await?;
                        return Err(AppError::not_found(kind.singular(), name));
                    }
                    scope_obj
                }
            }
        }
        None => scope_obj,
    };
    // Name what the caller asked for: the item, else the environment or organization scope.
    let env_name = ctx.scope.env.clone();
    let what = match (params.name, env_name.as_deref()) {
        (Some(name), _) => (kind.singular(), name),
        (None, Some(env)) => ("environment", env),
        (None, None) => ("organization", org_name),
    };
    require(state, &ctx, rel, &object, Some(what)).await?;
    ctx.org = Some(org);
    Ok(ctx)
}

/// Requires `rel` on `object`. If denied and the caller cannot even read the object, the answer
/// is the same 404 a missing object gets; otherwise 403.
pub(crate) async fn require(
    state: &AppState,
    ctx: &Ctx,
    rel: &str,
    object: &str,
    what: Option<(&str, &str)>,
) -> AppResult<()> {
    let principal = ctx.principal()?;
    let subject = principal.subject();
    let scoped = principal.scope_allows(rel);
    if scoped && state.authz.check(&subject, rel, object, &ctx.check)? {
        return Ok(());
    }
    // Another server may have granted it a moment ago: catch up, then decide.
    if scoped
        && Box::pin(crate::changes::catch_up(state)).await
        && state.authz.check(&subject, rel, object, &ctx.check)?
    {
        return Ok(());
    }
    let visible = match what {
        Some(_) if rel != "can_read" => state
            .authz
            .check(&subject, "can_read", object, &ctx.check)?,
        _ => false,
    };
    match (visible, what) {
        (false, Some((kind, name))) => Err(AppError::not_found(kind, name)),
        _ => Err(AppError::new(
            ErrorCode::Forbidden,
            format!("this needs '{rel}'"),
        )),
    }
}

/// Checks a relation for a handler that authorizes per item (apply, audit filtering).
pub fn allowed(state: &AppState, ctx: &Ctx, rel: &str, object: &str) -> AppResult<bool> {
    let principal = ctx.principal()?;
    Ok(principal.scope_allows(rel)
        && state
            .authz
            .check(&principal.subject(), rel, object, &ctx.check)?)
}
