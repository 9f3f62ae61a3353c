//! `POST /oauth/token` through the whole app (`oneshot`), with a live test issuer: the
//! fixtures here; grants and refusals in [`grants`], abuse limits and failures in [`abuse`].

mod abuse;
mod approvals;
mod grants;
mod ssh;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request as HttpRequest, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;
use crate::audit::{AuditEvent, AuditQuery};
use crate::clock::ManualClock;
use crate::identity::testissuer::TestIssuer;
use crate::identity::{CacheTimes, IssuerConfig, Verifier};
use crate::policy::{CompiledPolicy, RoleConfig};
use crate::state::AppState;
use crate::store::flaky::Flaky;
use crate::store::{GrantFilter, GrantStatus, GrantStore};
use jit_proto::api::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ID_TOKEN};

pub(super) const AUD: &str = "git-jit-test";
pub(super) const NOW: i64 = 1_700_000_000;

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

[role.approval]
approvers = [{ issuer = "corp", subjects = ["bob", "carol"] }, { issuer = "github", subjects = ["alice@example.com"] }]
min_reason = 5

[[role]]
name = "prod-two"
issuer = "corp"
repositories = ["acme/vault"]
actions = ["read"]

[role.approval]
required = 2
wait = 30
approvers = [{ issuer = "corp", subjects = ["bob", "carol", "dave"] }]

[[role]]
name = "glass"
issuer = "corp"
claims = { groups = "oncall" }
repositories = ["acme/**"]
actions = ["read", "write"]
max_ttl = 30
break_glass = true

[[role]]
name = "ci"
issuer = "github"
claims = { repository_owner = "acme", ref = "refs/heads/main" }
repositories = ["{repository}"]
actions = ["read", "write"]
"#;

pub(super) struct World {
    pub(super) iss: TestIssuer,
    pub(super) gh: TestIssuer,
    pub(super) store: Arc<Flaky>,
    pub(super) state: AppState,
    pub(super) clock: Arc<ManualClock>,
}

pub(super) async fn world_with(exchange: ExchangeConfig) -> World {
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
    let store = Arc::new(Flaky::default());
    let clock = Arc::new(ManualClock::new(NOW * 1000));
    let state =
        AppState::for_tests(store.clone(), clock.clone()).with_access(verifier, policy, exchange);
    World {
        iss,
        gh,
        store,
        state,
        clock,
    }
}

pub(super) async fn world() -> World {
    world_with(ExchangeConfig::default()).await
}

pub(super) fn app_from(state: &AppState, peer: [u8; 4]) -> Router {
    // What `into_make_service_with_connect_info` inserts for a real connection.
    crate::app(state.clone()).layer(axum::Extension(ConnectInfo(SocketAddr::from((
        peer, 40000,
    )))))
}

pub(super) fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", url_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub(super) fn url_escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) fn exchange_form(token: &str, scope: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
        ("subject_token", token),
        ("subject_token_type", TOKEN_TYPE_ID_TOKEN),
        ("scope", scope),
    ];
    pairs.extend_from_slice(extra);
    form(&pairs)
}

pub(super) async fn send(
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

pub(super) async fn post(w: &World, body: String) -> (StatusCode, Value, axum::http::HeaderMap) {
    send(app_from(&w.state, [10, 0, 0, 7]), body, &[]).await
}

pub(super) async fn audit(w: &World) -> Vec<AuditEvent> {
    w.store
        .inner
        .read_audit(&AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
}

pub(super) fn alice(w: &World) -> String {
    w.iss
        .es256(
            AUD,
            NOW,
            json!({"sub": "alice@example.com", "groups": ["engineering"]}),
        )
        .expose()
        .to_owned()
}
