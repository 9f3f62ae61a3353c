//! The production store on Redis (single node or Redis Cluster).
//!
//! Grants, their indexes, watermarks and tidy queue: see [`super::redis_grants`] (key layout
//! and its Redis Cluster trade-off). Audit keys (`P` is the configured prefix):
//! - `P:{audit}` the evidence lane of the audit trail (grants, revocations, admin actions)
//!   and `P:{audit}:traffic` its traffic lane (accesses, refusals), two streams each trimmed
//!   by its own budget of events, bytes and age ([`AuditRetention`]); `P:{audit}:bytes` the
//!   bytes of event JSON each lane holds; `P:{audit}:head` the chain head
//!   (`seq evidence-hash traffic-hash`). One script changes them together (compare-and-set).
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
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use tokio::sync::OnceCell;

use super::redis_grants::bucket;
use super::{
    AuditRetention, EXPIRED_MEMORY_SECS, Grant, GrantFilter, GrantListing, GrantStatus, GrantStore,
    ListCursor, Revocation, RevokeTarget, StoreError, TidyJob, TidyProgress, lane_of, merge_by_seq,
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

/// Moves the tidy queue on if its head is still the job just worked (another replica may
/// have done it already): replaces it with its progress, or pops it when ARGV[2] is empty.
/// KEYS: queue. ARGV: the job worked, its replacement. Returns the jobs left.
const ADVANCE_JOB: &str = r"
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then
  if ARGV[2] == '' then redis.call('LPOP', KEYS[1]) else redis.call('LSET', KEYS[1], 0, ARGV[2]) end
end
return redis.call('LLEN', KEYS[1])
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

/// A connection to a single node or a cluster.
#[derive(Clone)]
pub(super) enum Conn {
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
    /// Admin and background work's own connection.
    admin: OnceCell<Conn>,
    pub(super) prefix: String,
    retention: AuditRetention,
    pub(super) raise: redis::Script,
    revoke_one: redis::Script,
    pub(super) advance: redis::Script,
    append: redis::Script,
}

pub(super) fn unavailable(e: RedisError) -> StoreError {
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
            admin: OnceCell::new(),
            prefix: prefix.into(),
            retention: AuditRetention::with_max_events(audit_max),
            raise: redis::Script::new(RAISE_WATERMARK),
            revoke_one: redis::Script::new(REVOKE_ONE),
            advance: redis::Script::new(ADVANCE_JOB),
            append: redis::Script::new(APPEND_AUDIT),
        }
    }

    /// The same store keeping what `retention` says of each audit lane.
    pub fn with_retention(mut self, retention: AuditRetention) -> Self {
        self.retention = retention;
        self
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        Ok(self.conn.get_or_try_init(|| self.connect()).await?.clone())
    }

    /// The connection of admin and background work (listings, revocations, tidying).
    pub(super) async fn admin_conn(&self) -> Result<Conn, StoreError> {
        Ok(self.admin.get_or_try_init(|| self.connect()).await?.clone())
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
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
                let c = tokio::time::timeout(CONNECT_TIMEOUT * 2, client.get_async_connection())
                    .await
                    .map_err(|_| StoreError::Unavailable("timed out connecting".into()))?
                    .map_err(unavailable)?;
                Ok(Conn::Cluster(c))
            }
        }
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
            .arg(self.grant_key("g", jti))
            .query_async(&mut c)
            .await
            .map_err(unavailable)
    }
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
        let c = self.conn().await?;
        // Indexes first: a record that exists is always listed. If the record then fails,
        // its index entries point at nothing and are dropped when met or at expiry.
        try_join_all(self.index_writes(grant, now_ms).into_iter().map(|p| {
            let mut c = c.clone();
            async move { p.query_async::<()>(&mut c).await }
        }))
        .await
        .map_err(unavailable)?;
        let mut c = c;
        let _: () = redis::pipe()
            .atomic()
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

    async fn tidy(&self, now_ms: i64) -> Result<TidyProgress, StoreError> {
        self.tidy_batch(now_ms).await
    }

    async fn tidy_pending(&self) -> Result<u64, StoreError> {
        self.jobs_pending().await
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
