//! Approval requests as the store keeps them, and the [`RequestStore`] both stores implement
//! (memory: [`RequestBook`]; Redis: `super::redis_requests`), checked by one suite
//! (`super::requests_suite`).
//!
//! The store knows no rules: it files a request, reads it, replaces it by compare-and-set on
//! its `version` (so two approvers, or an approver and the expiry sweep, can never both move
//! it), lists requests newest first from a cursor, and names the pending ones whose deadline
//! passed. What a transition may do is decided in `crate::approval`.
//!
//! A request is kept [`KEEP_MS`] after it could last matter (its deadline, or the end of its
//! grant's lifetime), then forgotten by TTL; its audit events are the lasting record.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use jit_proto::approval::{Decision, RequestId, RequestInfo, RequestState};
use jit_proto::{RefPattern, Scope};
use serde::{Deserialize, Serialize};

use super::{IndexMember, StoreError};

/// How long a request is kept after it stopped mattering: 7 days.
pub const KEEP_MS: i64 = 7 * 24 * 3600 * 1000;
/// Most requests one listing call returns.
pub const MAX_PAGE: usize = 500;

/// A fresh request id from the system's secure random source.
pub fn new_request_id() -> Result<RequestId, StoreError> {
    let mut bytes = [0u8; 17];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| StoreError::Unavailable("no secure random source".into()))?;
    Ok(RequestId::from_random(bytes))
}

/// A person in a request: who they proved to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// The verified subject.
    pub sub: String,
    /// The trusted issuer's name.
    pub idp: String,
    /// The verified email address, lower-cased, when the issuer vouched for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// One approval, denial or cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Who.
    pub by: Party,
    /// Why.
    pub reason: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

impl Vote {
    fn info(&self) -> Decision {
        Decision {
            by: self.by.sub.clone(),
            idp: self.by.idp.clone(),
            reason: self.reason.clone(),
            at: self.at_ms.div_euclid(1000),
        }
    }
}

/// An approval request as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// Its id.
    pub id: RequestId,
    /// Bumped by every change; replacing needs the previous one (compare-and-set).
    pub version: u64,
    /// Where it is in its life.
    pub state: RequestState,
    /// Who asked.
    pub requester: Party,
    /// The role.
    pub role: String,
    /// The repository and actions.
    pub scope: Scope,
    /// Ref patterns a write is narrowed to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<RefPattern>,
    /// The token's lifetime from the approval, minutes.
    pub ttl_minutes: u32,
    /// The requester's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Filed at, ms.
    pub created_ms: i64,
    /// Approvable until, ms.
    pub expires_ms: i64,
    /// Distinct approvals needed.
    pub required: u8,
    /// The approvals so far.
    #[serde(default)]
    pub approvals: Vec<Vote>,
    /// The denial or cancellation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Vote>,
    /// When the last needed approval came, ms: the token's lifetime starts here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_ms: Option<i64>,
    /// The token issued for it, once collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Break-glass: approved by its requester at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
}

impl ApprovalRequest {
    /// Its position in the listing index.
    pub fn index_member(&self) -> IndexMember {
        IndexMember::new(self.created_ms, self.id.as_str())
    }

    /// The state as of `now_ms`: a pending request past its deadline is expired, whether or
    /// not the sweep has recorded it yet.
    pub fn state_at(&self, now_ms: i64) -> RequestState {
        if self.state == RequestState::Pending && now_ms >= self.expires_ms {
            RequestState::Expired
        } else {
            self.state
        }
    }

    /// The approved grant's expiry (ms), once approved.
    pub fn grant_expires_ms(&self) -> Option<i64> {
        self.approved_ms
            .map(|a| a.saturating_add(i64::from(self.ttl_minutes) * 60_000))
    }

    /// Until when the store keeps it (ms).
    pub fn keep_until_ms(&self) -> i64 {
        self.grant_expires_ms()
            .unwrap_or(self.expires_ms)
            .max(self.expires_ms)
            .saturating_add(KEEP_MS)
    }

    /// As the API shows it at `now_ms`, with `approvers` describing who may approve.
    pub fn info(&self, approvers: Vec<String>, now_ms: i64) -> RequestInfo {
        RequestInfo {
            id: self.id.clone(),
            state: self.state_at(now_ms),
            requester: self.requester.sub.clone(),
            idp: self.requester.idp.clone(),
            role: self.role.clone(),
            scope: self.scope.clone(),
            refs: self.refs.clone(),
            ttl_minutes: self.ttl_minutes,
            reason: self.reason.clone(),
            created: self.created_ms.div_euclid(1000),
            expires: self.expires_ms.div_euclid(1000),
            required: self.required,
            approvers,
            approvals: self.approvals.iter().map(Vote::info).collect(),
            decision: self.decision.as_ref().map(Vote::info),
            approved_at: self.approved_ms.map(|a| a.div_euclid(1000)),
            jti: self.jti.clone(),
            break_glass: self.break_glass,
        }
    }
}

/// One page of requests, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestSlice {
    /// The requests still kept, newest first.
    pub requests: Vec<ApprovalRequest>,
    /// The last index entry examined, when the index may hold more after it.
    pub next: Option<IndexMember>,
}

/// Where approval requests live.
#[async_trait]
pub trait RequestStore: Send + Sync {
    /// Files `r` (its first version) and makes it the latest of `ask` (the requester's
    /// identical asks share one key), if `ask`'s latest is still `expected_latest`; `Ok(false)`,
    /// changing nothing, when another filing got there first.
    async fn file(
        &self,
        r: &ApprovalRequest,
        ask: &str,
        expected_latest: Option<&RequestId>,
        now_ms: i64,
    ) -> Result<bool, StoreError>;

    /// The latest request filed for `ask`, if it is still kept.
    async fn latest(&self, ask: &str, now_ms: i64) -> Result<Option<RequestId>, StoreError>;

    /// The request `id`, if kept.
    async fn get(&self, id: &RequestId, now_ms: i64)
    -> Result<Option<ApprovalRequest>, StoreError>;

    /// Replaces the request with `r` if its stored version is `r.version - 1`; `Ok(false)`,
    /// changing nothing, otherwise (or when it is gone).
    async fn replace(&self, r: &ApprovalRequest, now_ms: i64) -> Result<bool, StoreError>;

    /// Up to `limit` kept requests, newest first, before `before` (exclusive).
    async fn page(
        &self,
        before: Option<&IndexMember>,
        limit: usize,
        now_ms: i64,
    ) -> Result<RequestSlice, StoreError>;

    /// Up to `limit` requests still pending in the store whose deadline is at or before
    /// `now_ms`, for the expiry sweep.
    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<RequestId>, StoreError>;

    /// Forgets that `id` is due (its record is gone).
    async fn drop_due(&self, id: &RequestId) -> Result<(), StoreError>;

    /// Whether a poll of `id` may go ahead: `false` when the previous poll that went ahead
    /// came less than `interval_ms` ago; one that goes ahead is remembered.
    async fn poll(&self, id: &RequestId, interval_ms: i64, now_ms: i64)
    -> Result<bool, StoreError>;
}

/// The in-process [`RequestStore`].
#[derive(Debug, Default)]
pub struct RequestBook {
    inner: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    /// id → (request, kept until ms).
    requests: HashMap<RequestId, (ApprovalRequest, i64)>,
    index: BTreeSet<IndexMember>,
    /// (deadline ms, id) of requests pending in the store.
    due: BTreeSet<(i64, RequestId)>,
    /// ask → (latest id, kept until ms).
    latest: HashMap<String, (RequestId, i64)>,
    /// id → last poll ms.
    polls: HashMap<RequestId, i64>,
}

impl Book {
    /// Forgets what is past its keep time (amortised: at most a few entries per call).
    fn forget(&mut self, now_ms: i64) {
        let gone: Vec<IndexMember> = self
            .index
            .iter()
            .take(16)
            .filter(|m| match RequestId::parse(m.jti()) {
                Ok(id) => self
                    .requests
                    .get(&id)
                    .is_none_or(|(_, until)| *until <= now_ms),
                Err(_) => true,
            })
            .cloned()
            .collect();
        for m in gone {
            self.index.remove(&m);
            if let Ok(id) = RequestId::parse(m.jti()) {
                self.requests.remove(&id);
                self.polls.remove(&id);
            }
        }
        self.latest.retain(|_, (_, until)| *until > now_ms);
    }

    fn live(&self, id: &RequestId, now_ms: i64) -> Option<&ApprovalRequest> {
        self.requests
            .get(id)
            .filter(|(_, until)| *until > now_ms)
            .map(|(r, _)| r)
    }
}

impl RequestBook {
    fn book(&self) -> Result<std::sync::MutexGuard<'_, Book>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Unavailable("request book lock poisoned".into()))
    }
}

#[async_trait]
impl RequestStore for RequestBook {
    async fn file(
        &self,
        r: &ApprovalRequest,
        ask: &str,
        expected_latest: Option<&RequestId>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut b = self.book()?;
        b.forget(now_ms);
        let current = b
            .latest
            .get(ask)
            .filter(|(_, until)| *until > now_ms)
            .map(|(id, _)| id);
        if current != expected_latest {
            return Ok(false);
        }
        if b.requests.contains_key(&r.id) {
            return Err(StoreError::Invalid("request id already filed"));
        }
        let until = r.keep_until_ms();
        b.requests.insert(r.id.clone(), (r.clone(), until));
        b.index.insert(r.index_member());
        if r.state == jit_proto::approval::RequestState::Pending {
            b.due.insert((r.expires_ms, r.id.clone()));
        }
        b.latest.insert(ask.to_owned(), (r.id.clone(), until));
        Ok(true)
    }

    async fn latest(&self, ask: &str, now_ms: i64) -> Result<Option<RequestId>, StoreError> {
        let b = self.book()?;
        Ok(b.latest
            .get(ask)
            .filter(|(_, until)| *until > now_ms)
            .map(|(id, _)| id.clone()))
    }

    async fn get(
        &self,
        id: &RequestId,
        now_ms: i64,
    ) -> Result<Option<ApprovalRequest>, StoreError> {
        Ok(self.book()?.live(id, now_ms).cloned())
    }

    async fn replace(&self, r: &ApprovalRequest, now_ms: i64) -> Result<bool, StoreError> {
        let mut b = self.book()?;
        let Some(stored) = b.live(&r.id, now_ms) else {
            return Ok(false);
        };
        if stored.version.checked_add(1) != Some(r.version) {
            return Ok(false);
        }
        let deadline = stored.expires_ms;
        if r.state.is_final() {
            b.due.remove(&(deadline, r.id.clone()));
        }
        b.requests
            .insert(r.id.clone(), (r.clone(), r.keep_until_ms()));
        Ok(true)
    }

    async fn page(
        &self,
        before: Option<&IndexMember>,
        limit: usize,
        now_ms: i64,
    ) -> Result<RequestSlice, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let b = self.book()?;
        let mut requests = Vec::new();
        let mut next = None;
        let older = b
            .index
            .iter()
            .rev()
            .filter(|m| before.is_none_or(|c| *m < c));
        for m in older {
            if requests.len() == limit {
                break;
            }
            next = Some(m.clone());
            if let Some(r) = RequestId::parse(m.jti())
                .ok()
                .and_then(|id| b.live(&id, now_ms))
            {
                requests.push(r.clone());
            }
        }
        let more = next
            .as_ref()
            .is_some_and(|n| b.index.range(..n).next().is_some());
        Ok(RequestSlice {
            requests,
            next: next.filter(|_| more),
        })
    }

    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<RequestId>, StoreError> {
        let b = self.book()?;
        Ok(b.due
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect())
    }

    async fn drop_due(&self, id: &RequestId) -> Result<(), StoreError> {
        self.book()?.due.retain(|(_, d)| d != id);
        Ok(())
    }

    async fn poll(
        &self,
        id: &RequestId,
        interval_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut b = self.book()?;
        let ok = b
            .polls
            .get(id)
            .is_none_or(|last| now_ms.saturating_sub(*last) >= interval_ms);
        if ok {
            b.polls.insert(id.clone(), now_ms);
        }
        Ok(ok)
    }
}
