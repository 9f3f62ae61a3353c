//! Abuse limits: per client address, per verified identity and per token, for the exchange
//! (before and after verification) and for the doors' refusals (refused credentials per
//! address; denials of valid tokens per token and per identity). Time is passed in.
//!
//! Every limit is a GCRA (generic cell rate algorithm): a key's state is one number, its
//! *theoretical arrival time* (TAT). A take at `now` moves the TAT to `max(TAT, now) + T`
//! (`T` = 60 s / `per_minute`) and passes if the TAT is then at most `burst × T` ahead of
//! `now`; otherwise it is refused and nothing changes but the refusal count, and the
//! refusal says how long until it would pass. This is a token bucket of `burst` tokens
//! refilled at `per_minute`, held in one number. A key whose TAT is behind `now` is full
//! again and may be forgotten, so state is bounded by the keys active in the last
//! `burst × T`.
//!
//! Two backends keep the state behind one trait ([`Backend`]) and pass one shared suite
//! (`suite`): [`memory::MemoryGcra`], in process (`jit-broker dev`, the memory store), and
//! [`redis::RedisGcra`], in Redis when the grant store is Redis, so every replica counts
//! against the same budget: one Lua script per take, one round trip, one key per limiter
//! key (hash-tagged, with a TTL of the time it takes to become full again). The exchange's
//! per-address limit takes the passes of an address that asks hundreds of times a second at
//! one replica (a CI fleet's egress) from Redis several at a time ([`lease`]), charged when
//! taken. When Redis cannot be reached, a limit fails closed: the exchange answers 503 with
//! `Retry-After`, the doors treat the refusal as over its budget, and
//! `jit_rate_limit_unavailable_total{limiter}` counts it.
//!
//! Every limiter has a name, the `limiter` label of `jit_rate_limited_total`, counted on every
//! refusal. A limiter also says when a key that is over its budget is due a summary: the
//! first refusal over the budget in each [`SUMMARY_WINDOW_MS`] is audited as one event
//! carrying how many were refused since the last summary, the others only counted.

pub mod lease;
pub mod memory;
pub mod redis;
#[cfg(any(test, feature = "test-suite"))]
pub mod suite;

use std::sync::Arc;

use async_trait::async_trait;

pub use crate::config::RateLimitConfig;
use crate::metrics::Metrics;

/// A key over its budget is summarised in the audit trail at most once per window.
pub const SUMMARY_WINDOW_MS: i64 = 60_000;

/// `Retry-After` (seconds) when the limits cannot be checked: the backend is unreachable.
pub const UNAVAILABLE_RETRY_SECS: u64 = 5;

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

/// One limit: its name, emission interval and burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The limiter's name (its `limiter` label, and part of its keys in Redis).
    pub name: &'static str,
    /// Microseconds between two takes at the sustained rate (60 s / `per_minute`).
    pub interval_us: i64,
    /// Takes that may come at once.
    pub burst: i64,
}

impl Rule {
    /// `per_minute` sustained, `burst` at once (zeros count as one).
    pub fn new(name: &'static str, per_minute: u32, burst: u32) -> Self {
        Self {
            name,
            interval_us: (60_000_000 / i64::from(per_minute.max(1))).max(1),
            burst: i64::from(burst.max(1)),
        }
    }

    /// How far ahead of `now` a TAT may run and still let a take through.
    pub fn tolerance_us(&self) -> i64 {
        self.interval_us.saturating_mul(self.burst)
    }
}

/// Whole seconds to wait for `us` microseconds, at least one.
pub fn retry_secs(us: i64) -> u64 {
    u64::try_from(us.max(1))
        .unwrap_or(1)
        .div_ceil(1_000_000)
        .max(1)
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

/// Why a limit could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The backend (Redis) did not answer; the request is refused (fail closed).
    #[error("rate limits unavailable: {0}")]
    Unavailable(String),
}

/// Why a take did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over the budget.
    Over(Limited),
    /// The limits could not be checked.
    Unavailable(LimitError),
}

/// Where the limits' state lives.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Takes up to `want` passes of `rule` for `key` at `now_ms`, as many as fit the budget
    /// (`want` 0 counts as 1): `Ok(Ok(n))` with the `n ≥ 1` taken, `Ok(Err(limited))` when not
    /// even one fits (only the refusal count changes), `Err` when the state could not be
    /// reached.
    async fn take_up_to(
        &self,
        rule: &Rule,
        key: &str,
        now_ms: i64,
        want: u32,
    ) -> Result<Result<u32, Limited>, LimitError>;

    /// Takes one pass of `rule` for `key` at `now_ms`: `Ok(Ok(()))` when it passes,
    /// `Ok(Err(limited))` when over the budget (only the refusal count changes), `Err` when
    /// the state could not be reached.
    async fn take(
        &self,
        rule: &Rule,
        key: &str,
        now_ms: i64,
    ) -> Result<Result<(), Limited>, LimitError> {
        Ok(self.take_up_to(rule, key, now_ms, 1).await?.map(|_| ()))
    }
}

/// How many passes of `rule` fit at `now_us` after a TAT of `tat_us`, at most `want`:
/// `Ok((n, new TAT))`, or `Err(µs until one would fit)`. The one GCRA step both backends
/// take (the Redis script is the same arithmetic in Lua).
pub fn fit(rule: &Rule, tat_us: i64, now_us: i64, want: u32) -> Result<(u32, i64), i64> {
    let base = tat_us.max(now_us);
    let room = now_us
        .saturating_add(rule.tolerance_us())
        .saturating_sub(base);
    let fits = room.div_euclid(rule.interval_us);
    if fits < 1 {
        return Err(base.saturating_add(rule.interval_us) - now_us - rule.tolerance_us());
    }
    let n = u32::try_from(fits).unwrap_or(u32::MAX).min(want.max(1));
    Ok((
        n,
        base.saturating_add(rule.interval_us.saturating_mul(i64::from(n))),
    ))
}

/// One family of limits (one GCRA per key), named for `/metrics`.
#[derive(Clone)]
pub struct Limiter {
    rule: Rule,
    backend: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("rule", &self.rule)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter of `rule` kept in `backend`, counting refusals into `metrics`.
    pub fn new(rule: Rule, backend: Arc<dyn Backend>, metrics: Arc<Metrics>) -> Self {
        Self {
            rule,
            backend,
            metrics,
        }
    }

    /// The limiter's name (its `limiter` label).
    pub fn name(&self) -> &'static str {
        self.rule.name
    }

    /// The limiter's rule.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// Takes one pass for `key` at `now_ms`, telling a refusal over the budget from limits
    /// that could not be checked. Both are counted.
    pub async fn check(&self, key: &str, now_ms: i64) -> Result<(), Refusal> {
        match self.backend.take(&self.rule, key, now_ms).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(limited)) => {
                self.metrics.rate_limited(self.rule.name);
                Err(Refusal::Over(limited))
            }
            Err(e) => {
                self.metrics.rate_limit_unavailable(self.rule.name);
                tracing::error!(limiter = self.rule.name, error = %e, "rate limits unavailable; failing closed");
                Err(Refusal::Unavailable(e))
            }
        }
    }

    /// Takes one pass for `key` at `now_ms`; when refused, says how long to wait and whether
    /// this refusal is the one of its window to audit ([`Limited::summary`]). Limits that
    /// cannot be checked refuse (fail closed) with [`UNAVAILABLE_RETRY_SECS`] and no summary.
    pub async fn take_or_summarise(&self, key: &str, now_ms: i64) -> Result<(), Limited> {
        self.check(key, now_ms).await.map_err(|r| match r {
            Refusal::Over(l) => l,
            Refusal::Unavailable(_) => Limited {
                retry_after: UNAVAILABLE_RETRY_SECS,
                summary: None,
            },
        })
    }

    /// Takes one pass for `key` at `now_ms`; `Err(seconds)` until one is available (or the
    /// limits can be checked again).
    pub async fn take(&self, key: &str, now_ms: i64) -> Result<(), u64> {
        self.take_or_summarise(key, now_ms)
            .await
            .map_err(|l| l.retry_after)
    }
}

/// Every limiter of the broker.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Exchanges per verified identity: the issuer and subject, and for a CI job the claims
    /// naming that one job (see `VerifiedIdentity::limit_key`).
    pub identity: Limiter,
    /// Exchange requests per client address, before verification.
    pub client: Limiter,
    /// Refused credentials per client address, at the gateway, `/authz` and the admin API.
    pub refused: Limiter,
    /// Denials of one valid token (by `jti`) at the gateway and `/authz`.
    pub denied_token: Limiter,
    /// Denials of one verified identity's valid tokens (`issuer-name subject`).
    pub denied_identity: Limiter,
}

impl Limits {
    /// The rules of `config`, in the order of [`Limits`]' fields.
    pub fn rules(config: &RateLimitConfig) -> [Rule; 5] {
        let c = config;
        [
            Rule::new("exchange_identity", c.identity_per_minute, c.identity_burst),
            Rule::new("exchange_client", c.client_per_minute, c.client_burst),
            Rule::new("refused_address", c.refused_per_minute, c.refused_burst),
            Rule::new(
                "denied_token",
                c.denied_token_per_minute,
                c.denied_token_burst,
            ),
            Rule::new(
                "denied_identity",
                c.denied_identity_per_minute,
                c.denied_identity_burst,
            ),
        ]
    }

    /// Limiters for `config` kept in this process, counting refusals into `metrics`.
    pub fn new(config: &RateLimitConfig, metrics: Arc<Metrics>) -> Self {
        Self::with_backends(config, metrics, |_| {
            Arc::new(memory::MemoryGcra::default()) as Arc<dyn Backend>
        })
    }

    /// Limiters for `config` kept in `backend` (shared by every limiter and every replica;
    /// keys carry the limiter's name), counting refusals into `metrics`. The exchange's
    /// per-address limit, the one legitimate traffic asks thousands of times a second (a CI
    /// fleet's egress), takes the passes of its busy keys in leases ([`lease`]); every other
    /// limit asks the backend on each take.
    pub fn shared(
        config: &RateLimitConfig,
        metrics: Arc<Metrics>,
        backend: Arc<dyn Backend>,
    ) -> Self {
        let mut limits = Self::with_backends(config, metrics.clone(), |_| backend.clone());
        let leased = Arc::new(lease::Leased::new(backend));
        limits.client = Limiter::new(*limits.client.rule(), leased, metrics);
        limits
    }

    fn with_backends(
        config: &RateLimitConfig,
        metrics: Arc<Metrics>,
        backend: impl Fn(&Rule) -> Arc<dyn Backend>,
    ) -> Self {
        let [identity, client, refused, denied_token, denied_identity] =
            Self::rules(config).map(|r| Limiter::new(r, backend(&r), metrics.clone()));
        Self {
            identity,
            client,
            refused,
            denied_token,
            denied_identity,
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
    fn rules_turn_rates_into_intervals() {
        let r = Rule::new("t", 60, 3);
        assert_eq!(r.interval_us, 1_000_000);
        assert_eq!(r.tolerance_us(), 3_000_000);
        // Zeros cannot reach here through the config, and count as one if they do.
        assert_eq!(Rule::new("t", 0, 0), Rule::new("t", 1, 1));
        assert_eq!(retry_secs(1), 1);
        assert_eq!(retry_secs(1_000_000), 1);
        assert_eq!(retry_secs(1_000_001), 2);
    }

    #[tokio::test]
    async fn refusals_are_counted_under_the_limiters_name() {
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
            let _ = limits.denied_token.take("j", 0).await;
        }
        let text = metrics.encode();
        assert!(
            text.contains("jit_rate_limited_total{limiter=\"denied_token\"} 3"),
            "{text}"
        );
    }

    /// In a shared backend only the exchange's per-address limit leases: a busy address costs
    /// a few calls, a busy identity (or any other key) one call per take.
    #[tokio::test]
    async fn only_the_per_address_limit_is_leased() {
        let backend = Arc::new(suite::Counted::default());
        let config = RateLimitConfig {
            identity_burst: 1_000,
            client_burst: 1_000,
            refused_burst: 1_000,
            ..RateLimitConfig::default()
        };
        let limits = Limits::shared(&config, Arc::new(Metrics::new()), backend.clone());
        let calls = || backend.calls.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..500 {
            assert_eq!(limits.client.check("10.0.0.1", 0).await, Ok(()));
        }
        let client_calls = calls();
        assert!(client_calls < 100, "{client_calls}");
        for limiter in [&limits.identity, &limits.refused] {
            let before = calls();
            for _ in 0..500 {
                assert_eq!(limiter.check("k", 0).await, Ok(()));
            }
            assert_eq!(calls() - before, 500, "{}", limiter.name());
        }
    }

    /// A backend that cannot be reached refuses (fail closed) and is counted apart.
    #[tokio::test]
    async fn unreachable_limits_fail_closed_and_are_counted() {
        let metrics = Arc::new(Metrics::new());
        // Nothing listens on port 1.
        let backend = Arc::new(redis::RedisGcra::new(
            redis::Target::Single("redis://127.0.0.1:1/".into()),
            "down",
        ));
        let limits = Limits::shared(&RateLimitConfig::default(), metrics.clone(), backend);
        assert!(matches!(
            limits.client.check("10.0.0.1", 0).await,
            Err(Refusal::Unavailable(_))
        ));
        assert_eq!(
            limits.refused.take_or_summarise("10.0.0.1", 0).await,
            Err(Limited {
                retry_after: UNAVAILABLE_RETRY_SECS,
                summary: None
            })
        );
        let text = metrics.encode();
        assert!(
            text.contains("jit_rate_limit_unavailable_total{limiter=\"exchange_client\"} 1"),
            "{text}"
        );
        assert!(
            !text.contains("jit_rate_limited_total{limiter=\"exchange_client\"}"),
            "{text}"
        );
    }
}
