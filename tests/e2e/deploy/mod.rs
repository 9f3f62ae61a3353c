//! The deploy files work as shipped: the Kubernetes manifests and compose.yaml agree with the
//! example config and the image ([`manifests`]), the systemd unit verifies and its exact
//! `ExecStart` serves as its unprivileged user ([`systemd`]), and the Containerfile builds an
//! image whose own root filesystem serves `/readyz` ([`container`]).

mod container;
mod manifests;
mod systemd;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use jit_broker::config::Config;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A file of the repository, as text.
fn read(rel: &str) -> Result<String> {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// deploy/broker.example.toml, parsed.
fn example() -> Result<(String, Config)> {
    let text = read("deploy/broker.example.toml")?;
    let config = Config::parse(&text, Path::new("deploy/broker.example.toml"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((text, config))
}

/// The folders the example config writes to: its audit folder and its export file's folder.
fn writable_paths(config: &Config) -> Result<Vec<PathBuf>> {
    let audit = config
        .audit
        .dir
        .clone()
        .context("the example sets audit.dir")?;
    let export = config
        .audit
        .export
        .as_deref()
        .filter(|e| *e != "stdout")
        .map(|e| Path::new(e).parent().map(Path::to_path_buf))
        .context("the example exports to a file")?
        .context("the export file has a folder")?;
    Ok(vec![audit, export])
}

/// The example with `listen` moved to `addr` (the rest untouched).
fn example_listening_on(text: &str, config: &Config, addr: &str) -> Result<String> {
    let line = format!("listen = \"{}\"", config.broker.listen);
    anyhow::ensure!(text.contains(&line), "the example has `{line}`");
    Ok(text.replacen(&line, &format!("listen = \"{addr}\""), 1))
}

/// Whether this process runs as root (needed for mount namespaces, chroot and podman).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Sends the broker at `base` a request with a forged token: refused (401), and audited.
async fn audited_refusal(base: &str) -> Result<()> {
    let r = jit_e2e::http_client()
        .get(format!(
            "{base}/acme/api.git/info/refs?service=git-upload-pack"
        ))
        .bearer_auth("not-a-token")
        .send()
        .await?;
    anyhow::ensure!(r.status() == 401, "a forged token: {}", r.status());
    Ok(())
}

/// The audit files in `dir`, each checked to be `uid`'s and private to it (0600).
fn audit_files_of(dir: &Path, uid: u32) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::MetadataExt as _;
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    anyhow::ensure!(!files.is_empty(), "no audit files in {}", dir.display());
    for f in &files {
        let meta = std::fs::metadata(f)?;
        anyhow::ensure!(meta.uid() == uid, "{} is not uid {uid}'s", f.display());
        anyhow::ensure!(meta.mode() & 0o777 == 0o600, "{} is not 0600", f.display());
    }
    Ok(files)
}
