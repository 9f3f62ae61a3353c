//! The durable audit sink: where every audit event is written before the decision it records
//! is answered. By default a per-replica append-only JSON-lines file with group-committed
//! fsync; syslog and standard output are options.
//!
//! One writer thread owns the file. Callers hand it their batch over a channel and wait for
//! its answer; the thread takes whatever is waiting, writes it, and makes it durable with one
//! `fdatasync` — so one sync covers every batch that arrived while the previous one ran, and
//! before syncing it waits for the events the recorder has announced and not yet handed over
//! (`gather`: at most 1 ms), so that under load one sync covers every request in flight,
//! and a lone batch is synced at once. A
//! failed write is cut off again (the file never keeps half a line) and answered as an error,
//! which the recorder turns into a refusal.
//!
//! Files are named `audit-<replica>-<first seq, 20 digits>.jsonl` and rotated by size; the hash
//! chain runs on across files (and across replicas' files, merged by seq), so a directory of
//! them verifies as one trail ([`TrailReader`]).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::audit::{AuditEvent, ReplicaHead};

/// Why the sink could not take an event.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing or syncing failed.
    #[error("audit sink {target}: {error}")]
    Io {
        /// The file or socket.
        target: String,
        /// The I/O error (part of the message, not a separate cause: printed once).
        error: std::io::Error,
    },
    /// The writer thread is gone.
    #[error("audit sink stopped")]
    Stopped,
    /// Another live broker writes under the same replica name in the same folder.
    #[error(
        "audit sink {dir}: another broker writes as replica {replica:?} here; give each its own audit.replica"
    )]
    ReplicaInUse {
        /// The folder.
        dir: String,
        /// The name.
        replica: String,
    },
}

/// Where the durable copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    /// Append-only JSON-lines files in `dir`, fsynced, rotated past `rotate_bytes`.
    File {
        /// The directory (created 0700 when missing).
        dir: PathBuf,
        /// This replica's name, in the file names.
        replica: String,
        /// Size past which the next batch starts a new file.
        rotate_bytes: u64,
    },
    /// The local syslog daemon (`/dev/log`), facility authpriv.
    Syslog,
    /// Standard output, one JSON line per event, flushed.
    Stdout,
}

/// The file name of a trail file of `replica` starting at `seq`.
pub fn file_name(replica: &str, seq: u64) -> String {
    format!("audit-{replica}-{seq:020}.jsonl")
}

/// The replica and first seq a trail file's name carries.
pub fn parse_file_name(name: &str) -> Option<(&str, u64)> {
    let stem = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    let (replica, seq) = stem.rsplit_once('-')?;
    (seq.len() == 20 && !replica.is_empty())
        .then(|| seq.parse().ok())
        .flatten()
        .map(|s| (replica, s))
}

type Reply = tokio::sync::oneshot::Sender<Result<(), SinkError>>;

/// Events the sink keeps after it failed to write them (they are in the store; the sink
/// writes them, in order, before anything newer). Past this, the oldest are given up and the
/// files show the gap.
const MAX_CARRIED: usize = 100_000;

/// A batch of JSON lines, oldest first.
struct Chunk {
    /// The lines, each ending in a newline.
    lines: Vec<u8>,
    /// The first line's seq (names a new file).
    first_seq: u64,
    /// How many lines.
    events: usize,
}

struct Job {
    chunk: Chunk,
    reply: Reply,
}

/// The answer to a batch handed to the sink ([`Sink::submit`]): whether it is durable.
pub struct Durable(tokio::sync::oneshot::Receiver<Result<(), SinkError>>);

impl Durable {
    /// Waits until the batch is durable (for a file: written and fsynced), or failed.
    pub async fn wait(self) -> Result<(), SinkError> {
        self.0.await.map_err(|_| SinkError::Stopped)?
    }
}

/// The durable audit sink (see the module docs).
pub struct Sink {
    tx: std::sync::mpsc::Sender<Job>,
    /// Events announced ([`Sink::announce`]) and not yet handed over: the sink waits for them
    /// before syncing.
    coming: Arc<AtomicUsize>,
    target: SinkTarget,
    /// For files: where this replica's chain ended in them when the sink opened.
    replica: Option<ReplicaHead>,
}

impl Sink {
    /// Opens `target` (creating the directory, connecting to syslog) and starts its writer
    /// thread.
    pub fn open(target: SinkTarget) -> Result<Self, SinkError> {
        let backend = Backend::open(&target)?;
        let replica = match &target {
            SinkTarget::File { dir, replica, .. } => Some(replica_head_in(dir, replica).map_err(
                |source| SinkError::Io {
                    target: dir.display().to_string(),
                    error: source,
                },
            )?),
            _ => None,
        };
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let coming = Arc::new(AtomicUsize::new(0));
        let waiting_for = coming.clone();
        std::thread::Builder::new()
            .name("audit-sink".into())
            .spawn(move || write_loop(backend, &rx, &waiting_for))
            .map_err(|source| SinkError::Io {
                target: "writer thread".into(),
                error: source,
            })?;
        Ok(Self {
            tx,
            coming,
            target,
            replica,
        })
    }

    /// Announces one event on its way to the sink: until it is handed over (the recorder
    /// calls [`Sink::arrived`] with [`Sink::submit`]), the sink waits for it before syncing.
    /// Dropping the guard before [`Announced::handed_on`] takes the announcement back.
    pub fn announce(&self) -> Announced<'_> {
        self.coming.fetch_add(1, Ordering::AcqRel);
        Announced {
            coming: &self.coming,
            armed: true,
        }
    }

    /// `n` announced events are about to be handed over (call it before [`Sink::submit`], so
    /// a gathering sink never waits for a batch it already has), or failed before reaching
    /// the sink.
    pub fn arrived(&self, n: usize) {
        let _ = self
            .coming
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(c.saturating_sub(n))
            });
    }

    /// For files: where this replica's own chain ended in them when the sink opened (its
    /// next event continues it).
    pub fn replica_head(&self) -> Option<ReplicaHead> {
        self.replica.clone()
    }

    /// Where this sink writes.
    pub fn target(&self) -> &SinkTarget {
        &self.target
    }

    /// Hands the writer thread `events` lines (`lines`: each ending in a newline, oldest
    /// first, the first with seq `first_seq`) and returns at once; the answer says when they
    /// are durable. Batches are written in the order they are handed over, and one sync
    /// covers every batch waiting, so the caller may hand over the next batch before this one
    /// is durable. A batch that fails is kept and written before the next one.
    pub fn submit(
        &self,
        lines: Vec<u8>,
        first_seq: u64,
        events: usize,
    ) -> Result<Durable, SinkError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send(Job {
                chunk: Chunk {
                    lines,
                    first_seq,
                    events,
                },
                reply,
            })
            .map_err(|_| SinkError::Stopped)?;
        Ok(Durable(answer))
    }

    /// Writes `events` (oldest first) and returns once they are durable (for a file: written
    /// and fsynced).
    pub async fn write(&self, events: &[AuditEvent]) -> Result<(), SinkError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let mut lines = Vec::with_capacity(events.len() * 512);
        for e in events {
            // An event is strings, numbers and a JSON map: serialising it cannot fail.
            let _ = serde_json::to_writer(&mut lines, e);
            lines.push(b'\n');
        }
        self.submit(lines, first.seq, events.len())?.wait().await
    }
}

/// An event on its way to the sink ([`Sink::announce`]).
pub struct Announced<'a> {
    coming: &'a AtomicUsize,
    armed: bool,
}

impl Announced<'_> {
    /// The event reached the recorder's writer, which reports it with [`Sink::arrived`].
    pub fn handed_on(mut self) {
        self.armed = false;
    }
}

impl Drop for Announced<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self
                .coming
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                    Some(c.saturating_sub(1))
                });
        }
    }
}

/// Longest a batch waits for others to join its sync ([`gather`]).
const GATHER: Duration = Duration::from_millis(1);

/// Adds to `jobs` what arrives while events are announced and not yet handed over
/// (`coming`), until `deadline`.
///
/// An `fdatasync` costs about a tenth of a millisecond of CPU here (and a few milliseconds
/// of wall time on a busy disk). Syncing as soon as anything waits syncs every one or two
/// events under a steady stream of requests and spends much of a core on it; waiting for
/// the events already on their way lets one sync cover every request in flight. When none
/// is on its way (every caller in flight is in the batches at hand) waiting would only add
/// latency: the batch is synced at once.
fn gather(
    rx: &std::sync::mpsc::Receiver<Job>,
    jobs: &mut Vec<Job>,
    deadline: Instant,
    coming: &AtomicUsize,
) {
    while coming.load(Ordering::Acquire) > 0 {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return;
        };
        // The recorder reports events as arrived just before it hands them over, so the
        // count reaches zero only with a job on its way: waiting for the job, not polling
        // the count, costs no wake-ups. An announced event that never comes (its append
        // failed, or its caller went away) holds the sync until the deadline: rare, bounded.
        match rx.recv_timeout(left) {
            Ok(job) => jobs.push(job),
            Err(_) => return,
        }
    }
}

/// The writer thread: takes whatever batches are waiting, writes them after the ones it
/// failed to write before (kept, up to [`MAX_CARRIED`] events), makes them durable at once,
/// answers each. Ends when the last [`Sink`] is dropped.
fn write_loop(mut backend: Backend, rx: &std::sync::mpsc::Receiver<Job>, coming: &AtomicUsize) {
    let mut carried: std::collections::VecDeque<Chunk> = std::collections::VecDeque::new();
    while let Ok(job) = rx.recv() {
        let mut jobs = vec![job];
        jobs.extend(rx.try_iter());
        if matches!(backend, Backend::File(_)) {
            gather(rx, &mut jobs, Instant::now() + GATHER, coming);
        }
        let chunks: Vec<&Chunk> = carried
            .iter()
            .chain(jobs.iter().map(|j| &j.chunk))
            .collect();
        let result = backend.write(&chunks);
        if result.is_ok() {
            carried.clear();
        }
        for Job { chunk, reply } in jobs {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err((target, e)) => {
                    carried.push_back(chunk);
                    Err(SinkError::Io {
                        target: target.clone(),
                        error: std::io::Error::new(e.kind(), e.to_string()),
                    })
                }
            };
            // A caller that went away no longer needs the answer.
            let _ = reply.send(answer);
        }
        let mut kept: usize = carried.iter().map(|c| c.events).sum();
        while kept > MAX_CARRIED {
            let Some(lost) = carried.pop_front() else {
                break;
            };
            kept -= lost.events;
            tracing::error!(
                target: "audit",
                lost = lost.events,
                first_seq = lost.first_seq,
                "audit sink still failing: the oldest events it missed are given up; the files will show the gap"
            );
        }
    }
}

enum Backend {
    File(FileBackend),
    Syslog(std::os::unix::net::UnixDatagram),
    Stdout,
}

struct FileBackend {
    /// Held while the sink lives: one writer per replica name and folder.
    _lock: File,
    dir: PathBuf,
    replica: String,
    rotate_bytes: u64,
    /// The open file, its path and its length after the last durable write.
    current: Option<(File, PathBuf, u64)>,
}

impl Backend {
    fn open(target: &SinkTarget) -> Result<Self, SinkError> {
        Ok(match target {
            SinkTarget::File {
                dir,
                replica,
                rotate_bytes,
            } => {
                let io = |source| SinkError::Io {
                    target: dir.display().to_string(),
                    error: source,
                };
                if !dir.exists() {
                    use std::os::unix::fs::DirBuilderExt as _;
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .map_err(io)?;
                }
                // Files others may replace or delete are no evidence.
                let mode = std::os::unix::fs::PermissionsExt::mode(
                    &std::fs::metadata(dir).map_err(io)?.permissions(),
                );
                if mode & 0o022 != 0 {
                    return Err(SinkError::Io {
                        target: dir.display().to_string(),
                        error: std::io::Error::other(format!(
                            "the folder is writable by other users (mode {:o}); chmod go-w it or set audit.dir",
                            mode & 0o777
                        )),
                    });
                }
                // Fails at start, not at the first event, when the folder cannot be written;
                // and refuses a second broker writing under the same replica name, whose
                // files would interleave with these.
                let lock_path = dir.join(format!(".{replica}.lock"));
                let lock = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(io)?;
                let locked = fs4::fs_std::FileExt::try_lock_exclusive(&lock).map_err(io)?;
                if !locked {
                    return Err(SinkError::ReplicaInUse {
                        dir: dir.display().to_string(),
                        replica: replica.clone(),
                    });
                }
                Backend::File(FileBackend {
                    _lock: lock,
                    dir: dir.clone(),
                    replica: replica.clone(),
                    rotate_bytes: *rotate_bytes,
                    current: None,
                })
            }
            SinkTarget::Syslog => {
                let s = std::os::unix::net::UnixDatagram::unbound().map_err(|source| {
                    SinkError::Io {
                        target: "syslog".into(),
                        error: source,
                    }
                })?;
                s.connect("/dev/log").map_err(|source| SinkError::Io {
                    target: "syslog /dev/log".into(),
                    error: source,
                })?;
                Backend::Syslog(s)
            }
            SinkTarget::Stdout => Backend::Stdout,
        })
    }

    fn write(&mut self, jobs: &[&Chunk]) -> Result<(), (String, std::io::Error)> {
        match self {
            Backend::File(f) => f.write(jobs),
            Backend::Syslog(s) => {
                for job in jobs {
                    for line in job.lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        // authpriv.info (10 * 8 + 6): audit records are access records.
                        let mut msg = b"<86>git-jit-audit: ".to_vec();
                        msg.extend_from_slice(line);
                        s.send(&msg).map_err(|e| ("syslog".to_owned(), e))?;
                    }
                }
                Ok(())
            }
            Backend::Stdout => {
                let mut out = std::io::stdout().lock();
                for job in jobs {
                    out.write_all(&job.lines)
                        .map_err(|e| ("stdout".to_owned(), e))?;
                }
                out.flush().map_err(|e| ("stdout".to_owned(), e))
            }
        }
    }
}

impl FileBackend {
    fn write(&mut self, jobs: &[&Chunk]) -> Result<(), (String, std::io::Error)> {
        let Some(first) = jobs.first() else {
            return Ok(());
        };
        if self
            .current
            .as_ref()
            .is_none_or(|(_, _, len)| *len >= self.rotate_bytes)
        {
            self.current = None;
            let path = self.dir.join(file_name(&self.replica, first.first_seq));
            let opened = open_new(&path).and_then(|f| {
                // The new name must survive a crash too.
                File::open(&self.dir)?.sync_all()?;
                Ok(f)
            });
            let file = opened.map_err(|e| (path.display().to_string(), e))?;
            self.current = Some((file, path, 0));
        }
        let Some((file, path, len)) = self.current.as_mut() else {
            return Err((
                self.dir.display().to_string(),
                std::io::Error::other("no open file"),
            ));
        };
        let written = jobs
            .iter()
            .try_for_each(|j| file.write_all(&j.lines))
            .and_then(|()| file.sync_data());
        match written {
            Ok(()) => {
                *len += jobs.iter().map(|j| j.lines.len() as u64).sum::<u64>();
                Ok(())
            }
            Err(e) => {
                // Never keep half a batch: cut the file back to its last durable length, or,
                // failing that, leave it and start a new file with the next batch.
                let target = path.display().to_string();
                if file.set_len(*len).and_then(|()| file.sync_all()).is_err() {
                    self.current = None;
                }
                Err((target, e))
            }
        }
    }
}

/// Where `replica`'s chain ends in its files in `dir`: the replica link of the newest event of
/// its newest file that holds one (a fresh chain without files). Only the tail of a file is
/// read.
fn replica_head_in(dir: &Path, replica: &str) -> std::io::Result<ReplicaHead> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some((_, seq)) = parse_file_name(name).filter(|(r, _)| *r == replica) {
            files.push((seq, p.clone()));
        }
    }
    files.sort();
    for (_, path) in files.iter().rev() {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        // An event is at most a few KiB; 1 MiB holds the last whole line of any file.
        let start = len.saturating_sub(1 << 20);
        f.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail)?;
        let newest = tail
            .split(|b| *b == b'\n')
            .rev()
            .skip(1) // after the last newline: empty, or a line cut short
            .find_map(|line| serde_json::from_slice::<AuditEvent>(line).ok());
        if let Some(e) = newest {
            return Ok(ReplicaHead::after(replica, Some(&e)));
        }
    }
    Ok(ReplicaHead::new(replica))
}

fn open_new(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

mod trail;

pub use trail::{
    At, LineEvent, MAX_LINE, ReadEvent, TrailError, TrailLine, TrailReader, files_by_replica,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> AuditEvent {
        let mut e = AuditEvent::new("grant.issued", seq as i64);
        e.seq = seq;
        e
    }

    fn job(seq: u64) -> Job {
        let (reply, _) = tokio::sync::oneshot::channel();
        Job {
            chunk: Chunk {
                lines: b"{}\n".to_vec(),
                first_seq: seq,
                events: 1,
            },
            reply,
        }
    }

    #[test]
    fn gathering_waits_for_announced_events_only() {
        let far = Instant::now() + Duration::from_secs(60);
        // Nothing announced: the batch at hand is synced at once, even with a job queued
        // (the write loop takes queued jobs itself before gathering).
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(job(1)).expect("sent");
        let mut jobs = Vec::new();
        gather(&rx, &mut jobs, far, &AtomicUsize::new(0));
        assert!(jobs.is_empty());

        // Two announced: the sink waits for both, however long they take to come (until
        // the deadline), and stops once nothing more is announced. The sender does what the
        // recorder does: reports events as arrived, then hands them over.
        let coming = Arc::new(AtomicUsize::new(2));
        let (tx, rx) = std::sync::mpsc::channel();
        let sender = {
            let coming = coming.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                coming.store(1, Ordering::Release);
                tx.send(job(7)).expect("sent");
                std::thread::sleep(Duration::from_millis(200));
                coming.store(0, Ordering::Release);
                tx.send(job(8)).expect("sent");
            })
        };
        let mut jobs = Vec::new();
        gather(&rx, &mut jobs, far, &coming);
        sender.join().expect("sender");
        assert_eq!(
            jobs.iter().map(|j| j.chunk.first_seq).collect::<Vec<_>>(),
            [7, 8]
        );

        // Announced but never coming (its append failed, say): the deadline ends the wait.
        let (_tx, rx) = std::sync::mpsc::channel::<Job>();
        let mut jobs = Vec::new();
        let soon = Instant::now() + Duration::from_millis(5);
        gather(&rx, &mut jobs, soon, &AtomicUsize::new(3));
        assert!(jobs.is_empty());
    }

    #[test]
    fn an_announcement_dropped_before_handing_on_is_taken_back() {
        let dir = tempfile::tempdir().expect("dir");
        let sink = Sink::open(SinkTarget::File {
            dir: dir.path().join("audit"),
            replica: "r1".into(),
            rotate_bytes: 1 << 20,
        })
        .expect("opens");
        drop(sink.announce());
        assert_eq!(sink.coming.load(Ordering::Acquire), 0);
        let a = sink.announce();
        let b = sink.announce();
        a.handed_on();
        b.handed_on();
        assert_eq!(sink.coming.load(Ordering::Acquire), 2);
        sink.arrived(5);
        assert_eq!(sink.coming.load(Ordering::Acquire), 0, "never below zero");
    }

    #[test]
    fn file_names_round_trip() {
        let name = file_name("web-1", 42);
        assert_eq!(name, "audit-web-1-00000000000000000042.jsonl");
        assert_eq!(parse_file_name(&name), Some(("web-1", 42)));
        assert_eq!(parse_file_name("audit--00000000000000000042.jsonl"), None);
        assert_eq!(parse_file_name("audit-a-42.jsonl"), None);
        assert_eq!(parse_file_name("other.jsonl"), None);
    }

    #[tokio::test]
    async fn batches_are_durable_and_rotate_by_size() {
        let dir = tempfile::tempdir().expect("dir");
        let sink = Sink::open(SinkTarget::File {
            dir: dir.path().join("audit"),
            replica: "r1".into(),
            rotate_bytes: 200,
        })
        .expect("opens");
        for seq in 1..=6 {
            sink.write(&[event(seq)]).await.expect("written");
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("audit"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".jsonl"))
            .collect();
        names.sort();
        assert!(names.len() >= 2, "rotated: {names:?}");
        assert_eq!(names[0], file_name("r1", 1));
        let mut reader = TrailReader::open(&[dir.path().join("audit")]).expect("reads");
        let mut seqs = Vec::new();
        while let Some(e) = reader.next_event().expect("event") {
            seqs.push(e.event.seq);
        }
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn reader_merges_replicas_and_refuses_duplicates_and_torn_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let line = |seq| serde_json::to_string(&event(seq)).expect("json") + "\n";
        std::fs::write(dir.path().join(file_name("a", 1)), line(1) + &line(3)).expect("w");
        std::fs::write(dir.path().join(file_name("b", 2)), line(2) + &line(4)).expect("w");
        std::fs::write(dir.path().join(file_name("a", 5)), line(5)).expect("w");
        let mut reader = TrailReader::open(&[dir.path().to_path_buf()]).expect("reads");
        let mut seqs = Vec::new();
        while let Some(e) = reader.next_event().expect("event") {
            seqs.push(e.event.seq);
        }
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        std::fs::write(dir.path().join(file_name("c", 3)), line(3)).expect("w");
        let mut reader = TrailReader::open(&[dir.path().to_path_buf()]).expect("reads");
        let err = std::iter::from_fn(|| reader.next_event().transpose())
            .find_map(Result::err)
            .expect("duplicate found");
        assert!(err.to_string().contains("seq 3 appears twice"), "{err}");
        let torn = dir.path().join("torn.jsonl");
        std::fs::write(&torn, line(1) + r#"{"v":2,"ts":1"#).expect("w");
        let err = TrailReader::open(&[torn])
            .and_then(|mut r| while_ok(&mut r))
            .expect_err("torn");
        assert!(err.to_string().contains("cut short"), "{err}");
    }

    fn while_ok(r: &mut TrailReader) -> Result<(), TrailError> {
        while r.next_event()?.is_some() {}
        Ok(())
    }

    #[test]
    fn a_folder_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let err = Sink::open(SinkTarget::File {
            dir: dir.path().to_path_buf(),
            replica: "r".into(),
            rotate_bytes: 1 << 20,
        })
        .err()
        .expect("refused");
        assert!(err.to_string().contains("writable by other users"), "{err}");
    }

    /// A file the sink cannot create (its name taken by something else, its folder gone)
    /// is an error for the batch; the sink keeps what it missed and, once it can write
    /// again, writes it first, in order.
    #[tokio::test]
    async fn a_write_that_fails_is_an_error_and_written_later() {
        let dir = tempfile::tempdir().expect("dir");
        let sink = Sink::open(SinkTarget::File {
            dir: dir.path().to_path_buf(),
            replica: "r".into(),
            rotate_bytes: 1,
        })
        .expect("opens");
        let squatted = dir.path().join(file_name("r", 1));
        std::fs::create_dir(&squatted).expect("squat the name");
        let err = sink.write(&[event(1)]).await.expect_err("cannot create");
        assert!(err.to_string().starts_with("audit sink "), "{err}");
        let err = sink.write(&[event(2)]).await.expect_err("still cannot");
        assert!(err.to_string().starts_with("audit sink "), "{err}");
        std::fs::remove_dir(&squatted).expect("free the name");
        sink.write(&[event(3)]).await.expect("writes again");
        let text = std::fs::read_to_string(&squatted).expect("file");
        let seqs: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<AuditEvent>(l).expect("event").seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
    }

    /// Batches handed over before the previous ones are durable are written in the order
    /// they were handed over, each answered.
    #[tokio::test]
    async fn batches_handed_over_at_once_keep_their_order() {
        let dir = tempfile::tempdir().expect("dir");
        let sink = Sink::open(SinkTarget::File {
            dir: dir.path().to_path_buf(),
            replica: "r".into(),
            rotate_bytes: 1 << 20,
        })
        .expect("opens");
        let pending: Vec<Durable> = (1..=50u64)
            .map(|seq| {
                let line = serde_json::to_string(&event(seq)).expect("json") + "\n";
                sink.submit(line.into_bytes(), seq, 1).expect("handed over")
            })
            .collect();
        for p in pending {
            p.wait().await.expect("durable");
        }
        let text = std::fs::read_to_string(dir.path().join(file_name("r", 1))).expect("file");
        let seqs: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<AuditEvent>(l).expect("event").seq)
            .collect();
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    }
}
