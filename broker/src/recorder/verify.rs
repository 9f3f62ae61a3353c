//! `audit verify`: checks a trail event by event in constant memory — files (each replica's
//! on their own, across rotations) or the store's window, chain by chain and page by page —
//! and reports the newest signed checkpoint and what follows it, per replica.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::audit::{AuditEvent, AuditQuery, ChainError, ChainVerifier, Signature};
use crate::store::{GrantStore, LEGACY_CHAIN, StoreError};

use super::sink::{LineEvent, TrailError, TrailReader, files_by_replica};

/// Why a trail does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The files could not be read, or hold something that is not an event.
    #[error(transparent)]
    Trail(#[from] TrailError),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain is broken.
    #[error("{at}{error}")]
    Chain {
        /// Where (`file:line: `), when read from files.
        at: String,
        /// The break.
        error: ChainError,
    },
    /// A replica in the roster of chains has no chain left in the store.
    #[error(
        "{chain} is gone from the store (the replica is in the roster of chains, but its head is missing): it was deleted"
    )]
    ChainGone {
        /// Which chain.
        chain: String,
    },
    /// A replica's chain is in the index of chains by time, but not in the roster: its
    /// roster entry was deleted (and its keys with it, or the roster would still name it).
    #[error(
        "replica {chain}'s chain is gone from the roster of chains, but the index of chains by time still records it ({span}): it was deleted"
    )]
    RosterEntryGone {
        /// Which replica.
        chain: String,
        /// The span the index records, for people.
        span: String,
    },
    /// A chain's events end before its head: its newest events were deleted.
    #[error(
        "{chain} reaches seq {head}, but its events end at seq {last}: its newest events were deleted (a cut tail)"
    )]
    HeadMissing {
        /// Which chain.
        chain: String,
        /// The head's seq.
        head: u64,
        /// The newest seq found.
        last: u64,
    },
    /// The files end before the store's head: the tail was cut (or not written yet).
    #[error(
        "the files end at seq {files_end} but the store's chain reaches seq {store_head}: events seq {}..={store_head} are missing from the files (a cut tail); {report}",
        files_end + 1
    )]
    TailMissing {
        /// The newest seq in the files.
        files_end: u64,
        /// The store's head.
        store_head: u64,
        /// The report of what did verify.
        report: String,
    },
}

/// Checks checkpoint signatures: `Some(valid)`, or `None` when no key has that `kid`.
pub type Keys<'a> = &'a (dyn Fn(&str, &[u8], &str) -> Option<bool> + Sync);

/// Verifies the trail files under `paths` (folders of `audit-*.jsonl`, or files), merged by
/// seq. When `store_head` is given (the store's newest seq), files that end before it are a
/// cut tail.
pub fn verify_files(
    paths: &[PathBuf],
    keys: Keys<'_>,
    store_head: Option<u64>,
) -> Result<String, VerifyError> {
    verify_trail(TrailReader::open(paths)?, keys, store_head)
}

/// [`verify_files`] over a reader of the files.
fn verify_trail(
    mut reader: TrailReader,
    keys: Keys<'_>,
    store_head: Option<u64>,
) -> Result<String, VerifyError> {
    let mut v = ChainVerifier::new();
    while let Some(line) = reader.next_line()? {
        let checked = match line.event {
            // What the broker writes: hashed as it stands (by the reader's threads), without
            // parsing it into an event.
            LineEvent::Canonical(h) => v.push_hashed(line.text, &h),
            LineEvent::Parsed(e) => v.push(*e, keys),
        };
        checked.map_err(|error| VerifyError::Chain {
            at: format!("{}: ", line.at),
            error,
        })?;
    }
    let report = report(&v, "files");
    let files_end = v.range().map_or(0, |(_, b)| b);
    match store_head {
        Some(head) if head > files_end => Err(VerifyError::TailMissing {
            files_end,
            store_head: head,
            report,
        }),
        _ => Ok(report),
    }
}

/// Each chain's newest seq in the store, by name ([`LEGACY_CHAIN`] and each replica's in the
/// roster, where they have a head): what each replica's files must reach.
pub async fn chain_heads(store: &dyn GrantStore) -> Result<BTreeMap<String, u64>, StoreError> {
    let mut heads = BTreeMap::new();
    let mut chains = vec![LEGACY_CHAIN.to_owned()];
    chains.extend(store.audit_replicas().await?);
    for chain in chains {
        if let Some(h) = store.audit_head(&chain).await? {
            heads.insert(chain, h.seq);
        }
    }
    Ok(heads)
}

/// Verifies the trail files under `paths` replica by replica: each replica's files are its
/// own chain ([`verify_files`]; since each replica has its own chain in the store, their
/// seqs overlap). With `heads` (the store's, [`chain_heads`]), a replica's files that end
/// before its chain's head in the store are a cut tail.
pub fn verify_replica_files(
    paths: &[PathBuf],
    keys: Keys<'_>,
    heads: Option<&BTreeMap<String, u64>>,
) -> Result<String, VerifyError> {
    let groups = files_by_replica(paths)?;
    if groups.len() <= 1 {
        let head = heads.and_then(|h| groups.first().and_then(|(r, _)| h.get(r)).copied());
        return verify_files(paths, keys, head);
    }
    let mut out = Vec::new();
    for (replica, files) in groups {
        let head = heads.and_then(|h| h.get(&replica)).copied();
        let report = verify_files(&files, keys, head)?;
        out.push(format!("replica {replica}'s files: {report}"));
    }
    Ok(out.join("\n"))
}

/// Verifies the store's window of the trail chain by chain, page by page: each replica's
/// chain in the roster (and the one from before replica chains, if any) on its own. A
/// replica in the roster whose chain is gone, or a chain whose events end before its head,
/// is an error; so is a break within a chain.
pub async fn verify_store(
    store: &dyn GrantStore,
    keys: Keys<'_>,
    page: usize,
) -> Result<String, VerifyError> {
    let replicas = store.audit_replicas().await?;
    // Every chain the index of chains by time records must still be in the roster: a
    // chain deleted with its roster entry leaves its span behind.
    for span in store.audit_chains(i64::MIN).await?.chains {
        if replicas.binary_search(&span.chain).is_err() {
            let time = |ms: i64| {
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_else(|| ms.to_string())
            };
            return Err(VerifyError::RosterEntryGone {
                span: format!("events from {} to {}", time(span.since), time(span.until)),
                chain: span.chain,
            });
        }
    }
    let legacy = store.audit_head(LEGACY_CHAIN).await?;
    let mut out = Vec::new();
    if legacy.is_some() {
        let report = verify_chain_in_store(store, LEGACY_CHAIN, keys, page).await?;
        if replicas.is_empty() {
            return Ok(report);
        }
        out.push(format!(
            "the chain from before replica chains (read only): {report}"
        ));
    }
    if replicas.is_empty() {
        return Ok("audit chain empty".to_owned());
    }
    for replica in &replicas {
        let report = verify_chain_in_store(store, replica, keys, page).await?;
        out.push(format!("replica {replica}: {report}"));
    }
    Ok(format!(
        "audit chain intact: {} replica chains, each verified on its own\n{}",
        replicas.len(),
        out.join("\n")
    ))
}

/// Verifies one chain of the store: its events link, and they reach its head.
async fn verify_chain_in_store(
    store: &dyn GrantStore,
    chain: &str,
    keys: Keys<'_>,
    page: usize,
) -> Result<String, VerifyError> {
    let name = if chain == LEGACY_CHAIN {
        "the chain from before replica chains".to_owned()
    } else {
        format!("replica {chain}'s chain")
    };
    // The head first: events appended while this runs only move it on.
    let Some(head) = store.audit_head(chain).await? else {
        return Err(VerifyError::ChainGone { chain: name });
    };
    let mut v = ChainVerifier::window();
    let mut last = None;
    let mut after_seq = 0;
    loop {
        let events: Vec<AuditEvent> = store
            .read_chain(
                chain,
                &AuditQuery {
                    after_seq,
                    limit: page,
                    ..Default::default()
                },
            )
            .await?;
        let Some(newest) = events.last() else { break };
        after_seq = newest.seq;
        let n = events.len();
        for e in events {
            if e.seq <= head.seq {
                last = Some((e.seq, e.hash.clone()));
            }
            v.push(e, keys).map_err(|error| VerifyError::Chain {
                at: if chain == LEGACY_CHAIN {
                    String::new()
                } else {
                    format!("replica {chain}: ")
                },
                error,
            })?;
        }
        if n < page {
            break;
        }
    }
    // The head's own event is the chain's newest: each lane keeps its newest whatever its
    // budget, so it is never trimmed.
    let reaches = match &last {
        Some((seq, hash)) => *seq == head.seq && (head.evidence == *hash || head.traffic == *hash),
        // Never written: the head is still where the chain started.
        None => {
            head.evidence.is_empty() && head.traffic.is_empty()
                || store
                    .audit_head(LEGACY_CHAIN)
                    .await?
                    .is_some_and(|l| l == head && chain != LEGACY_CHAIN)
        }
    };
    if !reaches {
        return Err(VerifyError::HeadMissing {
            chain: name,
            head: head.seq,
            last: last.map_or(0, |(s, _)| s),
        });
    }
    let mut out = report(&v, "store");
    if let Some((first, _)) = v.range().filter(|(a, _)| *a > 1) {
        // Trimmed by the window's budgets, or deleted from the start: the store cannot tell.
        out.push_str(&format!(
            "\nevents seq 1..={} are not in the store (trimmed by its audit budgets, or removed); verify the audit files for them",
            first - 1
        ));
    }
    Ok(out)
}

/// The report lines of a verified run.
fn report(v: &ChainVerifier, source: &str) -> String {
    let Some((first, last)) = v.range() else {
        return "audit chain empty".to_owned();
    };
    let mut out = format!(
        "audit chain intact: {} events, seq {first}..={last}, {} checkpoints",
        v.count(),
        v.checkpoints()
    );
    for line in v.replicas() {
        out.push_str(&format!("\n{line}"));
    }
    if v.absent() > 0 {
        out.push_str(&format!(
            "\n{} events (by seq) are not in these {source}: other replicas' events (verify every replica's files together to cover them); no event of a replica above is missing",
            v.absent()
        ));
    }
    match v.last_checkpoint() {
        Some(cp) => {
            let when =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(cp.ts) * 1_000_000)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_else(|| cp.ts.to_string());
            let signed = match &cp.signature {
                Signature::Valid(kid) => format!("signature valid (key {kid})"),
                Signature::NotChecked(kid) => {
                    format!("signature NOT checked: no key {kid} given")
                }
            };
            out.push_str(&format!(
                "\nlast checkpoint: seq {} at {when}, covering seq ..={}, {signed}",
                cp.seq, cp.covers
            ));
            let after = last - cp.seq;
            out.push_str(&format!(
                "\n{after} events after it in the {source} (not yet covered by a checkpoint)"
            ));
        }
        None => out.push_str(&format!(
            "\nno checkpoint in the {source}: a cut tail cannot be told from a complete trail"
        )),
    }
    out
}

/// [`verify_store`] for the store suite ([`crate::store::suite::Verify`]): every chain, no
/// checkpoint keys, pages of 97 events (so pages end mid-chain), the report as text.
#[cfg(any(test, feature = "test-suite"))]
pub fn suite_verifier(
    store: &dyn GrantStore,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + '_>> {
    Box::pin(async move {
        verify_store(store, &|_, _, _| None, 97)
            .await
            .map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::audit::{Canonical, EventKind};
    use crate::keys::KeyRing;
    use crate::recorder::sink::{Sink, SinkTarget, file_name};
    use crate::recorder::{Auditor, Checkpoints, key_ring_verifies};
    use crate::store::memory::MemoryStore;

    struct Trail {
        dir: tempfile::TempDir,
        store: Arc<dyn GrantStore>,
        keys: Arc<KeyRing>,
        audit: Auditor,
    }

    impl Trail {
        fn files(&self) -> PathBuf {
            self.dir.path().join("audit")
        }

        fn verify(&self, head: Option<u64>) -> Result<String, VerifyError> {
            let keys = self.keys.clone();
            let check = move |kid: &str, m: &[u8], s: &str| key_ring_verifies(&keys, kid, m, s);
            verify_files(&[self.files()], &check, head)
        }

        /// Every file's lines, oldest file first.
        fn lines(&self) -> Vec<(PathBuf, Vec<String>)> {
            let mut files: Vec<PathBuf> = std::fs::read_dir(self.files())
                .expect("dir")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
                .collect();
            files.sort();
            files
                .into_iter()
                .map(|p| {
                    let text = std::fs::read_to_string(&p).expect("read");
                    (p, text.lines().map(str::to_owned).collect())
                })
                .collect()
        }

        fn write(&self, path: &PathBuf, lines: &[String]) {
            std::fs::write(
                path,
                lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
            )
            .expect("write");
        }
    }

    /// A trail of `n` events recorded through the real recorder (memory store, file sink
    /// rotated every ~2 KB) with `checkpoints` signed checkpoints, one after each of the
    /// events `0, n / checkpoints, ...` ([`checkpoint`]). The writer's own interval never
    /// comes during a test: nothing is written after this returns but what the test records.
    async fn trail(n: usize, checkpoints: u64) -> Trail {
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(100_000));
        let keys = Arc::new(KeyRing::ephemeral().expect("key"));
        let sink = Sink::open(SinkTarget::File {
            dir: dir.path().join("audit"),
            replica: "r1".into(),
            rotate_bytes: 2048,
        })
        .expect("sink");
        let signing = keys.clone();
        let audit = Auditor::durable(
            store.clone(),
            None,
            Arc::new(crate::metrics::Metrics::new()),
            Some(sink),
            (checkpoints > 0).then(|| Checkpoints {
                interval: NEVER,
                sign: Arc::new(move |m: &[u8]| {
                    let key = signing.signer();
                    jsonwebtoken::crypto::sign(m, key.encoding(), jsonwebtoken::Algorithm::EdDSA)
                        .map(|s| (key.kid().to_owned(), s))
                        .map_err(|e| e.to_string())
                }),
            }),
            "r1",
        );
        let t = Trail {
            dir,
            store,
            keys,
            audit,
        };
        for i in 0..n {
            let kind = if i % 3 == 0 {
                "grant.issued"
            } else {
                "access.allowed"
            };
            // Real times: the store's window trims by age from the newest event (the
            // checkpoints carry the real time).
            let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
            let mut e = AuditEvent::new(kind, now).with("i", i);
            e.subject = Some(format!("user{i}"));
            t.audit.record(e).await.expect("recorded");
            if checkpoints > 0 && i % (n / checkpoints as usize).max(1) == 0 {
                checkpoint(&t.audit).await;
            }
        }
        t
    }

    /// A checkpoint interval no test lives to see: the writer checkpoints on its own only
    /// when its clock says so, and a checkpoint that lands at a moment of the scheduler's
    /// choosing (between two events, or in a file a test is cutting) makes the test's
    /// outcome depend on machine load.
    const NEVER: Duration = Duration::from_secs(3600 * 24 * 365);

    /// Appends a signed checkpoint of the head right now, as the writer's interval does: the
    /// writer signs every checkpoint event it chains over the head that event follows.
    /// Returns once the checkpoint is in the store and the files, like any recorded event.
    async fn checkpoint(audit: &Auditor) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        audit
            .record(AuditEvent::new(EventKind::AuditCheckpoint, now))
            .await
            .expect("checkpoint recorded");
    }

    #[tokio::test]
    async fn the_event_is_in_the_file_before_record_returns() {
        let t = trail(0, 0).await;
        let mut e = AuditEvent::new("grant.issued", 1);
        e.jti = Some("j-durable".into());
        t.audit.record(e).await.expect("recorded");
        let lines = t.lines();
        let all: Vec<&String> = lines.iter().flat_map(|(_, l)| l).collect();
        assert_eq!(all.len(), 1);
        assert!(all[0].contains("\"jti\":\"j-durable\""), "{}", all[0]);
    }

    /// A sink that cannot be written refuses: `record` fails (the caller denies), the failure
    /// is counted; once the sink can write again the missed event reaches it first, in order.
    #[tokio::test]
    async fn a_sink_that_cannot_be_written_fails_closed() {
        let t = trail(0, 0).await;
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        // Past the 2 KB rotation size: the next batch needs a new file, named by its seq (2).
        let big = AuditEvent::new("grant.issued", now).with("pad", "x".repeat(4096));
        t.audit.record(big).await.expect("first");
        let squat = t.files().join(file_name("r1", 2));
        std::fs::create_dir(&squat).expect("squat the next file's name");
        let refused = t.audit.record(AuditEvent::new("grant.issued", now)).await;
        assert!(
            refused.is_err(),
            "a sink that cannot be written must refuse"
        );
        let (_, failed) = t.audit.counts().snapshot();
        assert_eq!(failed, 1);
        std::fs::remove_dir(&squat).expect("unsquat");
        t.audit
            .record(AuditEvent::new("grant.issued", now))
            .await
            .expect("recorded again");
        let seqs: Vec<u64> = t
            .lines()
            .iter()
            .flat_map(|(_, l)| l)
            .map(|l| serde_json::from_str::<AuditEvent>(l).expect("event").seq)
            .collect();
        assert_eq!(
            seqs,
            [1, 2, 3],
            "the missed event is written first, in order"
        );
        assert!(t.verify(None).is_ok());
    }

    #[tokio::test]
    async fn an_intact_trail_verifies_across_rotations_with_checkpoints() {
        let t = trail(60, 3).await;
        assert!(t.lines().len() >= 3, "rotated");
        let report = t.verify(None).expect("intact");
        assert!(report.contains("audit chain intact"), "{report}");
        assert!(report.contains("signature valid"), "{report}");
        // The store's window verifies too, page by page.
        let keys = t.keys.clone();
        let check = move |kid: &str, m: &[u8], s: &str| key_ring_verifies(&keys, kid, m, s);
        let report = verify_store(&*t.store, &check, 7).await.expect("intact");
        assert!(report.contains("signature valid"), "{report}");
    }

    #[tokio::test]
    async fn verify_detects_an_edited_event() {
        let t = trail(30, 1).await;
        let (path, mut lines) = t.lines().remove(1);
        let i = lines
            .iter()
            .position(|l| l.contains("\"subject\":\"user"))
            .expect("an event with a subject");
        lines[i] = lines[i].replace("\"subject\":\"user", "\"subject\":\"mallory");
        t.write(&path, &lines);
        let err = t.verify(None).expect_err("edited").to_string();
        assert!(err.contains("was altered"), "{err}");
    }

    #[tokio::test]
    async fn verify_detects_a_deleted_middle_event() {
        let t = trail(30, 1).await;
        let (path, mut lines) = t.lines().remove(1);
        lines.remove(1);
        t.write(&path, &lines);
        let err = t.verify(None).expect_err("deleted").to_string();
        assert!(
            err.contains("deleted or reordered") || err.contains("is false"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn verify_detects_a_tampered_rotation_boundary() {
        let t = trail(30, 1).await;
        let files = t.lines();
        // The first event of the second file removed: the file boundary no longer links.
        let (path, mut lines) = files[1].clone();
        lines.remove(0);
        t.write(&path, &lines);
        let err = t.verify(None).expect_err("boundary").to_string();
        assert!(
            err.contains("deleted or reordered") || err.contains("is false"),
            "{err}"
        );
        // A file swapped in under the next name, starting a fresh chain: refused as well.
        let t = trail(30, 1).await;
        let files = t.lines();
        let (path, lines) = files[1].clone();
        let mut forged: Vec<String> = Vec::new();
        let mut prev = String::new();
        for l in &lines {
            let mut e: AuditEvent = serde_json::from_str(l).expect("event");
            e.prev = prev.clone();
            e.hash = crate::audit::chain_hash(&e);
            prev = e.hash.clone();
            forged.push(serde_json::to_string(&e).expect("json"));
        }
        t.write(&path, &forged);
        assert!(t.verify(None).is_err());
    }

    /// What the broker writes is what the fast path takes: every line but the checkpoints
    /// is its event's canonical JSON, hashed as it stands.
    #[tokio::test]
    async fn the_recorder_writes_canonical_lines() {
        let t = trail(30, 2).await;
        let lines: Vec<String> = t.lines().into_iter().flat_map(|(_, l)| l).collect();
        let checkpoints = lines
            .iter()
            .filter(|l| l.contains("\"audit.checkpoint\""))
            .count();
        assert!(checkpoints >= 2);
        for line in lines.iter().filter(|l| !l.contains("\"audit.checkpoint\"")) {
            assert!(Canonical::scan(line).is_some(), "not canonical: {line}");
        }
    }

    /// The line (of a file of `t`) with `subject` `user<i>`, its file and its index.
    fn line_of(t: &Trail, i: usize) -> (PathBuf, Vec<String>, usize) {
        let needle = format!("\"subject\":\"user{i}\"");
        t.lines()
            .into_iter()
            .find_map(|(p, l)| {
                let at = l.iter().position(|x| x.contains(&needle))?;
                Some((p, l, at))
            })
            .expect("the event is in the files")
    }

    /// A line respelled (spacing, escapes, key order, the hash's escapes) is not canonical
    /// and goes the full way: it verifies exactly when its parsed event does. An edit of its
    /// content breaks the chain whichever way the line is spelled, and so does a hash over the
    /// respelled bytes themselves (what a check that trusted any line's bytes would accept).
    #[tokio::test]
    async fn respelled_lines_verify_as_their_event_and_edits_still_break() {
        let respell = [
            ("\"subject\":", "\"subject\": "),
            ("\"subject\":\"user", "\"subject\":\"\\u0075ser"),
            ("\"hash\":\"", "its first digit escaped"),
            ("{\"v\":2", "{ \"v\":2"),
        ];
        for (from, to) in respell {
            let t = trail(12, 0).await;
            let (path, mut lines, at) = line_of(&t, 4);
            lines[at] = if from == "\"hash\":\"" {
                // The hash's first digit as a `\u00xx` escape.
                let open = lines[at].rfind(from).expect("hash") + from.len();
                let first = lines[at].as_bytes()[open];
                let mut respelled = lines[at].clone();
                respelled.replace_range(open..=open, &format!("\\u{:04x}", first));
                respelled
            } else {
                lines[at].replacen(from, to, 1)
            };
            assert!(Canonical::scan(&lines[at]).is_none(), "{}", lines[at]);
            t.write(&path, &lines);
            t.verify(None)
                .unwrap_or_else(|e| panic!("{from} -> {to}: same event, must verify: {e}"));
            // The same respelling with the content edited: altered.
            assert!(lines[at].contains("\"data\":{\"i\":4}"), "{}", lines[at]);
            lines[at] = lines[at].replacen("\"data\":{\"i\":4}", "\"data\":{\"i\":5}", 1);
            t.write(&path, &lines);
            let err = t.verify(None).expect_err("edited").to_string();
            assert!(err.contains("was altered"), "{err}");
        }
        // Hashed over its own respelled bytes: the full check recomputes the canonical hash.
        let t = trail(12, 0).await;
        let (path, mut lines, at) = line_of(&t, 4);
        let spaced = lines[at].replacen("\"subject\":\"user4\"", "\"subject\": \"mallory\"", 1);
        let open = spaced.rfind("\"hash\":\"").expect("hash") + "\"hash\":".len();
        let forged_over_bytes = {
            use sha2::{Digest as _, Sha256};
            let mut h = Sha256::new();
            h.update(&spaced.as_bytes()[..open]);
            h.update(b"\"\"}");
            hex::encode(h.finalize())
        };
        let stated = &spaced[open + 1..open + 65];
        lines[at] = spaced.replacen(stated, &forged_over_bytes, 1);
        t.write(&path, &lines);
        let err = t.verify(None).expect_err("forged").to_string();
        assert!(err.contains("was altered"), "{err}");
        // The hash in capitals: only the exact lowercase form matches.
        let t = trail(12, 0).await;
        let (path, mut lines, at) = line_of(&t, 4);
        let open = lines[at].rfind("\"hash\":\"").expect("hash") + "\"hash\":\"".len();
        let upper = lines[at][open..open + 64].to_ascii_uppercase();
        lines[at].replace_range(open..open + 64, &upper);
        t.write(&path, &lines);
        let err = t.verify(None).expect_err("capitals").to_string();
        assert!(err.contains("was altered"), "{err}");
    }

    /// Batches cut anywhere (inside lines, at their ends, many lines each): the intact trail
    /// verifies, and an edited event is named by its file and line whichever batch it is in.
    #[tokio::test]
    async fn an_edit_is_found_at_its_line_wherever_batches_are_cut() {
        const CUTS: [usize; 5] = [1, 64, 333, 1000, 1 << 20];
        let t = trail(30, 1).await;
        let keys = t.keys.clone();
        let check = move |kid: &str, m: &[u8], s: &str| key_ring_verifies(&keys, kid, m, s);
        let verify = |cut| {
            let reader = TrailReader::open_with(&[t.files()], cut).expect("open");
            verify_trail(reader, &check, None)
        };
        for cut in CUTS {
            let report = verify(cut).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert!(report.contains("audit chain intact"), "{report}");
        }
        let (path, mut lines, at) = line_of(&t, 17);
        lines[at] = lines[at].replacen("\"subject\":\"user17\"", "\"subject\":\"user71\"", 1);
        t.write(&path, &lines);
        for cut in CUTS {
            let err = verify(cut).expect_err("edited").to_string();
            assert!(
                err.starts_with(&format!("{}:{}: ", path.display(), at + 1))
                    && err.contains("was altered"),
                "cut {cut}: {err}"
            );
        }
    }

    /// A member given twice is refused, whichever copy a reader would believe.
    #[tokio::test]
    async fn duplicate_keys_are_refused() {
        let t = trail(12, 0).await;
        let (path, mut lines, at) = line_of(&t, 4);
        lines[at] = lines[at].replacen(
            "\"subject\":\"user4\"",
            "\"subject\":\"mallory\",\"subject\":\"user4\"",
            1,
        );
        t.write(&path, &lines);
        let err = t.verify(None).expect_err("duplicate member").to_string();
        assert!(err.contains("duplicate"), "{err}");
        let t = trail(12, 0).await;
        let (path, mut lines, at) = line_of(&t, 4);
        lines[at] = lines[at].replacen("\"data\":{\"i\":4", "\"data\":{\"i\":666,\"i\":4", 1);
        assert!(lines[at].contains("666"), "{}", lines[at]);
        t.write(&path, &lines);
        let err = t.verify(None).expect_err("duplicate data key").to_string();
        assert!(err.contains("duplicate"), "{err}");
    }

    /// Events after the last checkpoint cut off: the files alone still form a chain (and the
    /// report names the last checkpoint and what follows it); against the store's head the
    /// cut tail is named. A tail cut to before a checkpoint that the files still hold breaks it.
    #[tokio::test]
    async fn verify_detects_a_truncated_tail_after_a_checkpoint() {
        let t = trail(40, 2).await;
        t.audit
            .record(AuditEvent::new("grant.issued", 5000))
            .await
            .expect("one more");
        // The trail ends in a checkpoint, as it does once the broker has been idle for an
        // interval; it is in the files before they are cut, and nothing is written after.
        checkpoint(&t.audit).await;
        let head = t
            .store
            .audit_head("r1")
            .await
            .expect("head")
            .expect("some")
            .seq;
        // Cut the trail right after the checkpoint before that one (events followed it): its
        // file ends there, the later files are dropped.
        let files = t.lines();
        let (k, i) = files
            .iter()
            .enumerate()
            .flat_map(|(k, (_, lines))| {
                lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.contains("audit.checkpoint"))
                    .map(move |(i, _)| (k, i))
            })
            .rev()
            .nth(1)
            .expect("a checkpoint followed by events");
        let (path, lines) = &files[k];
        let cut = serde_json::from_str::<AuditEvent>(&lines[i])
            .expect("event")
            .seq;
        t.write(path, &lines[..=i]);
        for (later, _) in &files[k + 1..] {
            std::fs::remove_file(later).expect("rm");
        }
        // Alone, the files end in a checkpoint that covers all before it: nothing shows.
        let alone = t.verify(None).expect("a prefix is a chain");
        assert!(
            alone.contains(&format!("last checkpoint: seq {cut} "))
                && alone.contains("\n0 events after it in the files"),
            "{alone}"
        );
        let err = t.verify(Some(head)).expect_err("cut tail").to_string();
        assert!(
            err.contains(&format!(
                "the files end at seq {cut} but the store's chain reaches seq {head}"
            )),
            "{err}"
        );
        // A checkpoint whose events before it are gone is false.
        let t = trail(40, 2).await;
        let (path, mut lines, i) = t
            .lines()
            .into_iter()
            .rev()
            .find_map(|(p, l)| {
                let i = l
                    .iter()
                    .rposition(|x| x.contains("audit.checkpoint"))
                    .filter(|i| *i > 0)?;
                Some((p, l, i))
            })
            .expect("a checkpoint after an event of its file");
        let cp = serde_json::from_str::<AuditEvent>(&lines[i])
            .expect("event")
            .seq;
        lines.remove(i - 1);
        t.write(&path, &lines);
        let err = t
            .verify(None)
            .expect_err("events before it gone")
            .to_string();
        assert!(
            err.contains(&format!("chain broken before event seq {cp} "))
                || err.contains(&format!("checkpoint at seq {cp} is false")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn verify_refuses_a_forged_checkpoint_signature() {
        let t = trail(20, 1).await;
        let mut all = t.lines();
        let cp = all
            .iter_mut()
            .find_map(|(p, l)| {
                l.iter()
                    .position(|x| x.contains("audit.checkpoint"))
                    .map(|i| (p.clone(), l, i))
            })
            .expect("a checkpoint");
        let (path, lines, i) = cp;
        let mut e: AuditEvent = serde_json::from_str(&lines[i]).expect("event");
        let other = KeyRing::ephemeral().expect("key");
        let key = other.signer();
        let cpt = crate::audit::Checkpoint::of(&e).expect("checkpoint");
        let sig = jsonwebtoken::crypto::sign(
            crate::audit::checkpoint_message(&cpt.head, e.replica.as_ref(), e.ts).as_bytes(),
            key.encoding(),
            jsonwebtoken::Algorithm::EdDSA,
        )
        .expect("sign");
        e.data.insert("sig".into(), sig.into());
        e.data
            .insert("kid".into(), t.keys.signer().kid().to_owned().into());
        e.hash = crate::audit::chain_hash(&e);
        lines[i] = serde_json::to_string(&e).expect("json");
        t.write(&path, lines);
        let err = t.verify(None).expect_err("forged").to_string();
        assert!(err.contains("signature does not verify"), "{err}");
    }

    /// Two replicas on one store, each writing its own chain and folder: each folder
    /// verifies on its own, both together verify replica by replica, a replica's files cut
    /// short of its chain in the store are caught, and an event deleted from one replica's
    /// files is caught with that folder alone.
    #[tokio::test]
    async fn each_replicas_files_verify_on_their_own() {
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(100_000));
        let keys = Arc::new(KeyRing::ephemeral().expect("key"));
        let replica = |name: &str| {
            let sink = Sink::open(SinkTarget::File {
                dir: dir.path().join(name),
                replica: name.into(),
                rotate_bytes: 2048,
            })
            .expect("sink");
            let signing = keys.clone();
            Auditor::durable(
                store.clone(),
                None,
                Arc::new(crate::metrics::Metrics::new()),
                Some(sink),
                Some(Checkpoints {
                    interval: NEVER,
                    sign: Arc::new(move |m: &[u8]| {
                        let key = signing.signer();
                        jsonwebtoken::crypto::sign(
                            m,
                            key.encoding(),
                            jsonwebtoken::Algorithm::EdDSA,
                        )
                        .map(|s| (key.kid().to_owned(), s))
                        .map_err(|e| e.to_string())
                    }),
                }),
                name,
            )
        };
        let (a, b) = (replica("a"), replica("b"));
        for i in 0..40 {
            let kind = if i % 3 == 0 {
                "grant.issued"
            } else {
                "access.denied"
            };
            let who = if i % 4 < 2 { &a } else { &b };
            who.record(AuditEvent::new(kind, 1000 + i))
                .await
                .expect("recorded");
            if i % 10 == 0 {
                // Each replica that wrote since its last checkpoint signs its head, as its
                // interval would (b writes first at i = 2): checkpoints land amid the other
                // replica's events.
                checkpoint(&a).await;
                if i > 0 {
                    checkpoint(&b).await;
                }
            }
        }
        let check = {
            let keys = keys.clone();
            move |kid: &str, m: &[u8], s: &str| key_ring_verifies(&keys, kid, m, s)
        };
        let both =
            verify_replica_files(&[dir.path().join("a"), dir.path().join("b")], &check, None)
                .expect("both replicas together");
        for name in ["a", "b"] {
            assert!(
                both.contains(&format!("replica {name}'s files: audit chain intact: ")),
                "{both}"
            );
        }
        for name in ["a", "b"] {
            let alone = verify_files(&[dir.path().join(name)], &check, None)
                .unwrap_or_else(|e| panic!("replica {name} alone: {e}"));
            assert!(alone.contains("audit chain intact"), "{alone}");
            assert!(
                alone.contains(&format!("replica {name}: its events 1..=")),
                "{alone}"
            );
            // Each replica's chain is whole in its own files: nothing is another's.
            assert!(!alone.contains("other replicas' events"), "{alone}");
        }
        let report = verify_files(&[dir.path().join("a")], &check, None).expect("a");
        assert!(report.contains("signature valid"), "{report}");
        // b's newest file removed while a wrote on: a still verifies, b's files now end
        // before b's chain in the store does.
        a.record(AuditEvent::new("grant.issued", 5000))
            .await
            .expect("one more");
        let newest_of_b = std::fs::read_dir(dir.path().join("b"))
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .max()
            .expect("a file of b");
        std::fs::remove_file(newest_of_b).expect("rm");
        let heads = chain_heads(&*store).await.expect("heads");
        verify_replica_files(&[dir.path().join("a")], &check, Some(&heads)).expect("a alone");
        let err = verify_replica_files(
            &[dir.path().join("a"), dir.path().join("b")],
            &check,
            Some(&heads),
        )
        .expect_err("b's tail missing")
        .to_string();
        assert!(
            err.contains("are missing from the files (a cut tail)"),
            "{err}"
        );
        // One of a's events deleted from a's files: a's own chain breaks.
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path().join("a"))
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        let text = std::fs::read_to_string(&files[0]).expect("read");
        let mut lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() > 2);
        lines.remove(1);
        std::fs::write(&files[0], lines.join("\n") + "\n").expect("write");
        let err = verify_files(&[dir.path().join("a")], &check, None)
            .expect_err("deleted")
            .to_string();
        assert!(err.contains("of replica a but does not follow"), "{err}");
    }

    /// A broker that starts again continues its own chain from its newest file: the
    /// replica's files still verify alone, as one run of its events.
    #[tokio::test]
    async fn a_restarted_replica_continues_its_chain() {
        let t = trail(10, 0).await;
        let Trail {
            dir, store, audit, ..
        } = t;
        drop(audit);
        let target = SinkTarget::File {
            dir: dir.path().join("audit"),
            replica: "r1".into(),
            rotate_bytes: 2048,
        };
        // The previous writer lets go of its lock once its task has seen the last auditor go.
        let sink = loop {
            match Sink::open(target.clone()) {
                Ok(sink) => break sink,
                Err(crate::recorder::sink::SinkError::ReplicaInUse { .. }) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(sink.replica_head().map(|h| h.seq), Some(10));
        let again = Auditor::durable(
            store,
            None,
            Arc::new(crate::metrics::Metrics::new()),
            Some(sink),
            None,
            "r1",
        );
        for i in 0..5 {
            again
                .record(AuditEvent::new("grant.issued", 2000 + i))
                .await
                .expect("recorded");
        }
        let report = verify_files(&[dir.path().join("audit")], &|_, _, _| None, None)
            .expect("one chain across the restart");
        assert!(
            report.contains("replica r1: its events 1..=15, chained"),
            "{report}"
        );
    }
}
