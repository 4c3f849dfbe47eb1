//! `k8s.list_pods` from a kubeconfig: the context's server URL and bearer token, over reqwest
//! with rustls. The kubeconfig is read for each request (a rotated token applies at once); the
//! token is held in a zeroizing buffer and never logged or returned.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use tether_proto::tunnel::operation_output::Kind as OutputKind;
use tether_proto::tunnel::{
    ErrorCode, K8sListPods, OperationOutput, OperationResult, Pod, PodList,
};
use zeroize::Zeroizing;

/// Largest kubeconfig read.
const MAX_KUBECONFIG_BYTES: u64 = 1024 * 1024;
/// Largest pod list accepted from the API server.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context", default)]
    current_context: String,
    #[serde(default)]
    contexts: Vec<Named<ContextEntry>>,
    #[serde(default)]
    clusters: Vec<Named<ClusterEntry>>,
    #[serde(default)]
    users: Vec<Named<UserEntry>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "context", alias = "cluster", alias = "user")]
    value: T,
}

#[derive(Deserialize)]
struct ContextEntry {
    cluster: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct ClusterEntry {
    server: String,
    #[serde(rename = "certificate-authority-data", default)]
    certificate_authority_data: Option<String>,
}

#[derive(Deserialize)]
struct UserEntry {
    #[serde(default)]
    token: Option<String>,
}

/// What one request needs from the kubeconfig.
pub struct Target {
    /// The API server's base URL.
    pub server: String,
    /// The bearer token (zeroized on drop).
    pub token: Zeroizing<String>,
    /// Extra trusted CA (PEM), from `certificate-authority-data`.
    pub ca_pem: Option<Vec<u8>>,
    /// The context's namespace, if any.
    pub namespace: Option<String>,
}

fn fail(code: ErrorCode, msg: impl Into<String>) -> (ErrorCode, String) {
    (code, msg.into())
}

/// Resolves `context` (or the current context) of a kubeconfig document. Never panics.
pub fn parse_kubeconfig(text: &str, context: &str) -> Result<Target, (ErrorCode, String)> {
    let kc: Kubeconfig = serde_saphyr::from_str(text)
        .map_err(|_| fail(ErrorCode::Internal, "the kubeconfig is not valid"))?;
    let wanted = if context.is_empty() {
        kc.current_context.as_str()
    } else {
        context
    };
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == wanted)
        .ok_or_else(|| fail(ErrorCode::NotFound, format!("no context '{wanted}'")))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.value.cluster)
        .ok_or_else(|| fail(ErrorCode::Internal, "the context's cluster is missing"))?;
    let token = kc
        .users
        .into_iter()
        .find(|u| u.name == ctx.value.user)
        .and_then(|u| u.value.token)
        .ok_or_else(|| {
            fail(
                ErrorCode::Internal,
                "the context's user has no bearer token",
            )
        })?;
    let ca_pem = match &cluster.value.certificate_authority_data {
        Some(b64) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| {
                    fail(
                        ErrorCode::Internal,
                        "certificate-authority-data is not base64",
                    )
                })?,
        ),
        None => None,
    };
    Ok(Target {
        server: cluster.value.server.trim_end_matches('/').to_owned(),
        token: Zeroizing::new(token),
        ca_pem,
        namespace: ctx.value.namespace.clone(),
    })
}

/// A namespace is a DNS label.
fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-')
}

#[derive(Deserialize)]
struct ApiPodList {
    #[serde(default)]
    items: Vec<ApiPod>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ApiPod {
    metadata: ApiMeta,
    spec: ApiSpec,
    status: ApiStatus,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ApiMeta {
    name: String,
    namespace: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ApiSpec {
    node_name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ApiStatus {
    phase: String,
}

async fn list(
    kubeconfig: &Path,
    req: K8sListPods,
    timeout: Duration,
) -> Result<PodList, (ErrorCode, String)> {
    let text = read_limited(kubeconfig)?;
    let target = parse_kubeconfig(&text, &req.context)?;
    drop(text);
    let ns = if req.namespace.is_empty() {
        target.namespace.clone().unwrap_or_else(|| "default".into())
    } else {
        req.namespace.clone()
    };
    if !valid_namespace(&ns) {
        return Err(fail(ErrorCode::InvalidRequest, "invalid namespace"));
    }
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = &target.ca_pem {
        let ca = reqwest::Certificate::from_pem(pem)
            .map_err(|_| fail(ErrorCode::Internal, "certificate-authority-data is not PEM"))?;
        builder = builder.add_root_certificate(ca);
    }
    let client = builder
        .build()
        .map_err(|e| fail(ErrorCode::Internal, format!("http client: {e}")))?;
    let url = format!("{}/api/v1/namespaces/{ns}/pods", target.server);
    let mut request = client.get(&url).bearer_auth(target.token.as_str());
    if !req.label_selector.is_empty() {
        request = request.query(&[("labelSelector", req.label_selector.as_str())]);
    }
    let resp = request.send().await.map_err(|e| {
        fail(
            ErrorCode::Internal,
            format!("kubernetes API: {}", e.without_url()),
        )
    })?;
    drop(target);
    let status = resp.status();
    if !status.is_success() {
        let code = match status.as_u16() {
            401 | 403 => ErrorCode::PermissionDenied,
            404 => ErrorCode::NotFound,
            400 | 422 => ErrorCode::InvalidRequest,
            _ => ErrorCode::Internal,
        };
        return Err(fail(code, format!("kubernetes API answered {status}")));
    }
    let body = resp.bytes().await.map_err(|e| {
        fail(
            ErrorCode::Internal,
            format!("kubernetes API: {}", e.without_url()),
        )
    })?;
    if body.len() > MAX_RESPONSE_BYTES {
        return Err(fail(ErrorCode::Internal, "pod list too large"));
    }
    let list: ApiPodList = serde_json::from_slice(&body)
        .map_err(|_| fail(ErrorCode::Internal, "the pod list is not valid JSON"))?;
    let pods = list
        .items
        .into_iter()
        .map(|p| Pod {
            namespace: p.metadata.namespace,
            name: p.metadata.name,
            phase: p.status.phase,
            node_name: p.spec.node_name,
        })
        .collect();
    Ok(PodList { pods })
}

fn read_limited(path: &Path) -> Result<String, (ErrorCode, String)> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)
        .map_err(|e| fail(ErrorCode::Internal, format!("kubeconfig: {e}")))?;
    let mut text = String::new();
    file.take(MAX_KUBECONFIG_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| fail(ErrorCode::Internal, format!("kubeconfig: {e}")))?;
    Ok(text)
}

/// Runs `k8s.list_pods`.
pub async fn run(
    id: &str,
    kubeconfig: Option<&Path>,
    req: K8sListPods,
    timeout: Duration,
) -> OperationResult {
    let Some(kubeconfig) = kubeconfig else {
        return OperationResult::err(id, ErrorCode::InvalidRequest, "no kubeconfig configured");
    };
    match list(kubeconfig, req, timeout).await {
        Ok(pods) => OperationResult::ok(
            id,
            OperationOutput {
                kind: Some(OutputKind::Pods(pods)),
            },
        ),
        Err((code, msg)) => OperationResult::err(id, code, msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: c1
  cluster:
    server: https://k8s.example:6443/
contexts:
- name: dev
  context:
    cluster: c1
    user: u1
    namespace: apps
users:
- name: u1
  user:
    token: s3cr3t-token
"#;

    #[test]
    fn resolves_the_current_context() {
        let t = parse_kubeconfig(KUBECONFIG, "").unwrap();
        assert_eq!(t.server, "https://k8s.example:6443");
        assert_eq!(t.token.as_str(), "s3cr3t-token");
        assert_eq!(t.namespace.as_deref(), Some("apps"));
        assert!(parse_kubeconfig(KUBECONFIG, "prod").is_err());
        assert!(parse_kubeconfig("{{{", "").is_err());
    }

    #[test]
    fn namespaces_are_dns_labels() {
        assert!(valid_namespace("kube-system"));
        assert!(!valid_namespace("../secrets"));
        assert!(!valid_namespace("a/b"));
        assert!(!valid_namespace(""));
    }
}
