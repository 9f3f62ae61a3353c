//! OAuth endpoints: RFC 8693 token exchange (`POST /oauth/token`) and RFC 7662 introspection
//! (`POST /oauth/introspect`, for authorised callers). The handlers parse and map errors; the
//! exchange, the introspection gate and the gatekeeper decide.

use std::net::SocketAddr;

use axum::extract::rejection::{BytesRejection, FormRejection};
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use crate::error::ApiError;
use crate::exchange::{Caller, Exchanger, TokenRequest};
use crate::gatekeeper::Gatekeeper;
use crate::introspection::{IntrospectionGate, Refused};

/// `POST /oauth/token`.
pub async fn token(
    State(exchanger): State<Exchanger>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Result<Response, ApiError> {
    let peer = connect.map(|Extension(ConnectInfo(addr))| addr.ip());
    let caller = Caller::of(exchanger.config.trust_forwarded_for, peer, &headers);
    let form = form.map(|Form(f)| f).map_err(|e| match e {
        // Almost always the body limit (which reaches here wrapped when the client sent no
        // Content-Length); otherwise the client is gone and will not read the answer.
        FormRejection::BytesRejection(BytesRejection::FailedToBufferBody(_)) => ApiError::OAuth {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "invalid_request",
            description: format!(
                "the request body could not be read; at most {} bytes are accepted",
                super::MAX_API_BODY
            ),
        },
        e => ApiError::invalid_request(format!("the body must be a valid form: {}", e.body_text())),
    });
    let body = exchanger.exchange(caller, form).await?;
    Ok((
        StatusCode::OK,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response())
}

/// The RFC 7662 request body.
#[derive(Debug, Deserialize)]
pub struct IntrospectRequest {
    /// The token to examine (never printed: `Debug` shows `<redacted>`).
    token: Option<jit_proto::Secret>,
    /// Ignored hint (`access_token`).
    #[serde(default)]
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

/// Headers a proxy adds when it relays a request for someone else: such a request is not
/// taken for a loopback caller's.
const FORWARDING_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

/// `POST /oauth/introspect`, for authorised callers only (RFC 7662 §2.1; see
/// [`crate::introspection`]): others get 401 with a Basic challenge, or 429 once their address
/// has spent its budget of refusals. Then `active: true` with the claims for a live token; only
/// `{"active": false}` for expired, revoked, forged or garbage input. A store outage is a 503,
/// never a guess.
pub async fn introspect(
    State(gate): State<IntrospectionGate>,
    State(gatekeeper): State<Gatekeeper>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<IntrospectRequest>, FormRejection>,
) -> Result<Response, ApiError> {
    if let Some(refused) = admit(&gate, connect, &headers).await? {
        return Ok(refused);
    }
    let Form(req) = form.map_err(|e| {
        ApiError::invalid_request(format!("the body must be a valid form: {}", e.body_text()))
    })?;
    let token = req
        .token
        .ok_or_else(|| ApiError::invalid_request("missing form parameter 'token'"))?;
    Ok(Json(gatekeeper.introspect(&token).await?).into_response())
}

/// Lets an introspecting caller in (`None`), or answers it: 401 with a Basic challenge, or 429
/// past its address's budget. `/oauth/introspect` and `/ssh/check` admit the same callers.
pub(super) async fn admit(
    gate: &IntrospectionGate,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
) -> Result<Option<Response>, ApiError> {
    let peer = connect.map(|Extension(ConnectInfo(addr))| addr.ip());
    let relayed = FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h));
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match gate.admit(authorization, peer, relayed).await {
        Ok(_) => Ok(None),
        Err(Refused::TooMany { retry_after }) => Err(ApiError::RateLimited { retry_after }),
        Err(Refused::Unauthorised(why)) => {
            let mut r = ApiError::OAuth {
                status: StatusCode::UNAUTHORIZED,
                code: "invalid_client",
                description: why.to_string(),
            }
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"git-jit\""),
            );
            Ok(Some(r))
        }
    }
}
