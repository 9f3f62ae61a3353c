//! The credential helper itself: `get` finds the scope git needs, answers from the token
//! cache or exchanges an identity at the broker; `erase` drops the repository's cached tokens
//! (and says why the server refused, when its challenge tells); `store` has nothing to do.
//! Only protocol goes to `out`; at most one line goes to `err`, and never a secret. A role
//! that needs a person's approval fails fast — no retry, no prompt — with one line saying
//! what to run (`git jit request …`): git must never hang waiting for a person.
//! A request for a URL that is not the configured broker's (or a Git server recorded by
//! `git jit setup`) gets no answer at all, so git goes on to its other helpers.

use std::io::{BufRead, Write};

use jit_proto::api::ServerMetadata;
use jit_proto::approval::RequestState;
use jit_proto::{RepoPath, Scope};

pub use crate::broker::Extras;
use crate::broker::{BrokerClient, BrokerError, Exchange};
use crate::cache::{CacheError, CachedToken, TokenCache};
use crate::challenge::{self, ChallengeError};
use crate::config::{Env, Settings};
use crate::identity::{self, IdentityError, Lookup, Source, SubjectToken};
use crate::origin::{self, Destination, OriginError};
use crate::protocol::{Answer, ProtocolError, Request};

/// The git credential helper of git-jit: prints short-lived tokens for git. git runs it as
/// `git credential-jit get` once `git jit setup URL` has configured it.
#[derive(Debug, clap::Parser)]
#[command(name = "git-credential-jit", version)]
pub struct CredentialArgs {
    /// The broker's URL. Default: $GIT_JIT_BROKER, config.toml, or the Git URL's origin.
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// get, store or erase (sent by git); anything else is ignored.
    pub operation: String,
}

/// Why the helper could not answer.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// Reading or writing the protocol failed.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The needed scope could not be determined.
    #[error(transparent)]
    Challenge(#[from] ChallengeError),
    /// No broker URL: neither configured nor derivable from the request.
    #[error(
        "no broker configured: set GIT_JIT_BROKER, `broker` in config.toml, or run `git jit setup <URL>`"
    )]
    NoBroker,
    /// git asked about a URL the broker's tokens do not go to.
    #[error(transparent)]
    NotOurs(#[from] OriginError),
    /// Talking to the broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// No identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The token cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The role needs a person's approval: the broker's words and what to run.
    #[error("{0}")]
    NeedsApproval(String),
    /// The role needs a reason: the broker's words and what to run.
    #[error("{0}")]
    NeedsReason(String),
}

/// Everything the helper and `git jit` need from the outside world.
pub struct Context<'a> {
    /// The environment.
    pub env: Env<'a>,
    /// Merged settings.
    pub settings: Settings,
    /// The HTTP client, built on first use: loading the system's trust store costs
    /// milliseconds that a cached answer should not pay.
    pub http: std::sync::OnceLock<reqwest::Client>,
    /// The local clock (seconds since the epoch).
    pub clock: fn() -> i64,
}

impl Context<'_> {
    /// A client of the broker at `url`.
    pub fn broker(&self, url: &str) -> Result<BrokerClient, BrokerError> {
        let http = match self.http.get() {
            Some(c) => c.clone(),
            None => {
                let c = crate::http_client_for(url, self.env).map_err(|e| {
                    BrokerError::Unreachable {
                        url: url.to_owned(),
                        cause: format!("cannot build the HTTP client: {e}"),
                    }
                })?;
                self.http.get_or_init(|| c).clone()
            }
        };
        Ok(BrokerClient::new(url, http)?.with_clock(self.clock))
    }

    /// The token cache.
    pub fn cache(&self) -> TokenCache {
        TokenCache::new(&self.settings.dirs.cache)
    }

    /// The configured broker, or the origin of the Git URL (the gateway is the broker).
    pub fn broker_url(&self, req: Option<&Request>) -> Result<String, HelperError> {
        if let Some(b) = &self.settings.broker {
            return Ok(b.clone());
        }
        match req.map(|r| (r.protocol.as_deref(), r.host.as_deref())) {
            Some((Some(p @ ("http" | "https")), Some(h))) => Ok(format!("{p}://{h}")),
            _ => Err(HelperError::NoBroker),
        }
    }

    /// Which broker answers `req`, and the repository part of git's path: git's URL must be
    /// under the configured broker's URL or a recorded server's (scheme, host, port, path
    /// prefix on a segment boundary). Without a configured broker, the request's own origin
    /// is the broker and its tokens go back to it alone.
    pub fn route<'r>(&self, req: &'r Request) -> Result<Route<'r>, HelperError> {
        let broker = self.broker_url(Some(req))?;
        let mut allowed = vec![Destination::parse(&broker)?];
        if self.settings.broker.is_some() {
            for s in &self.settings.servers {
                allowed.push(Destination::parse(s)?);
            }
        }
        let path = origin::locate(&allowed, &broker, req)?;
        Ok(Route { broker, path })
    }
}

/// Where a credential request is answered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'r> {
    /// The broker's URL.
    pub broker: String,
    /// git's path below the broker's (or server's) path prefix: the repository.
    pub path: Option<&'r str>,
}

/// A token freshly obtained from the broker and cached.
#[derive(Debug, Clone)]
pub struct Obtained {
    /// The cache entry written.
    pub token: CachedToken,
    /// The identity that was exchanged.
    pub source: Source,
    /// The broker's clock minus ours, when more than a minute off.
    pub skew: Option<i64>,
    /// Whether writing the cache failed (the token is still usable).
    pub cache_failed: bool,
}

/// Exchanges the first available identity for `scope` and caches the result.
pub async fn obtain(
    ctx: &Context<'_>,
    broker: &BrokerClient,
    scope: &Scope,
    extras: Extras<'_>,
) -> Result<Obtained, HelperError> {
    Exchanger::new(ctx, broker)
        .await?
        .obtain(scope, extras)
        .await
}

/// A broker ready for exchanges: its metadata read once and where identities may go
/// settled, so that polling an approval request costs one exchange per poll, each with a
/// fresh subject token.
pub struct Exchanger<'a> {
    ctx: &'a Context<'a>,
    broker: &'a BrokerClient,
    md: ServerMetadata,
    base: String,
    /// The audience of CI identities; `None` when the broker is not the configured one.
    audience: Option<String>,
}

impl<'a> Exchanger<'a> {
    /// Reads the broker's metadata.
    pub async fn new(ctx: &'a Context<'a>, broker: &'a BrokerClient) -> Result<Self, HelperError> {
        let base = broker.base();
        // Identities go only to the configured broker, CI tokens for the configured audience.
        let configured = ctx
            .settings
            .broker
            .as_deref()
            .map(BrokerClient::base_of)
            .transpose()?;
        let audience = (configured.as_deref() == Some(base.as_str())).then(|| {
            ctx.settings
                .audience
                .clone()
                .unwrap_or_else(|| base.clone())
        });
        let md = broker.metadata().await?;
        Ok(Self {
            ctx,
            broker,
            md,
            base,
            audience,
        })
    }

    /// The broker.
    pub fn broker(&self) -> &BrokerClient {
        self.broker
    }

    /// The broker's metadata.
    pub fn metadata(&self) -> &ServerMetadata {
        &self.md
    }

    /// The first available identity, fresh (a login session's ID token is refreshed when
    /// about to expire).
    pub async fn subject(&self) -> Result<SubjectToken, HelperError> {
        let lookup = Lookup {
            env: self.ctx.env,
            settings: &self.ctx.settings,
            http: self.broker.http(),
            metadata: &self.md,
            broker: &self.base,
            pinned: self.audience.as_deref(),
            clock: self.ctx.clock,
        };
        Ok(identity::subject_token(&lookup).await?)
    }

    /// Exchanges a fresh identity for `scope` and caches the token.
    pub async fn obtain(&self, scope: &Scope, extras: Extras<'_>) -> Result<Obtained, HelperError> {
        let subject = self.subject().await?;
        let ask = Exchange {
            subject_token: &subject.token,
            subject_token_type: subject.token_type,
            scope,
            extras,
        };
        let g = self.broker.exchange(&self.md, &ask).await?;
        // The broker grants exactly what was asked; its answer wins if it says otherwise.
        let granted = Scope::parse(&g.response.scope).unwrap_or_else(|_| scope.clone());
        let token = CachedToken {
            broker: self.base.clone(),
            scope: granted,
            refs: extras.refs.to_vec(),
            token: g.response.access_token,
            expires_at: g.expires_at,
            jti: g.response.jti,
        };
        let cache_failed = self
            .ctx
            .cache()
            .put(token.clone(), (self.ctx.clock)())
            .is_err();
        Ok(Obtained {
            token,
            source: subject.source,
            skew: g.skew,
            cache_failed,
        })
    }
}

/// The one line the credential helper shows for an approval answer: the broker's words,
/// and the command that asks (or waits) for approval unless the words already name it.
pub fn approval_line(e: &BrokerError, scope: &Scope) -> String {
    let said = e.to_string();
    if said.contains("git jit request") {
        return said;
    }
    let details = match e {
        BrokerError::ApprovalRequired { details, .. }
        | BrokerError::ApprovalPending { details, .. } => Some(details),
        _ => None,
    };
    let waiting = details.and_then(|d| {
        let pending = matches!(d.state, None | Some(RequestState::Pending));
        d.request_id.as_ref().filter(|_| pending)
    });
    if let Some(id) = waiting {
        return format!("{said}; wait for it with: git jit request --wait {id}");
    }
    let role = details
        .and_then(|d| d.role.as_deref())
        .map(|r| format!(" --role {}", jit_proto::display::clean(r)))
        .unwrap_or_default();
    format!(
        "{said}; ask for it with: git jit request --repo {} --action {}{role} --reason \"…\"",
        scope.repo, scope.actions
    )
}

/// The one line the credential helper shows when the role needs a reason: the broker's
/// words, completed with the command that gives one unless they already name it (git owns
/// the terminal, so the helper cannot ask; `git jit request` does).
pub fn reason_line(said: &str, scope: &Scope) -> String {
    if said.contains("git jit request") {
        return said.to_owned();
    }
    format!(
        "{said}; run: git jit request --repo {} --action {} --reason \"…\"",
        scope.repo, scope.actions
    )
}

/// What the helper says when git passed no challenge (git before 2.41): read access was
/// asked for, and the one command after which a push works too.
pub fn old_git_note(repo: &RepoPath) -> String {
    format!(
        "git did not pass the server's challenge (git older than 2.41?), so read access to {repo} was asked for; \
         to push, run `git jit request --repo {repo} --action read,write` (the helper then uses that token for \
         this repository) or upgrade git"
    )
}

/// `get`: the answer and at most one line for the person.
pub async fn get(
    ctx: &Context<'_>,
    req: &Request,
) -> Result<(Answer, Option<String>), HelperError> {
    let Route { broker: url, path } = ctx.route(req)?;
    let (scope, from_challenge) = challenge::needed_scope(&req.wwwauth, path)?;
    let (base, now) = (BrokerClient::base_of(&url)?, (ctx.clock)());
    // Without a challenge a push looks like a fetch: the broadest token the person asked
    // for (`git jit request --action read,write`) serves both.
    let cached = if from_challenge {
        ctx.cache().find(&base, &scope, now)?
    } else {
        ctx.cache().find_widest(&base, &scope.repo, now)?
    };
    if let Some(t) = cached {
        return Ok((Answer::for_token(req, t.token, t.expires_at), None));
    }
    let broker = ctx.broker(&url)?;
    let got = match obtain(ctx, &broker, &scope, Extras::default()).await {
        // git must not wait for a person: say what to run, once.
        Err(HelperError::Broker(e)) if e.is_approval() => {
            return Err(HelperError::NeedsApproval(approval_line(&e, &scope)));
        }
        Err(HelperError::Broker(BrokerError::ReasonRequired { description })) => {
            return Err(HelperError::NeedsReason(reason_line(&description, &scope)));
        }
        other => other?,
    };
    let note = if !from_challenge && req.capabilities.is_empty() {
        Some(old_git_note(&scope.repo))
    } else if let Some(s) = got.skew {
        Some(format!(
            "warning: this machine's clock is {}s off the broker's; fix the clock",
            s.abs()
        ))
    } else if got.cache_failed {
        Some(format!(
            "warning: cannot write the token cache in {}",
            ctx.settings.dirs.cache.display()
        ))
    } else {
        None
    };
    Ok((
        Answer::for_token(req, got.token.token, got.token.expires_at),
        note,
    ))
}

/// `erase`: drops the repository's cached tokens; returns the server's stated reason for
/// refusing the token, when its Bearer challenge carries an `error_description`.
pub fn erase(ctx: &Context<'_>, req: &Request) -> Result<Option<String>, HelperError> {
    // Another server's refusal is none of git-jit's business.
    let Ok(Route { broker: url, path }) = ctx.route(req) else {
        return Ok(None);
    };
    let repo: Option<RepoPath> = match challenge::needed_scope(&req.wwwauth, path) {
        Ok((scope, _)) => Some(scope.repo),
        Err(_) => None,
    };
    if let Some(repo) = repo {
        ctx.cache()
            .remove_repo(&BrokerClient::base_of(&url)?, &repo)?;
    }
    let why = req
        .wwwauth
        .iter()
        .filter_map(|v| jit_proto::challenge::parse_challenges(v).ok())
        .flatten()
        .filter(|c| c.is("bearer"))
        .find_map(|c| c.param("error_description").map(str::to_owned));
    Ok(why.map(|d| format!("the server refused the token: {d}")))
}

/// Runs one helper operation: reads the request from `input`, writes protocol to `out` and
/// at most one line to `err`. Returns the process exit code.
pub async fn run<R: BufRead, W: Write, E: Write>(
    ctx: &Context<'_>,
    operation: &str,
    input: R,
    mut out: W,
    mut err: E,
) -> i32 {
    let req = match Request::read(input) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "git-jit: {e}");
            return 1;
        }
    };
    let (result, note) = match operation {
        "get" => match get(ctx, &req).await {
            Ok((answer, note)) => (answer.write(&mut out).map_err(HelperError::from), note),
            // Not git-jit's URL: no answer, so git asks its other helpers (or fails).
            Err(e @ HelperError::NotOurs(_)) => (Err(e), None),
            Err(e) => {
                // Tell git to stop: no other helper or prompt can produce a git-jit token.
                let _ = Answer::Quit.write(&mut out);
                (Err(e), None)
            }
        },
        "erase" => match erase(ctx, &req) {
            Ok(note) => (Ok(()), note),
            Err(e) => (Err(e), None),
        },
        // `store` and operations from future git versions: nothing to do.
        _ => (Ok(()), None),
    };
    // Servers' words (a challenge's `error_description`, a host git was given) reach the
    // person's terminal: one line, escapes made visible.
    let line = |text: &str| format!("git-jit: {}", jit_proto::display::clean(text));
    match result {
        Ok(()) => {
            if let Some(n) = note {
                let _ = writeln!(err, "{}", line(&n));
            }
            0
        }
        Err(e) => {
            let _ = writeln!(err, "{}", line(&e.to_string()));
            // `quit=1` already tells git to stop; a zero exit keeps git's own message short.
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dirs;
    use crate::testserver::{Reply, TestServer, client};
    use serde_json::json;
    use std::collections::HashMap;

    /// A broker that grants `repo:acme/api:<actions>` for whatever is asked, except refs
    /// under `refs/heads/main`.
    fn broker() -> TestServer {
        TestServer::start(|r| {
            if let Some(prefix) = r
                .target
                .strip_suffix("/.well-known/oauth-authorization-server")
            {
                return Reply::json(
                    200,
                    json!({
                        "issuer": "b", "token_endpoint": format!("http://{}{prefix}/oauth/token", r.header("host").unwrap_or("")),
                        "introspection_endpoint": "i", "jwks_uri": "j", "grant_types_supported": [],
                        "token_audience": "git", "subject_token_audience": "git-jit", "scope_syntax": "",
                    }),
                );
            }
            if r.form("subject_token").as_deref() == Some("approval-jwt") {
                return Reply::json(
                    403,
                    json!({"error": "approval_required", "error_description": "role prod-push needs approval by bob (corp)",
                           "role": "prod-push", "approvers": ["bob (corp)"]}),
                );
            }
            if r.form("subject_token").as_deref() == Some("waiting-jwt") {
                return Reply::json(
                    403,
                    json!({"error": "approval_required", "error_description": "your request rq_abcdefghijklmnopqrstuvwxyz is still pending",
                           "request_id": "rq_abcdefghijklmnopqrstuvwxyz", "state": "pending"}),
                );
            }
            if r.form("subject_token").as_deref() == Some("denied-jwt") {
                return Reply::json(
                    403,
                    json!({"error": "access_denied", "error_description": "no role lets ci write acme/api"}),
                );
            }
            Reply::json(
                200,
                json!({
                    "access_token": format!("brk-{}", r.form("scope").unwrap_or_default()),
                    "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "token_type": "Bearer", "expires_in": 600, "scope": r.form("scope"), "jti": "j1",
                }),
            )
        })
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        settings: Settings,
        env: HashMap<String, String>,
    }

    fn fixture(srv: &TestServer, ci_token: &str) -> Fixture {
        let tmp = tempfile::tempdir().expect("tmp");
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
        let env = HashMap::from([("GIT_JIT_ID_TOKEN".to_owned(), ci_token.to_owned())]);
        Fixture {
            _tmp: tmp,
            settings,
            env,
        }
    }

    /// Runs the helper; `host=h` in `input` stands for the configured broker's host.
    async fn helper(f: &Fixture, op: &str, input: &str) -> (i32, String, String) {
        let broker = f.settings.broker.as_deref().unwrap_or("http://h");
        let host = broker["http://".len()..].split('/').next().unwrap_or("h");
        let input = &input.replace("host=h\n", &format!("host={host}\n"));
        let env = |k: &str| f.env.get(k).cloned();
        let ctx = Context {
            env: &env,
            settings: f.settings.clone(),
            http: std::sync::OnceLock::from(client()),
            clock: || 1000,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&ctx, op, input.as_bytes(), &mut out, &mut err).await;
        (
            code,
            String::from_utf8(out).expect("utf8"),
            String::from_utf8(err).expect("utf8"),
        )
    }

    const PUSH: &str = "capability[]=authtype\nprotocol=http\nhost=h\npath=acme/api.git\n\
        wwwauth[]=Bearer realm=\"git-jit\", scope=\"repo:acme/api:write\"\nwwwauth[]=Basic realm=\"git-jit\"\n\n";

    #[tokio::test]
    async fn get_exchanges_then_reuses_the_cache() {
        let srv = broker();
        let f = fixture(&srv, "ci-jwt");
        let (code, out, err) = helper(&f, "get", PUSH).await;
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "capability[]=authtype\nauthtype=Bearer\ncredential=brk-repo:acme/api:write\n\
             password_expiry_utc=1600\nephemeral=1\n"
        );
        assert_eq!(err, "");
        let (_, again, _) = helper(&f, "get", PUSH).await;
        assert_eq!(again, out);
        let posts = srv
            .seen()
            .into_iter()
            .filter(|r| r.method == "POST")
            .count();
        assert_eq!(posts, 1, "second get answered from the cache");
        let post = srv
            .seen()
            .into_iter()
            .find(|r| r.method == "POST")
            .expect("post");
        assert_eq!(post.form("subject_token").as_deref(), Some("ci-jwt"));
    }

    #[tokio::test]
    async fn old_git_gets_basic_and_one_hint() {
        let srv = broker();
        let f = fixture(&srv, "ci-jwt");
        let (code, out, err) =
            helper(&f, "get", "protocol=http\nhost=h\npath=acme/api.git\n").await;
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "username=x-jit\npassword=brk-repo:acme/api:read\npassword_expiry_utc=1600\n"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("git jit request --repo acme/api --action read,write"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn denial_quits_with_the_brokers_reason() {
        let srv = broker();
        let f = fixture(&srv, "denied-jwt");
        let (code, out, err) = helper(&f, "get", PUSH).await;
        assert_eq!(code, 0);
        assert_eq!(out, "quit=1\n");
        assert_eq!(err, "git-jit: no role lets ci write acme/api\n");
        assert!(!err.contains("denied-jwt"), "never a secret on stderr");
    }

    /// A role that needs approval: git is told at once, in one line, what to run; the
    /// broker is asked exactly once (no retry), nothing is cached, git stops.
    #[tokio::test]
    async fn approval_required_fails_fast_with_one_line() {
        let srv = broker();
        let f = fixture(&srv, "approval-jwt");
        let (code, out, err) = helper(&f, "get", PUSH).await;
        assert_eq!((code, out.as_str()), (0, "quit=1\n"));
        assert_eq!(
            err,
            "git-jit: role prod-push needs approval by bob (corp); ask for it with: \
             git jit request --repo acme/api --action write --role prod-push --reason \"…\"\n"
        );
        let posts = srv.seen().iter().filter(|r| r.method == "POST").count();
        assert_eq!(posts, 1, "exactly one exchange");
        assert!(
            TokenCache::new(&f.settings.dirs.cache)
                .entries()
                .expect("e")
                .is_empty()
        );

        let srv = broker();
        let f = fixture(&srv, "waiting-jwt");
        let (_, out, err) = helper(&f, "get", PUSH).await;
        assert_eq!(out, "quit=1\n");
        assert_eq!(
            err,
            "git-jit: your request rq_abcdefghijklmnopqrstuvwxyz is still pending; wait for it with: \
             git jit request --wait rq_abcdefghijklmnopqrstuvwxyz\n"
        );
        assert_eq!(srv.seen().iter().filter(|r| r.method == "POST").count(), 1);
    }

    /// The broker's words naming the command already are shown as they are.
    #[test]
    fn an_approval_line_does_not_repeat_the_command() {
        let scope = Scope::parse("repo:acme/api:write").expect("scope");
        let e = BrokerError::ApprovalRequired {
            description: "run `git jit request --repo acme/api --reason …`".into(),
            details: Box::default(),
        };
        assert_eq!(
            approval_line(&e, &scope),
            "run `git jit request --repo acme/api --reason …`"
        );
        let e = BrokerError::ApprovalDenied {
            description: "denied by bob: no".into(),
            request_id: None,
        };
        assert!(
            approval_line(&e, &scope)
                .ends_with("git jit request --repo acme/api --action write --reason \"…\""),
            "{}",
            approval_line(&e, &scope)
        );
    }

    #[tokio::test]
    async fn not_logged_in_says_what_to_do() {
        let srv = TestServer::start(|r| {
            Reply::json(
                200,
                json!({
                    "issuer": "b", "token_endpoint": format!("http://{}/oauth/token", r.header("host").unwrap_or("")), "introspection_endpoint": "i", "jwks_uri": "j",
                    "grant_types_supported": [], "token_audience": "git", "subject_token_audience": "a",
                    "login_issuer": "https://idp", "login_client_id": "cli", "scope_syntax": "",
                }),
            )
        });
        let mut f = fixture(&srv, "");
        f.env.clear();
        let (_, out, err) = helper(&f, "get", PUSH).await;
        assert_eq!(out, "quit=1\n");
        assert_eq!(err, "git-jit: not logged in: run `git jit login`\n");
    }

    #[tokio::test]
    async fn unreachable_broker_names_it() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("a")
            .port();
        let srv = broker();
        let mut f = fixture(&srv, "ci-jwt");
        f.settings.broker = Some(format!("http://127.0.0.1:{port}"));
        let (_, out, err) = helper(&f, "get", PUSH).await;
        assert_eq!(out, "quit=1\n");
        assert!(
            err.starts_with(&format!(
                "git-jit: cannot reach the broker at http://127.0.0.1:{port}/"
            )),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }

    #[tokio::test]
    async fn erase_drops_the_cache_and_says_why() {
        let srv = broker();
        let f = fixture(&srv, "ci-jwt");
        helper(&f, "get", PUSH).await;
        assert_eq!(
            TokenCache::new(&f.settings.dirs.cache)
                .entries()
                .expect("e")
                .len(),
            1
        );
        let rejected = "protocol=http\nhost=h\npath=acme/api.git\ncapability[]=authtype\n\
            authtype=Bearer\ncredential=brk\nwwwauth[]=Bearer realm=\"git-jit\", scope=\"repo:acme/api:write\", \
            error=\"invalid_token\", error_description=\"revoked by sec-team: INC-7\"\n";
        let (code, out, err) = helper(&f, "erase", rejected).await;
        assert_eq!((code, out.as_str()), (0, ""));
        assert_eq!(
            err,
            "git-jit: the server refused the token: revoked by sec-team: INC-7\n"
        );
        assert!(
            TokenCache::new(&f.settings.dirs.cache)
                .entries()
                .expect("e")
                .is_empty()
        );
        let (_, _, err) = helper(&f, "store", rejected).await;
        assert_eq!(err, "");
    }

    /// A server's words reach the terminal inert: one line, escapes shown, not obeyed (the
    /// challenge parser already refuses C0 controls; a bidi override is valid text there).
    #[tokio::test]
    async fn a_servers_words_cannot_drive_the_terminal() {
        let srv = broker();
        let f = fixture(&srv, "ci-jwt");
        let rejected = "protocol=http\nhost=h\npath=acme/api.git\n\
            wwwauth[]=Bearer scope=\"repo:acme/api:read\", error_description=\"\u{202e}txt.exe\"\n";
        let (_, _, err) = helper(&f, "erase", rejected).await;
        assert_eq!(
            err,
            "git-jit: the server refused the token: \\u{202e}txt.exe\n"
        );
    }

    #[tokio::test]
    async fn bad_input_writes_nothing_to_stdout() {
        let srv = broker();
        let f = fixture(&srv, "ci-jwt");
        for bad in [
            "host=h\0\n",
            "path=acme/api.git\rhost=evil\n",
            "host=h\nhost=i\n",
        ] {
            let (code, out, err) = helper(&f, "get", bad).await;
            assert_eq!((code, out.as_str()), (1, ""), "{bad:?}");
            assert_eq!(err.lines().count(), 1);
        }
        let (_, out, err) = helper(&f, "get", "protocol=http\nhost=h\npath=acme/../x.git\n").await;
        assert_eq!(out, "quit=1\n");
        assert!(err.contains("is not valid"), "{err}");
    }

    /// Regression: a credential request for another host was answered with the broker's
    /// token. Now git gets no answer at all (it asks its other helpers), one line on stderr
    /// says why, and neither the cache nor the broker is touched.
    #[tokio::test]
    async fn a_request_for_another_host_gets_no_answer() {
        let srv = broker();
        let f = fixture(&srv, "ci-jwt");
        let (_, out, _) = helper(&f, "get", PUSH).await;
        assert!(out.contains("credential=brk-repo:acme/api:write"), "{out}");
        let seen = srv.seen().len();
        let port = srv.url.rsplit(':').next().expect("port");
        let other_port = format!("host=127.0.0.1:{}\n", u16::MAX);
        let localhost = format!("host=localhost:{port}\n");
        for (from, to) in [
            ("host=h\n", "host=evil.example\n"),
            ("host=h\n", other_port.as_str()),
            ("host=h\n", localhost.as_str()),
            ("protocol=http\n", "protocol=https\n"),
        ] {
            let input = PUSH.replace(from, to);
            let (code, out, err) = helper(&f, "get", &input).await;
            assert_eq!((code, out.as_str()), (0, ""), "{to}");
            assert!(err.starts_with("git-jit: not answering for"), "{err}");
            assert!(err.contains(&srv.url), "names where tokens go: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(!err.contains("brk-") && !err.contains("ci-jwt"), "{err}");
            let (code, out, err) = helper(&f, "erase", &input).await;
            assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""), "{to}");
        }
        assert_eq!(srv.seen().len(), seen, "nothing was asked of the broker");
        assert_eq!(
            TokenCache::new(&f.settings.dirs.cache)
                .entries()
                .expect("e")
                .len(),
            1,
            "erase for another host left the cache alone"
        );
    }

    /// A Git server recorded by `git jit setup` (an nginx front) takes the broker's tokens.
    #[tokio::test]
    async fn a_recorded_server_is_answered() {
        let srv = broker();
        let mut f = fixture(&srv, "ci-jwt");
        f.settings.servers = vec![format!("http://127.0.0.1:{}/git", u16::MAX)];
        let input = PUSH.replace(
            "host=h\npath=acme/api.git",
            &format!("host=127.0.0.1:{}\npath=git/acme/api.git", u16::MAX),
        );
        let (_, out, err) = helper(&f, "get", &input).await;
        assert!(
            out.contains("credential=brk-repo:acme/api:write"),
            "{out} {err}"
        );
        let (_, out, err) = helper(&f, "get", &input.replace("path=git/", "path=")).await;
        assert_eq!(out, "", "outside the server's prefix");
        assert!(err.contains("not answering"), "{err}");
    }

    /// Regression: with the broker under a path prefix, a challenge for `acme/api` was
    /// accepted on the path `git/evil/acme/api.git` (a suffix match). The repository after
    /// the prefix must be exactly the challenge's; a path outside the prefix gets no answer.
    #[tokio::test]
    async fn a_challenge_for_a_suffix_of_the_path_is_refused() {
        let srv = broker();
        let mut f = fixture(&srv, "ci-jwt");
        f.settings.broker = Some(format!("{}/git", srv.url));
        let input = PUSH.replace("path=acme/api.git", "path=git/evil/acme/api.git");
        let (code, out, err) = helper(&f, "get", &input).await;
        assert_eq!((code, out.as_str()), (0, "quit=1\n"));
        assert!(
            err.contains(
                "asked for repository repo:acme/api:write but git is fetching \"evil/acme/api.git\""
            ),
            "{err}"
        );
        assert!(
            srv.seen().iter().all(|r| r.method != "POST"),
            "no exchange for a mismatched challenge"
        );
        let input = PUSH.replace("path=acme/api.git", "path=evil/acme/api.git");
        let (_, out, err) = helper(&f, "get", &input).await;
        assert_eq!(out, "", "outside the prefix: {err}");
        let input = PUSH.replace("path=acme/api.git", "path=git/acme/api.git");
        let (_, out, err) = helper(&f, "get", &input).await;
        assert!(
            out.contains("credential=brk-repo:acme/api:write"),
            "{out} {err}"
        );
    }

    /// CI identities go to the configured broker only: without one, the broker is the Git
    /// URL's origin, and the helper refuses to send it the job's identity.
    #[tokio::test]
    async fn no_ci_identity_for_a_broker_from_the_git_url() {
        let srv = broker();
        let mut f = fixture(&srv, "ci-jwt");
        let host = srv.url["http://".len()..].to_owned();
        f.settings.broker = None;
        let input = PUSH.replace("host=h\n", &format!("host={host}\n"));
        let (_, out, err) = helper(&f, "get", &input).await;
        assert_eq!(out, "quit=1\n");
        assert!(
            err.contains("refusing to send the environment variable GIT_JIT_ID_TOKEN identity"),
            "{err}"
        );
        assert!(!err.contains("ci-jwt"), "{err}");
        assert!(srv.seen().iter().all(|r| r.method != "POST"), "no exchange");
    }
}
