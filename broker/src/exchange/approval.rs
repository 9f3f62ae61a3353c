//! The exchange's side of approvals: a role that needs a person's yes answers
//! `approval_required` (saying how to ask), files a request on `approval=request`
//! (`authorization_pending`), and is polled with `request_id` until the token can be
//! collected — once, living `ttl` from the approval. Break-glass roles issue at once and
//! leave a flagged request behind. Shapes: RFC 8628 §3.5.

use axum::http::StatusCode;
use jit_proto::api::TokenResponse;
use jit_proto::approval::{
    ACCESS_DENIED, APPROVAL_REQUIRED, AUTHORIZATION_PENDING, EXPIRED_TOKEN, PendingDetails,
    RequestId, RequestState, SLOW_DOWN,
};
use jit_proto::exchange::ApprovalAsk;

use super::hint::{self, RequestLine};
use super::{Exchange, Extra, issue, oauth};
use crate::approval::{Approvals, POLL_INTERVAL_SECS, SLOW_DOWN_SECS, party_of};
use crate::error::ApiError;
use crate::identity::VerifiedIdentity;
use crate::policy::{self, Decision, Request};
use crate::store::{ApprovalRequest, Party, RevokeTarget, revoked_by};
use crate::token;

fn party(identity: &VerifiedIdentity) -> Party {
    party_of(
        identity.subject.clone(),
        identity.issuer.clone(),
        &identity.claims,
    )
}

fn answer(
    status: StatusCode,
    code: &'static str,
    description: String,
    details: PendingDetails,
) -> ApiError {
    ApiError::Approval {
        status,
        code,
        description,
        details: Box::new(details),
    }
}

/// The `git jit request` command line that asks for `d`.
fn how_to_ask(d: &Decision) -> String {
    RequestLine::for_decision(d).to_string()
}

fn waiting(approvals: &Approvals, r: &ApprovalRequest) -> String {
    format!(
        "{} more approval(s) from: {}",
        usize::from(r.required).saturating_sub(r.approvals.len()),
        approvals.approvers_of(&r.role).join("; ")
    )
}

fn decided(r: &ApprovalRequest, what: &str) -> String {
    match &r.decision {
        Some(v) => format!(
            "request {} was {what} by {} ({}): {}",
            r.id,
            jit_proto::display::clean(&v.by.sub),
            v.by.idp,
            jit_proto::display::clean(&v.reason)
        ),
        None => format!("request {} was {what}", r.id),
    }
}

impl Exchange<'_> {
    /// An exchange that the policy granted under a role needing approval: files a request on
    /// `approval=request`, says how to ask otherwise. Never a token.
    pub(super) async fn gate(
        &self,
        identity: &VerifiedIdentity,
        request: &Request,
        ask: &ApprovalAsk,
        decision: Decision,
    ) -> ApiError {
        let approvals = self.x.approvals();
        let requester = party(identity);
        let now_ms = self.now_ms;
        if *ask == ApprovalAsk::Request {
            let reasoned = self.x.policy.role(&decision.role).map_or(Ok(()), |role| {
                policy::check_reason(role, decision.reason.as_deref())
            });
            if let Err(m) = reasoned {
                let next = RequestLine::for_decision(&decision);
                let e = oauth(
                    StatusCode::FORBIDDEN,
                    "access_denied",
                    hint::with_hint(&m, Some(&next)),
                );
                return self
                    .deny(Some(request), Some(identity), Some(&decision.role), e)
                    .await;
            }
            return match approvals
                .file(&requester, &decision, Some(&self.caller.client), now_ms)
                .await
            {
                Ok((r, _new)) => {
                    let details = approvals.details(&r, POLL_INTERVAL_SECS, now_ms);
                    let d = format!(
                        "request {} under role '{}' waits for {}; it can be approved for {} minutes",
                        r.id,
                        r.role,
                        waiting(&approvals, &r),
                        (r.expires_ms - now_ms).max(0) / 60_000
                    );
                    answer(StatusCode::BAD_REQUEST, AUTHORIZATION_PENDING, d, details)
                }
                Err(e) => e,
            };
        }
        let latest = match approvals.latest(&requester, &decision, now_ms).await {
            Ok(l) => l,
            Err(e) => return ApiError::StoreUnavailable(e),
        };
        let ask_line = how_to_ask(&decision);
        let mut details = PendingDetails {
            role: Some(decision.role.clone()),
            approvers: approvals.approvers_of(&decision.role),
            min_reason: self
                .x
                .policy
                .role(&decision.role)
                .and_then(|r| r.approval.as_ref())
                .map(|a| a.min_reason)
                .filter(|m| *m > 0),
            ..PendingDetails::default()
        };
        let description = match &latest {
            Some(r) => {
                details.request_id = Some(r.id.clone());
                details.state = Some(r.state_at(now_ms));
                match r.state_at(now_ms) {
                    RequestState::Pending => format!(
                        "role '{}' needs approval: your request {} waits for {}",
                        decision.role,
                        r.id,
                        waiting(&approvals, r)
                    ),
                    RequestState::Denied => format!(
                        "role '{}' needs approval and your {}; to ask again: {ask_line}",
                        decision.role,
                        decided(r, "denied")
                    ),
                    RequestState::Approved if r.jti.is_none() => format!(
                        "role '{}': your request {} is approved; collect its token with: {}",
                        decision.role,
                        r.id,
                        hint::collect_line(&r.id)
                    ),
                    state => format!(
                        "role '{}' needs approval (your request {} is {state}); ask with: {ask_line}",
                        decision.role, r.id
                    ),
                }
            }
            None => format!(
                "role '{}' needs approval by a person ({}); ask with: {ask_line}",
                decision.role,
                approvals.approvers_of(&decision.role).join("; ")
            ),
        };
        let e = answer(
            StatusCode::FORBIDDEN,
            APPROVAL_REQUIRED,
            description,
            details,
        );
        self.deny(Some(request), Some(identity), Some(&decision.role), e)
            .await
    }

    /// A poll of request `id` by its requester: its state, or its token once approved.
    pub(super) async fn poll(
        &self,
        identity: &VerifiedIdentity,
        request: &Request,
        id: &RequestId,
    ) -> Result<TokenResponse, ApiError> {
        let approvals = self.x.approvals();
        let now_ms = self.now_ms;
        let requests = self.x.store.requests();
        let unknown = || {
            oauth(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                format!("no request {id} of yours is known (or it is no longer kept)"),
            )
        };
        let r = match requests.get(id, now_ms).await? {
            Some(r)
                if r.requester.sub == identity.subject && r.requester.idp == identity.issuer =>
            {
                r
            }
            _ => {
                return Err(self
                    .deny(Some(request), Some(identity), None, unknown())
                    .await);
            }
        };
        let same_ask = r.scope == request.scope
            && request.role.as_ref().is_none_or(|role| role == &r.role)
            && (request.refs.is_empty() || request.refs == r.refs);
        if !same_ask {
            let e = oauth(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!(
                    "request {id} is for {} under role '{}'; poll it with that scope",
                    r.scope, r.role
                ),
            );
            return Err(self
                .deny(Some(request), Some(identity), Some(&r.role), e)
                .await);
        }
        let interval_ms = i64::try_from(POLL_INTERVAL_SECS * 1000).unwrap_or(i64::MAX);
        if !requests.poll(id, interval_ms, now_ms).await? {
            let slower = POLL_INTERVAL_SECS + SLOW_DOWN_SECS;
            let d = format!(
                "request {id} was polled sooner than {POLL_INTERVAL_SECS} s after the last poll; wait {slower} s"
            );
            return Err(answer(
                StatusCode::BAD_REQUEST,
                SLOW_DOWN,
                d,
                approvals.details(&r, slower, now_ms),
            ));
        }
        let details = approvals.details(&r, POLL_INTERVAL_SECS, now_ms);
        let refusal = match r.state_at(now_ms) {
            RequestState::Pending => {
                let d = format!("request {id} waits for {}", waiting(&approvals, &r));
                return Err(answer(
                    StatusCode::BAD_REQUEST,
                    AUTHORIZATION_PENDING,
                    d,
                    details,
                ));
            }
            RequestState::Denied => answer(
                StatusCode::FORBIDDEN,
                ACCESS_DENIED,
                decided(&r, "denied"),
                details,
            ),
            RequestState::Cancelled => answer(
                StatusCode::FORBIDDEN,
                ACCESS_DENIED,
                decided(&r, "cancelled"),
                details,
            ),
            RequestState::Expired => answer(
                StatusCode::BAD_REQUEST,
                EXPIRED_TOKEN,
                format!("request {id} expired without the approvals it needed; ask again"),
                details,
            ),
            RequestState::Approved => match self.collectable(identity, &r, details).await {
                Ok(decision) => return self.collect(identity, &r, decision).await,
                Err(e) => e,
            },
        };
        Err(self
            .deny(Some(request), Some(identity), Some(&r.role), refusal)
            .await)
    }

    /// The decision to issue for approved request `r`, or why nothing is issued: collected
    /// already, its lifetime over, revoked since it was filed, or no longer granted.
    async fn collectable(
        &self,
        identity: &VerifiedIdentity,
        r: &ApprovalRequest,
        details: PendingDetails,
    ) -> Result<Decision, ApiError> {
        let id = &r.id;
        let now_ms = self.now_ms;
        if let Some(jti) = &r.jti {
            return Err(oauth(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                format!("the token of request {id} was already collected (jti {jti})"),
            ));
        }
        let Some(exp_ms) = r.grant_expires_ms() else {
            return Err(ApiError::Internal(format!(
                "approved request {id} has no approval time"
            )));
        };
        if exp_ms <= now_ms + 1000 {
            let d = format!(
                "request {id} was approved, but its {}-minute lifetime from the approval is over",
                r.ttl_minutes
            );
            return Err(answer(StatusCode::BAD_REQUEST, EXPIRED_TOKEN, d, details));
        }
        let dims: Vec<String> = [
            RevokeTarget::All,
            RevokeTarget::Subject(r.requester.sub.clone()),
            RevokeTarget::Repo(r.scope.repo.clone()),
            RevokeTarget::Role(r.role.clone()),
            RevokeTarget::Issuer(r.requester.idp.clone()),
        ]
        .iter()
        .map(RevokeTarget::dimension)
        .collect();
        let marks = self.x.store.revoked_before(&dims).await?;
        if revoked_by(&marks, r.created_ms) {
            let d = format!(
                "access was revoked after request {id} was filed; nothing is issued for it"
            );
            return Err(answer(StatusCode::FORBIDDEN, ACCESS_DENIED, d, details));
        }
        // The policy of now must still grant it (the role may be gone, the person's groups
        // changed); the reason and approvals were judged when they were given.
        let ask = Request {
            scope: r.scope.clone(),
            role: Some(r.role.clone()),
            ttl: Some(r.ttl_minutes),
            reason: r.reason.clone(),
            refs: r.refs.clone(),
        };
        let mut decision = policy::decide(&self.x.policy, identity, &ask, now_ms.div_euclid(1000))
            .map_err(|d| {
                let d = format!("request {id} was approved, but {}", d.message);
                answer(StatusCode::FORBIDDEN, ACCESS_DENIED, d, details.clone())
            })?;
        decision.iat = now_ms.div_euclid(1000);
        decision.exp = exp_ms.div_euclid(1000);
        Ok(decision)
    }

    /// Issues the token of approved request `r`, once (its id is reserved first).
    async fn collect(
        &self,
        identity: &VerifiedIdentity,
        r: &ApprovalRequest,
        decision: Decision,
    ) -> Result<TokenResponse, ApiError> {
        let jti = token::new_jti().map_err(|e| ApiError::Internal(e.to_string()))?;
        if !self.x.approvals().reserve(r, &jti, self.now_ms).await? {
            return Err(oauth(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                format!("the token of request {} was already collected", r.id),
            ));
        }
        let extra = Extra {
            jti,
            request: Some(r.id.clone()),
            approved_ms: r.approved_ms,
            break_glass: false,
        };
        issue(self, identity, decision, extra).await
    }

    /// A break-glass exchange: the request is filed approved by its requester, the token
    /// issued at once and both flagged for review.
    pub(super) async fn break_glass(
        &self,
        identity: &VerifiedIdentity,
        decision: Decision,
    ) -> Result<TokenResponse, ApiError> {
        let jti = token::new_jti().map_err(|e| ApiError::Internal(e.to_string()))?;
        let r = self
            .x
            .approvals()
            .break_glass(
                &party(identity),
                &decision,
                &jti,
                Some(&self.caller.client),
                self.now_ms,
            )
            .await?;
        let extra = Extra {
            jti,
            request: Some(r.id.clone()),
            approved_ms: r.approved_ms,
            break_glass: true,
        };
        issue(self, identity, decision, extra).await
    }
}
