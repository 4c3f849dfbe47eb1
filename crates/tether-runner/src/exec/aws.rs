//! The AWS operations (feature `aws`): sts GetCallerIdentity, s3 ListBuckets, ec2 DescribeVpcs
//! and CreateVpc, under one of three auth modes:
//!
//! - `inline`: the request carries an access key; it is moved into zeroizing buffers, handed to
//!   the SDK for this one operation and dropped with it. It never reaches a log or a result.
//! - `runner`: the SDK default chain from the runner's own environment (env, profile, IMDS...).
//! - `cross_account_trust`: the runner's own identity calls `sts:AssumeRole` with the role ARN
//!   and ExternalId; the operation runs with the returned temporary credentials.
//!
//! `AWS_ENDPOINT_URL` (and the per-service variants) is honoured through `aws-config`, which is
//! how the tests point the SDK at moto.

use aws_config::meta::region::RegionProviderChain;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sts::config::Credentials;
use aws_sdk_sts::config::http::HttpResponse;
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use tether_proto::tunnel::aws_auth::Mode;
use tether_proto::tunnel::operation_output::Kind as OutputKind;
use tether_proto::tunnel::operation_request::Operation;
use tether_proto::tunnel::{
    AwsAuth, AwsEc2CreateVpc, AwsEc2DescribeVpcs, Bucket, BucketList, CallerIdentity,
    CrossAccountTrust, ErrorCode, InlineCredentials, OperationOutput, OperationResult, Tag, Vpc,
    VpcList,
};
use zeroize::Zeroizing;

/// Region used when neither the request nor the runner's environment names one.
const FALLBACK_REGION: &str = "us-east-1";
/// Session name for `AssumeRole` when the request gives none.
const DEFAULT_SESSION_NAME: &str = "tether-runner";

/// A typed failure: the code and a caller-facing message (never a credential).
#[derive(Debug)]
pub struct AwsFailure {
    pub code: ErrorCode,
    pub message: String,
}

impl AwsFailure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Maps an AWS error code to the protocol's error code.
pub fn classify_code(code: &str) -> ErrorCode {
    const DENIED: [&str; 11] = [
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnauthorizedAccess",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
        "UnrecognizedClientException",
    ];
    if DENIED.contains(&code) {
        ErrorCode::PermissionDenied
    } else if code.contains("NotFound") || code.starts_with("NoSuch") {
        ErrorCode::NotFound
    } else if code.starts_with("InvalidParameter")
        || code == "ValidationError"
        || code == "InvalidVpcRange"
        || code == "MissingParameter"
    {
        ErrorCode::InvalidRequest
    } else {
        ErrorCode::Internal
    }
}

fn sdk_failure<E>(what: &str, err: &SdkError<E, HttpResponse>) -> AwsFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let Some(code) = err.code() {
        return AwsFailure::new(
            classify_code(code),
            format!("{what}: {code}: {}", err.message().unwrap_or_default()),
        );
    }
    // An error body the SDK could not parse (moto answers STS auth failures in the EC2
    // layout): fall back to its <Code> element, then to the HTTP status.
    let Some(raw) = err.raw_response() else {
        return AwsFailure::new(
            ErrorCode::Internal,
            format!("{what}: {}", DisplayErrorContext(err)),
        );
    };
    let status = raw.status().as_u16();
    let body = raw.body().bytes().map(String::from_utf8_lossy);
    let code = body.as_deref().and_then(|b| {
        let start = b.find("<Code>")?.checked_add("<Code>".len())?;
        let len = b.get(start..)?.find("</Code>")?;
        b.get(start..start.checked_add(len)?).map(str::to_owned)
    });
    match code {
        Some(code) => AwsFailure::new(classify_code(&code), format!("{what}: {code}")),
        None => {
            let kind = match status {
                401 | 403 => ErrorCode::PermissionDenied,
                404 => ErrorCode::NotFound,
                _ => ErrorCode::Internal,
            };
            AwsFailure::new(kind, format!("{what}: HTTP {status}"))
        }
    }
}

/// Inline credentials moved out of the request into zeroizing buffers.
struct InlineSecret {
    access_key_id: Zeroizing<String>,
    secret_access_key: Zeroizing<String>,
    session_token: Zeroizing<String>,
}

impl InlineSecret {
    fn take(inline: &mut InlineCredentials) -> Self {
        Self {
            access_key_id: Zeroizing::new(std::mem::take(&mut inline.access_key_id)),
            secret_access_key: Zeroizing::new(std::mem::take(&mut inline.secret_access_key)),
            session_token: Zeroizing::new(std::mem::take(&mut inline.session_token)),
        }
    }

    /// The SDK credentials (they zeroize their own copy on drop).
    fn sdk(&self) -> Credentials {
        let token = (!self.session_token.is_empty()).then(|| self.session_token.to_string());
        Credentials::new(
            self.access_key_id.as_str(),
            self.secret_access_key.as_str(),
            token,
            None,
            "tether-inline",
        )
    }
}

async fn load(region: &str, credentials: Option<Credentials>) -> SdkConfig {
    let region = if region.is_empty() {
        RegionProviderChain::default_provider().or_else(Region::new(FALLBACK_REGION))
    } else {
        RegionProviderChain::first_try(Region::new(region.to_owned()))
    };
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region);
    if let Some(c) = credentials {
        loader = loader.credentials_provider(c);
    }
    loader.load().await
}

async fn assume_role(region: &str, trust: &CrossAccountTrust) -> Result<Credentials, AwsFailure> {
    if trust.role_arn.is_empty() {
        return Err(AwsFailure::new(
            ErrorCode::InvalidRequest,
            "cross_account_trust needs a role_arn",
        ));
    }
    let own = load(region, None).await;
    let sts = aws_sdk_sts::Client::new(&own);
    let session = if trust.session_name.is_empty() {
        DEFAULT_SESSION_NAME
    } else {
        trust.session_name.as_str()
    };
    let duration = i32::try_from(trust.duration_seconds)
        .ok()
        .filter(|d| *d > 0);
    let external_id = (!trust.external_id.is_empty()).then(|| trust.external_id.clone());
    let out = sts
        .assume_role()
        .role_arn(&trust.role_arn)
        .set_external_id(external_id)
        .role_session_name(session)
        .set_duration_seconds(duration)
        .send()
        .await
        .map_err(|e| sdk_failure("sts:AssumeRole", &e))?;
    let c = out.credentials().ok_or_else(|| {
        AwsFailure::new(ErrorCode::Internal, "AssumeRole returned no credentials")
    })?;
    Ok(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "tether-cross-account-trust",
    ))
}

/// The SDK configuration for `auth`, consuming any inline secret.
async fn config_for(auth: Option<AwsAuth>) -> Result<SdkConfig, AwsFailure> {
    let Some(mut auth) = auth else {
        return Err(AwsFailure::new(
            ErrorCode::InvalidRequest,
            "AWS operations need an aws_auth block",
        ));
    };
    let region = std::mem::take(&mut auth.region);
    match auth.mode.take() {
        Some(Mode::Inline(mut inline)) => {
            let secret = InlineSecret::take(&mut inline);
            drop(inline);
            if secret.access_key_id.is_empty() || secret.secret_access_key.is_empty() {
                return Err(AwsFailure::new(
                    ErrorCode::InvalidRequest,
                    "inline credentials need an access key id and a secret",
                ));
            }
            let config = load(&region, Some(secret.sdk())).await;
            drop(secret);
            Ok(config)
        }
        Some(Mode::Runner(_)) => Ok(load(&region, None).await),
        Some(Mode::CrossAccountTrust(trust)) => {
            let creds = assume_role(&region, &trust).await?;
            Ok(load(&region, Some(creds)).await)
        }
        None => Err(AwsFailure::new(
            ErrorCode::InvalidRequest,
            "aws_auth has no mode",
        )),
    }
}

/// Runs one AWS operation; the config (and any credentials in it) is dropped on return.
pub async fn run(id: &str, auth: Option<AwsAuth>, op: Operation) -> OperationResult {
    let outcome = async {
        let config = config_for(auth).await?;
        match op {
            Operation::AwsStsGetCallerIdentity(_) => caller_identity(&config).await,
            Operation::AwsS3ListBuckets(_) => list_buckets(&config).await,
            Operation::AwsEc2DescribeVpcs(req) => describe_vpcs(&config, req).await,
            Operation::AwsEc2CreateVpc(req) => create_vpc(&config, req).await,
            _ => Err(AwsFailure::new(
                ErrorCode::InvalidRequest,
                "not an AWS operation",
            )),
        }
    }
    .await;
    match outcome {
        Ok(kind) => OperationResult::ok(id, OperationOutput { kind: Some(kind) }),
        Err(f) => OperationResult::err(id, f.code, f.message),
    }
}

async fn caller_identity(config: &SdkConfig) -> Result<OutputKind, AwsFailure> {
    let out = aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| sdk_failure("sts:GetCallerIdentity", &e))?;
    Ok(OutputKind::CallerIdentity(CallerIdentity {
        account: out.account().unwrap_or_default().to_owned(),
        arn: out.arn().unwrap_or_default().to_owned(),
        user_id: out.user_id().unwrap_or_default().to_owned(),
    }))
}

async fn list_buckets(config: &SdkConfig) -> Result<OutputKind, AwsFailure> {
    use aws_sdk_s3::primitives::DateTimeFormat;
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(true)
        .build();
    let out = aws_sdk_s3::Client::from_conf(s3)
        .list_buckets()
        .send()
        .await
        .map_err(|e| sdk_failure("s3:ListBuckets", &e))?;
    let buckets = out
        .buckets()
        .iter()
        .map(|b| Bucket {
            name: b.name().unwrap_or_default().to_owned(),
            created_at: b
                .creation_date()
                .and_then(|d| d.fmt(DateTimeFormat::DateTime).ok())
                .unwrap_or_default(),
        })
        .collect();
    Ok(OutputKind::Buckets(BucketList { buckets }))
}

fn vpc_of(v: &aws_sdk_ec2::types::Vpc) -> Vpc {
    Vpc {
        vpc_id: v.vpc_id().unwrap_or_default().to_owned(),
        cidr_block: v.cidr_block().unwrap_or_default().to_owned(),
        state: v.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        is_default: v.is_default().unwrap_or_default(),
        tags: v
            .tags()
            .iter()
            .map(|t| Tag {
                key: t.key().unwrap_or_default().to_owned(),
                value: t.value().unwrap_or_default().to_owned(),
            })
            .collect(),
    }
}

async fn describe_vpcs(
    config: &SdkConfig,
    req: AwsEc2DescribeVpcs,
) -> Result<OutputKind, AwsFailure> {
    let ids = (!req.vpc_ids.is_empty()).then_some(req.vpc_ids);
    let out = aws_sdk_ec2::Client::new(config)
        .describe_vpcs()
        .set_vpc_ids(ids)
        .send()
        .await
        .map_err(|e| sdk_failure("ec2:DescribeVpcs", &e))?;
    let vpcs = out.vpcs().iter().map(vpc_of).collect();
    Ok(OutputKind::Vpcs(VpcList { vpcs }))
}

async fn create_vpc(config: &SdkConfig, req: AwsEc2CreateVpc) -> Result<OutputKind, AwsFailure> {
    use aws_sdk_ec2::types::{ResourceType, Tag as Ec2Tag, TagSpecification};
    if req.cidr_block.is_empty() {
        return Err(AwsFailure::new(
            ErrorCode::InvalidRequest,
            "create_vpc needs a cidr_block",
        ));
    }
    let specs = (!req.tags.is_empty()).then(|| {
        let tags = req
            .tags
            .iter()
            .map(|t| Ec2Tag::builder().key(&t.key).value(&t.value).build())
            .collect();
        vec![
            TagSpecification::builder()
                .resource_type(ResourceType::Vpc)
                .set_tags(Some(tags))
                .build(),
        ]
    });
    let out = aws_sdk_ec2::Client::new(config)
        .create_vpc()
        .cidr_block(&req.cidr_block)
        .set_tag_specifications(specs)
        .send()
        .await
        .map_err(|e| sdk_failure("ec2:CreateVpc", &e))?;
    let vpc = out
        .vpc()
        .map(vpc_of)
        .ok_or_else(|| AwsFailure::new(ErrorCode::Internal, "CreateVpc returned no VPC"))?;
    Ok(OutputKind::CreatedVpc(vpc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_error_codes_map_to_protocol_codes() {
        assert_eq!(classify_code("AccessDenied"), ErrorCode::PermissionDenied);
        assert_eq!(
            classify_code("UnauthorizedOperation"),
            ErrorCode::PermissionDenied
        );
        assert_eq!(classify_code("InvalidVpcID.NotFound"), ErrorCode::NotFound);
        assert_eq!(classify_code("NoSuchBucket"), ErrorCode::NotFound);
        assert_eq!(classify_code("InternalError"), ErrorCode::Internal);
    }

    #[test]
    fn inline_secrets_are_moved_out_of_the_request() {
        let mut inline = InlineCredentials {
            access_key_id: "AKIDINLINE".into(),
            secret_access_key: "sekrit-value".into(),
            session_token: String::new(),
        };
        let secret = InlineSecret::take(&mut inline);
        assert!(inline.secret_access_key.is_empty());
        assert_eq!(secret.secret_access_key.as_str(), "sekrit-value");
        assert!(!format!("{:?}", secret.sdk()).contains("sekrit-value"));
    }
}
