//! `POST /oauth/token`: the RFC 8693 token exchange. An OIDC ID token or CI JWT goes in; a
//! minute-scoped, repository-bound git-jit token comes out — or an RFC 6749 §5.2 error that
//! says exactly what failed.
//!
//! Order: client rate limit → parse → verify the subject token → identity rate limit →
//! policy decision → sign → store the grant → audit `grant.issued` → respond. If the audit
//! cannot be written, the grant is revoked and the client gets a 503: there is never an
//! unaudited grant. Every refusal after the client rate limit is audited as `grant.denied`
//! and changes nothing else. Tokens never reach the log or the audit trail; only `jti` does.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use jit_proto::api::{
    GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT,
    TokenResponse,
};
use jit_proto::{Claims, RefPattern, Scope, Secret};
use serde::Deserialize;

use crate::audit::AuditEvent;
use crate::clock::Clock;
pub use crate::config::ExchangeConfig;
use crate::error::ApiError;
use crate::identity::{IdentityError, MAX_SUBJECT_TOKEN_LEN, VerifiedIdentity, Verifier};
use crate::policy::{self, CompiledPolicy, Decision, Denial, DenialKind, Request};
use crate::ratelimit::Limits;
use crate::recorder::Auditor;
use crate::revocation::identity_not_revoked;
use crate::store::{Grant, GrantStore, RevokeTarget};
use crate::token::{self, TokenSigner};

#[cfg(test)]
mod tests;

/// Longest reason accepted, in bytes.
pub const MAX_REASON_LEN: usize = 1024;
/// Most ref patterns one request may name.
pub const MAX_REFS: usize = 32;
/// Longest lifetime the `ttl` parameter can express, in minutes (roles allow far less).
const MAX_TTL_PARAM_MINUTES: u32 = 100_000;
/// Longest user agent recorded.
const MAX_USER_AGENT_LEN: usize = 256;

/// The form body of `POST /oauth/token`.
#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    subject_token: Option<Secret>,
    subject_token_type: Option<String>,
    requested_token_type: Option<String>,
    actor_token: Option<Secret>,
    scope: Option<String>,
    role: Option<String>,
    reason: Option<String>,
    ttl: Option<String>,
    refs: Option<String>,
}

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
    /// last `X-Forwarded-For` entry names the client.
    pub fn of(trust_forwarded_for: bool, peer: Option<IpAddr>, headers: &HeaderMap) -> Self {
        let forwarded = trust_forwarded_for
            .then(|| headers.get("x-forwarded-for"))
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
}

fn oauth(status: StatusCode, code: &'static str, description: impl Into<String>) -> ApiError {
    ApiError::OAuth {
        status,
        code,
        description: description.into(),
    }
}

/// Parses a lifetime: `30m`, `2h` or bare minutes (`45`).
pub fn parse_ttl(s: &str) -> Result<u32, String> {
    let bad =
        || format!("ttl {s:?} must be minutes ('30', '30m') or hours ('2h'), at least 1 minute");
    let (digits, factor) = match s.strip_suffix('h') {
        Some(d) => (d, 60),
        None => (s.strip_suffix('m').unwrap_or(s), 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u32 = digits.parse().map_err(|_| bad())?;
    match n.checked_mul(factor) {
        Some(0) => Err(bad()),
        Some(m) if m <= MAX_TTL_PARAM_MINUTES => Ok(m),
        _ => Err(format!("ttl {s:?} is far longer than any role allows")),
    }
}

/// Parses space-separated ref patterns.
pub fn parse_refs(s: &str) -> Result<Vec<RefPattern>, String> {
    let refs: Vec<&str> = s.split_whitespace().collect();
    if refs.len() > MAX_REFS {
        return Err(format!("at most {MAX_REFS} ref patterns may be requested"));
    }
    refs.into_iter()
        .map(|r| RefPattern::parse(r).map_err(|e| e.to_string()))
        .collect()
}

/// A request that parsed, with the subject token still unverified.
struct Parsed {
    subject_token: Secret,
    request: Request,
}

fn parse(f: TokenRequest) -> Result<Parsed, ApiError> {
    let bad = |d: String| ApiError::invalid_request(d);
    match f.grant_type.as_deref() {
        None => return Err(bad("missing form parameter 'grant_type'".into())),
        Some(GRANT_TYPE_TOKEN_EXCHANGE) => {}
        Some(_) => {
            return Err(oauth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type must be {GRANT_TYPE_TOKEN_EXCHANGE}"),
            ));
        }
    }
    let subject_token = f
        .subject_token
        .filter(|t| !t.expose().is_empty())
        .ok_or_else(|| bad("missing form parameter 'subject_token'".into()))?;
    if subject_token.expose().len() > MAX_SUBJECT_TOKEN_LEN {
        return Err(bad(format!(
            "subject_token is larger than {MAX_SUBJECT_TOKEN_LEN} bytes"
        )));
    }
    match f.subject_token_type.as_deref() {
        Some(TOKEN_TYPE_ID_TOKEN | TOKEN_TYPE_JWT) => {}
        _ => {
            return Err(bad(format!(
                "subject_token_type must be {TOKEN_TYPE_ID_TOKEN} or {TOKEN_TYPE_JWT}"
            )));
        }
    }
    if f.requested_token_type
        .as_deref()
        .is_some_and(|t| t != TOKEN_TYPE_ACCESS_TOKEN)
    {
        return Err(bad(format!(
            "requested_token_type must be {TOKEN_TYPE_ACCESS_TOKEN}"
        )));
    }
    if f.actor_token.is_some() {
        return Err(bad("actor_token (delegation) is not supported".into()));
    }
    let scope_text = f.scope.unwrap_or_default();
    let scopes: Vec<&str> = scope_text.split_whitespace().collect();
    let invalid_scope = |d: String| oauth(StatusCode::BAD_REQUEST, "invalid_scope", d);
    let scope = match scopes.as_slice() {
        [] => {
            return Err(invalid_scope(
                "a scope is required: repo:<path>:<read|write|read,write>".into(),
            ));
        }
        [one] => Scope::parse(one)
            .map_err(|e| invalid_scope(format!("scope {:?} is invalid: {e}", cut(one, 200))))?,
        _ => {
            return Err(invalid_scope(
                "exactly one repo: scope may be requested".into(),
            ));
        }
    };
    let role = f.role.filter(|r| !r.is_empty());
    if role
        .as_deref()
        .is_some_and(|r| policy::check_name("role", r).is_err())
    {
        return Err(bad("role must be a role name (A-Z a-z 0-9 _ - .)".into()));
    }
    let ttl = f
        .ttl
        .filter(|t| !t.is_empty())
        .map(|t| parse_ttl(&t))
        .transpose()
        .map_err(bad)?;
    let refs = parse_refs(f.refs.as_deref().unwrap_or_default()).map_err(bad)?;
    let reason = f
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if let Some(r) = &reason {
        if r.len() > MAX_REASON_LEN {
            return Err(bad(format!("reason is longer than {MAX_REASON_LEN} bytes")));
        }
        if r.chars().any(char::is_control) {
            return Err(bad("reason must not contain control characters".into()));
        }
    }
    Ok(Parsed {
        subject_token,
        request: Request {
            scope,
            role,
            ttl,
            reason,
            refs,
        },
    })
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

fn denial_error(d: &Denial) -> ApiError {
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
    oauth(status, code, d.message.clone())
}

/// One exchange in progress: who asked, when.
struct Exchange<'a> {
    x: &'a Exchanger,
    caller: Caller,
    now_ms: i64,
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
    /// One RFC 8693 exchange by `caller` of `form` (already an error when the body did not
    /// parse as a form): the response, or the error the client gets (audited).
    pub async fn exchange(
        &self,
        caller: Caller,
        form: Result<TokenRequest, ApiError>,
    ) -> Result<TokenResponse, ApiError> {
        let now_ms = self.clock.now_ms();
        let x = Exchange {
            caller,
            x: self,
            now_ms,
        };
        self.limits
            .client
            .take(&crate::ratelimit::address_key(&x.caller.client), now_ms)
            .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
        let parsed = match form.and_then(parse) {
            Ok(p) => p,
            Err(e) => return Err(x.deny(None, None, None, e).await),
        };
        let request = &parsed.request;
        let token = parsed.subject_token.expose();
        let identity = match self.identity.verify(token, now_ms).await {
            Ok(i) => i,
            Err(ie) => return Err(x.deny(Some(request), None, None, identity_error(&ie)).await),
        };
        let identity_key = format!("{} {}", identity.issuer, identity.subject);
        if let Err(retry_after) = self.limits.identity.take(&identity_key, now_ms) {
            let e = ApiError::RateLimited { retry_after };
            return Err(x.deny(Some(request), Some(&identity), None, e).await);
        }
        if let Err(e) = identity_not_revoked(self.store.as_ref(), &identity).await {
            return Err(x.deny(Some(request), Some(&identity), None, e).await);
        }
        let now = now_ms.div_euclid(1000);
        let decision = match policy::decide(&self.policy, &identity, request, now) {
            Ok(d) => d,
            Err(d) => {
                let e = denial_error(&d);
                return Err(x
                    .deny(Some(request), Some(&identity), d.role.as_deref(), e)
                    .await);
            }
        };
        issue(&x, &identity, decision).await
    }
}

/// Signs, stores and audits a granted decision.
async fn issue(
    x: &Exchange<'_>,
    identity: &VerifiedIdentity,
    decision: Decision,
) -> Result<TokenResponse, ApiError> {
    let (state, caller, now_ms) = (x.x, &x.caller, x.now_ms);
    let jti = token::new_jti().map_err(|e| ApiError::Internal(e.to_string()))?;
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
        req: None,
    };
    let signed = state
        .signer
        .sign(&claims)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    state
        .store
        .put(&Grant::from_claims(&claims, now_ms), now_ms)
        .await?;

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
    let body = TokenResponse {
        access_token: signed,
        issued_token_type: TOKEN_TYPE_ACCESS_TOKEN.to_owned(),
        token_type: "Bearer".to_owned(),
        expires_in: decision.exp - decision.iat,
        scope: claims.scope.to_string(),
        jti: Some(jti),
    };
    Ok(body)
}
