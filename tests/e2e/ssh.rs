//! Git over SSH with real parts: Debian's sshd on a free loopback port trusting the broker's
//! SSH CA, `jit-ssh-gate` as the Git user's `ForceCommand`, bare repositories, and the real
//! `git` cloning and pushing over `ssh://` through `git jit ssh` (set up with `git jit setup
//! --ssh`), its identity a CI job's OIDC token. A push outside the grant is refused in git's
//! own words, also through a symbolic ref; a revoked grant's certificate is refused on the
//! next connection while still valid; an expired certificate is refused by sshd itself; a
//! certificate for `acme/api` cannot reach `acme/api-private`; no private key or certificate
//! is logged. The gate authenticates to the broker as an introspection client; nobody else may
//! ask its question.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use jit_e2e::bins::{bin_path, generate_keys};
use jit_e2e::sshd::{GIT_USER, SshServer, SshdConfig};
use jit_e2e::{BrokerProcess, CiIssuer, RedisServer};
use serde_json::{Value, json};

use crate::helper_flow::{Transcript, client, fails, quiet};
use crate::support::revoke;

const GATE_SECRET_ENV: &str = "JIT_TEST_GATE_SECRET";

fn config(keys: &Path, redis: &str, ci: &CiIssuer) -> String {
    format!(
        r#"
{base}
[[issuer]]
name = "github"
issuer = "{github}"
audience = "{{{{URL}}}}"
algorithms = ["RS256"]

[[issuer]]
name = "ci"
issuer = "{root}"
audience = "git-jit"

[[role]]
name = "job-read"
issuer = "github"
claims = {{ repository_owner = "acme" }}
repositories = ["{{repository}}"]
actions = ["read"]

[[role]]
name = "job-push"
issuer = "github"
claims = {{ repository_owner = "acme" }}
repositories = ["{{repository}}"]
actions = ["write"]
refs = ["refs/heads/feature/**"]

[[admin.identity]]
issuer = "ci"
claims = {{ groups = "security" }}

# The gate authenticates; loopback callers get no pass.
[server.introspection]
allow_loopback = false

[[server.introspection.client]]
client_id = "ssh-gate"
secret_env = "{GATE_SECRET_ENV}"
"#,
        base = crate::support::broker_base(keys, redis, None),
        github = ci.platform_issuer("github"),
        root = ci.issuer(),
    )
}

/// `ssh-keygen -L -f FILE`'s text.
fn describe_cert(path: &Path) -> Result<String> {
    jit_e2e::process::run_checked(Command::new("ssh-keygen").arg("-L").arg("-f").arg(path))
}

/// The helper's cached certificates under `home`.
fn cached_certs(home: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![home.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.to_string_lossy().ends_with(".key-cert.pub") {
                out.push(p);
            }
        }
    }
    out
}

/// The middle of a certificate's or key's base64 body: what must never appear in a log.
fn secret_part(text: &str) -> String {
    let body = text.split_whitespace().nth(1).unwrap_or_default();
    body.chars().skip(40).take(60).collect()
}

/// Plain `ssh` with `key` and its certificate `cert`, asking the server to run `command`.
fn ssh_with(
    config: &Path,
    key: &Path,
    cert: &Path,
    port: u16,
    command: &str,
) -> Result<std::process::Output> {
    Ok(Command::new("ssh")
        .arg("-F")
        .arg(config)
        .arg("-i")
        .arg(key)
        .arg("-o")
        .arg(format!("CertificateFile={}", cert.display()))
        .args(["-o", "IdentitiesOnly=yes", "-p", &port.to_string()])
        .arg(format!("{GIT_USER}@127.0.0.1"))
        .arg(command)
        .stdin(std::process::Stdio::null())
        .output()?)
}

async fn trail(url: &str, admin: &str) -> Result<Vec<Value>> {
    let body = jit_e2e::http_client()
        .get(format!("{url}/v1/audit?limit=1000"))
        .bearer_auth(admin)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    body.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).context("audit line"))
        .collect()
}

#[test]
fn clone_and_push_over_ssh_through_the_gate() -> Result<()> {
    crate::support::run(async {
        let redis = RedisServer::start().await?;
        let ci = CiIssuer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        jit_e2e::process::run_checked(
            Command::new(bin_path("jit-broker")?)
                .args(["keys", "generate", "--ssh", "--dir"])
                .arg(keys.path()),
        )?;
        let gate_secret = jit_e2e::random_token(24);
        let broker = BrokerProcess::start_with_env(
            &config(keys.path(), &redis.url(), &ci),
            &[(GATE_SECRET_ENV, &gate_secret)],
        )
        .await?;
        let url = broker.url();
        // The gate's question is for the gate alone.
        let anonymous = jit_e2e::http_client()
            .post(format!("{url}/ssh/check"))
            .json(&json!({"certificate": "x", "command": "git-upload-pack 'acme/api.git'"}))
            .send()
            .await?;
        assert_eq!(anonymous.status(), 401);
        let secret_dir = tempfile::tempdir()?;
        let secret_file = secret_dir.path().join("gate.secret");
        std::fs::write(&secret_file, format!("{gate_secret}\n"))?;
        // Read by the Git user sshd runs the gate as.
        for (path, mode) in [(secret_dir.path(), 0o755), (secret_file.as_path(), 0o644)] {
            std::fs::set_permissions(
                path,
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(mode),
            )?;
        }
        let ca = jit_e2e::http_client()
            .get(format!("{url}/.well-known/ssh-ca.pub"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        assert!(ca.starts_with("ssh-ed25519 "), "{ca}");
        let gate = bin_path("jit-ssh-gate")?;
        let sshd = SshServer::start(SshdConfig {
            trusted_ca_keys: Some(ca),
            authorized_key: None,
            force_command: Some(format!(
                "{} --broker {url} --repos {{{{REPOS}}}} --client-id ssh-gate --secret-file {}",
                gate.display(),
                secret_file.display()
            )),
        })
        .await?;
        for repo in ["acme/api", "acme/api-private"] {
            sshd.create_repo(repo)?;
        }

        // The job's git: its identity from GitHub Actions' variables, ssh pinned to this
        // server's host key.
        ci.set_actions_token(&ci.github_actions("acme/api").rs256());
        let mut git = client()?;
        let ssh_dir = tempfile::tempdir()?;
        let ssh_config = sshd.client_config(ssh_dir.path())?;
        let ssh = ssh_dir.path().join("ssh");
        std::fs::write(
            &ssh,
            format!("#!/bin/sh\nexec ssh -F {} \"$@\"\n", ssh_config.display()),
        )?;
        std::fs::set_permissions(
            &ssh,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )?;
        git.env("GIT_JIT_BROKER", &url)
            .env("GIT_JIT_SSH", &ssh)
            .env(
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                ci.actions_token_request_url(),
            )
            .env(
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                ci.actions_token_request_token(),
            );
        let out = git
            .run(&["jit", "setup", "--ssh", &format!("{GIT_USER}@127.0.0.1")])
            .await?;
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("127.0.0.1"), "{said}");

        let mut t = Transcript::default();
        let repo_url = sshd.repo_url("acme/api");
        quiet(&git, &mut t, &["clone", "--quiet", &repo_url, "api"]).await?;
        let wt = git.home().join("api");
        let wt_s = wt.to_string_lossy().into_owned();
        assert!(wt.join("README.md").is_file());
        let certs = cached_certs(git.home());
        assert_eq!(
            certs.len(),
            1,
            "one certificate for acme/api read: {certs:?}"
        );
        let read_cert = certs[0].clone();
        let described = describe_cert(&read_cert)?;
        assert!(described.contains("repo:acme/api:read"), "{described}");
        assert!(described.contains("Type: ssh-ed25519-cert-v01@openssh.com user certificate"));

        // A push within the grant.
        std::fs::write(wt.join("f.txt"), "1\n")?;
        git.run_in(&wt, &["add", "f.txt"]).await?;
        git.run_in(&wt, &["commit", "--quiet", "-m", "f"]).await?;
        quiet(
            &git,
            &mut t,
            &[
                "-C",
                &wt_s,
                "push",
                "--quiet",
                "origin",
                "HEAD:refs/heads/feature/x",
            ],
        )
        .await?;
        let head = git.run_in(&wt, &["rev-parse", "HEAD"]).await?;
        let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
        assert_eq!(
            sshd.git_in_repo("acme/api", &["rev-parse", "refs/heads/feature/x"])?,
            head
        );

        // A ref outside the grant: refused in git's words, nothing changes.
        let main_before = sshd.git_in_repo("acme/api", &["rev-parse", "refs/heads/main"])?;
        let stderr = fails(&git, &mut t, &["-C", &wt_s, "push", "origin", "HEAD:main"]).await?;
        assert!(
            stderr.contains("[remote rejected] HEAD -> main"),
            "{stderr}"
        );
        assert!(
            stderr.contains("git-jit: ref not allowed by grant: allowed refs/heads/feature/**"),
            "{stderr}"
        );
        // The whole push is refused: an allowed ref beside it does not go through either.
        let stderr = fails(
            &git,
            &mut t,
            &[
                "-C",
                &wt_s,
                "push",
                "origin",
                "HEAD:main",
                "HEAD:refs/heads/feature/y",
            ],
        )
        .await?;
        assert!(stderr.contains("push refused as a whole"), "{stderr}");
        // A name inside the grant that is a symbolic ref to main on the server.
        sshd.git_in_repo(
            "acme/api",
            &[
                "symbolic-ref",
                "refs/heads/feature/alias",
                "refs/heads/main",
            ],
        )?;
        let stderr = fails(
            &git,
            &mut t,
            &[
                "-C",
                &wt_s,
                "push",
                "origin",
                "HEAD:refs/heads/feature/alias",
            ],
        )
        .await?;
        assert!(
            stderr.contains("is a symbolic ref to refs/heads/main"),
            "{stderr}"
        );
        assert_eq!(
            sshd.git_in_repo("acme/api", &["rev-parse", "refs/heads/main"])?,
            main_before
        );
        assert!(
            sshd.git_in_repo(
                "acme/api",
                &["rev-parse", "--verify", "-q", "refs/heads/feature/y"]
            )
            .is_err()
        );

        // The certificate for acme/api cannot reach acme/api-private (asked directly, as a
        // stolen certificate would be used), nor can the job get one for it.
        let key = read_cert.with_file_name(
            read_cert
                .file_name()
                .map(|n| n.to_string_lossy().replace("-cert.pub", ""))
                .unwrap_or_default(),
        );
        let direct = ssh_with(
            &ssh_config,
            &key,
            &read_cert,
            sshd.port(),
            "git-upload-pack 'acme/api-private.git'",
        )?;
        let direct_err = String::from_utf8_lossy(&direct.stderr);
        assert!(!direct.status.success());
        assert!(
            direct_err.contains("token grants repo:acme/api:read; this clone or fetch needs repo:acme/api-private:read"),
            "{direct_err}"
        );
        assert!(
            direct.stdout.is_empty(),
            "nothing of the repository was sent"
        );
        let stderr = fails(
            &git,
            &mut t,
            &["clone", &sshd.repo_url("acme/api-private"), "private"],
        )
        .await?;
        assert!(stderr.contains("git-jit"), "{stderr}");

        // Revoked: the cached certificate is still within its validity, and refused.
        let admin = ci
            .token()
            .subject("sec@example.com")
            .claim("groups", json!(["security"]))
            .sign();
        let revoked = revoke(&url, &admin, "repo", "acme/api", "job compromised").await?;
        assert!(revoked["at_most"].as_u64().unwrap_or(0) >= 2, "{revoked}");
        let described = describe_cert(&read_cert)?;
        assert!(described.contains("Valid: from"), "{described}");
        let stderr = fails(&git, &mut t, &["-C", &wt_s, "fetch"]).await?;
        assert!(stderr.contains("token has been revoked"), "{stderr}");

        // Expired: a certificate from the same CA whose validity has passed never reaches
        // the gate; sshd refuses it.
        let ring = jit_broker::keys::KeyRing::load_dir(keys.path())?;
        let signer = jit_broker::token::TokenSigner::new(
            std::sync::Arc::new(ring),
            url.clone(),
            "git-jit".to_owned(),
        );
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs(),
        )?;
        let old_jti = jit_broker::token::new_jti()?;
        let claims = jit_proto::Claims {
            iss: url.clone(),
            aud: "git-jit".into(),
            sub: "repo:acme/api".into(),
            idp: "github".into(),
            iat: now - 600,
            nbf: now - 600,
            exp: now - 300,
            jti: old_jti.clone(),
            scope: jit_proto::Scope::parse("repo:acme/api:read")?,
            refs: vec![],
            role: "job-read".into(),
            reason: None,
            req: None,
        };
        let old = ssh_dir.path().join("old");
        jit_e2e::process::run_checked(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&old),
        )?;
        let public = std::fs::read_to_string(old.with_extension("pub"))?;
        let (cert, _) = signer.sign_ssh(&claims, public.trim())?;
        let old_cert = ssh_dir.path().join("old-cert.pub");
        std::fs::write(&old_cert, format!("{cert}\n"))?;
        let expired = ssh_with(
            &ssh_config,
            &old,
            &old_cert,
            sshd.port(),
            "git-upload-pack 'acme/api.git'",
        )?;
        let expired_err = String::from_utf8_lossy(&expired.stderr);
        assert!(!expired.status.success());
        assert!(expired_err.contains("Permission denied"), "{expired_err}");
        let sshd_log = sshd.logs();
        assert!(sshd_log.to_lowercase().contains("expired"), "{sshd_log}");

        // The audit trail: every gate decision, through the door `ssh`; the expired
        // certificate never reached the broker.
        let events = trail(&url, &admin).await?;
        let via_ssh: Vec<&Value> = events
            .iter()
            .filter(|e| e["via"] == "ssh" || e["data"]["via"] == "ssh")
            .collect();
        assert!(
            via_ssh.iter().any(|e| e["event"] == "access.allowed"),
            "{events:?}"
        );
        assert!(
            via_ssh
                .iter()
                .any(|e| e["event"] == "access.denied"
                    && e.to_string().contains("refs/heads/main")),
            "{events:?}"
        );
        assert!(!events.iter().any(|e| e.to_string().contains(&old_jti)));
        let issued = events
            .iter()
            .filter(|e| e["event"] == "grant.issued" && e.to_string().contains("ssh-certificate"))
            .count();
        assert!(issued >= 2, "a read and a write certificate: {events:?}");

        // Nothing secret in any log or in git's output.
        let private = std::fs::read_to_string(&key)?;
        let secrets = [
            gate_secret.clone(),
            secret_part(&std::fs::read_to_string(&read_cert)?),
            secret_part(&cert),
            private.lines().nth(2).unwrap_or_default().to_owned(),
        ];
        for (name, text) in [
            ("broker", broker.logs()),
            ("sshd", sshd_log),
            ("git", t.0.clone()),
            ("audit", serde_json::to_string(&events)?),
        ] {
            assert!(
                !text.contains("PRIVATE KEY"),
                "{name} log holds a private key"
            );
            for s in &secrets {
                assert!(
                    !s.is_empty() && !text.contains(s.as_str()),
                    "{name} log holds a secret"
                );
            }
        }
        t.assert_no_line_twice();
        Ok(())
    })
}
