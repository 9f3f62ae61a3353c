//! Liveness, readiness and metrics for orchestrators and monitoring.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;

use crate::metrics::{CONTENT_TYPE, exposition};
use crate::state::Health;

/// `GET /healthz`: the process serves.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 when the store answers, else 503 with a fixed line: the store's error
/// (addresses, user names) is logged, never returned to whoever can reach the port.
pub async fn readyz(State(state): State<Health>) -> (StatusCode, String) {
    let pinged = state.store.ping().await;
    state.audit.counts().store_up(pinged.is_ok());
    match pinged {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the grant store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the grant store is unavailable\n".to_owned(),
            )
        }
    }
}

/// `GET /metrics`: the registry of [`crate::metrics`] as OpenMetrics text. Every decision the
/// broker makes is an audit event, so decisions are counted there:
/// `jit_audit_events_total{event="grant.issued"}`, `…{event="access.denied"}`; beside them
/// unaudited refusals, failed appends, the store's health and latency, and request latency by
/// route. The store is pinged on every scrape.
///
/// Prometheus asks for OpenMetrics and gets it; other clients (curl, `promtool check
/// metrics`) get the Prometheus text format.
pub async fn metrics(State(state): State<Health>, headers: HeaderMap) -> impl IntoResponse {
    let metrics = state.audit.counts();
    metrics.store_up(state.store.ping().await.is_ok());
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if exposition::wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.encode())
    } else {
        (
            [(header::CONTENT_TYPE, exposition::PROMETHEUS_TEXT)],
            metrics.encode_prometheus_text(),
        )
    }
}
