//! `POST /oauth/token` through the whole app (`oneshot`), with a live test issuer: grants,
//! every kind of refusal, audit records, rate limits, fail-closed store and audit, dev mode.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode, header};
use http_body_util::BodyExt as _;
use jit_proto::{Claims, Scope};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;
use crate::audit::{AuditEvent, AuditQuery};
use crate::clock::ManualClock;
use crate::identity::testissuer::TestIssuer;
use crate::identity::{CacheTimes, IssuerConfig, Verifier};
use crate::keys::KeyRing;
use crate::policy::{CompiledPolicy, RoleConfig};
use crate::state::Settings;
use crate::store::memory::MemoryStore;
use crate::store::{GrantFilter, GrantStatus, GrantStore, StoreError};

const AUD: &str = "git-jit-test";
const NOW: i64 = 1_700_000_000;

const ROLES: &str = r#"
[[role]]
name = "dev-read"
issuer = "corp"
repositories = ["acme/*"]
actions = ["read"]

[[role]]
name = "dev-write"
issuer = "corp"
claims = { groups = "engineering" }
repositories = ["acme/*"]
actions = ["write"]
refs = ["refs/heads/feature/**"]
reason_required = true
max_ttl = 60

[[role]]
name = "prod"
issuer = "corp"
repositories = ["acme/prod"]
actions = ["write"]
approval_required = true

[[role]]
name = "ci"
issuer = "github"
claims = { repository_owner = "acme", ref = "refs/heads/main" }
repositories = ["{repository}"]
actions = ["read", "write"]
"#;

/// A store whose audit log or whole self can be made to fail.
struct Flaky {
    inner: MemoryStore,
    audit_down: AtomicBool,
    all_down: AtomicBool,
}

impl Flaky {
    fn check(&self, audit: bool) -> Result<(), StoreError> {
        if self.all_down.load(Ordering::SeqCst) || (audit && self.audit_down.load(Ordering::SeqCst))
        {
            Err(StoreError::Unavailable("test outage".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl GrantStore for Flaky {
    async fn put(&self, g: &Grant, now_ms: i64) -> Result<(), StoreError> {
        self.check(false)?;
        self.inner.put(g, now_ms).await
    }
    async fn check(&self, c: &Claims, now_ms: i64) -> Result<GrantStatus, StoreError> {
        self.check(false)?;
        self.inner.check(c, now_ms).await
    }
    async fn status(&self, jti: &str, now_ms: i64) -> Result<GrantStatus, StoreError> {
        self.inner.status(jti, now_ms).await
    }
    async fn revoke(&self, t: &RevokeTarget, now_ms: i64) -> Result<u64, StoreError> {
        self.inner.revoke(t, now_ms).await
    }
    async fn list(&self, f: &GrantFilter, now_ms: i64) -> Result<Vec<Grant>, StoreError> {
        self.inner.list(f, now_ms).await
    }
    async fn append_audit(&self, e: &AuditEvent) -> Result<(), StoreError> {
        self.check(true)?;
        self.inner.append_audit(e).await
    }
    async fn read_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.read_audit(q).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.check(false)
    }
}

struct World {
    iss: TestIssuer,
    gh: TestIssuer,
    store: Arc<Flaky>,
    state: AppState,
}

async fn world_with(exchange: ExchangeConfig) -> World {
    let iss = TestIssuer::start().await;
    let gh = TestIssuer::start().await;
    let issuers: Vec<IssuerConfig> = vec![iss.config("corp", AUD), gh.config("github", AUD)];
    #[derive(serde::Deserialize)]
    struct Roles {
        role: Vec<RoleConfig>,
    }
    let roles: Roles = toml::from_str(ROLES).expect("roles");
    let policy = CompiledPolicy::compile(&issuers, &roles.role).expect("policy");
    let verifier = Verifier::new(&issuers, CacheTimes::default()).expect("verifier");
    let store = Arc::new(Flaky {
        inner: MemoryStore::new(1000),
        audit_down: AtomicBool::new(false),
        all_down: AtomicBool::new(false),
    });
    let settings = Settings {
        public_url: "https://broker.test".into(),
        audience: "git-jit".into(),
        subject_audience: "https://broker.test".into(),
        login_issuer: None,
        login_client_id: None,
        dev_mode: false,
    };
    let state = AppState::new(
        settings,
        KeyRing::ephemeral().expect("key"),
        store.clone(),
        Arc::new(ManualClock::new(NOW * 1000)),
    )
    .with_access(verifier, policy, exchange);
    World {
        iss,
        gh,
        store,
        state,
    }
}

async fn world() -> World {
    world_with(ExchangeConfig::default()).await
}

fn app_from(state: &AppState, peer: [u8; 4]) -> Router {
    // What `into_make_service_with_connect_info` inserts for a real connection.
    crate::app(state.clone()).layer(axum::Extension(ConnectInfo(SocketAddr::from((
        peer, 40000,
    )))))
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", url_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn url_escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn exchange_form(token: &str, scope: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
        ("subject_token", token),
        ("subject_token_type", TOKEN_TYPE_ID_TOKEN),
        ("scope", scope),
    ];
    pairs.extend_from_slice(extra);
    form(&pairs)
}

async fn send(
    app: Router,
    body: String,
    headers: &[(&str, &str)],
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let mut req = HttpRequest::post("/oauth/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::USER_AGENT, "git-credential-jit/0.1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json, headers)
}

async fn post(w: &World, body: String) -> (StatusCode, Value, axum::http::HeaderMap) {
    send(app_from(&w.state, [10, 0, 0, 7]), body, &[]).await
}

async fn audit(w: &World) -> Vec<AuditEvent> {
    w.store
        .inner
        .read_audit(&AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
}

fn alice(w: &World) -> String {
    w.iss
        .es256(
            AUD,
            NOW,
            json!({"sub": "alice@example.com", "groups": ["engineering"]}),
        )
        .expose()
        .to_owned()
}

#[tokio::test]
async fn grant_is_signed_stored_audited_and_exact() {
    let w = world().await;
    let t = alice(&w);
    let body = exchange_form(
        &t,
        "repo:acme/api:write",
        &[("reason", "fix CI"), ("ttl", "30m")],
    );
    let (status, json, headers) = post(&w, body).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(json["token_type"], "Bearer");
    assert_eq!(json["issued_token_type"], TOKEN_TYPE_ACCESS_TOKEN);
    assert_eq!(json["expires_in"], 1800);
    assert_eq!(json["scope"], "repo:acme/api:write");
    let token = json["access_token"].as_str().expect("token");
    let claims = w
        .state
        .signer
        .verify(token, NOW)
        .expect("broker token verifies");
    assert_eq!(claims.sub, "alice@example.com");
    assert_eq!(claims.idp, "corp");
    assert_eq!(claims.role, "dev-write");
    assert_eq!(
        claims.scope,
        Scope::parse("repo:acme/api:write").expect("scope")
    );
    assert_eq!(
        claims.refs.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        ["refs/heads/feature/**"]
    );
    assert_eq!(claims.reason.as_deref(), Some("fix CI"));
    assert_eq!((claims.iat, claims.exp), (NOW, NOW + 1800));
    assert_eq!(json["jti"], claims.jti.as_str());
    assert!(matches!(
        w.state.store.check(&claims, NOW * 1000).await,
        Ok(GrantStatus::Live(_))
    ));

    let events = audit(&w).await;
    let issued: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.event == "grant.issued")
        .collect();
    assert_eq!(issued.len(), 1);
    let e = issued[0];
    assert_eq!(e.jti.as_deref(), Some(claims.jti.as_str()));
    assert_eq!(e.subject.as_deref(), Some("alice@example.com"));
    assert_eq!(e.idp.as_deref(), Some("corp"));
    assert_eq!(e.role.as_deref(), Some("dev-write"));
    assert_eq!(e.client.as_deref(), Some("10.0.0.7"));
    assert_eq!(e.user_agent.as_deref(), Some("git-credential-jit/0.1"));
    assert_eq!(e.reason.as_deref(), Some("fix CI"));
    assert_eq!(e.data["claims"], json!({"groups": ["engineering"]}));
    assert_eq!(e.data["ttl_minutes"], 30);
    let all = serde_json::to_string(&events).expect("json");
    assert!(
        !all.contains(&t) && !all.contains(token),
        "no token in the audit trail"
    );
}

#[tokio::test]
async fn github_job_gets_its_own_repository_only() {
    let w = world().await;
    let claims = json!({"sub": "repo:acme/api:ref:refs/heads/main", "repository": "acme/api",
                        "repository_owner": "acme", "ref": "refs/heads/main"});
    let t = w.gh.rs256(AUD, NOW, claims.clone());
    let (status, json, _) = post(
        &w,
        exchange_form(t.expose(), "repo:acme/api:read,write", &[]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, json, _) = post(&w, exchange_form(t.expose(), "repo:acme/web:read", &[])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json["error"], "invalid_scope");
    assert_eq!(
        json["error_description"],
        "repository 'acme/web' does not match any of role 'ci' patterns: {repository} (= acme/api)"
    );
}

#[tokio::test]
async fn refusals_are_precise_audited_and_change_nothing() {
    let w = world().await;
    let t = alice(&w);
    let bob = w
        .iss
        .es256(AUD, NOW, json!({"sub": "bob", "groups": ["sales"]}))
        .expose()
        .to_owned();
    let cases: Vec<(String, StatusCode, &str, &str)> = vec![
        (
            exchange_form(&bob, "repo:acme/api:write", &[("reason", "x")]),
            StatusCode::FORBIDDEN,
            "access_denied",
            "role 'dev-write': claim 'groups' = [\"sales\"] does not match 'engineering'",
        ),
        (
            exchange_form(&t, "repo:acme/api:write", &[]),
            StatusCode::FORBIDDEN,
            "access_denied",
            "role 'dev-write' requires a reason",
        ),
        (
            exchange_form(&t, "repo:acme/api:write", &[("reason", "x"), ("ttl", "2h")]),
            StatusCode::FORBIDDEN,
            "access_denied",
            "role 'dev-write': a lifetime of 120 minutes exceeds its maximum of 60 minutes",
        ),
        (
            exchange_form(&t, "repo:acme/prod:write", &[("role", "prod")]),
            StatusCode::FORBIDDEN,
            "access_denied",
            "role 'prod' requires approval by a person, which is not available in this version of git-jit",
        ),
        (
            exchange_form(
                &t,
                "repo:acme/api:write",
                &[
                    ("reason", "x"),
                    ("refs", "refs/heads/main"),
                    ("role", "dev-write"),
                ],
            ),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "role 'dev-write': ref pattern 'refs/heads/main' is not within the role's refs: refs/heads/feature/**",
        ),
        (
            exchange_form(&t, "repo:acme/api:read", &[("role", "nope")]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "no role is named 'nope'",
        ),
        (
            exchange_form(&t, "repo:acme/../x:read", &[]),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope \"repo:acme/../x:read\" is invalid",
        ),
        (
            exchange_form(&t, "repo:acme/a:read repo:acme/b:read", &[]),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "exactly one repo: scope",
        ),
        (
            exchange_form(&t, "", &[]),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "a scope is required",
        ),
        (
            exchange_form(&t, "repo:acme/api:read", &[("ttl", "soon")]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "ttl \"soon\"",
        ),
        (
            exchange_form(&t, "repo:acme/api:read", &[("refs", "heads/x")]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "must start with 'refs/'",
        ),
        (
            exchange_form("not.a.jwt", "repo:acme/api:read", &[]),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "subject_token is not a JWT",
        ),
        (
            exchange_form(
                w.iss.es256("other", NOW, json!({"sub": "a"})).expose(),
                "repo:acme/api:read",
                &[],
            ),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "subject_token audience does not include 'git-jit-test'",
        ),
        (
            form(&[("grant_type", "client_credentials")]),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be",
        ),
        (
            form(&[
                ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
                ("subject_token", &t),
                ("scope", "repo:acme/api:read"),
            ]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "subject_token_type must be",
        ),
        (
            form(&[
                ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
                ("scope", "repo:acme/api:read"),
            ]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "missing form parameter 'subject_token'",
        ),
        (
            exchange_form(
                &"x".repeat(MAX_SUBJECT_TOKEN_LEN + 1),
                "repo:acme/api:read",
                &[],
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "subject_token is larger than 16384 bytes",
        ),
    ];
    let n = cases.len();
    for (body, status, code, needle) in cases {
        let (got, json, headers) = post(&w, body).await;
        assert_eq!(got, status, "{json}");
        assert_eq!(json["error"], code, "{json}");
        let d = json["error_description"].as_str().unwrap_or_default();
        assert!(d.contains(needle), "{d:?} lacks {needle:?}");
        assert!(!d.contains(&t), "the token is never echoed");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    }
    let grants = w
        .store
        .list(&GrantFilter::default(), NOW * 1000)
        .await
        .expect("list");
    assert!(grants.is_empty(), "refusals change no grant");
    let events = audit(&w).await;
    assert_eq!(events.len(), n, "every refusal is audited");
    assert!(
        events
            .iter()
            .all(|e| e.event == "grant.denied" && e.denial.is_some())
    );
    let first = &events[0];
    assert_eq!(first.subject.as_deref(), Some("bob"));
    assert_eq!(first.scope.as_deref(), Some("repo:acme/api:write"));
    assert_eq!(first.client.as_deref(), Some("10.0.0.7"));
}

#[tokio::test]
async fn oversized_bodies_and_wrong_content_types_are_refused() {
    let w = world().await;
    let body = exchange_form(&"x".repeat(70 * 1024), "repo:acme/api:read", &[]);
    let (status, json, _) = post(&w, body.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{json}");
    let len = body.len().to_string();
    let (status, _, _) = send(
        app_from(&w.state, [10, 0, 0, 7]),
        body,
        &[("content-length", &len)],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let req = HttpRequest::post("/oauth/token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .expect("request");
    let resp = app_from(&w.state, [10, 0, 0, 7])
        .oneshot(req)
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn identities_and_clients_are_rate_limited() {
    let mut config = ExchangeConfig::default();
    config.rate_limit.identity_burst = 2;
    config.rate_limit.identity_per_minute = 1;
    config.rate_limit.client_burst = 5;
    config.rate_limit.client_per_minute = 1;
    config.trust_forwarded_for = true;
    let w = world_with(config).await;
    let t = alice(&w);
    let body = || exchange_form(&t, "repo:acme/api:read", &[]);
    let app = || app_from(&w.state, [10, 0, 0, 7]);
    for _ in 0..2 {
        assert_eq!(
            send(app(), body(), &[("x-forwarded-for", "192.0.2.1")])
                .await
                .0,
            StatusCode::OK
        );
    }
    // The same identity from another address is still the same identity.
    let (status, json, headers) = send(app(), body(), &[("x-forwarded-for", "192.0.2.2")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
    assert_eq!(headers[header::RETRY_AFTER], "60");
    assert!(audit(&w).await.iter().any(|e| e.event == "grant.denied" && e.subject.as_deref() == Some("alice@example.com")));
    // Per client address, before any verification.
    for _ in 0..3 {
        assert_ne!(
            send(app(), form(&[]), &[("x-forwarded-for", "192.0.2.1")])
                .await
                .0,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    let (status, _, _) = send(
        app(),
        form(&[]),
        &[("x-forwarded-for", "10.9.9.9, 192.0.2.1")],
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the last X-Forwarded-For entry is the client"
    );
    let (status, _, _) = send(app(), form(&[]), &[("x-forwarded-for", "192.0.2.3")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn forwarded_for_is_ignored_unless_trusted() {
    let w = world().await;
    let t = alice(&w);
    let (status, _, _) = send(
        app_from(&w.state, [10, 0, 0, 8]),
        exchange_form(&t, "repo:acme/api:read", &[]),
        &[("x-forwarded-for", "192.0.2.1")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let issued = audit(&w).await;
    assert_eq!(issued[0].client.as_deref(), Some("10.0.0.8"));
}

#[tokio::test]
async fn an_unaudited_grant_is_taken_back() {
    let w = world().await;
    w.store.audit_down.store(true, Ordering::SeqCst);
    let (status, json, _) = post(&w, exchange_form(&alice(&w), "repo:acme/api:read", &[])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["error"], "temporarily_unavailable");
    let grants = w
        .store
        .list(&GrantFilter::default(), NOW * 1000)
        .await
        .expect("list");
    assert!(grants.is_empty(), "the grant was revoked");
}

#[tokio::test]
async fn a_store_outage_fails_closed() {
    let w = world().await;
    w.store.all_down.store(true, Ordering::SeqCst);
    let (status, json, headers) =
        post(&w, exchange_form(&alice(&w), "repo:acme/api:read", &[])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["error"], "temporarily_unavailable");
    assert!(headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn an_unreachable_issuer_is_a_503_not_a_bad_token() {
    let w = world().await;
    w.iss.set_failing(true);
    let (status, json, _) = post(&w, exchange_form(&alice(&w), "repo:acme/api:read", &[])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
    assert_eq!(json["error"], "temporarily_unavailable");
}

#[tokio::test]
async fn dev_mode_mints_identities_for_loopback_only() {
    let state = AppState::dev("http://127.0.0.1:8080").expect("dev state");
    let mint = |peer: [u8; 4]| {
        let req = HttpRequest::post("/dev/issuer/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("sub=alice%40example.com&groups=eng"))
            .expect("request");
        app_from(&state, peer).oneshot(req)
    };
    assert_eq!(
        mint([192, 0, 2, 1]).await.expect("resp").status(),
        StatusCode::FORBIDDEN
    );
    let resp = mint([127, 0, 0, 1]).await.expect("resp");
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let json: Value = serde_json::from_slice(&bytes).expect("json");
    let id_token = json["id_token"].as_str().expect("id_token");
    let app = || app_from(&state, [127, 0, 0, 1]);
    let (status, json, _) = send(
        app(),
        exchange_form(id_token, "repo:anything/here:read", &[]),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, json, _) = send(
        app(),
        exchange_form(id_token, "repo:demo/x:write", &[("reason", "try")]),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, _, _) = send(
        app(),
        exchange_form(id_token, "repo:acme/x:write", &[("reason", "try")]),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        state.settings.login_client_id.as_deref(),
        Some(crate::devissuer::CLIENT_ID)
    );
    // Outside dev mode the routes do not exist.
    let w = world().await;
    let req = HttpRequest::get("/dev/issuer/jwks")
        .body(Body::empty())
        .expect("request");
    let resp = app_from(&w.state, [127, 0, 0, 1])
        .oneshot(req)
        .await
        .expect("resp");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
