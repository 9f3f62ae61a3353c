//! A grant store that times every call of the store it wraps, for `/metrics`
//! (`jit_store_operation_duration_seconds{op}`, `jit_store_errors_total{op}`). It delegates
//! everything and decides nothing.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use jit_proto::Claims;
use prometheus_client::metrics::histogram::Histogram;

use super::{
    AuditPage, Grant, GrantFilter, GrantListing, GrantStatus, GrantStore, ListCursor, Revocation,
    RevokeTarget, StoreError, TidyClaim, TidyProgress,
};
use crate::audit::{AuditEvent, AuditQuery, ChainHead, Sealed};
use crate::metrics::Metrics;

/// The operations, each the index of its name in [`OPS`] and of its histogram in
/// [`TimedStore::histograms`].
#[derive(Clone, Copy)]
enum Op {
    Put,
    Check,
    Status,
    Revoke,
    RevokedBefore,
    List,
    Tidy,
    TidyPending,
    AuditHead,
    AppendAudit,
    ReadAudit,
    Ping,
    JoinAudit,
    AuditReplicas,
    ReadChain,
}

/// The operations' label values, in the order of [`Op`].
const OPS: [&str; 15] = [
    "put",
    "check",
    "status",
    "revoke",
    "revoked_before",
    "list",
    "tidy",
    "tidy_pending",
    "audit_head",
    "append_audit",
    "read_audit",
    "ping",
    "join_audit",
    "audit_replicas",
    "read_chain",
];

/// Wraps a store, observing each call's latency and failure.
pub struct TimedStore {
    inner: Arc<dyn GrantStore>,
    metrics: Arc<Metrics>,
    /// Each operation's histogram handle, looked up in its family once (on first use, so an
    /// operation never called shows no series).
    histograms: [OnceLock<Histogram>; OPS.len()],
}

impl TimedStore {
    /// Times `inner`'s calls into `metrics`.
    pub fn new(inner: Arc<dyn GrantStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            metrics,
            histograms: Default::default(),
        }
    }

    async fn timed<T>(
        &self,
        op: Op,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        let took = started.elapsed().as_secs_f64();
        let name = OPS[op as usize];
        self.histograms[op as usize]
            .get_or_init(|| self.metrics.store_histogram(name))
            .observe(took);
        if result.is_err() {
            self.metrics.store_error(name);
        }
        result
    }
}

#[async_trait]
impl GrantStore for TimedStore {
    async fn put(&self, grant: &Grant, now_ms: i64) -> Result<(), StoreError> {
        self.timed(Op::Put, self.inner.put(grant, now_ms)).await
    }

    async fn check(&self, claims: &Claims, now_ms: i64) -> Result<GrantStatus, StoreError> {
        self.timed(Op::Check, self.inner.check(claims, now_ms))
            .await
    }

    async fn status(&self, jti: &str, now_ms: i64) -> Result<GrantStatus, StoreError> {
        self.timed(Op::Status, self.inner.status(jti, now_ms)).await
    }

    async fn revoke(&self, target: &RevokeTarget, now_ms: i64) -> Result<Revocation, StoreError> {
        self.timed(Op::Revoke, self.inner.revoke(target, now_ms))
            .await
    }

    async fn revoked_before(&self, dims: &[String]) -> Result<Vec<Option<i64>>, StoreError> {
        self.timed(Op::RevokedBefore, self.inner.revoked_before(dims))
            .await
    }

    async fn list_page(
        &self,
        filter: &GrantFilter,
        after: Option<&ListCursor>,
        limit: usize,
        now_ms: i64,
    ) -> Result<GrantListing, StoreError> {
        self.timed(Op::List, self.inner.list_page(filter, after, limit, now_ms))
            .await
    }

    async fn tidy(&self, worker: &str, now_ms: i64) -> Result<TidyProgress, StoreError> {
        self.timed(Op::Tidy, self.inner.tidy(worker, now_ms)).await
    }

    async fn tidy_claim(&self, worker: &str, now_ms: i64) -> Result<Option<TidyClaim>, StoreError> {
        self.inner.tidy_claim(worker, now_ms).await
    }

    async fn tidy_finish(&self, claim: TidyClaim, now_ms: i64) -> Result<TidyProgress, StoreError> {
        self.inner.tidy_finish(claim, now_ms).await
    }

    async fn tidy_pending(&self) -> Result<u64, StoreError> {
        self.timed(Op::TidyPending, self.inner.tidy_pending()).await
    }

    async fn audit_head(&self, chain: &str) -> Result<Option<ChainHead>, StoreError> {
        self.timed(Op::AuditHead, self.inner.audit_head(chain))
            .await
    }

    async fn join_audit(&self, replica: &str, start: &ChainHead) -> Result<(), StoreError> {
        self.timed(Op::JoinAudit, self.inner.join_audit(replica, start))
            .await
    }

    async fn audit_replicas(&self) -> Result<Vec<String>, StoreError> {
        self.timed(Op::AuditReplicas, self.inner.audit_replicas())
            .await
    }

    async fn append_sealed(
        &self,
        chain: &str,
        events: &[Sealed],
        expected_head_seq: u64,
        head: &ChainHead,
    ) -> Result<bool, StoreError> {
        self.timed(
            Op::AppendAudit,
            self.inner
                .append_sealed(chain, events, expected_head_seq, head),
        )
        .await
    }

    async fn read_chain(
        &self,
        chain: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.timed(Op::ReadChain, self.inner.read_chain(chain, query))
            .await
    }

    async fn read_audit_page(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        self.timed(Op::ReadAudit, self.inner.read_audit_page(query))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(Op::Ping, self.inner.ping()).await
    }

    async fn probe(&self) -> Result<String, StoreError> {
        self.timed(Op::Ping, self.inner.probe()).await
    }

    fn requests(&self) -> &dyn super::RequestStore {
        self.inner.requests()
    }

    fn sessions(&self) -> &dyn super::SessionStore {
        self.inner.sessions()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn times_calls_and_counts_failures_by_operation() {
        let metrics = Arc::new(Metrics::new());
        let store = TimedStore::new(Arc::new(MemoryStore::new(10)), metrics.clone());
        store.ping().await.expect("ping");
        store.audit_head("").await.expect("head");
        let text = metrics.encode();
        assert!(text.contains("jit_store_operation_duration_seconds_count{op=\"ping\"} 1"));
        assert!(text.contains("jit_store_operation_duration_seconds_count{op=\"audit_head\"} 1"));
        assert!(!text.contains("jit_store_errors_total{"));

        let flaky = Arc::new(crate::store::flaky::Flaky::default());
        flaky
            .grants_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let store = TimedStore::new(flaky, metrics.clone());
        assert!(store.ping().await.is_err());
        assert!(
            metrics
                .encode()
                .contains("jit_store_errors_total{op=\"ping\"} 1")
        );
    }
}
