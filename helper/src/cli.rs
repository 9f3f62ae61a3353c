//! `git jit`: the person-facing commands — setup, login, logout, status, request (waiting
//! for approval when the role needs it), the approval commands, man pages and shell
//! completions.
//! Results go to stdout; instructions, progress and prompts to stderr or the terminal.

use std::io::{IsTerminal, Write};
use std::process::Command as Process;

use clap::{Args, CommandFactory, Parser, Subcommand};
use jit_proto::RefPattern;
use jit_proto::approval::RequestId;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod admin;
mod request;
mod requests;
mod wait;

pub use admin::{AdminArgs, AdminCommand, Terminal, TimeArg};
pub use request::{RefList, RequestArgs};
pub use requests::{CancelArgs, DecideArgs, RequestsArgs};
pub use wait::WaitIo;

use crate::admin::AdminError;
use crate::approvals::{ApprovalError, Verdict};
use crate::broker::{BrokerClient, BrokerError};
use crate::claims;
use crate::config::{self, ConfigError};
use crate::credential::{Context, HelperError};
use crate::identity::{self, Source};
use crate::login::{self, LoginError, Pacing};
use crate::manual;
use crate::oidc::IdpHttp;
use crate::session::{SessionError, SessionStore};

/// Just-in-time access to Git repositories: short-lived, scoped tokens for `git`.
#[derive(Debug, Parser)]
#[command(name = "git-jit", version, propagate_version = true)]
pub struct Cli {
    /// The broker's URL. Default: $GIT_JIT_BROKER, then `broker` in config.toml (written by
    /// `git jit setup`).
    #[arg(long, global = true, value_name = "URL")]
    pub broker: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `git jit` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Configure git to use git-jit for a server: sets `credential.<URL>.helper=jit` and
    /// `credential.<URL>.useHttpPath=true`, and remembers URL as the broker (or, when another
    /// broker is configured, as a Git server its tokens may go to).
    Setup(SetupArgs),
    /// Log in with your SSO account (OIDC device flow): prints a URL and a code to open on
    /// any device. The session is kept in the config directory, 0600.
    Login,
    /// Forget the login session and every cached token.
    Logout,
    /// Show who you are logged in as, and which grants are cached until when.
    Status,
    /// Ask for access explicitly (e.g. write, narrowed to refs, with a reason) and cache the
    /// token, so the next `git push` uses it. When the role needs a person's approval, the
    /// request is filed and waited for (Ctrl-C withdraws it).
    Request(RequestArgs),
    /// List approval requests: your own and those you may approve (pending ones unless
    /// --state says otherwise).
    Requests(RequestsArgs),
    /// Approve a pending request (you must be one of its role's approvers).
    Approve(DecideArgs),
    /// Deny a pending request (you must be one of its role's approvers).
    Deny(DecideArgs),
    /// Withdraw a pending request of yours.
    Cancel(CancelArgs),
    /// For the security team: list live grants, revoke them, read the audit trail.
    Admin(AdminArgs),
    /// Install the man pages (`git-jit`, `git-jit-<command>`, `git-credential-jit`), so that
    /// `git jit --help` opens them, and the shell completions (bash, zsh, fish). `git jit
    /// setup` does this too.
    InstallMan {
        /// Where to write them. Default: $XDG_DATA_HOME/man/man1, else
        /// ~/.local/share/man/man1.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
    /// git's ssh command for hosts set up with `git jit setup --ssh`: runs ssh with a git-jit
    /// certificate for exactly the repository and action git asks for (other hosts: plain
    /// ssh).
    #[command(hide = true)]
    Ssh {
        /// ssh's arguments, as git passes them (options, host, command).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        args: Vec<String>,
    },
    /// Print shell completions for git-jit.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `git jit setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The Git server's URL (the git-jit gateway), e.g. `https://git.example.com`. Default:
    /// the configured broker.
    pub url: Option<String>,
    /// Write the user's global git config (the default).
    #[arg(long, conflicts_with = "local")]
    pub global: bool,
    /// Write the current repository's git config instead.
    #[arg(long)]
    pub local: bool,
    /// Set up Git over SSH for this server instead (`git@git.example.com`): git's
    /// `core.sshCommand` becomes `git jit ssh`, which fetches a certificate from the
    /// configured broker for each repository and action on this host.
    #[arg(long, value_name = "USER@HOST", conflicts_with = "url")]
    pub ssh: Option<String>,
}

/// Why a `git jit` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The helper machinery.
    #[error(transparent)]
    Helper(#[from] HelperError),
    /// Login.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// `git config` failed.
    #[error("`git config` failed: {0}")]
    Git(String),
    /// The admin API.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The command cannot go ahead as given.
    #[error("{0}")]
    Usage(String),
    /// Terminal I/O.
    #[error("terminal: {0}")]
    Io(#[from] std::io::Error),
    /// The approval API refused or failed.
    #[error(transparent)]
    Approvals(#[from] ApprovalError),
    /// An approval request ended without a token (denied, expired, …), or waiting failed.
    #[error("{0}")]
    Approval(String),
    /// Ctrl-C ended the wait; the request was withdrawn, unless `failure` says why not.
    #[error("request {id} {}", match failure {
        None => "cancelled".to_owned(),
        Some(f) => format!("is still pending: cancelling it failed: {f} (run `git jit cancel {id}`)"),
    })]
    Cancelled {
        /// The request.
        id: RequestId,
        /// Why it could not be withdrawn.
        failure: Option<String>,
    },
}

impl CliError {
    /// The process's exit status: 130 after Ctrl-C (as a shell reports SIGINT), else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Cancelled { .. } => 130,
            _ => 1,
        }
    }
}

impl From<SessionError> for CliError {
    fn from(e: SessionError) -> Self {
        CliError::Login(e.into())
    }
}

impl From<BrokerError> for CliError {
    fn from(e: BrokerError) -> Self {
        CliError::Helper(e.into())
    }
}

/// Runs a parsed command.
pub async fn run(cli: Cli, ctx: &Context<'_>) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Setup(a) if a.ssh.is_some() => setup_ssh(ctx, &a, &mut stdout),
        Command::Setup(a) => setup(ctx, &a, &mut stdout),
        Command::Login => login(ctx, &mut stdout).await,
        Command::Logout => logout(ctx, &mut stdout),
        Command::Status => status(ctx, &mut stdout),
        Command::Request(a) => {
            let mut err = std::io::stderr();
            let mut io = WaitIo {
                tty: err.is_terminal(),
                err: &mut err,
                pacing: Pacing {
                    clock: ctx.clock,
                    ..Pacing::default()
                },
            };
            request::request(ctx, a, &mut stdout, &mut io, request::ctrl_c()).await
        }
        Command::Requests(a) => requests::list(ctx, a, &mut stdout).await,
        Command::Approve(a) => {
            let mut t = admin::ProcessTerminal;
            requests::decide(ctx, Verdict::Approve, a, &mut stdout, &mut t).await
        }
        Command::Deny(a) => {
            let mut t = admin::ProcessTerminal;
            requests::decide(ctx, Verdict::Deny, a, &mut stdout, &mut t).await
        }
        Command::Cancel(a) => requests::cancel(ctx, a, &mut stdout).await,
        Command::Admin(a) => admin::run(ctx, a, &mut stdout, &mut admin::ProcessTerminal).await,
        Command::InstallMan { dir } => {
            let dir = match dir {
                Some(d) => d,
                None => manual::user_man_dir(ctx.env).ok_or_else(no_man_dir)?,
            };
            manual::install_and_report(&dir, &Cli::command(), &mut stdout)?;
            if let Some(files) = manual::user_completion_files(ctx.env) {
                manual::install_completions(&files, &Cli::command(), &mut stdout)?;
            }
            Ok(())
        }
        Command::Ssh { args } => {
            drop(stdout);
            match crate::ssh::run(ctx, &args).await {
                Ok(code) => std::process::exit(code),
                Err(e) => Err(CliError::Usage(e.to_string())),
            }
        }
        Command::Completions { shell } => {
            // Generated into memory first: clap_complete panics on a closed pipe.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "git-jit", &mut script);
            stdout.write_all(&script)?;
            Ok(())
        }
    }
}

fn no_man_dir() -> CliError {
    CliError::Usage(
        "cannot find a directory for man pages: set HOME or XDG_DATA_HOME, or pass --dir".into(),
    )
}

fn git_config(scope: &str, args: &[&str]) -> Result<(), CliError> {
    let out = Process::new("git")
        .arg("config")
        .arg(scope)
        .args(args)
        .output()
        .map_err(|e| CliError::Git(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(CliError::Git(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

/// `git jit setup --ssh USER@HOST`.
fn setup_ssh(ctx: &Context<'_>, a: &SetupArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let target = a.ssh.as_deref().unwrap_or_default();
    let host = target.rsplit_once('@').map_or(target, |(_, h)| h);
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CliError::Usage(format!(
            "--ssh {target:?}: expected user@host"
        )));
    }
    let broker = ctx
        .settings
        .broker
        .as_deref()
        .ok_or(HelperError::NoBroker)?;
    let scope = if a.local { "--local" } else { "--global" };
    git_config(scope, &["--replace-all", "core.sshCommand", "git jit ssh"])?;
    // OpenSSH underneath: git passes ports and GIT_PROTOCOL as to ssh itself.
    git_config(scope, &["--replace-all", "ssh.variant", "ssh"])?;
    let pattern = format!("^{}$", host.replace('.', "\\."));
    git_config(
        scope,
        &["--replace-all", crate::ssh::HOSTS_KEY, host, &pattern],
    )?;
    writeln!(
        out,
        "git now fetches a git-jit SSH certificate from {broker} for each clone, fetch and push on {host} ({} config)",
        &scope[2..]
    )?;
    Ok(())
}

fn setup(ctx: &Context<'_>, a: &SetupArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let url = match (&a.url, &ctx.settings.broker) {
        (Some(u), _) | (None, Some(u)) => u.trim_end_matches('/').to_owned(),
        (None, None) => return Err(HelperError::NoBroker.into()),
    };
    // Validates the URL the same way the helper will.
    let broker = ctx.broker(&url)?;
    let scope = if a.local { "--local" } else { "--global" };
    let key = |k: &str| format!("credential.{url}.{k}");
    // An empty helper resets the list, so a general helper (store, osxkeychain) configured
    // earlier never answers for this server with a stale token.
    git_config(scope, &["--replace-all", &key("helper"), ""])?;
    git_config(scope, &["--add", &key("helper"), "jit"])?;
    git_config(scope, &["--replace-all", &key("useHttpPath"), "true"])?;
    let dirs = &ctx.settings.dirs;
    let base = broker.base();
    let configured = ctx
        .settings
        .broker
        .as_deref()
        .map(BrokerClient::base_of)
        .transpose()?;
    // The broker and the servers its tokens may go to are pinned in config.toml: the helper
    // answers git for these URLs only.
    let (pinned, server) = match configured {
        Some(b) if b != base => {
            let pinned = config::remember_broker(dirs, &b)?.then_some(b);
            (pinned, config::remember_server(dirs, &base)?)
        }
        _ => {
            let pinned =
                (a.url.is_some() && config::remember_broker(dirs, &base)?).then(|| base.clone());
            (pinned, false)
        }
    };
    writeln!(
        out,
        "git now asks git-jit for credentials for {url} ({} config)",
        &scope[2..]
    )?;
    let file = dirs.config_file();
    if let Some(b) = pinned {
        writeln!(out, "broker: {b} (saved in {})", file.display())?;
    }
    if server {
        writeln!(
            out,
            "server: {base} takes the broker's tokens (saved in {})",
            file.display()
        )?;
    }
    // Man pages make `git jit --help` work; git is configured either way.
    match manual::user_man_dir(ctx.env) {
        Some(dir) => {
            if let Err(e) = manual::install_and_report(&dir, &Cli::command(), out) {
                writeln!(out, "man pages: not written to {}: {e}", dir.display())?;
            }
        }
        None => writeln!(out, "man pages: not written: {}", no_man_dir())?,
    }
    if let Some(files) = manual::user_completion_files(ctx.env)
        && let Err(e) = manual::install_completions(&files, &Cli::command(), out)
    {
        writeln!(out, "completions: not written: {e}")?;
    }
    Ok(())
}

async fn login(ctx: &Context<'_>, out: &mut dyn Write) -> Result<(), CliError> {
    let broker = ctx.broker(&ctx.broker_url(None)?)?;
    let md = broker.metadata().await?;
    let (Some(issuer), Some(client_id)) =
        (md.login_issuer.as_deref(), md.login_client_id.as_deref())
    else {
        return Err(LoginError::NoLoginIssuer(broker.base()).into());
    };
    let pacing = Pacing {
        clock: ctx.clock,
        ..Pacing::default()
    };
    let scope = md.login_scope.as_deref().unwrap_or(login::LOGIN_SCOPE);
    let session = login::device_login(
        &IdpHttp::new().map_err(LoginError::from)?,
        issuer,
        client_id,
        scope,
        &mut std::io::stderr(),
        pacing,
    )
    .await?;
    // The ID token will go to this broker and no other.
    let session = crate::session::Session {
        broker: Some(broker.base()),
        ..session
    };
    SessionStore::new(&ctx.settings.dirs.config).save(&session)?;
    // Tokens cached for a previous identity must not outlive it.
    let _ = ctx.cache().clear();
    let who = claims::unverified(session.id_token.expose()).unwrap_or_default();
    writeln!(out, "Logged in as {} ({issuer})", who.who())?;
    Ok(())
}

fn logout(ctx: &Context<'_>, out: &mut dyn Write) -> Result<(), CliError> {
    let had = SessionStore::new(&ctx.settings.dirs.config).remove()?;
    ctx.cache().clear().map_err(HelperError::from)?;
    crate::ssh::forget(&ctx.settings.dirs.cache)?;
    writeln!(
        out,
        "{}",
        if had {
            "Logged out; cached tokens removed."
        } else {
            "Not logged in; cached tokens removed."
        }
    )?;
    Ok(())
}

fn when(at: i64, now: i64) -> String {
    let stamp = OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| at.to_string());
    let left = at - now;
    if left <= 0 {
        format!("{stamp} (expired)")
    } else if left < 3600 {
        format!("{stamp} (in {}m{:02}s)", left / 60, left % 60)
    } else {
        format!("{stamp} (in {}h{:02}m)", left / 3600, (left % 3600) / 60)
    }
}

fn join(refs: &[RefPattern]) -> String {
    refs.iter()
        .map(RefPattern::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

fn status(ctx: &Context<'_>, out: &mut dyn Write) -> Result<(), CliError> {
    let now = (ctx.clock)();
    writeln!(
        out,
        "broker:   {}",
        ctx.settings
            .broker
            .as_deref()
            .unwrap_or("(from each Git URL)")
    )?;
    let ci = identity::ci_source(ctx.env, &ctx.settings);
    if let Some(source) = &ci {
        writeln!(
            out,
            "identity: {source} (CI; used before any login session)"
        )?;
        // Unverified, for display only; the token itself is never shown.
        let token = match source {
            Source::EnvVar(v) => (ctx.env)(v),
            Source::File(p) => std::fs::read_to_string(p).ok(),
            Source::GitHubActions | Source::Session => None,
        };
        if let Some(c) = token.and_then(|t| claims::unverified(t.trim()).ok()) {
            let iss = c.iss.clone().unwrap_or_else(|| "?".into());
            let exp = c.exp.map_or_else(|| "?".into(), |e| when(e, now));
            let (who, iss) = (
                jit_proto::display::clean(c.who()),
                jit_proto::display::clean(&iss),
            );
            writeln!(out, "ci token: {who} from {iss}, expires {exp}")?;
        }
    }
    match SessionStore::new(&ctx.settings.dirs.config).load()? {
        None if ci.is_some() => {
            writeln!(out, "login:    none (not needed: the CI identity is used)")?
        }
        None => writeln!(out, "login:    not logged in (run `git jit login`)")?,
        Some(s) => {
            // Unverified, for display only.
            let c = claims::unverified(s.id_token.expose()).unwrap_or_default();
            writeln!(out, "login:    {} at {}", c.who(), s.issuer)?;
            writeln!(
                out,
                "id token: expires {}",
                when(s.id_token_expires_at, now)
            )?;
            let refresh = if s.refresh_token.is_some() {
                "yes (renewed silently)"
            } else {
                "no"
            };
            writeln!(out, "refresh:  {refresh}")?;
        }
    }
    let tokens: Vec<_> = ctx
        .cache()
        .entries()
        .map_err(HelperError::from)?
        .into_iter()
        .filter(|t| t.expires_at > now)
        .collect();
    if tokens.is_empty() {
        writeln!(out, "grants:   none cached")?;
    }
    for t in tokens {
        let refs = if t.refs.is_empty() {
            String::new()
        } else {
            format!(" refs=[{}]", join(&t.refs))
        };
        let jti = t
            .jti
            .as_deref()
            .map(|j| format!(" jti={j}"))
            .unwrap_or_default();
        writeln!(
            out,
            "grant:    {}{refs} from {} expires {}{jti}",
            t.scope,
            t.broker,
            when(t.expires_at, now)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Regression: in CI, status said "not logged in (run `git jit login`)" while a CI
    /// identity was in use.
    #[test]
    fn status_shows_the_ci_identity_in_use() {
        let tmp = tempfile::tempdir().expect("tmp");
        let jwt = claims::fake_jwt(&serde_json::json!({
            "iss": "https://gitlab.example.com", "sub": "project_path:acme/api:ref_type:branch:ref:main",
            "exp": 1_700_000_600
        }));
        let env = move |k: &str| (k == "GIT_JIT_ID_TOKEN").then(|| jwt.clone());
        let settings = crate::config::Settings {
            dirs: crate::config::Dirs {
                config: tmp.path().join("c"),
                cache: tmp.path().join("k"),
            },
            broker: Some("https://jit.example.com".into()),
            servers: vec![],
            audience: None,
            id_token_env: "GIT_JIT_ID_TOKEN".into(),
            id_token_file: None,
        };
        let ctx = Context {
            env: &env,
            settings,
            http: std::sync::OnceLock::new(),
            clock: || 1_700_000_000,
        };
        let mut out = Vec::new();
        status(&ctx, &mut out).expect("status");
        let out = String::from_utf8(out).expect("utf-8");
        assert!(
            out.contains("identity: environment variable GIT_JIT_ID_TOKEN (CI"),
            "{out}"
        );
        assert!(
            out.contains("ci token: project_path:acme/api:ref_type:branch:ref:main from https://gitlab.example.com, expires 2023-11-14T22:23:20Z (in 10m00s)"),
            "{out}"
        );
        assert!(out.contains("login:    none (not needed"), "{out}");
        assert!(!out.contains("run `git jit login`"), "{out}");
        assert!(!out.contains(".sig"), "the token is never shown: {out}");
    }

    #[test]
    fn when_is_readable() {
        assert_eq!(when(90, 0), "1970-01-01T00:01:30Z (in 1m30s)");
        assert_eq!(when(7260, 0), "1970-01-01T02:01:00Z (in 2h01m)");
        assert!(when(5, 10).ends_with("(expired)"));
    }
}
