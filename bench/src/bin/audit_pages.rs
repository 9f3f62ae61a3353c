//! `jit-audit-pages`: what one page of `/v1/audit` costs when the roster holds many chains.
//!
//! `jit-audit-pages [CHAINS] [LIVE]` (default 1000 and 10) starts a `redis-server`, writes
//! CHAINS replica chains as rollouts leave them — CHAINS − LIVE retired ones, each written for
//! one minute in turn (60 events), and LIVE written all along and for two hours since the
//! last retirement (an event every 6 s each) —
//! marking each chain's span as its writer does, then pages through the merged trail (pages
//! of 200) at three places: the recent end (after every retired chain ended), the middle of
//! the history, and the start. For each it prints the median time of a page and the Redis
//! commands a page runs (`INFO commandstats`, commands inside scripts included), for the
//! store's merged read, and for the read before it side by side: every chain in the roster
//! read once per page (one `XRANGE` per lane per chain, chunks of the page's share), as
//! `read_merged` did before chains had spans. It also prints the cursor's size, and what the
//! cursor before (one position per chain) would have been.

#![forbid(unsafe_code)]

use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use jit_broker::audit::{AuditCursor, AuditEvent, AuditQuery, ChainHead, EventKind};
use jit_broker::store::redis::{RedisStore, Topology};
use jit_broker::store::{GrantStore, LEGACY_CHAIN};
use jit_e2e::RedisServer;

/// Events per page.
const PAGE: usize = 200;
/// Pages timed at each place.
const PAGES: usize = 15;
/// How long each retired chain was written, and how often it wrote (ms).
const RETIRED_FOR: i64 = 60_000;
const RETIRED_EVERY: i64 = 1_000;
/// How often each live chain writes (ms).
const LIVE_EVERY: i64 = 6_000;

fn main() -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jit-audit-pages: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jit-audit-pages: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("usage: jit-audit-pages [CHAINS] [LIVE]"))
        .collect::<Result<_>>()?;
    let (chains, live) = match args.as_slice() {
        [] => (1000, 10),
        [c] => (*c, 10),
        [c, l] => (*c, *l),
        _ => bail!("usage: jit-audit-pages [CHAINS] [LIVE]"),
    };
    if live == 0 || live > chains {
        bail!("LIVE must be 1..=CHAINS");
    }
    let redis = RedisServer::start().await?;
    let store = RedisStore::new(Topology::Single(redis.url()), "pages", 1_000_000);
    let retired = chains - live;
    let t0 = 1_700_000_000_000i64;
    let end = t0 + retired as i64 * RETIRED_FOR;
    let started = Instant::now();
    for k in 0..retired {
        let from = t0 + k as i64 * RETIRED_FOR;
        let ts: Vec<i64> = (0..RETIRED_FOR / RETIRED_EVERY)
            .map(|j| from + j * RETIRED_EVERY)
            .collect();
        write(&store, &format!("pod-{k:05}"), &ts).await?;
    }
    // The live chains run on two hours past the last retirement.
    let now = end + 2 * 3600 * 1000;
    for l in 0..live {
        let ts: Vec<i64> = (0..(now - t0) / LIVE_EVERY)
            .map(|j| t0 + j * LIVE_EVERY + l as i64)
            .collect();
        write(&store, &format!("live-{l:02}"), &ts).await?;
    }
    let roster = store.audit_replicas().await?;
    println!(
        "{} chains ({retired} retired, {live} live), written in {:.1} s; pages of {PAGE}",
        roster.len(),
        started.elapsed().as_secs_f64()
    );
    println!("| place | read | median page | Redis commands a page | cursor |");
    println!("|---|---|---|---|---|");
    for (place, at) in [
        (
            "recent (after every retired chain ended)",
            end + 3600 * 1000,
        ),
        ("middle of the history", t0 + (end - t0) / 2),
        ("start (no cursor)", i64::MIN),
    ] {
        // The cursor at that place: just before the live chain 0's event at `at`.
        let cursor = (at > i64::MIN).then(|| {
            let j = (at - t0) / LIVE_EVERY;
            AuditCursor::at(t0 + j * LIVE_EVERY, "live-00", j as u64 + 1)
        });
        let (after_ms, after_cmds, scripts, size) =
            page_run(&store, &redis, cursor.clone()).await?;
        println!(
            "| {place} | after | {after_ms:.2} ms | {after_cmds} ({scripts} scripts) | {size} B |"
        );
        let old_size = old_cursor_len(&roster, at, t0, end);
        let refused = if roster.len() > 256 {
            ", refused (> 256 chains)"
        } else {
            ""
        };
        match page_run_before(&store, &redis, at).await {
            Ok((ms, cmds, scripts)) => println!(
                "| {place} | before | {ms:.2} ms | {cmds} ({scripts} scripts) | {old_size} B{refused} |"
            ),
            Err(e) => println!("| {place} | before | failed: {e} | | {old_size} B{refused} |"),
        }
    }
    Ok(())
}

/// Writes `ts` to `chain` in batches of 200, marking its span before each as its writer
/// does.
async fn write(store: &RedisStore, chain: &str, ts: &[i64]) -> Result<()> {
    store.join_audit(chain, &ChainHead::default()).await?;
    let mut head = ChainHead::default();
    for part in ts.chunks(200) {
        let expected = head.seq;
        let batch: Vec<AuditEvent> = part
            .iter()
            .map(|&t| {
                head.chain(
                    AuditEvent::new(EventKind::AccessAllowed, t)
                        .with("repo", "acme/api")
                        .with("chain", chain),
                )
            })
            .collect();
        let (first, last) = (part[0], part[part.len() - 1]);
        store.mark_audit_span(chain, first, last).await?;
        if !store.append_audit(chain, &batch, expected, &head).await? {
            bail!("append to {chain} refused");
        }
    }
    Ok(())
}

/// The Redis commands run so far (every `cmdstat_*` calls, inside scripts included) and the
/// script calls among them (`EVALSHA`, `EVAL`: one round trip each).
fn commands(redis: &RedisServer) -> Result<(u64, u64)> {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "INFO", "commandstats"])
        .output()
        .context("redis-cli")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let calls =
        |l: &str| -> Option<u64> { l.split("calls=").nth(1)?.split(',').next()?.parse().ok() };
    let all = text
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info"))
        .filter_map(calls)
        .sum();
    let scripts = text
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(calls)
        .sum();
    Ok((all, scripts))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Pages on from `cursor` with the store's merged read: median ms, commands a page, and the
/// size of the cursor given.
async fn page_run(
    store: &RedisStore,
    redis: &RedisServer,
    mut cursor: Option<AuditCursor>,
) -> Result<(f64, u64, u64, usize)> {
    let mut times = Vec::new();
    let mut size = 0;
    let before = commands(redis)?;
    for _ in 0..PAGES {
        let t = Instant::now();
        let page = store
            .read_audit_page(&AuditQuery {
                cursor: cursor.clone(),
                limit: PAGE,
                ..Default::default()
            })
            .await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if page.events.len() != PAGE {
            bail!("a short page ({} events)", page.events.len());
        }
        let next = page.next.context("a full page has a cursor")?;
        size = next.encode().len();
        cursor = Some(next);
    }
    let after = commands(redis)?;
    let per_page = |a: u64, b: u64| (a - b) / PAGES as u64;
    Ok((
        median(times),
        per_page(after.0, before.0),
        per_page(after.1, before.1),
        size,
    ))
}

/// The read before spans, at the same place: the roster listed, then every chain read from
/// its own position (each retired chain's after its end or at its start, each live chain's
/// at `at`) in parallel, chunks of the page's share (at least 100), as `read_merged` did.
async fn page_run_before(
    store: &RedisStore,
    redis: &RedisServer,
    at: i64,
) -> Result<(f64, u64, u64)> {
    let t0 = 1_700_000_000_000i64;
    let mut times = Vec::new();
    let before = commands(redis)?;
    for p in 0..PAGES as u64 {
        let t = Instant::now();
        let mut chains = vec![LEGACY_CHAIN.to_owned()];
        chains.extend(store.audit_replicas().await?);
        let chunk = (PAGE / chains.len()).clamp(100, PAGE);
        let reads = chains.iter().map(|c| {
            let after_seq = match c.strip_prefix("pod-").and_then(|k| k.parse::<i64>().ok()) {
                Some(k) if at > i64::MIN => {
                    let from = t0 + k * RETIRED_FOR;
                    (((at - from) / RETIRED_EVERY).clamp(0, RETIRED_FOR / RETIRED_EVERY)) as u64
                }
                _ if at > i64::MIN => ((at - t0) / LIVE_EVERY) as u64 + p * 20,
                _ => p * 20,
            };
            let q = AuditQuery {
                after_seq,
                limit: chunk,
                ..Default::default()
            };
            async move { store.read_chain(c, &q).await }
        });
        let pages = futures_util::future::try_join_all(reads).await?;
        std::hint::black_box(pages);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let after = commands(redis)?;
    let per_page = |a: u64, b: u64| (a - b) / PAGES as u64;
    Ok((
        median(times),
        per_page(after.0, before.0),
        per_page(after.1, before.1),
    ))
}

/// The size of the cursor before (`a1.`: base64url of `name=seq` for every chain read).
fn old_cursor_len(roster: &[String], at: i64, t0: i64, end: i64) -> usize {
    let text: Vec<String> = roster
        .iter()
        .map(|c| {
            let seq = match c.strip_prefix("pod-").and_then(|k| k.parse::<i64>().ok()) {
                Some(k) => ((at.clamp(t0, end) - t0 - k * RETIRED_FOR) / RETIRED_EVERY)
                    .clamp(0, RETIRED_FOR / RETIRED_EVERY),
                None => (at.max(t0) - t0) / LIVE_EVERY,
            };
            format!("{c}={}", seq.max(1))
        })
        .collect();
    3 + (text.join(";").len() * 4).div_ceil(3)
}
