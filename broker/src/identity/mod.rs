//! Identity: trusted OIDC issuers (`[[issuer]]`) and the verification of the ID tokens and
//! CI-platform JWTs presented to the token exchange.
//!
//! The issuer is chosen by the token's *unverified* `iss` only (an exact string match with
//! the configured URL); nothing else is read before the signature verifies with one of that
//! issuer's published keys ([`jwks`]). The header's `typ` must be one the issuer accepts, and
//! never that of an access token (RFC 9068 `at+jwt`) or another token that is not an identity
//! token. Then `iss` (exact), `aud` (must contain the configured audience), `azp` (required
//! with several audiences, OpenID Connect Core §3.1.3.7), `exp`, `nbf`, `iat` and `auth_time`
//! (bounded NumericDates, at most [`LEEWAY_SECS`] of clock skew against the injected time)
//! are checked (`claims`). Only asymmetric algorithms are accepted, each only with a key of
//! its own type. Error messages are precise and safe: they never contain the token.

mod claims;
pub mod jwks;
mod workload;
/// A claim's value as text when it is a string, a boolean or a number (what conditions and
/// `{claim}` placeholders compare); arrays, objects and null have none.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod testissuer;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

pub use crate::config::{IssuerConfig, LoginConfig};
use crate::config::{KeyProblem as PolicyError, check_name};
pub use jwks::{CacheTimes, KeyCache};

/// Largest subject token accepted, in bytes (the wire contract's bound).
pub use jit_proto::exchange::MAX_SUBJECT_TOKEN_LEN;
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: i64 = 60;
/// Longest claim value or header field echoed in an error message.
const SHOWN_MAX: usize = 100;

/// An identity whose token verified: who, vouched for by which issuer, with which claims.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedIdentity {
    /// The trusted issuer's configured name.
    pub issuer: String,
    /// The subject (the issuer's `subject_claim`).
    pub subject: String,
    /// Every claim of the verified token.
    pub claims: Map<String, Value>,
}

/// Why a presented token was refused. Messages are safe to return to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The token is larger than [`MAX_SUBJECT_TOKEN_LEN`].
    #[error("subject_token is {0} bytes long; at most {MAX_SUBJECT_TOKEN_LEN} are accepted")]
    TooLarge(usize),
    /// Not a compact JWS with a JSON header and payload.
    #[error("subject_token is not a JWT: {0}")]
    Malformed(&'static str),
    /// No configured issuer has this exact `iss`.
    #[error("subject_token issuer {0} is not trusted by this broker")]
    UnknownIssuer(String),
    /// The header's `alg` is not allowed for the issuer.
    #[error(
        "subject_token algorithm {alg} is not accepted from issuer '{issuer}' (accepted: {allowed})"
    )]
    Algorithm {
        /// The issuer's name.
        issuer: String,
        /// The header's algorithm.
        alg: String,
        /// The accepted algorithms.
        allowed: String,
    },
    /// The header has no `kid`.
    #[error("subject_token header has no 'kid'")]
    MissingKid,
    /// No published key of the issuer has this `kid` (even after a refresh).
    #[error("subject_token was signed by key {kid} which issuer '{issuer}' does not publish")]
    UnknownKey {
        /// The issuer's name.
        issuer: String,
        /// The header's key id (shown escaped).
        kid: String,
    },
    /// The key named by `kid` is not of the type the header's `alg` needs.
    #[error("subject_token algorithm {alg} does not fit key {kid} of issuer '{issuer}'")]
    KeyMismatch {
        /// The issuer's name.
        issuer: String,
        /// The key id.
        kid: String,
        /// The header's algorithm.
        alg: String,
    },
    /// The signature does not verify, or the payload is not a JSON object.
    #[error("subject_token signature does not verify")]
    Signature,
    /// The verified `iss` is not the configured issuer URL.
    #[error("subject_token 'iss' is not the issuer '{0}'")]
    Issuer(String),
    /// `aud` does not contain the configured audience.
    #[error("subject_token audience does not include '{0}'")]
    Audience(String),
    /// The header's `typ` is not one the issuer accepts (or is missing where required).
    #[error(
        "subject_token type {typ} is not accepted from issuer '{issuer}' (accepted: {accepted})"
    )]
    TokenType {
        /// The issuer's name.
        issuer: String,
        /// The header's `typ` (shown escaped), or `(none)`.
        typ: String,
        /// The accepted types.
        accepted: String,
    },
    /// The token is of a kind that is never an identity token (an access token, a logout
    /// token…), whichever issuer signed it.
    #[error("subject_token is {what}, not an identity token (typ {typ})")]
    NotIdentityToken {
        /// The header's `typ` (shown escaped), or what else gave the kind away.
        typ: String,
        /// What kind of token it is.
        what: &'static str,
    },
    /// `aud` holds several audiences but there is no `azp`.
    #[error(
        "subject_token has several audiences but no 'azp' naming '{0}' (OpenID Connect Core 3.1.3.7)"
    )]
    MissingAzp(String),
    /// `azp` names another client.
    #[error("subject_token was issued to another client: 'azp' is {azp}, not '{expected}'")]
    AuthorizedParty {
        /// The token's `azp` (shown escaped).
        azp: String,
        /// The configured audience.
        expected: String,
    },
    /// A required time claim is missing.
    #[error("subject_token has no '{0}' claim")]
    MissingTime(&'static str),
    /// A time claim is not a NumericDate in range (refused before any arithmetic).
    #[error("subject_token '{claim}' {why}")]
    BadTime {
        /// The claim's name.
        claim: &'static str,
        /// What is wrong with it.
        why: jit_proto::time::TimeError,
    },
    /// `exp` passed more than the leeway ago.
    #[error("subject_token has expired")]
    Expired,
    /// `nbf` is further in the future than the leeway.
    #[error("subject_token is not valid yet ('nbf' is in the future)")]
    NotYetValid,
    /// `iat` (or `auth_time`) is further in the future than the leeway.
    #[error("subject_token was issued in the future ('{0}')")]
    IssuedInFuture(&'static str),
    /// The subject claim is missing or empty.
    #[error("subject_token has no usable '{0}' claim for the subject")]
    MissingSubject(String),
    /// The issuer's keys cannot be fetched and no fresh-enough copy is cached.
    #[error("the keys of issuer '{issuer}' are unavailable: {why}")]
    KeysUnavailable {
        /// The issuer's name.
        issuer: String,
        /// What failed (safe: URLs and HTTP statuses).
        why: String,
    },
}

impl IdentityError {
    /// Whether the failure is the broker's (retry later), not the token's.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, IdentityError::KeysUnavailable { .. })
    }
}

/// An escaped, shortened rendering of an untrusted string for messages.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(SHOWN_MAX).collect();
    let ellipsis = if cut.len() < s.len() { "…" } else { "" };
    format!("\"{}{ellipsis}\"", cut.escape_debug())
}

fn parse_algorithms(key: &str, names: &[String]) -> Result<Vec<Algorithm>, PolicyError> {
    let err = |problem: String| PolicyError {
        key: key.to_owned(),
        problem,
    };
    if names.is_empty() {
        return Err(err("must name at least one algorithm".into()));
    }
    let mut algs = Vec::with_capacity(names.len());
    for n in names {
        match Algorithm::from_str(n) {
            Ok(a) if jwks::key_families().contains(&a.family()) => algs.push(a),
            Ok(_) => {
                return Err(err(format!(
                    "{n} is symmetric; only asymmetric algorithms (RS*, PS*, ES256, ES384, EdDSA) are allowed"
                )));
            }
            Err(_) => return Err(err(format!("{n:?} is not a supported algorithm"))),
        }
    }
    Ok(algs)
}

fn check_url(key: &str, url: &str) -> Result<(), PolicyError> {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| {
            url.strip_prefix(p)
                .is_some_and(|r| r.is_empty() || r.starts_with([':', '/']))
        });
    if url.starts_with("https://") || loopback {
        Ok(())
    } else {
        Err(PolicyError {
            key: key.to_owned(),
            problem: format!("{url:?} must be an https:// URL (http:// only on loopback)"),
        })
    }
}

/// Checks the `[[issuer]]` entries; errors name the key (`issuer[1].algorithms`).
pub fn validate_issuers(issuers: &[IssuerConfig]) -> Result<(), PolicyError> {
    let mut names = HashMap::new();
    let mut urls = HashMap::new();
    for (i, c) in issuers.iter().enumerate() {
        let key = |f: &str| format!("issuer[{i}].{f}");
        check_name(&key("name"), &c.name)?;
        if names.insert(c.name.as_str(), i).is_some() {
            return Err(PolicyError {
                key: key("name"),
                problem: format!("duplicate issuer name {:?}", c.name),
            });
        }
        check_url(&key("issuer"), &c.issuer)?;
        if urls.insert(c.issuer.as_str(), i).is_some() {
            return Err(PolicyError {
                key: key("issuer"),
                problem: format!("issuer URL {:?} is configured twice", c.issuer),
            });
        }
        if c.audience.is_empty() {
            return Err(PolicyError {
                key: key("audience"),
                problem: "must not be empty".into(),
            });
        }
        if c.subject_claim.is_empty() {
            return Err(PolicyError {
                key: key("subject_claim"),
                problem: "must not be empty".into(),
            });
        }
        if let Some(u) = &c.jwks_url {
            check_url(&key("jwks_url"), u)?;
        }
        parse_algorithms(&key("algorithms"), &c.algorithms)?;
        claims::validate_accepted_typ(&key("accepted_typ"), &c.accepted_typ)?;
    }
    Ok(())
}

/// One trusted issuer with its key cache.
pub struct TrustedIssuer {
    config: IssuerConfig,
    algorithms: Vec<Algorithm>,
    keys: KeyCache,
}

impl TrustedIssuer {
    /// The configuration.
    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }
}

/// Verifies presented tokens against the trusted issuers.
pub struct Verifier {
    /// By exact issuer URL.
    issuers: HashMap<String, Arc<TrustedIssuer>>,
    http: Option<reqwest::Client>,
    times: CacheTimes,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::empty()
    }
}

impl Verifier {
    /// A verifier that trusts nobody.
    pub fn empty() -> Self {
        Self {
            issuers: HashMap::new(),
            http: None,
            times: CacheTimes::default(),
        }
    }

    /// A verifier for the configured issuers; their keys are fetched on first use.
    pub fn new(configs: &[IssuerConfig], times: CacheTimes) -> Result<Self, PolicyError> {
        crate::jose::install();
        validate_issuers(configs)?;
        let http = if configs.is_empty() {
            None
        } else {
            Some(jwks::http_client().map_err(|e| PolicyError {
                key: "issuer".into(),
                problem: format!("cannot build the HTTP client: {e}"),
            })?)
        };
        let mut v = Self {
            issuers: HashMap::new(),
            http,
            times,
        };
        for (i, c) in configs.iter().enumerate() {
            let algorithms = parse_algorithms(&format!("issuer[{i}].algorithms"), &c.algorithms)?;
            let keys = KeyCache::remote(&c.issuer, c.jwks_url.as_deref());
            v.insert(c.clone(), algorithms, keys);
        }
        Ok(v)
    }

    /// Adds an issuer whose keys are given, never fetched (the dev-mode issuer).
    pub fn add_static(&mut self, config: IssuerConfig, jwks: &Value) -> Result<(), PolicyError> {
        validate_issuers(std::slice::from_ref(&config))?;
        let algorithms = parse_algorithms("issuer.algorithms", &config.algorithms)?;
        let keys = KeyCache::fixed(jwks).map_err(|problem| PolicyError {
            key: "issuer.jwks".into(),
            problem,
        })?;
        self.insert(config, algorithms, keys);
        Ok(())
    }

    fn insert(&mut self, config: IssuerConfig, algorithms: Vec<Algorithm>, keys: KeyCache) {
        let url = config.issuer.clone();
        let trusted = TrustedIssuer {
            config,
            algorithms,
            keys,
        };
        self.issuers.insert(url, Arc::new(trusted));
    }

    /// Fetches every issuer's discovery document and keys once (`check-config --online`):
    /// per issuer, by name, how many keys it publishes or why they could not be fetched.
    pub async fn probe(&self) -> Vec<(String, Result<usize, String>)> {
        let mut issuers: Vec<&Arc<TrustedIssuer>> = self.issuers.values().collect();
        issuers.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        let probes = issuers.iter().map(|t| t.keys.probe(self.http.as_ref()));
        let results = futures_util::future::join_all(probes).await;
        issuers
            .iter()
            .map(|t| t.config.name.clone())
            .zip(results)
            .collect()
    }

    /// The issuer configured with this exact URL.
    pub fn issuer(&self, url: &str) -> Option<&IssuerConfig> {
        self.issuers.get(url).map(|t| &t.config)
    }

    /// The issuer configured with this name.
    pub fn issuer_named(&self, name: &str) -> Option<&IssuerConfig> {
        self.issuers
            .values()
            .map(|t| &t.config)
            .find(|c| c.name == name)
    }

    /// Verifies `token` at `now_ms` (milliseconds since the epoch).
    pub async fn verify(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<VerifiedIdentity, IdentityError> {
        if token.len() > MAX_SUBJECT_TOKEN_LEN {
            return Err(IdentityError::TooLarge(token.len()));
        }
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IdentityError::Malformed(
                "it must have three '.'-separated parts",
            ));
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| IdentityError::Malformed("its header is not a JOSE header"))?;
        // The unverified `iss` only selects whose keys to verify with.
        let unverified: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(IdentityError::Malformed("its payload is not a JSON object"))?;
        let iss = unverified
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(IdentityError::Malformed("it has no 'iss' claim"))?;
        let trusted = self
            .issuers
            .get(iss)
            .ok_or_else(|| IdentityError::UnknownIssuer(shown(iss)))?;
        let cfg = &trusted.config;
        if !trusted.algorithms.contains(&header.alg) {
            return Err(IdentityError::Algorithm {
                issuer: cfg.name.clone(),
                alg: format!("{:?}", header.alg),
                allowed: cfg.algorithms.join(", "),
            });
        }
        // The header is signed: a token refused here would be refused after verification too.
        claims::check_typ(cfg, header.typ.as_deref())?;
        let kid = header.kid.as_deref().ok_or(IdentityError::MissingKid)?;
        let key = trusted
            .keys
            .get(kid, now_ms, self.http.as_ref(), &self.times)
            .await
            .map_err(|e| e.into_identity_error(&cfg.name, &shown(kid)))?;
        if !key.algorithms.contains(&header.alg) {
            return Err(IdentityError::KeyMismatch {
                issuer: cfg.name.clone(),
                kid: shown(kid),
                alg: format!("{:?}", header.alg),
            });
        }
        let mut validation = Validation::new(header.alg);
        // Time and audience are checked below against the injected clock and exactly.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|_| IdentityError::Signature)?
            .claims;
        claims::check_claims(cfg, &claims, now_ms.div_euclid(1000))?;
        let subject = claims
            .get(&cfg.subject_claim)
            .and_then(scalar_text)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| IdentityError::MissingSubject(cfg.subject_claim.clone()))?;
        Ok(VerifiedIdentity {
            issuer: cfg.name.clone(),
            subject,
            claims,
        })
    }
}
