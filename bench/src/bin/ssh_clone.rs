//! `jit-ssh-bench`: Git over SSH through `jit-ssh-gate` vs. plain sshd running
//! `git-upload-pack` for a static key, side by side on 127.0.0.1 — the same sshd binary, host
//! and repository; only the login (certificate vs. authorized key) and the `ForceCommand`
//! differ. Measures, alternating which goes first:
//!
//! - `git ls-remote` (the per-connection cost: the gate starts, asks `/ssh/check`, starts
//!   `git upload-pack`), `JIT_BENCH_SSH_LS` runs of each (default 30);
//! - `git clone --no-checkout` of a repository of `JIT_BENCH_SSH_MIB` MiB of incompressible
//!   data (default 50), `JIT_BENCH_SSH_CLONES` runs of each (default 5).
//!
//! The certificate is fetched once beforehand (the exchange is measured by `jit-load`). One
//! summary line per figure on stdout (ratios of medians); progress on stderr. Binaries come
//! from this executable's directory or `JIT_E2E_BIN_DIR`.

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use jit_bench::{REPO, broker_config, form_body};
use jit_e2e::bins::{bin_path, generate_keys};
use jit_e2e::process::run_checked;
use jit_e2e::sshd::{GIT_USER, SshServer, SshdConfig};
use jit_e2e::{BrokerProcess, CiIssuer, RedisServer};

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A bare `acme/big` under `sshd`'s repositories holding `mib` MiB of random bytes.
fn big_repo(sshd: &SshServer, source: &Path) -> Result<()> {
    let bare = sshd.repos().join(format!("{REPO}.git"));
    if let Some(parent) = bare.parent() {
        std::fs::create_dir_all(parent)?;
    }
    run_checked(
        Command::new("git")
            .args(["clone", "--quiet", "--bare"])
            .arg(source)
            .arg(&bare),
    )?;
    run_checked(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{GIT_USER}:"))
            .arg(sshd.repos()),
    )?;
    Ok(())
}

fn source_repo(dir: &Path, mib: usize) -> Result<()> {
    let git = |args: &[&str]| {
        run_checked(
            Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_AUTHOR_NAME", "bench")
                .env("GIT_AUTHOR_EMAIL", "bench@example.com")
                .env("GIT_COMMITTER_NAME", "bench")
                .env("GIT_COMMITTER_EMAIL", "bench@example.com"),
        )
    };
    std::fs::create_dir_all(dir)?;
    git(&["init", "--quiet", "--initial-branch=main"])?;
    let mut data = vec![0u8; 1024 * 1024];
    let rng = ring::rand::SystemRandom::new();
    for i in 0..mib {
        ring::rand::SecureRandom::fill(&rng, &mut data)
            .map_err(|_| anyhow::anyhow!("random generator failed"))?;
        std::fs::write(dir.join(format!("blob-{i:04}")), &data)?;
    }
    git(&["add", "."])?;
    git(&["commit", "--quiet", "-m", "data"])?;
    Ok(())
}

/// One timed git command with `ssh_command` as its ssh.
fn timed(ssh_command: &str, args: &[&str]) -> Result<f64> {
    let started = Instant::now();
    let out = Command::new("git")
        .args(args)
        .env("GIT_SSH_COMMAND", ssh_command)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(secs)
}

async fn run() -> Result<()> {
    jit_e2e::install_crypto_provider();
    let mib = env_usize("JIT_BENCH_SSH_MIB", 50)?;
    let clones = env_usize("JIT_BENCH_SSH_CLONES", 5)?;
    let ls = env_usize("JIT_BENCH_SSH_LS", 30)?;
    let work = tempfile::Builder::new()
        .prefix("jit-ssh-bench-")
        .tempdir()?;
    let w = work.path();

    eprintln!("starting redis, an issuer, the broker (with an SSH CA) and two sshd");
    let redis = RedisServer::start().await?;
    let idp = CiIssuer::start().await?;
    let keys = w.join("keys");
    generate_keys(&keys)?;
    run_checked(
        Command::new(bin_path("jit-broker")?)
            .args(["keys", "generate", "--ssh", "--dir"])
            .arg(&keys),
    )?;
    let config = broker_config(
        &keys,
        &redis.url(),
        &idp.platform_issuer("github"),
        "http://127.0.0.1:9",
    );
    let broker =
        BrokerProcess::start_with_env(&config, &[("JIT_BENCH_UPSTREAM_PASSWORD", "unused")])
            .await?;
    let http = jit_e2e::http_client();
    let ca = http
        .get(format!("{}/.well-known/ssh-ca.pub", broker.url()))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;

    let user_key = w.join("id_ed25519");
    run_checked(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&user_key),
    )?;
    let public = std::fs::read_to_string(user_key.with_extension("pub"))?;
    let gate = bin_path("jit-ssh-gate")?;
    let gated = SshServer::start(SshdConfig {
        trusted_ca_keys: Some(ca),
        authorized_key: None,
        force_command: Some(format!(
            "{} --broker {} --repos {{{{REPOS}}}}",
            gate.display(),
            broker.url()
        )),
    })
    .await?;
    let plain = SshServer::start(SshdConfig {
        trusted_ca_keys: None,
        authorized_key: Some(public.trim().to_owned()),
        force_command: None,
    })
    .await?;

    eprintln!("generating a {mib} MiB repository");
    let source = w.join("source");
    source_repo(&source, mib)?;
    big_repo(&gated, &source)?;
    big_repo(&plain, &source)?;

    // One certificate for the whole run (valid 60 minutes).
    let id_token = idp.github_actions(REPO).rs256().expires_in(3600).sign();
    let form = format!(
        "{}&requested_token_type={}&public_key={}&ttl=60",
        form_body(&id_token, &format!("repo:{REPO}:read")),
        "urn%3Agit-jit%3Aparams%3Aoauth%3Atoken-type%3Assh-certificate",
        public
            .trim()
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
            .replace(' ', "+")
            .replace('@', "%40"),
    );
    let answer: serde_json::Value = http
        .post(format!("{}/oauth/token", broker.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await?
        .json()
        .await?;
    let cert = answer["access_token"]
        .as_str()
        .with_context(|| format!("no certificate: {answer}"))?;
    let cert_file = w.join("id_ed25519-cert.pub");
    std::fs::write(&cert_file, format!("{cert}\n"))?;

    let gated_cfg = gated.client_config(&made(w.join("ssh-gated"))?)?;
    let plain_cfg = plain.client_config(&made(w.join("ssh-plain"))?)?;
    let ssh = |cfg: &Path, cert: Option<&Path>| {
        let mut s = format!(
            "ssh -F {} -i {} -o IdentitiesOnly=yes",
            cfg.display(),
            user_key.display()
        );
        if let Some(c) = cert {
            s.push_str(&format!(" -o CertificateFile={}", c.display()));
        }
        s
    };
    let through_gate = ssh(&gated_cfg, Some(&cert_file));
    let direct = ssh(&plain_cfg, None);
    let gate_url = gated.repo_url(REPO);
    // Plain sshd runs git-upload-pack on the path as given: the repository's absolute path.
    let plain_url = format!(
        "ssh://{GIT_USER}@127.0.0.1:{}{}/{REPO}.git",
        plain.port(),
        plain.repos().display()
    );

    eprintln!("ls-remote: {ls} of each, alternating");
    let (mut g, mut p) = (Vec::new(), Vec::new());
    for i in 0..=ls {
        let a = ["ls-remote", gate_url.as_str()];
        let b = ["ls-remote", plain_url.as_str()];
        let (x, y) = if i % 2 == 0 {
            let x = timed(&through_gate, &a)?;
            (x, timed(&direct, &b)?)
        } else {
            let y = timed(&direct, &b)?;
            (timed(&through_gate, &a)?, y)
        };
        // The first of each warms caches.
        if i > 0 {
            g.push(x);
            p.push(y);
        }
    }
    let (gm, pm) = (median(g), median(p));
    println!(
        "ssh ls-remote: through jit-ssh-gate {:.1} ms, plain sshd + git-upload-pack {:.1} ms (medians of {ls}); ratio {:.2}",
        gm * 1e3,
        pm * 1e3,
        gm / pm
    );

    eprintln!("clone: {clones} of each, alternating");
    let dest = w.join("clone");
    let dest_s = dest.to_string_lossy().into_owned();
    let (mut g, mut p) = (Vec::new(), Vec::new());
    for i in 0..=clones {
        let one = |cmd: &str, url: &str| -> Result<f64> {
            let _ = std::fs::remove_dir_all(&dest);
            timed(cmd, &["clone", "--quiet", "--no-checkout", url, &dest_s])
        };
        let (x, y) = if i % 2 == 0 {
            let x = one(&through_gate, &gate_url)?;
            (x, one(&direct, &plain_url)?)
        } else {
            let y = one(&direct, &plain_url)?;
            (one(&through_gate, &gate_url)?, y)
        };
        if i > 0 {
            g.push(x);
            p.push(y);
        }
    }
    let (gm, pm) = (median(g), median(p));
    println!(
        "ssh clone of {mib} MiB: through jit-ssh-gate {gm:.2} s, plain sshd + git-upload-pack {pm:.2} s (medians of {clones}); ratio {:.2}",
        gm / pm
    );
    Ok(())
}

/// `path`, created as a folder.
fn made(path: std::path::PathBuf) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(&path)?;
    Ok(path)
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jit-ssh-bench: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("jit-ssh-bench: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
