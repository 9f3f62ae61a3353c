//! Tidying after revocations: the jobs a revocation queues in the store, and the background
//! task every broker runs to work them off.
//!
//! A revocation is in force once its watermark or tombstone is written; the records and index
//! entries of the grants it ended stay until tidied. `revoke` queues a [`TidyJob`] in the
//! store itself (durable: it outlives the admin's connection and the broker), and
//! [`run_worker`] calls [`GrantStore::tidy`] in bounded batches, each of which records how far
//! it got, so a restarted broker resumes where the last one stopped. Every step is idempotent:
//! two replicas working the same batch, or a batch done again after a crash, end nothing
//! twice and lose nothing. Nothing depends on tidying for correctness; it only gives memory
//! back and keeps listings from meeting dead entries.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::GrantStore;
use crate::clock::Clock;

/// How long the worker rests when there is nothing to do.
const IDLE: Duration = Duration::from_secs(1);
/// How long the worker rests after the store failed.
const AFTER_FAILURE: Duration = Duration::from_secs(5);

/// One pending piece of tidying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum TidyJob {
    /// End what a bulk revocation covers: walk the index of `dim` (`all`: the global one)
    /// through every grant issued at or before `upto_ms`, starting after `after` (an index
    /// member). The first batch raises the watermark again, so a revocation whose watermark
    /// write failed half way is completed here.
    Sweep {
        /// The revoked dimension (`repo:acme/api`, `all`).
        dim: String,
        /// The watermark: grants issued at or before it are revoked.
        upto_ms: i64,
        /// How far the sweep got (an index member), if it started.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// Drop these index entries (`(dimension, member)`, `all` for the global index) of
    /// grants that are dead (a revoked token's, or met dead by a listing), ending a record
    /// still there if it is revoked or expired. A live grant's entry is kept.
    Drop {
        /// The entries.
        entries: Vec<(String, String)>,
    },
}

/// What one tidy batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TidyProgress {
    /// Grant records ended (deleted, with a tombstone when revoked).
    pub ended: u64,
    /// Index entries removed.
    pub dropped: u64,
    /// Whether more work is pending.
    pub more: bool,
}

impl TidyProgress {
    /// Adds another batch's counts.
    pub fn add(&mut self, other: TidyProgress) {
        self.ended += other.ended;
        self.dropped += other.dropped;
        self.more |= other.more;
    }
}

/// Works the store's tidy queue for ever: batch after batch while work is pending, resting
/// when there is none or the store fails (it is retried; nothing is lost). Spawned by the
/// server next to its listener and dropped with it.
pub async fn run_worker(store: Arc<dyn GrantStore>, clock: Arc<dyn Clock>) {
    loop {
        match store.tidy(clock.now_ms()).await {
            Ok(p) if p.more => tokio::task::yield_now().await,
            Ok(_) => tokio::time::sleep(IDLE).await,
            Err(e) => {
                tracing::warn!(error = %e, "tidying after revocations failed; retrying");
                tokio::time::sleep(AFTER_FAILURE).await;
            }
        }
    }
}

/// Works the queue until nothing is pending (tests and tools): at most `max_batches`.
pub async fn drain(
    store: &dyn GrantStore,
    now_ms: i64,
    max_batches: usize,
) -> Result<TidyProgress, super::StoreError> {
    let mut total = TidyProgress::default();
    for _ in 0..max_batches {
        let p = store.tidy(now_ms).await?;
        total.ended += p.ended;
        total.dropped += p.dropped;
        total.more = p.more;
        if !p.more {
            break;
        }
    }
    Ok(total)
}
