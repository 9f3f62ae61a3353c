//! The grant store: live grants with their expiry, revocation, listings and the audit log.
//!
//! Two implementations pass one shared suite ([`suite`]): [`redis::RedisStore`] (production:
//! single Redis or Redis Cluster) and [`memory::MemoryStore`] (the embedded default of
//! `jit-broker dev`). A store that cannot be reached answers [`StoreError::Unavailable`], and
//! every caller treats that as "no": the broker fails closed.
//!
//! Bulk revocation is O(1) on the verification path: revoking by subject, repository, role,
//! issuer or everything records a *revoked-before* watermark (milliseconds) for that
//! dimension value. Checking a grant reads its own record plus the five watermarks that could
//! apply to it (all, its subject, repository, role, issuer) in one fixed-size lookup, however
//! many grants or revocations exist. A grant issued at or before any of them is revoked.
//! Watermarks live as long as the longest token can ([`MAX_TOKEN_LIFETIME_SECS`]), after
//! which every grant they could concern has expired anyway.
//!
//! A revocation is in force the moment its watermark (or, for one token, its tombstone) is
//! written: O(1), whatever the number of grants. Deleting the ended grants' records and index
//! entries is *tidying* ([`tidy`]): a durable queue of jobs in the store, worked through in
//! bounded batches by a background task of every broker (one broker at a time, holding a
//! lease in the store), resumable after a restart and idempotent. Tidying is never needed for correctness — checks and listings already refuse
//! what a watermark covers.
//!
//! Listings cost the page, not the population ([`page`]): every live grant is indexed by
//! issue time (jti tie-break) globally and per subject, repository, role and issuer; a
//! listing walks the smallest index that its filter names from an opaque cursor, checks the
//! rest of the filter on the page's records and stops after a few pages' worth of work.

#[cfg(test)]
pub mod flaky;
pub mod memory;
pub mod page;
pub mod redis;
pub mod redis_grants;
pub mod redis_requests;
pub mod redis_sessions;
pub mod requests;
#[cfg(any(test, feature = "test-suite"))]
pub mod requests_suite;
pub mod sessions;
#[cfg(any(test, feature = "test-suite"))]
pub mod sessions_suite;
#[cfg(any(test, feature = "test-suite"))]
pub mod suite;
pub mod tidy;
pub mod timed;

use async_trait::async_trait;
use jit_proto::{Claims, RefPattern, RepoPath, Scope};
use serde::{Deserialize, Serialize};

pub use self::page::{GrantListing, IndexMember, ListCursor};
pub use self::requests::{ApprovalRequest, Party, RequestStore, Vote};
pub use self::sessions::SessionStore;
pub use self::tidy::{ClaimedJob, TidyClaim, TidyJob, TidyProgress};
use crate::audit::{AuditCursor, AuditEvent, AuditQuery, ChainHead, Lane, Sealed};

/// The longest lifetime any token may have (roles are refused above it): 24 hours.
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 24 * 3600;
/// How long the store remembers that an expired grant existed, to answer "expired" rather
/// than "unknown".
pub const EXPIRED_MEMORY_SECS: i64 = 24 * 3600;

/// How much of one lane of the audit trail the store keeps. An append trims the lane's oldest
/// events until it holds at most `max_events`, at most `max_bytes` of event JSON, and nothing
/// older than `max_age_ms` before the newest event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneBudget {
    /// Most events kept.
    pub max_events: u64,
    /// Most bytes of event JSON kept.
    pub max_bytes: u64,
    /// Oldest event kept, in ms before the newest event appended.
    pub max_age_ms: i64,
}

/// The budgets of both lanes: evidence (grants, revocations, admin actions) and traffic (Git
/// accesses and every refusal) are trimmed separately, so traffic never pushes evidence out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRetention {
    /// The evidence lane's budget.
    pub evidence: LaneBudget,
    /// The traffic lane's budget.
    pub traffic: LaneBudget,
}

const DAY_MS: i64 = 24 * 3600 * 1000;

impl AuditRetention {
    /// The defaults (see docs/audit.md): evidence 400 days or 1 GiB, traffic 30 days or
    /// 256 MiB, at most `max_events` events per lane.
    pub fn with_max_events(max_events: usize) -> Self {
        let max_events = max_events.max(1) as u64;
        Self {
            evidence: LaneBudget {
                max_events,
                max_bytes: 1 << 30,
                max_age_ms: 400 * DAY_MS,
            },
            traffic: LaneBudget {
                max_events,
                max_bytes: 256 << 20,
                max_age_ms: 30 * DAY_MS,
            },
        }
    }

    /// The budget of `lane`.
    pub fn lane(&self, lane: Lane) -> &LaneBudget {
        match lane {
            Lane::Evidence => &self.evidence,
            Lane::Traffic => &self.traffic,
        }
    }
}

/// The lane a stored event is kept in: its own, or evidence for a version 1 event (which
/// names none).
pub fn lane_of(event: &AuditEvent) -> Lane {
    event.lane.unwrap_or(Lane::Evidence)
}

/// The events of both lanes (each oldest first) as one run ordered by seq, at most `limit`.
pub fn merge_by_seq(a: Vec<AuditEvent>, b: Vec<AuditEvent>, limit: usize) -> Vec<AuditEvent> {
    let mut out = Vec::with_capacity((a.len() + b.len()).min(limit));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while out.len() < limit {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.seq <= y.seq => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        };
        match next {
            Some(e) => out.push(e),
            None => break,
        }
    }
    out
}

/// The name of the chain written before each replica had its own: one chain every replica
/// appended to. Still read and verified; the recorder never appends to it, and a replica's
/// chain starts where it ended.
pub const LEGACY_CHAIN: &str = "";

/// A page of the audit trail, merged over every chain.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditPage {
    /// The events, in time order (each chain's in seq order).
    pub events: Vec<AuditEvent>,
    /// Where the next page starts, when the page is full (more may follow).
    pub next: Option<AuditCursor>,
    /// The same as one `after_seq`, when one says it: the store holds at most one replica's
    /// chain (besides the one from before replica chains, whose seqs come first).
    pub next_after_seq: Option<u64>,
}

/// Fewest events read from one chain at a time while merging ([`read_merged`]).
const MERGE_CHUNK_MIN: usize = 100;

/// One chain being merged: what was read of it and not taken yet.
struct Merging {
    chain: String,
    read: std::collections::VecDeque<AuditEvent>,
    /// The seq of the last event read from it.
    after: u64,
    /// Whether the last read was full (more may follow).
    more: bool,
}

/// One page of the merged trail: the roster's chains (and [`LEGACY_CHAIN`]) each read in
/// chunks from where `query` starts in it, merged by (time, chain, seq) until the page is
/// full; the cursor moves past exactly what was taken. A chunk is the page's share of each
/// chain (at least [`MERGE_CHUNK_MIN`]): the first chunks are read in parallel, and a chain
/// whose chunk runs out while it may hold more is read on from where it stopped. So a page
/// costs about one page of events read, not one page per chain, however many replicas have
/// written and however deep the page starts. Each chain's events stay in seq order, so paging
/// never skips or repeats an event even where replicas' clocks disagree.
pub async fn read_merged<S: GrantStore + ?Sized>(
    store: &S,
    query: &AuditQuery,
) -> Result<AuditPage, StoreError> {
    let mut chains = vec![LEGACY_CHAIN.to_owned()];
    chains.extend(store.audit_replicas().await?);
    let chunk = (query.limit / chains.len())
        .max(MERGE_CHUNK_MIN)
        .min(query.limit)
        .max(1);
    let read = |after: u64| AuditQuery {
        after_seq: after,
        cursor: None,
        limit: chunk,
        ..query.clone()
    };
    let first = futures_util::future::try_join_all(chains.iter().map(|c| {
        let q = read(query.after(c));
        async move { store.read_chain(c, &q).await }
    }))
    .await?;
    let mut cursor = AuditCursor::new(
        chains
            .iter()
            .map(|c| (c.clone(), query.after(c)))
            .filter(|(_, at)| *at > 0)
            .collect(),
    );
    let mut merging: Vec<Merging> = chains
        .iter()
        .zip(first)
        .map(|(c, page)| Merging {
            chain: c.clone(),
            after: page.last().map_or(query.after(c), |e| e.seq),
            more: page.len() >= chunk,
            read: page.into(),
        })
        .collect();
    let mut events = Vec::new();
    while events.len() < query.limit {
        for m in merging.iter_mut().filter(|m| m.read.is_empty() && m.more) {
            let page = store.read_chain(&m.chain, &read(m.after)).await?;
            m.more = page.len() >= chunk;
            if let Some(last) = page.last() {
                m.after = last.seq;
            }
            m.read = page.into();
        }
        let next = merging
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.read.front().map(|e| (e.ts, i, e.seq)))
            .min();
        let Some((_, i, _)) = next else { break };
        let Some(e) = merging[i].read.pop_front() else {
            break;
        };
        cursor.advance(&merging[i].chain, e.seq);
        events.push(e);
    }
    let full = events.len() >= query.limit;
    let single = chains.len() <= 2;
    Ok(AuditPage {
        next_after_seq: (full && single)
            .then(|| events.last().map(|e| e.seq))
            .flatten(),
        next: full.then_some(cursor),
        events,
    })
}

/// A store failure. Every variant means "deny".
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time.
    #[error("grant store unavailable: {0}")]
    Unavailable(String),
    /// The store held data this broker cannot read.
    #[error("grant store holds unreadable data: {0}")]
    Corrupt(String),
    /// The request itself was invalid (e.g. storing an already expired grant).
    #[error("invalid store request: {0}")]
    Invalid(&'static str),
}

/// A live grant as the store remembers it: everything needed to list it, revoke it and
/// check a token against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The token id.
    pub jti: String,
    /// The verified identity.
    pub sub: String,
    /// The trusted issuer's name.
    pub idp: String,
    /// The role it was granted under.
    pub role: String,
    /// The repository and actions.
    pub scope: Scope,
    /// Ref patterns a write is narrowed to (empty: all refs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<RefPattern>,
    /// The requester's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Issued at, milliseconds since the epoch (compared with revocation watermarks).
    pub issued_ms: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// The approval request it was issued for, when a person approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<String>,
    /// Issued under a break-glass role: flagged for review.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
}

impl Grant {
    /// The grant a token's claims describe, issued at `issued_ms`.
    pub fn from_claims(c: &Claims, issued_ms: i64) -> Self {
        Self {
            jti: c.jti.clone(),
            sub: c.sub.clone(),
            idp: c.idp.clone(),
            role: c.role.clone(),
            scope: c.scope.clone(),
            refs: c.refs.clone(),
            reason: c.reason.clone(),
            issued_ms,
            exp: c.exp,
            req: c.req.clone(),
            break_glass: false,
        }
    }

    /// Whether the grant's identifying facts agree with a token's claims.
    pub fn describes(&self, c: &Claims) -> bool {
        self.jti == c.jti
            && self.sub == c.sub
            && self.idp == c.idp
            && self.role == c.role
            && self.scope == c.scope
            && self.refs == c.refs
            && self.exp == c.exp
    }

    /// The watermark fields that could revoke this grant.
    pub fn dimensions(&self) -> [String; 5] {
        [
            RevokeTarget::All.dimension(),
            RevokeTarget::Subject(self.sub.clone()).dimension(),
            RevokeTarget::Repo(self.scope.repo.clone()).dimension(),
            RevokeTarget::Role(self.role.clone()).dimension(),
            RevokeTarget::Issuer(self.idp.clone()).dimension(),
        ]
    }

    /// The four dimensions a grant is indexed under besides the global index (subject,
    /// repository, role, issuer), as [`RevokeTarget::dimension`] names them.
    pub fn index_dimensions(&self) -> [String; 4] {
        let [_, sub, repo, role, idp] = self.dimensions();
        [sub, repo, role, idp]
    }

    /// The grant's member in every index it is in.
    pub fn index_member(&self) -> IndexMember {
        IndexMember::new(self.issued_ms, &self.jti)
    }

    /// Remaining lifetime at `now_ms`, in milliseconds (≤ 0 when expired).
    pub fn remaining_ms(&self, now_ms: i64) -> i64 {
        self.exp.saturating_mul(1000) - now_ms
    }
}

/// What the store knows of a token id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantStatus {
    /// The grant is live (boxed: the record is far larger than the other answers).
    Live(Box<Grant>),
    /// The grant was revoked (by id or in bulk).
    Revoked,
    /// The grant expired.
    Expired,
    /// The store never saw this token id (or forgot an old one).
    Unknown,
}

/// What to revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", content = "value", rename_all = "lowercase")]
pub enum RevokeTarget {
    /// One token.
    Jti(String),
    /// Every grant of one identity.
    Subject(String),
    /// Every grant on one repository.
    Repo(RepoPath),
    /// Every grant under one role.
    Role(String),
    /// Every grant vouched for by one trusted issuer.
    Issuer(String),
    /// Everything.
    All,
}

impl RevokeTarget {
    /// The watermark field of a bulk target (`sub:alice`, `repo:acme/api`, `all`).
    pub fn dimension(&self) -> String {
        match self {
            RevokeTarget::Jti(j) => format!("jti:{j}"),
            RevokeTarget::Subject(s) => format!("sub:{s}"),
            RevokeTarget::Repo(r) => format!("repo:{r}"),
            RevokeTarget::Role(r) => format!("role:{r}"),
            RevokeTarget::Issuer(i) => format!("idp:{i}"),
            RevokeTarget::All => "all".to_owned(),
        }
    }

    /// Whether `g` falls under this target.
    pub fn covers(&self, g: &Grant) -> bool {
        match self {
            RevokeTarget::Jti(j) => &g.jti == j,
            RevokeTarget::Subject(s) => &g.sub == s,
            RevokeTarget::Repo(r) => &g.scope.repo == r,
            RevokeTarget::Role(r) => &g.role == r,
            RevokeTarget::Issuer(i) => &g.idp == i,
            RevokeTarget::All => true,
        }
    }
}

/// Which live grants to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFilter {
    /// Only this subject.
    pub subject: Option<String>,
    /// Only this repository.
    pub repo: Option<RepoPath>,
    /// Only this role.
    pub role: Option<String>,
    /// Only this issuer name.
    pub issuer: Option<String>,
}

impl GrantFilter {
    /// The index dimensions the filter names (`sub:alice`, `repo:acme/api`, …); empty when
    /// it matches everything.
    pub fn dimensions(&self) -> Vec<String> {
        let mut dims = Vec::new();
        if let Some(s) = &self.subject {
            dims.push(RevokeTarget::Subject(s.clone()).dimension());
        }
        if let Some(r) = &self.repo {
            dims.push(RevokeTarget::Repo(r.clone()).dimension());
        }
        if let Some(r) = &self.role {
            dims.push(RevokeTarget::Role(r.clone()).dimension());
        }
        if let Some(i) = &self.issuer {
            dims.push(RevokeTarget::Issuer(i.clone()).dimension());
        }
        dims
    }

    /// Whether `g` passes the filter.
    pub fn matches(&self, g: &Grant) -> bool {
        self.subject.as_ref().is_none_or(|s| &g.sub == s)
            && self.repo.as_ref().is_none_or(|r| &g.scope.repo == r)
            && self.role.as_ref().is_none_or(|r| &g.role == r)
            && self.issuer.as_ref().is_none_or(|i| &g.idp == i)
    }
}

/// What a revocation can say at once (it is in force when this is returned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// At most this many live grants were ended: exact for one token (1 or 0); for a bulk
    /// target the size of its index, which may still count grants that had already expired
    /// or been revoked and are not tidied yet.
    pub at_most: u64,
    /// Whether records are left for the background tidy-up (they are refused already).
    pub tidy_pending: bool,
}

/// Page sizes and work bounds of listings.
pub mod bounds {
    /// Index members a listing examines per round (at least the page size).
    pub const LIST_CHUNK: usize = 100;
    /// Rounds a listing may take before it returns a short page with a cursor.
    pub const LIST_ROUNDS: usize = 4;
    /// Index members one tidy batch handles: few enough that each of its store calls is
    /// short beside the checks it shares the store with (the worker paces the batches).
    pub const TIDY_BATCH: usize = 100;
}

/// Whether a watermark revokes a grant issued at `issued_ms`.
pub fn revoked_by(watermarks: &[Option<i64>], issued_ms: i64) -> bool {
    watermarks.iter().flatten().any(|&w| issued_ms <= w)
}

/// The grant store. All times are passed in (milliseconds since the epoch).
#[async_trait]
pub trait GrantStore: Send + Sync + 'static {
    /// Remembers a new live grant until its `exp`. Fails for an already expired grant.
    async fn put(&self, grant: &Grant, now_ms: i64) -> Result<(), StoreError>;

    /// The hot path: is the grant these verified claims describe still live? One fixed-size
    /// lookup, whatever the number of grants and revocations.
    async fn check(&self, claims: &Claims, now_ms: i64) -> Result<GrantStatus, StoreError>;

    /// What the store knows of a token id alone (admin and introspection by id).
    async fn status(&self, jti: &str, now_ms: i64) -> Result<GrantStatus, StoreError>;

    /// Revokes what `target` names, in O(1): the watermark (one token: its tombstone) is
    /// written before this returns, and a tidy job is queued for the records.
    async fn revoke(&self, target: &RevokeTarget, now_ms: i64) -> Result<Revocation, StoreError>;

    /// The revoked-before watermarks (ms) of these dimensions (`sub:alice`, `idp:corp`, as
    /// [`RevokeTarget::dimension`] names them), `None` where there is none.
    async fn revoked_before(&self, dims: &[String]) -> Result<Vec<Option<i64>>, StoreError>;

    /// One page of live grants passing `filter`, oldest first (by issue time, then jti),
    /// after `after`; at most `limit`, possibly fewer (even none) with a `next` cursor when
    /// the work bound ([`bounds`]) was reached first. Revoked and expired grants never
    /// appear; index entries of dead grants met on the way are queued for tidying.
    async fn list_page(
        &self,
        filter: &GrantFilter,
        after: Option<&ListCursor>,
        limit: usize,
        now_ms: i64,
    ) -> Result<GrantListing, StoreError>;

    /// Every live grant passing `filter`, oldest first, reading page after page: for tests
    /// and tools, never for a request (it costs the population).
    async fn list(&self, filter: &GrantFilter, now_ms: i64) -> Result<Vec<Grant>, StoreError> {
        let mut out = Vec::new();
        let mut after: Option<ListCursor> = None;
        loop {
            let page = self
                .list_page(filter, after.as_ref(), bounds::LIST_CHUNK, now_ms)
                .await?;
            out.extend(page.grants);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Works one bounded batch of pending tidy jobs (and of expired index entries) as
    /// `worker`, if it holds or can take the tidy lease ([`tidy`]); says what it did and
    /// whether work is left for it. Idempotent: a batch done twice ends nothing twice.
    async fn tidy(&self, worker: &str, now_ms: i64) -> Result<TidyProgress, StoreError> {
        match self.tidy_claim(worker, now_ms).await? {
            Some(claim) => self.tidy_finish(claim, now_ms).await,
            None => Ok(TidyProgress::default()),
        }
    }

    /// The first half of [`GrantStore::tidy`]: takes or renews the tidy lease for `worker`
    /// until `now_ms + `[`tidy::LEASE_MS`] and reads the batch it covers. `None` (nothing
    /// changed) while another worker's lease runs at `now_ms`.
    async fn tidy_claim(&self, worker: &str, now_ms: i64) -> Result<Option<TidyClaim>, StoreError>;

    /// The second half of [`GrantStore::tidy`]: works the claimed batch and the expiry sweep,
    /// then records the job's progress only if the lease still names the claim's worker and
    /// the queue's head is still the claimed job (`fenced` otherwise; nothing recorded);
    /// releases the lease when no work is left.
    async fn tidy_finish(&self, claim: TidyClaim, now_ms: i64) -> Result<TidyProgress, StoreError>;

    /// How many tidy jobs are pending.
    async fn tidy_pending(&self) -> Result<u64, StoreError>;

    /// The head of `chain` (a replica's name, or [`LEGACY_CHAIN`]): its newest seq and each
    /// lane's newest hash, if it was ever started.
    async fn audit_head(&self, chain: &str) -> Result<Option<ChainHead>, StoreError>;

    /// Enters `replica` in the roster of chains (once, at a writer's start; idempotent) and
    /// starts its chain at `start` unless it has a head already. A verifier then knows the
    /// chain exists even if all of it is deleted.
    async fn join_audit(&self, replica: &str, start: &ChainHead) -> Result<(), StoreError>;

    /// The replicas in the roster of chains, by name.
    async fn audit_replicas(&self) -> Result<Vec<String>, StoreError>;

    /// Appends a batch of chained audit events (oldest first, each to its lane, [`lane_of`])
    /// to `chain` and sets its head to `head`, if its newest seq is still
    /// `expected_head_seq` (0: the chain is empty); `Ok(false)`, appending nothing,
    /// otherwise. Each replica writes only its own chain, so `Ok(false)` means two writers
    /// share a replica name. The batch lands whole or not at all. Each lane of the chain is
    /// bounded by its [`LaneBudget`]: its oldest fall off. Each event is stored as its
    /// sealed line, serialised once by the recorder.
    async fn append_sealed(
        &self,
        chain: &str,
        events: &[Sealed],
        expected_head_seq: u64,
        head: &ChainHead,
    ) -> Result<bool, StoreError>;

    /// [`Self::append_sealed`] of events whose `hash` is set already (serialised here).
    async fn append_audit(
        &self,
        chain: &str,
        events: &[AuditEvent],
        expected_head_seq: u64,
        head: &ChainHead,
    ) -> Result<bool, StoreError> {
        let sealed: Vec<Sealed> = events.iter().cloned().map(Sealed::of).collect();
        self.append_sealed(chain, &sealed, expected_head_seq, head)
            .await
    }

    /// One chain's events of both lanes passing `query` after `query.after_seq` (its
    /// `cursor` is ignored), oldest first (by seq), at most `query.limit`: one page, however
    /// deep it starts.
    async fn read_chain(
        &self,
        chain: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// One page of every chain's events passing `query`, merged in time order: each chain's
    /// next page from where `query` starts in it, merged ([`read_merged`]).
    async fn read_audit_page(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        read_merged(self, query).await
    }

    /// Reads audit events of every chain back, oldest first ([`GrantStore::read_audit_page`]).
    async fn read_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(self.read_audit_page(query).await?.events)
    }

    /// Damages the audit trail behind the store's back (tests of verification only).
    #[cfg(any(test, feature = "test-suite"))]
    async fn damage_audit(&self, damage: &suite::Damage) -> Result<(), StoreError> {
        let _ = damage;
        Err(StoreError::Invalid("this store cannot be damaged"))
    }

    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Whether the store answers and is what the configuration says (`check-config
    /// --online`, `serve` at start): a line saying what answered. Redis checks that a
    /// single URL names a writable primary, not a replica or a Cluster node, and that a
    /// cluster is healthy.
    async fn probe(&self) -> Result<String, StoreError> {
        self.ping().await.map(|()| "answers".to_owned())
    }

    /// The approval requests kept beside the grants (same backend, same connection).
    fn requests(&self) -> &dyn RequestStore;

    /// The console's sessions and logins in progress (same backend, shared by replicas).
    fn sessions(&self) -> &dyn SessionStore;
}
