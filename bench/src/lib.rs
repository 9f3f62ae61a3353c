//! What the bench binaries share: the broker configuration they measure and the token
//! exchange that gives them a broker token.
//!
//! # Layout
//!
//! - [`broker_config`]: the `jit-broker` configuration of every measurement (Redis store,
//!   four roles, an upstream with an injected Basic credential, rate limits out of the way).
//! - [`form_body`], [`exchange`]: an RFC 8693 token exchange.
//! - [`other_broker`]: a second broker from another binary, to compare two builds in one run.
//!
//! Binaries: `jit-load` (`src/bin/load.rs`, wall-clock figures) and `jit-callgrind`
//! (`src/bin/callgrind.rs`, instructions per request under callgrind).

#![forbid(unsafe_code)]

pub mod other_broker;

use std::path::Path;

use anyhow::{Context, Result, ensure};

/// The repository the bench clones (and every token names).
pub const REPO: &str = "acme/big";
/// The upstream's Basic credential (test-only; nginx on loopback).
pub const UPSTREAM_USER: &str = "git-jit";
/// The upstream's Basic password, passed to the broker as `JIT_BENCH_UPSTREAM_PASSWORD`.
pub const UPSTREAM_PASSWORD: &str = "bench-upstream-secret";

/// The broker configuration of the bench (placeholders of [`jit_e2e::bins::placeholders`]
/// left for [`jit_e2e::BrokerProcess`]).
pub fn broker_config(keys: &Path, redis: &str, issuer: &str, upstream: &str) -> String {
    let keys = keys.display();
    format!(
        r#"
[broker]
listen = "{{{{LISTEN}}}}"
public_url = "{{{{URL}}}}"
keys_dir = "{keys}"

[store]
url = "{redis}"

# High enough that the bench measures the exchange, not the limiter: every request is the
# same identity (defaults: 30/min per identity; the burst phase uses the defaults).
[exchange.rate_limit]
identity_per_minute = 100000000
identity_burst = 1000000
client_per_minute = 100000000
client_burst = 1000000

[[issuer]]
name = "ci"
issuer = "{issuer}"
audience = "git-jit"
algorithms = ["RS256", "ES256"]

[[role]]
name = "ci-read"
issuer = "ci"
claims = {{ repository_owner = "acme" }}
repositories = ["acme/**"]
actions = ["read"]
default_ttl = 60
max_ttl = 120

[[role]]
name = "ci-write-main"
issuer = "ci"
claims = {{ repository_owner = "acme", ref = "refs/heads/main" }}
repositories = ["{{repository}}"]
actions = ["read", "write"]
refs = ["refs/heads/main"]
default_ttl = 10
max_ttl = 30

[[role]]
name = "dev-read"
issuer = "ci"
claims = {{ groups = "engineering" }}
repositories = ["acme/**", "tools/*"]
actions = ["read"]

[[role]]
name = "release"
issuer = "ci"
claims = {{ groups = "release-managers" }}
repositories = ["acme/*"]
actions = ["write"]
refs = ["refs/tags/v*"]
reason_required = true

# The scale phase: grants that outlive the run, and an admin who lists and revokes them.
[[role]]
name = "scale-read"
issuer = "ci"
claims = {{ repository_owner = "scale" }}
repositories = ["scale/**"]
actions = ["read"]
default_ttl = 120
max_ttl = 120

[[admin.identity]]
issuer = "ci"
claims = {{ groups = "security" }}

[[upstream]]
repositories = ["**"]
url = "{upstream}"
credential = {{ kind = "basic", username = "{UPSTREAM_USER}", password_env = "JIT_BENCH_UPSTREAM_PASSWORD" }}
"#
    )
}

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// The form of an RFC 8693 exchange of `subject_token` (an ID token) for `scope`.
pub fn form_body(subject_token: &str, scope: &str) -> String {
    fn enc(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
    format!(
        "grant_type={}&subject_token={}&subject_token_type={}&scope={}",
        enc(TOKEN_EXCHANGE),
        enc(subject_token),
        enc(ID_TOKEN_TYPE),
        enc(scope)
    )
}

/// Exchanges `id_token` at `broker` for a broker token of `scope`.
pub async fn exchange(
    http: &reqwest::Client,
    broker: &str,
    id_token: &str,
    scope: &str,
) -> Result<String> {
    let r = http
        .post(format!("{broker}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(id_token, scope))
        .send()
        .await?;
    let status = r.status();
    let body: serde_json::Value = r.json().await?;
    ensure!(status.is_success(), "exchange refused ({status}): {body}");
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token in the exchange answer")
}
