//! The Redis store's index of audit chains by time: what lets a page of the merged trail
//! read only the chains written in the time it covers ([`super::read_merged`]).
//!
//! # Keys (`P` the prefix)
//! - `P:{audit}:span:since` and `P:{audit}:span:until`: sorted sets of replica names, scored
//!   by the first and the last time (ms) their chain's events may be placed at
//!   ([`super::Placed`]). A writer widens its chain's span before it appends anything placed
//!   past the span's end ([`super::GrantStore::mark_audit_span`]), ahead by a lease, so it
//!   does so about once a minute, never per append. Both beside the roster in the `{audit}`
//!   slot: one script reads them.
//!
//! A page after time `T` asks for the chains whose `until` is `T` or later (`ZRANGEBYSCORE`,
//! the chains written since `T`, not the whole roster) and every roster chain without a span
//! (written by an older broker: read on every page, as before). Seeking within a chain is a
//! bisection over the seq ids of its lanes on the `t` field, inside Redis (one script per
//! lane): the `t` of a chain never goes back, so the events placed at `T` or later are a run
//! of seqs.

use std::sync::LazyLock;

use super::redis::{RedisStore, unavailable};
use super::{AuditChains, ChainSpan, StoreError};
use crate::audit::Lane;

/// The span scripts ([`AUDIT_CHAINS`], [`MARK_SPAN`], [`EXTENT`]), hashed once.
static SPANS_READ: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(AUDIT_CHAINS));
static SPANS_MARK: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(MARK_SPAN));
static EXTENT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(EXTENT));

/// The chains that may hold events placed at `ARGV[1]` or later. KEYS: roster, since,
/// until. Returns the roster's size, then `name since until` triples (empty since and until:
/// a roster chain without a span). The roster is listed only when it and the span index
/// disagree in size (chains written by an older broker).
const AUDIT_CHAINS: &str = r"
local roster = redis.call('SCARD', KEYS[1])
local out = {tostring(roster)}
local live = redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[1], '+inf', 'WITHSCORES')
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = redis.call('ZSCORE', KEYS[2], live[i]) or ''
  out[#out + 1] = live[i + 1]
end
if roster ~= redis.call('ZCARD', KEYS[3]) then
  for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if not redis.call('ZSCORE', KEYS[3], name) then
      out[#out + 1] = name
      out[#out + 1] = ''
      out[#out + 1] = ''
    end
  end
end
return out
";

/// Widens a chain's span. KEYS: since, until. ARGV: name, since, until.
const MARK_SPAN: &str = r"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(ARGV[2]) < tonumber(s) then redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) end
local u = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not u or tonumber(ARGV[3]) > tonumber(u) then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
return 1
";

/// The first and last place times a chain holds. KEYS: evidence stream, traffic stream,
/// bytes hash. Returns `{}` for a chain without events, else `{first, last}`.
const EXTENT: &str = r"
local first, last = nil, redis.call('HGET', KEYS[3], 'top')
for lane = 1, 2 do
  local a = redis.call('XRANGE', KEYS[lane], '-', '+', 'COUNT', 1)[1]
  local z = redis.call('XREVRANGE', KEYS[lane], '+', '-', 'COUNT', 1)[1]
  if a and a[2][4] and (not first or tonumber(a[2][4]) < tonumber(first)) then first = a[2][4] end
  if z and z[2][4] and (not last or tonumber(z[2][4]) > tonumber(last)) then last = z[2][4] end
end
if not first or not last then return {} end
return {first, last}
";

/// A score as Redis prints it, as whole milliseconds.
fn score(text: &str) -> Result<i64, StoreError> {
    text.parse::<f64>()
        .map(|f| f as i64)
        .map_err(|_| StoreError::Corrupt(format!("audit span score {text:?}")))
}

impl RedisStore {
    fn span_key(&self, end: &str) -> String {
        format!("{}:{{audit}}:span:{end}", self.prefix)
    }

    /// The span index's keys (since, until), for tests and operators.
    pub fn audit_span_keys(&self) -> [String; 2] {
        [self.span_key("since"), self.span_key("until")]
    }

    pub(super) async fn chains_at(&self, at_least: i64) -> Result<AuditChains, StoreError> {
        let mut c = self.conn().await?;
        let floor = if at_least == i64::MIN {
            "-inf".to_owned()
        } else {
            at_least.to_string()
        };
        let raw: Vec<String> = SPANS_READ
            .key(self.audit_roster_key())
            .key(self.span_key("since"))
            .key(self.span_key("until"))
            .arg(floor)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        let mut items = raw.into_iter();
        let roster = items
            .next()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| StoreError::Corrupt("audit roster size".into()))?;
        let mut chains = Vec::new();
        while let (Some(chain), Some(since), Some(until)) =
            (items.next(), items.next(), items.next())
        {
            let bound = |s: &str, none: i64| if s.is_empty() { Ok(none) } else { score(s) };
            chains.push(ChainSpan {
                since: bound(&since, i64::MIN)?,
                until: bound(&until, i64::MAX)?,
                chain,
            });
        }
        Ok(AuditChains { chains, roster })
    }

    pub(super) async fn mark_span(
        &self,
        chain: &str,
        since: i64,
        until: i64,
    ) -> Result<(), StoreError> {
        if chain == super::LEGACY_CHAIN {
            return Err(StoreError::Invalid("a replica chain needs a name"));
        }
        let mut c = self.conn().await?;
        let _: i64 = SPANS_MARK
            .key(self.span_key("since"))
            .key(self.span_key("until"))
            .arg(chain)
            .arg(since)
            .arg(until)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn extent_of(&self, chain: &str) -> Result<Option<(i64, i64)>, StoreError> {
        let mut c = self.conn().await?;
        let raw: Vec<String> = EXTENT_SCRIPT
            .key(self.audit_lane_key(chain, Lane::Evidence))
            .key(self.audit_lane_key(chain, Lane::Traffic))
            .key(self.audit_bytes_key(chain))
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        match raw.as_slice() {
            [first, last] => Ok(Some((score(first)?, score(last)?))),
            _ => Ok(None),
        }
    }

    /// Deletes `chain` from the span index (tests of verification only).
    #[cfg(any(test, feature = "test-suite"))]
    pub(super) async fn drop_span(&self, chain: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        for key in self.audit_span_keys() {
            let _: i64 = redis::cmd("ZREM")
                .arg(key)
                .arg(chain)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}
