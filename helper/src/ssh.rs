//! Git over SSH with git-jit certificates: `git jit ssh` is git's `core.sshCommand` (set by
//! `git jit setup --ssh`). For a host set up for git-jit, it reads the Git command git asks
//! ssh to run (`git-upload-pack 'acme/api.git'`), asks the broker for an SSH certificate for
//! exactly that repository and action — a fresh Ed25519 key pair per certificate, from the
//! same identities as the credential helper — and runs `ssh` with that key and certificate.
//! Other hosts get plain `ssh`, untouched.
//!
//! Key and certificate are kept in the cache folder (0700), in 0600 files, until a minute
//! before the certificate expires, so a fetch followed by a push within the grant's life asks
//! once; expired ones are deleted on every run. Nothing is printed on stdout (it is git's
//! protocol channel).

use std::path::{Path, PathBuf};
use std::process::Command;

use jit_proto::api::TOKEN_TYPE_SSH_CERTIFICATE;
use jit_proto::ssh::{GitCommand, SshPublicKey};
use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::{LineEnding, PrivateKey};

use crate::broker::{BrokerError, Exchange, Extras};
use crate::cache::{create_private_dir, write_private_atomic};
use crate::credential::{Context, Exchanger, HelperError};

/// The git config key listing the hosts `git jit ssh` gets certificates for.
pub const HOSTS_KEY: &str = "jit.sshHost";
/// Seconds before expiry a cached certificate is no longer used.
const MARGIN_SECS: i64 = 60;

/// Why `git jit ssh` could not run ssh.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The command is not a Git command git-jit serves.
    #[error("git-jit: {0}")]
    Command(#[from] jit_proto::ssh::GitCommandError),
    /// No broker is configured.
    #[error("git-jit: no broker is configured (set GIT_JIT_BROKER or run git jit setup)")]
    NoBroker,
    /// The exchange failed.
    #[error("git-jit: {0}")]
    Helper(#[from] HelperError),
    /// The broker refused or could not be reached.
    #[error("git-jit: {0}")]
    Broker(#[from] BrokerError),
    /// The broker answered something other than a certificate.
    #[error("git-jit: the broker did not return an SSH certificate")]
    NotACertificate,
    /// A key could not be made.
    #[error("git-jit: cannot make an SSH key: {0}")]
    Key(String),
    /// Files or running ssh.
    #[error("git-jit: {0}")]
    Io(#[from] std::io::Error),
}

/// The host ssh is asked to reach: the argument before the command, without `user@`.
fn host_of(args: &[String]) -> Option<&str> {
    let host = args.get(args.len().checked_sub(2)?)?;
    Some(host.rsplit_once('@').map_or(host.as_str(), |(_, h)| h))
}

/// The hosts set up for git-jit (`git config --get-all jit.sshHost`).
fn configured_hosts() -> Vec<String> {
    Command::new("git")
        .args(["config", "--get-all", HOSTS_KEY])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A cached key pair and certificate for one broker and scope.
struct Entry {
    key: PathBuf,
    cert: PathBuf,
    expiry: PathBuf,
}

impl Entry {
    fn new(dir: &Path, broker: &str, scope: &str) -> Self {
        use sha2::Digest as _;
        let id = hex::encode(&sha2::Sha256::digest(format!("{broker} {scope}"))[..12]);
        Self {
            key: dir.join(format!("{id}.key")),
            cert: dir.join(format!("{id}.key-cert.pub")),
            expiry: dir.join(format!("{id}.exp")),
        }
    }

    /// Whether the entry may still be used at `now`.
    fn fresh(&self, now: i64) -> bool {
        std::fs::read_to_string(&self.expiry)
            .ok()
            .and_then(|t| t.trim().parse::<i64>().ok())
            .is_some_and(|exp| now < exp - MARGIN_SECS)
            && self.key.is_file()
            && self.cert.is_file()
    }
}

/// Deletes entries whose certificates are no longer used.
fn sweep(dir: &Path, now: i64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "exp") {
            let stale = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<i64>().ok())
                .is_none_or(|exp| now >= exp - MARGIN_SECS);
            if stale {
                let stem = path.with_extension("");
                let _ = std::fs::remove_file(stem.with_extension("key"));
                let _ = std::fs::remove_file(stem.with_extension("key-cert.pub"));
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Deletes every cached SSH key and certificate (`git jit logout`).
pub fn forget(cache_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(cache_dir.join("ssh")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A fresh Ed25519 key pair from the system's random generator.
fn new_key() -> Result<PrivateKey, SshError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| SshError::Key(e.to_string()))?;
    PrivateKey::new(
        KeypairData::Ed25519(Ed25519Keypair::from_seed(&seed)),
        "git-jit",
    )
    .map_err(|e| SshError::Key(e.to_string()))
}

/// Gets (or reuses) a certificate for `command` and returns the key and certificate files.
async fn certificate(
    ctx: &Context<'_>,
    command: &GitCommand,
) -> Result<(PathBuf, PathBuf), SshError> {
    let broker_url = ctx.settings.broker.clone().ok_or(SshError::NoBroker)?;
    let broker = ctx.broker(&broker_url)?;
    let scope = command.needed_scope();
    let dir = ctx.settings.dirs.cache.join("ssh");
    create_private_dir(&dir)?;
    let now = (ctx.clock)();
    sweep(&dir, now);
    let entry = Entry::new(&dir, &broker.base(), &scope.to_string());
    if entry.fresh(now) {
        return Ok((entry.key, entry.cert));
    }
    let key = new_key()?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| SshError::Key(e.to_string()))?;
    let public = SshPublicKey::parse(&public).map_err(|e| SshError::Key(e.to_string()))?;
    let exchanger = Exchanger::new(ctx, &broker).await?;
    let subject = exchanger.subject().await?;
    let ask = Exchange {
        subject_token: &subject.token,
        subject_token_type: subject.token_type,
        scope: &scope,
        extras: Extras {
            ssh_public_key: Some(&public),
            ..Extras::default()
        },
    };
    let granted = broker.exchange(exchanger.metadata(), &ask).await?;
    if granted.response.issued_token_type != TOKEN_TYPE_SSH_CERTIFICATE {
        return Err(SshError::NotACertificate);
    }
    let private = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| SshError::Key(e.to_string()))?;
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    write_private_atomic(&dir, &name(&entry.key), private.as_bytes())?;
    let cert = format!("{}\n", granted.response.access_token.expose().trim());
    write_private_atomic(&dir, &name(&entry.cert), cert.as_bytes())?;
    write_private_atomic(
        &dir,
        &name(&entry.expiry),
        granted.expires_at.to_string().as_bytes(),
    )?;
    Ok((entry.key, entry.cert))
}

/// `git jit ssh ARGS…`: runs `ssh` (`$GIT_JIT_SSH`, default `ssh`; a program, no arguments) for git, with a git-jit
/// certificate when the host is set up for it; returns ssh's exit code.
pub async fn run(ctx: &Context<'_>, args: &[String]) -> Result<i32, SshError> {
    let program = (ctx.env)("GIT_JIT_SSH").unwrap_or_else(|| "ssh".to_owned());
    let mut ssh = Command::new(program);
    // Anything that is not a connection to a git-jit host (another host, or git probing
    // which ssh this is with `-G`) runs plain ssh.
    let jit_host = host_of(args).is_some_and(|h| configured_hosts().iter().any(|c| c == h));
    if let (true, Some(command)) = (jit_host, args.last()) {
        let command = GitCommand::parse(command)?;
        let (key, cert) = certificate(ctx, &command).await?;
        ssh.arg("-i")
            .arg(&key)
            .arg("-o")
            .arg(format!("CertificateFile={}", cert.display()))
            .args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"]);
    }
    let status = ssh.args(args).status()?;
    Ok(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_the_argument_before_the_command() {
        let a = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            host_of(&a(&[
                "-o",
                "SendEnv=GIT_PROTOCOL",
                "-p",
                "2222",
                "git@git.example.com",
                "git-upload-pack 'a/b.git'"
            ])),
            Some("git.example.com")
        );
        assert_eq!(host_of(&a(&["host", "cmd"])), Some("host"));
        assert_eq!(host_of(&a(&["cmd"])), None);
    }

    #[test]
    fn entries_are_fresh_until_a_minute_before_expiry_and_then_swept() {
        let dir = tempfile::tempdir().expect("dir");
        let e = Entry::new(dir.path(), "https://b", "repo:a/b:read");
        for p in [&e.key, &e.cert] {
            std::fs::write(p, "x").expect("write");
        }
        std::fs::write(&e.expiry, "1000").expect("write");
        assert!(e.fresh(939));
        assert!(!e.fresh(940));
        sweep(dir.path(), 939);
        assert!(e.key.exists());
        sweep(dir.path(), 940);
        assert!(!e.key.exists() && !e.cert.exists() && !e.expiry.exists());
        std::fs::create_dir_all(dir.path().join("ssh")).expect("mkdir");
        forget(dir.path()).expect("forget");
        assert!(!dir.path().join("ssh").exists());
        forget(dir.path()).expect("nothing to forget");
        let k = new_key().expect("key");
        assert!(
            k.public_key()
                .to_openssh()
                .expect("line")
                .starts_with("ssh-ed25519 ")
        );
    }
}
