//! The security console's routes under `/console`: sign-in through the `[login]` issuer,
//! the Now page (live grants, revoke one or all of a subject, repository, role or issuer),
//! the Requests page (approve or deny with a reason), sign-out. The session, login and page
//! machinery is in [`crate::console`]; the decisions are the admin API's ([`AdminApi`]: who
//! is an admin, the one revocation path) and the approval service's ([`Approvals::decide`]),
//! so the console can do nothing the API would refuse. Every answer carries the console's
//! security headers; every state-changing form needs the session's CSRF token and a
//! same-origin request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, FromRef, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::{Form, extract::Request};
use jit_proto::admin::{RevokeBy, RevokeRequest};
use jit_proto::approval::{DecideRequest, RequestId, RequestState};
use maud::Markup;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use tower_http::limit::RequestBodyLimitLayer;

use crate::admin::{Admin, AdminApi};
use crate::approval::{Actor, Approvals, RequestFilter, Verdict};
use crate::audit::EventKind;
use crate::audit::{AuditEvent, AuditQuery};
use crate::console::login::Login;
use crate::console::pages::{
    self, ChainStatus, Count, Frame, GrantFilterText, Notice, RepoWindow, TrailSearch,
};
use crate::console::session::{ABSOLUTE_MS, LOGIN_MS, Session, Sessions, Who};
use crate::console::{BASE, Site, assets, cookie, secure_headers};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{GrantFilter, ListCursor};

/// Largest form accepted by the console.
pub const MAX_FORM: usize = 16 * 1024;
/// Grants per page of the Now page.
pub const PAGE: usize = 100;
/// How often the Now page's live stream looks for changes.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Events per page of the Trail page.
pub const TRAIL_PAGE: usize = 200;
/// Most events in one export.
pub const MAX_EXPORT: usize = 50_000;
/// Most live grants counted for a bulk revocation's confirmation.
pub const MAX_COUNTED: usize = 10_000;

/// The console's narrow state.
#[derive(Clone)]
pub struct Console {
    admin: AdminApi,
    approvals: Approvals,
    sessions: Arc<Sessions>,
    /// The sign-in client, or why there is none.
    login: Result<Arc<Login>, String>,
    /// The browser-facing site, or why the console is off (a clear-text public URL).
    site: Result<Arc<Site>, String>,
}

impl Console {
    /// The console of `state`, with empty session tables.
    pub fn new(state: &AppState) -> Self {
        let site = Site::new(&state.settings.public_url).map(Arc::new);
        let s = &state.settings;
        let login = match (&site, &s.login_issuer, &s.login_client_id) {
            (Err(e), _, _) => Err(e.clone()),
            (Ok(site), Some(issuer), Some(client)) if !s.dev_mode => Login::new(
                issuer,
                client,
                s.login_scope.as_deref(),
                &site.redirect_uri(),
            )
            .map(Arc::new)
            .map_err(|e| e.to_string()),
            _ => Err(crate::console::login::LoginError::NotConfigured.to_string()),
        };
        Self {
            admin: AdminApi::from_ref(state),
            approvals: Approvals::from_ref(state),
            sessions: Arc::new(Sessions::new(state.clock.clone())),
            login,
            site,
        }
    }
}

/// The console's routes, with their own state; merged into [`crate::app`].
pub fn routes<S: Clone + Send + Sync + 'static>(state: &AppState) -> Router<S> {
    router(Console::new(state))
}

fn router<S: Clone + Send + Sync + 'static>(console: Console) -> Router<S> {
    Router::new()
        .route(BASE, get(now))
        .route(&format!("{BASE}/"), get(now))
        .route(&format!("{BASE}/login"), get(login))
        .route(&format!("{BASE}/callback"), get(callback))
        .route(&format!("{BASE}/logout"), post(logout))
        .route(&format!("{BASE}/events"), get(events))
        .route(&format!("{BASE}/revoke"), get(confirm_revoke).post(revoke))
        .route(&format!("{BASE}/requests"), get(requests))
        .route(&format!("{BASE}/trail"), get(trail))
        .route(&format!("{BASE}/trail/export"), get(export))
        .route(&format!("{BASE}/repo"), get(repository))
        .route(&format!("{BASE}/requests/{{id}}"), post(decide))
        .route(&format!("{BASE}/assets/{{name}}"), get(asset))
        .route(&format!("{BASE}/{{*rest}}"), any(not_found))
        .layer(RequestBodyLimitLayer::new(MAX_FORM))
        .layer(middleware::from_fn(headers))
        .with_state(console)
}

async fn headers(req: Request, next: Next) -> Response {
    let asset = req.uri().path().starts_with(&format!("{BASE}/assets/"));
    let mut r = next.run(req).await;
    let cacheable = asset && r.status() == StatusCode::OK;
    secure_headers(r.headers_mut(), cacheable);
    r
}

fn html(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

/// The status and a message safe to show for `e` (internals are logged, not shown).
fn explain(e: ApiError) -> (StatusCode, String) {
    match e {
        ApiError::OAuth {
            status,
            description,
            ..
        }
        | ApiError::Approval {
            status,
            description,
            ..
        } => (status, description),
        ApiError::StoreUnavailable(e) => {
            tracing::error!(error = %e, "grant store unavailable; failing closed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the grant store is unavailable; try again shortly".into(),
            )
        }
        ApiError::LimitsUnavailable(e) => {
            tracing::error!(error = %e, "rate limits unavailable; failing closed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the rate limits cannot be checked; try again shortly".into(),
            )
        }
        ApiError::RateLimited { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many refused attempts from this address; retry in {retry_after} s"),
        ),
        ApiError::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the broker's log".into(),
            )
        }
    }
}

/// A signed-in admin's session.
struct Signed {
    session: Session,
    site: Arc<Site>,
}

impl Signed {
    fn frame(&self) -> Frame<'_> {
        Frame {
            who: &self.session.who,
            csrf: &self.session.csrf,
        }
    }

    fn admin(&self) -> Admin {
        Admin {
            subject: self.session.who.subject.clone(),
            idp: self.session.who.idp.clone(),
        }
    }

    fn actor(&self) -> Actor {
        let w = &self.session.who;
        Actor::new(
            w.subject.clone(),
            w.idp.clone(),
            w.claims.clone(),
            true,
            false,
            w.iat,
        )
    }

    fn error(&self, e: ApiError) -> Response {
        let (status, message) = explain(e);
        html(
            status,
            pages::error(Some(&self.frame()), "Refused", &message),
        )
    }
}

impl Console {
    fn site(&self) -> Result<Arc<Site>, Box<Response>> {
        self.site.clone().map_err(|why| {
            Box::new(html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::error(None, "Console unavailable", &why),
            ))
        })
    }

    /// The session of `headers`; else the sign-in page.
    fn signed(&self, headers: &HeaderMap) -> Result<Signed, Box<Response>> {
        let site = self.site()?;
        let session = cookie(headers, site.cookie_name()).and_then(|id| self.sessions.get(id));
        match session {
            Some(session) => Ok(Signed { session, site }),
            None => Err(Box::new(html(
                StatusCode::UNAUTHORIZED,
                pages::sign_in(None),
            ))),
        }
    }

    /// The session of a state-changing request: signed in, same origin, the right CSRF
    /// token. Refusals are pages that say which check failed.
    fn checked(&self, headers: &HeaderMap, csrf: &str) -> Result<Signed, Box<Response>> {
        let site = self.site()?;
        let refuse = |why: &str| {
            Box::new(html(
                StatusCode::FORBIDDEN,
                pages::error(None, "Refused", &format!("refused: {why}")),
            ))
        };
        same_origin(headers, &site).map_err(refuse)?;
        let signed = self.signed(headers)?;
        if !signed.session.csrf_matches(csrf) {
            return Err(refuse(
                "the form's CSRF token does not match this session; reload the page and try again",
            ));
        }
        Ok(signed)
    }
}

/// Whether a state-changing request comes from the console's own origin. `Sec-Fetch-Site`,
/// which browsers set and pages cannot, must be `same-origin` when sent; `Origin` must be the
/// broker's, except that `null` is accepted beside `Sec-Fetch-Site: same-origin` (Chromium
/// sends `Origin: null` on form posts from a page with `Referrer-Policy: no-referrer`). A
/// request with neither header is refused.
fn same_origin(headers: &HeaderMap, site: &Site) -> Result<(), &'static str> {
    let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let origin = get(header::ORIGIN.as_str());
    let fetch = get("sec-fetch-site");
    if fetch.is_some_and(|f| f != "same-origin") {
        return Err("the form was sent from another site (Sec-Fetch-Site)");
    }
    match origin {
        Some(o) if o == site.origin => Ok(()),
        Some("null") if fetch.is_some() => Ok(()),
        Some(_) => Err("the form was sent from another site (Origin)"),
        None if fetch.is_some() => Ok(()),
        None => Err("the request says nothing of where it comes from (no Origin)"),
    }
}

/// `GET /console/assets/{name}`.
async fn asset(Path(name): Path<String>) -> Response {
    match assets::find(&name) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            a.body,
        )
            .into_response(),
        None => not_found().await,
    }
}

async fn not_found() -> Response {
    html(
        StatusCode::NOT_FOUND,
        pages::error(None, "Not found", "the console has no such page"),
    )
}

/// `GET /console/login`: to the IdP, with state, nonce and PKCE.
async fn login(State(c): State<Console>) -> Response {
    let site = match c.site() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let login = match &c.login {
        Ok(l) => l.clone(),
        Err(why) => return html(StatusCode::SERVICE_UNAVAILABLE, pages::sign_in(Some(why))),
    };
    let started = match login.start().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in could not start");
            return html(
                StatusCode::BAD_GATEWAY,
                pages::sign_in(Some(&e.to_string())),
            );
        }
    };
    let binding = started.pending.binding.clone();
    if let Err(e) = c.sessions.begin_login(&started.state, started.pending) {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::sign_in(Some(&e.to_string())),
        );
    }
    let mut r = Redirect::to(&started.url).into_response();
    set_cookie(&mut r, &site.login_cookie(&binding, LOGIN_MS / 1000));
    r
}

fn set_cookie(r: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The IdP's redirect back.
#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /console/callback`: the code for an ID token; an admin gets a session.
async fn callback(
    State(c): State<Console>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let site = match c.site() {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let refuse = |status, why: &str| {
        let mut r = html(status, pages::sign_in(Some(why)));
        set_cookie(&mut r, &site.login_cookie("", 0));
        r
    };
    if let Some(e) = q.error {
        let d = q.error_description.unwrap_or_default();
        let why = format!("the login issuer answered {e}: {d}");
        return refuse(StatusCode::UNAUTHORIZED, &jit_proto::display::clean(&why));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the sign-in answer lacks its code or state",
        );
    };
    let Some(pending) = c.sessions.finish_login(&state) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "this sign-in expired or was already used; start again",
        );
    };
    let bound = cookie(&headers, site.login_cookie_name())
        .is_some_and(|b| bool::from(b.as_bytes().ct_eq(pending.binding.as_bytes())));
    if !bound {
        return refuse(
            StatusCode::BAD_REQUEST,
            "this sign-in was started in another browser; start again here",
        );
    }
    let Ok(login) = c.login.clone() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "sign-in is not configured");
    };
    let now = c.admin.clock.now();
    let id_token = match login.finish(&code, &pending, now).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in failed");
            return refuse(StatusCode::UNAUTHORIZED, &e.to_string());
        }
    };
    // The broker's own verifier: the same claims and admin rules as the API.
    let person = match c
        .admin
        .authenticate_token(id_token.expose(), &headers, addr)
        .await
    {
        Ok(p) => p,
        Err(e) => return refuse(explain(e).0, "the ID token was refused by the broker"),
    };
    let admin = Admin {
        subject: person.subject.clone(),
        idp: person.idp.clone(),
    };
    if !person.admin {
        let why = format!(
            "{} (issuer {}) is not an admin of this broker",
            jit_proto::display::clean(&person.subject),
            person.idp
        );
        let mut event = c.admin.event("admin.denied", &admin, addr, &headers);
        event.event = EventKind::AdminDenied;
        event.denial = Some(why.clone());
        let _ = c.admin.audit.record(event.with("via", "console")).await;
        let mut r = html(StatusCode::FORBIDDEN, pages::forbidden(&why));
        set_cookie(&mut r, &site.login_cookie("", 0));
        return r;
    }
    let who = Who {
        subject: person.subject,
        idp: person.idp,
        claims: person.claims,
        iat: person.iat,
    };
    let id = match c.sessions.create(who) {
        Ok(id) => id,
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let event = c.admin.event("admin.console_login", &admin, addr, &headers);
    if let Err(e) = c.admin.audit.record(event).await {
        // No unaudited session: end it again.
        c.sessions.end(&id);
        return refuse(
            explain(e.into()).0,
            "the sign-in could not be recorded; try again",
        );
    }
    let mut r = html(StatusCode::OK, pages::signed_in());
    set_cookie(&mut r, &site.session_cookie(&id, ABSOLUTE_MS / 1000));
    set_cookie(&mut r, &site.login_cookie("", 0));
    r
}

/// A form carrying only the CSRF token.
#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /console/logout`: the session ends server-side.
async fn logout(
    State(c): State<Console>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let s = match c.checked(&headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Some(id) = cookie(&headers, s.site.cookie_name()) {
        c.sessions.end(id);
    }
    let event = c
        .admin
        .event("admin.console_logout", &s.admin(), addr, &headers);
    // The session is over either way; a lost record is counted by the auditor.
    let _ = c.admin.audit.record(event).await;
    let mut r = html(StatusCode::OK, pages::sign_in(None));
    set_cookie(&mut r, &s.site.clear_session_cookie());
    r
}

/// The Now page's query.
#[derive(Debug, Default, Deserialize)]
struct NowQuery {
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

fn some(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
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
async fn now(
    State(c): State<Console>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<NowQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match c.signed(&headers) {
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
async fn events(
    State(c): State<Console>,
    headers: HeaderMap,
    query: Result<Query<NowQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match c.signed(&headers) {
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
            if !self.console.sessions.is_live(&self.session) {
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
struct TargetQuery {
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
async fn confirm_revoke(
    State(c): State<Console>,
    headers: HeaderMap,
    query: Result<Query<TargetQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match c.signed(&headers) {
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
struct RevokeForm {
    #[serde(default)]
    csrf: String,
    by: String,
    value: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/revoke`: through the admin API's one revocation path.
async fn revoke(
    State(c): State<Console>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<RevokeForm>,
) -> Response {
    let s = match c.checked(&headers, &f.csrf) {
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

/// `GET /console/requests`: pending approval requests.
async fn requests(State(c): State<Console>, headers: HeaderMap) -> Response {
    let s = match c.signed(&headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    requests_page(&c, &s, StatusCode::OK, None).await
}

async fn requests_page(
    c: &Console,
    s: &Signed,
    status: StatusCode,
    notice: Option<Notice>,
) -> Response {
    let filter = RequestFilter {
        state: Some(RequestState::Pending),
        ..Default::default()
    };
    match c.approvals.list(&s.actor(), &filter, None, PAGE).await {
        Ok((pending, _)) => html(
            status,
            pages::requests(
                &s.frame(),
                &pending,
                c.admin.clock.now_ms(),
                notice.as_ref(),
            ),
        ),
        Err(e) => s.error(e),
    }
}

/// A decision form.
#[derive(Debug, Deserialize)]
struct DecideForm {
    #[serde(default)]
    csrf: String,
    verdict: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/requests/{id}`: approve or deny, with a reason.
async fn decide(
    State(c): State<Console>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<DecideForm>,
) -> Response {
    let s = match c.checked(&headers, &f.csrf) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let verdict = match f.verdict.as_str() {
        "approve" => Verdict::Approve,
        "deny" => Verdict::Deny,
        other => return s.error(ApiError::invalid_request(format!("no verdict {other:?}"))),
    };
    let id = match RequestId::parse(&id) {
        Ok(id) => id,
        Err(e) => return s.error(ApiError::invalid_request(format!("request id: {e}"))),
    };
    let body = DecideRequest { reason: f.reason };
    let reason = match body.checked_reason() {
        Ok(r) => r,
        Err(e) => {
            let n = Notice::Error(e.to_string());
            return requests_page(&c, &s, StatusCode::BAD_REQUEST, Some(n)).await;
        }
    };
    let client = addr.ip().to_string();
    let (status, notice) = match c
        .approvals
        .decide(&id, &s.actor(), verdict, reason, Some(&client))
        .await
    {
        Ok(r) => (
            StatusCode::OK,
            Notice::Ok(format!("request {} is now {}", r.id, r.state.as_str())),
        ),
        Err(e) => {
            let (status, m) = explain(e);
            (status, Notice::Error(m))
        }
    };
    requests_page(&c, &s, status, Some(notice)).await
}

/// The Trail page's query.
#[derive(Debug, Default, Deserialize)]
struct TrailQuery {
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
                .map(|v| super::admin::parse_time(key, &v))
                .transpose()
        };
        Ok(AuditQuery {
            from_ms: time("from", &self.from)?,
            to_ms: time("to", &self.to)?,
            event: some(&self.event),
            subject: some(&self.subject),
            repo: some(&self.repo),
            after_seq: self.after,
            limit,
        })
    }
}

/// `GET /console/trail`: the audit trail searched, oldest first; `verify=1` checks the chain.
async fn trail(
    State(c): State<Console>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<TrailQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match c.signed(&headers) {
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
    let events = match c.admin.store.read_audit(&aq).await {
        Ok(e) => e,
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
    let next = events
        .last()
        .map(|e| e.seq)
        .filter(|_| events.len() == TRAIL_PAGE);
    html(
        StatusCode::OK,
        pages::trail(&s.frame(), &search, &events, next, chain.as_ref(), None),
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
async fn export(
    State(c): State<Console>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<TrailQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match c.signed(&headers) {
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
        let page = match c.admin.store.read_audit(&aq).await {
            Ok(p) => p,
            Err(e) => return s.error(e.into()),
        };
        let full = page.len() == aq.limit;
        aq.after_seq = page.last().map_or(aq.after_seq, |e| e.seq);
        events.extend(page);
        if !full || events.len() >= MAX_EXPORT {
            break;
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
        match super::admin::csv_body(&events) {
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
struct RepoQuery {
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
async fn repository(
    State(c): State<Console>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<RepoQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match c.signed(&headers) {
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
            .map(|v| super::admin::parse_time(key, &v))
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

#[cfg(test)]
mod tests {
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
        let store = Arc::new(MemoryStore::new(1000));
        let clock = Arc::new(ManualClock::new(NOW * 1000));
        let state = AppState::for_tests(store.clone(), clock);
        let console = Console::new(&state);
        let app = router::<()>(console.clone()).layer(axum::Extension(ConnectInfo(
            SocketAddr::from(([10, 0, 0, 9], 4000)),
        )));
        World {
            app,
            console,
            store,
            state,
        }
    }

    /// A signed-in admin: the session cookie and the CSRF token.
    fn sign_in(w: &World) -> (String, String) {
        let who = Who {
            subject: "sec-admin@example.com".into(),
            idp: "corp".into(),
            claims: serde_json::Map::new(),
            iat: Some(NOW),
        };
        let id = w.console.sessions.create(who).expect("session");
        let csrf = w.console.sessions.get(&id).expect("live").csrf;
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
        let resp = w
            .app
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
        let (cookie, _) = sign_in(&w);
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
        let (cookie, csrf) = sign_in(&w);
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
        let (cookie, csrf) = sign_in(&w);
        let (_, other_csrf) = sign_in(&w);
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
        let (cookie, csrf) = sign_in(&w);
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
    async fn logout_ends_the_session_on_the_server() {
        let w = world();
        let (cookie, csrf) = sign_in(&w);
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

    #[tokio::test]
    async fn the_requests_page_lists_pending_requests_and_shows_refusals() {
        let w = world();
        let t = SuiteTime::manual();
        let r = request(&t, "bob", 600_000);
        assert!(
            w.store
                .requests()
                .file(&r, "ask-bob", None, NOW * 1000)
                .await
                .expect("file")
        );
        let (cookie, csrf) = sign_in(&w);
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
        let (cookie, _) = sign_in(&w);
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
        w.console.sessions.end(id);
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
        let (cookie, csrf) = sign_in(&w);
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
        let mut issued = crate::audit::AuditEvent::new("grant.issued", NOW * 1000 - 60_000)
            .with("exp", alice.exp);
        issued.subject = Some(alice.sub.clone());
        issued.repo = Some("acme/api".into());
        issued.scope = Some(alice.scope.to_string());
        issued.role = Some(alice.role.clone());
        issued.jti = Some(alice.jti.clone());
        w.state.audit.record(issued).await.expect("record");
        let (cookie, csrf) = sign_in(&w);
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
}
