//! Grants and refusals: exact scope, stored, audited; precise errors; dev mode.

use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode, header};
use http_body_util::BodyExt as _;
use jit_proto::Scope;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;
use jit_proto::api::GRANT_TYPE_TOKEN_EXCHANGE;

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
            "role 'dev-write' requires a reason; run: git jit request --repo acme/api --action write --role dev-write --reason \"…\"",
        ),
        (
            exchange_form(&t, "repo:acme/api:write", &[("reason", "x"), ("ttl", "2h")]),
            StatusCode::FORBIDDEN,
            "access_denied",
            "role 'dev-write': a lifetime of 120 minutes exceeds its maximum of 60 minutes; run: git jit request --repo acme/api --action write --role dev-write --ttl 60 --reason \"…\"",
        ),
        (
            exchange_form(
                &t,
                "repo:acme/prod:write",
                &[("role", "prod"), ("approval", "request")],
            ),
            StatusCode::FORBIDDEN,
            "access_denied",
            "role 'prod' requires a reason of at least 5 characters (0 given); run: git jit request --repo acme/prod --action write --role prod --reason \"…\"",
        ),
        (
            exchange_form(
                &t,
                "repo:acme/prod:write",
                &[("role", "prod"), ("reason", "hotfix")],
            ),
            StatusCode::FORBIDDEN,
            "approval_required",
            "role 'prod' needs approval by a person (bob or carol (corp)",
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
            "role 'dev-write': ref pattern 'refs/heads/main' is not within the role's refs: refs/heads/feature/**; run: git jit request --repo acme/api --action write --role dev-write --refs 'refs/heads/feature/**' --reason \"…\"",
        ),
        (
            exchange_form(&t, "repo:acme/api:read", &[("role", "nope")]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "no role is named 'nope'; run: git jit request --repo acme/api --action read",
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
            exchange_form(
                &t,
                "repo:acme/api:write",
                &[("refs", &["refs/heads/feature/a"; 9].join(" "))],
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "at most 8 ref patterns may be requested",
        ),
        (
            exchange_form(
                &t,
                "repo:acme/api:write",
                &[("refs", &format!("refs/heads/feature/{}", "x".repeat(112)))],
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "ref pattern is 131 bytes long; at most 128 are allowed",
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
                &"x".repeat(jit_proto::exchange::MAX_SUBJECT_TOKEN_LEN + 1),
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
async fn dev_mode_mints_identities_for_loopback_only() {
    let state = AppState::dev("http://127.0.0.1:8080", "dev@localhost").expect("dev state");
    let mint = |peer: [u8; 4]| {
        let req = HttpRequest::post("/dev/issuer/token")
            .header(header::HOST, "127.0.0.1:8080")
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
        &[("host", "127.0.0.1:8080")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, json, _) = send(
        app(),
        exchange_form(id_token, "repo:demo/x:write", &[("reason", "try")]),
        &[("host", "127.0.0.1:8080")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let (status, _, _) = send(
        app(),
        exchange_form(id_token, "repo:acme/x:write", &[("reason", "try")]),
        &[("host", "127.0.0.1:8080")],
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

#[tokio::test]
async fn a_revoked_identity_cannot_exchange_what_it_already_held() {
    let w = world().await;
    let before = alice(&w);
    let ok = exchange_form(&before, "repo:acme/api:read", &[]);
    assert_eq!(post(&w, ok.clone()).await.0, StatusCode::OK);

    // The security team revokes alice: her grants die, and so does her old identity token.
    w.state
        .store
        .revoke(
            &RevokeTarget::Subject("alice@example.com".into()),
            NOW * 1000,
        )
        .await
        .expect("revoke");
    let (status, json, _) = post(&w, ok).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
    assert_eq!(json["error"], "access_denied");
    let msg = json["error_description"].as_str().unwrap_or_default();
    assert!(
        msg.contains("was revoked") && msg.contains("git jit login"),
        "{msg}"
    );
    // Refreshing at the IdP keeps the original authentication time: still refused.
    let refreshed = w
        .iss
        .es256(
            AUD,
            NOW + 2,
            json!({"sub": "alice@example.com", "groups": ["engineering"], "auth_time": NOW - 60}),
        )
        .expose()
        .to_owned();
    let (status, _, _) = post(&w, exchange_form(&refreshed, "repo:acme/api:read", &[])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Bob is untouched; alice after authenticating again is welcome back.
    let bob = w
        .iss
        .es256(
            AUD,
            NOW,
            json!({"sub": "bob@example.com", "groups": ["engineering"]}),
        )
        .expose()
        .to_owned();
    assert_eq!(
        post(&w, exchange_form(&bob, "repo:acme/api:read", &[]))
            .await
            .0,
        StatusCode::OK
    );
    let again = w
        .iss
        .es256(
            AUD,
            NOW + 2,
            json!({"sub": "alice@example.com", "groups": ["engineering"]}),
        )
        .expose()
        .to_owned();
    let (status, json, _) = post(&w, exchange_form(&again, "repo:acme/api:read", &[])).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}
