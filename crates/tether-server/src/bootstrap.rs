//! First start of an installation: the `default` organization, an `admin` user who owns it and
//! administers the platform, a root API key printed once, and in dev mode the `dev` environment.

use tether_core::resource::API_VERSION;
use tether_core::{Kind, Metadata, Resource};
use tether_crypto::KeyEnv;
use tether_store::TupleRow;
use tether_store::identity::insert_api_key;
use tether_store::tuples::write_tuple;

use crate::auth::{AuthVia, Principal};
use crate::resources::{Change, ScopeNames, create};
use crate::state::AppState;
use crate::{Bootstrapped, StartError};

fn system_principal() -> Principal {
    Principal {
        id: "system".into(),
        kind: Kind::User,
        name: "system".into(),
        org_id: String::new(),
        org: "-".into(),
        via: AuthVia::Session {
            token_id: String::new(),
        },
        scopes: Vec::new(),
    }
}

fn manifest(kind: Kind, name: &str, spec: serde_json::Value) -> Resource {
    Resource {
        api_version: API_VERSION.into(),
        kind,
        metadata: Metadata {
            name: name.into(),
            ..Metadata::default()
        },
        spec,
        status: None,
    }
}

fn fail(e: crate::error::AppError) -> StartError {
    StartError::Other(format!(
        "bootstrap: {} {}",
        e.api.message,
        e.cause.unwrap_or_default()
    ))
}

/// Bootstraps an empty installation. Returns the root key when one was created.
pub async fn bootstrap(state: &AppState, dev: bool) -> Result<Bootstrapped, StartError> {
    let existing = state
        .store
        .list_resources("", Some(""), "Organization")
        .await?;
    if !existing.is_empty() {
        return Ok(Bootstrapped { root_api_key: None });
    }
    let system = system_principal();
    let change = Change {
        actor: &system,
        message: Some("bootstrap".into()),
        event: None,
    };
    let org_scope = ScopeNames {
        org: "default".into(),
        ..ScopeNames::default()
    };
    let org = create(
        state,
        &org_scope,
        Kind::Organization,
        &manifest(
            Kind::Organization,
            "default",
            serde_json::json!({"display_name": "Default"}),
        ),
        &change,
    )
    .await
    .map_err(fail)?;
    let scope = ScopeNames {
        org_id: org.id.clone(),
        org: org.name.clone(),
        env_id: String::new(),
        env: None,
    };
    let admin_spec = serde_json::json!({"display_name": "Administrator"});
    let admin = create(
        state,
        &scope,
        Kind::User,
        &manifest(Kind::User, "admin", admin_spec),
        &change,
    )
    .await
    .map_err(fail)?;
    if dev {
        create(
            state,
            &scope,
            Kind::Environment,
            &manifest(Kind::Environment, "dev", serde_json::json!({})),
            &change,
        )
        .await
        .map_err(fail)?;
    }
    let key = grant_admin_and_mint_key(state, &org.id, &admin).await?;
    Ok(Bootstrapped {
        root_api_key: Some(key),
    })
}

async fn grant_admin_and_mint_key(
    state: &AppState,
    org_id: &str,
    admin: &tether_store::ResourceRow,
) -> Result<String, StartError> {
    let subject = format!("user:{}", admin.id);
    let tuples = [
        TupleRow {
            object: crate::model::org_object(org_id),
            relation: "owner".into(),
            subject: subject.clone(),
            org_id: org_id.into(),
            source_id: "bootstrap".into(),
            condition: None,
        },
        TupleRow {
            object: crate::model::PLATFORM.into(),
            relation: "admin".into(),
            subject,
            org_id: org_id.into(),
            source_id: "bootstrap".into(),
            condition: None,
        },
    ];
    let (key, row) = crate::routes::auth::new_api_key(
        state,
        admin,
        "root".into(),
        "system".into(),
        "[]".into(),
        KeyEnv::Live,
        None,
    );
    let mut tx = state.store.begin().await?;
    for t in &tuples {
        write_tuple(&mut tx, t).await?;
    }
    insert_api_key(&mut tx, &row).await?;
    tx.commit()
        .await
        .map_err(|e| StartError::Other(format!("bootstrap: {e}")))?;
    state.authz.apply(&tuples, &[]);
    Ok(key.expose_secret().to_owned())
}
