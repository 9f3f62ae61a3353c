//! The pages that read the audit trail: the Trail (search, chain check, export) and a
//! repository's timeline.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::audit::{AuditEvent, AuditQuery};
use crate::console::pages::{self, ChainStatus, Notice, RepoWindow, TrailSearch};
use crate::error::ApiError;

use super::{Console, MAX_EXPORT, TRAIL_PAGE, explain, html, some};

/// The Trail page's query.
#[derive(Debug, Default, Deserialize)]
pub(super) struct TrailQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    repo: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    after: u64,
    /// Where the page starts (the previous page's next-page link).
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    verify: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

impl TrailQuery {
    fn search(&self) -> TrailSearch {
        TrailSearch {
            from: self.from.trim().to_owned(),
            to: self.to.trim().to_owned(),
            subject: self.subject.trim().to_owned(),
            repo: self.repo.trim().to_owned(),
            event: self.event.trim().to_owned(),
        }
    }

    fn audit_query(&self, limit: usize) -> Result<AuditQuery, ApiError> {
        let time = |key, v: &str| {
            some(v)
                .map(|v| crate::http::admin::parse_time(key, &v))
                .transpose()
        };
        Ok(AuditQuery {
            from_ms: time("from", &self.from)?,
            to_ms: time("to", &self.to)?,
            event: some(&self.event),
            subject: some(&self.subject),
            repo: some(&self.repo),
            after_seq: self.after,
            cursor: some(&self.cursor)
                .map(|c| crate::audit::AuditCursor::decode(&c))
                .transpose()
                .map_err(|e| ApiError::invalid_request(e.to_string()))?,
            limit,
        })
    }
}

/// `GET /console/trail`: the audit trail searched, oldest first; `verify=1` checks the chain.
pub(super) async fn trail(
    State(c): State<Console>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<TrailQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match c.signed(&headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let search = q.search();
    let aq = match q.audit_query(TRAIL_PAGE) {
        Ok(aq) => aq,
        Err(e) => {
            let (status, m) = explain(e);
            let page = pages::trail(
                &s.frame(),
                &search,
                &[],
                None,
                None,
                Some(&Notice::Error(m)),
            );
            return html(status, page);
        }
    };
    let (events, next) = match c.admin.store.read_audit_page(&aq).await {
        Ok(p) => (p.events, p.next.map(|c| c.encode())),
        Err(e) => return s.error(e.into()),
    };
    let chain = match q.verify.as_deref() {
        Some(_) => Some(verify_chain(&c).await),
        None => None,
    };
    let event = c
        .admin
        .event("admin.audit", &s.admin(), addr, &headers)
        .with("returned", events.len())
        .with("via", "console");
    if let Err(e) = c.admin.audit.record(event).await {
        return s.error(e.into());
    }
    html(
        StatusCode::OK,
        pages::trail(
            &s.frame(),
            &search,
            &events,
            next.as_deref(),
            chain.as_ref(),
            None,
        ),
    )
}

/// Checks the hash chain of every event kept in the store, and the checkpoints' signatures
/// with the broker's own keys, as `jit-broker audit verify` does.
async fn verify_chain(c: &Console) -> ChainStatus {
    let ring = c.admin.signer.keys();
    let keys = |kid: &str, message: &[u8], sig: &str| {
        crate::recorder::key_ring_verifies(ring, kid, message, sig)
    };
    match crate::recorder::verify::verify_store(c.admin.store.as_ref(), &keys, 5000).await {
        Ok(report) => ChainStatus::Intact(report.replace('\n', "; ")),
        Err(e) => ChainStatus::Broken(e.to_string()),
    }
}

/// `GET /console/trail/export?format=csv|jsonl&<search>`: the matching events as a download,
/// oldest first, at most [`MAX_EXPORT`]; the same CSV as `GET /v1/audit` (cells made inert
/// for spreadsheets).
pub(super) async fn export(
    State(c): State<Console>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<TrailQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match c.signed(&headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Ok(Query(q)) = query else {
        return s.error(ApiError::invalid_request("the search does not parse"));
    };
    let csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("jsonl") => false,
        _ => return s.error(ApiError::invalid_request("format must be csv or jsonl")),
    };
    let mut aq = match q.audit_query(5000) {
        Ok(aq) => aq,
        Err(e) => return s.error(e),
    };
    let mut events: Vec<AuditEvent> = Vec::new();
    loop {
        let page = match c.admin.store.read_audit_page(&aq).await {
            Ok(p) => p,
            Err(e) => return s.error(e.into()),
        };
        events.extend(page.events);
        match page.next {
            Some(next) if events.len() < MAX_EXPORT => aq.cursor = Some(next),
            _ => break,
        }
    }
    events.truncate(MAX_EXPORT);
    let event = c
        .admin
        .event("admin.audit", &s.admin(), addr, &headers)
        .with("returned", events.len())
        .with("via", "console")
        .with("export", if csv { "csv" } else { "jsonl" });
    if let Err(e) = c.admin.audit.record(event).await {
        return s.error(e.into());
    }
    let (content_type, name, body) = if csv {
        match crate::http::admin::csv_body(&events) {
            Ok(b) => ("text/csv; charset=utf-8", "audit.csv", b),
            Err(e) => return s.error(e),
        }
    } else {
        let mut out = String::new();
        for e in &events {
            match serde_json::to_string(e) {
                Ok(line) => out.push_str(&line),
                Err(e) => return s.error(ApiError::Internal(e.to_string())),
            }
            out.push('\n');
        }
        ("application/x-ndjson", "audit.jsonl", out)
    };
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// The Repository page's query.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RepoQuery {
    #[serde(default)]
    repo: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// Events read for one timeline, per kind of read.
pub const TIMELINE_EVENTS: usize = 5000;
/// How far before the window grants are looked for (the longest a grant can live is shorter).
pub const TIMELINE_LOOKBACK_MS: i64 = 24 * 3600 * 1000;

/// `GET /console/repo?repo=…&from=…&to=…`: the repository's timeline (default: the last 24
/// hours).
pub(super) async fn repository(
    State(c): State<Console>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<RepoQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match c.signed(&headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let choice = RepoWindow {
        repo: q.repo.trim().to_owned(),
        from: q.from.trim().to_owned(),
        to: q.to.trim().to_owned(),
    };
    if choice.repo.is_empty() {
        return html(
            StatusCode::OK,
            pages::repository(&s.frame(), &choice, None, None),
        );
    }
    let bad = |m: String| {
        html(
            StatusCode::BAD_REQUEST,
            pages::repository(&s.frame(), &choice, None, Some(&Notice::Error(m))),
        )
    };
    let repo = match jit_proto::RepoPath::parse(&choice.repo) {
        Ok(r) => r.to_string(),
        Err(e) => return bad(format!("repository: {e}")),
    };
    let time = |key, v: &str| {
        some(v)
            .map(|v| crate::http::admin::parse_time(key, &v))
            .transpose()
    };
    let (from, to) = match (time("from", &choice.from), time("to", &choice.to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(e), _) | (_, Err(e)) => return bad(explain(e).1),
    };
    let to_ms = to.unwrap_or_else(|| c.admin.clock.now_ms());
    let from_ms = from.unwrap_or(to_ms - TIMELINE_LOOKBACK_MS);
    if from_ms >= to_ms {
        return bad("the window must start before it ends".into());
    }
    let store = &c.admin.store;
    let of_repo = AuditQuery {
        from_ms: Some(from_ms - TIMELINE_LOOKBACK_MS),
        to_ms: Some(to_ms),
        repo: Some(repo.clone()),
        limit: TIMELINE_EVENTS,
        ..Default::default()
    };
    let repo_events = match store.read_audit(&of_repo).await {
        Ok(e) => e,
        Err(e) => return s.error(e.into()),
    };
    let revoked = AuditQuery {
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        event: Some("grant.revoked".into()),
        limit: TIMELINE_EVENTS,
        ..Default::default()
    };
    let revocations = match store.read_audit(&revoked).await {
        Ok(e) => e,
        Err(e) => return s.error(e.into()),
    };
    let timeline =
        crate::console::timeline::build(&repo, from_ms, to_ms, &repo_events, &revocations);
    let event = c
        .admin
        .event("admin.audit", &s.admin(), addr, &headers)
        .with("returned", repo_events.len() + revocations.len())
        .with("via", "console")
        .with("timeline", repo.as_str());
    if let Err(e) = c.admin.audit.record(event).await {
        return s.error(e.into());
    }
    let full = repo_events.len() == TIMELINE_EVENTS || revocations.len() == TIMELINE_EVENTS;
    let notice = full.then(|| {
        Notice::Error(format!(
            "only the first {TIMELINE_EVENTS} events of the window are drawn; choose a shorter window"
        ))
    });
    html(
        StatusCode::OK,
        pages::repository(&s.frame(), &choice, Some(&timeline), notice.as_ref()),
    )
}
