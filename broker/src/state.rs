//! The broker's shared state: configuration, keys, store, clock, auditor. The outside world
//! enters only through the trait objects here. Handlers never take the whole state: each
//! takes the narrow one its service needs ([`Exchanger`], [`Gatekeeper`], [`AdminApi`],
//! [`Health`], the settings, the signer), cut out of it by axum's `FromRef`.

use std::path::Path;
use std::sync::Arc;

use axum::extract::FromRef;

use crate::admin::{AdminApi, AdminPolicy};
use crate::approval::Approvals;
use crate::clock::{Clock, SystemClock};
use crate::compile::AuditSetup;
use crate::compile::{Compiled, Settings};
use crate::config::{ServerConfig, StoreKind};
use crate::devissuer::{self, DevIssuer};
use crate::exchange::{ExchangeConfig, Exchanger};
use crate::gatekeeper::Gatekeeper;
use crate::gateway::Gateway;
use crate::identity::Verifier;
use crate::introspection::{IntrospectionAuth, IntrospectionGate};
use crate::keys::{KeyError, KeyRing};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::policy::CompiledPolicy;
use crate::ratelimit::Backend;
use crate::ratelimit::Limits;
use crate::ratelimit::redis::RedisGcra;
use crate::recorder::sink::{Sink, SinkError, SinkTarget};
use crate::recorder::{Auditor, Checkpoints, Export};
use crate::runtime::AdminRuntime;
use crate::store::memory::MemoryStore;
use crate::store::redis::{RedisStore, Topology};
use crate::store::timed::TimedStore;
use crate::store::{AuditRetention, GrantStore};
use crate::token::TokenSigner;

/// Why the broker could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The signing keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
}

/// Everything a request handler may use.
#[derive(Clone)]
pub struct AppState {
    /// Published facts.
    pub settings: Arc<Settings>,
    /// Signs and verifies tokens.
    pub signer: TokenSigner,
    /// Live grants and the audit trail.
    pub store: Arc<dyn GrantStore>,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Records audit events.
    pub audit: Auditor,
    /// Verifies presented identities (trusted issuers and their keys).
    pub identity: Arc<Verifier>,
    /// The compiled roles.
    pub policy: Arc<CompiledPolicy>,
    /// Rate limits of the token exchange.
    pub limits: Arc<Limits>,
    /// Token-exchange settings.
    pub exchange: Arc<ExchangeConfig>,
    /// The development issuer (`jit-broker dev` only; never from a config file).
    pub dev_issuer: Option<Arc<DevIssuer>>,
    /// Who may use the admin API.
    pub admins: Arc<AdminPolicy>,
    /// The Git gateway's upstreams.
    pub gateway: Arc<Gateway>,
    /// `[server]`: connection caps and timeouts, the metrics address.
    pub server: Arc<ServerConfig>,
    /// Who may call `/oauth/introspect`.
    pub introspection: Arc<IntrospectionAuth>,
    /// Sends approval events to the configured webhooks.
    pub notifier: Notifier,
    /// Where admin reads and background work run ([`AdminRuntime::inline`] unless set).
    pub admin_runtime: AdminRuntime,
}

impl AppState {
    /// State from explicit parts (tests, embedding).
    pub fn new(
        settings: Settings,
        keys: KeyRing,
        store: Arc<dyn GrantStore>,
        clock: Arc<dyn Clock>,
        export: Option<Export>,
    ) -> Self {
        let signer = TokenSigner::new(
            Arc::new(keys),
            settings.public_url.clone(),
            settings.audience.clone(),
        );
        let metrics = Arc::new(Metrics::new());
        let store: Arc<dyn GrantStore> = Arc::new(TimedStore::new(store, metrics.clone()));
        Self {
            settings: Arc::new(settings),
            signer,
            audit: Auditor::with_metrics(store.clone(), export, metrics.clone()),
            store,
            clock,
            identity: Arc::new(Verifier::empty()),
            policy: Arc::new(CompiledPolicy::default()),
            limits: Arc::new(Limits::new(
                &crate::config::RateLimitConfig::default(),
                metrics.clone(),
            )),
            exchange: Arc::new(ExchangeConfig::default()),
            dev_issuer: None,
            admins: Arc::new(AdminPolicy::default()),
            gateway: Arc::new(Gateway::empty()),
            server: Arc::new(ServerConfig::default()),
            introspection: Arc::new(IntrospectionAuth::default()),
            notifier: Notifier::disabled(),
            admin_runtime: AdminRuntime::inline(),
        }
    }

    /// The same state trusting `identity`, deciding by `policy`, with `exchange` settings.
    pub fn with_access(
        mut self,
        identity: Verifier,
        policy: CompiledPolicy,
        exchange: ExchangeConfig,
    ) -> Self {
        self.identity = Arc::new(identity);
        self.policy = Arc::new(policy);
        self.limits = Arc::new(Limits::new(&exchange.rate_limit, self.audit.metrics()));
        self.exchange = Arc::new(exchange);
        self
    }

    /// The same state with `admins` allowed on the admin API.
    pub fn with_admins(mut self, admins: AdminPolicy) -> Self {
        self.admins = Arc::new(admins);
        self
    }

    /// The same state with `[server]` settings and the introspection callers set.
    pub fn with_server(mut self, server: ServerConfig, introspection: IntrospectionAuth) -> Self {
        self.server = Arc::new(server);
        self.introspection = Arc::new(introspection);
        self
    }

    /// The same state running admin reads and background work on `admin` ([`crate::runtime`]).
    pub fn with_admin_runtime(mut self, admin: AdminRuntime) -> Self {
        self.admin_runtime = admin;
        self
    }

    /// The same state with the gateway's upstreams set.
    pub fn with_gateway(mut self, gateway: Gateway) -> Self {
        self.gateway = Arc::new(gateway);
        self
    }

    /// State for `jit-broker serve`: opens what `compiled` names (keys, store, audit sink,
    /// export).
    pub fn open(compiled: Compiled) -> Result<Self, StartError> {
        let keys = KeyRing::load_dir(&compiled.keys_dir)?;
        // With Redis, the rate limits live there too (on the store's request-path
        // connection), shared by every replica; with the memory store, in this process.
        let (store, limits) = open_store_and_limits(&compiled.store)?;
        let export = Self::audit_export(compiled.export.as_deref())?;
        let audit = compiled.audit.clone();
        let webhooks = compiled.webhooks;
        let state = Self::new(compiled.settings, keys, store, Arc::new(SystemClock), None)
            .with_durable_audit(&audit, export)?
            .with_access(compiled.verifier, compiled.policy, compiled.exchange)
            .with_admins(compiled.admins)
            .with_gateway(compiled.gateway)
            .with_server(compiled.server, compiled.introspection);
        let notifier = Notifier::start_loaded(webhooks, state.audit.metrics().webhooks.clone())
            .map_err(|e| StartError::Config(e.to_string()))?;
        let state = Self { notifier, ..state };
        Ok(match limits {
            Some(backend) => state.with_limits_in(backend),
            None => state,
        })
    }

    /// The same state keeping its rate limits in `backend` (shared by every replica using
    /// it), with the limits of its `[exchange.rate_limit]`.
    pub fn with_limits_in(mut self, backend: Arc<dyn Backend>) -> Self {
        self.limits = Arc::new(Limits::shared(
            &self.exchange.rate_limit,
            self.audit.metrics(),
            backend,
        ));
        self
    }

    /// The same state recording into the durable sink `audit` names (opened here: a sink
    /// that cannot be opened stops the start) before answering, with signed checkpoints of
    /// the chain head, and copying to `export`.
    pub fn with_durable_audit(
        mut self,
        audit: &AuditSetup,
        export: Option<Export>,
    ) -> Result<Self, StartError> {
        let failed = |e: SinkError| StartError::Config(format!("audit.sink: {e}"));
        let sink = match Sink::open(audit.sink.clone()) {
            Err(SinkError::ReplicaInUse { .. }) if !audit.replica_given => {
                // The host name is taken by another broker on this host: this process's own
                // name, then.
                let mut target = audit.sink.clone();
                if let SinkTarget::File { replica, .. } = &mut target {
                    replica.push_str(&format!("-{}", std::process::id()));
                }
                Sink::open(target).map_err(failed)?
            }
            other => other.map_err(failed)?,
        };
        // The store chain takes the files' name (with the process id if the host name was
        // taken here), so one replica is one name everywhere.
        let replica = match sink.target() {
            SinkTarget::File { dir, replica, .. } => {
                tracing::info!(dir = %dir.display(), replica = %replica, "audit events are written to files here, fsynced before each answer");
                replica.clone()
            }
            _ => audit.replica.clone(),
        };
        let signer = self.signer.clone();
        let checkpoints = Checkpoints {
            interval: audit.checkpoint_interval,
            sign: Arc::new(move |message: &[u8]| {
                let key = signer.keys().signer();
                jsonwebtoken::crypto::sign(message, key.encoding(), jsonwebtoken::Algorithm::EdDSA)
                    .map(|sig| (key.kid().to_owned(), sig))
                    .map_err(|e| e.to_string())
            }),
        };
        self.audit = Auditor::durable(
            self.store.clone(),
            export,
            self.audit.metrics(),
            Some(sink),
            Some(checkpoints),
            &replica,
        );
        Ok(self)
    }

    /// State for `jit-broker dev`: memory store, a fresh in-memory key, everything local,
    /// and the development issuer with its example roles.
    pub fn dev(public_url: &str, user: &str) -> Result<Self, StartError> {
        let dev = DevIssuer::generate(&format!("{public_url}{}", devissuer::PATH))
            .map_err(|e| StartError::Config(e.to_string()))?
            .for_user(user);
        let settings = Settings {
            public_url: public_url.to_owned(),
            audience: "git-jit".to_owned(),
            subject_audience: public_url.to_owned(),
            login_issuer: Some(dev.url().to_owned()),
            login_client_id: Some(devissuer::CLIENT_ID.to_owned()),
            login_scope: None,
            dev_mode: true,
        };
        let access = |e: crate::policy::PolicyError| StartError::Config(e.to_string());
        let issuer = dev.issuer_config();
        let policy = CompiledPolicy::compile(std::slice::from_ref(&issuer), &DevIssuer::roles())
            .map_err(access)?;
        let mut verifier = Verifier::empty();
        verifier.add_static(issuer, &dev.jwks()).map_err(access)?;
        let store = Arc::new(MemoryStore::new(100_000));
        let mut state = Self::new(
            settings,
            KeyRing::ephemeral()?,
            store,
            Arc::new(SystemClock),
            None,
        )
        .with_access(verifier, policy, ExchangeConfig::default());
        state.dev_issuer = Some(Arc::new(dev));
        Ok(state)
    }

    /// The keys and the store `compiled` names, and nothing else (no sink, no listener): what
    /// `audit verify` reads while the broker runs.
    pub fn open_store_only(
        compiled: Compiled,
    ) -> Result<(KeyRing, Arc<dyn GrantStore>), StartError> {
        Ok((
            KeyRing::load_dir(&compiled.keys_dir)?,
            open_store(&compiled.store)?,
        ))
    }

    /// The audit export named by the config, opened.
    pub fn audit_export(export: Option<&str>) -> Result<Option<Export>, StartError> {
        match export {
            None => Ok(None),
            Some("stdout") => Ok(Some(Export::Stdout)),
            Some(path) => Export::file(Path::new(path))
                .map(Some)
                .map_err(|e| StartError::Config(format!("audit.export: cannot open {path}: {e}"))),
        }
    }

    /// Loads keys from a directory (exposed for tools).
    pub fn load_keys(dir: &Path) -> Result<KeyRing, StartError> {
        Ok(KeyRing::load_dir(dir)?)
    }
}

/// The store `config` names (connects on first use).
pub fn open_store(config: &crate::config::StoreConfig) -> Result<Arc<dyn GrantStore>, StartError> {
    Ok(match config.kind {
        StoreKind::Memory => Arc::new(MemoryStore::with_retention(retention(config))),
        StoreKind::Redis => Arc::new(redis_store(config)?),
    })
}

fn redis_store(config: &crate::config::StoreConfig) -> Result<RedisStore, StartError> {
    Ok(RedisStore::new(
        topology(config)?,
        config.prefix.clone(),
        config.audit_max_events,
    )
    .with_retention(retention(config))
    .with_revocation_replicas(config.revocation_replicas))
}

/// Where `[store]` says Redis is: a cluster, a Sentinel-managed primary or one server, with
/// the CA of `ca_file` when set.
pub fn topology(config: &crate::config::StoreConfig) -> Result<Topology, StartError> {
    let base = if !config.cluster.is_empty() {
        Topology::Cluster(config.cluster.clone())
    } else if !config.sentinel.is_empty() {
        Topology::Sentinel(crate::redis_conn::SentinelTopology {
            sentinels: config.sentinel.clone(),
            master: config.sentinel_master.clone(),
            node: config.url.clone(),
        })
    } else {
        let url = config
            .url
            .clone()
            .ok_or_else(|| StartError::Config("store.url is missing".into()))?;
        Topology::Single(url)
    };
    let Some(ca) = &config.ca_file else {
        return Ok(base);
    };
    let pem = std::fs::read(ca).map_err(|e| {
        StartError::Config(format!("store.ca_file: cannot read {}: {e}", ca.display()))
    })?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(StartError::Config(format!(
            "store.ca_file: {} holds no PEM CERTIFICATE block",
            ca.display()
        )));
    }
    Ok(Topology::Tls {
        ca_pem: Arc::new(pem),
        over: Box::new(base),
    })
}

/// A store and where its rate limits live (`None`: in this process).
type StoreAndLimits = (Arc<dyn GrantStore>, Option<Arc<dyn Backend>>);

/// The store `config` names and, when it is Redis, the rate limits there, on the store's
/// request-path connection (`None`: the limits live in this process).
fn open_store_and_limits(
    config: &crate::config::StoreConfig,
) -> Result<StoreAndLimits, StartError> {
    if config.kind == StoreKind::Memory {
        return Ok((open_store(config)?, None));
    }
    let store = redis_store(config)?;
    let limits = RedisGcra::on(store.request_conn(), config.prefix.clone());
    Ok((Arc::new(store), Some(Arc::new(limits))))
}

/// The audit trail's budgets of `[store]`.
fn retention(config: &crate::config::StoreConfig) -> AuditRetention {
    const DAY_MS: i64 = 24 * 3600 * 1000;
    let mut r = AuditRetention::with_max_events(config.audit_max_events);
    r.evidence.max_bytes = config.audit_evidence_max_bytes;
    r.evidence.max_age_ms = i64::from(config.audit_evidence_max_days) * DAY_MS;
    r.traffic.max_bytes = config.audit_traffic_max_bytes;
    r.traffic.max_age_ms = i64::from(config.audit_traffic_max_days) * DAY_MS;
    r
}

/// What `/readyz` and `/metrics` look at.
#[derive(Clone)]
pub struct Health {
    /// The store, pinged.
    pub store: Arc<dyn GrantStore>,
    /// The auditor, whose metrics `/metrics` encodes.
    pub audit: Auditor,
}

impl FromRef<AppState> for Health {
    fn from_ref(s: &AppState) -> Self {
        Self {
            store: s.store.clone(),
            audit: s.audit.clone(),
        }
    }
}

impl FromRef<AppState> for Gatekeeper {
    fn from_ref(s: &AppState) -> Self {
        Self {
            signer: s.signer.clone(),
            store: s.store.clone(),
            clock: s.clock.clone(),
            audit: s.audit.clone(),
            limits: s.limits.clone(),
        }
    }
}

impl FromRef<AppState> for IntrospectionGate {
    fn from_ref(s: &AppState) -> Self {
        Self {
            auth: s.introspection.clone(),
            limits: s.limits.clone(),
            clock: s.clock.clone(),
            metrics: s.audit.metrics(),
        }
    }
}

impl FromRef<AppState> for Exchanger {
    fn from_ref(s: &AppState) -> Self {
        Self {
            signer: s.signer.clone(),
            store: s.store.clone(),
            clock: s.clock.clone(),
            audit: s.audit.clone(),
            identity: s.identity.clone(),
            policy: s.policy.clone(),
            limits: s.limits.clone(),
            config: *s.exchange,
            notifier: s.notifier.clone(),
        }
    }
}

impl FromRef<AppState> for Approvals {
    fn from_ref(s: &AppState) -> Self {
        Approvals {
            store: s.store.clone(),
            clock: s.clock.clone(),
            audit: s.audit.clone(),
            policy: s.policy.clone(),
            notifier: s.notifier.clone(),
            broker: s.signer.issuer_arc(),
        }
    }
}

impl FromRef<AppState> for AdminApi {
    fn from_ref(s: &AppState) -> Self {
        Self {
            signer: s.signer.clone(),
            store: s.store.clone(),
            clock: s.clock.clone(),
            audit: s.audit.clone(),
            identity: s.identity.clone(),
            admins: s.admins.clone(),
            limits: s.limits.clone(),
        }
    }
}

impl FromRef<AppState> for TokenSigner {
    fn from_ref(s: &AppState) -> Self {
        s.signer.clone()
    }
}

impl FromRef<AppState> for Arc<Settings> {
    fn from_ref(s: &AppState) -> Self {
        s.settings.clone()
    }
}

#[cfg(test)]
impl AppState {
    /// A state for unit tests: broker `https://broker.test`, audience `git-jit`, a fresh key,
    /// no export, nobody trusted yet (add with `with_access`, `with_gateway`, …).
    pub(crate) fn for_tests(store: Arc<dyn GrantStore>, clock: Arc<dyn Clock>) -> Self {
        let settings = Settings {
            public_url: "https://broker.test".into(),
            audience: "git-jit".into(),
            subject_audience: "https://broker.test".into(),
            login_issuer: None,
            login_client_id: None,
            login_scope: None,
            dev_mode: false,
        };
        let keys = KeyRing::ephemeral().unwrap_or_else(|e| panic!("test key: {e}"));
        Self::new(settings, keys, store, clock, None)
    }
}
