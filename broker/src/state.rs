//! The broker's shared state: configuration, keys, store, clock, auditor. Cloned into every
//! request; the outside world enters only through the trait objects here.

use std::path::Path;
use std::sync::Arc;

use crate::admin::AdminPolicy;
use crate::audit::{Auditor, Export};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, StoreKind};
use crate::devissuer::{self, DevIssuer};
use crate::exchange::ExchangeConfig;
use crate::gateway::Gateway;
use crate::identity::{CacheTimes, Verifier};
use crate::keys::{KeyError, KeyRing};
use crate::policy::CompiledPolicy;
use crate::ratelimit::Limits;
use crate::store::GrantStore;
use crate::store::memory::MemoryStore;
use crate::store::redis::{RedisStore, Topology};
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
        Self {
            settings: Arc::new(settings),
            signer,
            audit: Auditor::new(store.clone(), export),
            store,
            clock,
            identity: Arc::new(Verifier::empty()),
            policy: Arc::new(CompiledPolicy::default()),
            limits: Arc::new(Limits::default()),
            exchange: Arc::new(ExchangeConfig::default()),
            dev_issuer: None,
            admins: Arc::new(AdminPolicy::default()),
            gateway: Arc::new(Gateway::empty()),
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
        self.limits = Arc::new(Limits::new(&exchange.rate_limit));
        self.exchange = Arc::new(exchange);
        self
    }

    /// The same state with `admins` allowed on the admin API.
    pub fn with_admins(mut self, admins: AdminPolicy) -> Self {
        self.admins = Arc::new(admins);
        self
    }

    /// The same state with the gateway's upstreams set.
    pub fn with_gateway(mut self, gateway: Gateway) -> Self {
        self.gateway = Arc::new(gateway);
        self
    }

    /// State for `jit-broker serve`.
    pub fn from_config(config: &Config) -> Result<Self, StartError> {
        let keys = KeyRing::load_dir(&config.broker.keys_dir)?;
        let store: Arc<dyn GrantStore> = match config.store.kind {
            StoreKind::Memory => Arc::new(MemoryStore::new(config.store.audit_max_events)),
            StoreKind::Redis => {
                let topology = if config.store.cluster.is_empty() {
                    let url = config
                        .store
                        .url
                        .clone()
                        .ok_or_else(|| StartError::Config("store.url is missing".into()))?;
                    Topology::Single(url)
                } else {
                    Topology::Cluster(config.store.cluster.clone())
                };
                Arc::new(RedisStore::new(
                    topology,
                    config.store.prefix.clone(),
                    config.store.audit_max_events,
                ))
            }
        };
        let access = |e: crate::policy::PolicyError| StartError::Config(e.to_string());
        let policy = crate::policy::check_config(config).map_err(access)?;
        let login = match &config.login {
            Some(l) => Some(l.resolve(&config.issuer).map_err(access)?),
            None => None,
        };
        let verifier = Verifier::new(&config.issuer, CacheTimes::default()).map_err(access)?;
        let (login_issuer, login_client_id) = login.unzip();
        let login_scope = match &config.login {
            Some(l) => Some(l.scope().map_err(access)?),
            None => None,
        };
        let settings = Settings {
            public_url: config.broker.public_url.clone(),
            audience: config.broker.audience.clone(),
            subject_audience: config.subject_audience().to_owned(),
            login_issuer,
            login_client_id,
            login_scope,
            dev_mode: false,
        };
        let export = Self::audit_export(config)?;
        let admins = config
            .admin_policy()
            .map_err(|(key, problem)| StartError::Config(format!("{key}: {problem}")))?;
        let gateway = Gateway::from_config(&config.upstream)
            .map_err(|e| StartError::Config(e.to_string()))?;
        Ok(
            Self::new(settings, keys, store, Arc::new(SystemClock), export)
                .with_access(verifier, policy, config.exchange)
                .with_admins(admins)
                .with_gateway(gateway),
        )
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

    /// The audit export named by the config, opened.
    pub fn audit_export(config: &Config) -> Result<Option<Export>, StartError> {
        match config.audit.export.as_deref() {
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
