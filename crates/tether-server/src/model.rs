//! The authorization model the control plane runs with, and the object names it uses.

/// The installation-level type the control plane adds to the built-in model: who may administer
/// the installation itself (create organizations).
const PLATFORM_TYPE: &str =
    "\ntype platform\n  relations\n    define admin: [user, service_account]\n";

/// Tether's built-in model (organization → environment → resource, five roles, nested teams),
/// plus the `platform` type.
pub fn model_dsl() -> String {
    tether_authz::TETHER_MODEL_DSL.replacen(
        "\ntype user\n",
        &format!("{PLATFORM_TYPE}\ntype user\n"),
        1,
    )
}

/// The singleton platform object (installation-wide administration, such as creating orgs).
pub const PLATFORM: &str = "platform:tether";

/// `organization:{id}`.
pub fn org_object(org_id: &str) -> String {
    ["organization:", org_id].concat()
}

/// `environment:{id}`.
pub fn env_object(env_id: &str) -> String {
    ["environment:", env_id].concat()
}

/// `resource:{id}`.
pub fn resource_object(id: &str) -> String {
    ["resource:", id].concat()
}

/// The object of an item of `kind` (below an organization) with row id `id`: an environment is
/// its own type, every other item is a `resource`.
pub fn item_object(kind: tether_core::Kind, id: &str) -> String {
    match kind {
        tether_core::Kind::Environment => env_object(id),
        _ => resource_object(id),
    }
}
