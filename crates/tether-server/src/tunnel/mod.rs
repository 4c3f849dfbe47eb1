//! The runner tunnel (brief §10): the installation CA, the live set of active certificate
//! serials, the gRPC `TunnelService` on its own mTLS listener, and the hub that routes typed
//! operations to connected runners by the identity in their certificates.

pub mod active;
pub mod ca;
pub mod call;
pub mod hub;
pub mod registry;
pub mod serve;
pub mod service;

use std::sync::{Arc, PoisonError, RwLock};

use rustls::ServerConfig;
use tether_crypto::{LocalKek, RootKey};
use tether_pki::{
    CertificateAuthority, RunnerClientVerifier, Serial, Validity, tunnel_server_config,
};
use tether_store::Store;
use tether_store::runners::active_runner_certs;

use crate::tunnel::active::ActiveSet;
use crate::tunnel::ca::CaError;
use crate::tunnel::hub::Hub;

/// Where clients and runners reach this server (set once the listeners are bound).
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// The REST API, as put in credentials (`api_endpoint`).
    pub api: String,
    /// The tunnel, `https://host:port` (`tunnel_endpoint`).
    pub tunnel: String,
    /// DNS names and IP addresses of the tunnel server certificate.
    pub names: Vec<String>,
}

/// The tunnel's state, shared by the listener, the hub and the runner routes.
pub struct Tunnel {
    kek: LocalKek,
    ca: RwLock<Option<Arc<CertificateAuthority>>>,
    tls: RwLock<Option<Arc<ServerConfig>>>,
    endpoints: RwLock<Endpoints>,
    /// Active certificate serials (the live revocation check).
    pub active: Arc<ActiveSet>,
    /// Live sessions.
    pub hub: Hub,
    heartbeat_ms: u32,
}

impl Tunnel {
    /// Loads the CA (if it exists) and the active serials.
    pub async fn load(
        store: &Store,
        root: &RootKey,
        now_ms: i64,
        heartbeat_ms: u32,
    ) -> Result<Tunnel, CaError> {
        let kek = ca::system_kek(store, root).await?;
        let authority = ca::load(store, &kek).await?.map(Arc::new);
        let active = Arc::new(ActiveSet::default());
        let certs = active_runner_certs(store.reader(), now_ms)
            .await
            .map_err(|e| CaError(format!("database: {e}")))?;
        for c in certs {
            if let Some(serial) = Serial::from_hex(&c.serial) {
                active.insert(serial, &c.org_id, &c.runner_id);
            }
        }
        Ok(Tunnel {
            kek,
            ca: RwLock::new(authority),
            tls: RwLock::new(None),
            endpoints: RwLock::new(Endpoints::default()),
            active,
            hub: Hub::default(),
            heartbeat_ms,
        })
    }

    /// The heartbeat interval proposed in Ack.
    pub fn heartbeat_ms(&self) -> u32 {
        self.heartbeat_ms
    }

    /// The endpoints.
    pub fn endpoints(&self) -> Endpoints {
        self.endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets the endpoints once the listeners are bound, and builds the TLS configuration if
    /// the CA exists.
    pub fn set_endpoints(&self, endpoints: Endpoints, now_ms: i64) -> Result<(), CaError> {
        *self
            .endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner) = endpoints;
        self.rebuild_tls(now_ms)
    }

    /// The current TLS configuration, or None before the CA exists.
    pub fn tls_config(&self) -> Option<Arc<ServerConfig>> {
        self.tls
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn current_ca(&self) -> Option<Arc<CertificateAuthority>> {
        self.ca
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The CA, created (and sealed) at first use.
    pub async fn ca(
        &self,
        store: &Store,
        now_ms: i64,
    ) -> Result<Arc<CertificateAuthority>, CaError> {
        if let Some(ca) = self.current_ca() {
            return Ok(ca);
        }
        let created = Arc::new(ca::load_or_create(store, &self.kek, now_ms).await?);
        *self.ca.write().unwrap_or_else(PoisonError::into_inner) = Some(created.clone());
        self.rebuild_tls(now_ms)?;
        Ok(created)
    }

    /// Issues a fresh server certificate for the tunnel names and installs a new TLS
    /// configuration (existing connections keep theirs).
    fn rebuild_tls(&self, now_ms: i64) -> Result<(), CaError> {
        let (Some(authority), names) = (self.current_ca(), self.endpoints().names) else {
            return Ok(());
        };
        if names.is_empty() {
            return Ok(());
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let validity = Validity::days_from(now_ms, 365).map_err(|e| CaError(e.to_string()))?;
        let cert = authority
            .issue_server(&refs, validity)
            .map_err(|e| CaError(e.to_string()))?;
        let verifier = RunnerClientVerifier::new(authority.certificate_pem(), self.active.clone())
            .map_err(|e| CaError(e.to_string()))?;
        let config = tunnel_server_config(
            &cert.certificate_pem,
            &cert.private_key_pem,
            Arc::new(verifier),
        )
        .map_err(|e| CaError(e.to_string()))?;
        *self.tls.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(config));
        Ok(())
    }
}
