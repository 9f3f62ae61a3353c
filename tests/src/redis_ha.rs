//! Redis as it runs in production beside the single node and the Cluster of [`crate::redis`]:
//! a server speaking only TLS with an ACL user, and a primary with a replica watched by three
//! real Sentinels.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};
use tempfile::TempDir;

use crate::certs::TestCa;
use crate::process::{
    ManagedProcess, NotReady, START_TIMEOUT, failed, find_program, free_port, port_is_open,
    run_checked, start_retrying, wait_for, wait_port_closed, wait_ready,
};
use crate::redis::RedisServer;

/// The name the Sentinels monitor the primary under.
pub const MASTER_NAME: &str = "mymaster";

/// The command rights docs/operations.md gives the broker's ACL user.
pub const BROKER_RIGHTS: &str =
    "+@read +@write +@scripting +@stream +@transaction +@connection +ping +info +wait";

/// A `redis-server` listening only on a TLS port, its certificate issued by a test CA, the
/// default user disabled and one ACL user with the rights the broker needs ([`BROKER_RIGHTS`]).
pub struct RedisTls {
    // Field order matters: the process dies before its directory is removed.
    _process: ManagedProcess,
    port: u16,
    user: String,
    password: String,
    dir: TempDir,
}

impl RedisTls {
    /// Starts the server with the ACL user `user` / `password`.
    pub async fn start(user: &str, password: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("jit-e2e-redis-tls-")
            .tempdir()?;
        let ca = TestCa::new(dir.path(), "git-jit test Redis CA")?;
        let server = ca.server("redis")?;
        let (folder, server, ca) = (dir.path(), &server, &ca);
        let (process, port) = start_retrying("redis-server (TLS)", move || async move {
            let port = free_port().map_err(failed)?;
            let conf = format!(
                "port 0\nbind 127.0.0.1\ntls-port {port}\ntls-cert-file {cert}\n\
                 tls-key-file {key}\ntls-ca-cert-file {ca}\ntls-auth-clients no\nsave \"\"\n\
                 appendonly no\ndir {dir}\nuser default off\n\
                 user {user} on >{password} ~* &* {rights}\n",
                cert = server.cert.display(),
                key = server.key.display(),
                ca = ca.ca_file().display(),
                dir = folder.display(),
                rights = BROKER_RIGHTS,
            );
            let conf_path = folder.join("redis.conf");
            std::fs::write(&conf_path, conf).map_err(|e| failed(e.into()))?;
            let mut cmd = Command::new(find_program("redis-server").map_err(failed)?);
            cmd.arg(&conf_path).current_dir(folder);
            let process = ManagedProcess::spawn("redis-tls", cmd, folder).map_err(failed)?;
            let what = format!("redis-server TLS port {port}");
            let listening = || std::future::ready(port_is_open(port));
            Ok((
                wait_ready(process, &what, START_TIMEOUT, None, listening).await?,
                port,
            ))
        })
        .await?;
        Ok(Self {
            _process: process,
            port,
            user: user.to_owned(),
            password: password.to_owned(),
            dir,
        })
    }

    /// `rediss://USER:PASSWORD@localhost:PORT`.
    pub fn url(&self) -> String {
        format!(
            "rediss://{}:{}@localhost:{}",
            self.user, self.password, self.port
        )
    }

    /// `rediss://localhost:PORT`, no credentials.
    pub fn anonymous_url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    /// The PEM file of the CA that issued the server's certificate.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// One primary, one replica and three Sentinels (quorum 2, a node is down after 1 s).
pub struct RedisSentinels {
    sentinels: Vec<ManagedProcess>,
    sentinel_ports: Vec<u16>,
    primary: RedisServer,
    replica: RedisServer,
    _dir: TempDir,
}

impl RedisSentinels {
    /// Starts the primary, the replica (replicating), and the Sentinels, and waits until
    /// every Sentinel knows the replica and the two other Sentinels.
    pub async fn start() -> Result<Self> {
        let primary = RedisServer::start().await?;
        let replicaof = ["--replicaof", "127.0.0.1", &primary.port().to_string()];
        let replica = RedisServer::start_with_args(&replicaof).await?;
        let replica_port = replica.port();
        wait_for(
            "the replica's link to the primary",
            START_TIMEOUT,
            || async move {
                let info = redis_cli(replica_port, &["info", "replication"])?;
                Ok(info.contains("master_link_status:up").then_some(()))
            },
        )
        .await?;
        let dir = tempfile::Builder::new()
            .prefix("jit-e2e-sentinel-")
            .tempdir()?;
        let mut sentinels = Vec::new();
        let mut sentinel_ports = Vec::new();
        for i in 0..3 {
            let node_dir = dir.path().join(format!("sentinel-{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let (node_dir, primary_port) = (&node_dir, primary.port());
            let (sentinel, port) = start_retrying("redis-sentinel", move || async move {
                let port = free_port().map_err(failed)?;
                Ok((spawn_sentinel(node_dir, port, primary_port, i).await?, port))
            })
            .await?;
            sentinels.push(sentinel);
            sentinel_ports.push(port);
        }
        for &port in &sentinel_ports {
            wait_for(
                &format!("sentinel {port} to see the replica and the other sentinels"),
                START_TIMEOUT,
                || async move {
                    let master = redis_cli(port, &["sentinel", "master", MASTER_NAME])?;
                    let field = |name: &str| {
                        let lines: Vec<&str> = master.lines().collect();
                        lines
                            .iter()
                            .position(|l| *l == name)
                            .and_then(|i| lines.get(i + 1))
                            .map(|v| v.trim().to_owned())
                    };
                    Ok((field("num-slaves").as_deref() == Some("1")
                        && field("num-other-sentinels").as_deref() == Some("2"))
                    .then_some(()))
                },
            )
            .await?;
        }
        Ok(Self {
            sentinels,
            sentinel_ports,
            primary,
            replica,
            _dir: dir,
        })
    }

    /// `redis://127.0.0.1:PORT` of every Sentinel.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The primary's port (as started).
    pub fn primary_port(&self) -> u16 {
        self.primary.port()
    }

    /// The replica's port (as started).
    pub fn replica_port(&self) -> u16 {
        self.replica.port()
    }

    /// Kills the primary (SIGKILL, like a crash) and waits until its port is closed.
    pub fn kill_primary(&mut self) -> Result<()> {
        self.primary.stop()
    }

    /// Asks a Sentinel for a failover with both nodes up (`SENTINEL FAILOVER`): the replica
    /// is promoted and the old primary demoted to its replica. Waits until the Sentinels name
    /// the new primary and it has its replica back.
    pub async fn switch_over(&self) -> Result<u16> {
        let before = self.primary_now()?;
        redis_cli(
            self.sentinel_ports[0],
            &["sentinel", "failover", MASTER_NAME],
        )?;
        let after = wait_for(
            "the Sentinels to name a new primary",
            START_TIMEOUT,
            || async { Ok(self.primary_now().ok().filter(|p| *p != before)) },
        )
        .await?;
        wait_for(
            "the old primary to follow the new one",
            START_TIMEOUT,
            || async move {
                let info = redis_cli(after, &["info", "replication"])?;
                Ok(
                    (info.contains("connected_slaves:1") && info.contains("state=online"))
                        .then_some(()),
                )
            },
        )
        .await?;
        Ok(after)
    }

    /// The port of the primary the first answering Sentinel names now.
    pub fn primary_now(&self) -> Result<u16> {
        for &port in &self.sentinel_ports {
            let Ok(out) = redis_cli(port, &["sentinel", "get-master-addr-by-name", MASTER_NAME])
            else {
                continue;
            };
            if let Some(p) = out.lines().nth(1).and_then(|l| l.trim().parse().ok()) {
                return Ok(p);
            }
        }
        bail!("no sentinel names a primary")
    }

    /// Every Sentinel's log.
    pub fn logs(&self) -> String {
        self.sentinels
            .iter()
            .map(ManagedProcess::logs)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops every Sentinel and waits until their ports are closed.
    pub fn stop_sentinels(&mut self) -> Result<()> {
        for s in &mut self.sentinels {
            s.kill();
        }
        for &port in &self.sentinel_ports {
            wait_port_closed(port, Duration::from_secs(10))?;
        }
        Ok(())
    }
}

/// A Sentinel on `port` monitoring the primary on `primary_port`: `redis-sentinel` when
/// installed, else `redis-server --sentinel` (the same program).
async fn spawn_sentinel(
    dir: &Path,
    port: u16,
    primary_port: u16,
    i: usize,
) -> Result<ManagedProcess, (anyhow::Error, NotReady)> {
    let conf = format!(
        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
         sentinel failover-timeout {MASTER_NAME} 10000\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n",
        dir = dir.display(),
    );
    // Sentinel rewrites its configuration file: it must be its own and writable.
    let conf_path = dir.join("sentinel.conf");
    std::fs::write(&conf_path, conf).map_err(|e| failed(e.into()))?;
    let mut cmd = match find_program("redis-sentinel") {
        Ok(p) => {
            let mut c = Command::new(p);
            c.arg(&conf_path);
            c
        }
        Err(_) => {
            let mut c = Command::new(find_program("redis-server").map_err(failed)?);
            c.arg(&conf_path).arg("--sentinel");
            c
        }
    };
    cmd.current_dir(dir);
    let process =
        ManagedProcess::spawn(&format!("redis-sentinel-{i}"), cmd, dir).map_err(failed)?;
    let pong = || std::future::ready(redis_cli(port, &["ping"]).is_ok_and(|p| p.contains("PONG")));
    wait_ready(
        process,
        &format!("sentinel PING on {port}"),
        START_TIMEOUT,
        None,
        pong,
    )
    .await
}

/// `redis-cli -p PORT ARGS…`'s output.
pub fn redis_cli(port: u16, args: &[&str]) -> Result<String> {
    run_checked(
        Command::new(find_program("redis-cli")?)
            .args(["-p", &port.to_string()])
            .args(args),
    )
}
