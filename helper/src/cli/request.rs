//! `git jit request`: ask for access explicitly and cache the token. When the role needs a
//! person's approval the request is filed and waited for (`wait`); `--no-wait` files it
//! and prints its id, `--wait ID` collects an earlier one.

use std::future::Future;
use std::io::{BufRead, IsTerminal, Write};

use clap::Args;
use jit_proto::approval::{PendingDetails, RequestId, RequestState};
use jit_proto::display::clean;
use jit_proto::exchange::{ApprovalAsk, Ttl};
use jit_proto::{Actions, RefPattern, RepoPath, Scope};

use super::wait::{self, WaitIo};
use super::{CliError, join, when};
use crate::broker::BrokerError;
use crate::credential::{Context, Exchanger, Extras, HelperError, Obtained};

/// `git jit request`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The repository, e.g. acme/api.
    #[arg(long, value_parser = RepoPath::parse, required_unless_present = "wait")]
    pub repo: Option<RepoPath>,
    /// The actions: read, write or read,write.
    #[arg(long, default_value = "read,write", value_parser = Actions::parse)]
    pub action: Actions,
    /// Narrow a write grant to refs matching this pattern (repeatable; one value may hold
    /// several, separated by spaces), e.g. refs/heads/hotfix/*.
    #[arg(long = "ref", visible_alias = "refs", value_name = "PATTERN", value_parser = parse_ref_list)]
    pub refs: Vec<RefList>,
    /// How long: 30m, 2h, or minutes. Default: the role's.
    #[arg(long, value_parser = Ttl::parse)]
    pub ttl: Option<Ttl>,
    /// Why you need it (recorded in the audit log). Asked for on the terminal when the role
    /// requires one and none is given.
    #[arg(long)]
    pub reason: Option<String>,
    /// The role to request under. Default: the broker picks.
    #[arg(long)]
    pub role: Option<String>,
    /// When the role needs approval: file the request, print its id (last line of stdout)
    /// and exit without waiting; collect the token later with --wait ID.
    #[arg(long, conflicts_with = "wait")]
    pub no_wait: bool,
    /// Wait for an earlier request of yours and collect its token; what it asks for (repo,
    /// actions, refs, role, lifetime, reason) is read from the broker.
    #[arg(long, value_name = "ID", value_parser = parse_request_id,
          conflicts_with_all = ["repo", "action", "refs", "ttl", "reason", "role"])]
    pub wait: Option<RequestId>,
}

/// Ref patterns from one `--ref` value (split on whitespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefList(pub Vec<RefPattern>);

fn parse_ref_list(s: &str) -> Result<RefList, String> {
    let refs = s
        .split_whitespace()
        .map(|p| RefPattern::parse(p).map_err(|e| format!("{p:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if refs.is_empty() {
        return Err("no ref pattern given".into());
    }
    Ok(RefList(refs))
}

/// Parses a request id on the command line.
pub(crate) fn parse_request_id(s: &str) -> Result<RequestId, String> {
    RequestId::parse(s.trim()).map_err(|e| e.to_string())
}

fn ask_reason(description: &str) -> Result<Option<String>, CliError> {
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    // The broker's words end with the command to run; this is that command.
    let words = description
        .split_once("; run: git jit request")
        .map_or(description, |(w, _)| w);
    let mut err = std::io::stderr();
    write!(err, "{words}\nReason: ")?;
    err.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim().to_owned();
    Ok((!line.is_empty()).then_some(line))
}

/// Resolves on Ctrl-C; never, if the signal cannot be watched.
pub(super) async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What `git jit request` asks for: from the command line, or read from the request
/// resumed with --wait.
struct Asked {
    scope: Scope,
    refs: Vec<RefPattern>,
    role: Option<String>,
    reason: Option<String>,
    ttl: Option<Ttl>,
}

impl Asked {
    fn extras(&self) -> Extras<'_> {
        Extras {
            refs: &self.refs,
            role: self.role.as_deref(),
            reason: self.reason.as_deref(),
            ttl: self.ttl,
            approval: None,
            ssh_public_key: None,
        }
    }
}

/// Exchanges as asked: a missing reason is asked for on a terminal, and a role that needs
/// approval gets its request filed. The token, or the filed request's details.
async fn ask(
    ex: &Exchanger<'_>,
    asked: &mut Asked,
) -> Result<Result<Obtained, Box<PendingDetails>>, CliError> {
    let mut approval = ApprovalAsk::None;
    loop {
        let extras = Extras {
            approval: Some(&approval),
            ssh_public_key: None,
            ..asked.extras()
        };
        match ex.obtain(&asked.scope, extras).await {
            Err(HelperError::Broker(BrokerError::ReasonRequired { description }))
                if asked.reason.is_none() =>
            {
                match ask_reason(&description)? {
                    Some(r) => asked.reason = Some(r),
                    None => return Err(BrokerError::ReasonRequired { description }.into()),
                }
            }
            Err(HelperError::Broker(BrokerError::ApprovalRequired {
                description,
                details,
            })) if approval == ApprovalAsk::None => {
                // The approvers read the reason: ask for it before filing, when one is due.
                if asked.reason.is_none() && details.min_reason.is_some_and(|n| n > 0) {
                    match ask_reason(&description)? {
                        Some(r) => asked.reason = Some(r),
                        None => return Err(BrokerError::ReasonRequired { description }.into()),
                    }
                }
                approval = ApprovalAsk::Request;
            }
            Err(HelperError::Broker(BrokerError::ApprovalPending { details, .. })) => {
                return Ok(Err(details));
            }
            other => return Ok(Ok(other?)),
        }
    }
}

/// What an earlier request asks for, read from the broker (as its requester), and where it
/// stands; an ended one is an error saying how it ended.
async fn resume(
    ctx: &Context<'_>,
    ex: &Exchanger<'_>,
    id: &RequestId,
) -> Result<(Asked, PendingDetails), CliError> {
    let info = wait::as_requester(ex).await?.get(id).await?;
    if matches!(
        info.state,
        RequestState::Denied | RequestState::Cancelled | RequestState::Expired
    ) {
        let by = info
            .decision
            .as_ref()
            .map(|d| format!(" by {}: {}", clean(&d.by), clean(&d.reason)))
            .unwrap_or_default();
        return Err(CliError::Approval(format!(
            "request {id} is {}{by}",
            info.state
        )));
    }
    let first = PendingDetails {
        request_id: Some(info.id.clone()),
        state: Some(info.state),
        role: Some(info.role.clone()),
        approvers: info.approvers.clone(),
        approvals: Some(u8::try_from(info.approvals.len()).unwrap_or(u8::MAX)),
        required: Some(info.required),
        interval: None,
        expires_in: Some(info.expires.saturating_sub((ctx.clock)())),
        min_reason: None,
    };
    let asked = Asked {
        scope: info.scope,
        refs: info.refs,
        role: Some(info.role),
        reason: info.reason,
        ttl: Ttl::from_minutes(info.ttl_minutes),
    };
    Ok((asked, first))
}

/// Runs `git jit request`: results to `out`, the filing's announcement and progress to
/// `io`; `cancelled` resolving (Ctrl-C) withdraws a request being waited for.
pub(super) async fn request(
    ctx: &Context<'_>,
    a: RequestArgs,
    out: &mut dyn Write,
    io: &mut WaitIo<'_>,
    cancelled: impl Future<Output = ()>,
) -> Result<(), CliError> {
    let broker = ctx.broker(&ctx.broker_url(None)?)?;
    let ex = Exchanger::new(ctx, &broker).await?;
    let (asked, id, first) = if let Some(id) = a.wait {
        let (asked, first) = resume(ctx, &ex, &id).await?;
        writeln!(io.err, "{}", wait::announcement(&id, &first))?;
        (asked, id, first)
    } else {
        // clap requires --repo without --wait.
        let repo = a
            .repo
            .ok_or_else(|| CliError::Usage("--repo is required".into()))?;
        let mut asked = Asked {
            scope: Scope::new(repo, a.action),
            refs: a.refs.into_iter().flat_map(|l| l.0).collect(),
            role: a.role,
            reason: a.reason,
            ttl: a.ttl,
        };
        let details = match ask(&ex, &mut asked).await? {
            Ok(got) => return granted(ctx, &got, out),
            Err(details) => details,
        };
        let id = details.request_id.clone().ok_or_else(|| {
            CliError::Approval("the broker said authorization_pending without a request_id".into())
        })?;
        writeln!(io.err, "{}", wait::announcement(&id, &details))?;
        if a.no_wait {
            // The last line of stdout, for scripts.
            writeln!(out, "{id}")?;
            return Ok(());
        }
        (asked, id, *details)
    };
    let poll = wait::Poll {
        ex: &ex,
        scope: &asked.scope,
        extras: asked.extras(),
        id: &id,
    };
    let got = wait::wait(&poll, &first, io, cancelled).await?;
    granted(ctx, &got, out)
}

/// The granted/refs/expires/jti lines of a token obtained (and cached).
fn granted(ctx: &Context<'_>, got: &Obtained, out: &mut dyn Write) -> Result<(), CliError> {
    let t = &got.token;
    writeln!(out, "granted:  {}", t.scope)?;
    if !t.refs.is_empty() {
        writeln!(out, "refs:     {}", join(&t.refs))?;
    }
    writeln!(out, "expires:  {}", when(t.expires_at, (ctx.clock)()))?;
    if let Some(j) = &t.jti {
        writeln!(out, "jti:      {j}")?;
    }
    writeln!(out, "identity: {}", got.source)?;
    if let Some(s) = got.skew {
        eprintln!(
            "git-jit: warning: this machine's clock is {}s off the broker's; fix the clock",
            s.abs()
        );
    }
    if got.cache_failed {
        eprintln!("git-jit: warning: cannot write the token cache; git will not find this token");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::login::Pacing;
    use clap::Parser;
    #[test]
    fn request_parses_and_validates() {
        let c = Cli::try_parse_from([
            "git-jit",
            "request",
            "--repo",
            "acme/api",
            "--action",
            "write",
            "--ref",
            "refs/heads/hotfix/*",
            "--ref",
            "refs/tags/v*",
            "--ttl",
            "30m",
            "--reason",
            "INC-1",
            "--role",
            "oncall",
        ])
        .expect("parses");
        let Command::Request(r) = c.command else {
            panic!("not request")
        };
        assert_eq!(
            (
                r.repo.as_ref().map(RepoPath::as_str),
                r.action,
                r.refs.len()
            ),
            (Some("acme/api"), Actions::WRITE, 2)
        );
        assert_eq!(r.ttl.map(Ttl::minutes), Some(30));
        assert!(Cli::try_parse_from(["git-jit", "request", "--repo", "acme/../x"]).is_err());
        let bad_ttl = Cli::try_parse_from(["git-jit", "request", "--repo", "a/b", "--ttl", "1d"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(bad_ttl.contains("must be minutes"), "{bad_ttl}");
        assert!(
            Cli::try_parse_from(["git-jit", "request", "--repo", "a/b", "--action", "admin"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from(["git-jit", "request", "--repo", "a/b", "--ref", "main"]).is_err()
        );
        assert!(Cli::try_parse_from(["git-jit", "setup", "--local", "--global"]).is_err());
    }

    use crate::config::{Dirs, Settings};
    use crate::testserver::{Recorded, Reply, TestServer, client};
    use serde_json::json;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    const RQ: &str = "rq_abcdefghijklmnopqrstuvwxyz";

    fn pending(approvals: u8, required: u8) -> Reply {
        Reply::json(
            400,
            json!({"error": "authorization_pending", "request_id": RQ, "state": "pending",
                   "role": "prod-push", "approvers": ["bob (corp)", "groups contains sre (corp)"],
                   "approvals": approvals, "required": required, "interval": 5, "expires_in": 1800}),
        )
    }

    fn required() -> Reply {
        Reply::json(
            403,
            json!({"error": "approval_required", "error_description": "role prod-push needs approval",
                   "role": "prod-push", "approvers": ["bob (corp)"]}),
        )
    }

    fn token() -> Reply {
        Reply::json(
            200,
            json!({"access_token": "brk-approved", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                   "token_type": "Bearer", "expires_in": 1500, "scope": "repo:acme/api:write", "jti": "j-approved"}),
        )
    }

    fn request_info(state: &str) -> serde_json::Value {
        json!({"id": RQ, "state": state, "requester": "ci", "idp": "corp", "role": "prod-push",
               "scope": "repo:acme/api:write", "refs": ["refs/heads/main"], "ttl_minutes": 30,
               "reason": "hotfix INC-42", "created": 1_700_000_000, "expires": 1_700_001_800,
               "required": 1, "approvers": ["bob (corp)"], "approvals": [],
               "decision": {"by": "bob", "idp": "corp", "reason": "not now", "at": 1_700_000_100}})
    }

    /// A broker whose token endpoint answers from `script`, in order (then 500); the
    /// approval API answers GET with the request, `cancel` with it cancelled.
    fn scripted(script: Vec<Reply>) -> TestServer {
        let script = Mutex::new(VecDeque::from(script));
        TestServer::start(move |r| {
            if r.target == "/.well-known/oauth-authorization-server" {
                let own = format!("http://{}", r.header("host").unwrap_or(""));
                return Reply::json(
                    200,
                    json!({"issuer": own, "token_endpoint": format!("{own}/oauth/token"),
                           "introspection_endpoint": "i", "jwks_uri": "j", "grant_types_supported": [],
                           "token_audience": "git", "subject_token_audience": "git-jit", "scope_syntax": ""}),
                );
            }
            if r.target == format!("/v1/requests/{RQ}/cancel") {
                return Reply::json(200, request_info("cancelled"));
            }
            if r.target == format!("/v1/requests/{RQ}") {
                return Reply::json(200, request_info("pending"));
            }
            let next = script.lock().expect("lock").pop_front();
            next.unwrap_or_else(|| Reply::json(500, json!({"error": "server_error"})))
        })
    }

    fn exchanges(srv: &TestServer) -> Vec<Recorded> {
        srv.seen()
            .into_iter()
            .filter(|r| r.target == "/oauth/token")
            .collect()
    }

    struct Run {
        result: Result<(), CliError>,
        out: String,
        err: String,
        cache: Vec<crate::cache::CachedToken>,
    }

    /// Runs `git jit <argv>` (a request) against `srv` with a CI identity, non-interactive,
    /// one millisecond to the second; `cancelled` stands for Ctrl-C.
    async fn run_request(
        srv: &TestServer,
        argv: &[&str],
        cancelled: impl Future<Output = ()>,
    ) -> Run {
        let tmp = tempfile::tempdir().expect("tmp");
        let env = |k: &str| (k == "GIT_JIT_ID_TOKEN").then(|| "ci-jwt".to_owned());
        let settings = Settings {
            dirs: Dirs {
                config: tmp.path().join("c"),
                cache: tmp.path().join("k"),
            },
            broker: Some(srv.url.clone()),
            servers: vec![],
            audience: None,
            id_token_env: "GIT_JIT_ID_TOKEN".into(),
            id_token_file: None,
        };
        let ctx = Context {
            env: &env,
            settings,
            http: std::sync::OnceLock::from(client()),
            clock: || 1_700_000_000,
        };
        let argv = std::iter::once("git-jit").chain(argv.iter().copied());
        let Command::Request(a) = Cli::try_parse_from(argv).expect("parses").command else {
            panic!("not a request")
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = WaitIo {
            err: &mut err,
            tty: false,
            pacing: Pacing {
                tick: std::time::Duration::from_millis(1),
                clock: ctx.clock,
            },
        };
        let result = request(&ctx, a, &mut out, &mut io, cancelled).await;
        Run {
            result,
            out: String::from_utf8(out).expect("utf8"),
            err: String::from_utf8(err).expect("utf8"),
            cache: ctx.cache().entries().expect("cache"),
        }
    }

    const HOTFIX: &[&str] = &[
        "request",
        "--repo",
        "acme/api",
        "--action",
        "write",
        "--refs",
        "refs/heads/main",
        "--reason",
        "hotfix INC-42",
    ];

    #[test]
    fn refs_take_several_patterns_and_wait_stands_alone() {
        let c = Cli::try_parse_from([
            "git-jit",
            "request",
            "--repo",
            "a/b",
            "--refs",
            "refs/heads/main refs/tags/v*",
            "--ref",
            "refs/heads/x",
        ])
        .expect("parses");
        let Command::Request(r) = c.command else {
            panic!("not request")
        };
        let all: Vec<_> = r
            .refs
            .into_iter()
            .flat_map(|l| l.0)
            .map(|p| p.as_str().to_owned())
            .collect();
        assert_eq!(all, ["refs/heads/main", "refs/tags/v*", "refs/heads/x"]);
        assert!(
            Cli::try_parse_from([
                "git-jit",
                "request",
                "--repo",
                "a/b",
                "--refs",
                "main refs/heads/x"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from(["git-jit", "request", "--repo", "a/b", "--refs", " "]).is_err()
        );
        let c =
            Cli::try_parse_from(["git-jit", "request", "--wait", RQ]).expect("no --repo needed");
        assert!(matches!(
            c.command,
            Command::Request(RequestArgs {
                wait: Some(_),
                repo: None,
                ..
            })
        ));
        assert!(
            Cli::try_parse_from(["git-jit", "request", "--wait", RQ, "--repo", "a/b"]).is_err()
        );
        assert!(Cli::try_parse_from(["git-jit", "request", "--wait", RQ, "--no-wait"]).is_err());
        assert!(Cli::try_parse_from(["git-jit", "request", "--wait", "rq_../x"]).is_err());
        assert!(
            Cli::try_parse_from(["git-jit", "request"]).is_err(),
            "--repo or --wait"
        );
    }

    /// approval_required → filed (pending) → pending → slow_down → pending (1/2) → token:
    /// the token is cached as any `request`'s, each poll is the same form with the id, and
    /// the plain progress shows a line per change only.
    #[tokio::test]
    async fn request_files_waits_and_caches_the_token() {
        let slow = Reply::json(
            400,
            json!({"error": "slow_down", "request_id": RQ, "interval": 7}),
        );
        let srv = scripted(vec![
            required(),
            pending(0, 2),
            pending(0, 2),
            slow,
            pending(1, 2),
            token(),
        ]);
        let run = run_request(&srv, HOTFIX, std::future::pending()).await;
        run.result.expect("granted");
        assert!(
            run.out
                .starts_with("granted:  repo:acme/api:write\nrefs:     refs/heads/main\n"),
            "{}",
            run.out
        );
        assert!(run.out.contains("jti:      j-approved\n"), "{}", run.out);
        assert_eq!(
            run.err,
            format!(
                "approval needed: request {RQ} filed under role prod-push; 2 approvals needed from: \
                 bob (corp), groups contains sre (corp)\nexpires in 30 min\n\
                 waiting for approval … 0s, 0/2 approvals\n\
                 waiting for approval … 0s, 1/2 approvals\n"
            )
        );
        assert_eq!(run.cache.len(), 1);
        assert_eq!(run.cache[0].token.expose(), "brk-approved");
        assert_eq!(run.cache[0].refs.len(), 1);
        assert_eq!(run.cache[0].jti.as_deref(), Some("j-approved"));
        let x = exchanges(&srv);
        assert_eq!(x.len(), 6);
        assert_eq!(
            (x[0].form("approval"), x[0].form("request_id")),
            (None, None)
        );
        assert_eq!(x[1].form("approval").as_deref(), Some("request"));
        for poll in &x[2..] {
            assert_eq!(poll.form("request_id").as_deref(), Some(RQ));
            assert_eq!(poll.form("approval"), None);
        }
        for e in &x {
            assert_eq!(e.form("scope").as_deref(), Some("repo:acme/api:write"));
            assert_eq!(e.form("refs").as_deref(), Some("refs/heads/main"));
            assert_eq!(e.form("reason").as_deref(), Some("hotfix INC-42"));
            assert_eq!(e.form("subject_token").as_deref(), Some("ci-jwt"));
        }
    }

    #[tokio::test]
    async fn no_wait_prints_the_request_id_last() {
        let srv = scripted(vec![required(), pending(0, 1)]);
        let argv: Vec<&str> = HOTFIX.iter().copied().chain(["--no-wait"]).collect();
        let run = run_request(&srv, &argv, std::future::pending()).await;
        run.result.expect("filed");
        assert_eq!(run.out, format!("{RQ}\n"));
        assert!(
            run.err.starts_with("approval needed: request "),
            "{}",
            run.err
        );
        assert_eq!(exchanges(&srv).len(), 2, "filed, not polled");
        assert!(run.cache.is_empty());
    }

    #[tokio::test]
    async fn denied_and_expired_requests_end_with_one_line() {
        let denied = Reply::json(
            403,
            json!({"error": "access_denied", "error_description": "denied by bob (corp): not during the freeze",
                   "request_id": RQ, "state": "denied"}),
        );
        let srv = scripted(vec![required(), pending(0, 1), pending(0, 1), denied]);
        let run = run_request(&srv, HOTFIX, std::future::pending()).await;
        let e = run.result.expect_err("denied");
        assert_eq!(
            e.to_string(),
            format!("request {RQ}: denied by bob (corp): not during the freeze")
        );
        assert_eq!(e.exit_code(), 1);
        assert!(run.cache.is_empty());

        let expired = Reply::json(
            400,
            json!({"error": "expired_token", "error_description": format!("request {RQ} was not approved within 30 min"),
                   "request_id": RQ}),
        );
        let srv = scripted(vec![required(), pending(0, 1), expired]);
        let run = run_request(&srv, HOTFIX, std::future::pending()).await;
        let e = run.result.expect_err("expired");
        assert_eq!(
            e.to_string(),
            format!("request {RQ} was not approved within 30 min")
        );
        assert_eq!(e.exit_code(), 1);
        assert_eq!(exchanges(&srv).len(), 3, "no poll after the end");
    }

    /// Ctrl-C while waiting withdraws the request (as its requester) and exits with 130.
    #[tokio::test]
    async fn ctrl_c_cancels_the_request() {
        let srv = scripted(vec![required(), pending(0, 1)]);
        let run = run_request(&srv, HOTFIX, std::future::ready(())).await;
        let e = run.result.expect_err("cancelled");
        assert_eq!(e.to_string(), format!("request {RQ} cancelled"));
        assert_eq!(e.exit_code(), 130);
        let cancel: Vec<_> = srv
            .seen()
            .into_iter()
            .filter(|r| r.target.ends_with("/cancel"))
            .collect();
        assert_eq!(cancel.len(), 1);
        assert_eq!(cancel[0].method, "POST");
        assert_eq!(cancel[0].target, format!("/v1/requests/{RQ}/cancel"));
        assert_eq!(cancel[0].header("authorization"), Some("Bearer ci-jwt"));
        let body: serde_json::Value = serde_json::from_str(&cancel[0].body).expect("json");
        assert_eq!(body, json!({"reason": "cancelled by the requester"}));
        assert_eq!(exchanges(&srv).len(), 2, "no poll after Ctrl-C");
    }

    /// --wait reads what the request asks for from the broker and polls with exactly that.
    #[tokio::test]
    async fn wait_resumes_an_earlier_request() {
        let srv = scripted(vec![pending(0, 1), token()]);
        let run = run_request(&srv, &["request", "--wait", RQ], std::future::pending()).await;
        run.result.expect("granted");
        assert!(
            run.out.contains("granted:  repo:acme/api:write"),
            "{}",
            run.out
        );
        let get = &srv.seen()[1];
        assert_eq!(
            (get.method.as_str(), get.target.clone()),
            ("GET", format!("/v1/requests/{RQ}"))
        );
        assert_eq!(get.header("authorization"), Some("Bearer ci-jwt"));
        let x = exchanges(&srv);
        assert_eq!(x.len(), 2);
        for poll in &x {
            assert_eq!(poll.form("request_id").as_deref(), Some(RQ));
            assert_eq!(poll.form("scope").as_deref(), Some("repo:acme/api:write"));
            assert_eq!(poll.form("refs").as_deref(), Some("refs/heads/main"));
            assert_eq!(poll.form("role").as_deref(), Some("prod-push"));
            assert_eq!(poll.form("ttl").as_deref(), Some("30m"));
            assert_eq!(poll.form("reason").as_deref(), Some("hotfix INC-42"));
        }
        assert_eq!(run.cache.len(), 1);
    }

    /// A role without approval: the request is granted at once, no filing.
    #[tokio::test]
    async fn a_plain_role_is_granted_at_once() {
        let srv = scripted(vec![token()]);
        let run = run_request(&srv, HOTFIX, std::future::ready(())).await;
        run.result.expect("granted");
        assert_eq!(run.err, "");
        assert_eq!(exchanges(&srv).len(), 1);
        assert_eq!(run.cache.len(), 1);
    }
}
