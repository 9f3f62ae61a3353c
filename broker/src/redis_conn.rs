//! Connections to the production Redis, single node or Cluster: the grant store and the
//! shared rate limits each open their own (so a slow listing never queues a limit check), the
//! same way, each with its own bound on a call. A call that takes longer fails, and every
//! caller treats a failure as "no": the broker fails closed.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);

/// Where Redis is.
#[derive(Debug, Clone)]
pub enum Topology {
    /// One Redis server (`redis://`, `rediss://`, `redis+unix://`).
    Single(String),
    /// A Redis Cluster, given some of its nodes.
    Cluster(Vec<String>),
}

/// A connection to a single node or a cluster; cheap to clone (clones share it).
#[derive(Clone)]
pub enum Conn {
    /// A single node, reconnected by its manager.
    Single(ConnectionManager),
    /// A cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
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
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects to `topology` within twice [`CONNECT_TIMEOUT`]; each call on the connection then
/// fails after `response_timeout`. The error is Redis's own text, which never carries the
/// URL's password.
pub async fn connect(topology: &Topology, response_timeout: Duration) -> Result<Conn, String> {
    let timed_out = || "timed out connecting".to_owned();
    match topology {
        Topology::Single(url) => {
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(response_timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let cm = tokio::time::timeout(
                CONNECT_TIMEOUT * 2,
                ConnectionManager::new_with_config(client, config),
            )
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| e.to_string())?;
            Ok(Conn::Single(cm))
        }
        Topology::Cluster(nodes) => {
            let client = ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(response_timeout)
                .retries(1)
                .build()
                .map_err(|e| e.to_string())?;
            let c = tokio::time::timeout(CONNECT_TIMEOUT * 2, client.get_async_connection())
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| e.to_string())?;
            Ok(Conn::Cluster(c))
        }
    }
}
