//! The broker's shared state: configuration, keys, store, clock, auditor. Cloned into every
//! request; the outside world enters only through the trait objects here.

use std::path::Path;
use std::sync::Arc;

use crate::audit::Auditor;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, StoreKind};
use crate::gateway::Gateway;
use crate::keys::{KeyError, KeyRing};
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
    ) -> Self {
        let signer = TokenSigner::new(
            Arc::new(keys),
            settings.public_url.clone(),
            settings.audience.clone(),
        );
        Self {
            settings: Arc::new(settings),
            signer,
            audit: Auditor::new(store.clone()),
            store,
            clock,
            gateway: Arc::new(Gateway::empty()),
        }
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
        let settings = Settings {
            public_url: config.broker.public_url.clone(),
            audience: config.broker.audience.clone(),
            subject_audience: config.subject_audience().to_owned(),
            login_issuer: None,
            login_client_id: None,
            dev_mode: false,
        };
        let gateway = Gateway::from_config(&config.upstream)
            .map_err(|e| StartError::Config(e.to_string()))?;
        Ok(Self::new(settings, keys, store, Arc::new(SystemClock)).with_gateway(gateway))
    }

    /// State for `jit-broker dev`: memory store, a fresh in-memory key, everything local.
    pub fn dev(public_url: &str) -> Result<Self, StartError> {
        let settings = Settings {
            public_url: public_url.to_owned(),
            audience: "git-jit".to_owned(),
            subject_audience: public_url.to_owned(),
            login_issuer: None,
            login_client_id: None,
            dev_mode: true,
        };
        let store = Arc::new(MemoryStore::new(100_000));
        Ok(Self::new(
            settings,
            KeyRing::ephemeral()?,
            store,
            Arc::new(SystemClock),
        ))
    }

    /// Loads keys from a directory (exposed for tools).
    pub fn load_keys(dir: &Path) -> Result<KeyRing, StartError> {
        Ok(KeyRing::load_dir(dir)?)
    }
}
