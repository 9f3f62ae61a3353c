//! Audit events: who, why, when, what — for every grant, denial, access and revocation.
//!
//! Events never carry a token, only its `jti`. The schema is versioned (`v`); the field set
//! is documented in docs/audit.md.

use serde::{Deserialize, Serialize};

/// Current version of the audit event schema.
pub const SCHEMA_VERSION: u32 = 1;

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Schema version.
    pub v: u32,
    /// The store's id for the event (a Redis stream id, or a sequence number); set on read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// When it happened, milliseconds since the epoch.
    pub ts: i64,
    /// What happened: `grant.issued`, `grant.denied`, `access.allowed`, `access.denied`,
    /// `grant.revoked`, `admin.*`.
    pub event: String,
    /// The identity that acted (verified subject), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The trusted issuer's name that vouched for the subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    /// The repository concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The scope asked for or used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The role under which it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The token's id — the only way a token ever appears here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The requester's reason, or the admin's reason for a revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why a request was denied, as told to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial: Option<String>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The client's user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Event-specific details (deciding claims, ref updates, lifetimes, counts).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub data: serde_json::Map<String, serde_json::Value>,
    /// Position in the hash chain (1 for the first event ever written).
    #[serde(default)]
    pub seq: u64,
    /// The previous event's `hash` (empty for the first).
    #[serde(default)]
    pub prev: String,
    /// SHA-256 over `prev` and this event without `id` and `hash` (see [`chain_hash`]).
    #[serde(default)]
    pub hash: String,
}

impl AuditEvent {
    /// An event of kind `event` at `ts` (ms); fill the rest with the builder methods.
    pub fn new(event: impl Into<String>, ts: i64) -> Self {
        Self {
            v: SCHEMA_VERSION,
            id: None,
            ts,
            event: event.into(),
            subject: None,
            idp: None,
            repo: None,
            scope: None,
            role: None,
            jti: None,
            reason: None,
            denial: None,
            client: None,
            user_agent: None,
            data: serde_json::Map::new(),
            seq: 0,
            prev: String::new(),
            hash: String::new(),
        }
    }

    /// Adds an event-specific detail.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.data.insert(key.to_owned(), value.into());
        self
    }
}

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
        let event_ok = match &self.event {
            None => true,
            Some(k) if k.ends_with('.') => e.event.starts_with(k.as_str()),
            Some(k) => &e.event == k,
        };
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
