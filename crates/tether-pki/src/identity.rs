//! SPIFFE ids and strict parsing of a presented runner certificate (X509-SVID rules).

use std::fmt;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::{PkiError, TRUST_DOMAIN};

/// Longest org or runner id accepted in a SPIFFE id.
const MAX_ID_LEN: usize = 128;

/// A certificate serial number, shown as lowercase hex (the form stored in the active set).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// From the big-endian DER bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
    /// The big-endian bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// Lowercase hex, no separators.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
    /// From lowercase or uppercase hex without separators (the form [`Serial::to_hex`] writes).
    pub fn from_hex(text: &str) -> Option<Self> {
        hex::decode(text).ok().map(Self)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

/// What a valid runner certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerCertIdentity {
    /// The org id from the SPIFFE id.
    pub org_id: String,
    /// The runner id from the SPIFFE id.
    pub runner_id: String,
    /// The serial, to check against the runner's active set.
    pub serial: Serial,
    /// The subject CN (`org.{org}.runner.{runner}`), informational.
    pub common_name: String,
    /// End of validity, Unix seconds.
    pub not_after_unix: i64,
}

/// `spiffe://tether/org/{org_id}/runner/{runner_id}`, after checking both ids.
pub fn spiffe_id(org_id: &str, runner_id: &str) -> Result<String, PkiError> {
    for (field, value) in [("org_id", org_id), ("runner_id", runner_id)] {
        if !is_valid_path_segment(value) {
            return Err(PkiError::InvalidInput {
                field,
                reason: "not a valid SPIFFE path segment",
            });
        }
    }
    Ok(format!(
        "spiffe://{TRUST_DOMAIN}/org/{org_id}/runner/{runner_id}"
    ))
}

/// A SPIFFE path segment: 1 to 128 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
pub(crate) fn is_valid_path_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses `spiffe://tether/org/{org_id}/runner/{runner_id}` into its two ids.
fn parse_spiffe_id(uri: &str) -> Result<(String, String), PkiError> {
    let bad = PkiError::NotRunnerCertificate("the URI SAN is not a Tether runner SPIFFE id");
    let rest = uri
        .strip_prefix("spiffe://")
        .and_then(|r| r.strip_prefix(TRUST_DOMAIN))
        .and_then(|r| r.strip_prefix("/org/"))
        .ok_or(bad)?;
    let (org_id, runner_part) = rest.split_once('/').ok_or(PkiError::NotRunnerCertificate(
        "the URI SAN is not a Tether runner SPIFFE id",
    ))?;
    let runner_id = runner_part
        .strip_prefix("runner/")
        .ok_or(PkiError::NotRunnerCertificate(
            "the URI SAN is not a Tether runner SPIFFE id",
        ))?;
    if !is_valid_path_segment(org_id) || !is_valid_path_segment(runner_id) {
        return Err(PkiError::NotRunnerCertificate(
            "the SPIFFE id has an invalid segment",
        ));
    }
    Ok((org_id.to_owned(), runner_id.to_owned()))
}

/// Parses a presented runner certificate (DER) with the X509-SVID rules: exactly one URI SAN,
/// which is a Tether runner SPIFFE id; a leaf that is not a CA; key usage without certificate
/// or CRL signing; EKU with clientAuth.
///
/// This does not check the signature or validity period: the TLS verifier does, before this.
pub fn parse_runner_certificate(der: &[u8]) -> Result<RunnerCertIdentity, PkiError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| PkiError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(PkiError::Parse(
            "trailing bytes after the certificate".into(),
        ));
    }
    check_leaf(&cert)?;
    let uri = single_uri_san(&cert)?;
    let (org_id, runner_id) = parse_spiffe_id(uri)?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok(RunnerCertIdentity {
        org_id,
        runner_id,
        serial: Serial::from_bytes(cert.raw_serial()),
        common_name,
        not_after_unix: cert.validity().not_after.timestamp(),
    })
}

/// [`parse_runner_certificate`] over the first certificate of a PEM document.
pub fn parse_runner_certificate_pem(pem: &str) -> Result<RunnerCertIdentity, PkiError> {
    parse_runner_certificate(&pem_to_der(pem)?)
}

fn check_leaf(cert: &X509Certificate<'_>) -> Result<(), PkiError> {
    let bc = cert
        .basic_constraints()
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    if bc.is_some_and(|b| b.value.ca) {
        return Err(PkiError::NotRunnerCertificate("the certificate is a CA"));
    }
    let ku = cert
        .key_usage()
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    if let Some(ku) = ku {
        if ku.value.key_cert_sign() || ku.value.crl_sign() {
            return Err(PkiError::NotRunnerCertificate(
                "a leaf may not sign certificates",
            ));
        }
        if !ku.value.digital_signature() {
            return Err(PkiError::NotRunnerCertificate(
                "key usage lacks digitalSignature",
            ));
        }
    }
    let eku = cert
        .extended_key_usage()
        .map_err(|e| PkiError::Parse(e.to_string()))?;
    if !eku.is_some_and(|e| e.value.client_auth) {
        return Err(PkiError::NotRunnerCertificate("EKU clientAuth is missing"));
    }
    Ok(())
}

fn single_uri_san<'a>(cert: &'a X509Certificate<'_>) -> Result<&'a str, PkiError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::Parse(e.to_string()))?
        .ok_or(PkiError::NotRunnerCertificate(
            "no subject alternative name",
        ))?;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => Ok(uri),
        (None, _) => Err(PkiError::NotRunnerCertificate("no URI SAN")),
        (Some(_), Some(_)) => Err(PkiError::NotRunnerCertificate("more than one URI SAN")),
    }
}

/// The first certificate of a PEM document, as DER.
pub(crate) fn pem_to_der(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertificateAuthority, RunnerNames, Validity};
    use proptest::prelude::*;
    use rcgen::{
        CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };

    const NOW_MS: i64 = 1_800_000_000_000;

    fn ca() -> CertificateAuthority {
        CertificateAuthority::generate("test", Validity::days_from(NOW_MS, 3650).unwrap()).unwrap()
    }

    fn names() -> RunnerNames<'static> {
        RunnerNames {
            org: "acme",
            runner: "prod-1",
            org_id: "org_01abc",
            runner_id: "res_01xyz",
        }
    }

    #[test]
    fn serial_hex_round_trips() {
        let s = Serial::from_bytes(&[0x01, 0xab, 0xff]);
        assert_eq!(Serial::from_hex(&s.to_hex()), Some(s));
        assert_eq!(Serial::from_hex("abc"), None);
        assert_eq!(Serial::from_hex("zz"), None);
    }

    #[test]
    fn issued_runner_certificate_parses_back() {
        let ca = ca();
        let issued = ca
            .issue_runner(names(), Validity::days_from(NOW_MS, 90).unwrap())
            .unwrap();
        let id = parse_runner_certificate_pem(&issued.certificate_pem).unwrap();
        assert_eq!(id.org_id, "org_01abc");
        assert_eq!(id.runner_id, "res_01xyz");
        assert_eq!(id.common_name, "org.acme.runner.prod-1");
        assert_eq!(id.serial, issued.serial);
        assert_eq!(id.serial.as_bytes().len(), 16);
        assert_eq!(id.not_after_unix, issued.not_after.unix_timestamp());
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn serials_are_unique() {
        let ca = ca();
        let v = Validity::days_from(NOW_MS, 1).unwrap();
        let a = ca.issue_runner(names(), v).unwrap();
        let b = ca.issue_runner(names(), v).unwrap();
        assert_ne!(a.serial, b.serial);
    }

    #[test]
    fn ca_round_trips_through_pem_and_refuses_a_foreign_key() {
        let ca = ca();
        let again = CertificateAuthority::from_pem(ca.certificate_pem(), &ca.key_pem()).unwrap();
        let issued = again
            .issue_runner(names(), Validity::days_from(NOW_MS, 1).unwrap())
            .unwrap();
        assert!(parse_runner_certificate_pem(&issued.certificate_pem).is_ok());
        let other = KeyPair::generate().unwrap();
        assert!(matches!(
            CertificateAuthority::from_pem(ca.certificate_pem(), &other.serialize_pem()),
            Err(PkiError::KeyMismatch)
        ));
        // A leaf is not accepted as a CA.
        assert!(
            CertificateAuthority::from_pem(&issued.certificate_pem, &issued.private_key_pem)
                .is_err()
        );
    }

    #[test]
    fn bad_names_and_ids_are_refused() {
        let ca = ca();
        let v = Validity::days_from(NOW_MS, 1).unwrap();
        for bad in [
            RunnerNames {
                org: "a.b",
                ..names()
            },
            RunnerNames {
                runner: "",
                ..names()
            },
            RunnerNames {
                org_id: "..",
                ..names()
            },
            RunnerNames {
                runner_id: "a/b",
                ..names()
            },
        ] {
            assert!(ca.issue_runner(bad, v).is_err(), "{bad:?}");
        }
        assert!(Validity::from_unix_millis(10, 5).is_err());
    }

    /// Signs a leaf with arbitrary params by the CA, to forge non-conforming certificates.
    fn forge(ca: &CertificateAuthority, edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let ca_key = KeyPair::from_pem(&ca.key_pem()).unwrap();
        let issuer = Issuer::from_ca_cert_der(ca.certificate_der(), ca_key).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            "spiffe://tether/org/o1/runner/r1".try_into().unwrap(),
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.is_ca = IsCa::ExplicitNoCa;
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &issuer).unwrap().der().to_vec()
    }

    type Edit = Box<dyn FnOnce(&mut CertificateParams)>;

    #[test]
    fn spiffe_rules_are_enforced() {
        let ca = ca();
        assert!(parse_runner_certificate(&forge(&ca, |_| {})).is_ok());
        let uri = |s: &str| SanType::URI(s.try_into().unwrap());
        let cases: Vec<(&str, Edit)> = vec![
            (
                "two URI SANs",
                Box::new(move |p| {
                    p.subject_alt_names = vec![
                        uri("spiffe://tether/org/o1/runner/r1"),
                        uri("spiffe://tether/org/o2/runner/r2"),
                    ];
                }),
            ),
            ("no SAN", Box::new(|p| p.subject_alt_names.clear())),
            (
                "DNS only",
                Box::new(|p| {
                    p.subject_alt_names = vec![SanType::DnsName("x.example".try_into().unwrap())];
                }),
            ),
            (
                "other trust domain",
                Box::new(move |p| {
                    p.subject_alt_names = vec![uri("spiffe://evil/org/o1/runner/r1")];
                }),
            ),
            (
                "extra path",
                Box::new(move |p| {
                    p.subject_alt_names = vec![uri("spiffe://tether/org/o1/runner/r1/x")];
                }),
            ),
            (
                "a CA",
                Box::new(|p| {
                    p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                }),
            ),
            (
                "server auth only",
                Box::new(|p| {
                    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                }),
            ),
            ("no EKU", Box::new(|p| p.extended_key_usages.clear())),
            (
                "cert signing",
                Box::new(|p| {
                    p.key_usages.push(KeyUsagePurpose::KeyCertSign);
                }),
            ),
        ];
        for (name, edit) in cases {
            assert!(
                parse_runner_certificate(&forge(&ca, edit)).is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn server_certificate_is_not_a_runner_certificate() {
        let ca = ca();
        let v = Validity::days_from(NOW_MS, 1).unwrap();
        let server = ca.issue_server(&["localhost", "127.0.0.1"], v).unwrap();
        assert!(parse_runner_certificate(&server.certificate_der).is_err());
        assert!(ca.issue_server(&[], v).is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse_runner_certificate(&bytes);
        }

        #[test]
        fn spiffe_ids_round_trip(org in "[A-Za-z0-9_-]{1,40}", runner in "[A-Za-z0-9_-]{1,40}") {
            let id = spiffe_id(&org, &runner).unwrap();
            prop_assert_eq!(parse_spiffe_id(&id).unwrap(), (org, runner));
        }
    }
}
