//! The one test suite every [`GrantStore`] implementation must pass. The memory store runs it
//! in its unit tests; the Redis store runs it against a real `redis-server` in the end-to-end
//! harness (single node and cluster).
//!
//! Time is the store's own notion of it ([`SuiteTime`]): the memory store knows only the
//! `now_ms` it is handed, so its run drives a [`crate::clock::ManualClock`] and never sleeps;
//! the Redis store expires keys by real TTLs inside `redis-server`, so its run reads the system
//! clock and, where a case needs time to pass, really waits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;

use jit_proto::{Claims, RepoPath, Scope};

use super::{
    AuditRetention, Grant, GrantFilter, GrantStatus, GrantStore, LEGACY_CHAIN, RevokeTarget,
    TidyProgress, bounds,
};
use crate::audit::{AuditCursor, AuditEvent, AuditQuery, ChainHead, Lane};
use crate::clock::{Clock, SystemClock};

pub use super::Damage;
pub use super::suite_time::{SuiteTime, grant_at};

/// Verifies the audit trail a store holds, as `audit verify --store` does, and returns the
/// report. The recorder's verification, handed in by the caller
/// (`crate::recorder::verify::suite_verifier`), so that this suite stays beneath it.
pub type Verify =
    for<'a> fn(
        &'a dyn GrantStore,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>>;

/// A grant for the Redis store's own tests, issued at the system clock's now. See
/// [`grant_at`].
pub fn grant(jti: &str, sub: &str, repo: &str, role: &str, idp: &str, ttl: i64) -> Grant {
    grant_at(SystemClock.now_ms(), jti, sub, repo, role, idp, ttl)
}

/// The claims of a token for `g`.
pub fn claims_of(g: &Grant) -> Claims {
    Claims {
        iss: "https://broker.test".into(),
        aud: "git-jit".into(),
        sub: g.sub.clone(),
        idp: g.idp.clone(),
        iat: g.issued_ms / 1000,
        nbf: g.issued_ms / 1000,
        exp: g.exp,
        jti: g.jti.clone(),
        scope: g.scope.clone(),
        refs: g.refs.clone(),
        role: g.role.clone(),
        reason: g.reason.clone(),
        req: None,
    }
}

async fn live(store: &dyn GrantStore, t: &SuiteTime, g: &Grant) -> bool {
    matches!(
        store.check(&claims_of(g), t.now_ms()).await.unwrap(),
        GrantStatus::Live(_)
    )
}

/// The head after `events` (their lanes as they name them, evidence if none).
pub fn head_after(events: &[AuditEvent]) -> ChainHead {
    let mut head = ChainHead::default();
    for e in events {
        head.advance(super::lane_of(e), e);
    }
    head
}

/// Runs every case, each on a fresh store from `make(retention)`, with time as `t` says and
/// the audit trail checked by `verify`.
pub async fn run_all<F, Fut>(t: &SuiteTime, verify: Verify, make: F)
where
    F: Fn(AuditRetention) -> Fut,
    Fut: Future<Output = Box<dyn GrantStore>>,
{
    let make_with = &make;
    let make = |n: usize| make(AuditRetention::with_max_events(n));
    put_check_status(&*make(1000).await, t).await;
    refuses_expired_put(&*make(1000).await, t).await;
    logical_expiry(&*make(1000).await, t).await;
    natural_expiry(&*make(1000).await, t).await;
    revoke_by_jti(&*make(1000).await, t).await;
    for target in [
        RevokeTarget::Subject("alice".into()),
        RevokeTarget::Repo(RepoPath::parse("acme/api").unwrap()),
        RevokeTarget::Role("dev".into()),
        RevokeTarget::Issuer("corp".into()),
        RevokeTarget::All,
    ] {
        bulk_revoke(&*make(1000).await, t, target).await;
    }
    revoked_expired_unknown(&*make(1000).await, t).await;
    mismatched_claims_are_not_live(&*make(1000).await, t).await;
    listing_filters(&*make(1000).await, t).await;
    revocation_holds_before_any_tidy(&*make(1000).await, t).await;
    one_worker_tidies_at_a_time(&*make(1000).await, t).await;
    a_worker_past_its_lease_records_nothing(&*make(1000).await, t).await;
    paging_sees_each_live_grant_once(&*make(1000).await, t, GrantFilter::default()).await;
    let by_repo = GrantFilter {
        repo: Some(RepoPath::parse("acme/api").unwrap()),
        ..Default::default()
    };
    paging_sees_each_live_grant_once(&*make(1000).await, t, by_repo).await;
    super::requests_suite::run_all(make(1000).await.requests(), t).await;
    super::sessions_suite::run_all(make(1000).await.sessions(), t).await;
    listings_skip_the_dead_and_tidy_them(&*make(1000).await, t).await;
    paging_ends_at_an_exact_multiple(&*make(1000).await, t).await;
    audit_round_trip(&*make(1000).await, t).await;
    audit_is_bounded(&*make(10).await, t, 10).await;
    audit_batches_land_whole(&*make(1000).await, t).await;
    audit_pages_at_depth(&*make(100_000).await, t).await;
    let mut small = AuditRetention::with_max_events(1_000_000);
    small.traffic.max_bytes = 16 * 1024;
    small.evidence.max_age_ms = 60_000;
    traffic_never_pushes_evidence_out(&*make_with(small).await, t).await;
    replicas_append_concurrently_without_contention(&*make(100_000).await, t, verify).await;
    merged_reads_page_in_time_order_at_depth(&*make(100_000).await, t).await;
    many_chains_merge_with_one_hot_chain(&*make(100_000).await, t).await;
    verify_finds_a_deleted_chain_and_a_cut_tail(&*make(1000).await, t, verify).await;
    verify_finds_a_retired_chain_deleted_with_its_roster_entry(&*make(1000).await, t, verify).await;
    legacy_chain_still_verifies_and_replicas_continue_it(&*make(1000).await, t, verify).await;
}

/// The replica most audit cases write as.
const R: &str = "r1";

/// The tidy worker most cases tidy as.
const W: &str = "w1";

/// Enters `replica` in the roster with an empty chain.
async fn join(store: &dyn GrantStore, replica: &str) {
    store
        .join_audit(replica, &ChainHead::default())
        .await
        .unwrap();
}

/// `n` events chained onto `head` as the recorder chains them (lanes by kind, real hashes),
/// at times `ts(i)`; `head` moves past them.
fn linked(head: &mut ChainHead, n: usize, ts: impl Fn(usize) -> i64) -> Vec<AuditEvent> {
    (0..n)
        .map(|i| {
            let kind = if i % 5 == 0 {
                "grant.issued"
            } else {
                "access.allowed"
            };
            head.chain(AuditEvent::new(kind, ts(i)).with("i", i))
        })
        .collect()
}

/// Appends `batches` batches of `size` chained events to `replica`'s chain, every append
/// against the head it last wrote (no re-read); returns how many appends were refused.
async fn append_batches(
    store: &dyn GrantStore,
    replica: &str,
    batches: usize,
    size: usize,
    ts: impl Fn(usize) -> i64,
) -> usize {
    let mut head = store.audit_head(replica).await.unwrap().unwrap_or_default();
    let mut refused = 0;
    for b in 0..batches {
        let expected = head.seq;
        let batch = linked(&mut head, size, |i| ts(b * size + i));
        mark(store, replica, &batch).await;
        if !store
            .append_audit(replica, &batch, expected, &head)
            .await
            .unwrap()
        {
            refused += 1;
        }
        // Let the other replica's appends interleave with these.
        tokio::task::yield_now().await;
    }
    refused
}

/// Widens `replica`'s span to cover `events` before they are appended, as its writer does.
async fn mark(store: &dyn GrantStore, replica: &str, events: &[AuditEvent]) {
    let since = events.iter().map(|e| e.ts).min().unwrap();
    let until = events.iter().map(|e| e.ts).max().unwrap();
    let top = store
        .audit_extent(replica)
        .await
        .unwrap()
        .map_or(until, |(_, l)| l);
    store
        .mark_audit_span(replica, since, until.max(top))
        .await
        .unwrap();
}

/// Events of `chain` at times `ts` chained onto `head` as the recorder chains them, each
/// naming its chain (`data.c`) and its time's index (`data.i`).
fn chained(head: &mut ChainHead, chain: &str, ts: &[i64]) -> Vec<AuditEvent> {
    ts.iter()
        .enumerate()
        .map(|(i, &t)| {
            let kind = if i % 3 == 0 {
                "grant.issued"
            } else {
                "access.allowed"
            };
            head.chain(AuditEvent::new(kind, t).with("c", chain).with("i", i))
        })
        .collect()
}

/// Where an event of [`chained`] is from: its chain and seq.
fn origin(e: &AuditEvent) -> (String, u64) {
    let c = e.data.get("c").and_then(|c| c.as_str()).unwrap_or("?");
    (c.to_owned(), e.seq)
}

/// The merged page of at most `limit` events after `after_seq` in every chain.
async fn page_after(store: &dyn GrantStore, after_seq: u64, limit: usize) -> super::AuditPage {
    store
        .read_audit_page(&AuditQuery {
            after_seq,
            limit,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Every event the store holds, merged in order.
async fn read_all(store: &dyn GrantStore) -> Vec<AuditEvent> {
    store
        .read_audit(&AuditQuery {
            limit: usize::MAX,
            ..Default::default()
        })
        .await
        .unwrap()
}

/// Two replicas appending at once each write their own chain: no append is ever refused (so
/// none is retried), both chains verify on their own, and the merged trail holds both.
async fn replicas_append_concurrently_without_contention(
    store: &dyn GrantStore,
    t: &SuiteTime,
    verify: Verify,
) {
    let t0 = t.now_ms();
    join(store, "a").await;
    join(store, "b").await;
    let (ra, rb) = tokio::join!(
        append_batches(store, "a", 40, 5, |i| t0 + i as i64 * 2),
        append_batches(store, "b", 40, 5, |i| t0 + i as i64 * 2 + 1),
    );
    assert_eq!(
        (ra, rb),
        (0, 0),
        "appends refused: neither replica waits for the other"
    );
    assert_eq!(store.audit_replicas().await.unwrap(), ["a", "b"]);
    for r in ["a", "b"] {
        assert_eq!(store.audit_head(r).await.unwrap().unwrap().seq, 200);
    }
    let report = verify(store).await.expect("both chains verify");
    assert!(
        report.contains("audit chain intact: 2 replica chains"),
        "{report}"
    );
    assert!(
        report.contains("replica a: audit chain intact: 200 events"),
        "{report}"
    );
    assert!(
        report.contains("replica b: audit chain intact: 200 events"),
        "{report}"
    );
    // A second writer under a replica's name is refused: it appends against a head that
    // moved, and nothing of its batch lands.
    let mut stale = ChainHead::default();
    let forged = linked(&mut stale, 1, |_| t0);
    assert!(!store.append_audit("a", &forged, 0, &stale).await.unwrap());
    assert_eq!(store.audit_head("a").await.unwrap().unwrap().seq, 200);
}

/// A thousand replica chains, as years of rollouts leave them: 990 retired, each written
/// for a short while, 10 hot ones written all along (one whose clock goes back now and
/// then), and 3 written by an older broker (no span). Paging with the cursor, at any page
/// size (fixed, or changing from page to page), returns every event exactly once, in the
/// order of their places `(t, chain, seq)` (`t` the greatest time of the chain so far), each
/// chain in seq order; the cursor stays a few dozen bytes.
async fn many_chains_merge_with_one_hot_chain(store: &dyn GrantStore, t: &SuiteTime) {
    let t0 = t.now_ms();
    let mut written: Vec<(String, Vec<i64>, bool)> = Vec::new();
    for k in 0..990i64 {
        // Retired in turn, 10 ms each; some times tie with a hot chain's.
        written.push((
            format!("r{k:04}"),
            vec![t0 + k * 10, t0 + k * 10 + 3, t0 + k * 10 + 7],
            true,
        ));
    }
    for h in 0..10i64 {
        let ts: Vec<i64> = (0..120i64)
            .map(|j| {
                let at = t0 + j * 83 + h;
                // h0's clock goes back by half a second every 40 events.
                if h == 0 && j % 40 == 39 { at - 500 } else { at }
            })
            .collect();
        written.push((format!("h{h}"), ts, true));
    }
    for o in ["old-a", "old-b", "old-c"] {
        written.push((
            o.to_owned(),
            (0..5).map(|j| t0 + j * 2000 + 1).collect(),
            false,
        ));
    }
    let mut want: Vec<(i64, String, u64)> = Vec::new();
    let mut own_time = std::collections::HashMap::new();
    for (chain, ts, marked) in &written {
        join(store, chain).await;
        let mut head = ChainHead::default();
        let mut top = i64::MIN;
        // Two batches per chain.
        for part in ts.chunks(ts.len().div_ceil(2)) {
            let batch = chained(&mut head, chain, part);
            if *marked {
                mark(store, chain, &batch).await;
            }
            let expected = batch[0].seq - 1;
            assert!(
                store
                    .append_audit(chain, &batch, expected, &head)
                    .await
                    .unwrap()
            );
            for e in &batch {
                top = top.max(e.ts);
                want.push((top, chain.clone(), e.seq));
                own_time.insert((chain.clone(), e.seq), e.ts);
            }
        }
    }
    want.sort();
    let want: Vec<(String, u64)> = want.into_iter().map(|(_, c, s)| (c, s)).collect();
    assert_eq!(store.audit_chains(i64::MIN).await.unwrap().roster, 1003);
    // Page sizes: fixed, and changing from page to page (a fixed pseudo-random sequence).
    let mut seed = 0x2545_f491_u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 300) as usize + 1
    };
    for run in ["23", "250", "5000", "random"] {
        let mut all = Vec::new();
        let mut cursor: Option<AuditCursor> = None;
        loop {
            let limit = run.parse().unwrap_or_else(|_| random());
            let page = store
                .read_audit_page(&AuditQuery {
                    cursor: cursor.clone(),
                    limit,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(page.events.len() <= limit, "page size {run}");
            all.extend(page.events.iter().map(origin));
            match page.next {
                Some(next) => {
                    let text = next.encode();
                    assert!(text.len() < 64, "cursor of {} bytes", text.len());
                    cursor = Some(AuditCursor::decode(&text).unwrap());
                }
                None => break,
            }
        }
        assert_eq!(all.len(), want.len(), "page size {run}: every event once");
        assert!(all == want, "page size {run}: in the order of their places");
    }
    // A time range in the middle, paged: exactly the events whose own time is in it.
    let (from, to) = (t0 + 3_000, t0 + 5_000);
    let mut all = Vec::new();
    let mut cursor: Option<AuditCursor> = None;
    loop {
        let page = store
            .read_audit_page(&AuditQuery {
                from_ms: Some(from),
                to_ms: Some(to),
                cursor: cursor.take(),
                limit: 40,
                ..Default::default()
            })
            .await
            .unwrap();
        all.extend(page.events.iter().map(origin));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let in_range: Vec<(String, u64)> = want
        .iter()
        .filter(|k| (from..=to).contains(&own_time[*k]))
        .cloned()
        .collect();
    assert!(!in_range.is_empty());
    assert!(
        all == in_range,
        "{} of {} in range",
        all.len(),
        in_range.len()
    );
}

/// Pages of the merged trail, read with the cursor each page gives, are the whole trail in
/// time order, each event once, at any depth; `after_seq` alone pages a one-replica store.
async fn merged_reads_page_in_time_order_at_depth(store: &dyn GrantStore, t: &SuiteTime) {
    let t0 = t.now_ms();
    join(store, "a").await;
    append_batches(store, "a", 6, 100, |i| t0 + i as i64 * 10).await;
    // One replica: after_seq says where the next page starts.
    let page = page_after(store, 550, 20).await;
    assert_eq!(page.events.first().map(|e| e.seq), Some(551));
    assert_eq!(page.next_after_seq, Some(570));
    join(store, "b").await;
    append_batches(store, "b", 6, 100, |i| t0 + i as i64 * 10 + 5).await;
    let mut all = Vec::new();
    let mut cursor: Option<AuditCursor> = None;
    let mut pages = 0;
    loop {
        let page = store
            .read_audit_page(&AuditQuery {
                cursor: cursor.clone(),
                limit: 50,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.events.len() <= 50);
        assert_eq!(
            page.next_after_seq, None,
            "two replicas: one seq cannot say it"
        );
        pages += 1;
        all.extend(page.events);
        match page.next {
            Some(next) => cursor = Some(AuditCursor::decode(&next.encode()).unwrap()),
            None => break,
        }
    }
    assert_eq!(all.len(), 1200, "every event once");
    assert!(pages <= 25, "{pages} pages");
    assert!(all.windows(2).all(|w| w[0].ts < w[1].ts), "time order");
    let replica_of = |e: &AuditEvent| if (e.ts - t0) % 10 == 5 { "b" } else { "a" };
    // Deep: from a cursor far into both chains, the next page is where the full read has it.
    let at = &all[985];
    let deep = AuditCursor::at(at.ts, replica_of(at), at.seq);
    let page = store
        .read_audit(&AuditQuery {
            cursor: Some(deep),
            limit: 30,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().collect::<Vec<_>>(),
        all[986..1016].iter().collect::<Vec<_>>()
    );
    // Filters apply in every chain.
    let grants = store
        .read_audit(&AuditQuery {
            event: Some("grant.".into()),
            limit: usize::MAX,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(grants.len(), 240);
}

/// A replica chain deleted whole, or cut at its tail, fails verification, naming it.
async fn verify_finds_a_deleted_chain_and_a_cut_tail(
    store: &dyn GrantStore,
    t: &SuiteTime,
    verify: Verify,
) {
    let t0 = t.now_ms();
    for r in ["a", "b", "c"] {
        join(store, r).await;
        append_batches(store, r, 3, 4, |i| t0 + i as i64).await;
    }
    verify(store).await.expect("intact");
    store
        .damage_audit(&Damage::DropNewest("b".into()))
        .await
        .unwrap();
    let err = verify(store).await.expect_err("a cut tail");
    assert!(
        err.contains("replica b's chain reaches seq 12, but its events end at seq 11"),
        "{err}"
    );
    store
        .damage_audit(&Damage::DropChain("b".into()))
        .await
        .unwrap();
    let err = verify(store).await.expect_err("a deleted chain");
    assert!(
        err.contains("replica b's chain is gone from the store"),
        "{err}"
    );
    // The other replicas' chains are not what failed.
    assert!(
        !err.contains("replica a") && !err.contains("replica c"),
        "{err}"
    );
}

/// A retired replica's chain deleted with its roster entry is still found: the index of
/// chains by time records it. Deleted from that index too, nothing in the store shows it
/// (the replica's files and signed checkpoints are the evidence then, docs/audit.md).
async fn verify_finds_a_retired_chain_deleted_with_its_roster_entry(
    store: &dyn GrantStore,
    t: &SuiteTime,
    verify: Verify,
) {
    let t0 = t.now_ms();
    for (k, r) in ["a", "b", "c"].into_iter().enumerate() {
        join(store, r).await;
        append_batches(store, r, 2, 3, |i| t0 + (k * 100 + i) as i64).await;
    }
    verify(store).await.expect("intact");
    store
        .damage_audit(&Damage::DropRetired("b".into()))
        .await
        .unwrap();
    assert_eq!(store.audit_replicas().await.unwrap(), ["a", "c"]);
    let err = verify(store).await.expect_err("a deleted retired chain");
    assert!(
        err.contains(
            "replica b's chain is gone from the roster of chains, but the index of chains by \
             time still records it (events from "
        ),
        "{err}"
    );
    // Pages read the chains that are left; the deleted one holds nothing.
    let all = read_all(store).await;
    assert_eq!(all.len(), 12);
    store
        .damage_audit(&Damage::DropSpan("b".into()))
        .await
        .unwrap();
    let report = verify(store).await.expect("no trace left in the store");
    assert!(report.contains("2 replica chains"), "{report}");
}

/// A chain written before replica chains (one chain for every replica) still reads and
/// verifies; a replica's chain starts where it ended, so seqs run on.
async fn legacy_chain_still_verifies_and_replicas_continue_it(
    store: &dyn GrantStore,
    t: &SuiteTime,
    verify: Verify,
) {
    let t0 = t.now_ms();
    let mut legacy = ChainHead::default();
    let old = linked(&mut legacy, 7, |i| t0 + i as i64);
    assert!(
        store
            .append_audit(LEGACY_CHAIN, &old, 0, &legacy)
            .await
            .unwrap()
    );
    assert_eq!(
        verify(store).await.unwrap().lines().next(),
        Some("audit chain intact: 7 events, seq 1..=7, 0 checkpoints")
    );
    store.join_audit("a", &legacy).await.unwrap();
    // Never written yet: still intact.
    verify(store).await.expect("a chain that only started");
    append_batches(store, "a", 2, 3, |i| t0 + 100 + i as i64).await;
    let report = verify(store).await.expect("both verify");
    assert!(
        report.contains(
            "the chain from before replica chains (read only): audit chain intact: 7 events"
        ),
        "{report}"
    );
    assert!(
        report.contains("replica a: audit chain intact: 6 events, seq 8..=13"),
        "{report}"
    );
    let all = read_all(store).await;
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=13).collect::<Vec<_>>()
    );
    // One replica after the old chain: after_seq still pages across both.
    let page = page_after(store, 5, 4).await;
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [6, 7, 8, 9]
    );
    assert_eq!(page.next_after_seq, Some(9));
}

async fn audit_batches_land_whole(store: &dyn GrantStore, t: &SuiteTime) {
    let t0 = t.now_ms();
    join(store, R).await;
    let batch: Vec<AuditEvent> = (1..=3)
        .map(|i| {
            let mut e = AuditEvent::new("access.allowed", t0 + i);
            e.seq = i as u64;
            e.hash = format!("h{i}");
            e
        })
        .collect();
    let head = head_after(&batch);
    assert!(store.append_audit(R, &batch, 0, &head).await.unwrap());
    assert_eq!(store.audit_head(R).await.unwrap(), Some(head.clone()));
    assert_eq!(head.seq, 3);
    assert_eq!(head.evidence, "h3");
    // A stale batch is refused whole: nothing of it lands.
    assert!(!store.append_audit(R, &batch, 0, &head).await.unwrap());
    let all = store
        .read_audit(&AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
}

/// A page read after any seq (or from any time) is the page a full scan finds there: reads
/// seek, they do not depend on reading from the start.
async fn audit_pages_at_depth(store: &dyn GrantStore, t: &SuiteTime) {
    let t0 = t.now_ms();
    join(store, R).await;
    let mut head = ChainHead::default();
    let mut seq = 0u64;
    for chunk in 0..12 {
        let mut batch = Vec::new();
        for i in 0..100 {
            seq += 1;
            let kind = if i % 7 == 0 {
                "grant.issued"
            } else {
                "access.allowed"
            };
            let mut e = AuditEvent::new(kind, t0 + seq as i64 * 10);
            e.lane = Some(EventKindLane::of(kind));
            e.seq = seq;
            e.hash = format!("h{seq}");
            head.advance(EventKindLane::of(kind), &e);
            batch.push(e);
        }
        let expected = chunk * 100;
        assert!(
            store
                .append_audit(R, &batch, expected, &head)
                .await
                .unwrap()
        );
    }
    let all = read_all(store).await;
    assert_eq!(all.len(), 1200);
    for after in [0u64, 1, 99, 100, 557, 1150, 1199, 1200, 5000] {
        let page = store
            .read_audit(&AuditQuery {
                after_seq: after,
                limit: 50,
                ..Default::default()
            })
            .await
            .unwrap();
        let want: Vec<&AuditEvent> = all.iter().filter(|e| e.seq > after).take(50).collect();
        assert_eq!(page.iter().collect::<Vec<_>>(), want, "after seq {after}");
        let grants = store
            .read_audit(&AuditQuery {
                after_seq: after,
                event: Some("grant.".into()),
                limit: 20,
                ..Default::default()
            })
            .await
            .unwrap();
        let want: Vec<&AuditEvent> = all
            .iter()
            .filter(|e| e.seq > after && e.event == "grant.issued")
            .take(20)
            .collect();
        assert_eq!(
            grants.iter().collect::<Vec<_>>(),
            want,
            "grants after {after}"
        );
    }
    for from_seq in [1i64, 333, 1000] {
        let (from, to) = (t0 + from_seq * 10, t0 + (from_seq + 40) * 10);
        let page = store
            .read_audit(&AuditQuery {
                from_ms: Some(from),
                to_ms: Some(to),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let want: Vec<&AuditEvent> = all.iter().filter(|e| e.ts >= from && e.ts <= to).collect();
        assert_eq!(page.len(), 41);
        assert_eq!(page.iter().collect::<Vec<_>>(), want, "from {from_seq}");
    }
}

/// The lane an event kind is kept in.
struct EventKindLane;

impl EventKindLane {
    fn of(kind: &str) -> Lane {
        crate::audit::EventKind::parse(kind).lane()
    }
}

async fn put_check_status(store: &dyn GrantStore, t: &SuiteTime) {
    let g = t.grant("j-live", "alice", "acme/api", "dev", "corp", 600);
    store.put(&g, t.now_ms()).await.unwrap();
    assert_eq!(
        store.check(&claims_of(&g), t.now_ms()).await.unwrap(),
        GrantStatus::Live(Box::new(g.clone()))
    );
    assert_eq!(
        store.status("j-live", t.now_ms()).await.unwrap(),
        GrantStatus::Live(Box::new(g))
    );
    store.ping().await.unwrap();
}

async fn refuses_expired_put(store: &dyn GrantStore, t: &SuiteTime) {
    let mut g = t.grant("j-old", "alice", "acme/api", "dev", "corp", 600);
    g.exp = t.now_ms() / 1000 - 1;
    assert!(store.put(&g, t.now_ms()).await.is_err());
    assert_eq!(
        store.status("j-old", t.now_ms()).await.unwrap(),
        GrantStatus::Unknown
    );
}

async fn logical_expiry(store: &dyn GrantStore, t: &SuiteTime) {
    let g = t.grant("j-logical", "alice", "acme/api", "dev", "corp", 60);
    store.put(&g, t.now_ms()).await.unwrap();
    let later = g.exp * 1000 + 1;
    let st = store.check(&claims_of(&g), later).await.unwrap();
    assert_eq!(st, GrantStatus::Expired, "a grant past exp is never live");
    assert!(
        store
            .list(&GrantFilter::default(), later)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn natural_expiry(store: &dyn GrantStore, t: &SuiteTime) {
    // Two seconds: `exp` is in whole seconds, so a one-second grant made late in a second may
    // have only milliseconds left by the time a loaded machine checks it.
    let g = t.grant("j-short", "alice", "acme/api", "dev", "corp", 2);
    store.put(&g, t.now_ms()).await.unwrap();
    assert!(live(store, t, &g).await);
    t.pass_expiry_of(&g).await;
    assert_eq!(
        store.check(&claims_of(&g), t.now_ms()).await.unwrap(),
        GrantStatus::Expired
    );
    assert_eq!(
        store.status("j-short", t.now_ms()).await.unwrap(),
        GrantStatus::Expired
    );
}

async fn revoke_by_jti(store: &dyn GrantStore, t: &SuiteTime) {
    let a = t.grant("j-a", "alice", "acme/api", "dev", "corp", 600);
    let b = t.grant("j-b", "alice", "acme/api", "dev", "corp", 600);
    store.put(&a, t.now_ms()).await.unwrap();
    store.put(&b, t.now_ms()).await.unwrap();
    assert_eq!(
        store
            .revoke(&RevokeTarget::Jti("j-a".into()), t.now_ms())
            .await
            .unwrap()
            .at_most,
        1
    );
    assert_eq!(
        store
            .revoke(&RevokeTarget::Jti("j-a".into()), t.now_ms())
            .await
            .unwrap()
            .at_most,
        0,
        "a token already revoked is not counted again"
    );
    assert_eq!(
        store.check(&claims_of(&a), t.now_ms()).await.unwrap(),
        GrantStatus::Revoked
    );
    assert!(
        live(store, t, &b).await,
        "revoking one token leaves the others"
    );
    let listed = store
        .list(&GrantFilter::default(), t.now_ms())
        .await
        .unwrap();
    assert_eq!(listed, vec![b]);
}

async fn bulk_revoke(store: &dyn GrantStore, t: &SuiteTime, target: RevokeTarget) {
    let grants = [
        t.grant("b1", "alice", "acme/api", "dev", "corp", 600),
        t.grant("b2", "alice", "acme/web", "ops", "corp", 600),
        t.grant("b3", "bob", "acme/api", "ops", "github", 600),
        t.grant("b4", "bob", "acme/web", "dev", "gitlab", 600),
        t.grant("b5", "carol", "other/x", "ci", "github", 600),
    ];
    for g in &grants {
        store.put(g, t.now_ms()).await.unwrap();
    }
    let expected: Vec<&Grant> = grants.iter().filter(|g| target.covers(g)).collect();
    let n = store.revoke(&target, t.now_ms()).await.unwrap();
    assert_eq!(
        n.at_most,
        expected.len() as u64,
        "{target:?}: at most the grants its index holds (all live here)"
    );
    assert!(n.tidy_pending);
    for g in &grants {
        let st = store.check(&claims_of(g), t.now_ms()).await.unwrap();
        if target.covers(g) {
            assert_eq!(st, GrantStatus::Revoked, "{target:?} must revoke {}", g.jti);
            assert_eq!(
                store.status(&g.jti, t.now_ms()).await.unwrap(),
                GrantStatus::Revoked
            );
        } else {
            assert!(
                matches!(st, GrantStatus::Live(_)),
                "{target:?} must spare {}",
                g.jti
            );
        }
    }
    let listed = store
        .list(&GrantFilter::default(), t.now_ms())
        .await
        .unwrap();
    assert!(
        listed.iter().all(|g| !target.covers(g)),
        "revoked grants are never listed"
    );
    assert_eq!(listed.len(), grants.len() - expected.len());

    // The watermark itself is readable, for refusing identities authenticated before it.
    let dims = [target.dimension(), "sub:nobody".to_owned()];
    let marks = store.revoked_before(&dims).await.unwrap();
    assert!(
        marks[0].is_some() && marks[1].is_none(),
        "{target:?}: {marks:?}"
    );

    // A person's or an issuer's watermark outlives every token: it also guards exchanges of
    // identity tokens authenticated before it, which an IdP may keep alive for days.
    if matches!(target, RevokeTarget::Subject(_) | RevokeTarget::Issuer(_)) {
        let two_days_later = t.now_ms() + 2 * 24 * 3600 * 1000;
        store
            .revoke(&RevokeTarget::Jti("nothing".into()), two_days_later)
            .await
            .unwrap();
        let marks = store.revoked_before(&[target.dimension()]).await.unwrap();
        assert!(marks[0].is_some(), "{target:?} watermark forgotten");
    }

    // A grant issued after the revocation is live: the watermark only looks back.
    t.pass(5).await;
    let fresh = t.grant("b-fresh", "alice", "acme/api", "dev", "corp", 600);
    store.put(&fresh, t.now_ms()).await.unwrap();
    assert!(
        live(store, t, &fresh).await,
        "{target:?} must not revoke grants issued later"
    );
}

async fn revoked_expired_unknown(store: &dyn GrantStore, t: &SuiteTime) {
    let r = t.grant("s-revoked", "alice", "acme/api", "dev", "corp", 600);
    // A lifetime of 1 s from a whole second: put at the time it was made, it is still live
    // (a put a moment later, on a busy machine, could find it expired already).
    let made = t.now_ms();
    let e = grant_at(made, "s-expired", "alice", "acme/api", "dev", "corp", 1);
    store.put(&e, made).await.unwrap();
    store.put(&r, t.now_ms()).await.unwrap();
    store
        .revoke(&RevokeTarget::Jti("s-revoked".into()), t.now_ms())
        .await
        .unwrap();
    t.pass_expiry_of(&e).await;
    assert_eq!(
        store.status("s-revoked", t.now_ms()).await.unwrap(),
        GrantStatus::Revoked
    );
    assert_eq!(
        store.status("s-expired", t.now_ms()).await.unwrap(),
        GrantStatus::Expired
    );
    assert_eq!(
        store.status("s-never", t.now_ms()).await.unwrap(),
        GrantStatus::Unknown
    );
}

async fn mismatched_claims_are_not_live(store: &dyn GrantStore, t: &SuiteTime) {
    let g = t.grant("m-1", "alice", "acme/api", "dev", "corp", 600);
    store.put(&g, t.now_ms()).await.unwrap();
    let mut c = claims_of(&g);
    c.scope = Scope::parse("repo:acme/secret:read").unwrap();
    let st = store.check(&c, t.now_ms()).await.unwrap();
    assert!(
        !matches!(st, GrantStatus::Live(_)),
        "claims must match the stored grant: {st:?}"
    );
}

async fn listing_filters(store: &dyn GrantStore, t: &SuiteTime) {
    let grants = [
        t.grant("l1", "alice", "acme/api", "dev", "corp", 600),
        t.grant("l2", "alice", "acme/web", "ops", "corp", 600),
        t.grant("l3", "bob", "acme/api", "ops", "github", 600),
    ];
    for g in &grants {
        store.put(g, t.now_ms()).await.unwrap();
    }
    let jtis = |v: Vec<Grant>| v.into_iter().map(|g| g.jti).collect::<Vec<_>>();
    let all = store
        .list(&GrantFilter::default(), t.now_ms())
        .await
        .unwrap();
    assert_eq!(jtis(all), ["l1", "l2", "l3"]);
    let f = GrantFilter {
        subject: Some("alice".into()),
        ..Default::default()
    };
    assert_eq!(
        jtis(store.list(&f, t.now_ms()).await.unwrap()),
        ["l1", "l2"]
    );
    let f = GrantFilter {
        repo: Some(RepoPath::parse("acme/api").unwrap()),
        ..Default::default()
    };
    assert_eq!(
        jtis(store.list(&f, t.now_ms()).await.unwrap()),
        ["l1", "l3"]
    );
    let f = GrantFilter {
        role: Some("ops".into()),
        issuer: Some("corp".into()),
        ..Default::default()
    };
    assert_eq!(jtis(store.list(&f, t.now_ms()).await.unwrap()), ["l2"]);
}

/// A revocation is in force on the very next check, before any tidying; tidying then
/// removes the ended records and index entries, and doing it again ends nothing.
async fn revocation_holds_before_any_tidy(store: &dyn GrantStore, t: &SuiteTime) {
    let grants = [
        t.grant("r1", "alice", "acme/api", "dev", "corp", 600),
        t.grant("r2", "bob", "acme/api", "dev", "corp", 600),
        t.grant("r3", "bob", "acme/web", "dev", "corp", 600),
        t.grant("r4", "carol", "acme/web", "ops", "corp", 600),
    ];
    for g in &grants {
        store.put(g, t.now_ms()).await.unwrap();
    }
    let repo = RevokeTarget::Repo(RepoPath::parse("acme/api").unwrap());
    let r = store.revoke(&repo, t.now_ms()).await.unwrap();
    assert_eq!((r.at_most, r.tidy_pending), (2, true));
    let one = store
        .revoke(&RevokeTarget::Jti("r4".into()), t.now_ms())
        .await
        .unwrap();
    assert_eq!((one.at_most, one.tidy_pending), (1, true));
    assert_eq!(store.tidy_pending().await.unwrap(), 2, "nothing tidied yet");
    for g in &grants {
        let st = store.check(&claims_of(g), t.now_ms()).await.unwrap();
        let want_live = g.jti == "r3";
        assert_eq!(
            matches!(st, GrantStatus::Live(_)),
            want_live,
            "{}: {st:?}",
            g.jti
        );
    }
    let jtis = |v: Vec<Grant>| v.into_iter().map(|g| g.jti).collect::<Vec<_>>();
    let listed = store
        .list(&GrantFilter::default(), t.now_ms())
        .await
        .unwrap();
    assert_eq!(
        jtis(listed),
        ["r3"],
        "an admin listing never shows revoked grants"
    );

    let done = super::tidy::drain(store, W, t.now_ms(), 100).await.unwrap();
    assert!(!done.more);
    assert_eq!(
        done.ended, 2,
        "the two repository grants' records are ended"
    );
    assert_eq!(store.tidy_pending().await.unwrap(), 0);
    for g in &grants[..2] {
        assert_eq!(
            store.check(&claims_of(g), t.now_ms()).await.unwrap(),
            GrantStatus::Revoked,
            "still revoked once tidied"
        );
        assert_eq!(
            store.status(&g.jti, t.now_ms()).await.unwrap(),
            GrantStatus::Revoked
        );
    }
    assert_eq!(
        store.status("r4", t.now_ms()).await.unwrap(),
        GrantStatus::Revoked
    );
    // The index was tidied: revoking the repository again finds nothing in it.
    assert_eq!(store.revoke(&repo, t.now_ms()).await.unwrap().at_most, 0);
    let again = super::tidy::drain(store, W, t.now_ms(), 100).await.unwrap();
    assert_eq!(
        (again.ended, again.dropped),
        (0, 0),
        "tidying is idempotent"
    );
    assert!(live(store, t, &grants[2]).await);
    assert_eq!(
        store
            .revoke(&RevokeTarget::All, t.now_ms())
            .await
            .unwrap()
            .at_most,
        1,
        "only the live grant is left in the global index"
    );
}

/// Puts `n` grants of alice's issued at `at` (jti `<prefix>NNNN`).
async fn put_issued_at(store: &dyn GrantStore, at: i64, prefix: &str, n: usize) -> Vec<Grant> {
    let mut out = Vec::new();
    for i in 0..n {
        let g = grant_at(
            at,
            &format!("{prefix}{i:04}"),
            "alice",
            "acme/api",
            "dev",
            "corp",
            600,
        );
        store.put(&g, at).await.unwrap();
        out.push(g);
    }
    out
}

/// One worker at a time holds the tidy lease: another is refused (and does nothing) while
/// the lease runs, renewed by each batch, up to and including its last millisecond; once it
/// has lapsed (its holder crashed) another takes over and resumes from the recorded
/// progress; the lease is released when the queue is empty. Times are the callers' clocks,
/// so no time passes for real.
async fn one_worker_tidies_at_a_time(store: &dyn GrantStore, t: &SuiteTime) {
    use super::tidy::{LEASE_MS, drain};
    let t0 = t.now_ms();
    let batch = bounds::TIDY_BATCH as u64;
    let n = 3 * bounds::TIDY_BATCH + 7;
    let grants = put_issued_at(store, t0, "l", n).await;
    store.revoke(&RevokeTarget::All, t0).await.unwrap();

    let a = store.tidy("a", t0).await.unwrap();
    assert_eq!((a.ended, a.more), (batch, true), "a holds the lease");
    let refused = store.tidy("b", t0 + 1).await.unwrap();
    assert_eq!(
        refused,
        TidyProgress::default(),
        "b is refused, does nothing"
    );
    assert!(
        store
            .tidy_claim("b", t0 + LEASE_MS)
            .await
            .unwrap()
            .is_none()
    );
    let a = store.tidy("a", t0 + LEASE_MS).await.unwrap();
    assert_eq!(a.ended, batch, "a renews its lease with each batch");
    let renewed = t0 + 2 * LEASE_MS;
    assert!(
        store.tidy_claim("b", renewed).await.unwrap().is_none(),
        "renewed to its last millisecond"
    );
    assert_eq!(store.tidy_pending().await.unwrap(), 1);

    // a stops (crashed) holding the lease; b takes over once it has lapsed.
    let b = drain(store, "b", renewed + 1, 100).await.unwrap();
    assert_eq!(
        b.ended,
        n as u64 - 2 * batch,
        "b resumes where a stopped, not from the start"
    );
    assert!(!b.more && !b.fenced);
    assert_eq!(store.tidy_pending().await.unwrap(), 0);
    let released = store.tidy_claim("a", renewed + 2).await.unwrap();
    assert!(released.is_some(), "b released the lease when done");
    let idle = store
        .tidy_finish(released.unwrap(), renewed + 2)
        .await
        .unwrap();
    assert_eq!(idle, TidyProgress::default());
    assert!(
        store.tidy_claim("b", renewed + 3).await.unwrap().is_some(),
        "an idle batch releases it too"
    );
    for g in grants.iter().step_by(50) {
        assert_eq!(
            store.status(&g.jti, renewed + 3).await.unwrap(),
            GrantStatus::Revoked
        );
    }
    let r = store.revoke(&RevokeTarget::All, renewed + 3).await.unwrap();
    assert_eq!(r.at_most, 0, "no entry is left in the global index");
}

/// Fencing: worker a claims a batch and stalls past its lease; b takes over and finishes the
/// job, and an identical job is queued (the same revocation again, in the same millisecond,
/// over grants issued since). When a wakes and finishes its batch it must record nothing:
/// were it to check only the queue's head, it would take the new job for its own and pop it,
/// and the new grants would never be tidied.
async fn a_worker_past_its_lease_records_nothing(store: &dyn GrantStore, t: &SuiteTime) {
    use super::tidy::{LEASE_MS, drain};
    let t0 = t.now_ms();
    let first = put_issued_at(store, t0, "f", 3).await;
    store.revoke(&RevokeTarget::All, t0).await.unwrap();
    let stalled = store.tidy_claim("a", t0).await.unwrap().expect("a's lease");
    assert_eq!(stalled.job.as_ref().map(|j| j.members.len()), Some(3));

    let later = t0 + LEASE_MS + 1;
    let b = drain(store, "b", later, 10).await.unwrap();
    assert_eq!((b.ended, b.more), (3, false), "b took over and finished");
    let second = put_issued_at(store, t0, "s", 2).await;
    store.revoke(&RevokeTarget::All, t0).await.unwrap();
    assert_eq!(store.tidy_pending().await.unwrap(), 1);
    assert!(
        store.tidy_claim("b", later).await.unwrap().is_some(),
        "b again"
    );

    let woke = store.tidy_finish(stalled, t0).await.unwrap();
    assert!(woke.fenced, "a learns it lost the lease");
    assert_eq!((woke.ended, woke.more), (0, false));
    assert_eq!(
        store.tidy_pending().await.unwrap(),
        1,
        "the job queued since is untouched"
    );
    let b = drain(store, "b", later, 10).await.unwrap();
    assert_eq!(b.ended, 2, "the new grants are tidied");
    for g in first.iter().chain(&second) {
        assert_eq!(
            store.status(&g.jti, later).await.unwrap(),
            GrantStatus::Revoked
        );
    }
    let r = store.revoke(&RevokeTarget::All, later).await.unwrap();
    assert_eq!(r.at_most, 0, "no entry is left in the global index");
}

/// Paging through `filter` in small pages, while grants are added and revoked between the
/// pages, returns every grant live throughout exactly once, never one revoked before its
/// page, never one failing the filter.
async fn paging_sees_each_live_grant_once(
    store: &dyn GrantStore,
    t: &SuiteTime,
    filter: GrantFilter,
) {
    let repos = ["acme/api", "acme/web", "other/x"];
    let subs = ["alice", "bob", "carol", "dave"];
    let mut initial = Vec::new();
    for i in 0..120 {
        // Several grants share each millisecond: the jti breaks the tie.
        let g = grant_at(
            t.now_ms() + i / 7,
            &format!("p{i:03}"),
            subs[i as usize % subs.len()],
            repos[i as usize % repos.len()],
            "dev",
            "corp",
            600,
        );
        store.put(&g, t.now_ms()).await.unwrap();
        initial.push(g);
    }
    let mut seen = std::collections::HashMap::new();
    let mut revoked_at_page = std::collections::HashMap::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_page(&filter, after.as_ref(), 7, t.now_ms())
            .await
            .unwrap();
        assert!(page.grants.len() <= 7);
        for g in &page.grants {
            assert!(filter.matches(g), "{} fails the filter", g.jti);
            assert!(
                seen.insert(g.jti.clone(), pages).is_none(),
                "{} listed twice",
                g.jti
            );
            assert!(
                !revoked_at_page.contains_key(&g.jti),
                "{} listed after its revocation",
                g.jti
            );
        }
        pages += 1;
        // Between pages: a new grant, and one of the first ones revoked.
        let fresh = t.grant(
            &format!("n{pages:03}"),
            "erin",
            "acme/api",
            "dev",
            "corp",
            600,
        );
        store.put(&fresh, t.now_ms()).await.unwrap();
        let victim = &initial[(pages * 13) % initial.len()];
        store
            .revoke(&RevokeTarget::Jti(victim.jti.clone()), t.now_ms())
            .await
            .unwrap();
        revoked_at_page.entry(victim.jti.clone()).or_insert(pages);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(pages < 200, "paging does not end");
    }
    for g in initial.iter().filter(|g| filter.matches(g)) {
        if !revoked_at_page.contains_key(&g.jti) {
            assert!(seen.contains_key(&g.jti), "{} never listed", g.jti);
        }
    }
}

/// A listing whose last page ends exactly at the last grant still ends (at most one more,
/// empty, page), whatever the store's round size.
async fn paging_ends_at_an_exact_multiple(store: &dyn GrantStore, t: &SuiteTime) {
    for i in 0..super::bounds::LIST_CHUNK {
        let g = t.grant(&format!("x{i:03}"), "alice", "acme/api", "dev", "corp", 600);
        store.put(&g, t.now_ms()).await.unwrap();
    }
    let limit = super::bounds::LIST_CHUNK;
    let first = store
        .list_page(&GrantFilter::default(), None, limit, t.now_ms())
        .await
        .unwrap();
    assert_eq!(first.grants.len(), limit);
    if let Some(next) = first.next {
        let last = store
            .list_page(&GrantFilter::default(), Some(&next), limit, t.now_ms())
            .await
            .unwrap();
        assert_eq!((last.grants.len(), last.next), (0, None), "paging ends");
    }
}

/// Index entries of expired and revoked grants met by a listing are skipped and tidied.
async fn listings_skip_the_dead_and_tidy_them(store: &dyn GrantStore, t: &SuiteTime) {
    let short = t.grant("d-short", "alice", "acme/api", "dev", "corp", 1);
    let long = t.grant("d-long", "alice", "acme/api", "dev", "corp", 600);
    store.put(&short, t.now_ms()).await.unwrap();
    store.put(&long, t.now_ms()).await.unwrap();
    t.pass_expiry_of(&short).await;
    let f = GrantFilter {
        subject: Some("alice".into()),
        ..Default::default()
    };
    let page = store.list_page(&f, None, 10, t.now_ms()).await.unwrap();
    assert_eq!(page.grants, vec![long.clone()]);
    assert_eq!(page.next, None);
    super::tidy::drain(store, W, t.now_ms(), 100).await.unwrap();
    assert_eq!(store.tidy_pending().await.unwrap(), 0);
    let r = store
        .revoke(&RevokeTarget::Subject("alice".into()), t.now_ms())
        .await
        .unwrap();
    assert_eq!(r.at_most, 1, "the expired grant's entry was tidied");
}

async fn audit_round_trip(store: &dyn GrantStore, t: &SuiteTime) {
    let t0 = t.now_ms();
    let mut e1 = AuditEvent::new("grant.issued", t0);
    e1.subject = Some("alice".into());
    e1.repo = Some("acme/api".into());
    let mut e2 = AuditEvent::new("grant.denied", t0 + 10);
    e2.subject = Some("bob".into());
    let mut e3 = AuditEvent::new("access.allowed", t0 + 20).with("updates", 2);
    e3.subject = Some("alice".into());
    e2.lane = Some(Lane::Traffic);
    e3.lane = Some(Lane::Traffic);
    let mut written = Vec::new();
    for (i, e) in [&mut e1, &mut e2, &mut e3].into_iter().enumerate() {
        e.seq = i as u64 + 1;
        e.hash = format!("h{}", e.seq);
        written.push(e.clone());
        assert!(
            store
                .append_audit(
                    LEGACY_CHAIN,
                    std::slice::from_ref(e),
                    i as u64,
                    &head_after(&written)
                )
                .await
                .unwrap()
        );
    }
    // Compare-and-set: an append against a stale head is refused and changes nothing.
    let stale = AuditEvent::new("grant.issued", t0 + 30);
    assert!(
        !store
            .append_audit(LEGACY_CHAIN, &[stale], 1, &ChainHead::default())
            .await
            .unwrap()
    );
    let head = store.audit_head(LEGACY_CHAIN).await.unwrap().unwrap();
    assert_eq!(
        (head.seq, head.evidence.as_str(), head.traffic.as_str()),
        (3, "h1", "h3")
    );
    let all = store
        .read_audit(&AuditQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|e| e.id.is_some()));
    let strip = |mut e: AuditEvent| {
        e.id = None;
        e
    };
    assert_eq!(strip(all[2].clone()), e3, "events read back intact");
    let q = AuditQuery {
        subject: Some("alice".into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.read_audit(&q).await.unwrap().len(), 2);
    let q = AuditQuery {
        event: Some("grant.".into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.read_audit(&q).await.unwrap().len(), 2);
    let q = AuditQuery {
        from_ms: Some(t0 + 5),
        to_ms: Some(t0 + 15),
        limit: 100,
        ..Default::default()
    };
    let got = store.read_audit(&q).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event, "grant.denied");
    let q = AuditQuery {
        limit: 1,
        ..Default::default()
    };
    assert_eq!(store.read_audit(&q).await.unwrap().len(), 1);
}

async fn audit_is_bounded(store: &dyn GrantStore, t: &SuiteTime, max: usize) {
    let t0 = t.now_ms();
    assert_eq!(store.audit_head(R).await.unwrap(), None);
    join(store, R).await;
    assert_eq!(
        store.audit_head(R).await.unwrap(),
        Some(ChainHead::default())
    );
    for i in 0..(max as i64 * 30) {
        let mut e = AuditEvent::new("access.allowed", t0 + i);
        e.seq = i as u64 + 1;
        let head = head_after(std::slice::from_ref(&e));
        assert!(store.append_audit(R, &[e], i as u64, &head).await.unwrap());
    }
    let all = read_all(store).await;
    assert!(
        all.len() <= max,
        "audit log kept {} of {}",
        all.len(),
        max * 30
    );
    assert!(all.len() >= max);
    assert_eq!(
        all.last().unwrap().ts,
        t0 + max as i64 * 30 - 1,
        "the newest are kept"
    );
}

/// A flood of traffic (the traffic lane over its byte budget many times) trims only traffic:
/// the evidence before, amid and after it stays, and reads return both lanes in seq order.
/// Evidence older than its age budget is trimmed by age.
async fn traffic_never_pushes_evidence_out(store: &dyn GrantStore, t: &SuiteTime) {
    let t0 = t.now_ms();
    join(store, R).await;
    let mut seq = 0u64;
    let mut head = ChainHead::default();
    let mut append = |kind: &str, ts: i64, lane: Lane, big: bool| {
        seq += 1;
        let mut e = AuditEvent::new(kind, ts);
        e.lane = Some(lane);
        e.seq = seq;
        e.hash = format!("h{seq}");
        if big {
            e.denial = Some("x".repeat(900));
        }
        head.advance(lane, &e);
        (e, head.clone())
    };
    let (first, h) = append("grant.issued", t0, Lane::Evidence, false);
    assert!(store.append_audit(R, &[first], 0, &h).await.unwrap());
    // ~1 KB each, 300 of them: eighteen times the 16 KiB traffic budget.
    for i in 0..300 {
        let (e, h) = append("access.denied", t0 + 1 + i, Lane::Traffic, true);
        assert!(store.append_audit(R, &[e], h.seq - 1, &h).await.unwrap());
        if i == 150 {
            let (e, h) = append("grant.revoked", t0 + 1 + i, Lane::Evidence, false);
            assert!(store.append_audit(R, &[e], h.seq - 1, &h).await.unwrap());
        }
    }
    let all = read_all(store).await;
    let kinds = |k: &str| all.iter().filter(|e| e.event == k).count();
    assert_eq!(kinds("grant.issued"), 1, "the grant survives the flood");
    assert_eq!(kinds("grant.revoked"), 1);
    let traffic_bytes: usize = all
        .iter()
        .filter(|e| e.lane == Some(Lane::Traffic))
        .map(|e| {
            let mut e = e.clone();
            e.id = None;
            serde_json::to_vec(&e).unwrap().len()
        })
        .sum();
    assert!(
        traffic_bytes <= 16 * 1024,
        "traffic kept {traffic_bytes} bytes"
    );
    assert!(kinds("access.denied") >= 10, "the newest traffic is kept");
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "one order");
    assert_eq!(all.last().unwrap().seq, 302, "the newest is kept");
    // A page after a seq reads across both lanes.
    let page = store
        .read_audit(&AuditQuery {
            after_seq: 1,
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 3);
    assert!(page[0].seq > 1);
    // Evidence is trimmed by age: an event past the 60 s budget of the newest goes.
    let (late, h) = append("grant.issued", t0 + 120_000, Lane::Evidence, false);
    assert!(store.append_audit(R, &[late], h.seq - 1, &h).await.unwrap());
    let evidence = store
        .read_audit(&AuditQuery {
            event: Some("grant.".into()),
            limit: usize::MAX,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(evidence.len(), 1, "{evidence:?}");
    assert_eq!(evidence[0].ts, t0 + 120_000);
}
