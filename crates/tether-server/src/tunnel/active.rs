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
            if let Some(s) = serial_from_hex(hex) {
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

/// Parses lowercase or uppercase hex without separators.
pub fn serial_from_hex(hex: &str) -> Option<Serial> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect();
    bytes.map(|b| Serial::from_bytes(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let s = Serial::from_bytes(&[0x01, 0xab, 0xff]);
        assert_eq!(serial_from_hex(&s.to_hex()), Some(s));
        assert_eq!(serial_from_hex("abc"), None);
        assert_eq!(serial_from_hex("zz"), None);
    }
}
