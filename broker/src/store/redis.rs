//! The production store on Redis (single node or Redis Cluster).
//!
//! Grants, their indexes, watermarks and tidy queue: see [`super::redis_grants`] (key layout
//! and its Redis Cluster trade-off).
//!
//! # The audit trail: one chain per replica
//!
//! Each broker (replica, named by `audit.replica`) appends to its **own** hash chain, under its
//! own hash tag, so that replicas never contend for one key and a cluster spreads their chains
//! over its shards (`P` is the configured prefix, `R` the replica's name):
//! - `P:{audit.R}:s:evidence` and `P:{audit.R}:s:traffic`: the chain's two lanes, streams whose
//!   entry ids are the events' seq (`<seq>-0`), so a page after any seq is one `XRANGE` from
//!   there; each trimmed by its own budget of events, bytes and age ([`AuditRetention`]), per
//!   chain; `P:{audit.R}:bytes` the bytes of event JSON each lane holds; `P:{audit.R}:head`
//!   the chain head (`seq evidence-hash traffic-hash`). One script appends a batch, moves the
//!   head and trims, if the head is still the one the writer expects (compare-and-set). Only
//!   one process writes a chain, so the compare-and-set fails only when two brokers share a
//!   name: that batch is refused, loudly, and never retried onto the other's head.
//! - `P:{audit}:replicas`: the roster, a set of the replicas' names, added to once when a
//!   writer starts (`SADD`, then the chain's head with `SET NX`), never per event. A verifier
//!   reads it to know which chains must exist: a chain deleted whole (its head gone) or cut at
//!   its tail (its events end before its head) is found. Each replica also signs its chain's
//!   head at a fixed interval (`audit.checkpoint`), so a tail cut together with the head back
//!   to an older state is found against the signed checkpoints and the replica's files.
//! - The chain from before replica chains (one chain every replica appended to) keeps its keys
//!   under `{audit}`: `P:{audit}:s:evidence`, `P:{audit}:s:traffic`, `P:{audit}:head`,
//!   `P:{audit}:bytes`, and `P:{audit}`, `P:{audit}:traffic` (written before seq ids, ids from
//!   event times). It is read, trimmed and verified, never appended to; a replica's chain
//!   starts where it ended (its seq and lane hashes), so a replica's files run on in seq order.
//!
//! - `P:{audit}:span:since`, `P:{audit}:span:until`: each replica chain's span by time
//!   ([`super::redis_spans`]), so a page reads only the chains written in its range.
//!
//! Seqs number the events of one chain; chains' seqs overlap. Each entry also holds its
//! place's time `t` (never going back along a chain, [`super::Placed`]). A read of the trail
//! ([`super::read_merged`]) seeks each chain it needs to the cursor's place (one script per
//! lane), reads it in chunks (one `XRANGE` per lane per chunk, at any depth) and merges them
//! by place; the next cursor (`AuditCursor`, opaque on the wire) is the place of the last
//! event read. The complete trail is in each replica's audit files, not here.
//!
//! No command ever spans two slots (multi-key reads are split by the cluster client). Two
//! connections are made lazily and re-made by their managers: one for the request path
//! (checks, exchanges, audit), one for admin and background work (listings, revocations,
//! tidying), so `/authz` never queues behind a listing. While Redis is away every call
//! answers `Unavailable`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use jit_proto::Claims;
use redis::RedisError;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::{
    AuditChains, AuditRetention, ChainStart, EXPIRED_MEMORY_SECS, Grant, GrantFilter, GrantListing,
    GrantStatus, GrantStore, LEGACY_CHAIN, ListCursor, Placed, Revocation, RevokeTarget,
    StoreError, TidyClaim, TidyJob, TidyProgress, lane_of, merge_by_seq, merge_placed,
};
use crate::audit::{AuditEvent, AuditQuery, ChainHead, Lane, Sealed};
pub(super) use crate::redis_conn::Conn;
pub use crate::redis_conn::Topology;
use crate::redis_conn::{LazyConn, connect};

/// How many buckets grants (and watermark copies) are spread over (see
/// [`super::redis_grants`]).
pub const BUCKETS: u8 = 32;

/// The bucket of a token id (or of any text).
pub fn bucket(text: &str) -> u8 {
    Sha256::digest(text.as_bytes())[0] % BUCKETS
}

/// How long one Redis call may take before the broker gives up and fails closed.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1500);

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

/// Revokes one token: writes its tombstone for the record's remaining life and deletes the
/// record, atomically (both in the token's bucket). KEYS: record, tombstone. Returns 1 if a
/// record was there.
const REVOKE_ONE: &str = r"
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('SET', KEYS[2], 1, 'PX', ttl)
redis.call('DEL', KEYS[1])
return 1
";

/// Takes or renews the tidy lease for a worker, unless another worker's lease still runs by
/// the caller's clock; when taken, returns the queue's head job too (one round trip).
/// The lease's value is `<until ms> <worker>`; the key's own TTL only clears it away.
/// KEYS: lease, queue (one slot). ARGV: worker, now ms, until ms, key TTL ms.
/// Returns `{1, head job or ''}` when the worker holds the lease, `{0, ''}` otherwise.
const TAKE_TIDY_LEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  local untl, owner = string.match(v, '^(%-?%d+) (.*)$')
  if untl and owner ~= ARGV[1] and tonumber(untl) >= tonumber(ARGV[2]) then
    return {0, ''}
  end
end
redis.call('SET', KEYS[1], ARGV[3] .. ' ' .. ARGV[1], 'PX', ARGV[4])
return {1, redis.call('LINDEX', KEYS[2], 0) or ''}
";

/// Records a tidy batch's progress, fenced: only if the lease still names the worker (a
/// worker whose lease lapsed and was taken over records nothing), and only if the queue's
/// head is still the job worked. Replaces that job with its progress, or pops it when
/// ARGV[3] is empty; releases the lease when the queue is empty and ARGV[4] is '1'.
/// KEYS: queue, lease (one slot). ARGV: worker, the job worked ('' if none), its
/// replacement, release. Returns the jobs left, or -1 if the worker no longer holds the lease.
const FINISH_TIDY: &str = r"
local v = redis.call('GET', KEYS[2])
if (not v) or string.match(v, '^%-?%d+ (.*)$') ~= ARGV[1] then return -1 end
if ARGV[2] ~= '' and redis.call('LINDEX', KEYS[1], 0) == ARGV[2] then
  if ARGV[3] == '' then redis.call('LPOP', KEYS[1]) else redis.call('LSET', KEYS[1], 0, ARGV[3]) end
end
local left = redis.call('LLEN', KEYS[1])
if left == 0 and ARGV[4] == '1' then redis.call('DEL', KEYS[2]) end
return left
";

/// Appends a batch of audit events if the chain head is still the expected one, then trims
/// each lane to its budget, oldest first.
/// KEYS: evidence stream, head, traffic stream, bytes hash, the two streams of before seq
/// ids (evidence, traffic; trimmed first, never appended to). ARGV: expected seq, new head,
/// newest event time (ms), the evidence budget (events, bytes, age ms), the traffic budget,
/// then (lane 1|2, seq, event JSON, event time) quadruples, oldest first.
/// Each event's stream id is `<seq>-0`, so a read after a seq starts right there. Its `t`
/// field is its place's time ([`super::Placed`]): its own time, or the chain's greatest
/// before it (`top` in the bytes hash; from the lanes' last entries for a chain written
/// before `top` was kept), so `t` never goes back along a chain. The batch is checked against each stream's last id before anything is written: it lands whole or not
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
local top = redis.call('HGET', KEYS[4], 'top')
for lane = 1, 2 do
  local last = redis.call('XREVRANGE', streams[lane], '+', '-', 'COUNT', 1)[1]
  if last and tonumber(string.match(last[1], '^(%d+)')) > seq then
    return redis.error_reply('audit stream ' .. streams[lane] .. ' runs ahead of the chain head')
  end
  local t = last and last[2][4]
  if t and (not top or tonumber(t) > tonumber(top)) then top = t end
end
for i = 10, #ARGV, 4 do
  local lane = tonumber(ARGV[i])
  local t = ARGV[i + 3]
  if top and tonumber(top) > tonumber(t) then t = top end
  top = t
  redis.call('XADD', streams[lane], ARGV[i + 1] .. '-0', 'e', ARGV[i + 2], 't', t)
  added[lane] = added[lane] + #ARGV[i + 2]
end
redis.call('HSET', KEYS[4], 'top', top)
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

/// The first seq after `ARGV[2]` of the lane `KEYS[1]` whose `t` is at least `ARGV[1]`, or
/// one past the last: a bisection over the seq ids, a few `XRANGE`s of one entry inside one
/// script. An entry's fields are `e <json> t <t>`.
const SEEK_AUDIT: &str = r"
local function at(seq)
  local e = redis.call('XRANGE', KEYS[1], string.format('%d-0', seq), '+', 'COUNT', 1)[1]
  if not e then return nil end
  return tonumber(string.match(e[1], '^(%d+)')), tonumber(e[2][4])
end
local min_t = tonumber(ARGV[1])
local lo = tonumber(ARGV[2]) + 1
local s, t = at(lo)
if not s then return lo end
if not t or t >= min_t then return s end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
local hi = tonumber(string.match(last[1], '^(%d+)')) + 1
lo = s
-- Invariant: the entry at lo is placed before min_t; everything from hi on is not.
while lo + 1 < hi do
  local mid = math.floor((lo + hi) / 2)
  local ms, mt = at(mid)
  if ms and mt and mt < min_t then
    if ms < mid then ms = mid end
    if ms > hi - 1 then ms = hi - 1 end
    lo = ms
  else
    hi = mid
  end
end
return hi
";

/// The Redis grant store.
pub struct RedisStore {
    topology: Topology,
    /// The request path's connection (checks, exchanges, audit), shared with the rate
    /// limits ([`RedisStore::request_conn`]).
    conn: LazyConn,
    /// Admin and background work's own connection.
    admin: OnceCell<Conn>,
    pub(super) prefix: String,
    retention: AuditRetention,
    pub(super) raise: redis::Script,
    revoke_one: redis::Script,
    pub(super) take_lease: redis::Script,
    pub(super) finish_tidy: redis::Script,
    append: redis::Script,
    seek: redis::Script,
    /// Replicas that must confirm a revocation before it is answered (`WAIT`).
    revocation_replicas: u32,
}

/// How long a revocation waits for its replicas to confirm it.
const REPLICA_WAIT_MS: u64 = 1000;

pub(super) fn unavailable(e: RedisError) -> StoreError {
    // Redis error texts carry no secrets (the URL's password is not part of them).
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// A store on `topology` using keys under `prefix`, keeping at most `audit_max` audit
    /// events per lane (and the default byte and age budgets). Connects on first use.
    pub fn new(topology: Topology, prefix: impl Into<String>, audit_max: usize) -> Self {
        Self {
            conn: LazyConn::new(topology.clone(), RESPONSE_TIMEOUT),
            topology,
            admin: OnceCell::new(),
            prefix: prefix.into(),
            retention: AuditRetention::with_max_events(audit_max),
            raise: redis::Script::new(RAISE_WATERMARK),
            revoke_one: redis::Script::new(REVOKE_ONE),
            take_lease: redis::Script::new(TAKE_TIDY_LEASE),
            finish_tidy: redis::Script::new(FINISH_TIDY),
            append: redis::Script::new(APPEND_AUDIT),
            seek: redis::Script::new(SEEK_AUDIT),
            revocation_replicas: 0,
        }
    }

    /// The same store answering a revocation only once `n` replicas hold it (`WAIT n`): a
    /// failover to a replica then cannot lose a revocation that was answered.
    pub fn with_revocation_replicas(mut self, n: u32) -> Self {
        self.revocation_replicas = n;
        self
    }

    /// Waits until the configured number of replicas hold every write made on `conn` so far;
    /// fewer within [`REPLICA_WAIT_MS`] is a failure (the revocation is in force on the
    /// primary, and revoking again is harmless).
    async fn confirm_replicated(&self, conn: &Conn) -> Result<(), StoreError> {
        let n = self.revocation_replicas;
        if n == 0 {
            return Ok(());
        }
        let mut c = conn.clone();
        let acked: i64 = redis::cmd("WAIT")
            .arg(n)
            .arg(REPLICA_WAIT_MS)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        if acked < i64::from(n) {
            return Err(StoreError::Unavailable(format!(
                "the revocation is in force on the Redis primary, but {acked} of the {n} replicas \
                 required (store.revocation_replicas) confirmed it within {REPLICA_WAIT_MS} ms; \
                 a failover now could undo it: revoke again"
            )));
        }
        Ok(())
    }

    /// The same store keeping what `retention` says of each audit lane.
    pub fn with_retention(mut self, retention: AuditRetention) -> Self {
        self.retention = retention;
        self
    }

    pub(super) async fn conn(&self) -> Result<Conn, StoreError> {
        self.conn.get().await.map_err(StoreError::Unavailable)
    }

    /// The connection of admin and background work (listings, revocations, tidying).
    /// The request path's connection, for the rate limits to share ([`LazyConn`]).
    pub fn request_conn(&self) -> LazyConn {
        self.conn.clone()
    }

    pub(super) async fn admin_conn(&self) -> Result<Conn, StoreError> {
        Ok(self.admin.get_or_try_init(|| self.connect()).await?.clone())
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        connect(&self.topology, RESPONSE_TIMEOUT)
            .await
            .map_err(StoreError::Unavailable)
    }

    /// The hash tag of `chain`'s keys: `{audit}` for [`LEGACY_CHAIN`], `{audit.<replica>}`
    /// for a replica's (replica names hold no braces), so chains spread over a cluster's
    /// shards.
    fn audit_tag(chain: &str) -> String {
        if chain == LEGACY_CHAIN {
            "{audit}".to_owned()
        } else {
            format!("{{audit.{chain}}}")
        }
    }

    fn audit_head_key(&self, chain: &str) -> String {
        format!("{}:{}:head", self.prefix, Self::audit_tag(chain))
    }

    /// A lane's stream of `chain`, its entries' ids derived from the events' seq (`<seq>-0`).
    pub fn audit_lane_key(&self, chain: &str, lane: Lane) -> String {
        format!(
            "{}:{}:s:{}",
            self.prefix,
            Self::audit_tag(chain),
            lane.as_str()
        )
    }

    /// A lane's stream as written before seq ids (ids from event times): read and trimmed,
    /// never appended to. Only the legacy chain has them; a replica chain's name keys that
    /// never exist (in its own slot, as the append script needs).
    fn audit_before_key(&self, chain: &str, lane: Lane) -> String {
        match (chain == LEGACY_CHAIN, lane) {
            (true, Lane::Evidence) => format!("{}:{{audit}}", self.prefix),
            (true, Lane::Traffic) => format!("{}:{{audit}}:traffic", self.prefix),
            (false, lane) => format!(
                "{}:{}:b:{}",
                self.prefix,
                Self::audit_tag(chain),
                lane.as_str()
            ),
        }
    }

    pub(super) fn audit_bytes_key(&self, chain: &str) -> String {
        format!("{}:{}:bytes", self.prefix, Self::audit_tag(chain))
    }

    /// The roster of replica chains (a set, written once by each writer at its start).
    pub(super) fn audit_roster_key(&self) -> String {
        format!("{}:{{audit}}:replicas", self.prefix)
    }

    /// Every key of `chain`: its head, its two lanes' streams and its byte counts (what tests
    /// damage). Dropping a chain on purpose also takes its roster entry and its span
    /// ([`Self::audit_span_keys`]): `audit verify` reports a roster entry or a span left
    /// behind without its chain.
    pub fn audit_chain_keys(&self, chain: &str) -> Vec<String> {
        vec![
            self.audit_head_key(chain),
            self.audit_lane_key(chain, Lane::Evidence),
            self.audit_lane_key(chain, Lane::Traffic),
            self.audit_bytes_key(chain),
        ]
    }

    /// The bytes of event JSON each lane of `chain` holds, as the store counts them
    /// (evidence, traffic).
    pub async fn audit_bytes(&self, chain: &str) -> Result<(u64, u64), StoreError> {
        let mut c = self.conn().await?;
        let (e, t): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.audit_bytes_key(chain))
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
        let key = self.audit_before_key(LEGACY_CHAIN, lane);
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
                let mut e = stream_event(&id, &fields)?;
                e.id = Some(id);
                if wanted(query, &e) {
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
        chain: &str,
        lane: Lane,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let key = self.audit_lane_key(chain, lane);
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
        let placed = read_lane_at(&mut c, &key, next, i64::MIN, query).await?;
        Ok(placed.into_iter().map(|p| p.event).collect())
    }

    /// One lane's events after `start.after_seq` placed at `start.min_t` or later, passing
    /// `query`: one script finds the first (a bisection over the `t` field inside Redis,
    /// none when the next event is placed late enough already), then `XRANGE` from there.
    async fn read_lane_from(
        &self,
        chain: &str,
        lane: Lane,
        start: ChainStart,
        query: &AuditQuery,
    ) -> Result<Vec<Placed>, StoreError> {
        let key = self.audit_lane_key(chain, lane);
        let mut c = self.conn().await?;
        let next: u64 = if start.min_t == i64::MIN {
            start.after_seq.saturating_add(1)
        } else {
            self.seek
                .key(&key)
                .arg(start.min_t)
                .arg(start.after_seq)
                .invoke_async(&mut c)
                .await
                .map_err(unavailable)?
        };
        read_lane_at(&mut c, &key, next, start.min_t, query).await
    }

    /// The chain from before replica chains from `start`, its events placed at their own
    /// times (it is read only; where its times go back, so may a page boundary): read on
    /// until `query.limit` events are placed late enough or the chain ends.
    async fn read_legacy_from(
        &self,
        start: ChainStart,
        query: &AuditQuery,
    ) -> Result<Vec<Placed>, StoreError> {
        let mut q = query.clone();
        q.after_seq = start.after_seq;
        if start.min_t > i64::MIN {
            q.from_ms = Some(query.from_ms.unwrap_or(i64::MIN).max(start.min_t));
        }
        let mut out = Vec::new();
        while out.len() < query.limit {
            let page = self.read_chain(LEGACY_CHAIN, &q).await?;
            let full = page.len() >= q.limit;
            let Some(last) = page.last().map(|e| e.seq) else {
                break;
            };
            q.after_seq = last;
            out.extend(page.into_iter().map(|e| Placed { t: e.ts, event: e }));
            if !full {
                break;
            }
        }
        out.truncate(query.limit);
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
            .arg(self.grant_key("g", jti))
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }
}

/// The events of the lane `key` from seq `next` on, placed at `min_t` or later and passing
/// `query`, with their places' times, oldest first, at most `query.limit`.
async fn read_lane_at(
    c: &mut Conn,
    key: &str,
    mut next: u64,
    min_t: i64,
    query: &AuditQuery,
) -> Result<Vec<Placed>, StoreError> {
    let stop_ms = query.to_ms.map(|t| t.saturating_add(60_000));
    // Without a field filter every event read is taken: read no more than are wanted.
    let unfiltered = query.event.is_none() && query.subject.is_none() && query.repo.is_none();
    let mut out = Vec::new();
    while out.len() < query.limit {
        let count = if unfiltered {
            (query.limit - out.len()).min(AUDIT_PAGE)
        } else {
            AUDIT_PAGE
        };
        let page: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(key)
            .arg(format!("{next}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(c)
            .await
            .map_err(unavailable)?;
        let full = page.len() == count;
        for (id, fields) in page {
            let mut e = stream_event(&id, &fields)?;
            next = e.seq.saturating_add(1);
            if stop_ms.is_some_and(|s| e.ts > s) {
                return Ok(out);
            }
            let t = fields.get("t").and_then(|t| t.parse().ok()).unwrap_or(e.ts);
            e.id = Some(id);
            // A place before `min_t` after the seek is possible only in a chain written
            // before places were kept (its times may go back): never shown twice.
            if t >= min_t && wanted(query, &e) {
                out.push(Placed { t, event: e });
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

/// The audit event of stream entry `id`.
fn stream_event(id: &str, fields: &HashMap<String, String>) -> Result<AuditEvent, StoreError> {
    let Some(json) = fields.get("e") else {
        return Err(StoreError::Corrupt(format!(
            "audit entry {id} has no event"
        )));
    };
    serde_json::from_str(json)
        .map_err(|err| StoreError::Corrupt(format!("audit entry {id}: {err}")))
}

/// Whether `e` is in `query`'s time range and passes its filters.
fn wanted(query: &AuditQuery, e: &AuditEvent) -> bool {
    query.from_ms.is_none_or(|f| e.ts >= f)
        && query.to_ms.is_none_or(|t| e.ts <= t)
        && query.matches(e)
}

pub(super) fn parse_grant(raw: &str) -> Result<Grant, StoreError> {
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
        let marker = Self::marker_value(grant)?;
        let mut c = self.conn().await?;
        let indexes = self.index_writes(grant, now_ms);
        let mut record = redis::pipe();
        record.atomic();
        if matches!(c, Conn::Cluster(_)) {
            // Indexes first: a record that exists is always listed. If the record then fails,
            // its index entries point at nothing and are dropped when met or at expiry. Each
            // index is its own slot, so its own call.
            try_join_all(indexes.into_iter().map(|p| {
                let mut c = c.clone();
                async move { p.query_async::<()>(&mut c).await }
            }))
            .await
            .map_err(unavailable)?;
        } else {
            // One node: the indexes and the record in one transaction, one round trip (the
            // indexes still come first, and a failure leaves neither).
            for cmd in indexes.iter().flat_map(redis::Pipeline::cmd_iter) {
                record.add_command(cmd.clone()).ignore();
            }
        }
        let _: () = record
            .cmd("SET")
            .arg(self.grant_key("g", &grant.jti))
            .arg(json)
            .arg("PX")
            .arg(remaining)
            .ignore()
            .cmd("SET")
            .arg(self.grant_key("i", &grant.jti))
            .arg(marker)
            .arg("PX")
            .arg(remaining + EXPIRED_MEMORY_SECS * 1000)
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn check(&self, claims: &Claims, now_ms: i64) -> Result<GrantStatus, StoreError> {
        // The grant's record, tombstone, marker and the five watermarks that could revoke it
        // share the bucket's slot: one round trip, whatever the number of grants or
        // revocations.
        let probe = Grant::from_claims(claims, 0);
        let c = self.conn().await?;
        let found = self.lookup(&c, &claims.jti, &probe.dimensions()).await?;
        Ok(match found {
            (Some(g), false, _, _) if !g.describes(claims) => GrantStatus::Unknown,
            (None, false, _, _) if claims.exp.saturating_mul(1000) <= now_ms => {
                GrantStatus::Expired
            }
            found => Self::judge(found, now_ms),
        })
    }

    async fn status(&self, jti: &str, now_ms: i64) -> Result<GrantStatus, StoreError> {
        let c = self.conn().await?;
        let (grant, tomb, issued, _) = self.lookup(&c, jti, &[]).await?;
        let marks = match &grant {
            Some(g) if !tomb => self.lookup(&c, jti, &g.dimensions()).await?.3,
            _ => Vec::new(),
        };
        Ok(Self::judge((grant, tomb, issued, marks), now_ms))
    }

    async fn revoke(&self, target: &RevokeTarget, now_ms: i64) -> Result<Revocation, StoreError> {
        let c = self.admin_conn().await?;
        if let RevokeTarget::Jti(jti) = target {
            let GrantStatus::Live(g) = self.status(jti, now_ms).await? else {
                return Ok(Revocation {
                    at_most: 0,
                    tidy_pending: false,
                });
            };
            let mut conn = c.clone();
            let _: i64 = self
                .revoke_one
                .key(self.grant_key("g", jti))
                .key(self.grant_key("t", jti))
                .invoke_async(&mut conn)
                .await
                .map_err(unavailable)?;
            self.confirm_replicated(&c).await?;
            let member = g.index_member().as_str().to_owned();
            let entries = std::iter::once("all".to_owned())
                .chain(g.index_dimensions())
                .map(|d| (d, member.clone()))
                .collect();
            let queued = self.queue_best_effort(&c, &TidyJob::Drop { entries }).await;
            return Ok(Revocation {
                at_most: 1,
                tidy_pending: queued,
            });
        }
        // In force first: every bucket's copy of the watermark, in parallel.
        let dim = target.dimension();
        self.raise_everywhere(&c, &dim, now_ms).await?;
        self.confirm_replicated(&c).await?;
        let queued = self
            .queue_best_effort(
                &c,
                &TidyJob::Sweep {
                    dim: dim.clone(),
                    upto_ms: now_ms,
                    after: None,
                },
            )
            .await;
        let at_most = self.index_len(&c, &dim).await?;
        Ok(Revocation {
            at_most,
            tidy_pending: queued,
        })
    }

    async fn revoked_before(&self, dims: &[String]) -> Result<Vec<Option<i64>>, StoreError> {
        // Every bucket holds every watermark; the first dimension picks one, so lookups of
        // different people spread over the shards.
        let b = bucket(dims.first().map_or("", String::as_str));
        let mut c = self.conn().await?;
        redis::cmd("HMGET")
            .arg(self.rev_key(b))
            .arg(dims)
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }

    async fn list_page(
        &self,
        filter: &GrantFilter,
        after: Option<&ListCursor>,
        limit: usize,
        now_ms: i64,
    ) -> Result<GrantListing, StoreError> {
        self.grants_page(filter, after, limit, now_ms).await
    }

    async fn tidy_claim(&self, worker: &str, now_ms: i64) -> Result<Option<TidyClaim>, StoreError> {
        self.claim_batch(worker, now_ms).await
    }

    async fn tidy_finish(&self, claim: TidyClaim, now_ms: i64) -> Result<TidyProgress, StoreError> {
        self.finish_batch(claim, now_ms).await
    }

    async fn tidy_pending(&self) -> Result<u64, StoreError> {
        self.jobs_pending().await
    }

    async fn audit_head(&self, chain: &str) -> Result<Option<ChainHead>, StoreError> {
        let mut c = self.conn().await?;
        let head: Option<String> = redis::cmd("GET")
            .arg(self.audit_head_key(chain))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        head.map(|h| {
            ChainHead::decode(&h).ok_or_else(|| StoreError::Corrupt(format!("audit head {h:?}")))
        })
        .transpose()
    }

    async fn join_audit(&self, replica: &str, start: &ChainHead) -> Result<(), StoreError> {
        if replica == LEGACY_CHAIN {
            return Err(StoreError::Invalid("a replica chain needs a name"));
        }
        let mut c = self.conn().await?;
        // Two slots (the roster's and the chain's): the roster first, so a chain that has a
        // head is always listed.
        let _: i64 = redis::cmd("SADD")
            .arg(self.audit_roster_key())
            .arg(replica)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let _: Option<String> = redis::cmd("SET")
            .arg(self.audit_head_key(replica))
            .arg(start.encode())
            .arg("NX")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn audit_replicas(&self) -> Result<Vec<String>, StoreError> {
        let mut c = self.conn().await?;
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.audit_roster_key())
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        names.sort();
        Ok(names)
    }

    async fn append_sealed(
        &self,
        chain: &str,
        events: &[Sealed],
        expected_head_seq: u64,
        head: &ChainHead,
    ) -> Result<bool, StoreError> {
        let Some(newest) = events.iter().map(|s| s.event.ts).max() else {
            return Ok(true);
        };
        let r = &self.retention;
        let mut invocation = self.append.prepare_invoke();
        invocation
            .key(self.audit_lane_key(chain, Lane::Evidence))
            .key(self.audit_head_key(chain))
            .key(self.audit_lane_key(chain, Lane::Traffic))
            .key(self.audit_bytes_key(chain))
            .key(self.audit_before_key(chain, Lane::Evidence))
            .key(self.audit_before_key(chain, Lane::Traffic))
            .arg(expected_head_seq)
            .arg(head.encode())
            .arg(newest);
        for b in [&r.evidence, &r.traffic] {
            invocation
                .arg(b.max_events)
                .arg(b.max_bytes)
                .arg(b.max_age_ms);
        }
        for Sealed { event, line } in events {
            let lane = match lane_of(event) {
                Lane::Evidence => 1,
                Lane::Traffic => 2,
            };
            invocation
                .arg(lane)
                .arg(event.seq)
                .arg(line.as_str())
                .arg(event.ts.max(0));
        }
        let mut c = self.conn().await?;
        let appended: i64 = invocation.invoke_async(&mut c).await.map_err(unavailable)?;
        Ok(appended == 1)
    }

    async fn read_chain(
        &self,
        chain: &str,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let (evidence_now, traffic_now) = tokio::try_join!(
            self.read_lane(chain, Lane::Evidence, query),
            self.read_lane(chain, Lane::Traffic, query),
        )?;
        if chain != LEGACY_CHAIN {
            return Ok(merge_by_seq(evidence_now, traffic_now, query.limit));
        }
        let (mut evidence, mut traffic) = tokio::try_join!(
            self.read_before(Lane::Evidence, query),
            self.read_before(Lane::Traffic, query),
        )?;
        // Everything written before seq ids precedes everything written since, lane by lane.
        evidence.extend(evidence_now);
        traffic.extend(traffic_now);
        Ok(merge_by_seq(evidence, traffic, query.limit))
    }

    async fn read_chain_from(
        &self,
        chain: &str,
        start: ChainStart,
        query: &AuditQuery,
    ) -> Result<Vec<Placed>, StoreError> {
        if chain == LEGACY_CHAIN {
            return self.read_legacy_from(start, query).await;
        }
        let (evidence, traffic) = tokio::try_join!(
            self.read_lane_from(chain, Lane::Evidence, start, query),
            self.read_lane_from(chain, Lane::Traffic, start, query),
        )?;
        Ok(merge_placed(evidence, traffic, query.limit))
    }

    async fn audit_chains(&self, at_least: i64) -> Result<AuditChains, StoreError> {
        self.chains_at(at_least).await
    }

    async fn mark_audit_span(&self, chain: &str, since: i64, until: i64) -> Result<(), StoreError> {
        self.mark_span(chain, since, until).await
    }

    async fn audit_extent(&self, chain: &str) -> Result<Option<(i64, i64)>, StoreError> {
        self.extent_of(chain).await
    }

    #[cfg(any(test, feature = "test-suite"))]
    async fn damage_audit(&self, damage: &super::Damage) -> Result<(), StoreError> {
        use super::Damage;
        let mut c = self.conn().await?;
        match damage {
            Damage::DropSpan(name) => self.drop_span(name).await?,
            Damage::DropChain(name) | Damage::DropRetired(name) => {
                for key in self.audit_chain_keys(name) {
                    let _: i64 = redis::cmd("DEL")
                        .arg(key)
                        .query_async(&mut c)
                        .await
                        .map_err(unavailable)?;
                }
                if matches!(damage, Damage::DropRetired(_)) {
                    let _: i64 = redis::cmd("SREM")
                        .arg(self.audit_roster_key())
                        .arg(name)
                        .query_async(&mut c)
                        .await
                        .map_err(unavailable)?;
                }
            }
            Damage::DropNewest(name) => {
                let mut newest: Option<(u64, String, String)> = None;
                for lane in Lane::ALL {
                    let key = self.audit_lane_key(name, lane);
                    let last: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
                        .arg(&key)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut c)
                        .await
                        .map_err(unavailable)?;
                    if let Some((id, _)) = last.into_iter().next() {
                        let seq = id
                            .split('-')
                            .next()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0);
                        if newest.as_ref().is_none_or(|(s, _, _)| seq > *s) {
                            newest = Some((seq, key, id));
                        }
                    }
                }
                if let Some((_, key, id)) = newest {
                    let _: i64 = redis::cmd("XDEL")
                        .arg(key)
                        .arg(id)
                        .query_async(&mut c)
                        .await
                        .map_err(unavailable)?;
                }
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn probe(&self) -> Result<String, StoreError> {
        let mut c = self.conn().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let wrong = |why: String| StoreError::Unavailable(why);
        if matches!(self.topology, Topology::Cluster(_)) {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut c)
                .await
                .map_err(unavailable)?;
            return match info_field(&info, "cluster_state") {
                Some("ok") => Ok(format!(
                    "a Redis Cluster of {} masters, state ok",
                    info_field(&info, "cluster_size").unwrap_or("?")
                )),
                state => Err(wrong(format!(
                    "the cluster is not healthy (cluster_state:{})",
                    state.unwrap_or("unknown")
                ))),
            };
        }
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        if info_field(&info, "cluster_enabled") == Some("1") {
            return Err(wrong(
                "the server is a Redis Cluster node: list the cluster's nodes in store.cluster"
                    .into(),
            ));
        }
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        match info_field(&info, "role") {
            Some("master") => Ok("a Redis primary".to_owned()),
            role => Err(wrong(format!(
                "the server is a read-only replica (role:{}): the broker writes; give the primary",
                role.unwrap_or("unknown")
            ))),
        }
    }

    fn requests(&self) -> &dyn super::RequestStore {
        self
    }

    fn sessions(&self) -> &dyn super::SessionStore {
        self
    }
}

/// The value of `field` in an `INFO` / `CLUSTER INFO` reply (`field:value` lines).
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .find(|(k, _)| *k == field)
        .map(|(_, v)| v)
}
