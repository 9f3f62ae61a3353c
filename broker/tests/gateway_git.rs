//! The gateway in front of a `dir:` upstream (`git http-backend`), driven by the real `git`
//! client: clone (protocol v0 and v2), ls-remote, allowed and refused pushes per ref, a token
//! for the wrong action, revocation between two requests.

use std::path::{Path, PathBuf};

use jit_broker::clock::{Clock, SystemClock};
use jit_broker::gateway::{Gateway, demo};
use jit_broker::store::{GrantStore, RevokeTarget};
use tokio::process::Command;

mod support;

struct Server {
    broker: support::Broker,
    addr: std::net::SocketAddr,
    repos: PathBuf,
    home: tempfile::TempDir,
    _repos_dir: tempfile::TempDir,
}

async fn start() -> Server {
    let repos_dir = tempfile::tempdir().expect("tempdir");
    let repos = repos_dir.path().to_path_buf();
    demo::create(&repos).expect("demo repository");
    let broker = support::start(Gateway::dir(&repos)).await;
    Server {
        addr: broker.addr,
        broker,
        repos,
        home: tempfile::tempdir().expect("home"),
        _repos_dir: repos_dir,
    }
}

impl Server {
    async fn token(&self, scope: &str, refs: &[&str]) -> (String, jit_proto::Claims) {
        self.broker.token(scope, refs).await
    }

    fn url(&self, token: Option<&str>, repo: &str) -> String {
        match token {
            Some(t) => format!("http://git:{t}@{}/{repo}.git", self.addr),
            None => format!("http://{}/{repo}.git", self.addr),
        }
    }

    /// Runs git with no user or system configuration and no prompts.
    async fn git(&self, dir: &Path, args: &[&str]) -> (bool, String) {
        let out = Command::new("git")
            .args([
                "-c",
                "credential.helper=",
                "-c",
                "advice.detachedHead=false",
            ])
            .args(args)
            .current_dir(dir)
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .await
            .expect("run git");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn bare_ref(&self, name: &str) -> Option<String> {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "--verify", "--quiet", name])
            .current_dir(self.repos.join("demo/hello.git"))
            .output()
            .expect("rev-parse");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_git_through_the_gateway() {
    let s = start().await;
    let work = tempfile::tempdir().expect("work");
    let w = work.path();
    let (read, _) = s.token("repo:demo/hello:read", &[]).await;
    let (write_all, _) = s.token("repo:demo/hello:read,write", &[]).await;
    let (hotfix, hotfix_claims) = s
        .token("repo:demo/hello:write", &["refs/heads/hotfix/*"])
        .await;

    // Without a credential git is challenged and gives up (no prompt).
    let (ok, out) = s
        .git(w, &["clone", &s.url(None, "demo/hello"), "anon"])
        .await;
    assert!(!ok, "{out}");

    // Clone with protocol v2 (the default) and v0; ls-remote with a Bearer header.
    let (ok, out) = s
        .git(w, &["clone", &s.url(Some(&read), "demo/hello"), "v2"])
        .await;
    assert!(ok, "{out}");
    assert!(w.join("v2/README.md").exists());
    let (ok, out) = s
        .git(
            w,
            &[
                "-c",
                "protocol.version=0",
                "clone",
                &s.url(Some(&read), "demo/hello"),
                "v0",
            ],
        )
        .await;
    assert!(ok, "{out}");
    let header = format!("http.extraHeader=Authorization: Bearer {read}");
    let (ok, out) = s
        .git(w, &["-c", &header, "ls-remote", &s.url(None, "demo/hello")])
        .await;
    assert!(ok && out.contains("refs/heads/main"), "{out}");

    // A read token cannot push: git shows the broker's message.
    let repo = w.join("v2");
    let (ok, _) = s
        .git(&repo, &["commit", "--allow-empty", "-qm", "one"])
        .await;
    assert!(ok);
    let (ok, out) = s
        .git(
            &repo,
            &[
                "push",
                &s.url(Some(&read), "demo/hello"),
                "HEAD:refs/heads/main",
            ],
        )
        .await;
    assert!(!ok);
    assert!(
        out.contains(
            "git-jit: token grants repo:demo/hello:read; this push needs repo:demo/hello:write"
        ),
        "{out}"
    );

    // A token narrowed to hotfix/*: main, a tag and a delete of main are refused with the
    // reason; nothing reaches the repository.
    let main_before = s.bare_ref("refs/heads/main");
    let url = s.url(Some(&hotfix), "demo/hello");
    for refspec in [
        "HEAD:refs/heads/main",
        "HEAD:refs/tags/v1",
        ":refs/heads/main",
    ] {
        let (ok, out) = s.git(&repo, &["push", &url, refspec]).await;
        assert!(!ok, "{refspec}: {out}");
        assert!(out.contains("[remote rejected]"), "{refspec}: {out}");
        assert!(
            out.contains("(git-jit: ref not allowed by grant: allowed refs/heads/hotfix/*)"),
            "{refspec}: {out}"
        );
    }
    assert_eq!(s.bare_ref("refs/heads/main"), main_before);
    assert_eq!(s.bare_ref("refs/tags/v1"), None);

    // Mixed push: refused as a whole.
    let (ok, out) = s
        .git(
            &repo,
            &[
                "push",
                &url,
                "HEAD:refs/heads/hotfix/a",
                "HEAD:refs/heads/main",
            ],
        )
        .await;
    assert!(!ok && out.contains("refused as a whole"), "{out}");
    assert_eq!(s.bare_ref("refs/heads/hotfix/a"), None);

    // Within the patterns: create, force-update and delete are allowed.
    let (ok, out) = s
        .git(&repo, &["push", &url, "HEAD:refs/heads/hotfix/a"])
        .await;
    assert!(ok, "{out}");
    assert!(s.bare_ref("refs/heads/hotfix/a").is_some());
    let (ok, _) = s
        .git(
            &repo,
            &["commit", "--amend", "--allow-empty", "-qm", "rewritten"],
        )
        .await;
    assert!(ok);
    let (ok, out) = s
        .git(
            &repo,
            &["push", "--force", &url, "HEAD:refs/heads/hotfix/a"],
        )
        .await;
    assert!(ok, "{out}");
    let (ok, out) = s.git(&repo, &["push", &url, ":refs/heads/hotfix/a"]).await;
    assert!(ok, "{out}");
    assert_eq!(s.bare_ref("refs/heads/hotfix/a"), None);

    // A force push outside the patterns is refused like any update.
    let (ok, out) = s
        .git(&repo, &["push", "--force", &url, "HEAD:refs/heads/main"])
        .await;
    assert!(!ok && out.contains("ref not allowed by grant"), "{out}");

    // An unrestricted write token pushes main.
    let (ok, out) = s
        .git(
            &repo,
            &[
                "push",
                &s.url(Some(&write_all), "demo/hello"),
                "HEAD:refs/heads/main",
            ],
        )
        .await;
    assert!(ok, "{out}");
    assert_ne!(s.bare_ref("refs/heads/main"), main_before);

    // Revoked: refused on the very next request.
    s.broker
        .store
        .revoke(
            &RevokeTarget::Jti(hotfix_claims.jti.clone()),
            SystemClock.now_ms(),
        )
        .await
        .expect("revoke");
    let (ok, out) = s
        .git(&repo, &["push", &url, "HEAD:refs/heads/hotfix/b"])
        .await;
    assert!(!ok, "{out}");
    assert_eq!(s.bare_ref("refs/heads/hotfix/b"), None);

    // Path tricks never reach the backend. git (curl) itself removes `..` segments, so the
    // raw requests are written by hand.
    for (bad, status) in [
        ("/demo/../demo/hello.git", "400"),
        ("/demo//hello.git", "400"),
        ("/demo/%2e%2e/demo/hello.git", "400"),
        ("/demo%2fhello.git", "400"),
        ("/demo/hello.git/", "400"),
        ("/Demo/hello.git", "403"),
        ("/demo/hello.git", "200"),
    ] {
        let line = raw_status(
            s.addr,
            &format!("{bad}/info/refs?service=git-upload-pack"),
            &read,
        )
        .await;
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "{bad}: {line}"
        );
    }
}

async fn raw_status(addr: std::net::SocketAddr, target: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await.expect("read");
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn in_bare(s: &Server, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(s.repos.join("demo/hello.git"))
        .output()
        .expect("git");
    assert!(out.status.success(), "{args:?}: {out:?}");
}

/// Regression (a push through a symbolic ref): with a grant limited to
/// `refs/heads/hotfix/*`, pushing to `refs/heads/hotfix/alias` — a symbolic ref on the
/// upstream pointing at `refs/heads/main` — made `git receive-pack` move `main`. The gateway
/// now asks the upstream (protocol v2 `ls-refs` with `symrefs`) and decides on the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_a_symbolic_ref_is_decided_on_its_target() {
    let s = start().await;
    in_bare(
        &s,
        &["update-ref", "refs/heads/hotfix/real", "refs/heads/main"],
    );
    in_bare(
        &s,
        &["symbolic-ref", "refs/heads/hotfix/alias", "refs/heads/main"],
    );
    in_bare(
        &s,
        &[
            "symbolic-ref",
            "refs/heads/hotfix/inner",
            "refs/heads/hotfix/real",
        ],
    );
    let work = tempfile::tempdir().expect("work");
    let w = work.path();
    let (read, _) = s.token("repo:demo/hello:read", &[]).await;
    let (hotfix, _) = s
        .token("repo:demo/hello:write", &["refs/heads/hotfix/*"])
        .await;
    let (write_all, _) = s.token("repo:demo/hello:write", &[]).await;
    let (ok, out) = s
        .git(w, &["clone", &s.url(Some(&read), "demo/hello"), "c"])
        .await;
    assert!(ok, "{out}");
    let repo = w.join("c");
    let (ok, _) = s
        .git(&repo, &["commit", "--allow-empty", "-qm", "through"])
        .await;
    assert!(ok);
    let main_before = s.bare_ref("refs/heads/main");
    let url = s.url(Some(&hotfix), "demo/hello");

    // An update and a delete through the alias are refused, naming the target.
    for refspec in ["HEAD:refs/heads/hotfix/alias", ":refs/heads/hotfix/alias"] {
        let (ok, out) = s.git(&repo, &["push", &url, refspec]).await;
        assert!(!ok, "{refspec}: {out}");
        assert!(
            out.contains(
                "git-jit: refs/heads/hotfix/alias is a symbolic ref to refs/heads/main, which the grant does not allow"
            ),
            "{refspec}: {out}"
        );
        assert_eq!(s.bare_ref("refs/heads/main"), main_before, "{refspec}");
    }
    // Mixed with an allowed ref, the whole push is refused.
    let (ok, out) = s
        .git(
            &repo,
            &[
                "push",
                &url,
                "HEAD:refs/heads/hotfix/new",
                "HEAD:refs/heads/hotfix/alias",
            ],
        )
        .await;
    assert!(!ok && out.contains("refused as a whole"), "{out}");
    assert_eq!(s.bare_ref("refs/heads/hotfix/new"), None);

    // A symref whose target the grant covers is pushed through.
    let (ok, out) = s
        .git(&repo, &["push", &url, "HEAD:refs/heads/hotfix/inner"])
        .await;
    assert!(ok, "{out}");
    let head = s.git(&repo, &["rev-parse", "HEAD"]).await.1;
    assert_eq!(
        s.bare_ref("refs/heads/hotfix/real").as_deref(),
        Some(head.trim())
    );
    // Plain refs under the pattern are unaffected; an unrestricted grant is not looked up.
    let (ok, out) = s
        .git(&repo, &["push", &url, "HEAD:refs/heads/hotfix/plain"])
        .await;
    assert!(ok, "{out}");
    let (ok, out) = s
        .git(
            &repo,
            &[
                "push",
                &s.url(Some(&write_all), "demo/hello"),
                "HEAD:refs/heads/hotfix/alias",
            ],
        )
        .await;
    assert!(ok, "{out}");
    assert_eq!(s.bare_ref("refs/heads/main").as_deref(), Some(head.trim()));
}
