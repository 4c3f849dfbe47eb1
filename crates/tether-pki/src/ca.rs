//! The installation CA and the certificates it issues.

use std::fmt;
use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::PkiError;
use crate::identity::{Serial, is_valid_path_segment, spiffe_id};

/// The validity window of a certificate. The caller supplies the times (from its injected
/// clock), so this crate never reads the system clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Start, inclusive.
    pub not_before: OffsetDateTime,
    /// End, inclusive.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From Unix milliseconds, as `tether_core::clock::Clock` gives them.
    pub fn from_unix_millis(not_before_ms: i64, not_after_ms: i64) -> Result<Self, PkiError> {
        let conv = |ms: i64| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).map_err(|_| {
                PkiError::InvalidInput {
                    field: "validity",
                    reason: "out of range",
                }
            })
        };
        let v = Self {
            not_before: conv(not_before_ms)?,
            not_after: conv(not_after_ms)?,
        };
        if v.not_after <= v.not_before {
            return Err(PkiError::InvalidInput {
                field: "validity",
                reason: "ends before it starts",
            });
        }
        Ok(v)
    }

    /// Starting at `now_ms` (backdated by 5 minutes for clock skew), lasting `days`.
    pub fn days_from(now_ms: i64, days: u32) -> Result<Self, PkiError> {
        let skew = 5 * 60 * 1000;
        let length = i64::from(days) * 86_400_000;
        Self::from_unix_millis(now_ms.saturating_sub(skew), now_ms.saturating_add(length))
    }
}

/// The names of a runner and its org (subject CN) and their ids (SPIFFE id).
#[derive(Debug, Clone, Copy)]
pub struct RunnerNames<'a> {
    /// Org name (slug), for the CN.
    pub org: &'a str,
    /// Runner name, for the CN.
    pub runner: &'a str,
    /// Org id, for the SPIFFE id.
    pub org_id: &'a str,
    /// Runner id, for the SPIFFE id.
    pub runner_id: &'a str,
}

/// A certificate with its fresh private key. The key is wiped on drop and never printed.
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The certificate, DER.
    pub certificate_der: CertificateDer<'static>,
    /// The PKCS#8 private key, PEM. Give it to its owner once; never store it.
    pub private_key_pem: Zeroizing<String>,
    /// The serial, to record in the runner's active set.
    pub serial: Serial,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("private_key_pem", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// Tether's certificate authority (one per installation).
pub struct CertificateAuthority {
    certificate_pem: String,
    certificate_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a new CA (ECDSA P-256) named `Tether CA {installation}`.
    pub fn generate(installation: &str, validity: Validity) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&format!("Tether CA {installation}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?.into());
        set_validity(&mut params, validity);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            certificate_pem: cert.pem(),
            certificate_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and (unsealed) key, checking that they belong together.
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Pem(e.to_string()))?;
        let der = crate::identity::pem_to_der(certificate_pem)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| PkiError::Parse(e.to_string()))?;
        if !parsed.is_ca() {
            return Err(PkiError::Parse("the CA certificate is not a CA".into()));
        }
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&der, key)?;
        Ok(Self {
            certificate_pem: certificate_pem.to_owned(),
            certificate_der: der,
            issuer,
        })
    }

    /// The CA certificate, PEM (public; goes into every credentials document).
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA certificate, DER.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.certificate_der
    }

    /// The CA private key, PKCS#8 PEM, for the server to seal with its root key.
    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.issuer.key().serialize_pem())
    }

    /// Issues a runner certificate with a fresh key pair.
    pub fn issue_runner(
        &self,
        names: RunnerNames<'_>,
        validity: Validity,
    ) -> Result<IssuedCertificate, PkiError> {
        for (field, value) in [("org", names.org), ("runner", names.runner)] {
            if !is_valid_name(value) {
                return Err(PkiError::InvalidInput {
                    field,
                    reason: "not a valid name",
                });
            }
        }
        let uri = spiffe_id(names.org_id, names.runner_id)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&format!("org.{}.runner.{}", names.org, names.runner));
        params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue_leaf(params, validity)
    }

    /// Issues the tunnel server's certificate for the given DNS names and IP addresses.
    pub fn issue_server(
        &self,
        names: &[&str],
        validity: Validity,
    ) -> Result<IssuedCertificate, PkiError> {
        if names.is_empty() {
            return Err(PkiError::InvalidInput {
                field: "names",
                reason: "at least one is needed",
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("Tether tunnel");
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*n).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue_leaf(params, validity)
    }

    fn issue_leaf(
        &self,
        mut params: CertificateParams,
        validity: Validity,
    ) -> Result<IssuedCertificate, PkiError> {
        let key = KeyPair::generate()?;
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone().into());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            certificate_pem: cert.pem(),
            certificate_der: cert.der().clone(),
            private_key_pem: Zeroizing::new(key.serialize_pem()),
            serial,
            not_after: validity.not_after,
        })
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Tether");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
}

/// A random positive 128-bit serial (RFC 5280 allows up to 20 octets).
fn random_serial() -> Result<Serial, PkiError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| PkiError::Generate("no randomness".into()))?;
    // Positive and exactly 16 octets in DER: top bit clear, next bit set.
    if let Some(first) = bytes.first_mut() {
        *first = (*first & 0x7f) | 0x40;
    }
    Ok(Serial::from_bytes(&bytes))
}

impl From<Serial> for SerialNumber {
    fn from(s: Serial) -> Self {
        SerialNumber::from_slice(s.as_bytes())
    }
}

/// A name allowed in the CN: a resource name of 1 to 63 characters of `[a-z0-9_-]` (no dot, so
/// `org.{org}.runner.{runner}` stays unambiguous).
fn is_valid_name(name: &str) -> bool {
    is_valid_path_segment(name)
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with('-')
        && !name.ends_with('-')
}
