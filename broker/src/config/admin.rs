//! `[admin]`: who may use the admin API, as written in the config file.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::policy::ConditionConfig;

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
