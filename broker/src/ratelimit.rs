//! Abuse limits of the token exchange: token buckets per client address (checked before any
//! verification) and per verified identity (issuer + subject). In memory, per process; time
//! is passed in. The number of tracked keys is bounded: when full, idle buckets are dropped,
//! and if none is idle the new key is refused (fail closed under a flood of distinct keys).

use std::collections::HashMap;
use std::sync::Mutex;

pub use crate::config::RateLimitConfig;

/// Most keys tracked per limiter.
const MAX_KEYS: usize = 100_000;

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
}

/// One family of token buckets (one bucket per key).
#[derive(Debug)]
pub struct TokenBuckets {
    per_minute: u64,
    burst: u64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl TokenBuckets {
    /// Buckets refilling at `per_minute`, holding at most `burst`.
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_minute: u64::from(per_minute.max(1)),
            burst: u64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
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
        let mut map = match self.buckets.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !map.contains_key(key) && map.len() >= MAX_KEYS {
            let full = self.burst * 1000;
            map.retain(|_, b| {
                let mut b2 = *b;
                self.refill(&mut b2, now_ms);
                b2.milli < full
            });
            if map.len() >= MAX_KEYS {
                return Err(60);
            }
        }
        let bucket = map.entry(key.to_owned()).or_insert(Bucket {
            milli: self.burst * 1000,
            updated_ms: now_ms,
        });
        self.refill(bucket, now_ms);
        if bucket.milli >= 1000 {
            bucket.milli -= 1000;
            Ok(())
        } else {
            let missing = 1000 - bucket.milli;
            // ms until `missing` thousandths accrue, rounded up to whole seconds.
            let wait_ms = (missing * 60).div_ceil(self.per_minute);
            Err(wait_ms.div_ceil(1000).max(1))
        }
    }
}

/// The exchange's two limiters.
#[derive(Debug)]
pub struct Limits {
    /// Per verified identity (`issuer-name subject`).
    pub identity: TokenBuckets,
    /// Per client address, before verification.
    pub client: TokenBuckets,
    /// Refused credentials per client address, at the gateway and `/authz`.
    pub refused: TokenBuckets,
}

impl Limits {
    /// Limiters for `config`.
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            identity: TokenBuckets::new(config.identity_per_minute, config.identity_burst),
            client: TokenBuckets::new(config.client_per_minute, config.client_burst),
            refused: TokenBuckets::new(config.refused_per_minute, config.refused_burst),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(&RateLimitConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let b = TokenBuckets::new(60, 3);
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
        let b = TokenBuckets::new(1, 1);
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
}
