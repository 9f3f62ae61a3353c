//! git-jit's client side: the git credential helper (`git-credential-jit`) and the `git jit`
//! command share this library. See DESIGN.md "Helper".
//!
//! # Layout
//!
//! Lowest first; wire shapes are jit-proto's, never redefined here.
//! - [`config`], [`session`], [`cache`], [`claims`]: files on this machine (XDG paths, the
//!   0600 login session and token cache) and the unverified peek at a JWT's expiry.
//! - [`protocol`]: git's credential-helper protocol, generic over `Read`/`Write`.
//! - [`origin`]: where a broker's tokens may go (its origin and path prefix, recorded servers).
//! - [`challenge`]: which scope a git request needs, from jit-proto's parsed challenge.
//! - [`oidc`], [`login`]: the OpenID relying party on `openidconnect` — discovery, device
//!   login, refresh, ID-token validation.
//! - [`identity`]: which subject token to exchange (CI platform, token file, login session).
//! - [`tls`]: the HTTP client's TLS, reading the system trust store only on a first TLS
//!   handshake (a loopback `http://` broker never pays for it).
//! - [`retry`]: when to ask the broker again (429 and 503 only, `Retry-After`, jitter, bounded).
//! - [`broker`]: the broker's HTTP interface (metadata, RFC 8693 exchange).
//! - [`credential`]: `git-credential-jit get/store/erase`.
//! - [`admin`], [`table`], [`export`]: `git jit admin`: the admin API client, tables by display
//!   width, CSV through the `csv` crate.
//! - [`approvals`]: the approval API client (`/v1/requests`) behind `git jit requests`,
//!   `approve`, `deny` and `cancel`.
//! - [`manual`]: man pages generated from the clap definitions, and where they go.
//! - [`cli`]: the `git jit` commands; the binaries in `src/bin` only call into it.
#![forbid(unsafe_code)]

pub mod admin;
pub mod approvals;
pub mod broker;
pub mod cache;
pub mod cainfo;
pub mod challenge;
pub mod claims;
pub mod cli;
pub mod config;
pub mod credential;
pub mod export;
pub mod identity;
pub mod login;
pub mod manual;
pub mod oidc;
pub mod origin;
pub mod protocol;
pub mod retry;
pub mod session;
pub mod ssh;
pub mod table;
pub mod tls;

#[cfg(test)]
pub(crate) mod arbitrary;
#[cfg(test)]
pub(crate) mod testserver;

use std::time::Duration;

/// Why a binary could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// The HTTP client every git-jit request goes through: rustls (the binary installs the ring
/// provider first), bounded timeouts so git never hangs on a dead broker.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    http_client_builder().build()
}

/// The settings every git-jit HTTP client shares (the login issuer's client adds its own).
/// Redirects are never followed: a redirected token request would carry an identity token to
/// wherever the redirect points (a 307 keeps the method and the body).
pub(crate) fn http_client_builder() -> reqwest::ClientBuilder {
    // The trust store is read on the first TLS handshake, not here (see `tls`). A provider
    // without safe protocol versions cannot happen with ring; reqwest's own setup then.
    settings(tls::client_config().ok())
}

/// The client for requests to the broker at `url`: [`http_client`], trusting only the CA file
/// git uses for it (`http.sslCAInfo`, `GIT_SSL_CAINFO`) when one is configured.
pub fn http_client_for(url: &str, env: config::Env<'_>) -> Result<reqwest::Client, String> {
    let Some(ca) = cainfo::ca_file(url, env) else {
        return http_client().map_err(|e| e.to_string());
    };
    let config = tls::client_config_with_ca(&ca)?;
    settings(Some(config)).build().map_err(|e| e.to_string())
}

/// Every client's settings, over `tls` (reqwest's own setup when `None`).
/// How long a pooled connection may stay idle (see `settings`).
const POOL_IDLE: Duration = Duration::from_secs(4);

fn settings(tls: Option<rustls::ClientConfig>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    let builder = match tls {
        Some(config) => builder.tls_backend_preconfigured(config),
        None => builder,
    };
    builder
        .redirect(reqwest::redirect::Policy::none())
        // A pooled connection idle longer than this is dropped, before a server with a 5 s
        // keep-alive (Node's, Apache httpd's) closes it in the instant a request goes out on
        // it: a device-flow poll every 5 s would meet exactly that, and a token request that
        // fails so is not sent again.
        .pool_idle_timeout(POOL_IDLE)
        .user_agent(concat!("git-jit/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
}

/// The context both binaries run with: the process environment, the merged settings, the
/// real clock, and an HTTP client built when first needed.
pub fn process_context(
    broker_flag: Option<&str>,
) -> Result<credential::Context<'static>, StartError> {
    let settings = config::Settings::load(&config::process_env, broker_flag)?;
    Ok(credential::Context {
        env: &config::process_env,
        settings,
        http: std::sync::OnceLock::new(),
        clock: broker::now,
    })
}
