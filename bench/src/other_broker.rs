//! A second `jit-broker` started from another binary — typically a build of an earlier commit —
//! beside the one under test, on the same Redis, keys and upstream, so that two builds can be
//! measured side by side in one run (alternating), where the machine's noise hits both alike.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use jit_e2e::bins::placeholders;
use jit_e2e::process::{ManagedProcess, free_port, wait_healthy};
use tempfile::TempDir;

/// A running `BINARY serve --config FILE`, killed on drop.
pub struct OtherBroker {
    process: ManagedProcess,
    port: u16,
    _dir: TempDir,
}

impl OtherBroker {
    /// Starts `binary` with `config_toml` (the placeholders of [`placeholders`] replaced as
    /// [`jit_e2e::BrokerProcess`] does) and `env`, and waits until `GET /healthz` answers 200.
    pub async fn start(binary: &Path, config_toml: &str, env: &[(&str, &str)]) -> Result<Self> {
        ensure!(
            binary.is_file(),
            "{} is not a file (a jit-broker binary to compare with)",
            binary.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("jit-bench-other-broker-")
            .tempdir()?;
        let port = free_port()?;
        let d = dir.path().display().to_string();
        let text = format!("{config_toml}\n[audit]\ndir = \"{d}/audit\"\n")
            .replace(placeholders::LISTEN, &format!("127.0.0.1:{port}"))
            .replace(placeholders::PORT, &port.to_string())
            .replace(placeholders::URL, &format!("http://127.0.0.1:{port}"))
            .replace(placeholders::DIR, &d);
        let config = dir.path().join("broker.toml");
        std::fs::write(&config, text)?;
        let mut cmd = Command::new(binary);
        cmd.arg("serve").arg("--config").arg(&config);
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let process = ManagedProcess::spawn("jit-broker (other build)", cmd, dir.path())?;
        let url = format!("http://127.0.0.1:{port}/healthz");
        let process = wait_healthy("jit-broker (other build)", process, &url)
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            process,
            port,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}
