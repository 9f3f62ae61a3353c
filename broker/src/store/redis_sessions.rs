//! Console sessions and logins in progress on Redis (see [`super::sessions`]). Keys (`P` is
//! the configured prefix; `<key>` the hex SHA-256 of the cookie's id or the login's state):
//! - `P:console:s:<key>` one session: a hash of `body`, `created` and `last` (ms), expiring
//!   when it would end idle or at its absolute limit, whichever comes first (so the key
//!   space is bounded by how many people signed in in the last 30 minutes);
//! - `P:{console}:logins` logins in progress: a sorted set of keys scored by start time,
//!   capped at [`MAX_LOGINS`] (the oldest dropped first), and `P:{console}:login` their
//!   bodies, in one hash slot so each change is one script.
//!
//! Every check is against stored timestamps and the caller's `now_ms`, like the memory store;
//! each change is one script, so two replicas never see half a change.

use std::sync::LazyLock;

use async_trait::async_trait;

use super::StoreError;
use super::redis::{RedisStore, unavailable};
use super::sessions::{ABSOLUTE_MS, IDLE_MS, LOGIN_MS, MAX_LOGINS, SessionStore, StoredSession};

/// KEYS: session. ARGV: body, now ms, keep ms.
static CREATE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'body', ARGV[1], 'created', ARGV[2], 'last', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
",
    )
});

/// The session if live. KEYS: session. ARGV: now ms, mode (`touch`: its use recorded;
/// `peek`; `end`: deleted), idle ms, absolute ms. Answers body, created, last.
static SESSION: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local v = redis.call('HMGET', KEYS[1], 'body', 'created', 'last')
if ARGV[2] == 'end' then redis.call('DEL', KEYS[1]) end
if not v[1] then return false end
local now, created, last = tonumber(ARGV[1]), tonumber(v[2]), tonumber(v[3])
if not created or not last or now - last >= tonumber(ARGV[3])
   or now - created >= tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
  return false
end
if ARGV[2] == 'touch' and now > last then
  redis.call('HSET', KEYS[1], 'last', ARGV[1])
  local keep = math.min(now + tonumber(ARGV[3]), created + tonumber(ARGV[4])) - now
  redis.call('PEXPIRE', KEYS[1], math.max(keep, 1))
  return {v[1], v[2], ARGV[1]}
end
return {v[1], v[2], v[3]}
",
    )
});

/// KEYS: logins index, login bodies. ARGV: key, body, now ms, login ms, most logins.
static BEGIN_LOGIN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local now, life = tonumber(ARGV[3]), tonumber(ARGV[4])
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - life)
for _, k in ipairs(old) do redis.call('HDEL', KEYS[2], k) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - life)
redis.call('ZREM', KEYS[1], ARGV[1])
while redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) do
  local first = redis.call('ZPOPMIN', KEYS[1])
  if #first == 0 then break end
  redis.call('HDEL', KEYS[2], first[1])
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], life)
redis.call('PEXPIRE', KEYS[2], life)
return 1
",
    )
});

/// Takes a login once; answers its body if still fresh. KEYS: logins index, login bodies.
/// ARGV: key, now ms, login ms.
static TAKE_LOGIN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local begun = redis.call('ZSCORE', KEYS[1], ARGV[1])
local body = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if not begun or not body then return false end
if tonumber(ARGV[2]) - tonumber(begun) >= tonumber(ARGV[3]) then return false end
return body
",
    )
});

impl RedisStore {
    fn session_key(&self, key: &str) -> String {
        format!("{}:console:s:{key}", self.prefix)
    }

    /// Runs [`SESSION`] on `key` in `mode` (`touch`, `peek` or `end`).
    async fn session_script(
        &self,
        key: &str,
        mode: &str,
        now_ms: i64,
    ) -> Result<Option<StoredSession>, StoreError> {
        let mut c = self.admin_conn().await?;
        let v: Option<Vec<String>> = SESSION
            .key(self.session_key(key))
            .arg(now_ms)
            .arg(mode)
            .arg(IDLE_MS)
            .arg(ABSOLUTE_MS)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        stored(v)
    }

    fn login_keys(&self) -> (String, String) {
        (
            format!("{}:{{console}}:logins", self.prefix),
            format!("{}:{{console}}:login", self.prefix),
        )
    }
}

/// A session from a script's `{body, created, last}`.
fn stored(v: Option<Vec<String>>) -> Result<Option<StoredSession>, StoreError> {
    let Some(v) = v else { return Ok(None) };
    let bad = || StoreError::Corrupt("console session record".into());
    let [body, created, last] = <[String; 3]>::try_from(v).map_err(|_| bad())?;
    Ok(Some(StoredSession {
        body,
        created_ms: created.parse().map_err(|_| bad())?,
        last_ms: last.parse().map_err(|_| bad())?,
    }))
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create_session(&self, key: &str, body: &str, now_ms: i64) -> Result<bool, StoreError> {
        let mut c = self.admin_conn().await?;
        let made: i64 = CREATE
            .key(self.session_key(key))
            .arg(body)
            .arg(now_ms)
            .arg(IDLE_MS.min(ABSOLUTE_MS))
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(made == 1)
    }

    async fn session(
        &self,
        key: &str,
        touch: bool,
        now_ms: i64,
    ) -> Result<Option<StoredSession>, StoreError> {
        let mode = if touch { "touch" } else { "peek" };
        self.session_script(key, mode, now_ms).await
    }

    async fn end_session(
        &self,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<StoredSession>, StoreError> {
        self.session_script(key, "end", now_ms).await
    }

    async fn begin_login(&self, key: &str, body: &str, now_ms: i64) -> Result<(), StoreError> {
        let (index, bodies) = self.login_keys();
        let mut c = self.admin_conn().await?;
        let _: i64 = BEGIN_LOGIN
            .key(index)
            .key(bodies)
            .arg(key)
            .arg(body)
            .arg(now_ms)
            .arg(LOGIN_MS)
            .arg(MAX_LOGINS)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take_login(&self, key: &str, now_ms: i64) -> Result<Option<String>, StoreError> {
        let (index, bodies) = self.login_keys();
        let mut c = self.admin_conn().await?;
        TAKE_LOGIN
            .key(index)
            .key(bodies)
            .arg(key)
            .arg(now_ms)
            .arg(LOGIN_MS)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)
    }
}
