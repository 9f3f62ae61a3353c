//! Admin API bodies (`/v1/grants`, `/v1/revoke`, `/v1/audit`), shared by the broker and
//! `git jit admin`.

use serde::{Deserialize, Serialize};

use crate::refs::RefPattern;
use crate::scope::Scope;

/// One live grant as the admin API shows it (never the token, only its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantInfo {
    /// The token id.
    pub jti: String,
    /// The verified identity.
    pub sub: String,
    /// The trusted issuer's name.
    pub idp: String,
    /// The role.
    pub role: String,
    /// The repository and actions.
    pub scope: Scope,
    /// Ref patterns a write is narrowed to (empty: all refs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<RefPattern>,
    /// The requester's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Issued at, milliseconds since the epoch.
    pub issued_ms: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
}

/// A page of live grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantPage {
    /// The grants on this page, oldest first.
    pub grants: Vec<GrantInfo>,
    /// How many live grants pass the filter in all.
    pub total: usize,
    /// The `offset` of the next page, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
}

/// What a revocation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevokeBy {
    /// One token (`value` = its jti).
    Jti,
    /// One identity (`value` = its subject).
    Subject,
    /// One repository (`value` = its path).
    Repo,
    /// One role (`value` = its name).
    Role,
    /// One trusted issuer (`value` = its configured name).
    Issuer,
    /// Everything (`value` must be absent).
    All,
}

/// `POST /v1/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// What to revoke.
    pub by: RevokeBy,
    /// Which one (absent for `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Why: required, recorded in the audit trail.
    pub reason: String,
}

/// The answer to a revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeResponse {
    /// How many live grants it ended.
    pub revoked: u64,
    /// What was revoked, e.g. `subject alice@example.com`.
    pub target: String,
}
