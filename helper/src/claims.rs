//! Reading a JWT's claims **without verifying it**, for two local purposes only: knowing when
//! the cached ID token expires (to refresh it in time) and showing who is logged in. Nothing
//! read here is trusted for a decision; the broker verifies every token it receives.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// Why a token's claims could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClaimsError {
    /// The token is not three dot-separated parts.
    #[error("not a compact JWT")]
    NotJwt,
    /// The payload is not base64url.
    #[error("JWT payload is not base64url")]
    Base64,
    /// The payload is not a JSON object with the expected claim types.
    #[error("JWT payload is not valid JSON claims: {0}")]
    Json(#[from] serde_json::Error),
}

/// The claims `git jit` displays or uses for timing. All optional: display only.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct UnverifiedClaims {
    /// Issuer.
    pub iss: Option<String>,
    /// Subject.
    pub sub: Option<String>,
    /// E-mail address, when the issuer includes it.
    pub email: Option<String>,
    /// Display name, when the issuer includes it.
    pub name: Option<String>,
    /// Preferred username, when the issuer includes it.
    pub preferred_username: Option<String>,
    /// Expiry (seconds since the epoch).
    pub exp: Option<i64>,
}

impl UnverifiedClaims {
    /// The most human name available: e-mail, preferred username, name, then subject.
    pub fn who(&self) -> &str {
        [&self.email, &self.preferred_username, &self.name, &self.sub]
            .into_iter()
            .find_map(|c| c.as_deref())
            .unwrap_or("(unknown)")
    }
}

/// Decodes the payload of a compact JWT without checking its signature.
pub fn unverified(jwt: &str) -> Result<UnverifiedClaims, ClaimsError> {
    let mut parts = jwt.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ClaimsError::NotJwt);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| ClaimsError::Base64)?;
    Ok(serde_json::from_slice(&bytes)?)
}

#[cfg(test)]
pub(crate) fn fake_jwt(claims: &serde_json::Value) -> String {
    let enc = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.sig",
        enc(br#"{"alg":"RS256"}"#),
        enc(claims.to_string().as_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_claims() {
        let jwt =
            fake_jwt(&serde_json::json!({"sub": "u1", "email": "a@x", "exp": 99, "extra": [1]}));
        let c = unverified(&jwt).expect("claims");
        assert_eq!(c.exp, Some(99));
        assert_eq!(c.who(), "a@x");
        let jwt = fake_jwt(&serde_json::json!({"sub": "u1"}));
        assert_eq!(unverified(&jwt).expect("claims").who(), "u1");
    }

    #[test]
    fn refuses_garbage() {
        assert!(matches!(unverified("a.b"), Err(ClaimsError::NotJwt)));
        assert!(matches!(unverified("a.b.c.d"), Err(ClaimsError::NotJwt)));
        assert!(matches!(unverified("a.!!!.c"), Err(ClaimsError::Base64)));
        let not_obj = format!("a.{}.c", URL_SAFE_NO_PAD.encode(b"[1]"));
        assert!(matches!(unverified(&not_obj), Err(ClaimsError::Json(_))));
        let bad_exp = fake_jwt(&serde_json::json!({"exp": "soon"}));
        assert!(unverified(&bad_exp).is_err());
    }
}
