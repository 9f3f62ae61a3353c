//! The Requests page: pending approval requests, approved or denied with a reason through
//! the approval service.

use std::net::SocketAddr;

use axum::Form;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use jit_proto::approval::{DecideRequest, RequestId, RequestState};
use serde::Deserialize;

use crate::approval::{RequestFilter, Verdict};
use crate::console::pages::{self, Notice};
use crate::error::ApiError;

use super::{Console, PAGE, Signed, explain, html};

/// `GET /console/requests`: pending approval requests.
pub(super) async fn requests(State(c): State<Console>, headers: HeaderMap) -> Response {
    let s = match c.signed_any(&headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    requests_page(&c, &s, StatusCode::OK, None).await
}

async fn requests_page(
    c: &Console,
    s: &Signed,
    status: StatusCode,
    notice: Option<Notice>,
) -> Response {
    let filter = RequestFilter {
        state: Some(RequestState::Pending),
        ..Default::default()
    };
    match c.approvals.list(&s.actor(), &filter, None, PAGE).await {
        Ok((pending, _)) => html(
            status,
            pages::requests(
                &s.frame(),
                &pending,
                c.admin.clock.now_ms(),
                notice.as_ref(),
            ),
        ),
        Err(e) => s.error(e),
    }
}

/// A decision form.
#[derive(Debug, Deserialize)]
pub(super) struct DecideForm {
    #[serde(default)]
    csrf: String,
    verdict: String,
    #[serde(default)]
    reason: String,
}

/// `POST /console/requests/{id}`: approve or deny, with a reason.
pub(super) async fn decide(
    State(c): State<Console>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<DecideForm>,
) -> Response {
    let s = match c.checked_any(&headers, &f.csrf).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let verdict = match f.verdict.as_str() {
        "approve" => Verdict::Approve,
        "deny" => Verdict::Deny,
        other => return s.error(ApiError::invalid_request(format!("no verdict {other:?}"))),
    };
    let id = match RequestId::parse(&id) {
        Ok(id) => id,
        Err(e) => return s.error(ApiError::invalid_request(format!("request id: {e}"))),
    };
    let body = DecideRequest { reason: f.reason };
    let reason = match body.checked_reason() {
        Ok(r) => r,
        Err(e) => {
            let n = Notice::Error(e.to_string());
            return requests_page(&c, &s, StatusCode::BAD_REQUEST, Some(n)).await;
        }
    };
    let client = addr.ip().to_string();
    let (status, notice) = match c
        .approvals
        .decide(&id, &s.actor(), verdict, reason, Some(&client))
        .await
    {
        Ok(r) => (
            StatusCode::OK,
            Notice::Ok(format!("request {} is now {}", r.id, r.state.as_str())),
        ),
        Err(e) => {
            let (status, m) = explain(e);
            (status, Notice::Error(m))
        }
    };
    requests_page(&c, &s, status, Some(notice)).await
}
