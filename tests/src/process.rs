//! Child processes owned by the harness: free ports, captured logs, readiness waits and
//! guaranteed cleanup.
//!
//! Every process is started in its own process group and ended as a group on drop (SIGTERM,
//! a grace period, then SIGKILL), so a server's workers (nginx workers, fcgiwrap children) die
//! with it. Exited processes may linger as zombies on this kind of machine, so "is it gone?" is
//! answered by reaping the leader or probing the port it served, never by `kill -0`.
//!
//! Drop does not run when the test process itself is killed (a runner's timeout, Ctrl-C), so
//! each server also gets a watchdog: a `sh` in the server's process group, blocked reading a
//! pipe whose only write end the test process holds. The kernel closes that end however the
//! test process dies, even on SIGKILL; the watchdog then ends the group the same way. Being a
//! member of the group, the watchdog keeps the group id from being reused while it waits, and
//! an orderly drop ends it together with the server.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a server gets to become ready before the harness gives up.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a server gets between SIGTERM and SIGKILL when it is dropped.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// The watchdog (`$1` is the process group): it ignores the SIGTERM it sends its own group,
/// waits for the pipe on stdin to close, then gives the group leader up to 2 s (20 × 0.1 s)
/// to leave — gone or a zombie — before SIGKILL, which ends the watchdog too.
const WATCHDOG_SCRIPT: &str = r#"trap '' TERM INT HUP
while read -r _; do :; done
kill -TERM "-$1" 2>/dev/null
i=0
while [ "$i" -lt 20 ] && grep -q '^State:[[:space:]]*[^Z]' "/proc/$1/status" 2>/dev/null; do
  sleep 0.1
  i=$((i + 1))
done
kill -KILL "-$1"
"#;

/// A port on 127.0.0.1 that was free a moment ago (the OS picked it for a bind to port 0).
///
/// Another process may still take it before ours binds; starters retry on collision.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding 127.0.0.1:0 to pick a port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_is_open(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Blocks until nothing listens on `port` any more (or `timeout` passes).
pub fn wait_port_closed(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while port_is_open(port) {
        if Instant::now() > deadline {
            bail!("port {port} still accepts connections {timeout:?} after its server was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Waits (up to [`START_TIMEOUT`]) until something listens on `port` of 127.0.0.1, e.g. a
/// server block added to a running nginx.
pub async fn wait_port_open(what: &str, port: u16) -> Result<()> {
    wait_for(what, START_TIMEOUT, || {
        let open = port_is_open(port);
        async move { Ok(open.then_some(())) }
    })
    .await
}

/// Polls `probe` every 25 ms until it returns `Ok(Some(v))`, failing after `timeout` with the
/// last error (if any) and `what` in the message.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            let detail = last_err
                .map(|e| format!(": last error: {e:#}"))
                .unwrap_or_default();
            bail!("timed out after {timeout:?} waiting for {what}{detail}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A child process in its own process group, its stdout and stderr captured to one log file.
///
/// Dropping it kills the whole group; if the current thread is panicking (a failing test), or
/// `JIT_E2E_SHOW_LOGS` is set, the log is printed to stderr first so the failure explains
/// itself.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Option<Child>,
    /// The watchdog in the child's group; its stdin is the pipe whose closing means "the test
    /// process is gone".
    watchdog: Option<Child>,
    log_path: PathBuf,
}

impl ManagedProcess {
    /// Spawns `cmd` as `name`, appending its output to `log_dir/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Result<Self> {
        let log_path = log_dir.join(format!("{name}.log"));
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening log file {}", log_path.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let mut process = Self {
            name: name.to_owned(),
            child: Some(child),
            watchdog: None,
            log_path,
        };
        // On error `process` is dropped, which kills the group just started.
        process.watchdog = Some(spawn_watchdog(name, process.pid().unwrap_or_default())?);
        Ok(process)
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where the output goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `Some(status)` if the process has exited (it is then reaped).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Fails with the captured log if the process has already exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.exit_status() {
            bail!(
                "{} exited early ({status}); its log:\n{}",
                self.name,
                self.logs()
            );
        }
        Ok(())
    }

    /// Kills the process group with SIGKILL and reaps the leader and the watchdog. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id(), "KILL");
            // Best effort: both fail only if the process is already reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            // The group's SIGKILL ended it; this reaps it (and is a no-op if already done).
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }

    /// Sends SIGTERM to the group, waits up to `grace` for the leader to exit (reaping it is
    /// the probe), then SIGKILLs the group, which takes any straggler with it.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(child) = self.child.as_mut() {
            kill_group(child.id(), "TERM");
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill();
    }

    /// Prints the log to stderr, framed with the process name.
    pub fn print_logs(&self) {
        eprintln!(
            "----- {} log ({}) -----\n{}----- end of {} log -----",
            self.name,
            self.log_path.display(),
            self.logs(),
            self.name
        );
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        // A test that fails by returning `Err` drops its servers before the harness sees the
        // error; JIT_E2E_SHOW_LOGS=1 prints every log for that case.
        let show = std::thread::panicking() || std::env::var_os("JIT_E2E_SHOW_LOGS").is_some();
        if show && self.child.is_some() {
            self.print_logs();
        }
        self.terminate(STOP_GRACE);
    }
}

/// Starts the watchdog of the process group `pgid` (see the module docs), as a member of it.
fn spawn_watchdog(name: &str, pgid: u32) -> Result<Child> {
    let pgid_arg = pgid.to_string();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg(format!("jit-e2e-watchdog-{name}"))
        .arg(&pgid_arg)
        // std creates the pipe close-on-exec: no other child inherits its write end, so it
        // closes exactly when this process lets go of it or dies.
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(i32::try_from(pgid).context("process group id out of range")?);
    cmd.spawn()
        .with_context(|| format!("starting the watchdog of {name} (process group {pgid_arg})"))
}

/// `kill -SIG -- -PGID`, through the `kill` command because this crate forbids `unsafe`.
fn kill_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Why a server did not become ready, and so whether its starter should try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// Its log says the port was taken: try again on another port.
    PortTaken,
    /// It was still running, but did not answer within [`START_TIMEOUT`]: a fresh process may
    /// (a stall, not a crash; the error says where the process stood).
    Stalled,
    /// It exited, or could not be started: trying again would fail the same way.
    Failed,
}

/// `error` as a start that cannot succeed by trying again ([`NotReady::Failed`]).
pub fn failed(error: anyhow::Error) -> (anyhow::Error, NotReady) {
    (error, NotReady::Failed)
}

/// How many fresh starts a starter makes after each kind of [`NotReady`].
#[derive(Debug, Default)]
pub struct Retries {
    ports_taken: u32,
    stalls: u32,
}

impl Retries {
    /// Port collisions retried before giving up.
    const PORTS_TAKEN: u32 = 5;
    /// Stalled starts retried before giving up (each cost [`START_TIMEOUT`]).
    const STALLS: u32 = 2;

    /// Whether to start `name` again after it failed with `error` for `why`; counts the
    /// attempt. A stall retried is told on stderr (with where the process stood): it is in
    /// the test's captured output (nextest shows it with `--success-output immediate`).
    pub fn again(&mut self, name: &str, why: NotReady, error: &anyhow::Error) -> bool {
        let (used, limit) = match why {
            NotReady::PortTaken => (&mut self.ports_taken, Self::PORTS_TAKEN),
            NotReady::Stalled => (&mut self.stalls, Self::STALLS),
            NotReady::Failed => return false,
        };
        *used += 1;
        let again = *used <= limit;
        if again && why == NotReady::Stalled {
            eprintln!("{name} did not come up in time, starting a fresh one: {error:#}");
        }
        again
    }
}

/// Waits until `process` answers 200 on `url` (probes with [`crate::probe_client`]) and
/// returns it; fails as [`wait_ready`] does.
pub async fn wait_healthy(
    name: &str,
    process: ManagedProcess,
    url: &str,
) -> std::result::Result<ManagedProcess, (anyhow::Error, NotReady)> {
    let http = crate::probe_client();
    wait_ready(
        process,
        &format!("{name} on {url}"),
        START_TIMEOUT,
        None,
        || {
            let req = http.get(url).send();
            async move { matches!(req.await, Ok(r) if r.status().is_success()) }
        },
    )
    .await
}

/// Waits until `ready` says `process` is ready (polled every 25 ms, up to `timeout`; `what`
/// names the wait in the error) and returns it. A process that exits fails the wait at once.
/// On failure the process is killed, and the error carries its log (and `extra_log`, a file
/// it writes besides its output), where it stood if it was still running (its state, CPU
/// time and kernel wait), and why it failed ([`NotReady`]), so the caller may start again
/// ([`start_retrying`]).
pub async fn wait_ready<F, Fut>(
    mut process: ManagedProcess,
    what: &str,
    timeout: Duration,
    extra_log: Option<&Path>,
    mut ready: F,
) -> std::result::Result<ManagedProcess, (anyhow::Error, NotReady)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let name = process.name.clone();
    let deadline = Instant::now() + timeout;
    // A process that exits fails the wait at once; one still running gets the whole timeout.
    let e = loop {
        if let Some(status) = process.exit_status() {
            break anyhow::anyhow!("{name} exited ({status}) while waiting for {what}");
        }
        if ready().await {
            return Ok(process);
        }
        if Instant::now() > deadline {
            break anyhow::anyhow!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let running = process.exit_status().is_none();
    let stood = process.pid().filter(|_| running).map(where_it_stands);
    let mut log = process.logs();
    if let Some(path) = extra_log {
        log.push_str(&std::fs::read_to_string(path).unwrap_or_default());
    }
    process.kill();
    let why = if looks_like_port_collision(&log) {
        NotReady::PortTaken
    } else if running {
        NotReady::Stalled
    } else {
        NotReady::Failed
    };
    let e = match stood {
        Some(stood) => e.context(format!("{name} still running: {stood}")),
        None => e,
    };
    Err((e.context(format!("{name} log:\n{log}")), why))
}

/// Calls `start` until it gives a ready server: again after a taken port or a stall, as
/// [`Retries`] allows; `name` names the server in what a retried stall prints.
pub async fn start_retrying<T, F, Fut>(name: &str, mut start: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, (anyhow::Error, NotReady)>>,
{
    let mut retries = Retries::default();
    loop {
        match start().await {
            Ok(server) => return Ok(server),
            Err((e, why)) => {
                if !retries.again(name, why, &e) {
                    return Err(e);
                }
            }
        }
    }
}

/// Where a running process stands, from `/proc`: its scheduler state, the CPU time it has
/// used, and the kernel function it waits in, e.g. `state S, 0.52 s of CPU, waiting in
/// do_epoll_wait`. A process that used its whole wait on the CPU was slow; one that used
/// little was blocked.
fn where_it_stands(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces; count after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let state = fields.first().copied().unwrap_or("?");
    // utime and stime (fields 14 and 15) in clock ticks of USER_HZ, 100 on Linux.
    let ticks: u64 = fields
        .get(11..13)
        .map(|t| t.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or_default();
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    let wchan = match wchan.trim() {
        "" | "0" => "nothing".to_owned(),
        w => w.to_owned(),
    };
    format!(
        "state {state}, {:.2} s of CPU, waiting in {wchan}",
        ticks as f64 / 100.0
    )
}

/// Whether a log says the server could not bind its port (so the starter retries elsewhere).
fn looks_like_port_collision(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("EADDRINUSE")
}

/// Runs a short command to completion, failing with its output if it does not succeed.
pub fn run_checked(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Finds `name` on PATH (or in /usr/sbin and /sbin, where Debian puts nginx and fcgiwrap).
pub fn find_program(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = [PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")];
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("`{name}` not found on PATH; run scripts/test, which installs it"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `script` under `sh` as a managed process and waits (1 s) for a readiness that
    /// never comes. With `log_file`, `$0` is a file the script may write its errors to, which
    /// the wait reads as the process's log file besides its output.
    fn start_and_wait_with(script: &str, log_file: bool) -> (anyhow::Error, NotReady) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let error_log = dir.path().join("error.log");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).arg(&error_log);
        let process = ManagedProcess::spawn("probe-subject", cmd, dir.path()).expect("spawn sh");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let never = || async { false };
        match runtime.block_on(wait_ready(
            process,
            "probe-subject",
            Duration::from_secs(1),
            log_file.then_some(error_log.as_path()),
            never,
        )) {
            Ok(_) => panic!("never ready, yet it was"),
            Err(failure) => failure,
        }
    }

    fn start_and_wait(script: &str) -> (anyhow::Error, NotReady) {
        start_and_wait_with(script, false)
    }

    #[test]
    fn a_start_that_stalls_is_told_apart_and_says_where_it_stood() {
        let (e, why) = start_and_wait("echo started; exec sleep 60");
        assert_eq!(why, NotReady::Stalled);
        let text = format!("{e:#}");
        // A sleeping process, which used (almost) no CPU; its log comes with it.
        assert!(
            text.contains("probe-subject still running: state S, 0."),
            "{text}"
        );
        assert!(text.contains("waiting in "), "{text}");
        assert!(text.contains("started"), "{text}");
    }

    #[test]
    fn a_start_that_exits_is_a_failure_and_a_taken_port_a_collision() {
        let (e, why) = start_and_wait("echo 'no such config' >&2; exit 3");
        assert_eq!(why, NotReady::Failed, "{e:#}");
        let text = format!("{e:#}");
        assert!(
            text.contains("probe-subject exited (exit status: 3)"),
            "{text}"
        );
        assert!(
            text.contains("no such config") && !text.contains("still running"),
            "{text}"
        );
        let (e, why) = start_and_wait("echo 'bind: Address already in use' >&2; exit 1");
        assert_eq!(why, NotReady::PortTaken, "{e:#}");
    }

    #[test]
    fn a_collision_told_in_a_log_file_of_its_own_counts() {
        let script =
            "echo 'bind() to 127.0.0.1 failed (98: Address already in use)' >\"$0\"; exit 1";
        let (e, why) = start_and_wait_with(script, true);
        assert_eq!(why, NotReady::PortTaken, "{e:#}");
        assert!(
            format!("{e:#}").contains("(98: Address already in use)"),
            "{e:#}"
        );
        // Unread, the same file says nothing.
        let (e, why) = start_and_wait_with(script, false);
        assert_eq!(why, NotReady::Failed, "{e:#}");
    }

    #[test]
    fn start_retrying_starts_again_after_a_stall_and_not_after_a_failure() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let calls = std::cell::Cell::new(0);
        let calls = &calls;
        let started = runtime.block_on(start_retrying("x", move || async move {
            calls.set(calls.get() + 1);
            match calls.get() {
                1 => Err((anyhow::anyhow!("stalled"), NotReady::Stalled)),
                2 => Err((anyhow::anyhow!("port taken"), NotReady::PortTaken)),
                n => Ok(n),
            }
        }));
        assert_eq!(started.expect("the third start"), 3);
        calls.set(0);
        let failed = runtime.block_on(start_retrying("x", move || async move {
            calls.set(calls.get() + 1);
            Err::<(), _>((anyhow::anyhow!("bad config"), NotReady::Failed))
        }));
        assert_eq!(format!("{:#}", failed.expect_err("no retry")), "bad config");
        assert_eq!(calls.get(), 1);
        calls.set(0);
        let stalls = runtime.block_on(start_retrying("x", move || async move {
            calls.set(calls.get() + 1);
            Err::<(), _>((anyhow::anyhow!("stalled"), NotReady::Stalled))
        }));
        assert!(stalls.is_err());
        assert_eq!(calls.get(), 3, "a start and two fresh ones");
    }

    #[test]
    fn retries_are_bounded_per_kind() {
        let e = anyhow::anyhow!("did not come up");
        let mut retries = Retries::default();
        assert!(!retries.again("x", NotReady::Failed, &e));
        let stalls = (0..10)
            .take_while(|_| retries.again("x", NotReady::Stalled, &e))
            .count();
        assert_eq!(stalls, 2);
        // Stalls used up do not use up the collisions' allowance.
        let taken = (0..10)
            .take_while(|_| retries.again("x", NotReady::PortTaken, &e))
            .count();
        assert_eq!(taken, 5);
    }
}
