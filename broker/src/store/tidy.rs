//! Tidying after revocations: the jobs a revocation queues in the store, and the background
//! task every broker runs to work them off.
//!
//! A revocation is in force once its watermark or tombstone is written; the records and index
//! entries of the grants it ended stay until tidied. `revoke` queues a [`TidyJob`] in the
//! store itself (durable: it outlives the admin's connection and the broker), and
//! [`run_worker`] calls [`GrantStore::tidy`] in bounded batches, each of which records how far
//! it got, so a restarted broker resumes where the last one stopped. Every step is idempotent:
//! a batch done again after a crash ends nothing twice and loses nothing. Nothing depends on
//! tidying for correctness; it only gives memory back and keeps listings from meeting dead
//! entries.
//!
//! # Several replicas: one works, the others wait
//! Every replica runs the worker, but at any time only one of them tidies: the holder of the
//! store's *tidy lease* (a worker name and an expiry, [`LEASE_MS`] ahead). Each batch begins
//! by taking or renewing the lease ([`GrantStore::tidy_claim`]); a worker that finds it held
//! by another, unexpired, does nothing and looks again a second later. So n replicas put one
//! paced worker's load on the store, not n of them (and tidy at one worker's pace: the
//! [`DUTY_PERCENT`] budget is the deployment's, not each replica's). The holder releases the
//! lease when nothing is left. A holder that crashes or stalls is taken over once its lease has expired, and the
//! new holder resumes from the progress recorded in the queue.
//!
//! A holder that stalled past its lease (a long pause, a partition) may wake in the middle of
//! a batch another worker has since redone. Its deletions are harmless (idempotent); its
//! progress is *fenced*: the batch's progress is recorded only if the lease still names its
//! worker, checked in the same atomic step that records it ([`GrantStore::tidy_finish`]), so a
//! stale worker can never move a job back, skip part of it, or drop a job queued since. The
//! lease's expiry is judged by the callers' clocks (the `now_ms` every store call is given),
//! so replicas' clocks should agree to well within [`LEASE_MS`]; if they do not, two workers
//! may overlap for a while, which costs duplicate work and nothing else.
//!
//! Tidying is paced, because it shares the store with `/authz`: after each batch the worker
//! rests in proportion to how long the batch took ([`rest_after`]), so it spends at most
//! [`DUTY_PERCENT`] of wall time working. A batch slowed down by a busy store or a busy machine
//! is followed by a longer rest, so tidying gives way exactly when requests need the room; the
//! price is that a revoke-everything takes about `100 / DUTY_PERCENT` times as long to tidy as
//! it would at full speed. The expiry sweep is part of each batch ([`GrantStore::tidy`]), so it
//! is paced alike, and done by the lease holder alone.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{GrantStore, StoreError};
use crate::clock::Clock;

/// How long the worker rests when there is nothing to do.
const IDLE: Duration = Duration::from_secs(1);
/// How long the worker rests after the store failed.
const AFTER_FAILURE: Duration = Duration::from_secs(5);
/// The share of wall time, in percent, the worker spends working tidy batches while work is
/// pending; it rests the rest. At 20 a batch of 5 ms is followed by 20 ms of rest.
pub const DUTY_PERCENT: u32 = 20;
/// The longest rest after one batch, however long it took (a batch held up by a store that
/// answered slowly must not stall tidying for minutes).
const MAX_REST: Duration = Duration::from_secs(5);
/// How long the tidy lease lasts past the batch that took or renewed it: well over the
/// longest rest between two batches of its holder (`MAX_REST`, `AFTER_FAILURE`) plus a
/// slow batch, so a working holder keeps it; a crashed one is taken over after this long.
pub const LEASE_MS: i64 = 30_000;

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
    /// Whether more work is pending for this worker (false when another holds the lease).
    pub more: bool,
    /// Whether the batch's progress was refused because the worker no longer held the lease
    /// (another took it over): nothing was recorded.
    pub fenced: bool,
}

/// One tidy batch claimed under the lease ([`GrantStore::tidy_claim`]), to be worked and
/// recorded by [`GrantStore::tidy_finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TidyClaim {
    /// The worker holding the lease.
    pub worker: String,
    /// The job at the head of the queue when claimed, if any was pending.
    pub job: Option<ClaimedJob>,
}

/// The head job of a claim and what its batch covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// The job as the store holds it (the Redis store's JSON): progress is recorded only if
    /// the queue's head is still this.
    pub stored: String,
    /// The job, or `None` if it could not be read (it is dropped).
    pub job: Option<TidyJob>,
    /// For a sweep, the index members this batch covers, read when claimed.
    pub members: Vec<String>,
}

impl TidyProgress {
    /// Adds another batch's counts.
    pub fn add(&mut self, other: TidyProgress) {
        self.ended += other.ended;
        self.dropped += other.dropped;
        self.more |= other.more;
        self.fenced |= other.fenced;
    }
}

/// How long the worker rests after a batch that took `took`, so that working takes at most
/// [`DUTY_PERCENT`] of wall time: `took × (100 − DUTY_PERCENT) / DUTY_PERCENT`, at most
/// `MAX_REST`.
pub fn rest_after(took: Duration) -> Duration {
    took.checked_mul(100 - DUTY_PERCENT)
        .map_or(MAX_REST, |d| (d / DUTY_PERCENT).min(MAX_REST))
}

/// Works the store's tidy queue for ever: batch after batch while work is pending, each
/// followed by its rest ([`rest_after`]); resting longer when there is none or the store fails
/// (it is retried; nothing is lost). Spawned by the server next to its listener and dropped
/// with it.
pub async fn run_worker(store: Arc<dyn GrantStore>, clock: Arc<dyn Clock>) {
    run_worker_as(store, clock, &worker_name()).await;
}

/// [`run_worker`] under a given worker name (benchmarks; in a broker the name is random and
/// must be unique among the replicas sharing the store).
pub async fn run_worker_as(store: Arc<dyn GrantStore>, clock: Arc<dyn Clock>, worker: &str) {
    let (store, clock) = (&store, &clock);
    paced(move || async move {
        let p = store.tidy(worker, clock.now_ms()).await;
        if matches!(p, Ok(TidyProgress { fenced: true, .. })) {
            tracing::warn!("the tidy lease lapsed during a batch; another worker goes on");
        }
        p
    })
    .await;
}

/// A name for this process's worker, unique among the replicas sharing a store (the lease's
/// fencing relies on it): random, with the process id as a fallback should the system's
/// random source fail.
fn worker_name() -> String {
    let mut bytes = [0u8; 12];
    match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes) {
        Ok(()) => format!("tidy-{}", hex::encode(bytes)),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!("tidy-{}-{nanos}", std::process::id())
        }
    }
}

/// Runs `batch` for ever, paced: after each, rests [`rest_after`] its duration, and at least
/// [`IDLE`] when no work is left or [`AFTER_FAILURE`] when it failed.
async fn paced<F, Fut>(mut batch: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<TidyProgress, StoreError>>,
{
    loop {
        let started = Instant::now();
        let outcome = batch().await;
        let rest = rest_after(started.elapsed());
        let rest = match outcome {
            Ok(p) if p.more => rest,
            Ok(_) => rest.max(IDLE),
            Err(e) => {
                tracing::warn!(error = %e, "tidying after revocations failed; retrying");
                rest.max(AFTER_FAILURE)
            }
        };
        if rest.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(rest).await;
        }
    }
}

/// Works the queue as `worker` until nothing is pending or another worker holds the lease
/// (tests and tools): at most `max_batches`.
pub async fn drain(
    store: &dyn GrantStore,
    worker: &str,
    now_ms: i64,
    max_batches: usize,
) -> Result<TidyProgress, StoreError> {
    let mut total = TidyProgress::default();
    for _ in 0..max_batches {
        let p = store.tidy(worker, now_ms).await?;
        total.ended += p.ended;
        total.dropped += p.dropped;
        total.more = p.more;
        total.fenced |= p.fenced;
        if !p.more {
            break;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Runs [`paced`] on batches that take `took` (in turn) of tokio's paused clock and end as
    /// `outcome(i)` says, for `for_ms` of that clock; returns when each batch started and ended.
    async fn run_paced(
        took: &'static [u64],
        outcome: fn(usize) -> Result<TidyProgress, StoreError>,
        for_ms: u64,
    ) -> Vec<(Instant, Instant)> {
        let ran = Arc::new(Mutex::new(Vec::new()));
        let worker = tokio::spawn({
            let ran = ran.clone();
            let mut i = 0;
            paced(move || {
                let (n, ms, ran) = (i, took[i % took.len()], ran.clone());
                i += 1;
                async move {
                    let start = Instant::now();
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    ran.lock().expect("lock").push((start, Instant::now()));
                    outcome(n)
                }
            })
        });
        tokio::time::sleep(Duration::from_millis(for_ms)).await;
        worker.abort();
        ran.lock().expect("lock").clone()
    }

    fn more(_: usize) -> Result<TidyProgress, StoreError> {
        Ok(TidyProgress {
            ended: 100,
            dropped: 500,
            more: true,
            fenced: false,
        })
    }

    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) <= Duration::from_millis(1)
    }

    #[test]
    fn the_rest_is_in_proportion_to_the_batch_and_bounded() {
        assert_eq!(DUTY_PERCENT, 20, "the figures below assume 20 %");
        assert_eq!(rest_after(Duration::ZERO), Duration::ZERO);
        assert_eq!(
            rest_after(Duration::from_millis(5)),
            Duration::from_millis(20)
        );
        assert_eq!(rest_after(Duration::from_secs(1)), Duration::from_secs(4));
        assert_eq!(rest_after(Duration::from_secs(60)), MAX_REST);
        assert_eq!(rest_after(Duration::MAX), MAX_REST);
    }

    /// While work is pending, each batch is followed by a rest four times as long as it took
    /// (slow batches, slow rests), so tidying takes at most a fifth of the time: on the paused
    /// clock, no real sleeping.
    #[tokio::test(start_paused = true)]
    async fn tidying_takes_at_most_its_share_of_the_time() {
        static TOOK: [u64; 6] = [5, 40, 1, 120, 10, 3];
        let ran = run_paced(&TOOK, more, 10_000).await;
        assert!(ran.len() > 2 * TOOK.len(), "{} batches", ran.len());
        for (k, w) in ran.windows(2).enumerate() {
            let ((s0, e0), (s1, _)) = (w[0], w[1]);
            assert!(close(e0 - s0, Duration::from_millis(TOOK[k % TOOK.len()])));
            assert!(
                close(s1 - e0, (e0 - s0) * 4),
                "batch {k} took {:?}, rested {:?}",
                e0 - s0,
                s1 - e0
            );
        }
        let busy: Duration = ran.iter().map(|(s, e)| *e - *s).sum();
        let (first, last) = (ran[0].0, ran[ran.len() - 1].1);
        let share = busy.as_secs_f64() / (last - first).as_secs_f64();
        assert!(share <= 0.21, "worked {:.1} % of the time", share * 100.0);
    }

    /// With nothing left the worker rests [`IDLE`], after a failure [`AFTER_FAILURE`]; with
    /// work pending only its share.
    #[tokio::test(start_paused = true)]
    async fn the_worker_rests_longer_when_idle_or_failing() {
        fn outcome(i: usize) -> Result<TidyProgress, StoreError> {
            match i % 3 {
                0 => Err(StoreError::Unavailable("test outage".into())),
                1 => Ok(TidyProgress::default()),
                _ => more(i),
            }
        }
        let ran = run_paced(&[2], outcome, 20_000).await;
        assert!(ran.len() >= 6, "{} batches", ran.len());
        for (k, w) in ran.windows(2).enumerate() {
            let rest = w[1].0 - w[0].1;
            let want = match k % 3 {
                0 => AFTER_FAILURE,
                1 => IDLE,
                _ => Duration::from_millis(8),
            };
            assert!(close(rest, want), "after batch {k}: {rest:?}, not {want:?}");
        }
    }
}
