//! The workspace's binaries (built by `cargo build --workspace`) and a running `jit-broker`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::process::{ManagedProcess, NotReady, failed, free_port, start_retrying, wait_healthy};

/// The broker binary.
pub const JIT_BROKER: &str = "jit-broker";
/// The git credential helper binary.
pub const GIT_CREDENTIAL_JIT: &str = "git-credential-jit";
/// The `git jit` command.
pub const GIT_JIT: &str = "git-jit";

/// The directory cargo put the workspace binaries in: the test executable lives in
/// `target/<profile>/deps/`, the binaries one level up. `JIT_E2E_BIN_DIR` overrides it.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("JIT_E2E_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let mut dir = exe
        .parent()
        .context("test executable has no parent directory")?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The path of workspace binary `name`, or an error saying how to build it.
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "{} not found; run `cargo build --workspace` (scripts/test does) before the \
             end-to-end tests",
            path.display()
        );
    }
    Ok(path)
}

/// Placeholders [`BrokerProcess::start`] replaces in the config text.
pub mod placeholders {
    /// `127.0.0.1:PORT`, the address the broker must listen on.
    pub const LISTEN: &str = "{{LISTEN}}";
    /// `PORT`
    pub const PORT: &str = "{{PORT}}";
    /// `http://127.0.0.1:PORT`, the broker's public URL.
    pub const URL: &str = "{{URL}}";
    /// The broker's private directory (e.g. for `keys`), created empty.
    pub const DIR: &str = "{{DIR}}";
}

/// A running `jit-broker serve --config FILE`, killed on drop.
#[derive(Debug)]
pub struct BrokerProcess {
    process: Option<ManagedProcess>,
    port: u16,
    config_path: PathBuf,
    extra_env: Vec<(String, String)>,
    dir: TempDir,
}

impl BrokerProcess {
    /// Writes `config_toml` (after replacing the [`placeholders`]) to a file, starts
    /// `jit-broker serve --config FILE` and waits until `GET /healthz` answers 200.
    pub async fn start(config_toml: &str) -> Result<Self> {
        Self::start_with_env(config_toml, &[]).await
    }

    /// Like [`BrokerProcess::start`] with extra environment variables (secrets, Redis URL).
    pub async fn start_with_env(config_toml: &str, env: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("jit-e2e-broker-")
            .tempdir()?;
        let extra_env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let config_path = dir.path().join("broker.toml");
        let (folder, path, env) = (dir.path(), &config_path, &extra_env);
        let (process, port) = start_retrying(JIT_BROKER, move || async move {
            let port = free_port().map_err(failed)?;
            // Each broker keeps its audit files in its own folder (the default, beside the
            // keys, may be a temporary folder other tests share), and is its own replica
            // (brokers of one test share the host name, and often a store).
            let audit = if config_toml.contains("[audit]") {
                String::new()
            } else {
                let name = folder
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("e2e")
                    .to_owned();
                format!(
                    "\n[audit]\ndir = \"{}/audit\"\nreplica = \"{name}\"\n",
                    placeholders::DIR
                )
            };
            let text = (config_toml.to_owned() + &audit)
                .replace(placeholders::LISTEN, &format!("127.0.0.1:{port}"))
                .replace(placeholders::PORT, &port.to_string())
                .replace(placeholders::URL, &format!("http://127.0.0.1:{port}"))
                .replace(placeholders::DIR, &folder.display().to_string());
            std::fs::write(path, text).map_err(|e| failed(e.into()))?;
            Ok((spawn_broker(folder, path, env, port).await?, port))
        })
        .await?;
        Ok(Self {
            process: Some(process),
            port,
            config_path,
            extra_env,
            dir,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's process id, while it runs (to inspect or limit it, e.g. `prlimit`).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ManagedProcess::pid)
    }

    /// The config file the broker was started with.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    /// The broker's private directory (what `{{DIR}}` was replaced with).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Everything the broker logged so far.
    pub fn logs(&self) -> String {
        self.process
            .as_ref()
            .map(ManagedProcess::logs)
            .unwrap_or_default()
    }

    /// Kills the broker and waits until its port is closed.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
        crate::process::wait_port_closed(self.port, std::time::Duration::from_secs(10))
    }

    /// Starts the broker again with the same config file and port.
    pub async fn start_again(&mut self) -> Result<()> {
        self.stop()?;
        let (dir, config, env, port) = (
            self.dir.path(),
            &self.config_path,
            &self.extra_env,
            self.port,
        );
        let process =
            start_retrying(JIT_BROKER, move || spawn_broker(dir, config, env, port)).await?;
        self.process = Some(process);
        Ok(())
    }
}

/// Runs `jit-broker serve --config CONFIG` (its log in `dir`, `env` added to its environment)
/// and waits until it answers `GET /healthz` on `port`.
async fn spawn_broker(
    dir: &Path,
    config: &Path,
    env: &[(String, String)],
    port: u16,
) -> Result<ManagedProcess, (anyhow::Error, NotReady)> {
    let mut cmd = Command::new(bin_path(JIT_BROKER).map_err(failed)?);
    cmd.arg("serve").arg("--config").arg(config);
    cmd.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let process = ManagedProcess::spawn(JIT_BROKER, cmd, dir).map_err(failed)?;
    let url = format!("http://127.0.0.1:{port}/healthz");
    wait_healthy(JIT_BROKER, process, &url).await
}

/// Runs `jit-broker keys generate --dir DIR` (one fresh Ed25519 signing key in `dir`).
pub fn generate_keys(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::process::run_checked(
        Command::new(bin_path(JIT_BROKER)?)
            .args(["keys", "generate", "--dir"])
            .arg(dir),
    )
    .map(drop)
}
