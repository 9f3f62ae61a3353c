//! `GET /authz`: the decision for a Git server that stays in front (nginx `auth_request`).
//! nginx sends the original request's URI and method in `X-Original-URI` and
//! `X-Original-Method` with its `Authorization` header; the broker answers 204 (allowed), 401
//! with the same challenge as the gateway, or 403. The needed scope comes from
//! [`gateway::classify`], the gateway's own function.
//!
//! A sub-request cannot see the refs a push updates, so a push with a ref-restricted grant
//! is refused here: such grants need the gateway.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::gateway::{self, GitService, RequestInfo, access};
use crate::state::AppState;

/// The header carrying the original request's URI (nginx `$request_uri`: raw, undecoded).
pub const ORIGINAL_URI: &str = "x-original-uri";
/// The header carrying the original request's method.
pub const ORIGINAL_METHOD: &str = "x-original-method";
/// The header of a 204 naming the token's subject.
pub const SUBJECT: &str = "x-jit-subject";
/// The header carrying the original request's `Content-Length` (nginx `$content_length`).
pub const ORIGINAL_CONTENT_LENGTH: &str = "x-original-content-length";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `GET /authz`.
pub async fn authz(State(state): State<AppState>, request: Request) -> Response {
    let headers = request.headers();
    let Some(uri) = header(headers, ORIGINAL_URI) else {
        tracing::error!("/authz called without X-Original-URI; check the proxy configuration");
        return gateway::text(StatusCode::FORBIDDEN, "git-jit: X-Original-URI is missing");
    };
    let method = header(headers, ORIGINAL_METHOD)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(Method::GET);
    // auth_request understands only 2xx, 401 and 403: a path the gateway would answer with
    // 400 or 404 is a 403 here.
    let git = match gateway::classify(&method, uri) {
        Ok(g) => g,
        Err(e) => return gateway::text(StatusCode::FORBIDDEN, &format!("git-jit: {e}")),
    };
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let info = RequestInfo {
        client,
        user_agent: header(headers, "user-agent").map(|s| s.chars().take(200).collect()),
        via: "authz",
    };
    // git's 4-byte probe before a large request comes without the Bearer header the helper
    // gave it (see `gateway::answer_probe`). Four bytes can hold no command and no want — at
    // most a flush — so letting it through uncredentialed lets nothing happen upstream.
    if matches!(git.endpoint, gateway::Endpoint::Rpc(_))
        && headers.get(axum::http::header::AUTHORIZATION).is_none()
        && header(headers, ORIGINAL_CONTENT_LENGTH) == Some("4")
    {
        return StatusCode::NO_CONTENT.into_response();
    }
    let needed = git.needed_scope();
    let claims = match access::authorize(&state, headers, &needed, &info).await {
        Ok(c) => c,
        Err(denied) => return denied,
    };
    // Refused already at the ref advertisement, where git still shows the message.
    if git.endpoint.service() == GitService::ReceivePack && !claims.refs.is_empty() {
        let patterns: Vec<&str> = claims.refs.iter().map(|p| p.as_str()).collect();
        let message = format!(
            "git-jit: this grant is limited to refs {}; ref-limited pushes must go through the git-jit gateway",
            patterns.join(", ")
        );
        access::record_denied(&state, &claims, &needed, &info, message.clone(), None).await;
        return gateway::text(StatusCode::FORBIDDEN, &message);
    }
    if let Err(r) = access::record_allowed(&state, &claims, &needed, &info, None).await {
        return r;
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    // For `auth_request_set` → REMOTE_USER (git http-backend enables pushes for a set user).
    if let Ok(v) = HeaderValue::from_str(&claims.sub) {
        r.headers_mut().insert(SUBJECT, v);
    }
    r
}
