//! Gateway and `/authz` decisions through the router (`app(state).oneshot`), with a memory
//! store, a manual clock and tokens signed by the state's own signer.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use jit_proto::{Claims, RefPattern, Scope};
use tower::ServiceExt as _;

use super::*;
use crate::audit::{AuditEvent, AuditQuery};
use crate::clock::ManualClock;
use crate::config::UpstreamConfig;
use crate::state::AppState;
use crate::store::flaky::Flaky;
use crate::store::{Grant, GrantStore, RevokeTarget};

const NOW_MS: i64 = 1_700_000_000_000;
const Z: &str = "0000000000000000000000000000000000000000";
const A: &str = "1111111111111111111111111111111111111111";
const B: &str = "2222222222222222222222222222222222222222";

struct Env {
    state: AppState,
    store: Arc<Flaky>,
    clock: Arc<ManualClock>,
}

fn env() -> Env {
    let store = Arc::new(Flaky::default());
    let clock = Arc::new(ManualClock::new(NOW_MS));
    // An upstream that refuses connections: a forwarded request shows as a 502.
    let gateway = Gateway::from_config(&[UpstreamConfig {
        repositories: vec!["acme/**".into()],
        url: "http://127.0.0.1:9".into(),
        credential: None,
        connect_timeout_secs: 2,
        idle_timeout_secs: 5,
        keepalive_secs: 4,
    }])
    .expect("gateway");
    let state = AppState::for_tests(store.clone(), clock.clone()).with_gateway(gateway);
    Env {
        state,
        store,
        clock,
    }
}

impl Env {
    async fn token(&self, scope: &str, refs: &[&str]) -> (String, Claims) {
        let now = NOW_MS / 1000;
        let claims = Claims {
            iss: "https://broker.test".into(),
            aud: "git-jit".into(),
            sub: "alice@example.com".into(),
            idp: "corp".into(),
            iat: now,
            nbf: now,
            exp: now + 600,
            jti: crate::token::new_jti().expect("jti"),
            scope: Scope::parse(scope).expect("scope"),
            refs: refs
                .iter()
                .map(|r| RefPattern::parse(r).expect("ref"))
                .collect(),
            role: "dev".into(),
            reason: None,
            req: None,
        };
        self.store
            .put(&Grant::from_claims(&claims, NOW_MS - 1), NOW_MS)
            .await
            .expect("put");
        let token = self.state.signer.sign(&claims).expect("sign");
        (token.expose().to_owned(), claims)
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let r = crate::app(self.state.clone())
            .oneshot(req)
            .await
            .expect("infallible");
        let (parts, body) = r.into_parts();
        let body = body.collect().await.expect("body").to_bytes().to_vec();
        (parts.status, parts.headers, body)
    }

    async fn get(
        &self,
        uri: &str,
        token: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut req = Request::get(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let (s, h, b) = self.send(req.body(Body::empty()).expect("req")).await;
        (s, h, String::from_utf8_lossy(&b).into_owned())
    }

    async fn audit(&self, kind: &str) -> Vec<AuditEvent> {
        self.store
            .read_audit(&AuditQuery {
                event: Some(kind.into()),
                limit: 100,
                ..AuditQuery::default()
            })
            .await
            .expect("audit")
    }
}

fn challenges(h: &axum::http::HeaderMap) -> Vec<String> {
    h.get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

#[test]
fn classify_paths_and_tricks() {
    let ok = |m: Method, p: &str| classify(&m, p).expect(p);
    let g = ok(
        Method::GET,
        "/acme/api.git/info/refs?service=git-upload-pack",
    );
    assert_eq!(g.needed_scope().to_string(), "repo:acme/api:read");
    let g = ok(Method::GET, "/acme/api/info/refs?service=git-receive-pack");
    assert_eq!(g.needed_scope().to_string(), "repo:acme/api:write");
    // Extra parameters are refused now (see info_refs_query_must_be_exactly_one_service).
    assert!(
        classify(
            &Method::GET,
            "/acme/api/info/refs?x=1&service=git-receive-pack"
        )
        .is_err()
    );
    assert_eq!(
        ok(Method::POST, "/acme/api.git/git-upload-pack").endpoint,
        Endpoint::Rpc(GitService::UploadPack)
    );
    assert_eq!(
        ok(Method::POST, "/a/b/c.git/git-receive-pack")
            .repo
            .as_str(),
        "a/b/c"
    );
    assert_eq!(
        ok(
            Method::GET,
            "/ACME/api.git/info/refs?service=git-upload-pack"
        )
        .repo
        .as_str(),
        "ACME/api"
    );

    let bad_repo = [
        "/acme/api/../secret.git/info/refs?service=git-upload-pack",
        "/acme//api.git/info/refs?service=git-upload-pack",
        "/acme/%2e%2e/secret.git/git-upload-pack",
        "/acme%2fapi.git/git-upload-pack",
        "/acme/api%2Egit/git-upload-pack",
        "/acme/api.git//git-upload-pack",
        "/acme/api//info/refs?service=git-upload-pack",
        "/acme\\api.git/git-upload-pack",
        "/./acme/api.git/git-upload-pack",
        "//acme/api.git/git-upload-pack",
        "/acme/api.git.git/git-upload-pack",
        "/acme/-oops.git/git-upload-pack",
    ];
    for p in bad_repo {
        let m = if p.contains("info/refs") {
            Method::GET
        } else {
            Method::POST
        };
        assert!(
            matches!(classify(&m, p), Err(RouteError::BadRepo { .. })),
            "{p}"
        );
    }
    let not_git = [
        "/acme/api.git/info/refs/",
        "/acme/api.git/git-upload-pack/",
        "/acme/api.git/HEAD",
        "/acme/api.git/objects/info/packs",
        "/git-upload-pack",
        "",
    ];
    for p in not_git {
        assert!(
            matches!(
                classify(&Method::POST, p),
                Err(RouteError::NotGit | RouteError::BadRepo { .. })
            ),
            "{p}"
        );
    }
    for p in [
        "/acme/api.git/info/refs",
        "/acme/api.git/info/refs?service=git-upload-archive",
        "/acme/api.git/info/refs?service=git%2Dupload-pack",
    ] {
        assert_eq!(classify(&Method::GET, p), Err(RouteError::NoService), "{p}");
    }
    assert!(matches!(
        classify(&Method::GET, "/acme/api.git/git-upload-pack"),
        Err(RouteError::Method(_))
    ));
    assert!(matches!(
        classify(
            &Method::POST,
            "/acme/api.git/info/refs?service=git-upload-pack"
        ),
        Err(RouteError::Method(_))
    ));
}

#[tokio::test]
async fn no_token_gets_a_challenge_with_the_exact_scope() {
    let e = env();
    let (s, h, body) = e
        .get("/acme/api.git/info/refs?service=git-receive-pack", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenges(&h),
        [
            "Bearer realm=\"git-jit\", scope=\"repo:acme/api:write\"",
            "Basic realm=\"git-jit\""
        ]
    );
    assert!(
        body.contains("this push needs repo:acme/api:write"),
        "{body}"
    );
    let (_, h, _) = e
        .get(
            "/acme/api/info/refs?service=git-upload-pack",
            Some("garbage"),
        )
        .await;
    // A presented but refused token gets RFC 6750's invalid_token with the reason.
    assert_eq!(
        challenges(&h)[0],
        "Bearer realm=\"git-jit\", scope=\"repo:acme/api:read\", error=\"invalid_token\", \
         error_description=\"token is malformed\""
    );
    // The credential-less request is counted, not audited; the refused token is audited.
    let denied = e.audit("access.denied").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].scope.as_deref(), Some("repo:acme/api:read"));
    assert_eq!(denied[0].denial.as_deref(), Some("token is malformed"));
    assert_eq!(
        e.state.audit.counts().unaudited_snapshot(),
        [("no_credential", 1)]
    );
}

/// Regression: anonymous or forged requests could each append an audit event and push the
/// bounded trail out. Credential-less ones are counted; refused credentials are audited up
/// to an address's budget, then answered 429 and counted.
#[tokio::test]
async fn refusals_cannot_flood_the_audit_trail() {
    let e = env();
    let uri = "/acme/api.git/info/refs?service=git-upload-pack";
    for _ in 0..500 {
        assert_eq!(e.get(uri, None).await.0, StatusCode::UNAUTHORIZED);
    }
    assert!(e.audit("access.denied").await.is_empty());
    let mut limited = 0;
    for _ in 0..150 {
        let (s, h, _) = e.get(uri, Some("forged.token.here")).await;
        if s == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
            assert!(h.get(header::RETRY_AFTER).is_some());
        } else {
            assert_eq!(s, StatusCode::UNAUTHORIZED);
        }
    }
    let audited = e
        .store
        .read_audit(&AuditQuery {
            event: Some("access.denied".into()),
            limit: usize::MAX,
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .len();
    assert_eq!(audited + limited, 150);
    assert!(
        audited <= 101 && limited >= 49,
        "audited {audited}, limited {limited}"
    );
    let counts = e.state.audit.counts().unaudited_snapshot();
    assert_eq!(
        counts,
        [
            ("no_credential", 500),
            ("refused_over_limit", limited as u64)
        ]
    );
}

#[tokio::test]
async fn wrong_repo_action_or_case_is_forbidden_with_a_message() {
    let e = env();
    let (t, _) = e.token("repo:acme/api:read", &[]).await;
    let (s, h, body) = e
        .get("/acme/api.git/info/refs?service=git-receive-pack", Some(&t))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(challenges(&h).is_empty());
    assert_eq!(
        h.get(DENIAL_HEADER).map(|v| v.as_bytes()),
        Some(body.trim_end().as_bytes())
    );
    assert_eq!(
        body,
        "git-jit: token grants repo:acme/api:read; this push needs repo:acme/api:write. Run `git jit request --repo acme/api --action read,write`\n"
    );
    for uri in [
        "/acme/web.git/info/refs?service=git-upload-pack",
        "/ACME/api.git/info/refs?service=git-upload-pack",
        "/acme/api/sub.git/info/refs?service=git-upload-pack",
    ] {
        let (s, _, body) = e.get(uri, Some(&t)).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{uri}");
        assert!(
            body.starts_with("git-jit: token grants repo:acme/api:read; this clone or fetch needs"),
            "{body}"
        );
    }
    let (s, _, body) = e
        .get(
            "/acme/api/../web.git/info/refs?service=git-upload-pack",
            Some(&t),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("'..' segment"), "{body}");
}

#[tokio::test]
async fn allowed_request_is_audited_then_forwarded() {
    let e = env();
    let (t, c) = e.token("repo:acme/api:read", &[]).await;
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("x:{t}"))
    );
    let req = Request::get("/acme/api.git/info/refs?service=git-upload-pack")
        .header(header::AUTHORIZATION, basic)
        .body(Body::empty())
        .expect("req");
    let (s, _, body) = e.send(req).await;
    // The test upstream refuses connections: reaching it proves the request was allowed.
    assert_eq!(
        s,
        StatusCode::BAD_GATEWAY,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        String::from_utf8_lossy(&body)
            .contains("cannot connect to the upstream Git server 127.0.0.1")
    );
    let allowed = e.audit("access.allowed").await;
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0].jti.as_deref(), Some(c.jti.as_str()));
    assert_eq!(allowed[0].subject.as_deref(), Some("alice@example.com"));
    assert_eq!(allowed[0].repo.as_deref(), Some("acme/api"));

    let (s, _, body) = e
        .get(
            "/other/repo.git/info/refs?service=git-upload-pack",
            Some(&e.token("repo:other/repo:read", &[]).await.0),
        )
        .await;
    assert_eq!(
        (s, body.as_str()),
        (
            StatusCode::NOT_FOUND,
            "git-jit: no upstream serves repository other/repo\n"
        )
    );
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_refused_on_the_next_request() {
    let e = env();
    let (t, c) = e.token("repo:acme/api:read", &[]).await;
    let uri = "/acme/api.git/info/refs?service=git-upload-pack";
    assert_eq!(e.get(uri, Some(&t)).await.0, StatusCode::BAD_GATEWAY);
    e.store
        .revoke(&RevokeTarget::Jti(c.jti.clone()), NOW_MS)
        .await
        .expect("revoke");
    let (s, h, body) = e.get(uri, Some(&t)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(challenges(&h).len(), 2);
    assert!(body.contains("revoked"), "{body}");

    let (t, _) = e.token("repo:acme/api:read", &[]).await;
    e.clock.advance_ms(601_000);
    let (s, _, body) = e.get(uri, Some(&t)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body.contains("expired"), "{body}");
}

#[tokio::test]
async fn store_or_audit_outage_fails_closed() {
    let e = env();
    let (t, _) = e.token("repo:acme/api:read", &[]).await;
    let uri = "/acme/api.git/info/refs?service=git-upload-pack";
    e.store.grants_down.store(true, Ordering::SeqCst);
    let (s, _, body) = e.get(uri, Some(&t)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("grant store is unavailable"), "{body}");
    e.store.grants_down.store(false, Ordering::SeqCst);
    e.store.audit_down.store(true, Ordering::SeqCst);
    let (s, _, body) = e.get(uri, Some(&t)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("audit trail is unavailable"), "{body}");
}

fn push_body(lines: &[String]) -> Vec<u8> {
    let mut b = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let line = if i == 0 {
            format!("{l}\0report-status side-band-64k")
        } else {
            l.clone()
        };
        pktline::write_data(&mut b, line.as_bytes());
    }
    pktline::write_flush(&mut b);
    b.extend_from_slice(b"PACK-never-forwarded");
    b
}

async fn push(
    e: &Env,
    token: &str,
    lines: &[String],
    gzip: bool,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut body = push_body(lines);
    let mut req = Request::post("/acme/api.git/git-receive-pack")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(
            header::CONTENT_TYPE,
            "application/x-git-receive-pack-request",
        );
    if gzip {
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&body).expect("gzip");
        body = enc.finish().expect("gzip");
        req = req.header(header::CONTENT_ENCODING, "gzip");
    }
    e.send(req.body(Body::from(body)).expect("req")).await
}

fn band1_lines(body: &[u8]) -> Vec<String> {
    let mut inner = Vec::new();
    for p in pktline::parse_all(body).expect("pkt") {
        if let pktline::Packet::Data(d) = p
            && d[0] == 1
        {
            inner.extend_from_slice(&d[1..]);
        }
    }
    pktline::parse_all(&inner)
        .expect("inner pkt")
        .into_iter()
        .filter_map(|p| p.line().map(|l| String::from_utf8_lossy(l).into_owned()))
        .collect()
}

#[tokio::test]
async fn push_outside_ref_patterns_is_refused_whole_and_never_forwarded() {
    let e = env();
    let (t, c) = e
        .token("repo:acme/api:write", &["refs/heads/hotfix/*"])
        .await;
    for gzip in [false, true] {
        let lines = [
            format!("{A} {B} refs/heads/hotfix/a"),
            format!("{A} {Z} refs/heads/main"),
        ];
        let (s, h, body) = push(&e, &t, &lines, gzip).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            h.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/x-git-receive-pack-result"[..])
        );
        assert_eq!(
            band1_lines(&body),
            [
                "unpack ok",
                "ng refs/heads/hotfix/a git-jit: push refused as a whole because refs/heads/main is not allowed",
                "ng refs/heads/main git-jit: ref not allowed by grant: allowed refs/heads/hotfix/*",
            ]
        );
    }
    let denied = e.audit("access.denied").await;
    assert_eq!(denied.len(), 2);
    assert_eq!(denied[0].jti.as_deref(), Some(c.jti.as_str()));
    assert_eq!(denied[0].data["updates"][1]["kind"], "delete");
    assert!(
        denied[0]
            .denial
            .as_deref()
            .is_some_and(|d| d.starts_with("refs/heads/main: "))
    );
    assert!(e.audit("access.allowed").await.is_empty());

    // Within the patterns the names pass, but the upstream cannot be asked whether they are
    // symbolic refs: the push is refused, never guessed.
    let (s, _, body) = push(&e, &t, &[format!("{Z} {B} refs/heads/hotfix/new")], true).await;
    assert_eq!(s, StatusCode::OK);
    let lines = band1_lines(&body);
    assert!(
        lines[1].starts_with(
            "ng refs/heads/hotfix/new git-jit: cannot learn from the upstream whether the pushed refs are symbolic refs (the upstream answered HTTP 502)"
        ),
        "{lines:?}"
    );
    assert_eq!(e.audit("access.denied").await.len(), 3);
    assert!(e.audit("access.allowed").await.is_empty());

    // An unrestricted grant needs no lookup: allowed (and reaches the refusing test upstream).
    let (all, _) = e.token("repo:acme/api:write", &[]).await;
    let (s, _, _) = push(&e, &all, &[format!("{Z} {B} refs/heads/hotfix/new")], true).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY);
    let allowed = e.audit("access.allowed").await;
    assert_eq!(
        allowed[0].data["updates"][0]["ref"],
        "refs/heads/hotfix/new"
    );
    assert_eq!(allowed[0].data["updates"][0]["kind"], "create");
}

/// Regression (audit amplification): a refused push of 900 refs of 1 KB each was recorded as
/// one event of about 2 MB (every ref in `updates`, every reason in `denial`). The event now
/// lists the first updates, summarises the rest, and the summary is counted.
#[tokio::test]
async fn a_refused_push_of_many_long_refs_is_a_bounded_audit_event() {
    let e = env();
    let (t, _) = e
        .token("repo:acme/api:write", &["refs/heads/hotfix/*"])
        .await;
    let lines: Vec<String> = (0..900)
        .map(|i| format!("{Z} {B} refs/heads/{i:04}{}", "x".repeat(1000)))
        .collect();
    let (s, _, _) = push(&e, &t, &lines, false).await;
    assert_eq!(s, StatusCode::OK);
    let denied = e.audit("access.denied").await;
    assert_eq!(denied.len(), 1);
    let size = serde_json::to_vec(&denied[0]).expect("json").len();
    assert!(size < 16 * 1024, "the event is {size} bytes");
    let updates = &denied[0].data["updates"];
    assert_eq!(updates["count"], 900);
    assert_eq!(updates["create"], 900);
    assert!(
        updates["listed"]
            .as_array()
            .is_some_and(|l| !l.is_empty() && l.len() <= 20)
    );
    let mut digest = <sha2::Sha256 as sha2::Digest>::new();
    for l in &lines {
        sha2::Digest::update(&mut digest, format!("{l}\n").as_bytes());
    }
    assert_eq!(
        updates["sha256"],
        hex::encode(sha2::Digest::finalize(digest))
    );
    let metrics = e.state.audit.counts();
    assert_eq!(metrics.audit_summarised_count("updates"), 1);
    assert_eq!(metrics.audit_summarised_count("denial"), 1);
    assert!(
        metrics
            .encode()
            .contains("jit_audit_summarised_total{field=\"updates\"} 1")
    );

    // A short push is listed whole, and nothing more is counted.
    let (s, _, _) = push(&e, &t, &[format!("{Z} {B} refs/heads/main")], false).await;
    assert_eq!(s, StatusCode::OK);
    let denied = e.audit("access.denied").await;
    assert!(
        denied
            .iter()
            .any(|d| d.data["updates"][0]["ref"] == "refs/heads/main"),
        "{denied:?}"
    );
    assert_eq!(metrics.audit_summarised_count("updates"), 1);
}

#[tokio::test]
async fn malformed_push_is_a_400() {
    let e = env();
    let (t, _) = e.token("repo:acme/api:write", &[]).await;
    let req = Request::post("/acme/api.git/git-receive-pack")
        .header(header::AUTHORIZATION, format!("Bearer {t}"))
        .body(Body::from("00zzjunk"))
        .expect("req");
    let (s, _, body) = e.send(req).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("not four hex digits"));
}

async fn authz(
    e: &Env,
    uri: &str,
    method: &str,
    token: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap) {
    let mut req = Request::get("/authz")
        .header("X-Original-URI", uri)
        .header("X-Original-Method", method);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let (s, h, _) = e.send(req.body(Body::empty()).expect("req")).await;
    (s, h)
}

#[tokio::test]
async fn authz_decides_like_the_gateway() {
    let e = env();
    let (read, _) = e.token("repo:acme/api:read", &[]).await;
    let (narrow, _) = e
        .token("repo:acme/api:write", &["refs/heads/hotfix/*"])
        .await;
    let (write, _) = e.token("repo:acme/api:write", &[]).await;
    let info = "/acme/api.git/info/refs?service=git-upload-pack";
    let (s, h) = authz(&e, info, "GET", Some(&read)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        h.get("x-jit-subject").map(|v| v.as_bytes()),
        Some(&b"alice@example.com"[..])
    );
    let (s, h) = authz(
        &e,
        "/acme/api.git/info/refs?service=git-receive-pack",
        "GET",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenges(&h)[0],
        "Bearer realm=\"git-jit\", scope=\"repo:acme/api:write\""
    );
    assert_eq!(
        authz(
            &e,
            "/acme/web.git/info/refs?service=git-upload-pack",
            "GET",
            Some(&read)
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        authz(
            &e,
            "/acme/%2e%2e/api.git/info/refs?service=git-upload-pack",
            "GET",
            Some(&read)
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        authz(&e, "/acme/api.git/git-receive-pack", "POST", Some(&write))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        authz(&e, "/acme/api.git/git-receive-pack", "POST", Some(&narrow))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        authz(
            &e,
            "/acme/api.git/info/refs?service=git-receive-pack",
            "GET",
            Some(&narrow)
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let allowed = e.audit("access.allowed").await;
    assert_eq!(allowed.len(), 2);
    assert_eq!(allowed[0].data["via"], "authz");
}

/// Regression: git sends the `0000` probe before a large request without its Bearer header.
#[tokio::test]
async fn credential_less_flush_probe_is_answered_without_forwarding() {
    let e = env();
    let probe = |service: &str, body: &'static [u8]| {
        Request::post(format!("/acme/api.git/{service}"))
            .header(
                header::CONTENT_TYPE,
                format!("application/x-{service}-request"),
            )
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .expect("req")
    };
    for service in ["git-receive-pack", "git-upload-pack"] {
        let (s, h, body) = e.send(probe(service, b"0000")).await;
        // The env's upstream refuses connections: a forwarded probe would be a 502.
        assert_eq!(s, StatusCode::OK, "{service}");
        assert!(body.is_empty(), "a probe is answered with nothing");
        assert_eq!(
            h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some(format!("application/x-{service}-result").as_str())
        );
    }
    // Anything else without a credential is refused as usual.
    for body in [&b"0001"[..], b"00000", b"abcd", b""] {
        let (s, h, _) = e.send(probe("git-receive-pack", body)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{body:?}");
        assert!(challenges(&h)[0].contains("repo:acme/api:write"));
    }
    // A probe is not an access: nothing was recorded for it; the other credential-less
    // requests are counted, not audited.
    assert!(e.audit("access.allowed").await.is_empty());
    assert!(e.audit("access.denied").await.is_empty());
    assert_eq!(
        e.state.audit.counts().unaudited_snapshot(),
        [("no_credential", 4)]
    );
}

/// Regression: behind nginx, git's credential-less `0000` probe reaches `/authz` with only
/// its length; four bytes can carry no command, so it passes, and nothing else does.
#[tokio::test]
async fn authz_lets_only_a_four_byte_probe_through_without_a_credential() {
    let e = env();
    let probe = |uri: &str, method: &str, length: Option<&str>| {
        let mut req = Request::get("/authz")
            .header("X-Original-URI", uri)
            .header("X-Original-Method", method);
        if let Some(l) = length {
            req = req.header("X-Original-Content-Length", l);
        }
        req.body(Body::empty()).expect("req")
    };
    let push = "/acme/api.git/git-receive-pack";
    assert_eq!(
        e.send(probe(push, "POST", Some("4"))).await.0,
        StatusCode::NO_CONTENT
    );
    let fetch = "/acme/api.git/git-upload-pack";
    assert_eq!(
        e.send(probe(fetch, "POST", Some("4"))).await.0,
        StatusCode::NO_CONTENT
    );
    for (uri, method, length) in [
        (push, "POST", Some("5")),
        (push, "POST", Some("")),
        (push, "POST", None),
        (
            "/acme/api.git/info/refs?service=git-receive-pack",
            "GET",
            Some("4"),
        ),
    ] {
        let (s, _, _) = e.send(probe(uri, method, length)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri} {method} {length:?}");
    }
}

/// Regression: `git http-backend` takes the last (decoded) `service`, so a read token must not
/// pass `/authz` with a second one smuggled behind the first.
#[test]
fn info_refs_query_must_be_exactly_one_service() {
    for q in [
        "service=git-upload-pack&service=git-receive-pack",
        "service=git-upload-pack&%73ervice=git-receive-pack",
        "service=git-upload-pack&x=1",
        "x=1&service=git-upload-pack",
        "service=git-upload-pack%26service%3Dgit-receive-pack",
        "service=",
        "",
    ] {
        let uri = format!("/acme/api.git/info/refs?{q}");
        assert!(
            matches!(classify(&Method::GET, &uri), Err(RouteError::NoService)),
            "{uri}"
        );
    }
    let ok = classify(
        &Method::GET,
        "/acme/api.git/info/refs?service=git-receive-pack",
    );
    assert_eq!(
        ok.map(|g| g.needed_scope().to_string()).ok().as_deref(),
        Some("repo:acme/api:write")
    );
}
