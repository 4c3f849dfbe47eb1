//! Installation keys. The root key (from a file, an env var, the dev data directory, or sealed by
//! a KMS key in the database: [`crate::unseal`]) wraps a
//! system key-encryption key; that key seals the API-key pepper and the JWT signing key, which
//! are stored in the database. The database alone therefore yields neither.

use std::io::Write;
use std::path::Path;

use secrecy::ExposeSecret;
use tether_crypto::{Aad, KekRef, LocalKek, OrgKek, Pepper, RootKey};
use tether_store::Store;
use tether_store::settings::init_setting;
use zeroize::Zeroizing;

use crate::config::RootKeySource;
use crate::kek::Providers;
use crate::tokens::JwtKeys;
use crate::unseal::{self, RootSeal};

/// A startup failure, with a message that names the cause.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

fn err(what: &str, e: impl std::fmt::Display) -> KeyError {
    KeyError(format!("{what}: {e}"))
}

/// Loads (or, in dev mode or with auto-unseal on a fresh database, creates) the root key, and
/// returns the KMS seal when the key is sealed by one.
///
/// # Errors
///
/// A message that names the source and the cause.
pub async fn load_root_key(
    source: &RootKeySource,
    store: &Store,
    providers: &Providers,
) -> Result<(RootKey, Option<RootSeal>), KeyError> {
    let plain = match source {
        RootKeySource::File(path) => RootKey::from_file(path)
            .map_err(|e| err(&format!("root key file {}", path.display()), e))?,
        RootKeySource::Env(value) => {
            RootKey::from_encoded(value.expose_secret()).map_err(|e| err("TETHER_ROOT_KEY", e))?
        }
        RootKeySource::DevFile(path) => dev_root_key(path)?,
        RootKeySource::AwsKms { key_id } => {
            let seal = RootSeal::aws_kms(key_id);
            let root = unseal::load(store, providers, &seal).await?;
            return Ok((root, Some(seal)));
        }
    };
    unseal::refuse_if_sealed(store).await?;
    Ok((plain, None))
}

fn dev_root_key(path: &Path) -> Result<RootKey, KeyError> {
    if path.exists() {
        return RootKey::from_file(path)
            .map_err(|e| err(&format!("root key file {}", path.display()), e));
    }
    let key = RootKey::generate();
    write_private(path, key.export_base64().as_bytes())
        .map_err(|e| err(&format!("writing {}", path.display()), e))?;
    tracing::warn!(path = %path.display(), "dev mode: generated a root key; keep this file private");
    Ok(key)
}

/// A fresh root key as base64 text, for `tether operator generate-root-key`.
pub fn generate_root_key_text() -> Zeroizing<String> {
    RootKey::generate().export_base64()
}

/// Writes a file readable only by its owner (0600), failing if it exists.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// The keys derived from the root key.
pub struct InstallationKeys {
    /// API-key pepper.
    pub pepper: Pepper,
    /// JWT keys.
    pub jwt: JwtKeys,
}

/// The setting that holds the system KEK, wrapped by the root key.
pub(crate) const SYSTEM_KEK: &str = "system_kek";
const PEPPER: &str = "api_key_pepper";
const JWT_KEY: &str = "jwt_signing_key";

/// Loads the system KEK, the pepper and the JWT key, creating them on first start.
pub async fn load_installation_keys(
    store: &Store,
    root: &RootKey,
) -> Result<InstallationKeys, KeyError> {
    let fresh = OrgKek::generate();
    let wrapped = root
        .wrap_kek(&fresh)
        .map_err(|e| err("wrapping the system key", e))?;
    let stored = init_once(store, SYSTEM_KEK, &wrapped).await?;
    let system = root.unwrap_kek(&stored).map_err(|e| {
        err(
            "the root key does not open this database's system key (wrong root key?)",
            e,
        )
    })?;
    let kref = KekRef::local("system", "1").map_err(|e| err("key reference", e))?;
    let kek = LocalKek::new(kref, system);
    let pepper_bytes = sealed_setting(store, &kek, PEPPER, || {
        Ok(Zeroizing::new(
            tether_crypto::DataKey::generate().expose_secret().to_vec(),
        ))
    })
    .await?;
    let pepper = Pepper::from_bytes(&pepper_bytes).map_err(|e| err("pepper", e))?;
    let jwt_pkcs8 = sealed_setting(store, &kek, JWT_KEY, || {
        JwtKeys::generate_pkcs8().map_err(KeyError)
    })
    .await?;
    let jwt = JwtKeys::from_pkcs8(&jwt_pkcs8).map_err(KeyError)?;
    Ok(InstallationKeys { pepper, jwt })
}

async fn init_once(store: &Store, key: &str, value: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut tx = store.begin().await.map_err(|e| err("database", e))?;
    let stored = init_setting(&mut tx, key, value)
        .await
        .map_err(|e| err("database", e))?;
    tx.commit().await.map_err(|e| err("database", e))?;
    Ok(stored)
}

async fn sealed_setting(
    store: &Store,
    kek: &LocalKek,
    name: &str,
    make: impl FnOnce() -> Result<Zeroizing<Vec<u8>>, KeyError>,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let aad = Aad::for_secret_version("system", None, name, 1).map_err(|e| err("aad", e))?;
    let sealed = match store
        .get_setting(name)
        .await
        .map_err(|e| err("database", e))?
    {
        Some(s) => s,
        None => {
            let plain = make()?;
            let blob = tether_crypto::seal(kek, &aad, &plain).map_err(|e| err("sealing", e))?;
            init_once(store, name, &blob).await?
        }
    };
    tether_crypto::open(kek, &aad, &sealed).map_err(|e| err(&format!("opening {name}"), e))
}
