//! The development issuer of `jit-broker dev`: a tiny OIDC issuer built into the broker so a
//! newcomer gets an identity without an SSO.
//!
//! It exists only in dev mode (there is no config key for it), answers only loopback
//! clients addressing it by a loopback name ([`loopback_host_only`]: a web page that rebinds
//! its own DNS name to 127.0.0.1 is refused), and holds one fresh in-memory ES256 key. Routes, under `/dev/issuer`:
//! `GET /.well-known/openid-configuration`, `GET /jwks`, `POST /device` (RFC 8628 device
//! authorization, approved at once for the developer running `jit-broker dev`, so `git jit
//! login` works without an SSO) and `POST /token`: the device-code and refresh-token grants,
//! or, without `grant_type`, a direct mint (form: `sub`, optional `email`, `groups`
//! (comma-separated), `ttl` minutes) returning `{"id_token": …, "expires_in": …}`. The broker
//! trusts it as the issuer named `dev`, with the roles of [`DevIssuer::roles`].

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Form, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jit_proto::{Action, Secret};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::{IssuerConfig, RoleConfig};

/// The path under the broker's URL where the dev issuer lives.
pub const PATH: &str = "/dev/issuer";
/// The issuer's name in the broker (the tokens' `idp`).
pub const NAME: &str = "dev";
/// The client id (and ID-token audience) of the dev issuer.
pub const CLIENT_ID: &str = "git-jit-dev";
/// Longest ID-token lifetime the dev issuer mints, in minutes.
const MAX_ID_TOKEN_MINUTES: i64 = 24 * 60;

/// Why the dev issuer could not act.
#[derive(Debug, thiserror::Error)]
pub enum DevIssuerError {
    /// Key generation failed.
    #[error("the dev issuer could not generate its key")]
    Key,
    /// Signing failed.
    #[error("the dev issuer could not sign: {0}")]
    Sign(String),
}

/// The dev issuer: its URL, one ES256 key, and the developer it vouches for.
pub struct DevIssuer {
    url: String,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
    user: String,
    /// Device codes and refresh tokens handed out (random, in memory).
    sessions: Mutex<HashSet<String>>,
}

impl DevIssuer {
    /// A dev issuer at `url` (`{broker}/dev/issuer`) with a fresh key.
    pub fn generate(url: &str) -> Result<Self, DevIssuerError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| DevIssuerError::Key)?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref(), &rng)
            .map_err(|_| DevIssuerError::Key)?;
        // An uncompressed P-256 point: 0x04 ‖ x (32 bytes) ‖ y (32 bytes).
        let point = pair.public_key().as_ref();
        let (x, y) = match point {
            [4, rest @ ..] if rest.len() == 64 => rest.split_at(32),
            _ => return Err(DevIssuerError::Key),
        };
        let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"});
        Ok(Self {
            url: url.to_owned(),
            kid,
            encoding: EncodingKey::from_ec_der(doc.as_ref()),
            jwk,
            user: "developer@localhost".to_owned(),
            sessions: Mutex::new(HashSet::new()),
        })
    }

    /// The same issuer vouching for `user` in device logins.
    pub fn for_user(mut self, user: &str) -> Self {
        self.user = user.to_owned();
        self
    }

    /// The developer device logins are approved for.
    pub fn user(&self) -> &str {
        &self.user
    }

    fn new_session(&self) -> Result<String, DevIssuerError> {
        let mut bytes = [0u8; 16];
        ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes)
            .map_err(|_| DevIssuerError::Key)?;
        let code = URL_SAFE_NO_PAD.encode(bytes);
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(code.clone());
        }
        Ok(code)
    }

    fn known_session(&self, code: &str) -> bool {
        self.sessions.lock().is_ok_and(|s| s.contains(code))
    }

    /// The issuer URL (`iss`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The public key set.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk.clone()] })
    }

    /// The OIDC discovery document.
    pub fn discovery(&self) -> Value {
        json!({
            "issuer": self.url,
            "jwks_uri": format!("{}/jwks", self.url),
            "token_endpoint": format!("{}/token", self.url),
            "device_authorization_endpoint": format!("{}/device", self.url),
            "grant_types_supported": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["id_token"],
        })
    }

    /// How the broker trusts this issuer.
    pub fn issuer_config(&self) -> IssuerConfig {
        IssuerConfig {
            client_id: Some(CLIENT_ID.to_owned()),
            algorithms: vec!["ES256".to_owned()],
            ..IssuerConfig::new(NAME, &self.url, CLIENT_ID)
        }
    }

    /// The example roles of dev mode: `dev-read` (read any repository, up to 8 h) and
    /// `dev-write` (read and write `demo/**`, up to 1 h, with a reason: a git without
    /// `wwwauth[]` cannot say which it needs, so one token must do both).
    pub fn roles() -> Vec<RoleConfig> {
        let role = |name: &str, description: &str, repo: &str, action: Action| RoleConfig {
            name: name.to_owned(),
            description: description.to_owned(),
            issuer: NAME.to_owned(),
            claims: BTreeMap::new(),
            repositories: vec![repo.to_owned()],
            actions: vec![action],
            refs: Vec::new(),
            default_ttl: None,
            max_ttl: None,
            reason_required: false,
            approval_required: false,
            approval: None,
            break_glass: false,
        };
        let mut read = role("dev-read", "read any repository", "**", Action::Read);
        read.max_ttl = Some(480);
        let mut write = role("dev-write", "push to demo/**", "demo/**", Action::Write);
        write.actions = vec![Action::Read, Action::Write];
        write.reason_required = true;
        vec![read, write]
    }

    /// Signs an ID token with `claims` added to `iss`, `aud`, `iat`, `nbf`, `exp` (those
    /// given in `claims` win, so tests can forge bad ones).
    pub fn mint(
        &self,
        claims: Map<String, Value>,
        now: i64,
        minutes: i64,
    ) -> Result<Secret, DevIssuerError> {
        let mut body = Map::new();
        body.insert("iss".into(), self.url.clone().into());
        body.insert("aud".into(), CLIENT_ID.into());
        body.insert("iat".into(), now.into());
        body.insert("nbf".into(), now.into());
        body.insert("exp".into(), (now + minutes * 60).into());
        body.extend(claims);
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &body, &self.encoding)
            .map(Secret::new)
            .map_err(|e| DevIssuerError::Sign(e.to_string()))
    }
}

/// The body of `POST /dev/issuer/token`.
#[derive(Debug, Deserialize)]
pub struct MintRequest {
    /// `urn:ietf:params:oauth:grant-type:device_code`, `refresh_token`, or absent for a mint.
    grant_type: Option<String>,
    /// The device code (device-code grant).
    device_code: Option<String>,
    /// The refresh token (refresh-token grant).
    refresh_token: Option<String>,
    /// The subject (direct mint).
    #[serde(default)]
    sub: String,
    /// An email claim.
    email: Option<String>,
    /// Comma-separated groups.
    groups: Option<String>,
    /// Lifetime in minutes (default 60).
    ttl: Option<i64>,
}

/// The dev issuer's routes (under [`PATH`]); each answers loopback clients only.
pub fn routes<S>(dev: Arc<DevIssuer>) -> Router<S> {
    Router::new()
        .route(
            &format!("{PATH}/.well-known/openid-configuration"),
            get(discovery),
        )
        .route(&format!("{PATH}/jwks"), get(jwks))
        .route(&format!("{PATH}/token"), post(mint))
        .route(&format!("{PATH}/device"), post(device))
        .layer(middleware::from_fn(loopback_host_only))
        .with_state(dev)
}

/// Whether `host` (a `Host` header or a URI authority) names the loopback interface:
/// `localhost`, an IPv4 loopback address or `[::1]`, each with or without a port. A name
/// that only resolves to 127.0.0.1 (DNS rebinding) is not one.
pub fn is_loopback_host(host: &str) -> bool {
    let bracketed = host.starts_with('[');
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, "")) => (v6, None),
            Some((v6, after)) => match after.strip_prefix(':') {
                Some(port) => (v6, Some(port)),
                None => return false,
            },
            None => return false,
        },
        None => match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    let name_ok = if bracketed {
        name.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback())
    } else {
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    });
    name_ok && port_ok
}

/// Longest part of a refused `Host` repeated in the answer, in characters.
const HOST_SHOWN: usize = 100;

/// Middleware of every route of a development broker: a request must name the loopback
/// interface in its `Host` header (and in its request target, when that is absolute), or it
/// is refused with 421 Misdirected Request. The dev broker listens on loopback only, but a web
/// page can rebind its own DNS name to 127.0.0.1 and reach it from the developer's browser;
/// such requests carry the page's name, never a loopback one.
pub async fn loopback_host_only(req: Request, next: Next) -> Response {
    let hosts: Vec<&str> = req
        .headers()
        .get_all(header::HOST)
        .iter()
        .map(|v| v.to_str().unwrap_or("(not text)"))
        .chain(req.uri().authority().map(|a| a.as_str()))
        .collect();
    match hosts.iter().find(|h| !is_loopback_host(h)) {
        None if !hosts.is_empty() => next.run(req).await,
        refused => {
            let shown: String = refused
                .map_or("(none)", |h| h)
                .chars()
                .take(HOST_SHOWN)
                .collect();
            let shown = shown.escape_debug().to_string();
            tracing::warn!(host = %shown, "dev mode: request for another host name refused (DNS rebinding?)");
            (
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this development broker answers only requests addressed to localhost, \
                     127.0.0.1 or [::1], not to host \"{shown}\" (a web page reaching it through \
                     DNS rebinding would use its own name)\n"
                ),
            )
                .into_response()
        }
    }
}

type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

fn is_loopback(peer: &Peer) -> bool {
    matches!(peer, Some(Extension(ConnectInfo(addr))) if addr.ip().is_loopback())
}

fn not_loopback() -> Response {
    (
        StatusCode::FORBIDDEN,
        "the dev issuer answers loopback clients only\n",
    )
        .into_response()
}

async fn discovery(State(dev): State<Arc<DevIssuer>>, peer: Peer) -> Response {
    if !is_loopback(&peer) {
        return not_loopback();
    }
    Json(dev.discovery()).into_response()
}

async fn jwks(State(dev): State<Arc<DevIssuer>>, peer: Peer) -> Response {
    if !is_loopback(&peer) {
        return not_loopback();
    }
    Json(dev.jwks()).into_response()
}

/// `POST /dev/issuer/device`: a device authorization that is approved at once for the
/// developer (there is nobody else on a loopback-only dev broker).
async fn device(State(dev): State<Arc<DevIssuer>>, peer: Peer) -> Response {
    if !is_loopback(&peer) {
        return not_loopback();
    }
    match dev.new_session() {
        Ok(code) => {
            tracing::warn!(user = %dev.user, "dev issuer: device login approved without a prompt (dev mode)");
            Json(json!({
                "device_code": code,
                "user_code": "DEV-MODE",
                "verification_uri": format!("{}/device", dev.url),
                "expires_in": 600,
                "interval": 1,
            }))
            .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Answers a device-code or refresh-token grant with an ID token for the developer.
fn session_tokens(dev: &DevIssuer, code: Option<&str>) -> Response {
    let oauth_error =
        |error: &str| (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response();
    if !code.is_some_and(|c| dev.known_session(c)) {
        return oauth_error("invalid_grant");
    }
    let mut claims = Map::new();
    claims.insert("sub".into(), dev.user.clone().into());
    claims.insert("email".into(), dev.user.clone().into());
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    match (dev.mint(claims, now, 60), dev.new_session()) {
        (Ok(id), Ok(refresh)) => Json(json!({
            "id_token": id.expose(),
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": 3600,
        }))
        .into_response(),
        _ => oauth_error("server_error"),
    }
}

async fn mint(
    State(dev): State<Arc<DevIssuer>>,
    peer: Peer,
    Form(req): Form<MintRequest>,
) -> Response {
    if !is_loopback(&peer) {
        return not_loopback();
    }
    match req.grant_type.as_deref() {
        None => {}
        Some("urn:ietf:params:oauth:grant-type:device_code") => {
            return session_tokens(&dev, req.device_code.as_deref());
        }
        Some("refresh_token") => return session_tokens(&dev, req.refresh_token.as_deref()),
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "unsupported_grant_type"})),
            )
                .into_response();
        }
    }
    let minutes = req.ttl.unwrap_or(60);
    if req.sub.is_empty() || !(1..=MAX_ID_TOKEN_MINUTES).contains(&minutes) {
        return (
            StatusCode::BAD_REQUEST,
            "need a non-empty sub and ttl of 1..=1440 minutes\n",
        )
            .into_response();
    }
    let mut claims = Map::new();
    claims.insert("sub".into(), req.sub.into());
    if let Some(e) = req.email {
        claims.insert("email".into(), e.into());
    }
    if let Some(g) = req.groups {
        let list: Vec<Value> = g
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Value::from)
            .collect();
        claims.insert("groups".into(), list.into());
    }
    let now = crate::clock::Clock::now(&crate::clock::SystemClock);
    match dev.mint(claims, now, minutes) {
        Ok(t) => Json(
            json!({"id_token": t.expose(), "token_type": "id_token", "expires_in": minutes * 60}),
        )
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::{Request as HttpRequest, StatusCode, header};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;
    use crate::state::AppState;

    #[test]
    fn loopback_host_names_only() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.0.0.2:1",
            "[::1]",
            "[::1]:8080",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io:8080",
            "localhost:",
            "localhost:80:80",
            "localhost:99999",
            "localhost:+80",
            "10.0.0.1:8080",
            "0.0.0.0:8080",
            "[::1",
            "[::1]x",
            "[::2]:80",
            "::1",
            "[127.0.0.1]",
            "localhost@evil.example",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    /// `(status, body)` of `req` sent to a dev broker from 127.0.0.1.
    async fn dev_answer(req: HttpRequest<Body>) -> (StatusCode, String) {
        let state = AppState::dev("http://127.0.0.1:8080", "dev@localhost").expect("dev state");
        let app = crate::app(state).layer(axum::Extension(ConnectInfo(SocketAddr::from((
            [127, 0, 0, 1],
            40000,
        )))));
        let resp = app.oneshot(req).await.expect("response");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn mint_request(host: Option<&str>) -> HttpRequest<Body> {
        let mut req = HttpRequest::post("/dev/issuer/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(h) = host {
            req = req.header(header::HOST, h);
        }
        req.body(Body::from("sub=mallory")).expect("request")
    }

    #[tokio::test]
    async fn dns_rebinding_host_names_are_refused_by_the_whole_dev_broker() {
        let (status, body) = dev_answer(mint_request(Some("rebind.evil.example:8080"))).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{body}");
        assert!(
            body.contains("not to host \"rebind.evil.example:8080\""),
            "{body}"
        );
        assert!(!body.contains("id_token"));
        let (status, _) = dev_answer(mint_request(None)).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
        let (status, body) = dev_answer(mint_request(Some("127.0.0.1:8080"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = dev_answer(mint_request(Some("localhost:8080"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // Not only the issuer: the exchange, the operations routes and the gateway too.
        for path in [
            "/healthz",
            "/.well-known/jwks.json",
            "/demo/hello.git/info/refs",
        ] {
            let req = HttpRequest::get(path)
                .header(header::HOST, "rebind.evil.example")
                .body(Body::empty())
                .expect("request");
            assert_eq!(
                dev_answer(req).await.0,
                StatusCode::MISDIRECTED_REQUEST,
                "{path}"
            );
        }
        let req = HttpRequest::post("/oauth/token")
            .header(header::HOST, "rebind.evil.example")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("grant_type=x"))
            .expect("request");
        assert_eq!(dev_answer(req).await.0, StatusCode::MISDIRECTED_REQUEST);
        // An absolute request target naming another host is refused as well.
        let req = HttpRequest::get("http://rebind.evil.example/healthz")
            .header(header::HOST, "127.0.0.1:8080")
            .body(Body::empty())
            .expect("request");
        assert_eq!(dev_answer(req).await.0, StatusCode::MISDIRECTED_REQUEST);
        // Two Host headers, one of them foreign.
        let req = HttpRequest::get("/healthz")
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::HOST, "rebind.evil.example")
            .body(Body::empty())
            .expect("request");
        assert_eq!(dev_answer(req).await.0, StatusCode::MISDIRECTED_REQUEST);
        let req = HttpRequest::get("/healthz")
            .header(header::HOST, "[::1]:8080")
            .body(Body::empty())
            .expect("request");
        assert_eq!(dev_answer(req).await.0, StatusCode::OK);
    }
}
