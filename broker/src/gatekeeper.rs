//! The one decision on a Git request: who presents which token, and does it — signature, time
//! window, audience, and the store on every request, so a revoked token is refused on the
//! next one — grant the scope the request needs. The HTTP gateway and `/authz` (and any other
//! door) ask [`Gatekeeper::check`]; each answer is `Result<Allowed, Denied>`, and every
//! denial is audited here, in one place, before the door turns it into its reply.
//!
//! Denials are budgeted so that no caller can turn them into a flood of audit events: a
//! refused credential is charged to its client address, a denial of a valid token to the
//! token (`jti`) and to its identity (issuer and subject). Past a budget the answer is 429,
//! counted in `jit_rate_limited_total{limiter}`, and one `access.limited` event per key and
//! minute summarises the refusals since the previous one.

use std::sync::Arc;

use jit_proto::api::{IntrospectedClaims, Introspection};
use jit_proto::credential::Credential;
use jit_proto::{Action, Claims, Scope, Secret};

use crate::audit::{AuditEvent, EventKind};
use crate::clock::Clock;
use crate::ratelimit::Limits;
use crate::recorder::Auditor;
use crate::store::{GrantStatus, GrantStore, StoreError};
use crate::token::TokenSigner;

/// The doors that ask the gatekeeper.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Door {
    /// The Git gateway: sees the whole request, a push's ref updates included.
    #[default]
    Gateway,
    /// A reverse proxy's sub-request (`/authz`): sees the path and headers, never the body.
    Authz,
    /// `jit-ssh-gate` on the Git server's host: an SSH certificate, and a push's ref updates.
    Ssh,
}

impl Door {
    /// `gateway` or `authz`, as the audit trail records it.
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Gateway => "gateway",
            Door::Authz => "authz",
            Door::Ssh => "ssh",
        }
    }

    /// Whether the door sees a push's ref updates (and can enforce ref patterns).
    pub fn sees_ref_updates(self) -> bool {
        matches!(self, Door::Gateway | Door::Ssh)
    }
}

/// Facts about the requester kept in the audit trail.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// The client's address.
    pub client: Option<String>,
    /// The client's user agent (truncated).
    pub user_agent: Option<String>,
    /// The door the request came through.
    pub via: Door,
}

/// Why a request carries no usable credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// No `Authorization` header.
    #[error("no credential was sent")]
    Missing,
    /// An `Authorization` header that is neither `Basic` nor `Bearer`, or is malformed.
    #[error("the Authorization header is not Basic or Bearer, or is malformed")]
    Malformed,
}

/// The token in an `Authorization` value: `Bearer <token>`, or `Basic` with any user name
/// and the token as password, parsed by jit-proto's one [`Credential`] parser (schemes are
/// case-insensitive, RFC 7235 §2.1). The gateway, `/authz` and the admin API all use it.
pub fn credential(value: Option<&[u8]>) -> Result<Secret, CredentialError> {
    let value = value.ok_or(CredentialError::Missing)?;
    let value = std::str::from_utf8(value).map_err(|_| CredentialError::Malformed)?;
    match Credential::parse(value) {
        Ok(c) => Ok(c.into_token()),
        Err(e) if e.is_missing() => Err(CredentialError::Missing),
        Err(_) => Err(CredentialError::Malformed),
    }
}

/// git's 4-byte probe: before a request too large to buffer, git 2.46+ POSTs `0000` (a
/// flush: no command, no want) without the Bearer header the helper gave it, and gives up on a
/// 401. Four bytes can ask for nothing, so both doors let exactly this shape through without a
/// credential: the gateway answers it itself, `/authz` lets the server answer it.
pub fn is_probe_shape(
    rpc: bool,
    has_credential: bool,
    content_encoded: bool,
    content_length: Option<&str>,
) -> bool {
    rpc && !has_credential && !content_encoded && content_length == Some("4")
}

/// A request that may go on.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// The verified, live token's claims.
    pub claims: Claims,
    /// The scope the request needs (covered by the token).
    pub needed: Scope,
}

/// A request that may not, and why; the door answers it with [`Denied::status`],
/// [`Denied::message`] and, for a 401, a challenge naming [`Denied::needed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credential: git's first request. The 401 tells git what to ask the helper for.
    /// Counted, not audited, so anonymous requests cannot fill the audit trail.
    NoCredential {
        /// What the request needs.
        needed: Scope,
    },
    /// A credential was presented and refused: malformed, forged, expired, revoked, unknown.
    InvalidToken {
        /// What the request needs.
        needed: Scope,
        /// Why the token was refused (a fixed text of ours).
        reason: String,
    },
    /// Too many refused credentials from one address: a 429, counted, summarised once a
    /// minute in the audit trail.
    TooManyRefusals {
        /// Seconds until a retry may pass.
        retry_after: u64,
    },
    /// Too many denials of one valid token, or of one identity's tokens: a 429, counted,
    /// summarised once a minute in the audit trail.
    TooManyDenials {
        /// Seconds until a retry may pass.
        retry_after: u64,
    },
    /// A valid token that does not grant what the request needs (or a push that its grant's
    /// ref patterns do not allow).
    Forbidden {
        /// The message git shows.
        message: String,
    },
    /// The store or the audit trail cannot be reached: nothing is allowed.
    Unavailable {
        /// What is unavailable.
        what: &'static str,
    },
}

impl Denied {
    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Denied::NoCredential { .. } | Denied::InvalidToken { .. } => 401,
            Denied::TooManyRefusals { .. } | Denied::TooManyDenials { .. } => 429,
            Denied::Forbidden { .. } => 403,
            Denied::Unavailable { .. } => 503,
        }
    }

    /// The scope a 401's challenge names.
    pub fn needed(&self) -> Option<&Scope> {
        match self {
            Denied::NoCredential { needed } | Denied::InvalidToken { needed, .. } => Some(needed),
            _ => None,
        }
    }

    /// The denial as the audit trail records it: the reason alone for a refused credential,
    /// the message git shows otherwise.
    pub fn audit_text(&self) -> String {
        match self {
            Denied::NoCredential { .. } => CredentialError::Missing.to_string(),
            Denied::InvalidToken { reason, .. } => reason.clone(),
            Denied::Unavailable { what } => {
                format!("{} unavailable", what.trim_start_matches("the "))
            }
            other => other.message(),
        }
    }

    /// The plain-text message git shows to its user.
    pub fn message(&self) -> String {
        match self {
            Denied::NoCredential { needed } => format!(
                "git-jit: {}; this {} needs {needed}",
                CredentialError::Missing,
                what(action_of(needed))
            ),
            Denied::InvalidToken { needed, reason } => format!(
                "git-jit: {reason}; this {} needs {needed}",
                what(action_of(needed))
            ),
            Denied::TooManyRefusals { retry_after } => format!(
                "git-jit: too many refused credentials from this address; retry in {retry_after} s"
            ),
            Denied::TooManyDenials { retry_after } => format!(
                "git-jit: too many refused requests for this token or identity; retry in {retry_after} s"
            ),
            Denied::Forbidden { message } => message.clone(),
            Denied::Unavailable { what } => {
                format!("git-jit: {what} is unavailable; access is refused until it is back")
            }
        }
    }
}

fn what(action: Action) -> &'static str {
    match action {
        Action::Read => "clone or fetch",
        Action::Write => "push",
    }
}

fn action_of(needed: &Scope) -> Action {
    needed.actions.iter().next().unwrap_or(Action::Read)
}

/// The 403 message for a valid token that does not grant what the request needs, with the
/// `git jit request` line that asks for it. On the same repository the line asks for
/// read,write: one token then serves both, and git before 2.41 cannot tell the credential
/// helper which of the two a request needs.
pub fn forbidden_message(granted: &Scope, needed: &Scope) -> String {
    let actions = if granted.repo == needed.repo {
        jit_proto::Actions::READ_WRITE
    } else {
        needed.actions
    };
    format!(
        "git-jit: token grants {granted}; this {} needs {needed}. Run `git jit request --repo {} --action {actions}`",
        what(action_of(needed)),
        needed.repo
    )
}

/// The decision-maker, with the narrow state it needs.
#[derive(Clone)]
pub struct Gatekeeper {
    /// Verifies tokens.
    pub signer: TokenSigner,
    /// Says whether a grant is live.
    pub store: Arc<dyn GrantStore>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Records each decision.
    pub audit: Auditor,
    /// The budgets of refused credentials per address, and of denials per token and
    /// identity.
    pub limits: Arc<Limits>,
}

/// Which budgets a denial is charged to.
#[derive(Clone, Copy)]
enum Charge<'a> {
    /// A refused credential: its client address (and its token and identity, when it verified).
    Refused(Option<&'a Claims>),
    /// A valid token's denial: the token and its identity.
    Valid(&'a Claims),
}

fn event(kind: &str, now_ms: i64, needed: &Scope, info: &RequestInfo) -> AuditEvent {
    let mut e = AuditEvent::new(kind, now_ms)
        .with("action", action_of(needed).as_str())
        .with("via", info.via.as_str());
    e.repo = Some(needed.repo.to_string());
    e.scope = Some(needed.to_string());
    e.client = info.client.clone();
    e.user_agent = info.user_agent.clone();
    e
}

fn with_claims(mut e: AuditEvent, c: &Claims) -> AuditEvent {
    e.subject = Some(c.sub.clone());
    e.idp = Some(c.idp.clone());
    e.role = Some(c.role.clone());
    e.jti = Some(c.jti.clone());
    e.with("granted", c.scope.to_string())
}

impl Gatekeeper {
    /// Records `event` as a denial and hands back `denied`. The request is refused either
    /// way; a lost record is logged and counted by the auditor.
    async fn deny(&self, mut event: AuditEvent, denied: Denied) -> Denied {
        event.denial = Some(denied.audit_text());
        let _ = self.audit.record(event).await;
        denied
    }

    /// A denial within its budgets is audited ([`Gatekeeper::deny`]); past one, it becomes a
    /// 429 that is counted, and summarised by one `access.limited` event per key and window.
    async fn limit(
        &self,
        event: AuditEvent,
        denied: Denied,
        info: &RequestInfo,
        charge: Charge<'_>,
    ) -> Denied {
        match self.charge(info, charge).await {
            Ok(()) => self.deny(event, denied).await,
            Err((limiter, limited)) => {
                let over = match charge {
                    Charge::Refused(_) => {
                        self.audit.counts().unaudited("refused_over_limit");
                        Denied::TooManyRefusals {
                            retry_after: limited.retry_after,
                        }
                    }
                    Charge::Valid(_) => {
                        self.audit.counts().unaudited("denied_over_limit");
                        Denied::TooManyDenials {
                            retry_after: limited.retry_after,
                        }
                    }
                };
                if let Some(refused) = limited.summary {
                    let mut summary = event
                        .with("limiter", limiter)
                        .with("refused", refused)
                        .with("retry_after", limited.retry_after);
                    summary.event = EventKind::AccessLimited;
                    summary.denial = Some(over.audit_text());
                    // The request is refused either way; a lost summary is counted.
                    let _ = self.audit.record(summary).await;
                }
                over
            }
        }
    }

    /// Takes one denial from each budget `charge` names; the first exhausted one's name and
    /// answer otherwise.
    async fn charge(
        &self,
        info: &RequestInfo,
        charge: Charge<'_>,
    ) -> Result<(), (&'static str, crate::ratelimit::Limited)> {
        let now_ms = self.clock.now_ms();
        let l = &self.limits;
        let claims = match charge {
            Charge::Refused(claims) => {
                let key =
                    crate::ratelimit::address_key(info.client.as_deref().unwrap_or("unknown"));
                l.refused
                    .take_or_summarise(&key, now_ms)
                    .await
                    .map_err(|e| (l.refused.name(), e))?;
                claims
            }
            Charge::Valid(claims) => Some(claims),
        };
        if let Some(c) = claims {
            l.denied_token
                .take_or_summarise(&c.jti, now_ms)
                .await
                .map_err(|e| (l.denied_token.name(), e))?;
            l.denied_identity
                .take_or_summarise(&format!("{} {}", c.idp, c.sub), now_ms)
                .await
                .map_err(|e| (l.denied_identity.name(), e))?;
        }
        Ok(())
    }

    /// Decides a request that needs `needed`, presenting `authorization` (the raw header
    /// value). For `authz`, a push under a ref-limited grant is refused: a sub-request cannot
    /// see the refs a push updates. An allowed request is audited by the door once it knows
    /// everything (a push's ref updates), with [`Gatekeeper::allow`].
    pub async fn check(
        &self,
        authorization: Option<&[u8]>,
        needed: &Scope,
        info: &RequestInfo,
    ) -> Result<Allowed, Denied> {
        let now_ms = self.clock.now_ms();
        let token = match credential(authorization) {
            Ok(t) => t,
            Err(CredentialError::Missing) => {
                self.audit.counts().unaudited("no_credential");
                return Err(Denied::NoCredential {
                    needed: needed.clone(),
                });
            }
            Err(e) => {
                let denied = Denied::InvalidToken {
                    needed: needed.clone(),
                    reason: e.to_string(),
                };
                let base = event("access.denied", now_ms, needed, info);
                return Err(self.limit(base, denied, info, Charge::Refused(None)).await);
            }
        };
        let verified = self
            .signer
            .verify(token.expose(), now_ms.div_euclid(1000))
            .map_err(|e| e.to_string());
        self.check_verified(verified, needed, info, now_ms).await
    }

    /// [`Gatekeeper::check`] for an OpenSSH certificate (`jit-ssh-gate`): verified against the
    /// broker's SSH CA, its key id naming the grant; then the same store and scope checks as a
    /// token, on the same budgets.
    pub async fn check_ssh(
        &self,
        certificate: &str,
        needed: &Scope,
        info: &RequestInfo,
    ) -> Result<Allowed, Denied> {
        let now_ms = self.clock.now_ms();
        let verified = self
            .signer
            .verify_ssh(certificate, now_ms.div_euclid(1000))
            .map_err(|e| e.to_string());
        self.check_verified(verified, needed, info, now_ms).await
    }

    /// The decision once the credential's signature and time window were checked (`Err`: why
    /// not): the store says whether the grant is live, then the scope and the door decide.
    async fn check_verified(
        &self,
        verified: Result<Claims, String>,
        needed: &Scope,
        info: &RequestInfo,
        now_ms: i64,
    ) -> Result<Allowed, Denied> {
        // The denial's audit event is only built for a denial: an allowed request (the
        // common case) builds just its own `access.allowed`.
        let denial = || event("access.denied", now_ms, needed, info);
        let claims = match verified {
            Ok(c) => c,
            Err(reason) => {
                let denied = Denied::InvalidToken {
                    needed: needed.clone(),
                    reason,
                };
                return Err(self
                    .limit(denial(), denied, info, Charge::Refused(None))
                    .await);
            }
        };
        let base = || with_claims(denial(), &claims);
        let status = match self.store.check(&claims, now_ms).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, jti = %claims.jti, "grant store unavailable; failing closed");
                let denied = Denied::Unavailable {
                    what: "the grant store",
                };
                return Err(self.deny(base(), denied).await);
            }
        };
        let reason = match status {
            GrantStatus::Live(_) => None,
            GrantStatus::Revoked => Some("token has been revoked"),
            GrantStatus::Expired => Some("token has expired"),
            GrantStatus::Unknown => Some("token is not a live grant"),
        };
        if let Some(reason) = reason {
            let denied = Denied::InvalidToken {
                needed: needed.clone(),
                reason: reason.to_owned(),
            };
            let charge = Charge::Refused(Some(&claims));
            return Err(self.limit(base(), denied, info, charge).await);
        }
        if !claims.scope.covers(needed) {
            let message = forbidden_message(&claims.scope, needed);
            let denied = Denied::Forbidden { message };
            return Err(self
                .limit(base(), denied, info, Charge::Valid(&claims))
                .await);
        }
        if !info.via.sees_ref_updates()
            && needed.actions.contains(Action::Write)
            && !claims.refs.is_empty()
        {
            // Refused already at the ref advertisement, where git still shows the message.
            let patterns: Vec<&str> = claims.refs.iter().map(|p| p.as_str()).collect();
            let message = format!(
                "git-jit: this grant is limited to refs {}; ref-limited pushes must go through the git-jit gateway",
                patterns.join(", ")
            );
            let denied = Denied::Forbidden { message };
            return Err(self
                .limit(base(), denied, info, Charge::Valid(&claims))
                .await);
        }
        Ok(Allowed {
            claims,
            needed: needed.clone(),
        })
    }

    /// Records `access.allowed` for `allowed` (with a push's ref `updates`); if the record
    /// cannot be written the request is refused.
    pub async fn allow(
        &self,
        allowed: &Allowed,
        info: &RequestInfo,
        updates: Option<serde_json::Value>,
    ) -> Result<(), Denied> {
        let now_ms = self.clock.now_ms();
        let mut e = with_claims(
            event("access.allowed", now_ms, &allowed.needed, info),
            &allowed.claims,
        );
        if let Some(u) = updates {
            e = e.with("updates", u);
        }
        self.audit.record(e).await.map_err(|_| Denied::Unavailable {
            what: "the audit trail",
        })
    }

    /// Records `access.denied` for a verified token refused after [`Gatekeeper::check`] (a
    /// push whose ref updates the grant does not allow), within the token's and identity's
    /// budgets of denials. The push is refused either way; past a budget the answer is the
    /// returned 429 instead of git's report.
    pub async fn refuse_push(
        &self,
        allowed: &Allowed,
        info: &RequestInfo,
        denial: String,
        updates: serde_json::Value,
    ) -> Option<Denied> {
        let now_ms = self.clock.now_ms();
        let mut e = with_claims(
            event("access.denied", now_ms, &allowed.needed, info),
            &allowed.claims,
        )
        .with("updates", updates);
        e.denial = Some(denial.clone());
        let denied = Denied::Forbidden { message: denial };
        match self
            .limit(e, denied, info, Charge::Valid(&allowed.claims))
            .await
        {
            d @ Denied::TooManyDenials { .. } => Some(d),
            _ => None,
        }
    }

    /// RFC 7662: `active: true` with the claims for a live token; only `active: false` for
    /// expired, revoked, forged or garbage input. A store outage is an error, never a guess.
    pub async fn introspect(&self, token: &Secret) -> Result<Introspection, StoreError> {
        let inactive = Introspection {
            active: false,
            claims: None,
        };
        let now_ms = self.clock.now_ms();
        let Ok(claims) = self.signer.verify(token.expose(), now_ms.div_euclid(1000)) else {
            return Ok(inactive);
        };
        match self.store.check(&claims, now_ms).await? {
            GrantStatus::Live(_) => Ok(Introspection {
                active: true,
                claims: Some(IntrospectedClaims {
                    token_type: "Bearer".to_owned(),
                    scope: claims.scope.to_string(),
                    claims,
                }),
            }),
            _ => Ok(inactive),
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    #[test]
    fn credentials_from_bearer_and_basic() {
        let get = |v: &str| credential(Some(v.as_bytes())).map(|s| s.expose().to_owned());
        assert_eq!(get("Bearer abc"), Ok("abc".into()));
        assert_eq!(get("bearer  abc "), Ok("abc".into()));
        assert_eq!(get("BEARER abc"), Ok("abc".into()));
        let basic = format!("Basic {}", STANDARD.encode("anyone:tok:en"));
        assert_eq!(get(&basic), Ok("tok:en".into()));
        assert_eq!(credential(None).err(), Some(CredentialError::Missing));
        let empty = format!("Basic {}", STANDARD.encode("user:"));
        assert_eq!(get(&empty).err(), Some(CredentialError::Missing));
        for bad in ["Digest x", "Bearer", "Basic !!!", "Basic dXNlcg=="] {
            assert_eq!(get(bad).err(), Some(CredentialError::Malformed), "{bad}");
        }
        assert_eq!(
            credential(Some(b"Bearer \xff")).err(),
            Some(CredentialError::Malformed)
        );
    }

    #[test]
    fn probe_shape_is_exactly_a_credential_less_four_byte_rpc() {
        assert!(is_probe_shape(true, false, false, Some("4")));
        assert!(!is_probe_shape(false, false, false, Some("4")));
        assert!(!is_probe_shape(true, true, false, Some("4")));
        assert!(!is_probe_shape(true, false, true, Some("4")));
        assert!(!is_probe_shape(true, false, false, Some("5")));
        assert!(!is_probe_shape(true, false, false, None));
    }

    #[test]
    fn denials_say_what_is_needed() {
        let needed = Scope::parse("repo:acme/api:write").expect("scope");
        let d = Denied::NoCredential {
            needed: needed.clone(),
        };
        assert_eq!(d.status(), 401);
        assert_eq!(
            d.message(),
            "git-jit: no credential was sent; this push needs repo:acme/api:write"
        );
        assert_eq!(d.needed(), Some(&needed));
        let granted = Scope::parse("repo:acme/api:read").expect("scope");
        assert_eq!(
            forbidden_message(&granted, &needed),
            "git-jit: token grants repo:acme/api:read; this push needs repo:acme/api:write. Run `git jit request --repo acme/api --action read,write`"
        );
        assert_eq!(Denied::TooManyRefusals { retry_after: 3 }.status(), 429);
        assert_eq!(Denied::Unavailable { what: "x" }.status(), 503);
    }

    mod budget {
        use std::sync::Arc;

        use axum::body::Body;
        use axum::http::{Request, StatusCode, header};
        use tower::ServiceExt as _;

        use super::super::*;
        use crate::audit::AuditQuery;
        use crate::clock::ManualClock;
        use crate::state::AppState;
        use crate::store::Grant;
        use crate::store::memory::MemoryStore;

        const NOW_MS: i64 = 1_700_000_000_000;

        struct World {
            state: AppState,
            store: Arc<MemoryStore>,
            clock: Arc<ManualClock>,
        }

        fn world() -> World {
            let store = Arc::new(MemoryStore::new(10_000));
            let clock = Arc::new(ManualClock::new(NOW_MS));
            World {
                state: AppState::for_tests(store.clone(), clock.clone()),
                store,
                clock,
            }
        }

        impl World {
            async fn token(&self, sub: &str) -> (String, String) {
                let now = NOW_MS / 1000;
                let claims = Claims {
                    iss: "https://broker.test".into(),
                    aud: "git-jit".into(),
                    sub: sub.into(),
                    idp: "corp".into(),
                    iat: now,
                    nbf: now,
                    exp: now + 3600,
                    jti: crate::token::new_jti().expect("jti"),
                    scope: Scope::parse("repo:acme/api:read").expect("scope"),
                    refs: vec![],
                    role: "dev".into(),
                    reason: None,
                    req: None,
                };
                self.store
                    .put(&Grant::from_claims(&claims, NOW_MS - 1), NOW_MS)
                    .await
                    .expect("put");
                let t = self.state.signer.sign(&claims).expect("sign");
                (t.expose().to_owned(), claims.jti)
            }

            /// `n` requests for a repository the token may not read: (403s, 429s).
            async fn deny(&self, token: &str, n: usize) -> (usize, usize) {
                let (mut forbidden, mut limited) = (0, 0);
                for _ in 0..n {
                    let req = Request::get("/acme/secret.git/info/refs?service=git-upload-pack")
                        .header(header::AUTHORIZATION, format!("Bearer {token}"))
                        .body(Body::empty())
                        .expect("request");
                    let r = crate::app(self.state.clone())
                        .oneshot(req)
                        .await
                        .expect("infallible");
                    match r.status() {
                        StatusCode::FORBIDDEN => forbidden += 1,
                        StatusCode::TOO_MANY_REQUESTS => {
                            assert!(r.headers().get(header::RETRY_AFTER).is_some());
                            limited += 1;
                        }
                        other => panic!("unexpected {other}"),
                    }
                }
                (forbidden, limited)
            }

            async fn events(&self, kind: &str) -> Vec<AuditEvent> {
                self.store
                    .read_audit(&AuditQuery {
                        event: Some(kind.into()),
                        limit: usize::MAX,
                        ..AuditQuery::default()
                    })
                    .await
                    .expect("audit")
            }
        }

        /// One token: its burst of denials is audited, the rest are 429s, summarised once per
        /// window with the count since the previous summary; time refills the budget.
        #[tokio::test]
        async fn a_tokens_denials_past_its_budget_are_429s_summarised_per_window() {
            let w = world();
            let (token, jti) = w.token("mallory").await;
            assert_eq!(w.deny(&token, 40).await, (30, 10));
            assert_eq!(w.events("access.denied").await.len(), 30);
            let summaries = w.events("access.limited").await;
            assert_eq!(summaries.len(), 1);
            assert_eq!(summaries[0].jti.as_deref(), Some(jti.as_str()));
            assert_eq!(summaries[0].data["limiter"], "denied_token");
            assert_eq!(summaries[0].data["refused"], 1);
            assert_eq!(summaries[0].lane, Some(crate::audit::Lane::Traffic));

            w.clock.advance_ms(60_000);
            assert_eq!(w.deny(&token, 31).await, (30, 1));
            let summaries = w.events("access.limited").await;
            assert_eq!(summaries.len(), 2);
            assert_eq!(
                summaries[1].data["refused"], 10,
                "9 in between and this one"
            );
            let text = w.state.audit.metrics().encode();
            assert!(
                text.contains("jit_rate_limited_total{limiter=\"denied_token\"} 11"),
                "{text}"
            );
        }

        /// Many tokens of one identity share the identity's budget.
        #[tokio::test]
        async fn an_identitys_tokens_share_one_budget() {
            let w = world();
            for _ in 0..2 {
                let (token, _) = w.token("mallory").await;
                assert_eq!(w.deny(&token, 25).await, (25, 0));
            }
            let (token, _) = w.token("mallory").await;
            assert_eq!(w.deny(&token, 25).await, (10, 15));
            let summaries = w.events("access.limited").await;
            assert_eq!(summaries.len(), 1);
            assert_eq!(summaries[0].data["limiter"], "denied_identity");
            // Another identity is not held back.
            let (other, _) = w.token("alice").await;
            assert_eq!(w.deny(&other, 1).await, (1, 0));
        }
    }
}
