//! An issuer's published keys: OIDC discovery, JWKS fetching and the key cache.
//!
//! Keys are fetched on first use and cached as parsed `DecodingKey`s by `kid`. A lookup
//! refreshes the set when it is older than [`CacheTimes::refresh_after_ms`] or when the `kid`
//! is unknown; refreshes are at most one per [`CacheTimes::min_refresh_interval_ms`] per
//! issuer, and concurrent misses wait for one shared fetch (a mutex plus a generation
//! counter). If a refresh fails, the cached keys stay in use until they are
//! [`CacheTimes::max_stale_ms`] old; after that the issuer fails closed.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::IdentityError;

/// Largest discovery document or JWKS read, in bytes.
const MAX_DOCUMENT_LEN: usize = 512 * 1024;
/// Timeout of one discovery or JWKS request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_LEN: usize = 256;

/// Timing of the key cache, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheTimes {
    /// Keys older than this are re-fetched on the next use. Default 1 h.
    pub refresh_after_ms: i64,
    /// At most one fetch per issuer within this interval. Default 10 s.
    pub min_refresh_interval_ms: i64,
    /// Keys older than this are not used when a refresh fails. Default 24 h.
    pub max_stale_ms: i64,
}

impl Default for CacheTimes {
    fn default() -> Self {
        Self {
            refresh_after_ms: 3_600_000,
            min_refresh_interval_ms: 10_000,
            max_stale_ms: 24 * 3_600_000,
        }
    }
}

/// The algorithm families whose keys are accepted (everything but HMAC).
pub(crate) fn key_families() -> [jsonwebtoken::AlgorithmFamily; 3] {
    use jsonwebtoken::AlgorithmFamily::{Ec, Ed, Rsa};
    [Rsa, Ec, Ed]
}

/// One published key and the algorithms it may verify.
pub struct VerifyKey {
    /// The parsed key.
    pub key: DecodingKey,
    /// The algorithms this key's type (and its `alg`, when published) allows.
    pub algorithms: Vec<Algorithm>,
}

/// A failed key lookup, turned into an [`IdentityError`] by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// No key with this `kid`.
    Unknown,
    /// The keys could not be fetched (and no usable copy is cached).
    Unavailable(String),
}

impl LookupError {
    pub(crate) fn into_identity_error(self, issuer: &str, kid: &str) -> IdentityError {
        match self {
            LookupError::Unknown => IdentityError::UnknownKey {
                issuer: issuer.to_owned(),
                kid: kid.to_owned(),
            },
            LookupError::Unavailable(why) => IdentityError::KeysUnavailable {
                issuer: issuer.to_owned(),
                why,
            },
        }
    }
}

/// Where the keys come from.
#[derive(Debug, Clone)]
enum Source {
    /// `{issuer}/.well-known/openid-configuration` → `jwks_uri`.
    Discovery(String),
    /// A configured JWKS URL.
    Jwks(String),
    /// Given once, never fetched.
    Fixed,
}

struct KeySet {
    keys: HashMap<String, Arc<VerifyKey>>,
    fetched_ms: i64,
    generation: u64,
}

/// The key cache of one issuer.
pub struct KeyCache {
    source: Source,
    current: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching; the last attempt's time.
    refresh: tokio::sync::Mutex<Option<i64>>,
    /// Number of fetches attempted (for tests and metrics).
    fetches: std::sync::atomic::AtomicU64,
}

impl KeyCache {
    /// A cache filled from the network: `jwks_url` if given, else discovery at `issuer`.
    pub fn remote(issuer: &str, jwks_url: Option<&str>) -> Self {
        let source = match jwks_url {
            Some(u) => Source::Jwks(u.to_owned()),
            None => Source::Discovery(issuer.to_owned()),
        };
        Self::with(source, None)
    }

    /// A cache holding the keys of `jwks` forever.
    pub fn fixed(jwks: &Value) -> Result<Self, String> {
        let keys = parse_jwks(jwks)?;
        Ok(Self::with(
            Source::Fixed,
            Some(Arc::new(KeySet {
                keys,
                fetched_ms: 0,
                generation: 1,
            })),
        ))
    }

    fn with(source: Source, set: Option<Arc<KeySet>>) -> Self {
        Self {
            source,
            current: RwLock::new(set),
            refresh: tokio::sync::Mutex::new(None),
            fetches: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many fetches were attempted.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        // A poisoned lock only means a panic elsewhere mid-swap of an Arc; the value is whole.
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn install(&self, set: KeySet) {
        let set = Some(Arc::new(set));
        match self.current.write() {
            Ok(mut g) => *g = set,
            Err(p) => *p.into_inner() = set,
        }
    }

    /// The key `kid` at `now_ms`, fetching (see the module docs) when needed.
    pub async fn get(
        &self,
        kid: &str,
        now_ms: i64,
        http: Option<&reqwest::Client>,
        times: &CacheTimes,
    ) -> Result<Arc<VerifyKey>, LookupError> {
        let seen = self.snapshot();
        let fresh = |s: &KeySet| {
            matches!(self.source, Source::Fixed) || now_ms - s.fetched_ms < times.refresh_after_ms
        };
        if let Some(set) = seen.as_deref().filter(|s| fresh(s)) {
            if let Some(k) = set.keys.get(kid) {
                return Ok(k.clone());
            }
            if matches!(self.source, Source::Fixed) {
                return Err(LookupError::Unknown);
            }
        }
        let seen_generation = seen.as_ref().map_or(0, |s| s.generation);
        let mut last_attempt = self.refresh.lock().await;
        let current = self.snapshot();
        let current_generation = current.as_ref().map_or(0, |s| s.generation);
        if current_generation != seen_generation {
            // Another request fetched while this one waited: share its result.
            return lookup(current.as_deref(), kid, now_ms, times, None);
        }
        let may_fetch = last_attempt.is_none_or(|t| now_ms - t >= times.min_refresh_interval_ms);
        let mut failure = None;
        if may_fetch {
            *last_attempt = Some(now_ms);
            self.fetches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self.fetch(http).await {
                Ok(keys) => {
                    self.install(KeySet {
                        keys,
                        fetched_ms: now_ms,
                        generation: current_generation + 1,
                    });
                    return lookup(self.snapshot().as_deref(), kid, now_ms, times, None);
                }
                Err(why) => {
                    tracing::warn!(source = ?self.source, %why, "could not refresh an issuer's keys");
                    failure = Some(why);
                }
            }
        }
        lookup(current.as_deref(), kid, now_ms, times, failure)
    }

    /// Fetches the keys once, as a refresh would (discovery, then the JWKS), without
    /// installing them: how many usable keys the issuer publishes now (`check-config
    /// --online`).
    pub async fn probe(&self, http: Option<&reqwest::Client>) -> Result<usize, String> {
        match &self.source {
            Source::Fixed => Ok(self.snapshot().map_or(0, |s| s.keys.len())),
            _ => self.fetch(http).await.map(|keys| keys.len()),
        }
    }

    async fn fetch(
        &self,
        http: Option<&reqwest::Client>,
    ) -> Result<HashMap<String, Arc<VerifyKey>>, String> {
        let http = http.ok_or("no HTTP client is configured")?;
        let jwks_url = match &self.source {
            Source::Fixed => return Err("fixed keys are never fetched".into()),
            Source::Jwks(u) => u.clone(),
            Source::Discovery(issuer) => {
                let url = format!("{issuer}/.well-known/openid-configuration");
                let doc = get_json(http, &url).await?;
                if doc.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
                    return Err(format!("{url}: 'issuer' is not {issuer:?}"));
                }
                doc.get("jwks_uri")
                    .and_then(Value::as_str)
                    .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                    .ok_or_else(|| format!("{url}: no http(s) 'jwks_uri'"))?
                    .to_owned()
            }
        };
        let jwks = get_json(http, &jwks_url).await?;
        parse_jwks(&jwks).map_err(|e| format!("{jwks_url}: {e}"))
    }
}

/// Looks `kid` up in a set that may be stale; `failure` is why a refresh just failed.
fn lookup(
    set: Option<&KeySet>,
    kid: &str,
    now_ms: i64,
    times: &CacheTimes,
    failure: Option<String>,
) -> Result<Arc<VerifyKey>, LookupError> {
    match set {
        Some(s) if now_ms - s.fetched_ms < times.max_stale_ms => {
            s.keys.get(kid).cloned().ok_or(LookupError::Unknown)
        }
        Some(_) => Err(LookupError::Unavailable(format!(
            "the cached keys are older than the allowed staleness and a refresh failed: {}",
            failure.unwrap_or_else(|| "recently; retrying shortly".into())
        ))),
        None => Err(LookupError::Unavailable(failure.unwrap_or_else(|| {
            "a recent fetch failed; retrying shortly".into()
        }))),
    }
}

/// The HTTP client used for discovery and JWKS requests.
pub(crate) fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    crate::outbound::client_builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(crate::outbound::USER_AGENT)
        .build()
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let mut resp = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("{url}: {}", without_url(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("{url}: {}", without_url(&e)))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_LEN {
            return Err(format!("{url}: larger than {MAX_DOCUMENT_LEN} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
}

/// The error and its causes (`error sending request: client error (Connect): tcp connect
/// error: Connection refused`), without the URL the caller names already.
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(&format!(" ({u})"), "");
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

/// Parses a JWKS into verification keys by `kid`. Keys without `kid`, for encryption
/// (`use` ≠ `sig`), symmetric, of unknown type, or RSA shorter than 2048 bits are skipped.
pub(crate) fn parse_jwks(jwks: &Value) -> Result<HashMap<String, Arc<VerifyKey>>, String> {
    let list = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWK set (no 'keys' array)")?;
    let mut keys = HashMap::new();
    for raw in list {
        let Some(kid) = raw.get("kid").and_then(Value::as_str) else {
            continue;
        };
        if raw
            .get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        let Some(algorithms) = key_algorithms(raw) else {
            continue;
        };
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            keys.insert(kid.to_owned(), Arc::new(VerifyKey { key, algorithms }));
        }
    }
    Ok(keys)
}

/// The algorithms a raw JWK may verify, from its `kty`/`crv` and, if present, its `alg`.
fn key_algorithms(raw: &Value) -> Option<Vec<Algorithm>> {
    use Algorithm::{ES256, ES384, EdDSA, PS256, PS384, PS512, RS256, RS384, RS512};
    let s = |k: &str| raw.get(k).and_then(Value::as_str);
    let by_type = match (s("kty")?, s("crv")) {
        ("RSA", _) => {
            let n = s("n")?;
            // base64url without padding: 4 characters per 3 bytes.
            if n.len() * 3 / 4 < MIN_RSA_MODULUS_LEN {
                return None;
            }
            vec![RS256, RS384, RS512, PS256, PS384, PS512]
        }
        ("EC", Some("P-256")) => vec![ES256],
        ("EC", Some("P-384")) => vec![ES384],
        ("OKP", Some("Ed25519")) => vec![EdDSA],
        _ => return None,
    };
    match s("alg") {
        None => Some(by_type),
        Some(a) => {
            let alg: Algorithm = a.parse().ok()?;
            by_type.contains(&alg).then(|| vec![alg])
        }
    }
}
