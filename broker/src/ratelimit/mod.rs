//! Abuse limits: token buckets per client address, per verified identity and per token, for
//! the exchange (before and after verification) and for the doors' refusals (refused
//! credentials per address; denials of valid tokens per token and per identity). In memory,
//! per process; time is passed in.
//!
//! Every limiter has a name, the `limiter` label of `jit_rate_limited_total`, counted on every
//! refusal. A limiter also says when a key that is over its budget is due a summary: the
//! first refusal over the budget in each [`SUMMARY_WINDOW_MS`] is audited as one event
//! carrying how many were refused since the last summary, the others only counted.
//!
//! Memory is bounded: each limiter tracks at most [`MAX_KEYS`] keys (about 100 bytes each).
//! When the table is full, a sweep (at most one per [`SWEEP_EVERY_MS`], so a flood of new
//! keys cannot make every request scan it) drops the idle buckets — full again, so dropping
//! one changes nothing: a new bucket starts full (refusals not yet summarised are then only
//! in the metric).
//! A bucket is idle `burst / per_minute` minutes after its last take (one second after a
//! single take at the default rates). If the sweep frees nothing, a new key is refused (fail
//! closed; counted under the limiter's label) until buckets fall idle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub use crate::config::RateLimitConfig;
use crate::metrics::Metrics;

/// Most keys tracked per limiter.
pub const MAX_KEYS: usize = 100_000;

/// Least time between two sweeps of a full table.
pub const SWEEP_EVERY_MS: i64 = 1_000;

/// A key over its budget is summarised in the audit trail at most once per window.
pub const SUMMARY_WINDOW_MS: i64 = 60_000;

/// The limiter key of a client address: an IPv4 address itself, an IPv6 address's /64 (one
/// host usually holds a whole /64, so keying by full address would let it take a bucket per
/// address and fill the table).
pub fn address_key(client: &str) -> String {
    match client.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        _ => client.to_owned(),
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens available, in thousandths.
    milli: u64,
    updated_ms: i64,
    /// Refusals since the last summary.
    over: u64,
    /// When the last summary was due (`i64::MIN`: never).
    summarised_ms: i64,
}

/// A refusal by a limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Seconds until a retry may pass.
    pub retry_after: u64,
    /// `Some(n)` when this refusal is the one to audit for its window: `n` refusals of this
    /// key (this one included) since the last summary.
    pub summary: Option<u64>,
}

#[derive(Debug, Default)]
struct Table {
    buckets: HashMap<String, Bucket>,
    last_sweep_ms: Option<i64>,
}

/// One family of token buckets (one bucket per key), named for `/metrics`.
pub struct TokenBuckets {
    name: &'static str,
    per_minute: u64,
    burst: u64,
    max_keys: usize,
    table: Mutex<Table>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for TokenBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBuckets")
            .field("name", &self.name)
            .field("per_minute", &self.per_minute)
            .field("burst", &self.burst)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl TokenBuckets {
    /// Buckets named `name`, refilling at `per_minute`, holding at most `burst`, counting
    /// refusals into `metrics`.
    pub fn new(name: &'static str, per_minute: u32, burst: u32, metrics: Arc<Metrics>) -> Self {
        Self {
            name,
            per_minute: u64::from(per_minute.max(1)),
            burst: u64::from(burst.max(1)),
            max_keys: MAX_KEYS,
            table: Mutex::new(Table::default()),
            metrics,
        }
    }

    /// The same limiter tracking at most `max_keys` keys (tests of the bound).
    pub fn with_max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(1);
        self
    }

    /// The limiter's name (its `limiter` label).
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn refill(&self, b: &mut Bucket, now_ms: i64) {
        let elapsed = u64::try_from(now_ms.saturating_sub(b.updated_ms)).unwrap_or(0);
        // per_minute tokens per 60,000 ms, in thousandths of a token: per_minute/60 per ms.
        let add = elapsed.saturating_mul(self.per_minute) / 60;
        b.milli = b.milli.saturating_add(add).min(self.burst * 1000);
        b.updated_ms = b.updated_ms.max(now_ms);
    }

    /// Takes one token for `key` at `now_ms`; `Err(seconds)` until one is available.
    pub fn take(&self, key: &str, now_ms: i64) -> Result<(), u64> {
        self.take_or_summarise(key, now_ms)
            .map_err(|l| l.retry_after)
    }

    /// Takes one token for `key` at `now_ms`; when none is left, says how long to wait and
    /// whether this refusal is the one of its window to audit ([`Limited::summary`]).
    pub fn take_or_summarise(&self, key: &str, now_ms: i64) -> Result<(), Limited> {
        let result = self.take_inner(key, now_ms);
        if result.is_err() {
            self.metrics.rate_limited(self.name);
        }
        result
    }

    fn take_inner(&self, key: &str, now_ms: i64) -> Result<(), Limited> {
        let mut table = match self.table.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !table.buckets.contains_key(key) && table.buckets.len() >= self.max_keys {
            let due = table
                .last_sweep_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= SWEEP_EVERY_MS);
            if due {
                table.last_sweep_ms = Some(now_ms);
                let full = self.burst * 1000;
                table.buckets.retain(|_, b| {
                    let mut b2 = *b;
                    self.refill(&mut b2, now_ms);
                    b2.milli < full
                });
            }
            if table.buckets.len() >= self.max_keys {
                let wait =
                    SWEEP_EVERY_MS - now_ms.saturating_sub(table.last_sweep_ms.unwrap_or(now_ms));
                return Err(Limited {
                    retry_after: u64::try_from(wait.max(1)).unwrap_or(1).div_ceil(1000),
                    summary: None,
                });
            }
        }
        let bucket = table.buckets.entry(key.to_owned()).or_insert(Bucket {
            milli: self.burst * 1000,
            updated_ms: now_ms,
            over: 0,
            summarised_ms: i64::MIN,
        });
        self.refill(bucket, now_ms);
        if bucket.milli >= 1000 {
            bucket.milli -= 1000;
            return Ok(());
        }
        let missing = 1000 - bucket.milli;
        // ms until `missing` thousandths accrue, rounded up to whole seconds.
        let wait_ms = (missing * 60).div_ceil(self.per_minute);
        bucket.over += 1;
        let summary = if now_ms.saturating_sub(bucket.summarised_ms) >= SUMMARY_WINDOW_MS {
            bucket.summarised_ms = now_ms;
            Some(std::mem::take(&mut bucket.over))
        } else {
            None
        };
        Err(Limited {
            retry_after: wait_ms.div_ceil(1000).max(1),
            summary,
        })
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        match self.table.lock() {
            Ok(g) => g.buckets.len(),
            Err(p) => p.into_inner().buckets.len(),
        }
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every limiter of the broker.
#[derive(Debug)]
pub struct Limits {
    /// Exchanges per verified identity (`issuer-name subject`).
    pub identity: TokenBuckets,
    /// Exchange requests per client address, before verification.
    pub client: TokenBuckets,
    /// Refused credentials per client address, at the gateway, `/authz` and the admin API.
    pub refused: TokenBuckets,
    /// Denials of one valid token (by `jti`) at the gateway and `/authz`.
    pub denied_token: TokenBuckets,
    /// Denials of one verified identity's valid tokens (`issuer-name subject`).
    pub denied_identity: TokenBuckets,
}

impl Limits {
    /// Limiters for `config`, counting refusals into `metrics`.
    pub fn new(config: &RateLimitConfig, metrics: Arc<Metrics>) -> Self {
        let c = config;
        let m = || metrics.clone();
        Self {
            identity: TokenBuckets::new(
                "exchange_identity",
                c.identity_per_minute,
                c.identity_burst,
                m(),
            ),
            client: TokenBuckets::new("exchange_client", c.client_per_minute, c.client_burst, m()),
            refused: TokenBuckets::new(
                "refused_address",
                c.refused_per_minute,
                c.refused_burst,
                m(),
            ),
            denied_token: TokenBuckets::new(
                "denied_token",
                c.denied_token_per_minute,
                c.denied_token_burst,
                m(),
            ),
            denied_identity: TokenBuckets::new(
                "denied_identity",
                c.denied_identity_per_minute,
                c.denied_identity_burst,
                m(),
            ),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(&RateLimitConfig::default(), Arc::new(Metrics::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(per_minute: u32, burst: u32) -> TokenBuckets {
        TokenBuckets::new("test", per_minute, burst, Arc::new(Metrics::new()))
    }

    #[test]
    fn burst_then_refill() {
        let b = buckets(60, 3);
        for _ in 0..3 {
            assert_eq!(b.take("a", 0), Ok(()));
        }
        assert_eq!(b.take("a", 0), Err(1));
        assert_eq!(b.take("b", 0), Ok(()), "keys are independent");
        assert_eq!(b.take("a", 999), Err(1));
        assert_eq!(b.take("a", 1000), Ok(()));
        assert!(b.take("a", 1000).is_err());
        // A long pause refills only up to the burst.
        for _ in 0..3 {
            assert_eq!(b.take("a", 10_000_000), Ok(()));
        }
        assert!(b.take("a", 10_000_000).is_err());
    }

    #[test]
    fn slow_rate_retry_after() {
        let b = buckets(1, 1);
        assert_eq!(b.take("a", 0), Ok(()));
        assert_eq!(b.take("a", 0), Err(60));
        assert_eq!(b.take("a", 30_000), Err(30));
        assert_eq!(b.take("a", 60_000), Ok(()));
    }

    #[test]
    fn zero_is_refused_in_config() {
        let c = RateLimitConfig {
            client_burst: 0,
            ..RateLimitConfig::default()
        };
        assert_eq!(c.zero_key(), Some("client_burst"));
        assert_eq!(RateLimitConfig::default().zero_key(), None);
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        assert_eq!(
            address_key("2001:db8:1:2:aaaa::1"),
            address_key("2001:db8:1:2:ffff::9")
        );
        assert_ne!(
            address_key("2001:db8:1:2::1"),
            address_key("2001:db8:1:3::1")
        );
        assert_eq!(address_key("10.0.0.7"), "10.0.0.7");
        assert_eq!(address_key("unknown"), "unknown");
    }

    #[test]
    fn one_summary_per_window_carries_the_refusals_since_the_last() {
        let b = buckets(60, 2);
        assert_eq!(b.take_or_summarise("t", 0), Ok(()));
        assert_eq!(b.take_or_summarise("t", 0), Ok(()));
        let first = b.take_or_summarise("t", 0).expect_err("over");
        assert_eq!(first.summary, Some(1), "the first refusal is summarised");
        for _ in 0..9 {
            assert_eq!(
                b.take_or_summarise("t", 10).expect_err("over").summary,
                None
            );
        }
        // A new window: the next refusal summarises the nine in between and itself.
        assert_eq!(
            b.take_or_summarise("t", SUMMARY_WINDOW_MS)
                .map_err(|l| l.summary),
            Ok(())
        );
        assert_eq!(
            b.take_or_summarise("t", SUMMARY_WINDOW_MS)
                .map_err(|l| l.summary),
            Ok(())
        );
        let next = b
            .take_or_summarise("t", SUMMARY_WINDOW_MS)
            .expect_err("over");
        assert_eq!(next.summary, Some(10));
        assert_eq!(next.retry_after, 1);
    }

    #[test]
    fn refusals_are_counted_under_the_limiters_name() {
        let metrics = Arc::new(Metrics::new());
        let limits = Limits::new(&RateLimitConfig::default(), metrics.clone());
        let names: Vec<&str> = [
            &limits.identity,
            &limits.client,
            &limits.refused,
            &limits.denied_token,
            &limits.denied_identity,
        ]
        .iter()
        .map(|l| l.name())
        .collect();
        assert_eq!(
            names,
            [
                "exchange_identity",
                "exchange_client",
                "refused_address",
                "denied_token",
                "denied_identity"
            ]
        );
        let burst = RateLimitConfig::default().denied_token_burst;
        for _ in 0..burst + 3 {
            let _ = limits.denied_token.take("j", 0);
        }
        let text = metrics.encode();
        assert!(
            text.contains("jit_rate_limited_total{limiter=\"denied_token\"} 3"),
            "{text}"
        );
    }

    /// The table never holds more than its bound: idle buckets are swept (at most once per
    /// sweep interval), and while none is idle a new key is refused, not added.
    #[test]
    fn the_table_is_bounded_and_sweeps_idle_buckets() {
        let b = buckets(60, 1).with_max_keys(100);
        for i in 0..100 {
            assert_eq!(b.take(&format!("k{i}"), 0), Ok(()));
        }
        assert_eq!(b.len(), 100);
        // Full and nothing idle yet: a new key is refused, the table does not grow.
        assert!(b.take("new", 10).is_err());
        assert_eq!(b.len(), 100);
        // A second later every bucket is full again (idle): the sweep drops them.
        assert_eq!(b.take("new", 1_010), Ok(()));
        assert_eq!(b.len(), 1);
        // Thousands of times more distinct keys than the bound, over time: never more held.
        for i in 0..200_000i64 {
            let _ = b.take(&format!("m{i}"), 2_000 + i / 50);
            if i % 10_000 == 0 {
                assert!(b.len() <= 100);
            }
        }
        assert!(b.len() <= 100);
    }
}
