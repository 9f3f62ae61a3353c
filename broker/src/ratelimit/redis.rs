//! The limits kept in Redis, shared by every replica: one GCRA take (of one pass or of a
//! lease of several, see [`super::lease`]) is one Lua script, one round trip, atomic whatever
//! the number of replicas.
//!
//! Keys (`P` is the store's prefix, `L` the limiter's name, `H` the first 128 bits of the
//! SHA-256 of the limiter key, in hex — addresses and identities never appear in key names,
//! and every key has the same small size):
//! - `P:rl:{L:H}` a hash: `t` the theoretical arrival time (µs), `o` refusals since the last
//!   summary, `s` when the last summary was due (ms). Its TTL is the time until the key is
//!   full again (`t − now`), so Redis holds only the keys active within one burst's worth of
//!   time, and a forgotten key is exactly a full one.
//!
//! The hash tag makes each key its own cluster slot: keys spread over the shards and each
//! script touches one key. The broker gives the backend the grant store's request-path
//! connection ([`RedisGcra::on`]; listings and tidying have their own, so no limit check
//! queues behind them), made on first use and re-made by the connection manager: a take sent
//! together with the store's call goes out in the same write. While Redis is away every take
//! answers [`LimitError::Unavailable`] and the caller fails closed.
//!
//! Time is the broker's (`now_ms`, passed in), like the grant store's: replicas with skewed
//! clocks see a key a little earlier or later, never more than their skew.

use std::time::Duration;

use async_trait::async_trait;
use redis::RedisError;
use sha2::{Digest, Sha256};

use super::{Backend, LimitError, Limited, Rule, SUMMARY_WINDOW_MS, retry_secs};
pub use crate::redis_conn::Topology as Target;
use crate::redis_conn::{Conn, LazyConn};

/// How long one take may wait for Redis before failing closed.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);

/// One GCRA take of up to `want` passes, as many as fit (the arithmetic of
/// [`super::fit`]). KEYS[1] the key; ARGV: now (µs), interval (µs), burst, summary window
/// (µs), want. Returns `{1, passes taken}` when at least one fits; `{0, µs until one would fit,
/// summary (-1: none)}` otherwise. Numbers are written with `%d`: Lua's default formatting would
/// round 16-digit times.
const TAKE: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = interval * tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local want = math.max(1, tonumber(ARGV[5]) or 1)
local v = redis.call('HMGET', KEYS[1], 't', 'o', 's')
local tat = tonumber(v[1]) or now
if tat < now then tat = now end
local fits = math.floor((now + tolerance - tat) / interval)
if fits >= 1 then
  local n = math.min(fits, want)
  local next = tat + interval * n
  redis.call('HSET', KEYS[1], 't', string.format('%d', next))
  redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((next - now) / 1000)))
  return {1, n}
end
local over = (tonumber(v[2]) or 0) + 1
local s = tonumber(v[3])
local summary = -1
if (not s) or now - s >= window then
  summary = over
  over = 0
  redis.call('HSET', KEYS[1], 's', string.format('%d', now))
end
redis.call('HSET', KEYS[1], 'o', over)
return {0, tat + interval - now - tolerance, summary}
";

/// GCRA states in Redis.
pub struct RedisGcra {
    prefix: String,
    conn: LazyConn,
    script: redis::Script,
}

impl std::fmt::Debug for RedisGcra {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The target's URL may carry a password: never printed.
        f.debug_struct("RedisGcra")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: RedisError) -> LimitError {
    // Redis error texts carry no secrets (the URL's password is not part of them).
    LimitError::Unavailable(e.to_string())
}

impl RedisGcra {
    /// Limits in the Redis at `target`, keys under `prefix`, on a connection of their own.
    /// Connects on first use.
    pub fn new(target: Target, prefix: impl Into<String>) -> Self {
        Self::on(LazyConn::new(target, RESPONSE_TIMEOUT), prefix)
    }

    /// Limits on `conn` (shared, e.g. the grant store's request path), keys under `prefix`.
    pub fn on(conn: LazyConn, prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            conn,
            script: redis::Script::new(TAKE),
        }
    }

    /// The Redis key of `key` under `rule`.
    pub fn key(&self, rule: &Rule, key: &str) -> String {
        let digest = Sha256::digest(key.as_bytes());
        let h = hex::encode(&digest[..16]);
        format!("{}:rl:{{{}:{h}}}", self.prefix, rule.name)
    }

    async fn conn(&self) -> Result<Conn, LimitError> {
        self.conn.get().await.map_err(LimitError::Unavailable)
    }

    /// The remaining TTL of `key`'s state under `rule`, in ms (`-2`: none held).
    pub async fn pttl(&self, rule: &Rule, key: &str) -> Result<i64, LimitError> {
        let k = self.key(rule, key);
        let cmd = redis::cmd("PTTL").arg(&k).clone();
        let mut c = self.conn().await?;
        cmd.query_async(&mut c).await.map_err(unavailable)
    }
}

#[async_trait]
impl Backend for RedisGcra {
    async fn take_up_to(
        &self,
        rule: &Rule,
        key: &str,
        now_ms: i64,
        want: u32,
    ) -> Result<Result<u32, Limited>, LimitError> {
        let k = self.key(rule, key);
        let mut inv = self.script.key(&k);
        inv.arg(now_ms.saturating_mul(1000))
            .arg(rule.interval_us)
            .arg(rule.burst)
            .arg(SUMMARY_WINDOW_MS * 1000)
            .arg(want.max(1));
        let mut c = self.conn().await?;
        let reply: Vec<i64> = inv.invoke_async(&mut c).await.map_err(unavailable)?;
        match reply.as_slice() {
            [1, n] if (1..=i64::from(want.max(1))).contains(n) => {
                Ok(Ok(u32::try_from(*n).unwrap_or(1)))
            }
            [0, wait_us, summary] => Ok(Err(Limited {
                retry_after: retry_secs(*wait_us),
                summary: u64::try_from(*summary).ok(),
            })),
            other => Err(LimitError::Unavailable(format!(
                "unexpected reply from the limits script: {other:?}"
            ))),
        }
    }
}
