//! Git over SSH: the SSH CA's public keys (`GET /.well-known/ssh-ca.pub`, the content of the
//! Git server's `TrustedUserCAKeys` file) and the gate's question (`POST /ssh/check`).
//!
//! `/ssh/check` is asked by `jit-ssh-gate` only, and only by callers the broker lets
//! introspect (`[server.introspection]`: a configured client with HTTP Basic, or loopback):
//! a certificate is not a secret — sshd checked that its holder has the private key, the
//! broker cannot — so anyone else asking would learn whether a grant is live and could spend
//! its budgets of denials.

use std::net::SocketAddr;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use jit_proto::ssh::SshCheck;

use crate::error::ApiError;
use crate::gatekeeper::Gatekeeper;
use crate::introspection::IntrospectionGate;
use crate::token::TokenSigner;

/// `GET /.well-known/ssh-ca.pub`: every CA public key, newest first, one OpenSSH line each;
/// 404 when the broker has no SSH CA.
pub async fn ca_keys(State(signer): State<TokenSigner>) -> Response {
    match signer.keys().ssh_ca() {
        Some(ca) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            ca.public_lines(),
        )
            .into_response(),
        None => super::text(
            StatusCode::NOT_FOUND,
            "git-jit: this broker has no SSH certificate authority (jit-broker keys generate --ssh)",
        ),
    }
}

/// `POST /ssh/check` (JSON [`SshCheck`] → [`jit_proto::ssh::SshDecision`]).
pub async fn check(
    State(gate): State<IntrospectionGate>,
    State(gatekeeper): State<Gatekeeper>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Json<SshCheck>, JsonRejection>,
) -> Result<Response, ApiError> {
    if let Some(refused) = super::oauth::admit(&gate, connect, &headers).await? {
        return Ok(refused);
    }
    let Json(q) = body.map_err(|e| ApiError::invalid_request(e.body_text()))?;
    let decision = crate::ssh::check(&gatekeeper, &q)
        .await
        .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    Ok(Json(decision).into_response())
}
