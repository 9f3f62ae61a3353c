//! `jit-ssh-gate`: sshd's `ForceCommand` for the Git user of a Git server whose users log in
//! with git-jit SSH certificates (`TrustedUserCAKeys` = the broker's `/.well-known/ssh-ca.pub`,
//! `ExposeAuthInfo yes`).
//!
//! For each connection it reads the certificate sshd accepted (`SSH_USER_AUTH`) and the Git
//! command (`SSH_ORIGINAL_COMMAND`, normalised by jit-proto like HTTP paths), asks the broker
//! whether the grant is live and covers the command (`POST /ssh/check`: the gatekeeper of the
//! HTTP gateway and `/authz`), and only then runs `git-upload-pack` or `git-receive-pack` on
//! the repository. A push is held between the client and `git-receive-pack` until its command
//! list is read (by the HTTP gateway's own parser) and the broker allowed every ref update —
//! symbolic refs of the repository resolved; otherwise nothing reaches the repository and git
//! shows the refusal per ref. The broker audits every decision.
//!
//! # Layout
//!
//! Lowest first; each module uses only those before it (and `jit-proto`'s SSH shapes):
//! 1. this file's types: [`GateConfig`], [`GateError`], [`SshEnv`] (what sshd hands over);
//! 2. [`auth_info`]: the accepted certificate, read from sshd's `SSH_USER_AUTH` file;
//!    [`repo`]: the repository on disk and its symbolic refs;
//! 3. [`broker`]: `POST /ssh/check`, the broker's decision;
//! 4. [`relay`]: git for an allowed connection, a push held until the broker allowed every ref;
//! 5. [`serve`]: one connection, from the certificate to git's exit status.
//!
//! The binary `jit-ssh-gate` parses sshd's `ForceCommand` flags and calls [`serve`].
#![forbid(unsafe_code)]

pub mod auth_info;
pub mod broker;
pub mod relay;
pub mod repo;

use std::path::PathBuf;

use jit_proto::ssh::{GitCommand, SshCheck, SshService};

/// What the gate was started with (its flags, from sshd's `ForceCommand` line).
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// The broker's URL.
    pub broker: String,
    /// The folder holding the bare repositories (`acme/api` is `<repos>/acme/api.git`).
    pub repos: PathBuf,
    /// An introspection client id and the file holding its secret (else the broker must be
    /// on loopback).
    pub client: Option<(String, PathBuf)>,
}

/// Why a connection was refused or failed; the text is what the client sees after `fatal:`.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The command is not one git-jit serves.
    #[error("git-jit: {0}")]
    Command(#[from] jit_proto::ssh::GitCommandError),
    /// No certificate in the authentication sshd exposed.
    #[error("git-jit: {0}")]
    AuthInfo(#[from] auth_info::AuthInfoError),
    /// The broker could not be asked.
    #[error("git-jit: cannot ask the broker ({0}); access is refused until it answers")]
    Broker(String),
    /// The broker refused.
    #[error("{0}")]
    Denied(String),
    /// No such repository on this server.
    #[error("git-jit: repository '{0}' does not exist on this server")]
    NoRepository(String),
    /// Running git failed.
    #[error("git-jit: {0}")]
    Io(#[from] std::io::Error),
}

/// The environment sshd gives a `ForceCommand`.
#[derive(Debug, Clone, Default)]
pub struct SshEnv {
    /// `SSH_ORIGINAL_COMMAND`.
    pub command: Option<String>,
    /// `SSH_USER_AUTH`: the file listing the accepted authentication methods.
    pub user_auth: Option<PathBuf>,
    /// `SSH_CONNECTION`'s first field: the client's address.
    pub client: Option<String>,
}

impl SshEnv {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        Self {
            command: std::env::var("SSH_ORIGINAL_COMMAND").ok(),
            user_auth: std::env::var_os("SSH_USER_AUTH").map(PathBuf::from),
            client: std::env::var("SSH_CONNECTION")
                .ok()
                .and_then(|c| c.split(' ').next().map(str::to_owned)),
        }
    }
}

/// Serves one connection: decides, then runs git with the process's stdin and stdout.
/// Returns git's exit code.
pub async fn serve(config: &GateConfig, env: &SshEnv) -> Result<i32, GateError> {
    let command = GitCommand::parse(env.command.as_deref().unwrap_or_default())?;
    let certificate = auth_info::certificate(env.user_auth.as_deref())?;
    let broker = broker::Broker::new(config)?;
    let question = SshCheck {
        certificate,
        command: env.command.clone().unwrap_or_default(),
        client: env.client.clone(),
        push: None,
    };
    let decision = broker.ask(&question).await?;
    if !decision.allowed {
        return Err(GateError::Denied(
            decision
                .message
                .unwrap_or_else(|| "git-jit: access refused".to_owned()),
        ));
    }
    let dir = repo::dir(&config.repos, &command.repo)
        .ok_or_else(|| GateError::NoRepository(command.repo.to_string()))?;
    match command.service {
        SshService::UploadPack => Ok(relay::upload_pack(&dir)?),
        SshService::ReceivePack => relay::receive_pack(&dir, &broker, question).await,
    }
}
