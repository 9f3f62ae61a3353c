//! Audit events: who, why, when, what — for every grant, denial, access and revocation.
//!
//! Events never carry a token, only its `jti`. The schema is versioned (`v`); the field set
//! is documented in docs/audit.md.

pub use jit_proto::audit::{AuditEvent, EventKind, SCHEMA_VERSION};

/// Which events to read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Earliest event time, inclusive (ms).
    pub from_ms: Option<i64>,
    /// Latest event time, inclusive (ms).
    pub to_ms: Option<i64>,
    /// Only this event kind (exact) or kind prefix ending in `.` (e.g. `grant.`).
    pub event: Option<String>,
    /// Only this subject.
    pub subject: Option<String>,
    /// Only this repository.
    pub repo: Option<String>,
    /// Only events after this chain position (paging).
    pub after_seq: u64,
    /// At most this many events (oldest first).
    pub limit: usize,
}

impl AuditQuery {
    /// Whether `e` passes the field filters (the time range is the store's job).
    pub fn matches(&self, e: &AuditEvent) -> bool {
        let event_ok = self
            .event
            .as_deref()
            .is_none_or(|k| e.event.matches_filter(k));
        event_ok
            && e.seq > self.after_seq
            && self
                .subject
                .as_ref()
                .is_none_or(|s| e.subject.as_ref() == Some(s))
            && self
                .repo
                .as_ref()
                .is_none_or(|r| e.repo.as_ref() == Some(r))
    }
}

/// The hash that chains an event to its predecessor: hex SHA-256 of the event's canonical
/// JSON (struct order, `data` keys sorted) with `id` and `hash` left out. `prev` and `seq` are
/// inside, so editing, deleting or reordering any event breaks every later link.
pub fn chain_hash(event: &AuditEvent) -> String {
    use sha2::{Digest, Sha256};
    let mut e = event.clone();
    e.id = None;
    e.hash = String::new();
    // Serialising a struct of strings, numbers and a JSON map cannot fail.
    let json = serde_json::to_vec(&e).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

/// A break in the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An event's content does not match its hash: it was edited.
    #[error("event seq {seq} (id {id}) was altered: its hash does not match its content")]
    Altered {
        /// The event's position.
        seq: u64,
        /// The event's store id.
        id: String,
    },
    /// An event does not point at the one before it: events were deleted or reordered.
    #[error(
        "chain broken before event seq {seq} (id {id}): expected seq {expected_seq} after the previous event; events were deleted or reordered"
    )]
    Broken {
        /// The event's position.
        seq: u64,
        /// The event's store id.
        id: String,
        /// The position it should have had.
        expected_seq: u64,
    },
}

/// Checks a run of events, oldest first. The first event is the anchor (older ones may have
/// been trimmed by the log's length bound); every later one must follow it link by link.
/// Returns how many events were verified.
pub fn verify_chain(events: &[AuditEvent]) -> Result<usize, ChainError> {
    let mut previous: Option<&AuditEvent> = None;
    for e in events {
        let id = e.id.clone().unwrap_or_default();
        if chain_hash(e) != e.hash {
            return Err(ChainError::Altered { seq: e.seq, id });
        }
        if let Some(p) = previous {
            if e.prev != p.hash || e.seq != p.seq + 1 {
                return Err(ChainError::Broken {
                    seq: e.seq,
                    id,
                    expected_seq: p.seq + 1,
                });
            }
        } else if e.seq == 1 && !e.prev.is_empty() {
            return Err(ChainError::Broken {
                seq: e.seq,
                id,
                expected_seq: 1,
            });
        }
        previous = Some(e);
    }
    Ok(events.len())
}
