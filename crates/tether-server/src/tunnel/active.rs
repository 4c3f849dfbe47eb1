//! The live set of active runner certificate serials, loaded from the database at startup and
//! updated in the same request that issues or revokes a certificate. The TLS verifier consults
//! it on every handshake, and `attach` again on every stream.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use tether_pki::{ActiveSerials, RunnerCertIdentity, Serial};

/// Serial → (org id, runner id) of every active certificate.
#[derive(Debug, Default)]
pub struct ActiveSet(RwLock<HashMap<Serial, (String, String)>>);

impl ActiveSet {
    /// Marks a certificate active.
    pub fn insert(&self, serial: Serial, org_id: &str, runner_id: &str) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(serial, (org_id.to_owned(), runner_id.to_owned()));
    }

    /// Revokes serials given in hex.
    pub fn remove_hex(&self, serials: &[String]) {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        for hex in serials {
            if let Some(s) = Serial::from_hex(hex) {
                map.remove(&s);
            }
        }
    }
}

impl ActiveSerials for ActiveSet {
    /// Active only if the serial is in the set *and* was issued to the org and runner the
    /// certificate names.
    fn is_active(&self, identity: &RunnerCertIdentity) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&identity.serial)
            .is_some_and(|(org, runner)| *org == identity.org_id && *runner == identity.runner_id)
    }
}
