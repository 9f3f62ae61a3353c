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
pub mod redis_spans;
pub mod requests;
#[cfg(any(test, feature = "test-suite"))]
pub mod requests_suite;
pub mod sessions;
#[cfg(any(test, feature = "test-suite"))]
pub mod sessions_suite;
#[cfg(any(test, feature = "test-suite"))]
pub mod suite;
#[cfg(any(test, feature = "test-suite"))]
pub mod suite_time;
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

/// Two lanes' placed events (each in seq order) as one run in seq order, at most `limit`.
pub fn merge_placed(a: Vec<Placed>, b: Vec<Placed>, limit: usize) -> Vec<Placed> {
    let mut out = Vec::with_capacity((a.len() + b.len()).min(limit));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while out.len() < limit {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.event.seq <= y.event.seq => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, _) => b.next(),
        };
        match next {
            Some(p) => out.push(p),
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
    /// The events, in their places' order ([`Placed`]).
    pub events: Vec<AuditEvent>,
    /// Where the next page starts, when the page is full (more may follow): the place of
    /// its last event.
    pub next: Option<AuditCursor>,
    /// The same as one `after_seq`, when one says it: the store holds at most one replica's
    /// chain (besides the one from before replica chains, whose seqs come first).
    pub next_after_seq: Option<u64>,
}

/// An event with its time in the merged order: `t` is the event's `ts`, or the greatest `ts`
/// of its chain before it when that is greater (the store keeps it beside each event as it
/// appends), so `t` never goes back along a chain even when the writer's clock does. Events
/// are merged by `(t, chain, seq)`: a total order in which each chain keeps its seq order, so
/// the place of the last event read says where every chain resumes ([`AuditCursor`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The time of the event's place (ms).
    pub t: i64,
    /// The event.
    pub event: AuditEvent,
}

/// Where a read of one chain starts: at its first event after `after_seq` placed at
/// `min_t` or later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainStart {
    /// No event placed before this time (ms).
    pub min_t: i64,
    /// No event at or before this seq.
    pub after_seq: u64,
}

impl ChainStart {
    /// Where `chain` resumes after `query`'s cursor (or, without one, at its `from_ms` and
    /// `after_seq`): after the cursor's place in the order `(t, chain, seq)`.
    pub fn of(query: &AuditQuery, chain: &str) -> Self {
        let from = query.from_ms.unwrap_or(i64::MIN);
        let Some(c) = &query.cursor else {
            return Self {
                min_t: from,
                after_seq: query.after_seq,
            };
        };
        let (min_t, after_seq) = match chain.cmp(c.chain()) {
            // Events of this chain at the cursor's time came before it.
            std::cmp::Ordering::Less => (c.t().saturating_add(1), 0),
            std::cmp::Ordering::Equal => (c.t(), c.seq()),
            std::cmp::Ordering::Greater => (c.t(), 0),
        };
        Self {
            min_t: min_t.max(from),
            after_seq: after_seq.max(query.after_seq),
        }
    }
}

/// The times a replica chain's events are placed in (ms), as its writer records them: no
/// event before `since`, none after `until`. A writer keeps `until` ahead of its events
/// (a lease it extends at most about once a minute), so a read that starts after a chain's
/// `until` skips the chain without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpan {
    /// The chain (a replica's name).
    pub chain: String,
    /// No event placed before this, nor any event's own time (`i64::MIN`: not known).
    pub since: i64,
    /// No event placed after this (`i64::MAX`: not known).
    pub until: i64,
}

/// The chains a read of the merged trail must consider ([`GrantStore::audit_chains`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditChains {
    /// The replica chains that may hold events placed at or after the time asked for: those
    /// whose span reaches it, and those without a span (written by an older broker).
    pub chains: Vec<ChainSpan>,
    /// How many replicas the roster names.
    pub roster: usize,
}

/// Fewest events read from one chain at a time while merging ([`read_merged`]).
const MERGE_CHUNK_MIN: usize = 100;
/// Chains opened at once when the merge holds no event to compare their spans with.
const OPEN_AHEAD: usize = 16;
/// Most chain reads of one page in flight at once.
const READS_IN_FLIGHT: usize = 32;

/// Runs `reads` at most [`READS_IN_FLIGHT`] at a time, in any order.
async fn read_chains<T>(
    reads: Vec<impl std::future::Future<Output = Result<T, StoreError>>>,
) -> Result<Vec<T>, StoreError> {
    use futures_util::{StreamExt as _, TryStreamExt as _};
    futures_util::stream::iter(reads)
        .buffer_unordered(READS_IN_FLIGHT)
        .try_collect()
        .await
}

/// One chain being merged: what was read of it and not taken yet.
struct Merging {
    chain: String,
    read: std::collections::VecDeque<Placed>,
    /// Where the next read of it starts.
    next: ChainStart,
    /// Whether the last read was full (more may follow).
    more: bool,
}

impl Merging {
    /// The place of its next event, if it holds one read.
    fn front(&self) -> Option<(i64, &str, u64)> {
        self.read
            .front()
            .map(|p| (p.t, self.chain.as_str(), p.event.seq))
    }
}

/// One page of the merged trail: the events of every chain in the order of their places
/// `(t, chain, seq)` after the query's cursor, until the page is full; the next cursor is
/// the place of the last event taken.
///
/// A page reads only the chains that may hold events in its range: the store names the
/// chains whose span reaches the cursor's time ([`GrantStore::audit_chains`]), and a chain
/// is opened only once the merge has reached its span's start. So a page at any depth costs
/// the chains that were written in the time it covers, not every chain ever written. Each
/// chain is read in chunks of its share of the page (at least `MERGE_CHUNK_MIN`),
/// starting right at the cursor's place in it ([`GrantStore::read_chain_from`]), and read
/// on where it holds more.
pub async fn read_merged<S: GrantStore + ?Sized>(
    store: &S,
    query: &AuditQuery,
) -> Result<AuditPage, StoreError> {
    let floor = query
        .cursor
        .as_ref()
        .map(|c| c.t())
        .max(query.from_ms)
        .unwrap_or(i64::MIN);
    let AuditChains { chains, roster } = store.audit_chains(floor).await?;
    // A writer's span starts no later than any of its events' own times: a chain whose span
    // starts after the query's end holds nothing in it.
    let mut waiting: Vec<ChainSpan> = chains
        .into_iter()
        .filter(|c| query.to_ms.is_none_or(|to| c.since <= to))
        .collect();
    waiting.push(ChainSpan {
        chain: LEGACY_CHAIN.to_owned(),
        since: i64::MIN,
        until: i64::MAX,
    });
    // Opened in the order of their spans' starts: `waiting` is popped from its end.
    waiting.sort_by(|a, b| (b.since, &b.chain).cmp(&(a.since, &a.chain)));
    let chunk = (query.limit / waiting.len())
        .max(MERGE_CHUNK_MIN)
        .min(query.limit)
        .max(1);
    let read = |m_chain: String, next: ChainStart| async move {
        let q = AuditQuery {
            limit: chunk,
            cursor: None,
            ..query.clone()
        };
        let page = store.read_chain_from(&m_chain, next, &q).await?;
        Ok::<_, StoreError>((m_chain, next, page))
    };
    let mut merging: Vec<Merging> = Vec::new();
    let mut events = Vec::new();
    let mut last: Option<AuditCursor> = None;
    while events.len() < query.limit {
        // Read on every open chain that ran out of what was read while it may hold more,
        // then open every chain whose span starts at or before the earliest event in hand
        // (all that are left, when no event is): a chain not opened holds nothing earlier.
        let mut reads = Vec::new();
        for m in merging.iter_mut().filter(|m| m.read.is_empty() && m.more) {
            m.more = false;
            reads.push(read(m.chain.clone(), m.next));
        }
        let mut refilled = read_chains(reads).await?;
        let earliest = |merging: &[Merging], refilled: &[(String, ChainStart, Vec<Placed>)]| {
            merging
                .iter()
                .filter_map(|m| m.read.front().map(|p| p.t))
                .chain(
                    refilled
                        .iter()
                        .filter_map(|(_, _, p)| p.first().map(|p| p.t)),
                )
                .min()
        };
        // With no event in hand, the chains whose spans start first, a few at a time.
        let frontier = earliest(&merging, &refilled).or_else(|| {
            let first = waiting.len().saturating_sub(OPEN_AHEAD);
            waiting.get(first).map(|s| s.since)
        });
        let mut opening = Vec::new();
        while let Some(span) = waiting.last() {
            if frontier.is_some_and(|t| span.since > t) {
                break;
            }
            if let Some(span) = waiting.pop() {
                let next = ChainStart::of(query, &span.chain);
                opening.push(read(span.chain, next));
            }
        }
        refilled.extend(read_chains(opening).await?);
        for (chain, start, page) in refilled {
            let more = page.len() >= chunk;
            let next = ChainStart {
                after_seq: page.last().map_or(start.after_seq, |p| p.event.seq),
                ..start
            };
            match merging.iter_mut().find(|m| m.chain == chain) {
                Some(m) => {
                    m.read = page.into();
                    m.next = next;
                    m.more = more;
                }
                None => merging.push(Merging {
                    chain,
                    read: page.into(),
                    next,
                    more,
                }),
            }
        }
        // Take events in order while no chain needs reading on and no waiting chain could
        // hold an earlier one.
        loop {
            if events.len() >= query.limit {
                break;
            }
            let Some((i, (t, _, _))) = merging
                .iter()
                .enumerate()
                .filter_map(|(i, m)| m.front().map(|f| (i, f)))
                .min_by(|(_, a), (_, b)| a.cmp(b))
            else {
                break;
            };
            let stalled = merging.iter().any(|m| m.read.is_empty() && m.more);
            let opens = waiting.last().is_some_and(|s| s.since <= t);
            if stalled || opens {
                break;
            }
            let m = &mut merging[i];
            let Some(p) = m.read.pop_front() else { break };
            last = Some(AuditCursor::at(p.t, &m.chain, p.event.seq));
            events.push(p.event);
        }
        let exhausted = waiting.is_empty() && merging.iter().all(|m| m.read.is_empty() && !m.more);
        if exhausted {
            break;
        }
    }
    let full = events.len() >= query.limit;
    Ok(AuditPage {
        next_after_seq: (full && roster <= 1)
            .then(|| events.last().map(|e| e.seq))
            .flatten(),
        next: if full { last } else { None },
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

#[cfg(any(test, feature = "test-suite"))]
/// Damage done to the audit trail behind the store's back, as someone with write access to
/// the store could: what `audit verify --store` must notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Every key of a replica's chain deleted (the roster still names it).
    DropChain(String),
    /// A replica chain's newest event deleted (its head left as it was).
    DropNewest(String),
    /// Every key of a replica's chain deleted, and its roster entry (its span kept).
    DropRetired(String),
    /// A replica chain's span deleted from the index of chains by time.
    DropSpan(String),
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

    /// One chain's events of both lanes passing `query` (its `cursor` and `after_seq` are
    /// ignored) from `start`: after `start.after_seq`, placed at `start.min_t` or later, in
    /// seq order with their places' times, at most `query.limit`. One seek, however deep:
    /// `t` never goes back along a chain, so the events placed from a time on are a run of
    /// seqs.
    async fn read_chain_from(
        &self,
        chain: &str,
        start: ChainStart,
        query: &AuditQuery,
    ) -> Result<Vec<Placed>, StoreError>;

    /// The replica chains that may hold events placed at `at_least` (ms) or later (every
    /// chain whose span reaches it, and every chain of the roster without a span), and the
    /// roster's size: one lookup, whatever the number of chains that ended before.
    async fn audit_chains(&self, at_least: i64) -> Result<AuditChains, StoreError>;

    /// Widens `chain`'s span to cover `since..=until` (its start only moves back, its end
    /// only forward). The chain's writer calls it before appending anything placed past the
    /// span's end, with `since` at most the batch's events' times, so a read never skips a
    /// chain holding events in its range.
    async fn mark_audit_span(&self, chain: &str, since: i64, until: i64) -> Result<(), StoreError>;

    /// The times of the first and the last place `chain` holds (none when it holds no
    /// event): what its writer starts its span from.
    async fn audit_extent(&self, chain: &str) -> Result<Option<(i64, i64)>, StoreError>;

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
    async fn damage_audit(&self, damage: &Damage) -> Result<(), StoreError> {
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
