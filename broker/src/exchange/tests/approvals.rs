//! Roles that need a person's yes, through the whole app: filing, polling (RFC 8628 codes),
//! deciding over `/v1/requests`, the token's lifetime from the approval, self-approval in
//! every disguise, and break-glass.

use super::*;
use crate::approval::Approvals;
use crate::store::RevokeTarget;
use axum::extract::FromRef;

const PROD: &str = "repo:acme/prod:write";

fn now(w: &World) -> i64 {
    w.clock.now_ms().div_euclid(1000)
}

/// A fresh ID token of `issuer` for `sub` with `extra` claims.
fn id_token(w: &World, github: bool, sub: &str, extra: Value) -> String {
    let mut claims = json!({ "sub": sub });
    if let (Some(c), Value::Object(e)) = (claims.as_object_mut(), extra) {
        c.extend(e);
    }
    let issuer = if github { &w.gh } else { &w.iss };
    issuer.es256(AUD, now(w), claims).expose().to_owned()
}

fn alice(w: &World) -> String {
    id_token(
        w,
        false,
        "alice@example.com",
        json!({"email": "alice@example.com", "email_verified": true}),
    )
}

fn bob(w: &World) -> String {
    id_token(
        w,
        false,
        "bob",
        json!({"email": "bob@example.com", "email_verified": true}),
    )
}

async fn ask(w: &World, token: &str, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut pairs = vec![("role", "prod"), ("reason", "hotfix INC-42")];
    pairs.extend_from_slice(extra);
    let (s, j, _) = post(w, exchange_form(token, PROD, &pairs)).await;
    (s, j)
}

async fn file(w: &World) -> String {
    let (s, j) = ask(w, &alice(w), &[("approval", "request")]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{j}");
    assert_eq!(j["error"], "authorization_pending", "{j}");
    j["request_id"].as_str().expect("request id").to_owned()
}

async fn poll(w: &World, id: &str) -> (StatusCode, Value) {
    w.clock.advance_ms(6_000);
    ask(w, &alice(w), &[("request_id", id)]).await
}

async fn call(
    w: &World,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = HttpRequest::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json");
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let resp = app_from(&w.state, [10, 0, 0, 9])
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn decide(w: &World, token: &str, id: &str, verb: &str, reason: &str) -> (StatusCode, Value) {
    let path = format!("/v1/requests/{id}/{verb}");
    call(w, "POST", &path, token, Some(json!({ "reason": reason }))).await
}

fn kinds(events: &[AuditEvent]) -> Vec<String> {
    events.iter().map(|e| e.event.as_str().to_owned()).collect()
}

#[tokio::test]
async fn filed_once_approved_by_another_collected_once_living_from_the_approval() {
    let w = world().await;
    let (s, j) = ask(&w, &alice(&w), &[]).await;
    assert_eq!(
        (s, j["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("approval_required")),
        "{j}"
    );
    let how = j["error_description"].as_str().unwrap_or_default();
    assert!(
        how.contains("git jit request --repo acme/prod --action write --role prod"),
        "{how}"
    );
    assert_eq!(j["approvers"][0], "bob or carol (corp)");

    let id = file(&w).await;
    // The identical ask finds the same request: approvers are not paged twice.
    assert_eq!(file(&w).await, id);
    let (s, j) = ask(&w, &alice(&w), &[("approval", "request")]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        (
            j["required"].as_u64(),
            j["approvals"].as_u64(),
            j["interval"].as_u64()
        ),
        (Some(1), Some(0), Some(5))
    );
    assert_eq!(j["expires_in"], 1800);

    let (s, j) = poll(&w, &id).await;
    assert_eq!(
        (s, j["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("authorization_pending"))
    );
    // Polled again at once: slow down, with the longer interval.
    let (s, j) = ask(&w, &alice(&w), &[("request_id", &id)]).await;
    assert_eq!(
        (s, j["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("slow_down")),
        "{j}"
    );
    assert_eq!(j["interval"], 10);

    // Ten minutes of waiting, then Bob approves: the token's clock starts now.
    w.clock.advance_ms(600_000);
    let approved_at = now(&w);
    let (s, j) = decide(&w, &bob(&w), &id, "approve", "looks right").await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["state"], "approved");
    assert_eq!(j["approved_at"], approved_at);

    let (s, j) = poll(&w, &id).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    // 15 minutes (the role's default) from the approval, 6 s of which passed before the poll.
    assert_eq!(j["expires_in"], 15 * 60 - 6);
    let jti = j["jti"].as_str().expect("jti").to_owned();
    let grants = w
        .store
        .inner
        .list(&GrantFilter::default(), w.clock.now_ms())
        .await
        .expect("grants");
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].req.as_deref(), Some(id.as_str()));
    assert_eq!(grants[0].exp, approved_at + 15 * 60);

    // Collected once.
    let (s, j) = poll(&w, &id).await;
    assert_eq!(
        (s, j["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{j}"
    );
    assert!(
        j["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains(&jti)
    );

    let events = audit(&w).await;
    let k = kinds(&events);
    for want in ["request.created", "request.approved", "grant.issued"] {
        assert_eq!(
            k.iter().filter(|e| *e == want).count(),
            1,
            "{want} once in {k:?}"
        );
    }
    let issued = events
        .iter()
        .find(|e| e.event.as_str() == "grant.issued")
        .expect("issued");
    assert_eq!(issued.data["request_id"], id.as_str());
    assert_eq!(issued.data["approved_at"], approved_at);
    let approved = events
        .iter()
        .find(|e| e.event.as_str() == "request.approved")
        .expect("approved");
    assert_eq!(approved.subject.as_deref(), Some("bob"));
    assert_eq!(approved.reason.as_deref(), Some("looks right"));
}

#[tokio::test]
async fn nobody_approves_their_own_request_in_any_disguise() {
    let w = world().await;
    let id = file(&w).await;
    let own = |d: &Value| {
        d["error_description"]
            .as_str()
            .is_some_and(|s| s.contains("your own request"))
    };
    // Alice herself.
    let (s, j) = decide(&w, &alice(&w), &id, "approve", "mine").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{j}");
    assert!(own(&j), "{j}");
    // Alice through another issuer that the role lists as an approver (same subject).
    let elsewhere = id_token(&w, true, "alice@example.com", json!({}));
    let (s, j) = decide(&w, &elsewhere, &id, "approve", "mine").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{j}");
    assert!(own(&j), "{j}");
    // Alice's second account with the same verified email, named as an approver ("carol").
    let second = id_token(
        &w,
        false,
        "carol",
        json!({"email": "Alice@Example.com", "email_verified": true}),
    );
    let (s, j) = decide(&w, &second, &id, "approve", "mine").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{j}");
    assert!(own(&j), "{j}");
    // Someone who is no approver.
    let mallory = id_token(&w, false, "mallory", json!({}));
    let (s, j) = decide(&w, &mallory, &id, "approve", "sure").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{j}");
    assert!(
        j["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("is not an approver")
    );
    // None of that moved it.
    let (s, j) = poll(&w, &id).await;
    assert_eq!(
        (s, j["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("authorization_pending"))
    );
    assert!(!kinds(&audit(&w).await).contains(&"request.approved".to_owned()));
}

#[tokio::test]
async fn one_person_counts_once_toward_two_approvals() {
    let w = world().await;
    let token = alice(&w);
    let (_, j, _) = post(
        &w,
        exchange_form(
            &token,
            "repo:acme/vault:read",
            &[("role", "prod-two"), ("approval", "request")],
        ),
    )
    .await;
    let id = j["request_id"].as_str().expect("id").to_owned();
    assert_eq!(j["required"], 2);
    let (s, j) = decide(&w, &bob(&w), &id, "approve", "one").await;
    assert_eq!(
        (s, j["state"].as_str()),
        (StatusCode::OK, Some("pending")),
        "{j}"
    );
    // Bob again, and Bob's second account with the same verified email ("dave").
    let (s, _) = decide(&w, &bob(&w), &id, "approve", "two").await;
    assert_eq!(s, StatusCode::CONFLICT);
    let bobs_other = id_token(
        &w,
        false,
        "dave",
        json!({"email": "bob@example.com", "email_verified": true}),
    );
    let (s, j) = decide(&w, &bobs_other, &id, "approve", "two").await;
    assert_eq!(s, StatusCode::CONFLICT, "{j}");
    assert!(
        j["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("already approved")
    );
    // An unverified email is no identity: carol counts.
    let carol = id_token(
        &w,
        false,
        "carol",
        json!({"email": "bob@example.com", "email_verified": false}),
    );
    let (s, j) = decide(&w, &carol, &id, "approve", "two").await;
    assert_eq!(
        (s, j["state"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{j}"
    );
    assert_eq!(j["approvals"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn denied_cancelled_expired_and_revoked_requests_issue_nothing() {
    let w = world().await;
    // Denied: the poll and a later plain exchange both say who denied it and why.
    let id = file(&w).await;
    let (s, _) = decide(&w, &bob(&w), &id, "deny", "not during the freeze").await;
    assert_eq!(s, StatusCode::OK);
    let (s, j) = poll(&w, &id).await;
    assert_eq!(
        (s, j["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("access_denied")),
        "{j}"
    );
    assert!(
        j["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("denied by bob (corp): not during the freeze")
    );
    let (s, j) = ask(&w, &alice(&w), &[]).await;
    assert_eq!(
        (s, j["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("approval_required"))
    );
    assert!(
        j["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("denied by bob"),
        "{j}"
    );
    assert_eq!(j["state"], "denied");
    // A decided request cannot be decided again.
    let (s, _) = decide(&w, &bob(&w), &id, "approve", "changed my mind").await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Cancelled by the requester (and by nobody else).
    let id = file(&w).await;
    let (s, _) = decide(&w, &bob(&w), &id, "cancel", "tidy").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, j) = decide(&w, &alice(&w), &id, "cancel", "not needed").await;
    assert_eq!(
        (s, j["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (s, j) = poll(&w, &id).await;
    assert_eq!(
        (s, j["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("access_denied"))
    );

    // Expired: nobody approved within 30 minutes; the sweep records it once.
    let id = file(&w).await;
    w.clock.advance_ms(31 * 60_000);
    let (s, _) = decide(&w, &bob(&w), &id, "approve", "late").await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "approving after the deadline issues nothing"
    );
    let (s, j) = poll(&w, &id).await;
    assert_eq!(
        (s, j["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("expired_token"))
    );
    let approvals = Approvals::from_ref(&w.state);
    assert_eq!(approvals.sweep().await.expect("sweep"), 1);
    assert_eq!(approvals.sweep().await.expect("sweep"), 0);

    // Revoked between filing and approval: approved, yet nothing is issued.
    let id = file(&w).await;
    w.clock.advance_ms(1000);
    w.store
        .inner
        .revoke(&RevokeTarget::Role("prod".into()), w.clock.now_ms())
        .await
        .expect("revoke");
    w.clock.advance_ms(1000);
    let (s, _) = decide(&w, &bob(&w), &id, "approve", "ok").await;
    assert_eq!(s, StatusCode::OK);
    let (s, j) = poll(&w, &id).await;
    assert_eq!(
        (s, j["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("access_denied")),
        "{j}"
    );
    assert!(
        j["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked after request")
    );

    assert!(
        w.store
            .inner
            .list(&GrantFilter::default(), w.clock.now_ms())
            .await
            .expect("grants")
            .is_empty(),
        "no request above issued anything"
    );
    let k = kinds(&audit(&w).await);
    for want in ["request.denied", "request.cancelled", "request.expired"] {
        assert!(k.contains(&want.to_owned()), "{want} in {k:?}");
    }
}

#[tokio::test]
async fn an_approval_collected_late_still_ends_ttl_after_the_approval() {
    let w = world().await;
    let id = file(&w).await;
    let (s, _) = decide(&w, &bob(&w), &id, "approve", "go").await;
    assert_eq!(s, StatusCode::OK);
    // Ten minutes later: five of the fifteen remain.
    w.clock.advance_ms(600_000 - 6_000);
    let (s, j) = poll(&w, &id).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["expires_in"], 5 * 60);

    let id2 = {
        let (_, j) = ask(&w, &alice(&w), &[("approval", "request"), ("ttl", "10m")]).await;
        j["request_id"].as_str().expect("id").to_owned()
    };
    assert_ne!(id2, id);
    let (s, _) = decide(&w, &bob(&w), &id2, "approve", "go").await;
    assert_eq!(s, StatusCode::OK);
    w.clock.advance_ms(11 * 60_000);
    let (s, j) = poll(&w, &id2).await;
    assert_eq!(
        (s, j["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("expired_token")),
        "{j}"
    );
}

#[tokio::test]
async fn others_requests_are_not_shown_and_polls_are_the_requesters_own() {
    let w = world().await;
    let id = file(&w).await;
    let list = |token: String| {
        let w = &w;
        async move { call(w, "GET", "/v1/requests?state=pending", &token, None).await }
    };
    let (s, j) = list(bob(&w)).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    assert_eq!(j["requests"][0]["id"], id.as_str());
    assert_eq!(j["requests"][0]["reason"], "hotfix INC-42");
    let mallory = id_token(&w, false, "mallory", json!({}));
    let (s, j) = list(mallory.clone()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(j["requests"], json!([]));
    let (s, _) = call(&w, "GET", &format!("/v1/requests/{id}"), &mallory, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Mallory polling Alice's request learns nothing and gets nothing.
    let (s, j, _) = post(
        &w,
        exchange_form(&mallory, PROD, &[("role", "prod"), ("request_id", &id)]),
    )
    .await;
    assert_eq!(
        (s, j["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "{j}"
    );
    // Bad input is named.
    let (s, j) = call(&w, "GET", "/v1/requests?state=open", &bob(&w), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        j["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("\"open\"")
    );
    let (s, _) = decide(&w, &bob(&w), "rq_NOT-AN-ID", "approve", "x").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, j) = decide(&w, &bob(&w), &id, "approve", "  ").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        j["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("reason is required")
    );
    let (s, _) = call(&w, "GET", "/v1/requests", "not-a-token", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn break_glass_is_named_reasoned_immediate_and_flagged() {
    let w = world().await;
    let oncall = id_token(&w, false, "olga", json!({"groups": ["oncall"]}));
    let scope = "repo:acme/api:write";
    // Never chosen for anyone.
    let (s, j, _) = post(
        &w,
        exchange_form(&oncall, scope, &[("reason", "prod is down INC-7")]),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{j}");
    // Named, but without a reason long enough.
    let (s, j, _) = post(
        &w,
        exchange_form(&oncall, scope, &[("role", "glass"), ("reason", "down")]),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{j}");
    assert!(
        j["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("at least 10 characters")
    );
    let (s, j, _) = post(
        &w,
        exchange_form(
            &oncall,
            scope,
            &[("role", "glass"), ("reason", "prod is down INC-7")],
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{j}");
    let grants = w
        .store
        .inner
        .list(&GrantFilter::default(), w.clock.now_ms())
        .await
        .expect("grants");
    assert_eq!(grants.len(), 1);
    assert!(grants[0].break_glass, "flagged for review in listings");
    let req = grants[0].req.clone().expect("a request is left behind");
    let events = audit(&w).await;
    let glass = events
        .iter()
        .find(|e| e.event.as_str() == "request.break_glass")
        .expect("event");
    assert_eq!(glass.data["request_id"], req.as_str());
    assert_eq!(glass.reason.as_deref(), Some("prod is down INC-7"));
    let issued = events
        .iter()
        .find(|e| e.event.as_str() == "grant.issued")
        .expect("issued");
    assert_eq!(issued.data["break_glass"], true);
}
