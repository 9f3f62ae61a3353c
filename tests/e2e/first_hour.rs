//! git before 2.41 (Debian's 2.39 at `/usr/bin/git`) passes no `wwwauth[]` to credential
//! helpers, so the helper cannot tell a push from a fetch and asks for read. Clone works; the
//! push is refused with a line saying what to run; after running the one line the helper's
//! advice names (`git jit request --repo … --action read,write`, whose missing reason is
//! answered with the exact command to run), the push works and fetching still does. On the
//! way, `git jit --help` opens the man page `git jit setup` installed. And with a current git,
//! a push under a role that requires a reason names the one command that gives it. No line
//! of these flows is printed twice. The CI recipes in `examples/` run as written (all but
//! their install step) against the harness's emulated GitHub Actions and GitLab issuers.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use jit_e2e::bins::generate_keys;
use jit_e2e::{
    BrokerProcess, CiIssuer, GitClient, GitServer, GitServerConfig, OidcProvider, RedisServer,
};

use crate::helper_flow::{Transcript, client, fails, login, quiet};
use crate::support::assert_no_jwt;

const OLD_GIT: &str = "/usr/bin/git";
const UPSTREAM_USER: &str = "git-jit";
const PASSWORD_ENV: &str = "JIT_UPSTREAM_PASSWORD";

/// `/usr/bin/git` when it is older than 2.41 (the first git to pass `wwwauth[]`).
fn old_git() -> Option<PathBuf> {
    let out = std::process::Command::new(OLD_GIT)
        .arg("--version")
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout);
    let mut parts = version
        .trim()
        .trim_start_matches("git version ")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next()?, parts.next()?);
    ((major, minor) < (2, 41)).then(|| PathBuf::from(OLD_GIT))
}

fn config(keys: &Path, redis: &str, sso: &str, upstream: &GitServer) -> String {
    format!(
        r#"
{base}
{sso}

[[role]]
name = "dev-read"
issuer = "corp"
claims = {{ groups = "engineering" }}
repositories = ["acme/*"]
actions = ["read"]
default_ttl = 120
max_ttl = 480

[[role]]
name = "dev-write"
issuer = "corp"
claims = {{ groups = "engineering" }}
repositories = ["acme/*"]
actions = ["read", "write"]
default_ttl = 10
max_ttl = 30
reason_required = true

[[upstream]]
repositories = ["acme/**"]
url = "{url}"
credential = {{ kind = "basic", username = "{UPSTREAM_USER}", password_env = "{PASSWORD_ENV}" }}
"#,
        base = crate::support::broker_base(keys, redis, None),
        sso = crate::support::sso_issuer(sso),
        url = upstream.base_url(),
    )
}

/// The command in `text` after `marker`, up to a closing backtick or the end of its line.
fn command_after(text: &str, marker: &str) -> Option<String> {
    let at = text.find(marker)? + marker.len();
    let rest = &text[at..];
    let line = rest.lines().next().unwrap_or(rest);
    Some(line.split('`').next().unwrap_or(line).trim().to_owned())
}

/// Runs `git jit …` as printed (only a `"…"` reason placeholder needs replacing: no other
/// word of these hints is quoted).
async fn run_as_printed(git: &GitClient, line: &str, reason: &str) -> Result<std::process::Output> {
    let words: Vec<String> = line
        .replace("\"…\"", reason)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(words.first().map(String::as_str) == Some("git"), "{line}");
    let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    git.output(&args).await
}

#[test]
fn old_git_clones_then_pushes_after_the_one_step_the_helper_names() -> Result<()> {
    let Some(program) = old_git() else {
        eprintln!("skipped: {OLD_GIT} is missing or not older than 2.41");
        return Ok(());
    };
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let op = OidcProvider::start().await?;
        let password = format!("upstream-{}", jit_e2e::random_token(12));
        let upstream = GitServer::start_with(GitServerConfig {
            basic_auth: Some((UPSTREAM_USER.into(), password.clone())),
            ..Default::default()
        })
        .await?;
        upstream.create_repo("acme/api")?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let text = config(keys.path(), &redis.url(), &op.issuer(), &upstream);
        let broker = BrokerProcess::start_with_env(&text, &[(PASSWORD_ENV, &password)]).await?;
        let gateway = broker.url();
        let repo_url = format!("{gateway}/acme/api.git");
        let mut t = Transcript::default();

        let mut git = client()?.with_program(program);
        let man = git.home().join(".local/share/man");
        git.env("MANPATH", &man).env("MANPAGER", "cat");
        let out = git.run(&["jit", "setup", &gateway]).await?;
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("man pages: "), "{said}");
        assert!(man.join("man1/git-jit.1").is_file(), "{said}");
        // git turns `git jit --help` into `man git-jit`.
        if std::process::Command::new("man")
            .arg("--version")
            .output()
            .is_ok()
        {
            let help = git.run(&["jit", "--help"]).await?;
            let page = String::from_utf8_lossy(&help.stdout);
            assert!(page.contains("Just-in-time access"), "{page}");
        }
        login(&git, &op, "alice@example.com", &mut t).await?;

        // Clone: read, asked for without a challenge, and the advice for pushing.
        let clone = git.run(&["clone", "--quiet", &repo_url, "api"]).await?;
        let stderr = String::from_utf8_lossy(&clone.stderr).into_owned();
        t.keep("clone", &stderr);
        let advice = command_after(&stderr, "to push, run `")
            .with_context(|| format!("no advice for pushing in:\n{stderr}"))?;
        assert_eq!(
            advice, "git jit request --repo acme/api --action read,write",
            "{stderr}"
        );
        let wt = git.home().join("api");
        let wt_s = wt.to_string_lossy().into_owned();
        std::fs::write(wt.join("old.txt"), "from git 2.39\n")?;
        git.run_in(&wt, &["add", "old.txt"]).await?;
        git.run_in(&wt, &["commit", "--quiet", "-m", "old git"])
            .await?;
        let push = [
            "-C",
            wt_s.as_str(),
            "push",
            "--quiet",
            "origin",
            "HEAD:feature/old",
        ];

        // The read token cannot push; the gateway says what to run, the same line.
        let refused = fails(&git, &mut t, &push).await?;
        assert!(refused.contains("403"), "{refused}");
        assert_eq!(
            command_after(&refused, "Run `").as_deref(),
            Some(advice.as_str())
        );

        // Following the advice: the role wants a reason, and says exactly how to give it.
        let out = run_as_printed(&git, &advice, "x").await?;
        let asked = String::from_utf8_lossy(&out.stderr).into_owned();
        t.keep("git jit request (no reason)", &asked);
        assert!(!out.status.success(), "{asked}");
        let with_reason = command_after(&asked, "; run: ")
            .with_context(|| format!("no command to run in:\n{asked}"))?;
        assert!(
            with_reason.starts_with("git jit request --repo acme/api --action read,write")
                && with_reason.contains("--reason \"…\""),
            "{with_reason}"
        );
        let out = run_as_printed(&git, &with_reason, "push-from-git-2.39").await?;
        t.keep("git jit request", &String::from_utf8_lossy(&out.stderr));
        anyhow::ensure!(
            out.status.success(),
            "{with_reason}: {}",
            jit_e2e::git_server::describe(&out)
        );

        // Now the push works, with the longer-lived read token still cached beside it.
        quiet(&git, &mut t, &push).await?;
        assert_eq!(
            upstream.git_in_repo("acme/api", &["rev-parse", "refs/heads/feature/old"])?,
            String::from_utf8_lossy(&git.run_in(&wt, &["rev-parse", "HEAD"]).await?.stdout).trim()
        );
        quiet(&git, &mut t, &["-C", &wt_s, "fetch", "--quiet", "origin"]).await?;
        t.assert_no_line_twice();
        assert_no_jwt("old git's stderr", &t.0);

        Ok(())
    })
}

/// A push under a role that requires a reason, with a git that passes the challenge: the
/// helper cannot ask (git owns the terminal), so it prints the one command to run, once;
/// run as printed, the push goes through.
#[test]
fn a_push_needing_a_reason_names_the_command_that_gives_it() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let op = OidcProvider::start().await?;
        let password = format!("upstream-{}", jit_e2e::random_token(12));
        let upstream = GitServer::start_with(GitServerConfig {
            basic_auth: Some((UPSTREAM_USER.into(), password.clone())),
            ..Default::default()
        })
        .await?;
        upstream.create_repo("acme/api")?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let text = config(keys.path(), &redis.url(), &op.issuer(), &upstream);
        let broker = BrokerProcess::start_with_env(&text, &[(PASSWORD_ENV, &password)]).await?;
        let gateway = broker.url();
        let repo_url = format!("{gateway}/acme/api.git");
        let mut t = Transcript::default();
        let git = client()?;
        git.run(&["jit", "setup", &gateway]).await?;
        login(&git, &op, "alice@example.com", &mut t).await?;
        quiet(&git, &mut t, &["clone", "--quiet", &repo_url, "api"]).await?;
        let wt = git.home().join("api");
        let wt_s = wt.to_string_lossy().into_owned();
        git.run_in(&wt, &["commit", "--allow-empty", "--quiet", "-m", "x"])
            .await?;
        let push = [
            "-C",
            wt_s.as_str(),
            "push",
            "--quiet",
            "origin",
            "HEAD:feature/new",
        ];
        let refused = fails(&git, &mut t, &push).await?;
        assert_eq!(refused.matches("git jit request").count(), 1, "{refused}");
        let line = command_after(&refused, "; run: ")
            .with_context(|| format!("no command to run in:\n{refused}"))?;
        assert_eq!(
            line,
            "git jit request --repo acme/api --action write --role dev-write --reason \"…\""
        );
        let out = run_as_printed(&git, &line, "release-1.2").await?;
        t.keep("git jit request", &String::from_utf8_lossy(&out.stderr));
        anyhow::ensure!(
            out.status.success(),
            "{}",
            jit_e2e::git_server::describe(&out)
        );
        quiet(&git, &mut t, &push).await?;
        assert_eq!(
            upstream.git_in_repo("acme/api", &["rev-parse", "refs/heads/feature/new"])?,
            String::from_utf8_lossy(&git.run_in(&wt, &["rev-parse", "HEAD"]).await?.stdout).trim()
        );
        t.assert_no_line_twice();
        assert_no_jwt("git's stderr", &t.0);
        Ok(())
    })
}

const GITHUB_RECIPE: &str = include_str!("../../examples/github-actions.yml");
const GITLAB_RECIPE: &str = include_str!("../../examples/gitlab-ci.yml");
const GITHUB_POLICY: &str = include_str!("../../deploy/policies/github-actions.toml");
const GITLAB_POLICY: &str = include_str!("../../deploy/policies/gitlab-ci.toml");
const KUBERNETES_RECIPE: &str = include_str!("../../examples/kubernetes-job.yaml");
const KUBERNETES_POLICY: &str = include_str!("../../deploy/policies/kubernetes.toml");

/// The indented block under the first line of `yaml` that is `key:` (or `key: |`), its
/// lines dedented; `skip_named`: blocks of a step whose `- name:` is that are left out.
fn blocks(yaml: &str, key: &str, skip_named: Option<&str>) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    let mut step = "";
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- name: ") {
            step = name;
        }
        let own = t == format!("{key}:") || t == format!("{key}: |");
        i += 1;
        if !own {
            continue;
        }
        let base = indent(line);
        let mut body = Vec::new();
        while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > base) {
            body.push(lines[i]);
            i += 1;
        }
        if skip_named == Some(step) {
            continue;
        }
        let cut = body
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| indent(l))
            .min()
            .unwrap_or(0);
        let text: Vec<&str> = body.iter().map(|l| l.get(cut..).unwrap_or("")).collect();
        out.push(text.join("\n"));
    }
    out
}

/// Runs `script` with bash (`-e`: the first failing command fails it) in the client's
/// isolated HOME and environment; keeps its stderr.
async fn bash(job: &GitClient, t: &mut Transcript, what: &str, script: &str) -> Result<String> {
    let mut cmd = job.command(["-euo", "pipefail", "-c", script]);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .context("the recipe timed out")??;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    t.keep(what, &stderr);
    anyhow::ensure!(
        out.status.success(),
        "{what} failed:\n{script}\n{}",
        jit_e2e::git_server::describe(&out)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_ci_recipes_run_as_written() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let ci = CiIssuer::start().await?;
        let password = format!("upstream-{}", jit_e2e::random_token(12));
        let upstream = GitServer::start_with(GitServerConfig {
            basic_auth: Some((UPSTREAM_USER.into(), password.clone())),
            ..Default::default()
        })
        .await?;
        upstream.create_repo("acme/api")?;
        upstream.create_repo("mirror/api")?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let k8s = ci.platform_issuer("kubernetes");
        let policies = format!("{GITHUB_POLICY}\n{GITLAB_POLICY}\n{KUBERNETES_POLICY}")
            .replace(
                "https://token.actions.githubusercontent.com",
                &ci.platform_issuer("github"),
            )
            .replace("https://gitlab.example.com", &ci.platform_issuer("gitlab"))
            .replace(
                "https://k8s-api.prod.example.com:6443/openid/v1/jwks",
                &format!("{k8s}/jwks"),
            )
            .replace("https://kubernetes.default.svc.cluster.local", &k8s)
            .replace("https://jit.example.com", "{{URL}}");
        let text = format!(
            r#"
{base}
{policies}

[[upstream]]
repositories = ["acme/**", "mirror/**"]
url = "{url}"
credential = {{ kind = "basic", username = "{UPSTREAM_USER}", password_env = "{PASSWORD_ENV}" }}
"#,
            base = crate::support::broker_base(keys.path(), &redis.url(), None),
            url = upstream.base_url(),
        );
        let broker = BrokerProcess::start_with_env(&text, &[(PASSWORD_ENV, &password)]).await?;
        let gateway = broker.url();
        let bash_path = jit_e2e::process::find_program("bash")?;
        let mut t = Transcript::default();

        // GitHub Actions: the token endpoint emulated, the runner's variables set.
        let steps = blocks(GITHUB_RECIPE, "run", Some("Install git-jit"));
        assert_eq!(steps.len(), 2, "{steps:?}");
        ci.set_actions_token(
            &ci.github_actions("acme/api")
                .rs256()
                .claim("repository_owner_id", "1234567"),
        );
        let mut job = client()?.with_program(&bash_path);
        job.env("GIT_JIT_BROKER", &gateway)
            .env("GITHUB_REPOSITORY", "acme/api")
            .env("GITHUB_SHA", "0123456789abcdef")
            .env(
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                ci.actions_token_request_url(),
            )
            .env(
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                ci.actions_token_request_token(),
            );
        let status = bash(&job, &mut t, "github: set up", &steps[0]).await?;
        assert!(
            status.contains("identity: GitHub Actions OIDC (CI"),
            "{status}"
        );
        assert!(!status.contains("git jit login"), "{status}");
        bash(&job, &mut t, "github: clone, commit, push", &steps[1]).await?;
        let recorded = upstream.git_in_repo("acme/api", &["show", "main:LAST_RECORDED"])?;
        assert_eq!(recorded.trim(), "0123456789abcdef");

        // GitLab CI: the `id_tokens:` variable, minted for the broker's audience.
        let script = blocks(GITLAB_RECIPE, "script", None);
        assert_eq!(script.len(), 1, "{script:?}");
        let script: Vec<&str> = script[0]
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .collect();
        assert!(script.len() > 5, "{script:?}");
        let token = ci.gitlab_ci("acme/api").rs256().aud(&gateway).sign();
        let mut job = client()?.with_program(&bash_path);
        job.env("GIT_JIT_BROKER", &gateway)
            .env("GIT_JIT_ID_TOKEN", &token)
            .env("CI_PROJECT_PATH", "acme/api")
            .env("CI_COMMIT_BRANCH", "main")
            .env("CI_COMMIT_SHA", "fedcba9876543210");
        let out = bash(&job, &mut t, "gitlab: script", &script.join("\n")).await?;
        assert!(
            out.contains("identity: environment variable GIT_JIT_ID_TOKEN (CI"),
            "{out}"
        );
        let recorded = upstream.git_in_repo("acme/api", &["show", "main:LAST_RECORDED"])?;
        assert_eq!(recorded.trim(), "fedcba9876543210");

        // Kubernetes: the projected service-account token in a file.
        let args = blocks(KUBERNETES_RECIPE, "args", None);
        assert_eq!(args.len(), 1, "{args:?}");
        let script = args[0]
            .strip_prefix("- |\n")
            .with_context(|| format!("not a block scalar: {}", args[0]))?;
        let mut job = client()?.with_program(&bash_path);
        let token_file = job.home().join("token");
        let token = ci.kubernetes_sa("mirror", "git-sync").aud("git-jit").sign();
        std::fs::write(&token_file, token)?;
        job.env("GIT_JIT_BROKER", &gateway)
            .env("GIT_JIT_ID_TOKEN_FILE", &token_file);
        let out = bash(&job, &mut t, "kubernetes: job", script).await?;
        assert!(out.contains("identity: token file "), "{out}");
        assert!(
            job.home().join("api.git/HEAD").is_file(),
            "the mirror is cloned"
        );
        t.assert_no_line_twice();
        assert_no_jwt("the recipes' stderr", &t.0);
        Ok(())
    })
}
