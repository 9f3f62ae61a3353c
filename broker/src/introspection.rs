//! Who may call `POST /oauth/introspect`. RFC 7662 §2.1 wants the caller authorised, lest
//! anyone holding a token (or guessing) learn its subject, role and scope: a configured client
//! authenticates with HTTP Basic (`[[server.introspection.client]]`, secrets compared as
//! SHA-256 digests in constant time), or the caller is on loopback and not relayed by a proxy.
//! Refused callers spend the per-address budget of refused credentials and get 429 past it.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::clock::Clock;
use crate::config::{IntrospectionConfig, KeyProblem};
use crate::metrics::Metrics;
use crate::ratelimit::{Limits, address_key};

/// A configured caller: its id and the SHA-256 of its secret.
#[derive(Clone)]
struct Client {
    id: String,
    digest: [u8; 32],
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("id", &self.id).finish()
    }
}

/// The compiled `[server.introspection]`.
#[derive(Debug, Clone)]
pub struct IntrospectionAuth {
    clients: Vec<Client>,
    allow_loopback: bool,
}

impl Default for IntrospectionAuth {
    /// No clients; loopback callers only.
    fn default() -> Self {
        Self {
            clients: Vec::new(),
            allow_loopback: true,
        }
    }
}

/// Who was let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspector {
    /// A caller on loopback, not relayed.
    Loopback,
    /// A configured client, by id.
    Client(String),
}

/// Why a caller was refused (the text is safe to return: it names no secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `Authorization` header, and not a loopback caller.
    #[error("introspection needs client credentials (HTTP Basic client_id:secret)")]
    Missing,
    /// `Authorization` is not a well-formed Basic credential.
    #[error(
        "introspection needs HTTP Basic client credentials; the Authorization header is not one"
    )]
    Malformed,
    /// Unknown client id or wrong secret (which one is not said).
    #[error("unknown client or wrong secret")]
    Wrong,
}

/// A refused caller, after the per-address budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Within the budget: 401 with the reason.
    Unauthorised(Refusal),
    /// Past it: 429, retry after this many seconds.
    TooMany {
        /// Seconds until the budget allows another attempt.
        retry_after: u64,
    },
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl IntrospectionAuth {
    /// Compiles `config`, reading each `secret_env` through `env` (the process environment in
    /// production). A missing or empty variable is named, its value never.
    pub fn compile(
        config: &IntrospectionConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, KeyProblem> {
        let mut clients = Vec::with_capacity(config.client.len());
        for (i, c) in config.client.iter().enumerate() {
            let key = |k: &str| format!("server.introspection.client[{i}].{k}");
            let digest = match (&c.secret_env, &c.secret_sha256) {
                (Some(var), None) => match env(var) {
                    Some(secret) if !secret.is_empty() => sha256(secret.as_bytes()),
                    _ => {
                        return Err(KeyProblem::new(
                            key("secret_env"),
                            format!("environment variable {var} is not set or empty"),
                        ));
                    }
                },
                (None, Some(hex_digest)) => {
                    let mut digest = [0u8; 32];
                    hex::decode_to_slice(hex_digest, &mut digest).map_err(|_| {
                        KeyProblem::new(key("secret_sha256"), "must be 64 hex digits")
                    })?;
                    digest
                }
                _ => {
                    return Err(KeyProblem::new(
                        key("secret_env"),
                        "give exactly one of secret_env or secret_sha256",
                    ));
                }
            };
            clients.push(Client {
                id: c.client_id.clone(),
                digest,
            });
        }
        Ok(Self {
            clients,
            allow_loopback: config.allow_loopback,
        })
    }

    /// Decides a caller presenting `authorization` (the raw header value) from `peer`;
    /// `relayed` is whether the request carries a proxy's forwarding header. A credential
    /// that is present is always checked, also from loopback.
    pub fn check(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<IpAddr>,
        relayed: bool,
    ) -> Result<Introspector, Refusal> {
        let Some(value) = authorization else {
            return match peer {
                Some(ip) if self.allow_loopback && ip.is_loopback() && !relayed => {
                    Ok(Introspector::Loopback)
                }
                _ => Err(Refusal::Missing),
            };
        };
        let (id, secret) = basic(value).ok_or(Refusal::Malformed)?;
        let presented = sha256(&secret);
        // Every client's digest is compared, so the time does not tell which ids exist.
        let mut found = None;
        for c in &self.clients {
            let same = c.id.as_bytes() == id.as_slice();
            if bool::from(c.digest.ct_eq(&presented)) && same {
                found = Some(c.id.clone());
            }
        }
        found.map(Introspector::Client).ok_or(Refusal::Wrong)
    }
}

/// The `(user, password)` of a `Basic` credential.
fn basic(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// The door of `/oauth/introspect`: [`IntrospectionAuth`] and the refused-credential budget.
#[derive(Clone)]
pub struct IntrospectionGate {
    /// Who may call.
    pub auth: Arc<IntrospectionAuth>,
    /// The per-address budget of refused credentials (shared with the gateway and `/authz`).
    pub limits: Arc<Limits>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Counts refusals.
    pub metrics: Arc<Metrics>,
}

impl IntrospectionGate {
    /// Lets the caller in, or refuses it: within the address's budget with the reason (counted
    /// as `introspection_refused`), past it with a retry time (`introspection_over_limit`).
    pub async fn admit(
        &self,
        authorization: Option<&[u8]>,
        peer: Option<IpAddr>,
        relayed: bool,
    ) -> Result<Introspector, Refused> {
        let refusal = match self.auth.check(authorization, peer, relayed) {
            Ok(who) => return Ok(who),
            Err(r) => r,
        };
        let key = address_key(&peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()));
        match self.limits.refused.take(&key, self.clock.now_ms()).await {
            Ok(()) => {
                self.metrics.unaudited("introspection_refused");
                Err(Refused::Unauthorised(refusal))
            }
            Err(retry_after) => {
                self.metrics.unaudited("introspection_over_limit");
                Err(Refused::TooMany { retry_after })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IntrospectionClientConfig;

    fn auth(allow_loopback: bool) -> IntrospectionAuth {
        let config = IntrospectionConfig {
            allow_loopback,
            client: vec![
                IntrospectionClientConfig {
                    client_id: "proxy".into(),
                    secret_env: Some("PROXY_SECRET".into()),
                    secret_sha256: None,
                },
                IntrospectionClientConfig {
                    client_id: "hashed".into(),
                    secret_env: None,
                    secret_sha256: Some(hex::encode(sha256(b"s3cret-hashed"))),
                },
            ],
        };
        IntrospectionAuth::compile(&config, |k| {
            (k == "PROXY_SECRET").then(|| "s3cret-plain".to_owned())
        })
        .expect("compiles")
    }

    fn basic_header(user: &str, pass: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
        .into_bytes()
    }

    #[test]
    fn clients_authenticate_and_loopback_is_let_in_unless_relayed() {
        let a = auth(true);
        let remote: IpAddr = "192.0.2.7".parse().expect("ip");
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        let lo6: IpAddr = "::1".parse().expect("ip");
        let ok = |u: &str, p: &str, peer| a.check(Some(&basic_header(u, p)), Some(peer), false);
        assert_eq!(
            ok("proxy", "s3cret-plain", remote),
            Ok(Introspector::Client("proxy".into()))
        );
        assert_eq!(
            ok("hashed", "s3cret-hashed", remote),
            Ok(Introspector::Client("hashed".into()))
        );
        assert_eq!(ok("proxy", "s3cret-hashed", remote), Err(Refusal::Wrong));
        assert_eq!(ok("nobody", "s3cret-plain", remote), Err(Refusal::Wrong));
        assert_eq!(ok("proxy", "", remote), Err(Refusal::Wrong));
        // A wrong credential is refused from loopback too.
        assert_eq!(ok("proxy", "nope", lo), Err(Refusal::Wrong));
        assert_eq!(
            a.check(Some(b"Bearer abc"), Some(remote), false),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            a.check(Some(b"Basic !!!"), Some(remote), false),
            Err(Refusal::Malformed)
        );
        assert_eq!(a.check(None, Some(remote), false), Err(Refusal::Missing));
        assert_eq!(a.check(None, None, false), Err(Refusal::Missing));
        assert_eq!(a.check(None, Some(lo), false), Ok(Introspector::Loopback));
        assert_eq!(a.check(None, Some(lo6), false), Ok(Introspector::Loopback));
        assert_eq!(a.check(None, Some(lo), true), Err(Refusal::Missing));
        assert_eq!(
            auth(false).check(None, Some(lo), false),
            Err(Refusal::Missing)
        );
    }

    #[test]
    fn a_missing_secret_variable_is_named_never_its_value() {
        let config = IntrospectionConfig {
            allow_loopback: true,
            client: vec![IntrospectionClientConfig {
                client_id: "proxy".into(),
                secret_env: Some("NOT_SET".into()),
                secret_sha256: None,
            }],
        };
        let err = IntrospectionAuth::compile(&config, |_| None).expect_err("missing");
        assert_eq!(err.key, "server.introspection.client[0].secret_env");
        assert!(err.problem.contains("NOT_SET"), "{err}");
        // Debug never prints a digest.
        let a = auth(true);
        assert!(!format!("{a:?}").contains(&hex::encode(sha256(b"s3cret-hashed"))));
    }

    #[tokio::test]
    async fn refused_callers_spend_the_address_budget_then_get_429() {
        let limits = crate::config::RateLimitConfig {
            refused_per_minute: 1,
            refused_burst: 2,
            ..Default::default()
        };
        let gate = IntrospectionGate {
            auth: Arc::new(auth(true)),
            limits: Arc::new(Limits::new(&limits, Arc::new(Metrics::new()))),
            clock: Arc::new(crate::clock::ManualClock::new(1_000_000)),
            metrics: Arc::new(Metrics::new()),
        };
        let remote: IpAddr = "192.0.2.7".parse().expect("ip");
        for _ in 0..2 {
            assert_eq!(
                gate.admit(None, Some(remote), false).await,
                Err(Refused::Unauthorised(Refusal::Missing))
            );
        }
        assert!(matches!(
            gate.admit(None, Some(remote), false).await,
            Err(Refused::TooMany { retry_after }) if retry_after > 0
        ));
        // Callers let in spend nothing, and other addresses have their own budget.
        let good = basic_header("proxy", "s3cret-plain");
        assert!(gate.admit(Some(&good), Some(remote), false).await.is_ok());
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        assert_eq!(
            gate.admit(None, Some(other), false).await,
            Err(Refused::Unauthorised(Refusal::Missing))
        );
        assert_eq!(
            gate.metrics.unaudited_snapshot(),
            [
                ("introspection_over_limit", 1),
                ("introspection_refused", 3)
            ]
        );
    }
}
