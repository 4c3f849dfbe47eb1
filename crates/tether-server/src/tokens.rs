//! Session tokens: EdDSA-signed JWT access tokens (1 hour) with a published JWKS, and opaque
//! refresh tokens that rotate on every use; reuse of a used refresh token revokes its family.

use std::collections::HashMap;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tether_core::ErrorCode;
use tether_crypto::{OpaqueToken, TokenHash, generate_token};
use tether_store::RefreshTokenRow;
use tether_store::identity::{insert_refresh_token, revoke_refresh_family, use_refresh_token};
use zeroize::Zeroizing;

use crate::auth::{AuthVia, Principal, load_principal};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Lifetime of an access token.
pub const ACCESS_TTL_SECS: i64 = 3_600;
/// Lifetime of a refresh token.
pub const REFRESH_TTL_MS: i64 = 30 * 86_400_000;
const ISSUER: &str = "tether";

/// The signing key and the verification keys (current and retired, by `kid`).
pub struct JwtKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
}

impl JwtKeys {
    /// Builds the key set from an Ed25519 PKCS#8 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| format!("signing key: {e}"))?;
        let public = pair.public_key().as_ref().to_vec();
        let x = URL_SAFE_NO_PAD.encode(&public);
        let kid = kid_of(&public);
        let decoding =
            DecodingKey::from_ed_components(&x).map_err(|e| format!("verification key: {e}"))?;
        let jwks = serde_json::json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"
        }]});
        Ok(Self {
            encoding: EncodingKey::from_ed_der(pkcs8),
            decoding: HashMap::from([(kid.clone(), decoding)]),
            kid,
            jwks,
        })
    }

    /// Generates a new Ed25519 key, returning its PKCS#8 bytes (to be sealed and stored).
    pub fn generate_pkcs8() -> Result<Zeroizing<Vec<u8>>, String> {
        let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|e| format!("generate signing key: {e}"))?;
        Ok(Zeroizing::new(doc.as_ref().to_vec()))
    }

    /// The published JWKS document.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }
}

fn kid_of(public: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public);
    URL_SAFE_NO_PAD.encode(d.as_ref().get(..12).unwrap_or_default())
}

/// Access-token claims.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    org: String,
    iat: i64,
    exp: i64,
    jti: String,
    typ: String,
}

/// A freshly issued session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionTokens {
    /// The JWT access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// The refresh token (single use).
    pub refresh_token: String,
}

fn invalid_token() -> AppError {
    AppError::new(ErrorCode::InvalidCredentials, "the token is not valid")
}

/// Verifies an access token and loads its principal.
pub async fn verify_access_token(state: &AppState, token: &str) -> AppResult<Principal> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid_token())?;
    let key = header
        .kid
        .as_deref()
        .and_then(|k| state.jwt.decoding.get(k))
        .ok_or_else(invalid_token)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_issuer(&[ISSUER]);
    validation.validate_exp = false; // checked below against the injected clock
    let data =
        jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|_| invalid_token())?;
    let claims = data.claims;
    if claims.typ != "access" {
        return Err(invalid_token());
    }
    if claims.exp * 1000 <= state.clock.now_millis() {
        return Err(AppError::new(
            ErrorCode::TokenExpired,
            "the access token has expired",
        ));
    }
    let via = AuthVia::Session {
        token_id: claims.jti,
    };
    let p = load_principal(state, &claims.sub, via, Vec::new()).await?;
    if p.org_id != claims.org {
        return Err(invalid_token());
    }
    Ok(p)
}

fn sign_access(state: &AppState, principal_id: &str, org_id: &str) -> AppResult<String> {
    let now = state.clock.now_millis() / 1000;
    let claims = Claims {
        iss: ISSUER.into(),
        sub: principal_id.into(),
        org: org_id.into(),
        iat: now,
        exp: now + ACCESS_TTL_SECS,
        jti: tether_core::id::format_prefixed("tok", tether_core::id::fresh()),
        typ: "access".into(),
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(state.jwt.kid.clone());
    jsonwebtoken::encode(&header, &claims, &state.jwt.encoding).map_err(AppError::internal)
}

/// Issues an access token and a new refresh token, in a new family or continuing one.
pub async fn issue_session(
    state: &AppState,
    principal_id: &str,
    org_id: &str,
    family: Option<String>,
) -> AppResult<SessionTokens> {
    let access_token = sign_access(state, principal_id, org_id)?;
    let (secret, hash) = generate_token();
    let id = tether_core::id::format_prefixed("rt", tether_core::id::fresh());
    let now = state.clock.now_millis();
    let row = RefreshTokenRow {
        id: id.clone(),
        family_id: family.unwrap_or_else(|| id.clone()),
        principal_id: principal_id.into(),
        org_id: org_id.into(),
        token_hash: hash.as_bytes().to_vec(),
        created_at: now,
        expires_at: now + REFRESH_TTL_MS,
        used_at: None,
        revoked_at: None,
    };
    let mut tx = state.store.begin().await?;
    insert_refresh_token(&mut tx, &row).await?;
    tx.commit().await.map_err(AppError::internal)?;
    Ok(SessionTokens {
        access_token,
        token_type: "Bearer",
        expires_in: ACCESS_TTL_SECS,
        refresh_token: format!("{id}.{}", secret.expose_secret()),
    })
}

/// Exchanges a refresh token for a new session. A token that was already used revokes its
/// whole family (the token was stolen or replayed).
pub async fn refresh(state: &AppState, presented: &str) -> AppResult<SessionTokens> {
    let (id, secret) = presented.split_once('.').ok_or_else(invalid_token)?;
    let row = state
        .store
        .refresh_token(id)
        .await?
        .ok_or_else(invalid_token)?;
    let token = OpaqueToken::from_presented(secret).map_err(|_| invalid_token())?;
    let stored = TokenHash::from_bytes(&row.token_hash).map_err(AppError::internal)?;
    if !stored.matches(&token) {
        return Err(invalid_token());
    }
    let now = state.clock.now_millis();
    if row.revoked_at.is_some() || row.expires_at <= now {
        return Err(invalid_token());
    }
    let mut tx = state.store.begin().await?;
    if !use_refresh_token(&mut tx, id, now).await? {
        revoke_refresh_family(&mut tx, &row.family_id, now).await?;
        tx.commit().await.map_err(AppError::internal)?;
        tracing::warn!(family = %row.family_id, "refresh token reuse detected; family revoked");
        return Err(invalid_token());
    }
    tx.commit().await.map_err(AppError::internal)?;
    // The principal must still exist and be enabled.
    load_principal(
        state,
        &row.principal_id,
        AuthVia::Session {
            token_id: id.into(),
        },
        Vec::new(),
    )
    .await?;
    issue_session(state, &row.principal_id, &row.org_id, Some(row.family_id)).await
}
