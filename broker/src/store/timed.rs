//! A grant store that times every call of the store it wraps, for `/metrics`
//! (`jit_store_operation_duration_seconds{op}`, `jit_store_errors_total{op}`). It delegates
//! everything and decides nothing.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use jit_proto::Claims;
use prometheus_client::metrics::histogram::Histogram;

use super::{Grant, GrantFilter, GrantStatus, GrantStore, RevokeTarget, StoreError};
use crate::audit::{AuditEvent, AuditQuery, ChainHead};
use crate::metrics::Metrics;

/// The operations, in the order of [`TimedStore::histograms`].
const OPS: [&str; 10] = [
    "put",
    "check",
    "status",
    "revoke",
    "revoked_before",
    "list",
    "audit_head",
    "append_audit",
    "read_audit",
    "ping",
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
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        let took = started.elapsed().as_secs_f64();
        // Ten string comparisons at most: cheaper than hashing a label set under a lock.
        match OPS.iter().position(|o| *o == op) {
            Some(i) => self.histograms[i]
                .get_or_init(|| self.metrics.store_histogram(op))
                .observe(took),
            None => self.metrics.store_histogram(op).observe(took),
        }
        if result.is_err() {
            self.metrics.store_error(op);
        }
        result
    }
}

#[async_trait]
impl GrantStore for TimedStore {
    async fn put(&self, grant: &Grant, now_ms: i64) -> Result<(), StoreError> {
        self.timed("put", self.inner.put(grant, now_ms)).await
    }

    async fn check(&self, claims: &Claims, now_ms: i64) -> Result<GrantStatus, StoreError> {
        self.timed("check", self.inner.check(claims, now_ms)).await
    }

    async fn status(&self, jti: &str, now_ms: i64) -> Result<GrantStatus, StoreError> {
        self.timed("status", self.inner.status(jti, now_ms)).await
    }

    async fn revoke(&self, target: &RevokeTarget, now_ms: i64) -> Result<u64, StoreError> {
        self.timed("revoke", self.inner.revoke(target, now_ms))
            .await
    }

    async fn revoked_before(&self, dims: &[String]) -> Result<Vec<Option<i64>>, StoreError> {
        self.timed("revoked_before", self.inner.revoked_before(dims))
            .await
    }

    async fn list(&self, filter: &GrantFilter, now_ms: i64) -> Result<Vec<Grant>, StoreError> {
        self.timed("list", self.inner.list(filter, now_ms)).await
    }

    async fn audit_head(&self) -> Result<Option<ChainHead>, StoreError> {
        self.timed("audit_head", self.inner.audit_head()).await
    }

    async fn append_audit(
        &self,
        events: &[AuditEvent],
        expected_head_seq: u64,
        head: &ChainHead,
    ) -> Result<bool, StoreError> {
        self.timed(
            "append_audit",
            self.inner.append_audit(events, expected_head_seq, head),
        )
        .await
    }

    async fn read_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.timed("read_audit", self.inner.read_audit(query)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
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
        store.audit_head().await.expect("head");
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
