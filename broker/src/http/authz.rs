//! `GET /authz`: the decision for a Git server that stays in front (nginx `auth_request`).
//! nginx sends the original request's URI and method in `X-Original-URI` and
//! `X-Original-Method` with its `Authorization` header; the broker answers 204 (allowed), 401
//! with the same challenge as the gateway, or 403. The needed scope comes from
//! [`gateway::classify`] and the decision from the [`Gatekeeper`], exactly as for the gateway.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{denied, text};
use crate::gatekeeper::{Door, Gatekeeper, is_probe_shape};
use crate::gateway::{self, Endpoint};

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
pub async fn authz(State(gatekeeper): State<Gatekeeper>, request: Request) -> Response {
    let headers = request.headers();
    let Some(uri) = header(headers, ORIGINAL_URI) else {
        tracing::error!("/authz called without X-Original-URI; check the proxy configuration");
        return text(StatusCode::FORBIDDEN, "git-jit: X-Original-URI is missing");
    };
    let method = header(headers, ORIGINAL_METHOD)
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .unwrap_or(Method::GET);
    // auth_request understands only 2xx, 401 and 403: a path the gateway would answer with
    // 400 or 404 is a 403 here.
    let git = match gateway::classify(&method, uri) {
        Ok(g) => g,
        Err(e) => return text(StatusCode::FORBIDDEN, &format!("git-jit: {e}")),
    };
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let info = super::request_info(headers, client, Door::Authz);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    // nginx does not pass the sub-request's Content-Encoding; the server behind it sees the
    // real request, and four bytes of anything can hold no command and no want.
    if is_probe_shape(
        matches!(git.endpoint, Endpoint::Rpc(_)),
        authorization.is_some(),
        false,
        header(headers, ORIGINAL_CONTENT_LENGTH),
    ) {
        return StatusCode::NO_CONTENT.into_response();
    }
    let allowed = match gatekeeper
        .check(authorization, &git.needed_scope(), &info)
        .await
    {
        Ok(a) => a,
        Err(d) => return denied(&d),
    };
    if let Err(d) = gatekeeper.allow(&allowed, &info, None).await {
        return denied(&d);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    // For `auth_request_set` → REMOTE_USER (git http-backend enables pushes for a set user).
    if let Ok(v) = HeaderValue::from_str(&allowed.claims.sub) {
        r.headers_mut().insert(SUBJECT, v);
    }
    r
}
