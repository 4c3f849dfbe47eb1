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
}

struct Resolver<'a> {
    state: &'a AppState,
    ctx: &'a Ctx,
    vars: BTreeMap<String, (String, String)>,
    secrets: BTreeMap<String, (ResourceRow, String)>,
    decrypted: HashMap<String, BTreeMap<String, String>>,
}

fn reference_error(msg: String) -> AppError {
    AppError::new(ErrorCode::ReferenceError, msg)
}

impl Resolver<'_> {
    async fn load(&mut self, env: &ResourceRow) -> AppResult<()> {
        for env_id in ["", env.id.as_str()] {
            let scope = if env_id.is_empty() {
                "org".to_owned()
            } else {
                env.name.clone()
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
                let spec = spec_of(&row)?;
                if spec.deleted || spec.current_version == 0 {
                    self.secrets.remove(&row.name);
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
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    let vars: Vec<(String, (String, String))> = r.vars.clone().into_iter().collect();
    for (name, (value, scope)) in vars {
        if !wanted(&name, &q) {
            continue;
        }
        let mut stack = vec![format!("var:{name}")];
        let value = r.expand(&value, &mut stack).await?;
        out.insert(
            name.clone(),
            Entry {
                name: name.clone(),
                value,
                source: format!("var:{name} ({scope})"),
            },
        );
    }
    let mut skipped = Vec::new();
    let secrets: Vec<(String, String)> = r
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
            out.insert(
                key.clone(),
                Entry {
                    name: key.clone(),
                    value,
                    source: format!("secret:{name}.{key} ({scope})"),
                },
            );
        }
    }
    let values = out
        .into_values()
        .map(|mut e| {
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
    }))
}
