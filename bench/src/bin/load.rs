//! `jit-load`: the git-jit load harness. Starts real processes on 127.0.0.1 — redis-server,
//! a CI-shaped OIDC issuer (RS256), nginx + fcgiwrap + `git http-backend` as the upstream Git
//! server, and the release `jit-broker` — and measures, in one run:
//!
//! 1. a clone of a generated ≥ 200 MB repository (incompressible blobs) through the gateway vs.
//!    straight from nginx (wall-time ratio of medians), with the broker's peak RSS (VmHWM), CPU
//!    and write calls; with `JIT_BENCH_OTHER_BROKER=/path/to/jit-broker` also through a second
//!    broker built from other code (e.g. the previous commit), alternating, for a before/after;
//!    and, in turn with those, through two references: a plain nginx relay in front of the
//!    same upstream (what any second loopback hop costs) and nginx asking the broker's
//!    `/authz` (deploy/nginx/git-jit-authz.conf: no second hop);
//! 2. `GET /authz` decisions per second, p50/p99, with a valid token against Redis (wrk);
//! 3. token exchanges per second, p99, with an RS256 ID token (keys cached) (wrk);
//! 4. `git credential fill` through `git-credential-jit` with a warm cache vs.
//!    `git credential-store` (ratio of medians);
//! 5. a CI burst against the default limits: 2,000 exchanges of distinct CI jobs at once over
//!    64 connections from one address (refused by limits, p99), and one identity hammering.
//! 7. Redis Cluster (`JIT_BENCH_ONLY=cluster`, not in the default run): the broker on a
//!    1-master and a 3-master cluster side by side (`/authz`, exchange, key spread).
//! 6. organisation scale (`JIT_BENCH_ONLY=scale`, not in the default run): for each N of
//!    `JIT_BENCH_SCALE_N` (default 10000), N live grants made by real exchanges, then the first
//!    page and a filtered page of `GET /v1/grants`, revoke one / by repository / everything
//!    (call time, time until `/authz` refuses, tidy time), `/authz` idle, while an admin lists
//!    back to back and while a revoke-everything is tidied (with `JIT_BENCH_OTHER_BROKER`, the
//!    same for the other build side by side, on its own N grants under its own key prefix),
//!    the broker's RSS and Redis bytes per live grant.
//!
//! One summary line per figure on stdout; progress on stderr. Exits non-zero if a run failed
//! (a request refused, a clone broken, a tool missing) — never because a figure is slow.
//!
//! `bench/run` installs wrk, builds the release binaries and runs this. Binaries are taken from
//! the directory of this executable (`target/release`), or `JIT_E2E_BIN_DIR`.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use jit_bench::other_broker::OtherBroker;
use jit_bench::{REPO, UPSTREAM_PASSWORD, UPSTREAM_USER, broker_config, exchange, form_body};
use jit_e2e::bins::{GIT_CREDENTIAL_JIT, bin_path, generate_keys};
use jit_e2e::{
    BrokerProcess, CiIssuer, GitClient, GitServer, GitServerConfig, NginxRelay, RedisCluster,
    RedisServer,
};

/// Settings, from the environment (all optional).
#[derive(Debug, Clone)]
struct Settings {
    /// Seconds of each wrk measurement (after a 2 s warm-up). `JIT_BENCH_SECONDS`, default 10.
    seconds: u64,
    /// wrk connections. `JIT_BENCH_CONNECTIONS`, default 16.
    connections: u32,
    /// wrk threads. `JIT_BENCH_WRK_THREADS`, default 1 (the machine has 2 cores to share).
    wrk_threads: u32,
    /// Size of the generated repository in MiB. `JIT_BENCH_REPO_MIB`, default 210 (220 MB).
    repo_mib: usize,
    /// Clones of each kind (alternating). `JIT_BENCH_CLONES`, default 5.
    clones: usize,
    /// `git credential fill` runs of each kind (alternating). `JIT_BENCH_HELPER_RUNS`, default 50.
    helper_runs: usize,
    /// Another `jit-broker` binary (e.g. a build of an earlier commit) whose gateway clones are
    /// timed alternately with this build's, and whose `/authz` the scale phase measures beside
    /// this build's. `JIT_BENCH_OTHER_BROKER`, default none.
    other_broker: Option<PathBuf>,
    /// nginx directives added to the upstream's `location /` (e.g. `fastcgi_buffer_size 64k;`,
    /// the size of the chunks nginx relays); both the direct and the gateway clones go through
    /// that same nginx. `JIT_BENCH_NGINX_LOCATION`, default none.
    nginx_location: Option<String>,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> Result<Self> {
        Ok(Self {
            seconds: env_num("JIT_BENCH_SECONDS", 10)?,
            connections: env_num("JIT_BENCH_CONNECTIONS", 16)?,
            wrk_threads: env_num("JIT_BENCH_WRK_THREADS", 1)?,
            repo_mib: env_num("JIT_BENCH_REPO_MIB", 210)?,
            clones: env_num("JIT_BENCH_CLONES", 5)?.max(1),
            helper_runs: env_num("JIT_BENCH_HELPER_RUNS", 50)?.max(1),
            other_broker: std::env::var_os("JIT_BENCH_OTHER_BROKER")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            nginx_location: std::env::var("JIT_BENCH_NGINX_LOCATION")
                .ok()
                .filter(|v| !v.is_empty()),
        })
    }
}

/// Longest a single clone may take before it counts as failed.
const CLONE_TIMEOUT: Duration = Duration::from_secs(300);

/// How much the reference nginx relay reads of an answer at a time: the gateway's own read
/// size for a clone's RPC.
const RELAY_READ_SIZE: usize = 128 * 1024;

fn progress(msg: impl AsRef<str>) {
    eprintln!("==> {}", msg.as_ref());
}

/// Collects summary lines and failures; a failure never stops the other phases.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    failures: Vec<String>,
}

impl Report {
    fn line(&mut self, line: String) {
        println!("{line}");
        let _ = std::io::stdout().flush();
        self.lines.push(line);
    }

    fn phase<T>(&mut self, name: &str, result: Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                let msg = format!("{name}: FAILED: {e:#}");
                println!("{msg}");
                self.failures.push(msg);
                None
            }
        }
    }
}

/// The pid of the broker started with `config` (found by its command line in /proc: the
/// harness library does not expose it).
fn broker_pid(config: &Path) -> Result<u32> {
    let want = config.as_os_str().to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("jit-broker")) && args.contains(&want) {
            return Ok(pid);
        }
    }
    bail!("no jit-broker process with config {want}")
}

/// A `Vm*:` field of `/proc/<pid>/status`, in kB.
fn proc_status_kb(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{field} not in /proc/{pid}/status"))
}

/// Resets VmHWM to the current RSS (`echo 5 > /proc/<pid>/clear_refs`).
fn reset_peak_rss(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of pid {pid}"))
}

/// A counter of `/proc/<pid>/io` (`syscw:` write calls, `wchar:` bytes written).
fn proc_io(pid: u32, field: &str) -> Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    io.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().parse().ok())
        .with_context(|| format!("{field} not in /proc/{pid}/io"))
}

/// The one worker of the nginx master `master` (`worker_processes 1`).
fn nginx_worker(master: u32) -> Result<u32> {
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))?;
    children
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .with_context(|| format!("nginx {master} has no worker"))
}

/// CPU time (user + system, clock ticks) a process used so far, from `/proc/<pid>/stat`.
fn proc_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("/proc/{pid}/stat has no field {}", i + 3))
    };
    Ok(tick(11)? + tick(12)?)
}

/// (busy, total) clock ticks of the whole machine, from /proc/stat.
fn machine_ticks() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat is empty")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// The pid of the `redis-server` listening on `port` (by its process title).
fn redis_pid(port: u16) -> Result<u32> {
    let want = format!(":{port}");
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline);
        if text.contains("redis-server") && text.split([' ', '\0']).any(|a| a.ends_with(&want)) {
            return Ok(pid);
        }
    }
    bail!("no redis-server process on port {port}")
}

/// CPU used by the broker, Redis and the whole machine between `start` and `finish`.
struct CpuWatch {
    broker: (u32, u64),
    redis: (u32, u64),
    machine: (u64, u64),
    /// The broker's read and write calls and context switches so far.
    calls: (u64, u64),
}

/// A process's read and write system calls (`/proc/<pid>/io`) and the context switches of
/// all its threads (voluntary and not, `/proc/<pid>/task/*/status`), so far: counts that do
/// not depend on how busy the machine is, unlike CPU time.
fn proc_calls(pid: u32) -> Result<(u64, u64)> {
    let calls = proc_io(pid, "syscr:")? + proc_io(pid, "syscw:")?;
    let mut switches = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread that ended meanwhile is simply not counted.
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue;
        };
        switches += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok((calls, switches))
}

impl CpuWatch {
    fn start(broker: u32, redis: u32) -> Result<Self> {
        Ok(Self {
            broker: (broker, proc_ticks(broker)?),
            redis: (redis, proc_ticks(redis)?),
            machine: machine_ticks()?,
            calls: proc_calls(broker)?,
        })
    }

    /// The broker's read/write calls and context switches since `start`.
    fn calls(&self) -> Result<(u64, u64)> {
        let (c, s) = proc_calls(self.broker.0)?;
        Ok((c - self.calls.0, s - self.calls.1))
    }

    /// `broker 140%, redis 35%, machine 197% of 200%` (100% = one core busy) and the broker's
    /// CPU seconds.
    fn finish(&self) -> Result<(String, f64)> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let (busy, total) = machine_ticks()?;
        let (mb, mt) = (busy - self.machine.0, total - self.machine.1);
        // /proc/stat counts every core: `total` ticks are `cores` times the elapsed ticks.
        let elapsed = mt as f64 / cores;
        let pct = |t: u64| 100.0 * t as f64 / elapsed.max(1.0);
        let b = proc_ticks(self.broker.0)? - self.broker.1;
        let r = proc_ticks(self.redis.0)? - self.redis.1;
        let text = format!(
            "CPU: broker {:.0}%, redis {:.0}%, machine {:.0}% of {:.0}%",
            pct(b),
            pct(r),
            pct(mb),
            cores * 100.0
        );
        // Clock ticks are 1/100 s (USER_HZ on Linux).
        Ok((text, b as f64 / 100.0))
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// `12345.6` → `12,346`.
fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Repository generation

/// Writes a bare repository at `repo` with one commit of `mib` files of 1 MiB of random bytes,
/// through `git fast-import` (one pack, no deltas: the blobs are above core.bigFileThreshold,
/// which is also set in the repository so `upload-pack` never searches deltas among them).
fn generate_repo(repo: &Path, mib: usize) -> Result<u64> {
    use ring::rand::SecureRandom as _;
    std::fs::create_dir_all(repo)?;
    let git = |args: &[&str]| -> Result<()> {
        let status = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(repo)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()?;
        ensure!(status.success(), "git {args:?} failed");
        Ok(())
    };
    git(&["init", "--bare", "--quiet", "--initial-branch=main"])?;
    git(&["config", "core.bigFileThreshold", "512k"])?;
    let mut child = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["-c", "fastimport.unpackLimit=0", "fast-import", "--quiet"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("starting git fast-import")?;
    let rng = ring::rand::SystemRandom::new();
    let mut buf = vec![0u8; 1 << 20];
    {
        let stdin = child.stdin.as_mut().context("fast-import stdin")?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, stdin);
        for i in 0..mib {
            rng.fill(&mut buf)
                .map_err(|_| anyhow::anyhow!("no system randomness"))?;
            write!(w, "blob\nmark :{}\ndata {}\n", i + 1, buf.len())?;
            w.write_all(&buf)?;
            w.write_all(b"\n")?;
        }
        let msg = format!("{mib} MiB of random blobs\n");
        write!(
            w,
            "commit refs/heads/main\nmark :{}\ncommitter Bench <bench@example.com> 1750000000 +0000\ndata {}\n{msg}",
            mib + 1,
            msg.len()
        )?;
        for i in 0..mib {
            writeln!(w, "M 100644 :{} data/blob-{i:04}.bin", i + 1)?;
        }
        w.write_all(b"\n")?;
        w.flush()?;
    }
    drop(child.stdin.take());
    let status = child.wait()?;
    ensure!(status.success(), "git fast-import failed ({status})");
    pack_bytes(repo)
}

/// Total size of the pack files under `git_dir/objects/pack`.
fn pack_bytes(git_dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(git_dir.join("objects/pack"))? {
        let e = e?;
        if e.path().extension().is_some_and(|x| x == "pack") {
            total += e.metadata()?.len();
        }
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Token exchange (setup and the wrk body)

// ---------------------------------------------------------------------------------------------
// wrk

/// What one wrk run reported.
#[derive(Debug)]
struct WrkResult {
    requests: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
    socket_errors: String,
}

fn lua_string(s: &str) -> String {
    format!("{s:?}") // Rust's escapes are valid Lua for the ASCII we pass.
}

/// `wrk` against `url` with the Lua `script`; `seconds` of measurement.
async fn wrk(dir: &Path, url: &str, script: &str, s: &Settings, seconds: u64) -> Result<WrkResult> {
    let path = dir.join(format!("wrk-{}.lua", jit_e2e::random_token(6)));
    std::fs::write(&path, script)?;
    let out = tokio::time::timeout(
        Duration::from_secs(seconds + 30),
        tokio::process::Command::new("wrk")
            .arg(format!("-t{}", s.wrk_threads))
            .arg(format!("-c{}", s.connections))
            .arg(format!("-d{seconds}s"))
            .arg("--timeout")
            .arg("5s")
            .arg("--latency")
            .arg("-s")
            .arg(&path)
            .arg(url)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("wrk did not finish in time")?
    .context("running wrk (bench/run installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "wrk failed ({}): {text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

fn wrk_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

fn parse_wrk(text: &str) -> Result<WrkResult> {
    let mut r = WrkResult {
        requests: 0,
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        non_2xx: 0,
        socket_errors: String::new(),
    };
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse()?;
        } else if let Some(v) = t.strip_prefix("50%") {
            r.p50_ms = wrk_duration_ms(v).context("p50")?;
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99_ms = wrk_duration_ms(v).context("p99")?;
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse()?;
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            r.socket_errors = v.trim().to_owned();
        } else if t.contains(" requests in ") {
            r.requests = t.split_whitespace().next().unwrap_or("0").parse()?;
        }
    }
    ensure!(
        r.rps.is_finite() && r.p99_ms.is_finite(),
        "no Requests/sec or 99% line"
    );
    Ok(r)
}

fn check_wrk(what: &str, r: &WrkResult) -> Result<()> {
    ensure!(r.requests > 0, "{what}: no request completed");
    ensure!(
        r.non_2xx == 0,
        "{what}: {} of {} answers were not 2xx",
        r.non_2xx,
        r.requests
    );
    ensure!(
        r.socket_errors.is_empty(),
        "{what}: socket errors: {}",
        r.socket_errors
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Phases

struct World {
    settings: Settings,
    redis: RedisServer,
    git: GitServer,
    broker: BrokerProcess,
    broker_pid: u32,
    redis_pid: u32,
    /// An RS256 ID token of a CI job of acme/big (1 h).
    id_token: String,
    /// A broker token for `repo:acme/big:read`.
    read_token: String,
    work: tempfile::TempDir,
    idp: CiIssuer,
    _keys: tempfile::TempDir,
    _repos: tempfile::TempDir,
}

async fn setup(settings: Settings) -> Result<World> {
    progress("starting redis-server, the CI issuer and nginx + git http-backend");
    let redis = RedisServer::start().await?;
    let idp = CiIssuer::start().await?;
    let repos = tempfile::Builder::new()
        .prefix("jit-bench-repos-")
        .tempdir()?;
    let started = Instant::now();
    progress(format!(
        "generating {REPO}.git: {} MiB of random blobs",
        settings.repo_mib
    ));
    let bytes = generate_repo(&repos.path().join(format!("{REPO}.git")), settings.repo_mib)?;
    progress(format!(
        "generated a {:.0} MB pack in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    ));
    let git = GitServer::start_with(GitServerConfig {
        root: Some(repos.path().to_path_buf()),
        basic_auth: Some((UPSTREAM_USER.into(), UPSTREAM_PASSWORD.into())),
        location_directives: settings.nginx_location.clone(),
        ..GitServerConfig::default()
    })
    .await?;

    progress(format!(
        "starting jit-broker ({})",
        bin_path(jit_e2e::bins::JIT_BROKER)?.display()
    ));
    let keys = tempfile::Builder::new()
        .prefix("jit-bench-keys-")
        .tempdir()?;
    generate_keys(keys.path())?;
    let config = broker_config(
        keys.path(),
        &redis.url(),
        &idp.platform_issuer("github"),
        &git.base_url(),
    );
    let broker = BrokerProcess::start_with_env(
        &config,
        &[("JIT_BENCH_UPSTREAM_PASSWORD", UPSTREAM_PASSWORD)],
    )
    .await?;
    let broker_pid = broker_pid(broker.config_path())?;
    let redis_pid = redis_pid(redis.port())?;

    let id_token = idp.github_actions(REPO).rs256().expires_in(3600).sign();
    let http = jit_e2e::http_client();
    let read_token = exchange(
        &http,
        &broker.url(),
        &id_token,
        &format!("repo:{REPO}:read"),
    )
    .await
    .context("first token exchange")?;
    let work = tempfile::Builder::new()
        .prefix("jit-bench-work-")
        .tempdir()?;
    Ok(World {
        settings,
        redis,
        git,
        broker,
        broker_pid,
        redis_pid,
        id_token,
        read_token,
        work,
        idp,
        _keys: keys,
        _repos: repos,
    })
}

/// One timed `git clone --no-checkout` of `url` with an `Authorization` header.
async fn timed_clone(
    client: &GitClient,
    url: &str,
    authorization: &str,
    dest: &Path,
) -> Result<f64> {
    let _ = std::fs::remove_dir_all(dest);
    let header = format!("http.extraHeader=Authorization: {authorization}");
    let dest_s = dest.to_string_lossy().into_owned();
    let started = Instant::now();
    let out = tokio::time::timeout(
        CLONE_TIMEOUT,
        client
            .command([
                "-c",
                &header,
                "clone",
                "--quiet",
                "--no-checkout",
                url,
                &dest_s,
            ])
            .output(),
    )
    .await
    .with_context(|| format!("clone of {url} took more than {CLONE_TIMEOUT:?}"))??;
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "clone of {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(secs)
}

/// What one broker's gateway clones cost: wall time of each, and the broker's CPU and write
/// calls over all of them.
#[derive(Default)]
struct GatewayClones {
    secs: Vec<f64>,
    ticks: u64,
    writes: u64,
    written: u64,
}

impl GatewayClones {
    /// One timed clone through the broker `pid`, counting what the broker spent on it.
    async fn clone_via(
        &mut self,
        client: &GitClient,
        (url, authorization): (&str, &str),
        dest: &Path,
        pid: u32,
    ) -> Result<()> {
        let ticks = proc_ticks(pid)?;
        let writes = proc_io(pid, "syscw:")?;
        let written = proc_io(pid, "wchar:")?;
        self.secs
            .push(timed_clone(client, url, authorization, dest).await?);

        self.ticks += proc_ticks(pid)? - ticks;
        self.writes += proc_io(pid, "syscw:")? - writes;
        self.written += proc_io(pid, "wchar:")? - written;
        Ok(())
    }

    /// `WHO G s vs direct D s = R (median of N; fastest …; WHO CPU …; write calls …)`.
    fn summary(&self, who: &str, direct: &[f64], mb: f64) -> String {
        let fastest = |xs: &[f64]| xs.iter().copied().fold(f64::INFINITY, f64::min);
        let (d_min, g_min) = (fastest(direct), fastest(&self.secs));
        let (d, g) = (median_of(direct.to_vec()), median_of(self.secs.clone()));
        // Clock ticks are 1/100 s (USER_HZ on Linux).
        let cpu = self.ticks as f64 / self.secs.iter().sum::<f64>();
        let n = self.secs.len().max(1) as f64;
        format!(
            "{who} {g:.2} s vs direct {d:.2} s = {:.2}x (median of {}; fastest {g_min:.2} vs {d_min:.2} s = {:.2}x; {:.0} vs {:.0} MB/s; {who} CPU {cpu:.0}% during its clones, {:.0} ms per clone; {:.0} write calls per clone, {:.1} KB each on average)",
            g / d,
            self.secs.len(),
            g_min / d_min,
            mb / g,
            mb / d,
            self.ticks as f64 * 10.0 / n,
            self.writes as f64 / n,
            self.written as f64 / self.writes.max(1) as f64 / 1e3,
        )
    }
}

/// Checks that the clone in `dest` has the upstream's `main`.
async fn check_clone(client: &GitClient, dest: &Path, expected: &str) -> Result<()> {
    let head = client
        .run(&[
            "--git-dir",
            &dest.join(".git").to_string_lossy(),
            "rev-parse",
            "refs/heads/main",
        ])
        .await?;
    ensure!(
        String::from_utf8_lossy(&head.stdout).trim() == expected,
        "the gateway clone's main is not the upstream's"
    );
    Ok(())
}

/// The broker of `JIT_BENCH_OTHER_BROKER`, started beside the one under test, with its own
/// token for the repository.
async fn start_other_broker(w: &World, binary: &Path) -> Result<(OtherBroker, u32, String)> {
    progress(format!(
        "starting the other jit-broker ({})",
        binary.display()
    ));
    let config = broker_config(
        w._keys.path(),
        &w.redis.url(),
        &w.idp.platform_issuer("github"),
        &w.git.base_url(),
    );
    let other = OtherBroker::start(
        binary,
        &config,
        &[("JIT_BENCH_UPSTREAM_PASSWORD", UPSTREAM_PASSWORD)],
    )
    .await?;
    let pid = other.pid().context("the other broker has no pid")?;
    let token = exchange(
        &jit_e2e::http_client(),
        &other.url(),
        &w.id_token,
        &format!("repo:{REPO}:read"),
    )
    .await
    .context("token exchange at the other broker")?;
    Ok((other, pid, format!("Bearer {token}")))
}

async fn clone_phase(w: &World, report: &mut Report) -> Result<()> {
    use base64::Engine as _;
    let client = GitClient::new()?;
    let direct_url = w.git.repo_url(REPO);
    let gateway_url = format!("{}/{REPO}.git", w.broker.url());
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{UPSTREAM_USER}:{UPSTREAM_PASSWORD}"))
    );
    let bearer = format!("Bearer {}", w.read_token);
    let dest = w.work.path().join("clone");
    let expected = w.git.git_in_repo(REPO, &["rev-parse", "refs/heads/main"])?;
    let other = match &w.settings.other_broker {
        Some(binary) => Some(start_other_broker(w, binary).await?),
        None => None,
    };
    let other_url = other
        .as_ref()
        .map(|(b, _, _)| format!("{}/{REPO}.git", b.url()));

    // The reference hop: nginx relaying to the same upstream, reading as much at a time as
    // the gateway does. What it adds is what any second loopback hop costs here.
    let relay = NginxRelay::start(&w.git.base_url(), RELAY_READ_SIZE).await?;
    let relay_url = format!("{}/{REPO}.git", relay.base_url());
    let relay_pid = nginx_worker(relay.pid().context("the nginx relay has no pid")?)?;
    // No second hop at all: nginx asks the broker's `/authz` for each Git request (the
    // shipped deploy/nginx/git-jit-authz.conf) and streams the pack itself.
    let authz_port = jit_e2e::process::free_port()?;
    let _authz_server = GitServer::start_with(GitServerConfig {
        root: Some(w._repos.path().to_path_buf()),
        http_directives: Some(jit_e2e::git_server::authz_deploy_conf(
            w.broker.port(),
            authz_port,
        )?),
        ..GitServerConfig::default()
    })
    .await?;
    jit_e2e::process::wait_port_open("the /authz server block", authz_port).await?;
    let authz_url = format!("http://127.0.0.1:{authz_port}/{REPO}.git");

    // One untimed clone of each to warm the page cache and the connections' code paths.
    progress("clone: warm-up (one direct, one through each gateway and the relay)");
    timed_clone(&client, &direct_url, &basic, &dest).await?;
    timed_clone(&client, &gateway_url, &bearer, &dest).await?;
    timed_clone(&client, &relay_url, &basic, &dest).await?;
    timed_clone(&client, &authz_url, &bearer, &dest).await?;
    if let (Some((_, _, auth)), Some(url)) = (&other, &other_url) {
        timed_clone(&client, url, auth, &dest).await?;
    }
    let received = pack_bytes(&dest.join(".git"))?;

    let mut direct = Vec::new();
    let (mut this, mut that, mut relayed, mut authz) = (
        GatewayClones::default(),
        GatewayClones::default(),
        GatewayClones::default(),
        GatewayClones::default(),
    );
    let mut peak_kb = 0;
    let rss_before_kb = proc_status_kb(w.broker_pid, "VmRSS:")?;
    for i in 0..w.settings.clones {
        progress(format!(
            "clone {}/{}: direct, then through the gateway{}, the nginx relay and /authz, in turns",
            i + 1,
            w.settings.clones,
            if other.is_some() {
                " of each build"
            } else {
                ""
            }
        ));
        direct.push(timed_clone(&client, &direct_url, &basic, &dest).await?);
        // Which path goes first turns with each round.
        for turn in 0..4 {
            match (turn + i) % 4 {
                0 => {
                    reset_peak_rss(w.broker_pid)?;
                    this.clone_via(&client, (&gateway_url, &bearer), &dest, w.broker_pid)
                        .await?;
                    peak_kb = peak_kb.max(proc_status_kb(w.broker_pid, "VmHWM:")?);
                }
                1 => {
                    let (Some((_, pid, auth)), Some(url)) = (&other, &other_url) else {
                        continue;
                    };
                    that.clone_via(&client, (url, auth), &dest, *pid).await?;
                }
                2 => {
                    relayed
                        .clone_via(&client, (&relay_url, &basic), &dest, relay_pid)
                        .await?;
                }
                _ => {
                    authz
                        .clone_via(&client, (&authz_url, &bearer), &dest, w.broker_pid)
                        .await?;
                }
            }
            check_clone(&client, &dest, &expected).await?;
        }
    }
    let mb = received as f64 / 1e6;
    if let Some(directives) = &w.settings.nginx_location {
        report.line(format!("clone: upstream nginx with {directives:?}"));
    }
    report.line(format!(
        "clone: {mb:.0} MB pack, {}",
        this.summary("gateway", &direct, mb)
    ));
    if let Some(binary) = &w.settings.other_broker {
        report.line(format!(
            "clone, other build {}: {}",
            binary.display(),
            that.summary("gateway", &direct, mb)
        ));
    }
    report.line(format!(
        "clone, nginx relay as the second hop (proxy_buffer_size {} KiB): {}",
        RELAY_READ_SIZE / 1024,
        relayed.summary("relay", &direct, mb)
    ));
    report.line(format!(
        "clone, nginx asking the broker's /authz (no second hop): {}",
        authz.summary("authz", &direct, mb)
    ));
    report.line(format!(
        "broker peak RSS during gateway clone: {:.1} MB (VmHWM; {:.1} MB before)",
        peak_kb as f64 / 1024.0,
        rss_before_kb as f64 / 1024.0
    ));
    let _ = std::fs::remove_dir_all(&dest);
    Ok(())
}

/// A 2 s wrk warm-up, then the measured run with the CPU each process used meanwhile.
async fn wrk_phase(w: &World, what: &str, url: &str, script: &str) -> Result<(WrkResult, String)> {
    progress(format!("{what}: warm-up 2 s"));
    let warm = wrk(w.work.path(), url, script, &w.settings, 2).await?;
    check_wrk(&format!("{what} warm-up"), &warm)?;
    progress(format!(
        "{what}: {} s, {} connections",
        w.settings.seconds, w.settings.connections
    ));
    let cpu = CpuWatch::start(w.broker_pid, w.redis_pid)?;
    let r = wrk(w.work.path(), url, script, &w.settings, w.settings.seconds).await?;
    let (calls, switches) = cpu.calls()?;
    let (cpu, broker_secs) = cpu.finish()?;
    check_wrk(what, &r)?;
    let n = r.requests.max(1) as f64;
    let per_request_us = broker_secs * 1e6 / n;
    Ok((
        r,
        format!(
            "{cpu}; broker {per_request_us:.0} µs CPU, {:.1} read/write calls, {:.1} context switches per request",
            calls as f64 / n,
            switches as f64 / n
        ),
    ))
}

async fn authz_phase(w: &World, report: &mut Report) -> Result<()> {
    let script = format!(
        "wrk.method = \"GET\"\n\
         wrk.headers[\"Authorization\"] = {}\n\
         wrk.headers[\"X-Original-URI\"] = {}\n\
         wrk.headers[\"X-Original-Method\"] = \"GET\"\n",
        lua_string(&format!("Bearer {}", w.read_token)),
        lua_string(&format!("/{REPO}.git/info/refs?service=git-upload-pack")),
    );
    let url = format!("{}/authz", w.broker.url());
    let (r, cpu) = wrk_phase(w, "authz", &url, &script).await?;
    report.line(format!(
        "authz: {} req/s p50 {:.2} ms p99 {:.2} ms ({} requests, {} connections, all 204; {cpu})",
        thousands(r.rps),
        r.p50_ms,
        r.p99_ms,
        r.requests,
        w.settings.connections
    ));
    Ok(())
}

async fn exchange_phase(w: &World, report: &mut Report) -> Result<()> {
    let body = form_body(&w.id_token, &format!("repo:{REPO}:read"));
    let script = format!(
        "wrk.method = \"POST\"\n\
         wrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\n\
         wrk.body = {}\n",
        lua_string(&body)
    );
    let url = format!("{}/oauth/token", w.broker.url());
    let (r, cpu) = wrk_phase(w, "exchange", &url, &script).await?;
    report.line(format!(
        "exchange: {} req/s p50 {:.2} ms p99 {:.2} ms ({} tokens issued, RS256 ID token, {} connections; {cpu})",
        thousands(r.rps),
        r.p50_ms,
        r.p99_ms,
        r.requests,
        w.settings.connections
    ));
    Ok(())
}

/// One `git credential fill`; returns (seconds, the password git got).
fn credential_fill(
    home: &Path,
    helper: &str,
    input: &str,
    env: &[(&str, &str)],
) -> Result<(f64, String)> {
    let mut cmd = std::process::Command::new("git");
    cmd.args([
        "-c",
        "credential.helper=",
        "-c",
        &format!("credential.helper={helper}"),
        "-c",
        "credential.useHttpPath=true",
        "credential",
        "fill",
    ])
    .env("HOME", home)
    .env("XDG_CONFIG_HOME", home.join(".config"))
    .env("GIT_CONFIG_NOSYSTEM", "1")
    .env("GIT_CONFIG_GLOBAL", "/dev/null")
    .env("GIT_TERMINAL_PROMPT", "0")
    .envs(env.iter().copied())
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().context("running git credential fill")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "git credential fill with {helper} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let password = stdout
        .lines()
        .find_map(|l| l.strip_prefix("password="))
        .with_context(|| format!("no password from {helper}: {stdout}"))?
        .to_owned();
    Ok((secs, password))
}

async fn helper_phase(w: &World, report: &mut Report) -> Result<()> {
    let home = tempfile::Builder::new()
        .prefix("jit-bench-helper-")
        .tempdir()?;
    let broker_url = w.broker.url();
    let host = broker_url.trim_start_matches("http://");
    let input = format!("protocol=http\nhost={host}\npath={REPO}.git\n\n");
    let helper = bin_path(GIT_CREDENTIAL_JIT)?;
    let helper = helper.to_string_lossy().into_owned();
    let cfg = home.path().join("jit-config");
    let cache = home.path().join("jit-cache");
    let (cfg_s, cache_s) = (cfg.to_string_lossy(), cache.to_string_lossy());
    let jit_env = [
        ("GIT_JIT_BROKER", broker_url.as_str()),
        ("GIT_JIT_CONFIG_DIR", cfg_s.as_ref()),
        ("GIT_JIT_CACHE_DIR", cache_s.as_ref()),
        ("GIT_JIT_ID_TOKEN", w.id_token.as_str()),
    ];

    // Cold: exchanges at the broker and fills the cache. Warm: answers from the cache.
    let (cold, token) = credential_fill(home.path(), &helper, &input, &jit_env)?;
    let (_, again) = credential_fill(home.path(), &helper, &input, &jit_env)?;
    ensure!(
        again == token,
        "the second fill did not come from the cache"
    );

    let store_file = home.path().join("git-credentials");
    std::fs::write(
        &store_file,
        format!("http://x-jit:{token}@{host}/{REPO}.git\n"),
    )?;
    let store = format!("store --file={}", store_file.display());
    let (_, stored) = credential_fill(home.path(), &store, &input, &[])?;
    ensure!(
        stored == token,
        "credential-store answered another password"
    );

    progress(format!(
        "helper: {} runs each, alternating",
        w.settings.helper_runs
    ));
    let (mut jit, mut plain) = (Vec::new(), Vec::new());
    for _ in 0..w.settings.helper_runs {
        let (s, p) = credential_fill(home.path(), &helper, &input, &jit_env)?;
        ensure!(p == token, "a warm fill answered another token");
        jit.push(s);
        plain.push(credential_fill(home.path(), &store, &input, &[])?.0);
    }
    let (j, s) = (median(&mut jit), median(&mut plain));
    report.line(format!(
        "helper: git credential fill warm {:.2} ms vs credential-store {:.2} ms = {:.2}x (median of {}; cold fill with exchange {:.1} ms)",
        j * 1e3,
        s * 1e3,
        j / s,
        w.settings.helper_runs,
        cold * 1e3
    ));
    helper_cold(w, report, home.path(), &helper, &input, &jit_env, j)?;
    Ok(())
}

/// Cold fills (an empty cache each time: discovery and an exchange at the loopback `http://`
/// broker) against the warm median `warm`, and the files one cold helper opens.
fn helper_cold(
    w: &World,
    report: &mut Report,
    home: &Path,
    helper: &str,
    input: &str,
    jit_env: &[(&str, &str)],
    warm: f64,
) -> Result<()> {
    let runs = w.settings.helper_runs.min(20);
    let mut cold = Vec::new();
    for i in 0..runs {
        let cache = home.join(format!("jit-cache-cold-{i}"));
        let cache = cache.to_string_lossy().into_owned();
        let mut env: Vec<(&str, &str)> = jit_env
            .iter()
            .copied()
            .filter(|(k, _)| *k != "GIT_JIT_CACHE_DIR")
            .collect();
        env.push(("GIT_JIT_CACHE_DIR", cache.as_str()));
        cold.push(credential_fill(home, helper, input, &env)?.0);
    }
    let c = median(&mut cold);
    // Files the helper process itself opens on a cold fill (strace, when installed).
    let cache = home.join("jit-cache-strace");
    let cache = cache.to_string_lossy().into_owned();
    let mut env: Vec<(&str, &str)> = jit_env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "GIT_JIT_CACHE_DIR")
        .collect();
    env.push(("GIT_JIT_CACHE_DIR", cache.as_str()));
    let trace = home.join("helper.strace");
    let traced = format!(
        "!strace -f -e trace=openat,open -o {} {helper}",
        trace.display()
    );
    let opened = match credential_fill(home, &traced, input, &env) {
        Ok(_) => std::fs::read_to_string(&trace)
            .map(|t| {
                let files = t.lines().filter(|l| l.contains("open")).count();
                let certs = t
                    .lines()
                    .filter(|l| l.contains("/etc/ssl") || l.contains("ca-certificates"))
                    .count();
                format!("{files} files opened, {certs} of them under the system trust store")
            })
            .unwrap_or_else(|_| "strace wrote nothing".into()),
        Err(_) => "strace not available".into(),
    };
    report.line(format!(
        "helper: cold git credential fill (discovery + exchange, loopback http broker) {:.2} ms vs warm {:.2} ms = {:.2}x (median of {runs}); one cold helper: {opened}",
        c * 1e3,
        warm * 1e3,
        c / warm
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Organisation scale

/// Repositories the scale phase spreads its grants over (`scale/r0` … ).
const SCALE_REPOS: usize = 200;

/// `redis-cli -p PORT args…`, its output trimmed.
fn redis_cli(port: u16, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .context("running redis-cli")?;
    ensure!(out.status.success(), "redis-cli {args:?} failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn redis_num(port: u16, args: &[&str]) -> Result<u64> {
    let text = redis_cli(port, args)?;
    text.parse()
        .with_context(|| format!("redis-cli {args:?} answered {text:?}"))
}

/// `used_memory` of INFO memory.
fn redis_used_memory(port: u16) -> Result<u64> {
    let info = redis_cli(port, &["INFO", "memory"])?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("used_memory not in INFO memory")
}

/// The `jti` claim of a broker token (its payload read without verifying: the bench made it).
fn jti_of(token: &str) -> Result<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1).context("not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    v["jti"].as_str().map(str::to_owned).context("no jti")
}

/// One `/authz` decision for a read of `scale/rK` with `token`: its status.
async fn authz_status(
    http: &reqwest::Client,
    broker: &str,
    token: &str,
    repo: &str,
) -> Result<u16> {
    let r = http
        .get(format!("{broker}/authz"))
        .header("authorization", format!("Bearer {token}"))
        .header(
            "x-original-uri",
            format!("/{repo}.git/info/refs?service=git-upload-pack"),
        )
        .header("x-original-method", "GET")
        .send()
        .await?;
    Ok(r.status().as_u16())
}

/// Seconds one admin call takes, and its JSON answer.
async fn admin_call(req: reqwest::RequestBuilder, admin: &str) -> Result<(f64, serde_json::Value)> {
    let started = Instant::now();
    let r = req
        .header("authorization", format!("Bearer {admin}"))
        .send()
        .await?;
    let status = r.status();
    let body: serde_json::Value = r.json().await?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(status.is_success(), "admin call refused ({status}): {body}");
    Ok((secs, body))
}

/// Makes `n` grants by real exchanges, `conc` at a time, spread over [`SCALE_REPOS`]
/// repositories; returns one token per repository.
async fn make_grants(
    http: &reqwest::Client,
    broker: &str,
    id_tokens: &[String],
    n: usize,
) -> Result<Vec<String>> {
    const CONC: usize = 32;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONC {
        let (http, broker, ids, next) = (
            http.clone(),
            broker.to_owned(),
            id_tokens.to_vec(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut mine: Vec<(usize, String)> = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(mine);
                }
                let k = i % ids.len();
                let token = exchange(&http, &broker, &ids[k], &format!("repo:scale/r{k}:read"))
                    .await
                    .with_context(|| format!("exchange {i}"))?;
                if i < ids.len() {
                    mine.push((k, token));
                }
                if i % 20_000 == 0 && i > 0 {
                    progress(format!("scale: {i} of {n} grants"));
                }
            }
        }));
    }
    let mut per_repo = vec![String::new(); id_tokens.len()];
    for t in tasks {
        for (k, token) in t.await?? {
            per_repo[k] = token;
        }
    }
    Ok(per_repo)
}

/// Revokes with `body`, then asks `/authz` with `victim` (of `repo`) until it is refused.
/// Returns (call seconds, seconds from the call's start until refused, the answer).
async fn revoke_and_probe(
    http: &reqwest::Client,
    broker: &str,
    admin: &str,
    body: serde_json::Value,
    victim: &str,
    repo: &str,
) -> Result<(f64, f64, serde_json::Value)> {
    ensure!(
        authz_status(http, broker, victim, repo).await? == 204,
        "the victim's token is not live before the revocation"
    );
    let started = Instant::now();
    let (call, answer) =
        admin_call(http.post(format!("{broker}/v1/revoke")).json(&body), admin).await?;
    for _ in 0..10_000 {
        if authz_status(http, broker, victim, repo).await? != 204 {
            return Ok((call, started.elapsed().as_secs_f64(), answer));
        }
    }
    bail!("the revoked token was still accepted after 10,000 checks")
}

/// Waits until the tidy queue of the store with key `prefix` is empty; seconds waited (from
/// `since`).
async fn wait_tidied(port: u16, prefix: &str, since: Instant) -> Result<f64> {
    let deadline = Duration::from_secs(1800);
    let queue = format!("{prefix}:{{tidy}}:jobs");
    while since.elapsed() < deadline {
        let jobs = redis_num(port, &["LLEN", queue.as_str()])?;
        if jobs == 0 {
            return Ok(since.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("tidying did not finish in {} s", deadline.as_secs())
}

/// What revoking everything at one broker cost, and `/authz` while its tidy-up ran.
struct RevokeAll {
    /// Seconds of the revoke call.
    call: f64,
    /// Seconds from the call's start until a covered token was refused.
    refused: f64,
    /// The answer's `at_most`.
    at_most: serde_json::Value,
    /// Seconds from the call's start until the tidy queue was empty.
    tidied: f64,
    /// Seconds from the call's start until `/authz` (wrk) started.
    wrk_from: f64,
    /// `/authz` with a token issued after the revocation, started right after it.
    authz: WrkResult,
}

impl RevokeAll {
    /// The share of the `seconds` of `/authz` that ran while the tidy-up was still going.
    fn overlap(&self, seconds: u64) -> f64 {
        ((self.tidied - self.wrk_from) / seconds as f64).clamp(0.0, 1.0)
    }
}

/// The store key prefix of the other broker of the scale phase (its own grants, its own tidy
/// queue, so each broker tidies only its own revocation).
const OTHER_PREFIX: &str = "jito";

/// Revokes everything at `broker` (whose store keys start with `prefix`) and, at once, runs
/// `/authz` (wrk, `seconds`) with a token of `scale/r1` issued after the revocation, while the
/// tidy-up ends the revoked grants in the background.
async fn revoke_all_under_authz(
    w: &World,
    broker: &str,
    prefix: &str,
    admin: &str,
    victim: &str,
    id_token: &str,
    seconds: u64,
) -> Result<RevokeAll> {
    let http = jit_e2e::http_client();
    let since = Instant::now();
    let (call, refused, answer) = revoke_and_probe(
        &http,
        broker,
        admin,
        serde_json::json!({"by": "all", "reason": "bench"}),
        victim,
        "scale/r1",
    )
    .await?;
    // The revocation covers grants issued up to its millisecond: a token of a later one.
    let mut fresh = None;
    for _ in 0..100 {
        let token = exchange(&http, broker, id_token, "repo:scale/r1:read").await?;
        if authz_status(&http, broker, &token, "scale/r1").await? == 204 {
            fresh = Some(token);
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let fresh = fresh.context("no token issued after the revocation was accepted")?;
    let wrk_from = since.elapsed().as_secs_f64();
    let (authz, tidied) = tokio::join!(
        authz_wrk(
            w,
            "authz while revoking everything",
            broker,
            (&fresh, "scale/r1"),
            seconds
        ),
        wait_tidied(w.redis.port(), prefix, since),
    );
    Ok(RevokeAll {
        call,
        refused,
        at_most: answer["at_most"].clone(),
        tidied: tidied?,
        wrk_from,
        authz: authz?,
    })
}

/// One broker's `/authz`: idle, while listing, while a revoke-everything is tidied.
fn isolation_line(
    n: usize,
    build: &str,
    idle: &WrkResult,
    listing: &(WrkResult, u64),
    all: &RevokeAll,
    seconds: u64,
) -> String {
    let fig = |r: &WrkResult| {
        format!(
            "{} req/s p50 {:.2} ms p99 {:.2} ms",
            thousands(r.rps),
            r.p50_ms,
            r.p99_ms
        )
    };
    format!(
        "scale N={n}: /authz of {build}: idle {}; while listing ({} pages of 100 in {seconds} s) {} \
         (p99 {:.1}× idle); while revoke-everything (at most {}) is tidied ({:.1} s; /authz ran {:.0} % of \
         its {seconds} s before the tidy-up ended) {} (p99 {:.1}× idle)",
        fig(idle),
        listing.1,
        fig(&listing.0),
        listing.0.p99_ms / idle.p99_ms,
        all.at_most,
        all.tidied,
        all.overlap(seconds) * 100.0,
        fig(&all.authz),
        all.authz.p99_ms / idle.p99_ms,
    )
}

fn median_of(mut xs: Vec<f64>) -> f64 {
    median(&mut xs)
}

/// The wrk script of `/authz` for a read of `repo` with `token`.
fn authz_script(token: &str, repo: &str) -> String {
    format!(
        "wrk.method = \"GET\"\n\
         wrk.headers[\"Authorization\"] = {}\n\
         wrk.headers[\"X-Original-URI\"] = {}\n\
         wrk.headers[\"X-Original-Method\"] = \"GET\"\n",
        lua_string(&format!("Bearer {token}")),
        lua_string(&format!("/{repo}.git/info/refs?service=git-upload-pack")),
    )
}

/// `/authz` of the broker at `broker` (wrk, `seconds`) for a read of `repo` with `token`;
/// `what` names the run if a request failed.
async fn authz_wrk(
    w: &World,
    what: &str,
    broker: &str,
    (token, repo): (&str, &str),
    seconds: u64,
) -> Result<WrkResult> {
    let script = authz_script(token, repo);
    let url = format!("{broker}/authz");
    let r = wrk(w.work.path(), &url, &script, &w.settings, seconds).await?;
    check_wrk(what, &r)?;
    Ok(r)
}

/// `/authz` of the broker at `broker` (wrk, `seconds`) while a task lists pages of grants
/// back to back.
async fn authz_while_listing(
    w: &World,
    broker: &str,
    token: &str,
    repo: &str,
    admin: &str,
    seconds: u64,
) -> Result<(WrkResult, u64)> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lister = {
        let (stop, http, url, admin) = (
            stop.clone(),
            jit_e2e::http_client(),
            broker.to_owned(),
            admin.to_owned(),
        );
        tokio::spawn(async move {
            let mut pages = 0u64;
            let mut cursor: Option<String> = None;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut req = http
                    .get(format!("{url}/v1/grants"))
                    .query(&[("limit", "100")]);
                if let Some(c) = &cursor {
                    req = req.query(&[("cursor", c.as_str())]);
                }
                let (_, page) = admin_call(req, &admin).await?;
                cursor = page["next_cursor"].as_str().map(str::to_owned);
                pages += 1;
            }
            Ok::<_, anyhow::Error>(pages)
        })
    };
    let r = authz_wrk(w, "authz while listing", broker, (token, repo), seconds).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let pages = lister.await??;
    let r = r?;
    Ok((r, pages))
}

async fn scale_phase(w: &World, report: &mut Report) -> Result<()> {
    let sizes: Vec<usize> = std::env::var("JIT_BENCH_SCALE_N")
        .unwrap_or_else(|_| "10000".into())
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .with_context(|| format!("JIT_BENCH_SCALE_N: {v:?}"))
        })
        .collect::<Result<_>>()?;
    let http = jit_e2e::http_client();
    let broker = w.broker.url();
    let port = w.redis.port();
    let id_tokens: Vec<String> = (0..SCALE_REPOS)
        .map(|k| {
            w.idp
                .github_actions(&format!("scale/r{k}"))
                .rs256()
                .expires_in(7200)
                .sign()
        })
        .collect();
    let admin = w
        .idp
        .github_actions("acme/security")
        .claim("groups", "security")
        .rs256()
        .expires_in(7200)
        .sign();
    // The other build (JIT_BENCH_OTHER_BROKER), on the same Redis under its own key prefix.
    let other = match &w.settings.other_broker {
        Some(binary) => {
            let config = broker_config(
                w._keys.path(),
                &w.redis.url(),
                &w.idp.platform_issuer("github"),
                &w.git.base_url(),
            )
            .replacen(
                "[store]\n",
                &format!("[store]\nprefix = \"{OTHER_PREFIX}\"\n"),
                1,
            );
            progress(format!(
                "starting the other jit-broker ({})",
                binary.display()
            ));
            Some(
                OtherBroker::start(
                    binary,
                    &config,
                    &[("JIT_BENCH_UPSTREAM_PASSWORD", UPSTREAM_PASSWORD)],
                )
                .await?,
            )
        }
        None => None,
    };
    for n in sizes {
        let before = redis_used_memory(port)?;
        let made = Instant::now();
        progress(format!("scale: making {n} grants by exchange"));
        let tokens = make_grants(&http, &broker, &id_tokens, n).await?;
        let make_secs = made.elapsed().as_secs_f64();
        let after = redis_used_memory(port)?;
        let indexed = redis_num(port, &["ZCARD", "jit:ix:{all}"])?;
        ensure!(indexed >= n as u64, "only {indexed} of {n} grants indexed");
        let per_grant = (after.saturating_sub(before)) as f64 / n as f64;
        reset_peak_rss(w.broker_pid)?;

        let mut first = Vec::new();
        let mut filtered = Vec::new();
        let mut deep = Vec::new();
        let mut cursor = None::<String>;
        for i in 0..7 {
            let (t, page) = admin_call(
                http.get(format!("{broker}/v1/grants"))
                    .query(&[("limit", "50")]),
                &admin,
            )
            .await?;
            ensure!(
                page["grants"].as_array().map_or(0, Vec::len) == 50,
                "short first page"
            );
            first.push(t);
            let repo = format!("scale/r{}", i % SCALE_REPOS);
            let (t, page) = admin_call(
                http.get(format!("{broker}/v1/grants"))
                    .query(&[("limit", "50"), ("repo", repo.as_str())]),
                &admin,
            )
            .await?;
            ensure!(
                page["grants"].as_array().is_some_and(|g| !g.is_empty()),
                "empty filtered page"
            );
            filtered.push(t);
            // A page deep into the listing: follow the cursor 7 pages on.
            let mut req = http
                .get(format!("{broker}/v1/grants"))
                .query(&[("limit", "50")]);
            if let Some(c) = &cursor {
                req = req.query(&[("cursor", c.as_str())]);
            }
            let (t, page) = admin_call(req, &admin).await?;
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            deep.push(t);
        }
        let list_rss_mb = proc_status_kb(w.broker_pid, "VmHWM:")? as f64 / 1024.0;
        report.line(format!(
            "scale N={n}: made in {make_secs:.1} s ({:.0}/s); GET /v1/grants?limit=50 first page {:.1} ms, \
             filtered by repo {:.1} ms, next pages {:.1} ms (medians of 7); broker peak RSS while listing {list_rss_mb:.0} MB; \
             Redis {per_grant:.0} B per live grant (with its audit event)",
            n as f64 / make_secs,
            median_of(first) * 1e3,
            median_of(filtered) * 1e3,
            median_of(deep) * 1e3,
        ));

        // Revoke one, by repository.
        let one = tokens[2].clone();
        let (c1, r1, _) = revoke_and_probe(
            &http,
            &broker,
            &admin,
            serde_json::json!({"by": "jti", "value": jti_of(&one)?, "reason": "bench"}),
            &one,
            "scale/r2",
        )
        .await?;
        let (c2, r2, a2) = revoke_and_probe(
            &http,
            &broker,
            &admin,
            serde_json::json!({"by": "repo", "value": "scale/r3", "reason": "bench"}),
            &tokens[3],
            "scale/r3",
        )
        .await?;
        let repo_tidy = wait_tidied(port, "jit", Instant::now()).await?;

        // `/authz` alone, while an admin pages through the grants back to back, and while a
        // revoke-everything is tidied: this build and (JIT_BENCH_OTHER_BROKER) the other one,
        // each step on both before the next, so the machine's load hits both alike.
        let seconds = w.settings.seconds.min(5);
        let mut brokers = vec![("this build", broker.clone(), "jit", tokens[1].clone())];
        if let Some(other) = &other {
            progress(format!("scale: making {n} grants at the other broker"));
            let theirs = make_grants(&http, &other.url(), &id_tokens, n).await?;
            brokers.push((
                "the other build",
                other.url(),
                OTHER_PREFIX,
                theirs[1].clone(),
            ));
        }
        let mut idle = Vec::new();
        for (_, url, _, token) in &brokers {
            idle.push(authz_wrk(w, "authz idle", url, (token, "scale/r1"), seconds).await?);
        }
        let mut listing = Vec::new();
        for (_, url, _, token) in &brokers {
            listing.push(authz_while_listing(w, url, token, "scale/r1", &admin, seconds).await?);
        }
        let mut all = Vec::new();
        for (_, url, prefix, token) in &brokers {
            all.push(
                revoke_all_under_authz(w, url, prefix, &admin, token, &id_tokens[1], seconds)
                    .await?,
            );
        }
        for (i, (build, ..)) in brokers.iter().enumerate() {
            report.line(isolation_line(
                n,
                build,
                &idle[i],
                &listing[i],
                &all[i],
                seconds,
            ));
        }
        if let [this, other] = &all[..] {
            let p99 = |k: usize| all[k].authz.p99_ms / idle[k].p99_ms;
            report.line(format!(
                "scale N={n}: revoke-everything, this build against the other: /authz p99 while \
                 tidied {:.1}× against {:.1}× idle; tidied in {:.1} s against {:.1} s ({:.1}×)",
                p99(0),
                p99(1),
                this.tidied,
                other.tidied,
                this.tidied / other.tidied,
            ));
        }
        let left = redis_num(port, &["ZCARD", "jit:ix:{all}"])?;
        report.line(format!(
            "scale N={n}: revoke one: call {:.1} ms, refused {:.1} ms after the call began; \
             by repo (at most {}): call {:.1} ms, refused after {:.1} ms, tidied in {:.2} s; \
             everything (at most {}): call {:.1} ms, refused after {:.1} ms, tidied in {:.1} s \
             while /authz ran ({left} index entries left)",
            c1 * 1e3,
            r1 * 1e3,
            a2["at_most"],
            c2 * 1e3,
            r2 * 1e3,
            repo_tidy,
            all[0].at_most,
            all[0].call * 1e3,
            all[0].refused * 1e3,
            all[0].tidied,
        ));
    }
    Ok(())
}

fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0 / 1024.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "machine: {cores} cores, {cpu}, {mem_gb:.1} GiB RAM, load average before the run {}",
        load.join(" ")
    )
}

// ---------------------------------------------------------------------------------------------
// CI burst (issue 11, item 5)

/// Exchanges in the CI burst.
const BURST_JOBS: usize = 2_000;
/// Connections the burst is fired over.
const BURST_CONNECTIONS: usize = 64;

/// `config` with its `[exchange.rate_limit]` table removed (the broker's defaults apply) and
/// its store keys under `prefix` (limits apart from the main bench broker's).
fn with_default_limits(config: &str, prefix: &str) -> Result<String> {
    let start = config
        .find("[exchange.rate_limit]")
        .context("the bench config has no [exchange.rate_limit]")?;
    let end = config[start..]
        .find("\n[[")
        .map(|i| start + i + 1)
        .context("[exchange.rate_limit] is not followed by another table")?;
    let out = format!("{}{}", &config[..start], &config[end..]);
    ensure!(
        out.contains("[store]\n"),
        "the bench config has no [store] table"
    );
    Ok(out.replacen("[store]\n", &format!("[store]\nprefix = \"{prefix}\"\n"), 1))
}

/// Grants made per cluster size in the cluster phase (spread figure).
const CLUSTER_GRANTS: usize = 4_000;

/// `config` with its `[store]` moved from the single node `single` to the cluster `urls`.
fn on_cluster(config: &str, single: &str, urls: &[String]) -> Result<String> {
    let line = format!("url = \"{single}\"");
    ensure!(
        config.contains(&line),
        "the bench config has no [store] {line}"
    );
    let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    Ok(config.replacen(&line, &format!("cluster = [{}]", list.join(", ")), 1))
}

/// The same broker on a 1-master and on a 3-master Redis Cluster, side by side in one run:
/// `/authz` and token-exchange throughput and p99 (wrk), the exchange of many distinct
/// identities, and how the keys spread over the masters.
async fn cluster_phase(w: &World, report: &mut Report) -> Result<()> {
    let seconds = w.settings.seconds.min(10);
    let scale_tokens: Vec<String> = (0..SCALE_REPOS)
        .map(|k| {
            w.idp
                .github_actions(&format!("scale/r{k}"))
                .rs256()
                .expires_in(3600)
                .sign()
        })
        .collect();
    for masters in [1usize, 3] {
        progress(format!(
            "cluster: starting a {masters}-master Redis Cluster and a broker on it"
        ));
        let cluster = RedisCluster::start_with(masters).await?;
        let config = on_cluster(
            &broker_config(
                w._keys.path(),
                &w.redis.url(),
                &w.idp.platform_issuer("github"),
                &w.git.base_url(),
            ),
            &w.redis.url(),
            &cluster.urls(),
        )?;
        let broker = BrokerProcess::start_with_env(
            &config,
            &[("JIT_BENCH_UPSTREAM_PASSWORD", UPSTREAM_PASSWORD)],
        )
        .await?;
        let http = jit_e2e::http_client();
        let token = exchange(
            &http,
            &broker.url(),
            &w.id_token,
            &format!("repo:{REPO}:read"),
        )
        .await
        .context("first exchange on the cluster")?;
        let authz_script = format!(
            "wrk.method = \"GET\"\n\
             wrk.headers[\"Authorization\"] = {}\n\
             wrk.headers[\"X-Original-URI\"] = {}\n\
             wrk.headers[\"X-Original-Method\"] = \"GET\"\n",
            lua_string(&format!("Bearer {token}")),
            lua_string(&format!("/{REPO}.git/info/refs?service=git-upload-pack")),
        );
        let authz = wrk(
            w.work.path(),
            &format!("{}/authz", broker.url()),
            &authz_script,
            &w.settings,
            seconds,
        )
        .await?;
        check_wrk("cluster authz", &authz)?;
        let body = form_body(&w.id_token, &format!("repo:{REPO}:read"));
        let exchange_script = format!(
            "wrk.method = \"POST\"\n\
             wrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\n\
             wrk.body = {}\n",
            lua_string(&body)
        );
        let xchg = wrk(
            w.work.path(),
            &format!("{}/oauth/token", broker.url()),
            &exchange_script,
            &w.settings,
            seconds,
        )
        .await?;
        check_wrk("cluster exchange", &xchg)?;
        let made = Instant::now();
        make_grants(&http, &broker.url(), &scale_tokens, CLUSTER_GRANTS).await?;
        let rate = CLUSTER_GRANTS as f64 / made.elapsed().as_secs_f64();
        let keys: Vec<u64> = cluster
            .ports()
            .iter()
            .map(|&p| redis_num(p, &["DBSIZE"]))
            .collect::<Result<_>>()?;
        report.line(format!(
            "cluster {masters} master(s): /authz {} req/s p99 {:.2} ms; exchange (one identity) {} req/s p99 {:.2} ms; \
             {CLUSTER_GRANTS} exchanges of {SCALE_REPOS} identities over 32 connections {rate:.0}/s; keys per master {keys:?}",
            thousands(authz.rps),
            authz.p99_ms,
            thousands(xchg.rps),
            xchg.p99_ms,
        ));
    }
    Ok(())
}

/// A CI matrix from one egress address against the broker's default limits: 2,000 jobs, each
/// its own GitHub Actions run (distinct `run_id`), exchange at once over 64 connections; how
/// many the limits refuse (target 0) and the latency. Then one job hammering: 50 exchanges
/// with one identity, of which the per-identity limit must refuse all past its burst.
async fn burst_phase(w: &World, report: &mut Report) -> Result<()> {
    let config = with_default_limits(
        &broker_config(
            w._keys.path(),
            &w.redis.url(),
            &w.idp.platform_issuer("github"),
            &w.git.base_url(),
        ),
        "burst",
    )?;
    let broker = BrokerProcess::start_with_env(
        &config,
        &[("JIT_BENCH_UPSTREAM_PASSWORD", UPSTREAM_PASSWORD)],
    )
    .await?;
    progress(format!(
        "burst: signing {BURST_JOBS} RS256 ID tokens (distinct run ids)"
    ));
    let tokens: Vec<String> = (0..BURST_JOBS)
        .map(|i| {
            w.idp
                .github_actions(REPO)
                .rs256()
                .expires_in(3600)
                .claim("run_id", (20_000_000_000u64 + i as u64).to_string())
                .sign()
        })
        .collect();
    let tokens = std::sync::Arc::new(tokens);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = format!("{}/oauth/token", broker.url());
    let scope = format!("repo:{REPO}:read");
    progress(format!(
        "burst: {BURST_JOBS} exchanges at once over {BURST_CONNECTIONS} connections"
    ));
    let started = Instant::now();
    let workers: Vec<_> = (0..BURST_CONNECTIONS)
        .map(|_| {
            let (tokens, next, url, scope) =
                (tokens.clone(), next.clone(), url.clone(), scope.clone());
            tokio::spawn(async move {
                // One client per worker holding one keep-alive connection.
                let http = reqwest::Client::builder()
                    .pool_max_idle_per_host(1)
                    .http1_only()
                    .build()?;
                let mut seen = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(token) = tokens.get(i) else { break };
                    let t = Instant::now();
                    let r = http
                        .post(&url)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(form_body(token, &scope))
                        .send()
                        .await?;
                    let status = r.status().as_u16();
                    let _ = r.bytes().await?;
                    seen.push((status, t.elapsed().as_secs_f64() * 1e3));
                }
                anyhow::Ok(seen)
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(BURST_JOBS);
    for worker in workers {
        answers.extend(worker.await??);
    }
    let took = started.elapsed().as_secs_f64();
    let limited = answers.iter().filter(|(s, _)| *s == 429).count();
    let granted = answers.iter().filter(|(s, _)| *s == 200).count();
    let other = answers.len() - limited - granted;
    let mut ms: Vec<f64> = answers.iter().map(|(_, ms)| *ms).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    report.line(format!(
        "burst: {BURST_JOBS} CI exchanges (one GitHub run each) over {BURST_CONNECTIONS} connections from one address, default limits: {granted} granted, {limited} refused by limits (429), {other} other; p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; all answered in {took:.2} s ({}/s)",
        pct(0.50),
        pct(0.99),
        pct(1.0),
        thousands(answers.len() as f64 / took),
    ));

    // One job hammering: the same identity, as fast as one connection goes.
    let hammer = w
        .idp
        .github_actions(REPO)
        .rs256()
        .expires_in(3600)
        .claim("run_id", "30000000000")
        .sign();
    let http = jit_e2e::http_client();
    let (mut passed, mut refused) = (0, 0);
    for _ in 0..50 {
        let r = http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&hammer, &scope))
            .send()
            .await?;
        match r.status().as_u16() {
            200 => passed += 1,
            429 => refused += 1,
            s => bail!("hammering identity: unexpected status {s}"),
        }
    }
    report.line(format!(
        "burst: one identity hammering, 50 exchanges back to back: {passed} granted, {refused} refused by the per-identity limit"
    ));
    ensure!(other == 0, "{other} burst exchanges failed otherwise");
    drop(broker);
    Ok(())
}

async fn run() -> Result<Report> {
    let settings = Settings::from_env()?;
    jit_e2e::install_crypto_provider();
    let mut report = Report::default();
    report.line(machine_line());
    let which = std::process::Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    ensure!(
        which.is_ok(),
        "wrk not found; bench/run installs it (apt-get install wrk)"
    );
    let started = Instant::now();
    let world = setup(settings).await?;
    let only = std::env::var("JIT_BENCH_ONLY").unwrap_or_default();
    let run = |phase: &str| only.is_empty() || only.split(',').any(|p| p.trim() == phase);
    if run("clone") {
        let r = clone_phase(&world, &mut report).await;
        report.phase("clone", r);
    }
    if run("authz") {
        let r = authz_phase(&world, &mut report).await;
        report.phase("authz", r);
    }
    if run("exchange") {
        let r = exchange_phase(&world, &mut report).await;
        report.phase("exchange", r);
    }
    if run("helper") {
        let r = helper_phase(&world, &mut report).await;
        report.phase("helper", r);
    }
    if run("burst") {
        let r = burst_phase(&world, &mut report).await;
        report.phase("burst", r);
    }
    // Only when asked: it starts two more Redis deployments and brokers.
    if only.split(',').any(|p| p.trim() == "cluster") {
        let r = cluster_phase(&world, &mut report).await;
        report.phase("cluster", r);
    }
    // Only when asked: it fills Redis with up to millions of grants.
    if only.split(',').any(|p| p.trim() == "scale") {
        let r = scale_phase(&world, &mut report).await;
        report.phase("scale", r);
    }
    if !world.redis.is_running() {
        report.phase::<()>("redis", Err(anyhow::anyhow!("redis-server is gone")));
    }
    progress(format!(
        "done in {:.0} s; stopping the servers",
        started.elapsed().as_secs_f64()
    ));
    drop(world);
    Ok(report)
}

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jit-load: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(report) if report.failures.is_empty() => ExitCode::SUCCESS,
        Ok(report) => {
            eprintln!("jit-load: {} run(s) failed", report.failures.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("jit-load: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
