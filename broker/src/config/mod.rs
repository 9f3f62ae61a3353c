//! The broker's configuration file (TOML). Every key is documented here and in
//! deploy/broker.example.toml; unknown keys are refused, and a bad file fails at start naming
//! the file, the key and the problem. Secrets come from the environment, never the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod admin;
mod exchange;
mod identity;
mod notify;
mod policy;
mod server;

pub use admin::{AdminConfig, AdminIdentityConfig};
pub use exchange::{ExchangeConfig, RateLimitConfig};
pub use identity::{IssuerConfig, LoginConfig};
pub use notify::{EVENT_NAMES, NotifyConfig, SecretSource, WebhookConfig, WebhookFormat};
pub use policy::{
    ApprovalConfig, ApproverConfig, ConditionConfig, RoleConfig, ScalarConfig, check_name,
    valid_name,
};
pub use server::{
    FD_RESERVE, IntrospectionClientConfig, IntrospectionConfig, ServerConfig, TlsConfig,
    derived_cap, parse_net,
};

/// A value that parses but is not acceptable, named by its key (`role[2].max_ttl`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct KeyProblem {
    /// The offending key.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl KeyProblem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Environment variable that overrides `store.url` (it may carry a password).
pub const REDIS_URL_ENV: &str = "JIT_REDIS_URL";

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {error}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error (part of the message, not a separate cause: printed once).
        error: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names key and line).
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's message, naming the key and position.
        message: String,
    },
    /// A key has a value that parses but is not acceptable.
    #[error("{file}: {key}: {problem}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The offending key (`store.url`, `role[2].max_ttl`).
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How the broker presents itself.
    pub broker: BrokerConfig,
    /// Where grants and audit events live.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[[issuer]]`: trusted OIDC issuers (people's SSO, CI platforms).
    #[serde(default)]
    pub issuer: Vec<IssuerConfig>,
    /// `[[role]]`: who may get which access, for how long.
    #[serde(default)]
    pub role: Vec<RoleConfig>,
    /// `[login]`: the issuer and client id `git jit login` uses.
    #[serde(default)]
    pub login: Option<LoginConfig>,
    /// `[exchange]`: token-exchange settings (proxies, rate limits).
    #[serde(default)]
    pub exchange: ExchangeConfig,
    /// Where audit events are copied besides the store.
    #[serde(default)]
    pub audit: AuditConfig,
    /// `[admin]`: who may use the admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// `[[upstream]]`: the Git servers behind the gateway, first matching entry wins.
    #[serde(default)]
    pub upstream: Vec<UpstreamConfig>,
    /// `[server]`: connection caps and timeouts, the metrics address, introspection callers.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[[notify.webhook]]`: signed webhooks told of approval requests and decisions.
    #[serde(default)]
    pub notify: NotifyConfig,
}

/// `[audit]`: the durable sink every event reaches before its decision is answered, the
/// signed checkpoints of the chain head, and the SIEM export.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `stdout`, or a file path to append to: a copy of each event as a JSON line of the
    /// schema in docs/audit.md, for a SIEM (not synced). Unset: no export.
    #[serde(default)]
    pub export: Option<String>,
    /// The durable sink: `file` (default; per-replica append-only JSON-lines files, fsynced
    /// before any answer), `syslog` (`/dev/log`, authpriv) or `stdout`.
    #[serde(default)]
    pub sink: AuditSinkKind,
    /// The folder of the audit files (created 0700). Default: `audit` beside
    /// `broker.keys_dir`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// This replica's name (letters, digits, `.`, `_`, `-`): its audit chain in the store
    /// and its file names. Each broker sharing a store needs its own: a second one writing
    /// under the same name has its audit events refused. Default: the host name; with the
    /// process id appended when another broker already writes under it in the same folder.
    #[serde(default)]
    pub replica: Option<String>,
    /// A new file starts once the current one holds this many MiB. Default 128.
    #[serde(default = "default_rotate_mib")]
    pub rotate_mib: u64,
    /// Seconds between signed checkpoints of the chain head (written only when events
    /// followed the last one). Default 60.
    #[serde(default = "default_checkpoint_secs")]
    pub checkpoint_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            export: None,
            sink: AuditSinkKind::default(),
            dir: None,
            replica: None,
            rotate_mib: default_rotate_mib(),
            checkpoint_secs: default_checkpoint_secs(),
        }
    }
}

/// `audit.sink`: where the durable copy of the trail goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSinkKind {
    /// Per-replica append-only JSON-lines files, group-committed fsync, rotated by size.
    #[default]
    File,
    /// The local syslog daemon.
    Syslog,
    /// Standard output (a collector takes it from there).
    Stdout,
}

fn default_rotate_mib() -> u64 {
    128
}

fn default_checkpoint_secs() -> u64 {
    60
}

impl AuditConfig {
    /// Checks the values; the problem names its key.
    pub fn validate(&self) -> Result<(), KeyProblem> {
        if !(1..=1 << 20).contains(&self.rotate_mib) {
            return Err(KeyProblem::new(
                "audit.rotate_mib",
                "must be between 1 and 1048576",
            ));
        }
        if !(1..=86_400).contains(&self.checkpoint_secs) {
            return Err(KeyProblem::new(
                "audit.checkpoint_secs",
                "must be between 1 and 86400",
            ));
        }
        if let Some(r) = self.replica.as_ref().filter(|r| !valid_replica(r)) {
            return Err(KeyProblem::new(
                "audit.replica",
                format!("{r:?}: use 1 to 64 letters, digits, '.', '_' or '-'"),
            ));
        }
        Ok(())
    }
}

/// Whether `name` may name a replica (it becomes part of file names).
pub fn valid_replica(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `[[upstream]]`: where the gateway sends requests for some repositories.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Patterns of repository paths (`acme/*`, `acme/**`, `**`); `*` stays within one path
    /// segment, `**` crosses them; no `{claim}` placeholders. Dialect and examples:
    /// `docs/patterns.md`.
    pub repositories: Vec<String>,
    /// `http(s)://host/prefix` (requests go to `{url}/{repo}.git/…`) or `dir:/srv/git`
    /// (bare repositories `{dir}/{repo}.git` served by `git http-backend`).
    pub url: String,
    /// The credential the broker injects for an http(s) upstream (never the client's).
    #[serde(default)]
    pub credential: Option<UpstreamCredential>,
    /// Seconds to wait for a TCP/TLS connection to an http(s) upstream. Default 10.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds an http(s) upstream may stay silent while answering. Default 300.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds a pooled connection to an http(s) upstream may stay idle before the broker
    /// drops it; keep it below the upstream's own keep-alive timeout, so no request goes out
    /// on a connection the upstream is closing. 0: a fresh connection per request. Default 4.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u64,
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_keepalive() -> u64 {
    4
}

fn default_idle_timeout() -> u64 {
    300
}

/// An upstream credential; the secret itself comes from an environment variable or a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum UpstreamCredential {
    /// HTTP Basic.
    Basic {
        /// The user name.
        username: String,
        /// Environment variable holding the password.
        #[serde(default)]
        password_env: Option<String>,
        /// File holding the password (trailing newline ignored).
        #[serde(default)]
        password_file: Option<PathBuf>,
    },
    /// `Authorization: Bearer`.
    Bearer {
        /// Environment variable holding the token.
        #[serde(default)]
        token_env: Option<String>,
        /// File holding the token (trailing newline ignored).
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
}

/// `[broker]`: addresses, names and keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address to listen on, e.g. `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// The broker's public URL: the `iss` of its tokens and the base of its endpoints.
    pub public_url: String,
    /// The audience of the broker's tokens, checked by the gateway. Default `git-jit`.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// The audience CI platforms must mint their OIDC tokens for (what the helper asks
    /// GitHub Actions for). Default: `public_url`.
    #[serde(default)]
    pub subject_audience: Option<String>,
    /// Directory of Ed25519 PKCS#8 PEM signing keys (`jit-broker keys generate`).
    pub keys_dir: PathBuf,
}

fn default_audience() -> String {
    "git-jit".to_owned()
}

/// Which store implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In-process; one broker only, state lost on restart.
    Memory,
    /// Redis (single node or cluster): the production store.
    #[default]
    Redis,
}

/// `[store]`: the grant store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `redis` (default) or `memory`.
    #[serde(default)]
    pub kind: StoreKind,
    /// Redis URL (`redis://host:6379/0`, `rediss://…`). Overridden by `JIT_REDIS_URL`;
    /// put passwords there, not here.
    #[serde(default)]
    pub url: Option<String>,
    /// Redis Cluster seed nodes; when set, `url` is not used.
    #[serde(default)]
    pub cluster: Vec<String>,
    /// Redis Sentinel URLs (`redis://host:26379`): the store is the primary they name
    /// `sentinel_master`, found again after a failover. `url` then only gives the data
    /// nodes' user, password, database and scheme (`rediss://` for TLS).
    #[serde(default)]
    pub sentinel: Vec<String>,
    /// The name the Sentinels monitor the primary under. Default `mymaster`.
    #[serde(default = "default_sentinel_master")]
    pub sentinel_master: String,
    /// PEM file of the CA that signed the Redis servers' certificates (`rediss://`), instead
    /// of the system's roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Replicas that must hold a revocation before it is answered (Redis `WAIT`), so a
    /// failover cannot undo an answered revocation. 0 (default): answered once the primary
    /// holds it. With Sentinel, set 1 or more (docs/operations.md).
    #[serde(default)]
    pub revocation_replicas: u32,
    /// Prefix of every key the broker writes. Default `jit`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Audit events kept in the store per lane (evidence, traffic; older ones are trimmed).
    /// Default 1,000,000.
    #[serde(default = "default_audit_max")]
    pub audit_max_events: usize,
    /// Bytes of event JSON the evidence lane (grants, revocations, admin actions) keeps.
    /// Default 1 GiB.
    #[serde(default = "default_evidence_bytes")]
    pub audit_evidence_max_bytes: u64,
    /// Days the evidence lane keeps events. Default 400.
    #[serde(default = "default_evidence_days")]
    pub audit_evidence_max_days: u32,
    /// Bytes of event JSON the traffic lane (Git accesses, every refusal) keeps. Default
    /// 256 MiB.
    #[serde(default = "default_traffic_bytes")]
    pub audit_traffic_max_bytes: u64,
    /// Days the traffic lane keeps events. Default 30.
    #[serde(default = "default_traffic_days")]
    pub audit_traffic_max_days: u32,
}

fn default_evidence_bytes() -> u64 {
    1 << 30
}
fn default_evidence_days() -> u32 {
    400
}
fn default_traffic_bytes() -> u64 {
    256 << 20
}
fn default_traffic_days() -> u32 {
    30
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Redis,
            url: None,
            cluster: Vec::new(),
            sentinel: Vec::new(),
            sentinel_master: default_sentinel_master(),
            ca_file: None,
            revocation_replicas: 0,
            prefix: default_prefix(),
            audit_max_events: default_audit_max(),
            audit_evidence_max_bytes: default_evidence_bytes(),
            audit_evidence_max_days: default_evidence_days(),
            audit_traffic_max_bytes: default_traffic_bytes(),
            audit_traffic_max_days: default_traffic_days(),
        }
    }
}

fn default_sentinel_master() -> String {
    "mymaster".to_owned()
}

fn default_prefix() -> String {
    "jit".to_owned()
}

fn default_audit_max() -> usize {
    1_000_000
}

/// ` (section.key)` for the TOML line starting at `line_start`, when it assigns a key.
fn key_at(text: &str, line_start: usize) -> String {
    let line = text[line_start..].lines().next().unwrap_or("");
    let Some((key, _)) = line.split_once('=') else {
        return String::new();
    };
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']'));
    match section {
        Some(sec) => format!(" ({sec}.{})", key.trim()),
        None => format!(" ({})", key.trim()),
    }
}

impl Config {
    /// Reads and parses `file`, applies the environment overlay, and checks each value on its
    /// own. Compile it with [`crate::compile::compile`] before use.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            error: source,
        })?;
        let mut config = Self::parse(&text, file)?;
        if let Ok(url) = std::env::var(REDIS_URL_ENV) {
            config.store.url = Some(url);
        }
        config.validate(file)?;
        Ok(config)
    }

    /// Parses TOML text; `file` only names the source in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            // "line L, column C: <what>", the key named by serde in <what>.
            let at = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let line_start = before.rfind('\n').map_or(0, |n| n + 1);
                let column = before.len() - line_start + 1;
                format!("line {line}, column {column}{}: ", key_at(text, line_start))
            });
            ConfigError::Parse {
                file: file.to_path_buf(),
                message: format!("{}{}", at.unwrap_or_default(), e.message().trim_end()),
            }
        })
    }

    /// Checks what the types alone cannot, section by section; what needs several sections
    /// together (roles against issuers, admins against roles) is [`crate::compile`]'s job.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            key: key.to_owned(),
            problem,
        };
        let url = &self.broker.public_url;
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.ends_with('/') {
            return Err(invalid(
                "broker.public_url",
                format!("{url:?} must be an http(s) URL without a trailing '/'"),
            ));
        }
        if self.broker.audience.is_empty() {
            return Err(invalid("broker.audience", "must not be empty".into()));
        }
        if self.store.prefix.is_empty() || self.store.prefix.contains(['{', '}', ' ']) {
            return Err(invalid(
                "store.prefix",
                "must be non-empty without '{', '}' or spaces".into(),
            ));
        }
        if self.store.kind == StoreKind::Redis
            && self.store.url.is_none()
            && self.store.cluster.is_empty()
            && self.store.sentinel.is_empty()
        {
            return Err(invalid(
                "store.url",
                format!(
                    "the redis store needs a URL (here, in store.cluster, store.sentinel, or in {REDIS_URL_ENV})"
                ),
            ));
        }
        if !self.store.cluster.is_empty() && !self.store.sentinel.is_empty() {
            return Err(invalid(
                "store.sentinel",
                "give store.cluster or store.sentinel, not both".into(),
            ));
        }
        self.server
            .validate()
            .map_err(|p| invalid(&p.key, p.problem))?;
        self.audit
            .validate()
            .map_err(|p| invalid(&p.key, p.problem))?;
        if self.store.audit_max_events == 0 {
            return Err(invalid(
                "store.audit_max_events",
                "must be at least 1".into(),
            ));
        }
        for (key, zero) in [
            (
                "store.audit_evidence_max_bytes",
                self.store.audit_evidence_max_bytes == 0,
            ),
            (
                "store.audit_evidence_max_days",
                self.store.audit_evidence_max_days == 0,
            ),
            (
                "store.audit_traffic_max_bytes",
                self.store.audit_traffic_max_bytes == 0,
            ),
            (
                "store.audit_traffic_max_days",
                self.store.audit_traffic_max_days == 0,
            ),
        ] {
            if zero {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        Ok(())
    }

    /// The audience CI tokens must be minted for.
    pub fn subject_audience(&self) -> &str {
        self.broker
            .subject_audience
            .as_deref()
            .unwrap_or(&self.broker.public_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[broker]
listen = "127.0.0.1:8080"
public_url = "https://jit.example.com"
keys_dir = "keys"

[store]
url = "redis://127.0.0.1:6379"
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let f = Path::new("broker.toml");
        let c = Config::parse(text, f)?;
        c.validate(f)?;
        Ok(c)
    }

    #[test]
    fn good_file() {
        let c = load(GOOD).expect("valid");
        assert_eq!(c.broker.audience, "git-jit");
        assert_eq!(c.subject_audience(), "https://jit.example.com");
        assert_eq!(c.store.prefix, "jit");
    }

    #[test]
    fn bad_files_name_file_key_and_problem() {
        let cases = [
            (
                GOOD.replace("keys_dir", "key_dir"),
                "unknown field `key_dir`",
            ),
            (GOOD.replace("127.0.0.1:8080", "nowhere"), "listen"),
            (
                GOOD.replace("https://jit.example.com", "jit.example.com"),
                "broker.public_url",
            ),
            (
                GOOD.replace("url = \"redis://127.0.0.1:6379\"", ""),
                "store.url",
            ),
            (
                GOOD.replace("[store]", "[store]\nprefix = \"a{b}\""),
                "store.prefix",
            ),
            (
                GOOD.replace("[store]", "[store]\nkind = \"sqlite\""),
                "unknown variant `sqlite`",
            ),
            (format!("{GOOD}\n[extra]\n"), "unknown field `extra`"),
        ];
        for (text, needle) in cases {
            let err = load(&text).expect_err("refused").to_string();
            assert!(err.starts_with("broker.toml: "), "{err}");
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }
}
