//! `jit-audit-scale`: `jit-broker audit verify` at scale — events per second and peak memory.
//!
//! `jit-audit-scale N [--dir DIR] [--against OTHER]` writes a trail of N chained events (three
//! traffic events to one of evidence, a signed checkpoint every 10,000 events, files rotated at
//! 128 MiB as the broker's file sink names them) and the broker's JWKS into a fresh folder under DIR (default
//! the system's temporary folder), then verifies it in a child process — the same code as
//! `jit-broker audit verify --dir … --jwks …` — and prints the child's events per second and its
//! peak resident memory (`VmHWM` of /proc/self/status), its events per CPU-second (all its threads; what
//! compares on a machine shared with other work). With `--against OTHER` (another build of this
//! tool, e.g. of the previous commit) the same trail is verified by both builds in turns, three
//! rounds, for a before/after in one run. The folder is removed afterwards.

#![forbid(unsafe_code)]

use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use jit_broker::audit::{AuditEvent, ChainHead, Checkpoint, EventKind, checkpoint_message};
use jit_broker::commands::{VerifyArgs, audit_verify};
use jit_broker::keys::KeyRing;
use jit_broker::recorder::sink::file_name;

const ROTATE_BYTES: u64 = 128 << 20;
const CHECKPOINT_EVERY: u64 = 10_000;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jit-audit-scale: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [verify, dir, jwks] if verify == "verify" => verify_child(Path::new(dir), Path::new(jwks)),
        [n, rest @ ..] => {
            let n = n.parse().context("N")?;
            let (mut dir, mut against) = (std::env::temp_dir(), None);
            for pair in rest.chunks(2) {
                match pair {
                    [flag, value] if flag == "--dir" => dir = PathBuf::from(value),
                    [flag, value] if flag == "--against" => against = Some(PathBuf::from(value)),
                    _ => bail!("usage: {USAGE}"),
                }
            }
            scale(n, &dir, against.as_deref())
        }
        _ => bail!("usage: {USAGE}"),
    }
}

const USAGE: &str = "jit-audit-scale N [--dir DIR] [--against OTHER-BUILD-OF-THIS-TOOL]";

/// Rounds of verification when compared against another build: they alternate, so a change
/// in the machine's load falls on both.
const ROUNDS: usize = 3;

fn scale(n: u64, base: &Path, against: Option<&Path>) -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("jit-audit-scale-")
        .tempdir_in(base)
        .context("temporary folder")?;
    let trail = dir.path().join("audit");
    std::fs::create_dir(&trail)?;
    let started = Instant::now();
    let (bytes, files, keys) = generate(n, &trail)?;
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, serde_json::to_vec(&keys.jwks())?)?;
    println!(
        "generated {n} events, {:.1} MiB in {files} files, in {:.1} s",
        bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    let this = std::env::current_exe()?;
    let Some(other) = against else {
        return verify_with(&this, &trail, &jwks, "");
    };
    // The same trail verified by both builds, in turns.
    for round in 1..=ROUNDS {
        verify_with(
            other,
            &trail,
            &jwks,
            &format!("round {round}, {}: ", other.display()),
        )?;
        verify_with(
            &this,
            &trail,
            &jwks,
            &format!("round {round}, this build: "),
        )?;
    }
    Ok(())
}

/// Verifies `trail` in a child process of `tool` (a build of this tool) and prints its
/// figures, each line after `label`.
fn verify_with(tool: &Path, trail: &Path, jwks: &Path, label: &str) -> Result<()> {
    let out = Command::new(tool)
        .arg("verify")
        .arg(trail)
        .arg(jwks)
        .output()
        .context("running the verifier")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("{label}{line}");
    }
    if !out.status.success() {
        bail!("verify failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Writes `n` chained events into trail files under `dir`; returns the bytes and files
/// written, and the key that signed the checkpoints.
fn generate(n: u64, dir: &Path) -> Result<(u64, u64, KeyRing)> {
    let keys = KeyRing::ephemeral()?;
    let mut head = ChainHead::default();
    let mut out: Option<BufWriter<std::fs::File>> = None;
    let (mut in_file, mut total, mut files) = (0u64, 0u64, 0u64);
    let mut line = Vec::with_capacity(1024);
    for seq in 1..=n {
        let ts = 1_800_000_000_000 + seq as i64;
        let e = if seq % CHECKPOINT_EVERY == 0 {
            let mut e = AuditEvent::new(EventKind::AuditCheckpoint, ts);
            let key = keys.signer();
            let sig = jsonwebtoken::crypto::sign(
                checkpoint_message(&head, None, ts).as_bytes(),
                key.encoding(),
                jsonwebtoken::Algorithm::EdDSA,
            )?;
            Checkpoint {
                head: head.clone(),
                kid: key.kid().to_owned(),
                sig,
            }
            .fill(&mut e);
            e
        } else if seq % 4 == 0 {
            let mut e = AuditEvent::new("grant.issued", ts)
                .with("ttl_minutes", 30)
                .with("request_id", format!("req-{seq:016x}"));
            e.subject = Some(format!(
                "repo:acme/service-{}:ref:refs/heads/main",
                seq % 97
            ));
            e.idp = Some("github".into());
            e.repo = Some(format!("acme/service-{}", seq % 97));
            e.scope = Some(format!("repo:acme/service-{}:read", seq % 97));
            e.role = Some("ci-read".into());
            e.jti = Some(format!("{seq:032x}"));
            e.client = Some("10.1.2.3".into());
            e
        } else {
            let mut e =
                AuditEvent::new("access.allowed", ts).with("request_id", format!("req-{seq:016x}"));
            e.subject = Some(format!(
                "repo:acme/service-{}:ref:refs/heads/main",
                seq % 97
            ));
            e.repo = Some(format!("acme/service-{}", seq % 97));
            e.scope = Some(format!("repo:acme/service-{}:read", seq % 97));
            e.jti = Some(format!("{:032x}", seq & !3));
            e.client = Some("10.1.2.3".into());
            e.user_agent = Some("git/2.47.0".into());
            e
        };
        let e = head.chain(e);
        if out.is_none() || in_file >= ROTATE_BYTES {
            if let Some(mut f) = out.take() {
                f.flush()?;
            }
            let path: PathBuf = dir.join(file_name("bench", seq));
            out = Some(BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(path)?,
            ));
            in_file = 0;
            files += 1;
        }
        line.clear();
        serde_json::to_writer(&mut line, &e)?;
        line.push(b'\n');
        if let Some(f) = out.as_mut() {
            f.write_all(&line)?;
        }
        in_file += line.len() as u64;
        total += line.len() as u64;
    }
    if let Some(mut f) = out.take() {
        f.flush()?;
    }
    Ok((total, files, keys))
}

fn verify_child(dir: &Path, jwks: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let started = Instant::now();
    let report = rt.block_on(audit_verify(&VerifyArgs {
        config: None,
        paths: vec![dir.to_path_buf()],
        jwks: Some(jwks.to_path_buf()),
    }))?;
    let secs = started.elapsed().as_secs_f64();
    let events: f64 = report
        .split_once(" events")
        .and_then(|(a, _)| a.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap_or("VmHWM: ?")
        .split_whitespace()
        .nth(1)
        .unwrap_or("?")
        .to_owned();
    let cpu = own_cpu_secs()?;
    // What else ran meanwhile: the 1-minute load average as verification ended.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    println!("{report}");
    println!(
        "verified in {secs:.2} s: {:.0} events/s; {cpu:.2} s of CPU: {:.0} events per CPU-second; peak RSS (VmHWM) {hwm} kB; load average {load}",
        events / secs,
        events / cpu.max(1e-9)
    );
    Ok(())
}

/// This process's user + system CPU time so far (`/proc/self/stat`, clock ticks of 1/100 s):
/// on a machine shared with other work, events per CPU-second is the figure that compares.
fn own_cpu_secs() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .with_context(|| format!("/proc/self/stat field {i}"))
    };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
