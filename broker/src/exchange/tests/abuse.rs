//! Abuse limits and failures: body size, rate limits, X-Forwarded-For, fail-closed store, audit and issuer.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request as HttpRequest, StatusCode, header};
use tower::ServiceExt as _;

use super::*;

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

/// A proxy may append its own `X-Forwarded-For` line instead of extending the client's: the
/// client's own line (spoofable) must not name the client, in the audit or for the limits.
#[tokio::test]
async fn forged_identity_tokens_spend_their_address_budget_and_valid_ones_do_not() {
    let mut config = ExchangeConfig::default();
    config.rate_limit.refused_burst = 3;
    config.rate_limit.refused_per_minute = 1;
    let w = world_with(config).await;
    let app = || app_from(&w.state, [10, 0, 0, 7]);
    let forged = || exchange_form("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "repo:acme/api:read", &[]);
    for _ in 0..3 {
        let (status, json, _) = send(app(), forged(), &[]).await;
        assert_ne!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
        assert_ne!(status, StatusCode::OK, "{json}");
    }
    let audited = |events: &[AuditEvent]| {
        events
            .iter()
            .filter(|e| e.event == "grant.denied" && e.subject.is_none())
            .count()
    };
    let before = audited(&audit(&w).await);
    for _ in 0..20 {
        let (status, json, headers) = send(app(), forged(), &[]).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{json}");
        assert!(headers.contains_key(header::RETRY_AFTER));
    }
    // Past the budget the refusals are counted, not audited one by one.
    assert_eq!(audited(&audit(&w).await), before);
    // A valid identity token from the same address is not refused for the forgeries.
    let t = alice(&w);
    let (status, json, _) = send(app(), exchange_form(&t, "repo:acme/api:read", &[]), &[]).await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

#[tokio::test]
async fn the_last_forwarded_for_line_names_the_client() {
    let config = ExchangeConfig {
        trust_forwarded_for: true,
        ..Default::default()
    };
    let w = world_with(config).await;
    let t = alice(&w);
    let (status, json, _) = send(
        app_from(&w.state, [10, 0, 0, 9]),
        exchange_form(&t, "repo:acme/api:read", &[]),
        &[
            ("x-forwarded-for", "198.51.100.66"),
            ("x-forwarded-for", "10.1.1.1, 192.0.2.7"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let issued = audit(&w).await;
    assert_eq!(issued[0].client.as_deref(), Some("192.0.2.7"));
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
    w.store.grants_down.store(true, Ordering::SeqCst);
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
