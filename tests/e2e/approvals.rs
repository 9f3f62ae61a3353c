//! Access that needs approval, end to end with the real OIDC provider, the real git, the
//! broker's gateway and a webhook receiver started here: Alice asks from the terminal and
//! waits, Bob approves through the CLI, Alice's wait ends and `git push` to main works; Alice
//! cannot approve her own request; a request Bob denies issues nothing and `git push` says
//! so; the approved grant ends `ttl` after the approval; every step reached the webhook,
//! signed.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::body::Bytes;
use axum::http::HeaderMap;
use jit_e2e::bins::generate_keys;
use jit_e2e::oidc::CLI_CLIENT;
use jit_e2e::{BrokerProcess, GitServer, GitServerConfig, OidcProvider, RedisServer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::helper_flow::{Transcript, client, fails, first_line_with, login, quiet};
use crate::support::assert_no_jwt;

const UPSTREAM_USER: &str = "git-jit";
const PASSWORD_ENV: &str = "JIT_UPSTREAM_PASSWORD";
const SECRET_ENV: &str = "JIT_WEBHOOK_SECRET";

fn config(keys: &std::path::Path, redis: &str, sso: &str, git: &GitServer, hook: &str) -> String {
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

[[role]]
name = "prod-push"
issuer = "corp"
claims = {{ groups = "engineering" }}
repositories = ["acme/api", "acme/web"]
actions = ["write"]
refs = ["refs/heads/main"]
default_ttl = 30
max_ttl = 60

[role.approval]
required = 1
wait = 30
min_reason = 5

[[role.approval.approvers]]
issuer = "corp"
subjects = ["bob@example.com", "alice@example.com"]

[[admin.identity]]
issuer = "corp"
claims = {{ groups = "git-jit-admins" }}

[[upstream]]
repositories = ["acme/**"]
url = "{upstream}"
credential = {{ kind = "basic", username = "{UPSTREAM_USER}", password_env = "{PASSWORD_ENV}" }}

[[notify.webhook]]
name = "approvals"
url = "{hook}"
format = "json"
secret_env = "{SECRET_ENV}"
"#,
        base = crate::support::broker_base(keys, redis, None),
        sso = crate::support::sso_issuer(sso),
        upstream = git.base_url(),
    )
}

/// What the webhook receiver got: each delivery's headers and body.
type Deliveries = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

async fn webhook_receiver() -> Result<(String, Deliveries)> {
    let got: Deliveries = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let keep = keep.clone();
            async move {
                if let Ok(mut g) = keep.lock() {
                    g.push((headers, body));
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, got))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The events delivered so far, each checked for a valid signature.
fn verified_events(got: &Deliveries, secret: &str) -> Result<Vec<Value>> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let deliveries = got
        .lock()
        .map_err(|_| anyhow::anyhow!("receiver lock"))?
        .clone();
    let mut events = Vec::new();
    for (headers, body) in deliveries {
        let sig = headers
            .get("x-jit-signature-256")
            .and_then(|v| v.to_str().ok())
            .context("a delivery without X-Jit-Signature-256")?;
        let signed = match headers.get("x-jit-timestamp").and_then(|v| v.to_str().ok()) {
            Some(ts) => [ts.as_bytes(), b".", &body].concat(),
            None => body.to_vec(),
        };
        let want = format!("sha256={}", hex(ring::hmac::sign(&key, &signed).as_ref()));
        anyhow::ensure!(
            sig == want,
            "bad signature {sig} on {}",
            String::from_utf8_lossy(&body)
        );
        assert_no_jwt("webhook body", &String::from_utf8_lossy(&body));
        events.push(serde_json::from_slice(&body)?);
    }
    Ok(events)
}

async fn wait_for_events(got: &Deliveries, secret: &str, want: &[&str]) -> Result<Vec<Value>> {
    for _ in 0..100 {
        let events = verified_events(got, secret)?;
        let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
        if want.iter().all(|w| kinds.contains(w)) {
            return Ok(events);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "webhook events {want:?} did not all arrive: {:?}",
        verified_events(got, secret)?
    )
}

#[test]
fn alice_asks_bob_approves_push_to_main_works_and_a_denial_says_so() -> Result<()> {
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
        upstream.create_repo("acme/web")?;
        let (hook, deliveries) = webhook_receiver().await?;
        let secret = jit_e2e::random_token(24);
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let text = config(keys.path(), &redis.url(), &op.issuer(), &upstream, &hook);
        let broker = BrokerProcess::start_with_env(
            &text,
            &[(PASSWORD_ENV, &password), (SECRET_ENV, &secret)],
        )
        .await?;
        let gateway = broker.url();
        let mut t = Transcript::default();

        let alice = client()?;
        let bob = client()?;
        for (git, who) in [(&alice, "alice@example.com"), (&bob, "bob@example.com")] {
            git.run(&["jit", "setup", &gateway]).await?;
            login(git, &op, who, &mut t).await?;
        }
        quiet(
            &alice,
            &mut t,
            &[
                "clone",
                "--quiet",
                &format!("{gateway}/acme/api.git"),
                "api",
            ],
        )
        .await?;
        let wt = alice.home().join("api");
        let wt_s = wt.to_string_lossy().into_owned();
        std::fs::write(wt.join("fix.txt"), "hotfix\n")?;
        alice.run_in(&wt, &["add", "fix.txt"]).await?;
        alice
            .run_in(&wt, &["commit", "--quiet", "-m", "hotfix"])
            .await?;

        // A plain push to main fails fast and says how to ask.
        let stderr = fails(
            &alice,
            &mut t,
            &["-C", &wt_s, "push", "origin", "HEAD:main"],
        )
        .await?;
        assert!(stderr.contains("needs approval"), "{stderr}");
        assert!(stderr.contains("git jit request"), "{stderr}");

        // Alice asks and waits.
        let mut waiting = alice
            .command([
                "jit",
                "request",
                "--repo",
                "acme/api",
                "--action",
                "write",
                "--refs",
                "refs/heads/main",
                "--reason",
                "hotfix INC-42",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(waiting.stderr.take().context("stderr")?).lines();
        let mut said = String::new();
        let id = first_line_with(
            &mut lines,
            &mut said,
            "git jit request",
            "a request id",
            |line| {
                let rest = line.split("request ").nth(1)?;
                let id = rest.split_whitespace().next()?;
                id.starts_with("rq_").then(|| id.to_owned())
            },
        )
        .await?;
        assert!(
            said.contains("bob@example.com or alice@example.com (corp)"),
            "{said}"
        );
        let drain = tokio::spawn(async move {
            let mut rest = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                rest.push_str(&line);
                rest.push('\n');
            }
            rest
        });

        // Alice cannot approve her own request, though the role names her as an approver.
        let own = fails(&alice, &mut t, &["jit", "approve", &id, "--reason", "mine"]).await?;
        assert!(own.contains("own request"), "{own}");

        // Bob lists it and approves.
        let listed = bob.run(&["jit", "requests"]).await?;
        let table = String::from_utf8_lossy(&listed.stdout).into_owned();
        assert!(
            table.contains(&id) && table.contains("hotfix INC-42"),
            "{table}"
        );
        let approved = bob
            .run(&["jit", "approve", &id, "--reason", "go ahead"])
            .await?;
        assert!(
            approved.status.success(),
            "{}",
            jit_e2e::git_server::describe(&approved)
        );
        t.keep(
            "git jit approve",
            &String::from_utf8_lossy(&approved.stderr),
        );

        // Alice's wait ends with the token stored; plain git push to main now works.
        let status = tokio::time::timeout(Duration::from_secs(30), waiting.wait())
            .await
            .context("git jit request did not finish after the approval")??;
        let rest = drain.await?;
        t.keep("git jit request", &format!("{said}{rest}"));
        assert!(
            status.success(),
            "git jit request failed ({status}):\n{said}{rest}"
        );
        quiet(
            &alice,
            &mut t,
            &["-C", &wt_s, "push", "--quiet", "origin", "HEAD:main"],
        )
        .await?;
        assert_eq!(
            upstream.git_in_repo("acme/api", &["rev-parse", "refs/heads/main"])?,
            String::from_utf8_lossy(&alice.run_in(&wt, &["rev-parse", "HEAD"]).await?.stdout)
                .trim()
        );

        // The grant lives ttl (30 min) from the approval.
        let http = jit_e2e::http_client();
        let alice_id = op.id_token("alice@example.com", CLI_CLIENT).await?;
        let request: Value = http
            .get(format!("{gateway}/v1/requests/{id}"))
            .bearer_auth(&alice_id)
            .send()
            .await?
            .json()
            .await?;
        let approved_at = request["approved_at"].as_i64().context("approved_at")?;
        let admin = op.id_token("sec-admin", CLI_CLIENT).await?;
        let grants: Value = http
            .get(format!("{gateway}/v1/grants?role=prod-push"))
            .bearer_auth(&admin)
            .send()
            .await?
            .json()
            .await?;
        let grant = grants["grants"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["request_id"] == id.as_str()))
            .with_context(|| format!("no grant for {id}: {grants}"))?;
        assert_eq!(
            grant["exp"].as_i64(),
            Some(approved_at + 30 * 60),
            "{grant}"
        );

        // A second request, on another repository, denied by Bob: nothing is issued and
        // git push says who denied it.
        let out = alice
            .run(&[
                "jit",
                "request",
                "--repo",
                "acme/web",
                "--action",
                "write",
                "--refs",
                "refs/heads/main",
                "--reason",
                "release 2.1",
                "--no-wait",
            ])
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let denied_id = stdout.lines().last().unwrap_or_default().trim().to_owned();
        assert!(
            denied_id.starts_with("rq_"),
            "{}",
            jit_e2e::git_server::describe(&out)
        );
        let out = bob
            .run(&[
                "jit",
                "deny",
                &denied_id,
                "--reason",
                "not during the freeze",
            ])
            .await?;
        assert!(
            out.status.success(),
            "{}",
            jit_e2e::git_server::describe(&out)
        );
        let web = format!("{gateway}/acme/web.git");
        let stderr = fails(&alice, &mut t, &["-C", &wt_s, "push", &web, "HEAD:main"]).await?;
        assert!(stderr.contains("denied by bob@example.com"), "{stderr}");
        assert!(stderr.contains("not during the freeze"), "{stderr}");
        assert_ne!(
            upstream
                .git_in_repo(
                    "acme/web",
                    &["rev-parse", "--verify", "--quiet", "refs/heads/main"]
                )
                .unwrap_or_default(),
            String::from_utf8_lossy(&alice.run_in(&wt, &["rev-parse", "HEAD"]).await?.stdout)
                .trim()
        );

        // Every step reached the webhook, signed, without a token.
        let events = wait_for_events(
            &deliveries,
            &secret,
            &["request.created", "request.approved", "request.denied"],
        )
        .await?;
        let created: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "request.created")
            .collect();
        assert_eq!(created.len(), 2, "{events:?}");
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "request.approved" && e["decided_by"] == "bob@example.com")
        );

        assert_no_jwt("git and git-jit stderr", &t.0);
        t.assert_no_line_twice();
        Ok(())
    })
}
