//! The installation CA, sealed in `settings` by the system KEK (itself wrapped by the root key),
//! so the database alone never yields the CA key. It is created at first use; two servers
//! creating it at once agree on one (insert-if-absent).

use serde::{Deserialize, Serialize};
use tether_crypto::{Aad, KekRef, LocalKek, RootKey};
use tether_pki::{CertificateAuthority, Validity};
use tether_store::Store;
use tether_store::settings::init_setting;
use zeroize::Zeroizing;

/// The setting that holds the sealed CA.
const CA_SETTING: &str = "runner_ca";
/// The setting that holds the system KEK wrapped by the root key (see `keys.rs`).
const SYSTEM_KEK: &str = "system_kek";
/// The CA is valid for ten years.
const CA_DAYS: u32 = 3650;

/// A CA failure; the message never holds key material.
#[derive(Debug, thiserror::Error)]
#[error("runner CA: {0}")]
pub struct CaError(pub String);

fn err(what: &str, e: impl std::fmt::Display) -> CaError {
    CaError(format!("{what}: {e}"))
}

/// The sealed document: the CA certificate and its key, both PEM.
#[derive(Serialize, Deserialize)]
struct CaDocument {
    certificate_pem: String,
    key_pem: String,
}

impl Drop for CaDocument {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key_pem);
    }
}

/// Opens the system KEK with the root key.
pub async fn system_kek(store: &Store, root: &RootKey) -> Result<LocalKek, CaError> {
    let wrapped = store
        .get_setting(SYSTEM_KEK)
        .await
        .map_err(|e| err("database", e))?
        .ok_or_else(|| CaError("the system key is missing".into()))?;
    let key = root
        .unwrap_kek(&wrapped)
        .map_err(|e| err("opening the system key", e))?;
    let kref = KekRef::local("system", "1").map_err(|e| err("key reference", e))?;
    Ok(LocalKek::new(kref, key))
}

fn aad() -> Result<Aad, CaError> {
    Aad::for_secret_version("system", None, CA_SETTING, 1).map_err(|e| err("aad", e))
}

/// Loads the CA if one was created.
pub async fn load(store: &Store, kek: &LocalKek) -> Result<Option<CertificateAuthority>, CaError> {
    match store
        .get_setting(CA_SETTING)
        .await
        .map_err(|e| err("database", e))?
    {
        Some(sealed) => open(kek, &sealed).map(Some),
        None => Ok(None),
    }
}

fn open(kek: &LocalKek, sealed: &[u8]) -> Result<CertificateAuthority, CaError> {
    let plain = tether_crypto::open(kek, &aad()?, sealed).map_err(|e| err("unsealing", e))?;
    let doc: CaDocument = serde_json::from_slice(&plain).map_err(|e| err("decoding", e))?;
    CertificateAuthority::from_pem(&doc.certificate_pem, &doc.key_pem).map_err(|e| err("pem", e))
}

/// Loads the CA, creating and sealing it first if there is none.
pub async fn load_or_create(
    store: &Store,
    kek: &LocalKek,
    now_ms: i64,
) -> Result<CertificateAuthority, CaError> {
    if let Some(ca) = load(store, kek).await? {
        return Ok(ca);
    }
    let validity = Validity::days_from(now_ms, CA_DAYS).map_err(|e| err("validity", e))?;
    let fresh =
        CertificateAuthority::generate("tether", validity).map_err(|e| err("generate", e))?;
    let doc = CaDocument {
        certificate_pem: fresh.certificate_pem().to_owned(),
        key_pem: fresh.key_pem().as_str().to_owned(),
    };
    let plain = Zeroizing::new(serde_json::to_vec(&doc).map_err(|e| err("encoding", e))?);
    let sealed = tether_crypto::seal(kek, &aad()?, &plain).map_err(|e| err("sealing", e))?;
    let mut tx = store.begin().await.map_err(|e| err("database", e))?;
    let stored = init_setting(&mut tx, CA_SETTING, &sealed)
        .await
        .map_err(|e| err("database", e))?;
    tx.commit().await.map_err(|e| err("database", e))?;
    tracing::info!("created the installation's runner CA");
    open(kek, &stored)
}
