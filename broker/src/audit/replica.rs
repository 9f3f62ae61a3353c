//! Each replica's own chain: the events one broker writes to its audit files, linked one to
//! the next by [`ReplicaLink`] inside the events (so inside their hashes), beside the global
//! chain over every replica. One replica's files then verify on their own: an event missing
//! from them breaks this chain, while the global sequence numbers they skip are the other
//! replicas' events.

use std::collections::BTreeMap;

use super::{AuditEvent, ChainError, Links};
pub use jit_proto::audit::ReplicaLink;

/// A [`ReplicaLink`], borrowed from the event or the line that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaRef<'a> {
    /// The replica's name.
    pub name: &'a str,
    /// The event's position among this replica's events.
    pub seq: u64,
    /// The `hash` of this replica's previous event.
    pub prev: &'a str,
}

impl<'a> From<&'a ReplicaLink> for ReplicaRef<'a> {
    fn from(l: &'a ReplicaLink) -> Self {
        Self {
            name: &l.name,
            seq: l.seq,
            prev: &l.prev,
        }
    }
}

/// Where a replica's chain ends: its name, its newest event's position and hash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaHead {
    /// The replica's name.
    pub name: String,
    /// Its newest event's position among its events (0 before its first).
    pub seq: u64,
    /// Its newest event's hash (empty before its first).
    pub hash: String,
}

impl ReplicaHead {
    /// A replica that has written nothing yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// The head a replica's newest event leaves (a fresh chain if it carries none of this
    /// replica's links: written before replica chains, or under another name).
    pub fn after(name: &str, newest: Option<&AuditEvent>) -> Self {
        match newest.and_then(|e| e.replica.as_ref().map(|l| (e, l))) {
            Some((e, link)) if link.name == name => Self {
                name: name.to_owned(),
                seq: link.seq,
                hash: e.hash.clone(),
            },
            _ => Self::new(name),
        }
    }

    /// The link of this replica's next event.
    pub fn next_link(&self) -> ReplicaLink {
        ReplicaLink {
            name: self.name.clone(),
            seq: self.seq + 1,
            prev: self.hash.clone(),
        }
    }

    /// Moves the head past `e` (linked with [`ReplicaHead::next_link`] and hashed).
    pub fn advance(&mut self, e: &AuditEvent) {
        if let Some(link) = &e.replica {
            self.seq = link.seq;
            self.hash = e.hash.clone();
        }
    }
}

/// What verification saw of one replica's chain.
#[derive(Debug, Clone)]
struct Seen {
    first: u64,
    head: ReplicaHead,
}

/// Every replica chain a verification met, one head per replica: memory grows with the
/// number of replicas, never with the trail.
#[derive(Debug, Default)]
pub struct ReplicaChains {
    seen: BTreeMap<String, Seen>,
}

impl ReplicaChains {
    /// Checks that `e` follows its replica's previous event (the first seen of a replica is
    /// its anchor: its earlier files may have been removed).
    pub fn check(&self, e: &Links<'_>) -> Result<(), ChainError> {
        let Some(link) = &e.replica else {
            return Ok(());
        };
        let broken = |previous: u64| ChainError::ReplicaBroken {
            seq: e.seq,
            id: e.id.unwrap_or_default().to_owned(),
            replica: link.name.to_owned(),
            replica_seq: link.seq,
            previous,
        };
        match self.seen.get(link.name) {
            Some(s) if link.seq != s.head.seq + 1 || link.prev != s.head.hash => {
                Err(broken(s.head.seq))
            }
            None if link.seq == 1 && !link.prev.is_empty() => Err(broken(0)),
            _ => Ok(()),
        }
    }

    /// Records `e` (checked) as its replica's newest event.
    pub fn advance(&mut self, e: &Links<'_>) {
        let Some(link) = &e.replica else {
            return;
        };
        // Looked up before inserting: no key is allocated for a replica already met.
        if !self.seen.contains_key(link.name) {
            self.seen.insert(
                link.name.to_owned(),
                Seen {
                    first: link.seq,
                    head: ReplicaHead::new(link.name),
                },
            );
        }
        if let Some(s) = self.seen.get_mut(link.name) {
            s.head.seq = link.seq;
            s.head.hash.clear();
            s.head.hash.push_str(e.hash);
        }
    }

    /// How many replicas were met.
    pub fn count(&self) -> usize {
        self.seen.len()
    }

    /// Whether `name` is the only replica met so far (or none was): while a run holds one
    /// replica's files alone, the seq numbers it skips are other replicas' events.
    pub fn only(&self, name: &str) -> bool {
        match self.seen.len() {
            0 => true,
            1 => self.seen.contains_key(name),
            _ => false,
        }
    }

    /// One line per replica: the run of its events verified.
    pub fn report(&self) -> Vec<String> {
        self.seen
            .iter()
            .map(|(name, s)| {
                let mut line = format!(
                    "replica {name}: its events {}..={}, chained",
                    s.first, s.head.seq
                );
                if s.first > 1 {
                    line.push_str(&format!(
                        " (its events before {} are not in these files)",
                        s.first
                    ));
                }
                line
            })
            .collect()
    }
}
