//! What operators rely on: `/metrics` passes Prometheus's own `promtool check metrics`, the
//! shipped alert rules pass `promtool check rules` and their unit tests, and SIGTERM during
//! a large clone lets the clone finish while new connections are refused, for at most the
//! drain time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use jit_broker::store::redis::{RedisStore, Topology};
use jit_e2e::bins::generate_keys;
use jit_e2e::process::{find_program, port_is_open, run_checked, wait_for, wait_port_closed};
use jit_e2e::{BrokerProcess, RedisServer};

use crate::support::basic;

/// `deploy/prometheus` of the repository.
fn prometheus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// Runs `promtool ARGS` with `stdin`; its success and output.
fn promtool(args: &[&str], stdin: &str, dir: &Path) -> Result<(bool, String)> {
    use std::io::Write as _;
    let mut child = Command::new(find_program("promtool")?)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}

/// A broker on Redis whose gateway serves the bare repositories under `root` (`dir:`).
fn config(keys: &Path, redis: &str, root: &Path, drain_secs: u64) -> String {
    format!(
        r#"{base}
[server]
shutdown_drain_secs = {drain_secs}

[[upstream]]
repositories = ["local/**"]
url = "dir:{root}"
"#,
        base = crate::support::broker_base(keys, redis, None),
        root = root.display(),
    )
}

/// A read token for `repo`, its grant put in the store directly.
async fn read_token(keys: &Path, redis: &str, broker: &str, repo: &str) -> Result<String> {
    let store = RedisStore::new(Topology::Single(redis.to_owned()), "jit", 1000);
    crate::support::issue(keys, broker, &store, &format!("repo:{repo}:read")).await
}

#[test]
fn metrics_pass_promtool_and_the_alert_rules_pass_their_tests() -> Result<()> {
    crate::support::run(async move {
        let (_redis, _keys, broker) = crate::support::plain_broker().await?;
        let http = jit_e2e::http_client();
        // Traffic for several families: routes, a gateway refusal, an audited denial.
        for path in [
            "/healthz",
            "/readyz",
            "/acme/api.git/info/refs?service=git-upload-pack",
        ] {
            http.get(format!("{}{path}", broker.url())).send().await?;
        }
        http.get(format!("{}/authz", broker.url()))
            .header(
                "X-Original-URI",
                "/acme/api.git/info/refs?service=git-upload-pack",
            )
            .header("Authorization", "Bearer not.a.token")
            .send()
            .await?;
        let r = http.get(format!("{}/metrics", broker.url())).send().await?;
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = r.text().await?;
        assert!(text.contains("jit_store_up 1"), "{text}");
        assert!(
            text.contains("# TYPE jit_audit_failures_total counter"),
            "{text}"
        );
        let (ok, out) = promtool(&["check", "metrics"], &text, Path::new("."))?;
        assert!(ok && out.trim().is_empty(), "promtool: {out}\n{text}");
        // Prometheus asks for OpenMetrics and gets it.
        let r = http
            .get(format!("{}/metrics", broker.url()))
            .header(
                "Accept",
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            )
            .send()
            .await?;
        let kind = r.headers().get("content-type").cloned();
        assert!(r.text().await?.ends_with("# EOF\n"));
        assert_eq!(
            kind.as_ref().and_then(|v| v.to_str().ok()),
            Some(jit_broker::metrics::CONTENT_TYPE)
        );

        let dir = prometheus_dir();
        let (ok, out) = promtool(&["check", "rules", "alerts.yaml"], "", &dir)?;
        assert!(ok, "{out}");
        let (ok, out) = promtool(&["test", "rules", "alerts.test.yaml"], "", &dir)?;
        assert!(ok, "{out}");
        // The rule tests can fail: a broken expectation is reported.
        let broken = std::fs::read_to_string(dir.join("alerts.test.yaml"))?
            .replace("cannot reach its grant store", "is fine");
        let scratch = tempfile::tempdir()?;
        std::fs::copy(dir.join("alerts.yaml"), scratch.path().join("alerts.yaml"))?;
        std::fs::write(scratch.path().join("alerts.test.yaml"), broken)?;
        let (ok, out) = promtool(&["test", "rules", "alerts.test.yaml"], "", scratch.path())?;
        assert!(!ok && out.contains("GitJitStoreDown"), "{out}");
        Ok(())
    })
}

/// A bare repository `local/big` under `root` holding one commit with `mib` MiB of random
/// (incompressible) data; its commit id.
fn big_repository(root: &Path, mib: usize) -> Result<String> {
    let work = root.join("work");
    std::fs::create_dir_all(&work)?;
    let git = |dir: &Path, args: &[&str]| {
        run_checked(
            Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                .args(args)
                .current_dir(dir),
        )
    };
    git(&work, &["init", "-q", "-b", "main"])?;
    let mut data = vec![0u8; mib << 20];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut data)?;
    std::fs::write(work.join("blob.bin"), data)?;
    git(&work, &["add", "blob.bin"])?;
    git(&work, &["commit", "-q", "-m", "big"])?;
    std::fs::create_dir_all(root.join("local"))?;
    git(root, &["clone", "-q", "--bare", "work", "local/big.git"])?;
    Ok(git(&work, &["rev-parse", "HEAD"])?.trim().to_owned())
}

/// A protocol-v0 fetch of `commit` from `local/big` through the gateway at `broker` (no
/// capabilities: the pack comes raw after `NAK`), answered as a stream.
async fn fetch(
    http: &reqwest::Client,
    broker: &str,
    token: &str,
    commit: &str,
) -> Result<reqwest::Response> {
    Ok(http
        .post(format!("{broker}/local/big.git/git-upload-pack"))
        .header("Authorization", basic(token))
        .header("Content-Type", "application/x-git-upload-pack-request")
        .body(format!("0032want {commit}\n00000009done\n"))
        .send()
        .await?)
}

#[test]
fn sigterm_lets_a_large_clone_finish_and_refuses_new_work() -> Result<()> {
    crate::support::run(async move {
        let redis = RedisServer::start().await?;
        let keys = tempfile::tempdir()?;
        generate_keys(keys.path())?;
        let root = tempfile::tempdir()?;
        let commit = big_repository(root.path(), 48)?;
        let mut broker =
            BrokerProcess::start(&config(keys.path(), &redis.url(), root.path(), 300)).await?;
        let token = read_token(keys.path(), &redis.url(), &broker.url(), "local/big").await?;
        let http = jit_e2e::http_client();
        let mut clone = fetch(&http, &broker.url(), &token, &commit).await?;
        assert_eq!(clone.status(), 200);
        let mut body = clone.chunk().await?.context("a first chunk")?.to_vec();

        // SIGTERM mid-clone: the port closes (no new work) while the clone goes on.
        let pid = broker.pid().context("pid")?;
        run_checked(Command::new("kill").args(["-TERM", &pid.to_string()]))?;
        wait_port_closed(broker.port(), Duration::from_secs(30))?;
        assert!(!port_is_open(broker.port()), "new connections are refused");
        while let Some(chunk) = clone.chunk().await? {
            body.extend_from_slice(&chunk);
        }
        // The pack is whole: git itself indexes it (checksums, every object).
        let pack = body.strip_prefix(b"0008NAK\n").context("NAK first")?;
        assert!(pack.len() > 48 << 20, "{} bytes", pack.len());
        let file = root.path().join("received.pack");
        std::fs::write(&file, pack)?;
        run_checked(Command::new("git").arg("index-pack").arg(&file))?;
        wait_for("the broker to stop", Duration::from_secs(60), || {
            let logs = broker.logs();
            async move {
                Ok(logs
                    .contains("stopped: every connection is closed")
                    .then_some(()))
            }
        })
        .await?;
        broker.stop()?;

        // The drain time is a bound: a client that stops reading does not hold the broker.
        let mut broker =
            BrokerProcess::start(&config(keys.path(), &redis.url(), root.path(), 1)).await?;
        let token = read_token(keys.path(), &redis.url(), &broker.url(), "local/big").await?;
        let mut stalled = fetch(&http, &broker.url(), &token, &commit).await?;
        stalled.chunk().await?.context("a first chunk")?;
        let pid = broker.pid().context("pid")?;
        run_checked(Command::new("kill").args(["-TERM", &pid.to_string()]))?;
        wait_for("the drain bound", Duration::from_secs(60), || {
            let logs = broker.logs();
            async move { Ok(logs.contains("the drain time is over").then_some(())) }
        })
        .await?;
        drop(stalled);
        broker.stop()?;
        Ok(())
    })
}
