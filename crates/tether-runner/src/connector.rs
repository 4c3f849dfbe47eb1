//! The tunnel's transport: TCP, optionally through an HTTP CONNECT proxy (`HTTPS_PROXY`,
//! `NO_PROXY`, curl rules, never for loopback), then the runner's own TLS 1.3 mTLS on top, so
//! mutual TLS runs end to end inside the proxy tunnel. tonic gets the finished TLS stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::credentials::TunnelEndpoint;
use crate::error::RunnerError;

/// The proxy to go through, if any.
#[derive(Clone)]
pub struct ProxyRoute {
    /// The proxy's URI (`http://host:port`).
    pub uri: Uri,
    auth: Option<HeaderValue>,
}

impl std::fmt::Debug for ProxyRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URI is printed without credentials (the matcher moved them to `auth`).
        write!(f, "ProxyRoute({})", self.uri)
    }
}

/// Decides whether `endpoint` goes through a proxy, from `HTTPS_PROXY`/`https_proxy`,
/// `ALL_PROXY`/`all_proxy` and `NO_PROXY` plus `no_proxy` (both are honoured). Loopback
/// endpoints are never proxied.
pub fn proxy_route(
    endpoint: &TunnelEndpoint,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ProxyRoute>, RunnerError> {
    if endpoint.is_loopback() {
        return Ok(None);
    }
    let first = |names: [&str; 2]| names.iter().find_map(|n| env(n)).unwrap_or_default();
    let no_proxy = [env("NO_PROXY"), env("no_proxy")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>();
    let matcher = Matcher::builder()
        .https(first(["HTTPS_PROXY", "https_proxy"]))
        .all(first(["ALL_PROXY", "all_proxy"]))
        .no(no_proxy.join(","))
        .build();
    let dst: Uri = format!("https://{}", endpoint.authority())
        .parse()
        .map_err(|_| RunnerError::Credentials("tunnel_endpoint is not a valid URI".into()))?;
    let Some(intercept) = matcher.intercept(&dst) else {
        return Ok(None);
    };
    if intercept.uri().scheme_str() != Some("http") {
        return Err(RunnerError::Config(format!(
            "proxy {} is not supported: only http:// proxies (HTTP CONNECT) are",
            intercept.uri()
        )));
    }
    Ok(Some(ProxyRoute {
        uri: intercept.uri().clone(),
        auth: intercept.basic_auth().cloned(),
    }))
}

/// Why a connection attempt failed before gRPC started.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect to the endpoint failed.
    #[error("connect to {0}: {1}")]
    Tcp(String, std::io::Error),
    /// The proxy could not be reached or refused the CONNECT.
    #[error("through proxy {0}: {1}")]
    Proxy(String, String),
    /// The TLS handshake failed (the source is the io::Error carrying the rustls error).
    #[error("TLS handshake with {0}")]
    Tls(String, #[source] std::io::Error),
    /// A step took longer than the connect timeout.
    #[error("connect to {0} timed out")]
    Timeout(String),
}

/// A `tower::Service<Uri>` for `Endpoint::connect_with_connector`: ignores the URI it is
/// given and dials the tunnel endpoint (directly or through the proxy) with mTLS.
#[derive(Clone)]
pub struct TunnelConnector {
    endpoint: TunnelEndpoint,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    proxy: Option<ProxyRoute>,
    timeout: Duration,
}

impl TunnelConnector {
    /// A connector for `endpoint` with the runner's TLS configuration.
    pub fn new(
        endpoint: TunnelEndpoint,
        tls: rustls::ClientConfig,
        proxy: Option<ProxyRoute>,
        timeout: Duration,
    ) -> Result<Self, RunnerError> {
        let server_name = ServerName::try_from(endpoint.host.clone())
            .map_err(|_| RunnerError::Credentials("tunnel_endpoint host is not valid".into()))?;
        let tls = TlsConnector::from(Arc::new(tls));
        Ok(Self {
            endpoint,
            server_name,
            tls,
            proxy,
            timeout,
        })
    }

    async fn dial(self) -> Result<TokioIo<TlsStream<TcpStream>>, ConnectError> {
        let authority = self.endpoint.authority();
        let tcp = tokio::time::timeout(self.timeout, self.tcp())
            .await
            .map_err(|_| ConnectError::Timeout(authority.clone()))??;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(self.timeout, self.tls.connect(self.server_name, tcp))
            .await
            .map_err(|_| ConnectError::Timeout(authority.clone()))?
            .map_err(|e| ConnectError::Tls(authority, e))?;
        Ok(TokioIo::new(tls))
    }

    async fn tcp(&self) -> Result<TcpStream, ConnectError> {
        let authority = self.endpoint.authority();
        let Some(proxy) = &self.proxy else {
            return TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port))
                .await
                .map_err(|e| ConnectError::Tcp(authority, e));
        };
        let shown = proxy.uri.to_string();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(self.timeout));
        let mut tunnel = Tunnel::new(proxy.uri.clone(), http);
        if let Some(auth) = &proxy.auth {
            tunnel = tunnel.with_auth(auth.clone());
        }
        let dst: Uri = format!("https://{authority}")
            .parse()
            .map_err(|_| ConnectError::Proxy(shown.clone(), "bad destination".into()))?;
        let io = tower::ServiceExt::oneshot(tunnel, dst)
            .await
            .map_err(|e| ConnectError::Proxy(shown, crate::error::chain_text(&e)))?;
        Ok(io.into_inner())
    }
}

impl tower::Service<Uri> for TunnelConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        Box::pin(self.clone().dial())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str) -> TunnelEndpoint {
        TunnelEndpoint {
            host: host.into(),
            port: 8443,
        }
    }

    fn env_of(pairs: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        let pairs = pairs.to_vec();
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn https_proxy_is_used_unless_no_proxy_matches() {
        let env = env_of(&[("HTTPS_PROXY", "http://proxy.corp:3128")]);
        let route = proxy_route(&ep("tether.example.com"), &env)
            .unwrap()
            .unwrap();
        assert_eq!(route.uri.host(), Some("proxy.corp"));
        let env = env_of(&[
            ("https_proxy", "proxy.corp:3128"),
            ("no_proxy", ".example.com"),
        ]);
        assert!(
            proxy_route(&ep("tether.example.com"), &env)
                .unwrap()
                .is_none()
        );
        // Both NO_PROXY and no_proxy are honoured, together.
        let env = env_of(&[
            ("HTTPS_PROXY", "http://p:1"),
            ("NO_PROXY", "other.org"),
            ("no_proxy", "10.0.0.0/8"),
        ]);
        assert!(proxy_route(&ep("10.1.2.3"), &env).unwrap().is_none());
        assert!(proxy_route(&ep("other.org"), &env).unwrap().is_none());
        assert!(
            proxy_route(&ep("tether.example.com"), &env)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn loopback_is_never_proxied() {
        let env = env_of(&[("HTTPS_PROXY", "http://p:1"), ("ALL_PROXY", "http://p:1")]);
        for host in ["127.0.0.1", "localhost", "::1"] {
            assert!(proxy_route(&ep(host), &env).unwrap().is_none(), "{host}");
        }
    }

    #[test]
    fn credentials_in_proxy_url_become_basic_auth_and_are_not_printed() {
        let env = env_of(&[("HTTPS_PROXY", "http://user:pw@proxy.corp:3128")]);
        let route = proxy_route(&ep("t.example.com"), &env).unwrap().unwrap();
        assert!(route.auth.is_some());
        assert!(!format!("{route:?}").contains("pw"));
    }

    #[test]
    fn tls_proxies_are_refused() {
        let env = env_of(&[("HTTPS_PROXY", "https://proxy.corp:3128")]);
        assert!(proxy_route(&ep("t.example.com"), &env).is_err());
    }
}
