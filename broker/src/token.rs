//! Signing and verifying git-jit tokens (compact JWS, EdDSA, `typ: jit+jwt`).
//!
//! Verification here covers the signature, header, `iss`, `aud` and the time window, with
//! the time passed in. Whether the grant is still live is the store's question, asked by the
//! caller after this succeeds.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jit_proto::token::TOKEN_TYPE;
use jit_proto::{Claims, Secret};
use jsonwebtoken::{Algorithm, Header, Validation};
use sha2::Digest as _;

use crate::keys::KeyRing;

pub mod ssh;

/// Largest token accepted for verification, in bytes. Ours are well under 2 KiB.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a token was refused. Shown to clients only as a generic reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS, or too large.
    #[error("token is malformed")]
    Malformed,
    /// A header other than `alg: EdDSA`, `typ: jit+jwt`.
    #[error("token header is not accepted (alg must be EdDSA, typ jit+jwt)")]
    Header,
    /// The `kid` names no key in the ring.
    #[error("token was signed by an unknown key")]
    UnknownKey,
    /// The signature does not verify, or the claims do not parse.
    #[error("token signature or claims are invalid")]
    Invalid,
    /// `iss` is not this broker.
    #[error("token was issued by another issuer")]
    Issuer,
    /// `aud` is not the gateway audience.
    #[error("token is for another audience")]
    Audience,
    /// `exp` has passed.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// Signing failed.
    #[error("token could not be signed")]
    Sign,
}

/// Most verified tokens remembered; the memory is cleared when it is full.
const MAX_VERIFIED: usize = 16 * 1024;

/// Signs and verifies tokens with the broker's key ring.
///
/// Verified tokens are remembered by their SHA-256 (never the token itself), so a token used
/// for every request of a clone pays the signature check once; its time window is still
/// checked on every use, and liveness is the store's question on every request anyway.
#[derive(Clone)]
pub struct TokenSigner {
    keys: Arc<KeyRing>,
    issuer: Arc<str>,
    audience: Arc<str>,
    verified: Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], Claims>>>,
}

impl TokenSigner {
    /// A signer for tokens of `issuer` (the broker's URL) for `audience` (the gateway).
    pub fn new(keys: Arc<KeyRing>, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        crate::jose::install();
        Self {
            keys,
            issuer: Arc::from(issuer.into()),
            audience: Arc::from(audience.into()),
            verified: Arc::default(),
        }
    }

    /// The broker's issuer URL.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The broker's URL, shared.
    pub fn issuer_arc(&self) -> Arc<str> {
        Arc::clone(&self.issuer)
    }

    /// The gateway audience.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The key ring.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Signs `claims` with the newest key.
    pub fn sign(&self, claims: &Claims) -> Result<Secret, TokenError> {
        let key = self.keys.signer();
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid().to_owned());
        jsonwebtoken::encode(&header, claims, key.encoding())
            .map(Secret::new)
            .map_err(|_| TokenError::Sign)
    }

    /// Verifies a token's signature, header, issuer, audience and time window at `now`
    /// (seconds). No leeway: the broker's own clock made `iat`/`nbf`/`exp`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN || token.bytes().filter(|&b| b == b'.').count() != 2 {
            return Err(TokenError::Malformed);
        }
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let known = self
            .verified
            .lock()
            .ok()
            .and_then(|m| m.get(&digest).cloned());
        if let Some(claims) = known {
            return within_window(claims, now);
        }
        let claims = self.verify_signed(token, now)?;
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= MAX_VERIFIED {
                m.clear();
            }
            m.insert(digest, claims.clone());
        }
        Ok(claims)
    }

    fn verify_signed(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(TokenError::Header);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;

        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time is checked below against the injected clock, not the system's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, key.decoding(), &validation)
            .map_err(|_| TokenError::Invalid)?;
        let claims = data.claims;
        if claims.iss != *self.issuer {
            return Err(TokenError::Issuer);
        }
        if claims.aud != *self.audience {
            return Err(TokenError::Audience);
        }
        within_window(claims, now)
    }
}

fn within_window(claims: Claims, now: i64) -> Result<Claims, TokenError> {
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    if now < claims.nbf {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

/// A fresh token id: 128 random bits, base64url.
pub fn new_jti() -> Result<String, TokenError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| TokenError::Sign)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::SigningKey;
    use jit_proto::Scope;

    pub(crate) const ISS: &str = "https://broker.test";
    pub(crate) const AUD: &str = "git-jit";

    pub(crate) fn claims(now: i64, ttl: i64) -> Claims {
        Claims {
            iss: ISS.into(),
            aud: AUD.into(),
            sub: "alice@example.com".into(),
            idp: "corp".into(),
            iat: now,
            nbf: now,
            exp: now + ttl,
            jti: new_jti().expect("rng"),
            scope: Scope::parse("repo:acme/api:read").expect("scope"),
            refs: vec![],
            role: "dev".into(),
            reason: Some("fix bug".into()),
            req: None,
        }
    }

    fn signer() -> TokenSigner {
        TokenSigner::new(Arc::new(KeyRing::ephemeral().expect("key")), ISS, AUD)
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn round_trip() {
        let s = signer();
        let c = claims(1000, 600);
        let t = s.sign(&c).expect("sign");
        assert_eq!(s.verify(t.expose(), 1000), Ok(c));
    }

    #[test]
    fn rejects_alg_none() {
        let s = signer();
        let c = claims(1000, 600);
        let header =
            serde_json::json!({"alg": "none", "typ": TOKEN_TYPE, "kid": s.keys().signer().kid()});
        let forged = format!(
            "{}.{}.",
            b64(&header),
            b64(&serde_json::to_value(&c).expect("json"))
        );
        assert_eq!(s.verify(&forged, 1000), Err(TokenError::Malformed));
        let forged = format!(
            "{}.{}.AAAA",
            b64(&header),
            b64(&serde_json::to_value(&c).expect("json"))
        );
        assert_eq!(s.verify(&forged, 1000), Err(TokenError::Malformed));
    }

    #[test]
    fn rejects_hs256_signed_with_public_key() {
        let s = signer();
        let c = claims(1000, 600);
        let signer_key = s.keys().signer();
        let public = URL_SAFE_NO_PAD
            .decode(
                serde_json::to_value(signer_key.jwk()).expect("jwk")["x"]
                    .as_str()
                    .expect("x"),
            )
            .expect("b64");
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(TOKEN_TYPE.into());
        header.kid = Some(signer_key.kid().into());
        let forged = jsonwebtoken::encode(
            &header,
            &c,
            &jsonwebtoken::EncodingKey::from_secret(&public).expect("hmac key"),
        )
        .expect("encode");
        assert_eq!(s.verify(&forged, 1000), Err(TokenError::Header));
    }

    #[test]
    fn rejects_unknown_kid_and_removed_key() {
        let s = signer();
        let c = claims(1000, 600);
        let other = TokenSigner::new(Arc::new(KeyRing::ephemeral().expect("key")), ISS, AUD);
        let t = other.sign(&c).expect("sign");
        assert_eq!(s.verify(t.expose(), 1000), Err(TokenError::UnknownKey));

        // A ring of two keys, then the older one is removed from the ring.
        let (old, _) = SigningKey::generate().expect("gen");
        let (new, _) = SigningKey::generate().expect("gen");
        let old_kid = old.kid().to_owned();
        let ring = KeyRing::new(vec![old]).expect("ring");
        let t = TokenSigner::new(Arc::new(ring), ISS, AUD)
            .sign(&c)
            .expect("sign");
        let rotated = TokenSigner::new(Arc::new(KeyRing::new(vec![new]).expect("ring")), ISS, AUD);
        assert!(rotated.keys().get(&old_kid).is_none());
        assert_eq!(
            rotated.verify(t.expose(), 1000),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn rejects_tampered_payload() {
        let s = signer();
        let c = claims(1000, 600);
        let t = s.sign(&c).expect("sign");
        let parts: Vec<&str> = t.expose().split('.').collect();
        let mut evil = c.clone();
        evil.scope = Scope::parse("repo:acme/api:read,write").expect("scope");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_value(&evil).expect("json")),
            parts[2]
        );
        assert_eq!(s.verify(&forged, 1000), Err(TokenError::Invalid));
    }

    #[test]
    fn rejects_time_window() {
        let s = signer();
        let c = claims(1000, 600);
        let t = s.sign(&c).expect("sign");
        assert_eq!(s.verify(t.expose(), 1600), Err(TokenError::Expired));
        assert_eq!(s.verify(t.expose(), 5000), Err(TokenError::Expired));
        assert_eq!(s.verify(t.expose(), 999), Err(TokenError::NotYetValid));
        assert!(s.verify(t.expose(), 1599).is_ok());
    }

    /// A token signed with the broker's own key whose claims are `claims` with `patch` applied.
    fn signed_json(s: &TokenSigner, claims: &Claims, patch: &str) -> String {
        let mut body = serde_json::to_value(claims).expect("json");
        let patch: serde_json::Value = serde_json::from_str(patch).expect("patch");
        if let (Some(b), Some(p)) = (body.as_object_mut(), patch.as_object()) {
            b.extend(p.clone());
        }
        let key = s.keys().signer();
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid().to_owned());
        jsonwebtoken::encode(&header, &body, key.encoding()).expect("sign")
    }

    #[test]
    fn rejects_absurd_time_claims_even_when_signed() {
        let s = signer();
        let c = claims(1000, 600);
        for patch in [
            r#"{"exp": 9223372036854775807}"#,
            r#"{"exp": 253402300800}"#,
            r#"{"exp": 1e300}"#,
            r#"{"exp": 1600.5}"#,
            r#"{"nbf": -9223372036854775808}"#,
            r#"{"iat": -1}"#,
        ] {
            let t = signed_json(&s, &c, patch);
            assert_eq!(s.verify(&t, 1000), Err(TokenError::Invalid), "{patch}");
        }
        let at_the_bound = signed_json(&s, &c, r#"{"exp": 253402300799}"#);
        assert!(s.verify(&at_the_bound, 1000).is_ok());
    }

    #[test]
    fn rejects_wrong_iss_and_aud() {
        let s = signer();
        let mut c = claims(1000, 600);
        c.aud = "someone-else".into();
        assert_eq!(
            s.verify(s.sign(&c).expect("sign").expose(), 1000),
            Err(TokenError::Audience)
        );
        let mut c = claims(1000, 600);
        c.iss = "https://evil.test".into();
        assert_eq!(
            s.verify(s.sign(&c).expect("sign").expose(), 1000),
            Err(TokenError::Issuer)
        );
    }

    #[test]
    fn remembered_tokens_still_expire_and_tampering_is_not_remembered() {
        let s = signer();
        let c = claims(1000, 600);
        let t = s.sign(&c).expect("sign");
        assert_eq!(s.verify(t.expose(), 1000), Ok(c.clone()));
        assert_eq!(
            s.verify(t.expose(), 1001),
            Ok(c.clone()),
            "served from memory"
        );
        assert_eq!(s.verify(t.expose(), 1600), Err(TokenError::Expired));
        assert_eq!(s.verify(t.expose(), 999), Err(TokenError::NotYetValid));
        // Change one character in the middle of the signature.
        let mut forged: Vec<char> = t.expose().chars().collect();
        let i = forged.len() - 20;
        forged[i] = if forged[i] == 'A' { 'B' } else { 'A' };
        let forged: String = forged.into_iter().collect();
        assert!(
            s.verify(&forged, 1000).is_err(),
            "a different token is verified afresh"
        );
        // A token refused once is not remembered as good.
        let other = TokenSigner::new(Arc::new(KeyRing::ephemeral().expect("key")), ISS, AUD);
        let foreign = other.sign(&c).expect("sign");
        assert!(s.verify(foreign.expose(), 1000).is_err());
        assert!(s.verify(foreign.expose(), 1000).is_err());
    }

    #[test]
    fn rejects_garbage() {
        let s = signer();
        for g in [
            "",
            "a.b",
            "a.b.c",
            "....",
            &"x".repeat(MAX_TOKEN_LEN + 1),
            "ey.ey.ey",
        ] {
            assert!(s.verify(g, 1000).is_err(), "{g:?}");
        }
    }
}
