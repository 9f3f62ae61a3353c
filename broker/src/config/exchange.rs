//! `[exchange]` and `[exchange.rate_limit]`: settings of the token exchange.

use serde::Deserialize;

/// `[exchange]`: settings of the token exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    /// Take the client address from the last `X-Forwarded-For` entry. Only set this behind
    /// a reverse proxy that always sets the header; otherwise clients can forge it.
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// `[exchange.rate_limit]`: per-identity and per-address limits.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

/// `[exchange.rate_limit]`: the limits of `POST /oauth/token` and of the doors' refusals
/// (GCRA: `per_minute` sustained, `burst` at once; in Redis, shared by every replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Exchanges per minute one verified identity may sustain: a person (issuer and
    /// subject), or one CI job (its run, job or pod claims; not its repository). Default 30.
    #[serde(default = "default_identity_per_minute")]
    pub identity_per_minute: u32,
    /// Exchanges one identity may make in a burst. Default 10.
    #[serde(default = "default_identity_burst")]
    pub identity_burst: u32,
    /// Requests per minute one client address may sustain (before verification): a flood
    /// ceiling, shared by every replica, above what one replica can verify, because one
    /// address is often a whole CI fleet's egress (docs/operations.md). Default 600,000
    /// (10,000/s).
    #[serde(default = "default_client_per_minute")]
    pub client_per_minute: u32,
    /// Requests one client address may make at once: a 500-job matrix build. Default 500.
    #[serde(default = "default_client_burst")]
    pub client_burst: u32,
    /// Refused credentials (forged, expired, revoked tokens) per minute one client address
    /// may present to the gateway, `/authz` or, as identity tokens, the exchange; past it, the answer is 429 and the refusals are
    /// counted in `/metrics` instead of each filling the audit log. Default 300.
    #[serde(default = "default_refused_per_minute")]
    pub refused_per_minute: u32,
    /// Refused credentials one client address may present in a burst. Default 100.
    #[serde(default = "default_refused_burst")]
    pub refused_burst: u32,
    /// Denials per minute one valid token (by `jti`) may draw at the gateway or `/authz` (a
    /// live token asking for what it does not grant); past it, 429 and one audit event per
    /// minute summarising the rest. Default 60.
    #[serde(default = "default_denied_token_per_minute")]
    pub denied_token_per_minute: u32,
    /// Denials one valid token may draw in a burst. Default 30.
    #[serde(default = "default_denied_token_burst")]
    pub denied_token_burst: u32,
    /// Denials per minute the valid tokens of one identity (issuer and subject) may draw
    /// together. Default 120.
    #[serde(default = "default_denied_identity_per_minute")]
    pub denied_identity_per_minute: u32,
    /// Denials the valid tokens of one identity may draw in a burst. Default 60.
    #[serde(default = "default_denied_identity_burst")]
    pub denied_identity_burst: u32,
}

fn default_denied_token_per_minute() -> u32 {
    60
}
fn default_denied_token_burst() -> u32 {
    30
}
fn default_denied_identity_per_minute() -> u32 {
    120
}
fn default_denied_identity_burst() -> u32 {
    60
}

fn default_refused_per_minute() -> u32 {
    300
}
fn default_refused_burst() -> u32 {
    100
}

fn default_identity_per_minute() -> u32 {
    30
}
fn default_identity_burst() -> u32 {
    10
}
fn default_client_per_minute() -> u32 {
    600_000
}
fn default_client_burst() -> u32 {
    500
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            identity_per_minute: default_identity_per_minute(),
            identity_burst: default_identity_burst(),
            client_per_minute: default_client_per_minute(),
            client_burst: default_client_burst(),
            refused_per_minute: default_refused_per_minute(),
            refused_burst: default_refused_burst(),
            denied_token_per_minute: default_denied_token_per_minute(),
            denied_token_burst: default_denied_token_burst(),
            denied_identity_per_minute: default_denied_identity_per_minute(),
            denied_identity_burst: default_denied_identity_burst(),
        }
    }
}

impl RateLimitConfig {
    /// The first key (relative to `[exchange.rate_limit]`) whose value is zero.
    pub fn zero_key(&self) -> Option<&'static str> {
        [
            ("identity_per_minute", self.identity_per_minute),
            ("identity_burst", self.identity_burst),
            ("client_per_minute", self.client_per_minute),
            ("client_burst", self.client_burst),
            ("refused_per_minute", self.refused_per_minute),
            ("refused_burst", self.refused_burst),
            ("denied_token_per_minute", self.denied_token_per_minute),
            ("denied_token_burst", self.denied_token_burst),
            (
                "denied_identity_per_minute",
                self.denied_identity_per_minute,
            ),
            ("denied_identity_burst", self.denied_identity_burst),
        ]
        .into_iter()
        .find(|(_, v)| *v == 0)
        .map(|(k, _)| k)
    }
}
