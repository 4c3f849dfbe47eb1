//! Per-kind specs: validation of what a client sends, and the authorization tuples that a
//! resource implies. Specs refuse unknown fields, so a typo is an error rather than a no-op.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tether_core::{ErrorCode, Kind, Name, Role};
use tether_store::resources::find_resource;
use tether_store::{ResourceRow, Tx};

use crate::error::{AppError, AppResult};
use crate::model::{env_object, item_object, org_object, resource_object};

/// Organization spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganizationSpec {
    /// A human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Environment spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A protected environment (for example production).
    #[serde(default)]
    pub protected: bool,
}

/// Team spec. Members are `user:NAME`, `service_account:NAME` or `team:NAME` (nested team).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamSpec {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Members.
    #[serde(default)]
    pub members: Vec<String>,
}

/// User spec. Passwords are never part of a spec (they would reach the audit trail); they are
/// set through `POST .../users/{name}/password`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// A disabled user cannot authenticate.
    #[serde(default)]
    pub disabled: bool,
}

/// Service account spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountSpec {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A disabled service account cannot authenticate.
    #[serde(default)]
    pub disabled: bool,
}

/// A resource a role binding targets, in the binding's own scope.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingTarget {
    /// Kind of the target resource.
    #[schema(value_type = String)]
    pub kind: Kind,
    /// Its name.
    pub name: String,
}

/// Role binding spec: grants `role` to `subject` on the binding's scope (its organization, or
/// its environment when `metadata.env` is set), or on one resource of that scope.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBindingSpec {
    /// The role.
    #[schema(value_type = String)]
    pub role: Role,
    /// `user:NAME`, `service_account:NAME` or `team:NAME`.
    pub subject: String,
    /// Narrow the grant to one resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<BindingTarget>,
    /// Narrow the grant to requests from a network, or to a time window (an expiring grant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<BindingCondition>,
}

/// When a role binding holds: only for requests from `network`, or only from `not_before`
/// until `not_after` (either may be left out). One condition per binding: a binding per
/// network grants from any of them. (A list of blocks in one tuple, evaluated with CEL's
/// `exists`, made a conditioned Check take about twice as long.)
/// Applies to users and service accounts (a team's members are granted through the team).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingCondition {
    /// A CIDR block, e.g. `10.0.0.0/8` or `2001:db8::/32`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// RFC 3339: the grant holds from this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// RFC 3339: the grant holds until this time (exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

/// The earliest and latest times a time window without a bound stands for.
const TIME_MIN: time::OffsetDateTime = time::macros::datetime!(1970-01-01 00:00:00 UTC);
const TIME_MAX: time::OffsetDateTime = time::macros::datetime!(9999-12-31 23:59:59 UTC);

impl BindingCondition {
    /// The tuple condition (`in_network` or `in_time_window` of the built-in model), as the
    /// JSON the tuple store keeps; a clear error for a bad network or time.
    pub fn tuple_condition(&self) -> AppResult<String> {
        let bad = |m: String| AppError::new(ErrorCode::InvalidArgument, m);
        let window = self.not_before.is_some() || self.not_after.is_some();
        let condition = match (&self.network, window) {
            (Some(_), true) => {
                return Err(bad(
                    "a role binding's condition is a network or a time window, not both: \
                     bind twice for both"
                        .into(),
                ));
            }
            (None, false) => {
                return Err(bad(
                    "a role binding's condition needs a network or not_before/not_after".into(),
                ));
            }
            (Some(net), false) => {
                let net: ipnet::IpNet = net
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("condition.network: '{net}' is not a CIDR block")))?;
                serde_json::json!({
                    "name": "in_network",
                    "context": {"allowed_cidr": net.to_string()},
                })
            }
            (None, true) => {
                let rfc3339 = &time::format_description::well_known::Rfc3339;
                let at = |v: &Option<String>, what: &str, default| match v {
                    None => Ok(default),
                    Some(v) => time::OffsetDateTime::parse(v, rfc3339).map_err(|_| {
                        bad(format!("condition.{what}: '{v}' is not an RFC 3339 time"))
                    }),
                };
                let from = at(&self.not_before, "not_before", TIME_MIN)?;
                let until = at(&self.not_after, "not_after", TIME_MAX)?;
                if self.not_before.is_some() && self.not_after.is_some() && from >= until {
                    return Err(bad(
                        "condition: not_before must come before not_after".into()
                    ));
                }
                let not_before = from.format(rfc3339).map_err(AppError::internal)?;
                let not_after = until.format(rfc3339).map_err(AppError::internal)?;
                serde_json::json!({
                    "name": "in_time_window",
                    "context": {"not_before": not_before, "not_after": not_after},
                })
            }
        };
        Ok(condition.to_string())
    }
}

/// Secret metadata. The data lives only in encrypted versions. `current_version`,
/// `versions` and `deleted` are kept by the server; values a client sends for them are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Custom metadata (never secret).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub custom_metadata: std::collections::BTreeMap<String, String>,
    /// Keep at most this many versions with data (older ones are destroyed); 0 keeps all.
    #[serde(default = "default_max_versions")]
    pub max_versions: u32,
    /// Every new version must name the version it replaces (`if_version`), as Vault's
    /// `cas_required`: no writer overwrites a change it has not seen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cas_required: bool,
    /// The newest version (server-managed).
    #[serde(default)]
    pub current_version: i64,
    /// Soft-deleted (server-managed): reads fail until undeleted.
    #[serde(default)]
    pub deleted: bool,
}

fn default_max_versions() -> u32 {
    20
}

/// Variable spec: a non-sensitive value, versioned and audited like every resource.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariableSpec {
    /// The value; may reference `${var:NAME}`, `${secret:NAME}` or `${secret:NAME.KEY}`.
    pub value: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Runner spec. Live status (connected, last heartbeat, version) is not part of the spec: it
/// is kept in memory and in `runner_status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunnerSpec {
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Commands this runner is expected to allow for `job.run` (a hint for humans; the runner's
    /// local allowlist decides).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlist_hints: Vec<String>,
}

fn invalid_spec(kind: Kind, e: &serde_json::Error) -> AppError {
    AppError::new(
        ErrorCode::InvalidArgument,
        format!(
            "invalid {} spec: {}",
            kind.singular(),
            crate::routes::extract::without_values(&e.to_string())
        ),
    )
}

fn parse<T: for<'de> Deserialize<'de> + Serialize>(kind: Kind, spec: &Value) -> AppResult<Value> {
    parse_checked::<T>(kind, spec, |_| Ok(()))
}

/// [`parse`], with a further check of the typed spec.
fn parse_checked<T: for<'de> Deserialize<'de> + Serialize>(
    kind: Kind,
    spec: &Value,
    check: impl FnOnce(&T) -> AppResult<()>,
) -> AppResult<Value> {
    let spec = if spec.is_null() {
        Value::Object(Default::default())
    } else {
        spec.clone()
    };
    let typed: T = serde_json::from_value(spec).map_err(|e| invalid_spec(kind, &e))?;
    check(&typed)?;
    serde_json::to_value(typed).map_err(AppError::internal)
}

/// Validates and normalizes a spec for its kind.
pub fn validate_spec(kind: Kind, spec: &Value) -> AppResult<Value> {
    let value = match kind {
        Kind::Organization => parse::<OrganizationSpec>(kind, spec)?,
        Kind::Environment => parse::<EnvironmentSpec>(kind, spec)?,
        Kind::Team => parse::<TeamSpec>(kind, spec)?,
        Kind::User => parse::<UserSpec>(kind, spec)?,
        Kind::ServiceAccount => parse::<ServiceAccountSpec>(kind, spec)?,
        // A bad network or time is refused before anything is written.
        Kind::RoleBinding => parse_checked::<RoleBindingSpec>(kind, spec, |b| {
            b.condition
                .as_ref()
                .map_or(Ok(()), |c| c.tuple_condition().map(drop))
        })?,
        Kind::Secret => parse::<SecretSpec>(kind, spec)?,
        Kind::Variable => parse::<VariableSpec>(kind, spec)?,
        Kind::Runner => parse::<RunnerSpec>(kind, spec)?,
    };
    if let Some(size) = serde_json::to_string(&value).ok().map(|s| s.len())
        && size > 256 * 1024
    {
        {
            return Err(AppError::new(
                ErrorCode::PayloadTooLarge,
                "the spec is larger than 256 KiB",
            ));
        }
    }
    Ok(value)
}

/// A tuple to write, before the row metadata is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Object.
    pub object: String,
    /// Relation.
    pub relation: String,
    /// Subject.
    pub subject: String,
    /// The tuple's condition (JSON `{name, context}`), if any.
    pub condition: Option<String>,
}

fn grant(object: String, relation: &str, subject: String) -> Grant {
    Grant {
        object,
        relation: relation.to_owned(),
        subject,
        condition: None,
    }
}

/// Resolves `user:NAME`, `service_account:NAME` or `team:NAME` in an organization to an
/// authorization subject (`team:ID#member` for teams).
pub async fn resolve_subject(tx: &mut Tx, org_id: &str, reference: &str) -> AppResult<String> {
    let (ty, name) = reference
        .split_once(':')
        .ok_or_else(|| bad_ref(reference))?;
    let kind = match ty {
        "user" => Kind::User,
        "service_account" => Kind::ServiceAccount,
        "team" => Kind::Team,
        _ => return Err(bad_ref(reference)),
    };
    Name::parse(name).map_err(|e| AppError::new(ErrorCode::InvalidArgument, e.to_string()))?;
    let row = find_resource(&mut **tx, org_id, "", &kind.to_string(), name)
        .await?
        .ok_or_else(|| {
            AppError::new(
                ErrorCode::InvalidArgument,
                format!("'{reference}' does not exist"),
            )
        })?;
    Ok(match kind {
        Kind::Team => format!("team:{}#member", row.id),
        _ => format!("{ty}:{}", row.id),
    })
}

fn bad_ref(reference: &str) -> AppError {
    AppError::new(
        ErrorCode::InvalidArgument,
        format!("'{reference}' is not user:NAME, service_account:NAME or team:NAME"),
    )
}

/// The tuples a resource implies.
pub async fn grants_for(
    tx: &mut Tx,
    kind: Kind,
    row: &ResourceRow,
    spec: &Value,
) -> AppResult<Vec<Grant>> {
    let mut out = Vec::new();
    match kind {
        Kind::Organization => {}
        Kind::Environment => out.push(grant(
            env_object(&row.id),
            "organization",
            org_object(&row.org_id),
        )),
        _ => {
            out.push(grant(
                resource_object(&row.id),
                "parent_org",
                org_object(&row.org_id),
            ));
            if !row.env_id.is_empty() {
                out.push(grant(
                    resource_object(&row.id),
                    "parent_env",
                    env_object(&row.env_id),
                ));
            }
        }
    }
    match kind {
        Kind::Team => team_grants(tx, row, spec, &mut out).await?,
        Kind::RoleBinding => out.push(binding_grant(tx, row, spec).await?),
        _ => {}
    }
    Ok(out)
}

async fn team_grants(
    tx: &mut Tx,
    row: &ResourceRow,
    spec: &Value,
    out: &mut Vec<Grant>,
) -> AppResult<()> {
    let spec: TeamSpec =
        serde_json::from_value(spec.clone()).map_err(|e| invalid_spec(Kind::Team, &e))?;
    for member in &spec.members {
        let subject = resolve_subject(tx, &row.org_id, member).await?;
        if subject == format!("team:{}#member", row.id) {
            return Err(AppError::new(
                ErrorCode::TeamCycle,
                "a team cannot be a member of itself",
            ));
        }
        out.push(grant(format!("team:{}", row.id), "member", subject));
    }
    Ok(())
}

async fn binding_grant(tx: &mut Tx, row: &ResourceRow, spec: &Value) -> AppResult<Grant> {
    let spec: RoleBindingSpec =
        serde_json::from_value(spec.clone()).map_err(|e| invalid_spec(Kind::RoleBinding, &e))?;
    let subject = resolve_subject(tx, &row.org_id, &spec.subject).await?;
    let object = match (&spec.resource, row.env_id.is_empty()) {
        (Some(target), _) => {
            let found = find_resource(
                &mut **tx,
                &row.org_id,
                &row.env_id,
                &target.kind.to_string(),
                &target.name,
            )
            .await?
            .ok_or_else(|| {
                AppError::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "{} '{}' does not exist",
                        target.kind.singular(),
                        target.name
                    ),
                )
            })?;
            item_object(target.kind, &found.id)
        }
        (None, true) => org_object(&row.org_id),
        (None, false) => env_object(&row.env_id),
    };
    let mut g = grant(object, spec.role.relation(), subject);
    if let Some(c) = &spec.condition {
        if g.subject.starts_with("team:") {
            return Err(AppError::new(
                ErrorCode::InvalidArgument,
                "a condition applies to a user or a service account, not to a team: put it \
                 on the members' own bindings",
            ));
        }
        g.condition = Some(c.tuple_condition()?);
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_spec_fields_are_refused() {
        let err = validate_spec(Kind::Team, &serde_json::json!({"membrs": []})).unwrap_err();
        assert_eq!(err.api.code, ErrorCode::InvalidArgument);
        assert!(err.api.message.contains("membrs"));
    }

    #[test]
    fn specs_are_normalized() {
        let v = validate_spec(Kind::Environment, &Value::Null).unwrap();
        assert_eq!(v, serde_json::json!({"protected": false}));
        let b = validate_spec(
            Kind::RoleBinding,
            &serde_json::json!({"role": "viewer", "subject": "team:ops"}),
        )
        .unwrap();
        assert_eq!(b["role"], "viewer");
        assert!(
            validate_spec(
                Kind::RoleBinding,
                &serde_json::json!({"role": "god", "subject": "user:a"})
            )
            .is_err()
        );
    }
}
