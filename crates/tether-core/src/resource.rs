//! The Kubernetes-style resource envelope shared by the API, `tether apply -f`, `-o yaml` output
//! and the audit snapshots (brief §4).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The only API version so far.
pub const API_VERSION: &str = "tether.dev/v1";

/// The kinds of resource the foundation manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// A tenant: the root of every scope.
    Organization,
    /// A deployment stage inside an organization.
    Environment,
    /// A group of users, service accounts and other teams.
    Team,
    /// A person who logs in.
    User,
    /// A machine identity.
    ServiceAccount,
    /// A grant of a role to a subject on a scope.
    RoleBinding,
    /// Sensitive data: a map of strings kept only in encrypted, immutable versions.
    Secret,
    /// A non-sensitive configuration value, versioned and audited.
    Variable,
    /// A runner: an agent in the customer's infrastructure, reached through the tunnel.
    Runner,
}

/// Whether a kind lives at the organization level, in an environment, or either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Global (organizations themselves).
    Global,
    /// Organization-level only.
    Org,
    /// Organization-level or inside one environment.
    OrgOrEnv,
}

impl Kind {
    /// Every kind, in dependency order (an apply of mixed kinds is done in this order).
    pub const ALL: [Kind; 9] = [
        Kind::Organization,
        Kind::Environment,
        Kind::User,
        Kind::ServiceAccount,
        Kind::Team,
        Kind::RoleBinding,
        Kind::Variable,
        Kind::Secret,
        Kind::Runner,
    ];

    /// The name used in URLs and on the command line (plural, lowercase).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Organization => "orgs",
            Kind::Environment => "envs",
            Kind::Team => "teams",
            Kind::User => "users",
            Kind::ServiceAccount => "service-accounts",
            Kind::RoleBinding => "role-bindings",
            Kind::Secret => "secrets",
            Kind::Variable => "variables",
            Kind::Runner => "runners",
        }
    }

    /// The singular lowercase name, for messages.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Organization => "organization",
            Kind::Environment => "environment",
            Kind::Team => "team",
            Kind::User => "user",
            Kind::ServiceAccount => "service account",
            Kind::RoleBinding => "role binding",
            Kind::Secret => "secret",
            Kind::Variable => "variable",
            Kind::Runner => "runner",
        }
    }

    /// Where resources of this kind may live.
    pub fn scope(self) -> Scope {
        match self {
            Kind::Organization => Scope::Global,
            Kind::Environment | Kind::Team | Kind::User | Kind::ServiceAccount | Kind::Runner => {
                Scope::Org
            }
            Kind::RoleBinding | Kind::Secret | Kind::Variable => Scope::OrgOrEnv,
        }
    }

    /// Parses a kind from its CamelCase name, its plural, or common short forms.
    pub fn parse(input: &str) -> Option<Kind> {
        let lower = input.to_ascii_lowercase().replace(['-', '_'], "");
        let kind = match lower.as_str() {
            "organization" | "organizations" | "org" | "orgs" => Kind::Organization,
            "environment" | "environments" | "env" | "envs" => Kind::Environment,
            "team" | "teams" => Kind::Team,
            "user" | "users" => Kind::User,
            "serviceaccount" | "serviceaccounts" | "sa" => Kind::ServiceAccount,
            "rolebinding" | "rolebindings" | "binding" | "bindings" => Kind::RoleBinding,
            "secret" | "secrets" => Kind::Secret,
            "variable" | "variables" | "var" | "vars" => Kind::Variable,
            "runner" | "runners" => Kind::Runner,
            _ => return None,
        };
        Some(kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::parse(s).ok_or_else(|| format!("unknown kind '{s}'"))
    }
}

/// A pointer into the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VersionRef {
    /// This version's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The version this one replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
    /// The change message given by the writer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Identifying metadata. `name` is unique per (org, env, kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The resource's name (slug).
    pub name: String,
    /// The organization's name (absent for organizations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// The environment's name, for environment-scoped resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The typed id, assigned by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The audit version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionRef>,
}

/// Who created and last changed a resource, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuditStamp {
    /// The creating principal.
    pub created_by: String,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// The last writer.
    pub updated_by: String,
    /// Last change time, RFC 3339.
    pub updated_at: String,
}

/// Server-maintained state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ResourceStatus {
    /// Audit stamps.
    pub audit: AuditStamp,
}

/// The envelope of every resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// The kind.
    pub kind: Kind,
    /// Identifying metadata.
    pub metadata: Metadata,
    /// The kind-specific desired state.
    #[serde(default)]
    pub spec: serde_json::Value,
    /// Server-maintained status; ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ResourceStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_from_many_spellings() {
        assert_eq!(Kind::parse("ServiceAccount"), Some(Kind::ServiceAccount));
        assert_eq!(Kind::parse("service-accounts"), Some(Kind::ServiceAccount));
        assert_eq!(Kind::parse("envs"), Some(Kind::Environment));
        assert_eq!(Kind::parse("widgets"), None);
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.plural()), Some(k));
            assert_eq!(Kind::parse(&k.to_string()), Some(k));
        }
    }

    #[test]
    fn unknown_envelope_fields_are_refused() {
        let bad = r#"{"api_version":"tether.dev/v1","kind":"Team","metadata":{"name":"a"},"spec":{},"extra":1}"#;
        assert!(serde_json::from_str::<Resource>(bad).is_err());
    }
}
