//! The git-jit broker: identity exchange, policy, signing, the grant store, the Git gateway
//! and the audit log, as a library with a thin binary.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod authz;
pub mod clock;
pub mod commands;
pub mod compile;
pub mod config;
pub mod devissuer;
pub mod discovery;
pub mod error;
pub mod exchange;
pub mod gateway;
pub mod identity;
pub mod keys;
pub mod oauth;
pub mod ops;
pub mod policy;
pub mod ratelimit;
pub mod state;
pub mod store;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

pub use state::AppState;

/// Largest body accepted by the OAuth and admin endpoints.
pub const MAX_API_BODY: usize = 64 * 1024;

/// The broker's HTTP application.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/oauth/introspect", post(oauth::introspect))
        .route("/oauth/token", post(exchange::token))
        .route("/v1/grants", get(admin::grants))
        .route("/v1/revoke", post(admin::revoke))
        .route("/v1/audit", get(admin::audit))
        .layer(RequestBodyLimitLayer::new(MAX_API_BODY));
    let dev = match state.dev_issuer.clone() {
        Some(dev) => devissuer::routes(dev),
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
