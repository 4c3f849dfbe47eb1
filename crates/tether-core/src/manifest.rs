//! Manifests as clients send them: one resource as JSON, or many as multi-document YAML
//! (`tether apply -f`). Parsing refuses unknown fields, never panics, and reads YAML booleans
//! strictly (`yes`/`on` stay strings).

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ApiError, ErrorCode};
use crate::resource::{API_VERSION, Kind, Metadata, Resource};

/// At most this many documents in one manifest.
pub const MAX_DOCUMENTS: usize = 500;

/// A resource as a client sends it. `status` is ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `tether.dev/v1` (optional).
    #[serde(default)]
    pub api_version: Option<String>,
    /// The kind (required in multi-document manifests).
    #[serde(default)]
    pub kind: Option<Kind>,
    /// Name, scope, labels and an optional change message in `version.message`.
    pub metadata: Metadata,
    /// The kind's spec.
    #[serde(default)]
    pub spec: Value,
    /// Ignored on input.
    #[serde(default)]
    pub status: Option<Value>,
}

impl Manifest {
    /// Converts into the envelope for `kind`, refusing a mismatched kind or API version.
    pub fn into_resource(self, kind: Kind) -> Result<Resource, ApiError> {
        if let Some(v) = &self.api_version
            && v != API_VERSION
        {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("api_version must be {API_VERSION}"),
            ));
        }
        if self.kind.is_some_and(|k| k != kind) {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("this collection holds {kind} resources"),
            ));
        }
        Ok(Resource {
            api_version: API_VERSION.into(),
            kind,
            metadata: self.metadata,
            spec: self.spec,
            status: None,
        })
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or("invalid YAML")
        .chars()
        .take(300)
        .collect()
}

/// Parses a multi-document YAML (or JSON) manifest.
pub fn parse_manifests(body: &[u8]) -> Result<Vec<Resource>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(ErrorCode::InvalidYaml, "the manifest is not UTF-8"))?;
    let opts = serde_saphyr::options! { strict_booleans: true };
    let docs: Vec<Manifest> = serde_saphyr::from_multiple_with_options(text, opts)
        .map_err(|e| ApiError::new(ErrorCode::InvalidYaml, first_line(&e.to_string())))?;
    if docs.len() > MAX_DOCUMENTS {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("at most {MAX_DOCUMENTS} documents per manifest"),
        ));
    }
    let mut out = Vec::with_capacity(docs.len());
    for (i, d) in docs.into_iter().enumerate() {
        let kind = d.kind.ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                format!("document {}: 'kind' is required", i + 1),
            )
        })?;
        out.push(d.into_resource(kind)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_many_documents() {
        let docs = parse_manifests(b"kind: Team\nmetadata: {name: a}\n---\nkind: Environment\nmetadata: {name: b, labels: {x: y}}\nspec: {protected: yes}\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].kind, Kind::Environment);
        // Strict booleans: `yes` is a string, so a typed spec will refuse it later.
        assert_eq!(docs[1].spec["protected"], "yes");
    }

    #[test]
    fn refuses_unknown_fields_and_missing_kind() {
        assert!(parse_manifests(b"kind: Team\nmetadata: {name: a}\nextra: 1\n").is_err());
        assert!(parse_manifests(b"metadata: {name: a}\n").is_err());
        assert_eq!(
            parse_manifests(b"\xff").unwrap_err().code,
            ErrorCode::InvalidYaml
        );
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_manifests(&bytes);
        }

        #[test]
        fn never_panics_on_yaml_like_text(s in "[a-z:{}\\[\\], \\n\\-'\"&*!|>#]{0,200}") {
            let _ = parse_manifests(s.as_bytes());
        }
    }
}
