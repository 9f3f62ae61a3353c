//! Connections to the production Redis, single node, Sentinel-managed or Cluster: the grant
//! store and the shared rate limits each open their own (so a slow listing never queues a
//! limit check), the same way, each with its own bound on a call. A call that takes longer
//! fails, and every caller treats a failure as "no": the broker fails closed.
//!
//! Under Sentinel, the connection goes to the primary the Sentinels name. A call that fails
//! as a dead or demoted primary fails (closed), and drops the connection, so the next call
//! asks the Sentinels again and reaches the primary they promoted: service resumes after a
//! failover without a restart. The Sentinels are also asked again every few seconds, so a
//! primary demoted while it stayed reachable is left too.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, ServerErrorKind,
    TlsCertificates, Value,
};

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);

/// Where Redis is.
#[derive(Debug, Clone)]
pub enum Topology {
    /// One Redis server (`redis://`, `rediss://`, `redis+unix://`).
    Single(String),
    /// A Redis Cluster, given some of its nodes.
    Cluster(Vec<String>),
    /// A primary and its replicas watched by Redis Sentinel.
    Sentinel(SentinelTopology),
    /// `over`, with the servers' certificates (`rediss://`) verified against `ca_pem`
    /// instead of the system's roots.
    Tls {
        /// PEM certificates of the CA.
        ca_pem: Arc<Vec<u8>>,
        /// Where Redis is.
        over: Box<Topology>,
    },
}

/// A primary found through Redis Sentinel.
#[derive(Debug, Clone)]
pub struct SentinelTopology {
    /// Sentinel URLs (`redis://host:26379`; a password there is the Sentinels' own).
    pub sentinels: Vec<String>,
    /// The name the Sentinels monitor the primary under.
    pub master: String,
    /// A URL whose user name, password, database and scheme (`rediss://` for TLS) are used
    /// on the data nodes; its host is not used.
    pub node: Option<String>,
}

/// A connection to a single node or a cluster; cheap to clone (clones share it).
#[derive(Clone)]
pub enum Conn {
    /// A single node, reconnected by its manager.
    Single(ConnectionManager),
    /// A cluster.
    Cluster(ClusterConnection),
    /// The primary the Sentinels name.
    Sentinel(SentinelConn),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => Box::pin(c.call(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => Box::pin(c.call_pipeline(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.db,
        }
    }
}

/// Connects to `topology` within twice [`CONNECT_TIMEOUT`]; each call on the connection then
/// fails after `response_timeout`. The error is Redis's own text, which never carries the
/// URL's password.
pub async fn connect(topology: &Topology, response_timeout: Duration) -> Result<Conn, String> {
    connect_with(topology, None, response_timeout).await
}

/// A connection made on first use and shared by every holder of a clone: the grant store's
/// request path and the shared rate limits use one, so the limit check and the revocation
/// marks an exchange asks for at once go out in one write and come back in one read.
#[derive(Clone)]
pub struct LazyConn(Arc<LazyInner>);

struct LazyInner {
    topology: Topology,
    response_timeout: Duration,
    conn: tokio::sync::OnceCell<Conn>,
}

impl LazyConn {
    /// A connection to `topology` whose calls fail after `response_timeout`, made on first
    /// use ([`connect`]).
    pub fn new(topology: Topology, response_timeout: Duration) -> Self {
        Self(Arc::new(LazyInner {
            topology,
            response_timeout,
            conn: tokio::sync::OnceCell::new(),
        }))
    }

    /// The connection, made now if it is not yet (a failed attempt is tried again on the
    /// next call).
    pub async fn get(&self) -> Result<Conn, String> {
        let i = &self.0;
        let conn = i
            .conn
            .get_or_try_init(|| connect(&i.topology, i.response_timeout))
            .await?;
        Ok(conn.clone())
    }
}

/// The settings of a connection manager: bounded connect, call and reconnect.
fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}

fn certificates(ca_pem: Option<&Arc<Vec<u8>>>) -> Option<TlsCertificates> {
    ca_pem.map(|pem| TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.as_ref().clone()),
    })
}

async fn connect_with(
    topology: &Topology,
    ca_pem: Option<&Arc<Vec<u8>>>,
    response_timeout: Duration,
) -> Result<Conn, String> {
    let timed_out = || "timed out connecting".to_owned();
    match topology {
        Topology::Tls { ca_pem, over } => {
            Box::pin(connect_with(over, Some(ca_pem), response_timeout)).await
        }
        Topology::Single(url) => {
            let client = match certificates(ca_pem) {
                Some(certs) => redis::Client::build_with_tls(url.as_str(), certs),
                None => redis::Client::open(url.as_str()),
            }
            .map_err(|e| e.to_string())?;
            let cm = tokio::time::timeout(
                CONNECT_TIMEOUT * 2,
                ConnectionManager::new_with_config(client, manager_config(response_timeout)),
            )
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| e.to_string())?;
            Ok(Conn::Single(cm))
        }
        Topology::Cluster(nodes) => {
            let mut builder = ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(response_timeout)
                .retries(1);
            if let Some(certs) = certificates(ca_pem) {
                builder = builder.certs(certs);
            }
            let client = builder.build().map_err(|e| e.to_string())?;
            let c = tokio::time::timeout(CONNECT_TIMEOUT * 2, client.get_async_connection())
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| e.to_string())?;
            Ok(Conn::Cluster(c))
        }
        Topology::Sentinel(s) => {
            let conn = SentinelConn::new(s, ca_pem, response_timeout).map_err(|e| e.to_string())?;
            // The first connection is made now, so a wrong setup fails at once.
            conn.manager().await.map_err(|e| e.to_string())?;
            Ok(Conn::Sentinel(conn))
        }
    }
}

/// Whether `e` says the node is a replica now (`READONLY`): the write was not done, so it is
/// sent once more, to the primary the Sentinels name now.
fn demoted(e: &RedisError) -> bool {
    matches!(e.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly))
}

/// A connection to the primary the Sentinels name, found again after a failure.
#[derive(Clone)]
pub struct SentinelConn {
    inner: Arc<SentinelInner>,
    db: i64,
}

struct SentinelInner {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: tokio::sync::RwLock<Option<Primary>>,
    response_timeout: Duration,
}

/// The connection to the primary, where it is, and when the Sentinels last confirmed it.
struct Primary {
    cm: ConnectionManager,
    addr: String,
    confirmed: tokio::time::Instant,
}

/// How long the broker trusts that the primary it talks to is still the Sentinels' choice
/// before asking them again (besides after every failed call): a primary demoted while it
/// stayed reachable is left within this time.
const RECONFIRM: Duration = Duration::from_secs(5);

impl SentinelConn {
    fn new(
        s: &SentinelTopology,
        ca_pem: Option<&Arc<Vec<u8>>>,
        response_timeout: Duration,
    ) -> Result<Self, RedisError> {
        let mut addrs = Vec::new();
        let mut sentinel_auth = None;
        for url in &s.sentinels {
            let info = url.as_str().into_connection_info()?;
            let settings = info.redis_settings();
            if sentinel_auth.is_none() && settings.password().is_some() {
                sentinel_auth = Some((
                    settings.username().map(str::to_owned),
                    settings.password().map(str::to_owned),
                ));
            }
            addrs.push(info.addr().clone());
        }
        let mut b = SentinelClientBuilder::new(addrs, &s.master, SentinelServerType::Master)?;
        if let Some((user, password)) = sentinel_auth {
            if let Some(user) = user {
                b = b.set_client_to_sentinel_username(user);
            }
            if let Some(password) = password {
                b = b.set_client_to_sentinel_password(password);
            }
        }
        let mut db = 0;
        if let Some(node) = &s.node {
            let info = node.as_str().into_connection_info()?;
            let settings = info.redis_settings();
            db = settings.db();
            b = b.set_client_to_redis_db(db);
            if let Some(user) = settings.username() {
                b = b.set_client_to_redis_username(user);
            }
            if let Some(password) = settings.password() {
                b = b.set_client_to_redis_password(password);
            }
            if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) {
                b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
            }
        }
        if let Some(certs) = certificates(ca_pem) {
            b = b
                .set_client_to_redis_certificates(certs.clone())
                .set_client_to_sentinel_certificates(certs);
        }
        Ok(Self {
            inner: Arc::new(SentinelInner {
                sentinels: tokio::sync::Mutex::new(b.build()?),
                current: tokio::sync::RwLock::new(None),
                response_timeout,
            }),
            db,
        })
    }

    /// The connection to the primary, asking the Sentinels for it when there is none or the
    /// last answer is older than [`RECONFIRM`].
    async fn manager(&self) -> Result<ConnectionManager, RedisError> {
        if let Some(p) = self.inner.current.read().await.as_ref()
            && p.confirmed.elapsed() < RECONFIRM
        {
            return Ok(p.cm.clone());
        }
        let mut slot = self.inner.current.write().await;
        if let Some(p) = slot.as_ref()
            && p.confirmed.elapsed() < RECONFIRM
        {
            return Ok(p.cm.clone());
        }
        let asked = tokio::time::timeout(CONNECT_TIMEOUT * 2, async {
            self.inner.sentinels.lock().await.async_get_client().await
        })
        .await
        .unwrap_or_else(|_| {
            Err(RedisError::from((
                ErrorKind::Io,
                "timed out asking the Sentinels for the primary",
            )))
        });
        let client = match (asked, slot.as_mut()) {
            (Ok(client), Some(p)) if client.get_connection_info().addr().to_string() == p.addr => {
                p.confirmed = tokio::time::Instant::now();
                return Ok(p.cm.clone());
            }
            (Ok(client), _) => client,
            // The Sentinels cannot say now: the primary in use stays, asked again later.
            (Err(e), Some(p)) => {
                tracing::warn!(error = %e, "cannot reach the Redis Sentinels; keeping the primary in use");
                p.confirmed = tokio::time::Instant::now();
                return Ok(p.cm.clone());
            }
            (Err(e), None) => return Err(e),
        };
        let addr = client.get_connection_info().addr().to_string();
        let cm = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            ConnectionManager::new_with_config(client, manager_config(self.inner.response_timeout)),
        )
        .await
        .map_err(|_| RedisError::from((ErrorKind::Io, "timed out connecting to the primary")))??;
        if slot.is_some() {
            tracing::warn!(primary = %addr, "the Redis Sentinels name a new primary; switching to it");
        }
        *slot = Some(Primary {
            cm: cm.clone(),
            addr,
            confirmed: tokio::time::Instant::now(),
        });
        Ok(cm)
    }

    /// After `e`, whether the primary may have changed: then the connection is dropped and
    /// the next call asks the Sentinels.
    async fn after(&self, e: &RedisError) {
        let moved = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || matches!(
                e.kind(),
                ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
            );
        if moved {
            tracing::warn!(error = %e, "Redis primary unreachable or demoted; asking the Sentinels again");
            *self.inner.current.write().await = None;
        }
    }

    async fn call(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        let mut cm = self.manager().await?;
        let mut r = cm.req_packed_command(cmd).await;
        if let Err(e) = &r {
            self.after(e).await;
            if demoted(e) {
                r = self.manager().await?.req_packed_command(cmd).await;
            }
        }
        r
    }

    async fn call_pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        let mut cm = self.manager().await?;
        let mut r = cm.req_packed_commands(pipeline, offset, count).await;
        if let Err(e) = &r {
            self.after(e).await;
            if demoted(e) {
                r = self
                    .manager()
                    .await?
                    .req_packed_commands(pipeline, offset, count)
                    .await;
            }
        }
        r
    }
}
