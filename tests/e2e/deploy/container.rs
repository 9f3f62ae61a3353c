//! deploy/container/Containerfile: the image's `runtime` stage is built with podman from the
//! test's own binary (laid out by deploy/container/rootfs.sh, handed in as the `build` stage),
//! and its entrypoint, from the image's own root filesystem as the image's user, serves
//! `/readyz` with the example config and writes its audit files on the image's state folder.
//!
//! `podman run` is used where it works. Where the runtime cannot start containers (crun may be
//! refused `setrlimit` inside another container), the image's filesystem is mounted with
//! `buildah mount` and its entrypoint run there with `chroot --userspec`, which is what the
//! runtime would exec.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use jit_e2e::bins::{JIT_BROKER, bin_path};
use jit_e2e::process::{ManagedProcess, find_program, free_port, run_checked, wait_healthy};
use jit_e2e::{RedisServer, random_token};
use serde_json::Value;

use super::{example, example_listening_on, is_root, read, repo};

const CONTAINERFILE: &str = "deploy/container/Containerfile";

/// The build stage compiles only what the image ships, and the build context leaves out
/// the build output.
#[test]
fn the_image_builds_only_what_it_ships_from_a_small_context() -> Result<()> {
    let file = read(CONTAINERFILE)?;
    let build = file
        .lines()
        .find(|l| l.contains("cargo build"))
        .context("a cargo build")?;
    let bins: Vec<&str> = build
        .split_whitespace()
        .skip_while(|w| *w != "--bin")
        .step_by(2)
        .take_while(|w| *w == "--bin")
        .collect();
    assert_eq!(bins.len(), 1, "{build}");
    ensure!(build.contains("--bin jit-broker"), "{build}");
    ensure!(
        file.contains("FROM scratch AS runtime"),
        "the image holds nothing else"
    );
    let ignore = read(".containerignore")?;
    for needed in ["target/", "fuzz/", "tests/oidc/node_modules/", ".git/"] {
        ensure!(
            ignore.lines().any(|l| l == needed),
            ".containerignore lacks {needed}"
        );
    }
    Ok(())
}

/// Removes what the test made in the container storage, whatever happens.
struct Cleanup {
    image: String,
    container: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = &self.container {
            let _ = Command::new("buildah").args(["umount", c]).output();
            let _ = Command::new("buildah").args(["rm", c]).output();
        }
        let _ = Command::new("podman")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// The image's user, entrypoint and command, from its own config.
struct ImageConfig {
    user: String,
    argv: Vec<String>,
}

fn image_config(image: &str) -> Result<ImageConfig> {
    let out = run_checked(Command::new("podman").args([
        "image",
        "inspect",
        "--format",
        "{{json .Config}}",
        image,
    ]))?;
    let config: Value = serde_json::from_str(out.trim())?;
    let strings = |k: &str| -> Vec<String> {
        config[k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let mut argv = strings("Entrypoint");
    argv.extend(strings("Cmd"));
    Ok(ImageConfig {
        user: config["User"].as_str().unwrap_or_default().to_owned(),
        argv,
    })
}

#[test]
fn the_image_serves_readyz_from_its_own_root_filesystem() -> Result<()> {
    crate::support::run(async {
        if !is_root() {
            eprintln!(
                "SKIPPED the_image_serves_readyz_from_its_own_root_filesystem: needs root \
                 (podman storage, buildah mount, chroot); scripts/test runs as root"
            );
            return Ok(());
        }
        for tool in ["podman", "buildah", "chroot", "ldd"] {
            find_program(tool)?;
        }
        let work = tempfile::Builder::new()
            .prefix("jit-e2e-image-")
            .tempdir()?;
        let stage = work.path().join("build");
        run_checked(
            Command::new("sh")
                .arg(repo().join("deploy/container/rootfs.sh"))
                .arg(bin_path(JIT_BROKER)?)
                .arg(stage.join("rootfs")),
        )?;
        let image = format!("localhost/git-jit-e2e:{}", random_token(6).to_lowercase());
        let mut cleanup = Cleanup {
            image: image.clone(),
            container: None,
        };
        run_checked(
            Command::new("podman")
                .args(["build", "--target", "runtime", "-f"])
                .arg(repo().join(CONTAINERFILE))
                .arg("--build-context")
                .arg(format!("build={}", stage.display()))
                .args(["-t", &image])
                .arg(repo()),
        )?;
        let config = image_config(&image)?;
        assert_eq!(config.user, "65532:65532", "a numeric user, not root");
        assert_eq!(
            config.argv,
            [
                "/usr/local/bin/jit-broker",
                "serve",
                "--config",
                "/etc/git-jit/broker.toml"
            ]
        );

        let redis = RedisServer::start().await?;
        let port = free_port()?;
        let (text, example) = example()?;
        let broker_toml = example_listening_on(&text, &example, &format!("127.0.0.1:{port}"))?;
        let runs = Command::new("podman")
            .args(["run", "--rm", "--network", "host", &image, "--version"])
            .output()?;
        let (process, state) = if runs.status.success() {
            run_with_podman(&image, work.path(), &broker_toml, &redis.url())?
        } else {
            eprintln!(
                "podman run refused here ({}); running the image's root filesystem with \
                 buildah mount + chroot instead",
                String::from_utf8_lossy(&runs.stderr).trim()
            );
            let container = run_checked(Command::new("buildah").args(["from", &image]))?
                .trim()
                .to_owned();
            cleanup.container = Some(container.clone());
            let root = PathBuf::from(
                run_checked(Command::new("buildah").args(["mount", &container]))?.trim(),
            );
            let process = run_with_chroot(&root, &config, work.path(), &broker_toml, &redis.url())?;
            (process, root.join("var/lib/git-jit"))
        };
        let base = format!("http://127.0.0.1:{port}");
        let mut process = wait_healthy("jit-broker (image)", process, &format!("{base}/readyz"))
            .await
            .map_err(|(e, _)| e)?;
        // An audited refusal lands in the image's state folder, written by its user.
        super::audited_refusal(&base).await?;
        let audit = state.join("audit");
        super::audit_files_of(&audit, 65532).with_context(|| process.logs())?;
        process.kill();
        drop(cleanup);
        Ok(())
    })
}

/// Writes the config and keys into `etc` (owned by the image's user where the broker reads
/// them as that user).
fn install_config(etc: &Path, broker_toml: &str) -> Result<()> {
    std::fs::create_dir_all(etc)?;
    std::fs::write(etc.join("broker.toml"), broker_toml)?;
    jit_e2e::bins::generate_keys(&etc.join("keys"))?;
    run_checked(
        Command::new("chown")
            .args(["-R", "65532:65532"])
            .arg(etc.join("keys")),
    )?;
    Ok(())
}

fn run_with_chroot(
    root: &Path,
    config: &ImageConfig,
    work: &Path,
    broker_toml: &str,
    redis: &str,
) -> Result<ManagedProcess> {
    install_config(&root.join("etc/git-jit"), broker_toml)?;
    let (program, args) = config.argv.split_first().context("an entrypoint")?;
    let mut cmd = Command::new(find_program("chroot")?);
    cmd.arg(format!("--userspec={}", config.user))
        .arg(root)
        .arg(program)
        .args(args)
        .env_clear()
        .env("JIT_REDIS_URL", redis)
        .env("JIT_LOG_FORMAT", "json")
        .env("HOSTNAME", "image-test");
    ManagedProcess::spawn("jit-broker-image", cmd, work)
}

fn run_with_podman(
    image: &str,
    work: &Path,
    broker_toml: &str,
    redis: &str,
) -> Result<(ManagedProcess, PathBuf)> {
    let etc = work.join("etc");
    install_config(&etc, broker_toml)?;
    let state = work.join("state");
    std::fs::create_dir_all(&state)?;
    run_checked(Command::new("chown").args(["65532:65532"]).arg(&state))?;
    let mut cmd = Command::new("podman");
    cmd.args(["run", "--rm", "--network", "host", "--read-only"])
        .arg("-e")
        .arg(format!("JIT_REDIS_URL={redis}"))
        .arg("-v")
        .arg(format!(
            "{}:/etc/git-jit/broker.toml:ro",
            etc.join("broker.toml").display()
        ))
        .arg("-v")
        .arg(format!(
            "{}:/etc/git-jit/keys:ro",
            etc.join("keys").display()
        ))
        .arg("-v")
        .arg(format!("{}:/var/lib/git-jit", state.display()))
        .args(["--tmpfs", "/var/log/git-jit:uid=65532,gid=65532,mode=0700"])
        .arg(image);
    Ok((ManagedProcess::spawn("jit-broker-image", cmd, work)?, state))
}
