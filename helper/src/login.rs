//! A person's SSO login: `git jit login` runs the OIDC device authorization grant
//! (RFC 8628) against the issuer the broker advertises and returns a [`Session`] (stored by
//! `session`); [`current_id_token`] refreshes the ID token silently when it is about to
//! expire. No browser, no D-Bus: the person opens the URL on any device.

use std::io::Write;
use std::time::Duration;

use jit_proto::Secret;
use serde::Deserialize;

use crate::broker::chain;
use crate::claims;
use crate::session::{Session, SessionError, SessionStore};

/// Scopes asked for at login when the broker names none: an ID token, a refresh token, and
/// the claims policies match.
pub const LOGIN_SCOPE: &str = "openid offline_access email profile";
/// An ID token is refreshed when it has less than this left (seconds).
pub const REFRESH_MARGIN_SECS: i64 = 60;
const GRANT_TYPE_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";

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
    /// The session can no longer be refreshed.
    #[error("your login session has expired ({0}): run `git jit login`")]
    Expired(String),
    /// The broker advertises no login issuer.
    #[error("the broker at {0} offers no interactive login (no login_issuer); use a CI identity")]
    NoLoginIssuer(String),
    /// The person refused or the code expired during login.
    #[error("login failed: {0}")]
    Refused(String),
    /// The issuer could not be reached.
    #[error("cannot reach the login issuer at {url}: {cause}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The cause chain.
        cause: String,
    },
    /// The issuer answered outside the protocol.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The session file could not be read or written.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Writing the login instructions failed.
    #[error("cannot show login instructions: {0}")]
    Prompt(#[from] std::io::Error),
}

#[derive(Debug, Clone, Deserialize)]
pub struct Endpoints {
    /// RFC 8628 device authorization endpoint.
    pub device_authorization_endpoint: Option<String>,
    /// Token endpoint.
    pub token_endpoint: String,
}

/// Discovers the issuer's endpoints from `{issuer}/.well-known/openid-configuration`.
pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Endpoints, LoginError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| unreachable(&url, &e))?;
    if !resp.status().is_success() {
        return Err(LoginError::Protocol {
            reason: format!("status {}", resp.status()),
            url,
        });
    }
    resp.json().await.map_err(|e| LoginError::Protocol {
        reason: chain(&e),
        url,
    })
}

fn unreachable(url: &str, e: &reqwest::Error) -> LoginError {
    LoginError::Unreachable {
        url: url.to_owned(),
        cause: chain(e),
    }
}

#[derive(Deserialize)]
struct DeviceAuthorization {
    device_code: Secret,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    expires_in: u64,
    #[serde(default)]
    interval: Option<u64>,
}

#[derive(Deserialize)]
struct OidcTokens {
    #[serde(default)]
    id_token: Option<Secret>,
    #[serde(default)]
    refresh_token: Option<Secret>,
}

#[derive(Deserialize)]
struct OidcError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

enum Polled {
    Tokens(OidcTokens),
    Error(OidcError),
}

async fn post_token(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, &str)],
) -> Result<Polled, LoginError> {
    let resp = http
        .post(url)
        .form(form)
        .send()
        .await
        .map_err(|e| unreachable(url, &e))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| unreachable(url, &e))?;
    let bad = |reason: String| LoginError::Protocol {
        url: url.to_owned(),
        reason,
    };
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .map(Polled::Tokens)
            .map_err(|e| bad(e.to_string()));
    }
    serde_json::from_slice(&bytes)
        .map(Polled::Error)
        .map_err(|_| bad(format!("status {status}")))
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

/// Runs the device authorization grant asking for `scope` (the broker's `login_scope`, else
/// [`LOGIN_SCOPE`]), telling the person what to do on `prompt` (the terminal or stderr, never
/// the credential protocol), and returns the new session.
pub async fn device_login(
    http: &reqwest::Client,
    issuer: &str,
    client_id: &str,
    scope: &str,
    prompt: &mut dyn Write,
    pacing: Pacing,
) -> Result<Session, LoginError> {
    let ep = discover(http, issuer).await?;
    let dev_url = ep
        .device_authorization_endpoint
        .clone()
        .ok_or_else(|| LoginError::Protocol {
            url: issuer.to_owned(),
            reason: "the issuer does not support the device authorization grant".into(),
        })?;
    let resp = http
        .post(&dev_url)
        .form(&[("client_id", client_id), ("scope", scope)])
        .send()
        .await
        .map_err(|e| unreachable(&dev_url, &e))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let why = resp
            .json::<OidcError>()
            .await
            .map(describe)
            .unwrap_or_else(|_| format!("status {status}"));
        return Err(LoginError::Refused(why));
    }
    let da: DeviceAuthorization = resp.json().await.map_err(|e| LoginError::Protocol {
        url: dev_url.clone(),
        reason: chain(&e),
    })?;
    writeln!(
        prompt,
        "To log in, open {} and enter the code {}",
        da.verification_uri, da.user_code
    )?;
    if let Some(complete) = &da.verification_uri_complete {
        writeln!(prompt, "(or open {complete})")?;
    }
    writeln!(prompt, "Waiting for you to approve…")?;

    let mut interval = da.interval.unwrap_or(5).max(1);
    let mut waited = 0u64;
    let form = [
        ("grant_type", GRANT_TYPE_DEVICE_CODE),
        ("device_code", da.device_code.expose()),
        ("client_id", client_id),
    ];
    loop {
        if waited + interval > da.expires_in {
            return Err(LoginError::Refused(
                "the code expired before it was approved; run `git jit login` again".into(),
            ));
        }
        tokio::time::sleep(pacing.tick * interval as u32).await;
        waited += interval;
        match post_token(http, &ep.token_endpoint, &form).await? {
            Polled::Tokens(t) => {
                return session_from(issuer, client_id, &ep.token_endpoint, t, None, pacing.clock);
            }
            Polled::Error(e) => match e.error.as_str() {
                "authorization_pending" => {}
                // RFC 8628 §3.5: increase the interval by 5 seconds for this and later polls.
                "slow_down" => interval += 5,
                "access_denied" => return Err(LoginError::Refused("the login was denied".into())),
                "expired_token" => {
                    return Err(LoginError::Refused(
                        "the code expired; run `git jit login` again".into(),
                    ));
                }
                _ => return Err(LoginError::Refused(describe(e))),
            },
        }
    }
}

fn describe(e: OidcError) -> String {
    match e.error_description {
        Some(d) => format!("{}: {d}", e.error),
        None => e.error,
    }
}

fn session_from(
    issuer: &str,
    client_id: &str,
    token_endpoint: &str,
    t: OidcTokens,
    old_refresh: Option<Secret>,
    clock: fn() -> i64,
) -> Result<Session, LoginError> {
    let id_token = t.id_token.ok_or_else(|| LoginError::Protocol {
        url: token_endpoint.to_owned(),
        reason: "no id_token in the token response (is `openid` allowed for this client?)".into(),
    })?;
    // Unverified: only used to know when to refresh; the broker verifies the token.
    let exp = claims::unverified(id_token.expose())
        .ok()
        .and_then(|c| c.exp)
        .unwrap_or_else(clock);
    Ok(Session {
        issuer: issuer.to_owned(),
        client_id: client_id.to_owned(),
        token_endpoint: token_endpoint.to_owned(),
        id_token,
        id_token_expires_at: exp,
        refresh_token: t.refresh_token.or(old_refresh),
    })
}

/// The person's current ID token for `issuer`, refreshed (and saved) when it is about to
/// expire.
pub async fn current_id_token(
    store: &SessionStore,
    http: &reqwest::Client,
    issuer: &str,
    clock: fn() -> i64,
) -> Result<Secret, LoginError> {
    let s = store.load()?.ok_or(LoginError::NotLoggedIn)?;
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
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.expose()),
        ("client_id", s.client_id.as_str()),
    ];
    match post_token(http, &s.token_endpoint, &form).await? {
        Polled::Tokens(t) => {
            let new = session_from(
                &s.issuer,
                &s.client_id,
                &s.token_endpoint,
                t,
                Some(refresh),
                clock,
            )?;
            store.save(&new)?;
            Ok(new.id_token)
        }
        Polled::Error(e) => Err(LoginError::Expired(describe(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::fake_jwt;
    use crate::testserver::{Reply, TestServer, client};
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn fast() -> Pacing {
        Pacing {
            tick: Duration::from_millis(1),
            clock: || 1000,
        }
    }

    fn oidc(token_replies: Vec<Reply>) -> TestServer {
        let n = AtomicUsize::new(0);
        let replies =
            std::sync::Mutex::new(token_replies.into_iter().map(Some).collect::<Vec<_>>());
        let base = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let b2 = base.clone();
        let srv = TestServer::start(move |r| {
            let base = b2.lock().expect("lock").clone();
            match r.target.as_str() {
                "/.well-known/openid-configuration" => Reply::json(
                    200,
                    json!({
                        "issuer": base, "token_endpoint": format!("{base}/token"),
                        "device_authorization_endpoint": format!("{base}/device"),
                    }),
                ),
                "/device" => Reply::json(
                    200,
                    json!({
                        "device_code": "dc", "user_code": "ABCD-EFGH",
                        "verification_uri": format!("{base}/activate"), "expires_in": 60, "interval": 1,
                    }),
                ),
                _ => {
                    let i = n.fetch_add(1, Ordering::SeqCst);
                    replies
                        .lock()
                        .expect("lock")
                        .get_mut(i)
                        .and_then(Option::take)
                        .unwrap_or_else(|| Reply::json(500, json!({"error": "server_error"})))
                }
            }
        });
        *base.lock().expect("lock") = srv.url.clone();
        srv
    }

    fn pending(e: &str) -> Reply {
        Reply::json(400, json!({"error": e}))
    }

    #[tokio::test]
    async fn device_flow_polls_through_pending_and_slow_down() {
        let idt = fake_jwt(&json!({"sub": "alice", "exp": 5000}));
        let srv = oidc(vec![
            pending("authorization_pending"),
            pending("slow_down"),
            Reply::json(
                200,
                json!({"id_token": idt, "refresh_token": "rt", "access_token": "at", "token_type": "Bearer"}),
            ),
        ]);
        let mut out = Vec::new();
        let s = device_login(
            &client(),
            &srv.url,
            "git-jit-cli",
            LOGIN_SCOPE,
            &mut out,
            fast(),
        )
        .await
        .expect("login");
        assert_eq!(s.id_token_expires_at, 5000);
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
        assert_eq!(dev.form("client_id").as_deref(), Some("git-jit-cli"));
        assert_eq!(dev.form("scope").as_deref(), Some(LOGIN_SCOPE));
        let polls: Vec<_> = seen.iter().filter(|r| r.target == "/token").collect();
        assert_eq!(polls.len(), 3);
        assert_eq!(
            polls[0].form("grant_type").as_deref(),
            Some(GRANT_TYPE_DEVICE_CODE)
        );
        assert_eq!(polls[0].form("device_code").as_deref(), Some("dc"));
    }

    #[tokio::test]
    async fn device_flow_denied_and_expired() {
        let srv = oidc(vec![pending("access_denied")]);
        let e = device_login(
            &client(),
            &srv.url,
            "c",
            LOGIN_SCOPE,
            &mut Vec::new(),
            fast(),
        )
        .await
        .expect_err("denied");
        assert!(e.to_string().contains("denied"), "{e}");
        // Every poll pending, then slow_down pushes past expires_in (60).
        let mut replies: Vec<Reply> = (0..5).map(|_| pending("authorization_pending")).collect();
        replies.extend((0..10).map(|_| pending("slow_down")));
        let srv = oidc(replies);
        let e = device_login(
            &client(),
            &srv.url,
            "c",
            LOGIN_SCOPE,
            &mut Vec::new(),
            fast(),
        )
        .await
        .expect_err("expired");
        assert!(e.to_string().contains("expired"), "{e}");
        assert!(srv.seen().iter().filter(|r| r.target == "/token").count() < 15);
    }

    fn session(url: &str, exp: i64, refresh: Option<&str>) -> Session {
        Session {
            issuer: url.to_owned(),
            client_id: "git-jit-cli".into(),
            token_endpoint: format!("{url}/token"),
            id_token: Secret::new(fake_jwt(&json!({"sub": "alice", "exp": exp}))),
            id_token_expires_at: exp,
            refresh_token: refresh.map(Secret::new),
        }
    }

    #[tokio::test]
    async fn refreshes_silently_when_about_to_expire() {
        let fresh = fake_jwt(&json!({"sub": "alice", "exp": 9000}));
        let srv = oidc(vec![Reply::json(
            200,
            json!({"id_token": fresh, "access_token": "a"}),
        )]);
        let tmp = tempfile::tempdir().expect("tmp");
        let store = SessionStore::new(tmp.path());
        store
            .save(&session(&srv.url, 1050, Some("rt")))
            .expect("save");
        let got = current_id_token(&store, &client(), &srv.url, || 1000)
            .await
            .expect("refreshed");
        assert_eq!(got.expose(), fresh);
        let saved = store.load().expect("load").expect("some");
        assert_eq!(saved.id_token_expires_at, 9000);
        assert_eq!(
            saved.refresh_token.as_ref().map(Secret::expose),
            Some("rt"),
            "kept when not rotated"
        );
        let post = &srv.seen()[0];
        assert_eq!(post.form("grant_type").as_deref(), Some("refresh_token"));
        assert_eq!(post.form("refresh_token").as_deref(), Some("rt"));
        // Still fresh: no network.
        current_id_token(&store, &client(), &srv.url, || 1000)
            .await
            .expect("cached");
        assert_eq!(srv.seen().len(), 1);
    }

    #[tokio::test]
    async fn session_errors_are_actionable() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = SessionStore::new(tmp.path().join("cfg"));
        let e = current_id_token(&store, &client(), "https://idp", || 0)
            .await
            .expect_err("none");
        assert_eq!(e.to_string(), "not logged in: run `git jit login`");
        store
            .save(&session("https://other", 10_000, None))
            .expect("save");
        let e = current_id_token(&store, &client(), "https://idp", || 0)
            .await
            .expect_err("issuer");
        assert!(matches!(e, LoginError::OtherIssuer { .. }));
        let srv = oidc(vec![Reply::json(400, json!({"error": "invalid_grant"}))]);
        store
            .save(&session(&srv.url, 10, Some("rt")))
            .expect("save");
        let e = current_id_token(&store, &client(), &srv.url, || 1000)
            .await
            .expect_err("expired");
        assert!(e.to_string().contains("run `git jit login`"), "{e}");
        assert!(store.remove().expect("rm"));
        assert!(!store.remove().expect("rm twice"));
    }
}
