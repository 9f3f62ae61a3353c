//! The one test suite every limits [`Backend`] must pass: the in-process table runs it in its
//! unit tests, the Redis backend against a real `redis-server` (single node and cluster) in
//! the end-to-end harness. Time is passed in, so the suite never sleeps: both backends judge
//! by the `now_ms` they are handed (Redis only uses its own clock to forget idle keys).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use async_trait::async_trait;

use super::memory::MemoryGcra;
use super::{Backend, LimitError, Limited, Rule, SUMMARY_WINDOW_MS};

/// The in-process backend, counting the calls that reach it and the passes they asked for;
/// `down` makes it unreachable.
#[derive(Debug, Default)]
pub struct Counted {
    gcra: MemoryGcra,
    /// Calls that reached the backend.
    pub calls: AtomicU32,
    /// Passes those calls asked for.
    pub asked: AtomicU32,
    /// While set, every call fails as unreachable.
    pub down: AtomicBool,
}

#[async_trait]
impl Backend for Counted {
    async fn take_up_to(
        &self,
        rule: &Rule,
        key: &str,
        now_ms: i64,
        want: u32,
    ) -> Result<Result<u32, Limited>, LimitError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(LimitError::Unavailable("down".into()));
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.asked.fetch_add(want, Ordering::SeqCst);
        self.gcra.take_up_to(rule, key, now_ms, want).await
    }
}

/// An instant (2023-11-14T22:13:20Z) the suite starts from.
const T0: i64 = 1_700_000_000_000;

/// Runs every case, each on a fresh backend from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Box<dyn Backend>>,
{
    burst_then_refill(make().await.as_ref()).await;
    slow_rate_retry_after(make().await.as_ref()).await;
    limiters_and_keys_are_independent(make().await.as_ref()).await;
    a_refusal_changes_nothing_but_its_count(make().await.as_ref()).await;
    one_summary_per_window_carries_the_refusals_since_the_last(make().await.as_ref()).await;
    a_big_burst_passes_whole_then_refills_at_the_rate(make().await.as_ref()).await;
    concurrent_takes_never_pass_more_than_the_burst(make().await).await;
    several_at_once_take_what_fits(make().await.as_ref()).await;
    concurrent_leases_never_pass_more_than_the_burst(make().await).await;
}

async fn take(b: &dyn Backend, rule: &Rule, key: &str, now_ms: i64) -> Result<(), Limited> {
    b.take(rule, key, now_ms).await.expect("backend reachable")
}

async fn take_secs(b: &dyn Backend, rule: &Rule, key: &str, now_ms: i64) -> Result<(), u64> {
    take(b, rule, key, now_ms).await.map_err(|l| l.retry_after)
}

async fn burst_then_refill(b: &dyn Backend) {
    let r = Rule::new("burst", 60, 3);
    for _ in 0..3 {
        assert_eq!(take_secs(b, &r, "a", T0).await, Ok(()));
    }
    assert_eq!(take_secs(b, &r, "a", T0).await, Err(1));
    assert_eq!(take_secs(b, &r, "a", T0 + 999).await, Err(1));
    assert_eq!(take_secs(b, &r, "a", T0 + 1000).await, Ok(()));
    assert!(take(b, &r, "a", T0 + 1000).await.is_err());
    // A long pause refills only up to the burst.
    let later = T0 + 10_000_000;
    for _ in 0..3 {
        assert_eq!(take_secs(b, &r, "a", later).await, Ok(()));
    }
    assert!(take(b, &r, "a", later).await.is_err());
}

async fn slow_rate_retry_after(b: &dyn Backend) {
    let r = Rule::new("slow", 1, 1);
    assert_eq!(take_secs(b, &r, "a", T0).await, Ok(()));
    assert_eq!(take_secs(b, &r, "a", T0).await, Err(60));
    assert_eq!(take_secs(b, &r, "a", T0 + 30_000).await, Err(30));
    assert_eq!(take_secs(b, &r, "a", T0 + 59_001).await, Err(1));
    assert_eq!(take_secs(b, &r, "a", T0 + 60_000).await, Ok(()));
}

async fn limiters_and_keys_are_independent(b: &dyn Backend) {
    let one = Rule::new("one", 1, 1);
    let two = Rule::new("two", 1, 1);
    assert_eq!(take_secs(b, &one, "k", T0).await, Ok(()));
    assert!(take(b, &one, "k", T0).await.is_err());
    assert_eq!(take_secs(b, &one, "other", T0).await, Ok(()), "another key");
    assert_eq!(take_secs(b, &two, "k", T0).await, Ok(()), "another limiter");
    // Keys that differ only by characters Redis treats specially are still apart.
    assert_eq!(take_secs(b, &one, "{k}", T0).await, Ok(()));
    assert_eq!(take_secs(b, &one, "k ", T0).await, Ok(()));
}

/// Hammering a refused key does not push its next pass further away.
async fn a_refusal_changes_nothing_but_its_count(b: &dyn Backend) {
    let r = Rule::new("hammer", 60, 2);
    assert_eq!(take_secs(b, &r, "h", T0).await, Ok(()));
    assert_eq!(take_secs(b, &r, "h", T0).await, Ok(()));
    for i in 0..100 {
        assert!(take(b, &r, "h", T0 + i).await.is_err());
    }
    assert_eq!(take_secs(b, &r, "h", T0 + 1000).await, Ok(()));
    assert!(take(b, &r, "h", T0 + 1000).await.is_err());
}

async fn one_summary_per_window_carries_the_refusals_since_the_last(b: &dyn Backend) {
    let r = Rule::new("summary", 60, 2);
    assert_eq!(take(b, &r, "t", T0).await, Ok(()));
    assert_eq!(take(b, &r, "t", T0).await, Ok(()));
    let first = take(b, &r, "t", T0).await.expect_err("over");
    assert_eq!(first.summary, Some(1), "the first refusal is summarised");
    for _ in 0..9 {
        assert_eq!(
            take(b, &r, "t", T0 + 10).await.expect_err("over").summary,
            None
        );
    }
    // A new window: the next refusal summarises the nine in between and itself.
    let w = T0 + SUMMARY_WINDOW_MS;
    assert_eq!(take(b, &r, "t", w).await, Ok(()));
    assert_eq!(take(b, &r, "t", w).await, Ok(()));
    let next = take(b, &r, "t", w).await.expect_err("over");
    assert_eq!(next.summary, Some(10));
    assert_eq!(next.retry_after, 1);
}

/// A burst the size of a matrix build: 500 at once, then the sustained rate. The rate is low
/// enough that the state in Redis lives far longer (50 s) than the 500 takes may take on a
/// busy machine: Redis expires it by its own clock, the suite's times are made up.
async fn a_big_burst_passes_whole_then_refills_at_the_rate(b: &dyn Backend) {
    let r = Rule::new("matrix", 600, 500);
    for i in 0..500 {
        assert_eq!(take_secs(b, &r, "egress", T0).await, Ok(()), "take {i}");
    }
    assert!(take(b, &r, "egress", T0).await.is_err());
    // 600 a minute is one per 100 ms: a second later, 10 more.
    for i in 0..10 {
        assert_eq!(
            take_secs(b, &r, "egress", T0 + 1_000).await,
            Ok(()),
            "refill {i}"
        );
    }
    assert!(take(b, &r, "egress", T0 + 1_000).await.is_err());
}

/// Takes racing on one key (as from several replicas) pass exactly `burst` times.
async fn concurrent_takes_never_pass_more_than_the_burst(b: Box<dyn Backend>) {
    let b: std::sync::Arc<dyn Backend> = b.into();
    let r = Rule::new("race", 1, 20);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.take(&r, "shared", T0).await })
        })
        .collect();
    let mut passed = 0;
    for t in tasks {
        if t.await.expect("task").expect("reachable").is_ok() {
            passed += 1;
        }
    }
    assert_eq!(passed, 20);
}

/// A take of several passes takes as many as fit, at most those asked for; none fitting is a
/// refusal like a single take's, with the same wait.
async fn several_at_once_take_what_fits(b: &dyn Backend) {
    let r = Rule::new("lease", 60, 10);
    let up_to = |want, now| b.take_up_to(&r, "k", now, want);
    assert_eq!(up_to(4, T0).await.expect("reachable"), Ok(4));
    assert_eq!(up_to(4, T0).await.expect("reachable"), Ok(4));
    assert_eq!(
        up_to(4, T0).await.expect("reachable"),
        Ok(2),
        "only two fit"
    );
    let refused = up_to(4, T0)
        .await
        .expect("reachable")
        .expect_err("none fit");
    assert_eq!((refused.retry_after, refused.summary), (1, Some(1)));
    // One a second: 2.5 s later, two fit.
    assert_eq!(up_to(4, T0 + 2_500).await.expect("reachable"), Ok(2));
    assert!(take(b, &r, "k", T0 + 2_500).await.is_err());
    // Zero counts as one.
    assert_eq!(up_to(0, T0 + 3_000).await.expect("reachable"), Ok(1));
}

/// Leases racing on one key (as from several replicas) take exactly the burst between them.
async fn concurrent_leases_never_pass_more_than_the_burst(b: Box<dyn Backend>) {
    let b: std::sync::Arc<dyn Backend> = b.into();
    let r = Rule::new("leases", 1, 100);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move { b.take_up_to(&r, "shared", T0, 1 + i % 7).await })
        })
        .collect();
    let mut taken = 0;
    for t in tasks {
        if let Ok(n) = t.await.expect("task").expect("reachable") {
            taken += n;
        }
    }
    assert_eq!(taken, 100);
}
