//! Published metadata: the JWKS (`/.well-known/jwks.json`) and RFC 8414 authorization-server
//! metadata (`/.well-known/oauth-authorization-server`), which the helper reads.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use jit_proto::api::{GRANT_TYPE_TOKEN_EXCHANGE, ServerMetadata};

use std::sync::Arc;

use crate::compile::Settings;
use crate::token::TokenSigner;

/// `GET /.well-known/jwks.json`.
pub async fn jwks(State(signer): State<TokenSigner>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(signer.keys().jwks()),
    )
}

/// `GET /.well-known/oauth-authorization-server`.
pub async fn metadata(State(s): State<Arc<Settings>>) -> Json<ServerMetadata> {
    Json(ServerMetadata {
        issuer: s.public_url.clone(),
        token_endpoint: format!("{}/oauth/token", s.public_url),
        introspection_endpoint: format!("{}/oauth/introspect", s.public_url),
        introspection_endpoint_auth_methods_supported: vec!["client_secret_basic".to_owned()],
        jwks_uri: format!("{}/.well-known/jwks.json", s.public_url),
        grant_types_supported: vec![GRANT_TYPE_TOKEN_EXCHANGE.to_owned()],
        token_audience: s.audience.clone(),
        subject_token_audience: s.subject_audience.clone(),
        login_issuer: s.login_issuer.clone(),
        login_client_id: s.login_client_id.clone(),
        login_scope: s.login_scope.clone(),
        scope_syntax: "repo:<path>:<action>[,<action>] with actions read, write".to_owned(),
    })
}
