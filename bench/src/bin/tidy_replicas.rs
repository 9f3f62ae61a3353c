//! `jit-tidy-replicas`: what tidying a revoke-everything costs Redis when several replicas run
//! the tidy worker — Redis commands counted by `INFO commandstats`, before and after the tidy
//! lease, side by side in one run.
//!
//! `jit-tidy-replicas [N] [WORKERS...]` (defaults: 20000 grants; 1 and 3 workers) starts one
//! `redis-server`, and for each worker count and each mode, on a freshly emptied server: puts
//! N live grants, revokes everything, resets the command statistics, then runs that many tidy
//! workers ([`run_worker_as`], paced as in a broker, each with its own store and connections
//! as a replica has) until the tidy queue is empty and the last grant record is gone.
//!
//! - `lease`: each worker under its own name, as replicas are: one holds the tidy lease and
//!   works, the others find it held and rest.
//! - `shared`: every worker under one name, so the lease never excludes anyone — every
//!   worker works the head job's batches, as every replica did before the lease.
//!
//! One line per run on stdout: commands spent (the harness's own polling and statistics
//! calls left out), the five commonest, and how long the tidy-up took.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use jit_broker::clock::{Clock, SystemClock};
use jit_broker::store::redis::{RedisStore, Topology};
use jit_broker::store::tidy::run_worker_as;
use jit_broker::store::{Grant, GrantStore, RevokeTarget};
use jit_e2e::RedisServer;
use jit_proto::{Action, RepoPath, Scope};
use tokio::task::JoinSet;

const USAGE: &str = "jit-tidy-replicas [N] [WORKERS...]";
/// Key prefix of every run (the server is emptied between runs).
const PREFIX: &str = "tr";
/// How often the harness looks whether the tidy-up is done.
const POLL: Duration = Duration::from_millis(100);
/// Tasks putting the grants.
const PUTTERS: usize = 16;
/// The longest one tidy-up may take.
const LIMIT: Duration = Duration::from_secs(600);

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jit-tidy-replicas: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jit-tidy-replicas: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse = |s: &String| {
        s.parse::<usize>()
            .with_context(|| format!("{s:?} is not a number; usage: {USAGE}"))
    };
    let n = args.first().map(parse).transpose()?.unwrap_or(20_000);
    let mut workers: Vec<usize> = args.iter().skip(1).map(parse).collect::<Result<_>>()?;
    if workers.is_empty() {
        workers = vec![1, 3];
    }
    if n == 0 || workers.contains(&0) {
        bail!("N and every worker count must be at least 1; usage: {USAGE}");
    }
    let redis = RedisServer::start().await?;
    let client = redis::Client::open(redis.url())?;
    let mut admin = client.get_multiplexed_async_connection().await?;
    println!("revoke-everything of {n} grants, tidied by paced workers on one redis-server");
    for &w in &workers {
        for shared in [true, false] {
            let r = one_run(&redis, &mut admin, n, w, shared).await?;
            let secs = r.took.as_secs_f64();
            println!(
                "{w} worker(s), {:<6}: {:>7} commands ({:.2} per grant), {:>5.0} commands/s, \
                 redis-server CPU {:.2} s ({:.0} % of the time), tidied in {:.1} s; {}",
                if shared { "shared" } else { "lease" },
                r.total,
                r.total as f64 / n as f64,
                r.total as f64 / secs,
                r.cpu,
                100.0 * r.cpu / secs,
                secs,
                r.top
            );
        }
    }
    Ok(())
}

struct Outcome {
    total: u64,
    /// redis-server's CPU seconds (user + system) during the tidy-up.
    cpu: f64,
    top: String,
    took: Duration,
}

async fn one_run(
    redis: &RedisServer,
    admin: &mut redis::aio::MultiplexedConnection,
    n: usize,
    workers: usize,
    shared: bool,
) -> Result<Outcome> {
    redis::cmd("FLUSHALL").query_async::<()>(admin).await?;
    let topology = Topology::Single(redis.url());
    let setup = Arc::new(RedisStore::new(topology.clone(), PREFIX, 1000));
    let now = SystemClock.now_ms();
    let mut puts = JoinSet::new();
    for k in 0..PUTTERS {
        let setup = setup.clone();
        puts.spawn(async move {
            for i in (k..n).step_by(PUTTERS) {
                setup.put(&grant(now, i)?, now).await?;
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(done) = puts.join_next().await {
        done??;
    }
    let revoked_at = SystemClock.now_ms();
    setup.revoke(&RevokeTarget::All, revoked_at).await?;
    let (jobs, index) = (format!("{PREFIX}:{{tidy}}:jobs"), setup.index_key("all"));
    // Records are ended before their index entries are dropped, batch by batch: an empty
    // queue and an empty global index mean the tidy-up is done.
    let left = |admin: &mut redis::aio::MultiplexedConnection| {
        let mut admin = admin.clone();
        let (jobs, index) = (jobs.clone(), index.clone());
        async move {
            let jobs: u64 = redis::cmd("LLEN").arg(jobs).query_async(&mut admin).await?;
            let listed: u64 = redis::cmd("ZCARD")
                .arg(index)
                .query_async(&mut admin)
                .await?;
            Ok::<bool, redis::RedisError>(jobs > 0 || listed > 0)
        }
    };
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(admin)
        .await?;
    let cpu_before = cpu_seconds(admin).await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|i| {
            let store: Arc<dyn GrantStore> =
                Arc::new(RedisStore::new(topology.clone(), PREFIX, 1000));
            let name = if shared {
                "tidy-shared".to_owned()
            } else {
                format!("tidy-{i}")
            };
            tokio::spawn(async move { run_worker_as(store, Arc::new(SystemClock), &name).await })
        })
        .collect();
    let mut polls = 0u64;
    loop {
        tokio::time::sleep(POLL).await;
        polls += 1;
        if !left(admin).await? {
            break;
        }
        if started.elapsed() > LIMIT {
            bail!("not tidied within {LIMIT:?}");
        }
    }
    let took = started.elapsed();
    for t in &tasks {
        t.abort();
    }
    let cpu = cpu_seconds(admin).await? - cpu_before;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await?;
    let mut calls = command_calls(&info)?;
    // The harness's own: one LLEN and one ZCARD per poll, and the INFO calls.
    for (cmd, own) in [("llen", polls), ("zcard", polls), ("info", 3)] {
        if let Some(c) = calls.get_mut(cmd) {
            *c = c.saturating_sub(own);
        }
    }
    calls.retain(|cmd, c| *c > 0 && !cmd.starts_with("config"));
    let total = calls.values().sum();
    let mut by_count: Vec<(&String, &u64)> = calls.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1));
    let top = by_count
        .iter()
        .take(5)
        .map(|(c, n)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Outcome {
        total,
        cpu,
        top,
        took,
    })
}

/// redis-server's CPU time so far (`used_cpu_user` + `used_cpu_sys` of `INFO cpu`), seconds.
async fn cpu_seconds(admin: &mut redis::aio::MultiplexedConnection) -> Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(admin).await?;
    let mut total = 0.0;
    for key in ["used_cpu_user:", "used_cpu_sys:"] {
        let value = info
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .with_context(|| format!("no {key} in INFO cpu"))?;
        total += value
            .trim()
            .parse::<f64>()
            .with_context(|| format!("{key} {value:?}"))?;
    }
    Ok(total)
}

/// Calls per command from `INFO commandstats` (`cmdstat_get:calls=12,usec=…`).
fn command_calls(info: &str) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let (name, fields) = rest
            .split_once(':')
            .with_context(|| format!("commandstats line {line:?}"))?;
        let calls = fields
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .with_context(|| format!("no calls= in {line:?}"))?
            .parse()
            .with_context(|| format!("calls in {line:?}"))?;
        out.insert(name.to_owned(), calls);
    }
    Ok(out)
}

/// The `i`th grant: 200 subjects, 50 repositories, living an hour.
fn grant(now: i64, i: usize) -> Result<Grant> {
    let repo = RepoPath::parse(&format!("acme/repo{}", i % 50))?;
    Ok(Grant {
        jti: format!("tr-{i:07}"),
        sub: format!("user{}@example.com", i % 200),
        idp: "corp".into(),
        role: "dev".into(),
        scope: Scope::new(repo, Action::Read),
        refs: vec![],
        reason: None,
        issued_ms: now,
        exp: now / 1000 + 3600,
        req: None,
        break_glass: false,
    })
}
