//! The audit recorder: appends events to this replica's own hash chain in the store (group
//! commit; no other replica writes it, so an append never waits for another), writes them to the durable sink ([`sink`]: a per-replica fsynced file by
//! default) before anyone is answered, signs a checkpoint of the chain head at a fixed interval,
//! copies each event to the export (a SIEM's JSON lines), and counts what it recorded and what
//! it could not, for `/metrics`. It also stamps each event with the id of the
//! HTTP request it was recorded in ([`in_request`]). The events and the chain themselves are
//! [`crate::audit`]'s.

pub mod sink;
pub mod verify;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::{
    AuditEvent, ChainHead, Checkpoint, EventKind, ReplicaHead, Sealed, checkpoint_message, seal,
};
use crate::metrics::Metrics;
use jit_proto::display::clean;

tokio::task_local! {
    /// The id of the HTTP request the current task is serving.
    static REQUEST_ID: String;
}

/// Runs `f` (a request's handling) with `id` as its request id: every event recorded inside it
/// carries `data.request_id`, the same value as the response's `x-request-id`.
pub async fn in_request<F: Future>(id: Option<String>, f: F) -> F::Output {
    match id {
        Some(id) => REQUEST_ID.scope(id, f).await,
        None => f.await,
    }
}

/// Calls `f` with the id of the request being served on this task ([`in_request`]), if any.
/// The broker's log format names it on every line written while a request is served.
pub fn with_request_id<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    // A copy per log line, not per request: lines are few.
    let id = REQUEST_ID.try_with(Clone::clone).ok();
    f(id.as_deref())
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

    /// Appends one event's line (`seq` names it in an error).
    fn write(&self, seq: u64, line: &str) {
        use std::io::Write as _;
        let mut line = line.as_bytes().to_vec();
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
            tracing::error!(target: "audit", error = %e, seq, "audit export failed");
        }
    }
}

/// The replica name of an auditor given none ([`Auditor::new`]): one process on its store.
pub const DEFAULT_REPLICA: &str = "local";
/// Most events written in one store round trip.
const MAX_BATCH: usize = 256;
/// How far past its newest event a writer marks the end of its chain's span in the store
/// ([`crate::store::GrantStore::mark_audit_span`]); it marks again once an event comes within
/// half of that, so about once a minute under steady traffic, never on every append.
const SPAN_LEASE_MS: i64 = 120_000;
/// Events waiting for the writer before callers are made to wait.
const QUEUE: usize = 4096;

type Done = tokio::sync::oneshot::Sender<Result<(), crate::store::StoreError>>;

/// Signs checkpoint statements: returns the key id and the signature (base64url).
pub type CheckpointSigner = dyn Fn(&[u8]) -> Result<(String, String), String> + Send + Sync;

/// The signed checkpoints of the chain head.
#[derive(Clone)]
pub struct Checkpoints {
    /// How often the head is signed (only when events were written since the last one).
    pub interval: Duration,
    /// The broker's signing key.
    pub sign: Arc<CheckpointSigner>,
}

/// Checks a checkpoint signature against the keys of `keys`: `None` for an unknown `kid`.
pub fn key_ring_verifies(
    keys: &crate::keys::KeyRing,
    kid: &str,
    message: &[u8],
    sig: &str,
) -> Option<bool> {
    let key = keys.get(kid)?;
    Some(
        jsonwebtoken::crypto::verify(sig, message, key.decoding(), jsonwebtoken::Algorithm::EdDSA)
            .unwrap_or(false),
    )
}

/// Records audit events: chained into the store (the durable trail), copied to the export
/// and the structured log.
///
/// One writer task per process owns its replica's chain head and appends whatever events are
/// waiting in one compare-and-set round trip (group commit), so the chain stays linear
/// without making every request wait for every other request's round trip. Each replica has
/// its own chain, so replicas never contend; a compare-and-set that fails means another
/// process writes under the same replica name, and is refused. `record` returns only
/// once its event is stored; a failure is returned to the caller, who must then refuse what
/// it was about to allow: there is never an unaudited grant or access.
#[derive(Clone)]
pub struct Auditor {
    inner: std::sync::Arc<AuditorInner>,
}

struct AuditorInner {
    /// Events recorded, by kind, appends that failed and unaudited refusals are counted here.
    metrics: std::sync::Arc<Metrics>,
    store: std::sync::Arc<dyn crate::store::GrantStore>,
    export: Option<std::sync::Arc<Export>>,
    sink: Option<Arc<sink::Sink>>,
    checkpoints: Option<Checkpoints>,
    /// The replica whose chain this auditor writes (`audit.replica`).
    replica: String,
    /// Started on first use, inside the runtime.
    writer: tokio::sync::OnceCell<tokio::sync::mpsc::Sender<(AuditEvent, Done)>>,
}

impl Auditor {
    /// An auditor writing to `store` as replica [`DEFAULT_REPLICA`], copying to `export` if
    /// given, counting into its own metrics.
    pub fn new(
        store: std::sync::Arc<dyn crate::store::GrantStore>,
        export: Option<Export>,
    ) -> Self {
        Self::with_metrics(store, export, std::sync::Arc::new(Metrics::new()))
    }

    /// An auditor writing to `store` as replica [`DEFAULT_REPLICA`], copying to `export` if
    /// given, counting into `metrics`.
    pub fn with_metrics(
        store: std::sync::Arc<dyn crate::store::GrantStore>,
        export: Option<Export>,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Self::durable(store, export, metrics, None, None, DEFAULT_REPLICA)
    }

    /// An auditor writing to `replica`'s chain in `store` and then to `sink` (when given)
    /// before it answers, signing the chain head as `checkpoints` says (when given), copying
    /// to `export`, counting into `metrics`.
    pub fn durable(
        store: std::sync::Arc<dyn crate::store::GrantStore>,
        export: Option<Export>,
        metrics: std::sync::Arc<Metrics>,
        sink: Option<sink::Sink>,
        checkpoints: Option<Checkpoints>,
        replica: &str,
    ) -> Self {
        Self {
            inner: std::sync::Arc::new(AuditorInner {
                metrics,
                store,
                export: export.map(std::sync::Arc::new),
                sink: sink.map(Arc::new),
                checkpoints,
                replica: replica.to_owned(),
                writer: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// The replica whose chain this auditor writes.
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// The durable sink, if any.
    pub fn sink(&self) -> Option<&sink::Sink> {
        self.inner.sink.as_deref()
    }

    /// The metrics this auditor counts into (recorded events by kind, failed appends,
    /// unaudited refusals), which `/metrics` encodes.
    pub fn counts(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The same metrics, shared.
    pub fn metrics(&self) -> std::sync::Arc<Metrics> {
        self.inner.metrics.clone()
    }

    /// Chains and records one event; returns once it is in the store and the durable sink
    /// (an error otherwise, and the caller refuses). Inside a request
    /// ([`in_request`]) the event's `data` gets that request's `request_id`.
    pub async fn record(&self, mut event: AuditEvent) -> Result<(), crate::store::StoreError> {
        if let Ok(id) = REQUEST_ID.try_with(|id| id.clone()) {
            event
                .data
                .entry("request_id")
                .or_insert(serde_json::Value::String(id));
        }
        let stopped = || crate::store::StoreError::Unavailable("audit writer stopped".into());
        let writer = self
            .inner
            .writer
            .get_or_init(|| async {
                let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
                tokio::spawn(write_loop(
                    Writer {
                        store: self.inner.store.clone(),
                        export: self.inner.export.clone(),
                        metrics: self.inner.metrics.clone(),
                        sink: self.inner.sink.clone(),
                        checkpoints: self.inner.checkpoints.clone(),
                        replica: self.inner.replica.clone(),
                    },
                    rx,
                ));
                tx
            })
            .await;
        let (done, result) = tokio::sync::oneshot::channel();
        // The sink waits for announced events before syncing, so one sync covers them.
        let announced = self.inner.sink.as_ref().map(|s| s.announce());
        writer.send((event, done)).await.map_err(|_| stopped())?;
        if let Some(a) = announced {
            a.handed_on();
        }
        result.await.map_err(|_| stopped())?
    }
}

/// What the writer task writes to.
struct Writer {
    store: std::sync::Arc<dyn crate::store::GrantStore>,
    export: Option<std::sync::Arc<Export>>,
    metrics: std::sync::Arc<Metrics>,
    sink: Option<Arc<sink::Sink>>,
    checkpoints: Option<Checkpoints>,
    /// The chain written.
    replica: String,
}

/// Batches whose store append is done and whose sink write may still be running, waiting
/// to be answered in order. Past this many, the writer waits before appending more.
const IN_FLIGHT: usize = 64;

/// A batch in the store, handed to the sink, to be answered once the sink has it.
struct InFlight {
    durable: Result<sink::Durable, sink::SinkError>,
    events: Vec<Sealed>,
    dones: Vec<Done>,
}

/// The writer task: takes what is waiting (up to [`MAX_BATCH`]), chains it onto the head,
/// appends it to the store in one round trip, hands it to the sink and goes on with the next
/// batch while the sink makes this one durable (one fsync covers every batch waiting); each
/// batch's callers are answered, in order, once it is in both. Every checkpoint interval in
/// which events were written, it appends a signed checkpoint of the head. Ends when every
/// `Auditor` is gone.
async fn write_loop(w: Writer, mut rx: tokio::sync::mpsc::Receiver<(AuditEvent, Done)>) {
    let w = Arc::new(w);
    let mut head: Option<ChainHead> = None;
    // Whether this writer entered its chain in the store's roster.
    let mut joined = false;
    // This writer's chain's span (since, until) as last marked in the store.
    let mut span: Option<(i64, i64)> = None;
    // This replica's own chain through its files (continued from what they hold).
    let mut replica: Option<ReplicaHead> = w.sink.as_ref().and_then(|s| s.replica_head());
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let in_flight = w.sink.as_ref().map(|_| {
        let (tx, rx) = tokio::sync::mpsc::channel::<InFlight>(IN_FLIGHT);
        tokio::spawn(answer_loop(w.clone(), rx));
        tx
    });
    let period = w
        .checkpoints
        .as_ref()
        .map_or(Duration::from_secs(3600 * 24 * 365), |c| c.interval);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The seq of this writer's last checkpoint: no new one until events follow it.
    let mut checkpointed = 0u64;
    let mut written = 0u64;
    loop {
        // Events of this batch that callers announced to the sink (a checkpoint is not).
        let mut announced = 0;
        tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    break;
                }
                announced = n;
            }
            _ = tick.tick(), if w.checkpoints.is_some() => {
                if written == checkpointed {
                    continue;
                }
                let ts = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
                let (done, _) = tokio::sync::oneshot::channel();
                batch.push((AuditEvent::new(EventKind::AuditCheckpoint, ts as i64), done));
            }
        }
        let (events, dones): (Vec<AuditEvent>, Vec<Done>) = batch.drain(..).unzip();
        let n = events.len() as u64;
        let events = match append_chained(
            &w,
            &mut head,
            &mut joined,
            &mut span,
            replica.as_mut(),
            events,
        )
        .await
        {
            Ok(events) => events,
            Err(e) => {
                if let Some(sink) = &w.sink {
                    sink.arrived(announced);
                }
                w.metrics.audit_failed(n);
                answer(dones, &Err(e));
                continue;
            }
        };
        if let Some(last) = events.last() {
            written = last.event.seq;
            if last.event.event == EventKind::AuditCheckpoint {
                checkpointed = last.event.seq;
            }
        }
        match (&w.sink, &in_flight) {
            (Some(sink), Some(in_flight)) => {
                let mut lines = Vec::with_capacity(events.iter().map(|e| e.line.len() + 1).sum());
                for e in &events {
                    lines.extend_from_slice(e.line.as_bytes());
                    lines.push(b'\n');
                }
                let first_seq = events.first().map_or(0, |e| e.event.seq);
                sink.arrived(announced);
                let durable = sink.submit(lines, first_seq, events.len());
                let batch = InFlight {
                    durable,
                    events,
                    dones,
                };
                if let Err(tokio::sync::mpsc::error::SendError(batch)) = in_flight.send(batch).await
                {
                    let stopped =
                        crate::store::StoreError::Unavailable("audit sink stopped".into());
                    answer(batch.dones, &Err(stopped));
                }
            }
            _ => {
                w.recorded(&events);
                answer(dones, &Ok(()));
            }
        }
    }
}

/// Answers each batch handed to the sink, in order, once the sink says it is durable.
async fn answer_loop(w: Arc<Writer>, mut rx: tokio::sync::mpsc::Receiver<InFlight>) {
    while let Some(InFlight {
        durable,
        events,
        dones,
    }) = rx.recv().await
    {
        let durable = match durable {
            Ok(d) => d.wait().await,
            Err(e) => Err(e),
        };
        let result = match durable {
            Ok(()) => {
                w.recorded(&events);
                Ok(())
            }
            Err(e) => {
                // The events are in the store; the sink keeps them and writes them, in chain
                // order, before anything newer. The decisions they record are refused.
                w.metrics.audit_failed(events.len() as u64);
                tracing::error!(target: "audit", error = %e, events = events.len(), "audit events not written to the sink; refusing");
                Err(crate::store::StoreError::Unavailable(e.to_string()))
            }
        };
        answer(dones, &result);
    }
}

/// Tells every caller of a batch how it went.
fn answer(dones: Vec<Done>, result: &Result<(), crate::store::StoreError>) {
    for done in dones {
        // A caller that went away no longer needs the answer.
        let _ = done.send(result.clone());
    }
}

impl Writer {
    /// Counts, logs and exports `events`, recorded.
    fn recorded(&self, events: &[Sealed]) {
        for Sealed { event: e, line } in events {
            self.metrics.audit_event(e.event.as_str());
            // Subjects come from identity providers, repositories and denials from
            // requests: inert text in the log, whatever the log's format.
            tracing::info!(
                target: "audit",
                event = %clean(e.event.as_str()),
                seq = e.seq,
                subject = e.subject.as_deref().map(clean).as_deref(),
                repo = e.repo.as_deref().map(clean).as_deref(),
                jti = e.jti.as_deref().map(clean).as_deref(),
                denial = e.denial.as_deref().map(clean).as_deref(),
                "audit"
            );
            if let Some(x) = &self.export {
                x.write(e.seq, line);
            }
        }
    }
}

/// Chains `events` onto this replica's chain head, each on its kind's lane, seals each
/// (its hash and its line, [`seal`]) and appends them in one compare-and-set. A checkpoint
/// event gets the signature of the head it follows.
///
/// The first append enters the replica in the store's roster of chains; a chain that does
/// not exist yet starts where the chain from before replica chains ended (so a replica's
/// files run on in seq order). The head is cached between batches and re-read after any
/// failure. Only this replica writes its chain: a compare-and-set that fails on a freshly
/// read head means another process writes under the same name, and the batch is refused.
///
/// With `replica` (a file sink), each event is also linked into this replica's own chain
/// through its files; that head moves only once the store has taken the batch.
async fn append_chained(
    w: &Writer,
    head: &mut Option<ChainHead>,
    joined: &mut bool,
    span: &mut Option<(i64, i64)>,
    replica: Option<&mut ReplicaHead>,
    events: Vec<AuditEvent>,
) -> Result<Vec<Sealed>, crate::store::StoreError> {
    let store = &*w.store;
    let chain = w.replica.as_str();
    let n = events.len();
    let failed = |e: crate::store::StoreError| {
        tracing::error!(target: "audit", error = %e, events = n, replica = %chain, "audit events not recorded");
        e
    };
    if !*joined {
        let start = store
            .audit_head(crate::store::LEGACY_CHAIN)
            .await
            .map_err(failed)?
            .unwrap_or_default();
        store.join_audit(chain, &start).await.map_err(failed)?;
        *joined = true;
    }
    mark_span(store, chain, span, &events)
        .await
        .map_err(failed)?;
    let (current, fresh) = match head.take() {
        Some(h) => (h, false),
        None => (
            store
                .audit_head(chain)
                .await
                .map_err(failed)?
                .unwrap_or_default(),
            true,
        ),
    };
    let mut next = current.clone();
    let mut next_replica = replica.as_deref().cloned();
    let mut sealed = Vec::with_capacity(n);
    for mut e in events {
        let lane = e.event.lane();
        e.lane = Some(lane);
        e.replica = next_replica.as_ref().map(ReplicaHead::next_link);
        if e.event == EventKind::AuditCheckpoint {
            sign_checkpoint(w.checkpoints.as_ref(), &next, &mut e)?;
        }
        e.seq = next.seq + 1;
        e.prev = next.hash(lane).to_owned();
        let s = seal(e);
        next.advance(lane, &s.event);
        if let Some(r) = next_replica.as_mut() {
            r.advance(&s.event);
        }
        sealed.push(s);
    }
    match store
        .append_sealed(chain, &sealed, current.seq, &next)
        .await
    {
        Ok(true) => {
            *head = Some(next);
            if let (Some(r), Some(n)) = (replica, next_replica) {
                *r = n;
            }
            Ok(sealed)
        }
        // Only this replica writes its chain: the head moved under it, so another process
        // uses the same replica name. Both would fork one chain; refuse, loudly.
        Ok(false) => Err(failed(crate::store::StoreError::Unavailable(format!(
            "the audit chain of replica {chain:?} was advanced by another process{}: two brokers \
             share that replica name; give each its own audit.replica",
            if fresh {
                ""
            } else {
                " (or an earlier answer was lost)"
            }
        )))),
        Err(e) => Err(failed(e)),
    }
}

/// Keeps the end of `chain`'s span in the store ahead of every place `events` can take
/// (their times, or the chain's greatest before them), so a read never skips the chain
/// while it holds events in its range: at the first batch from where the chain stands in the
/// store, then whenever an event comes within half a lease of the end (or, its clock gone
/// back, before the start: a span starts no later than any of its events' own times).
async fn mark_span(
    store: &dyn crate::store::GrantStore,
    chain: &str,
    span: &mut Option<(i64, i64)>,
    events: &[AuditEvent],
) -> Result<(), crate::store::StoreError> {
    let (Some(oldest), Some(newest)) = (
        events.iter().map(|e| e.ts).min(),
        events.iter().map(|e| e.ts).max(),
    ) else {
        return Ok(());
    };
    let (since, top, until) = match *span {
        Some((since, until))
            if oldest >= since && newest <= until.saturating_sub(SPAN_LEASE_MS / 2) =>
        {
            return Ok(());
        }
        Some((since, until)) => (since.min(oldest), newest, until),
        None => match store.audit_extent(chain).await? {
            // A chain written before spans were kept may have times out of order: a minute
            // of slack at its start.
            Some((first, last)) => (
                first.saturating_sub(60_000).min(oldest),
                last.max(newest),
                i64::MIN,
            ),
            None => (oldest, newest, i64::MIN),
        },
    };
    let until = until.max(top.saturating_add(SPAN_LEASE_MS));
    store.mark_audit_span(chain, since, until).await?;
    *span = Some((since, until));
    Ok(())
}

/// Fills a checkpoint event with the signed statement of `head` (the head it follows).
fn sign_checkpoint(
    checkpoints: Option<&Checkpoints>,
    head: &ChainHead,
    e: &mut AuditEvent,
) -> Result<(), crate::store::StoreError> {
    let unsigned = |why: String| {
        crate::store::StoreError::Unavailable(format!("audit checkpoint not signed: {why}"))
    };
    let c = checkpoints.ok_or_else(|| unsigned("no signing key".into()))?;
    let message = checkpoint_message(head, e.replica.as_ref(), e.ts);
    let (kid, sig) = (c.sign)(message.as_bytes()).map_err(unsigned)?;
    Checkpoint {
        head: head.clone(),
        kid,
        sig,
    }
    .fill(e);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditQuery, ChainError, Lane, chain_hash, verify_chain};
    use crate::store::GrantStore;
    use crate::store::memory::MemoryStore;
    use std::sync::Arc;

    /// An auditor writing as `replica`, with no sink.
    fn replica(store: &Arc<dyn GrantStore>, replica: &str) -> Auditor {
        let metrics = Arc::new(Metrics::new());
        Auditor::durable(store.clone(), None, metrics, None, None, replica)
    }

    async fn chained(n: usize) -> Vec<AuditEvent> {
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(1000));
        let a = Auditor::new(store.clone(), None);
        for i in 0..n {
            let mut e = AuditEvent::new("access.allowed", 1000 + i as i64).with("i", i);
            e.subject = Some(format!("user{i}"));
            a.record(e).await.expect("recorded");
        }
        store
            .read_audit(&AuditQuery {
                limit: usize::MAX,
                ..Default::default()
            })
            .await
            .expect("read")
    }

    async fn chain_of(store: &Arc<dyn GrantStore>, replica: &str) -> Vec<AuditEvent> {
        store
            .read_chain(
                replica,
                &AuditQuery {
                    limit: usize::MAX,
                    ..Default::default()
                },
            )
            .await
            .expect("read")
    }

    #[tokio::test]
    async fn intact_chain_verifies_across_replicas() {
        let events = chained(6).await;
        assert_eq!(verify_chain(&events), Ok(6));
        assert_eq!(events[0].seq, 1);
        assert_eq!(events[5].seq, 6);
        // Two replicas: each its own chain, each whole.
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(1000));
        let (a, b) = (replica(&store, "a"), replica(&store, "b"));
        for i in 0..6 {
            let who = if i % 2 == 0 { &a } else { &b };
            who.record(AuditEvent::new("grant.issued", i))
                .await
                .expect("recorded");
        }
        for r in ["a", "b"] {
            let chain = chain_of(&store, r).await;
            assert_eq!(chain.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
            assert_eq!(verify_chain(&chain), Ok(3));
        }
        assert_eq!(
            store
                .read_audit(&AuditQuery {
                    limit: 100,
                    ..Default::default()
                })
                .await
                .expect("read")
                .len(),
            6
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_from_two_replicas_form_two_chains() {
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(10_000));
        let replicas = [replica(&store, "a"), replica(&store, "b")];
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
        for r in ["a", "b"] {
            let chain = chain_of(&store, r).await;
            assert_eq!(verify_chain(&chain), Ok(200));
        }
        assert_eq!(store.audit_replicas().await.expect("roster"), ["a", "b"]);
    }

    /// A writer keeps its chain's span ahead of its events by a lease, marking it again only
    /// when an event comes within half of it: a page after the span's end skips the chain,
    /// and no event is ever placed past the span's end.
    #[tokio::test]
    async fn a_writer_keeps_its_span_ahead_of_its_events() {
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(10_000));
        let a = replica(&store, "a");
        let span = || async {
            let chains = store.audit_chains(i64::MIN).await.expect("chains").chains;
            chains
                .iter()
                .find(|c| c.chain == "a")
                .map(|c| (c.since, c.until))
        };
        let t0 = 1_700_000_000_000;
        a.record(AuditEvent::new("grant.issued", t0))
            .await
            .expect("recorded");
        assert_eq!(span().await, Some((t0, t0 + SPAN_LEASE_MS)));
        // Within the first half of the lease: not marked again.
        a.record(AuditEvent::new("grant.issued", t0 + SPAN_LEASE_MS / 2))
            .await
            .expect("recorded");
        assert_eq!(span().await, Some((t0, t0 + SPAN_LEASE_MS)));
        // Past it: the end moves on, a lease past the event.
        let later = t0 + SPAN_LEASE_MS / 2 + 1;
        a.record(AuditEvent::new("grant.issued", later))
            .await
            .expect("recorded");
        assert_eq!(span().await, Some((t0, later + SPAN_LEASE_MS)));
        // A clock that goes back: the event is placed at the chain's greatest time so far,
        // inside the span.
        a.record(AuditEvent::new("grant.issued", t0 - 5_000))
            .await
            .expect("recorded");
        let (since, until) = span().await.expect("span");
        assert!(since <= t0 - 5_000 && until >= later);
        assert_eq!(
            store.audit_extent("a").await.expect("extent"),
            Some((t0, later))
        );
        let after_end = store
            .audit_chains(later + SPAN_LEASE_MS + 1)
            .await
            .expect("chains");
        assert!(after_end.chains.is_empty(), "{after_end:?}");
        assert_eq!(after_end.roster, 1);
    }

    /// Two processes writing under one replica name would fork its chain: the one whose
    /// head moved under it is refused (its decision with it), naming the name and the key.
    #[tokio::test]
    async fn two_writers_under_one_replica_name_are_refused() {
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(1000));
        let (first, second) = (replica(&store, "a"), replica(&store, "a"));
        first
            .record(AuditEvent::new("grant.issued", 1))
            .await
            .expect("recorded");
        second
            .record(AuditEvent::new("grant.issued", 2))
            .await
            .expect("continues from the head it read");
        let err = first
            .record(AuditEvent::new("grant.issued", 3))
            .await
            .expect_err("its head moved under it");
        let text = err.to_string();
        assert!(
            text.contains("replica \"a\"") && text.contains("audit.replica"),
            "{text}"
        );
        let chain = chain_of(&store, "a").await;
        assert_eq!(
            verify_chain(&chain),
            Ok(2),
            "nothing of the refused batch landed"
        );
        let (_, failed) = first.counts().snapshot();
        assert_eq!(failed, 1);
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
            Err(ChainError::LaneBroken { seq: 4, .. })
        ));
    }

    #[tokio::test]
    async fn a_hash_in_any_other_spelling_is_altered() {
        // The same digest written in capitals, cut short, or with a stray byte: not the
        // hash the chain wrote, so not verified (digests are compared as bytes).
        for spell in [
            |h: &str| h.to_uppercase(),
            |h: &str| h[..63].to_owned(),
            |h: &str| format!("{h} "),
            |h: &str| format!("0x{}", &h[2..]),
        ] {
            let mut events = chained(3).await;
            events[1].hash = spell(&events[1].hash);
            assert!(
                matches!(
                    verify_chain(&events),
                    Err(ChainError::Altered { seq: 2, .. })
                ),
                "{}",
                events[1].hash
            );
        }
        assert!(verify_chain(&chained(3).await).is_ok());
    }

    #[tokio::test]
    async fn detects_deletion() {
        let mut events = chained(5).await;
        events.remove(2);
        assert!(matches!(
            verify_chain(&events),
            Err(ChainError::LaneBroken {
                seq: 4,
                previous_seq: 2,
                lane: "traffic",
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
            Err(ChainError::LaneBroken { seq: 3, .. })
        ));
        // Out of seq order even where each lane still links: refused too.
        let mut events = mixed().await;
        events.swap(0, 1);
        assert!(matches!(
            verify_chain(&events),
            Err(ChainError::Broken { seq: 1, .. })
        ));
    }

    /// Evidence and traffic interleaved: g1 d2 d3 g4 d5 d6 g7 (g grant, d denial).
    async fn mixed() -> Vec<AuditEvent> {
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(1000));
        let a = Auditor::new(store.clone(), None);
        for (i, kind) in [
            "grant.issued",
            "access.denied",
            "access.denied",
            "grant.revoked",
            "access.denied",
            "access.denied",
            "grant.issued",
        ]
        .into_iter()
        .enumerate()
        {
            a.record(AuditEvent::new(kind, 1000 + i as i64))
                .await
                .expect("recorded");
        }
        store
            .read_audit(&AuditQuery {
                limit: usize::MAX,
                ..Default::default()
            })
            .await
            .expect("read")
    }

    /// Each lane is its own chain: traffic trimmed (from its start, or all of it) leaves the
    /// evidence verifiable, and deleting evidence amid traffic is still caught.
    #[tokio::test]
    async fn lanes_chain_separately() {
        let events = mixed().await;
        assert_eq!(verify_chain(&events), Ok(7));
        let lanes: Vec<Option<Lane>> = events.iter().map(|e| e.lane).collect();
        let (g, d) = (Some(Lane::Evidence), Some(Lane::Traffic));
        assert_eq!(lanes, [g, d, d, g, d, d, g]);
        // Traffic trimmed from its start (the oldest two denials gone): intact.
        let trimmed: Vec<AuditEvent> = events
            .iter()
            .filter(|e| !(e.lane == d && e.seq <= 3))
            .cloned()
            .collect();
        assert_eq!(verify_chain(&trimmed), Ok(5));
        // No traffic at all: the evidence alone is intact.
        let evidence: Vec<AuditEvent> = events.iter().filter(|e| e.lane == g).cloned().collect();
        assert_eq!(verify_chain(&evidence), Ok(3));
        // A grant removed from amid traffic: the next grant no longer links.
        let mut cut = events.clone();
        cut.remove(3);
        assert!(matches!(
            verify_chain(&cut),
            Err(ChainError::LaneBroken {
                seq: 7,
                previous_seq: 1,
                lane: "evidence",
                ..
            })
        ));
    }

    /// A trail written before lanes (one chain, no `lane`) is continued by both lanes from
    /// its last event, and the whole verifies.
    #[tokio::test]
    async fn version_1_chain_continues_into_lanes() {
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(1000));
        let mut head = crate::audit::ChainHead::default();
        let mut old = Vec::new();
        for (i, kind) in ["grant.issued", "access.denied"].into_iter().enumerate() {
            let mut e = AuditEvent::new(kind, i as i64);
            e.v = 1;
            e.seq = i as u64 + 1;
            e.prev = head.evidence.clone();
            e.hash = chain_hash(&e);
            head =
                crate::audit::ChainHead::decode(&format!("{} {}", e.seq, e.hash)).expect("v1 head");
            old.push(e);
        }
        assert!(
            store
                .append_audit(crate::store::LEGACY_CHAIN, &old, 0, &head)
                .await
                .expect("append")
        );
        let a = Auditor::new(store.clone(), None);
        for kind in ["access.denied", "grant.issued"] {
            a.record(AuditEvent::new(kind, 10)).await.expect("recorded");
        }
        let all = store
            .read_audit(&AuditQuery {
                limit: usize::MAX,
                ..Default::default()
            })
            .await
            .expect("read");
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(
            all[2].prev, all[1].hash,
            "both lanes continue the old chain"
        );
        assert_eq!(all[3].prev, all[1].hash);
        assert_eq!(verify_chain(&all), Ok(4));
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

    /// An auditor with a file sink in `dir` (a new file for every batch).
    fn with_files(store: &Arc<dyn GrantStore>, dir: &std::path::Path) -> Auditor {
        let sink = sink::Sink::open(sink::SinkTarget::File {
            dir: dir.to_path_buf(),
            replica: "r1".into(),
            rotate_bytes: 1,
        })
        .expect("sink");
        let metrics = Arc::new(Metrics::new());
        Auditor::durable(store.clone(), None, metrics, Some(sink), None, "r1")
    }

    fn no_keys(_: &str, _: &[u8], _: &str) -> Option<bool> {
        None
    }

    /// Many callers at once: each is answered only once its event is in the store and in
    /// the files, and the files hold every event, in chain order, verifying against the
    /// store's head.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_are_durable_in_chain_order() {
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(10_000));
        let a = with_files(&store, dir.path());
        let calls: Vec<_> = (0..400)
            .map(|i| {
                let a = a.clone();
                tokio::spawn(
                    async move { a.record(AuditEvent::new("access.allowed", 1000 + i)).await },
                )
            })
            .collect();
        for c in calls {
            c.await.expect("task").expect("recorded");
        }
        let heads = verify::chain_heads(&*store).await.expect("heads");
        assert_eq!(heads.get("r1"), Some(&400));
        let report =
            verify::verify_replica_files(&[dir.path().to_path_buf()], &no_keys, Some(&heads))
                .expect("files verify to the store's head");
        assert!(report.contains("400 events, seq 1..=400"), "{report}");
    }

    /// The sink fails: the caller is refused (the event is in the store, but not durable);
    /// once the sink can write again, what it missed is written first, in chain order, and
    /// the files verify.
    #[tokio::test]
    async fn a_sink_failure_refuses_and_the_files_catch_up_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(1000));
        let a = with_files(&store, dir.path());
        a.record(AuditEvent::new("grant.issued", 1))
            .await
            .expect("recorded");
        let squatted = dir.path().join(sink::file_name("r1", 2));
        std::fs::create_dir(&squatted).expect("squat the next file's name");
        let err = a
            .record(AuditEvent::new("grant.issued", 2))
            .await
            .expect_err("not durable: refused");
        assert!(err.to_string().contains("audit sink"), "{err}");
        assert_eq!(a.counts().snapshot().1, 1);
        std::fs::remove_dir(&squatted).expect("free the name");
        a.record(AuditEvent::new("grant.issued", 3))
            .await
            .expect("recorded");
        let heads = verify::chain_heads(&*store).await.expect("heads");
        assert_eq!(heads.get("r1"), Some(&3));
        let report =
            verify::verify_replica_files(&[dir.path().to_path_buf()], &no_keys, Some(&heads))
                .expect("files verify to the store's head");
        assert!(report.contains("3 events, seq 1..=3"), "{report}");
    }
}
