//! The admin API's handlers: `GET /v1/grants`, `POST /v1/revoke`, `GET /v1/audit`. Every
//! admin action is itself audited.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use jit_proto::admin::{
    AuditFormat, AuditParams, GrantInfo, GrantPage, GrantsQuery, NEXT_AFTER_SEQ_HEADER,
    NEXT_AUDIT_CURSOR_HEADER, RevokeRequest, RevokeResponse,
};
use jit_proto::display::csv_cell;

use crate::admin::AdminApi;
use crate::audit::{AuditEvent, AuditQuery};
use crate::error::ApiError;
use crate::store::{GrantFilter, ListCursor};

/// `GET /v1/grants`: live grants, filtered and paged.
pub async fn grants(
    State(state): State<AdminApi>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<GrantsQuery>,
) -> Result<Json<GrantPage>, ApiError> {
    let admin = state.authenticate(&headers, addr).await?;
    let repo = q
        .repo_path()
        .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let limit = q.page_size();
    let filter = GrantFilter {
        subject: q.subject.clone(),
        repo,
        role: q.role.clone(),
        issuer: q.issuer.clone(),
    };
    let after = q
        .cursor
        .as_deref()
        .map(|c| ListCursor::decode(c, &filter))
        .transpose()
        .map_err(|e| ApiError::invalid_request(format!("cursor: {e}")))?;
    let page = state
        .store
        .list_page(&filter, after.as_ref(), limit, state.clock.now_ms())
        .await?;
    let grants: Vec<GrantInfo> = page.grants.into_iter().map(GrantInfo::from).collect();
    let event = state
        .event("admin.grants", &admin, addr, &headers)
        .with("returned", grants.len());
    state.audit.record(event).await?;
    Ok(Json(GrantPage {
        grants,
        next_cursor: page.next.map(|c| c.encode(&filter)),
    }))
}

/// `POST /v1/revoke`: ends grants at once on every replica, in O(1): the watermark (one
/// token: its tombstone) is written, then the `grant.revoked` event, then the answer; the
/// ended records are tidied in the background.
pub async fn revoke(
    State(state): State<AdminApi>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<RevokeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let admin = state.authenticate(&headers, addr).await?;
    let Json(req) =
        body.map_err(|e| ApiError::invalid_request(format!("revoke body: {}", e.body_text())))?;
    Ok(Json(state.revoke(&admin, &req, addr, &headers).await?))
}

/// A time given as milliseconds since the epoch or RFC 3339; the error names `key`.
pub(crate) fn parse_time(key: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            ApiError::invalid_request(format!("{key}: {v:?} is neither milliseconds nor RFC 3339"))
        })
}

const CSV_HEADER: [&str; 14] = [
    "seq",
    "ts",
    "event",
    "subject",
    "idp",
    "repo",
    "scope",
    "role",
    "jti",
    "reason",
    "denial",
    "client",
    "user_agent",
    "hash",
];

/// The events as CSV (the `csv` crate quotes; every cell is made inert for spreadsheets and
/// terminals by [`csv_cell`]).
pub(crate) fn csv_body(events: &[AuditEvent]) -> Result<String, ApiError> {
    let internal = |e: &dyn std::fmt::Display| ApiError::Internal(format!("csv: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER).map_err(|e| internal(&e))?;
    for e in events {
        let fields = [
            Some(e.seq.to_string()),
            Some(e.ts.to_string()),
            Some(e.event.to_string()),
            e.subject.clone(),
            e.idp.clone(),
            e.repo.clone(),
            e.scope.clone(),
            e.role.clone(),
            e.jti.clone(),
            e.reason.clone(),
            e.denial.clone(),
            e.client.clone(),
            e.user_agent.clone(),
            Some(e.hash.clone()),
        ];
        w.write_record(fields.iter().map(|f| csv_cell(f.as_deref().unwrap_or(""))))
            .map_err(|e| internal(&e))?;
    }
    let bytes = w.into_inner().map_err(|e| internal(&e))?;
    String::from_utf8(bytes).map_err(|e| internal(&e))
}

/// `GET /v1/audit`: events in time order (merged over every replica's chain), as JSON lines
/// or CSV; page with `cursor` (the `x-next-cursor` of the previous page), or with
/// `after_seq` on a store holding one replica's chain (`x-next-after-seq`).
pub async fn audit(
    State(state): State<AdminApi>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(p): Query<AuditParams>,
) -> Result<Response, ApiError> {
    let admin = state.authenticate(&headers, addr).await?;
    let format = p
        .format()
        .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let limit = p.page_size();
    let query = AuditQuery {
        from_ms: p
            .from
            .as_deref()
            .map(|v| parse_time("from", v))
            .transpose()?,
        to_ms: p.to.as_deref().map(|v| parse_time("to", v)).transpose()?,
        event: p.event.clone(),
        subject: p.subject.clone(),
        repo: p.repo.clone(),
        after_seq: p.after_seq,
        cursor: p
            .cursor()
            .map_err(|e| ApiError::invalid_request(e.to_string()))?,
        limit,
    };
    let page = state.store.read_audit_page(&query).await?;
    let events: Vec<AuditEvent> = page.events;
    let record = state
        .event("admin.audit", &admin, addr, &headers)
        .with("returned", events.len());
    state.audit.record(record).await?;
    let (content_type, body) = if format == AuditFormat::Csv {
        ("text/csv; charset=utf-8", csv_body(&events)?)
    } else {
        let mut out = String::new();
        for e in &events {
            out.push_str(&serde_json::to_string(e).map_err(|e| ApiError::Internal(e.to_string()))?);
            out.push('\n');
        }
        ("application/x-ndjson", out)
    };
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(v) = page
        .next_after_seq
        .and_then(|seq| HeaderValue::from_str(&seq.to_string()).ok())
    {
        resp.headers_mut().insert(NEXT_AFTER_SEQ_HEADER, v);
    }
    if let Some(v) = page
        .next
        .and_then(|c| HeaderValue::from_str(&c.encode()).ok())
    {
        resp.headers_mut().insert(NEXT_AUDIT_CURSOR_HEADER, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt as _;
    use jit_proto::{Claims, Scope};
    use serde_json::{Value, json};
    use tower::ServiceExt as _;

    use super::*;
    use crate::admin::{AdminConfig, AdminPolicy};
    use crate::clock::ManualClock;
    use crate::identity::testissuer::TestIssuer;
    use crate::identity::{CacheTimes, Verifier};
    use crate::policy::{CompiledPolicy, RoleConfig};
    use crate::state::AppState;
    use crate::store::Grant;
    use crate::store::GrantStore;
    use crate::store::RevokeTarget;
    use crate::store::memory::MemoryStore;
    use crate::token::new_jti;
    use axum::http::StatusCode;

    const NOW: i64 = 1_700_000_000;
    const AUD: &str = "git-jit-test";

    struct World {
        iss: TestIssuer,
        state: AppState,
        store: Arc<MemoryStore>,
    }

    async fn world() -> World {
        world_on(Arc::new(ManualClock::new(NOW * 1000))).await
    }

    /// A world whose handlers ask `clock` the time.
    async fn world_on(clock: Arc<dyn crate::clock::Clock>) -> World {
        let iss = TestIssuer::start().await;
        let issuers = vec![iss.config("corp", AUD)];
        #[derive(serde::Deserialize)]
        struct Roles {
            role: Vec<RoleConfig>,
        }
        let roles: Roles = toml::from_str(
            r#"
[[role]]
name = "dev"
issuer = "corp"
repositories = ["acme/*"]
actions = ["read"]

[[role]]
name = "security-admin"
issuer = "corp"
claims = { groups = "security" }
repositories = ["acme/*"]
actions = ["read"]
"#,
        )
        .expect("roles");
        let admin: AdminConfig = toml::from_str(
            r#"
roles = ["security-admin"]
[[identity]]
issuer = "corp"
claims = { groups = "security" }
"#,
        )
        .expect("admin config");
        let policy = CompiledPolicy::compile(&issuers, &roles.role).expect("policy");
        let admins = AdminPolicy::compile(&admin, |n| n == "corp").expect("admins");
        let store = Arc::new(MemoryStore::new(1000));
        let state = AppState::for_tests(store.clone(), clock)
            .with_access(
                Verifier::new(&issuers, CacheTimes::default()).expect("verifier"),
                policy,
                Default::default(),
            )
            .with_admins(admins);
        World { iss, state, store }
    }

    fn id_token(w: &World, sub: &str, groups: &str) -> String {
        w.iss
            .es256(AUD, NOW, json!({"sub": sub, "groups": [groups]}))
            .expose()
            .to_owned()
    }

    /// Issues a broker token as an exchange would, storing its grant.
    async fn broker_token(w: &World, sub: &str, role: &str, repo: &str) -> (String, String) {
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
            role: role.into(),
            reason: None,
            req: None,
        };
        w.store
            .put(&Grant::from_claims(&claims, NOW * 1000 - 1), NOW * 1000)
            .await
            .expect("put");
        (
            w.state
                .signer
                .sign(&claims)
                .expect("sign")
                .expose()
                .to_owned(),
            claims.jti,
        )
    }

    async fn call(
        w: &World,
        method: &str,
        uri: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let app = crate::app(w.state.clone()).layer(axum::Extension(ConnectInfo(
            SocketAddr::from(([10, 0, 0, 9], 4000)),
        )));
        let resp = app
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

    async fn events(w: &World, kind: &str) -> Vec<AuditEvent> {
        let q = AuditQuery {
            event: Some(kind.into()),
            limit: 1000,
            ..Default::default()
        };
        w.store.read_audit(&q).await.expect("audit")
    }

    #[tokio::test]
    async fn only_admins_get_in() {
        let w = world().await;
        let (s, _, body) = call(&w, "GET", "/v1/grants", None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
        let (s, _, _) = call(&w, "GET", "/v1/grants", Some("garbage"), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let dev = id_token(&w, "bob@example.com", "engineering");
        let (s, _, body) = call(&w, "GET", "/v1/grants", Some(&dev), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert!(
            body.contains("bob@example.com (issuer corp) is not an admin"),
            "{body}"
        );
        // A broker token of a non-admin role is not an admin credential either.
        let (dev_token, _) = broker_token(&w, "bob@example.com", "dev", "acme/api").await;
        let (s, _, body) = call(
            &w,
            "POST",
            "/v1/revoke",
            Some(&dev_token),
            Some(json!({"by": "all", "reason": "x"})),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(
            w.store
                .list(&GrantFilter::default(), NOW * 1000)
                .await
                .expect("list")
                .len(),
            1,
            "nothing revoked"
        );

        let admin = id_token(&w, "sec@example.com", "security");
        let (s, _, body) = call(&w, "GET", "/v1/grants", Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let page: GrantPage = serde_json::from_str(&body).expect("page");
        assert_eq!(page.grants.len(), 1);
        assert_eq!(page.next_cursor, None);
        assert_eq!(page.grants[0].sub, "bob@example.com");
        assert!(!body.contains(&dev_token), "never the token itself");
        let listed = events(&w, "admin.grants").await;
        assert_eq!(listed.len(), 1, "admin actions are audited");
        assert_eq!(listed[0].subject.as_deref(), Some("sec@example.com"));

        // Every refusal above is audited, naming the caller as far as it verified.
        let refused = events(&w, "admin.denied").await;
        assert_eq!(refused.len(), 4, "{refused:?}");
        assert_eq!(refused[0].subject, None);
        assert!(
            refused[0]
                .denial
                .as_deref()
                .is_some_and(|d| d.contains("needs Authorization"))
        );
        assert_eq!(refused[2].subject.as_deref(), Some("bob@example.com"));
        assert!(
            refused[3].jti.is_some(),
            "a broker token is named by its jti"
        );
        assert!(
            refused
                .iter()
                .all(|e| e.client.as_deref() == Some("10.0.0.9"))
        );
        assert!(
            refused
                .iter()
                .all(|e| e.lane == Some(crate::audit::Lane::Traffic))
        );
    }

    /// Refused admin calls share the address's budget of refused credentials: past it, 429
    /// with Retry-After, one `access.limited` summary, and nothing more in the trail.
    #[tokio::test]
    async fn refused_admin_calls_past_the_budget_are_429s() {
        let w = world().await;
        let burst = crate::config::RateLimitConfig::default().refused_burst as usize;
        for _ in 0..burst {
            let (s, _, _) = call(&w, "GET", "/v1/grants", Some("garbage"), None).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED);
        }
        for _ in 0..20 {
            let (s, h, _) = call(&w, "GET", "/v1/grants", Some("garbage"), None).await;
            assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
            assert!(h.get(header::RETRY_AFTER).is_some());
        }
        assert_eq!(events(&w, "admin.denied").await.len(), burst);
        let summaries = events(&w, "access.limited").await;
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].data["via"], "admin");
        assert_eq!(summaries[0].data["refused"], 1);
        // An admin is not held back by others' refusals from the same address.
        let admin = id_token(&w, "sec@example.com", "security");
        let (s, _, _) = call(&w, "GET", "/v1/grants", Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK);
    }

    #[tokio::test]
    async fn revoke_by_each_target_counts_and_is_audited() {
        let w = world().await;
        let admin = id_token(&w, "sec@example.com", "security");
        broker_token(&w, "alice", "dev", "acme/api").await;
        broker_token(&w, "alice", "dev", "acme/web").await;
        let (_, bob_jti) = broker_token(&w, "bob", "dev", "acme/api").await;

        let bad = [
            json!({"by": "subject", "value": "alice"}),
            json!({"by": "subject", "value": "alice", "reason": "  "}),
            json!({"by": "subject", "reason": "x"}),
            json!({"by": "all", "value": "x", "reason": "x"}),
            json!({"by": "team", "value": "x", "reason": "x"}),
            json!({"by": "repo", "value": "acme/../x", "reason": "x"}),
        ];
        for b in bad {
            let (s, _, body) = call(&w, "POST", "/v1/revoke", Some(&admin), Some(b.clone())).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{b}: {body}");
        }
        assert_eq!(
            w.store
                .list(&GrantFilter::default(), NOW * 1000)
                .await
                .expect("list")
                .len(),
            3,
            "refusals change nothing"
        );

        let req = json!({"by": "subject", "value": "alice", "reason": "laptop stolen"});
        let (s, _, body) = call(&w, "POST", "/v1/revoke", Some(&admin), Some(req)).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let r: RevokeResponse = serde_json::from_str(&body).expect("json");
        assert_eq!(
            (r.at_most, r.tidy_pending, r.target.as_str()),
            (2, true, "sub alice")
        );
        let left = w
            .store
            .list(&GrantFilter::default(), NOW * 1000)
            .await
            .expect("list");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].sub, "bob");

        let req = json!({"by": "jti", "value": bob_jti, "reason": "done"});
        let (_, _, body) = call(&w, "POST", "/v1/revoke", Some(&admin), Some(req)).await;
        assert_eq!(
            serde_json::from_str::<RevokeResponse>(&body)
                .expect("json")
                .at_most,
            1
        );

        let revoked = events(&w, "grant.revoked").await;
        assert_eq!(revoked.len(), 2);
        assert_eq!(revoked[0].reason.as_deref(), Some("laptop stolen"));
        assert_eq!(revoked[0].subject.as_deref(), Some("sec@example.com"));
        assert_eq!(revoked[0].data["at_most"], 2);
    }

    #[tokio::test]
    async fn grants_page_by_cursor_and_bad_cursors_are_named() {
        let w = world().await;
        let admin = id_token(&w, "sec@example.com", "security");
        for repo in ["acme/a", "acme/b", "acme/c"] {
            broker_token(&w, "alice", "dev", repo).await;
        }
        let mut seen = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let path = match &next {
                Some(c) => format!("/v1/grants?subject=alice&limit=2&cursor={c}"),
                None => "/v1/grants?subject=alice&limit=2".to_owned(),
            };
            let (s, _, body) = call(&w, "GET", &path, Some(&admin), None).await;
            assert_eq!(s, StatusCode::OK, "{body}");
            let page: GrantPage = serde_json::from_str(&body).expect("page");
            assert!(page.grants.len() <= 2);
            seen.extend(page.grants.into_iter().map(|g| g.scope.repo.to_string()));
            match page.next_cursor {
                Some(c) => next = Some(c),
                None => break,
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            ["acme/a", "acme/b", "acme/c"],
            "each grant exactly once"
        );

        let (_, _, body) = call(
            &w,
            "GET",
            "/v1/grants?subject=alice&limit=1",
            Some(&admin),
            None,
        )
        .await;
        let page: GrantPage = serde_json::from_str(&body).expect("page");
        let cursor = page.next_cursor.expect("more to come");
        let cases = [
            (format!("/v1/grants?cursor={cursor}"), "other filters"),
            ("/v1/grants?cursor=%25%25".to_owned(), "garbled"),
            ("/v1/grants?cursor=bm90LWEtY3Vyc29y".to_owned(), "garbled"),
            (
                format!("/v1/grants?cursor={}", "A".repeat(600)),
                "longer than",
            ),
        ];
        for (path, why) in cases {
            let (s, _, body) = call(&w, "GET", &path, Some(&admin), None).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert!(
                body.contains("cursor") && body.contains(why),
                "{path}: {body}"
            );
        }
    }

    #[tokio::test]
    async fn admin_broker_tokens_work_until_revoked() {
        let w = world().await;
        let (token, jti) = broker_token(&w, "sec@example.com", "security-admin", "acme/api").await;
        let (s, _, body) = call(&w, "GET", "/v1/grants", Some(&token), None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        w.store
            .revoke(&RevokeTarget::Jti(jti), NOW * 1000)
            .await
            .expect("revoke");
        let (s, _, body) = call(&w, "GET", "/v1/grants", Some(&token), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    }

    #[tokio::test]
    async fn audit_reads_jsonl_and_csv_with_paging() {
        let w = world().await;
        let admin = id_token(&w, "sec@example.com", "security");
        for i in 0..5 {
            let mut e = AuditEvent::new("access.allowed", NOW * 1000 + i);
            e.subject = Some("alice, \"the\" dev".into());
            e.repo = Some("acme/api".into());
            w.state.audit.record(e).await.expect("record");
        }
        let (s, headers, body) = call(
            &w,
            "GET",
            "/v1/audit?event=access.allowed&limit=3",
            Some(&admin),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let page: Vec<AuditEvent> = body
            .lines()
            .map(|l| serde_json::from_str(l).expect("line"))
            .collect();
        assert_eq!(page.len(), 3);
        let next = headers
            .get("x-next-after-seq")
            .and_then(|v| v.to_str().ok())
            .expect("more pages");
        let (_, headers, body) = call(
            &w,
            "GET",
            &format!("/v1/audit?event=access.allowed&limit=3&after_seq={next}"),
            Some(&admin),
            None,
        )
        .await;
        assert_eq!(body.lines().count(), 2);
        assert!(headers.get("x-next-after-seq").is_none());

        let (s, headers, body) = call(
            &w,
            "GET",
            "/v1/audit?format=csv&repo=acme/api",
            Some(&admin),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("text/csv; charset=utf-8")
        );
        let mut lines = body.lines();
        assert_eq!(lines.next(), Some(CSV_HEADER.join(",").as_str()));
        assert!(
            lines
                .next()
                .expect("row")
                .contains(",\"alice, \"\"the\"\" dev\","),
            "{body}"
        );
        let (s, _, _) = call(&w, "GET", "/v1/audit?format=xml", Some(&admin), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, _, _) = call(&w, "GET", "/v1/audit?from=yesterday", Some(&admin), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(
            events(&w, "admin.audit").await.len(),
            3,
            "reading the trail is audited too"
        );
        let all = w
            .store
            .read_audit(&AuditQuery {
                limit: usize::MAX,
                ..Default::default()
            })
            .await
            .expect("all");
        assert!(crate::audit::verify_chain(&all).is_ok());
    }

    /// Regression: a revoked admin's old ID token kept full admin access.
    #[tokio::test]
    async fn a_revoked_admin_is_no_admin() {
        let w = world().await;
        let admin = id_token(&w, "sec@example.com", "security");
        let (s, _, _) = call(&w, "GET", "/v1/grants", Some(&admin), None).await;
        assert_eq!(s, StatusCode::OK);
        w.store
            .revoke(&RevokeTarget::Subject("sec@example.com".into()), NOW * 1000)
            .await
            .expect("revoke");
        let (s, _, body) = call(&w, "GET", "/v1/grants", Some(&admin), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("was revoked"), "{body}");
        let req = json!({"by": "all", "reason": "take over"});
        let (s, _, _) = call(&w, "POST", "/v1/revoke", Some(&admin), Some(req)).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        // Authenticating again at the IdP restores it.
        let again = w
            .iss
            .es256(
                AUD,
                NOW + 2,
                json!({"sub": "sec@example.com", "groups": ["security"]}),
            )
            .expose()
            .to_owned();
        let (s, _, _) = call(&w, "GET", "/v1/grants", Some(&again), None).await;
        assert_eq!(s, StatusCode::OK);
    }

    /// A clock that notes which thread asks it the time: where a handler's body runs.
    struct ThreadSpy {
        clock: ManualClock,
        threads: std::sync::Mutex<Vec<Option<String>>>,
    }

    impl ThreadSpy {
        fn take(&self) -> Vec<Option<String>> {
            std::mem::take(&mut *self.threads.lock().expect("lock"))
        }
    }

    impl crate::clock::Clock for ThreadSpy {
        fn now_ms(&self) -> i64 {
            let name = std::thread::current().name().map(str::to_owned);
            self.threads.lock().expect("lock").push(name);
            self.clock.now_ms()
        }
    }

    /// Admin reads run on the admin runtime's thread, with the request's id; revocations and
    /// `/authz` stay on the request runtime.
    #[tokio::test]
    async fn admin_reads_run_on_the_admin_runtime_and_keep_their_request_id() {
        use crate::runtime::{AdminRuntime, THREAD_NAME};
        let spy = Arc::new(ThreadSpy {
            clock: ManualClock::new(NOW * 1000),
            threads: Default::default(),
        });
        let mut w = world_on(spy.clone()).await;
        w.state = w
            .state
            .clone()
            .with_admin_runtime(AdminRuntime::start().expect("admin runtime"));
        let admin = id_token(&w, "sec@example.com", "security");
        broker_token(&w, "alice", "dev", "acme/api").await;
        let admin_thread = Some(THREAD_NAME.to_owned());
        let here = std::thread::current().name().map(str::to_owned);
        assert_ne!(here, admin_thread);

        for path in ["/v1/grants", "/v1/audit", "/v1/requests"] {
            spy.take();
            let (s, headers, body) = call(&w, "GET", path, Some(&admin), None).await;
            assert_eq!(s, StatusCode::OK, "{path}: {body}");
            let seen = spy.take();
            assert!(!seen.is_empty(), "{path}: the handler asked the time");
            assert!(
                seen.iter().all(|t| *t == admin_thread),
                "{path} ran on {seen:?}"
            );
            if path == "/v1/grants" {
                let id = headers
                    .get(&crate::http::REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .expect("request id");
                let listed = events(&w, "admin.grants").await;
                assert_eq!(listed[0].data.get("request_id"), Some(&id.into()));
            }
        }
        // A refused read is refused there too, and audited.
        spy.take();
        let (s, _, _) = call(&w, "GET", "/v1/grants", Some("garbage"), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(spy.take().iter().all(|t| *t == admin_thread));
        assert_eq!(events(&w, "admin.denied").await.len(), 1);

        // A revocation stays on the request runtime: it never waits behind an export.
        let req = json!({"by": "subject", "value": "alice", "reason": "laptop stolen"});
        let (s, _, body) = call(&w, "POST", "/v1/revoke", Some(&admin), Some(req)).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let seen = spy.take();
        assert!(
            !seen.is_empty() && seen.iter().all(|t| *t == here),
            "{seen:?}"
        );
        let (_, _, body) = call(&w, "GET", "/v1/grants", Some(&admin), None).await;
        let page: GrantPage = serde_json::from_str(&body).expect("page");
        assert!(page.grants.is_empty(), "revoked: {body}");
    }

    #[test]
    fn csv_cells_cannot_become_formulas_or_terminal_escapes() {
        let mut e = AuditEvent::new("access.denied", 1);
        e.subject = Some("=HYPERLINK(\"http://x\")".into());
        e.denial = Some("refs/heads/\u{1b}]8;;x\u{7}evil: not allowed".into());
        e.reason = Some("a,b".into());
        let body = csv_body(&[e]).expect("csv");
        let row = body.lines().nth(1).expect("row");
        assert!(row.contains(",\"'=HYPERLINK(\"\"http://x\"\")\","), "{row}");
        assert!(row.contains("refs/heads/\\u{1b}]8;;x\\u{7}evil"), "{row}");
        assert!(!body.contains('\u{1b}'), "{body:?}");
        assert!(row.contains(",\"a,b\","), "{row}");
        let mut reader = csv::Reader::from_reader(body.as_bytes());
        let records: Vec<_> = reader.records().collect::<Result<_, _>>().expect("parses");
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].len(), CSV_HEADER.len());
    }

    #[test]
    fn config_refusals_name_the_key() {
        let cfg: AdminConfig =
            toml::from_str("[[identity]]\nissuer = \"nope\"\nclaims = { groups = \"x\" }")
                .expect("toml");
        let err = AdminPolicy::compile(&cfg, |n| n == "corp").expect_err("unknown issuer");
        assert_eq!(err.0, "admin.identity[0].issuer");
        let cfg: AdminConfig = toml::from_str("[[identity]]\nissuer = \"corp\"").expect("toml");
        let err = AdminPolicy::compile(&cfg, |n| n == "corp").expect_err("no conditions");
        assert_eq!(err.0, "admin.identity[0].claims");
    }
}
