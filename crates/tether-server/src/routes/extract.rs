//! Extractors that turn every rejection into a JSON error with a stable code.

use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use tether_core::ErrorCode;

use crate::error::AppError;
use crate::routes::guard::Ctx;

/// A JSON body. Malformed JSON, unknown fields, a wrong content type and an oversized body
/// each get a clear 4xx code.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(json_rejection(&e)),
        }
    }
}

fn json_rejection(e: &JsonRejection) -> AppError {
    match e {
        JsonRejection::MissingJsonContentType(_) => AppError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as application/json",
        ),
        JsonRejection::BytesRejection(b) => bytes_rejection(b),
        JsonRejection::JsonSyntaxError(_) => {
            AppError::new(ErrorCode::InvalidJson, "the body is not valid JSON")
        }
        JsonRejection::JsonDataError(d) => {
            AppError::new(ErrorCode::InvalidJson, data_error_message(&d.body_text()))
        }
        _ => AppError::new(ErrorCode::BadRequest, "the body could not be read"),
    }
}

/// Keeps serde's explanation (field names, expected types, position) but never echoes a
/// value: serde quotes the value it met (``invalid type: string "hunter2"``, ``integer `1234` ``,
/// ``unknown variant `x` ``), and in a secret's body that value may be the secret. Only its kind
/// ("string", "integer") is kept.
fn data_error_message(text: &str) -> String {
    let detail = text.split_once(": ").map(|(_, d)| d).unwrap_or(text);
    format!(
        "the body does not match this operation: {}",
        without_values(detail).chars().take(300).collect::<String>()
    )
}

/// `detail` with the value serde met replaced by its kind. The expectation comes last in
/// serde's messages and never contains ", expected ", so the last one splits them even when
/// the value itself contains that text.
pub(crate) fn without_values(detail: &str) -> String {
    // serde_path_to_error (axum) puts the path first: `data.PIN: invalid type: ...`.
    let found = ["invalid type: ", "invalid value: ", "unknown variant"]
        .into_iter()
        .filter_map(|lead| detail.find(lead).map(|at| (at, lead)))
        .min();
    if let Some((at, lead)) = found {
        let (path, rest) = detail.split_at(at);
        let rest = rest.strip_prefix(lead).unwrap_or(rest);
        let (unexpected, expected) = rest
            .rfind(", expected ")
            .map_or((rest, ""), |at| rest.split_at(at));
        // The kind is what precedes the quoted value: "string", "integer", "floating point".
        let kind = unexpected
            .split(['`', '"'])
            .next()
            .unwrap_or_default()
            .trim();
        return format!("{path}{lead}{kind}{expected}");
    }
    detail.to_owned()
}

/// Whether the body failed because it stalled for the header timeout (`serve::serve` wraps
/// every request body in a `TimeoutBody`).
fn stalled(b: &BytesRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(b);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Maps a body-read failure (size limit, stall or I/O) to a code.
pub fn bytes_rejection(b: &BytesRejection) -> AppError {
    if b.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
        AppError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
    } else if stalled(b) {
        AppError::new(
            ErrorCode::RequestTimeout,
            "the request body stopped arriving before it was complete",
        )
    } else {
        AppError::new(ErrorCode::BadRequest, "the body could not be read")
    }
}

/// The guard's resolved context, taken out of the request (not cloned).
pub struct CtxExt(pub Ctx);

impl std::ops::Deref for CtxExt {
    type Target = Ctx;

    fn deref(&self) -> &Ctx {
        &self.0
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CtxExt {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, AppError> {
        parts
            .extensions
            .remove::<Ctx>()
            .map(CtxExt)
            .ok_or_else(|| AppError::internal("the route ran without its guard's context"))
    }
}

/// A query string; a malformed one gets a JSON `bad_request` naming the problem.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, AppError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(AppError::new(
                ErrorCode::InvalidArgument,
                format!("invalid query: {}", strip_prefix(&e.body_text())),
            )),
        }
    }
}

/// Path parameters; one that does not parse (a version that is not a number) gets a JSON
/// `invalid_argument`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for ApiPath<T> {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, AppError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(e) => Err(AppError::new(
                ErrorCode::InvalidArgument,
                format!("invalid path: {}", strip_prefix(&e.body_text())),
            )),
        }
    }
}

fn strip_prefix(text: &str) -> String {
    let detail = text.split_once(": ").map(|(_, d)| d).unwrap_or(text);
    detail.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::data_error_message;
    use std::collections::BTreeMap;

    /// The message serde_json gives for `body` read as a secret write's data.
    fn message(body: &str) -> String {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code, reason = "only deserialized, for serde's messages")]
        struct Body {
            data: BTreeMap<String, String>,
            mode: Option<Mode>,
        }
        #[derive(serde::Deserialize, Debug)]
        enum Mode {
            Merge,
        }
        let err = serde_json::from_str::<Body>(body)
            .err()
            .map(|e| e.to_string());
        // As axum words it, with the path that serde_path_to_error adds.
        data_error_message(&format!(
            "Failed to deserialize the JSON body: data.K: {}",
            err.unwrap_or_default()
        ))
    }

    #[test]
    fn serde_messages_keep_the_kind_and_drop_the_value() {
        for (body, value, kind) in [
            (
                r#"{"data":{"PIN":982451653}}"#,
                "982451653",
                "invalid type: integer, expected a string",
            ),
            (
                r#"{"data":"hunter2-quoted"}"#,
                "hunter2",
                "invalid type: string, expected a map",
            ),
            (
                r#"{"data":{"K":1.25e3}}"#,
                "1250",
                "invalid type: floating point, expected a string",
            ),
            (
                r#"{"data":{"K":"a"},"mode":"s3cr3t, expected x"}"#,
                "s3cr3t",
                "unknown variant, expected `Merge`",
            ),
            (
                r#"{"data":"a`b\"c, expected nothing"}"#,
                "nothing",
                "invalid type: string, expected a map",
            ),
        ] {
            let m = message(body);
            assert!(!m.contains(value), "{m} echoes {value}");
            assert!(m.contains(kind), "{m} lacks {kind}");
        }
        // Field names are not values: they stay, to say what is wrong.
        let m = message(r#"{"dat":{}}"#);
        assert!(m.contains("missing field `data`"), "{m}");
    }
}
