//! `[server]`: how the broker's HTTP listener treats connections (caps, timeouts), where
//! `/metrics` is served, and who may call `/oauth/introspect`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::KeyProblem;

/// Descriptors kept back from the connection cap derived from `RLIMIT_NOFILE`: the listeners,
/// store connections, log and export files, key files, pipes to `git http-backend`.
pub const FD_RESERVE: u64 = 64;

/// The smallest and largest connection cap derived from `RLIMIT_NOFILE`.
pub const DERIVED_CAP_RANGE: (usize, usize) = (16, 10_000);

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Most client connections open at once; a connection over the cap is closed as soon as
    /// it is accepted (counted in `jit_connections_refused_total{reason="capacity"}`).
    /// Default: half of the descriptors the process may open (`RLIMIT_NOFILE`, soft) after a
    /// reserve of 64 — a gated request may hold a second descriptor upstream — between 16 and
    /// 10,000. A value above what the limit allows is kept, with a warning at start.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// The share of `max_connections`, in percent (1–100), that one client address (an IPv4
    /// address, an IPv6 /64) may hold; over it, its new connections are closed at once
    /// (`…{reason="address_share"}`) while others still get in. Default 50. Behind a reverse
    /// proxy every connection comes from the proxy: set 100 there and cap clients at the proxy.
    #[serde(default = "default_share")]
    pub max_connections_per_address_percent: u8,
    /// Seconds a client has to send a request's complete headers, counted from the moment the
    /// broker waits for them — also between requests on a kept-alive connection, so an idle
    /// kept-alive connection is closed after this long too. Default 10.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may move no byte in either direction (a stalled upload, a client
    /// that stops reading its clone) before it is closed. Default 300.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds `serve` lets requests in flight finish after SIGTERM (a clone streaming its
    /// pack) while it accepts no new connection; connections still open then are closed.
    /// Default 30 (leave it below the orchestrator's kill timeout).
    #[serde(default = "default_shutdown_drain")]
    pub shutdown_drain_secs: u64,
    /// Serve `GET /metrics` on this address (e.g. `127.0.0.1:9464`) instead of the main
    /// listener, which then no longer answers it. Unset: `/metrics` is on the main listener.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// `[server.introspection]`: who may call `POST /oauth/introspect`.
    #[serde(default)]
    pub introspection: IntrospectionConfig,
    /// `[server.tls]`: terminate TLS in the broker. Unset: plain HTTP, for a TLS-terminating
    /// proxy in front (or loopback).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Reverse proxies (addresses or CIDR blocks, e.g. `["10.0.0.5", "10.1.0.0/16"]`) whose
    /// `X-Forwarded-For` names the client. From them, the client address used by rate limits,
    /// the audit trail's `ip` and loopback checks is the right-most `X-Forwarded-For` entry
    /// that is not itself one of them, and their connections are exempt from
    /// `max_connections_per_address_percent` (they carry many clients). From anyone else the
    /// header is ignored. Default: none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// `[server.tls]`: the broker's certificate. Both files are read at start and again on
/// SIGHUP (new connections get the new certificate; open ones are not dropped).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file of the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: None,
            max_connections_per_address_percent: default_share(),
            header_read_timeout_secs: default_header_read_timeout(),
            idle_timeout_secs: default_idle_timeout(),
            shutdown_drain_secs: default_shutdown_drain(),
            metrics_listen: None,
            introspection: IntrospectionConfig::default(),
            tls: None,
            trusted_proxies: Vec::new(),
        }
    }
}

fn default_share() -> u8 {
    50
}

fn default_shutdown_drain() -> u64 {
    30
}

fn default_header_read_timeout() -> u64 {
    10
}

fn default_idle_timeout() -> u64 {
    300
}

/// `[server.introspection]`: RFC 7662 §2.1 wants the caller of the introspection endpoint
/// authorised. Callers authenticate with HTTP Basic as one of `client`; loopback callers
/// (not relayed by a proxy) are let in without a credential unless `allow_loopback = false`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// Let callers on a loopback address in without a credential (a gateway or proxy on the
    /// same host). A request carrying `Forwarded`, `X-Forwarded-For` or `X-Real-IP` is never
    /// taken for loopback: it was relayed for someone else. Default true.
    #[serde(default = "default_true")]
    pub allow_loopback: bool,
    /// `[[server.introspection.client]]`: the resource servers that may introspect.
    #[serde(default)]
    pub client: Vec<IntrospectionClientConfig>,
}

impl Default for IntrospectionConfig {
    fn default() -> Self {
        Self {
            allow_loopback: true,
            client: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// `[[server.introspection.client]]`: one caller of `/oauth/introspect`, authenticating with
/// HTTP Basic (`client_id:secret`). The secret is given exactly one way: the name of an
/// environment variable holding it, or its SHA-256 in hex (`printf %s SECRET | sha256sum`),
/// which may sit in the file. Use a long random secret (32+ bytes): the hash is unsalted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionClientConfig {
    /// The client id (the Basic user name).
    pub client_id: String,
    /// Environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The secret's SHA-256, 64 hex digits.
    #[serde(default)]
    pub secret_sha256: Option<String>,
}

impl ServerConfig {
    /// Checks each value on its own; `key` problems are named under `server.`.
    pub fn validate(&self) -> Result<(), KeyProblem> {
        if self.max_connections == Some(0) {
            return Err(KeyProblem::new(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        if !(1..=100).contains(&self.max_connections_per_address_percent) {
            return Err(KeyProblem::new(
                "server.max_connections_per_address_percent",
                format!(
                    "{} is not a percentage between 1 and 100",
                    self.max_connections_per_address_percent
                ),
            ));
        }
        for (key, secs) in [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("idle_timeout_secs", self.idle_timeout_secs),
            ("shutdown_drain_secs", self.shutdown_drain_secs),
        ] {
            if !(1..=86_400).contains(&secs) {
                return Err(KeyProblem::new(
                    format!("server.{key}"),
                    format!("{secs} must be between 1 and 86400 seconds"),
                ));
            }
        }
        for (i, p) in self.trusted_proxies.iter().enumerate() {
            if parse_net(p).is_none() {
                return Err(KeyProblem::new(
                    format!("server.trusted_proxies[{i}]"),
                    format!("{p:?} is not an IP address or CIDR block (10.0.0.0/8, fd00::/8)"),
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, c) in self.introspection.client.iter().enumerate() {
            let key = |k: &str| format!("server.introspection.client[{i}].{k}");
            if c.client_id.is_empty() || c.client_id.contains(':') {
                return Err(KeyProblem::new(
                    key("client_id"),
                    "must be non-empty without ':' (it is the Basic user name)",
                ));
            }
            if !seen.insert(c.client_id.as_str()) {
                return Err(KeyProblem::new(
                    key("client_id"),
                    format!("{:?} is configured twice", c.client_id),
                ));
            }
            match (&c.secret_env, &c.secret_sha256) {
                (Some(_), None) => {}
                (None, Some(h)) => {
                    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(KeyProblem::new(
                            key("secret_sha256"),
                            "must be a SHA-256 in hex (64 hex digits)",
                        ));
                    }
                }
                _ => {
                    return Err(KeyProblem::new(
                        key("secret_env"),
                        "give exactly one of secret_env or secret_sha256",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The connection cap: `max_connections`, else derived from `nofile`, the soft
    /// `RLIMIT_NOFILE` (taken as 1024, the usual default, when unknown).
    pub fn connection_cap(&self, nofile: Option<u64>) -> usize {
        self.max_connections
            .unwrap_or_else(|| derived_cap(nofile.unwrap_or(1024)))
    }

    /// Connections one address may hold: its share of `cap`, at least 1.
    pub fn per_address_cap(&self, cap: usize) -> usize {
        (cap.saturating_mul(usize::from(self.max_connections_per_address_percent)) / 100).max(1)
    }
}

/// One `server.trusted_proxies` entry: an address (a /32 or /128) or a CIDR block.
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// The connection cap that `nofile` descriptors allow: half of them after [`FD_RESERVE`],
/// clamped to `DERIVED_CAP_RANGE`.
pub fn derived_cap(nofile: u64) -> usize {
    let half = nofile.saturating_sub(FD_RESERVE) / 2;
    let (lo, hi) = DERIVED_CAP_RANGE;
    usize::try_from(half).unwrap_or(hi).clamp(lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_is_derived_from_the_descriptor_limit_and_shared_per_address() {
        let c = ServerConfig::default();
        assert_eq!(c.connection_cap(Some(256)), 96);
        assert_eq!(c.connection_cap(Some(1024)), 480);
        assert_eq!(c.connection_cap(Some(10)), 16);
        assert_eq!(c.connection_cap(Some(u64::MAX)), 10_000);
        assert_eq!(c.per_address_cap(64), 32);
        assert_eq!(c.per_address_cap(1), 1);
        let fixed = ServerConfig {
            max_connections: Some(64),
            max_connections_per_address_percent: 100,
            ..ServerConfig::default()
        };
        assert_eq!(fixed.connection_cap(Some(256)), 64);
        assert_eq!(fixed.per_address_cap(64), 64);
    }

    #[test]
    fn bad_values_are_named() {
        let bad = [
            (
                ServerConfig {
                    max_connections: Some(0),
                    ..ServerConfig::default()
                },
                "server.max_connections",
            ),
            (
                ServerConfig {
                    max_connections_per_address_percent: 0,
                    ..ServerConfig::default()
                },
                "server.max_connections_per_address_percent",
            ),
            (
                ServerConfig {
                    max_connections_per_address_percent: 101,
                    ..ServerConfig::default()
                },
                "server.max_connections_per_address_percent",
            ),
            (
                ServerConfig {
                    header_read_timeout_secs: 0,
                    ..ServerConfig::default()
                },
                "server.header_read_timeout_secs",
            ),
        ];
        for (c, key) in bad {
            assert_eq!(c.validate().expect_err(key).key, key);
        }
        let proxies = |p: &[&str]| ServerConfig {
            trusted_proxies: p.iter().map(|s| (*s).to_owned()).collect(),
            ..ServerConfig::default()
        };
        assert!(
            proxies(&["10.0.0.1", "10.0.0.0/8", "fd00::/8"])
                .validate()
                .is_ok()
        );
        let e = proxies(&["10.0.0.1", "proxy.internal"])
            .validate()
            .expect_err("a name");
        assert_eq!(e.key, "server.trusted_proxies[1]");
        assert!(e.problem.contains("proxy.internal"), "{}", e.problem);
        let client = |id: &str, env: Option<&str>, hash: Option<&str>| IntrospectionClientConfig {
            client_id: id.into(),
            secret_env: env.map(Into::into),
            secret_sha256: hash.map(Into::into),
        };
        let with = |clients: Vec<IntrospectionClientConfig>| ServerConfig {
            introspection: IntrospectionConfig {
                allow_loopback: true,
                client: clients,
            },
            ..ServerConfig::default()
        };
        let hash = "a".repeat(64);
        assert!(with(vec![client("rs", Some("E"), None)]).validate().is_ok());
        assert!(
            with(vec![client("rs", None, Some(&hash))])
                .validate()
                .is_ok()
        );
        for (clients, key) in [
            (
                vec![client("rs", None, None)],
                "server.introspection.client[0].secret_env",
            ),
            (
                vec![client("rs", Some("E"), Some(&hash))],
                "server.introspection.client[0].secret_env",
            ),
            (
                vec![client("rs", None, Some("abc"))],
                "server.introspection.client[0].secret_sha256",
            ),
            (
                vec![client("a:b", Some("E"), None)],
                "server.introspection.client[0].client_id",
            ),
            (
                vec![client("rs", Some("E"), None), client("rs", Some("F"), None)],
                "server.introspection.client[1].client_id",
            ),
        ] {
            assert_eq!(with(clients).validate().expect_err(key).key, key);
        }
    }
}
