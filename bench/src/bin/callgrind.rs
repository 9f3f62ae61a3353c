//! `jit-callgrind`: instructions per request of a `jit-broker` binary, under callgrind.
//!
//! Wall-clock figures on a shared two-core machine move by 20 % from one run to the next;
//! instruction counts do not. For each broker binary given on the command line, this starts a
//! private `redis-server`, the in-process RS256 CI issuer and the broker under
//! `valgrind --tool=callgrind` with the configuration of `jit-load` ([`jit_bench::broker_config`]),
//! gets a broker token from one exchange, then, from one sequential keep-alive client:
//!
//! - `/authz`: 200 warm-up requests, `callgrind_control -z`, 2,000 measured requests (all
//!   204), `callgrind_control -d`;
//! - the token exchange: 50 warm-up, zero, 300 measured (all 200), dump;
//!
//! and prints the instructions (Ir) per request of each. The dumps stay in the output
//! directory (`--out`, default `target/callgrind`) for `callgrind_annotate`.
//!
//! Run through `bench/callgrind/run`, which builds this and checks for valgrind.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use jit_bench::{REPO, UPSTREAM_PASSWORD, broker_config, exchange, form_body};
use jit_e2e::bins::generate_keys;
use jit_e2e::{BrokerProcess, CiIssuer, RedisServer};

const AUTHZ_WARMUP: usize = 200;
const AUTHZ_MEASURED: usize = 2_000;
const EXCHANGE_WARMUP: usize = 50;
const EXCHANGE_MEASURED: usize = 300;

fn progress(msg: impl AsRef<str>) {
    eprintln!("==> {}", msg.as_ref());
}

/// Writes `dir/jit-broker`, a wrapper that runs `broker serve …` under callgrind (dumps to
/// `out/callgrind.out.<pid>`) and every other subcommand (`keys generate`) natively, so the
/// harness library starts it like the real binary.
fn write_wrapper(dir: &Path, broker: &Path, out: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let script = format!(
        "#!/bin/sh\n\
         if [ \"$1\" = serve ]; then\n\
         \x20 exec valgrind --tool=callgrind --callgrind-out-file={out}/callgrind.out.%p {broker} \"$@\"\n\
         fi\n\
         exec {broker} \"$@\"\n",
        out = quote(out),
        broker = quote(broker),
    );
    let path = dir.join("jit-broker");
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// `callgrind_control <flag> <pid>`.
fn callgrind_control(flag: &str, pid: u32) -> Result<()> {
    let out = Command::new("callgrind_control")
        .arg(flag)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()
        .context("running callgrind_control (package valgrind)")?;
    ensure!(
        out.status.success(),
        "callgrind_control {flag} {pid} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The dumps of `pid` in `out` (`callgrind.out.<pid>.<n>`).
fn dumps(out: &Path, pid: u32) -> Result<Vec<PathBuf>> {
    let prefix = format!("callgrind.out.{pid}.");
    let mut found = Vec::new();
    for e in std::fs::read_dir(out)? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            found.push(e.path());
        }
    }
    Ok(found)
}

/// Dumps the counters since the last zeroing and returns the dump's total Ir.
async fn dump_total(out: &Path, pid: u32) -> Result<(PathBuf, u64)> {
    let before = dumps(out, pid)?;
    callgrind_control("-d", pid)?;
    // callgrind_control waits for the dump; the file may still be being written.
    for _ in 0..600 {
        let fresh: Vec<PathBuf> = dumps(out, pid)?
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if let [path] = fresh.as_slice() {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            // `totals:` is the last line of a complete dump.
            if let Some(total) = text
                .lines()
                .find_map(|l| l.strip_prefix("totals:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
            {
                return Ok((path.clone(), total));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no callgrind dump of pid {pid} in {}", out.display())
}

async fn authz(http: &reqwest::Client, broker: &str, token: &str) -> Result<()> {
    let r = http
        .get(format!("{broker}/authz"))
        .header("authorization", format!("Bearer {token}"))
        .header(
            "x-original-uri",
            format!("/{REPO}.git/info/refs?service=git-upload-pack"),
        )
        .header("x-original-method", "GET")
        .send()
        .await?;
    ensure!(r.status() == 204, "/authz answered {}", r.status());
    Ok(())
}

async fn exchange_once(http: &reqwest::Client, broker: &str, body: &str) -> Result<()> {
    let r = http
        .post(format!("{broker}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await?;
    let status = r.status();
    let _ = r.bytes().await?;
    ensure!(status == 200, "the exchange answered {status}");
    Ok(())
}

/// Measures the broker the harness library finds (`JIT_E2E_BIN_DIR`, the wrapper);
/// returns (Ir per `/authz`, Ir per exchange).
async fn measure(broker_bin: &Path, out: &Path) -> Result<(f64, f64)> {
    let redis = RedisServer::start().await?;
    let idp = CiIssuer::start().await?;
    let run = tempfile::Builder::new()
        .prefix("jit-callgrind-")
        .tempdir()?;
    let keys = run.path().join("keys");
    generate_keys(&keys)?;
    // /authz and the exchange never reach the upstream: a closed port will do.
    // An empty `[audit]` table keeps the harness from adding `audit.dir`, which brokers
    // before the durable sink do not know; newer ones keep their files beside the keys,
    // in this run's own folder (a folder shared by runs would hold another chain's files).
    let config = broker_config(
        &keys,
        &redis.url(),
        &idp.platform_issuer("github"),
        "http://127.0.0.1:9",
    ) + "\n[audit]\n";
    progress(format!("starting {} under callgrind", broker_bin.display()));
    let broker = BrokerProcess::start_with_env(
        &config,
        &[("JIT_BENCH_UPSTREAM_PASSWORD", UPSTREAM_PASSWORD)],
    )
    .await?;
    let pid = broker.pid().context("the broker is not running")?;
    let url = broker.url();
    let http = jit_e2e::http_client();
    let id_token = idp.github_actions(REPO).rs256().expires_in(3600).sign();
    let token = exchange(&http, &url, &id_token, &format!("repo:{REPO}:read"))
        .await
        .context("first token exchange")?;

    progress(format!(
        "/authz: {AUTHZ_WARMUP} warm-up, {AUTHZ_MEASURED} measured"
    ));
    for _ in 0..AUTHZ_WARMUP {
        authz(&http, &url, &token).await?;
    }
    callgrind_control("-z", pid)?;
    for _ in 0..AUTHZ_MEASURED {
        authz(&http, &url, &token).await?;
    }
    let (authz_dump, authz_ir) = dump_total(out, pid).await?;

    let body = form_body(&id_token, &format!("repo:{REPO}:read"));
    progress(format!(
        "exchange: {EXCHANGE_WARMUP} warm-up, {EXCHANGE_MEASURED} measured"
    ));
    for _ in 0..EXCHANGE_WARMUP {
        exchange_once(&http, &url, &body).await?;
    }
    callgrind_control("-z", pid)?;
    for _ in 0..EXCHANGE_MEASURED {
        exchange_once(&http, &url, &body).await?;
    }
    let (exchange_dump, exchange_ir) = dump_total(out, pid).await?;
    progress(format!(
        "dumps: {} (authz), {} (exchange)",
        authz_dump.display(),
        exchange_dump.display()
    ));
    drop(broker);
    drop(redis);
    Ok((
        authz_ir as f64 / AUTHZ_MEASURED as f64,
        exchange_ir as f64 / EXCHANGE_MEASURED as f64,
    ))
}

/// One child run per broker (each with its own `JIT_E2E_BIN_DIR`, read by the harness
/// library), then the comparison with the first.
fn run(brokers: &[PathBuf], out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let out = std::fs::canonicalize(out)?;
    let me = std::env::current_exe()?;
    let mut rows = Vec::new();
    for b in brokers {
        let b = std::fs::canonicalize(b).with_context(|| format!("{}", b.display()))?;
        ensure!(b.is_file(), "{} is not a file", b.display());
        let wrapper = tempfile::Builder::new()
            .prefix("jit-callgrind-bin-")
            .tempdir()?;
        write_wrapper(wrapper.path(), &b, &out)?;
        let child = Command::new(&me)
            .arg("--measure")
            .arg(&b)
            .arg("--out")
            .arg(&out)
            .env("JIT_E2E_BIN_DIR", wrapper.path())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()?;
        let text = String::from_utf8_lossy(&child.stdout).into_owned();
        ensure!(
            child.status.success(),
            "measuring {} failed: {text}",
            b.display()
        );
        let figures: Vec<f64> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let [a, e] = figures[..] else {
            bail!("unexpected output of the measurement: {text}");
        };
        println!(
            "{}: /authz {a:.0} Ir per request ({AUTHZ_MEASURED}), exchange {e:.0} Ir per request ({EXCHANGE_MEASURED})",
            b.display()
        );
        rows.push((b, a, e));
    }
    if let [(_, a0, e0), rest @ ..] = rows.as_slice() {
        for (b, a, e) in rest {
            println!(
                "{} against the first: /authz {:+.1} %, exchange {:+.1} %",
                b.display(),
                (a / a0 - 1.0) * 100.0,
                (e / e0 - 1.0) * 100.0
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = PathBuf::from("target/callgrind");
    if let Some(i) = args.iter().position(|a| a == "--out") {
        if i + 1 >= args.len() {
            eprintln!("jit-callgrind: --out needs a directory");
            return ExitCode::FAILURE;
        }
        out = PathBuf::from(args.remove(i + 1));
        args.remove(i);
    }
    // The child run of one broker (see `run`).
    if let [flag, broker] = args.as_slice()
        && flag == "--measure"
    {
        jit_e2e::install_crypto_provider();
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("jit-callgrind: cannot start a runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        return match rt.block_on(measure(Path::new(broker), &out)) {
            Ok((a, e)) => {
                println!("{a:.1} {e:.1}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("FAILED: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if args.is_empty() || args.iter().any(|a| a.starts_with('-')) {
        eprintln!("usage: jit-callgrind [--out DIR] BROKER_BINARY...");
        return ExitCode::FAILURE;
    }
    let brokers: Vec<PathBuf> = args.into_iter().map(PathBuf::from).collect();
    match run(&brokers, &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("jit-callgrind: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
