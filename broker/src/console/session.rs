//! Console sessions, kept server-side in this process: a table keyed by the SHA-256 of a
//! 256-bit random id (the cookie holds the id; a memory dump of the table does not), each
//! with its own CSRF token, ended after 30 idle minutes, 8 hours in all, or at logout. Logins
//! in progress (state, nonce, PKCE verifier) are kept the same way for 10 minutes.
//!
//! Sessions are per replica: behind a load balancer, use sticky sessions or sign in again on
//! another replica. Both tables are bounded; when full, expired entries are dropped first; a
//! new session is then refused rather than evicting a live one, while a new login (which
//! anyone may start) evicts the oldest unfinished login.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::clock::Clock;

/// A session ends after this long without a request.
pub const IDLE_MS: i64 = 30 * 60 * 1000;
/// A session ends this long after sign-in, however busy.
pub const ABSOLUTE_MS: i64 = 8 * 3600 * 1000;
/// A login must come back from the IdP within this long.
pub const LOGIN_MS: i64 = 10 * 60 * 1000;
/// Most sessions held at once.
pub const MAX_SESSIONS: usize = 10_000;
/// Most logins in progress at once.
pub const MAX_LOGINS: usize = 1_000;

/// Why a session or login could not be started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    /// The system's random generator failed.
    #[error("the random generator failed")]
    Random,
    /// The table is full of live entries.
    #[error("too many {0} at once; try again later")]
    Full(&'static str),
}

/// The signed-in person, as verified at login.
#[derive(Debug, Clone)]
pub struct Who {
    /// The verified subject.
    pub subject: String,
    /// The issuer's configured name.
    pub idp: String,
    /// The ID token's verified claims (for approval rules).
    pub claims: Map<String, Value>,
    /// When the ID token was issued (seconds), when it said.
    pub iat: Option<i64>,
    /// Whether `[admin]` names them; otherwise they are an approver, who sees the Requests
    /// page only.
    pub admin: bool,
}

/// One live session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who signed in.
    pub who: Who,
    /// The token every state-changing form must carry back.
    pub csrf: String,
    /// When it began (ms).
    pub created_ms: i64,
    /// The last request seen (ms).
    pub last_ms: i64,
}

impl Session {
    /// Whether `given` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, given: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(given.as_bytes()))
    }

    fn live_at(&self, now_ms: i64) -> bool {
        now_ms - self.last_ms < IDLE_MS && now_ms - self.created_ms < ABSOLUTE_MS
    }
}

/// A login between the redirect to the IdP and its return.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier for the code exchange.
    pub pkce_verifier: String,
    /// The value of the browser-binding cookie set with the redirect.
    pub binding: String,
    created_ms: i64,
}

/// The session and login tables.
pub struct Sessions {
    clock: Arc<dyn Clock>,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    logins: Mutex<HashMap<[u8; 32], PendingLogin>>,
}

/// 32 random bytes, URL-safe base64.
pub fn random_token() -> Result<String, SessionError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| SessionError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sessions {
    /// Empty tables on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            sessions: Mutex::new(HashMap::new()),
            logins: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session for `who`; its id (for the cookie).
    pub fn create(&self, who: Who) -> Result<String, SessionError> {
        let id = random_token()?;
        let csrf = random_token()?;
        let now = self.clock.now_ms();
        let mut table = lock(&self.sessions);
        if table.len() >= MAX_SESSIONS {
            table.retain(|_, s| s.live_at(now));
            if table.len() >= MAX_SESSIONS {
                return Err(SessionError::Full("console sessions"));
            }
        }
        table.insert(
            key(&id),
            Session {
                who,
                csrf,
                created_ms: now,
                last_ms: now,
            },
        );
        Ok(id)
    }

    /// The live session of `id`, marked as used now; an ended one is dropped.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = self.clock.now_ms();
        let k = key(id);
        let mut table = lock(&self.sessions);
        let live = table.get(&k)?.live_at(now);
        if !live {
            table.remove(&k);
            return None;
        }
        let s = table.get_mut(&k)?;
        s.last_ms = now;
        Some(s.clone())
    }

    /// Whether session `id` is live, without counting this as use (a page's live-update
    /// stream must not keep an idle session alive).
    pub fn is_live(&self, id: &str) -> bool {
        let now = self.clock.now_ms();
        lock(&self.sessions)
            .get(&key(id))
            .is_some_and(|s| s.live_at(now))
    }

    /// Ends session `id` (logout); who it was, if it was live.
    pub fn end(&self, id: &str) -> Option<Who> {
        let now = self.clock.now_ms();
        lock(&self.sessions)
            .remove(&key(id))
            .filter(|s| s.live_at(now))
            .map(|s| s.who)
    }

    /// Remembers a login in progress under `state`.
    pub fn begin_login(&self, state: &str, login: PendingLogin) -> Result<(), SessionError> {
        let now = self.clock.now_ms();
        let mut table = lock(&self.logins);
        if table.len() >= MAX_LOGINS {
            table.retain(|_, l| now - l.created_ms < LOGIN_MS);
        }
        // Anyone may start a login, so a full table evicts its oldest entry rather than
        // refusing: a flood of unfinished logins cannot lock the admins out.
        if table.len() >= MAX_LOGINS
            && let Some(oldest) = table
                .iter()
                .min_by_key(|(_, l)| l.created_ms)
                .map(|(k, _)| *k)
        {
            table.remove(&oldest);
        }
        table.insert(
            key(state),
            PendingLogin {
                created_ms: now,
                ..login
            },
        );
        Ok(())
    }

    /// Takes the login of `state` (once), if it is recent enough.
    pub fn finish_login(&self, state: &str) -> Option<PendingLogin> {
        let now = self.clock.now_ms();
        lock(&self.logins)
            .remove(&key(state))
            .filter(|l| now - l.created_ms < LOGIN_MS)
    }
}

impl PendingLogin {
    /// A login awaiting the IdP's answer.
    pub fn new(nonce: String, pkce_verifier: String, binding: String) -> Self {
        Self {
            nonce,
            pkce_verifier,
            binding,
            created_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn who() -> Who {
        Who {
            subject: "sec-admin".into(),
            admin: true,
            idp: "corp".into(),
            claims: Map::new(),
            iat: None,
        }
    }

    #[test]
    fn a_flood_of_unfinished_logins_cannot_lock_the_admins_out() {
        let (_, t) = tables();
        for i in 0..MAX_LOGINS + 50 {
            let state = format!("flood-{i}");
            let login = PendingLogin::new("n".into(), "v".into(), "b".into());
            assert!(t.begin_login(&state, login).is_ok(), "login {i} refused");
        }
        let admin = PendingLogin::new("n".into(), "v".into(), "b".into());
        assert!(t.begin_login("the-admin", admin).is_ok());
        assert!(
            t.finish_login("the-admin").is_some(),
            "the newest login survives"
        );
        assert!(lock(&t.logins).len() <= MAX_LOGINS);
    }

    fn tables() -> (Arc<ManualClock>, Sessions) {
        let clock = Arc::new(ManualClock::new(1_000_000));
        (clock.clone(), Sessions::new(clock))
    }

    #[test]
    fn ids_are_256_bit_and_distinct() {
        let a = random_token().expect("rng");
        let b = random_token().expect("rng");
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).expect("b64").len(), 32);
        assert_ne!(a, b);
    }

    #[test]
    fn idle_sessions_end() {
        let (clock, s) = tables();
        let id = s.create(who()).expect("create");
        clock.advance_ms(IDLE_MS - 1);
        assert!(s.get(&id).is_some(), "used just in time");
        clock.advance_ms(IDLE_MS - 1);
        assert!(s.get(&id).is_some(), "each use restarts the idle clock");
        clock.advance_ms(IDLE_MS);
        assert!(s.get(&id).is_none(), "idle too long");
    }

    #[test]
    fn watching_is_not_using() {
        let (clock, s) = tables();
        let id = s.create(who()).expect("create");
        clock.advance_ms(IDLE_MS - 1);
        assert!(s.is_live(&id));
        clock.advance_ms(1);
        assert!(!s.is_live(&id), "is_live kept an idle session alive");
    }

    #[test]
    fn busy_sessions_end_at_the_absolute_limit() {
        let (clock, s) = tables();
        let id = s.create(who()).expect("create");
        let step = IDLE_MS / 2;
        let mut elapsed = 0;
        while elapsed + step < ABSOLUTE_MS {
            clock.advance_ms(step);
            elapsed += step;
            assert!(s.get(&id).is_some(), "live at {elapsed} ms");
        }
        clock.advance_ms(ABSOLUTE_MS - elapsed);
        assert!(s.get(&id).is_none(), "past 8 hours");
    }

    #[test]
    fn logout_ends_the_session_server_side() {
        let (_, s) = tables();
        let id = s.create(who()).expect("create");
        assert_eq!(s.end(&id).map(|w| w.subject).as_deref(), Some("sec-admin"));
        assert!(s.get(&id).is_none());
        assert!(s.end(&id).is_none());
        assert!(s.get("not-a-session").is_none());
    }

    #[test]
    fn csrf_tokens_are_per_session_and_compared_exactly() {
        let (_, s) = tables();
        let a = s.get(&s.create(who()).expect("a")).expect("live");
        let b = s.get(&s.create(who()).expect("b")).expect("live");
        assert_ne!(a.csrf, b.csrf);
        assert!(a.csrf_matches(&a.csrf));
        assert!(!a.csrf_matches(&b.csrf));
        assert!(!a.csrf_matches(""));
        assert!(!a.csrf_matches(&a.csrf[..a.csrf.len() - 1]));
    }

    #[test]
    fn a_login_is_taken_once_and_only_while_fresh() {
        let (clock, s) = tables();
        let pending = || PendingLogin::new("n".into(), "v".into(), "b".into());
        s.begin_login("state-1", pending()).expect("begin");
        assert_eq!(
            s.finish_login("state-1").map(|l| l.nonce).as_deref(),
            Some("n")
        );
        assert!(s.finish_login("state-1").is_none(), "replayed");
        s.begin_login("state-2", pending()).expect("begin");
        clock.advance_ms(LOGIN_MS);
        assert!(s.finish_login("state-2").is_none(), "too late");
    }

    #[test]
    fn a_full_table_refuses_rather_than_evicting_live_sessions() {
        let (clock, s) = tables();
        for _ in 0..MAX_SESSIONS {
            s.create(who()).expect("room");
        }
        assert_eq!(
            s.create(who()).expect_err("full"),
            SessionError::Full("console sessions")
        );
        clock.advance_ms(IDLE_MS);
        assert!(s.create(who()).is_ok(), "expired sessions make room");
    }
}
