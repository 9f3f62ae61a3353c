//! Console sessions and sign-ins in progress, kept in the store so that every replica behind
//! a load balancer sees the same ones: a session begun on one replica works on all, and
//! logout (or a revocation that ends it) ends it everywhere at once.
//!
//! The store never sees a cookie's id: records are keyed by the hex SHA-256 of the 256-bit
//! id (and of a login's `state`), so reading the store does not give anyone a session. A
//! record's body is opaque here (the console's JSON: who signed in and the session's CSRF
//! token, or a login's nonce and PKCE verifier). Liveness is decided from stored timestamps
//! and the `now_ms` the caller passes (30 minutes idle, 8 hours in all, 10 minutes for a
//! login); store TTLs only clear away what has ended.
//!
//! Both kinds are bounded. Logins, which anyone may start, are capped at [`MAX_LOGINS`]; a
//! full book drops its oldest login, so a flood of unfinished sign-ins cannot lock the admins
//! out. Sessions, which only an admin or approver who passed the IdP can make, are bounded by
//! their idle lifetime (a TTL-bounded key space on Redis) and, in memory, by
//! [`MAX_SESSIONS`], past which a new session is refused rather than a live one evicted.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::StoreError;

/// A session ends after this long without a request.
pub const IDLE_MS: i64 = 30 * 60 * 1000;
/// A session ends this long after sign-in, however busy.
pub const ABSOLUTE_MS: i64 = 8 * 3600 * 1000;
/// A login must come back from the IdP within this long.
pub const LOGIN_MS: i64 = 10 * 60 * 1000;
/// Most sessions the memory store holds at once.
pub const MAX_SESSIONS: usize = 10_000;
/// Most logins in progress at once.
pub const MAX_LOGINS: usize = 1_000;

/// A live session as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// The console's record, opaque to the store.
    pub body: String,
    /// When it began (ms).
    pub created_ms: i64,
    /// The last use counted (ms).
    pub last_ms: i64,
}

impl StoredSession {
    /// Whether the session is live at `now_ms`.
    pub fn live_at(&self, now_ms: i64) -> bool {
        now_ms - self.last_ms < IDLE_MS && now_ms - self.created_ms < ABSOLUTE_MS
    }

    /// How long the store should keep it from `now_ms`: until idle or absolute end, whichever
    /// comes first (at least 1 ms).
    pub fn keep_ms(&self, now_ms: i64) -> i64 {
        (self.last_ms + IDLE_MS)
            .min(self.created_ms + ABSOLUTE_MS)
            .saturating_sub(now_ms)
            .max(1)
    }
}

/// Where console sessions and logins in progress live. Keys are hex SHA-256 digests.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Keeps a new session under `key` with `body`, begun at `now_ms`; `Ok(false)`, keeping
    /// nothing, when the key is taken or the store holds as many live sessions as it may.
    async fn create_session(&self, key: &str, body: &str, now_ms: i64) -> Result<bool, StoreError>;

    /// The session under `key` if live at `now_ms`; with `touch`, its use at `now_ms` is
    /// recorded (the idle clock restarts). An ended one is dropped.
    async fn session(
        &self,
        key: &str,
        touch: bool,
        now_ms: i64,
    ) -> Result<Option<StoredSession>, StoreError>;

    /// Ends the session under `key`; what it was, if it was live.
    async fn end_session(
        &self,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<StoredSession>, StoreError>;

    /// Keeps a login in progress under `key`, begun at `now_ms`; a full book drops its oldest.
    async fn begin_login(&self, key: &str, body: &str, now_ms: i64) -> Result<(), StoreError>;

    /// Takes the login under `key` (once), if it began less than [`LOGIN_MS`] before `now_ms`.
    async fn take_login(&self, key: &str, now_ms: i64) -> Result<Option<String>, StoreError>;
}

/// The in-process [`SessionStore`] of the memory store.
#[derive(Debug, Default)]
pub struct SessionBook {
    sessions: Mutex<HashMap<String, StoredSession>>,
    /// key → (body, begun ms).
    logins: Mutex<HashMap<String, (String, i64)>>,
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, StoreError> {
    m.lock()
        .map_err(|_| StoreError::Unavailable("session book lock poisoned".into()))
}

#[async_trait]
impl SessionStore for SessionBook {
    async fn create_session(&self, key: &str, body: &str, now_ms: i64) -> Result<bool, StoreError> {
        let mut table = lock(&self.sessions)?;
        if table.len() >= MAX_SESSIONS {
            table.retain(|_, s| s.live_at(now_ms));
        }
        if table.len() >= MAX_SESSIONS || table.contains_key(key) {
            return Ok(false);
        }
        table.insert(
            key.to_owned(),
            StoredSession {
                body: body.to_owned(),
                created_ms: now_ms,
                last_ms: now_ms,
            },
        );
        Ok(true)
    }

    async fn session(
        &self,
        key: &str,
        touch: bool,
        now_ms: i64,
    ) -> Result<Option<StoredSession>, StoreError> {
        let mut table = lock(&self.sessions)?;
        let Some(s) = table.get_mut(key) else {
            return Ok(None);
        };
        if !s.live_at(now_ms) {
            table.remove(key);
            return Ok(None);
        }
        if touch {
            s.last_ms = s.last_ms.max(now_ms);
        }
        Ok(Some(s.clone()))
    }

    async fn end_session(
        &self,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<StoredSession>, StoreError> {
        Ok(lock(&self.sessions)?
            .remove(key)
            .filter(|s| s.live_at(now_ms)))
    }

    async fn begin_login(&self, key: &str, body: &str, now_ms: i64) -> Result<(), StoreError> {
        let mut table = lock(&self.logins)?;
        if table.len() >= MAX_LOGINS {
            table.retain(|_, (_, begun)| now_ms - *begun < LOGIN_MS);
        }
        while table.len() >= MAX_LOGINS {
            let Some(oldest) = table
                .iter()
                .min_by_key(|(_, (_, begun))| *begun)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            table.remove(&oldest);
        }
        table.insert(key.to_owned(), (body.to_owned(), now_ms));
        Ok(())
    }

    async fn take_login(&self, key: &str, now_ms: i64) -> Result<Option<String>, StoreError> {
        Ok(lock(&self.logins)?
            .remove(key)
            .filter(|(_, begun)| now_ms - *begun < LOGIN_MS)
            .map(|(body, _)| body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_book_refuses_rather_than_evicting_live_sessions() {
        let book = SessionBook::default();
        for i in 0..MAX_SESSIONS {
            assert!(
                book.create_session(&format!("k{i}"), "b", 0)
                    .await
                    .expect("room")
            );
        }
        assert!(
            !book
                .create_session("one-more", "b", 1)
                .await
                .expect("answer")
        );
        assert!(
            book.session("k0", false, 1)
                .await
                .expect("answer")
                .is_some()
        );
        assert!(
            book.create_session("later", "b", IDLE_MS)
                .await
                .expect("answer"),
            "ended sessions make room"
        );
    }

    #[tokio::test]
    async fn the_login_book_never_grows_past_its_bound() {
        let book = SessionBook::default();
        for i in 0..MAX_LOGINS + 50 {
            let at = i64::try_from(i).expect("small");
            book.begin_login(&format!("k{i}"), "b", at)
                .await
                .expect("begin");
        }
        assert_eq!(book.logins.lock().expect("lock").len(), MAX_LOGINS);
    }
}
