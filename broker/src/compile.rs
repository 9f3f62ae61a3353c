//! The one compile step: a parsed [`Config`] (plain serde data) becomes the runtime objects
//! the broker works with — trusted issuers, the compiled policy, the admin policy, the
//! gateway's upstreams, the published settings. `check-config` and `serve` both call
//! [`compile`]; nothing compiles configuration anywhere else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use crate::admin::AdminPolicy;
use crate::config::{
    AuditConfig, AuditSinkKind, Config, ConfigError, ExchangeConfig, KeyProblem, ServerConfig,
    StoreConfig,
};
use crate::gateway::{Gateway, UpstreamError};
use crate::identity::{CacheTimes, Verifier};
use crate::introspection::IntrospectionAuth;
use crate::policy::CompiledPolicy;
use crate::recorder::sink::SinkTarget;

/// Facts about this broker that endpoints publish.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The broker's public URL (`iss` of its tokens).
    pub public_url: String,
    /// The audience of the broker's tokens.
    pub audience: String,
    /// The audience CI tokens must be minted for.
    pub subject_audience: String,
    /// The OIDC issuer URL people log in with, if any.
    pub login_issuer: Option<String>,
    /// The public client id for that login.
    pub login_client_id: Option<String>,
    /// The scopes that login asks for (space-separated), if configured.
    pub login_scope: Option<String>,
    /// Whether this is `jit-broker dev`.
    pub dev_mode: bool,
}

/// A configuration compiled: everything `serve` needs except what it must open (keys, store,
/// export file), which [`crate::state::AppState::open`] does.
pub struct Compiled {
    /// Published facts.
    pub settings: Settings,
    /// The trusted issuers.
    pub verifier: Verifier,
    /// The compiled roles.
    pub policy: CompiledPolicy,
    /// Who may use the admin API.
    pub admins: AdminPolicy,
    /// The gateway's upstreams, credentials loaded.
    pub gateway: Gateway,
    /// Token-exchange settings.
    pub exchange: ExchangeConfig,
    /// Where grants and audit events live.
    pub store: StoreConfig,
    /// The signing-key directory.
    pub keys_dir: PathBuf,
    /// `audit.export`: `stdout` or a file path.
    pub export: Option<String>,
    /// The durable audit sink and the checkpoint interval.
    pub audit: AuditSetup,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Issuers configured (for the `check-config` summary).
    pub issuers: usize,
    /// `[server]`: connection caps and timeouts, the metrics address.
    pub server: ServerConfig,
    /// Who may call `/oauth/introspect`, secrets loaded.
    pub introspection: IntrospectionAuth,
    /// `[[notify.webhook]]`: the approval webhooks, signing secrets loaded.
    pub webhooks: Vec<crate::notify::Webhook>,
}

/// `[audit]` resolved: where the durable copy goes and how often the head is signed.
#[derive(Debug, Clone)]
pub struct AuditSetup {
    /// The sink.
    pub sink: SinkTarget,
    /// Whether the replica name was configured (else it is the host name, which may take
    /// the process id when another broker here uses it).
    pub replica_given: bool,
    /// The replica name (`audit.replica`, else the host name): its chain in the store and,
    /// with the file sink, its files' name.
    pub replica: String,
    /// Time between signed checkpoints.
    pub checkpoint_interval: Duration,
}

impl AuditSetup {
    /// `[audit]` of a broker whose keys are in `keys_dir`.
    pub fn resolve(audit: &AuditConfig, keys_dir: &Path) -> Self {
        let sink = match audit.sink {
            AuditSinkKind::File => SinkTarget::File {
                dir: audit.dir.clone().unwrap_or_else(|| {
                    keys_dir
                        .parent()
                        .unwrap_or_else(|| Path::new("."))
                        .join("audit")
                }),
                replica: audit.replica.clone().unwrap_or_else(host_name),
                rotate_bytes: audit.rotate_mib << 20,
            },
            AuditSinkKind::Syslog => SinkTarget::Syslog,
            AuditSinkKind::Stdout => SinkTarget::Stdout,
        };
        Self {
            sink,
            replica_given: audit.replica.is_some(),
            replica: audit.replica.clone().unwrap_or_else(host_name),
            checkpoint_interval: Duration::from_secs(audit.checkpoint_secs),
        }
    }
}

/// This host's name as a replica name (characters outside the allowed set become `_`),
/// `broker` if it has none.
pub fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .take(48)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if crate::config::valid_replica(&name) {
        name
    } else {
        "broker".to_owned()
    }
}

fn invalid(file: &Path, p: KeyProblem) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        key: p.key,
        problem: p.problem,
    }
}

/// The admin policy of `config`: `[admin]` against the configured issuers and roles.
fn admin_policy(config: &Config) -> Result<AdminPolicy, KeyProblem> {
    for (i, r) in config.admin.roles.iter().enumerate() {
        if !config.role.iter().any(|role| &role.name == r) {
            return Err(KeyProblem::new(
                format!("admin.roles[{i}]"),
                format!("no [[role]] is named {r:?}"),
            ));
        }
    }
    AdminPolicy::compile(&config.admin, |name| {
        config.issuer.iter().any(|i| i.name == name)
    })
    .map_err(|(key, problem)| KeyProblem { key, problem })
}

/// Compiles `config` (read from `file`, which only names the source in errors).
pub fn compile(config: &Config, file: &Path) -> Result<Compiled, ConfigError> {
    // Every JWT the compiled objects sign or verify goes through ring (a no-op after the
    // binary's own call).
    crate::jose::install();
    config.validate(file)?;
    let bad = |p: KeyProblem| invalid(file, p);
    let policy = crate::policy::check_config(config).map_err(bad)?;
    let admins = admin_policy(config).map_err(bad)?;
    // Every entry is checked before any credential is loaded, so a mistake anywhere is named
    // even where a secret is not available (a laptop checking a production file).
    for (i, upstream) in config.upstream.iter().enumerate() {
        crate::gateway::upstream::validate(upstream).map_err(|(key, problem)| {
            bad(KeyProblem::new(format!("upstream[{i}].{key}"), problem))
        })?;
    }
    let gateway = Gateway::from_config(&config.upstream).map_err(|e| match e {
        UpstreamError::Invalid {
            index,
            key,
            problem,
        } => bad(KeyProblem::new(format!("upstream[{index}].{key}"), problem)),
        other => bad(KeyProblem::new("upstream", other.to_string())),
    })?;
    let verifier = Verifier::new(&config.issuer, CacheTimes::default()).map_err(bad)?;
    let introspection =
        IntrospectionAuth::compile(&config.server.introspection, |k| std::env::var(k).ok())
            .map_err(bad)?;
    let webhooks = crate::notify::webhook::load(&config.notify, |k| std::env::var(k).ok())
        .map_err(|e| match e {
            crate::notify::NotifyError::Invalid(p) => bad(p),
            other => bad(KeyProblem::new("notify.webhook", other.to_string())),
        })?;
    let (login_issuer, login_client_id, login_scope) = match &config.login {
        Some(l) => {
            let (issuer, client) = l.resolve(&config.issuer).map_err(bad)?;
            (Some(issuer), Some(client), Some(l.scope().map_err(bad)?))
        }
        None => (None, None, None),
    };
    Ok(Compiled {
        settings: Settings {
            public_url: config.broker.public_url.clone(),
            audience: config.broker.audience.clone(),
            subject_audience: config.subject_audience().to_owned(),
            login_issuer,
            login_client_id,
            login_scope,
            dev_mode: false,
        },
        verifier,
        policy,
        admins,
        gateway,
        exchange: config.exchange,
        store: config.store.clone(),
        keys_dir: config.broker.keys_dir.clone(),
        export: config.audit.export.clone(),
        audit: AuditSetup::resolve(&config.audit, &config.broker.keys_dir),
        listen: config.broker.listen,
        issuers: config.issuer.len(),
        server: config.server.clone(),
        introspection,
        webhooks,
    })
}

/// Reads `file` and compiles it: what `check-config` and `serve` both start with.
pub fn load(file: &Path) -> Result<Compiled, ConfigError> {
    compile(&Config::load(file)?, file)
}

#[cfg(test)]
mod examples;
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

[[issuer]]
name = "corp"
issuer = "https://sso.example.com"
audience = "git-jit"

[[role]]
name = "read"
issuer = "corp"
repositories = ["acme/*"]
actions = ["read"]

[admin]
roles = ["read"]
"#;

    fn compile_text(text: &str) -> Result<Compiled, ConfigError> {
        let f = Path::new("broker.toml");
        compile(&Config::parse(text, f)?, f)
    }

    #[test]
    fn compiles_a_good_file() {
        let c = compile_text(GOOD).expect("compiles");
        assert_eq!(c.policy.roles().len(), 1);
        assert_eq!(c.issuers, 1);
        assert_eq!(c.settings.subject_audience, "https://jit.example.com");
    }

    #[test]
    fn cross_section_problems_name_file_and_key() {
        let cases = [
            (
                GOOD.replace("issuer = \"corp\"\nrepo", "issuer = \"nope\"\nrepo"),
                "role",
            ),
            (
                GOOD.replace("roles = [\"read\"]", "roles = [\"ghost\"]"),
                "admin.roles[0]",
            ),
            (
                format!("{GOOD}\n[[upstream]]\nrepositories = [\"**\"]\nurl = \"ftp://x\"\n"),
                "upstream[0].url",
            ),
            (
                format!("{GOOD}\n[login]\nissuer = \"ghost\"\n"),
                "login.issuer",
            ),
        ];
        for (text, key) in cases {
            let Err(err) = compile_text(&text) else {
                panic!("{key}: compiled");
            };
            let err = err.to_string();
            assert!(err.starts_with("broker.toml: "), "{err}");
            assert!(err.contains(key), "{err:?} lacks {key:?}");
        }
    }
}
