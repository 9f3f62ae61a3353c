//! Passes taken from a shared backend ahead of need, for the keys that ask often.
//!
//! In Redis every take is a round trip. One key can ask thousands of times a second: the
//! client address of a CI fleet behind one egress, under the exchange's flood ceiling. For
//! such a key a replica takes several passes in one script ([`Backend::take_up_to`]) and hands
//! them out from memory, so the fleet costs one round trip per lease instead of one per
//! exchange. A key that asks rarely is not leased: each of its takes goes to the backend,
//! exactly as without this layer.
//!
//! How many a lease takes: an eighth ([`SHARE_OF_DEMAND`]) of the takes of that key this
//! replica saw in the last [`WINDOW_MS`], at most a sixteenth of the rule's burst
//! ([`BURST_SHARE`]) and at most [`MAX_LEASE`]; never more than fit the budget (the backend
//! grants what fits). So a rule with a burst under 32 is never leased, and a key is leased
//! only above 16 takes per 100 ms at one replica (160/s). The broker leases one limit this way,
//! the exchange's per-address flood ceiling ([`super::Limits::shared`]); the others ask the
//! backend on every take.
//!
//! What it changes, and what it does not:
//! - Passes are charged to the shared budget when they are leased, before they are used, so a
//!   key never passes more than its rule allows across all replicas: what a replica holds was
//!   already counted. Takes racing on one key pass at most the burst.
//! - A replica that is refused holds nothing: it goes to the backend only when its lease is
//!   spent. One replica alone therefore passes exactly what the rule allows.
//! - Across replicas, a key may be refused at one while another still holds passes of its
//!   lease: at most `burst / 16` (and at most 31) per replica, used by that replica's next
//!   takes of the key.
//! - While the backend cannot be reached, a replica spends what it holds, then fails closed
//!   as before; every other check of the request (the identity's limit, the store) needs the
//!   backend too.
//! - Refusals, their summaries and their `Retry-After` are the backend's, unchanged.
//!
//! Memory is bounded like the in-process table's: at most [`MAX_KEYS`] keys per limiter. When
//! it is full, a sweep (at most once per [`SWEEP_EVERY_MS`]) drops the keys not seen for two
//! windows (what they held is lost: charged, never used); if none is idle, a new key is not
//! leased (its takes go to the backend one by one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::memory::{MAX_KEYS, SWEEP_EVERY_MS};
use super::{Backend, LimitError, Limited, Rule};

/// The window over which a key's demand is counted.
pub const WINDOW_MS: i64 = 100;

/// A lease is at most this share (1/n) of the demand seen in the last window.
pub const SHARE_OF_DEMAND: u32 = 8;

/// A lease is at most this share (1/n) of the rule's burst.
pub const BURST_SHARE: i64 = 16;

/// Most passes one lease takes.
pub const MAX_LEASE: u32 = 32;

/// The most passes one lease of `rule` may take: 1 means the rule is never leased.
pub fn lease_cap(rule: &Rule) -> u32 {
    u32::try_from(rule.burst / BURST_SHARE)
        .unwrap_or(MAX_LEASE)
        .clamp(1, MAX_LEASE)
}

/// What a replica knows of one key: the passes it holds, and the takes it saw.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// Passes leased and not yet handed out.
    left: u32,
    /// When the current window began.
    window_ms: i64,
    /// Takes in the current window.
    this: u32,
    /// Takes in the window before it (0 when that was not the one just before).
    prev: u32,
}

impl Held {
    fn new(now_ms: i64) -> Self {
        Self {
            left: 0,
            window_ms: now_ms,
            this: 0,
            prev: 0,
        }
    }

    /// Counts one take at `now_ms`.
    fn count(&mut self, now_ms: i64) {
        let since = now_ms.saturating_sub(self.window_ms);
        if since >= WINDOW_MS {
            self.prev = if since < 2 * WINDOW_MS { self.this } else { 0 };
            self.this = 0;
            self.window_ms = now_ms;
        }
        self.this = self.this.saturating_add(1);
    }

    /// How many passes the next lease asks for, at most `cap`.
    fn want(&self, cap: u32) -> u32 {
        (self.prev.max(self.this) / SHARE_OF_DEMAND).clamp(1, cap)
    }

    /// Whether the key was not seen for two windows.
    fn idle(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.window_ms) >= 2 * WINDOW_MS
    }
}

#[derive(Debug, Default)]
struct Table {
    keys: HashMap<String, Held>,
    last_sweep_ms: Option<i64>,
}

impl Table {
    /// The key's entry, made when there is room (after a sweep, at most one per
    /// [`SWEEP_EVERY_MS`]); `None` when the table is full of active keys.
    fn entry(&mut self, key: &str, now_ms: i64, max_keys: usize) -> Option<&mut Held> {
        if !self.keys.contains_key(key) {
            if self.keys.len() >= max_keys {
                let due = self
                    .last_sweep_ms
                    .is_none_or(|t| now_ms.saturating_sub(t) >= SWEEP_EVERY_MS);
                if due {
                    self.last_sweep_ms = Some(now_ms);
                    self.keys.retain(|_, h| !h.idle(now_ms));
                }
                if self.keys.len() >= max_keys {
                    return None;
                }
            }
            self.keys.insert(key.to_owned(), Held::new(now_ms));
        }
        self.keys.get_mut(key)
    }
}

/// One limiter's backend with leases: passes for busy keys taken from `inner` several at a
/// time.
pub struct Leased {
    inner: Arc<dyn Backend>,
    max_keys: usize,
    table: Mutex<Table>,
}

impl std::fmt::Debug for Leased {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are addresses and identities: never printed.
        f.debug_struct("Leased")
            .field("inner", &self.inner)
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

impl Leased {
    /// Leases from `inner`, tracking at most [`MAX_KEYS`] keys.
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self::with_max_keys(inner, MAX_KEYS)
    }

    /// Leases from `inner`, tracking at most `max_keys` keys.
    pub fn with_max_keys(inner: Arc<dyn Backend>, max_keys: usize) -> Self {
        Self {
            inner,
            max_keys: max_keys.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves counts, never a broken invariant.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.table().keys.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many passes this replica holds for `key`.
    pub fn held(&self, key: &str) -> u32 {
        self.table().keys.get(key).map_or(0, |h| h.left)
    }

    /// Counts a take of `key` and hands out a held pass: `Ok(())` when one was held, else
    /// `Err(n)`, the passes to ask the backend for.
    fn hand_out(&self, key: &str, now_ms: i64, cap: u32) -> Result<(), u32> {
        let mut table = self.table();
        let Some(held) = table.entry(key, now_ms, self.max_keys) else {
            return Err(1);
        };
        held.count(now_ms);
        if held.left > 0 {
            held.left -= 1;
            return Ok(());
        }
        Err(held.want(cap))
    }

    /// Keeps `extra` passes the backend granted beyond the one used now.
    fn keep(&self, key: &str, extra: u32) {
        if let Some(held) = self.table().keys.get_mut(key) {
            held.left = held.left.saturating_add(extra);
        }
    }

    /// Hands out a pass another take of `key` leased while this one was refused.
    fn spare(&self, key: &str) -> bool {
        match self.table().keys.get_mut(key) {
            Some(held) if held.left > 0 => {
                held.left -= 1;
                true
            }
            _ => false,
        }
    }
}

#[async_trait]
impl Backend for Leased {
    async fn take_up_to(
        &self,
        rule: &Rule,
        key: &str,
        now_ms: i64,
        want: u32,
    ) -> Result<Result<u32, Limited>, LimitError> {
        let cap = lease_cap(rule);
        if cap == 1 || want > 1 {
            return self.inner.take_up_to(rule, key, now_ms, want).await;
        }
        let ask = match self.hand_out(key, now_ms, cap) {
            Ok(()) => return Ok(Ok(1)),
            Err(ask) => ask,
        };
        match self.inner.take_up_to(rule, key, now_ms, ask).await? {
            Ok(n) => {
                if n > 1 {
                    self.keep(key, n - 1);
                }
                Ok(Ok(1))
            }
            Err(_) if self.spare(key) => Ok(Ok(1)),
            Err(limited) => Ok(Err(limited)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::ratelimit::suite::Counted;

    const T0: i64 = 1_700_000_000_000;

    fn leased() -> (Arc<Counted>, Leased) {
        let inner = Arc::new(Counted::default());
        (inner.clone(), Leased::new(inner))
    }

    async fn passes(b: &dyn Backend, rule: &Rule, key: &str, now_ms: i64) -> bool {
        b.take(rule, key, now_ms).await.expect("reachable").is_ok()
    }

    #[test]
    fn caps_follow_the_burst() {
        assert_eq!(lease_cap(&Rule::new("t", 60, 10)), 1, "identity default");
        assert_eq!(lease_cap(&Rule::new("t", 60, 31)), 1);
        assert_eq!(lease_cap(&Rule::new("t", 60, 32)), 2);
        assert_eq!(
            lease_cap(&Rule::new("t", 600_000, 500)),
            31,
            "client default"
        );
        assert_eq!(lease_cap(&Rule::new("t", 60, 1_000_000)), MAX_LEASE);
    }

    /// A key asking less than 16 times a window goes to the backend for every take, one pass
    /// at a time: nothing is held.
    #[tokio::test]
    async fn a_quiet_key_is_never_leased() {
        let (inner, b) = leased();
        let r = Rule::new("client", 600_000, 500);
        for i in 0..200 {
            assert!(passes(&b, &r, "10.0.0.1", T0 + i * 10).await);
        }
        assert_eq!(inner.calls.load(Ordering::SeqCst), 200);
        assert_eq!(inner.asked.load(Ordering::SeqCst), 200);
        assert_eq!(b.held("10.0.0.1"), 0);
    }

    /// Small bursts are never leased, however busy the key.
    #[tokio::test]
    async fn a_small_burst_is_never_leased() {
        let (inner, b) = leased();
        let r = Rule::new("identity", 1, 10);
        let passed = {
            let mut n = 0;
            for _ in 0..100 {
                n += u32::from(passes(&b, &r, "corp alice", T0).await);
            }
            n
        };
        assert_eq!(passed, 10);
        assert_eq!(inner.calls.load(Ordering::SeqCst), 100);
        assert_eq!(inner.asked.load(Ordering::SeqCst), 100);
    }

    /// A flood from one key: a few calls reach the backend, and one replica still passes
    /// exactly the burst, then refuses with the backend's own refusal (its summary too).
    #[tokio::test]
    async fn a_busy_key_leases_and_one_replica_passes_exactly_the_burst() {
        let (inner, b) = leased();
        let r = Rule::new("client", 1, 500);
        let mut passed = 0;
        let mut summaries = 0;
        for _ in 0..2_000 {
            match b.take(&r, "egress", T0).await.expect("reachable") {
                Ok(()) => passed += 1,
                Err(l) => summaries += u32::from(l.summary.is_some()),
            }
        }
        assert_eq!(passed, 500);
        assert_eq!(
            summaries, 1,
            "the first refusal of the window is summarised"
        );
        // Every refused take asked the backend; the 500 passes took a few dozen calls.
        let leases = inner.calls.load(Ordering::SeqCst) - 1_500;
        assert!(leases < 60, "{leases} calls for 500 passes");
        assert_eq!(b.held("egress"), 0, "a refused replica holds nothing");
    }

    /// Under the sustained rate a busy key passes every take, with a call to the backend for
    /// every dozen or so.
    #[tokio::test]
    async fn under_the_rate_a_busy_key_passes_with_few_calls() {
        let (inner, b) = leased();
        // 2,000 a second, 500 at once; asked 1,000 times a second.
        let r = Rule::new("client", 120_000, 500);
        for ms in 0..10_000 {
            assert!(passes(&b, &r, "egress", T0 + ms).await, "at {ms} ms");
        }
        let calls = inner.calls.load(Ordering::SeqCst);
        assert!(calls < 10_000 / 4, "{calls} calls");
    }

    /// Over the sustained rate every pass is fresh from the backend, and the rate holds: the
    /// burst, then the rate, never more.
    #[tokio::test]
    async fn over_the_rate_the_rate_holds() {
        let (_inner, b) = leased();
        // 1,000 a second (one per ms), 500 at once; asked twice as often.
        let r = Rule::new("client", 60_000, 500);
        let mut passed = 0u32;
        for ms in 0..10_000 {
            for _ in 0..2 {
                passed += u32::from(passes(&b, &r, "egress", T0 + ms).await);
            }
        }
        // 500 at once, then one a ms for the 9,999 ms after the first.
        assert!(passed <= 500 + 9_999, "{passed}");
        assert!(passed + b.held("egress") >= 500 + 9_999, "{passed}");
    }

    /// Replicas on one budget: driven until each is refused, together they pass exactly the
    /// burst; one that stops early holds at most one lease's worth, already charged.
    #[tokio::test]
    async fn replicas_on_one_budget_never_pass_more_than_the_burst() {
        let shared = Arc::new(Counted::default());
        let a = Leased::new(shared.clone());
        let b = Leased::new(shared.clone());
        let r = Rule::new("client", 1, 600);
        let mut passed = 0;
        for i in 0..3_000 {
            let replica = if i % 3 == 0 { &a } else { &b };
            passed += u32::from(passes(replica, &r, "egress", T0).await);
        }
        assert_eq!(passed, 600);

        let c = Leased::new(shared.clone());
        let d = Leased::new(shared);
        let mut passed = 0;
        for _ in 0..200 {
            passed += u32::from(passes(&c, &r, "other", T0).await);
        }
        for _ in 0..1_000 {
            passed += u32::from(passes(&d, &r, "other", T0).await);
        }
        let stranded = c.held("other");
        assert!(stranded < lease_cap(&r), "{stranded}");
        assert_eq!(passed + stranded, 600);
    }

    /// Takes racing on one key at one replica never pass more than the burst.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_takes_never_pass_more_than_the_burst() {
        let (_inner, b) = leased();
        let b = Arc::new(b);
        let r = Rule::new("client", 1, 320);
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    let mut n = 0u32;
                    for _ in 0..100 {
                        n += u32::from(passes(b.as_ref(), &r, "egress", T0).await);
                    }
                    n
                })
            })
            .collect();
        let mut passed = 0;
        for t in tasks {
            passed += t.await.expect("task");
        }
        let held = b.held("egress");
        assert_eq!(passed + held, 320, "every charged pass is used or held");
    }

    /// While the backend is away a replica spends what it holds, then fails closed.
    #[tokio::test]
    async fn an_unreachable_backend_fails_closed_once_the_lease_is_spent() {
        let (inner, b) = leased();
        let r = Rule::new("client", 600_000, 500);
        while b.held("egress") == 0 {
            assert!(passes(&b, &r, "egress", T0).await);
        }
        inner.down.store(true, Ordering::SeqCst);
        let held = b.held("egress");
        for _ in 0..held {
            assert!(passes(&b, &r, "egress", T0).await);
        }
        assert!(b.take(&r, "egress", T0).await.is_err());
        assert!(b.take(&r, "another", T0).await.is_err());
    }

    /// The table never holds more than its bound; a key that finds it full of active keys is
    /// not leased but still limited, by the backend.
    #[tokio::test]
    async fn the_table_is_bounded() {
        let inner = Arc::new(Counted::default());
        let b = Leased::with_max_keys(inner.clone(), 100);
        let r = Rule::new("client", 600_000, 500);
        for i in 0..100 {
            assert!(passes(&b, &r, &format!("k{i}"), T0).await);
        }
        assert!(
            passes(&b, &r, "new", T0 + 10).await,
            "limited by the backend"
        );
        assert_eq!(b.len(), 100);
        assert_eq!(b.held("new"), 0);
        // A sweep later the others are idle (unseen for two windows): swept.
        assert!(passes(&b, &r, "new", T0 + SWEEP_EVERY_MS + 10).await);
        assert_eq!(b.len(), 1);
        for i in 0..100_000i64 {
            let _ = b.take(&r, &format!("m{i}"), T0 + 1_000 + i / 10).await;
        }
        assert!(b.len() <= 100);
    }
}
