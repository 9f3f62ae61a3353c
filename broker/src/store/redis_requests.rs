//! Approval requests on Redis. Keys (`P` is the configured prefix), all in one hash slot
//! (`{req}`) so each change is one script: requests are filed and decided by people, a few per
//! minute even in a large organisation, so one shard carries them easily.
//! - `P:{req}:r:<id>` the request as JSON, expiring when it no longer matters
//!   ([`ApprovalRequest::keep_until_ms`]);
//! - `P:{req}:ix` the listing index: sorted set of `<created ms>:<id>` members, read newest
//!   first with `ZREVRANGEBYLEX … LIMIT`;
//! - `P:{req}:due` requests pending in the store, scored by deadline, for the expiry sweep;
//! - `P:{req}:ask:<sha256>` the latest request of one requester's identical ask;
//! - `P:{req}:poll:<id>` present while the last accepted poll is younger than the interval.
//!
//! Index entries whose records expired are dropped when a page meets them and, in bulk, when
//! a request is filed (everything older than any record can be).

use std::sync::LazyLock;

use async_trait::async_trait;
use jit_proto::approval::{RequestId, RequestState};
use sha2::{Digest, Sha256};

use super::StoreError;
use super::page::IndexMember;
use super::redis::{RedisStore, unavailable};
use super::requests::{ApprovalRequest, KEEP_MS, MAX_PAGE, RequestSlice, RequestStore};

/// Files a request if the ask's latest is still the expected one.
/// KEYS: record, index, due, ask. ARGV: JSON, member, deadline ms, id, expected latest ('' for
/// none), keep ms, index entries older than this member are dropped, pending (1|0).
static FILE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if (redis.call('GET', KEYS[4]) or '') ~= ARGV[5] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('request id already filed') end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[6])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
if ARGV[8] == '1' then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4]) end
redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[6])
redis.call('ZREMRANGEBYLEX', KEYS[2], '-', '(' .. ARGV[7])
return 1
",
    )
});

/// Replaces a request if its stored version is the expected one.
/// KEYS: record, due. ARGV: JSON, expected version, id, keep ms, final (1|0).
static REPLACE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local stored = cjson.decode(cur)
if tostring(stored['version']) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
if ARGV[5] == '1' then redis.call('ZREM', KEYS[2], ARGV[3]) end
return 1
",
    )
});

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("approval request: {e}"))
}

fn encode(r: &ApprovalRequest) -> Result<String, StoreError> {
    serde_json::to_string(r).map_err(|e| StoreError::Corrupt(format!("approval request: {e}")))
}

fn keep_ms(r: &ApprovalRequest, now_ms: i64) -> i64 {
    r.keep_until_ms().saturating_sub(now_ms).max(1)
}

impl RedisStore {
    fn req_key(&self, part: &str) -> String {
        format!("{}:{{req}}:{part}", self.prefix)
    }

    fn ask_key(&self, ask: &str) -> String {
        self.req_key(&format!(
            "ask:{}",
            hex::encode(Sha256::digest(ask.as_bytes()))
        ))
    }
}

#[async_trait]
impl RequestStore for RedisStore {
    async fn file(
        &self,
        r: &ApprovalRequest,
        ask: &str,
        expected_latest: Option<&RequestId>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        // Nothing filed before this can still be kept: the longest a record lives.
        let horizon = now_ms.saturating_sub(KEEP_MS + 2 * 24 * 3600 * 1000);
        let mut c = self.admin_conn().await?;
        let filed: i64 = FILE
            .key(self.req_key(&format!("r:{}", r.id)))
            .key(self.req_key("ix"))
            .key(self.req_key("due"))
            .key(self.ask_key(ask))
            .arg(encode(r)?)
            .arg(r.index_member().as_str())
            .arg(r.expires_ms)
            .arg(r.id.as_str())
            .arg(expected_latest.map_or("", RequestId::as_str))
            .arg(keep_ms(r, now_ms))
            .arg(IndexMember::first_after_ms(horizon).as_str())
            .arg(if r.state == RequestState::Pending {
                "1"
            } else {
                "0"
            })
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(filed == 1)
    }

    async fn latest(&self, ask: &str, _now_ms: i64) -> Result<Option<RequestId>, StoreError> {
        let mut c = self.admin_conn().await?;
        let id: Option<String> = redis::cmd("GET")
            .arg(self.ask_key(ask))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        id.map(|i| {
            RequestId::parse(&i).map_err(|e| StoreError::Corrupt(format!("latest request: {e}")))
        })
        .transpose()
    }

    async fn get(
        &self,
        id: &RequestId,
        _now_ms: i64,
    ) -> Result<Option<ApprovalRequest>, StoreError> {
        let mut c = self.admin_conn().await?;
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.req_key(&format!("r:{id}")))
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        raw.map(|j| serde_json::from_str(&j).map_err(corrupt))
            .transpose()
    }

    async fn replace(&self, r: &ApprovalRequest, now_ms: i64) -> Result<bool, StoreError> {
        let Some(expected) = r.version.checked_sub(1) else {
            return Ok(false);
        };
        let mut c = self.admin_conn().await?;
        let replaced: i64 = REPLACE
            .key(self.req_key(&format!("r:{}", r.id)))
            .key(self.req_key("due"))
            .arg(encode(r)?)
            .arg(expected.to_string())
            .arg(r.id.as_str())
            .arg(keep_ms(r, now_ms))
            .arg(if r.state.is_final() { "1" } else { "0" })
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(replaced == 1)
    }

    async fn page(
        &self,
        before: Option<&IndexMember>,
        limit: usize,
        _now_ms: i64,
    ) -> Result<RequestSlice, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let mut c = self.admin_conn().await?;
        let upper = before.map_or_else(|| "+".to_owned(), |m| format!("({}", m.as_str()));
        let raw: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
            .arg(self.req_key("ix"))
            .arg(upper)
            .arg("-")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let members: Vec<IndexMember> = raw.iter().filter_map(|m| IndexMember::parse(m)).collect();
        let keys: Vec<String> = members
            .iter()
            .map(|m| self.req_key(&format!("r:{}", m.jti())))
            .collect();
        let records: Vec<Option<String>> = if keys.is_empty() {
            Vec::new()
        } else {
            redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut c)
                .await
                .map_err(unavailable)?
        };
        let mut requests = Vec::with_capacity(records.len());
        let mut gone = Vec::new();
        for (m, record) in members.iter().zip(records) {
            match record {
                Some(j) => requests.push(serde_json::from_str(&j).map_err(corrupt)?),
                None => gone.push(m.as_str().to_owned()),
            }
        }
        if !gone.is_empty() {
            // Best effort: a failure leaves entries the next page drops.
            let _: Result<i64, _> = redis::cmd("ZREM")
                .arg(self.req_key("ix"))
                .arg(&gone)
                .query_async(&mut c)
                .await;
        }
        let next = (raw.len() == limit)
            .then(|| raw.last().and_then(|m| IndexMember::parse(m)))
            .flatten();
        Ok(RequestSlice { requests, next })
    }

    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<RequestId>, StoreError> {
        let mut c = self.admin_conn().await?;
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.req_key("due"))
            .arg("-inf")
            .arg(now_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::with_capacity(ids.len());
        for i in ids {
            match RequestId::parse(&i) {
                Ok(id) => out.push(id),
                Err(_) => {
                    let _: Result<i64, _> = redis::cmd("ZREM")
                        .arg(self.req_key("due"))
                        .arg(&i)
                        .query_async(&mut c)
                        .await;
                }
            }
        }
        Ok(out)
    }

    async fn drop_due(&self, id: &RequestId) -> Result<(), StoreError> {
        let mut c = self.admin_conn().await?;
        redis::cmd("ZREM")
            .arg(self.req_key("due"))
            .arg(id.as_str())
            .query_async::<i64>(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn poll(
        &self,
        id: &RequestId,
        interval_ms: i64,
        _now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut c = self.admin_conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.req_key(&format!("poll:{id}")))
            .arg(1)
            .arg("PX")
            .arg(interval_ms.max(1))
            .arg("NX")
            .query_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(set.is_some())
    }
}
