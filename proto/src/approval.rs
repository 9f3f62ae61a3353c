//! Access that needs a person's yes: the approval request as the API shows it, the bodies of
//! `GET /v1/requests` and `POST /v1/requests/{id}/approve|deny|cancel`, and the extra fields
//! of the token endpoint's pending answer.
//!
//! An exchange for a role that needs approval never issues a token at once. With
//! `approval=request` it files a request and answers `authorization_pending` with the
//! request's id, who may approve it, how long it may wait and how often to poll — the shape
//! of RFC 8628's device flow. The requester then polls the token endpoint with
//! `request_id=<id>` and a fresh subject token of their own: `authorization_pending` while
//! it waits, `slow_down` when polled faster than `interval`, `expired_token` once it can no
//! longer be approved, `access_denied` when it was denied, cancelled or revoked, and the
//! token once it is approved — whose lifetime started at the approval.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::refs::RefPattern;
use crate::scope::{RepoPath, Scope};

/// The error code of a request that is waiting for approval (RFC 8628 §3.5).
pub const AUTHORIZATION_PENDING: &str = "authorization_pending";
/// The error code of a poll that came sooner than `interval` after the last (RFC 8628 §3.5).
pub const SLOW_DOWN: &str = "slow_down";
/// The error code of a request that expired unapproved, or whose grant's lifetime ran out
/// before it was collected (RFC 8628 §3.5).
pub const EXPIRED_TOKEN: &str = "expired_token";
/// The error code of a request that was denied, cancelled, or revoked (RFC 6749 §5.2).
pub const ACCESS_DENIED: &str = "access_denied";
/// The error code of an exchange, without `approval=request`, for a role that needs approval:
/// the answer says how to request it.
pub const APPROVAL_REQUIRED: &str = "approval_required";
/// The `approval` form parameter that files a request.
pub const APPROVAL_REQUEST: &str = "request";

/// Length of a request id: `rq_` and 26 characters of lowercase base32 (130 random bits).
pub const REQUEST_ID_LEN: usize = 29;
/// Longest approver or denier reason accepted.
pub const MAX_DECISION_REASON_LEN: usize = 1024;
/// Default page of `GET /v1/requests`.
pub const DEFAULT_REQUEST_PAGE: usize = 50;
/// Largest page of `GET /v1/requests`.
pub const MAX_REQUEST_PAGE: usize = 500;

/// Why a request id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request id must be 'rq_' and 26 characters of a-z 2-7")]
pub struct RequestIdError;

/// An approval request's id: `rq_` and 26 characters of lowercase base32.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(String);

impl RequestId {
    /// Parses a request id.
    pub fn parse(s: &str) -> Result<Self, RequestIdError> {
        let ok = s.len() == REQUEST_ID_LEN
            && s.starts_with("rq_")
            && s.bytes()
                .skip(3)
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(RequestIdError)
        }
    }

    /// A request id of 17 random bytes (the first 130 bits are used).
    pub fn from_random(bytes: [u8; 17]) -> Self {
        const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut id = String::with_capacity(REQUEST_ID_LEN);
        id.push_str("rq_");
        let mut acc: u32 = 0;
        let mut bits = 0;
        for b in bytes {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 5 && id.len() < REQUEST_ID_LEN {
                bits -= 5;
                id.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
            }
            acc &= (1 << bits) - 1;
        }
        Self(id)
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RequestId {
    type Error = RequestIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<RequestId> for String {
    fn from(id: RequestId) -> Self {
        id.0
    }
}

/// Where a request is in its life. `pending` is the only state that moves; the others are
/// final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for approvals.
    Pending,
    /// Approved by enough distinct approvers: its token may be collected (once).
    Approved,
    /// Denied by an approver.
    Denied,
    /// Not approved before its deadline.
    Expired,
    /// Withdrawn by the requester.
    Cancelled,
}

impl RequestState {
    /// The state's name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether nothing can change it any more.
    pub fn is_final(self) -> bool {
        self != Self::Pending
    }

    /// Parses a state's name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Approved,
            Self::Denied,
            Self::Expired,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One person's decision on a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The approver's (or denier's, or canceller's) verified subject.
    pub by: String,
    /// Their trusted issuer's name.
    pub idp: String,
    /// Why.
    pub reason: String,
    /// When, seconds since the epoch.
    #[serde(deserialize_with = "crate::time::de_numeric_date")]
    pub at: i64,
}

/// An approval request as the API shows it. Never holds a token; `jti` names the one issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestInfo {
    /// The request's id.
    pub id: RequestId,
    /// Where it is in its life.
    pub state: RequestState,
    /// The requester's verified subject.
    pub requester: String,
    /// The requester's trusted issuer's name.
    pub idp: String,
    /// The role it asks under.
    pub role: String,
    /// The repository and actions asked for.
    pub scope: Scope,
    /// Ref patterns a write is narrowed to (empty: all the role allows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<RefPattern>,
    /// The lifetime the token will have, counted from the approval, in minutes.
    pub ttl_minutes: u32,
    /// The requester's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Filed at, seconds since the epoch.
    #[serde(deserialize_with = "crate::time::de_numeric_date")]
    pub created: i64,
    /// It can be approved until, seconds since the epoch.
    #[serde(deserialize_with = "crate::time::de_numeric_date")]
    pub expires: i64,
    /// Distinct approvals needed.
    pub required: u8,
    /// Who may approve, for people ("bob (corp)", "groups contains sre (corp)").
    #[serde(default)]
    pub approvers: Vec<String>,
    /// The approvals given so far, in order.
    #[serde(default)]
    pub approvals: Vec<Decision>,
    /// The denial or cancellation, when it was denied or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// The moment the last needed approval came, seconds since the epoch: the token's
    /// lifetime starts here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<i64>,
    /// The id of the token issued for it, once collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// A break-glass request: approved by its requester at once, flagged for review.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
}

/// `GET /v1/requests`'s query string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestsQuery {
    /// Only requests in this state (`pending`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Only requests of this requester (subject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// Only requests on this repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Only requests under this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Only requests the caller may decide (not their own, a role they approve for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mine_to_approve: Option<bool>,
    /// The `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size (1..=[`MAX_REQUEST_PAGE`], default [`DEFAULT_REQUEST_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl RequestsQuery {
    /// The page size asked for, clamped.
    pub fn page_size(&self) -> usize {
        self.limit
            .unwrap_or(DEFAULT_REQUEST_PAGE)
            .clamp(1, MAX_REQUEST_PAGE)
    }

    /// The state filter, parsed; an unknown state is an error naming it.
    pub fn state_filter(&self) -> Result<Option<RequestState>, String> {
        self.state
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| {
                RequestState::parse(s).ok_or_else(|| {
                    format!(
                        "state {s:?} is not one of pending, approved, denied, expired, cancelled"
                    )
                })
            })
            .transpose()
    }

    /// The repository filter, parsed.
    pub fn repo_path(&self) -> Result<Option<RepoPath>, crate::scope::ScopeError> {
        self.repo
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(RepoPath::parse)
            .transpose()
    }
}

/// A page of requests, newest first. A page may hold fewer than asked and still have a
/// `next_cursor`: page on until there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPage {
    /// The requests on this page.
    pub requests: Vec<RequestInfo>,
    /// The `cursor` of the next page, when there may be more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /v1/requests/{id}/approve`, `…/deny`, `…/cancel`: why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    /// Why: required, recorded in the audit trail and sent to the webhooks.
    pub reason: String,
}

/// Why a decision's reason was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionReasonError {
    /// Empty after trimming.
    #[error("a reason is required")]
    Missing,
    /// Over [`MAX_DECISION_REASON_LEN`] bytes.
    #[error("reason is longer than {MAX_DECISION_REASON_LEN} bytes")]
    TooLong,
    /// Holds control characters.
    #[error("reason must not contain control characters")]
    Control,
}

impl DecideRequest {
    /// The reason, trimmed and checked.
    pub fn checked_reason(&self) -> Result<&str, DecisionReasonError> {
        let r = self.reason.trim();
        if r.is_empty() {
            Err(DecisionReasonError::Missing)
        } else if r.len() > MAX_DECISION_REASON_LEN {
            Err(DecisionReasonError::TooLong)
        } else if r.chars().any(char::is_control) {
            Err(DecisionReasonError::Control)
        } else {
            Ok(r)
        }
    }
}

/// What the token endpoint adds to its error body about an approval request
/// (`authorization_pending`, `slow_down`, `approval_required`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDetails {
    /// The request's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    /// Its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RequestState>,
    /// The role that needs approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Who may approve, for people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// Approvals given so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<u8>,
    /// Approvals needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<u8>,
    /// Seconds to wait between polls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    /// Seconds left for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    /// The shortest reason the role accepts, in characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_reason: Option<u16>,
}

impl PendingDetails {
    /// Whether it says nothing.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_round_trip_and_refuse_anything_else() {
        let id = RequestId::from_random([0xff; 17]);
        assert_eq!(id.as_str().len(), REQUEST_ID_LEN);
        assert_eq!(RequestId::parse(id.as_str()), Ok(id.clone()));
        let zero = RequestId::from_random([0; 17]);
        assert_eq!(zero.as_str(), "rq_aaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_ne!(id, zero);
        for bad in [
            "",
            "rq_",
            "rq_aaaaaaaaaaaaaaaaaaaaaaaaa",
            "rq_aaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "RQ_aaaaaaaaaaaaaaaaaaaaaaaaaa",
            "rq_aaaaaaaaaaaaaaaaaaaaaaaaa1",
            "rq_aaaaaaaaaaaaaaaaaaaaaaaaa/",
            "xx_aaaaaaaaaaaaaaaaaaaaaaaaaa",
            "rq_aaaaaaaaaaaaaaaaaaaaaaaaaé",
        ] {
            assert_eq!(RequestId::parse(bad), Err(RequestIdError), "{bad:?}");
        }
        let json = serde_json::to_string(&id).expect("serialises");
        assert_eq!(serde_json::from_str::<RequestId>(&json).ok(), Some(id));
        assert!(serde_json::from_str::<RequestId>("\"rq_../../etc\"").is_err());
    }

    #[test]
    fn states_parse_their_own_names_only() {
        for s in [
            RequestState::Pending,
            RequestState::Approved,
            RequestState::Denied,
            RequestState::Expired,
            RequestState::Cancelled,
        ] {
            assert_eq!(RequestState::parse(s.as_str()), Some(s));
            assert_eq!(s.is_final(), s != RequestState::Pending);
        }
        assert_eq!(RequestState::parse("Pending"), None);
        let q = RequestsQuery {
            state: Some("open".into()),
            ..Default::default()
        };
        assert!(q.state_filter().is_err_and(|e| e.contains("\"open\"")));
    }

    #[test]
    fn decision_reasons_are_checked() {
        let r = |s: &str| DecideRequest { reason: s.into() };
        assert_eq!(r("  ok  ").checked_reason(), Ok("ok"));
        assert_eq!(r("  ").checked_reason(), Err(DecisionReasonError::Missing));
        assert_eq!(
            r("a\u{1b}[2J").checked_reason(),
            Err(DecisionReasonError::Control)
        );
        let long = "x".repeat(MAX_DECISION_REASON_LEN + 1);
        assert_eq!(r(&long).checked_reason(), Err(DecisionReasonError::TooLong));
    }
}
