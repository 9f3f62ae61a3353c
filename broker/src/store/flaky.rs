//! A test store that fails on command: a [`MemoryStore`] whose grant operations or audit log
//! can be made unavailable, to prove that every caller fails closed.

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use jit_proto::Claims;

use super::memory::MemoryStore;
use super::sessions::{SessionStore, StoredSession};
use super::{
    Grant, GrantFilter, GrantListing, GrantStatus, GrantStore, ListCursor, Revocation,
    RevokeTarget, StoreError, TidyClaim, TidyProgress,
};
use crate::audit::{AuditEvent, AuditQuery, ChainHead, Sealed};

/// A memory store with two switches: `grants_down` fails storing, checking, pinging and the
/// console's sessions; `audit_down` fails the audit log.
pub struct Flaky {
    /// The store behind the switches.
    pub inner: MemoryStore,
    /// Fail `put`, `check` and `ping`.
    pub grants_down: AtomicBool,
    /// Fail `audit_head` and `append_audit`.
    pub audit_down: AtomicBool,
}

impl Default for Flaky {
    fn default() -> Self {
        Self {
            inner: MemoryStore::new(10_000),
            grants_down: AtomicBool::new(false),
            audit_down: AtomicBool::new(false),
        }
    }
}

impl Flaky {
    fn gate(&self, switch: &AtomicBool) -> Result<(), StoreError> {
        if switch.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable("test outage".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl GrantStore for Flaky {
    async fn put(&self, g: &Grant, now_ms: i64) -> Result<(), StoreError> {
        self.gate(&self.grants_down)?;
        self.inner.put(g, now_ms).await
    }
    async fn check(&self, c: &Claims, now_ms: i64) -> Result<GrantStatus, StoreError> {
        self.gate(&self.grants_down)?;
        self.inner.check(c, now_ms).await
    }
    async fn status(&self, jti: &str, now_ms: i64) -> Result<GrantStatus, StoreError> {
        self.inner.status(jti, now_ms).await
    }
    async fn revoke(&self, t: &RevokeTarget, now_ms: i64) -> Result<Revocation, StoreError> {
        self.inner.revoke(t, now_ms).await
    }
    async fn revoked_before(&self, dims: &[String]) -> Result<Vec<Option<i64>>, StoreError> {
        self.inner.revoked_before(dims).await
    }
    async fn list_page(
        &self,
        f: &GrantFilter,
        after: Option<&ListCursor>,
        limit: usize,
        now_ms: i64,
    ) -> Result<GrantListing, StoreError> {
        self.inner.list_page(f, after, limit, now_ms).await
    }
    async fn tidy_claim(&self, worker: &str, now_ms: i64) -> Result<Option<TidyClaim>, StoreError> {
        self.gate(&self.grants_down)?;
        self.inner.tidy_claim(worker, now_ms).await
    }
    async fn tidy_finish(&self, claim: TidyClaim, now_ms: i64) -> Result<TidyProgress, StoreError> {
        self.gate(&self.grants_down)?;
        self.inner.tidy_finish(claim, now_ms).await
    }
    async fn tidy_pending(&self) -> Result<u64, StoreError> {
        self.inner.tidy_pending().await
    }
    async fn audit_head(&self, chain: &str) -> Result<Option<ChainHead>, StoreError> {
        self.gate(&self.audit_down)?;
        self.inner.audit_head(chain).await
    }
    async fn join_audit(&self, replica: &str, start: &ChainHead) -> Result<(), StoreError> {
        self.gate(&self.audit_down)?;
        self.inner.join_audit(replica, start).await
    }
    async fn audit_replicas(&self) -> Result<Vec<String>, StoreError> {
        self.inner.audit_replicas().await
    }
    async fn append_sealed(
        &self,
        chain: &str,
        e: &[Sealed],
        seq: u64,
        head: &ChainHead,
    ) -> Result<bool, StoreError> {
        self.gate(&self.audit_down)?;
        self.inner.append_sealed(chain, e, seq, head).await
    }
    async fn read_chain(&self, chain: &str, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.inner.read_chain(chain, q).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.gate(&self.grants_down)
    }

    fn requests(&self) -> &dyn super::RequestStore {
        self.inner.requests()
    }

    fn sessions(&self) -> &dyn SessionStore {
        self
    }
}

/// Console sessions fail with the grants: the store is down as a whole.
#[async_trait]
impl SessionStore for Flaky {
    async fn create_session(&self, k: &str, body: &str, now: i64) -> Result<bool, StoreError> {
        self.gate(&self.grants_down)?;
        self.inner.sessions().create_session(k, body, now).await
    }
    async fn session(
        &self,
        k: &str,
        touch: bool,
        now: i64,
    ) -> Result<Option<StoredSession>, StoreError> {
        self.gate(&self.grants_down)?;
        self.inner.sessions().session(k, touch, now).await
    }
    async fn end_session(&self, k: &str, now: i64) -> Result<Option<StoredSession>, StoreError> {
        self.gate(&self.grants_down)?;
        self.inner.sessions().end_session(k, now).await
    }
    async fn begin_login(&self, k: &str, body: &str, now: i64) -> Result<(), StoreError> {
        self.gate(&self.grants_down)?;
        self.inner.sessions().begin_login(k, body, now).await
    }
    async fn take_login(&self, k: &str, now: i64) -> Result<Option<String>, StoreError> {
        self.gate(&self.grants_down)?;
        self.inner.sessions().take_login(k, now).await
    }
}
