//! The production store on Redis (single node or Redis Cluster).
//!
//! Keys (`P` is the configured prefix, `J` a token id):
//! - `P:g:{J}` the grant (JSON), with a TTL equal to the token's remaining lifetime — expiry
//!   needs no sweeper;
//! - `P:t:{J}` a tombstone with the same TTL, written on revocation, so "revoked" is told
//!   apart from "unknown";
//! - `P:i:{J}` an "issued" marker living a day past expiry, so "expired" is told apart too;
//! - `P:rev` a hash of revoked-before watermarks (`all`, `sub:…`, `repo:…`, `role:…`,
//!   `idp:…`): the O(1) bulk revocation check. Its TTL is the longest token lifetime, unless
//!   it holds a person's or an issuer's watermark, which also guards future exchanges and so
//!   is kept;
//! - `P:index` a sorted set of live token ids by expiry, for listings;
//! - `P:{audit}:s:evidence` the evidence lane of the audit trail's window (grants,
//!   revocations, admin actions, checkpoints) and `P:{audit}:s:traffic` its traffic lane
//!   (accesses, refusals): two streams whose entry ids are the events' seq (`<seq>-0`), so a
//!   page after any seq is one `XRANGE` from there, each trimmed by its own budget of events,
//!   bytes and age ([`AuditRetention`]); `P:{audit}:bytes` the bytes of event JSON each lane
//!   holds; `P:{audit}:head` the chain head (`seq evidence-hash traffic-hash`). One script
//!   changes them together (compare-and-set). `P:{audit}` and `P:{audit}:traffic` hold what
//!   was written before seq ids (ids from event times): still read, trimmed first, never
//!   appended to. The complete trail is in the audit sink's files, not here.
//!
//! The `{J}` hash tag keeps a grant's keys in one cluster slot, so they change atomically.
//! No command ever spans two slots. A connection is made lazily and re-made by the
//! connection manager; while Redis is away every call answers `Unavailable`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use jit_proto::Claims;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use tokio::sync::OnceCell;

use super::{
    AuditRetention, EXPIRED_MEMORY_SECS, Grant, GrantFilter, GrantStatus, GrantStore,
    MAX_TOKEN_LIFETIME_SECS, RevokeTarget, StoreError, lane_of, merge_by_seq, revoked_by,
};
use crate::audit::{AuditEvent, AuditQuery, ChainHead, Lane};

/// How long one Redis call may take before the broker gives up and fails closed.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Audit events read per XRANGE page.
const AUDIT_PAGE: usize = 500;

/// Raises a watermark (never lowers it, whatever the replicas' clocks). A person's or an
/// issuer's watermark also refuses identity tokens authenticated before it, however long the
/// IdP keeps a session alive, so once one is set the hash is kept; otherwise it lives as long
/// as the longest token can.
const RAISE_WATERMARK: &str = r"
local kept = redis.call('EXISTS', KEYS[1]) == 1 and redis.call('PTTL', KEYS[1]) == -1
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local kind = string.sub(ARGV[1], 1, 4)
if kind == 'sub:' or kind == 'idp:' then
  redis.call('PERSIST', KEYS[1])
elseif not kept then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
";

/// Appends a batch of audit events if the chain head is still the expected one, then trims
/// each lane to its budget, oldest first.
/// KEYS: evidence stream, head, traffic stream, bytes hash, the two streams of before seq
/// ids (evidence, traffic; trimmed first, never appended to). ARGV: expected seq, new head,
/// newest event time (ms), the evidence budget (events, bytes, age ms), the traffic budget,
/// then (lane 1|2, seq, event JSON, event time) quadruples, oldest first.
/// Each event's stream id is `<seq>-0`, so a read after a seq starts right there. The batch
/// is checked against each stream's last id before anything is written: it lands whole or not
/// at all. At most `MAX_TRIM` events are trimmed per lane per append, so a script stays
/// short; a lane over budget (after the budget was lowered) shrinks over the next appends.
const APPEND_AUDIT: &str = r"
local MAX_TRIM = 2048
local head = redis.call('GET', KEYS[2])
local seq = 0
if head then seq = tonumber(string.match(head, '^(%d+)')) end
if seq ~= tonumber(ARGV[1]) then return 0 end
local streams = {KEYS[1], KEYS[3]}
local before = {KEYS[5], KEYS[6]}
local fields = {'evidence', 'traffic'}
local added = {0, 0}
for lane = 1, 2 do
  local last = redis.call('XREVRANGE', streams[lane], '+', '-', 'COUNT', 1)[1]
  if last and tonumber(string.match(last[1], '^(%d+)')) > seq then
    return redis.error_reply('audit stream ' .. streams[lane] .. ' runs ahead of the chain head')
  end
end
for i = 10, #ARGV, 4 do
  local lane = tonumber(ARGV[i])
  redis.call('XADD', streams[lane], ARGV[i + 1] .. '-0', 'e', ARGV[i + 2], 't', ARGV[i + 3])
  added[lane] = added[lane] + #ARGV[i + 2]
end
redis.call('SET', KEYS[2], ARGV[2])
local newest = tonumber(ARGV[3])
for lane = 1, 2 do
  local base = 4 + (lane - 1) * 3
  local max_events = tonumber(ARGV[base])
  local max_bytes = tonumber(ARGV[base + 1])
  local oldest_kept = newest - tonumber(ARGV[base + 2])
  local bytes = redis.call('HINCRBY', KEYS[4], fields[lane], added[lane])
  local len = redis.call('XLEN', before[lane]) + redis.call('XLEN', streams[lane])
  local removed = 0
  -- An entry's time: its `t` field, or (written before seq ids) its id's time.
  local over = function(entry)
    local t = entry[2][4] or string.match(entry[1], '^(%d+)')
    return len > max_events or bytes > max_bytes or tonumber(t) < oldest_kept
  end
  for _, key in ipairs({before[lane], streams[lane]}) do
    local count = 1
    local done = false
    while removed < MAX_TRIM and len > 0 do
      local page = redis.call('XRANGE', key, '-', '+', 'COUNT', count)
      local ids = {}
      for _, entry in ipairs(page) do
        if not over(entry) then done = true break end
        ids[#ids + 1] = entry[1]
        bytes = bytes - #entry[2][2]
        len = len - 1
      end
      if #ids > 0 then
        redis.call('XDEL', key, unpack(ids))
        removed = removed + #ids
      end
      if done or #ids < count then break end
      count = 64
    end
    if done then break end
  end
  if removed > 0 then
    if bytes < 0 then bytes = 0 end
    redis.call('HSET', KEYS[4], fields[lane], bytes)
  end
end
return 1
";

/// Where the store connects.
#[derive(Debug, Clone)]
pub enum Topology {
    /// One Redis server (`redis://`, `rediss://`, `redis+unix://`).
    Single(String),
    /// A Redis Cluster, given some of its nodes.
    Cluster(Vec<String>),
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The Redis grant store.
pub struct RedisStore {
    topology: Topology,
    conn: OnceCell<Conn>,
    prefix: String,
    retention: AuditRetention,
    raise: redis::Script,
    append: redis::Script,
}

fn unavailable(e: RedisError) -> StoreError {
    // Redis error texts carry no secrets (the URL's password is not part of them).
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// A store on `topology` using keys under `prefix`, keeping at most `audit_max` audit
    /// events per lane (and the default byte and age budgets). Connects on first use.
    pub fn new(topology: Topology, prefix: impl Into<String>, audit_max: usize) -> Self {
        Self {
            topology,
            conn: OnceCell::new(),
            prefix: prefix.into(),
            retention: AuditRetention::with_max_events(audit_max),
            raise: redis::Script::new(RAISE_WATERMARK),
            append: redis::Script::new(APPEND_AUDIT),
        }
    }

    /// The same store keeping what `retention` says of each audit lane.
    pub fn with_retention(mut self, retention: AuditRetention) -> Self {
        self.retention = retention;
        self
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                match &self.topology {
                    Topology::Single(url) => {
                        let client = redis::Client::open(url.as_str()).map_err(unavailable)?;
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(CONNECT_TIMEOUT))
                            .set_response_timeout(Some(RESPONSE_TIMEOUT))
                            .set_number_of_retries(1)
                            .set_max_delay(Duration::from_millis(500));
                        let cm = tokio::time::timeout(
                            CONNECT_TIMEOUT * 2,
                            ConnectionManager::new_with_config(client, config),
                        )
                        .await
                        .map_err(|_| StoreError::Unavailable("timed out connecting".into()))?
                        .map_err(unavailable)?;
                        Ok::<_, StoreError>(Conn::Single(cm))
                    }
                    Topology::Cluster(nodes) => {
                        let client = ClusterClientBuilder::new(nodes.clone())
                            .connection_timeout(CONNECT_TIMEOUT)
                            .response_timeout(RESPONSE_TIMEOUT)
                            .retries(1)
                            .build()
                            .map_err(unavailable)?;
                        let c = tokio::time::timeout(
                            CONNECT_TIMEOUT * 2,
                            client.get_async_connection(),
                        )
                        .await
                        .map_err(|_| StoreError::Unavailable("timed out connecting".into()))?
                        .map_err(unavailable)?;
                        Ok(Conn::Cluster(c))
                    }
                }
            })
            .await?;
        Ok(conn.clone())
    }

    fn key(&self, kind: &str, jti: &str) -> String {
        format!("{}:{kind}:{{{jti}}}", self.prefix)
    }

    fn rev_key(&self) -> String {
        format!("{}:rev", self.prefix)
    }

    fn index_key(&self) -> String {
        format!("{}:index", self.prefix)
    }

    fn audit_key(&self) -> String {
        format!("{}:{{audit}}", self.prefix)
    }

    fn audit_head_key(&self) -> String {
        format!("{}:{{audit}}:head", self.prefix)
    }

    /// A lane's stream, its entries' ids derived from the events' seq (`<seq>-0`).
    fn audit_lane_key(&self, lane: Lane) -> String {
        format!("{}:{{audit}}:s:{}", self.prefix, lane.as_str())
    }

    /// A lane's stream as written before seq ids (ids from event times): read and trimmed,
    /// never appended to.
    fn audit_before_key(&self, lane: Lane) -> String {
        match lane {
            Lane::Evidence => self.audit_key(),
            Lane::Traffic => format!("{}:{{audit}}:traffic", self.prefix),
        }
    }

    fn audit_bytes_key(&self) -> String {
        format!("{}:{{audit}}:bytes", self.prefix)
    }

    /// The bytes of event JSON each lane holds, as the store counts them (evidence, traffic).
    pub async fn audit_bytes(&self) -> Result<(u64, u64), StoreError> {
        let mut c = self.conn().await?;
        let (e, t): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.audit_bytes_key())
            .arg("evidence")
            .arg("traffic")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok((e.unwrap_or(0), t.unwrap_or(0)))
    }

    /// One lane's events written before seq ids passing `query`, oldest first, at most
    /// `query.limit`: a scan from the start (or from `from_ms`), as those ids allow.
    async fn read_before(
        &self,
        lane: Lane,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let key = self.audit_before_key(lane);
        let mut c = self.conn().await?;
        let mut out = Vec::new();
        let mut start = format!("{}", query.from_ms.unwrap_or(0).max(0));
        // Ids may run ahead of event times by clock skew between replicas: read a minute past.
        let stop_ms = query.to_ms.map(|t| t.saturating_add(60_000));
        while out.len() < query.limit {
            let page: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
                .arg(&key)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(AUDIT_PAGE)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            let Some((last_id, _)) = page.last() else {
                break;
            };
            start = format!("({last_id}");
            let full = page.len() == AUDIT_PAGE;
            for (id, fields) in page {
                let id_ms: i64 = id
                    .split('-')
                    .next()
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(0);
                if stop_ms.is_some_and(|s| id_ms > s) {
                    return Ok(out);
                }
                let Some(json) = fields.get("e") else {
                    return Err(StoreError::Corrupt(format!(
                        "audit entry {id} has no event"
                    )));
                };
                let mut e: AuditEvent = serde_json::from_str(json)
                    .map_err(|err| StoreError::Corrupt(format!("audit entry {id}: {err}")))?;
                e.id = Some(id);
                let in_range = query.from_ms.is_none_or(|f| e.ts >= f)
                    && query.to_ms.is_none_or(|t| e.ts <= t);
                if in_range && query.matches(&e) {
                    out.push(e);
                    if out.len() >= query.limit {
                        break;
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// One lane's events passing `query`, oldest first, at most `query.limit`. The stream ids
    /// are the events' seq: the read starts right after `after_seq` (or at the first event of
    /// `from_ms`, found by bisection), whatever the depth.
    async fn read_lane(
        &self,
        lane: Lane,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let key = self.audit_lane_key(lane);
        let mut c = self.conn().await?;
        let mut next = query.after_seq.saturating_add(1);
        if let Some(from) = query.from_ms {
            // Event times may run behind seq order by the replicas' clock skew: start a
            // minute early and filter.
            next = next.max(
                self.first_seq_at(&mut c, &key, from.saturating_sub(60_000))
                    .await?,
            );
        }
        let stop_ms = query.to_ms.map(|t| t.saturating_add(60_000));
        let mut out = Vec::new();
        while out.len() < query.limit {
            let page: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
                .arg(&key)
                .arg(format!("{next}-0"))
                .arg("+")
                .arg("COUNT")
                .arg(AUDIT_PAGE)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            let full = page.len() == AUDIT_PAGE;
            for (id, fields) in page {
                let Some(json) = fields.get("e") else {
                    return Err(StoreError::Corrupt(format!(
                        "audit entry {id} has no event"
                    )));
                };
                let mut e: AuditEvent = serde_json::from_str(json)
                    .map_err(|err| StoreError::Corrupt(format!("audit entry {id}: {err}")))?;
                next = e.seq.saturating_add(1);
                if stop_ms.is_some_and(|s| e.ts > s) {
                    return Ok(out);
                }
                e.id = Some(id);
                let in_range = query.from_ms.is_none_or(|f| e.ts >= f)
                    && query.to_ms.is_none_or(|t| e.ts <= t);
                if in_range && query.matches(&e) {
                    out.push(e);
                    if out.len() >= query.limit {
                        break;
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// The first seq of the lane `key` whose event time is at least `ms` (bisection over the
    /// seq ids: a few round trips at any depth), or past the end.
    async fn first_seq_at(&self, c: &mut Conn, key: &str, ms: i64) -> Result<u64, StoreError> {
        // The entry at or after `seq`: its seq and time.
        async fn at(c: &mut Conn, key: &str, seq: u64) -> Result<Option<(u64, i64)>, StoreError> {
            let page: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
                .arg(key)
                .arg(format!("{seq}-0"))
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(c)
                .await
                .map_err(unavailable)?;
            Ok(page.into_iter().next().map(|(id, f)| {
                let seq = id
                    .split('-')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let t = f.get("t").and_then(|t| t.parse().ok()).unwrap_or(i64::MAX);
                (seq, t)
            }))
        }
        let Some((mut lo, t)) = at(c, key, 1).await? else {
            return Ok(1);
        };
        if t >= ms {
            return Ok(lo);
        }
        let last: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(c)
            .await
            .map_err(unavailable)?;
        let mut hi = last
            .first()
            .and_then(|(id, _)| id.split('-').next()?.parse::<u64>().ok())
            .map_or(lo, |s| s.saturating_add(1));
        // Invariant: the event at `lo` is before `ms`; everything from `hi` on is not.
        // (Event times out of seq order by clock skew only move the start by that skew.)
        while lo.saturating_add(1) < hi {
            let mid = lo + (hi - lo) / 2;
            match at(c, key, mid).await? {
                Some((seq, t)) if t < ms => lo = seq.clamp(mid, hi - 1),
                _ => hi = mid,
            }
        }
        Ok(hi)
    }

    /// The remaining TTL of a grant's key in milliseconds (`PTTL`), for tests and operators.
    pub async fn grant_pttl(&self, jti: &str) -> Result<i64, StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("PTTL")
            .arg(self.key("g", jti))
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    async fn watermarks(&self, dims: &[String]) -> Result<Vec<Option<i64>>, StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("HMGET")
            .arg(self.rev_key())
            .arg(dims)
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    async fn all_watermarks(&self) -> Result<HashMap<String, i64>, StoreError> {
        let mut c = self.conn().await?;
        redis::cmd("HGETALL")
            .arg(self.rev_key())
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    /// The grant record, whether a tombstone exists, whether an issued marker exists.
    async fn record(&self, jti: &str) -> Result<(Option<Grant>, bool, bool), StoreError> {
        let mut c = self.conn().await?;
        let (raw, tomb, issued): (Option<String>, bool, bool) = redis::pipe()
            .get(self.key("g", jti))
            .exists(self.key("t", jti))
            .exists(self.key("i", jti))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let grant = raw.map(|s| parse_grant(&s)).transpose()?;
        Ok((grant, tomb, issued))
    }

    /// Live grants (by the index and the current watermarks), unfiltered.
    async fn live_grants(&self, now_ms: i64) -> Result<Vec<Grant>, StoreError> {
        let mut c = self.conn().await?;
        let index = self.index_key();
        let _: i64 = redis::cmd("ZREMRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(now_ms)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let jtis: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&index)
            .arg(format!("({now_ms}"))
            .arg("+inf")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let raws = try_join_all(jtis.iter().map(|jti| {
            let mut c = c.clone();
            let key = self.key("g", jti);
            async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<String>>(&mut c)
                    .await
            }
        }))
        .await
        .map_err(unavailable)?;
        let marks = self.all_watermarks().await?;
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws.into_iter().flatten() {
            let g = parse_grant(&raw)?;
            let wms: Vec<Option<i64>> = g
                .dimensions()
                .iter()
                .map(|d| marks.get(d).copied())
                .collect();
            if g.remaining_ms(now_ms) > 0 && !revoked_by(&wms, g.issued_ms) {
                out.push(g);
            }
        }
        Ok(out)
    }

    async fn end_grant(&self, g: &Grant, now_ms: i64) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let remaining = g.remaining_ms(now_ms).max(1);
        let _: () = redis::pipe()
            .atomic()
            .del(self.key("g", &g.jti))
            .cmd("SET")
            .arg(self.key("t", &g.jti))
            .arg(1)
            .arg("PX")
            .arg(remaining)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let _: i64 = redis::cmd("ZREM")
            .arg(self.index_key())
            .arg(&g.jti)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

fn parse_grant(raw: &str) -> Result<Grant, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("grant record: {e}")))
}

#[async_trait]
impl GrantStore for RedisStore {
    async fn put(&self, grant: &Grant, now_ms: i64) -> Result<(), StoreError> {
        let remaining = grant.remaining_ms(now_ms);
        if remaining <= 0 {
            return Err(StoreError::Invalid("grant already expired"));
        }
        let json = serde_json::to_string(grant)
            .map_err(|e| StoreError::Corrupt(format!("grant record: {e}")))?;
        let mut c = self.conn().await?;
        let _: () = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.key("g", &grant.jti))
            .arg(json)
            .arg("PX")
            .arg(remaining)
            .ignore()
            .cmd("SET")
            .arg(self.key("i", &grant.jti))
            .arg(grant.exp)
            .arg("PX")
            .arg(remaining + EXPIRED_MEMORY_SECS * 1000)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let indexed: Result<i64, _> = redis::cmd("ZADD")
            .arg(self.index_key())
            .arg(grant.exp.saturating_mul(1000))
            .arg(&grant.jti)
            .query_async(&mut c)
            .await;
        if let Err(e) = indexed {
            // Never leave a grant that listings cannot see: undo it (best effort; it expires
            // by itself anyway) and report the failure so no token is handed out.
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(self.key("g", &grant.jti))
                .query_async(&mut c)
                .await;
            return Err(unavailable(e));
        }
        Ok(())
    }

    async fn check(&self, claims: &Claims, now_ms: i64) -> Result<GrantStatus, StoreError> {
        // The grant's record and the five watermarks that could revoke it, in parallel: two
        // fixed-size round trips, whatever the number of grants or revocations.
        let probe = Grant::from_claims(claims, 0);
        let dims = probe.dimensions();
        let (record, marks) = tokio::try_join!(self.record(&claims.jti), self.watermarks(&dims))?;
        Ok(match record {
            (_, true, _) => GrantStatus::Revoked,
            (Some(g), _, _) if !g.describes(claims) => GrantStatus::Unknown,
            (Some(g), _, _) if g.remaining_ms(now_ms) <= 0 => GrantStatus::Expired,
            (Some(g), _, _) if revoked_by(&marks, g.issued_ms) => GrantStatus::Revoked,
            (Some(g), _, _) => GrantStatus::Live(g),
            (None, _, _) if claims.exp.saturating_mul(1000) <= now_ms => GrantStatus::Expired,
            (None, _, true) => GrantStatus::Expired,
            (None, _, false) => GrantStatus::Unknown,
        })
    }

    async fn status(&self, jti: &str, now_ms: i64) -> Result<GrantStatus, StoreError> {
        Ok(match self.record(jti).await? {
            (_, true, _) => GrantStatus::Revoked,
            (Some(g), _, _) if g.remaining_ms(now_ms) <= 0 => GrantStatus::Expired,
            (Some(g), _, _) => {
                if revoked_by(&self.watermarks(&g.dimensions()).await?, g.issued_ms) {
                    GrantStatus::Revoked
                } else {
                    GrantStatus::Live(g)
                }
            }
            (None, _, true) => GrantStatus::Expired,
            (None, _, false) => GrantStatus::Unknown,
        })
    }

    async fn revoke(&self, target: &RevokeTarget, now_ms: i64) -> Result<u64, StoreError> {
        let covered: Vec<Grant> = match target {
            RevokeTarget::Jti(jti) => match self.status(jti, now_ms).await? {
                GrantStatus::Live(g) => vec![g],
                _ => vec![],
            },
            bulk => {
                let covered = self
                    .live_grants(now_ms)
                    .await?
                    .into_iter()
                    .filter(|g| bulk.covers(g))
                    .collect();
                // The watermark is what makes the revocation hold on every replica at once;
                // deleting the records below only tidies listings and answers "revoked".
                let mut c = self.conn().await?;
                let _: i64 = self
                    .raise
                    .key(self.rev_key())
                    .arg(bulk.dimension())
                    .arg(now_ms)
                    .arg((MAX_TOKEN_LIFETIME_SECS + 60) * 1000)
                    .invoke_async(&mut c)
                    .await
                    .map_err(unavailable)?;
                covered
            }
        };
        for g in &covered {
            self.end_grant(g, now_ms).await?;
        }
        Ok(covered.len() as u64)
    }

    async fn revoked_before(&self, dims: &[String]) -> Result<Vec<Option<i64>>, StoreError> {
        self.watermarks(dims).await
    }

    async fn list(&self, filter: &GrantFilter, now_ms: i64) -> Result<Vec<Grant>, StoreError> {
        let mut out: Vec<Grant> = self
            .live_grants(now_ms)
            .await?
            .into_iter()
            .filter(|g| filter.matches(g))
            .collect();
        out.sort_by(|a, b| (a.issued_ms, &a.jti).cmp(&(b.issued_ms, &b.jti)));
        Ok(out)
    }

    async fn audit_head(&self) -> Result<Option<ChainHead>, StoreError> {
        let mut c = self.conn().await?;
        let head: Option<String> = redis::cmd("GET")
            .arg(self.audit_head_key())
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        head.map(|h| {
            ChainHead::decode(&h).ok_or_else(|| StoreError::Corrupt(format!("audit head {h:?}")))
        })
        .transpose()
    }

    async fn append_audit(
        &self,
        events: &[AuditEvent],
        expected_head_seq: u64,
        head: &ChainHead,
    ) -> Result<bool, StoreError> {
        let Some(newest) = events.iter().map(|e| e.ts).max() else {
            return Ok(true);
        };
        let r = &self.retention;
        let mut invocation = self.append.prepare_invoke();
        invocation
            .key(self.audit_lane_key(Lane::Evidence))
            .key(self.audit_head_key())
            .key(self.audit_lane_key(Lane::Traffic))
            .key(self.audit_bytes_key())
            .key(self.audit_before_key(Lane::Evidence))
            .key(self.audit_before_key(Lane::Traffic))
            .arg(expected_head_seq)
            .arg(head.encode())
            .arg(newest);
        for b in [&r.evidence, &r.traffic] {
            invocation
                .arg(b.max_events)
                .arg(b.max_bytes)
                .arg(b.max_age_ms);
        }
        for event in events {
            let json = serde_json::to_string(event)
                .map_err(|e| StoreError::Corrupt(format!("audit event: {e}")))?;
            let lane = match lane_of(event) {
                Lane::Evidence => 1,
                Lane::Traffic => 2,
            };
            invocation
                .arg(lane)
                .arg(event.seq)
                .arg(json)
                .arg(event.ts.max(0));
        }
        let mut c = self.conn().await?;
        let appended: i64 = invocation.invoke_async(&mut c).await.map_err(unavailable)?;
        Ok(appended == 1)
    }

    async fn read_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let (mut evidence, mut traffic, evidence_now, traffic_now) = tokio::try_join!(
            self.read_before(Lane::Evidence, query),
            self.read_before(Lane::Traffic, query),
            self.read_lane(Lane::Evidence, query),
            self.read_lane(Lane::Traffic, query),
        )?;
        // Everything written before seq ids precedes everything written since, lane by lane.
        evidence.extend(evidence_now);
        traffic.extend(traffic_now);
        Ok(merge_by_seq(evidence, traffic, query.limit))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
