//! The git-jit end-to-end harness: real peers on free ports, cleaned up on drop.
//!
//! # Layout
//!
//! - [`redis`]: `redis-server`, single node ([`RedisServer`]) and cluster ([`RedisCluster`]).
//! - [`oidc`]: the npm `oidc-provider` as the company SSO ([`OidcProvider`]), with browserless
//!   ID tokens and device-flow approval.
//! - [`ci_issuer`]: an in-process OIDC issuer minting GitHub Actions, GitLab CI and Kubernetes
//!   shaped tokens ([`CiIssuer`], [`TokenBuilder`]).
//! - [`git_server`]: nginx + fcgiwrap + `git http-backend` ([`GitServer`]) and an isolated `git`
//!   client environment ([`GitClient`]).
//! - [`bins`]: the workspace binaries and a running broker ([`BrokerProcess`]).
//! - [`process`]: free ports, managed child processes, readiness waits.
//!
//! Every server logs to a temporary directory; a server dropped while its test panics prints
//! its log to stderr.

#![forbid(unsafe_code)]

pub mod bins;
pub mod certs;
pub mod ci_issuer;
pub mod git_server;
pub mod oidc;
pub mod process;
pub mod redis;
pub mod redis_ha;
pub mod sshd;

pub use bins::{BrokerProcess, bin_path};
pub use ci_issuer::{CiIssuer, SigningKey, TokenBuilder};
pub use git_server::{GitClient, GitServer, GitServerConfig, NginxRelay};
pub use oidc::OidcProvider;
pub use redis::{RedisCluster, RedisServer};
pub use redis_ha::{RedisSentinels, RedisTls};

/// An HTTP client for tests (rustls with the ring provider installed, no proxy, 30 s timeout,
/// redirects not followed so tests see them). A connection idle for 2 s is not reused: the
/// OIDC provider (Node) closes one idle for 5 s, and a request sent on it in that instant
/// fails with "connection closed before message completed".
pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(std::time::Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        // Only fails if the TLS backend cannot initialise, which is a broken test setup.
        .expect("building the test HTTP client")
}

/// An HTTP client for readiness probes: a fresh connection per request (a pooled one to a
/// previous process on the same port must not be reused) and 2 s per attempt, so one stuck
/// probe cannot use up a whole start-up wait.
pub fn probe_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(2))
        .build()
        // Only fails if the TLS backend cannot initialise, which is a broken test setup.
        .expect("building the probe HTTP client")
}

/// Installs rustls' ring provider once per process (needed before any TLS client is built).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Unpadded base64url, as JOSE uses it.
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Random bytes as unpadded base64url (for `jti`, PKCE verifiers, states).
pub fn random_token(bytes: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .expect("system randomness");
    b64url(&buf)
}
