//! Real `redis-server` instances: a single node that can be stopped and started again on the
//! same port (fail-closed tests), and a three-master Redis Cluster.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::process::{
    ManagedProcess, NotReady, Retries, START_TIMEOUT, failed, find_program, free_port, run_checked,
    start_retrying, wait_for, wait_port_closed, wait_ready,
};

/// How many ports a cluster's start may pick and find unusable (taken, or its bus port).
const CLUSTER_PORT_PICKS: usize = 53;

/// One `redis-server` on 127.0.0.1 with persistence off, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    // Field order matters: the process dies before its directory (and log) is removed.
    process: Option<ManagedProcess>,
    port: u16,
    extra_args: Vec<String>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a fresh server on a free port and waits until it answers `PING`.
    pub async fn start() -> Result<Self> {
        Self::start_with_args(&[]).await
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments
    /// (e.g. `["--notify-keyspace-events", "Ex"]`).
    pub async fn start_with_args(extra_args: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("jit-e2e-redis-")
            .tempdir()?;
        let extra_args: Vec<String> = extra_args.iter().map(|s| (*s).to_owned()).collect();
        let (folder, args) = (dir.path(), &extra_args);
        let (process, port) = start_retrying("redis-server", move || async move {
            let port = free_port().map_err(failed)?;
            Ok((spawn_node(folder, port, args, "redis").await?, port))
        })
        .await?;
        Ok(Self {
            dir,
            port,
            extra_args,
            process: Some(process),
        })
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port, stable across [`RedisServer::stop`] / [`RedisServer::start_again`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server is currently running (as far as the harness knows).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Kills the server (SIGKILL, like a crash) and waits until its port is closed.
    /// All data is lost (persistence is off).
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
        wait_port_closed(self.port, Duration::from_secs(10))
    }

    /// Starts the server again on the same port (after [`RedisServer::stop`]), empty.
    pub async fn start_again(&mut self) -> Result<()> {
        if self.process.is_some() {
            bail!("redis-server on port {} is still running", self.port);
        }
        let (folder, port, args) = (self.dir.path(), self.port, &self.extra_args);
        let process = start_retrying("redis-server", move || {
            spawn_node(folder, port, args, "redis")
        })
        .await?;
        self.process = Some(process);
        Ok(())
    }

    /// Everything the server logged.
    pub fn logs(&self) -> String {
        self.process
            .as_ref()
            .map(ManagedProcess::logs)
            .unwrap_or_default()
    }
}

/// A Redis Cluster of one or more masters (no replicas) on free ports; three by default.
#[derive(Debug)]
pub struct RedisCluster {
    // Field order matters: the nodes die before their directory is removed.
    _nodes: Vec<ManagedProcess>,
    ports: Vec<u16>,
    _dir: TempDir,
}

impl RedisCluster {
    /// Starts three cluster-enabled nodes, joins them with `redis-cli --cluster create` and
    /// waits until every node reports `cluster_state:ok`.
    pub async fn start() -> Result<Self> {
        Self::start_with(3).await
    }

    /// Starts `masters` cluster-enabled nodes (1 or at least 3: `redis-cli --cluster create`
    /// needs three; a single master is given every slot with `CLUSTER ADDSLOTSRANGE`) and
    /// waits until every node reports `cluster_state:ok`.
    pub async fn start_with(masters: usize) -> Result<Self> {
        anyhow::ensure!(
            masters == 1 || masters >= 3,
            "a cluster has 1 or at least 3 masters, not {masters}"
        );
        let dir = tempfile::Builder::new()
            .prefix("jit-e2e-redis-cluster-")
            .tempdir()?;
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        let mut attempts = 0;
        let mut retries = Retries::default();
        while nodes.len() < masters {
            attempts += 1;
            if attempts > CLUSTER_PORT_PICKS {
                bail!("could not find free ports for a redis cluster");
            }
            // The cluster bus listens on port + 10000, which must be free as well.
            let port = free_port()?;
            if port > 55_000 || !bus_port_free(port + 10_000) || ports.contains(&port) {
                continue;
            }
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let args = vec![
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-config-file".to_owned(),
                node_dir.join("nodes.conf").display().to_string(),
                "--cluster-node-timeout".to_owned(),
                "2000".to_owned(),
            ];
            match spawn_node(&node_dir, port, &args, &format!("redis-cluster-{port}")).await {
                Ok(p) => {
                    ports.push(port);
                    nodes.push(p);
                }
                Err((e, why)) => {
                    if !retries.again("redis-server (cluster node)", why, &e) {
                        return Err(e);
                    }
                }
            }
        }
        let redis_cli = find_program("redis-cli")?;
        if let [port] = ports.as_slice() {
            let mut add = Command::new(&redis_cli);
            add.args([
                "-p",
                &port.to_string(),
                "cluster",
                "addslotsrange",
                "0",
                "16383",
            ]);
            run_checked(&mut add).context("redis-cli cluster addslotsrange")?;
        } else {
            let mut create = Command::new(&redis_cli);
            create.arg("--cluster").arg("create");
            for port in &ports {
                create.arg(format!("127.0.0.1:{port}"));
            }
            create.args(["--cluster-replicas", "0", "--cluster-yes"]);
            run_checked(&mut create).context("redis-cli --cluster create")?;
        }
        for &port in &ports {
            let cli = redis_cli.clone();
            wait_for(
                &format!("cluster_state:ok on node {port}"),
                START_TIMEOUT,
                || {
                    let cli = cli.clone();
                    async move {
                        let info = run_checked(Command::new(&cli).args([
                            "-p",
                            &port.to_string(),
                            "cluster",
                            "info",
                        ]))?;
                        Ok(info.contains("cluster_state:ok").then_some(()))
                    }
                },
            )
            .await?;
        }
        Ok(Self {
            _dir: dir,
            ports,
            _nodes: nodes,
        })
    }

    /// `redis://127.0.0.1:PORT` of every master.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The masters' ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }
}

fn bus_port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Runs `redis-server` on `port` (persistence off, `extra_args` after), its files and log in
/// `dir`, and waits until it answers `PING`.
async fn spawn_node(
    dir: &Path,
    port: u16,
    extra_args: &[String],
    name: &str,
) -> Result<ManagedProcess, (anyhow::Error, NotReady)> {
    let mut cmd = Command::new(find_program("redis-server").map_err(failed)?);
    cmd.current_dir(dir)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--dir", &dir.display().to_string()])
        .args(extra_args);
    let process = ManagedProcess::spawn(name, cmd, dir).map_err(failed)?;
    wait_ready(
        process,
        &format!("{name} PING on {port}"),
        START_TIMEOUT,
        None,
        || ping(port),
    )
    .await
}

/// Sends an inline `PING` and expects `+PONG`.
async fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await,
        Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
    )
}
