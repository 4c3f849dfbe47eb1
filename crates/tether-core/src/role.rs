//! The five resource-scoped roles of the built-in authorization model.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A role that can be granted on an organization, an environment or a resource. Each role
/// includes the ones after it: owner ⊇ admin ⊇ iam_admin ⊇ member ⊇ viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Full control, including deleting the scope.
    Owner,
    /// Manage everything in the scope.
    Admin,
    /// Manage identities, teams and role bindings.
    IamAdmin,
    /// Create and change resources, read secret values.
    Member,
    /// Read metadata.
    Viewer,
}

impl Role {
    /// All roles, strongest first.
    pub const ALL: [Role; 5] = [
        Role::Owner,
        Role::Admin,
        Role::IamAdmin,
        Role::Member,
        Role::Viewer,
    ];

    /// The relation name in the authorization model.
    pub fn relation(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::IamAdmin => "iam_admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.relation())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.relation() == s)
            .ok_or_else(|| format!("unknown role '{s}' (owner, admin, iam_admin, member, viewer)"))
    }
}
