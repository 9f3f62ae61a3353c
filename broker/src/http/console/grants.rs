//! The Now page: live grants, their live stream, and revocations (one from its row, or every
//! grant of a subject, repository, role or issuer after a confirmation that counts them).

use std::net::SocketAddr;

use axum::Form;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use jit_proto::admin::{RevokeBy, RevokeRequest};
use serde::Deserialize;

use crate::console::cookie;
use crate::console::pages::{self, Count, GrantFilterText, Notice};
use crate::error::ApiError;
use crate::store::{GrantFilter, ListCursor};

use super::{Console, MAX_COUNTED, PAGE, WATCH_EVERY, html, some};

/// The Now page's query.
#[derive(Debug, Default, Deserialize)]
pub(super) struct NowQuery {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    repo: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    cursor: String,
}

fn grant_filter(t: &GrantFilterText) -> Result<GrantFilter, String> {
    Ok(GrantFilter {
        subject: some(&t.subject),
        repo: some(&t.repo)
            .map(|r| jit_proto::RepoPath::parse(&r))
            .transpose()
            .map_err(|e| format!("repository: {e}"))?,
        role: some(&t.role),
        issuer: some(&t.issuer),
    })
}

/// `GET /console`: live grants.
pub(super) async fn now(
    State(c): State<Console>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<NowQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match c.signed(&headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let text = GrantFilterText {
        subject: q.subject,
        repo: q.repo,
        role: q.role,
        issuer: q.issuer,
    };
    let now_ms = c.admin.clock.now_ms();
    let filter = match grant_filter(&text) {
        Ok(f) => f,
        Err(why) => {
            let page = pages::now(
                &s.frame(),
                &text,
                &[],
                None,
                now_ms,
                Some(&Notice::Error(why)),
            );
            return html(StatusCode::BAD_REQUEST, page);
        }
    };
    let after = match some(&q.cursor)
        .map(|c| ListCursor::decode(&c, &filter))
        .transpose()
    {
        Ok(a) => a,
        Err(e) => return s.error(ApiError::invalid_request(format!("cursor: {e}"))),
    };
    let page = match c
        .admin
        .store
        .list_page(&filter, after.as_ref(), PAGE, now_ms)
        .await
    {
        Ok(p) => p,
        Err(e) => return s.error(e.into()),
    };
    let event = c
        .admin
        .event("admin.grants", &s.admin(), addr, &headers)
        .with("returned", page.grants.len())
        .with("via", "console");
    if let Err(e) = c.admin.audit.record(event).await {
        return s.error(e.into());
    }
    let next = page.next.map(|n| n.encode(&filter));
    html(
        StatusCode::OK,
        pages::now(
            &s.frame(),
            &text,
            &page.grants,
            next.as_deref(),
            now_ms,
            None,
        ),
    )
}

/// `GET /console/events?<the Now page's filter>`: server-sent events for the Now page, an
/// event `grants` whenever the first page of live grants under the filter changes (issued,
/// revoked or expired anywhere: the store is read, so a revocation from the CLI or another
/// replica shows within [`WATCH_EVERY`]). The page's script then fetches the page again. The
/// stream ends when the session does; watching does not keep an idle session alive.
pub(super) async fn events(
    State(c): State<Console>,
    headers: HeaderMap,
    query: Result<Query<NowQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match c.signed(&headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(id) = cookie(&headers, s.site.cookie_name()).map(str::to_owned) else {
        return s.error(ApiError::invalid_request("no session"));
    };
    let q = query.map(|Query(q)| q).unwrap_or_default();
    let text = GrantFilterText {
        subject: q.subject,
        repo: q.repo,
        role: q.role,
        issuer: q.issuer,
    };
    let filter = match grant_filter(&text) {
        Ok(f) => f,
        Err(why) => return s.error(ApiError::invalid_request(why)),
    };
    let watch = Watch {
        console: c,
        session: id,
        filter,
        seen: None,
        ticks: tokio::time::interval(WATCH_EVERY),
    };
    let stream = futures_util::stream::unfold(watch, |mut w| async move {
        let event = w.next_change().await?;
        Some((Ok::<_, std::convert::Infallible>(event), w))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// One live stream's state.
struct Watch {
    console: Console,
    session: String,
    filter: GrantFilter,
    /// The jtis of the first page last seen.
    seen: Option<Vec<String>>,
    ticks: tokio::time::Interval,
}

impl Watch {
    /// The next change, or `None` when the session has ended.
    async fn next_change(&mut self) -> Option<Event> {
        loop {
            self.ticks.tick().await;
            // Ended, or the store cannot say: the stream ends (fails closed).
            if !matches!(self.console.sessions.is_live(&self.session).await, Ok(true)) {
                return None;
            }
            let now_ms = self.console.admin.clock.now_ms();
            let Ok(page) = self
                .console
                .admin
                .store
                .list_page(&self.filter, None, PAGE, now_ms)
                .await
            else {
                // The store is away: nothing to tell; the page shows the outage on reload.
                continue;
            };
            let jtis: Vec<String> = page.grants.into_iter().map(|g| g.jti).collect();
            let changed = self.seen.as_ref().is_some_and(|seen| *seen != jtis);
            self.seen = Some(jtis);
            if changed {
                return Some(Event::default().event("grants").data("changed"));
            }
        }
    }
}

/// What a bulk revocation targets (one token is revoked from its row, without confirmation).
#[derive(Debug, Deserialize)]
pub(super) struct TargetQuery {
    by: String,
    value: String,
}

fn bulk_by(by: &str) -> Option<RevokeBy> {
    match by {
        "subject" => Some(RevokeBy::Subject),
        "repo" => Some(RevokeBy::Repo),
        "role" => Some(RevokeBy::Role),
        "issuer" => Some(RevokeBy::Issuer),
        _ => None,
    }
}

/// `GET /console/revoke?by=…&value=…`: how many grants would end; confirm with a reason.
pub(super) async fn confirm_revoke(
    State(c): State<Console>,
    headers: HeaderMap,
    query: Result<Query<TargetQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match c.signed(&headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Ok(Query(q)) = query else {
        return s.error(ApiError::invalid_request(
            "say what to revoke: by and value",
        ));
    };
    if bulk_by(&q.by).is_none() || q.value.trim().is_empty() {
        return s.error(ApiError::invalid_request(
            "revoke by subject, repo, role or issuer, with a value",
        ));
    }
    let mut text = GrantFilterText::default();
    match q.by.as_str() {
        "subject" => text.subject = q.value.clone(),
        "repo" => text.repo = q.value.clone(),
        "role" => text.role = q.value.clone(),
        _ => text.issuer = q.value.clone(),
    }
    let filter = match grant_filter(&text) {
        Ok(f) => f,
        Err(why) => return s.error(ApiError::invalid_request(why)),
    };
    let count = match count_live(&c, &filter).await {
        Ok(n) => n,
        Err(e) => return s.error(e),
    };
    html(
        StatusCode::OK,
        pages::confirm_revoke(&s.frame(), &q.by, q.value.trim(), count),
    )
}

/// Live grants passing `filter` now, counted page by page up to [`MAX_COUNTED`].
async fn count_live(c: &Console, filter: &GrantFilter) -> Result<Count, ApiError> {
    let now_ms = c.admin.clock.now_ms();
    let mut live = 0;
    let mut after = None;
    loop {
        let page = c
            .admin
            .store
            .list_page(filter, after.as_ref(), 1000, now_ms)
            .await?;
        live += page.grants.len();
        match page.next {
            Some(n) if live < MAX_COUNTED => after = Some(n),
            Some(_) => {
                return Ok(Count {
                    live,
                    complete: false,
                });
            }
            None => {
                return Ok(Count {
                    live,
                    complete: true,
                });
            }
        }
    }
}

/// A revocation form.
#[derive(Debug, Deserialize)]
pub(super) struct RevokeForm {
    #[serde(default)]
    csrf: String,
    by: String,
    value: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/revoke`: through the admin API's one revocation path.
pub(super) async fn revoke(
    State(c): State<Console>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<RevokeForm>,
) -> Response {
    let s = match c.checked(&headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let by = match f.by.as_str() {
        "jti" => RevokeBy::Jti,
        other => match bulk_by(other) {
            Some(b) => b,
            None => {
                return s.error(ApiError::invalid_request(format!(
                    "cannot revoke by {other:?}"
                )));
            }
        },
    };
    let req = RevokeRequest {
        by,
        value: some(&f.value),
        reason: f.reason,
    };
    match c.admin.revoke(&s.admin(), &req, addr, &headers).await {
        Ok(answer) => html(StatusCode::OK, pages::revoked(&s.frame(), &answer)),
        Err(e) => s.error(e),
    }
}
