//! OAuth endpoints: RFC 7662 introspection (and, with the identity exchange, RFC 8693).

use axum::Json;
use axum::extract::{Form, State};
use jit_proto::api::{IntrospectedClaims, Introspection};
use serde::Deserialize;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::GrantStatus;

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

/// `POST /oauth/introspect`: `active: true` with the claims for a live token; only
/// `{"active": false}` for expired, revoked, forged or garbage input. A store outage is a 503,
/// never a guess.
pub async fn introspect(
    State(state): State<AppState>,
    Form(req): Form<IntrospectRequest>,
) -> Result<Json<Introspection>, ApiError> {
    let token = req
        .token
        .ok_or_else(|| ApiError::invalid_request("missing form parameter 'token'"))?;
    let inactive = Json(Introspection {
        active: false,
        claims: None,
    });
    let now_ms = state.clock.now_ms();
    let Ok(claims) = state.signer.verify(token.expose(), now_ms.div_euclid(1000)) else {
        return Ok(inactive);
    };
    match state.store.check(&claims, now_ms).await? {
        GrantStatus::Live(_) => Ok(Json(Introspection {
            active: true,
            claims: Some(IntrospectedClaims {
                token_type: "Bearer".to_owned(),
                scope: claims.scope.to_string(),
                claims,
            }),
        })),
        _ => Ok(inactive),
    }
}
