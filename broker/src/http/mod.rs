//! The HTTP floor: routes, handlers and the one place where a decision becomes a reply.
//! Handlers parse, call a service through their narrow state (axum `FromRef`), and map its
//! answer; they decide nothing themselves.

pub mod admin;
pub mod authz;
pub mod discovery;
pub mod gateway;
pub mod oauth;
pub mod ops;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use jit_proto::challenge::BearerChallenge;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::gatekeeper::{Denied, RequestInfo};
pub use crate::gateway::text;
use crate::state::AppState;

/// Largest body accepted by the OAuth and admin endpoints.
pub const MAX_API_BODY: usize = 64 * 1024;

/// The realm of the gateway's challenges.
pub const REALM: &str = "git-jit";

/// The broker's HTTP application.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/oauth/introspect", post(oauth::introspect))
        .route("/oauth/token", post(oauth::token))
        .route("/v1/grants", get(admin::grants))
        .route("/v1/revoke", post(admin::revoke))
        .route("/v1/audit", get(admin::audit))
        .layer(RequestBodyLimitLayer::new(MAX_API_BODY));
    let dev = match state.dev_issuer.clone() {
        Some(dev) => crate::devissuer::routes(dev),
        None => Router::new(),
    };
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/.well-known/jwks.json", get(discovery::jwks))
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::metadata),
        )
        .merge(api)
        .merge(dev)
        // Git traffic streams: no body limit. Every path not routed above is the gateway's.
        .route("/authz", get(authz::authz))
        .fallback(gateway::serve)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the broker on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// What the request says about its client, for the audit trail.
fn request_info(headers: &HeaderMap, client: Option<SocketAddr>, via: &'static str) -> RequestInfo {
    RequestInfo {
        client: client.map(|a| a.ip().to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(200).collect()),
        via,
    }
}

/// The one place a [`Denied`] becomes a reply, for every door: the status, git's message
/// (also in `X-Jit-Denial` for proxies that drop bodies), and for a 401 a Bearer challenge
/// naming the exact scope (git ≥ 2.41 hands it to the credential helper as `wwwauth[]`) with
/// RFC 6750's `invalid_token` and the reason when a credential was refused, plus a Basic
/// challenge for older clients; `Retry-After` for 429 and 503.
pub fn denied(d: &Denied) -> Response {
    let status = StatusCode::from_u16(d.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut r = text(status, &d.message());
    if let Some(needed) = d.needed() {
        let mut challenge = BearerChallenge::new(REALM, Some(needed.clone()));
        if let Denied::InvalidToken { reason, .. } = d {
            challenge = challenge.refused("invalid_token", reason.as_str());
        }
        let bearer = challenge.to_header_value();
        // A scope is built only from RepoPath characters and action names: a valid value.
        if let Ok(v) = HeaderValue::from_str(&bearer) {
            r.headers_mut().append(header::WWW_AUTHENTICATE, v);
        }
        r.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"git-jit\""),
        );
    }
    let retry_after = match d {
        Denied::TooManyRefusals { retry_after } => Some(retry_after.to_string()),
        Denied::Unavailable { .. } => Some("5".to_owned()),
        _ => None,
    };
    if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use jit_proto::Scope;

    use super::*;

    #[test]
    fn challenge_names_the_needed_scope() {
        let needed = Scope::parse("repo:acme/api:write").expect("scope");
        let r = denied(&Denied::NoCredential {
            needed: needed.clone(),
        });
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let got: Vec<_> = r
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect();
        assert_eq!(
            got,
            [
                "Bearer realm=\"git-jit\", scope=\"repo:acme/api:write\"",
                "Basic realm=\"git-jit\""
            ]
        );
        let r = denied(&Denied::InvalidToken {
            needed,
            reason: "token has been \"revoked\"".into(),
        });
        let bearer = r
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            bearer,
            Some(
                "Bearer realm=\"git-jit\", scope=\"repo:acme/api:write\", error=\"invalid_token\", \
                 error_description=\"token has been revoked\""
            )
        );
        let r = denied(&Denied::TooManyRefusals { retry_after: 7 });
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("7")
        );
    }
}
