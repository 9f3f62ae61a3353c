//! The in-process store of `jit-broker dev` and single-process deployments: the same
//! semantics as the Redis store, kept in one mutex-guarded map. The audit trail is two queues,
//! one per lane, each trimmed by its own budget.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use jit_proto::Claims;

use super::{
    AuditRetention, EXPIRED_MEMORY_SECS, Grant, GrantFilter, GrantStatus, GrantStore, LaneBudget,
    MAX_TOKEN_LIFETIME_SECS, RevokeTarget, StoreError, lane_of, revoked_by,
};
use crate::audit::{AuditEvent, AuditQuery, ChainHead, Lane};

/// One lane of the trail: events with their JSON sizes, and the sum of those.
#[derive(Default)]
struct LaneLog {
    events: VecDeque<(AuditEvent, u64)>,
    bytes: u64,
}

impl LaneLog {
    fn push(&mut self, event: AuditEvent, size: u64) {
        self.bytes += size;
        self.events.push_back((event, size));
    }

    /// Drops the oldest events until the lane is within `budget`, measured at `now_ms`.
    fn trim(&mut self, budget: &LaneBudget, now_ms: i64) {
        let oldest_kept = now_ms.saturating_sub(budget.max_age_ms);
        while let Some((e, size)) = self.events.front() {
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
    evidence: LaneLog,
    traffic: LaneLog,
    audit_seq: u64,
    audit_head: Option<ChainHead>,
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
                    GrantStatus::Live(g.clone())
                }
            }
            _ if self.issued.get(jti).is_some_and(|&until| until > now_ms) => GrantStatus::Expired,
            _ => GrantStatus::Unknown,
        }
    }

    fn sweep(&mut self, now_ms: i64) {
        self.grants.retain(|_, g| g.remaining_ms(now_ms) > 0);
        self.tombstones.retain(|_, until| *until > now_ms);
        self.issued.retain(|_, until| *until > now_ms);
        self.watermarks.retain(|_, (_, until)| *until > now_ms);
    }
}

/// The in-memory grant store.
pub struct MemoryStore {
    inner: Mutex<Inner>,
    retention: AuditRetention,
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
        inner.sweep(now_ms);
        inner.issued.insert(
            grant.jti.clone(),
            now_ms + remaining + EXPIRED_MEMORY_SECS * 1000,
        );
        inner.grants.insert(grant.jti.clone(), grant.clone());
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

    async fn revoke(&self, target: &RevokeTarget, now_ms: i64) -> Result<u64, StoreError> {
        let mut inner = self.lock()?;
        inner.sweep(now_ms);
        let covered: Vec<Grant> = inner
            .grants
            .values()
            .filter(|g| target.covers(g))
            .cloned()
            .collect();
        // Count before the new watermark lands: grants an earlier revocation ended are not live.
        let live = covered
            .iter()
            .filter(|g| matches!(inner.status_of(&g.jti, now_ms), GrantStatus::Live(_)))
            .count();
        if !matches!(target, RevokeTarget::Jti(_)) {
            // A person's or an issuer's watermark also refuses identity tokens authenticated
            // before it, however long the IdP's session lives: it is kept.
            let forget = match target {
                RevokeTarget::Subject(_) | RevokeTarget::Issuer(_) => i64::MAX,
                _ => now_ms + (MAX_TOKEN_LIFETIME_SECS + 60) * 1000,
            };
            let entry = inner
                .watermarks
                .entry(target.dimension())
                .or_insert((now_ms, forget));
            *entry = (entry.0.max(now_ms), forget);
        }
        for g in covered {
            inner.grants.remove(&g.jti);
            inner
                .tombstones
                .insert(g.jti.clone(), now_ms + g.remaining_ms(now_ms));
        }
        Ok(live as u64)
    }

    async fn revoked_before(&self, dims: &[String]) -> Result<Vec<Option<i64>>, StoreError> {
        let inner = self.lock()?;
        // Forgotten watermarks are swept on writes; one past its life no longer matters.
        Ok(dims
            .iter()
            .map(|d| inner.watermarks.get(d).map(|(w, _)| *w))
            .collect())
    }

    async fn list(&self, filter: &GrantFilter, now_ms: i64) -> Result<Vec<Grant>, StoreError> {
        let inner = self.lock()?;
        let mut out: Vec<Grant> = inner
            .grants
            .values()
            .filter(|g| filter.matches(g))
            .filter(|g| matches!(inner.status_of(&g.jti, now_ms), GrantStatus::Live(_)))
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.issued_ms, &a.jti).cmp(&(b.issued_ms, &b.jti)));
        Ok(out)
    }

    async fn audit_head(&self) -> Result<Option<ChainHead>, StoreError> {
        Ok(self.lock()?.audit_head.clone())
    }

    async fn append_audit(
        &self,
        events: &[AuditEvent],
        expected_head_seq: u64,
        head: &ChainHead,
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        if inner.audit_head.as_ref().map_or(0, |h| h.seq) != expected_head_seq {
            return Ok(false);
        }
        let Some(newest) = events.iter().map(|e| e.ts).max() else {
            return Ok(true);
        };
        for event in events {
            inner.audit_seq += 1;
            let size = serde_json::to_vec(event).map_or(0, |j| j.len() as u64);
            let mut e = event.clone();
            e.id = Some(format!("{}-{}", e.ts, inner.audit_seq));
            match lane_of(event) {
                Lane::Evidence => inner.evidence.push(e, size),
                Lane::Traffic => inner.traffic.push(e, size),
            }
        }
        inner.audit_head = Some(head.clone());
        inner.evidence.trim(&self.retention.evidence, newest);
        inner.traffic.trim(&self.retention.traffic, newest);
        Ok(true)
    }

    async fn read_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let inner = self.lock()?;
        let wanted = |e: &&AuditEvent| {
            query.from_ms.is_none_or(|f| e.ts >= f)
                && query.to_ms.is_none_or(|t| e.ts <= t)
                && query.matches(e)
        };
        let lane = |l: &LaneLog| -> Vec<AuditEvent> {
            // Seq order within a lane: start right after `after_seq`.
            let start = l.events.partition_point(|(e, _)| e.seq <= query.after_seq);
            l.events
                .range(start..)
                .map(|(e, _)| e)
                .filter(wanted)
                .take(query.limit)
                .cloned()
                .collect()
        };
        Ok(super::merge_by_seq(
            lane(&inner.evidence),
            lane(&inner.traffic),
            query.limit,
        ))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.lock().map(|_| ())
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
        suite::run_all(&SuiteTime::manual(), |retention| async move {
            Box::new(MemoryStore::with_retention(retention)) as Box<dyn GrantStore>
        })
        .await;
    }
}
