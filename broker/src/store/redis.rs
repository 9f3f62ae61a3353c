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
//! - `P:{audit}` the evidence lane of the audit trail (grants, revocations, admin actions)
//!   and `P:{audit}:traffic` its traffic lane (accesses, refusals), two streams each trimmed
//!   by its own budget of events, bytes and age ([`AuditRetention`]); `P:{audit}:bytes` the
//!   bytes of event JSON each lane holds; `P:{audit}:head` the chain head
//!   (`seq evidence-hash traffic-hash`). One script changes them together (compare-and-set).
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
/// KEYS: evidence stream, head, traffic stream, bytes hash. ARGV: expected seq, new head,
/// newest event time (ms), the evidence budget (events, bytes, age ms), the traffic budget,
/// then (lane 1|2, preferred id, event JSON) triples, oldest first.
/// At most `MAX_TRIM` events are trimmed per lane per append, so a script stays short; a lane
/// over budget (after the budget was lowered) shrinks over the next appends.
const APPEND_AUDIT: &str = r"
local MAX_TRIM = 2048
local head = redis.call('GET', KEYS[2])
local seq = 0
if head then seq = tonumber(string.match(head, '^(%d+)')) end
if seq ~= tonumber(ARGV[1]) then return 0 end
local streams = {KEYS[1], KEYS[3]}
local fields = {'evidence', 'traffic'}
local added = {0, 0}
for i = 10, #ARGV, 3 do
  local lane = tonumber(ARGV[i])
  local ok = redis.pcall('XADD', streams[lane], ARGV[i + 1], 'e', ARGV[i + 2])
  if type(ok) == 'table' and ok.err then
    redis.call('XADD', streams[lane], '*', 'e', ARGV[i + 2])
  end
  added[lane] = added[lane] + #ARGV[i + 2]
end
redis.call('SET', KEYS[2], ARGV[2])
local newest = tonumber(ARGV[3])
for lane = 1, 2 do
  local key = streams[lane]
  local base = 4 + (lane - 1) * 3
  local max_events = tonumber(ARGV[base])
  local max_bytes = tonumber(ARGV[base + 1])
  local oldest_kept = newest - tonumber(ARGV[base + 2])
  local bytes = redis.call('HINCRBY', KEYS[4], fields[lane], added[lane])
  local len = redis.call('XLEN', key)
  local removed = 0
  local over = function(id)
    return len > max_events or bytes > max_bytes or tonumber(string.match(id, '^(%d+)')) < oldest_kept
  end
  local count = 1
  while removed < MAX_TRIM and len > 0 do
    local page = redis.call('XRANGE', key, '-', '+', 'COUNT', count)
    local ids = {}
    for _, entry in ipairs(page) do
      if not over(entry[1]) then break end
      ids[#ids + 1] = entry[1]
      bytes = bytes - #entry[2][2]
      len = len - 1
    end
    if #ids == 0 then break end
    redis.call('XDEL', key, unpack(ids))
    removed = removed + #ids
    if #ids < #page then break end
    count = 64
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

    fn audit_lane_key(&self, lane: Lane) -> String {
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

    /// One lane's events passing `query`, oldest first, at most `query.limit`.
    async fn read_lane(
        &self,
        lane: Lane,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let key = self.audit_lane_key(lane);
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
            .key(self.audit_key())
            .key(self.audit_head_key())
            .key(self.audit_lane_key(Lane::Traffic))
            .key(self.audit_bytes_key())
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
            // The id carries the event's own time so that time-range reads are XRANGE reads;
            // if another replica's clock ran ahead, the script falls back to the next id.
            invocation
                .arg(lane)
                .arg(format!("{}-*", event.ts.max(0)))
                .arg(json);
        }
        let mut c = self.conn().await?;
        let appended: i64 = invocation.invoke_async(&mut c).await.map_err(unavailable)?;
        Ok(appended == 1)
    }

    async fn read_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let (evidence, traffic) = tokio::try_join!(
            self.read_lane(Lane::Evidence, query),
            self.read_lane(Lane::Traffic, query)
        )?;
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
