//! Who is an admin, and the admin API's narrow state (its handlers are in `http::admin`): list
//! live grants, revoke anything, read the audit trail. Admins are identities the config names (`[admin]`): a verified OIDC ID token of a
//! listed issuer whose claims meet the conditions, or a live broker token of an admin role.
//! Every admin action is itself audited, and so is every refused call (no credential, a
//! forged or expired one, another issuer's, a non-admin's) as `admin.denied`, within the
//! client address's budget of refused credentials: past it the answer is 429, counted, and
//! one `access.limited` event per address and minute summarises the rest.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use jit_proto::RepoPath;
use jit_proto::admin::{GrantInfo, RevokeBy, RevokeRequest, RevokeResponse};
use jit_proto::credential::Credential;
use jit_proto::display::clean;
use jit_proto::token::TOKEN_TYPE;

use crate::audit::{AuditEvent, EventKind};
use crate::clock::Clock;
pub use crate::config::{AdminConfig, AdminIdentityConfig};
use crate::error::ApiError;
use crate::identity::Verifier;
use crate::policy::pattern::ClaimCondition;
use crate::ratelimit::{Limits, address_key};
use crate::recorder::Auditor;
use crate::revocation::identity_not_revoked;
use crate::store::{Grant, GrantStatus, GrantStore, RevokeTarget};
use crate::token::TokenSigner;

/// Longest accepted revocation reason.
pub const MAX_REASON_LEN: usize = 1024;

/// `[admin]` compiled.
#[derive(Debug, Default)]
pub struct AdminPolicy {
    roles: HashSet<String>,
    identities: Vec<(String, Vec<ClaimCondition>)>,
}

impl AdminPolicy {
    /// Compiles `[admin]`; `known_issuer` says whether an issuer name exists. The error
    /// names the key and the problem.
    pub fn compile(
        config: &AdminConfig,
        known_issuer: impl Fn(&str) -> bool,
    ) -> Result<Self, (String, String)> {
        let mut identities = Vec::new();
        for (i, id) in config.identity.iter().enumerate() {
            if !known_issuer(&id.issuer) {
                return Err((
                    format!("admin.identity[{i}].issuer"),
                    format!("no [[issuer]] is named {:?}", id.issuer),
                ));
            }
            if id.claims.is_empty() {
                return Err((
                    format!("admin.identity[{i}].claims"),
                    "needs at least one claim condition; every identity of an issuer is never an admin".into(),
                ));
            }
            let conds = id
                .claims
                .iter()
                .map(|(claim, c)| {
                    ClaimCondition::compile(claim, c)
                        .map_err(|e| (format!("admin.identity[{i}].claims.{claim}"), e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            identities.push((id.issuer.clone(), conds));
        }
        Ok(Self {
            roles: config.roles.iter().cloned().collect(),
            identities,
        })
    }
}

/// The admin API's narrow state.
#[derive(Clone)]
pub struct AdminApi {
    /// Verifies admin broker tokens.
    pub signer: TokenSigner,
    /// Grants and the audit trail.
    pub store: Arc<dyn GrantStore>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Records each admin action.
    pub audit: Auditor,
    /// Verifies admins' ID tokens.
    pub identity: Arc<Verifier>,
    /// Who is an admin.
    pub admins: Arc<AdminPolicy>,
    /// The budget of refused calls per client address.
    pub limits: Arc<Limits>,
}

/// What is known of a refused caller: the verified subject, when it got that far.
#[derive(Debug, Default)]
struct Refused {
    subject: Option<String>,
    idp: Option<String>,
    jti: Option<String>,
}

/// Who is acting.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The admin's verified subject.
    pub subject: String,
    /// The issuer's name.
    pub idp: String,
}

/// A person proven by their credential: a verified ID token of a trusted issuer (with its
/// claims), or a live broker token of an admin role (no claims but subject and issuer).
#[derive(Debug, Clone)]
pub struct Person {
    /// The verified subject.
    pub subject: String,
    /// The issuer's name.
    pub idp: String,
    /// The ID token's verified claims; empty for a broker token.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Whether the person is an admin (`[admin]`).
    pub admin: bool,
    /// Whether they authenticated with an admin role's broker token.
    pub by_broker_token: bool,
    /// When the credential was issued (seconds), when it says.
    pub iat: Option<i64>,
}

fn unauthorized(description: &str) -> ApiError {
    ApiError::OAuth {
        status: StatusCode::UNAUTHORIZED,
        code: "invalid_token",
        description: description.to_owned(),
    }
}

fn forbidden(description: String) -> ApiError {
    ApiError::OAuth {
        status: StatusCode::FORBIDDEN,
        code: "insufficient_scope",
        description,
    }
}

impl AdminApi {
    /// Authenticates an admin from `Authorization: Bearer …`, calling from `addr`. A refusal
    /// is audited as `admin.denied` within the address's budget; past it, a 429.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        addr: SocketAddr,
    ) -> Result<Admin, ApiError> {
        match self.verify_admin(headers).await {
            Ok(admin) => Ok(admin),
            Err((error, who)) => Err(self.refuse(error, who, headers, addr).await),
        }
    }

    /// Authenticates any person (admin or not) from `Authorization: Bearer …`: a fresh ID
    /// token of a trusted issuer, or an admin role's broker token. Refusals are audited and
    /// budgeted as [`Self::authenticate`]'s.
    pub async fn authenticate_person(
        &self,
        headers: &HeaderMap,
        addr: SocketAddr,
    ) -> Result<Person, ApiError> {
        match self.identify(headers).await {
            Ok(p) => Ok(p),
            Err((error, who)) => Err(self.refuse(error, who, headers, addr).await),
        }
    }

    /// Audits a refused call within the address's budget; past it, a 429.
    async fn refuse(
        &self,
        error: ApiError,
        who: Refused,
        headers: &HeaderMap,
        addr: SocketAddr,
    ) -> ApiError {
        // An outage is no refusal of the caller: nothing to charge.
        if matches!(error, ApiError::StoreUnavailable(_)) {
            return error;
        }
        let mut event = AuditEvent::new(EventKind::AdminDenied, self.clock.now_ms());
        event.subject = who.subject;
        event.idp = who.idp;
        event.jti = who.jti;
        event.client = Some(addr.ip().to_string());
        event.user_agent = user_agent(headers);
        event.denial = Some(match &error {
            ApiError::OAuth { description, .. } => description.clone(),
            other => other.to_string(),
        });
        let limiter = &self.limits.refused;
        let key = address_key(&addr.ip().to_string());
        match limiter.take_or_summarise(&key, self.clock.now_ms()).await {
            Ok(()) => {
                // The call is refused either way; a lost record is counted by the auditor.
                let _ = self.audit.record(event).await;
                error
            }
            Err(limited) => {
                self.audit.counts().unaudited("refused_over_limit");
                if let Some(refused) = limited.summary {
                    let mut summary = event
                        .with("via", "admin")
                        .with("limiter", limiter.name())
                        .with("refused", refused)
                        .with("retry_after", limited.retry_after);
                    summary.event = EventKind::AccessLimited;
                    summary.denial = Some(format!(
                        "too many refused admin calls from this address; retry in {} s",
                        limited.retry_after
                    ));
                    let _ = self.audit.record(summary).await;
                }
                ApiError::RateLimited {
                    retry_after: limited.retry_after,
                }
            }
        }
    }

    /// Who the credential of `headers` proves to be, if an admin; the refusal and what is
    /// known of the caller otherwise.
    async fn verify_admin(&self, headers: &HeaderMap) -> Result<Admin, (ApiError, Refused)> {
        let person = self.identify(headers).await?;
        if !person.admin {
            // The subject comes from the identity provider; the description reaches a terminal.
            let e = forbidden(format!(
                "{} (issuer {}) is not an admin",
                clean(&person.subject),
                person.idp
            ));
            let who = Refused {
                subject: Some(person.subject),
                idp: Some(person.idp),
                jti: None,
            };
            return Err((e, who));
        }
        Ok(Admin {
            subject: person.subject,
            idp: person.idp,
        })
    }

    /// Authenticates any person from an ID token (or an admin role's broker token) received
    /// other than in `Authorization` (the console's login); refusals are audited and
    /// budgeted as [`Self::authenticate`]'s.
    pub async fn authenticate_token(
        &self,
        token: &str,
        headers: &HeaderMap,
        addr: SocketAddr,
    ) -> Result<Person, ApiError> {
        match self.identify_token(token).await {
            Ok(p) => Ok(p),
            Err((error, who)) => Err(self.refuse(error, who, headers, addr).await),
        }
    }

    /// Who the credential of `headers` proves to be; the refusal and what is known of the
    /// caller otherwise.
    async fn identify(&self, headers: &HeaderMap) -> Result<Person, (ApiError, Refused)> {
        let nobody = |e: ApiError| (e, Refused::default());
        let needs = "this API needs Authorization: Bearer <ID token or admin broker token>";
        let token = match headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(Credential::parse)
        {
            Some(Ok(Credential::Bearer(token))) => token,
            _ => return Err(nobody(unauthorized(needs))),
        };
        self.identify_token(token.expose()).await
    }

    /// Who `token` (an ID token or a broker token) proves to be.
    async fn identify_token(&self, token: &str) -> Result<Person, (ApiError, Refused)> {
        let state = self;
        let nobody = |e: ApiError| (e, Refused::default());
        let now_ms = state.clock.now_ms();
        let is_broker_token =
            jsonwebtoken::decode_header(token).is_ok_and(|h| h.typ.as_deref() == Some(TOKEN_TYPE));
        if is_broker_token {
            let claims = state
                .signer
                .verify(token, now_ms.div_euclid(1000))
                .map_err(|e| nobody(unauthorized(&format!("broker token refused: {e}"))))?;
            let who = || Refused {
                subject: Some(claims.sub.clone()),
                idp: Some(claims.idp.clone()),
                jti: Some(claims.jti.clone()),
            };
            let status = state
                .store
                .check(&claims, now_ms)
                .await
                .map_err(|e| (e.into(), who()))?;
            if !matches!(status, GrantStatus::Live(_)) {
                return Err((unauthorized("broker token is revoked or expired"), who()));
            }
            if !state.admins.roles.contains(&claims.role) {
                let e = forbidden(format!("role {} is not an admin role", clean(&claims.role)));
                return Err((e, who()));
            }
            return Ok(Person {
                subject: claims.sub,
                idp: claims.idp,
                claims: serde_json::Map::new(),
                admin: true,
                by_broker_token: true,
                iat: Some(claims.iat),
            });
        }
        let id = state
            .identity
            .verify(token, now_ms)
            .await
            .map_err(|e| nobody(unauthorized(&e.to_string())))?;
        let who = || Refused {
            subject: Some(id.subject.clone()),
            idp: Some(id.issuer.clone()),
            jti: None,
        };
        // A person revoked by subject or issuer is no admin either, until they authenticate again.
        identity_not_revoked(state.store.as_ref(), &id)
            .await
            .map_err(|e| (e, who()))?;
        let admin = state.admins.identities.iter().any(|(issuer, conds)| {
            issuer == &id.issuer && conds.iter().all(|c| c.check(&id.claims).is_ok())
        });
        Ok(Person {
            iat: id.claims.get("iat").and_then(serde_json::Value::as_i64),
            subject: id.subject,
            idp: id.issuer,
            claims: id.claims,
            admin,
            by_broker_token: false,
        })
    }

    /// Ends the grants `req` names at once on every replica, in O(1), for `admin` calling
    /// from `addr`: the watermark (one token: its tombstone) is written, then the
    /// `grant.revoked` event, then the answer; the ended records are tidied in the background.
    /// The one path of `POST /v1/revoke` and the console.
    pub async fn revoke(
        &self,
        admin: &Admin,
        req: &RevokeRequest,
        addr: SocketAddr,
        headers: &HeaderMap,
    ) -> Result<RevokeResponse, ApiError> {
        let reason = req.reason.trim();
        if reason.is_empty() {
            return Err(ApiError::invalid_request("a reason is required to revoke"));
        }
        if reason.len() > MAX_REASON_LEN || reason.chars().any(char::is_control) {
            return Err(ApiError::invalid_request(format!(
                "reason must be at most {MAX_REASON_LEN} bytes without control characters"
            )));
        }
        let target = revoke_target(req)?;
        let revocation = self.store.revoke(&target, self.clock.now_ms()).await?;
        let described = match &target {
            RevokeTarget::All => "all".to_owned(),
            t => t.dimension().replacen(':', " ", 1),
        };
        let mut event = self
            .event("grant.revoked", admin, addr, headers)
            .with("target", described.clone())
            .with("at_most", revocation.at_most);
        event.reason = Some(reason.to_owned());
        if let RevokeTarget::Jti(j) = &target {
            event.jti = Some(j.clone());
        }
        if let RevokeTarget::Repo(r) = &target {
            event.repo = Some(r.to_string());
        }
        // The revocation already holds; failing to audit it is reported, not undone.
        self.audit.record(event).await?;
        Ok(RevokeResponse {
            target: described,
            at_most: revocation.at_most,
            tidy_pending: revocation.tidy_pending,
        })
    }

    /// An admin action's audit event, by `admin` from `addr`.
    pub fn event(
        &self,
        kind: &str,
        admin: &Admin,
        addr: SocketAddr,
        headers: &HeaderMap,
    ) -> AuditEvent {
        let mut e = AuditEvent::new(kind, self.clock.now_ms());
        e.subject = Some(admin.subject.clone());
        e.idp = Some(admin.idp.clone());
        e.client = Some(addr.ip().to_string());
        e.user_agent = user_agent(headers);
        e
    }
}

/// What a revocation request names, checked.
fn revoke_target(req: &RevokeRequest) -> Result<RevokeTarget, ApiError> {
    let value = || {
        req.value.clone().filter(|v| !v.is_empty()).ok_or_else(|| {
            ApiError::invalid_request(format!("revoke by {:?} needs a value", req.by))
        })
    };
    Ok(match req.by {
        RevokeBy::Jti => RevokeTarget::Jti(value()?),
        RevokeBy::Subject => RevokeTarget::Subject(value()?),
        RevokeBy::Repo => RevokeTarget::Repo(
            RepoPath::parse(&value()?)
                .map_err(|e| ApiError::invalid_request(format!("value: {e}")))?,
        ),
        RevokeBy::Role => RevokeTarget::Role(value()?),
        RevokeBy::Issuer => RevokeTarget::Issuer(value()?),
        RevokeBy::All if req.value.is_some() => {
            return Err(ApiError::invalid_request("revoke by all takes no value"));
        }
        RevokeBy::All => RevokeTarget::All,
    })
}

/// The caller's user agent, truncated as the doors truncate it.
fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(200).collect())
}

impl From<Grant> for GrantInfo {
    fn from(g: Grant) -> Self {
        GrantInfo {
            jti: g.jti,
            sub: g.sub,
            idp: g.idp,
            role: g.role,
            scope: g.scope,
            refs: g.refs,
            reason: g.reason,
            issued_ms: g.issued_ms,
            exp: g.exp,
            request_id: g.req,
            break_glass: g.break_glass,
        }
    }
}
