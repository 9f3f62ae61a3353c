//! Small helpers shared by the end-to-end tests.

use anyhow::{Context, Result};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;

/// Verifies `token` against the JWKS at `jwks_uri` (picked by `kid`), checking `iss` and `aud`,
/// and returns its claims.
pub async fn verify_with_jwks(token: &str, jwks_uri: &str, iss: &str, aud: &str) -> Result<Value> {
    let jwks: JwkSet = jit_e2e::http_client()
        .get(jwks_uri)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    verify_with_set(token, &jwks, iss, aud)
}

/// Like [`verify_with_jwks`] with a JWKS already fetched.
pub fn verify_with_set(token: &str, jwks: &JwkSet, iss: &str, aud: &str) -> Result<Value> {
    let header = decode_header(token)?;
    let kid = header.kid.context("token without kid")?;
    let jwk = jwks
        .find(&kid)
        .with_context(|| format!("kid {kid} not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk)?;
    let alg = match header.alg {
        a @ (Algorithm::RS256 | Algorithm::ES256) => a,
        other => anyhow::bail!("unexpected alg {other:?}"),
    };
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[iss]);
    validation.set_audience(&[aud]);
    Ok(decode::<Value>(token, &key, &validation)?.claims)
}
