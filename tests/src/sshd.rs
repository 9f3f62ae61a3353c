//! A real OpenSSH server (Debian's `openssh-server`) on a free loopback port, with its own
//! host key and configuration and no system service: `sshd -D -e -f CONFIG` as root, logging
//! to its own file, killed with the test. Logins are as the local user [`GIT_USER`] (created
//! with `useradd` when missing), whose bare repositories live in the server's folder.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::process::{
    ManagedProcess, START_TIMEOUT, failed, find_program, free_port, port_is_open, run_checked,
    start_retrying, wait_ready,
};

/// The Git user sshd logs clients in as.
pub const GIT_USER: &str = "jit-git";

/// How sshd authenticates and what it runs.
#[derive(Debug, Clone, Default)]
pub struct SshdConfig {
    /// The `TrustedUserCAKeys` file's content (the broker's `/.well-known/ssh-ca.pub`):
    /// certificates naming the principal `git-jit` log in.
    pub trusted_ca_keys: Option<String>,
    /// An `authorized_keys` line for a static key (the baseline without git-jit).
    pub authorized_key: Option<String>,
    /// The `ForceCommand`; `{{REPOS}}` is replaced with the repositories' folder.
    pub force_command: Option<String>,
}

/// A running sshd, killed on drop.
#[derive(Debug)]
pub struct SshServer {
    process: ManagedProcess,
    port: u16,
    dir: TempDir,
}

/// Makes sure [`GIT_USER`] exists (a system user with shell `/bin/sh`, not locked).
fn ensure_user() -> Result<()> {
    let exists = || {
        Command::new("id")
            .arg(GIT_USER)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if exists() {
        return Ok(());
    }
    let out = Command::new("useradd")
        .args(["--system", "--no-create-home", "--home-dir", "/"])
        .args(["--shell", "/bin/sh", "--password", "*", GIT_USER])
        .output()
        .context("running useradd")?;
    // Another test may have created the user meanwhile.
    if !out.status.success() && !exists() {
        bail!(
            "useradd {GIT_USER}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl SshServer {
    /// Starts sshd with `config` and waits until its port accepts connections.
    pub async fn start(config: SshdConfig) -> Result<Self> {
        ensure_user()?;
        let sshd = find_program("sshd")?;
        let dir = tempfile::Builder::new().prefix("jit-e2e-sshd-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        // sshd's privilege separation needs its empty directory.
        std::fs::create_dir_all("/run/sshd")?;
        let d = dir.path();
        std::fs::create_dir_all(d.join("repos"))?;
        run_checked(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "jit-e2e-host", "-f"])
                .arg(d.join("host_key")),
        )?;
        let mut auth = String::new();
        if let Some(ca) = &config.trusted_ca_keys {
            std::fs::write(d.join("ca.pub"), ca)?;
            std::fs::write(d.join("principals"), "git-jit\n")?;
            auth.push_str(&format!(
                "TrustedUserCAKeys {0}/ca.pub\nAuthorizedPrincipalsFile {0}/principals\n",
                d.display()
            ));
        }
        match &config.authorized_key {
            Some(line) => {
                std::fs::write(d.join("authorized_keys"), format!("{line}\n"))?;
                auth.push_str(&format!(
                    "AuthorizedKeysFile {}/authorized_keys\n",
                    d.display()
                ));
            }
            None => auth.push_str("AuthorizedKeysFile none\n"),
        }
        if let Some(command) = &config.force_command {
            let repos = d.join("repos").display().to_string();
            auth.push_str(&format!(
                "ForceCommand {}\n",
                command.replace("{{REPOS}}", &repos)
            ));
        }
        let (sshd, auth) = (&sshd, &auth);
        let (process, port) = start_retrying("sshd", move || async move {
            let port = free_port().map_err(failed)?;
            let text = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nPidFile none\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nExposeAuthInfo yes\n\
                 AcceptEnv GIT_PROTOCOL\nAllowUsers {GIT_USER}\nDisableForwarding yes\n\
                 PermitTTY no\nLogLevel VERBOSE\n{auth}",
                dir = d.display()
            );
            let config_path = d.join("sshd_config");
            std::fs::write(&config_path, text).map_err(|e| failed(e.into()))?;
            let mut cmd = Command::new(sshd);
            cmd.arg("-D").arg("-e").arg("-f").arg(&config_path);
            let process = ManagedProcess::spawn("sshd", cmd, d).map_err(failed)?;
            let listening = || std::future::ready(port_is_open(port));
            let process = wait_ready(process, "sshd", START_TIMEOUT, None, listening).await?;
            Ok((process, port))
        })
        .await?;
        Ok(Self { process, port, dir })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ssh://jit-git@127.0.0.1:PORT/<repo>.git`
    pub fn repo_url(&self, repo: &str) -> String {
        format!("ssh://{GIT_USER}@127.0.0.1:{}/{repo}.git", self.port)
    }

    /// The folder of the bare repositories.
    pub fn repos(&self) -> PathBuf {
        self.dir.path().join("repos")
    }

    /// Creates `<repos>/<repo>.git` (one commit on `main`, tag `v0.1.0`) owned by [`GIT_USER`].
    pub fn create_repo(&self, repo: &str) -> Result<PathBuf> {
        let path = crate::git_server::create_bare_repo(&self.repos(), repo)?;
        run_checked(
            Command::new("chown")
                .arg("-R")
                .arg(format!("{GIT_USER}:"))
                .arg(self.repos()),
        )?;
        Ok(path)
    }

    /// `git --git-dir=<repo> ARGS` on the server side; trimmed stdout.
    pub fn git_in_repo(&self, repo: &str, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("git");
        cmd.arg("-c")
            .arg("safe.directory=*")
            .arg("--git-dir")
            .arg(self.repos().join(format!("{repo}.git")))
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1");
        Ok(run_checked(&mut cmd)?.trim().to_owned())
    }

    /// An ssh client configuration for this server (its host key pinned, no agent, no
    /// default keys), written into `dir`; returns its path, for `ssh -F`.
    pub fn client_config(&self, dir: &Path) -> Result<PathBuf> {
        let host_key = std::fs::read_to_string(self.dir.path().join("host_key.pub"))?;
        let known = dir.join("known_hosts");
        std::fs::write(&known, format!("[127.0.0.1]:{} {host_key}", self.port))?;
        let path = dir.join("ssh_config");
        std::fs::write(
            &path,
            format!(
                "Host *\n  UserKnownHostsFile {}\n  StrictHostKeyChecking yes\n  \
                 IdentityAgent none\n  BatchMode yes\n  LogLevel ERROR\n",
                known.display()
            ),
        )?;
        Ok(path)
    }

    /// Everything sshd logged so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }
}
