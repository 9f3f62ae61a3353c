//! Access that needs a person's yes: the life of an approval request, from filing to its
//! final state, each step an audit event.
//!
//! ```text
//!            file (exchange with approval=request)
//!                 │
//!                 ▼
//!   ┌──────── pending ────────┐──────────────┐
//!   │ approve × required      │ deny         │ cancel (requester)   deadline passes
//!   ▼                         ▼              ▼                      ▼
//! approved ─ collect once ─▶ token   denied     cancelled             expired
//! ```
//!
//! Every move is a compare-and-set on the request's version, so two approvers (or an approver
//! and the expiry sweep) can never both move it. The token of an approved request is collected
//! by the requester's poll (the exchange), once, and lives `ttl` from the approval — not from
//! the request. Who may approve is the role's [`ApprovalRule`]; nobody approves their own
//! request ([`Person::same_as`]) and one person counts once.
//!
//! Break-glass requests are filed already approved by their requester, with the token's id
//! reserved, and flagged.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jit_proto::approval::{PendingDetails, RequestId, RequestInfo, RequestState};
use jit_proto::{RefPattern, RepoPath, Scope};
use serde_json::{Map, Value};

use crate::audit::{AuditEvent, EventKind};
use crate::clock::Clock;
use crate::error::ApiError;
use crate::notify::{Notifier, NotifyEvent, NotifyKind};
use crate::policy::approval::{Person, verified_email};
use crate::policy::{ApprovalRule, CompiledPolicy, Decision};
use crate::recorder::Auditor;
use crate::store::requests::new_request_id;
use crate::store::{ApprovalRequest, GrantStore, IndexMember, Party, StoreError, Vote};

/// Seconds between two polls of a request (RFC 8628 §3.5's `interval`).
pub const POLL_INTERVAL_SECS: u64 = 5;
/// How much a `slow_down` asks the poller to add to its interval (RFC 8628 §3.5).
pub const SLOW_DOWN_SECS: u64 = 5;
/// How old an approver's ID token may be (since its `iat`): a decision on someone else's
/// access needs a recent login.
pub const FRESH_LOGIN_SECS: i64 = 3600;
/// Index entries one listing call examines at most before it returns a short page.
const LIST_BUDGET: usize = 400;
/// Requests the expiry sweep handles per round.
const SWEEP_BATCH: usize = 100;
/// Longest listing cursor accepted.
const MAX_CURSOR_LEN: usize = 128;

/// The approval service's narrow state.
#[derive(Clone)]
pub struct Approvals {
    /// Requests (and revocation watermarks).
    pub store: Arc<dyn GrantStore>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Records each step.
    pub audit: Auditor,
    /// The roles and their approval rules.
    pub policy: Arc<CompiledPolicy>,
    /// Tells the webhooks of each new request and each decision.
    pub notifier: Notifier,
    /// The broker's public URL, for the webhooks' links.
    pub broker: Arc<str>,
}

/// Someone acting on a request: proven by a fresh ID token (with its claims) or an admin
/// role's broker token.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Subject, issuer and verified email.
    pub party: Party,
    /// The ID token's claims (empty for a broker token).
    pub claims: Map<String, Value>,
    /// Whether they are an admin (`[admin]`).
    pub admin: bool,
    /// Whether they proved it with a broker token (claims cannot be checked).
    pub by_broker_token: bool,
    /// When the credential was issued, seconds.
    pub iat: Option<i64>,
}

impl Actor {
    /// The actor of a verified identity's claims.
    pub fn new(
        subject: String,
        idp: String,
        claims: Map<String, Value>,
        admin: bool,
        by_broker_token: bool,
        iat: Option<i64>,
    ) -> Self {
        Self {
            party: party_of(subject, idp, &claims),
            claims,
            admin,
            by_broker_token,
            iat,
        }
    }
}

/// A person as a request names them: subject, issuer, and the email their issuer verified.
pub fn party_of(subject: String, idp: String, claims: &Map<String, Value>) -> Party {
    Party {
        sub: subject,
        idp,
        email: verified_email(claims),
    }
}

/// Whether `actor` matches one of `rule`'s approver entries (own requests aside): by claims
/// for an ID token, by name only for a broker token (which carries no claims).
fn may_approve(rule: &ApprovalRule, actor: &Actor) -> bool {
    if actor.by_broker_token {
        rule.may_approve_by_name(&actor.party.idp, &actor.party.sub)
    } else {
        rule.may_approve(&actor.party.idp, &actor.party.sub, &actor.claims)
    }
}

/// What a person does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Approve (an approver).
    Approve,
    /// Deny (an approver).
    Deny,
    /// Withdraw (the requester).
    Cancel,
}

impl Verdict {
    fn verb(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
            Self::Cancel => "cancel",
        }
    }
}

/// Which requests to list.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Only in this state (as of now).
    pub state: Option<RequestState>,
    /// Only of this requester (subject).
    pub requester: Option<String>,
    /// Only on this repository.
    pub repo: Option<RepoPath>,
    /// Only under this role.
    pub role: Option<String>,
    /// Only those the caller may decide.
    pub mine_to_approve: bool,
}

fn person(p: &Party) -> Person<'_> {
    Person {
        subject: &p.sub,
        issuer: &p.idp,
        email: p.email.as_deref(),
    }
}

/// The key shared by one requester's identical asks (role, scope, refs).
pub fn ask_key(requester: &Party, role: &str, scope: &Scope, refs: &[RefPattern]) -> String {
    let refs: Vec<&str> = refs.iter().map(RefPattern::as_str).collect();
    format!(
        "{}\n{}\n{role}\n{scope}\n{}",
        requester.idp,
        requester.sub,
        refs.join(" ")
    )
}

fn refused(status: axum::http::StatusCode, code: &'static str, d: String) -> ApiError {
    ApiError::OAuth {
        status,
        code,
        description: d,
    }
}

fn conflict(r: &ApprovalRequest, now_ms: i64) -> ApiError {
    refused(
        axum::http::StatusCode::CONFLICT,
        "invalid_request",
        format!("request {} is {}, not pending", r.id, r.state_at(now_ms)),
    )
}

/// A listing cursor: the last index entry of the previous page.
pub fn encode_cursor(m: &IndexMember) -> String {
    format!("r1.{}", URL_SAFE_NO_PAD.encode(m.as_str()))
}

/// Reads a listing cursor back.
pub fn decode_cursor(text: &str) -> Result<IndexMember, String> {
    if text.len() > MAX_CURSOR_LEN {
        return Err(format!("cursor is longer than {MAX_CURSOR_LEN} bytes"));
    }
    let body = text
        .strip_prefix("r1.")
        .ok_or("cursor is not one this broker made")?;
    let raw = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| "cursor is not one this broker made")?;
    let s = String::from_utf8(raw).map_err(|_| "cursor is not one this broker made")?;
    IndexMember::parse(&s).ok_or_else(|| "cursor is not one this broker made".to_owned())
}

impl Approvals {
    fn rule(&self, role: &str) -> Option<&ApprovalRule> {
        self.policy.role(role).and_then(|r| r.approval.as_ref())
    }

    /// Whether `actor` is named among the approvers of any role: who the console lets in to
    /// its Requests page besides the admins.
    pub fn approves_any(&self, actor: &Actor) -> bool {
        self.policy
            .roles()
            .iter()
            .filter_map(|r| r.approval.as_ref())
            .any(|rule| may_approve(rule, actor))
    }

    /// Who may approve requests under `role`, for people.
    pub fn approvers_of(&self, role: &str) -> Vec<String> {
        self.rule(role)
            .map(ApprovalRule::describe)
            .unwrap_or_default()
    }

    /// The request as the API shows it now.
    pub fn info(&self, r: &ApprovalRequest) -> RequestInfo {
        r.info(self.approvers_of(&r.role), self.clock.now_ms())
    }

    /// What the token endpoint says of `r` besides its error code.
    pub fn details(&self, r: &ApprovalRequest, interval: u64, now_ms: i64) -> PendingDetails {
        PendingDetails {
            request_id: Some(r.id.clone()),
            state: Some(r.state_at(now_ms)),
            role: Some(r.role.clone()),
            approvers: self.approvers_of(&r.role),
            approvals: Some(u8::try_from(r.approvals.len()).unwrap_or(u8::MAX)),
            required: Some(r.required),
            interval: Some(interval),
            expires_in: Some((r.expires_ms - now_ms).max(0).div_euclid(1000)),
            min_reason: self.rule(&r.role).map(|a| a.min_reason).filter(|m| *m > 0),
        }
    }

    /// The latest request `requester` filed for the same role, scope and refs, if kept.
    pub async fn latest(
        &self,
        requester: &Party,
        decision: &Decision,
        now_ms: i64,
    ) -> Result<Option<ApprovalRequest>, StoreError> {
        let ask = ask_key(requester, &decision.role, &decision.scope, &decision.refs);
        let requests = self.store.requests();
        match requests.latest(&ask, now_ms).await? {
            Some(id) => requests.get(&id, now_ms).await,
            None => Ok(None),
        }
    }

    /// Files a request for `decision` (a role with [`Gate::Approval`](crate::policy::Gate::Approval)) by `requester`, or
    /// returns the identical one still pending; `true` when it is new (and audited as
    /// `request.created`).
    pub async fn file(
        &self,
        requester: &Party,
        decision: &Decision,
        client: Option<&str>,
        now_ms: i64,
    ) -> Result<(ApprovalRequest, bool), ApiError> {
        let rule = self.rule(&decision.role).ok_or_else(|| {
            ApiError::Internal(format!("role {} has no approval rule", decision.role))
        })?;
        let ask = ask_key(requester, &decision.role, &decision.scope, &decision.refs);
        let requests = self.store.requests();
        // Two tries: a concurrent filing of the same ask makes the first lose.
        for _ in 0..2 {
            let latest_id = requests.latest(&ask, now_ms).await?;
            if let Some(id) = &latest_id
                && let Some(existing) = requests.get(id, now_ms).await?
                && existing.state_at(now_ms) == RequestState::Pending
                && existing.ttl_minutes == decision.ttl_minutes
            {
                return Ok((existing, false));
            }
            let r = ApprovalRequest {
                id: new_request_id()?,
                version: 1,
                state: RequestState::Pending,
                requester: requester.clone(),
                role: decision.role.clone(),
                scope: decision.scope.clone(),
                refs: decision.refs.clone(),
                ttl_minutes: decision.ttl_minutes,
                reason: decision.reason.clone(),
                created_ms: now_ms,
                expires_ms: now_ms + i64::from(rule.wait_minutes) * 60_000,
                required: rule.required,
                approvals: Vec::new(),
                decision: None,
                approved_ms: None,
                jti: None,
                break_glass: false,
            };
            if requests.file(&r, &ask, latest_id.as_ref(), now_ms).await? {
                let mut e = self.event(EventKind::RequestCreated, &r, &r.requester, now_ms);
                e.reason = r.reason.clone();
                e.client = client.map(str::to_owned);
                e = e.with("expires", r.expires_ms.div_euclid(1000));
                if let Err(err) = self.audit.record(e).await {
                    // Never an unaudited request: withdraw it before answering.
                    self.undo(&r, now_ms).await;
                    return Err(ApiError::StoreUnavailable(err));
                }
                self.notify(NotifyKind::RequestCreated, &r, None, now_ms);
                return Ok((r, true));
            }
        }
        Err(refused(
            axum::http::StatusCode::CONFLICT,
            "invalid_request",
            "an identical request is being filed at this moment; try again".into(),
        ))
    }

    /// Files a break-glass request for `decision`, approved by its requester at once, with
    /// the token id `jti` reserved; audited as `request.break_glass`.
    pub async fn break_glass(
        &self,
        requester: &Party,
        decision: &Decision,
        jti: &str,
        client: Option<&str>,
        now_ms: i64,
    ) -> Result<ApprovalRequest, ApiError> {
        let reason = decision.reason.clone().unwrap_or_default();
        let r = ApprovalRequest {
            id: new_request_id()?,
            version: 1,
            state: RequestState::Approved,
            requester: requester.clone(),
            role: decision.role.clone(),
            scope: decision.scope.clone(),
            refs: decision.refs.clone(),
            ttl_minutes: decision.ttl_minutes,
            reason: decision.reason.clone(),
            created_ms: now_ms,
            expires_ms: now_ms,
            required: 1,
            approvals: vec![Vote {
                by: requester.clone(),
                reason,
                at_ms: now_ms,
            }],
            decision: None,
            approved_ms: Some(now_ms),
            jti: Some(jti.to_owned()),
            break_glass: true,
        };
        let ask = format!(
            "break-glass\n{}",
            ask_key(requester, &decision.role, &decision.scope, &decision.refs)
        );
        let requests = self.store.requests();
        let latest = requests.latest(&ask, now_ms).await?;
        if !requests.file(&r, &ask, latest.as_ref(), now_ms).await? {
            return Err(refused(
                axum::http::StatusCode::CONFLICT,
                "invalid_request",
                "an identical break-glass request is being filed at this moment; try again".into(),
            ));
        }
        let mut e = self.event(EventKind::RequestBreakGlass, &r, requester, now_ms);
        e.reason = r.reason.clone();
        e.jti = Some(jti.to_owned());
        e.client = client.map(str::to_owned);
        e = e.with("review", true);
        self.audit.record(e).await?;
        self.notify(NotifyKind::BreakGlass, &r, r.approvals.first(), now_ms);
        Ok(r)
    }

    /// Reserves the token id `jti` for the approved request `r` (so it is collected once):
    /// `false` when another poll collected it first.
    pub async fn reserve(
        &self,
        r: &ApprovalRequest,
        jti: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut next = r.clone();
        next.version += 1;
        next.jti = Some(jti.to_owned());
        self.store.requests().replace(&next, now_ms).await
    }

    /// `actor` approves, denies or cancels request `id` with `reason`; the request as it is
    /// now. Refused (changing nothing) unless the request is pending and the actor may.
    pub async fn decide(
        &self,
        id: &RequestId,
        actor: &Actor,
        verdict: Verdict,
        reason: &str,
        client: Option<&str>,
    ) -> Result<ApprovalRequest, ApiError> {
        let requests = self.store.requests();
        for _ in 0..3 {
            let now_ms = self.clock.now_ms();
            let r = requests
                .get(id, now_ms)
                .await?
                .ok_or_else(|| unknown_request(id))?;
            let next = self.next_state(&r, actor, verdict, reason, now_ms)?;
            if !requests.replace(&next, now_ms).await? {
                continue; // Someone else moved it: judge again on what is there now.
            }
            let kind = match verdict {
                Verdict::Approve => EventKind::RequestApproved,
                Verdict::Deny => EventKind::RequestDenied,
                Verdict::Cancel => EventKind::RequestCancelled,
            };
            let mut e = self.event(kind, &next, &actor.party, now_ms);
            e.reason = Some(reason.to_owned());
            e.client = client.map(str::to_owned);
            if actor.by_broker_token {
                e = e.with("via", "broker_token");
            }
            if let Err(err) = self.audit.record(e).await {
                // Never an unaudited step: put the request back as it was.
                let mut back = r.clone();
                back.version = next.version + 1;
                if !requests.replace(&back, now_ms).await.unwrap_or(false) {
                    tracing::error!(request = %r.id, "could not undo a request step whose audit failed");
                }
                return Err(ApiError::StoreUnavailable(err));
            }
            let (kind, vote) = match verdict {
                Verdict::Approve => (NotifyKind::RequestApproved, next.approvals.last()),
                Verdict::Deny => (NotifyKind::RequestDenied, next.decision.as_ref()),
                Verdict::Cancel => (NotifyKind::RequestCancelled, next.decision.as_ref()),
            };
            self.notify(kind, &next, vote, now_ms);
            return Ok(next);
        }
        Err(refused(
            axum::http::StatusCode::CONFLICT,
            "invalid_request",
            format!("request {id} is changing under many hands at once; try again"),
        ))
    }

    /// The request after `verdict`, if `actor` may give it now.
    fn next_state(
        &self,
        r: &ApprovalRequest,
        actor: &Actor,
        verdict: Verdict,
        reason: &str,
        now_ms: i64,
    ) -> Result<ApprovalRequest, ApiError> {
        use axum::http::StatusCode;
        let forbidden = |d: String| refused(StatusCode::FORBIDDEN, "access_denied", d);
        if r.state_at(now_ms) != RequestState::Pending {
            return Err(conflict(r, now_ms));
        }
        let own = person(&actor.party).same_as(&person(&r.requester));
        let mut next = r.clone();
        next.version += 1;
        let vote = Vote {
            by: actor.party.clone(),
            reason: reason.to_owned(),
            at_ms: now_ms,
        };
        if verdict == Verdict::Cancel {
            let requester =
                actor.party.sub == r.requester.sub && actor.party.idp == r.requester.idp;
            if !requester {
                return Err(forbidden(format!(
                    "only the requester may cancel request {}; approvers deny",
                    r.id
                )));
            }
            next.state = RequestState::Cancelled;
            next.decision = Some(vote);
            return Ok(next);
        }
        if own {
            return Err(forbidden(format!(
                "you cannot {} your own request {} (the same person: subject or verified email)",
                verdict.verb(),
                r.id
            )));
        }
        let rule = self.rule(&r.role).ok_or_else(|| {
            forbidden(format!(
                "role '{}' no longer needs approval or no longer exists; request {} can only expire",
                r.role, r.id
            ))
        })?;
        if !may_approve(rule, actor) {
            return Err(forbidden(format!(
                "{} ({}) is not an approver for role '{}' (approvers: {})",
                jit_proto::display::clean(&actor.party.sub),
                actor.party.idp,
                r.role,
                rule.describe().join("; ")
            )));
        }
        let fresh = actor
            .iat
            .is_some_and(|iat| now_ms.div_euclid(1000) - iat <= FRESH_LOGIN_SECS);
        if !fresh {
            return Err(refused(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                format!(
                    "to {} a request, log in again: your credential was issued more than {} minutes ago",
                    verdict.verb(),
                    FRESH_LOGIN_SECS / 60
                ),
            ));
        }
        if verdict == Verdict::Deny {
            next.state = RequestState::Denied;
            next.decision = Some(vote);
            return Ok(next);
        }
        if r.approvals
            .iter()
            .any(|a| person(&a.by).same_as(&person(&actor.party)))
        {
            return Err(conflict_msg(format!(
                "you already approved request {}; it needs {} distinct approvals",
                r.id, r.required
            )));
        }
        next.approvals.push(vote);
        if next.approvals.len() >= usize::from(r.required) {
            next.state = RequestState::Approved;
            next.approved_ms = Some(now_ms);
        }
        Ok(next)
    }

    /// The request `id`, if `actor` may see it (its requester, an approver of its role, an
    /// admin).
    pub async fn get(&self, id: &RequestId, actor: &Actor) -> Result<ApprovalRequest, ApiError> {
        let r = self
            .store
            .requests()
            .get(id, self.clock.now_ms())
            .await?
            .ok_or_else(|| unknown_request(id))?;
        if self.may_see(&r, actor) {
            Ok(r)
        } else {
            // Said as for an unknown request: ids of others' requests are not confirmed.
            Err(unknown_request(id))
        }
    }

    fn may_decide(&self, r: &ApprovalRequest, actor: &Actor) -> bool {
        let own = person(&actor.party).same_as(&person(&r.requester));
        !own && self
            .rule(&r.role)
            .is_some_and(|rule| may_approve(rule, actor))
    }

    fn may_see(&self, r: &ApprovalRequest, actor: &Actor) -> bool {
        actor.admin
            || (actor.party.sub == r.requester.sub && actor.party.idp == r.requester.idp)
            || self.may_decide(r, actor)
    }

    /// One page of the requests `actor` may see that pass `filter`, newest first, after
    /// `cursor`; a bounded amount of work per call (a page may be short and still have a
    /// next cursor).
    pub async fn list(
        &self,
        actor: &Actor,
        filter: &RequestFilter,
        cursor: Option<&IndexMember>,
        limit: usize,
    ) -> Result<(Vec<ApprovalRequest>, Option<IndexMember>), ApiError> {
        let now_ms = self.clock.now_ms();
        let mut out = Vec::new();
        let mut before = cursor.cloned();
        let mut examined = 0;
        while examined < LIST_BUDGET {
            let chunk = limit.max(50).min(LIST_BUDGET - examined);
            let slice = self
                .store
                .requests()
                .page(before.as_ref(), chunk, now_ms)
                .await?;
            examined += chunk;
            let last_index = slice.next.clone();
            for r in slice.requests {
                let member = r.index_member();
                if self.passes(&r, actor, filter, now_ms) {
                    out.push(r);
                    if out.len() == limit {
                        return Ok((out, Some(member)));
                    }
                }
            }
            match last_index {
                Some(n) => before = Some(n),
                None => return Ok((out, None)),
            }
        }
        Ok((out, before))
    }

    fn passes(&self, r: &ApprovalRequest, actor: &Actor, f: &RequestFilter, now_ms: i64) -> bool {
        self.may_see(r, actor)
            && f.state.is_none_or(|s| r.state_at(now_ms) == s)
            && f.requester.as_ref().is_none_or(|s| &r.requester.sub == s)
            && f.repo.as_ref().is_none_or(|p| &r.scope.repo == p)
            && f.role.as_ref().is_none_or(|x| &r.role == x)
            && (!f.mine_to_approve || self.may_decide(r, actor))
    }

    /// Records the requests whose deadline passed as expired (one bounded round); how many
    /// it moved. Every replica runs it; the compare-and-set makes each move happen once.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let requests = self.store.requests();
        let now_ms = self.clock.now_ms();
        let mut moved = 0;
        for id in requests.due(now_ms, SWEEP_BATCH).await? {
            let Some(r) = requests.get(&id, now_ms).await? else {
                requests.drop_due(&id).await?;
                continue;
            };
            if r.state.is_final() {
                requests.drop_due(&id).await?;
                continue;
            }
            let mut next = r.clone();
            next.version += 1;
            next.state = RequestState::Expired;
            if requests.replace(&next, now_ms).await? {
                let e = self
                    .event(EventKind::RequestExpired, &next, &r.requester, now_ms)
                    .with("deadline", r.expires_ms.div_euclid(1000));
                if let Err(err) = self.audit.record(e).await {
                    tracing::warn!(request = %id, error = %err, "request.expired could not be audited");
                }
                self.notify(NotifyKind::RequestExpired, &next, None, now_ms);
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// A step's audit event: `actor` acted on `r`.
    pub fn event(
        &self,
        kind: EventKind,
        r: &ApprovalRequest,
        actor: &Party,
        now_ms: i64,
    ) -> AuditEvent {
        let mut e = AuditEvent::new(kind, now_ms);
        e.subject = Some(actor.sub.clone());
        e.idp = Some(actor.idp.clone());
        e.repo = Some(r.scope.repo.to_string());
        e.scope = Some(r.scope.to_string());
        e.role = Some(r.role.clone());
        let refs: Vec<&str> = r.refs.iter().map(RefPattern::as_str).collect();
        e.with("request_id", r.id.as_str())
            .with("requester", r.requester.sub.clone())
            .with("requester_idp", r.requester.idp.clone())
            .with("state", r.state_at(now_ms).as_str())
            .with("approvals", r.approvals.len())
            .with("required", r.required)
            .with("ttl_minutes", r.ttl_minutes)
            .with("refs", refs)
    }

    /// Queues the webhooks' event of `kind` about `r` (never blocks); `decided` is the
    /// approval, denial or cancellation that caused it.
    fn notify(&self, kind: NotifyKind, r: &ApprovalRequest, decided: Option<&Vote>, now_ms: i64) {
        self.notifier.send(NotifyEvent {
            kind,
            request_id: r.id.to_string(),
            requester: r.requester.sub.clone(),
            requester_idp: r.requester.idp.clone(),
            role: r.role.clone(),
            scope: r.scope.to_string(),
            repo: r.scope.repo.to_string(),
            refs: r.refs.iter().map(|p| p.as_str().to_owned()).collect(),
            ttl_minutes: r.ttl_minutes,
            reason: r.reason.clone(),
            approvers: self.approvers_of(&r.role),
            approvals: u8::try_from(r.approvals.len()).unwrap_or(u8::MAX),
            required: r.required,
            decided_by: decided.map(|v| v.by.sub.clone()),
            decision_reason: decided.map(|v| v.reason.clone()),
            urgent: r.break_glass,
            at: now_ms.div_euclid(1000),
            broker: self.broker.to_string(),
        });
    }

    /// Takes back a request whose filing could not be audited (best effort).
    async fn undo(&self, r: &ApprovalRequest, now_ms: i64) {
        let mut gone = r.clone();
        gone.version += 1;
        gone.state = RequestState::Cancelled;
        if !self
            .store
            .requests()
            .replace(&gone, now_ms)
            .await
            .unwrap_or(false)
        {
            tracing::error!(request = %r.id, "could not withdraw a request whose audit failed");
        }
    }
}

fn conflict_msg(d: String) -> ApiError {
    refused(axum::http::StatusCode::CONFLICT, "invalid_request", d)
}

fn unknown_request(id: &RequestId) -> ApiError {
    refused(
        axum::http::StatusCode::NOT_FOUND,
        "invalid_request",
        format!("no request {id} is known (or it is no longer kept)"),
    )
}

/// Runs the expiry sweep every `every` until the process ends.
pub async fn run_sweeper(approvals: Approvals, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = approvals.sweep().await {
            tracing::warn!(error = %e, "approval request sweep failed; retrying");
        }
    }
}
