//! `git jit admin grants|revoke|audit`: the security team's view of live grants, revocation
//! and the audit trail, as readable tables or (`--json`, `--csv`) for scripts. The
//! credential is the `git jit login` session's ID token, or `--token-env VAR`; a token is
//! never taken as an argument, where shell history and `ps` would keep it.

use std::io::{BufRead, IsTerminal, Write};

use clap::{ArgGroup, Args, Subcommand};
use jit_proto::RepoPath;
use jit_proto::admin::{
    AuditFormat, AuditParams, GrantInfo, GrantsQuery, RevokeBy, RevokeRequest, RevokeResponse,
};
use jit_proto::audit::AuditEvent;
use jit_proto::display::json_inert;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::CliError;
use crate::admin::{self, AdminClient};
use crate::credential::Context;
use crate::table::Table;

/// `git jit admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Read the admin credential (an admin broker token or an OIDC ID token) from this
    /// environment variable instead of the `git jit login` session.
    #[arg(long, global = true, value_name = "VAR")]
    pub token_env: Option<String>,
    /// The admin command.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// `git jit admin` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List live grants (all pages, or up to --limit).
    Grants(GrantsArgs),
    /// End live grants at once on every broker replica: one token, one identity, one
    /// repository, one role, one identity provider, or all.
    Revoke(RevokeArgs),
    /// Read the audit trail, oldest first.
    Audit(AuditArgs),
}

/// `git jit admin grants`.
#[derive(Debug, Args)]
pub struct GrantsArgs {
    /// Only this identity (the verified subject).
    #[arg(long)]
    pub subject: Option<String>,
    /// Only this repository, e.g. acme/api.
    #[arg(long, value_parser = RepoPath::parse)]
    pub repo: Option<RepoPath>,
    /// Only this role.
    #[arg(long)]
    pub role: Option<String>,
    /// Only this identity provider (the broker's issuer name).
    #[arg(long)]
    pub issuer: Option<String>,
    /// Show at most this many.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Print a JSON array of grants, as the broker returns them (with full token ids).
    #[arg(long)]
    pub json: bool,
}

/// `git jit admin revoke`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target")
        .required(true)
        .multiple(false)
        .args(["jti", "subject", "repo", "role", "issuer", "all"])
))]
pub struct RevokeArgs {
    /// One token, by its id.
    #[arg(long)]
    pub jti: Option<String>,
    /// Every grant of one identity.
    #[arg(long)]
    pub subject: Option<String>,
    /// Every grant on one repository.
    #[arg(long, value_parser = RepoPath::parse)]
    pub repo: Option<RepoPath>,
    /// Every grant under one role.
    #[arg(long)]
    pub role: Option<String>,
    /// Every grant vouched for by one identity provider (the broker's issuer name).
    #[arg(long)]
    pub issuer: Option<String>,
    /// Every live grant.
    #[arg(long)]
    pub all: bool,
    /// Why (required; recorded in the audit trail). Asked for on a terminal when missing.
    #[arg(long)]
    pub reason: Option<String>,
    /// Do not ask for confirmation of --all.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print the broker's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `git jit admin audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// From this long ago (90s, 30m, 1h, 2d, 1h30m) or this time (RFC 3339).
    #[arg(long, value_parser = TimeArg::parse)]
    pub since: Option<TimeArg>,
    /// Until this long ago or this time.
    #[arg(long, value_parser = TimeArg::parse)]
    pub until: Option<TimeArg>,
    /// Only this identity.
    #[arg(long)]
    pub subject: Option<String>,
    /// Only this repository.
    #[arg(long, value_parser = RepoPath::parse)]
    pub repo: Option<RepoPath>,
    /// Only this event type: grant.issued, grant.denied, access.allowed, access.denied,
    /// grant.revoked, admin.grants, admin.audit, …
    #[arg(long)]
    pub event: Option<String>,
    /// Show at most this many events.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Print CSV, as the broker exports it.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// Print the events as JSON lines, exactly as the broker returns them.
    #[arg(long)]
    pub json: bool,
}

/// A point in time on the command line: a duration ago or an absolute time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    /// This many seconds before now.
    Ago(i64),
    /// This time, milliseconds since the epoch.
    At(i64),
}

impl TimeArg {
    /// Parses `90s`, `30m`, `1h`, `2d`, `1w`, combinations like `1h30m`, or RFC 3339.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(secs) = parse_duration(s) {
            return Ok(TimeArg::Ago(secs));
        }
        OffsetDateTime::parse(s, &Rfc3339)
            .ok()
            .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
            .map(TimeArg::At)
            .ok_or_else(|| {
                format!(
                    "{s:?} is neither a duration (90s, 30m, 1h, 2d, 1h30m) nor an RFC 3339 time (2025-06-01T12:00:00Z)"
                )
            })
    }

    /// Milliseconds since the epoch, given the time now in seconds.
    pub fn ms(self, now: i64) -> i64 {
        match self {
            TimeArg::Ago(secs) => now.saturating_sub(secs).saturating_mul(1000),
            TimeArg::At(ms) => ms,
        }
    }
}

/// Seconds in a duration such as `1h30m`; `None` unless every part is digits and a unit.
fn parse_duration(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: i64 = rest[..digits].parse().ok()?;
        let unit = rest[digits..].chars().next()?;
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(secs)?)?;
        rest = &rest[digits + 1..];
    }
    Some(total)
}

/// Where questions go and answers come from.
pub trait Terminal {
    /// Whether a person can answer (stdin is a terminal).
    fn interactive(&self) -> bool;
    /// Shows `prompt` and reads one line, trimmed.
    fn ask(&mut self, prompt: &str) -> std::io::Result<String>;
}

/// The process's terminal: questions on stderr, answers from stdin.
pub struct ProcessTerminal;

impl Terminal for ProcessTerminal {
    fn interactive(&self) -> bool {
        std::io::stdin().is_terminal()
    }
    fn ask(&mut self, prompt: &str) -> std::io::Result<String> {
        let mut err = std::io::stderr();
        write!(err, "{prompt}")?;
        err.flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim().to_owned())
    }
}

/// Runs `git jit admin …`.
pub async fn run(
    ctx: &Context<'_>,
    args: AdminArgs,
    out: &mut dyn Write,
    term: &mut dyn Terminal,
) -> Result<(), CliError> {
    let token_env = args.token_env.as_deref();
    match args.command {
        AdminCommand::Grants(a) => grants(ctx, token_env, a, out).await,
        AdminCommand::Revoke(a) => revoke(ctx, token_env, a, out, term).await,
        AdminCommand::Audit(a) => audit(ctx, token_env, a, out).await,
    }
}

async fn connect(ctx: &Context<'_>, token_env: Option<&str>) -> Result<AdminClient, CliError> {
    let broker = ctx.broker(&ctx.broker_url(None)?)?;
    let (token, source) =
        admin::credential(ctx.env, &ctx.settings.dirs.config, &broker, token_env).await?;
    Ok(AdminClient::new(broker, token, source))
}

async fn grants(
    ctx: &Context<'_>,
    token_env: Option<&str>,
    a: GrantsArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let client = connect(ctx, token_env).await?;
    let filter = GrantsQuery {
        subject: a.subject,
        repo: a.repo.map(|r| r.to_string()),
        role: a.role,
        issuer: a.issuer,
        ..GrantsQuery::default()
    };
    let (grants, more) = client.grants(&filter, a.limit.map(|l| l as usize)).await?;
    if a.json {
        let text = serde_json::to_string_pretty(&grants)
            .map_err(|e| CliError::Io(std::io::Error::other(e)))?;
        writeln!(out, "{}", json_inert(&text))?;
        return Ok(());
    }
    if grants.is_empty() {
        writeln!(out, "no live grants match")?;
        return Ok(());
    }
    out.write_all(grants_table(&grants, (ctx.clock)()).render().as_bytes())?;
    if more {
        writeln!(
            out,
            "{} shown; more match (raise --limit to see more)",
            count(grants.len() as u64, "live grant")
        )?;
    } else {
        writeln!(out, "{}", count(grants.len() as u64, "live grant"))?;
    }
    Ok(())
}

/// `n thing`, pluralised.
fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

async fn revoke(
    ctx: &Context<'_>,
    token_env: Option<&str>,
    a: RevokeArgs,
    out: &mut dyn Write,
    term: &mut dyn Terminal,
) -> Result<(), CliError> {
    let (by, value) = if let Some(v) = a.jti {
        (RevokeBy::Jti, Some(v))
    } else if let Some(v) = a.subject {
        (RevokeBy::Subject, Some(v))
    } else if let Some(v) = a.repo {
        (RevokeBy::Repo, Some(v.to_string()))
    } else if let Some(v) = a.role {
        (RevokeBy::Role, Some(v))
    } else if let Some(v) = a.issuer {
        (RevokeBy::Issuer, Some(v))
    } else {
        // clap's required group guarantees --all here.
        (RevokeBy::All, None)
    };
    let given = a
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    let reason = match given {
        Some(r) => r,
        None if term.interactive() => {
            let r = term.ask("Reason for revoking (recorded in the audit trail): ")?;
            if r.is_empty() {
                return Err(CliError::Usage(
                    "a reason is required; nothing revoked".into(),
                ));
            }
            r
        }
        None => {
            return Err(CliError::Usage(
                "a reason is required: give --reason \"…\" (recorded in the audit trail)".into(),
            ));
        }
    };
    if by == RevokeBy::All && !a.yes {
        if !term.interactive() {
            return Err(CliError::Usage(
                "--all ends every live grant: add --yes to confirm when not on a terminal".into(),
            ));
        }
        let broker = ctx.broker_url(None)?;
        let answer = term.ask(&format!(
            "Revoke EVERY live grant at {broker}? Type \"yes\" to confirm: "
        ))?;
        if answer != "yes" {
            return Err(CliError::Usage("not confirmed; nothing revoked".into()));
        }
    }
    let client = connect(ctx, token_env).await?;
    let resp: RevokeResponse = client.revoke(&RevokeRequest { by, value, reason }).await?;
    if a.json {
        let text =
            serde_json::to_string(&resp).map_err(|e| CliError::Io(std::io::Error::other(e)))?;
        writeln!(out, "{}", json_inert(&text))?;
    } else {
        let target = crate::table::clean(&resp.target);
        if by == RevokeBy::Jti {
            writeln!(
                out,
                "revoked {} ({target})",
                count(resp.at_most, "live grant")
            )?;
        } else {
            writeln!(
                out,
                "revoked {target}: in force now, at most {} ended{}",
                count(resp.at_most, "live grant"),
                if resp.tidy_pending {
                    "; their records are tidied in the background"
                } else {
                    ""
                }
            )?;
        }
    }
    Ok(())
}

async fn audit(
    ctx: &Context<'_>,
    token_env: Option<&str>,
    a: AuditArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let now = (ctx.clock)();
    let filter = AuditParams {
        from: a.since.map(|t| t.ms(now).to_string()),
        to: a.until.map(|t| t.ms(now).to_string()),
        subject: a.subject,
        repo: a.repo.map(|r| r.to_string()),
        event: a.event,
        ..AuditParams::default()
    };
    let limit = a.limit.map(|l| l as usize);
    let client = connect(ctx, token_env).await?;
    if a.csv || a.json {
        let format = if a.csv {
            AuditFormat::Csv
        } else {
            AuditFormat::JsonLines
        };
        // CSV cells are made inert by the export; JSON keeps its values, escaped inert.
        let body = client.audit(&filter, format, limit).await?;
        let body = if a.csv { body } else { json_inert(&body) };
        out.write_all(body.as_bytes())?;
        return Ok(());
    }
    let events = client.audit_events(&filter, limit).await?;
    if events.is_empty() {
        writeln!(out, "no audit events match")?;
        return Ok(());
    }
    out.write_all(audit_table(&events).render().as_bytes())?;
    Ok(())
}

/// The first 8 characters of a token id: enough to tell grants apart on screen.
fn short(jti: &str) -> String {
    jti.chars().take(8).collect()
}

fn utc(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// `in 45s`, `in 12m`, `in 2h05m`, `in 3d4h`, or `expired`.
fn relative(left: i64) -> String {
    match left {
        ..=0 => "expired".into(),
        1..60 => format!("in {left}s"),
        60..3600 => format!("in {}m", left / 60),
        3600..86_400 => format!("in {}h{:02}m", left / 3600, left % 3600 / 60),
        _ => format!("in {}d{}h", left / 86_400, left % 86_400 / 3600),
    }
}

fn or_dash(s: Option<&str>) -> &str {
    s.filter(|s| !s.is_empty()).unwrap_or("-")
}

/// The grants table: JTI, SUBJECT, ISSUER, ROLE, SCOPE, REFS, EXPIRES, REASON.
pub fn grants_table(grants: &[GrantInfo], now: i64) -> Table {
    let mut t = Table::new(&[
        ("JTI", 8),
        ("SUBJECT", 32),
        ("ISSUER", 16),
        ("ROLE", 16),
        ("SCOPE", 40),
        ("REFS", 30),
        ("EXPIRES", 34),
        ("APPROVAL", 32),
        ("REASON", 40),
    ]);
    for g in grants {
        // A break-glass grant is flagged for review; an approved one names its request.
        let approval = match (&g.request_id, g.break_glass) {
            (Some(id), true) => format!("BREAK-GLASS, review ({id})"),
            (None, true) => "BREAK-GLASS, review".to_owned(),
            (Some(id), false) => id.clone(),
            (None, false) => "-".to_owned(),
        };
        let refs = g
            .refs
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let expires = format!(
            "{} ({}Z)",
            relative(g.exp - now),
            utc(g.exp.saturating_mul(1000))
        );
        t.row([
            short(&g.jti),
            g.sub.clone(),
            g.idp.clone(),
            g.role.clone(),
            g.scope.to_string(),
            or_dash(Some(&refs)).to_owned(),
            expires,
            approval,
            or_dash(g.reason.as_deref()).to_owned(),
        ]);
    }
    t
}

/// The audit table: TIME (UTC), SEQ, EVENT, SUBJECT, REPO/SCOPE, JTI, DETAIL (the denial,
/// else the reason).
pub fn audit_table(events: &[AuditEvent]) -> Table {
    let mut t = Table::new(&[
        ("TIME (UTC)", 19),
        ("SEQ", 12),
        ("EVENT", 20),
        ("SUBJECT", 32),
        ("REPO/SCOPE", 40),
        ("JTI", 8),
        ("DETAIL", 60),
    ]);
    for e in events {
        t.row([
            utc(e.ts),
            e.seq.to_string(),
            e.event.to_string(),
            or_dash(e.subject.as_deref()).to_owned(),
            or_dash(e.scope.as_deref().or(e.repo.as_deref())).to_owned(),
            or_dash(e.jti.as_deref().map(short).as_deref()).to_owned(),
            or_dash(e.denial.as_deref().or(e.reason.as_deref())).to_owned(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::config::{Dirs, Settings};
    use crate::testserver::{Reply, TestServer, client};
    use clap::Parser;
    use serde_json::json;

    /// Answers from a script; counts questions.
    struct Scripted {
        tty: bool,
        answers: Vec<&'static str>,
        asked: Vec<String>,
    }

    impl Terminal for Scripted {
        fn interactive(&self) -> bool {
            self.tty
        }
        fn ask(&mut self, prompt: &str) -> std::io::Result<String> {
            self.asked.push(prompt.to_owned());
            Ok(if self.answers.is_empty() {
                String::new()
            } else {
                self.answers.remove(0).to_owned()
            })
        }
    }

    fn term(tty: bool, answers: &[&'static str]) -> Scripted {
        Scripted {
            tty,
            answers: answers.to_vec(),
            asked: Vec::new(),
        }
    }

    fn admin_args(argv: &[&str]) -> AdminArgs {
        let argv = ["git-jit", "admin", "--token-env", "JIT_ADMIN"]
            .iter()
            .chain(argv)
            .copied();
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Admin(a) => a,
            other => panic!("not admin: {other:?}"),
        }
    }

    fn env(name: &str) -> Option<String> {
        (name == "JIT_ADMIN").then(|| "adm1n".to_owned())
    }

    /// Runs `git jit admin --token-env JIT_ADMIN <argv>` against `srv` at time 1_700_000_000.
    async fn run_with(
        srv: &TestServer,
        argv: &[&str],
        t: &mut Scripted,
    ) -> (Result<(), CliError>, String) {
        let tmp = tempfile::tempdir().expect("tmp");
        let ctx = Context {
            env: &env,
            settings: Settings {
                dirs: Dirs {
                    config: tmp.path().join("c"),
                    cache: tmp.path().join("k"),
                },
                broker: Some(srv.url.clone()),
                servers: vec![],
                audience: None,
                id_token_env: "CI_JIT_TOKEN".into(),
                id_token_file: None,
            },
            http: std::sync::OnceLock::from(client()),
            clock: || 1_700_000_000,
        };
        let mut out = Vec::new();
        let r = run(&ctx, admin_args(argv), &mut out, t).await;
        (r, String::from_utf8(out).expect("utf8"))
    }

    fn grant(jti: &str, sub: &str, exp: i64, refs: &[&str], reason: Option<&str>) -> GrantInfo {
        serde_json::from_value(json!({
            "jti": jti, "sub": sub, "idp": "corp", "role": "oncall",
            "scope": "repo:acme/api:read,write", "refs": refs, "reason": reason,
            "issued_ms": 1, "exp": exp,
        }))
        .expect("grant")
    }

    #[test]
    fn command_line_rules() {
        assert!(Cli::try_parse_from(["git-jit", "admin", "revoke", "--reason", "x"]).is_err());
        assert!(
            Cli::try_parse_from(["git-jit", "admin", "revoke", "--jti", "a", "--subject", "b"])
                .is_err(),
            "exactly one target"
        );
        assert!(Cli::try_parse_from(["git-jit", "admin", "revoke", "--repo", "a/../b"]).is_err());
        assert!(Cli::try_parse_from(["git-jit", "admin", "audit", "--csv", "--json"]).is_err());
        assert!(
            Cli::try_parse_from(["git-jit", "admin", "audit", "--since", "yesterday"]).is_err()
        );
        assert!(Cli::try_parse_from(["git-jit", "admin", "grants", "--limit", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["git-jit", "admin", "grants", "--token", "x"]).is_err(),
            "no token on the command line"
        );
        let a = admin_args(&["grants", "--repo", "acme/api", "--limit", "5", "--json"]);
        assert_eq!(a.token_env.as_deref(), Some("JIT_ADMIN"));
        // --token-env is global: it may follow the subcommand too.
        let c = Cli::try_parse_from(["git-jit", "admin", "audit", "--token-env", "V"]).expect("ok");
        assert!(
            matches!(c.command, Command::Admin(AdminArgs { token_env: Some(ref v), .. }) if v == "V")
        );
    }

    #[test]
    fn times_parse_as_durations_or_rfc3339() {
        assert_eq!(TimeArg::parse("90s"), Ok(TimeArg::Ago(90)));
        assert_eq!(TimeArg::parse("1h30m"), Ok(TimeArg::Ago(5400)));
        assert_eq!(TimeArg::parse("2d"), Ok(TimeArg::Ago(172_800)));
        assert_eq!(
            TimeArg::parse("2023-11-14T22:13:20Z"),
            Ok(TimeArg::At(1_700_000_000_000))
        );
        assert_eq!(
            TimeArg::parse("2023-11-14T23:13:20.5+01:00"),
            Ok(TimeArg::At(1_700_000_000_500))
        );
        for bad in ["", "h", "10", "1x", "1h30", "-5m", "99999999999999999999s"] {
            assert!(TimeArg::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(TimeArg::Ago(60).ms(1000), 940_000);
    }

    #[test]
    fn relative_times() {
        assert_eq!(relative(-5), "expired");
        assert_eq!(relative(45), "in 45s");
        assert_eq!(relative(12 * 60 + 59), "in 12m");
        assert_eq!(relative(2 * 3600 + 5 * 60), "in 2h05m");
        assert_eq!(relative(3 * 86_400 + 4 * 3600), "in 3d4h");
    }

    #[test]
    fn grants_table_renders() {
        let now = 1_700_000_000;
        let grants = [
            grant(
                "0123456789abcdef",
                "alice@example.com",
                now + 720,
                &[],
                Some("INC-7"),
            ),
            GrantInfo {
                request_id: Some("rq_aaaaaaaaaaaaaaaaaaaaaaaaaa".into()),
                break_glass: true,
                ..grant(
                    "fedcba98",
                    "bob",
                    now + 7500,
                    &["refs/heads/hotfix/*", "refs/tags/v*"],
                    None,
                )
            },
        ];
        assert_eq!(
            grants_table(&grants, now).render(),
            "\
JTI       SUBJECT            ISSUER  ROLE    SCOPE                     REFS                            EXPIRES                          APPROVAL                          REASON
01234567  alice@example.com  corp    oncall  repo:acme/api:read,write  -                               in 12m (2023-11-14 22:25:20Z)    -                                 INC-7
fedcba98  bob                corp    oncall  repo:acme/api:read,write  refs/heads/hotfix/* refs/tags…  in 2h05m (2023-11-15 00:18:20Z)  BREAK-GLASS, review (rq_aaaaaaa…  -
"
        );
    }

    #[test]
    fn audit_table_renders() {
        let events: Vec<AuditEvent> = [
            json!({"ts": 1_700_000_000_123i64, "seq": 41, "event": "grant.issued", "subject": "alice",
                   "scope": "repo:acme/api:write", "repo": "acme/api", "jti": "0123456789", "reason": "INC-7"}),
            json!({"ts": 1_700_000_060_000i64, "seq": 42, "event": "access.denied", "subject": "bob",
                   "repo": "acme/api", "denial": "ref refs/heads/main is not allowed", "reason": "ignored"}),
            json!({"ts": 1_700_000_120_000i64, "seq": 43, "event": "admin.audit", "extra": {"new": 1}}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("event"))
        .collect();
        let text = audit_table(&events).render();
        assert_eq!(
            text,
            "\
TIME (UTC)           SEQ  EVENT          SUBJECT  REPO/SCOPE           JTI       DETAIL
2023-11-14 22:13:20  41   grant.issued   alice    repo:acme/api:write  01234567  INC-7
2023-11-14 22:14:20  42   access.denied  bob      acme/api             -         ref refs/heads/main is not allowed
2023-11-14 22:15:20  43   admin.audit    -        -                    -         -
"
        );
    }

    #[tokio::test]
    async fn grants_command_prints_a_table_or_json() {
        let srv = TestServer::start(|_| {
            Reply::json(
                200,
                json!({"grants": [{"jti": "j-1234567890", "sub": "alice", "idp": "corp", "role": "dev",
                        "scope": "repo:acme/api:read", "issued_ms": 1, "exp": 1_700_000_600}]}),
            )
        });
        let (r, out) = run_with(
            &srv,
            &["grants", "--subject", "alice"],
            &mut term(false, &[]),
        )
        .await;
        r.expect("ok");
        assert!(out.starts_with("JTI "), "{out}");
        assert!(out.contains("j-123456  alice"), "{out}");
        assert!(out.ends_with("1 live grant\n"), "{out}");
        let (r, out) = run_with(&srv, &["grants", "--json"], &mut term(false, &[])).await;
        r.expect("ok");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v[0]["jti"], "j-1234567890", "full jti in JSON");
        let target = &srv.seen()[0].target;
        assert!(target.contains("subject=alice"), "{target}");
    }

    fn revoke_server() -> TestServer {
        TestServer::start(|r| {
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            let target = match body["value"].as_str() {
                Some(v) => format!("{} {v}", body["by"].as_str().unwrap_or("?")),
                None => "all".into(),
            };
            let one = body["by"] == "jti";
            Reply::json(
                200,
                json!({"target": target, "at_most": if one { 1 } else { 2 }, "tidy_pending": true}),
            )
        })
    }

    #[tokio::test]
    async fn revoke_needs_a_reason() {
        let srv = revoke_server();
        let mut t = term(false, &[]);
        let (r, _) = run_with(&srv, &["revoke", "--subject", "alice@example.com"], &mut t).await;
        let e = r.expect_err("no reason, no terminal");
        assert!(e.to_string().contains("--reason"), "{e}");
        assert!(srv.seen().is_empty(), "nothing sent");
        let mut t = term(true, &[""]);
        let (r, _) = run_with(&srv, &["revoke", "--subject", "alice@example.com"], &mut t).await;
        assert!(r.is_err(), "an empty answer is no reason");
        assert!(srv.seen().is_empty());
        let mut t = term(true, &["INC-7 laptop stolen"]);
        let (r, out) = run_with(&srv, &["revoke", "--subject", "alice@example.com"], &mut t).await;
        r.expect("revoked");
        assert_eq!(t.asked.len(), 1);
        assert_eq!(
            out,
            "revoked subject alice@example.com: in force now, at most 2 live grants ended; \
             their records are tidied in the background\n"
        );
        let body: serde_json::Value = serde_json::from_str(&srv.seen()[0].body).expect("json");
        assert_eq!(
            body,
            json!({"by": "subject", "value": "alice@example.com", "reason": "INC-7 laptop stolen"})
        );
    }

    #[tokio::test]
    async fn revoke_all_is_confirmed() {
        let srv = revoke_server();
        let (r, _) = run_with(
            &srv,
            &["revoke", "--all", "--reason", "breach"],
            &mut term(false, &[]),
        )
        .await;
        assert!(r.expect_err("needs --yes").to_string().contains("--yes"));
        let mut t = term(true, &["no"]);
        let (r, _) = run_with(&srv, &["revoke", "--all", "--reason", "breach"], &mut t).await;
        assert!(
            r.expect_err("declined")
                .to_string()
                .contains("nothing revoked")
        );
        assert!(t.asked[0].contains(&srv.url), "{:?}", t.asked);
        assert!(srv.seen().is_empty());
        let mut t = term(true, &["yes"]);
        let (r, out) = run_with(&srv, &["revoke", "--all", "--reason", "breach"], &mut t).await;
        r.expect("revoked");
        assert_eq!(
            out,
            "revoked all: in force now, at most 2 live grants ended; their records are tidied \
             in the background\n"
        );
        let (r, out) = run_with(
            &srv,
            &["revoke", "--jti", "j-1", "--reason", "leaked"],
            &mut term(false, &[]),
        )
        .await;
        r.expect("revoked");
        assert_eq!(out, "revoked 1 live grant (jti j-1)\n");
        let (r, out) = run_with(
            &srv,
            &["revoke", "--all", "--reason", "breach", "--yes", "--json"],
            &mut term(false, &[]),
        )
        .await;
        r.expect("revoked");
        assert_eq!(
            out,
            "{\"target\":\"all\",\"at_most\":2,\"tidy_pending\":true}\n"
        );
        let body: serde_json::Value = serde_json::from_str(&srv.seen()[2].body).expect("json");
        assert_eq!(body, json!({"by": "all", "reason": "breach"}));
    }

    #[tokio::test]
    async fn audit_command_table_json_and_csv() {
        let srv = TestServer::start(|r| {
            if r.target.contains("format=csv") {
                return Reply {
                    status: 200,
                    headers: vec![],
                    body: "seq,ts,event\n1,1700000000000,grant.issued\n".into(),
                };
            }
            Reply {
                status: 200,
                headers: vec![],
                body: json!({"v": 1, "ts": 1_700_000_000_000i64, "seq": 1, "event": "grant.issued",
                             "subject": "alice", "repo": "acme/api", "prev": "", "hash": "h"})
                .to_string()
                    + "\n",
            }
        });
        let (r, out) = run_with(&srv, &["audit", "--since", "1h"], &mut term(false, &[])).await;
        r.expect("ok");
        assert!(out.starts_with("TIME (UTC)"), "{out}");
        assert!(
            out.contains("2023-11-14 22:13:20  1    grant.issued  alice"),
            "{out}"
        );
        let from = srv.seen()[0].target.clone();
        assert!(
            from.contains("from=1699996400000"),
            "1h before the clock: {from}"
        );
        let (r, out) = run_with(&srv, &["audit", "--json"], &mut term(false, &[])).await;
        r.expect("ok");
        let raw: serde_json::Value = serde_json::from_str(&out).expect("one JSON line");
        assert_eq!(
            (raw["hash"].as_str(), out.lines().count()),
            (Some("h"), 1),
            "{out}"
        );
        let (r, out) = run_with(&srv, &["audit", "--csv"], &mut term(false, &[])).await;
        r.expect("ok");
        assert_eq!(out, "seq,ts,event\n1,1700000000000,grant.issued\n");
    }
}
