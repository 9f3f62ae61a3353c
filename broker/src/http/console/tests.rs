//! The console's handlers through `oneshot`: headers, sessions, CSRF, pages, streams.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt as _;
use jit_proto::{Claims, Scope};
use tower::ServiceExt as _;

use super::*;
use crate::audit::AuditQuery;
use crate::clock::ManualClock;
use crate::store::memory::MemoryStore;
use crate::store::requests_suite::request;
use crate::store::suite::SuiteTime;
use crate::store::{Grant, GrantStatus, GrantStore};
use crate::token::new_jti;

const NOW: i64 = 1_700_000_000;
const ORIGIN: &str = "https://broker.test";

struct World {
    app: Router,
    console: Console,
    store: Arc<MemoryStore>,
    state: AppState,
}

fn world() -> World {
    world_of(|s| s)
}

/// A world whose state `f` has set up further (roles, admins).
fn world_of(f: impl FnOnce(AppState) -> AppState) -> World {
    let store = Arc::new(MemoryStore::new(1000));
    let clock = Arc::new(ManualClock::new(NOW * 1000));
    let state = f(AppState::for_tests(store.clone(), clock));
    let (console, app) = console_app(&state);
    World {
        app,
        console,
        store,
        state,
    }
}

/// The console of `state` and its router, as one client address sees it.
fn console_app(state: &AppState) -> (Console, Router) {
    let console = Console::new(state);
    let app = router::<()>(console.clone()).layer(axum::Extension(ConnectInfo(SocketAddr::from(
        ([10, 0, 0, 9], 4000),
    ))));
    (console, app)
}

/// The console of another replica: its own process state, the same store.
fn replica(w: &World) -> World {
    let clock = Arc::new(ManualClock::new(NOW * 1000));
    let state = AppState::for_tests(w.store.clone(), clock);
    let (console, app) = console_app(&state);
    World {
        app,
        console,
        store: w.store.clone(),
        state,
    }
}

/// A signed-in admin: the session cookie and the CSRF token.
async fn sign_in(w: &World) -> (String, String) {
    sign_in_as(w, "sec-admin@example.com", true).await
}

/// A signed-in person, an admin or (`admin` false) an approver.
async fn sign_in_as(w: &World, subject: &str, admin: bool) -> (String, String) {
    session_on(&w.console, subject, admin).await
}

/// A session on `console`: the cookie and the CSRF token.
async fn session_on(console: &Console, subject: &str, admin: bool) -> (String, String) {
    let who = Who {
        subject: subject.into(),
        idp: "corp".into(),
        claims: serde_json::Map::new(),
        iat: Some(NOW),
        admin,
    };
    let id = console.sessions.create(who).await.expect("session");
    let csrf = console
        .sessions
        .get(&id)
        .await
        .expect("store")
        .expect("live")
        .csrf;
    (format!("__Host-jit_console={id}"), csrf)
}

async fn grant(w: &World, sub: &str, repo: &str) -> (Claims, String) {
    let claims = Claims {
        iss: "https://broker.test".into(),
        aud: "git-jit".into(),
        sub: sub.into(),
        idp: "corp".into(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 600,
        jti: new_jti().expect("rng"),
        scope: Scope::parse(&format!("repo:{repo}:read")).expect("scope"),
        refs: vec![],
        role: "dev".into(),
        reason: Some("INC-7".into()),
        req: None,
    };
    w.store
        .put(&Grant::from_claims(&claims, NOW * 1000 - 1), NOW * 1000)
        .await
        .expect("put");
    let token = w
        .state
        .signer
        .sign(&claims)
        .expect("sign")
        .expose()
        .to_owned();
    (claims, token)
}

async fn live(w: &World, c: &Claims) -> bool {
    matches!(
        w.store.check(c, NOW * 1000).await.expect("check"),
        GrantStatus::Live(_)
    )
}

async fn send(
    w: &World,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    form: Option<&[(&str, &str)]>,
) -> (StatusCode, HeaderMap, String) {
    send_to(&w.app, method, uri, headers, form).await
}

/// [`send`] to any console router.
async fn send_to(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    form: Option<&[(&str, &str)]>,
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = match form {
        Some(pairs) => {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            let mut s = openidconnect::url::form_urlencoded::Serializer::new(String::new());
            s.extend_pairs(pairs);
            Body::from(s.finish())
        }
        None => Body::empty(),
    };
    let resp = app
        .clone()
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

async fn events(w: &World, kind: &str) -> Vec<crate::audit::AuditEvent> {
    let q = AuditQuery {
        event: Some(kind.into()),
        limit: 100,
        ..Default::default()
    };
    w.store.read_audit(&q).await.expect("audit")
}

fn assert_secure(h: &HeaderMap) {
    assert_eq!(h[header::CONTENT_SECURITY_POLICY], crate::console::CSP);
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let w = world();
    let (s, h, body) = send(&w, "GET", "/console", &[], None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Sign in with your company account"), "{body}");
    assert_secure(&h);
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    let (s, h, _) = send(&w, "GET", "/console/nothing/here", &[], None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_secure(&h);
    let css = &assets::assets().css.name;
    let (s, h, body) = send(&w, "GET", &format!("/console/assets/{css}"), &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert_secure(&h);
    assert!(
        h[header::CACHE_CONTROL]
            .to_str()
            .expect("ascii")
            .contains("immutable")
    );
    assert!(body.contains(":root"));
    // No inline script anywhere: the CSP would block it, and the page must not need it.
    let (_, _, page) = send(&w, "GET", "/console", &[], None).await;
    assert!(!page.contains("<script>"), "{page}");
    assert!(!page.contains("style="), "{page}");
}

#[tokio::test]
async fn the_now_page_lists_live_grants_by_jti_never_by_token() {
    let w = world();
    let (alice, token) = grant(&w, "alice@example.com", "acme/api").await;
    grant(&w, "bob@example.com", "acme/web").await;
    let (cookie, _) = sign_in(&w).await;
    let (s, h, body) = send(&w, "GET", "/console", &[("cookie", &cookie)], None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_secure(&h);
    assert!(body.contains(&alice.jti), "{body}");
    assert!(body.contains("bob@example.com"));
    assert!(body.contains("INC-7"));
    assert!(!body.contains(&token), "a token was rendered");
    // Filtered by query string (no script needed).
    let (_, _, body) = send(
        &w,
        "GET",
        "/console?subject=bob%40example.com",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert!(!body.contains("alice@example.com"), "{body}");
    assert!(body.contains("Revoke every grant of subject bob@example.com"));
    let listed = events(&w, "admin.grants").await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].subject.as_deref(), Some("sec-admin@example.com"));
    let (s, _, body) = send(
        &w,
        "GET",
        "/console?repo=..%2Fetc",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("repository:"), "{body}");
}

#[tokio::test]
async fn revoking_one_grant_ends_it_and_is_audited_with_the_admin() {
    let w = world();
    let (alice, _) = grant(&w, "alice@example.com", "acme/api").await;
    let (bob, _) = grant(&w, "bob@example.com", "acme/api").await;
    let (cookie, csrf) = sign_in(&w).await;
    let form = [
        ("csrf", csrf.as_str()),
        ("by", "jti"),
        ("value", alice.jti.as_str()),
        ("reason", "laptop stolen"),
    ];
    // As Chromium sends it from a no-referrer page.
    let h = [
        ("cookie", cookie.as_str()),
        ("origin", "null"),
        ("sec-fetch-site", "same-origin"),
    ];
    let (s, _, body) = send(&w, "POST", "/console/revoke", &h, Some(&form)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("at most 1 live grant ended"), "{body}");
    assert!(!live(&w, &alice).await);
    assert!(live(&w, &bob).await);
    let revoked = events(&w, "grant.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].subject.as_deref(), Some("sec-admin@example.com"));
    assert_eq!(revoked[0].jti.as_deref(), Some(alice.jti.as_str()));
    assert_eq!(revoked[0].reason.as_deref(), Some("laptop stolen"));
    // A reason is required, as on the API.
    let form = [
        ("csrf", csrf.as_str()),
        ("by", "jti"),
        ("value", bob.jti.as_str()),
    ];
    let (s, _, body) = send(&w, "POST", "/console/revoke", &h, Some(&form)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("a reason is required"), "{body}");
    assert!(live(&w, &bob).await);
}

#[tokio::test]
async fn forged_posts_are_refused() {
    let w = world();
    let (alice, _) = grant(&w, "alice@example.com", "acme/api").await;
    let (cookie, csrf) = sign_in(&w).await;
    let (_, other_csrf) = sign_in(&w).await;
    let form = |token: &'static str| {
        let t: &str = match token {
            "mine" => csrf.as_str(),
            "other" => other_csrf.as_str(),
            _ => "",
        };
        vec![
            ("csrf", t.to_owned()),
            ("by", "jti".to_owned()),
            ("value", alice.jti.clone()),
            ("reason", "x".to_owned()),
        ]
    };
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 8] = [
        (&[("origin", ORIGIN)], "", "CSRF token does not match"),
        (&[("origin", ORIGIN)], "other", "CSRF token does not match"),
        (
            &[("origin", "https://evil.test")],
            "mine",
            "from another site (Origin)",
        ),
        (
            &[("sec-fetch-site", "cross-site")],
            "mine",
            "(Sec-Fetch-Site)",
        ),
        (&[("origin", "null")], "mine", "from another site (Origin)"),
        (
            &[
                ("origin", "https://evil.test"),
                ("sec-fetch-site", "same-origin"),
            ],
            "mine",
            "from another site (Origin)",
        ),
        (
            &[("origin", "null"), ("sec-fetch-site", "same-site")],
            "mine",
            "(Sec-Fetch-Site)",
        ),
        (&[], "mine", "no Origin"),
    ];
    for (extra, token, why) in cases {
        let mut h = vec![("cookie", cookie.as_str())];
        h.extend_from_slice(extra);
        let f = form(token);
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (s, hd, body) = send(&w, "POST", "/console/revoke", &h, Some(&pairs)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{extra:?} {token}: {body}");
        assert!(body.contains(why), "{extra:?} {token}: {body}");
        assert_secure(&hd);
    }
    // No session at all, even with a right-looking form.
    let f = form("mine");
    let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s, _, _) = send(
        &w,
        "POST",
        "/console/revoke",
        &[("origin", ORIGIN)],
        Some(&pairs),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(live(&w, &alice).await, "a forged post revoked");
    assert!(events(&w, "grant.revoked").await.is_empty());
}

#[tokio::test]
async fn a_bulk_revocation_is_confirmed_with_its_count() {
    let w = world();
    let (a1, _) = grant(&w, "alice@example.com", "acme/api").await;
    let (a2, _) = grant(&w, "alice@example.com", "acme/web").await;
    let (bob, _) = grant(&w, "bob@example.com", "acme/api").await;
    let (cookie, csrf) = sign_in(&w).await;
    let (s, _, body) = send(
        &w,
        "GET",
        "/console/revoke?by=subject&value=alice%40example.com",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        body.contains("2 live grants of subject alice@example.com will end now"),
        "{body}"
    );
    assert!(live(&w, &a1).await, "confirming is not revoking");
    let form = [
        ("csrf", csrf.as_str()),
        ("by", "subject"),
        ("value", "alice@example.com"),
        ("reason", "left the company"),
    ];
    let h = [("cookie", cookie.as_str()), ("origin", ORIGIN)];
    let (s, _, body) = send(&w, "POST", "/console/revoke", &h, Some(&form)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        body.contains("Revoked sub alice@example.com: at most 2"),
        "{body}"
    );
    assert!(!live(&w, &a1).await && !live(&w, &a2).await);
    assert!(live(&w, &bob).await);
    let (s, _, body) = send(
        &w,
        "GET",
        "/console/revoke?by=all&value=x",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn revoking_the_admin_ends_their_console_session_on_the_next_request() {
    let w = world();
    let (cookie, _) = sign_in(&w).await;
    let (s, _, _) = send(&w, "GET", "/console", &[("cookie", &cookie)], None).await;
    assert_eq!(s, StatusCode::OK);
    // Another admin (or the CLI, on any replica) revokes this admin's identity.
    w.store
        .revoke(
            &crate::store::RevokeTarget::Subject("sec-admin@example.com".into()),
            NOW * 1000,
        )
        .await
        .expect("revoke");
    let (s, _, body) = send(&w, "GET", "/console", &[("cookie", &cookie)], None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("revoked after you signed in"), "{body}");
    // And it stays ended, revocation or not.
    assert!(
        w.console
            .sessions
            .get(cookie.split('=').nth(1).unwrap_or_default())
            .await
            .expect("store")
            .is_none()
    );
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let w = world();
    let (cookie, csrf) = sign_in(&w).await;
    let h = [("cookie", cookie.as_str()), ("origin", ORIGIN)];
    let (s, hd, _) = send(&w, "POST", "/console/logout", &h, Some(&[("csrf", &csrf)])).await;
    assert_eq!(s, StatusCode::OK);
    let cleared = hd[header::SET_COOKIE].to_str().expect("ascii");
    assert!(cleared.starts_with("__Host-jit_console=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"));
    // The old cookie replayed is worth nothing.
    let (s, _, body) = send(&w, "GET", "/console", &[("cookie", &cookie)], None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Sign in"));
    assert_eq!(events(&w, "admin.console_logout").await.len(), 1);
}

#[tokio::test]
async fn sign_in_fails_closed_without_a_login_issuer_or_a_pending_login() {
    let w = world();
    let (s, _, body) = send(&w, "GET", "/console/login", &[], None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("no [login] issuer"), "{body}");
    let (s, h, body) = send(
        &w,
        "GET",
        "/console/callback?code=c&state=forged",
        &[],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("expired or was already used"), "{body}");
    assert!(h.get(header::SET_COOKIE).is_some_and(|c| {
        c.to_str()
            .is_ok_and(|c| !c.starts_with("__Host-jit_console="))
    }));
    let (s, _, body) = send(
        &w,
        "GET",
        "/console/callback?error=access_denied&error_description=no%1b[31m",
        &[],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body.contains("access_denied"), "{body}");
    assert!(!body.contains('\u{1b}'));
}

/// Files Bob's pending request under `prod-push`.
async fn file_bobs_request(w: &World) -> crate::store::requests::ApprovalRequest {
    let r = request(&SuiteTime::manual(), "bob", 600_000);
    assert!(
        w.store
            .requests()
            .file(&r, "ask-bob", None, NOW * 1000)
            .await
            .expect("file")
    );
    r
}

#[tokio::test]
async fn the_requests_page_lists_pending_requests_and_shows_refusals() {
    let w = world();
    let r = file_bobs_request(&w).await;
    let (cookie, csrf) = sign_in(&w).await;
    let (s, _, body) = send(&w, "GET", "/console/requests", &[("cookie", &cookie)], None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains(r.id.as_str()), "{body}");
    assert!(body.contains("hotfix INC-42"));
    let h = [("cookie", cookie.as_str()), ("origin", ORIGIN)];
    let uri = format!("/console/requests/{}", r.id.as_str());
    let form = [
        ("csrf", csrf.as_str()),
        ("verdict", "approve"),
        ("reason", " "),
    ];
    let (s, _, body) = send(&w, "POST", &uri, &h, Some(&form)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    // The approval service decides: the role has no approval rule here.
    let form = [
        ("csrf", csrf.as_str()),
        ("verdict", "approve"),
        ("reason", "ok"),
    ];
    let (s, _, body) = send(&w, "POST", &uri, &h, Some(&form)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("no longer needs approval"), "{body}");
    let form = [("csrf", "nope"), ("verdict", "approve"), ("reason", "ok")];
    let (s, _, _) = send(&w, "POST", &uri, &h, Some(&form)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

/// A world whose role `prod-push` needs one approval from carol (issuer `corp`).
fn world_with_approvers() -> World {
    let issuers: Vec<crate::identity::IssuerConfig> = vec![
        toml::from_str(
            r#"
name = "corp"
issuer = "https://idp.test"
audience = "git-jit"
"#,
        )
        .expect("issuer"),
    ];
    #[derive(serde::Deserialize)]
    struct Roles {
        role: Vec<crate::policy::RoleConfig>,
    }
    let roles: Roles = toml::from_str(
        r#"
[[role]]
name = "prod-push"
issuer = "corp"
repositories = ["acme/*"]
actions = ["read", "write"]
[role.approval]
approvers = [{ issuer = "corp", subjects = ["carol"] }]
"#,
    )
    .expect("roles");
    let policy = crate::policy::CompiledPolicy::compile(&issuers, &roles.role).expect("policy");
    let verifier = crate::identity::Verifier::new(&issuers, crate::identity::CacheTimes::default())
        .expect("verifier");
    world_of(|s| s.with_access(verifier, policy, Default::default()))
}

#[test]
fn approvers_are_told_apart_from_everyone_else() {
    let w = world_with_approvers();
    let actor = |sub: &str| {
        Actor::new(
            sub.into(),
            "corp".into(),
            serde_json::Map::new(),
            false,
            false,
            Some(NOW),
        )
    };
    assert!(w.console.approvals.approves_any(&actor("carol")));
    assert!(!w.console.approvals.approves_any(&actor("dave")));
    // Same subject, another issuer: another person.
    let mut elsewhere = actor("carol");
    elsewhere.party.idp = "github".into();
    assert!(!w.console.approvals.approves_any(&elsewhere));
}

#[tokio::test]
async fn an_approver_sees_and_decides_requests_and_nothing_else() {
    let w = world_with_approvers();
    let r = file_bobs_request(&w).await;
    let (cookie, csrf) = sign_in_as(&w, "carol", false).await;
    let h = [("cookie", cookie.as_str()), ("origin", ORIGIN)];
    let (s, _, body) = send(&w, "GET", "/console/requests", &h, None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains(r.id.as_str()), "{body}");
    // The navigation offers the approver only what is theirs.
    assert!(!body.contains("/console/trail"), "{body}");
    // Every admin page and action refuses, and changes nothing.
    let (alice, _) = grant(&w, "alice", "acme/api").await;
    for uri in [
        "/console",
        "/console/trail",
        "/console/trail/export?format=csv",
        "/console/repo?repo=acme/api",
        "/console/events",
        "/console/revoke?subject=alice",
    ] {
        let (s, _, body) = send(&w, "GET", uri, &h, None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{uri}: {body}");
        assert!(body.contains("For admins only"), "{uri}: {body}");
    }
    let form = [
        ("csrf", csrf.as_str()),
        ("by", "subject"),
        ("value", "alice"),
        ("reason", "incident"),
    ];
    let (s, _, body) = send(&w, "POST", "/console/revoke", &h, Some(&form)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(
        live(&w, &alice).await,
        "the approver's revoke changed the store"
    );
    // Deciding is theirs.
    let uri = format!("/console/requests/{}", r.id.as_str());
    let form = [
        ("csrf", csrf.as_str()),
        ("verdict", "approve"),
        ("reason", "looked at INC-42"),
    ];
    let (s, _, body) = send(&w, "POST", &uri, &h, Some(&form)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body.contains("is now approved"), "{body}");
    // Logout too.
    let (s, _, body) = send(&w, "POST", "/console/logout", &h, Some(&[("csrf", &csrf)])).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _, _) = send(&w, "GET", "/console/requests", &h, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// The next data frame of an event stream, within `limit` (virtual time).
async fn next_frame(body: &mut Body, limit: Duration) -> Option<Option<String>> {
    match tokio::time::timeout(limit, body.frame()).await {
        Err(_) => None,
        Ok(None) => Some(None),
        Ok(Some(f)) => {
            let f = f.expect("frame");
            let data = f
                .into_data()
                .map(|d| String::from_utf8_lossy(&d).into_owned());
            Some(data.ok())
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_live_stream_tells_of_a_revocation_made_elsewhere_and_ends_with_the_session() {
    let w = world();
    let (alice, _) = grant(&w, "alice@example.com", "acme/api").await;
    grant(&w, "bob@example.com", "acme/api").await;
    let (cookie, _) = sign_in(&w).await;
    let req = Request::builder()
        .uri("/console/events")
        .header("cookie", &cookie)
        .body(Body::empty())
        .expect("request");
    let resp = w.app.clone().oneshot(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    assert_secure(resp.headers());
    let mut body = resp.into_body();
    // Nothing changes: nothing is said (the first look is the baseline).
    assert!(
        next_frame(&mut body, Duration::from_secs(3))
            .await
            .is_none()
    );
    // A revocation through the store, as from the CLI or another replica.
    w.store
        .revoke(
            &crate::store::RevokeTarget::Jti(alice.jti.clone()),
            NOW * 1000,
        )
        .await
        .expect("revoke");
    let frame = next_frame(&mut body, WATCH_EVERY * 2)
        .await
        .expect("told within two looks")
        .expect("a data frame");
    assert!(frame.contains("event: grants"), "{frame}");
    // Signing out ends the stream.
    let id = cookie.trim_start_matches("__Host-jit_console=");
    w.console.sessions.end(id).await.expect("store");
    let end = next_frame(&mut body, WATCH_EVERY * 2).await;
    assert!(
        matches!(end, Some(None)),
        "the stream outlived its session: {end:?}"
    );
    // And none is opened without a session.
    let (s, _, _) = send(&w, "GET", "/console/events", &[("cookie", &cookie)], None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_trail_is_searched_exported_and_its_chain_verified() {
    let w = world();
    let (alice, _) = grant(&w, "alice@example.com", "acme/api").await;
    let (cookie, csrf) = sign_in(&w).await;
    let form = [
        ("csrf", csrf.as_str()),
        ("by", "jti"),
        ("value", alice.jti.as_str()),
        ("reason", "laptop, stolen"),
    ];
    let h = [("cookie", cookie.as_str()), ("origin", ORIGIN)];
    let (s, _, _) = send(&w, "POST", "/console/revoke", &h, Some(&form)).await;
    assert_eq!(s, StatusCode::OK);
    let c = [("cookie", cookie.as_str())];
    let (s, hd, body) = send(&w, "GET", "/console/trail?event=grant.", &c, None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_secure(&hd);
    assert!(body.contains("grant.revoked"), "{body}");
    assert!(
        !body.contains("admin.console"),
        "the search filters by kind"
    );
    assert!(body.contains(&alice.jti));
    let (s, _, body) = send(&w, "GET", "/console/trail?verify=1", &c, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains("Chain verified: audit chain intact"),
        "{body}"
    );
    let (s, hd, csv) = send(
        &w,
        "GET",
        "/console/trail/export?format=csv&event=grant.revoked",
        &c,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{csv}");
    assert_eq!(hd[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert!(
        hd[header::CONTENT_DISPOSITION]
            .to_str()
            .expect("ascii")
            .contains("audit.csv")
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("seq,ts,event"));
    assert!(lines[1].contains("\"laptop, stolen\""), "{csv}");
    let (s, _, jsonl) = send(
        &w,
        "GET",
        "/console/trail/export?format=jsonl&subject=sec-admin%40example.com",
        &c,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for line in jsonl.lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert_eq!(e["subject"], "sec-admin@example.com");
    }
    let (s, _, body) = send(&w, "GET", "/console/trail?from=yesterday", &c, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("neither milliseconds nor RFC 3339"), "{body}");
    let (s, _, _) = send(&w, "GET", "/console/trail/export?format=xml", &c, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = send(&w, "GET", "/console/trail/export?format=csv", &[], None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "exports need a session");
}

#[tokio::test]
async fn the_repository_page_draws_who_had_access_as_inline_svg() {
    let w = world();
    let (alice, _) = grant(&w, "alice@example.com", "acme/api").await;
    let mut issued =
        crate::audit::AuditEvent::new("grant.issued", NOW * 1000 - 60_000).with("exp", alice.exp);
    issued.subject = Some(alice.sub.clone());
    issued.repo = Some("acme/api".into());
    issued.scope = Some(alice.scope.to_string());
    issued.role = Some(alice.role.clone());
    issued.jti = Some(alice.jti.clone());
    w.state.audit.record(issued).await.expect("record");
    let (cookie, csrf) = sign_in(&w).await;
    let form = [
        ("csrf", csrf.as_str()),
        ("by", "jti"),
        ("value", alice.jti.as_str()),
        ("reason", "done"),
    ];
    let h = [("cookie", cookie.as_str()), ("origin", ORIGIN)];
    let (s, _, _) = send(&w, "POST", "/console/revoke", &h, Some(&form)).await;
    assert_eq!(s, StatusCode::OK);
    let c = [("cookie", cookie.as_str())];
    let (s, hd, body) = send(&w, "GET", "/console/repo?repo=acme%2Fapi", &c, None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_secure(&hd);
    assert!(body.contains("<svg"), "{body}");
    assert!(
        body.contains("data-subject=\"alice@example.com\""),
        "{body}"
    );
    assert!(body.contains(&format!("data-jti=\"{}\"", alice.jti)));
    assert!(
        body.contains("class=\"revoked\""),
        "the revocation is marked: {body}"
    );
    let (s, _, body) = send(&w, "GET", "/console/repo?repo=acme%2Fweb", &c, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("Nobody had access to acme/web"), "{body}");
    let (s, _, _) = send(&w, "GET", "/console/repo?repo=..%2Fx", &c, None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, body) = send(
        &w,
        "GET",
        "/console/repo?repo=acme%2Fapi&from=2&to=1",
        &c,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("must start before it ends"), "{body}");
}

#[tokio::test]
async fn a_session_works_on_every_replica_and_logout_on_one_ends_it_on_all() {
    let a = world();
    let b = replica(&a);
    let (cookie, csrf) = sign_in(&a).await;
    let (s, _, body) = send(&b, "GET", "/console", &[("cookie", &cookie)], None).await;
    assert_eq!(s, StatusCode::OK, "replica B refused A's session: {body}");
    let h = [("cookie", cookie.as_str()), ("origin", ORIGIN)];
    let (s, _, _) = send(&b, "POST", "/console/logout", &h, Some(&[("csrf", &csrf)])).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, body) = send(&a, "GET", "/console", &[("cookie", &cookie)], None).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "A still serves the ended session: {body}"
    );
    // A login begun on one replica finishes on another: its state is in the store too.
    let pending = crate::console::session::PendingLogin::new("n".into(), "v".into(), "b".into());
    a.console
        .sessions
        .begin_login("state-x", pending)
        .await
        .expect("begin");
    let taken = b
        .console
        .sessions
        .finish_login("state-x")
        .await
        .expect("store");
    assert!(
        taken.is_some(),
        "replica B cannot see A's login in progress"
    );
}

#[tokio::test]
async fn a_session_store_that_cannot_answer_lets_nobody_in() {
    use std::sync::atomic::Ordering;
    let store = Arc::new(crate::store::flaky::Flaky::default());
    let clock = Arc::new(ManualClock::new(NOW * 1000));
    let state = AppState::for_tests(store.clone(), clock);
    let (console, app) = console_app(&state);
    let (cookie, csrf) = session_on(&console, "sec-admin@example.com", true).await;
    let id = cookie.trim_start_matches("__Host-jit_console=").to_owned();
    let (s, _, _) = send_to(&app, "GET", "/console", &[("cookie", &cookie)], None).await;
    assert_eq!(s, StatusCode::OK);
    store.grants_down.store(true, Ordering::SeqCst);
    for page in ["/console", "/console/requests", "/console/trail"] {
        let (s, _, body) = send_to(&app, "GET", page, &[("cookie", &cookie)], None).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{page}: {body}");
        assert!(
            body.contains("console sessions cannot be checked"),
            "{body}"
        );
        assert!(!body.contains(&id), "the cookie id is in the page");
    }
    let h = [("cookie", cookie.as_str()), ("origin", ORIGIN)];
    let (s, _, body) = send_to(
        &app,
        "POST",
        "/console/logout",
        &h,
        Some(&[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // The sign-out answered that it failed; with the store back, the session is as it was.
    store.grants_down.store(false, Ordering::SeqCst);
    let (s, _, _) = send_to(&app, "GET", "/console", &[("cookie", &cookie)], None).await;
    assert_eq!(s, StatusCode::OK);
}
