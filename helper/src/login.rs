//! A person's SSO login: `git jit login` runs the OIDC device authorization grant
//! (RFC 8628) against the issuer the broker advertises and returns a [`Session`] (stored by
//! `session`); [`current_id_token`] refreshes the ID token silently when it is about to
//! expire. Every ID token is verified (`oidc`) before it is kept. No browser, no D-Bus: the
//! person opens the URL on any device.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jit_proto::Secret;
use openidconnect::core::CoreDeviceAuthorizationResponse;
use openidconnect::{RefreshToken, Scope};

use crate::claims;
use crate::oidc::{IdpError, IdpHttp, OauthError, Provider, Verified, request_error};
use crate::session::{Session, SessionError, SessionStore};

/// Scopes asked for at login when the broker names none: an ID token, a refresh token, and
/// the claims policies match.
pub const LOGIN_SCOPE: &str = "openid offline_access email profile";
/// An ID token is refreshed when it has less than this left (seconds).
pub const REFRESH_MARGIN_SECS: i64 = 60;

/// Why login, refresh or the session file failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// No session on this machine.
    #[error("not logged in: run `git jit login`")]
    NotLoggedIn,
    /// The session belongs to another issuer than the broker's.
    #[error("logged in at {have}, but the broker uses {want}: run `git jit login`")]
    OtherIssuer {
        /// The session's issuer.
        have: String,
        /// The broker's login issuer.
        want: String,
    },
    /// The session was made for another broker.
    #[error(
        "your login session is for the broker at {have}, not {want}; refusing to send it there (run `git jit login` with {want} configured)"
    )]
    OtherBroker {
        /// The broker the session was made for.
        have: String,
        /// The broker it would go to.
        want: String,
    },
    /// The broker is not the configured one and the session names none.
    #[error(
        "refusing to send your login session to {0}: it is not the configured broker (run `git jit setup <URL>` or set GIT_JIT_BROKER)"
    )]
    NotPinned(String),
    /// The session can no longer be refreshed.
    #[error("your login session has expired ({0}): run `git jit login`")]
    Expired(String),
    /// The broker advertises no login issuer.
    #[error("the broker at {0} offers no interactive login (no login_issuer); use a CI identity")]
    NoLoginIssuer(String),
    /// The person refused or the code expired during login.
    #[error("login failed: {0}")]
    Refused(String),
    /// The issuer could not be reached, answered outside the protocol, or handed out an ID
    /// token that failed verification.
    #[error(transparent)]
    Idp(#[from] IdpError),
    /// The session file could not be read or written.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Writing the login instructions failed.
    #[error("cannot show login instructions: {0}")]
    Prompt(#[from] std::io::Error),
}

/// How the device flow waits: `tick` is one second in production and shorter in tests.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// The length of one of the issuer's seconds.
    pub tick: Duration,
    /// The local clock (seconds since the epoch).
    pub clock: fn() -> i64,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            clock: crate::broker::now,
        }
    }
}

/// The scopes of `scope` other than `openid`, which `openidconnect` always asks for.
fn extra_scopes(scope: &str) -> impl Iterator<Item = Scope> + '_ {
    scope
        .split_whitespace()
        .filter(|s| *s != "openid")
        .map(|s| Scope::new(s.to_owned()))
}

/// Runs the device authorization grant asking for `scope` (the broker's `login_scope`, else
/// [`LOGIN_SCOPE`]), telling the person what to do on `prompt` (the terminal or stderr, never
/// the credential protocol), and returns the new session.
pub async fn device_login(
    http: &IdpHttp,
    issuer: &str,
    client_id: &str,
    scope: &str,
    prompt: &mut dyn Write,
    pacing: Pacing,
) -> Result<Session, LoginError> {
    let provider = Provider::discover(http, issuer, client_id).await?;
    let client = provider.device_client()?;
    let da: CoreDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scopes(extra_scopes(scope))
        .request_async(http)
        .await
        .map_err(
            |e| match request_error(client.device_authorization_url().as_str(), e) {
                IdpError::Oauth(e) => LoginError::Refused(e.to_string()),
                other => other.into(),
            },
        )?;
    writeln!(
        prompt,
        "To log in, open {} and enter the code {}",
        da.verification_uri().as_str(),
        da.user_code().secret()
    )?;
    if let Some(complete) = da.verification_uri_complete() {
        writeln!(prompt, "(or open {})", complete.secret())?;
    }
    writeln!(prompt, "Waiting for you to approve…")?;

    // The issuer's time as the poller sees it: the local clock, or the issuer seconds slept
    // so far when `tick` runs faster than the clock (tests).
    let slept = Arc::new(AtomicU64::new(0));
    let (start, clock, tick) = ((pacing.clock)(), pacing.clock, pacing.tick);
    let slept_in_sleep = slept.clone();
    let tokens = client
        .exchange_device_access_token(&da)
        .set_time_fn(move || {
            let virtual_now = start.saturating_add_unsigned(slept.load(Ordering::SeqCst));
            DateTime::<Utc>::from_timestamp(clock().max(virtual_now), 0).unwrap_or_default()
        })
        .request_async(
            http,
            move |wait: Duration| {
                slept_in_sleep.fetch_add(wait.as_secs(), Ordering::SeqCst);
                tokio::time::sleep(tick.mul_f64(wait.as_secs_f64()))
            },
            None,
        )
        .await
        .map_err(|e| match request_error(provider.token_url().as_str(), e) {
            IdpError::Oauth(e) => LoginError::Refused(refusal(e)),
            other => other.into(),
        })?;
    let v = provider.verify(&tokens, (pacing.clock)())?;
    Ok(session_from(issuer, client_id, &provider, v, None))
}

/// What the person is told when the issuer ends the device flow with `e`.
fn refusal(e: OauthError) -> String {
    match e.error.as_str() {
        "access_denied" => "the login was denied".into(),
        "expired_token" => {
            "the code expired before it was approved; run `git jit login` again".into()
        }
        _ => e.to_string(),
    }
}

fn session_from(
    issuer: &str,
    client_id: &str,
    provider: &Provider,
    v: Verified,
    old_refresh: Option<Secret>,
) -> Session {
    Session {
        issuer: issuer.to_owned(),
        client_id: client_id.to_owned(),
        token_endpoint: provider.token_url().to_string(),
        id_token: v.id_token,
        id_token_expires_at: v.expires_at,
        refresh_token: v.refresh_token.or(old_refresh),
        broker: None,
    }
}

/// The person's current ID token for `issuer`, to be sent to `broker` (a base URL; `pinned`
/// when it is the configured broker), refreshed (verified, and saved) when it is about to
/// expire. The ID token goes only to the broker the session was made for: another host
/// advertising the same issuer must not receive it.
pub async fn current_id_token(
    store: &SessionStore,
    issuer: &str,
    broker: &str,
    pinned: bool,
    clock: fn() -> i64,
) -> Result<Secret, LoginError> {
    let s = store.load()?.ok_or(LoginError::NotLoggedIn)?;
    match s.broker.as_deref() {
        Some(b) if b == broker => {}
        Some(b) => {
            return Err(LoginError::OtherBroker {
                have: b.to_owned(),
                want: broker.to_owned(),
            });
        }
        None if pinned => {}
        None => return Err(LoginError::NotPinned(broker.to_owned())),
    }
    if s.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(LoginError::OtherIssuer {
            have: s.issuer,
            want: issuer.to_owned(),
        });
    }
    if s.id_token_expires_at - REFRESH_MARGIN_SECS > clock() {
        return Ok(s.id_token);
    }
    let Some(refresh) = s.refresh_token.clone() else {
        return Err(LoginError::Expired("no refresh token".into()));
    };
    let http = IdpHttp::new()?;
    let provider = Provider::discover(&http, &s.issuer, &s.client_id).await?;
    let tokens = provider
        .client()
        .exchange_refresh_token(&RefreshToken::new(refresh.expose().to_owned()))
        .request_async(&http)
        .await
        .map_err(|e| match request_error(provider.token_url().as_str(), e) {
            IdpError::Oauth(e) => LoginError::Expired(e.to_string()),
            other => other.into(),
        })?;
    let v = provider.verify(&tokens, clock())?;
    // OIDC Core §12.2: a refreshed ID token is about the same person. The stored token was
    // verified when it was saved.
    let before = claims::unverified(s.id_token.expose())
        .ok()
        .and_then(|c| c.sub);
    if before.as_deref().is_some_and(|sub| sub != v.subject) {
        return Err(IdpError::IdToken {
            issuer: s.issuer,
            reason: "the refreshed ID token names another subject".into(),
        }
        .into());
    }
    let new = Session {
        broker: s.broker.clone(),
        ..session_from(&s.issuer, &s.client_id, &provider, v, Some(refresh))
    };
    store.save(&new)?;
    Ok(new.id_token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::fake_jwt;
    use crate::oidc::testing::{claims, jwks, sign};
    use crate::testserver::{Reply, TestServer};
    use jsonwebtoken::Algorithm;
    use serde_json::json;
    use std::sync::atomic::AtomicUsize;

    const CLIENT: &str = "git-jit-cli";
    const BROKER: &str = "https://b";

    /// A canned token-endpoint reply, built from the issuer's URL.
    type TokenReply = Box<dyn Fn(&str) -> Reply + Send>;

    fn fast() -> Pacing {
        Pacing {
            tick: Duration::from_millis(1),
            clock: || 1000,
        }
    }

    fn http() -> IdpHttp {
        let _ = rustls::crypto::ring::default_provider().install_default();
        IdpHttp::new().expect("client")
    }

    /// A test issuer: discovery, JWKS, a device endpoint, and `token_replies` in turn at
    /// `/token` (each built from the issuer's URL).
    fn oidc(token_replies: Vec<TokenReply>) -> TestServer {
        let n = AtomicUsize::new(0);
        let base = Arc::new(std::sync::Mutex::new(String::new()));
        let b2 = base.clone();
        let srv = TestServer::start(move |r| {
            let base = b2.lock().expect("lock").clone();
            match r.target.as_str() {
                "/.well-known/openid-configuration" => Reply::json(
                    200,
                    json!({
                        "issuer": base, "token_endpoint": format!("{base}/token"),
                        "jwks_uri": format!("{base}/jwks"),
                        "device_authorization_endpoint": format!("{base}/device"),
                    }),
                ),
                "/jwks" => Reply::json(200, jwks()),
                "/device" => Reply::json(
                    200,
                    json!({
                        "device_code": "dc", "user_code": "ABCD-EFGH",
                        "verification_uri": format!("{base}/activate"), "expires_in": 60, "interval": 1,
                    }),
                ),
                _ => {
                    let i = n.fetch_add(1, Ordering::SeqCst);
                    token_replies.get(i).map_or_else(
                        || Reply::json(500, json!({"error": "server_error"})),
                        |reply| reply(&base),
                    )
                }
            }
        });
        *base.lock().expect("lock") = srv.url.clone();
        srv
    }

    fn pending(e: &'static str) -> TokenReply {
        Box::new(move |_| Reply::json(400, json!({"error": e})))
    }

    /// A token answer with an ID token from the issuer about `sub`, signed with `alg`.
    fn tokens(
        alg: Algorithm,
        sub: &'static str,
        exp: i64,
        refresh: Option<&'static str>,
    ) -> TokenReply {
        Box::new(move |iss| {
            let mut body = json!({"id_token": sign(alg, &claims(iss, CLIENT, sub, exp)),
                "access_token": "at", "token_type": "Bearer"});
            if let Some(r) = refresh {
                body["refresh_token"] = r.into();
            }
            Reply::json(200, body)
        })
    }

    #[tokio::test]
    async fn device_flow_polls_through_pending_and_slow_down() {
        let srv = oidc(vec![
            pending("authorization_pending"),
            pending("slow_down"),
            tokens(Algorithm::RS256, "alice", 5000, Some("rt")),
        ]);
        let mut out = Vec::new();
        let s = device_login(&http(), &srv.url, CLIENT, LOGIN_SCOPE, &mut out, fast())
            .await
            .expect("login");
        assert_eq!(s.id_token_expires_at, 5000);
        assert_eq!(s.token_endpoint, format!("{}/token", srv.url));
        assert_eq!(s.refresh_token.as_ref().map(Secret::expose), Some("rt"));
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains(&format!("{}/activate", srv.url)) && text.contains("ABCD-EFGH"),
            "{text}"
        );
        let seen = srv.seen();
        let dev = seen
            .iter()
            .find(|r| r.target == "/device")
            .expect("device request");
        assert_eq!(dev.form("client_id").as_deref(), Some(CLIENT));
        assert_eq!(dev.form("scope").as_deref(), Some(LOGIN_SCOPE));
        let polls: Vec<_> = seen.iter().filter(|r| r.target == "/token").collect();
        assert_eq!(polls.len(), 3);
        assert_eq!(
            polls[0].form("grant_type").as_deref(),
            Some("urn:ietf:params:oauth:grant-type:device_code")
        );
        assert_eq!(polls[0].form("device_code").as_deref(), Some("dc"));
        assert_eq!(polls[0].form("client_id").as_deref(), Some(CLIENT));
    }

    #[tokio::test]
    async fn device_flow_accepts_es256_without_an_access_token() {
        // The broker's dev issuer: ES256, no access token in the answer.
        let srv = oidc(vec![Box::new(|iss: &str| {
            Reply::json(
                200,
                json!({"id_token": sign(Algorithm::ES256, &claims(iss, CLIENT, "dev", 4000)),
                    "refresh_token": "rt", "token_type": "Bearer", "expires_in": 3600}),
            )
        })]);
        let s = device_login(&http(), &srv.url, CLIENT, "openid", &mut Vec::new(), fast())
            .await
            .expect("login");
        assert_eq!(s.id_token_expires_at, 4000);
        let dev = srv.seen().into_iter().find(|r| r.target == "/device");
        assert_eq!(
            dev.and_then(|r| r.form("scope")).as_deref(),
            Some("openid"),
            "openid is asked for once"
        );
    }

    #[tokio::test]
    async fn device_flow_denied_expired_and_unverifiable() {
        let srv = oidc(vec![pending("access_denied")]);
        let e = device_login(&http(), &srv.url, "c", LOGIN_SCOPE, &mut Vec::new(), fast())
            .await
            .expect_err("denied");
        assert!(e.to_string().contains("denied"), "{e}");
        // Every poll pending, then slow_down pushes past expires_in (60).
        let mut replies: Vec<_> = (0..5).map(|_| pending("authorization_pending")).collect();
        replies.extend((0..10).map(|_| pending("slow_down")));
        let srv = oidc(replies);
        let e = device_login(&http(), &srv.url, "c", LOGIN_SCOPE, &mut Vec::new(), fast())
            .await
            .expect_err("expired");
        assert!(e.to_string().contains("expired"), "{e}");
        let polls = srv.seen().iter().filter(|r| r.target == "/token").count();
        assert!((5..15).contains(&polls), "{polls} polls");
        // An ID token for another client is not a login.
        let srv = oidc(vec![tokens(Algorithm::RS256, "alice", 5000, None)]);
        let e = device_login(&http(), &srv.url, "c", LOGIN_SCOPE, &mut Vec::new(), fast())
            .await
            .expect_err("audience");
        assert!(
            matches!(e, LoginError::Idp(IdpError::IdToken { .. })),
            "{e}"
        );
    }

    fn session(url: &str, exp: i64, refresh: Option<&str>) -> Session {
        Session {
            issuer: url.to_owned(),
            client_id: CLIENT.into(),
            token_endpoint: format!("{url}/token"),
            id_token: Secret::new(fake_jwt(&json!({"sub": "alice", "exp": exp}))),
            id_token_expires_at: exp,
            refresh_token: refresh.map(Secret::new),
            broker: Some(BROKER.into()),
        }
    }

    #[tokio::test]
    async fn refreshes_silently_when_about_to_expire() {
        let srv = oidc(vec![tokens(Algorithm::RS256, "alice", 9000, None)]);
        let tmp = tempfile::tempdir().expect("tmp");
        let store = SessionStore::new(tmp.path());
        store
            .save(&session(&srv.url, 1050, Some("rt")))
            .expect("save");
        let _ = http();
        let got = current_id_token(&store, &srv.url, BROKER, false, || 1000)
            .await
            .expect("refreshed");
        let saved = store.load().expect("load").expect("some");
        assert_eq!(saved.id_token, got);
        assert_eq!(saved.id_token_expires_at, 9000);
        assert_eq!(
            saved.refresh_token.as_ref().map(Secret::expose),
            Some("rt"),
            "kept when not rotated"
        );
        let post = srv
            .seen()
            .into_iter()
            .find(|r| r.target == "/token")
            .expect("refresh");
        assert_eq!(post.form("grant_type").as_deref(), Some("refresh_token"));
        assert_eq!(post.form("refresh_token").as_deref(), Some("rt"));
        assert_eq!(post.form("client_id").as_deref(), Some(CLIENT));
        // Still fresh: no network.
        let before = srv.seen().len();
        current_id_token(&store, &srv.url, BROKER, false, || 1000)
            .await
            .expect("cached");
        assert_eq!(srv.seen().len(), before);
    }

    #[tokio::test]
    async fn a_refresh_is_verified_before_it_is_kept() {
        let _ = http();
        let tmp = tempfile::tempdir().expect("tmp");
        let store = SessionStore::new(tmp.path());
        // Another person's ID token, and one signed with a key the issuer does not publish
        // for that algorithm (EdDSA is not accepted): neither replaces the session.
        for (reply, why) in [
            (
                tokens(Algorithm::RS256, "mallory", 9000, Some("rt2")),
                "subject",
            ),
            (
                tokens(Algorithm::EdDSA, "alice", 9000, Some("rt2")),
                "EdDSA",
            ),
        ] {
            let srv = oidc(vec![reply]);
            let old = session(&srv.url, 1050, Some("rt"));
            store.save(&old).expect("save");
            let e = current_id_token(&store, &srv.url, BROKER, false, || 1000)
                .await
                .expect_err(why);
            assert!(
                matches!(e, LoginError::Idp(IdpError::IdToken { .. })),
                "{why}: {e}"
            );
            assert_eq!(store.load().expect("load"), Some(old), "{why}");
        }
    }

    #[tokio::test]
    async fn session_errors_are_actionable() {
        let _ = http();
        let tmp = tempfile::tempdir().expect("tmp");
        let store = SessionStore::new(tmp.path().join("cfg"));
        let e = current_id_token(&store, "https://idp", BROKER, false, || 0)
            .await
            .expect_err("none");
        assert_eq!(e.to_string(), "not logged in: run `git jit login`");
        store
            .save(&session("https://other", 10_000, None))
            .expect("save");
        let e = current_id_token(&store, "https://idp", BROKER, false, || 0)
            .await
            .expect_err("issuer");
        assert!(matches!(e, LoginError::OtherIssuer { .. }));
        let srv = oidc(vec![Box::new(|_: &str| {
            Reply::json(400, json!({"error": "invalid_grant"}))
        })]);
        store
            .save(&session(&srv.url, 10, Some("rt")))
            .expect("save");
        let e = current_id_token(&store, &srv.url, BROKER, false, || 1000)
            .await
            .expect_err("expired");
        assert!(e.to_string().contains("run `git jit login`"), "{e}");
        assert!(e.to_string().contains("invalid_grant"), "{e}");
        assert!(store.remove().expect("rm"));
        assert!(!store.remove().expect("rm twice"));
    }

    /// The person's ID token goes only to the broker the session was made for: another host
    /// that advertises the same issuer in its metadata gets nothing. A session saved before
    /// sessions named their broker is used with the configured broker only.
    #[tokio::test]
    async fn the_session_goes_only_to_its_own_broker() {
        let _ = http();
        let tmp = tempfile::tempdir().expect("tmp");
        let store = SessionStore::new(tmp.path().join("cfg"));
        store
            .save(&session("https://idp", 10_000, None))
            .expect("save");
        for pinned in [false, true] {
            let e = current_id_token(&store, "https://idp", "https://evil", pinned, || 0)
                .await
                .expect_err("another broker");
            assert!(matches!(e, LoginError::OtherBroker { .. }), "{e}");
        }
        let ok = current_id_token(&store, "https://idp", BROKER, true, || 0).await;
        assert!(ok.is_ok(), "its own broker");
        let legacy = Session {
            broker: None,
            ..session("https://idp", 10_000, None)
        };
        store.save(&legacy).expect("save");
        let e = current_id_token(&store, "https://idp", "https://evil", false, || 0)
            .await
            .expect_err("not the configured broker");
        assert!(matches!(e, LoginError::NotPinned(_)), "{e}");
        assert!(e.to_string().contains("not the configured broker"), "{e}");
        let ok = current_id_token(&store, "https://idp", "https://b", true, || 0).await;
        assert!(ok.is_ok(), "a legacy session with the configured broker");
    }
}
