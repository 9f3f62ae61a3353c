//! Liveness, readiness and metrics for orchestrators and monitoring.

use axum::extract::State;
use axum::http::StatusCode;

use crate::state::Health;

/// `GET /healthz`: the process serves.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 when the store answers, else 503 naming why.
pub async fn readyz(State(state): State<Health>) -> (StatusCode, String) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}

/// `GET /metrics`: Prometheus text format. Every decision the broker makes is an audit event,
/// so decisions are counted there: `jit_audit_events_total{event="grant.issued"}`,
/// `…{event="access.denied"}`, and appends that failed (each one a refused request).
pub async fn metrics(State(state): State<Health>) -> impl axum::response::IntoResponse {
    use std::fmt::Write as _;
    let (kinds, failed) = state.audit.counts().snapshot();
    let mut out = String::from(
        "# HELP jit_audit_events_total Audit events recorded by this process, by kind.\n\
         # TYPE jit_audit_events_total counter\n",
    );
    for (kind, n) in kinds {
        // Kinds are the broker's own fixed names (`grant.issued`): no escaping needed.
        let _ = writeln!(out, "jit_audit_events_total{{event=\"{kind}\"}} {n}");
    }
    out.push_str(
        "# HELP jit_unaudited_refusals_total Refusals counted instead of audited (credential-less challenges, refused credentials over an address's budget).\n\
         # TYPE jit_unaudited_refusals_total counter\n",
    );
    for (reason, n) in state.audit.counts().unaudited_snapshot() {
        let _ = writeln!(
            out,
            "jit_unaudited_refusals_total{{reason=\"{reason}\"}} {n}"
        );
    }
    let _ = write!(
        out,
        "# HELP jit_audit_failures_total Audit events that could not be recorded (their requests were refused).\n\
         # TYPE jit_audit_failures_total counter\njit_audit_failures_total {failed}\n\
         # HELP jit_store_up Whether the grant store answers.\n# TYPE jit_store_up gauge\njit_store_up {}\n",
        u8::from(state.store.ping().await.is_ok())
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}
