//! Audit events: who, why, when, what — for every grant, denial, access and revocation.
//!
//! Events never carry a token, only its `jti`. The schema is versioned (`v`); the field set
//! is documented in docs/audit.md.
//!
//! The trail has two lanes ([`Lane`]): evidence (grants, revocations, admin actions) and
//! traffic (Git accesses, refusals, rate-limit summaries). Each lane is its own hash chain and
//! is kept and trimmed on its own, so traffic can never push evidence out; one sequence
//! number orders the events of both.

pub use jit_proto::audit::{AuditEvent, EventKind, Lane, SCHEMA_VERSION};

/// Where the chain ends: the newest `seq` over both lanes and each lane's newest hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainHead {
    /// The newest event's `seq` (over both lanes).
    pub seq: u64,
    /// The newest evidence event's hash.
    pub evidence: String,
    /// The newest traffic event's hash.
    pub traffic: String,
}

impl ChainHead {
    /// The newest hash of `lane`.
    pub fn hash(&self, lane: Lane) -> &str {
        match lane {
            Lane::Evidence => &self.evidence,
            Lane::Traffic => &self.traffic,
        }
    }

    /// Moves the head past `event` (chained on `lane`).
    pub fn advance(&mut self, lane: Lane, event: &AuditEvent) {
        self.seq = event.seq;
        match lane {
            Lane::Evidence => self.evidence = event.hash.clone(),
            Lane::Traffic => self.traffic = event.hash.clone(),
        }
    }

    /// The head as stored: `seq evidence-hash traffic-hash`.
    pub fn encode(&self) -> String {
        format!("{} {} {}", self.seq, self.evidence, self.traffic)
    }

    /// A stored head; a version 1 head (`seq hash`, one chain) continues both lanes from its
    /// one hash.
    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let seq = parts.next()?.parse().ok()?;
        let evidence = parts.next().unwrap_or_default().to_owned();
        let traffic = parts.next().map_or_else(|| evidence.clone(), str::to_owned);
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            seq,
            evidence,
            traffic,
        })
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
    /// An event does not point at the one before it in its lane: events were deleted.
    #[error(
        "chain broken before event seq {seq} (id {id}): it does not follow event seq {previous_seq}, the one before it in the {lane} lane; events were deleted or reordered"
    )]
    LaneBroken {
        /// The event's position.
        seq: u64,
        /// The event's store id.
        id: String,
        /// The lane.
        lane: &'static str,
        /// The position of the lane's previous event.
        previous_seq: u64,
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

/// Checks a run of events of both lanes, oldest first (by `seq`). Version 1 events (no lane)
/// form one chain: each follows the one before it. A laned event follows the one before it
/// in its lane (or, the first in its lane, the last version 1 event). The first event seen
/// of a lane is its anchor (older ones may have been trimmed by the lane's budget); every
/// later one must follow it link by link, and `seq` must grow. Returns how many events were
/// verified.
pub fn verify_chain(events: &[AuditEvent]) -> Result<usize, ChainError> {
    let mut previous: Option<&AuditEvent> = None;
    // The event each lane continues from (a version 1 event continues both).
    let mut heads: [Option<&AuditEvent>; 2] = [None, None];
    let slot = |lane: Lane| match lane {
        Lane::Evidence => 0,
        Lane::Traffic => 1,
    };
    for e in events {
        let id = e.id.clone().unwrap_or_default();
        if chain_hash(e) != e.hash {
            return Err(ChainError::Altered { seq: e.seq, id });
        }
        let first_ever = e.seq == 1 && !e.prev.is_empty();
        match e.lane {
            None => {
                if let Some(p) = previous {
                    if e.prev != p.hash || e.seq != p.seq + 1 {
                        return Err(ChainError::Broken {
                            seq: e.seq,
                            id,
                            expected_seq: p.seq + 1,
                        });
                    }
                } else if first_ever {
                    return Err(ChainError::Broken {
                        seq: e.seq,
                        id,
                        expected_seq: 1,
                    });
                }
                heads = [Some(e), Some(e)];
            }
            Some(lane) => {
                if let Some(p) = previous.filter(|p| e.seq <= p.seq) {
                    return Err(ChainError::Broken {
                        seq: e.seq,
                        id,
                        expected_seq: p.seq + 1,
                    });
                }
                match heads[slot(lane)] {
                    Some(p) if e.prev != p.hash => {
                        return Err(ChainError::LaneBroken {
                            seq: e.seq,
                            id,
                            lane: lane.as_str(),
                            previous_seq: p.seq,
                        });
                    }
                    None if first_ever => {
                        return Err(ChainError::Broken {
                            seq: e.seq,
                            id,
                            expected_seq: 1,
                        });
                    }
                    _ => {}
                }
                heads[slot(lane)] = Some(e);
            }
        }
        previous = Some(e);
    }
    Ok(events.len())
}
