//! Claims of a git-jit token (a compact JWS, `typ: jit+jwt`, EdDSA by default).

use serde::{Deserialize, Serialize};

use crate::refs::RefPattern;
use crate::scope::Scope;

/// The JOSE `typ` header of a git-jit token.
pub const TOKEN_TYPE: &str = "jit+jwt";

/// The claims of a git-jit token. See DESIGN.md "Tokens".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The broker's public URL.
    pub iss: String,
    /// The gateway audience.
    pub aud: String,
    /// The verified identity (`alice@example.com`, `repo:acme/api:ref:refs/heads/main`).
    pub sub: String,
    /// The name of the trusted issuer that vouched for `sub`.
    pub idp: String,
    /// Issued at (seconds since the epoch).
    #[serde(deserialize_with = "crate::time::de_numeric_date")]
    pub iat: i64,
    /// Not before (seconds since the epoch).
    #[serde(deserialize_with = "crate::time::de_numeric_date")]
    pub nbf: i64,
    /// Expires at (seconds since the epoch).
    #[serde(deserialize_with = "crate::time::de_numeric_date")]
    pub exp: i64,
    /// Token id: 128 random bits, base64url. The only form of a token that is ever logged.
    pub jti: String,
    /// The one repository and the actions granted on it.
    pub scope: Scope,
    /// Ref patterns a `write` grant is narrowed to; empty means every ref.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<RefPattern>,
    /// The role under which the grant was made.
    pub role: String,
    /// The reason the requester gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The approval request id, when a person approved the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req: Option<String>,
}
