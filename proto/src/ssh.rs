//! Git over SSH: the public key an SSH certificate is asked for, the names a git-jit
//! certificate carries, the command sshd hands to `jit-ssh-gate` (`SSH_ORIGINAL_COMMAND`), and
//! the gate's question to the broker (`POST /ssh/check`) with its answer.
//!
//! The command's repository is normalised by [`RepoPath::parse`], the one normaliser of HTTP
//! paths too, so a certificate for `acme/api` can no more be stretched over SSH than a token
//! over HTTP.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::scope::{Action, RepoPath, Scope, ScopeError};

/// Longest public key line accepted, in bytes (an RSA-8192 key is about 1.4 KiB).
pub const MAX_PUBLIC_KEY_LEN: usize = 4096;
/// Longest certificate the gate may present, in bytes.
pub const MAX_CERTIFICATE_LEN: usize = 16 * 1024;
/// Longest `SSH_ORIGINAL_COMMAND` the gate reads, in bytes.
pub const MAX_COMMAND_LEN: usize = 4096;
/// Most ref updates one gated push may send (as the HTTP gateway's command list).
pub const MAX_PUSH_UPDATES: usize = 1000;

/// The principal every git-jit certificate names: the Git server's `AuthorizedPrincipalsFile`
/// for its Git user lists exactly this, and `jit-ssh-gate` decides the rest.
pub const PRINCIPAL: &str = "git-jit";
/// Certificate extension carrying the granted scope (`repo:acme/api:read`).
pub const EXT_SCOPE: &str = "scope@git-jit";
/// Certificate extension carrying the grant's ref patterns, space-separated (when limited).
pub const EXT_REFS: &str = "refs@git-jit";
/// Certificate extension carrying the verified subject.
pub const EXT_SUBJECT: &str = "sub@git-jit";
/// Certificate extension carrying the trusted issuer's name.
pub const EXT_ISSUER: &str = "idp@git-jit";
/// Certificate extension carrying the role that granted.
pub const EXT_ROLE: &str = "role@git-jit";

/// The key algorithms a certificate may be asked for.
const ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
];

/// Why a public key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshKeyError {
    /// Longer than [`MAX_PUBLIC_KEY_LEN`].
    #[error("the key is longer than {MAX_PUBLIC_KEY_LEN} bytes")]
    TooLong,
    /// Not `<algorithm> <base64> [comment]` on one line of printable ASCII.
    #[error("not an OpenSSH public key line ('ssh-ed25519 AAAA…')")]
    Syntax,
    /// An algorithm git-jit does not certify (certificates, DSA).
    #[error("key type {0:?} cannot be certified; use ssh-ed25519, ecdsa-sha2-* or ssh-rsa")]
    Algorithm(String),
}

/// An OpenSSH public key line as it travels, `<algorithm> <base64>` (a comment is dropped).
/// Only its shape is checked here; the broker decodes the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SshPublicKey(String);

impl SshPublicKey {
    /// Parses one public key line.
    pub fn parse(line: &str) -> Result<Self, SshKeyError> {
        if line.len() > MAX_PUBLIC_KEY_LEN {
            return Err(SshKeyError::TooLong);
        }
        if line.bytes().any(|b| !(b == b' ' || b.is_ascii_graphic())) {
            return Err(SshKeyError::Syntax);
        }
        let mut parts = line.split(' ').filter(|p| !p.is_empty());
        let (Some(algorithm), Some(body)) = (parts.next(), parts.next()) else {
            return Err(SshKeyError::Syntax);
        };
        if !ALGORITHMS.contains(&algorithm) {
            return Err(SshKeyError::Algorithm(algorithm.chars().take(64).collect()));
        }
        let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
        if body.len() < 16 || !body.bytes().all(base64) {
            return Err(SshKeyError::Syntax);
        }
        Ok(Self(format!("{algorithm} {body}")))
    }

    /// The key line, `<algorithm> <base64>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SshPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The two Git services reachable over SSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SshService {
    /// `git-upload-pack`: clone, fetch, ls-remote.
    UploadPack,
    /// `git-receive-pack`: push.
    ReceivePack,
}

impl SshService {
    /// The program's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UploadPack => "git-upload-pack",
            Self::ReceivePack => "git-receive-pack",
        }
    }

    /// The action the service needs.
    pub fn action(self) -> Action {
        match self {
            Self::UploadPack => Action::Read,
            Self::ReceivePack => Action::Write,
        }
    }
}

/// Why an `SSH_ORIGINAL_COMMAND` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitCommandError {
    /// No command: an interactive login.
    #[error("this account only serves git; interactive logins are not allowed")]
    Interactive,
    /// Longer than [`MAX_COMMAND_LEN`].
    #[error("the command is longer than {MAX_COMMAND_LEN} bytes")]
    TooLong,
    /// A program other than `git-upload-pack` or `git-receive-pack`.
    #[error("only git-upload-pack and git-receive-pack are served")]
    Program,
    /// The repository is not one single-quoted argument.
    #[error("the repository must be one single-quoted path: git-upload-pack 'acme/api.git'")]
    Quoting,
    /// The repository path is not a normal repository path.
    #[error("repository path {path:?} is invalid: {source}")]
    Repo {
        /// The path, cut to 200 characters.
        path: String,
        /// Why it was refused.
        source: ScopeError,
    },
}

/// The Git command an SSH client asked for, with its repository normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitCommand {
    /// Upload or receive.
    pub service: SshService,
    /// The repository, normalised as HTTP paths are.
    pub repo: RepoPath,
}

impl GitCommand {
    /// Parses `git-upload-pack '<repo>'` or `git-receive-pack '<repo>'` exactly as git sends
    /// it (also the `git upload-pack` spelling). One leading `/` (from `ssh://host/acme/api.git`)
    /// is dropped; the rest must be a repository path as [`RepoPath::parse`] accepts it.
    pub fn parse(command: &str) -> Result<Self, GitCommandError> {
        if command.trim().is_empty() {
            return Err(GitCommandError::Interactive);
        }
        if command.len() > MAX_COMMAND_LEN {
            return Err(GitCommandError::TooLong);
        }
        let (program, argument) = command.split_once(' ').ok_or(GitCommandError::Quoting)?;
        let service = match program {
            "git-upload-pack" => SshService::UploadPack,
            "git-receive-pack" => SshService::ReceivePack,
            "git" => {
                let (sub, rest) = argument.split_once(' ').ok_or(GitCommandError::Quoting)?;
                return match sub {
                    "upload-pack" => Self::parse(&format!("git-upload-pack {rest}")),
                    "receive-pack" => Self::parse(&format!("git-receive-pack {rest}")),
                    _ => Err(GitCommandError::Program),
                };
            }
            _ => return Err(GitCommandError::Program),
        };
        // git quotes the path with sq_quote: a path without `'` or `!` is `'<path>'`, and a
        // repository path can hold neither.
        let inner = argument
            .strip_prefix('\'')
            .and_then(|a| a.strip_suffix('\''))
            .filter(|a| !a.contains('\''))
            .ok_or(GitCommandError::Quoting)?;
        let path = inner.strip_prefix('/').unwrap_or(inner);
        let repo = RepoPath::parse(path).map_err(|source| GitCommandError::Repo {
            path: inner.chars().take(200).collect(),
            source,
        })?;
        Ok(Self { service, repo })
    }

    /// The scope the command needs.
    pub fn needed_scope(&self) -> Scope {
        Scope::new(self.repo.clone(), self.service.action())
    }
}

/// One ref update of a gated push, as the gate read it from the command list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshRefUpdate {
    /// The ref's current object id (zeros: create).
    pub old: String,
    /// The ref's new object id (zeros: delete).
    pub new: String,
    /// The ref name, as sent.
    #[serde(rename = "ref")]
    pub refname: String,
}

/// The push a gate is about to let through: its ref updates and, for each pushed name that is
/// a symbolic ref in the repository, the ref it points at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshPush {
    /// The ref updates, in order (at most [`MAX_PUSH_UPDATES`]).
    pub updates: Vec<SshRefUpdate>,
    /// Pushed names that are symbolic refs → their targets.
    #[serde(default)]
    pub symrefs: BTreeMap<String, String>,
}

/// `POST /ssh/check`: the gate's question. Without `push`: may this certificate run this
/// command? With it: may this push go through?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshCheck {
    /// The certificate sshd accepted, as `ssh-ed25519-cert-v01@openssh.com AAAA…`.
    pub certificate: String,
    /// `SSH_ORIGINAL_COMMAND`.
    pub command: String,
    /// The client's address (`SSH_CONNECTION`'s first field), for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The push, once its command list was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<SshPush>,
}

/// One refused ref update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshRefusedRef {
    /// The ref.
    #[serde(rename = "ref")]
    pub refname: String,
    /// Why, as `git push` shows it.
    pub reason: String,
}

/// The broker's answer to an [`SshCheck`] (always 200 when the question could be asked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshDecision {
    /// Whether the command (or push) may go on.
    pub allowed: bool,
    /// The message the client is shown when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The verified subject, when the certificate verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The grant's `jti`, when the certificate verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// For a refused push: the refused updates (the whole push is refused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<SshRefusedRef>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys() {
        let k = SshPublicKey::parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMq alice@laptop")
            .expect("key");
        assert_eq!(k.as_str(), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMq");
        for (bad, e) in [
            ("", SshKeyError::Syntax),
            ("ssh-ed25519", SshKeyError::Syntax),
            ("ssh-ed25519 AAAA\nssh-rsa AAAA", SshKeyError::Syntax),
            ("ssh-ed25519 AAAA!AAAAAAAAAAAAAAAA", SshKeyError::Syntax),
            (
                "ssh-dss AAAAAAAAAAAAAAAAAAAAAAAA",
                SshKeyError::Algorithm("ssh-dss".into()),
            ),
            (
                "ssh-ed25519-cert-v01@openssh.com AAAAAAAAAAAAAAAAAAAAAAAA",
                SshKeyError::Algorithm("ssh-ed25519-cert-v01@openssh.com".into()),
            ),
        ] {
            assert_eq!(SshPublicKey::parse(bad), Err(e), "{bad:?}");
        }
        let at_bound = format!("ssh-rsa {}", "A".repeat(MAX_PUBLIC_KEY_LEN - 8));
        assert!(SshPublicKey::parse(&at_bound).is_ok());
        let past = format!("ssh-rsa {}", "A".repeat(MAX_PUBLIC_KEY_LEN - 7));
        assert_eq!(SshPublicKey::parse(&past), Err(SshKeyError::TooLong));
    }

    #[test]
    fn commands_normalise_like_http_paths() {
        let ok = |c: &str| GitCommand::parse(c).map(|g| g.needed_scope().to_string());
        assert_eq!(
            ok("git-upload-pack 'acme/api.git'"),
            Ok("repo:acme/api:read".into())
        );
        assert_eq!(
            ok("git-upload-pack '/acme/api.git'"),
            Ok("repo:acme/api:read".into())
        );
        assert_eq!(
            ok("git-receive-pack 'acme/api'"),
            Ok("repo:acme/api:write".into())
        );
        assert_eq!(
            ok("git receive-pack 'acme/api.git'"),
            Ok("repo:acme/api:write".into())
        );
        assert_eq!(ok(""), Err(GitCommandError::Interactive));
        assert_eq!(ok("bash"), Err(GitCommandError::Quoting));
        assert_eq!(ok("sh -c 'id'"), Err(GitCommandError::Program));
        assert_eq!(
            ok("git-upload-archive 'acme/api.git'"),
            Err(GitCommandError::Program)
        );
        assert_eq!(ok("git config 'x'"), Err(GitCommandError::Program));
        for bad in [
            "git-upload-pack acme/api.git",
            "git-upload-pack 'acme/api.git",
            "git-upload-pack 'acme/api.git' 'x'",
            "git-upload-pack 'a'\\''b'",
        ] {
            assert_eq!(ok(bad), Err(GitCommandError::Quoting), "{bad}");
        }
        for bad in [
            "git-upload-pack 'acme/../secret.git'",
            "git-upload-pack '//acme/api.git'",
            "git-upload-pack '~alice/api.git'",
            "git-upload-pack 'acme/api.git/'",
            "git-upload-pack 'acme/api.GIT.git'",
            "git-upload-pack 'acme/%61pi.git'",
            "git-upload-pack 'acme/-api.git'",
            "git-upload-pack ''",
        ] {
            assert!(
                matches!(GitCommand::parse(bad), Err(GitCommandError::Repo { .. })),
                "{bad}: {:?}",
                GitCommand::parse(bad)
            );
        }
        let long = format!("git-upload-pack '{}'", "a".repeat(MAX_COMMAND_LEN));
        assert_eq!(ok(&long), Err(GitCommandError::TooLong));
    }

    #[test]
    fn check_round_trips() {
        let c = SshCheck {
            certificate: "ssh-ed25519-cert-v01@openssh.com AAAA".into(),
            command: "git-receive-pack 'acme/api.git'".into(),
            client: Some("127.0.0.1".into()),
            push: Some(SshPush {
                updates: vec![SshRefUpdate {
                    old: "0".repeat(40),
                    new: "1".repeat(40),
                    refname: "refs/heads/main".into(),
                }],
                symrefs: BTreeMap::new(),
            }),
        };
        let json = serde_json::to_string(&c).expect("json");
        assert!(json.contains(r#""ref":"refs/heads/main""#), "{json}");
        assert_eq!(serde_json::from_str::<SshCheck>(&json).expect("parse"), c);
    }
}
