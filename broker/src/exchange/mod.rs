//! `POST /oauth/token`: the RFC 8693 token exchange. An OIDC ID token or CI JWT goes in; a
//! minute-scoped, repository-bound git-jit token comes out — or an RFC 6749 §5.2 error that
//! says exactly what failed.
//!
//! Order: client rate limit → parse → verify the subject token → identity rate limit →
//! policy decision → sign → store the grant → audit `grant.issued` → respond. If the audit
//! cannot be written, the grant is revoked and the client gets a 503: there is never an
//! unaudited grant. Every refusal after the client rate limit is audited as `grant.denied`
//! and changes nothing else. Tokens never reach the log or the audit trail; only `jti` does.

use std::net::{IpAddr, SocketAddr};

use axum::Extension;
use axum::Json;
use axum::extract::rejection::{BytesRejection, FormRejection};
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jit_proto::api::{
    GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT,
    TokenResponse,
};
use jit_proto::{Claims, RefPattern, Scope, Secret};
use serde::Deserialize;

use crate::audit::AuditEvent;
pub use crate::config::ExchangeConfig;
use crate::error::ApiError;
use crate::identity::{IdentityError, MAX_SUBJECT_TOKEN_LEN, VerifiedIdentity};
use crate::policy::{self, Decision, Denial, DenialKind, Request};
use crate::state::AppState;
use crate::store::{Grant, RevokeTarget};
use crate::token;

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
struct Caller {
    client: String,
    user_agent: Option<String>,
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

fn parse(form: Result<Form<TokenRequest>, FormRejection>) -> Result<Parsed, ApiError> {
    let bad = |d: String| ApiError::invalid_request(d);
    let Form(f) = form.map_err(|e| match e {
        // Almost always the body limit (which reaches here wrapped when the client sent no
        // Content-Length); otherwise the client is gone and will not read the answer.
        FormRejection::BytesRejection(BytesRejection::FailedToBufferBody(_)) => oauth(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!(
                "the request body could not be read; at most {} bytes are accepted",
                crate::MAX_API_BODY
            ),
        ),
        e => bad(format!("the body must be a valid form: {}", e.body_text())),
    })?;
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

fn caller(
    state: &AppState,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
) -> Caller {
    let forwarded = state
        .exchange
        .trust_forwarded_for
        .then(|| headers.get("x-forwarded-for"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    let client = forwarded
        .or(connect.map(|Extension(ConnectInfo(addr))| addr.ip()))
        .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| cut(v, MAX_USER_AGENT_LEN));
    Caller { client, user_agent }
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
    state: &'a AppState,
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
        let _ = self.state.audit.record(e).await;
        error
    }
}

/// `POST /oauth/token`.
pub async fn token(
    State(state): State<AppState>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Result<Response, ApiError> {
    let now_ms = state.clock.now_ms();
    let x = Exchange {
        caller: caller(&state, connect, &headers),
        state: &state,
        now_ms,
    };
    state
        .limits
        .client
        .take(&crate::ratelimit::address_key(&x.caller.client), now_ms)
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let parsed = match parse(form) {
        Ok(p) => p,
        Err(e) => return Err(x.deny(None, None, None, e).await),
    };
    let request = &parsed.request;
    let token = parsed.subject_token.expose();
    let identity = match state.identity.verify(token, now_ms).await {
        Ok(i) => i,
        Err(ie) => return Err(x.deny(Some(request), None, None, identity_error(&ie)).await),
    };
    let identity_key = format!("{} {}", identity.issuer, identity.subject);
    if let Err(retry_after) = state.limits.identity.take(&identity_key, now_ms) {
        let e = ApiError::RateLimited { retry_after };
        return Err(x.deny(Some(request), Some(&identity), None, e).await);
    }
    if let Err(e) = identity_not_revoked(&state, &identity).await {
        return Err(x.deny(Some(request), Some(&identity), None, e).await);
    }
    let now = now_ms.div_euclid(1000);
    let decision = match policy::decide(&state.policy, &identity, request, now) {
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

/// Revoking a subject or an issuer also stops it from coming back with what it already held:
/// an identity token authenticated at or before the revocation (`auth_time`, else `iat`) is
/// refused, so a stolen laptop's IdP session yields nothing new. Authenticating again at the
/// identity provider (a fresh `git jit login`, a new CI job) passes.
pub(crate) async fn identity_not_revoked(
    state: &AppState,
    identity: &VerifiedIdentity,
) -> Result<(), ApiError> {
    let dims = [
        RevokeTarget::Subject(identity.subject.clone()).dimension(),
        RevokeTarget::Issuer(identity.issuer.clone()).dimension(),
    ];
    let marks = state.store.revoked_before(&dims).await?;
    let Some(latest) = marks.iter().flatten().max().copied() else {
        return Ok(());
    };
    let authenticated_ms = ["auth_time", "iat"]
        .iter()
        .find_map(|c| identity.claims.get(*c).and_then(serde_json::Value::as_i64))
        .map(|s| s.saturating_mul(1000));
    match authenticated_ms {
        Some(at) if at > latest => Ok(()),
        // No time to compare: the revocation wins.
        _ => Err(ApiError::OAuth {
            status: StatusCode::FORBIDDEN,
            code: "access_denied",
            description: format!(
                "access of {} ({}) was revoked; authenticate again at the identity provider \
                 (`git jit login`) to ask for new access",
                identity.subject, identity.issuer
            ),
        }),
    }
}

/// Signs, stores and audits a granted decision.
async fn issue(
    x: &Exchange<'_>,
    identity: &VerifiedIdentity,
    decision: Decision,
) -> Result<Response, ApiError> {
    let (state, caller, now_ms) = (x.state, &x.caller, x.now_ms);
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
    Ok((
        StatusCode::OK,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(body),
    )
        .into_response())
}
