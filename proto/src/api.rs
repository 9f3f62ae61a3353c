//! HTTP bodies shared by the broker and its clients (RFC 8693, 7662, 8414, 6749 §5.2).

use serde::{Deserialize, Serialize};

use crate::token::Claims;

/// RFC 8693 grant type for token exchange.
pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 token type of an OIDC ID token.
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// RFC 8693 token type of a JWT.
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// RFC 8693 token type of an access token (what the broker issues).
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// git-jit's token type of an OpenSSH user certificate (what the broker issues for Git over
/// SSH, RFC 8693 §3 allows such URNs); its `token_type` is `N_A`.
pub const TOKEN_TYPE_SSH_CERTIFICATE: &str = "urn:git-jit:params:oauth:token-type:ssh-certificate";

/// A successful token exchange (RFC 8693 §2.2.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The git-jit token.
    pub access_token: crate::secret::Secret,
    /// [`TOKEN_TYPE_ACCESS_TOKEN`], or [`TOKEN_TYPE_SSH_CERTIFICATE`] when one was asked for.
    pub issued_token_type: String,
    /// `Bearer` (`N_A` for an SSH certificate).
    pub token_type: String,
    /// Seconds until the token expires (at most [`crate::time::MAX_LIFETIME_SECS`]).
    #[serde(deserialize_with = "crate::time::de_lifetime_secs")]
    pub expires_in: i64,
    /// The scope granted, exactly as asked.
    pub scope: String,
    /// The token's id, for status displays and revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// An OAuth error body (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthError {
    /// The RFC 6749 error code (`invalid_request`, `invalid_grant`, `invalid_scope`, …).
    pub error: String,
    /// A precise reason, safe to show to the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// About an approval request (`authorization_pending`, `slow_down`, `approval_required`,
    /// …): its id, who may approve, when to poll. Empty otherwise.
    #[serde(flatten, default)]
    pub approval: crate::approval::PendingDetails,
}

/// An introspection answer (RFC 7662 §2.2). Inactive tokens carry nothing but `active`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introspection {
    /// Whether the token is live.
    pub active: bool,
    /// The token's claims when active.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<IntrospectedClaims>,
}

/// The claims an active introspection answer carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntrospectedClaims {
    /// Always `Bearer`.
    pub token_type: String,
    /// The scope string.
    pub scope: String,
    /// The token's claims.
    #[serde(flatten)]
    pub claims: Claims,
}

/// The broker's authorization-server metadata (RFC 8414), plus what the helper needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMetadata {
    /// The broker's public URL (the `iss` of its tokens).
    pub issuer: String,
    /// Where RFC 8693 token exchanges go.
    pub token_endpoint: String,
    /// Where RFC 7662 introspection goes.
    pub introspection_endpoint: String,
    /// How introspection callers authenticate (RFC 8414 §2): `client_secret_basic` for a
    /// configured client; loopback callers need none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// The broker's JWKS.
    pub jwks_uri: String,
    /// Always `[urn:ietf:params:oauth:grant-type:token-exchange]`.
    pub grant_types_supported: Vec<String>,
    /// The audience of the broker's own tokens (what the gateway checks).
    pub token_audience: String,
    /// The audience CI platforms should mint their OIDC tokens for.
    pub subject_token_audience: String,
    /// The OIDC issuer people log in with (`git jit login`), when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_issuer: Option<String>,
    /// The public client id `git jit login` uses at that issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_client_id: Option<String>,
    /// The space-separated OAuth scopes `git jit login` asks for, so the ID token carries the
    /// claims the roles match (e.g. `groups`). Absent: the helper's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_scope: Option<String>,
    /// A human description of the scope syntax.
    pub scope_syntax: String,
}
