//! The Git gateway with the real `git` client: the broker in front of nginx + fcgiwrap +
//! `git http-backend` (an http upstream that demands a Basic credential only the broker
//! holds) and in front of local bare repositories (`dir:`). Tokens come from real exchanges.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use jit_broker::clock::{Clock, SystemClock};
use jit_broker::keys::KeyRing;
use jit_broker::store::redis::{RedisStore, Topology};
use jit_broker::store::{Grant, GrantStore};
use jit_broker::token::{TokenSigner, new_jti};
use jit_e2e::bins::generate_keys;
use jit_e2e::{BrokerProcess, CiIssuer, GitClient, GitServer, GitServerConfig, RedisServer};
use jit_proto::{Claims, RefPattern, Scope};
use serde_json::json;
use tempfile::TempDir;

use crate::support::{assert_no_jwt, basic, claims_of, exchange, raw_get, revoke};

const UPSTREAM_USER: &str = "git-jit";
const PASSWORD_ENV: &str = "JIT_UPSTREAM_PASSWORD";

fn config(keys: &Path, redis: &str, issuer: &str, git: &GitServer) -> String {
    format!(
        r#"
{base}
[[issuer]]
name = "ci"
issuer = "{issuer}"
audience = "git-jit"

[[role]]
name = "reader"
issuer = "ci"
claims = {{ groups = "engineering" }}
repositories = ["acme/*", "local/*"]
actions = ["read"]

[[role]]
name = "feature-pusher"
issuer = "ci"
claims = {{ groups = "engineering" }}
repositories = ["acme/*", "local/*"]
actions = ["read", "write"]
refs = ["refs/heads/feature/**", "refs/tags/v*"]

[[admin.identity]]
issuer = "ci"
claims = {{ groups = "security" }}

[[upstream]]
repositories = ["acme/**"]
url = "{upstream}"
credential = {{ kind = "basic", username = "{UPSTREAM_USER}", password_env = "{PASSWORD_ENV}" }}

[[upstream]]
repositories = ["local/**"]
url = "dir:{root}"
"#,
        base = crate::support::broker_base(keys, redis, None),
        upstream = git.base_url(),
        root = git.root().display(),
    )
}

/// Redis, a CI issuer, the upstream git server (Basic auth) and the broker.
struct Fixture {
    broker: BrokerProcess,
    git: GitServer,
    ci: CiIssuer,
    redis: RedisServer,
    keys: TempDir,
    password: String,
}

impl Fixture {
    async fn start() -> Result<Self> {
        Self::start_with(None).await
    }

    /// With `server_directives` added to the upstream nginx's `server { }`.
    async fn start_with(server_directives: Option<&str>) -> Result<Self> {
        let redis = RedisServer::start().await?;
        let ci = CiIssuer::start().await?;
        let password = format!("upstream-{}", jit_e2e::random_token(12));
        let git = GitServer::start_with(GitServerConfig {
            basic_auth: Some((UPSTREAM_USER.into(), password.clone())),
            server_directives: server_directives.map(str::to_owned),
            ..Default::default()
        })
        .await?;
        for repo in ["acme/api", "acme/web", "acme/secret", "local/tool"] {
            git.create_repo(repo)?;
        }
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let text = config(keys.path(), &redis.url(), &ci.issuer(), &git);
        let broker = BrokerProcess::start_with_env(&text, &[(PASSWORD_ENV, &password)]).await?;
        Ok(Self {
            broker,
            git,
            ci,
            redis,
            keys,
            password,
        })
    }

    /// A broker token for `scope`, from a real exchange of an engineer's CI-issued ID token.
    async fn token(&self, scope: &str) -> Result<String> {
        let id = self
            .ci
            .token()
            .subject("alice@example.com")
            .claim("groups", json!(["engineering"]))
            .sign();
        exchange(&self.broker.url(), &id, scope).await
    }

    fn admin(&self) -> String {
        self.ci
            .token()
            .subject("sec@example.com")
            .claim("groups", json!(["security"]))
            .sign()
    }

    /// The gateway URL of `repo` with `token` as the Basic password.
    fn url(&self, repo: &str, token: &str) -> String {
        format!(
            "http://x-jit:{token}@127.0.0.1:{}/{repo}.git",
            self.broker.port()
        )
    }

    fn refs(&self, repo: &str) -> Result<String> {
        self.git
            .git_in_repo(repo, &["for-each-ref", "--format=%(refname) %(objectname)"])
    }

    /// Nothing secret in the broker's log: no token, not the upstream password.
    fn assert_clean_log(&self) {
        let log = self.broker.logs();
        assert_no_jwt("the broker log", &log);
        assert!(
            !log.contains(&self.password),
            "the upstream password was logged"
        );
    }
}

/// Clones `url` into `HOME/<dir>` and returns the work tree.
async fn clone(git: &GitClient, url: &str, dir: &str) -> Result<std::path::PathBuf> {
    let out = git.run(&["clone", "--quiet", url, dir]).await?;
    assert!(out.stdout.is_empty(), "clone printed on stdout");
    Ok(git.home().join(dir))
}

async fn commit(git: &GitClient, wt: &Path, file: &str) -> Result<()> {
    std::fs::write(wt.join(file), format!("{file}\n"))?;
    git.run_in(wt, &["add", file]).await?;
    git.run_in(wt, &["commit", "--quiet", "-m", file]).await?;
    Ok(())
}

async fn rev(git: &GitClient, wt: &Path, what: &str) -> Result<String> {
    let out = git.run_in(wt, &["rev-parse", what]).await?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn gateway_http_upstream_clone_fetch_ls_remote_v0_v2_and_an_allowed_push() -> Result<()> {
    crate::support::run(async move {
        let f = Fixture::start().await?;
        let token = f.token("repo:acme/api:read,write").await?;
        let git = GitClient::new()?;
        let url = f.url("acme/api", &token);

        let wt = clone(&git, &url, "api").await?;
        assert!(wt.join("README.md").is_file());
        git.run_in(&wt, &["fetch", "--quiet", "origin"]).await?;

        // ls-remote in both protocol versions; v2 proves the Git-Protocol header passed through.
        let main = f
            .git
            .git_in_repo("acme/api", &["rev-parse", "refs/heads/main"])?;
        for version in ["0", "2"] {
            let mut cmd = git.command([
                "-c",
                &format!("protocol.version={version}"),
                "ls-remote",
                &url,
            ]);
            cmd.env("GIT_TRACE_PACKET", "1");
            let out = cmd.output().await?;
            assert!(
                out.status.success(),
                "{}",
                jit_e2e::git_server::describe(&out)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(&format!("{main}\trefs/heads/main")),
                "v{version}: {stdout}"
            );
            assert!(stdout.contains("refs/tags/v0.1.0"), "v{version}: {stdout}");
            let trace = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                trace.contains("< version 2"),
                version == "2",
                "protocol v{version} was not the one spoken:\n{trace}"
            );
        }
        // The Bearer form of the same credential.
        let bearer = format!("http.extraHeader=Authorization: Bearer {token}");
        let plain = format!("http://127.0.0.1:{}/acme/api.git", f.broker.port());
        git.run(&["-c", &bearer, "ls-remote", "--heads", &plain])
            .await?;

        // An allowed push: a new feature branch and a version tag.
        git.run_in(&wt, &["switch", "--quiet", "-c", "feature/login"])
            .await?;
        commit(&git, &wt, "login.rs").await?;
        git.run_in(&wt, &["tag", "v0.2.0"]).await?;
        let out = git
            .run_in(
                &wt,
                &["push", "--quiet", "origin", "feature/login", "v0.2.0"],
            )
            .await?;
        assert!(out.stdout.is_empty());
        let head = rev(&git, &wt, "HEAD").await?;
        assert_eq!(
            f.git.git_in_repo(
                "acme/api",
                &["rev-parse", "refs/heads/feature/login", "refs/tags/v0.2.0"]
            )?,
            format!("{head}\n{head}"),
            "the push reached the upstream"
        );
        // The upstream recorded the broker's injected user, never the client's.
        let access = f.git.access_log();
        assert!(
            access.contains(&format!(" {UPSTREAM_USER} [")) && !access.contains("x-jit"),
            "the upstream must see the broker's credential, never the client's:\n{access}"
        );
        // The fetches' RPCs went as HTTP/1.0 (their answers unframed, to the end of the
        // connection), the ref advertisements as HTTP/1.1.
        assert!(
            access.contains("/acme/api.git/git-upload-pack HTTP/1.0\"")
                && !access.contains("/acme/api.git/git-upload-pack HTTP/1.1\"")
                && access.contains("/acme/api.git/info/refs?service=git-upload-pack HTTP/1.1\""),
            "{access}"
        );
        f.assert_clean_log();
        Ok(())
    })
}

#[test]
fn gateway_refuses_pushes_outside_the_ref_patterns_and_git_shows_why() -> Result<()> {
    crate::support::run(async move {
        let f = Fixture::start().await?;
        f.git.git_in_repo(
            "acme/api",
            &["update-ref", "refs/heads/stable", "refs/heads/main"],
        )?;
        let token = f.token("repo:acme/api:read,write").await?;
        let git = GitClient::new()?;
        let wt = clone(&git, &f.url("acme/api", &token), "api").await?;
        commit(&git, &wt, "change.txt").await?;
        let before = f.refs("acme/api")?;

        let cases: [(&str, &[&str], &str); 4] = [
            (
                "a disallowed branch",
                &["push", "origin", "HEAD:main"],
                "refs/heads/main",
            ),
            (
                "a tag outside the patterns",
                &["push", "origin", "release-1"],
                "refs/tags/release-1",
            ),
            (
                "a branch deletion",
                &["push", "origin", ":stable"],
                "refs/heads/stable",
            ),
            (
                "a force push",
                &["push", "--force", "origin", "HEAD~1:stable"],
                "refs/heads/stable",
            ),
        ];
        git.run_in(&wt, &["tag", "release-1"]).await?;
        // Make the force push a real rewind: stable first moves ahead on the server.
        let ahead = f.git.git_in_repo(
            "acme/api",
            &[
                "commit-tree",
                "refs/heads/main^{tree}",
                "-p",
                "refs/heads/main",
                "-m",
                "ahead",
            ],
        )?;
        f.git
            .git_in_repo("acme/api", &["update-ref", "refs/heads/stable", &ahead])?;
        let before_cases = f.refs("acme/api")?;
        assert_ne!(before, before_cases);
        for (what, args, refname) in cases {
            let mut full = vec!["-C", wt.to_str().context("utf-8 path")?];
            full.extend_from_slice(args);
            let stderr = git.run_expect_failure(&full).await?;
            assert!(
                stderr
                    .contains("remote: git-jit: push refused; nothing was sent to the repository"),
                "{what}: {stderr}"
            );
            assert!(
            stderr.contains("[remote rejected]")
                && stderr.contains(
                    "git-jit: ref not allowed by grant: allowed refs/heads/feature/**, refs/tags/v*"
                ),
            "{what} ({refname}): {stderr}"
        );
            assert_eq!(
                f.refs("acme/api")?,
                before_cases,
                "{what} changed the repository"
            );
            assert_no_jwt(what, &stderr);
        }

        // One refused ref refuses the whole push, naming the culprit for the allowed one.
        git.run_in(&wt, &["tag", "v9.0.0"]).await?;
        let stderr = git
            .run_expect_failure(&[
                "-C",
                wt.to_str().unwrap_or_default(),
                "push",
                "origin",
                "HEAD:main",
                "v9.0.0",
            ])
            .await?;
        assert!(
            stderr.contains("push refused as a whole because refs/heads/main is not allowed"),
            "{stderr}"
        );
        assert_eq!(f.refs("acme/api")?, before_cases);

        // Inside the patterns, force pushes and deletions are allowed.
        git.run_in(&wt, &["push", "--quiet", "origin", "HEAD:feature/x"])
            .await?;
        git.run_in(
            &wt,
            &["push", "--quiet", "--force", "origin", "HEAD~1:feature/x"],
        )
        .await?;
        git.run_in(&wt, &["push", "--quiet", "origin", ":feature/x"])
            .await?;
        assert_eq!(f.refs("acme/api")?, before_cases);

        // Each refusal is an audit event naming the ref update.
        let trail = jit_e2e::http_client()
            .get(format!("{}/v1/audit", f.broker.url()))
            .bearer_auth(f.admin())
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let denied_deletion = trail.lines().any(|l| {
            l.contains("\"access.denied\"")
                && l.contains("refs/heads/stable")
                && l.contains("\"delete\"")
        });
        assert!(
            denied_deletion,
            "no access.denied event for the deletion:\n{trail}"
        );
        assert!(
            !trail.contains(&token),
            "tokens never reach the audit trail"
        );
        f.assert_clean_log();
        Ok(())
    })
}

#[test]
fn gateway_refuses_a_token_for_repository_a_on_repository_b() -> Result<()> {
    crate::support::run(async move {
        let f = Fixture::start().await?;
        let token = f.token("repo:acme/api:read,write").await?;
        let git = GitClient::new()?;
        let stderr = git
            .run_expect_failure(&["clone", &f.url("acme/web", &token), "web"])
            .await?;
        assert!(
        stderr.contains(
            "remote: git-jit: token grants repo:acme/api:read,write; this clone or fetch needs repo:acme/web:read"
        ),
        "{stderr}"
    );
        assert!(stderr.contains("403"), "{stderr}");
        // Case is part of the path: ACME/api is another repository.
        let stderr = git
            .run_expect_failure(&["ls-remote", &f.url("ACME/api", &token)])
            .await?;
        assert!(stderr.contains("needs repo:ACME/api:read"), "{stderr}");
        // A read token cannot push its own repository either.
        let read = f.token("repo:acme/api:read").await?;
        let wt = clone(&git, &f.url("acme/api", &read), "api").await?;
        commit(&git, &wt, "x").await?;
        let stderr = git
            .run_expect_failure(&[
                "-C",
                wt.to_str().unwrap_or_default(),
                "push",
                "origin",
                "HEAD:feature/y",
            ])
            .await?;
        assert!(
            stderr.contains("this push needs repo:acme/api:write"),
            "{stderr}"
        );
        assert_no_jwt("git's stderr", &stderr);
        Ok(())
    })
}

#[test]
fn gateway_refuses_path_tricks_before_reaching_the_upstream() -> Result<()> {
    crate::support::run(async move {
        let f = Fixture::start().await?;
        let token = f.token("repo:acme/api:read").await?;
        let auth = basic(&token);
        let port = f.broker.port();
        let adv = "?service=git-upload-pack";

        let (status, answer) =
            raw_get(port, &format!("/acme/api.git/info/refs{adv}"), Some(&auth)).await?;
        assert_eq!(status, 200, "the control request must pass: {answer}");
        assert!(answer.contains("# service=git-upload-pack"));

        // Each would reach acme/secret or acme/api if some layer normalised it.
        let tricks = [
            ("/acme/api/../secret.git/info/refs", 400),
            ("/acme/x/../api.git/info/refs", 400),
            ("/acme/./api.git/info/refs", 400),
            ("/acme//api.git/info/refs", 400),
            ("/acme/api/%2e%2e/secret.git/info/refs", 400),
            ("/acme/%2e%2e/acme/api.git/info/refs", 400),
            ("/acme%2fapi.git/info/refs", 400),
            ("/acme/api%2Egit/info/refs", 400),
            ("/acme/api//info/refs", 400),
            ("/acme/api.git/.git/info/refs", 400),
            ("/ACME/api.git/info/refs", 403),
            ("/acme/API.git/info/refs", 403),
        ];
        let mut seen = Vec::new();
        for (path, want) in tricks {
            let (status, answer) = raw_get(port, &format!("{path}{adv}"), Some(&auth)).await?;
            assert!(
                !answer.contains("# service=") && !answer.contains("refs/heads/main"),
                "{path} reached a repository:\n{answer}"
            );
            assert!(
                answer.contains("git-jit: "),
                "{path}: no reason given:\n{answer}"
            );
            seen.push(format!("{path} → {status}"));
            assert_eq!(status, want, "{path}:\n{answer}");
        }
        eprintln!("path tricks: {seen:#?}");
        // Without any credential the same paths are refused too (never a challenge for a
        // normalised repository).
        let (status, answer) = raw_get(
            port,
            &format!("/acme/api/../secret.git/info/refs{adv}"),
            None,
        )
        .await?;
        assert_eq!(status, 400, "{answer}");
        // git normalises `..` itself: the clean URL it sends is checked like any other.
        let git = GitClient::new()?;
        let dotted = format!("http://x-jit:{token}@127.0.0.1:{port}/acme/api/../secret.git");
        let stderr = git.run_expect_failure(&["ls-remote", &dotted]).await?;
        assert!(stderr.contains("needs repo:acme/secret:read"), "{stderr}");
        // Nothing above reached nginx except the control request and git's normalised one.
        let access = f.git.access_log();
        assert!(
            !access.contains("secret"),
            "a trick reached the upstream:\n{access}"
        );
        f.assert_clean_log();
        Ok(())
    })
}

#[test]
fn gateway_refuses_a_token_revoked_mid_session_and_an_expired_token() -> Result<()> {
    crate::support::run(async move {
        let f = Fixture::start().await?;
        let token = f.token("repo:acme/api:read").await?;
        let git = GitClient::new()?;
        let wt = clone(&git, &f.url("acme/api", &token), "api").await?;
        git.run_in(&wt, &["fetch", "--quiet"]).await?;

        let claims = claims_of(&token)?;
        let revoked = revoke(
            &f.broker.url(),
            &f.admin(),
            "jti",
            &claims.jti,
            "laptop stolen",
        )
        .await?;
        assert_eq!(revoked["at_most"], 1, "{revoked}");
        let stderr = git
            .run_expect_failure(&["-C", wt.to_str().unwrap_or_default(), "fetch"])
            .await?;
        assert!(
        stderr.contains(
            "remote: git-jit: token has been revoked; this clone or fetch needs repo:acme/api:read"
        ),
        "{stderr}"
    );

        // A token whose `exp` has passed, though its grant is still live in the store: the
        // gateway checks the token's own time window, not only the store.
        let store = RedisStore::new(Topology::Single(f.redis.url()), "jit", 1000);
        let signer = TokenSigner::new(
            Arc::new(KeyRing::load_dir(f.keys.path())?),
            f.broker.url(),
            "git-jit",
        );
        let now = SystemClock.now_ms();
        let mut claims = Claims {
            iss: f.broker.url(),
            aud: "git-jit".into(),
            sub: "alice@example.com".into(),
            idp: "ci".into(),
            iat: now / 1000 - 600,
            nbf: now / 1000 - 600,
            exp: now / 1000 + 600,
            jti: new_jti()?,
            scope: Scope::parse("repo:acme/api:read")?,
            refs: Vec::<RefPattern>::new(),
            role: "reader".into(),
            reason: None,
            req: None,
        };
        store.put(&Grant::from_claims(&claims, now), now).await?;
        let live = signer.sign(&claims)?.expose().to_owned();
        git.run(&["ls-remote", "--heads", &f.url("acme/api", &live)])
            .await?;
        claims.exp = now / 1000 - 1;
        let expired = signer.sign(&claims)?.expose().to_owned();
        let stderr = git
            .run_expect_failure(&["ls-remote", &f.url("acme/api", &expired)])
            .await?;
        assert!(
            stderr.contains("remote: git-jit: token has expired"),
            "{stderr}"
        );
        assert_no_jwt("git's stderr", &stderr);
        f.assert_clean_log();
        Ok(())
    })
}

#[test]
fn gateway_dir_upstream_clone_and_push() -> Result<()> {
    crate::support::run(async move {
        let f = Fixture::start().await?;
        let token = f.token("repo:local/tool:read,write").await?;
        let git = GitClient::new()?;
        let wt = clone(&git, &f.url("local/tool", &token), "tool").await?;
        git.run_in(&wt, &["switch", "--quiet", "-c", "feature/dir"])
            .await?;
        commit(&git, &wt, "dir.txt").await?;
        git.run_in(&wt, &["push", "--quiet", "origin", "feature/dir"])
            .await?;
        assert_eq!(
            f.git
                .git_in_repo("local/tool", &["rev-parse", "refs/heads/feature/dir"])?,
            rev(&git, &wt, "HEAD").await?
        );
        let stderr = git
            .run_expect_failure(&[
                "-C",
                wt.to_str().unwrap_or_default(),
                "push",
                "origin",
                "HEAD:main",
            ])
            .await?;
        assert!(
            stderr.contains("git-jit: ref not allowed by grant"),
            "{stderr}"
        );
        // The dir: upstream is served by the broker itself: nginx never saw these requests.
        let access = f.git.access_log();
        assert!(!access.contains("local/tool"), "{access}");
        Ok(())
    })
}

/// The admin's view of the audit trail, one JSON event per line.
async fn trail(f: &Fixture) -> Result<String> {
    Ok(jit_e2e::http_client()
        .get(format!("{}/v1/audit", f.broker.url()))
        .bearer_auth(f.admin())
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// Regression (a push through a symbolic ref): the grant allows `refs/heads/feature/**`; the
/// upstream (nginx + git http-backend) has `refs/heads/feature/alias`, a symbolic ref to
/// `refs/heads/main`. Pushing to the alias used to move `main`; the gateway now learns the
/// target from the upstream (protocol v2 `ls-refs`, `symrefs`) and refuses.
#[test]
fn gateway_decides_a_push_through_a_symbolic_ref_on_its_target() -> Result<()> {
    crate::support::run(async move {
        let f = Fixture::start().await?;
        f.git.git_in_repo(
            "acme/api",
            &[
                "symbolic-ref",
                "refs/heads/feature/alias",
                "refs/heads/main",
            ],
        )?;
        let token = f.token("repo:acme/api:read,write").await?;
        let git = GitClient::new()?;
        let wt = clone(&git, &f.url("acme/api", &token), "api").await?;
        commit(&git, &wt, "through-alias.txt").await?;
        let before = f.refs("acme/api")?;
        for refspec in ["HEAD:refs/heads/feature/alias", ":refs/heads/feature/alias"] {
            let stderr = git
                .run_expect_failure(&[
                    "-C",
                    wt.to_str().context("utf-8")?,
                    "push",
                    "origin",
                    refspec,
                ])
                .await?;
            assert!(
                stderr.contains(
                    "git-jit: refs/heads/feature/alias is a symbolic ref to refs/heads/main, which the grant does not allow"
                ),
                "{refspec}: {stderr}"
            );
            assert_eq!(
                f.refs("acme/api")?,
                before,
                "{refspec} changed the repository"
            );
        }
        // An ordinary ref under the pattern still goes through.
        git.run_in(
            &wt,
            &["push", "--quiet", "origin", "HEAD:refs/heads/feature/ok"],
        )
        .await?;
        let denied = trail(&f).await?;
        assert!(
            denied.lines().any(|l| l.contains("\"access.denied\"")
                && l.contains("symbolic ref to refs/heads/main")),
            "no access.denied naming the target:\n{denied}"
        );
        f.assert_clean_log();
        Ok(())
    })
}

/// A ref-limited push is refused when the upstream cannot say which refs are symbolic (here
/// it refuses every `git-upload-pack` request): the gateway never guesses.
#[test]
fn gateway_refuses_a_ref_limited_push_when_the_upstream_cannot_tell_its_symrefs() -> Result<()> {
    crate::support::run(async move {
        let f = Fixture::start_with(Some("location ~ /git-upload-pack$ { return 503; }")).await?;
        let token = f.token("repo:acme/api:read,write").await?;
        let git = GitClient::new()?;
        let source = f.git.root().join("acme/api.git");
        let wt = clone(&git, source.to_str().context("utf-8")?, "api").await?;
        commit(&git, &wt, "x.txt").await?;
        let before = f.refs("acme/api")?;
        let stderr = git
            .run_expect_failure(&[
                "-C",
                wt.to_str().context("utf-8")?,
                "push",
                &f.url("acme/api", &token),
                "HEAD:refs/heads/feature/x",
            ])
            .await?;
        assert!(
            stderr.contains("git-jit: cannot learn from the upstream whether the pushed refs are symbolic refs (the upstream answered HTTP 502)"),
            "{stderr}"
        );
        assert_eq!(f.refs("acme/api")?, before);
        Ok(())
    })
}

fn pkt(line: &str) -> Vec<u8> {
    let mut v = format!("{:04x}", line.len() + 4).into_bytes();
    v.extend_from_slice(line.as_bytes());
    v
}

/// Regression (audit amplification): a refused push of 900 ref names of 1 KB each became one
/// audit event of ~2 MB in Redis. The event now lists the first updates and summarises the
/// rest by counts and a SHA-256 of the command lines; a push of more than 1000 commands is
/// refused before any decision.
#[test]
fn a_refused_push_of_900_long_refs_is_one_small_audit_event() -> Result<()> {
    crate::support::run(async move {
        let f = Fixture::start().await?;
        let token = f.token("repo:acme/api:read,write").await?;
        let (zero, new) = ("0".repeat(40), "1".repeat(40));
        let lines: Vec<String> = (0..900)
            .map(|i| format!("{zero} {new} refs/heads/{i:04}{}", "x".repeat(1000)))
            .collect();
        let mut body = Vec::new();
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for (i, l) in lines.iter().enumerate() {
            digest.update(format!("{l}\n").as_bytes());
            body.extend(pkt(&if i == 0 {
                format!("{l}\0report-status")
            } else {
                l.clone()
            }));
        }
        body.extend_from_slice(b"0000");
        let upload = body.len();
        let http = jit_e2e::http_client();
        let url = format!(
            "http://127.0.0.1:{}/acme/api.git/git-receive-pack",
            f.broker.port()
        );
        let answer = http
            .post(&url)
            .header("authorization", basic(&token))
            .header("content-type", "application/x-git-receive-pack-request")
            .body(body)
            .send()
            .await?;
        assert_eq!(answer.status(), 200);
        let report = answer.text().await?;
        assert!(
            report.contains("ref not allowed by grant"),
            "{}",
            &report[..200]
        );

        let events = trail(&f).await?;
        let denied: Vec<&str> = events
            .lines()
            .filter(|l| l.contains("\"access.denied\""))
            .collect();
        assert_eq!(denied.len(), 1, "{events}");
        let line = denied[0];
        assert!(
            line.len() < 16 * 1024,
            "the audit event is {} bytes for an upload of {upload}",
            line.len()
        );
        let event: serde_json::Value = serde_json::from_str(line)?;
        let updates = &event["data"]["updates"];
        assert_eq!(updates["count"], 900, "{updates}");
        assert_eq!(updates["create"], 900);
        let hex: String = digest
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(updates["sha256"], hex);
        assert!(
            event["denial"]
                .as_str()
                .is_some_and(|d| d.ends_with("more refused ref updates (900 in all)")),
            "{}",
            event["denial"]
        );

        // Past the command bound: refused before any decision, naming the limit.
        let mut body = Vec::new();
        for i in 0..1001 {
            let l = format!("{zero} {new} refs/heads/feature/{i}");
            body.extend(pkt(&if i == 0 {
                format!("{l}\0report-status")
            } else {
                l
            }));
        }
        body.extend_from_slice(b"0000");
        let answer = http
            .post(&url)
            .header("authorization", basic(&token))
            .header("content-type", "application/x-git-receive-pack-request")
            .body(body)
            .send()
            .await?;
        assert_eq!(answer.status(), 413);
        assert!(
            answer
                .text()
                .await?
                .contains("push updates more than 1000 refs at once"),
        );
        Ok(())
    })
}
