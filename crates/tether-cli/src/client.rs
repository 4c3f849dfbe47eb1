//! A small typed HTTP client for the Tether API.

use anyhow::{Result, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::config::CliConfig;

/// An API error as the server reported it.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: String,
    /// Message.
    pub message: String,
    /// Request id.
    pub request_id: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.as_u16(),
            self.message
        )?;
        if !self.request_id.is_empty() {
            write!(f, " [request {}]", self.request_id)?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiFailure {}

/// The client.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    /// Whether the token came from the stored session (and may be refreshed).
    session: bool,
}

impl Client {
    /// Builds a client for `addr`, with an optional bearer token.
    pub fn new(
        addr: &str,
        token: Option<String>,
        session: bool,
        ca_cert: Option<&str>,
    ) -> Result<Client> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("tether-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_cert {
            let pem =
                std::fs::read(path).map_err(|e| anyhow!("reading CA certificate {path}: {e}"))?;
            builder = builder.tls_certs_only([reqwest::Certificate::from_pem(&pem)?]);
        }
        Ok(Client {
            base: addr.trim_end_matches('/').to_owned(),
            token,
            http: builder.build()?,
            session,
        })
    }

    /// Sends a request and returns the JSON body (or `Null` for 204).
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let res = self
            .send(
                method.clone(),
                path,
                body.map(|b| b.to_string().into_bytes()),
                "application/json",
            )
            .await?;
        if res.status() == StatusCode::UNAUTHORIZED && self.session && self.refresh().await? {
            let res = self
                .send(
                    method,
                    path,
                    body.map(|b| b.to_string().into_bytes()),
                    "application/json",
                )
                .await?;
            return decode(res).await;
        }
        decode(res).await
    }

    /// Sends a JSON body asking for `application/x-ndjson` and hands each line of the streamed
    /// answer to `on_line` as it arrives. An error status is returned as an [`ApiFailure`].
    pub async fn stream_lines(
        &mut self,
        path: &str,
        body: &Value,
        mut on_line: impl FnMut(Value) -> Result<()>,
    ) -> Result<()> {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .http
            .post(&url)
            .header(reqwest::header::ACCEPT, "application/x-ndjson")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let mut res = req.send().await.map_err(|e| {
            anyhow!(
                "cannot reach the Tether server at {}: {}",
                self.base,
                root_cause(&e)
            )
        })?;
        if !res.status().is_success() {
            return Err(failure(res).await.into());
        }
        let mut pending: Vec<u8> = Vec::new();
        while let Some(bytes) = res
            .chunk()
            .await
            .map_err(|e| anyhow!("the stream from the server broke: {}", root_cause(&e)))?
        {
            pending.extend_from_slice(&bytes);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line);
                if text.trim().is_empty() {
                    continue;
                }
                let value = serde_json::from_str(text.trim())
                    .map_err(|_| anyhow!("the server sent a line that is not JSON"))?;
                on_line(value)?;
            }
        }
        Ok(())
    }

    /// Sends raw bytes with a content type.
    pub async fn call_raw(
        &mut self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<Value> {
        let res = self.send(method, path, Some(body), content_type).await?;
        decode(res).await
    }

    /// Fetches a body as text (exports).
    pub async fn text(&mut self, path: &str) -> Result<String> {
        let res = self
            .send(Method::GET, path, None, "application/json")
            .await?;
        if !res.status().is_success() {
            return Err(failure(res).await.into());
        }
        Ok(res.text().await?)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<reqwest::Response> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(b);
        }
        req.send().await.map_err(|e| {
            anyhow!(
                "cannot reach the Tether server at {}: {}",
                self.base,
                root_cause(&e)
            )
        })
    }

    async fn refresh(&mut self) -> Result<bool> {
        let mut cfg = CliConfig::load()?;
        let Some(rt) = cfg.refresh_token.clone() else {
            return Ok(false);
        };
        let body = serde_json::json!({"refresh_token": rt});
        let res = self
            .send(
                Method::POST,
                "/v1/auth/token",
                Some(body.to_string().into_bytes()),
                "application/json",
            )
            .await?;
        if !res.status().is_success() {
            return Ok(false);
        }
        let v: Value = res.json().await?;
        let access = jp(&v, "/access_token").as_str().map(str::to_owned);
        cfg.access_token = access.clone();
        cfg.refresh_token = jp(&v, "/refresh_token").as_str().map(str::to_owned);
        cfg.save()?;
        self.token = access;
        Ok(true)
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The `error` object of an error body (or of a streamed error line) as an [`ApiFailure`].
pub fn failure_from(status: StatusCode, v: &Value) -> ApiFailure {
    let e = jp(v, "/error");
    ApiFailure {
        status,
        code: jp(e, "/code").as_str().unwrap_or("http_error").to_owned(),
        message: jp(e, "/message")
            .as_str()
            .unwrap_or("the server returned an error")
            .to_owned(),
        request_id: jp(e, "/request_id").as_str().unwrap_or("").to_owned(),
    }
}

async fn failure(res: reqwest::Response) -> ApiFailure {
    let status = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    failure_from(status, &v)
}

async fn decode(res: reqwest::Response) -> Result<Value> {
    if res.status() == StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    if !res.status().is_success() {
        return Err(failure(res).await.into());
    }
    let text = res.text().await?;
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).or_else(|_| bail!("the server sent a body that is not JSON"))
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Reads a JSON pointer, giving `Null` where it is absent.
pub fn jp<'a>(v: &'a Value, pointer: &str) -> &'a Value {
    v.pointer(pointer).unwrap_or(&Value::Null)
}
