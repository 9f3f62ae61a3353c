//! The security console's routes under `/console`: sign-in through the `[login]` issuer,
//! the Now page (live grants, revoke one or all of a subject, repository, role or issuer),
//! the Requests page (approve or deny with a reason), the Trail and Repository pages, sign-out. The session, login and page
//! machinery is in [`crate::console`]; the decisions are the admin API's ([`AdminApi`]: who
//! is an admin, the one revocation path) and the approval service's ([`Approvals::decide`]),
//! so the console can do nothing the API would refuse. Every answer carries the console's
//! security headers; every state-changing form needs the session's CSRF token and a
//! same-origin request. Here: the state, the routes, the checks and sign-in/out; the pages'
//! handlers are in `grants` (Now, revocations, the live stream), `requests` and `records`
//! (Trail, Repository).

mod grants;
mod records;
mod requests;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, FromRef, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::{Form, extract::Request};
use maud::Markup;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use tower_http::limit::RequestBodyLimitLayer;

use self::grants::{confirm_revoke, events, now, revoke};
use self::records::{export, repository, trail};
use self::requests::{decide, requests};

use crate::admin::{Admin, AdminApi};
use crate::approval::{Actor, Approvals};
use crate::audit::EventKind;
use crate::console::login::Login;
use crate::console::pages::{self, Frame};
use crate::console::session::{ABSOLUTE_MS, LOGIN_MS, Session, SessionError, Sessions, Who};
use crate::console::{BASE, Site, assets, cookie, secure_headers};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::RevokeTarget;

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
            sessions: Arc::new(Sessions::new(state.clock.clone(), state.store.clone())),
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
            w.admin,
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

    /// The session of `headers`; else the sign-in page. A session whose person (subject or
    /// issuer) was revoked after it began is ended here, on every replica alike: the
    /// watermarks are the store's. Fails closed when the store cannot say.
    async fn signed_any(&self, headers: &HeaderMap) -> Result<Signed, Box<Response>> {
        let site = self.site()?;
        let id = cookie(headers, site.cookie_name());
        let found = match id {
            Some(id) => self.sessions.get(id).await.map(|s| s.map(|s| (id, s))),
            None => Ok(None),
        };
        let (id, session) = match found {
            Ok(Some(found)) => found,
            Ok(None) => {
                return Err(Box::new(html(
                    StatusCode::UNAUTHORIZED,
                    pages::sign_in(None),
                )));
            }
            Err(e) => return Err(Box::new(unavailable(&e))),
        };
        let dims = [
            RevokeTarget::Subject(session.who.subject.clone()).dimension(),
            RevokeTarget::Issuer(session.who.idp.clone()).dimension(),
        ];
        match self.admin.store.revoked_before(&dims).await {
            Ok(marks) if marks.iter().flatten().any(|&w| w >= session.created_ms) => {
                // Refused either way; a store that cannot end it cannot serve it either.
                let _ = self.sessions.end(id).await;
                Err(Box::new(html(
                    StatusCode::UNAUTHORIZED,
                    pages::sign_in(Some(
                        "your access was revoked after you signed in; sign in again",
                    )),
                )))
            }
            Ok(_) => Ok(Signed { session, site }),
            Err(e) => Err(Box::new(html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::error(None, "Store unavailable", &e.to_string()),
            ))),
        }
    }

    /// An admin's session of `headers` (see [`Self::signed_any`]); an approver gets a page
    /// that says this one is for admins.
    async fn signed(&self, headers: &HeaderMap) -> Result<Signed, Box<Response>> {
        admins_only(self.signed_any(headers).await?)
    }

    /// An admin's session of a state-changing request (see [`Self::checked_any`]).
    async fn checked(&self, headers: &HeaderMap, csrf: &str) -> Result<Signed, Box<Response>> {
        admins_only(self.checked_any(headers, csrf).await?)
    }

    /// The session of a state-changing request, an admin's or an approver's: signed in, same
    /// origin, the right CSRF token. Refusals are pages that say which check failed.
    async fn checked_any(&self, headers: &HeaderMap, csrf: &str) -> Result<Signed, Box<Response>> {
        let site = self.site()?;
        let refuse = |why: &str| {
            Box::new(html(
                StatusCode::FORBIDDEN,
                pages::error(None, "Refused", &format!("refused: {why}")),
            ))
        };
        same_origin(headers, &site).map_err(refuse)?;
        let signed = self.signed_any(headers).await?;
        if !signed.session.csrf_matches(csrf) {
            return Err(refuse(
                "the form's CSRF token does not match this session; reload the page and try again",
            ));
        }
        Ok(signed)
    }
}

/// The page for a session store that cannot answer: nobody is let in (503).
fn unavailable(e: &SessionError) -> Response {
    tracing::warn!(error = %e, "console sessions unavailable");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::error(None, "Console unavailable", &e.to_string()),
    )
}

/// `s` when it is an admin's session; else the page that says the page is for admins.
fn admins_only(s: Signed) -> Result<Signed, Box<Response>> {
    if s.session.who.admin {
        Ok(s)
    } else {
        Err(Box::new(html(
            StatusCode::FORBIDDEN,
            pages::admins_only(&s.frame()),
        )))
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

/// `s` trimmed, if anything is left.
fn some(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
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
    if let Err(e) = c
        .sessions
        .begin_login(&started.state, started.pending)
        .await
    {
        return unavailable(&e);
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
    let pending = match c.sessions.finish_login(&state).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "this sign-in expired or was already used; start again",
            );
        }
        Err(e) => return unavailable(&e),
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
    let approver = !person.admin
        && c.approvals.approves_any(&Actor::new(
            person.subject.clone(),
            person.idp.clone(),
            person.claims.clone(),
            false,
            false,
            person.iat,
        ));
    if !person.admin && !approver {
        let why = format!(
            "{} (issuer {}) is neither an admin of this broker nor an approver of any role",
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
        admin: person.admin,
    };
    let id = match c.sessions.create(who).await {
        Ok(id) => id,
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let as_whom = if approver { "approver" } else { "admin" };
    let event = c.admin.event("admin.console_login", &admin, addr, &headers);
    if let Err(e) = c.admin.audit.record(event.with("as", as_whom)).await {
        // No unaudited session: end it again (its cookie is never sent either way).
        let _ = c.sessions.end(&id).await;
        return refuse(
            explain(e.into()).0,
            "the sign-in could not be recorded; try again",
        );
    }
    let mut r = html(StatusCode::OK, pages::signed_in(!approver));
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
    let s = match c.checked_any(&headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Some(id) = cookie(&headers, s.site.cookie_name())
        && let Err(e) = c.sessions.end(id).await
    {
        // Not ended everywhere: say so rather than pretend the sign-out worked.
        return unavailable(&e);
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
