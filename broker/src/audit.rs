//! Audit events: who, why, when, what — for every grant, denial, access and revocation.
//!
//! Events never carry a token, only its `jti`. The schema is versioned (`v`); the field set
//! is documented in docs/audit.md.
//!
//! The trail has two lanes ([`Lane`]): evidence (grants, revocations, admin actions) and
//! traffic (Git accesses, refusals, rate-limit summaries). Each lane is its own hash chain and
//! is kept and trimmed on its own, so traffic can never push evidence out; one sequence
//! number orders the events of both.

pub mod canonical;
pub mod replica;

pub use canonical::Canonical;
pub use jit_proto::admin::AuditCursor;
pub use jit_proto::audit::{AuditEvent, EventKind, Lane, SCHEMA_VERSION};
pub use replica::{ReplicaChains, ReplicaHead, ReplicaLink, ReplicaRef};

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

    /// `e` chained onto this head as the recorder chains it (its lane by kind, the next
    /// `seq`, its lane's previous hash, its own hash); the head moves past it. For tests and
    /// tools that write chains without the recorder.
    pub fn chain(&mut self, mut e: AuditEvent) -> AuditEvent {
        let lane = e.event.lane();
        e.lane = Some(lane);
        e.seq = self.seq + 1;
        e.prev = self.hash(lane).to_owned();
        e.hash = chain_hash(&e);
        self.advance(lane, &e);
        e
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
    /// Only events after this chain position (paging): in every chain the store holds, so
    /// exact for a store holding one replica's chain (and the chain from before replica
    /// chains, whose seqs come first). `cursor` pages any store.
    pub after_seq: u64,
    /// Only events placed after this one in the merged order of every chain (paging a store
    /// that holds several replicas' chains).
    pub cursor: Option<AuditCursor>,
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
    let mut e = event.clone();
    let mut buf = Vec::new();
    chain_hash_with(&mut e, &mut buf)
}

/// An event ready to be written: chained, its `hash` set, and its stored line (its JSON as
/// the store, the durable sink and the export all keep it, without a newline). Serialised
/// once, whatever the number of places it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    /// The event.
    pub event: AuditEvent,
    /// Its JSON.
    pub line: String,
}

impl Sealed {
    /// `event` as it stands (its `hash` already set), serialised.
    pub fn of(event: AuditEvent) -> Self {
        // Serialising a struct of strings, numbers and a JSON map cannot fail.
        let line = serde_json::to_string(&event).unwrap_or_default();
        Self { event, line }
    }
}

/// Sets `event.hash` to its [`chain_hash`] and serialises it, both from one serialisation:
/// the JSON the hash covers (`hash` empty, the last member) and the stored line differ only
/// in that last member's value, so the line is the hashed text with the hash put in.
pub fn seal(mut event: AuditEvent) -> Sealed {
    use sha2::{Digest, Sha256};
    /// How the hashed text ends: `hash` is the event's last member, here empty.
    const UNSEALED_END: &[u8] = br#","hash":""}"#;
    event.hash.clear();
    let mut buf = Vec::with_capacity(512);
    // Serialising a struct of strings, numbers and a JSON map into memory cannot fail.
    let _ = serde_json::to_writer(&mut buf, &event);
    if event.id.is_some() || !buf.ends_with(UNSEALED_END) {
        // An event read back (with a store id) is hashed without it: the long way.
        event.hash = chain_hash(&event);
        return Sealed::of(event);
    }
    let hash = hex::encode(Sha256::digest(&buf));
    // `…"hash":""}` becomes `…"hash":"<hash>"}`.
    buf.truncate(buf.len() - 2);
    buf.extend_from_slice(hash.as_bytes());
    buf.extend_from_slice(b"\"}");
    event.hash = hash;
    match String::from_utf8(buf) {
        Ok(line) => Sealed { event, line },
        Err(_) => Sealed::of(event),
    }
}

/// [`chain_hash`] without copying the event: `id` and `hash` are taken out while it is
/// serialised into `buf` (reused between calls) and put back.
fn chain_hash_with(e: &mut AuditEvent, buf: &mut Vec<u8>) -> String {
    hex::encode(chain_digest_with(e, buf))
}

/// The SHA-256 digest behind [`chain_hash_with`], as bytes.
fn chain_digest_with(e: &mut AuditEvent, buf: &mut Vec<u8>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let id = e.id.take();
    let hash = std::mem::take(&mut e.hash);
    buf.clear();
    // Serialising a struct of strings, numbers and a JSON map into memory cannot fail.
    let _ = serde_json::to_writer(&mut *buf, &*e);
    e.id = id;
    e.hash = hash;
    Sha256::digest(&buf[..]).into()
}

/// Whether `e.hash` is the chain hash of `e`: compared as digest bytes, so verifying a
/// trail allocates no hex string per event.
fn chain_hash_matches(e: &mut AuditEvent, buf: &mut Vec<u8>) -> bool {
    stated_digest(&e.hash).is_some_and(|stated| chain_digest_with(e, buf) == stated)
}

/// The digest a stated hash names: only the exact form [`chain_hash`] writes (64 lowercase
/// hex digits) names one.
fn stated_digest(hash: &str) -> Option<[u8; 32]> {
    let mut stated = [0u8; 32];
    let lowercase = hash
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (lowercase && hex::decode_to_slice(hash.as_bytes(), &mut stated).is_ok()).then_some(stated)
}

/// The members of an event that link it into the chains, borrowed from the event or from
/// its line ([`Canonical::links`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Links<'a> {
    /// Position in the chain.
    pub seq: u64,
    /// The store's id for the event.
    pub id: Option<&'a str>,
    /// The lane (none on version 1 events).
    pub lane: Option<Lane>,
    /// The previous event's hash in its lane.
    pub prev: &'a str,
    /// The event's own hash.
    pub hash: &'a str,
    /// Its link in its replica's chain.
    pub replica: Option<ReplicaRef<'a>>,
}

impl<'a> Links<'a> {
    /// The links of `e`.
    pub fn of(e: &'a AuditEvent) -> Self {
        Self {
            seq: e.seq,
            id: e.id.as_deref(),
            lane: e.lane,
            prev: &e.prev,
            hash: &e.hash,
            replica: e.replica.as_ref().map(ReplicaRef::from),
        }
    }
}

/// The statement a checkpoint signs: the chain head (newest seq, each lane's newest hash) at
/// `ts` (ms), in a fixed text form.
///
/// A checkpoint written to a replica's files (it carries its own [`ReplicaLink`]) also signs
/// that link — the replica's chain up to it — so one replica's files are covered on their own
/// (`v2`).
pub fn checkpoint_message(head: &ChainHead, replica: Option<&ReplicaLink>, ts: i64) -> String {
    match replica {
        None => format!(
            "git-jit audit checkpoint v1\n{}\n{}\n{}\n{ts}",
            head.seq, head.evidence, head.traffic
        ),
        Some(r) => format!(
            "git-jit audit checkpoint v2\n{}\n{}\n{}\n{}\n{}\n{}\n{ts}",
            head.seq, head.evidence, head.traffic, r.name, r.seq, r.prev
        ),
    }
}

/// A signed checkpoint of the chain head, as an `audit.checkpoint` event carries it in its
/// `data` (`head_seq`, `head_evidence`, `head_traffic`, `kid`, `sig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The head the checkpoint covers: every event up to `head.seq`.
    pub head: ChainHead,
    /// The id of the broker key that signed it.
    pub kid: String,
    /// The EdDSA signature (base64url) over [`checkpoint_message`] of the head and the
    /// event's `ts`.
    pub sig: String,
}

impl Checkpoint {
    /// Writes the checkpoint into `event`'s data.
    pub fn fill(&self, event: &mut AuditEvent) {
        let d = &mut event.data;
        d.insert("head_seq".into(), self.head.seq.into());
        d.insert("head_evidence".into(), self.head.evidence.clone().into());
        d.insert("head_traffic".into(), self.head.traffic.clone().into());
        d.insert("kid".into(), self.kid.clone().into());
        d.insert("sig".into(), self.sig.clone().into());
    }

    /// The checkpoint an `audit.checkpoint` event carries; `None` if a field is missing.
    pub fn of(event: &AuditEvent) -> Option<Self> {
        let text = |k: &str| event.data.get(k)?.as_str().map(str::to_owned);
        Some(Self {
            head: ChainHead {
                seq: event.data.get("head_seq")?.as_u64()?,
                evidence: text("head_evidence")?,
                traffic: text("head_traffic")?,
            },
            kid: text("kid")?,
            sig: text("sig")?,
        })
    }
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
    /// An event does not follow the one before it in its replica's own chain: events of that
    /// replica were deleted or reordered.
    #[error(
        "chain broken before event seq {seq} (id {id}): it is event {replica_seq} of replica {replica} but does not follow that replica's event {previous}; events were deleted or reordered"
    )]
    ReplicaBroken {
        /// The event's position.
        seq: u64,
        /// The event's store id.
        id: String,
        /// The replica.
        replica: String,
        /// The event's position among the replica's events.
        replica_seq: u64,
        /// The replica's previous event seen.
        previous: u64,
    },
    /// A checkpoint does not match the events before it, or its signature does not verify.
    #[error("checkpoint at seq {seq} is false: {why}")]
    BadCheckpoint {
        /// The checkpoint event's position.
        seq: u64,
        /// What did not match.
        why: String,
    },
}

/// What became of a checkpoint's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// It verifies with the key `kid`.
    Valid(String),
    /// No key was given to verify it with, or none with its `kid`.
    NotChecked(String),
}

/// The newest checkpoint a verification met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSeen {
    /// The checkpoint event's own seq.
    pub seq: u64,
    /// When it was written (ms).
    pub ts: i64,
    /// The newest seq it covers.
    pub covers: u64,
    /// Its signature's fate.
    pub signature: Signature,
}

/// Checks a signature: `Some(true)` valid, `Some(false)` invalid, `None` no key for `kid`.
pub type SignatureCheck<'a> = &'a dyn Fn(&str, &[u8], &str) -> Option<bool>;

/// Verifies a run of events of both lanes, oldest first (by `seq`), one at a time, keeping
/// only the last link of each lane: constant memory, however long the trail. Version 1 events
/// (no lane) form one chain: each follows the one before it. A laned event follows the one
/// before it in its lane (or, the first in its lane, the last version 1 event). The first
/// event seen of a lane is its anchor (older ones may have been trimmed by the lane's budget);
/// every later one must follow it link by link, and `seq` must grow. A checkpoint must name
/// the head the events before it reached and carry a signature that verifies.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    /// The previous event's seq and hash.
    previous: Option<(u64, String)>,
    /// Each lane's newest event (seq, hash); a version 1 event is both lanes'.
    heads: [Option<(u64, String)>; 2],
    buf: Vec<u8>,
    count: u64,
    first_seq: Option<u64>,
    checkpoints: u64,
    last_checkpoint: Option<CheckpointSeen>,
    /// Whether this is a window of the trail whose lanes were trimmed separately (the
    /// store's), where the event just before a checkpoint may be gone.
    window: bool,
    /// Each replica's own chain (files only: the store's lanes are trimmed apart).
    replicas: ReplicaChains,
    /// Sequence numbers skipped so far: other replicas' events, when one replica's files
    /// are verified on their own.
    absent: u64,
    /// The seq of the newest event that followed skipped ones: a lane whose previous event
    /// here is older may have had others' events in between.
    gap_end: u64,
}

/// Overwrites a kept link, reusing its string.
fn set_link(link: &mut Option<(u64, String)>, seq: u64, hash: &str) {
    match link {
        Some((s, h)) => {
            *s = seq;
            h.clear();
            h.push_str(hash);
        }
        None => *link = Some((seq, hash.to_owned())),
    }
}

fn slot(lane: Lane) -> usize {
    match lane {
        Lane::Evidence => 0,
        Lane::Traffic => 1,
    }
}

impl ChainVerifier {
    /// A verifier that has seen nothing, for a complete trail (the files): a checkpoint must
    /// follow the very event it covers.
    pub fn new() -> Self {
        Self::default()
    }

    /// A verifier for the store's window, whose lanes are trimmed separately: a checkpoint
    /// may cover an event of a lane trimmed away (its lane heads are still checked where
    /// that lane was seen).
    pub fn window() -> Self {
        Self {
            window: true,
            ..Self::default()
        }
    }

    /// Events verified so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The first and the last seq verified.
    pub fn range(&self) -> Option<(u64, u64)> {
        Some((self.first_seq?, self.previous.as_ref()?.0))
    }

    /// Checkpoints verified so far.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints
    }

    /// The newest checkpoint verified.
    pub fn last_checkpoint(&self) -> Option<&CheckpointSeen> {
        self.last_checkpoint.as_ref()
    }

    /// How many sequence numbers one replica's files skipped: other replicas' events (0 when
    /// the run holds several replicas' files, which must then hold the whole trail).
    pub fn absent(&self) -> u64 {
        if self.replicas.count() == 1 {
            self.absent
        } else {
            0
        }
    }

    /// The replica chains met, one report line each.
    pub fn replicas(&self) -> Vec<String> {
        self.replicas.report()
    }

    /// Checks the next event; `signature` checks a checkpoint's signature.
    pub fn push(
        &mut self,
        mut e: AuditEvent,
        signature: SignatureCheck<'_>,
    ) -> Result<(), ChainError> {
        if !chain_hash_matches(&mut e, &mut self.buf) {
            return Err(ChainError::Altered {
                seq: e.seq,
                id: e.id.clone().unwrap_or_default(),
            });
        }
        let checkpoint = (e.event == EventKind::AuditCheckpoint).then_some(&e);
        self.follow(&Links::of(&e), checkpoint, signature)
    }

    /// Checks the next event as its trail line, proven canonical by [`Canonical::scan`]
    /// (never a checkpoint): the hash is taken over the line's own bytes, the same bytes
    /// [`ChainVerifier::push`] would serialise from the parsed event.
    pub fn push_canonical(&mut self, line: &str, c: &Canonical) -> Result<(), ChainError> {
        self.push_hashed(line, &c.clone().check_hash(line))
    }

    /// [`ChainVerifier::push_canonical`] with the line's hash already checked
    /// ([`Canonical::check_hash`]), e.g. on another thread: that check is independent line by
    /// line, only the links need the events in order.
    pub fn push_hashed(&mut self, line: &str, h: &canonical::Hashed) -> Result<(), ChainError> {
        let e = h.canonical().links(line);
        if !h.matches() {
            return Err(ChainError::Altered {
                seq: e.seq,
                id: e.id.unwrap_or_default().to_owned(),
            });
        }
        self.follow(&e, None, &|_, _, _| None)
    }

    /// Checks that `e` (its hash checked) links to the events before it, and `checkpoint`
    /// (the event itself, when it is one).
    fn follow(
        &mut self,
        e: &Links<'_>,
        checkpoint: Option<&AuditEvent>,
        signature: SignatureCheck<'_>,
    ) -> Result<(), ChainError> {
        let id = || e.id.unwrap_or_default().to_owned();
        let first_ever = e.seq == 1 && !e.prev.is_empty();
        match e.lane {
            None => {
                if let Some((pseq, phash)) = &self.previous {
                    if e.prev != phash || e.seq != pseq + 1 {
                        return Err(ChainError::Broken {
                            seq: e.seq,
                            id: id(),
                            expected_seq: pseq + 1,
                        });
                    }
                } else if first_ever {
                    return Err(ChainError::Broken {
                        seq: e.seq,
                        id: id(),
                        expected_seq: 1,
                    });
                }
            }
            Some(lane) => {
                if let Some((pseq, _)) = self.previous.as_ref().filter(|p| e.seq <= p.0) {
                    return Err(ChainError::Broken {
                        seq: e.seq,
                        id: id(),
                        expected_seq: pseq + 1,
                    });
                }
                // One replica's files alone: where sequence numbers were skipped, the lane's
                // previous event may be another replica's; the event's own replica chain
                // (checked below) then says that none of its replica's events is missing.
                // Several replicas' files together must hold the whole trail.
                let gap_end = if self.skips_to(e.seq) {
                    e.seq
                } else {
                    self.gap_end
                };
                let vouched = |lane_seq: u64| self.alone(e) && lane_seq < gap_end;
                match &self.heads[slot(lane)] {
                    Some((pseq, phash)) if e.prev != phash && !vouched(*pseq) => {
                        return Err(ChainError::LaneBroken {
                            seq: e.seq,
                            id: id(),
                            lane: lane.as_str(),
                            previous_seq: *pseq,
                        });
                    }
                    None if first_ever => {
                        return Err(ChainError::Broken {
                            seq: e.seq,
                            id: id(),
                            expected_seq: 1,
                        });
                    }
                    _ => {}
                }
            }
        }
        if !self.window {
            self.replicas.check(e)?;
        }
        if let Some(cp) = checkpoint {
            self.checkpoint(e, cp, signature)?;
        }
        if !self.window && self.skips_to(e.seq) {
            let pseq = self.previous.as_ref().map_or(0, |p| p.0);
            self.absent += e.seq - pseq - 1;
            self.gap_end = e.seq;
        }
        if !self.window {
            self.replicas.advance(e);
        }
        self.count += 1;
        self.first_seq.get_or_insert(e.seq);
        // The links kept are overwritten in place: no allocation per event.
        match e.lane {
            None => {
                for head in &mut self.heads {
                    set_link(head, e.seq, e.hash);
                }
            }
            Some(lane) => set_link(&mut self.heads[slot(lane)], e.seq, e.hash),
        }
        set_link(&mut self.previous, e.seq, e.hash);
        Ok(())
    }

    /// Whether `e` belongs to the one replica whose files this run holds (files only).
    fn alone(&self, e: &Links<'_>) -> bool {
        !self.window && e.replica.is_some_and(|l| self.replicas.only(l.name))
    }

    /// Whether `seq` skips sequence numbers after the previous event.
    fn skips_to(&self, seq: u64) -> bool {
        self.previous.as_ref().is_some_and(|p| seq > p.0 + 1)
    }

    /// A checkpoint must name the head the events before it reached (where this run saw
    /// them) and be signed by a broker key.
    fn checkpoint(
        &mut self,
        links: &Links<'_>,
        e: &AuditEvent,
        signature: SignatureCheck<'_>,
    ) -> Result<(), ChainError> {
        let bad = |why: String| ChainError::BadCheckpoint { seq: e.seq, why };
        let cp = Checkpoint::of(e).ok_or_else(|| bad("a field is missing".into()))?;
        // Events of other replicas absent (one replica's files): the head it covers lies
        // between the event before it here and itself, and the lanes' newest events may be
        // absent too; its replica link (checked) and signature still bind these files.
        let partial =
            self.window || (self.alone(links) && (self.absent > 0 || self.skips_to(e.seq)));
        let mismatch = |p: &&(u64, String)| {
            if partial {
                cp.head.seq < p.0 || cp.head.seq >= e.seq
            } else {
                cp.head.seq != p.0
            }
        };
        if let Some((pseq, _)) = self.previous.as_ref().filter(mismatch) {
            return Err(bad(format!(
                "it covers seq {} but follows seq {pseq}",
                cp.head.seq
            )));
        }
        // The store's window has every replica's events: its lane heads are known.
        let lanes_known = self.window || !partial;
        for lane in Lane::ALL.into_iter().filter(|_| lanes_known) {
            let head = self.heads[slot(lane)].as_ref();
            if head.is_some_and(|(_, h)| cp.head.hash(lane) != h) {
                return Err(bad(format!(
                    "its {} head is not the hash of the {} lane's last event",
                    lane.as_str(),
                    lane.as_str()
                )));
            }
        }
        let message = checkpoint_message(&cp.head, e.replica.as_ref(), e.ts);
        let signature = match signature(&cp.kid, message.as_bytes(), &cp.sig) {
            Some(true) => Signature::Valid(cp.kid.clone()),
            Some(false) => {
                return Err(bad(format!(
                    "its signature does not verify with key {}",
                    cp.kid
                )));
            }
            None => Signature::NotChecked(cp.kid.clone()),
        };
        self.checkpoints += 1;
        self.last_checkpoint = Some(CheckpointSeen {
            seq: e.seq,
            ts: e.ts,
            covers: cp.head.seq,
            signature,
        });
        Ok(())
    }
}

/// Checks a run of events of both lanes, oldest first (by `seq`), with [`ChainVerifier`]
/// (checkpoint signatures not checked). Returns how many events were verified.
pub fn verify_chain(events: &[AuditEvent]) -> Result<usize, ChainError> {
    let mut v = ChainVerifier::new();
    for e in events {
        v.push(e.clone(), &|_, _, _| None)?;
    }
    Ok(events.len())
}
