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

/// Where audit events are copied as JSON lines, for a SIEM.
pub enum Export {
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(std::sync::Mutex<std::fs::File>),
}

impl Export {
    /// Opens (creating, appending) an export file.
    pub fn file(path: &std::path::Path) -> std::io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Export::File(std::sync::Mutex::new(f)))
    }

    fn write(&self, event: &AuditEvent) {
        use std::io::Write as _;
        let Ok(mut line) = serde_json::to_vec(event) else {
            return;
        };
        line.push(b'\n');
        let result = match self {
            Export::Stdout => std::io::stdout().lock().write_all(&line),
            Export::File(f) => match f.lock() {
                Ok(mut f) => f.write_all(&line),
                Err(_) => Err(std::io::Error::other("export file lock poisoned")),
            },
        };
        if let Err(e) = result {
            // The store holds the authoritative, chained copy; a failed export is loud, not fatal.
            tracing::error!(target: "audit", error = %e, seq = event.seq, "audit export failed");
        }
    }
}

/// How long an append keeps retrying while other replicas keep writing first.
const CHAIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);
/// Most events written in one store round trip.
const MAX_BATCH: usize = 256;
/// Events waiting for the writer before callers are made to wait.
const QUEUE: usize = 4096;

type Done = tokio::sync::oneshot::Sender<Result<(), crate::store::StoreError>>;

/// Records audit events: chained into the store (the durable trail), copied to the export
/// and the structured log.
///
/// One writer task per process owns the chain head and appends whatever events are waiting
/// in one compare-and-set round trip (group commit), so the chain stays linear without
/// making every request wait for every other request's round trip. `record` returns only
/// once its event is stored; a failure is returned to the caller, who must then refuse what
/// it was about to allow: there is never an unaudited grant or access.
#[derive(Clone)]
pub struct Auditor {
    inner: std::sync::Arc<AuditorInner>,
}

struct AuditorInner {
    /// Events recorded, by kind, and appends that failed: the broker's `/metrics`.
    counts: std::sync::Arc<Counts>,
    store: std::sync::Arc<dyn crate::store::GrantStore>,
    export: Option<std::sync::Arc<Export>>,
    /// Started on first use, inside the runtime.
    writer: tokio::sync::OnceCell<tokio::sync::mpsc::Sender<(AuditEvent, Done)>>,
}

impl Auditor {
    /// An auditor writing to `store`, copying to `export` if given.
    pub fn new(
        store: std::sync::Arc<dyn crate::store::GrantStore>,
        export: Option<Export>,
    ) -> Self {
        Self {
            inner: std::sync::Arc::new(AuditorInner {
                counts: std::sync::Arc::new(Counts::default()),
                store,
                export: export.map(std::sync::Arc::new),
                writer: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// What this process has recorded so far.
    pub fn counts(&self) -> &Counts {
        &self.inner.counts
    }

    /// Chains and records one event; returns once it is in the store.
    pub async fn record(&self, event: AuditEvent) -> Result<(), crate::store::StoreError> {
        let stopped = || crate::store::StoreError::Unavailable("audit writer stopped".into());
        let writer = self
            .inner
            .writer
            .get_or_init(|| async {
                let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
                tokio::spawn(write_loop(
                    self.inner.store.clone(),
                    self.inner.export.clone(),
                    self.inner.counts.clone(),
                    rx,
                ));
                tx
            })
            .await;
        let (done, result) = tokio::sync::oneshot::channel();
        writer.send((event, done)).await.map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

/// Audit events recorded by kind, and failed appends, for `/metrics`.
#[derive(Default)]
pub struct Counts {
    by_kind: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    failed: std::sync::atomic::AtomicU64,
    unaudited: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl Counts {
    fn add(&self, events: &[AuditEvent], recorded: bool) {
        if !recorded {
            self.failed
                .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        if let Ok(mut m) = self.by_kind.lock() {
            for e in events {
                *m.entry(e.event.clone()).or_default() += 1;
            }
        }
    }

    /// Counts a refusal that is deliberately not an audit event (`no_credential`: git's first,
    /// credential-less request of every clone; `refused_over_limit`: an address presenting
    /// refused credentials faster than its budget), so a flood cannot push the trail out.
    pub fn unaudited(&self, reason: &'static str) {
        if let Ok(mut m) = self.unaudited.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// The [`Counts::unaudited`] counts, sorted by reason.
    pub fn unaudited_snapshot(&self) -> Vec<(&'static str, u64)> {
        self.unaudited
            .lock()
            .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default()
    }

    /// `(kind, count)` pairs, sorted, and the failed count.
    pub fn snapshot(&self) -> (Vec<(String, u64)>, u64) {
        let kinds = self
            .by_kind
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        (
            kinds,
            self.failed.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// The writer task: takes what is waiting (up to [`MAX_BATCH`]), chains it onto the head,
/// appends it in one round trip, answers every caller. Ends when every `Auditor` is gone.
async fn write_loop(
    store: std::sync::Arc<dyn crate::store::GrantStore>,
    export: Option<std::sync::Arc<Export>>,
    counts: std::sync::Arc<Counts>,
    mut rx: tokio::sync::mpsc::Receiver<(AuditEvent, Done)>,
) {
    let mut head: Option<(u64, String)> = None;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (mut events, dones): (Vec<AuditEvent>, Vec<Done>) = batch.drain(..).unzip();
        let result = append_chained(&*store, &mut head, &mut events).await;
        counts.add(&events, result.is_ok());
        if result.is_ok() {
            for e in &events {
                tracing::info!(
                    target: "audit",
                    event = %e.event,
                    seq = e.seq,
                    subject = e.subject.as_deref(),
                    repo = e.repo.as_deref(),
                    jti = e.jti.as_deref(),
                    denial = e.denial.as_deref(),
                    "audit"
                );
                if let Some(x) = &export {
                    x.write(e);
                }
            }
        }
        for done in dones {
            // A caller that went away no longer needs the answer.
            let _ = done.send(result.clone());
        }
    }
}

/// Chains `events` onto the head and appends them, re-reading the head when another replica
/// wrote first.
async fn append_chained(
    store: &dyn crate::store::GrantStore,
    head: &mut Option<(u64, String)>,
    events: &mut [AuditEvent],
) -> Result<(), crate::store::StoreError> {
    let started = std::time::Instant::now();
    let mut conflicts = 0u32;
    while started.elapsed() < CHAIN_PATIENCE {
        let (seq, prev) = match head.as_ref() {
            Some(h) => h.clone(),
            None => match store.audit_head().await {
                Ok(h) => h.unwrap_or((0, String::new())),
                Err(e) => return Err(e),
            },
        };
        let (mut next_seq, mut prev_hash) = (seq, prev);
        for e in events.iter_mut() {
            next_seq += 1;
            e.seq = next_seq;
            e.prev = std::mem::take(&mut prev_hash);
            e.hash = chain_hash(e);
            prev_hash = e.hash.clone();
        }
        match store.append_audit(events, seq).await {
            Ok(true) => {
                *head = Some((next_seq, prev_hash));
                return Ok(());
            }
            // Another replica appended first: learn the new head and try again, after a
            // random pause that grows with the conflicts, so that two busy writers cannot
            // keep beating each other to the head forever.
            Ok(false) => {
                *head = None;
                conflicts += 1;
                backoff(conflicts).await;
            }
            Err(e) => {
                *head = None;
                tracing::error!(target: "audit", error = %e, events = events.len(), "audit events not recorded");
                return Err(e);
            }
        }
    }
    Err(crate::store::StoreError::Unavailable(
        "audit chain contended; event not recorded".into(),
    ))
}

/// A pause after the `n`th lost race in a row: a yield at first, then up to `n` ms, random.
async fn backoff(n: u32) {
    if n < 3 {
        tokio::task::yield_now().await;
        return;
    }
    let mut byte = [0u8; 2];
    // A failed random draw only makes the pause deterministic, which is still correct.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    let max_us = u64::from(n.min(20)) * 1000;
    let us = u64::from(u16::from_le_bytes(byte)) % max_us.max(1);
    tokio::time::sleep(std::time::Duration::from_micros(us)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::GrantStore;
    use crate::store::memory::MemoryStore;
    use std::sync::Arc;

    async fn chained(n: usize) -> Vec<AuditEvent> {
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(1000));
        let a = Auditor::new(store.clone(), None);
        let b = Auditor::new(store.clone(), None); // a second replica on the same store
        for i in 0..n {
            let who = if i % 2 == 0 { &a } else { &b };
            let mut e = AuditEvent::new("access.allowed", 1000 + i as i64).with("i", i);
            e.subject = Some(format!("user{i}"));
            who.record(e).await.expect("recorded");
        }
        store
            .read_audit(&AuditQuery {
                limit: usize::MAX,
                ..Default::default()
            })
            .await
            .expect("read")
    }

    #[tokio::test]
    async fn intact_chain_verifies_across_replicas() {
        let events = chained(6).await;
        assert_eq!(verify_chain(&events), Ok(6));
        assert_eq!(events[0].seq, 1);
        assert_eq!(events[5].seq, 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_from_two_replicas_form_one_chain() {
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(10_000));
        let replicas = [
            Auditor::new(store.clone(), None),
            Auditor::new(store.clone(), None),
        ];
        let mut tasks = Vec::new();
        for i in 0..400 {
            let a = replicas[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                a.record(AuditEvent::new("access.allowed", i as i64)).await
            }));
        }
        for t in tasks {
            t.await.expect("task").expect("recorded");
        }
        let all = store
            .read_audit(&AuditQuery {
                limit: usize::MAX,
                ..Default::default()
            })
            .await
            .expect("read");
        assert_eq!(all.len(), 400);
        assert_eq!(verify_chain(&all), Ok(400));
    }

    #[tokio::test]
    async fn counts_what_was_recorded_for_metrics() {
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(100));
        let a = Auditor::new(store, None);
        for kind in ["grant.issued", "access.denied", "access.denied"] {
            a.record(AuditEvent::new(kind, 1)).await.expect("recorded");
        }
        let (kinds, failed) = a.counts().snapshot();
        assert_eq!(
            kinds,
            [
                ("access.denied".to_owned(), 2),
                ("grant.issued".to_owned(), 1)
            ]
        );
        assert_eq!(failed, 0);
    }

    #[tokio::test]
    async fn detects_edit() {
        let mut events = chained(5).await;
        events[2].subject = Some("mallory".into());
        assert!(matches!(
            verify_chain(&events),
            Err(ChainError::Altered { seq: 3, .. })
        ));
        // Re-hashing the edited event does not help: the next link breaks.
        events[2].hash = chain_hash(&events[2]);
        assert!(matches!(
            verify_chain(&events),
            Err(ChainError::Broken { seq: 4, .. })
        ));
    }

    #[tokio::test]
    async fn detects_deletion() {
        let mut events = chained(5).await;
        events.remove(2);
        assert!(matches!(
            verify_chain(&events),
            Err(ChainError::Broken {
                seq: 4,
                expected_seq: 3,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn detects_reordering() {
        let mut events = chained(5).await;
        events.swap(1, 2);
        assert!(matches!(
            verify_chain(&events),
            Err(ChainError::Broken { .. })
        ));
    }

    #[tokio::test]
    async fn export_writes_json_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("audit.jsonl");
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(10));
        let a = Auditor::new(store, Some(Export::file(&path).expect("open")));
        a.record(AuditEvent::new("grant.issued", 1))
            .await
            .expect("ok");
        a.record(AuditEvent::new("grant.denied", 2))
            .await
            .expect("ok");
        let text = std::fs::read_to_string(&path).expect("read");
        let events: Vec<AuditEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(verify_chain(&events), Ok(2));
    }
}
