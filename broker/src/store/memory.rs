//! The in-process store of `jit-broker dev` and single-process deployments: the same
//! semantics as the Redis store, kept in one mutex-guarded map. Indexes are ordered sets of
//! [`IndexMember`]s (global and per dimension), tidy jobs a queue. The audit trail is one
//! chain per replica (and the one from before replica chains), each two queues, one per
//! lane, each trimmed by its own budget.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Mutex;

use async_trait::async_trait;
use jit_proto::Claims;

use super::requests::{RequestBook, RequestStore};
use super::sessions::{SessionBook, SessionStore};
use super::{
    AuditChains, AuditRetention, ChainSpan, ChainStart, ClaimedJob, EXPIRED_MEMORY_SECS, Grant,
    GrantFilter, GrantListing, GrantStatus, GrantStore, IndexMember, LaneBudget, ListCursor,
    MAX_TOKEN_LIFETIME_SECS, Placed, Revocation, RevokeTarget, StoreError, TidyClaim, TidyJob,
    TidyProgress, bounds, lane_of, revoked_by,
};
use crate::audit::{AuditEvent, AuditQuery, ChainHead, Lane, Sealed};

/// The global index's name among the dimensions.
const ALL: &str = "all";

/// One lane of the trail: events with their JSON sizes and their places' times
/// ([`super::Placed`]), and the sum of the sizes.
#[derive(Default)]
struct LaneLog {
    events: VecDeque<(AuditEvent, u64, i64)>,
    bytes: u64,
}

impl LaneLog {
    fn push(&mut self, event: AuditEvent, size: u64, t: i64) {
        self.bytes += size;
        self.events.push_back((event, size, t));
    }

    /// Drops the oldest events until the lane is within `budget`, measured at `now_ms`.
    fn trim(&mut self, budget: &LaneBudget, now_ms: i64) {
        let oldest_kept = now_ms.saturating_sub(budget.max_age_ms);
        while let Some((e, size, _)) = self.events.front() {
            let over = self.events.len() as u64 > budget.max_events
                || self.bytes > budget.max_bytes
                || e.ts < oldest_kept;
            if !over {
                break;
            }
            self.bytes -= *size;
            self.events.pop_front();
        }
    }
}

#[derive(Default)]
struct Inner {
    grants: HashMap<String, Grant>,
    /// jti → until (ms) the store says "revoked".
    tombstones: HashMap<String, i64>,
    /// jti → until (ms) the store says "expired" rather than "unknown".
    issued: HashMap<String, i64>,
    /// dimension → (revoked-before ms, forget-at ms).
    watermarks: HashMap<String, (i64, i64)>,
    /// Live (and not yet tidied) grants by expiry, for the sweep.
    by_exp: BTreeSet<(i64, String)>,
    /// Index name (`all`, `sub:alice`, …) → members.
    indexes: HashMap<String, BTreeSet<IndexMember>>,
    /// Pending tidy jobs, oldest first.
    jobs: VecDeque<TidyJob>,
    /// The tidy lease: its worker and until when (ms) it runs.
    lease: Option<(String, i64)>,
    /// The audit chains by name ([`super::LEGACY_CHAIN`] and each replica's).
    chains: HashMap<String, MemChain>,
    /// The roster of replica chains.
    roster: BTreeSet<String>,
    /// Each replica chain's span as its writer marked it: (since, until).
    spans: std::collections::BTreeMap<String, (i64, i64)>,
    audit_seq: u64,
}

/// One audit chain: its two lanes and its head.
#[derive(Default)]
struct MemChain {
    evidence: LaneLog,
    traffic: LaneLog,
    head: Option<ChainHead>,
    /// The greatest place time of its events so far (never lowered by trimming).
    top: Option<i64>,
}

impl Inner {
    fn watermarks_for(&self, g: &Grant, now_ms: i64) -> Vec<Option<i64>> {
        g.dimensions()
            .iter()
            .map(|d| {
                self.watermarks
                    .get(d)
                    .filter(|(_, until)| *until > now_ms)
                    .map(|(w, _)| *w)
            })
            .collect()
    }

    fn status_of(&self, jti: &str, now_ms: i64) -> GrantStatus {
        if self
            .tombstones
            .get(jti)
            .is_some_and(|&until| until > now_ms)
        {
            return GrantStatus::Revoked;
        }
        match self.grants.get(jti) {
            Some(g) if g.remaining_ms(now_ms) > 0 => {
                if revoked_by(&self.watermarks_for(g, now_ms), g.issued_ms) {
                    GrantStatus::Revoked
                } else {
                    GrantStatus::Live(Box::new(g.clone()))
                }
            }
            _ if self.issued.get(jti).is_some_and(|&until| until > now_ms) => GrantStatus::Expired,
            _ => GrantStatus::Unknown,
        }
    }

    fn index_names(g: &Grant) -> [String; 5] {
        let [sub, repo, role, idp] = g.index_dimensions();
        [ALL.to_owned(), sub, repo, role, idp]
    }

    fn unindex(&mut self, dim: &str, member: &IndexMember) -> bool {
        let Some(set) = self.indexes.get_mut(dim) else {
            return false;
        };
        let removed = set.remove(member);
        if set.is_empty() {
            self.indexes.remove(dim);
        }
        removed
    }

    /// Deletes a grant's record and index entries; a revoked one leaves a tombstone for as
    /// long as it would have lived. Returns the index entries removed.
    fn end(&mut self, g: &Grant, revoked: bool, now_ms: i64) -> u64 {
        self.grants.remove(&g.jti);
        self.by_exp
            .remove(&(g.exp.saturating_mul(1000), g.jti.clone()));
        if revoked && g.remaining_ms(now_ms) > 0 {
            self.tombstones
                .insert(g.jti.clone(), now_ms + g.remaining_ms(now_ms));
        }
        let member = g.index_member();
        Self::index_names(g)
            .iter()
            .map(|d| u64::from(self.unindex(d, &member)))
            .sum()
    }

    /// The record `member` of index `dim` stands for, if it is still that grant's.
    fn record_of(&self, member: &IndexMember) -> Option<Grant> {
        self.grants
            .get(member.jti())
            .filter(|g| &g.index_member() == member)
            .cloned()
    }

    /// Ends expired grants, at most [`bounds::TIDY_BATCH`] (by the expiry order, so the cost
    /// is what expired; `more` if expired ones are left), and forgets tombstones, markers and
    /// watermarks past their time.
    fn sweep(&mut self, now_ms: i64) -> TidyProgress {
        let mut p = TidyProgress::default();
        let mut budget = bounds::TIDY_BATCH;
        while let Some((exp_ms, jti)) = self.by_exp.first().cloned() {
            if exp_ms > now_ms {
                break;
            }
            if budget == 0 {
                p.more = true;
                break;
            }
            budget -= 1;
            match self.grants.get(&jti).cloned() {
                Some(g) => {
                    p.dropped += self.end(&g, false, now_ms);
                    p.ended += 1;
                }
                None => {
                    self.by_exp.remove(&(exp_ms, jti));
                }
            }
        }
        self.tombstones.retain(|_, until| *until > now_ms);
        self.issued.retain(|_, until| *until > now_ms);
        self.watermarks.retain(|_, (_, until)| *until > now_ms);
        p
    }

    /// Takes or renews the tidy lease for `worker`, unless another's runs at `now_ms`.
    fn take_lease(&mut self, worker: &str, now_ms: i64) -> bool {
        if let Some((holder, until)) = &self.lease
            && holder != worker
            && *until >= now_ms
        {
            return false;
        }
        self.lease = Some((worker.to_owned(), now_ms + super::tidy::LEASE_MS));
        true
    }

    /// The head job and, for a sweep, the index members its next batch covers.
    fn claim_head(&self) -> Option<ClaimedJob> {
        let job = self.jobs.front()?.clone();
        let members = match &job {
            TidyJob::Sweep {
                dim,
                upto_ms,
                after,
            } => {
                let lower = match after.as_deref().and_then(IndexMember::parse) {
                    Some(m) => Bound::Excluded(m),
                    None => Bound::Unbounded,
                };
                let upper = Bound::Excluded(IndexMember::first_after_ms(*upto_ms));
                self.indexes
                    .get(dim)
                    .map(|set| {
                        set.range((lower, upper))
                            .take(bounds::TIDY_BATCH)
                            .map(|m| m.as_str().to_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            }
            TidyJob::Drop { .. } => Vec::new(),
        };
        Some(ClaimedJob {
            stored: String::new(),
            job: Some(job),
            members,
        })
    }

    /// Works one claimed batch; returns what it did and the job's progress (`None`: done).
    fn work(&mut self, claimed: &ClaimedJob, now_ms: i64) -> (TidyProgress, Option<TidyJob>) {
        let mut p = TidyProgress::default();
        match &claimed.job {
            None => (p, None),
            Some(TidyJob::Sweep { dim, upto_ms, .. }) => {
                for m in claimed.members.iter().filter_map(|m| IndexMember::parse(m)) {
                    match self.record_of(&m) {
                        Some(g) => {
                            p.dropped += self.end(&g, true, now_ms);
                            p.ended += 1;
                        }
                        None => p.dropped += u64::from(self.unindex(dim, &m)),
                    }
                }
                let next = (claimed.members.len() == bounds::TIDY_BATCH).then(|| TidyJob::Sweep {
                    dim: dim.clone(),
                    upto_ms: *upto_ms,
                    after: claimed.members.last().cloned(),
                });
                (p, next)
            }
            Some(TidyJob::Drop { entries }) => {
                for (dim, member) in entries {
                    let Some(m) = IndexMember::parse(member) else {
                        continue;
                    };
                    match self.record_of(&m) {
                        Some(g) => match self.status_of(&g.jti, now_ms) {
                            GrantStatus::Live(_) => {}
                            status => {
                                p.dropped +=
                                    self.end(&g, matches!(status, GrantStatus::Revoked), now_ms);
                                p.ended += 1;
                            }
                        },
                        None => p.dropped += u64::from(self.unindex(dim, &m)),
                    }
                }
                (p, None)
            }
        }
    }
}

/// The in-memory grant store.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    retention: AuditRetention,
    requests: RequestBook,
    sessions: SessionBook,
}

impl MemoryStore {
    /// A store keeping at most `audit_max` audit events per lane (and the default byte and
    /// age budgets).
    pub fn new(audit_max: usize) -> Self {
        Self::with_retention(AuditRetention::with_max_events(audit_max))
    }

    /// A store keeping what `retention` says of each audit lane.
    pub fn with_retention(retention: AuditRetention) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            retention,
            requests: RequestBook::default(),
            sessions: SessionBook::default(),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        // A poisoned lock means a panic mid-update: refuse rather than trust the state.
        self.inner
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))
    }
}

#[async_trait]
impl GrantStore for MemoryStore {
    async fn put(&self, grant: &Grant, now_ms: i64) -> Result<(), StoreError> {
        let remaining = grant.remaining_ms(now_ms);
        if remaining <= 0 {
            return Err(StoreError::Invalid("grant already expired"));
        }
        let mut inner = self.lock()?;
        inner.issued.insert(
            grant.jti.clone(),
            now_ms + remaining + EXPIRED_MEMORY_SECS * 1000,
        );
        if let Some(old) = inner.grants.insert(grant.jti.clone(), grant.clone()) {
            // The same id stored again replaces the old record in every index.
            inner.end(&old, false, now_ms);
            inner.grants.insert(grant.jti.clone(), grant.clone());
        }
        inner
            .by_exp
            .insert((grant.exp.saturating_mul(1000), grant.jti.clone()));
        let member = grant.index_member();
        for dim in Inner::index_names(grant) {
            inner.indexes.entry(dim).or_default().insert(member.clone());
        }
        Ok(())
    }

    async fn check(&self, claims: &Claims, now_ms: i64) -> Result<GrantStatus, StoreError> {
        let inner = self.lock()?;
        Ok(match inner.status_of(&claims.jti, now_ms) {
            GrantStatus::Live(g) if !g.describes(claims) => GrantStatus::Unknown,
            other => other,
        })
    }

    async fn status(&self, jti: &str, now_ms: i64) -> Result<GrantStatus, StoreError> {
        Ok(self.lock()?.status_of(jti, now_ms))
    }

    async fn revoke(&self, target: &RevokeTarget, now_ms: i64) -> Result<Revocation, StoreError> {
        let mut inner = self.lock()?;
        if let RevokeTarget::Jti(jti) = target {
            let GrantStatus::Live(g) = inner.status_of(jti, now_ms) else {
                return Ok(Revocation {
                    at_most: 0,
                    tidy_pending: false,
                });
            };
            // The tombstone and the record's removal are the revocation; the index entries
            // are tidied.
            inner
                .tombstones
                .insert(g.jti.clone(), now_ms + g.remaining_ms(now_ms));
            inner.grants.remove(&g.jti);
            inner
                .by_exp
                .remove(&(g.exp.saturating_mul(1000), g.jti.clone()));
            let member = g.index_member().as_str().to_owned();
            let entries = Inner::index_names(&g)
                .into_iter()
                .map(|d| (d, member.clone()))
                .collect();
            inner.jobs.push_back(TidyJob::Drop { entries });
            return Ok(Revocation {
                at_most: 1,
                tidy_pending: true,
            });
        }
        // A person's or an issuer's watermark also refuses identity tokens authenticated
        // before it, however long the IdP's session lives: it is kept.
        let forget = match target {
            RevokeTarget::Subject(_) | RevokeTarget::Issuer(_) => i64::MAX,
            _ => now_ms + (MAX_TOKEN_LIFETIME_SECS + 60) * 1000,
        };
        let dim = target.dimension();
        let entry = inner
            .watermarks
            .entry(dim.clone())
            .or_insert((now_ms, forget));
        *entry = (entry.0.max(now_ms), forget);
        let upto_ms = entry.0;
        let at_most = inner.indexes.get(&dim).map_or(0, |s| s.len() as u64);
        inner.jobs.push_back(TidyJob::Sweep {
            dim,
            upto_ms,
            after: None,
        });
        Ok(Revocation {
            at_most,
            tidy_pending: true,
        })
    }

    async fn revoked_before(&self, dims: &[String]) -> Result<Vec<Option<i64>>, StoreError> {
        let inner = self.lock()?;
        // Forgotten watermarks are swept on writes; one past its life no longer matters.
        Ok(dims
            .iter()
            .map(|d| inner.watermarks.get(d).map(|(w, _)| *w))
            .collect())
    }

    async fn list_page(
        &self,
        filter: &GrantFilter,
        after: Option<&ListCursor>,
        limit: usize,
        now_ms: i64,
    ) -> Result<GrantListing, StoreError> {
        let mut inner = self.lock()?;
        let dims = filter.dimensions();
        // The smallest index the filter names; the rest of the filter is checked per record.
        let dim = if dims.is_empty() {
            ALL.to_owned()
        } else {
            dims.into_iter()
                .min_by_key(|d| inner.indexes.get(d).map_or(0, BTreeSet::len))
                .unwrap_or_else(|| ALL.to_owned())
        };
        let Some(index) = inner.indexes.get(&dim) else {
            return Ok(GrantListing::default());
        };
        let lower = match after {
            Some(c) => Bound::Excluded(c.member().clone()),
            None => Bound::Unbounded,
        };
        let budget = bounds::LIST_ROUNDS * bounds::LIST_CHUNK.max(limit);
        let mut walk = index.range((lower, Bound::Unbounded)).peekable();
        let (mut grants, mut dead, mut last) = (Vec::new(), Vec::new(), None);
        let mut examined = 0;
        for m in walk.by_ref() {
            examined += 1;
            last = Some(m.clone());
            match inner.record_of(m) {
                Some(g) if matches!(inner.status_of(&g.jti, now_ms), GrantStatus::Live(_)) => {
                    if filter.matches(&g) {
                        grants.push(g);
                    }
                }
                _ => dead.push((dim.clone(), m.as_str().to_owned())),
            }
            if grants.len() >= limit || examined >= budget {
                break;
            }
        }
        let more = walk.peek().is_some();
        if !dead.is_empty() {
            inner.jobs.push_back(TidyJob::Drop { entries: dead });
        }
        Ok(GrantListing {
            grants,
            next: last.filter(|_| more).map(ListCursor::after),
        })
    }

    async fn tidy_claim(&self, worker: &str, now_ms: i64) -> Result<Option<TidyClaim>, StoreError> {
        let mut inner = self.lock()?;
        if !inner.take_lease(worker, now_ms) {
            return Ok(None);
        }
        Ok(Some(TidyClaim {
            worker: worker.to_owned(),
            job: inner.claim_head(),
        }))
    }

    async fn tidy_finish(&self, claim: TidyClaim, now_ms: i64) -> Result<TidyProgress, StoreError> {
        let mut inner = self.lock()?;
        if inner.lease.as_ref().map(|(w, _)| w) != Some(&claim.worker) {
            return Ok(TidyProgress {
                fenced: true,
                ..TidyProgress::default()
            });
        }
        let mut p = inner.sweep(now_ms);
        if let Some(claimed) = &claim.job {
            let (done, next) = inner.work(claimed, now_ms);
            p.add(done);
            if inner.jobs.front() == claimed.job.as_ref() {
                inner.jobs.pop_front();
                if let Some(next) = next {
                    inner.jobs.push_front(next);
                }
            }
        }
        p.more |= !inner.jobs.is_empty();
        if !p.more {
            inner.lease = None;
        }
        Ok(p)
    }

    async fn tidy_pending(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.jobs.len() as u64)
    }

    async fn audit_head(&self, chain: &str) -> Result<Option<ChainHead>, StoreError> {
        Ok(self.lock()?.chains.get(chain).and_then(|c| c.head.clone()))
    }

    async fn join_audit(&self, replica: &str, start: &ChainHead) -> Result<(), StoreError> {
        if replica == super::LEGACY_CHAIN {
            return Err(StoreError::Invalid("a replica chain needs a name"));
        }
        let mut inner = self.lock()?;
        inner.roster.insert(replica.to_owned());
        let chain = inner.chains.entry(replica.to_owned()).or_default();
        chain.head.get_or_insert_with(|| start.clone());
        Ok(())
    }

    async fn audit_replicas(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.lock()?.roster.iter().cloned().collect())
    }

    async fn append_sealed(
        &self,
        chain: &str,
        events: &[Sealed],
        expected_head_seq: u64,
        head: &ChainHead,
    ) -> Result<bool, StoreError> {
        let mut guard = self.lock()?;
        let inner = &mut *guard;
        let c = inner.chains.entry(chain.to_owned()).or_default();
        if c.head.as_ref().map_or(0, |h| h.seq) != expected_head_seq {
            return Ok(false);
        }
        let Some(newest) = events.iter().map(|s| s.event.ts).max() else {
            return Ok(true);
        };
        for Sealed { event, line } in events {
            inner.audit_seq += 1;
            let size = line.len() as u64;
            let mut e = event.clone();
            e.id = Some(format!("{}-{}", e.ts, inner.audit_seq));
            let t = c.top.map_or(e.ts, |top| top.max(e.ts));
            c.top = Some(t);
            match lane_of(event) {
                Lane::Evidence => c.evidence.push(e, size, t),
                Lane::Traffic => c.traffic.push(e, size, t),
            }
        }
        c.head = Some(head.clone());
        c.evidence.trim(&self.retention.evidence, newest);
        c.traffic.trim(&self.retention.traffic, newest);
        Ok(true)
    }

    async fn read_chain(
        &self,
        chain: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let inner = self.lock()?;
        let Some(c) = inner.chains.get(chain) else {
            return Ok(Vec::new());
        };
        let wanted = |e: &&AuditEvent| {
            query.from_ms.is_none_or(|f| e.ts >= f)
                && query.to_ms.is_none_or(|t| e.ts <= t)
                && query.matches(e)
        };
        let lane = |l: &LaneLog| -> Vec<AuditEvent> {
            // Seq order within a lane: start right after `after_seq`.
            let start = l
                .events
                .partition_point(|(e, _, _)| e.seq <= query.after_seq);
            l.events
                .range(start..)
                .map(|(e, _, _)| e)
                .filter(wanted)
                .take(query.limit)
                .cloned()
                .collect()
        };
        Ok(super::merge_by_seq(
            lane(&c.evidence),
            lane(&c.traffic),
            query.limit,
        ))
    }

    async fn read_chain_from(
        &self,
        chain: &str,
        start: ChainStart,
        query: &AuditQuery,
    ) -> Result<Vec<Placed>, StoreError> {
        let inner = self.lock()?;
        let Some(c) = inner.chains.get(chain) else {
            return Ok(Vec::new());
        };
        let wanted = |e: &AuditEvent| {
            query.from_ms.is_none_or(|f| e.ts >= f)
                && query.to_ms.is_none_or(|t| e.ts <= t)
                && query.matches(e)
        };
        let lane = |l: &LaneLog| -> Vec<Placed> {
            // Seq order and place order agree within a lane: one seek for both bounds.
            let start = l
                .events
                .partition_point(|(e, _, t)| e.seq <= start.after_seq || *t < start.min_t);
            l.events
                .range(start..)
                .filter(|(e, _, _)| wanted(e))
                .take(query.limit)
                .map(|(e, _, t)| Placed {
                    t: *t,
                    event: e.clone(),
                })
                .collect()
        };
        Ok(super::merge_placed(
            lane(&c.evidence),
            lane(&c.traffic),
            query.limit,
        ))
    }

    async fn audit_chains(&self, at_least: i64) -> Result<AuditChains, StoreError> {
        let inner = self.lock()?;
        let mut chains: Vec<ChainSpan> = inner
            .spans
            .iter()
            .filter(|(_, (_, until))| *until >= at_least)
            .map(|(chain, (since, until))| ChainSpan {
                chain: chain.clone(),
                since: *since,
                until: *until,
            })
            .collect();
        chains.extend(
            inner
                .roster
                .iter()
                .filter(|r| !inner.spans.contains_key(*r))
                .map(|r| ChainSpan {
                    chain: r.clone(),
                    since: i64::MIN,
                    until: i64::MAX,
                }),
        );
        Ok(AuditChains {
            chains,
            roster: inner.roster.len(),
        })
    }

    async fn mark_audit_span(&self, chain: &str, since: i64, until: i64) -> Result<(), StoreError> {
        if chain == super::LEGACY_CHAIN {
            return Err(StoreError::Invalid("a replica chain needs a name"));
        }
        let mut inner = self.lock()?;
        let span = inner
            .spans
            .entry(chain.to_owned())
            .or_insert((since, until));
        *span = (span.0.min(since), span.1.max(until));
        Ok(())
    }

    async fn audit_extent(&self, chain: &str) -> Result<Option<(i64, i64)>, StoreError> {
        let inner = self.lock()?;
        let Some(c) = inner.chains.get(chain) else {
            return Ok(None);
        };
        let first = [&c.evidence, &c.traffic]
            .iter()
            .filter_map(|l| l.events.front().map(|(_, _, t)| *t))
            .min();
        Ok(first.zip(c.top))
    }

    #[cfg(any(test, feature = "test-suite"))]
    async fn damage_audit(&self, damage: &super::Damage) -> Result<(), StoreError> {
        use super::Damage;
        let mut inner = self.lock()?;
        match damage {
            Damage::DropChain(name) => {
                inner.chains.remove(name);
            }
            Damage::DropRetired(name) => {
                inner.chains.remove(name);
                inner.roster.remove(name);
            }
            Damage::DropSpan(name) => {
                inner.spans.remove(name);
            }
            Damage::DropNewest(name) => {
                if let Some(c) = inner.chains.get_mut(name) {
                    let newest = |l: &LaneLog| l.events.back().map(|(e, _, _)| e.seq);
                    if newest(&c.evidence) > newest(&c.traffic) {
                        c.evidence.events.pop_back();
                    } else {
                        c.traffic.events.pop_back();
                    }
                }
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(|_| ())
    }

    fn requests(&self) -> &dyn RequestStore {
        &self.requests
    }

    fn sessions(&self) -> &dyn SessionStore {
        &self.sessions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::suite::{self, SuiteTime};

    /// On a manual clock: the memory store knows no time but the `now_ms` it is handed, so
    /// the suite's expiry cases take no real time.
    #[tokio::test]
    async fn shared_suite() {
        suite::run_all(
            &SuiteTime::manual(),
            crate::recorder::verify::suite_verifier,
            |retention| async move {
                Box::new(MemoryStore::with_retention(retention)) as Box<dyn GrantStore>
            },
        )
        .await;
    }

    /// The expiry sweep ends at most one batch of expired grants per call and says when more
    /// are left, so the paced worker ([`crate::store::tidy`]) paces it like any tidy job.
    #[tokio::test]
    async fn the_expiry_sweep_works_in_bounded_batches() {
        let t = SuiteTime::manual();
        let store = MemoryStore::new(1000);
        let n = bounds::TIDY_BATCH * 2 + 3;
        for i in 0..n {
            let g = t.grant(&format!("e{i:04}"), "alice", "acme/api", "dev", "corp", 1);
            store.put(&g, t.now_ms()).await.expect("put");
        }
        let keep = t.grant("keep", "bob", "acme/web", "dev", "corp", 600);
        store.put(&keep, t.now_ms()).await.expect("put");
        t.pass(1_500).await;
        let first = store.tidy("w", t.now_ms()).await.expect("tidy");
        assert_eq!(first.ended, bounds::TIDY_BATCH as u64);
        assert!(first.more, "one batch is not all");
        let rest = crate::store::tidy::drain(&store, "w", t.now_ms(), 10)
            .await
            .expect("drain");
        assert_eq!(rest.ended, (n - bounds::TIDY_BATCH) as u64);
        assert!(!rest.more);
        let idle = store.tidy("w", t.now_ms()).await.expect("tidy");
        assert_eq!((idle.ended, idle.more), (0, false));
        let listed = store
            .list(&GrantFilter::default(), t.now_ms())
            .await
            .expect("list");
        assert_eq!(listed, vec![keep]);
    }
}
