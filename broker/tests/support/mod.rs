//! What the gateway's integration tests share: a broker on a free loopback port with a memory
//! store, and tokens signed by its key with their grants stored.

use std::net::SocketAddr;
use std::sync::Arc;

use jit_broker::clock::{Clock, SystemClock};
use jit_broker::compile::Settings;
use jit_broker::gateway::Gateway;
use jit_broker::keys::KeyRing;
use jit_broker::state::AppState;
use jit_broker::store::memory::MemoryStore;
use jit_broker::store::{Grant, GrantStore};
use jit_proto::{Claims, RefPattern, Scope};

/// A running broker.
pub struct Broker {
    pub state: AppState,
    pub store: Arc<MemoryStore>,
    pub addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts a broker serving `gateway` on 127.0.0.1:0; it stops when dropped.
pub async fn start(gateway: Gateway) -> Broker {
    let store = Arc::new(MemoryStore::new(10_000));
    let settings = Settings {
        public_url: "http://broker.test".into(),
        audience: "git-jit".into(),
        subject_audience: "http://broker.test".into(),
        login_issuer: None,
        login_client_id: None,
        login_scope: None,
        dev_mode: false,
    };
    let state = AppState::new(
        settings,
        KeyRing::ephemeral().expect("key"),
        store.clone(),
        Arc::new(SystemClock),
        None,
    )
    .with_gateway(gateway);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(jit_broker::run(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    Broker {
        state,
        store,
        addr,
        _stop: stop,
    }
}

impl Broker {
    /// A live token for `scope` narrowed to `refs`, valid for ten minutes.
    pub async fn token(&self, scope: &str, refs: &[&str]) -> (String, Claims) {
        let now_ms = SystemClock.now_ms();
        let now = now_ms / 1000;
        let claims = Claims {
            iss: "http://broker.test".into(),
            aud: "git-jit".into(),
            sub: "alice@example.com".into(),
            idp: "corp".into(),
            iat: now,
            nbf: now,
            exp: now + 600,
            jti: jit_broker::token::new_jti().expect("jti"),
            scope: Scope::parse(scope).expect("scope"),
            refs: refs
                .iter()
                .map(|r| RefPattern::parse(r).expect("ref"))
                .collect(),
            role: "dev".into(),
            reason: None,
            req: None,
        };
        self.store
            .put(&Grant::from_claims(&claims, now_ms - 1), now_ms)
            .await
            .expect("put");
        let t = self.state.signer.sign(&claims).expect("sign");
        (t.expose().to_owned(), claims)
    }
}
