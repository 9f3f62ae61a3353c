//! The admin API for the security team: list live grants, revoke anything, read the audit
//! trail. Admins are identities the config names (`[admin]`): a verified OIDC ID token of a
//! listed issuer whose claims meet the conditions, or a live broker token of an admin role.
//! Every admin action is itself audited.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jit_proto::admin::{GrantInfo, GrantPage, RevokeBy, RevokeRequest, RevokeResponse};
use jit_proto::token::TOKEN_TYPE;
use jit_proto::RepoPath;
use serde::Deserialize;

use crate::audit::{AuditEvent, AuditQuery};
use crate::error::ApiError;
use crate::policy::pattern::{ClaimCondition, ConditionConfig};
use crate::state::AppState;
use crate::store::{Grant, GrantFilter, GrantStatus, RevokeTarget};

/// Largest page of grants.
const MAX_GRANT_PAGE: usize = 1000;
/// Largest page of audit events.
const MAX_AUDIT_PAGE: usize = 10_000;
/// Longest accepted revocation reason.
const MAX_REASON_LEN: usize = 1024;

/// `[admin]`: who is an admin.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Roles whose live broker tokens act as admin credentials.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Identities that are admins when they present a verified ID token.
    #[serde(default)]
    pub identity: Vec<AdminIdentityConfig>,
}

/// `[[admin.identity]]`: an issuer and the claim conditions (exact or glob, all must hold).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminIdentityConfig {
    /// The `[[issuer]]` name.
    pub issuer: String,
    /// Claim conditions, as in roles (`groups = "security"`).
    #[serde(default)]
    pub claims: BTreeMap<String, ConditionConfig>,
}

/// `[admin]` compiled.
#[derive(Debug, Default)]
pub struct AdminPolicy {
    roles: HashSet<String>,
    identities: Vec<(String, Vec<ClaimCondition>)>,
}

impl AdminPolicy {
    /// Compiles `[admin]`; `known_issuer` says whether an issuer name exists. The error
    /// names the key and the problem.
    pub fn compile(config: &AdminConfig, known_issuer: impl Fn(&str) -> bool) -> Result<Self, (String, String)> {
        let mut identities = Vec::new();
        for (i, id) in config.identity.iter().enumerate() {
            if !known_issuer(&id.issuer) {
                return Err((format!("admin.identity[{i}].issuer"), format!("no [[issuer]] is named {:?}", id.issuer)));
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
                    ClaimCondition::compile(claim, c).map_err(|e| (format!("admin.identity[{i}].claims.{claim}"), e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            identities.push((id.issuer.clone(), conds));
        }
        Ok(Self { roles: config.roles.iter().cloned().collect(), identities })
    }
}

/// Who is acting.
#[derive(Debug, Clone)]
struct Admin {
    subject: String,
    idp: String,
}

fn unauthorized(description: &str) -> ApiError {
    ApiError::OAuth { status: StatusCode::UNAUTHORIZED, code: "invalid_token", description: description.to_owned() }
}

fn forbidden(description: String) -> ApiError {
    ApiError::OAuth { status: StatusCode::FORBIDDEN, code: "insufficient_scope", description }
}

/// Authenticates an admin from `Authorization: Bearer …`.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Admin, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| unauthorized("admin API needs Authorization: Bearer <ID token or admin broker token>"))?;
    let now_ms = state.clock.now_ms();
    let is_broker_token = jsonwebtoken::decode_header(token).is_ok_and(|h| h.typ.as_deref() == Some(TOKEN_TYPE));
    if is_broker_token {
        let claims = state
            .signer
            .verify(token, now_ms.div_euclid(1000))
            .map_err(|e| unauthorized(&format!("broker token refused: {e}")))?;
        if !matches!(state.store.check(&claims, now_ms).await?, GrantStatus::Live(_)) {
            return Err(unauthorized("broker token is revoked or expired"));
        }
        if !state.admins.roles.contains(&claims.role) {
            return Err(forbidden(format!("role {:?} is not an admin role", claims.role)));
        }
        return Ok(Admin { subject: claims.sub, idp: claims.idp });
    }
    let id = state.identity.verify(token, now_ms).await.map_err(|e| unauthorized(&e.to_string()))?;
    let is_admin = state
        .admins
        .identities
        .iter()
        .any(|(issuer, conds)| issuer == &id.issuer && conds.iter().all(|c| c.check(&id.claims).is_ok()));
    if !is_admin {
        return Err(forbidden(format!("{} (issuer {}) is not an admin", id.subject, id.issuer)));
    }
    Ok(Admin { subject: id.subject, idp: id.issuer })
}

fn admin_event(kind: &str, admin: &Admin, state: &AppState, addr: SocketAddr, headers: &HeaderMap) -> AuditEvent {
    let mut e = AuditEvent::new(kind, state.clock.now_ms());
    e.subject = Some(admin.subject.clone());
    e.idp = Some(admin.idp.clone());
    e.client = Some(addr.ip().to_string());
    e.user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
    e
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
        }
    }
}

/// `GET /v1/grants` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsQuery {
    subject: Option<String>,
    repo: Option<String>,
    role: Option<String>,
    issuer: Option<String>,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

/// `GET /v1/grants`: live grants, filtered and paged.
pub async fn grants(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<GrantsQuery>,
) -> Result<Json<GrantPage>, ApiError> {
    let admin = authenticate(&state, &headers).await?;
    let repo = q
        .repo
        .as_deref()
        .map(RepoPath::parse)
        .transpose()
        .map_err(|e| ApiError::invalid_request(format!("repo: {e}")))?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_GRANT_PAGE);
    let filter = GrantFilter { subject: q.subject.clone(), repo, role: q.role.clone(), issuer: q.issuer.clone() };
    let all = state.store.list(&filter, state.clock.now_ms()).await?;
    let total = all.len();
    let grants: Vec<GrantInfo> = all.into_iter().skip(q.offset).take(limit).map(GrantInfo::from).collect();
    let next_offset = (q.offset + grants.len() < total).then_some(q.offset + grants.len());
    let event = admin_event("admin.grants", &admin, &state, addr, &headers).with("returned", grants.len());
    state.audit.record(event).await?;
    Ok(Json(GrantPage { grants, total, next_offset }))
}

/// `POST /v1/revoke`: ends grants at once on every replica; answers how many live ones.
pub async fn revoke(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<RevokeRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let admin = authenticate(&state, &headers).await?;
    let Json(req) = body.map_err(|e| ApiError::invalid_request(format!("revoke body: {}", e.body_text())))?;
    let reason = req.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::invalid_request("a reason is required to revoke"));
    }
    if reason.len() > MAX_REASON_LEN || reason.chars().any(char::is_control) {
        return Err(ApiError::invalid_request(format!(
            "reason must be at most {MAX_REASON_LEN} bytes without control characters"
        )));
    }
    let value = || {
        req.value
            .clone()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::invalid_request(format!("revoke by {:?} needs a value", req.by)))
    };
    let target = match req.by {
        RevokeBy::Jti => RevokeTarget::Jti(value()?),
        RevokeBy::Subject => RevokeTarget::Subject(value()?),
        RevokeBy::Repo => RevokeTarget::Repo(
            RepoPath::parse(&value()?).map_err(|e| ApiError::invalid_request(format!("value: {e}")))?,
        ),
        RevokeBy::Role => RevokeTarget::Role(value()?),
        RevokeBy::Issuer => RevokeTarget::Issuer(value()?),
        RevokeBy::All if req.value.is_some() => {
            return Err(ApiError::invalid_request("revoke by all takes no value"));
        }
        RevokeBy::All => RevokeTarget::All,
    };
    let revoked = state.store.revoke(&target, state.clock.now_ms()).await?;
    let described = match &target {
        RevokeTarget::All => "all".to_owned(),
        t => t.dimension().replacen(':', " ", 1),
    };
    let mut event = admin_event("grant.revoked", &admin, &state, addr, &headers)
        .with("target", described.clone())
        .with("revoked", revoked);
    event.reason = Some(reason.to_owned());
    if let RevokeTarget::Jti(j) = &target {
        event.jti = Some(j.clone());
    }
    if let RevokeTarget::Repo(r) = &target {
        event.repo = Some(r.to_string());
    }
    // The revocation already holds; failing to audit it is reported, not undone.
    state.audit.record(event).await?;
    Ok(Json(RevokeResponse { revoked, target: described }))
}

/// `GET /v1/audit` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Earliest time, ms since the epoch or RFC 3339.
    from: Option<String>,
    /// Latest time, ms since the epoch or RFC 3339.
    to: Option<String>,
    subject: Option<String>,
    repo: Option<String>,
    event: Option<String>,
    /// Only events after this chain position (paging).
    #[serde(default)]
    after_seq: u64,
    limit: Option<usize>,
    /// `jsonl` (default) or `csv`.
    format: Option<String>,
}

fn parse_time(key: &str, v: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| ApiError::invalid_request(format!("{key}: {v:?} is neither milliseconds nor RFC 3339")))
}

fn csv_field(v: Option<&str>) -> String {
    let v = v.unwrap_or("");
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_owned()
    }
}

const CSV_HEADER: &str = "seq,ts,event,subject,idp,repo,scope,role,jti,reason,denial,client,user_agent,hash\n";

fn csv_line(e: &AuditEvent) -> String {
    let fields = [
        Some(e.seq.to_string()),
        Some(e.ts.to_string()),
        Some(e.event.clone()),
        e.subject.clone(),
        e.idp.clone(),
        e.repo.clone(),
        e.scope.clone(),
        e.role.clone(),
        e.jti.clone(),
        e.reason.clone(),
        e.denial.clone(),
        e.client.clone(),
        e.user_agent.clone(),
        Some(e.hash.clone()),
    ];
    let mut line = fields.iter().map(|f| csv_field(f.as_deref())).collect::<Vec<_>>().join(",");
    line.push('\n');
    line
}

/// `GET /v1/audit`: events oldest first, as JSON lines or CSV; page with `after_seq`.
pub async fn audit(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(p): Query<AuditParams>,
) -> Result<Response, ApiError> {
    let admin = authenticate(&state, &headers).await?;
    let csv = match p.format.as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(other) => return Err(ApiError::invalid_request(format!("format {other:?}: use jsonl or csv"))),
    };
    let limit = p.limit.unwrap_or(1000).clamp(1, MAX_AUDIT_PAGE);
    let query = AuditQuery {
        from_ms: p.from.as_deref().map(|v| parse_time("from", v)).transpose()?,
        to_ms: p.to.as_deref().map(|v| parse_time("to", v)).transpose()?,
        event: p.event.clone(),
        subject: p.subject.clone(),
        repo: p.repo.clone(),
        after_seq: p.after_seq,
        limit,
    };
    let events: Vec<AuditEvent> = state.store.read_audit(&query).await?;
    let next = events.last().map(|e| e.seq);
    let record = admin_event("admin.audit", &admin, &state, addr, &headers).with("returned", events.len());
    state.audit.record(record).await?;
    let (content_type, body) = if csv {
        let mut out = String::from(CSV_HEADER);
        events.iter().for_each(|e| out.push_str(&csv_line(e)));
        ("text/csv; charset=utf-8", out)
    } else {
        let mut out = String::new();
        for e in &events {
            out.push_str(&serde_json::to_string(e).map_err(|e| ApiError::Internal(e.to_string()))?);
            out.push('\n');
        }
        ("application/x-ndjson", out)
    };
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(seq) = next.filter(|_| events.len() == limit) {
        if let Ok(v) = HeaderValue::from_str(&seq.to_string()) {
            resp.headers_mut().insert("x-next-after-seq", v);
        }
    }
    Ok(resp)
}
