//! A small OIDC issuer of our own that mints CI-platform-shaped tokens (GitHub Actions,
//! GitLab CI, Kubernetes service accounts), served in-process on a free port.
//!
//! It runs on its own thread with its own tokio runtime, so it works from any test (sync or
//! async, any runtime flavour) and is shut down on drop.
//!
//! Routes (for the root issuer `BASE` and for each platform issuer `BASE/<platform>`):
//! - `GET {issuer}/.well-known/openid-configuration`, `GET {issuer}/jwks`
//! - `GET BASE/actions/token?api-version=2.0&audience=X` with `Authorization: bearer <request
//!   token>` → `{"value": "<jwt>"}`, like GitHub's `ACTIONS_ID_TOKEN_REQUEST_URL`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{Map, Value, json};

use crate::{b64url, now_unix, random_token};

/// The default `aud` of minted tokens.
pub const DEFAULT_AUDIENCE: &str = "git-jit";

/// Platform issuers served under the base URL.
pub const PLATFORMS: [&str; 3] = ["github", "gitlab", "kubernetes"];

const RSA_PEM: &str = include_str!("../fixtures/ci-issuer-rsa.TEST-ONLY.pem");
const RSA_UNPUBLISHED_PEM: &str =
    include_str!("../fixtures/ci-issuer-rsa-unpublished.TEST-ONLY.pem");

/// Which key signs a token built by [`TokenBuilder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigningKey {
    /// The published ES256 (P-256) key. The default.
    Es256,
    /// The published RS256 key.
    Rs256,
    /// An ES256 key that is never published in the JWKS.
    UnpublishedEs256,
    /// An RS256 key that is never published in the JWKS.
    UnpublishedRs256,
    /// HMAC-SHA256 with the given secret (`alg: HS256`), for algorithm-confusion tests.
    Hs256(Vec<u8>),
    /// No signature at all (`alg: none`, empty signature part).
    None,
}

struct EcKey {
    kid: String,
    pair: EcdsaKeyPair,
}

struct RsaKey {
    kid: String,
    pair: RsaKeyPair,
}

struct Keys {
    es256: EcKey,
    rs256: RsaKey,
    unpublished_es256: EcKey,
    unpublished_rs256: RsaKey,
    /// Retired keys still published (after [`CiIssuer::rotate_es256_key`] with `keep_old`).
    retired_es256: Vec<EcKey>,
}

struct Inner {
    base_url: String,
    keys: Mutex<Keys>,
    request_token: String,
    /// The claims and key `/actions/token` mints with.
    actions_template: Mutex<Option<(Map<String, Value>, SigningKey)>>,
    jwks_fetches: AtomicU64,
    rng: SystemRandom,
}

/// The running CI issuer. Cheap accessors; tokens come from [`CiIssuer::token`] and the
/// platform presets.
pub struct CiIssuer {
    inner: Arc<Inner>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for CiIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CiIssuer")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

impl CiIssuer {
    /// Starts the issuer on 127.0.0.1 with a free port, fresh ES256 keys and the RS256 fixture.
    pub async fn start() -> Result<Self> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        std_listener.set_nonblocking(true)?;
        let base_url = format!("http://{}", std_listener.local_addr()?);
        let rng = SystemRandom::new();
        let keys = Keys {
            es256: generate_ec(&rng)?,
            rs256: load_rsa(RSA_PEM)?,
            unpublished_es256: generate_ec(&rng)?,
            unpublished_rs256: load_rsa(RSA_UNPUBLISHED_PEM)?,
            retired_es256: Vec::new(),
        };
        let inner = Arc::new(Inner {
            base_url,
            keys: Mutex::new(keys),
            request_token: random_token(24),
            actions_template: Mutex::new(None),
            jwks_fetches: AtomicU64::new(0),
            rng,
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<()>>();
        let state = inner.clone();
        let thread = std::thread::Builder::new()
            .name("ci-issuer".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let _ = axum::serve(listener, router(state))
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                });
            })?;
        ready_rx.await.context("ci issuer thread died")??;
        Ok(Self {
            inner,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The root issuer URL, `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        self.inner.base_url.clone()
    }

    /// The issuer URL of a platform (`github`, `gitlab`, `kubernetes`): `BASE/<platform>`.
    /// Each has its own discovery document and the same keys.
    pub fn platform_issuer(&self, platform: &str) -> String {
        format!("{}/{platform}", self.inner.base_url)
    }

    /// The JWKS URL of the root issuer (platform issuers: `{platform_issuer}/jwks`).
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.inner.base_url)
    }

    /// How many times any JWKS was served (to test caching and refresh-on-unknown-kid).
    pub fn jwks_fetches(&self) -> u64 {
        self.inner.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The kid of the published ES256 key currently signing.
    pub fn es256_kid(&self) -> String {
        self.keys().es256.kid.clone()
    }

    /// The kid of the published RS256 key.
    pub fn rs256_kid(&self) -> String {
        self.keys().rs256.kid.clone()
    }

    /// Replaces the ES256 signing key with a fresh one. With `keep_old`, the old public key
    /// stays in the JWKS (an overlapping rotation); without, it disappears at once.
    pub fn rotate_es256_key(&self, keep_old: bool) -> Result<()> {
        let fresh = generate_ec(&self.inner.rng)?;
        let mut keys = self.keys();
        let old = std::mem::replace(&mut keys.es256, fresh);
        if keep_old {
            keys.retired_es256.push(old);
        }
        Ok(())
    }

    /// A builder with only the registered claims: `iss` (root issuer), `aud` (`git-jit`),
    /// `iat`/`nbf` (now), `exp` (now + 5 min), `jti`. Add `sub` and the rest yourself.
    pub fn token(&self) -> TokenBuilder {
        TokenBuilder::new(self.inner.clone(), self.inner.base_url.clone())
    }

    /// A GitHub Actions token for a push to `main` of `owner_repo` (e.g. `acme/api`), issued
    /// by `BASE/github`. Override claims with [`TokenBuilder::claim`] or [`TokenBuilder::git_ref`].
    pub fn github_actions(&self, owner_repo: &str) -> TokenBuilder {
        let mut b = TokenBuilder::new(self.inner.clone(), self.platform_issuer("github"));
        let claims = github_claims(owner_repo, "refs/heads/main");
        b.claims.extend(claims);
        b
    }

    /// A GitLab CI token for a pipeline on the protected branch `main` of `project_path`
    /// (e.g. `acme/api` or `group/sub/proj`), issued by `BASE/gitlab`.
    pub fn gitlab_ci(&self, project_path: &str) -> TokenBuilder {
        let mut b = TokenBuilder::new(self.inner.clone(), self.platform_issuer("gitlab"));
        b.claims.extend(gitlab_claims(project_path, "main"));
        b
    }

    /// A Kubernetes projected service-account token for `namespace`/`name`, issued by
    /// `BASE/kubernetes`. Like the API server's, its header has no `typ`.
    pub fn kubernetes_sa(&self, namespace: &str, name: &str) -> TokenBuilder {
        let mut b = TokenBuilder::new(self.inner.clone(), self.platform_issuer("kubernetes"));
        b.typ = None;
        let pod = format!("{name}-7c9d8b6f5-x2x7q");
        b.claims.insert(
            "sub".into(),
            json!(format!("system:serviceaccount:{namespace}:{name}")),
        );
        b.claims.insert(
            "kubernetes.io".into(),
            json!({
                "namespace": namespace,
                "pod": { "name": pod, "uid": "5b7c4a4e-8f7e-4a8e-9d5a-0c1e2f3a4b5c" },
                "serviceaccount": { "name": name, "uid": "0e4f1b6c-2a3d-4e5f-8a9b-1c2d3e4f5a6b" },
            }),
        );
        b
    }

    /// The value for `ACTIONS_ID_TOKEN_REQUEST_URL` (already has a query; clients append
    /// `&audience=X`, as with GitHub).
    pub fn actions_token_request_url(&self) -> String {
        format!("{}/actions/token?api-version=2.0", self.inner.base_url)
    }

    /// The value for `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
    pub fn actions_token_request_token(&self) -> String {
        self.inner.request_token.clone()
    }

    /// Sets the claims and signing key the `/actions/token` endpoint mints with (its `aud`
    /// comes from the request; GitHub itself signs RS256: use `.rs256()`).
    /// Default: [`CiIssuer::github_actions`]`("acme/api")`, ES256.
    pub fn set_actions_token(&self, template: &TokenBuilder) {
        *self
            .inner
            .actions_template
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            Some((template.claims.clone(), template.key.clone()));
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.inner
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for CiIssuer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Builds and signs one token. Every claim can be overridden or removed; header fields too.
#[derive(Clone)]
pub struct TokenBuilder {
    inner: Arc<Inner>,
    claims: Map<String, Value>,
    key: SigningKey,
    header_alg: Option<String>,
    kid: Option<Option<String>>,
    typ: Option<String>,
}

impl std::fmt::Debug for TokenBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBuilder")
            .field("claims", &self.claims)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl TokenBuilder {
    fn new(inner: Arc<Inner>, iss: String) -> Self {
        let now = now_unix();
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(iss));
        claims.insert("aud".into(), json!(DEFAULT_AUDIENCE));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(now + 300));
        claims.insert("jti".into(), json!(random_token(16)));
        Self {
            inner,
            claims,
            key: SigningKey::Es256,
            header_alg: None,
            kid: None,
            typ: Some("JWT".into()),
        }
    }

    /// Sets (or replaces) any claim.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.to_owned(), value.into());
        self
    }

    /// Removes a claim.
    pub fn without(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// `sub`
    pub fn subject(self, sub: &str) -> Self {
        self.claim("sub", sub)
    }

    /// `iss`
    pub fn iss(self, iss: &str) -> Self {
        self.claim("iss", iss)
    }

    /// `aud` as a string.
    pub fn aud(self, aud: &str) -> Self {
        self.claim("aud", aud)
    }

    /// `aud` as an array.
    pub fn auds(self, auds: &[&str]) -> Self {
        self.claim("aud", json!(auds))
    }

    /// `exp` (seconds since the epoch).
    pub fn exp(self, exp: i64) -> Self {
        self.claim("exp", exp)
    }

    /// `nbf` (seconds since the epoch).
    pub fn nbf(self, nbf: i64) -> Self {
        self.claim("nbf", nbf)
    }

    /// `iat` (seconds since the epoch).
    pub fn iat(self, iat: i64) -> Self {
        self.claim("iat", iat)
    }

    /// `exp` = now + `secs` (negative: already expired).
    pub fn expires_in(self, secs: i64) -> Self {
        self.exp(now_unix() + secs)
    }

    /// For GitHub/GitLab presets: switches the token to another ref (`refs/heads/B`,
    /// `refs/tags/T`) and rewrites `sub`, `ref`, `ref_type` (and the workflow refs) to match.
    pub fn git_ref(mut self, git_ref: &str) -> Self {
        let iss = self.claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss.ends_with("/gitlab") {
            let path = self.str_claim("project_path");
            let (ref_type, short) = split_ref(git_ref);
            let ref_type = if ref_type == "tag" { "tag" } else { "branch" };
            self.claims.extend(gitlab_claims(&path, short));
            self.claims.insert("ref_type".into(), json!(ref_type));
            self.claims.insert(
                "sub".into(),
                json!(format!(
                    "project_path:{path}:ref_type:{ref_type}:ref:{short}"
                )),
            );
        } else {
            let repo = self.str_claim("repository");
            self.claims.extend(github_claims(&repo, git_ref));
        }
        self
    }

    /// Signs with this key (default [`SigningKey::Es256`]); sets `alg` to match.
    pub fn key(mut self, key: SigningKey) -> Self {
        self.key = key;
        self
    }

    /// Signs with the published RS256 key.
    pub fn rs256(self) -> Self {
        self.key(SigningKey::Rs256)
    }

    /// Signs with a key that the JWKS never publishes (same algorithm as currently chosen).
    pub fn unpublished_key(mut self) -> Self {
        self.key = match self.key {
            SigningKey::Rs256 | SigningKey::UnpublishedRs256 => SigningKey::UnpublishedRs256,
            _ => SigningKey::UnpublishedEs256,
        };
        self
    }

    /// Overrides the header's `alg` (the signature is still made with the chosen key).
    pub fn header_alg(mut self, alg: &str) -> Self {
        self.header_alg = Some(alg.to_owned());
        self
    }

    /// Overrides the header's `kid`; `None` removes it.
    pub fn kid(mut self, kid: Option<&str>) -> Self {
        self.kid = Some(kid.map(str::to_owned));
        self
    }

    /// Overrides the header's `typ`; `None` removes it.
    pub fn typ(mut self, typ: Option<&str>) -> Self {
        self.typ = typ.map(str::to_owned);
        self
    }

    /// The claims as they will be signed.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// Signs and returns the compact JWS.
    pub fn sign(&self) -> String {
        let keys = self
            .inner
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (alg, default_kid) = match &self.key {
            SigningKey::Es256 => ("ES256", Some(keys.es256.kid.clone())),
            SigningKey::UnpublishedEs256 => ("ES256", Some(keys.unpublished_es256.kid.clone())),
            SigningKey::Rs256 => ("RS256", Some(keys.rs256.kid.clone())),
            SigningKey::UnpublishedRs256 => ("RS256", Some(keys.unpublished_rs256.kid.clone())),
            SigningKey::Hs256(_) => ("HS256", Some(keys.rs256.kid.clone())),
            SigningKey::None => ("none", None),
        };
        let mut header = Map::new();
        header.insert(
            "alg".into(),
            json!(self.header_alg.as_deref().unwrap_or(alg)),
        );
        if let Some(typ) = &self.typ {
            header.insert("typ".into(), json!(typ));
        }
        let kid = self.kid.clone().unwrap_or(default_kid);
        if let Some(kid) = kid {
            header.insert("kid".into(), json!(kid));
        }
        let input = format!(
            "{}.{}",
            b64url(Value::Object(header).to_string().as_bytes()),
            b64url(Value::Object(self.claims.clone()).to_string().as_bytes())
        );
        let rng = &self.inner.rng;
        let sig: Vec<u8> = match &self.key {
            SigningKey::Es256 => ec_sign(&keys.es256, rng, &input),
            SigningKey::UnpublishedEs256 => ec_sign(&keys.unpublished_es256, rng, &input),
            SigningKey::Rs256 => rsa_sign(&keys.rs256, rng, &input),
            SigningKey::UnpublishedRs256 => rsa_sign(&keys.unpublished_rs256, rng, &input),
            SigningKey::Hs256(secret) => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                ring::hmac::sign(&key, input.as_bytes()).as_ref().to_vec()
            }
            SigningKey::None => Vec::new(),
        };
        format!("{input}.{}", b64url(&sig))
    }

    fn str_claim(&self, name: &str) -> String {
        self.claims
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }
}

fn split_ref(git_ref: &str) -> (&str, &str) {
    if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        ("tag", tag)
    } else if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        ("branch", branch)
    } else {
        ("branch", git_ref)
    }
}

/// Stable small numbers derived from a name, for the `*_id` claims.
fn id_for(name: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut b = [0u8; 4];
    b.copy_from_slice(&digest.as_ref()[..4]);
    u64::from(u32::from_be_bytes(b) % 900_000_000) + 100_000_000
}

fn github_claims(owner_repo: &str, git_ref: &str) -> Map<String, Value> {
    let owner = owner_repo.split('/').next().unwrap_or(owner_repo);
    let (ref_type, _) = split_ref(git_ref);
    let workflow = format!("{owner_repo}/.github/workflows/deploy.yml@{git_ref}");
    let claims = json!({
        "sub": format!("repo:{owner_repo}:ref:{git_ref}"),
        "repository": owner_repo,
        "repository_id": id_for(owner_repo).to_string(),
        "repository_owner": owner,
        "repository_owner_id": id_for(owner).to_string(),
        "repository_visibility": "private",
        "ref": git_ref,
        "ref_type": ref_type,
        "ref_protected": "true",
        "sha": "2d1b5c7a9e0f4b3c8d6a1e2f3b4c5d6e7f8a9b0c",
        "event_name": "push",
        "environment": "production",
        "job_workflow_ref": workflow,
        "workflow_ref": workflow,
        "workflow": "deploy",
        "actor": "octocat",
        "actor_id": id_for("octocat").to_string(),
        "run_id": "9876543210",
        "run_number": "42",
        "run_attempt": "1",
        "runner_environment": "github-hosted",
    });
    match claims {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn gitlab_claims(project_path: &str, branch: &str) -> Map<String, Value> {
    let namespace = project_path
        .rsplit_once('/')
        .map(|(ns, _)| ns)
        .unwrap_or(project_path);
    let claims = json!({
        "sub": format!("project_path:{project_path}:ref_type:branch:ref:{branch}"),
        "namespace_id": id_for(namespace).to_string(),
        "namespace_path": namespace,
        "project_id": id_for(project_path).to_string(),
        "project_path": project_path,
        "user_id": "4242",
        "user_login": "gitlab-user",
        "user_email": "gitlab-user@example.com",
        "pipeline_id": "1234567",
        "pipeline_source": "push",
        "job_id": "7654321",
        "ref": branch,
        "ref_type": "branch",
        "ref_path": format!("refs/heads/{branch}"),
        "ref_protected": "true",
        "environment": "production",
        "environment_protected": "true",
        "runner_id": 1,
        "runner_environment": "gitlab-hosted",
    });
    match claims {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn generate_ec(rng: &SystemRandom) -> Result<EcKey> {
    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, rng)
        .map_err(|_| anyhow::anyhow!("generating a P-256 key"))?;
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), rng)
        .map_err(|e| anyhow::anyhow!("loading a P-256 key: {e}"))?;
    let kid = format!("es256-{}", &kid_hash(pair.public_key().as_ref())[..16]);
    Ok(EcKey { kid, pair })
}

fn load_rsa(pem: &str) -> Result<RsaKey> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .context("decoding the RSA fixture")?;
    let pair = RsaKeyPair::from_pkcs8(&der).map_err(|e| anyhow::anyhow!("RSA fixture: {e}"))?;
    let kid = format!("rs256-{}", &kid_hash(pair.public().as_ref())[..16]);
    Ok(RsaKey { kid, pair })
}

fn kid_hash(public: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, public);
    b64url(d.as_ref())
}

fn ec_sign(key: &EcKey, rng: &SystemRandom, input: &str) -> Vec<u8> {
    key.pair
        .sign(rng, input.as_bytes())
        .map(|s| s.as_ref().to_vec())
        // P-256 signing only fails if the system RNG fails.
        .expect("ES256 signing")
}

fn rsa_sign(key: &RsaKey, rng: &SystemRandom, input: &str) -> Vec<u8> {
    let mut sig = vec![0u8; key.pair.public().modulus_len()];
    key.pair
        .sign(
            &signature::RSA_PKCS1_SHA256,
            rng,
            input.as_bytes(),
            &mut sig,
        )
        // Fails only on a buffer of the wrong length, which is sized right above.
        .expect("RS256 signing");
    sig
}

fn ec_jwk(key: &EcKey) -> Value {
    let point = key.pair.public_key().as_ref();
    // Uncompressed SEC1 point: 0x04 || X (32 bytes) || Y (32 bytes).
    json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": key.kid,
        "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
    })
}

fn rsa_jwk(key: &RsaKey) -> Value {
    let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(key.pair.public());
    json!({
        "kty": "RSA", "alg": "RS256", "use": "sig", "kid": key.kid,
        "n": b64url(&c.n), "e": b64url(&c.e),
    })
}

fn router(state: Arc<Inner>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(root_discovery))
        .route("/jwks", get(jwks))
        .route("/actions/token", get(actions_token))
        .route(
            "/{platform}/.well-known/openid-configuration",
            get(platform_discovery),
        )
        .route("/{platform}/jwks", get(platform_jwks))
        .with_state(state)
}

fn discovery_doc(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "subject_types_supported": ["public", "pairwise"],
        "response_types_supported": ["id_token"],
        "claims_supported": ["sub", "aud", "exp", "iat", "iss", "jti", "nbf", "ref", "repository"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
        "scopes_supported": ["openid"],
    })
}

async fn root_discovery(State(s): State<Arc<Inner>>) -> Json<Value> {
    Json(discovery_doc(&s.base_url))
}

async fn platform_discovery(State(s): State<Arc<Inner>>, Path(platform): Path<String>) -> Response {
    if !PLATFORMS.contains(&platform.as_str()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(discovery_doc(&format!("{}/{platform}", s.base_url))).into_response()
}

async fn jwks(State(s): State<Arc<Inner>>) -> Json<Value> {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys = s.keys.lock().unwrap_or_else(PoisonError::into_inner);
    let mut list = vec![ec_jwk(&keys.es256), rsa_jwk(&keys.rs256)];
    list.extend(keys.retired_es256.iter().map(ec_jwk));
    Json(json!({ "keys": list }))
}

async fn platform_jwks(state: State<Arc<Inner>>, Path(platform): Path<String>) -> Response {
    if !PLATFORMS.contains(&platform.as_str()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    jwks(state).await.into_response()
}

async fn actions_token(
    State(s): State<Arc<Inner>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    if presented.as_deref() != Some(s.request_token.as_str()) {
        return (StatusCode::UNAUTHORIZED, "bad or missing request token").into_response();
    }
    let template = s
        .actions_template
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut builder = TokenBuilder::new(s.clone(), format!("{}/github", s.base_url));
    match template {
        Some((claims, key)) => {
            builder.claims = claims;
            builder.key = key;
        }
        None => builder
            .claims
            .extend(github_claims("acme/api", "refs/heads/main")),
    }
    let now = now_unix();
    builder = builder
        .iat(now)
        .nbf(now)
        .exp(now + 300)
        .claim("jti", random_token(16));
    builder = match query.get("audience") {
        Some(aud) => builder.aud(aud),
        // GitHub's default audience is the repository owner's URL.
        None => builder.aud("https://github.com/acme"),
    };
    Json(json!({ "count": 1, "value": builder.sign() })).into_response()
}
