//! The approval API: `GET /v1/requests` (filtered, paged, newest first),
//! `GET /v1/requests/{id}`, `POST /v1/requests/{id}/approve|deny|cancel` with a reason.
//!
//! The caller is a person proven by a fresh ID token of a trusted issuer, or an admin role's
//! broker token (`AdminApi::authenticate_person`: refusals audited and budgeted as the admin
//! API's). People see their own requests and those they may decide; admins see all. Every
//! step is audited by [`crate::approval`].

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::HeaderMap;
use jit_proto::approval::{DecideRequest, RequestId, RequestInfo, RequestPage, RequestsQuery};

use crate::admin::{AdminApi, Person};
use crate::approval::{Actor, Approvals, RequestFilter, Verdict, decode_cursor, encode_cursor};
use crate::error::ApiError;

fn actor(p: Person) -> Actor {
    Actor::new(
        p.subject,
        p.idp,
        p.claims,
        p.admin,
        p.by_broker_token,
        p.iat,
    )
}

fn request_id(text: &str) -> Result<RequestId, ApiError> {
    RequestId::parse(text).map_err(|e| ApiError::invalid_request(format!("request id: {e}")))
}

/// `GET /v1/requests`.
pub async fn list(
    State(auth): State<AdminApi>,
    State(approvals): State<Approvals>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<RequestsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RequestPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::invalid_request(e.body_text()))?;
    let who = actor(auth.authenticate_person(&headers, addr).await?);
    let filter = RequestFilter {
        state: q.state_filter().map_err(ApiError::invalid_request)?,
        requester: q.requester.clone().filter(|r| !r.is_empty()),
        repo: q
            .repo_path()
            .map_err(|e| ApiError::invalid_request(format!("repo: {e}")))?,
        role: q.role.clone().filter(|r| !r.is_empty()),
        mine_to_approve: q.mine_to_approve.unwrap_or(false),
    };
    let cursor = q
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(decode_cursor)
        .transpose()
        .map_err(|e| ApiError::invalid_request(format!("cursor: {e}")))?;
    let (requests, next) = approvals
        .list(&who, &filter, cursor.as_ref(), q.page_size())
        .await?;
    Ok(Json(RequestPage {
        requests: requests.iter().map(|r| approvals.info(r)).collect(),
        next_cursor: next.as_ref().map(encode_cursor),
    }))
}

/// `GET /v1/requests/{id}`.
pub async fn one(
    State(auth): State<AdminApi>,
    State(approvals): State<Approvals>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RequestInfo>, ApiError> {
    let id = request_id(&id)?;
    let who = actor(auth.authenticate_person(&headers, addr).await?);
    let r = approvals.get(&id, &who).await?;
    Ok(Json(approvals.info(&r)))
}

/// `POST /v1/requests/{id}/approve`, `…/deny`, `…/cancel`.
pub async fn decide(
    State(auth): State<AdminApi>,
    State(approvals): State<Approvals>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Result<Json<DecideRequest>, JsonRejection>,
) -> Result<Json<RequestInfo>, ApiError> {
    let verdict = match action.as_str() {
        "approve" => Verdict::Approve,
        "deny" => Verdict::Deny,
        "cancel" => Verdict::Cancel,
        _ => {
            return Err(ApiError::invalid_request(
                "a request is decided with /approve, /deny or /cancel",
            ));
        }
    };
    let id = request_id(&id)?;
    let Json(body) =
        body.map_err(|e| ApiError::invalid_request(format!("body: {}", e.body_text())))?;
    let reason = body
        .checked_reason()
        .map_err(|e| ApiError::invalid_request(e.to_string()))?;
    let who = actor(auth.authenticate_person(&headers, addr).await?);
    let client = addr.ip().to_string();
    let r = approvals
        .decide(&id, &who, verdict, reason, Some(&client))
        .await?;
    Ok(Json(approvals.info(&r)))
}
