//! Resolution of an environment's configuration: variables and secrets, environment-level
//! first, then organization-level, with `${var:NAME}`, `${secret:NAME}` and
//! `${secret:NAME.KEY}` expanded by the server (to a depth of 10, cycles reported), so that
//! integrations never see a literal `${...}`. `$${` escapes a literal `${`.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tether_core::{ErrorCode, Kind};
use tether_store::ResourceRow;

use crate::error::{AppError, AppResult};
use crate::kinds::VariableSpec;
use crate::model::resource_object;
use crate::routes::extract::{ApiQuery, CtxExt};
use crate::routes::guard::{Ctx, allowed};
use crate::secret_ops::{read_version, spec_of};
use crate::state::AppState;

/// Deepest reference chain.
pub const MAX_DEPTH: usize = 10;

/// What to resolve.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ResolveQuery {
    /// Return the values (needs `can_read_value` on each secret); otherwise they are masked.
    #[serde(default)]
    pub reveal: bool,
    /// Only these names (comma-separated).
    pub only: Option<String>,
    /// Only names with this prefix.
    pub prefix: Option<String>,
}

/// One resolved entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Entry {
    /// The exported name.
    pub name: String,
    /// The value, or `********` when masked.
    pub value: String,
    /// Where it came from: `var:NAME` or `secret:NAME.KEY`, and the scope.
    pub source: String,
}

/// The resolved configuration of an environment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Resolved {
    /// Environment name.
    pub env: String,
    /// Entries, sorted by name.
    pub values: Vec<Entry>,
    /// Secrets left out because the caller may not read their values.
    pub skipped: Vec<String>,
    /// Names exported by more than one source, with the source whose value was not exported:
    /// `NAME: secret:S.NAME (org), hidden by secret:T.NAME (dev)`. An environment's own
    /// values hide the organization's; at the same level a secret's key hides a variable, and
    /// between two secrets the first by name wins. (An environment's variable or secret that
    /// has the name of an organization's replaces it whole, as intended, and is not listed.)
    pub shadowed: Vec<String>,
}

/// Where a value comes from: its scope's label (`org` or the environment's name) and whether it
/// is the environment's own.
#[derive(Clone)]
struct Scope {
    label: String,
    env_level: bool,
}

struct Resolver<'a> {
    state: &'a AppState,
    ctx: &'a Ctx,
    vars: BTreeMap<String, (String, Scope)>,
    secrets: BTreeMap<String, (ResourceRow, Scope)>,
    decrypted: HashMap<String, BTreeMap<String, String>>,
}

fn reference_error(msg: String) -> AppError {
    AppError::new(ErrorCode::ReferenceError, msg)
}

impl Resolver<'_> {
    async fn load(&mut self, env: &ResourceRow) -> AppResult<()> {
        for env_id in ["", env.id.as_str()] {
            let scope = Scope {
                label: if env_id.is_empty() {
                    "org".to_owned()
                } else {
                    env.name.clone()
                },
                env_level: !env_id.is_empty(),
            };
            for row in self
                .state
                .store
                .list_resources(&env.org_id, Some(env_id), "Variable")
                .await?
            {
                let spec: VariableSpec =
                    serde_json::from_str(&row.spec).map_err(AppError::internal)?;
                self.vars
                    .insert(row.name.clone(), (spec.value, scope.clone()));
            }
            for row in self
                .state
                .store
                .list_resources(&env.org_id, Some(env_id), "Secret")
                .await?
            {
                // A deleted (or never written) secret of the environment does not hide the
                // organization's secret of the same name.
                let spec = spec_of(&row)?;
                if spec.deleted || spec.current_version == 0 {
                    continue;
                }
                self.secrets.insert(row.name.clone(), (row, scope.clone()));
            }
        }
        Ok(())
    }

    /// A referenced secret's data; a secret the caller may not read is reported like a
    /// missing one.
    async fn secret_data(&mut self, name: &str) -> AppResult<BTreeMap<String, String>> {
        self.readable_data(name).await?.ok_or_else(|| {
            reference_error(format!(
                "secret '{name}' does not exist in this environment or its organization"
            ))
        })
    }

    /// A secret's data, or `None` when the caller lacks `can_read_value` or it does not exist.
    async fn readable_data(&mut self, name: &str) -> AppResult<Option<BTreeMap<String, String>>> {
        if let Some(d) = self.decrypted.get(name) {
            return Ok(Some(d.clone()));
        }
        let Some((row, _)) = self.secrets.get(name) else {
            return Ok(None);
        };
        if !allowed(
            self.state,
            self.ctx,
            "can_read_value",
            &resource_object(&row.id),
        )? {
            return Ok(None);
        }
        let (_, data) = read_version(self.state, row, None).await?;
        self.decrypted.insert(name.to_owned(), data.clone());
        Ok(Some(data))
    }

    /// Expands references in `value`. `stack` holds the chain of references being resolved.
    async fn expand(&mut self, value: &str, stack: &mut Vec<String>) -> AppResult<String> {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(pos) = rest.find("${") {
            let (head, tail) = rest.split_at(pos);
            if head.ends_with('$') {
                out.push_str(head.get(..head.len() - 1).unwrap_or(""));
                out.push_str("${");
                rest = tail.get(2..).unwrap_or("");
                continue;
            }
            out.push_str(head);
            let end = tail.find('}').ok_or_else(|| {
                reference_error(format!(
                    "unterminated reference in '{}'",
                    stack.last().map(String::as_str).unwrap_or("value")
                ))
            })?;
            let reference = tail.get(2..end).unwrap_or("").to_owned();
            let resolved = Box::pin(self.resolve_ref(&reference, stack)).await?;
            out.push_str(&resolved);
            rest = tail.get(end + 1..).unwrap_or("");
        }
        out.push_str(rest);
        Ok(out)
    }

    async fn resolve_ref(&mut self, reference: &str, stack: &mut Vec<String>) -> AppResult<String> {
        if stack.iter().any(|s| s == reference) {
            let chain = stack
                .iter()
                .chain(std::iter::once(&reference.to_owned()))
                .cloned()
                .collect::<Vec<_>>()
                .join(" -> ");
            return Err(reference_error(format!("reference cycle: {chain}")));
        }
        if stack.len() >= MAX_DEPTH {
            return Err(reference_error(format!(
                "references nest deeper than {MAX_DEPTH} at '{reference}'"
            )));
        }
        let raw = self.raw_value(reference).await?;
        stack.push(reference.to_owned());
        let expanded = self.expand(&raw, stack).await;
        stack.pop();
        expanded
    }

    async fn raw_value(&mut self, reference: &str) -> AppResult<String> {
        if let Some(name) = reference.strip_prefix("var:") {
            return self
                .vars
                .get(name)
                .map(|(v, _)| v.clone())
                .ok_or_else(|| reference_error(format!("variable '{name}' does not exist")));
        }
        let Some(target) = reference.strip_prefix("secret:") else {
            return Err(reference_error(format!(
                "'${{{reference}}}' is not ${{var:NAME}}, ${{secret:NAME}} or ${{secret:NAME.KEY}}"
            )));
        };
        let (name, key) = match target.split_once('.') {
            Some((n, k)) => (n, Some(k)),
            None => (target, None),
        };
        let data = self.secret_data(name).await?;
        match key {
            Some(k) => data
                .get(k)
                .cloned()
                .ok_or_else(|| reference_error(format!("secret '{name}' has no key '{k}'"))),
            None if data.len() == 1 => Ok(data.into_values().next().unwrap_or_default()),
            None => Err(reference_error(format!(
                "secret '{name}' has several keys; use ${{secret:{name}.KEY}}"
            ))),
        }
    }
}

fn wanted(name: &str, q: &ResolveQuery) -> bool {
    let only_ok = q
        .only
        .as_deref()
        .is_none_or(|o| o.split(',').any(|n| n.trim() == name));
    let prefix_ok = q.prefix.as_deref().is_none_or(|p| name.starts_with(p));
    only_ok && prefix_ok
}

/// Resolves an environment's variables and secrets.
#[utoipa::path(get, path = "/v1/orgs/{org}/{kind}/{name}/resolved", tag = "secrets",
    params(("org" = String, Path), ("kind" = String, Path, description = "envs"), ("name" = String, Path), ResolveQuery),
    responses((status = 200, body = Resolved), (status = 422, description = "a reference could not be resolved")))]
pub async fn resolved(
    State(state): State<AppState>,
    ctx: CtxExt,
    ApiQuery(q): ApiQuery<ResolveQuery>,
) -> AppResult<Json<Resolved>> {
    let env = match (ctx.kind, &ctx.item) {
        (Some(Kind::Environment), Some(env)) => env.clone(),
        _ => return Err(AppError::not_found("environment", "")),
    };
    let mut r = Resolver {
        state: &state,
        ctx: &ctx,
        vars: BTreeMap::new(),
        secrets: BTreeMap::new(),
        decrypted: HashMap::new(),
    };
    r.load(&env).await?;
    let mut out = Exports::default();
    let vars: Vec<(String, (String, Scope))> = r.vars.clone().into_iter().collect();
    for (name, (value, scope)) in vars {
        if !wanted(&name, &q) {
            continue;
        }
        let mut stack = vec![format!("var:{name}")];
        let value = r.expand(&value, &mut stack).await?;
        let source = format!("var:{name} ({})", scope.label);
        out.offer((scope.env_level, false), name, value, source);
    }
    let mut skipped = Vec::new();
    let secrets: Vec<(String, Scope)> = r
        .secrets
        .iter()
        .map(|(n, (_, s))| (n.clone(), s.clone()))
        .collect();
    for (name, scope) in secrets {
        let Some(data) = r.readable_data(&name).await? else {
            skipped.push(name);
            continue;
        };
        for (key, raw) in data {
            if !wanted(&key, &q) {
                continue;
            }
            let mut stack = vec![format!("secret:{name}.{key}")];
            let value = r.expand(&raw, &mut stack).await?;
            let source = format!("secret:{name}.{key} ({})", scope.label);
            out.offer((scope.env_level, true), key, value, source);
        }
    }
    let values = out
        .values
        .into_values()
        .map(|(_, mut e)| {
            if !q.reveal {
                e.value = "********".into();
            }
            e
        })
        .collect();
    Ok(Json(Resolved {
        env: env.name.clone(),
        values,
        skipped,
        shadowed: out.shadowed,
    }))
}

/// How strongly a value claims its name: (the environment's own, a secret's key). Compared as
/// a tuple, the environment's own values beat the organization's, and at one level a secret's
/// key beats a variable.
type Rank = (bool, bool);

/// The exported names, each with the strongest value offered for it.
#[derive(Default)]
struct Exports {
    values: BTreeMap<String, (Rank, Entry)>,
    shadowed: Vec<String>,
}

impl Exports {
    /// Offers a value for `name`. A value of the same rank as the one held loses, so the first
    /// offered (variables and secrets come in name order) wins.
    fn offer(&mut self, rank: Rank, name: String, value: String, source: String) {
        let entry = Entry {
            name: name.clone(),
            value,
            source,
        };
        match self.values.entry(name) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert((rank, entry));
            }
            std::collections::btree_map::Entry::Occupied(mut held) => {
                let (loser, winner) = if rank > held.get().0 {
                    let old = held.insert((rank, entry));
                    (old.1.source, held.get().1.source.clone())
                } else {
                    (entry.source, held.get().1.source.clone())
                };
                self.shadowed
                    .push(format!("{}: {loser}, hidden by {winner}", held.key()));
            }
        }
    }
}

/// The references written in `value` (what is between `${` and `}`), skipping `$${` escapes.
fn references_in(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(pos) = rest.find("${") {
        let (head, tail) = rest.split_at(pos);
        let after = tail.get(2..).unwrap_or("");
        if head.ends_with('$') {
            rest = after;
            continue;
        }
        let Some(end) = after.find('}') else { break };
        out.push(after.get(..end).unwrap_or(""));
        rest = after.get(end + 1..).unwrap_or("");
    }
    out
}

/// An item whose value refers to another.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Referrer {
    /// `secret` or `variable`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// `org` or its environment's name.
    pub scope: String,
    /// Its references to the item, as written (`${secret:db.PASSWORD}`).
    pub via: Vec<String>,
}

/// What refers to an item.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct References {
    /// The variables and secrets whose values resolve a reference to the item, by scope and
    /// name.
    pub referrers: Vec<Referrer>,
    /// Secrets that were not searched (`NAME (scope)`): the caller may not read their values,
    /// or their key is unavailable.
    pub unchecked: Vec<String>,
}

/// Lists the variables and secrets whose references resolve to this secret or variable: the
/// ones to update before renaming, moving or deleting it. A reference resolves in the
/// environment first, then the organization, so an environment's item is referred to from
/// its environment and the organization, and an organization's item from the organization and
/// every environment without an item of that name. Only items the caller may read are listed,
/// and only secrets whose values the caller may read are searched (the others are counted in
/// `unchecked`). No value is returned.
#[utoipa::path(get, path = "/v1/orgs/{org}/{kind}/{name}/references", tag = "secrets",
    params(("org" = String, Path), ("kind" = String, Path, description = "secrets or variables"), ("name" = String, Path), ("env" = Option<String>, Query)),
    responses((status = 200, body = References)))]
pub async fn references(State(state): State<AppState>, ctx: CtxExt) -> AppResult<Json<References>> {
    let (kind, target) = match (ctx.kind, &ctx.item) {
        (Some(k @ (Kind::Secret | Kind::Variable)), Some(item)) => (k, item.clone()),
        _ => return Err(AppError::not_found("secret", "")),
    };
    let prefix = if kind == Kind::Secret {
        "secret:"
    } else {
        "var:"
    };
    let names_it = |r: &str| {
        r.strip_prefix(prefix).is_some_and(|rest| {
            rest == target.name
                || (kind == Kind::Secret
                    && rest
                        .strip_prefix(target.name.as_str())
                        .is_some_and(|k| k.starts_with('.')))
        })
    };
    let org_id = &target.org_id;
    let envs: HashMap<String, String> = state
        .store
        .list_resources(org_id, None, "Environment")
        .await?
        .into_iter()
        .map(|e| (e.id, e.name))
        .collect();
    let live = |row: &ResourceRow| {
        row.kind != Kind::Secret.to_string()
            || spec_of(row).is_ok_and(|s| !s.deleted && s.current_version > 0)
    };
    // Environments with their own item of this name hide an organization-level target.
    let own: std::collections::HashSet<String> = if target.env_id.is_empty() {
        state
            .store
            .list_resources(org_id, None, &kind.to_string())
            .await?
            .into_iter()
            .filter(|r| r.name == target.name && !r.env_id.is_empty() && live(r))
            .map(|r| r.env_id)
            .collect()
    } else {
        Default::default()
    };
    let mut out = References {
        referrers: Vec::new(),
        unchecked: Vec::new(),
    };
    for referrer_kind in [Kind::Variable, Kind::Secret] {
        for row in state
            .store
            .list_resources(org_id, None, &referrer_kind.to_string())
            .await?
        {
            let reaches = if target.env_id.is_empty() {
                row.env_id.is_empty() || !own.contains(&row.env_id)
            } else {
                row.env_id.is_empty() || row.env_id == target.env_id
            };
            let object = resource_object(&row.id);
            if row.id == target.id
                || !reaches
                || !live(&row)
                || !allowed(&state, &ctx, "can_read", &object)?
            {
                continue;
            }
            let scope = if row.env_id.is_empty() {
                "org".to_owned()
            } else {
                envs.get(&row.env_id).cloned().unwrap_or_default()
            };
            let values: Vec<String> = if referrer_kind == Kind::Variable {
                let spec: VariableSpec =
                    serde_json::from_str(&row.spec).map_err(AppError::internal)?;
                vec![spec.value]
            } else if allowed(&state, &ctx, "can_read_value", &object)? {
                // One secret whose key is unavailable (a revoked customer key) does not fail
                // the whole search: it is reported as not searched.
                match read_version(&state, &row, None).await {
                    Ok((_, data)) => data.into_values().collect(),
                    Err(e) => {
                        tracing::debug!(secret = %row.id, code = ?e.api.code, cause = ?e.cause,
                            "references: a secret could not be opened");
                        out.unchecked.push(format!("{} ({scope})", row.name));
                        continue;
                    }
                }
            } else {
                out.unchecked.push(format!("{} ({scope})", row.name));
                continue;
            };
            let mut via: Vec<String> = values
                .iter()
                .flat_map(|v| references_in(v))
                .filter(|r| names_it(r))
                .map(|r| format!("${{{r}}}"))
                .collect();
            via.sort();
            via.dedup();
            if !via.is_empty() {
                out.referrers.push(Referrer {
                    kind: if referrer_kind == Kind::Secret {
                        "secret"
                    } else {
                        "variable"
                    },
                    name: row.name.clone(),
                    scope,
                    via,
                });
            }
        }
    }
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::references_in;

    #[test]
    fn references_are_found_and_escapes_skipped() {
        assert_eq!(
            references_in("a ${secret:db.K} $${var:NOT} ${var:X}${var:Y} ${unterminated"),
            vec!["secret:db.K", "var:X", "var:Y"]
        );
        assert!(references_in("plain $HOME").is_empty());
    }
}
