//! The person's and the CI job's whole experience, end to end: `git jit setup`, `git jit
//! login` (device flow approved at the real oidc-provider), then plain `git clone` / `git push`
//! through the gateway with `git-credential-jit` answering git; a refused ref and a revocation
//! explained in git's output; and the same with no login under GitHub Actions variables.
//! No token is ever printed to stderr or logged by the broker. The helper answers only for
//! the broker it was set up for, and only for the repository a challenge names exactly.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use jit_e2e::bins::{bin_dir, generate_keys};
use jit_e2e::oidc::CLI_CLIENT;
use jit_e2e::{
    BrokerProcess, CiIssuer, GitClient, GitServer, GitServerConfig, OidcProvider, RedisServer,
};
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::support::{assert_no_jwt, corp_broker, revoke};

const UPSTREAM_USER: &str = "git-jit";
const PASSWORD_ENV: &str = "JIT_UPSTREAM_PASSWORD";
const GITHUB_POLICY: &str = include_str!("../../deploy/policies/github-actions.toml");

fn config(keys: &Path, redis: &str, sso: &str, ci: &CiIssuer, git: &GitServer) -> String {
    let github = GITHUB_POLICY
        .replace(
            "https://token.actions.githubusercontent.com",
            &ci.platform_issuer("github"),
        )
        .replace("https://jit.example.com", "{{URL}}");
    format!(
        r#"
{base}
{sso}

[[role]]
name = "dev-read"
issuer = "corp"
claims = {{ groups = "engineering", email = "*@example.com" }}
repositories = ["acme/*"]
actions = ["read"]

[[role]]
name = "dev-feature-push"
issuer = "corp"
claims = {{ groups = "engineering", email = "*@example.com" }}
repositories = ["acme/*"]
actions = ["write"]
refs = ["refs/heads/feature/**"]

[[admin.identity]]
issuer = "corp"
claims = {{ groups = "git-jit-admins" }}

[[upstream]]
repositories = ["acme/**"]
url = "{upstream}"
credential = {{ kind = "basic", username = "{UPSTREAM_USER}", password_env = "{PASSWORD_ENV}" }}

{github}
"#,
        base = crate::support::broker_base(keys, redis, None),
        sso = crate::support::sso_issuer(sso),
        upstream = git.base_url(),
    )
}

/// A git client whose PATH finds `git-jit` and `git-credential-jit` first.
pub(crate) fn client() -> Result<GitClient> {
    let mut git = GitClient::new()?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin_dir()?];
    dirs.extend(std::env::split_paths(&path));
    git.env("PATH", std::env::join_paths(dirs)?);
    Ok(git)
}

/// Every stderr a test saw, to check for tokens at the end.
#[derive(Default)]
pub(crate) struct Transcript(pub(crate) String);

impl Transcript {
    /// No line is printed twice within one command's stderr (one section of the transcript).
    pub(crate) fn assert_no_line_twice(&self) {
        for section in self.0.split("--- ").filter(|s| !s.is_empty()) {
            let mut seen = std::collections::HashSet::new();
            for line in section.lines().skip(1).filter(|l| !l.trim().is_empty()) {
                assert!(
                    seen.insert(line),
                    "printed twice: {line:?} in\n--- {section}"
                );
            }
        }
    }

    pub(crate) fn keep(&mut self, what: &str, stderr: &str) {
        self.0.push_str(&format!("--- {what}\n{stderr}"));
    }
}

/// Runs git, expecting success and nothing on stdout; keeps its stderr.
pub(crate) async fn quiet(git: &GitClient, t: &mut Transcript, args: &[&str]) -> Result<()> {
    let out = git.run(args).await?;
    t.keep(&args.join(" "), &String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(
        out.stdout.is_empty(),
        "git {args:?} printed on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

pub(crate) async fn fails(git: &GitClient, t: &mut Transcript, args: &[&str]) -> Result<String> {
    let stderr = git.run_expect_failure(args).await?;
    t.keep(&args.join(" "), &stderr);
    Ok(stderr)
}

/// Reads `lines` (a command's stderr, kept in `said`) until `pick` finds what it wants in a
/// line, within 20 s a line; fails naming `command` and `what` when it ends or stalls first.
pub(crate) async fn first_line_with<R: tokio::io::AsyncRead + Unpin>(
    lines: &mut tokio::io::Lines<BufReader<R>>,
    said: &mut String,
    command: &str,
    what: &str,
    pick: impl Fn(&str) -> Option<String>,
) -> Result<String> {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .with_context(|| format!("{command} printed no {what}"))??
            .with_context(|| format!("{command} ended without {what}:\n{said}"))?;
        said.push_str(&line);
        said.push('\n');
        if let Some(found) = pick(&line) {
            return Ok(found);
        }
    }
}

/// `git jit login` as a person would run it: reads the user code from its stderr, approves
/// it at the provider as `account`, and waits for the command to finish.
pub(crate) async fn login(
    git: &GitClient,
    op: &OidcProvider,
    account: &str,
    t: &mut Transcript,
) -> Result<()> {
    let mut child = git
        .command(["jit", "login"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let mut prompt = String::new();
    let code = first_line_with(&mut lines, &mut prompt, "git jit login", "a code", |line| {
        line.split("enter the code ")
            .nth(1)
            .map(|code| code.trim().to_owned())
    })
    .await?;
    op.approve_device(&code, account).await?;
    let started = Instant::now();
    let (status, rest) = tokio::time::timeout(Duration::from_secs(40), async {
        let mut rest = String::new();
        while let Some(line) = lines.next_line().await? {
            rest.push_str(&line);
            rest.push('\n');
        }
        anyhow::Ok((child.wait().await?, rest))
    })
    .await
    .context("git jit login did not finish after approval")??;
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        use tokio::io::AsyncReadExt as _;
        out.read_to_string(&mut stdout).await?;
    }
    t.keep("git jit login", &format!("{prompt}{rest}"));
    if !status.success() {
        bail!("git jit login failed ({status}):\n{prompt}{rest}");
    }
    assert!(
        stdout.contains(&format!("Logged in as {account}")),
        "stdout: {stdout}\nstderr: {prompt}{rest}"
    );
    eprintln!(
        "git jit login finished {:.1} s after approval",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn helper_setup_login_then_plain_git_clone_push_refusal_and_revocation() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let op = OidcProvider::start().await?;
        let ci = CiIssuer::start().await?;
        let password = format!("upstream-{}", jit_e2e::random_token(12));
        let upstream = GitServer::start_with(GitServerConfig {
            basic_auth: Some((UPSTREAM_USER.into(), password.clone())),
            ..Default::default()
        })
        .await?;
        upstream.create_repo("acme/api")?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let text = config(keys.path(), &redis.url(), &op.issuer(), &ci, &upstream);
        let broker = BrokerProcess::start_with_env(&text, &[(PASSWORD_ENV, &password)]).await?;
        let gateway = broker.url();
        let repo_url = format!("{gateway}/acme/api.git");
        let mut t = Transcript::default();

        let git = client()?;
        let out = git.run(&["jit", "setup", &gateway]).await?;
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("git now asks git-jit for credentials"),
            "{}",
            jit_e2e::git_server::describe(&out)
        );
        login(&git, &op, "alice@example.com", &mut t).await?;

        // Plain git, no token anywhere in sight.
        quiet(&git, &mut t, &["clone", "--quiet", &repo_url, "api"]).await?;
        let wt = git.home().join("api");
        let wt_s = wt.to_string_lossy().into_owned();
        std::fs::write(wt.join("hello.txt"), "hello\n")?;
        git.run_in(&wt, &["add", "hello.txt"]).await?;
        git.run_in(&wt, &["commit", "--quiet", "-m", "hello"])
            .await?;
        quiet(
            &git,
            &mut t,
            &[
                "-C",
                &wt_s,
                "push",
                "--quiet",
                "origin",
                "HEAD:feature/hello",
            ],
        )
        .await?;
        assert_eq!(
            upstream.git_in_repo("acme/api", &["rev-parse", "refs/heads/feature/hello"])?,
            String::from_utf8_lossy(&git.run_in(&wt, &["rev-parse", "HEAD"]).await?.stdout).trim()
        );

        // Regression: a push larger than git's post buffer (1 MiB) makes git send a `0000` probe
        // without the Bearer header first; it used to get a 401 and the push failed.
        let mut noise = vec![0u8; 3 * 1024 * 1024];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut noise)
            .map_err(|_| anyhow::anyhow!("no randomness"))?;
        std::fs::write(wt.join("big.bin"), noise)?;
        git.run_in(&wt, &["add", "big.bin"]).await?;
        git.run_in(&wt, &["commit", "--quiet", "-m", "a 3 MiB blob"])
            .await?;
        quiet(
            &git,
            &mut t,
            &["-C", &wt_s, "push", "--quiet", "origin", "HEAD:feature/big"],
        )
        .await?;
        assert_eq!(
            upstream.git_in_repo("acme/api", &["rev-parse", "refs/heads/feature/big"])?,
            String::from_utf8_lossy(&git.run_in(&wt, &["rev-parse", "HEAD"]).await?.stdout).trim()
        );

        // The credential helper speaks nothing but protocol on stdout.
        let mut fill = git.command(["credential", "fill"]);
        fill.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = fill.spawn()?;
        {
            use tokio::io::AsyncWriteExt as _;
            let mut stdin = child.stdin.take().context("stdin")?;
            let port = broker.port();
            stdin
                .write_all(
                    format!("protocol=http\nhost=127.0.0.1:{port}\npath=acme/api.git\n\n")
                        .as_bytes(),
                )
                .await?;
        }
        let out = child.wait_with_output().await?;
        let answer = String::from_utf8_lossy(&out.stdout);
        t.keep("git credential fill", &String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{answer}");
        for line in answer.lines() {
            let key = line.split_once('=').map(|(k, _)| k).unwrap_or(line);
            assert!(
                [
                    "protocol",
                    "host",
                    "path",
                    "username",
                    "password",
                    "password_expiry_utc",
                    "capability[]",
                    "authtype",
                    "credential",
                    "ephemeral",
                ]
                .contains(&key),
                "not protocol on stdout: {line:?}"
            );
        }
        assert!(answer.contains("password_expiry_utc="), "{answer}");

        // A ref outside the grant: git shows the gateway's reason.
        let stderr = fails(&git, &mut t, &["-C", &wt_s, "push", "origin", "HEAD:main"]).await?;
        assert!(
            stderr.contains("git-jit: ref not allowed by grant: allowed refs/heads/feature/**"),
            "{stderr}"
        );

        // The security team revokes alice: the next fetch fails and says why.
        let admin = op.id_token("sec-admin", CLI_CLIENT).await?;
        let revoked = revoke(
            &gateway,
            &admin,
            "subject",
            "alice@example.com",
            "laptop lost",
        )
        .await?;
        assert!(revoked["at_most"].as_u64().unwrap_or(0) >= 2, "{revoked}");
        let stderr = fails(&git, &mut t, &["-C", &wt_s, "fetch"]).await?;
        assert!(stderr.contains("token has been revoked"), "{stderr}");
        // Nor can the same login session fetch a fresh token: it must authenticate again.
        let stderr = fails(&git, &mut t, &["-C", &wt_s, "fetch"]).await?;
        assert!(
            stderr.contains("was revoked; authenticate again"),
            "{stderr}"
        );

        // A CI job with no login: GitHub Actions' variables are enough.
        ci.set_actions_token(
            &ci.github_actions("acme/api")
                .rs256()
                .claim("repository_owner_id", "1234567"),
        );
        let mut job = client()?;
        job.env(
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            ci.actions_token_request_url(),
        )
        .env(
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
            ci.actions_token_request_token(),
        );
        job.run(&["jit", "setup", &gateway]).await?;
        quiet(&job, &mut t, &["clone", "--quiet", &repo_url, "api"]).await?;
        let jwt = job.home().join("api");
        let jwt_s = jwt.to_string_lossy().into_owned();
        std::fs::write(jwt.join("release.txt"), "1.0\n")?;
        job.run_in(&jwt, &["add", "release.txt"]).await?;
        job.run_in(&jwt, &["commit", "--quiet", "-m", "bump"])
            .await?;
        // gha-deploy: this job (main, production) may push main of its own repository only.
        quiet(
            &job,
            &mut t,
            &["-C", &jwt_s, "push", "--quiet", "origin", "HEAD:main"],
        )
        .await?;
        let stderr = fails(
            &job,
            &mut t,
            &["-C", &jwt_s, "push", "origin", "HEAD:feature/ci"],
        )
        .await?;
        assert!(
            stderr.contains("git-jit: ref not allowed by grant: allowed refs/heads/main"),
            "{stderr}"
        );

        if std::env::var_os("JIT_E2E_SHOW_TRANSCRIPT").is_some() {
            eprintln!("{}", t.0);
        }
        // Never a token on stderr, in the broker's log, or the upstream password.
        assert_no_jwt("git's and git jit's stderr", &t.0);
        t.assert_no_line_twice();
        let log = broker.logs();
        assert_no_jwt("the broker log", &log);
        for cache in [git.home(), job.home()] {
            let tokens = std::fs::read_to_string(cache.join(".cache/git-jit/tokens.json"))
                .unwrap_or_default();
            for token in tokens.split('"').filter(|s| s.starts_with("eyJ")) {
                assert!(
                    !log.contains(token) && !t.0.contains(token),
                    "a cached token leaked"
                );
            }
        }
        assert!(!log.contains(&password));
        Ok(())
    })
}

/// Runs the real `git-credential-jit get` (through git, as `git credential-jit`) with `input`
/// on stdin, in `git`'s environment.
pub(crate) async fn credential_get(git: &GitClient, input: &str) -> Result<(String, String)> {
    use tokio::io::AsyncWriteExt as _;
    let mut cmd = git.command(["credential-jit", "get"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(input.as_bytes()).await?;
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .context("git-credential-jit did not finish")??;
    anyhow::ensure!(out.status.success(), "git-credential-jit failed: {out:?}");
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Regression (tokens go only where they were obtained for): the real helper, set up for one
/// broker and holding a cached token for `acme/api`, answered a request for another host (or
/// the same port under another name) with that token, and accepted a challenge for
/// `acme/api` on the path `evil/acme/api.git`. Now the other host gets no answer at all (git
/// goes on to other helpers), the mismatched challenge is refused, and the broker's own URL
/// still gets its token.
#[test]
fn helper_answers_only_its_broker_and_the_challenged_repository() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let ci = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let broker =
            BrokerProcess::start(&corp_broker(keys.path(), &redis.url(), &ci.issuer(), None))
                .await?;
        let url = broker.url();
        let port = broker.port();
        let mut git = client()?;
        let id = ci
            .token()
            .subject("alice@example.com")
            .claim("groups", serde_json::json!(["engineering"]))
            .sign();
        git.env("GIT_JIT_ID_TOKEN", &id);
        git.run(&["jit", "setup", &url]).await?;
        let mut t = Transcript::default();

        let ours = format!("protocol=http\nhost=127.0.0.1:{port}\npath=acme/api.git\n\n");
        let (out, err) = credential_get(&git, &ours).await?;
        t.keep("get for the broker", &err);
        assert!(
            out.contains("password=eyJ"),
            "no token for the broker's own URL; stderr: {err}"
        );

        let closed = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        for (protocol, host) in [
            ("http", "evil.example".to_owned()),
            ("http", format!("127.0.0.1:{closed}")),
            ("http", format!("localhost:{port}")),
            ("https", format!("127.0.0.1:{port}")),
        ] {
            let input = format!("protocol={protocol}\nhost={host}\npath=acme/api.git\n\n");
            let (out, err) = credential_get(&git, &input).await?;
            t.keep(&format!("get for {protocol}://{host}"), &err);
            // The answer itself is not printed: it would be a token.
            assert!(
                out.is_empty(),
                "answered {protocol}://{host} ({} bytes); stderr: {err}",
                out.len()
            );
            assert!(
                err.contains("git-jit: not answering for") && err.contains(&url),
                "{protocol}://{host}: {err}"
            );
        }

        let challenged = format!(
            "capability[]=authtype\nprotocol=http\nhost=127.0.0.1:{port}\npath=evil/acme/api.git\n\
             wwwauth[]=Bearer realm=\"git-jit\", scope=\"repo:acme/api:read\"\n\n"
        );
        let (out, err) = credential_get(&git, &challenged).await?;
        t.keep("get with a challenge for acme/api on evil/acme/api", &err);
        assert_eq!(out, "quit=1\n", "stderr: {err}");
        assert!(
            err.contains(
                "asked for repository repo:acme/api:read but git is fetching \"evil/acme/api.git\""
            ),
            "{err}"
        );

        // A Git server set up next to the configured broker (an nginx front) takes its
        // tokens: `git jit setup` records it.
        let front = format!("http://127.0.0.1:{closed}");
        let out = git.run(&["jit", "setup", &front]).await?;
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            said.contains(&format!("server: {front} takes the broker's tokens")),
            "{said}"
        );
        let input = format!("protocol=http\nhost=127.0.0.1:{closed}\npath=acme/api.git\n\n");
        let (out, err) = credential_get(&git, &input).await?;
        t.keep("get for a recorded server", &err);
        assert!(
            out.contains("password=eyJ"),
            "no token for the recorded server; stderr: {err}"
        );

        assert_no_jwt("git-credential-jit's stderr", &t.0);
        t.assert_no_line_twice();
        assert!(!t.0.contains(&id), "the identity token leaked");
        Ok(())
    })
}
