//! Servers die with their test process even when it is killed, as a test runner kills a test
//! that timed out: `Drop` never runs then, so the harness's watchdogs must do the cleanup.
//!
//! The proof runs this test binary again as a child, in a session of its own (`setsid`), with
//! a private `TMPDIR`. Every process the child starts belongs to that session (none of them
//! calls `setsid`), and most name the `TMPDIR` on their command line; either marks it as the
//! child's, even where a server rewrites its process title.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use jit_e2e::{GitServer, OidcProvider, RedisServer};
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// Set for the child run only: without it the child test does nothing.
const CHILD_ENV: &str = "JIT_E2E_CLEANUP_CHILD";
/// What the child prints once its servers are up.
const READY: &str = "jit-e2e-cleanup-child: servers up";
/// The child test, as libtest names it.
const CHILD_TEST: &str = "harness_cleanup::child_starts_servers_then_hangs";

/// The child half of [`servers_die_with_a_killed_test_process`]: starts redis, the OIDC
/// provider and nginx + fcgiwrap, says so, and never finishes.
#[test]
#[ignore = "the child half of servers_die_with_a_killed_test_process, which starts it"]
fn child_starts_servers_then_hangs() -> Result<()> {
    if std::env::var_os(CHILD_ENV).is_none() {
        // Run by hand (`--ignored`) there is no parent to kill it: nothing to do.
        return Ok(());
    }
    crate::support::run(async move {
        let _redis = RedisServer::start().await?;
        let _oidc = OidcProvider::start().await?;
        let _git = GitServer::start().await?;
        println!("{READY}");
        std::future::pending::<()>().await;
        Ok(())
    })
}

#[test]
fn servers_die_with_a_killed_test_process() -> Result<()> {
    crate::support::run(async move {
        let tmp = tempfile::Builder::new()
            .prefix("jit-e2e-orphan-check-")
            .tempdir()?;
        let marker = tmp.path().to_str().context("temp dir path")?.to_owned();
        let child_stderr = std::fs::File::create(tmp.path().join("child.stderr"))?;
        let mut child = tokio::process::Command::new("setsid")
            .arg(std::env::current_exe()?)
            .args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
            .env(CHILD_ENV, "1")
            .env("TMPDIR", tmp.path())
            // A backstop: should this test fail to kill it, the child still ends.
            .env("JIT_E2E_TEST_TIMEOUT_SECS", "120")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(child_stderr)
            .kill_on_drop(true)
            .spawn()
            .context("starting the child test process")?;
        let session = child.id().context("child pid")?;
        let child_log =
            || std::fs::read_to_string(tmp.path().join("child.stderr")).unwrap_or_default();

        let mut stdout = BufReader::new(child.stdout.take().context("child stdout")?).lines();
        let ready = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = stdout.next_line().await? {
                if line == READY {
                    return Ok(());
                }
            }
            bail!("the child ended before its servers were up")
        })
        .await
        .context("the child's servers did not come up within 120 s")
        .and_then(|r| r);
        if let Err(e) = ready {
            bail!("{e:#}; the child's stderr:\n{}", child_log());
        }

        // The proof only counts if the servers were there to begin with. A freshly forked
        // nginx worker carries its master's title until it sets its own, so wait (bounded)
        // until every server shows up under its own name.
        let servers = [
            "redis-server",
            "node",
            "nginx: master",
            "nginx: worker",
            "fcgiwrap",
        ];
        let mut before = processes_of(session, &marker);
        for _ in 0..100 {
            let all_there = servers
                .iter()
                .all(|s| before.iter().any(|(_, cmdline)| cmdline.contains(s)));
            if all_there {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            before = processes_of(session, &marker);
        }
        for server in servers {
            assert!(
                before.iter().any(|(_, cmdline)| cmdline.contains(server)),
                "no {server} among the child's processes: {before:#?}"
            );
        }
        eprintln!("the child's processes before the kill: {before:#?}");

        // What a runner does on a timeout: SIGKILL to the test process alone, not its group.
        child.start_kill()?;
        let status = child.wait().await?;
        assert!(!status.success(), "the child was killed: {status}");

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = processes_of(session, &marker);
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!("10 s after the child was killed these of its processes remain: {left:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    })
}

/// Live processes (not zombies, whose command line is empty) in `session` or whose command
/// line mentions `marker`, as (pid, command line).
fn processes_of(session: u32, marker: &str) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<(u32, String)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let dir = Path::new("/proc").join(pid.to_string());
            let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
            if cmdline.is_empty() {
                return None;
            }
            let cmdline = String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .trim_end()
                .to_owned();
            let in_session = session_of(&dir) == Some(session);
            (in_session || cmdline.contains(marker)).then_some((pid, cmdline))
        })
        .collect();
    found.sort();
    found
}

/// The session id in `/proc/PID/stat`: the fourth field after the command name, which is in
/// parentheses and may itself contain spaces and parentheses.
fn session_of(proc_dir: &Path) -> Option<u32> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(3)?.parse().ok()
}

/// The runner's limit holds even for a body that blocks its thread, where a
/// `tokio::time::timeout` inside the body would never get to run.
#[test]
#[should_panic(expected = "did not finish within 200ms")]
fn a_test_body_that_blocks_fails_at_its_limit() {
    let outcome = crate::support::run_within(Duration::from_millis(200), async move {
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    });
    // Not the expected message: reaching this line fails the test.
    panic!("the runner returned {outcome:?} instead of failing at its limit");
}
