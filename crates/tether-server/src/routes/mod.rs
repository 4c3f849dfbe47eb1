//! The router. Routes are registered together with their OpenAPI operations (utoipa-axum), so
//! the OpenAPI document lists exactly the routes that exist, and every one of them passes
//! through the guard.

pub mod apply;
pub mod audit;
pub mod auth;
pub mod extract;
pub mod guard;
pub mod kek;
pub mod op_stream;
pub mod ops;
pub mod resolve;
pub mod resources;
pub mod runners;
pub mod secrets;

use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tether_core::ErrorCode;
use tether_core::id::RequestId;
use tether_store::RequestLogRecord;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{AppError, REQUEST_ID};
use crate::serve::Peer;
use crate::state::AppState;

/// The OpenAPI document's root.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tether API", description = "Tether control plane REST API."),
    tags((name = "resources"), (name = "secrets"), (name = "auth"), (name = "audit"), (name = "ops"), (name = "runners"))
)]
pub struct ApiDoc;

/// Routes and their OpenAPI operations.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::jwks))
        .routes(routes!(auth::login))
        .routes(routes!(auth::token))
        .routes(routes!(auth::whoami))
        .routes(routes!(auth::list_own_keys, auth::create_own_key))
        .routes(routes!(auth::revoke_own_key))
        .routes(routes!(auth::change_own_password))
        .routes(routes!(apply::apply))
        .routes(routes!(resources::list_orgs, resources::create_org))
        .routes(routes!(
            resources::get_org,
            resources::put_org,
            resources::delete_org
        ))
        .routes(routes!(resources::list_items, resources::create_item))
        .routes(routes!(
            resources::get_item,
            resources::put_item,
            resources::delete_item
        ))
        .routes(routes!(resources::rename_item))
        .routes(routes!(resources::move_item))
        .routes(routes!(resources::search))
        .routes(routes!(auth::set_password))
        .routes(routes!(auth::list_keys, auth::create_key))
        .routes(routes!(auth::revoke_key))
        .routes(routes!(secrets::write, secrets::versions))
        .routes(routes!(secrets::data, secrets::patch))
        .routes(routes!(secrets::destroy))
        .routes(routes!(secrets::rollback))
        .routes(routes!(secrets::diff))
        .routes(routes!(secrets::undelete))
        .routes(routes!(resolve::resolved))
        .routes(routes!(resolve::references))
        .routes(routes!(kek::list, kek::set))
        .routes(routes!(kek::rotate))
        .routes(routes!(kek::flush_cache))
        .routes(routes!(kek::get_backend, kek::set_backend))
        .routes(routes!(kek::rotate_root))
        .routes(routes!(audit::list_versions))
        .routes(routes!(audit::show_version))
        .routes(routes!(audit::restore))
        .routes(routes!(audit::diff))
        .routes(routes!(audit::verify))
        .routes(routes!(audit::search_log))
        .routes(routes!(audit::export_log))
        .routes(routes!(runners::generate))
        .routes(routes!(runners::regenerate))
        .routes(routes!(runners::status))
        .routes(routes!(runners::operate))
        .routes(routes!(runners::list))
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// Builds the whole application.
pub fn app(state: AppState) -> Router {
    let (api, doc) = api_router().split_for_parts();
    let guarded = api.route_layer(middleware::from_fn_with_state(state.clone(), guard::guard));
    let docs = utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", doc);
    let limit = state.max_body_bytes;
    Router::new()
        .merge(guarded)
        .merge(docs)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state, request_context))
}

async fn not_found() -> Response {
    AppError::new(ErrorCode::NotFound, "no such route").into_response()
}

async fn method_not_allowed() -> Response {
    AppError::new(
        ErrorCode::MethodNotAllowed,
        "this method is not allowed on this path",
    )
    .into_response()
}

fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Whether the path or query percent-encodes a NUL character (a URI cannot hold a raw one).
fn encodes_nul(uri: &http::Uri) -> bool {
    let text = uri.path_and_query().map_or("", |p| p.as_str());
    text.contains("%00")
}

/// The most bytes of a client-chosen organization name or unrouted path that the request log
/// keeps as a record's organization or action (the resource keeps the whole path).
const MAX_LOGGED_TERM: usize = 128;

/// At most `max` bytes of `s`, cut at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    let end = (0..=s.len().min(max))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    s.get(..end).unwrap_or_default()
}

fn skip_logging(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Records a request's duration and status. The handles are made once (per status), not
/// looked up by name on every request.
fn record_metrics(status: u16, took: std::time::Duration) {
    static DURATION: OnceLock<metrics::Histogram> = OnceLock::new();
    static BY_STATUS: [OnceLock<metrics::Counter>; 500] = [const { OnceLock::new() }; 500];
    DURATION
        .get_or_init(|| metrics::histogram!("tether_http_request_duration_seconds"))
        .record(took.as_secs_f64());
    let counter =
        |s: u16| metrics::counter!("tether_http_requests_total", "status" => s.to_string());
    match BY_STATUS.get(usize::from(status).wrapping_sub(100)) {
        Some(slot) => slot.get_or_init(|| counter(status)).increment(1),
        None => counter(status).increment(1),
    }
}

/// Assigns the request id, runs the request in its span, then records the request log entry
/// and metrics. Never a body or a header value is recorded.
async fn request_context(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = RequestId::generate().to_string();
    // Everything below runs with the request id in the task-local, which the log lines carry.
    REQUEST_ID
        .scope(id.clone(), serve_logged(state, id, req, next))
        .await
}

async fn serve_logged(state: AppState, id: String, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let at = state.clock.now_millis();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let ip = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0.ip.to_string())
        .unwrap_or_default();
    let ua = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect::<String>();
    let too_large = declared_length(&req).is_some_and(|n| n > state.max_body_bytes as u64);
    let mut res = if too_large {
        // Refuse from the declared length alone, before reading any of the body.
        AppError::new(ErrorCode::PayloadTooLarge, "the request body is too large").into_response()
    } else if encodes_nul(req.uri()) {
        // No name, id or filter contains NUL, and PostgreSQL's text cannot hold one: a lookup
        // would fail as an internal error instead of answering.
        AppError::new(
            ErrorCode::InvalidArgument,
            "the URL contains an encoded NUL character (%00)",
        )
        .into_response()
    } else {
        next.run(req).await
    };
    let headers = res.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(&id) {
        headers.insert("x-request-id", v);
    }
    // Responses carry secret values, keys and tokens: no cache (a proxy's or the browser's)
    // may keep one, as Vault does; and a browser never guesses another content type.
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    let status = res.status().as_u16();
    let latency_us = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
    record_metrics(status, started.elapsed());
    // Every request is in the request log already (searchable, and streamed as JSON lines with
    // `request_log.stream`), so the diagnostic log has one line per request only at debug, as
    // tower-http's TraceLayer does; server errors are warnings.
    if status >= 500 {
        tracing::warn!(
            method = method.as_str(),
            path,
            status,
            latency_us,
            "handled"
        );
    } else {
        tracing::debug!(
            method = method.as_str(),
            path,
            status,
            latency_us,
            "handled"
        );
    }
    if skip_logging(&path) {
        return res;
    }
    let facts = res
        .extensions_mut()
        .remove::<guard::LogFacts>()
        .unwrap_or_default();
    let result = match (facts.result, status) {
        ("", _) => "error",
        (_, 500..) => "error",
        (r, _) => r,
    };
    // The organization (decoded from the URL) and an unrouted request's path are the client's
    // choice, and the log stores each such string once, in an index: keep them short. (They
    // hold no NUL: a URL that encodes one is refused above, before routing.)
    let org = match clip(&facts.org, MAX_LOGGED_TERM) {
        clipped if clipped.len() < facts.org.len() => clipped.to_owned(),
        _ => facts.org,
    };
    state.reqlog.record(RequestLogRecord {
        at,
        request_id: id,
        org,
        principal: facts.principal,
        action: if facts.action.is_empty() {
            [method.as_str(), " ", clip(&path, MAX_LOGGED_TERM)].concat()
        } else {
            facts.action
        },
        resource: path,
        result: result.to_owned(),
        status: i32::from(status),
        ip,
        user_agent: ua,
        latency_us,
        ..RequestLogRecord::default()
    });
    res
}

#[cfg(test)]
mod tests {
    use super::clip;

    #[test]
    fn clip_cuts_at_a_character_boundary() {
        assert_eq!(clip("abcdef", 4), "abcd");
        assert_eq!(clip("abc", 10), "abc");
        // 'é' is two bytes: a cut inside it keeps the whole characters before.
        assert_eq!(clip("aéb", 2), "a");
        assert_eq!(clip("aéb", 3), "aé");
        assert_eq!(clip("", 3), "");
    }
}
