//! Who may do what: the credential in a Git request, its verification (signature, time,
//! audience — and the store, on every request, so a revoked token is refused on the next
//! one), the decision against the scope the request needs, the 401 challenge and 403 message
//! git shows, and the audit event for each decision. `/authz` uses the same functions.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jit_proto::{Action, Claims, Scope, Secret};

use super::receive_pack::RefRefusal;
use crate::audit::AuditEvent;
use crate::state::AppState;
use crate::store::GrantStatus;

/// The realm of the gateway's challenges.
pub const REALM: &str = "git-jit";

/// Facts about the requester kept in the audit trail.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// The client's address.
    pub client: Option<String>,
    /// The client's user agent (truncated).
    pub user_agent: Option<String>,
    /// `gateway` or `authz`.
    pub via: &'static str,
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

/// The token in `Authorization: Bearer <token>` or `Authorization: Basic` (any username, the
/// password is the token).
pub fn credential(headers: &HeaderMap) -> Result<Secret, CredentialError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(CredentialError::Missing)?
        .to_str()
        .map_err(|_| CredentialError::Malformed)?;
    let (scheme, rest) = value.split_once(' ').ok_or(CredentialError::Malformed)?;
    let rest = rest.trim();
    let token = if scheme.eq_ignore_ascii_case("bearer") {
        rest.to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(rest)
            .map_err(|_| CredentialError::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| CredentialError::Malformed)?;
        let (_user, password) = decoded.split_once(':').ok_or(CredentialError::Malformed)?;
        password.to_owned()
    } else {
        return Err(CredentialError::Malformed);
    };
    if token.is_empty() {
        return Err(CredentialError::Missing);
    }
    Ok(Secret::new(token))
}

fn what(action: Action) -> &'static str {
    match action {
        Action::Read => "clone or fetch",
        Action::Write => "push",
    }
}

fn needed_action(needed: &Scope) -> Action {
    needed.actions.iter().next().unwrap_or(Action::Read)
}

/// The 401 answer: a Bearer challenge naming the exact scope (git ≥ 2.41 hands it to the
/// credential helper as `wwwauth[]`) and a Basic challenge for older clients.
/// With `rejected` (a credential was presented and refused), the Bearer challenge carries
/// RFC 6750's `error="invalid_token"` and the reason, which the credential helper shows.
pub fn unauthorized(needed: &Scope, reason: &str, rejected: bool) -> Response {
    let mut r = super::text(
        StatusCode::UNAUTHORIZED,
        &format!(
            "git-jit: {reason}; this {} needs {needed}",
            what(needed_action(needed))
        ),
    );
    let mut bearer = format!("Bearer realm=\"{REALM}\", scope=\"{needed}\"");
    if rejected {
        // Reasons are our own fixed texts; keep the quoted-string valid whatever they say.
        let safe: String = reason
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .filter(|c| *c != '"' && *c != '\\')
            .collect();
        bearer.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{safe}\""
        ));
    }
    // A scope is built only from RepoPath characters and action names: always a valid value.
    if let Ok(v) = HeaderValue::from_str(&bearer) {
        r.headers_mut().append(header::WWW_AUTHENTICATE, v);
    }
    r.headers_mut().append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"git-jit\""),
    );
    r
}

/// The 403 message for a valid token that does not grant what the request needs.
pub fn forbidden_message(granted: &Scope, needed: &Scope) -> String {
    format!(
        "git-jit: token grants {granted}; this {} needs {needed}. Run `git jit request {needed}`",
        what(needed_action(needed))
    )
}

/// 503: the store or the audit trail cannot be reached, so nothing is allowed.
pub fn unavailable(what: &str) -> Response {
    let mut r = super::text(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("git-jit: {what} is unavailable; access is refused until it is back"),
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

fn event(kind: &str, state: &AppState, needed: &Scope, info: &RequestInfo) -> AuditEvent {
    let mut e = AuditEvent::new(kind, state.clock.now_ms())
        .with("action", needed_action(needed).as_str())
        .with("via", info.via);
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

async fn deny(state: &AppState, event: AuditEvent, denial: String, response: Response) -> Response {
    let mut event = event;
    event.denial = Some(denial);
    // The request is refused either way; a lost denial record is logged by the auditor.
    let _ = state.audit.record(event).await;
    response
}

/// A refused credential: audited, as long as the client address stays within its budget of
/// refusals; past it, a 429 that is counted, not audited one by one.
async fn refuse(
    state: &AppState,
    event: AuditEvent,
    denial: String,
    response: Response,
    info: &RequestInfo,
    now_ms: i64,
) -> Response {
    let key = crate::ratelimit::address_key(info.client.as_deref().unwrap_or("unknown"));
    match state.limits.refused.take(&key, now_ms) {
        Ok(()) => deny(state, event, denial, response).await,
        Err(retry_after) => {
            state.audit.counts().unaudited("refused_over_limit");
            let mut r = super::text(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "git-jit: too many refused credentials from this address; retry in {retry_after} s"
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    }
}

/// Verifies the request's token and checks it grants `needed`. On refusal, returns the
/// answer to send (401, 403 or 503), already audited. An allowed request is audited by the
/// caller once it knows everything (a push's ref updates), with [`record_allowed`].
pub async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    needed: &Scope,
    info: &RequestInfo,
) -> Result<Claims, Response> {
    let base = event("access.denied", state, needed, info);
    let now_ms = state.clock.now_ms();
    let token = match credential(headers) {
        Ok(t) => t,
        Err(CredentialError::Missing) => {
            // git's first request of every clone and push: the 401 is how git learns what to
            // ask the credential helper for. Nobody asked for anything yet: counted, not
            // audited, so anonymous requests cannot push the audit trail out.
            state.audit.counts().unaudited("no_credential");
            return Err(unauthorized(
                needed,
                &CredentialError::Missing.to_string(),
                false,
            ));
        }
        Err(e) => {
            let reason = e.to_string();
            let response = unauthorized(needed, &reason, true);
            return Err(refuse(state, base, reason, response, info, now_ms).await);
        }
    };
    let claims = match state.signer.verify(token.expose(), now_ms.div_euclid(1000)) {
        Ok(c) => c,
        Err(e) => {
            let reason = e.to_string();
            let response = unauthorized(needed, &reason, true);
            return Err(refuse(state, base, reason, response, info, now_ms).await);
        }
    };
    let base = with_claims(base, &claims);
    let status = match state.store.check(&claims, now_ms).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, jti = %claims.jti, "grant store unavailable; failing closed");
            let reason = "grant store unavailable".to_owned();
            return Err(deny(state, base, reason, unavailable("the grant store")).await);
        }
    };
    let reason = match status {
        GrantStatus::Live(_) => None,
        GrantStatus::Revoked => Some("token has been revoked"),
        GrantStatus::Expired => Some("token has expired"),
        GrantStatus::Unknown => Some("token is not a live grant"),
    };
    if let Some(reason) = reason {
        let response = unauthorized(needed, reason, true);
        return Err(refuse(state, base, reason.into(), response, info, now_ms).await);
    }
    if !claims.scope.covers(needed) {
        let message = forbidden_message(&claims.scope, needed);
        let response = super::text(StatusCode::FORBIDDEN, &message);
        return Err(deny(state, base, message, response).await);
    }
    Ok(claims)
}

/// Records `access.allowed`; if the record cannot be written the request is refused (503).
pub async fn record_allowed(
    state: &AppState,
    claims: &Claims,
    needed: &Scope,
    info: &RequestInfo,
    updates: Option<serde_json::Value>,
) -> Result<(), Response> {
    let mut e = with_claims(event("access.allowed", state, needed, info), claims);
    if let Some(u) = updates {
        e = e.with("updates", u);
    }
    state
        .audit
        .record(e)
        .await
        .map_err(|_| unavailable("the audit trail"))
}

/// Records `access.denied` for a verified token refused after [`authorize`] (a push's ref
/// updates, a ref-limited push through `/authz`). The request is refused either way.
pub async fn record_denied(
    state: &AppState,
    claims: &Claims,
    needed: &Scope,
    info: &RequestInfo,
    denial: String,
    updates: Option<serde_json::Value>,
) {
    let mut e = with_claims(event("access.denied", state, needed, info), claims);
    if let Some(u) = updates {
        e = e.with("updates", u);
    }
    e.denial = Some(denial);
    let _ = state.audit.record(e).await;
}

/// The denial text of a push refused by its ref updates.
pub fn push_denial(refused: &[RefRefusal]) -> String {
    let reasons: Vec<String> = refused
        .iter()
        .map(|r| format!("{}: {}", r.refname, r.reason))
        .collect();
    reasons.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(value).expect("value"),
        );
        h
    }

    #[test]
    fn credentials_from_bearer_and_basic() {
        assert_eq!(
            credential(&headers("Bearer abc")).map(|s| s.expose().to_owned()),
            Ok("abc".into())
        );
        assert_eq!(
            credential(&headers("bearer  abc ")).map(|s| s.expose().to_owned()),
            Ok("abc".into())
        );
        let basic = format!("Basic {}", STANDARD.encode("anyone:tok:en"));
        assert_eq!(
            credential(&headers(&basic)).map(|s| s.expose().to_owned()),
            Ok("tok:en".into())
        );
        assert_eq!(
            credential(&HeaderMap::new()).err(),
            Some(CredentialError::Missing)
        );
        let empty = format!("Basic {}", STANDARD.encode("user:"));
        assert_eq!(
            credential(&headers(&empty)).err(),
            Some(CredentialError::Missing)
        );
        for bad in ["Digest x", "Bearer", "Basic !!!", "Basic dXNlcg=="] {
            assert_eq!(
                credential(&headers(bad)).err(),
                Some(CredentialError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn challenge_names_the_needed_scope() {
        let needed = Scope::parse("repo:acme/api:write").expect("scope");
        let r = unauthorized(&needed, "no credential was sent", false);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let got: Vec<_> = r
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect();
        assert_eq!(
            got,
            [
                "Bearer realm=\"git-jit\", scope=\"repo:acme/api:write\"",
                "Basic realm=\"git-jit\""
            ]
        );
        let r = unauthorized(&needed, "token has been \"revoked\"", true);
        let bearer = r
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            bearer,
            Some(
                "Bearer realm=\"git-jit\", scope=\"repo:acme/api:write\", error=\"invalid_token\", \
                 error_description=\"token has been revoked\""
            )
        );
    }
}
