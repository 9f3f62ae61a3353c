//! `POST /oauth/token`: the RFC 8693 token exchange. An OIDC ID token or CI JWT goes in; a
//! minute-scoped, repository-bound git-jit token comes out — or an RFC 6749 §5.2 error that
//! says exactly what failed.
//!
//! Order: client rate limit → parse → verify the subject token → identity rate limit and
//! identity revocation marks (asked at once) → policy decision → sign → store the grant → audit `grant.issued` → respond. If the audit
//! cannot be written, the grant is revoked and the client gets a 503: there is never an
//! unaudited grant. Every refusal after the client rate limit is audited as `grant.denied`
//! and changes nothing else. Tokens never reach the log or the audit trail; only `jti` does.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use jit_proto::api::{TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_SSH_CERTIFICATE, TokenResponse};
use jit_proto::approval::RequestId;
use jit_proto::exchange::{ApprovalAsk, ExchangeForm, ExchangeRequest, Ttl};
use jit_proto::ssh::SshPublicKey;
use jit_proto::{Claims, RefPattern, Secret};

use crate::approval::Approvals;
use crate::audit::AuditEvent;
use crate::clock::Clock;
pub use crate::config::ExchangeConfig;
use crate::error::ApiError;
use crate::identity::{IdentityError, VerifiedIdentity, Verifier};
use crate::policy::{self, CompiledPolicy, Decision, Denial, DenialKind, Gate, Request};
use crate::ratelimit::Limits;
use crate::recorder::Auditor;
use crate::revocation::identity_not_revoked;
use crate::store::{Grant, GrantStore, RevokeTarget};
use crate::token::{self, TokenSigner};

mod approval;
pub mod hint;
#[cfg(test)]
mod tests;

pub use jit_proto::exchange::{MAX_REASON_LEN, MAX_REFS};
/// Longest user agent recorded.
const MAX_USER_AGENT_LEN: usize = 256;

/// The form body of `POST /oauth/token`: jit-proto's, the same type the helper sends.
pub type TokenRequest = ExchangeForm;

/// Who sent a request, for limits and the audit.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client's address (or `unknown`).
    pub client: String,
    /// The client's user agent, cut.
    pub user_agent: Option<String>,
}

impl Caller {
    /// The caller of a request from `peer` with `headers`; with `trust_forwarded_for`, the
    /// last `X-Forwarded-For` entry names the client — the last entry of the last header
    /// line, because a proxy may append a line of its own after the one the client sent.
    pub fn of(trust_forwarded_for: bool, peer: Option<IpAddr>, headers: &HeaderMap) -> Self {
        let forwarded = trust_forwarded_for
            .then(|| headers.get_all("x-forwarded-for").iter().next_back())
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok());
        let client = forwarded
            .or(peer)
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| cut(v, MAX_USER_AGENT_LEN));
        Self { client, user_agent }
    }
}

/// The token exchange, with the narrow state it needs.
#[derive(Clone)]
pub struct Exchanger {
    /// Signs the tokens.
    pub signer: TokenSigner,
    /// Keeps the grants.
    pub store: Arc<dyn GrantStore>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Records each decision.
    pub audit: Auditor,
    /// Verifies subject tokens.
    pub identity: Arc<Verifier>,
    /// Decides.
    pub policy: Arc<CompiledPolicy>,
    /// Abuse limits.
    pub limits: Arc<Limits>,
    /// `[exchange]`.
    pub config: ExchangeConfig,
    /// Tells the approvers' webhooks of new requests and break-glass use.
    pub notifier: crate::notify::Notifier,
}

fn oauth(status: StatusCode, code: &'static str, description: impl Into<String>) -> ApiError {
    ApiError::OAuth {
        status,
        code,
        description: description.into(),
    }
}

/// Parses a lifetime (`30m`, `2h`, or bare minutes) into minutes.
pub fn parse_ttl(s: &str) -> Result<u32, String> {
    Ttl::parse(s).map(Ttl::minutes).map_err(|e| e.to_string())
}

/// Parses space-separated ref patterns.
pub fn parse_refs(s: &str) -> Result<Vec<RefPattern>, String> {
    jit_proto::exchange::parse_refs(s).map_err(|e| e.to_string())
}

/// A request that parsed, with the subject token still unverified.
struct Parsed {
    subject_token: Secret,
    request: Request,
    approval: ApprovalAsk,
    ssh_key: Option<SshPublicKey>,
}

fn parse(f: TokenRequest) -> Result<Parsed, ApiError> {
    let r = ExchangeRequest::try_from(f).map_err(|e| {
        let status = StatusCode::BAD_REQUEST;
        oauth(status, e.oauth_code(), e.to_string())
    })?;
    Ok(Parsed {
        subject_token: r.subject_token,
        request: Request {
            scope: r.scope,
            role: r.role,
            ttl: r.ttl.map(Ttl::minutes),
            reason: r.reason,
            refs: r.refs,
        },
        approval: r.approval,
        ssh_key: r.ssh_public_key,
    })
}

/// Refuses an SSH certificate request this broker cannot serve (no CA, a key that does not
/// decode) before anything is decided or stored.
fn check_ssh_key(signer: &TokenSigner, key: Option<&SshPublicKey>) -> Result<(), ApiError> {
    let Some(key) = key else { return Ok(()) };
    let bad = |m: &str| oauth(StatusCode::BAD_REQUEST, "invalid_request", m);
    if !signer.has_ssh_ca() {
        return Err(bad(
            "this broker issues no SSH certificates (it has no SSH CA key)",
        ));
    }
    ssh_key::PublicKey::from_openssh(key.as_str())
        .map(|_| ())
        .map_err(|_| bad("public_key does not decode as an OpenSSH public key"))
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn identity_error(e: &IdentityError) -> ApiError {
    if e.is_unavailable() {
        oauth(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            e.to_string(),
        )
    } else {
        oauth(StatusCode::BAD_REQUEST, "invalid_grant", e.to_string())
    }
}

/// The client's error for a policy refusal: the policy's words, and what to run next when
/// the requester can do something about it.
fn denial_error(policy: &CompiledPolicy, d: &Denial, request: &Request) -> ApiError {
    let (status, code) = match d.kind {
        DenialKind::InvalidRequest | DenialKind::UnknownRole => {
            (StatusCode::BAD_REQUEST, "invalid_request")
        }
        DenialKind::Scope | DenialKind::Refs => (StatusCode::BAD_REQUEST, "invalid_scope"),
        DenialKind::Identity
        | DenialKind::Lifetime
        | DenialKind::Reason
        | DenialKind::Approval
        | DenialKind::NoRole => (StatusCode::FORBIDDEN, "access_denied"),
    };
    let next = hint::denial_hint(policy, d, request);
    oauth(status, code, hint::with_hint(&d.message, next.as_ref()))
}

/// One exchange in progress: who asked, when.
struct Exchange<'a> {
    x: &'a Exchanger,
    caller: Caller,
    now_ms: i64,
    /// Certify this key instead of issuing a Bearer token.
    ssh_key: Option<SshPublicKey>,
}

impl Exchange<'_> {
    /// Records a `grant.denied` event and returns `error` for the client. A failure to
    /// record is logged by the auditor; the request is refused either way.
    async fn deny(
        &self,
        request: Option<&Request>,
        identity: Option<&VerifiedIdentity>,
        role: Option<&str>,
        error: ApiError,
    ) -> ApiError {
        let mut e = AuditEvent::new("grant.denied", self.now_ms);
        e.client = Some(self.caller.client.clone());
        e.user_agent = self.caller.user_agent.clone();
        if let ApiError::OAuth {
            code, description, ..
        }
        | ApiError::Approval {
            code, description, ..
        } = &error
        {
            e.denial = Some(description.clone());
            e = e.with("error", *code);
        } else {
            e.denial = Some(error.to_string());
        }
        if let Some(r) = request {
            e.scope = Some(r.scope.to_string());
            e.repo = Some(r.scope.repo.to_string());
            e.reason = r.reason.clone();
            e.role = role.map(str::to_owned).or_else(|| r.role.clone());
            if let Some(t) = r.ttl {
                e = e.with("ttl_minutes", t);
            }
        }
        if let Some(i) = identity {
            e.subject = Some(i.subject.clone());
            e.idp = Some(i.issuer.clone());
        }
        let _ = self.x.audit.record(e).await;
        error
    }
}

impl Exchanger {
    /// The approval service on this exchanger's store, audit and policy.
    pub fn approvals(&self) -> Approvals {
        Approvals {
            store: self.store.clone(),
            clock: self.clock.clone(),
            audit: self.audit.clone(),
            policy: self.policy.clone(),
            notifier: self.notifier.clone(),
            broker: self.signer.issuer_arc(),
        }
    }

    /// One RFC 8693 exchange by `caller` of `form` (already an error when the body did not
    /// parse as a form): the response, or the error the client gets (audited).
    pub async fn exchange(
        &self,
        caller: Caller,
        form: Result<TokenRequest, ApiError>,
    ) -> Result<TokenResponse, ApiError> {
        let now_ms = self.clock.now_ms();
        let mut x = Exchange {
            caller,
            x: self,
            now_ms,
            ssh_key: None,
        };
        self.limits
            .client
            .check(&crate::ratelimit::address_key(&x.caller.client), now_ms)
            .await
            .map_err(ApiError::from)?;
        let parsed = match form.and_then(parse) {
            Ok(p) => p,
            Err(e) => return Err(x.deny(None, None, None, e).await),
        };
        if let Err(e) = check_ssh_key(&self.signer, parsed.ssh_key.as_ref()) {
            return Err(x.deny(Some(&parsed.request), None, None, e).await);
        }
        x.ssh_key = parsed.ssh_key.clone();
        let request = &parsed.request;
        let token = parsed.subject_token.expose();
        let identity = match self.identity.verify(token, now_ms).await {
            Ok(i) => i,
            Err(ie) => {
                // A refused identity token is charged to its address's budget of refused
                // credentials (valid tokens never draw on it, so a CI fleet behind one egress
                // is not slowed): past it, a 429 counted in `/metrics`, not one audit event
                // per forged token.
                let address = crate::ratelimit::address_key(&x.caller.client);
                if let Err(refusal) = self.limits.refused.check(&address, now_ms).await {
                    return Err(ApiError::from(refusal));
                }
                return Err(x.deny(Some(request), None, None, identity_error(&ie)).await);
            }
        };
        // The identity's budget and its revocation marks are independent reads on two
        // connections: asked at once, one round trip of waiting instead of two. A budget
        // refusal still wins (the budget is charged either way, as it was when they ran in
        // turn).
        let limit_key = identity.limit_key();
        let (limited, revoked) = tokio::join!(
            self.limits.identity.check(&limit_key, now_ms),
            identity_not_revoked(self.store.as_ref(), &identity),
        );
        if let Err(refusal) = limited {
            let e = ApiError::from(refusal);
            return Err(x.deny(Some(request), Some(&identity), None, e).await);
        }
        if let Err(e) = revoked {
            return Err(x.deny(Some(request), Some(&identity), None, e).await);
        }
        if let ApprovalAsk::Poll(id) = &parsed.approval {
            return x.poll(&identity, request, id).await;
        }
        let now = now_ms.div_euclid(1000);
        let decision = match policy::decide(&self.policy, &identity, request, now) {
            Ok(d) => d,
            Err(d) => {
                let e = denial_error(&self.policy, &d, request);
                return Err(x
                    .deny(Some(request), Some(&identity), d.role.as_deref(), e)
                    .await);
            }
        };
        match decision.gate {
            Gate::Open => {
                let jti = token::new_jti().map_err(|e| ApiError::Internal(e.to_string()))?;
                issue(&x, &identity, decision, Extra::plain(jti)).await
            }
            Gate::Approval => Err(x.gate(&identity, request, &parsed.approval, decision).await),
            Gate::BreakGlass => x.break_glass(&identity, decision).await,
        }
    }
}

/// What a grant carries besides its decision: its token id, and for an approved request the
/// request's id and approval time, and whether it was break-glass.
struct Extra {
    jti: String,
    request: Option<RequestId>,
    approved_ms: Option<i64>,
    break_glass: bool,
}

impl Extra {
    fn plain(jti: String) -> Self {
        Self {
            jti,
            request: None,
            approved_ms: None,
            break_glass: false,
        }
    }
}

/// Signs, stores and audits a granted decision.
async fn issue(
    x: &Exchange<'_>,
    identity: &VerifiedIdentity,
    decision: Decision,
    extra: Extra,
) -> Result<TokenResponse, ApiError> {
    let (state, caller, now_ms) = (x.x, &x.caller, x.now_ms);
    let jti = extra.jti;
    let claims = Claims {
        iss: state.signer.issuer().to_owned(),
        aud: state.signer.audience().to_owned(),
        sub: identity.subject.clone(),
        idp: identity.issuer.clone(),
        iat: decision.iat,
        nbf: decision.iat,
        exp: decision.exp,
        jti: jti.clone(),
        scope: decision.scope.clone(),
        refs: decision.refs.clone(),
        role: decision.role.clone(),
        reason: decision.reason.clone(),
        req: extra.request.as_ref().map(ToString::to_string),
    };
    let (signed, certified) = match &x.ssh_key {
        None => (
            state
                .signer
                .sign(&claims)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
            None,
        ),
        Some(key) => {
            let (cert, fingerprint) = state
                .signer
                .sign_ssh(&claims, key.as_str())
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            (Secret::new(cert), Some(fingerprint))
        }
    };
    let grant = Grant {
        break_glass: extra.break_glass,
        ..Grant::from_claims(&claims, now_ms)
    };
    state.store.put(&grant, now_ms).await?;

    let mut event = AuditEvent::new("grant.issued", now_ms)
        .with(
            "claims",
            serde_json::Value::Object(decision.deciding_claims),
        )
        .with("ttl_minutes", decision.ttl_minutes)
        .with("exp", decision.exp)
        .with(
            "refs",
            decision
                .refs
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect::<Vec<_>>(),
        );
    event.subject = Some(claims.sub.clone());
    event.idp = Some(claims.idp.clone());
    event.repo = Some(claims.scope.repo.to_string());
    event.scope = Some(claims.scope.to_string());
    event.role = Some(claims.role.clone());
    event.jti = Some(jti.clone());
    event.reason = claims.reason.clone();
    event.client = Some(caller.client.clone());
    event.user_agent = caller.user_agent.clone();
    if let Some(id) = &extra.request {
        event = event.with("request_id", id.as_str());
    }
    if let Some(at) = extra.approved_ms {
        event = event.with("approved_at", at.div_euclid(1000));
    }
    if extra.break_glass {
        event = event.with("break_glass", true).with("review", true);
    }
    if let Some(fingerprint) = &certified {
        event = event
            .with("credential", "ssh-certificate")
            .with("ssh_key", fingerprint.as_str());
    }
    if let Err(e) = state.audit.record(event).await {
        // Never an unaudited grant: take it back before answering.
        if let Err(re) = state
            .store
            .revoke(&RevokeTarget::Jti(jti.clone()), now_ms)
            .await
        {
            tracing::error!(%jti, error = %re, "could not revoke a grant whose audit failed");
        }
        return Err(ApiError::StoreUnavailable(e));
    }
    let (issued_token_type, token_type) = match certified {
        None => (TOKEN_TYPE_ACCESS_TOKEN, "Bearer"),
        // RFC 8693 §2.2.1: `N_A` when the issued token is not an access token.
        Some(_) => (TOKEN_TYPE_SSH_CERTIFICATE, "N_A"),
    };
    let body = TokenResponse {
        access_token: signed,
        issued_token_type: issued_token_type.to_owned(),
        token_type: token_type.to_owned(),
        expires_in: decision.exp - decision.iat,
        scope: claims.scope.to_string(),
        jti: Some(jti),
    };
    Ok(body)
}
