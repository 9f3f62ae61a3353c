//! `audit verify`: checks a trail event by event in constant memory — files (one replica's or
//! several merged by seq, across rotations) or the store's window, page by page — and reports
//! the newest signed checkpoint and what follows it.

use std::path::PathBuf;

use crate::audit::{AuditEvent, AuditQuery, ChainError, ChainVerifier, Signature};
use crate::store::{GrantStore, StoreError};

use super::sink::{TrailError, TrailReader};

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
pub type Keys<'a> = &'a dyn Fn(&str, &[u8], &str) -> Option<bool>;

/// Verifies the trail files under `paths` (folders of `audit-*.jsonl`, or files), merged by
/// seq. When `store_head` is given (the store's newest seq), files that end before it are a
/// cut tail.
pub fn verify_files(
    paths: &[PathBuf],
    keys: Keys<'_>,
    store_head: Option<u64>,
) -> Result<String, VerifyError> {
    let mut reader = TrailReader::open(paths)?;
    let mut v = ChainVerifier::new();
    while let Some(read) = reader.next_event()? {
        v.push(read.event, keys).map_err(|error| VerifyError::Chain {
            at: format!("{}: ", read.at),
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

/// Verifies the store's window of the trail, page by page.
pub async fn verify_store(
    store: &dyn GrantStore,
    keys: Keys<'_>,
    page: usize,
) -> Result<String, VerifyError> {
    let mut v = ChainVerifier::new();
    let mut after_seq = 0;
    loop {
        let events: Vec<AuditEvent> = store
            .read_audit(&AuditQuery {
                after_seq,
                limit: page,
                ..Default::default()
            })
            .await?;
        let Some(last) = events.last() else { break };
        after_seq = last.seq;
        let n = events.len();
        for e in events {
            v.push(e, keys).map_err(|error| VerifyError::Chain {
                at: String::new(),
                error,
            })?;
        }
        if n < page {
            break;
        }
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
    match v.last_checkpoint() {
        Some(cp) => {
            let when = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(cp.ts) * 1_000_000)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
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
