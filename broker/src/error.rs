//! The HTTP edge's one error type. Clients get a precise, safe reason; internals are logged.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jit_proto::api::OAuthError;
use jit_proto::approval::PendingDetails;

use crate::ratelimit::{LimitError, Refusal, UNAVAILABLE_RETRY_SECS};
use crate::store::StoreError;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An RFC 6749 §5.2 error (`invalid_request`, `invalid_grant`, `invalid_scope`, …).
    #[error("{code}: {description}")]
    OAuth {
        /// HTTP status.
        status: StatusCode,
        /// RFC 6749 error code.
        code: &'static str,
        /// Safe, precise description.
        description: String,
    },
    /// An answer about an approval request (`authorization_pending`, `slow_down`,
    /// `approval_required`, `expired_token`, `access_denied`): an RFC 6749 §5.2 error with the
    /// request's details (RFC 8628 §3.5's polling codes).
    #[error("{code}: {description}")]
    Approval {
        /// HTTP status.
        status: StatusCode,
        /// The error code.
        code: &'static str,
        /// Safe, precise description, written for people.
        description: String,
        /// The request's id, state, approvers, polling interval.
        details: Box<PendingDetails>,
    },
    /// The store is unreachable: the broker fails closed.
    #[error("store unavailable")]
    StoreUnavailable(#[source] StoreError),
    /// Too many requests from one identity or address.
    #[error("rate limited")]
    RateLimited {
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// The rate limits could not be checked (their Redis is unreachable): fail closed.
    #[error("rate limits unavailable")]
    LimitsUnavailable(#[source] LimitError),
    /// Something inside the broker failed; details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::OAuth {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request",
            description: description.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::StoreUnavailable(e)
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Over(l) => ApiError::RateLimited {
                retry_after: l.retry_after,
            },
            Refusal::Unavailable(e) => ApiError::LimitsUnavailable(e),
        }
    }
}

fn body(code: &str, description: String) -> Json<OAuthError> {
    Json(OAuthError {
        error: code.to_owned(),
        error_description: Some(description),
        approval: Default::default(),
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::OAuth {
                status,
                code,
                description,
            } => {
                let mut r = (status, body(code, description)).into_response();
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            ApiError::Approval {
                status,
                code,
                description,
                details,
            } => {
                let body = Json(OAuthError {
                    error: code.to_owned(),
                    error_description: Some(description),
                    approval: *details,
                });
                let mut r = (status, body).into_response();
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            ApiError::StoreUnavailable(e) => {
                tracing::error!(error = %e, "grant store unavailable; failing closed");
                let d = "the grant store is unavailable; no token is issued or accepted until it is back".to_owned();
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "5")],
                    body("temporarily_unavailable", d),
                )
                    .into_response()
            }
            ApiError::LimitsUnavailable(e) => {
                tracing::error!(error = %e, "rate limits unavailable; failing closed");
                let d = "the rate limits cannot be checked; no token is issued until they can"
                    .to_owned();
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, UNAVAILABLE_RETRY_SECS.to_string())],
                    body("temporarily_unavailable", d),
                )
                    .into_response()
            }
            ApiError::RateLimited { retry_after } => {
                let d = format!("too many requests; retry in {retry_after} s");
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, retry_after.to_string())],
                    body("slow_down", d),
                )
                    .into_response()
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    body(
                        "server_error",
                        "internal error; see the broker's log".into(),
                    ),
                )
                    .into_response()
            }
        }
    }
}
