//! Console sessions, kept in the store so every replica shares them (see
//! [`crate::store::sessions`]): keyed by the SHA-256 of a 256-bit random id (the cookie holds
//! the id; the store never does), each with its own CSRF token, ended after 30 idle minutes,
//! 8 hours in all, or at logout, on every replica at once. Logins in progress (state, nonce,
//! PKCE verifier) are kept the same way for 10 minutes. When the store cannot answer, every
//! operation is an error and the console lets nobody in.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::clock::Clock;
use crate::store::{GrantStore, StoreError};

pub use crate::store::sessions::{ABSOLUTE_MS, IDLE_MS, LOGIN_MS, MAX_LOGINS, MAX_SESSIONS};

/// Why a session or login could not be started or read.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The system's random generator failed.
    #[error("the random generator failed")]
    Random,
    /// The store holds as many live sessions as it may.
    #[error("too many {0} at once; try again later")]
    Full(&'static str),
    /// The store could not answer (or held an unreadable record): nobody gets in.
    #[error("console sessions cannot be checked: {0}")]
    Store(#[from] StoreError),
}

/// The signed-in person, as verified at login.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

/// What the store keeps of a session (its body).
#[derive(Serialize, Deserialize)]
struct SessionBody {
    who: Who,
    csrf: String,
}

/// A login between the redirect to the IdP and its return.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The PKCE verifier for the code exchange.
    pub pkce_verifier: String,
    /// The value of the browser-binding cookie set with the redirect.
    pub binding: String,
}

impl PendingLogin {
    /// A login awaiting the IdP's answer.
    pub fn new(nonce: String, pkce_verifier: String, binding: String) -> Self {
        Self {
            nonce,
            pkce_verifier,
            binding,
        }
    }
}

/// The console's sessions and logins, in the store.
pub struct Sessions {
    clock: Arc<dyn Clock>,
    store: Arc<dyn GrantStore>,
}

/// 32 random bytes, URL-safe base64.
pub fn random_token() -> Result<String, SessionError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| SessionError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The store's key for a cookie id or login state: hex SHA-256.
fn key(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

fn corrupt(what: &str) -> SessionError {
    SessionError::Store(StoreError::Corrupt(format!("console {what} record")))
}

fn session_of(s: crate::store::sessions::StoredSession) -> Result<Session, SessionError> {
    let body: SessionBody = serde_json::from_str(&s.body).map_err(|_| corrupt("session"))?;
    Ok(Session {
        who: body.who,
        csrf: body.csrf,
        created_ms: s.created_ms,
        last_ms: s.last_ms,
    })
}

impl Sessions {
    /// The sessions kept in `store`, on `clock`.
    pub fn new(clock: Arc<dyn Clock>, store: Arc<dyn GrantStore>) -> Self {
        Self { clock, store }
    }

    /// Starts a session for `who`; its id (for the cookie).
    pub async fn create(&self, who: Who) -> Result<String, SessionError> {
        let id = random_token()?;
        let body = SessionBody {
            who,
            csrf: random_token()?,
        };
        let body = serde_json::to_string(&body).map_err(|_| corrupt("session"))?;
        let now = self.clock.now_ms();
        if self
            .store
            .sessions()
            .create_session(&key(&id), &body, now)
            .await?
        {
            Ok(id)
        } else {
            Err(SessionError::Full("console sessions"))
        }
    }

    /// The live session of `id`, marked as used now; `None` when there is none.
    pub async fn get(&self, id: &str) -> Result<Option<Session>, SessionError> {
        let now = self.clock.now_ms();
        match self.store.sessions().session(&key(id), true, now).await? {
            Some(s) => session_of(s).map(Some),
            None => Ok(None),
        }
    }

    /// Whether session `id` is live, without counting this as use (a page's live-update
    /// stream must not keep an idle session alive).
    pub async fn is_live(&self, id: &str) -> Result<bool, SessionError> {
        let now = self.clock.now_ms();
        Ok(self
            .store
            .sessions()
            .session(&key(id), false, now)
            .await?
            .is_some())
    }

    /// Ends session `id` (logout), on every replica; who it was, if it was live.
    pub async fn end(&self, id: &str) -> Result<Option<Who>, SessionError> {
        let now = self.clock.now_ms();
        match self.store.sessions().end_session(&key(id), now).await? {
            Some(s) => session_of(s).map(|s| Some(s.who)),
            None => Ok(None),
        }
    }

    /// Remembers a login in progress under `state`.
    pub async fn begin_login(&self, state: &str, login: PendingLogin) -> Result<(), SessionError> {
        let body = serde_json::to_string(&login).map_err(|_| corrupt("login"))?;
        let now = self.clock.now_ms();
        Ok(self
            .store
            .sessions()
            .begin_login(&key(state), &body, now)
            .await?)
    }

    /// Takes the login of `state` (once), if it is recent enough.
    pub async fn finish_login(&self, state: &str) -> Result<Option<PendingLogin>, SessionError> {
        let now = self.clock.now_ms();
        match self.store.sessions().take_login(&key(state), now).await? {
            Some(body) => serde_json::from_str(&body)
                .map(Some)
                .map_err(|_| corrupt("login")),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::flaky::Flaky;
    use crate::store::memory::MemoryStore;

    fn who() -> Who {
        let mut claims = Map::new();
        claims.insert("groups".into(), Value::from(vec!["git-jit-admins"]));
        Who {
            subject: "sec-admin".into(),
            admin: true,
            idp: "corp".into(),
            claims,
            iat: Some(1_700_000_000),
        }
    }

    fn tables() -> (Arc<ManualClock>, Arc<MemoryStore>, Sessions) {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = Arc::new(MemoryStore::new(100));
        (clock.clone(), store.clone(), Sessions::new(clock, store))
    }

    #[test]
    fn ids_are_256_bit_and_distinct() {
        let a = random_token().expect("rng");
        let b = random_token().expect("rng");
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).expect("b64").len(), 32);
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn the_store_never_sees_the_cookie_id() {
        let (clock, store, s) = tables();
        let id = s.create(who()).await.expect("create");
        let now = clock.now_ms();
        let raw = store
            .sessions()
            .session(&id, false, now)
            .await
            .expect("ask");
        assert!(raw.is_none(), "kept under the raw id");
        let kept = store
            .sessions()
            .session(&key(&id), false, now)
            .await
            .expect("ask");
        let kept = kept.expect("kept under the id's SHA-256");
        assert!(!kept.body.contains(&id), "the id is in the record");
        let back = s.get(&id).await.expect("store").expect("live");
        assert_eq!(back.who.subject, "sec-admin");
        assert_eq!(back.who.claims, who().claims, "claims survive the store");
        assert_eq!(back.who.iat, Some(1_700_000_000));
    }

    #[tokio::test]
    async fn idle_and_absolute_limits_hold_through_the_store() {
        let (clock, _, s) = tables();
        let id = s.create(who()).await.expect("create");
        clock.advance_ms(IDLE_MS - 1);
        assert!(s.is_live(&id).await.expect("store"));
        assert!(
            s.get(&id).await.expect("store").is_some(),
            "used just in time"
        );
        clock.advance_ms(IDLE_MS - 1);
        assert!(
            s.get(&id).await.expect("store").is_some(),
            "use restarts the idle clock"
        );
        clock.advance_ms(IDLE_MS);
        assert!(s.get(&id).await.expect("store").is_none(), "idle too long");
    }

    #[tokio::test]
    async fn logout_ends_the_session_server_side() {
        let (_, _, s) = tables();
        let id = s.create(who()).await.expect("create");
        let ended = s.end(&id).await.expect("store").map(|w| w.subject);
        assert_eq!(ended.as_deref(), Some("sec-admin"));
        assert!(s.get(&id).await.expect("store").is_none());
        assert!(s.end(&id).await.expect("store").is_none());
        assert!(s.get("not-a-session").await.expect("store").is_none());
    }

    #[tokio::test]
    async fn csrf_tokens_are_per_session_and_compared_exactly() {
        let (_, _, s) = tables();
        let a = s.create(who()).await.expect("a");
        let a = s.get(&a).await.expect("store").expect("live");
        let b = s.create(who()).await.expect("b");
        let b = s.get(&b).await.expect("store").expect("live");
        assert_ne!(a.csrf, b.csrf);
        assert!(a.csrf_matches(&a.csrf));
        assert!(!a.csrf_matches(&b.csrf));
        assert!(!a.csrf_matches(""));
        assert!(!a.csrf_matches(&a.csrf[..a.csrf.len() - 1]));
    }

    #[tokio::test]
    async fn a_login_is_taken_once_and_only_while_fresh() {
        let (clock, _, s) = tables();
        let pending = || PendingLogin::new("n".into(), "v".into(), "b".into());
        s.begin_login("state-1", pending()).await.expect("begin");
        let taken = s.finish_login("state-1").await.expect("store");
        assert_eq!(taken.map(|l| l.pkce_verifier).as_deref(), Some("v"));
        assert!(
            s.finish_login("state-1").await.expect("store").is_none(),
            "replayed"
        );
        s.begin_login("state-2", pending()).await.expect("begin");
        clock.advance_ms(LOGIN_MS);
        assert!(
            s.finish_login("state-2").await.expect("store").is_none(),
            "too late"
        );
    }

    #[tokio::test]
    async fn a_store_that_cannot_answer_lets_nobody_in() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = Arc::new(Flaky::default());
        let s = Sessions::new(clock, store.clone());
        let id = s.create(who()).await.expect("create");
        s.begin_login(
            "state",
            PendingLogin::new("n".into(), "v".into(), "b".into()),
        )
        .await
        .expect("begin");
        store.grants_down.store(true, Ordering::SeqCst);
        assert!(matches!(s.get(&id).await, Err(SessionError::Store(_))));
        assert!(matches!(s.is_live(&id).await, Err(SessionError::Store(_))));
        assert!(matches!(s.end(&id).await, Err(SessionError::Store(_))));
        assert!(matches!(s.create(who()).await, Err(SessionError::Store(_))));
        assert!(matches!(
            s.finish_login("state").await,
            Err(SessionError::Store(_))
        ));
        store.grants_down.store(false, Ordering::SeqCst);
        assert!(s.get(&id).await.expect("back").is_some());
    }

    #[tokio::test]
    async fn an_unreadable_record_is_an_error_not_a_session() {
        let (clock, store, s) = tables();
        let id = random_token().expect("rng");
        let now = clock.now_ms();
        assert!(
            store
                .sessions()
                .create_session(&key(&id), "{not json", now)
                .await
                .expect("put")
        );
        assert!(matches!(
            s.get(&id).await,
            Err(SessionError::Store(StoreError::Corrupt(_)))
        ));
    }
}
