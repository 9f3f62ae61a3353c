//! `git jit requests|approve|deny|cancel`: the approval requests a person filed or may
//! decide, as a table (or JSON lines), and the decisions on them. The credential is the
//! `git jit login` session's ID token, or `--token-env VAR` (as for `git jit admin`); a
//! token is never taken as an argument.

use std::io::Write;

use clap::Args;
use jit_proto::RepoPath;
use jit_proto::approval::{DecideRequest, RequestId, RequestInfo, RequestState, RequestsQuery};
use jit_proto::display::json_inert;

use super::admin::Terminal;
use super::request::parse_request_id;
use super::wait::{CANCEL_REASON, span};
use super::{CliError, join};
use crate::admin;
use crate::approvals::{ApprovalClient, MAX_LISTED, Verdict};
use crate::credential::Context;
use crate::table::{Table, clean};

/// `git jit requests`.
#[derive(Debug, Args)]
pub struct RequestsArgs {
    /// Only requests in this state: pending, approved, denied, expired, cancelled, or all.
    #[arg(long, default_value = "pending", value_parser = parse_state)]
    pub state: StateFilter,
    /// Only requests you may decide (not your own).
    #[arg(long)]
    pub mine: bool,
    /// Only requests of this requester (the verified subject).
    #[arg(long)]
    pub requester: Option<String>,
    /// Only requests on this repository.
    #[arg(long, value_parser = RepoPath::parse)]
    pub repo: Option<RepoPath>,
    /// Only requests under this role.
    #[arg(long)]
    pub role: Option<String>,
    /// Show at most this many.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Print one JSON object per request and line.
    #[arg(long)]
    pub json: bool,
    /// Read the credential from this environment variable instead of the login session.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
}

/// A state filter on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    /// Requests in this state.
    Only(RequestState),
    /// Every state.
    All,
}

fn parse_state(s: &str) -> Result<StateFilter, String> {
    if s == "all" {
        return Ok(StateFilter::All);
    }
    RequestState::parse(s)
        .map(StateFilter::Only)
        .ok_or_else(|| {
            format!("{s:?} is not one of pending, approved, denied, expired, cancelled, all")
        })
}

/// `git jit approve` and `git jit deny`.
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The request's id (rq_…).
    #[arg(value_parser = parse_request_id)]
    pub id: RequestId,
    /// Why (required; recorded in the audit trail and shown to the requester). Asked for on
    /// a terminal when missing.
    #[arg(long)]
    pub reason: Option<String>,
    /// Read the credential from this environment variable instead of the login session.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
}

/// `git jit cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The request's id (rq_…).
    #[arg(value_parser = parse_request_id)]
    pub id: RequestId,
    /// Why. Default: "cancelled by the requester".
    #[arg(long)]
    pub reason: Option<String>,
    /// Read the credential from this environment variable instead of the login session.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
}

async fn connect(ctx: &Context<'_>, token_env: Option<&str>) -> Result<ApprovalClient, CliError> {
    let broker = ctx.broker(&ctx.broker_url(None)?)?;
    let (token, source) = admin::credential(ctx.env, &ctx.settings.dirs.config, &broker, token_env)
        .await
        .map_err(crate::approvals::ApprovalError::from)?;
    Ok(ApprovalClient::new(broker, token, source))
}

/// `git jit requests`: the table, or JSON lines.
pub async fn list(ctx: &Context<'_>, a: RequestsArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let filter = RequestsQuery {
        state: match a.state {
            StateFilter::Only(s) => Some(s.as_str().to_owned()),
            StateFilter::All => None,
        },
        requester: a.requester,
        repo: a.repo.map(|r| r.to_string()),
        role: a.role,
        mine_to_approve: a.mine.then_some(true),
        ..RequestsQuery::default()
    };
    let client = connect(ctx, a.token_env.as_deref()).await?;
    let max = a.limit.map_or(MAX_LISTED, |l| l as usize);
    let (found, more) = client.list(&filter, max).await?;
    if a.json {
        for r in &found {
            let line =
                serde_json::to_string(r).map_err(|e| CliError::Io(std::io::Error::other(e)))?;
            writeln!(out, "{}", json_inert(&line))?;
        }
        return Ok(());
    }
    if found.is_empty() {
        writeln!(out, "no requests match")?;
        return Ok(());
    }
    out.write_all(requests_table(&found, (ctx.clock)()).render().as_bytes())?;
    if more {
        writeln!(
            out,
            "{} shown; more match (narrow the filters or raise --limit)",
            found.len()
        )?;
    }
    Ok(())
}

/// `45s`, `3m`, `2h`, `4d`: how long ago.
fn age(secs: i64) -> String {
    match secs.max(0) {
        s @ ..60 => format!("{s}s"),
        s @ 60..3600 => format!("{}m", s / 60),
        s @ 3600..86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `30m`, `2h`, `1h30m`.
fn ttl(minutes: u32) -> String {
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m:02}m"),
    }
}

/// The requests table: ID, AGE, STATE, REQUESTER, ROLE, SCOPE, REFS, TTL, APPROVALS, REASON.
/// Every cell is cleaned of control and bidi characters by the table.
pub fn requests_table(requests: &[RequestInfo], now: i64) -> Table {
    let mut t = Table::new(&[
        ("ID", 29),
        ("AGE", 5),
        ("STATE", 9),
        ("REQUESTER", 32),
        ("ROLE", 16),
        ("SCOPE", 40),
        ("REFS", 30),
        ("TTL", 6),
        ("APPROVALS", 9),
        ("REASON", 40),
    ]);
    for r in requests {
        let refs = join(&r.refs);
        t.row([
            r.id.to_string(),
            age(now - r.created),
            r.state.to_string(),
            r.requester.clone(),
            r.role.clone(),
            r.scope.to_string(),
            if refs.is_empty() { "-".into() } else { refs },
            ttl(r.ttl_minutes),
            format!("{}/{}", r.approvals.len(), r.required),
            r.reason.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

/// A decision's reason: given, or asked for on a terminal; checked as the broker will.
fn reason_for(
    verdict: Verdict,
    given: Option<String>,
    term: &mut dyn Terminal,
) -> Result<String, CliError> {
    let reason = match given {
        Some(r) => r,
        None if term.interactive() => term.ask(&format!(
            "Reason to {} (recorded in the audit trail): ",
            verdict.as_str()
        ))?,
        None => {
            return Err(CliError::Usage(format!(
                "a reason is required to {}: give --reason \"…\"",
                verdict.as_str()
            )));
        }
    };
    let body = DecideRequest { reason };
    let checked = body
        .checked_reason()
        .map_err(|e| CliError::Usage(format!("{e}; nothing sent")))?;
    Ok(checked.to_owned())
}

/// What a request now grants, for people: `alice may now write to acme/api refs/heads/main
/// for 30 min`.
fn what(r: &RequestInfo) -> String {
    let refs = join(&r.refs);
    let refs = if refs.is_empty() {
        String::new()
    } else {
        format!(" {refs}")
    };
    clean(&format!(
        "{} to {}{refs} for {}",
        r.scope.actions,
        r.scope.repo,
        span(i64::from(r.ttl_minutes) * 60)
    ))
    .into_owned()
}

/// The line saying what a decision did.
pub fn decided(verdict: Verdict, r: &RequestInfo) -> String {
    let count = format!("{}/{}", r.approvals.len(), r.required);
    let who = clean(&r.requester);
    match (verdict, r.state) {
        (Verdict::Approve, RequestState::Approved) => {
            format!("approved {} ({count}): {who} may now {}", r.id, what(r))
        }
        (Verdict::Approve, _) => format!(
            "approved {} ({count}): more approvals are needed before {who} may {}",
            r.id,
            what(r)
        ),
        (Verdict::Deny, _) => format!("denied {}: {who} may not {}", r.id, what(r)),
        (Verdict::Cancel, _) => format!("cancelled {}", r.id),
    }
}

/// `git jit approve` and `git jit deny`.
pub async fn decide(
    ctx: &Context<'_>,
    verdict: Verdict,
    a: DecideArgs,
    out: &mut dyn Write,
    term: &mut dyn Terminal,
) -> Result<(), CliError> {
    let reason = reason_for(verdict, a.reason, term)?;
    let client = connect(ctx, a.token_env.as_deref()).await?;
    let r = client.decide(&a.id, verdict, &reason).await?;
    writeln!(out, "{}", decided(verdict, &r))?;
    Ok(())
}

/// `git jit cancel`.
pub async fn cancel(ctx: &Context<'_>, a: CancelArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let given = a.reason.unwrap_or_else(|| CANCEL_REASON.to_owned());
    let reason = DecideRequest { reason: given }
        .checked_reason()
        .map_err(|e| CliError::Usage(format!("{e}; nothing sent")))?
        .to_owned();
    let client = connect(ctx, a.token_env.as_deref()).await?;
    let r = client.decide(&a.id, Verdict::Cancel, &reason).await?;
    writeln!(out, "{}", decided(Verdict::Cancel, &r))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::config::{Dirs, Settings};
    use crate::testserver::{Reply, TestServer, client};
    use clap::Parser;
    use serde_json::json;

    const RQ: &str = "rq_abcdefghijklmnopqrstuvwxyz";
    const NOW: i64 = 1_700_000_000;

    fn info(v: serde_json::Value) -> RequestInfo {
        let mut base = json!({"id": RQ, "state": "pending", "requester": "alice", "idp": "corp",
            "role": "prod-push", "scope": "repo:acme/api:write", "refs": ["refs/heads/main"],
            "ttl_minutes": 30, "reason": "hotfix INC-42", "created": NOW - 180, "expires": NOW + 1620,
            "required": 1, "approvers": ["bob (corp)"], "approvals": []});
        if let (Some(b), Some(o)) = (base.as_object_mut(), v.as_object()) {
            b.extend(o.clone());
        }
        serde_json::from_value(base).expect("request")
    }

    /// Answers from a script; records the questions.
    struct Scripted(bool, Vec<&'static str>, usize);

    impl Terminal for Scripted {
        fn interactive(&self) -> bool {
            self.0
        }
        fn ask(&mut self, _: &str) -> std::io::Result<String> {
            self.2 += 1;
            Ok(self.1.pop().unwrap_or_default().to_owned())
        }
    }

    fn env(name: &str) -> Option<String> {
        (name == "APPROVER").then(|| "bob-id-t0ken".to_owned())
    }

    /// Runs `git jit <argv> --token-env APPROVER` against `srv`.
    async fn run(
        srv: &TestServer,
        argv: &[&str],
        term: &mut Scripted,
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
            clock: || NOW,
        };
        let argv = ["git-jit"]
            .iter()
            .chain(argv)
            .chain(&["--token-env", "APPROVER"])
            .copied();
        let mut out = Vec::new();
        let r = match Cli::try_parse_from(argv).expect("parses").command {
            Command::Requests(a) => list(&ctx, a, &mut out).await,
            Command::Approve(a) => decide(&ctx, Verdict::Approve, a, &mut out, term).await,
            Command::Deny(a) => decide(&ctx, Verdict::Deny, a, &mut out, term).await,
            Command::Cancel(a) => cancel(&ctx, a, &mut out).await,
            other => panic!("{other:?}"),
        };
        (r, String::from_utf8(out).expect("utf8"))
    }

    #[test]
    fn the_table_shows_age_approvals_and_reason_inert() {
        let approved = info(
            json!({"id": "rq_bbbbbbbbbbbbbbbbbbbbbbbbbb", "state": "approved",
            "requester": "eve\u{1b}[2J", "created": NOW - 7300, "ttl_minutes": 90, "refs": [],
            "reason": "fix \u{202e}txt", "required": 2,
            "approvals": [{"by": "bob", "idp": "corp", "reason": "ok", "at": NOW},
                          {"by": "carol", "idp": "corp", "reason": "ok", "at": NOW}]}),
        );
        let text = requests_table(&[info(json!({})), approved], NOW).render();
        assert_eq!(
            text,
            "\
ID                             AGE  STATE     REQUESTER     ROLE       SCOPE                REFS             TTL    APPROVALS  REASON
rq_abcdefghijklmnopqrstuvwxyz  3m   pending   alice         prod-push  repo:acme/api:write  refs/heads/main  30m    0/1        hotfix INC-42
rq_bbbbbbbbbbbbbbbbbbbbbbbbbb  2h   approved  eve\\u{1b}[2J  prod-push  repo:acme/api:write  -                1h30m  2/2        fix \\u{202e}txt
"
        );
        assert_eq!(
            (age(-5), age(59), age(3600), age(3 * 86_400)),
            ("0s".into(), "59s".into(), "1h".into(), "3d".into())
        );
        assert_eq!(
            (ttl(30), ttl(120), ttl(61)),
            ("30m".into(), "2h".into(), "1h01m".into())
        );
    }

    #[tokio::test]
    async fn requests_lists_pending_by_default_or_prints_json_lines() {
        let srv = TestServer::start(|_| {
            let r = serde_json::to_value(info(json!({}))).expect("json");
            Reply::json(200, json!({"requests": [r]}))
        });
        let (r, out) = run(
            &srv,
            &["requests", "--mine", "--repo", "acme/api"],
            &mut Scripted(false, vec![], 0),
        )
        .await;
        r.expect("listed");
        assert!(out.starts_with("ID  "), "{out}");
        assert!(out.contains(&format!("{RQ}  3m   pending")), "{out}");
        let first = &srv.seen()[0];
        assert_eq!(first.header("authorization"), Some("Bearer bob-id-t0ken"));
        assert!(
            first
                .target
                .starts_with("/v1/requests?state=pending&repo=acme%2Fapi&mine_to_approve=true"),
            "{}",
            first.target
        );
        let (r, out) = run(
            &srv,
            &["requests", "--state", "all", "--json"],
            &mut Scripted(false, vec![], 0),
        )
        .await;
        r.expect("listed");
        let line: serde_json::Value = serde_json::from_str(out.trim_end()).expect("one JSON line");
        assert_eq!(line["id"], RQ);
        assert!(
            !srv.seen()[1].target.contains("state="),
            "{}",
            srv.seen()[1].target
        );
        assert!(Cli::try_parse_from(["git-jit", "requests", "--state", "open"]).is_err());
    }

    #[tokio::test]
    async fn approve_and_deny_send_the_reason_with_the_approvers_bearer() {
        let srv = TestServer::start(|r| {
            let approved = r.target.ends_with("/approve");
            let v = if approved {
                json!({"state": "approved", "approvals": [{"by": "bob", "idp": "corp", "reason": "ok", "at": NOW}]})
            } else {
                json!({"state": "denied"})
            };
            Reply::json(200, serde_json::to_value(info(v)).expect("json"))
        });
        let (r, out) = run(
            &srv,
            &["approve", RQ, "--reason", "INC-42 confirmed"],
            &mut Scripted(false, vec![], 0),
        )
        .await;
        r.expect("approved");
        assert_eq!(
            out,
            format!(
                "approved {RQ} (1/1): alice may now write to acme/api refs/heads/main for 30 min\n"
            )
        );
        let mut t = Scripted(true, vec!["not during the freeze"], 0);
        let (r, out) = run(&srv, &["deny", RQ], &mut t).await;
        r.expect("denied");
        assert_eq!(t.2, 1, "asked for the reason");
        assert_eq!(
            out,
            format!("denied {RQ}: alice may not write to acme/api refs/heads/main for 30 min\n")
        );
        let seen = srv.seen();
        assert_eq!(seen[0].target, format!("/v1/requests/{RQ}/approve"));
        assert_eq!(seen[1].target, format!("/v1/requests/{RQ}/deny"));
        for (r, reason) in seen
            .iter()
            .zip(["INC-42 confirmed", "not during the freeze"])
        {
            assert_eq!(r.method, "POST");
            assert_eq!(r.header("authorization"), Some("Bearer bob-id-t0ken"));
            let body: serde_json::Value = serde_json::from_str(&r.body).expect("json");
            assert_eq!(body, json!({"reason": reason}));
        }
    }

    #[tokio::test]
    async fn a_decision_needs_a_reason_and_refusals_are_one_line() {
        let srv = TestServer::start(|_| {
            Reply::json(
                403,
                json!({"error": "access_denied", "error_description": "you cannot approve your own request"}),
            )
        });
        let (r, _) = run(&srv, &["approve", RQ], &mut Scripted(false, vec![], 0)).await;
        assert!(r.expect_err("no reason").to_string().contains("--reason"));
        let (r, _) = run(
            &srv,
            &["deny", RQ, "--reason", "a\u{7}b"],
            &mut Scripted(false, vec![], 0),
        )
        .await;
        assert!(
            r.expect_err("control")
                .to_string()
                .contains("control characters")
        );
        assert!(srv.seen().is_empty(), "nothing sent");
        let (r, _) = run(
            &srv,
            &["approve", RQ, "--reason", "ok"],
            &mut Scripted(false, vec![], 0),
        )
        .await;
        assert_eq!(
            r.expect_err("refused").to_string(),
            "refused: you cannot approve your own request"
        );
        let (r, out) = run(&srv, &["cancel", RQ], &mut Scripted(false, vec![], 0)).await;
        assert!(r.is_err() && out.is_empty(), "{r:?}");
        let body: serde_json::Value = serde_json::from_str(&srv.seen()[1].body).expect("json");
        assert_eq!(body, json!({"reason": "cancelled by the requester"}));
        assert!(Cli::try_parse_from(["git-jit", "approve", "rq_nope"]).is_err());
    }
}
