//! Runner routes: credentials (`/v1/orgs/{org}/runners/{name}/credentials[/regenerate]`),
//! status (`/v1/tunnel/{org}/runners`, `.../runners/{name}/status`) and typed operations
//! (`POST /v1/orgs/{org}/runners/{name}/operations`). Registration, get and delete go through
//! the generic resource routes.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tether_core::{ErrorCode, Kind};
use tether_proto::tunnel::{
    AwsAuth, AwsEc2CreateVpc, AwsEc2DescribeVpcs, AwsS3ListBuckets, AwsStsGetCallerIdentity,
    CrossAccountTrust, EnvVar, InlineCredentials, JobRun, K8sListPods, OperationOutput,
    OperationRequest, OperationResult, Ping, RunnerIdentity, Tag, aws_auth, operation_output,
    operation_request::Operation, operation_result::Outcome,
};

use crate::error::{AppError, AppResult, REQUEST_ID};
use crate::resources::Change;
use crate::routes::extract::{ApiJson, CtxExt};
use crate::routes::guard::Ctx;
use crate::routes::op_stream::{self, Meta};
use crate::state::AppState;
use crate::tunnel::hub::{CallError, Event, Logs};
use crate::tunnel::registry::{self, Credentials, RunnerStatus, runner_item};

fn change(ctx: &Ctx) -> AppResult<Change<'_>> {
    Ok(Change {
        actor: ctx.principal()?,
        message: None,
        event: None,
    })
}

/// Generates a new set of credentials for a runner (earlier sets stay valid). Returned once.
#[utoipa::path(post, path = "/v1/orgs/{org}/{kind}/{name}/credentials", tag = "runners",
    params(("org" = String, Path), ("kind" = String, Path, description = "runners"), ("name" = String, Path)),
    responses((status = 201, body = Credentials)))]
pub async fn generate(
    State(state): State<AppState>,
    ctx: CtxExt,
    Path(p): Path<(String, String, String)>,
) -> AppResult<(StatusCode, Json<Credentials>)> {
    let runner = runner_item(ctx.kind, ctx.item.as_deref(), &p.2)?;
    let creds = registry::generate(&state, &ctx.scope, runner, &change(&ctx)?).await?;
    Ok((StatusCode::CREATED, Json(creds)))
}

/// Revokes every earlier certificate and API key of the runner, closes its live tunnel, and
/// returns a new set of credentials.
#[utoipa::path(post, path = "/v1/orgs/{org}/{kind}/{name}/credentials/regenerate", tag = "runners",
    params(("org" = String, Path), ("kind" = String, Path, description = "runners"), ("name" = String, Path)),
    responses((status = 201, body = Credentials)))]
pub async fn regenerate(
    State(state): State<AppState>,
    ctx: CtxExt,
    Path(p): Path<(String, String, String)>,
) -> AppResult<(StatusCode, Json<Credentials>)> {
    let runner = runner_item(ctx.kind, ctx.item.as_deref(), &p.2)?;
    let creds = registry::regenerate(&state, &ctx.scope, runner, &change(&ctx)?).await?;
    Ok((StatusCode::CREATED, Json(creds)))
}

/// The status of one runner.
#[utoipa::path(get, path = "/v1/orgs/{org}/{kind}/{name}/status", tag = "runners",
    params(("org" = String, Path), ("kind" = String, Path, description = "runners"), ("name" = String, Path)),
    responses((status = 200, body = RunnerStatus)))]
pub async fn status(
    State(state): State<AppState>,
    ctx: CtxExt,
    Path(p): Path<(String, String, String)>,
) -> AppResult<Json<RunnerStatus>> {
    let runner = runner_item(ctx.kind, ctx.item.as_deref(), &p.2)?;
    let all = registry::statuses(&state, &ctx.scope.org_id, std::slice::from_ref(runner)).await?;
    all.into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| AppError::not_found("runner", &p.2))
}

/// Every runner of an organization with its status.
#[utoipa::path(get, path = "/v1/tunnel/{org}/runners", tag = "runners",
    params(("org" = String, Path)), responses((status = 200, body = Vec<RunnerStatus>)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: CtxExt,
) -> AppResult<Json<Vec<RunnerStatus>>> {
    let org_id = &ctx.scope.org_id;
    let rows = state
        .store
        .list_resources(org_id, Some(""), &Kind::Runner.to_string())
        .await?;
    Ok(Json(registry::statuses(&state, org_id, &rows).await?))
}

/// AWS credentials for an operation: the same three modes a Connection will carry.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum AwsAuthInput {
    /// Keys sent with the request, used once by the runner.
    Inline {
        /// Region.
        #[serde(default)]
        region: String,
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
        /// Session token.
        #[serde(default)]
        session_token: String,
    },
    /// The runner's own environment (SDK default chain).
    Runner {
        /// Region.
        #[serde(default)]
        region: String,
    },
    /// AssumeRole with an external id, using the runner's identity.
    CrossAccountTrust {
        /// Region.
        #[serde(default)]
        region: String,
        /// Role ARN.
        role_arn: String,
        /// External id.
        external_id: String,
        /// Session name.
        #[serde(default)]
        session_name: String,
    },
}

impl AwsAuthInput {
    fn into_proto(self) -> AwsAuth {
        let (region, mode) = match self {
            Self::Inline {
                region,
                access_key_id,
                secret_access_key,
                session_token,
            } => (
                region,
                aws_auth::Mode::Inline(InlineCredentials {
                    access_key_id,
                    secret_access_key,
                    session_token,
                }),
            ),
            Self::Runner { region } => (region, aws_auth::Mode::Runner(RunnerIdentity {})),
            Self::CrossAccountTrust {
                region,
                role_arn,
                external_id,
                session_name,
            } => (
                region,
                aws_auth::Mode::CrossAccountTrust(CrossAccountTrust {
                    role_arn,
                    external_id,
                    session_name,
                    duration_seconds: 0,
                }),
            ),
        };
        AwsAuth {
            region,
            mode: Some(mode),
        }
    }
}

/// One typed operation. There is no free-form command: `job.run` runs only what the runner's
/// local allowlist permits.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum OperationInput {
    /// `job.run`.
    #[serde(rename = "job.run")]
    JobRun {
        /// Must be on the runner's allowlist.
        command: String,
        /// Arguments.
        #[serde(default)]
        args: Vec<String>,
        /// Environment injected into the child.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Relative to the runner's job directory.
        #[serde(default)]
        working_dir: String,
    },
    /// `aws.sts.get_caller_identity`.
    #[serde(rename = "aws.sts.get_caller_identity")]
    AwsStsGetCallerIdentity {
        /// Credentials.
        auth: AwsAuthInput,
    },
    /// `aws.s3.list_buckets`.
    #[serde(rename = "aws.s3.list_buckets")]
    AwsS3ListBuckets {
        /// Credentials.
        auth: AwsAuthInput,
    },
    /// `aws.ec2.describe_vpcs`.
    #[serde(rename = "aws.ec2.describe_vpcs")]
    AwsEc2DescribeVpcs {
        /// Credentials.
        auth: AwsAuthInput,
        /// Filter.
        #[serde(default)]
        vpc_ids: Vec<String>,
    },
    /// `aws.ec2.create_vpc`.
    #[serde(rename = "aws.ec2.create_vpc")]
    AwsEc2CreateVpc {
        /// Credentials.
        auth: AwsAuthInput,
        /// CIDR block.
        cidr_block: String,
        /// Tags.
        #[serde(default)]
        tags: BTreeMap<String, String>,
    },
    /// `runner.ping`: runs nothing; the runner answers at once (a health check).
    #[serde(rename = "runner.ping")]
    Ping {},
    /// `k8s.list_pods`.
    #[serde(rename = "k8s.list_pods")]
    K8sListPods {
        /// Namespace ('' for all).
        #[serde(default)]
        namespace: String,
        /// Label selector.
        #[serde(default)]
        label_selector: String,
        /// Kubeconfig context.
        #[serde(default)]
        context: String,
    },
}

impl OperationInput {
    fn into_proto(self) -> (Operation, Option<AwsAuth>) {
        match self {
            Self::JobRun {
                command,
                args,
                env,
                working_dir,
            } => {
                let env = env
                    .into_iter()
                    .map(|(name, value)| EnvVar { name, value })
                    .collect();
                (
                    Operation::JobRun(JobRun {
                        command,
                        args,
                        env,
                        working_dir,
                    }),
                    None,
                )
            }
            Self::AwsStsGetCallerIdentity { auth } => (
                Operation::AwsStsGetCallerIdentity(AwsStsGetCallerIdentity {}),
                Some(auth.into_proto()),
            ),
            Self::AwsS3ListBuckets { auth } => (
                Operation::AwsS3ListBuckets(AwsS3ListBuckets {}),
                Some(auth.into_proto()),
            ),
            Self::AwsEc2DescribeVpcs { auth, vpc_ids } => (
                Operation::AwsEc2DescribeVpcs(AwsEc2DescribeVpcs { vpc_ids }),
                Some(auth.into_proto()),
            ),
            Self::AwsEc2CreateVpc {
                auth,
                cidr_block,
                tags,
            } => {
                let tags = tags
                    .into_iter()
                    .map(|(key, value)| Tag { key, value })
                    .collect();
                (
                    Operation::AwsEc2CreateVpc(AwsEc2CreateVpc { cidr_block, tags }),
                    Some(auth.into_proto()),
                )
            }
            Self::Ping {} => (Operation::Ping(Ping {}), None),
            Self::K8sListPods {
                namespace,
                label_selector,
                context,
            } => (
                Operation::K8sListPods(K8sListPods {
                    namespace,
                    label_selector,
                    context,
                }),
                None,
            ),
        }
    }
}

/// An operation request.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationBody {
    /// The operation.
    pub operation: OperationInput,
    /// Deadline in seconds (default 60, at most 3600).
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

/// A structured result.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OperationResponse {
    /// The request id issued for this operation.
    pub request_id: String,
    /// The runner.
    pub runner: String,
    /// The operation name.
    pub operation: String,
    /// The typed output.
    #[schema(value_type = Object)]
    pub output: Value,
    /// Logs (job.run), as UTF-8 with replacement characters.
    #[schema(value_type = Object)]
    pub logs: Value,
}

const DEFAULT_TIMEOUT_SECS: u32 = 60;
const MAX_TIMEOUT_SECS: u32 = 3600;

/// Sends a typed operation to the runner and returns its structured result. With
/// `Accept: application/x-ndjson` the answer is a stream of JSON lines instead: log chunks as
/// they arrive, then one `result` (or `error`) line; the client going away cancels the
/// operation on the runner.
#[utoipa::path(post, path = "/v1/orgs/{org}/{kind}/{name}/operations", tag = "runners",
    params(("org" = String, Path), ("kind" = String, Path, description = "runners"), ("name" = String, Path)),
    request_body = OperationBody,
    responses((status = 200, body = OperationResponse, description = "The result (application/json), or with `Accept: application/x-ndjson` a stream of lines `{\"type\":\"log\",\"stream\",\"data\"}` then one `{\"type\":\"result\",...}` or `{\"type\":\"error\",\"error\":{...}}`"),
        (status = 503, description = "runner_unavailable"), (status = 504, description = "runner_timeout")))]
pub async fn operate(
    State(state): State<AppState>,
    ctx: CtxExt,
    Path(p): Path<(String, String, String)>,
    headers: http::HeaderMap,
    ApiJson(body): ApiJson<OperationBody>,
) -> AppResult<Response> {
    let runner = runner_item(ctx.kind, ctx.item.as_deref(), &p.2)?;
    let secs = body
        .timeout_secs
        .unwrap_or(DEFAULT_TIMEOUT_SECS)
        .clamp(1, MAX_TIMEOUT_SECS);
    let (operation, aws_auth) = body.operation.into_proto();
    let request = OperationRequest {
        request_id: String::new(),
        timeout_ms: secs.saturating_mul(1000),
        aws_auth,
        operation: Some(operation),
    };
    let meta = Meta {
        runner: runner.name.clone(),
        operation: request
            .kind()
            .map(|k| k.name())
            .unwrap_or_default()
            .to_owned(),
        http_request_id: REQUEST_ID.try_with(Clone::clone).unwrap_or_default(),
    };
    let stream = op_stream::wants_stream(&headers);
    // The runner enforces the deadline; the hub waits a little longer for its answer.
    let wait = Duration::from_secs(u64::from(secs) + 2);
    let call = state
        .tunnel
        .hub
        .start(&runner.org_id, &runner.id, request, wait, stream)
        .map_err(|e| call_error(e, &runner.name))?;
    if stream {
        return Ok(op_stream::respond(call, meta, stream_finish));
    }
    let (result, logs) = call
        .finish()
        .await
        .map_err(|e| call_error(e, &meta.runner))?;
    Ok(Json(OperationResponse {
        request_id: result.request_id.clone(),
        runner: meta.runner,
        operation: meta.operation,
        output: result_output(result)?,
        logs: logs_json(&logs),
    })
    .into_response())
}

/// The typed output of a result, or the runner's error mapped to the API's table.
fn result_output(result: OperationResult) -> AppResult<Value> {
    match result.outcome {
        Some(Outcome::Output(o)) => Ok(output_json(o)),
        Some(Outcome::Error(e)) => Err(runner_error(e.code, e.message)),
        None => Err(AppError::internal("a result without outcome")),
    }
}

/// The last line of a streamed operation.
fn stream_finish(meta: &Meta, outcome: Result<Event, CallError>) -> AppResult<Value> {
    match outcome {
        Ok(Event::Done(result, logs)) => Ok(json!({
            "request_id": result.request_id.clone(),
            "runner": meta.runner,
            "operation": meta.operation,
            "output": result_output(result)?,
            "truncated_bytes": logs.truncated,
        })),
        Ok(Event::Log(_)) => Err(AppError::internal("a log chunk where a result was due")),
        Err(e) => Err(call_error(e, &meta.runner)),
    }
}

fn call_error(e: CallError, runner: &str) -> AppError {
    match e {
        CallError::Unavailable => AppError::new(
            ErrorCode::RunnerUnavailable,
            format!("runner '{runner}' is not connected"),
        ),
        CallError::Timeout => AppError::new(
            ErrorCode::RunnerTimeout,
            format!("runner '{runner}' did not answer in time; the operation was cancelled"),
        ),
        CallError::Unsupported(op) => AppError::new(
            ErrorCode::InvalidArgument,
            format!("runner '{runner}' does not offer '{op}'"),
        ),
    }
}

/// Maps a runner-side error to the API's code table. The message is the runner's, which the
/// protocol requires to be safe to show (never a credential).
fn runner_error(code: i32, message: String) -> AppError {
    use tether_proto::tunnel::ErrorCode as E;
    let code = match E::try_from(code).unwrap_or(E::Internal) {
        E::RunnerUnavailable => ErrorCode::RunnerUnavailable,
        E::RunnerTimeout => ErrorCode::RunnerTimeout,
        E::PermissionDenied => ErrorCode::PermissionDenied,
        E::NotFound => ErrorCode::NotFound,
        E::InvalidRequest => ErrorCode::InvalidArgument,
        E::Cancelled => ErrorCode::Conflict,
        E::Internal | E::Unspecified => ErrorCode::Internal,
    };
    AppError::new(code, format!("runner: {message}"))
}

fn logs_json(logs: &Logs) -> Value {
    json!({
        "stdout": String::from_utf8_lossy(&logs.stdout),
        "stderr": String::from_utf8_lossy(&logs.stderr),
        "truncated_bytes": logs.truncated,
    })
}

fn output_json(o: OperationOutput) -> Value {
    use operation_output::Kind as K;
    match o.kind {
        Some(K::CallerIdentity(c)) => {
            json!({"caller_identity": {"account": c.account, "arn": c.arn, "user_id": c.user_id}})
        }
        Some(K::Buckets(b)) => json!({"buckets": b.buckets.iter()
            .map(|x| json!({"name": x.name, "created_at": x.created_at})).collect::<Vec<_>>()}),
        Some(K::Vpcs(v)) => json!({"vpcs": v.vpcs.iter().map(vpc_json).collect::<Vec<_>>()}),
        Some(K::CreatedVpc(v)) => json!({"created_vpc": vpc_json(&v)}),
        Some(K::Pods(p)) => json!({"pods": p.pods.iter().map(|x| json!({
            "namespace": x.namespace, "name": x.name, "phase": x.phase, "node_name": x.node_name,
        })).collect::<Vec<_>>()}),
        Some(K::Job(j)) => json!({"job": {
            "exit_code": j.exit_code, "signal": j.signal, "duration_ms": j.duration_ms,
        }}),
        Some(K::Pong(_)) => json!({"pong": {}}),
        None => Value::Null,
    }
}

fn vpc_json(v: &tether_proto::tunnel::Vpc) -> Value {
    let tags: BTreeMap<&str, &str> = v
        .tags
        .iter()
        .map(|t| (t.key.as_str(), t.value.as_str()))
        .collect();
    json!({"vpc_id": v.vpc_id, "cidr_block": v.cidr_block, "state": v.state,
        "is_default": v.is_default, "tags": tags})
}
