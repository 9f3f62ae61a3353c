//! Reading a trail back: [`TrailReader`] hands out the lines of a folder of trail files (or of
//! single files) in seq order, each with its event and where it is, in constant memory.
//!
//! The work is split across threads, since each line's check but the links is independent:
//! one reader thread per replica reads its files in large blocks and cuts them into batches
//! of whole lines; a small pool of threads proves each line canonical (or parses it) and
//! takes its chain digest; the caller gets the batches back in order and checks the links.
//! A fixed number of batches per replica circulates between them, so memory stays bounded
//! (a few MiB a replica) however long the trail, and a caller that stops early stops them.

use std::fs::File;
use std::io::Read as _;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::audit::canonical::{Hashed, unique_keys};
use crate::audit::{AuditEvent, Canonical};

use super::parse_file_name;

/// The longest line taken as an event, with its `\n` (an event is a few KiB; the sink reads
/// back the last 1 MiB of a file to find its newest one).
pub const MAX_LINE: usize = 1 << 20;

/// Bytes of whole lines read into a batch (more when one line is longer).
const BATCH_BYTES: usize = 1 << 20;

/// What all replicas' batches may hold together (short of lines up to [`MAX_LINE`]): with
/// many replicas, each reads smaller batches.
const BUDGET_BYTES: usize = 32 << 20;

/// Batches circulating per replica: one being read, some being hashed, one handed out line by
/// line, and one ready for when it is done.
const BATCHES: usize = 6;

/// Hashing threads at most (one per core up to this).
const MAX_WORKERS: usize = 4;

/// One event read back from a trail file, with where it was.
#[derive(Debug)]
pub struct ReadEvent {
    /// The event.
    pub event: AuditEvent,
    /// `file:line`.
    pub at: String,
}

/// Why a trail could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    /// A file or directory could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: String,
        /// The I/O error (part of the message, not a separate cause: printed once).
        error: std::io::Error,
    },
    /// A line is not an audit event (or was cut short).
    #[error("{at}: not an audit event: {why}")]
    BadLine {
        /// `file:line`.
        at: String,
        /// The parser's complaint.
        why: String,
    },
    /// Two events claim the same seq.
    #[error("{at}: seq {seq} appears twice (also at {other})")]
    Duplicate {
        /// `file:line`.
        at: String,
        /// The repeated seq.
        seq: u64,
        /// The earlier place.
        other: String,
    },
    /// The threads that read and hash the files could not be started.
    #[error("cannot start the threads that read the audit files: {0}")]
    Threads(std::io::Error),
    /// A thread reading or hashing the files ended without handing back its work.
    #[error("reading the audit files stopped: a reading thread failed")]
    Stopped,
}

/// One line of a trail file, as [`TrailReader::next_line`] hands it out.
#[derive(Debug)]
pub struct TrailLine<'a> {
    /// The line, with its `\n`.
    pub text: &'a str,
    /// The event it holds.
    pub event: LineEvent,
    /// Where it is.
    pub at: At<'a>,
}

/// Where a line is: shown as `file:line` (formatted only when needed).
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    file: &'a str,
    line_no: usize,
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line_no)
    }
}

/// The event a trail line holds.
#[derive(Debug)]
pub enum LineEvent {
    /// The line is the event's canonical JSON: its members were found without parsing it,
    /// and the hash it states checked against its digest ([`Canonical::check_hash`]).
    Canonical(Hashed),
    /// The line was parsed (it is not canonical, or is a checkpoint).
    Parsed(Box<AuditEvent>),
}

impl LineEvent {
    fn seq(&self) -> u64 {
        match self {
            Self::Canonical(h) => h.canonical().seq(),
            Self::Parsed(e) => e.seq,
        }
    }
}

/// A line of a batch, checked.
#[derive(Debug)]
struct Entry {
    /// The line in the batch's text.
    text: Range<usize>,
    /// Its line number in the batch (0 for the first).
    line: usize,
    seq: u64,
    /// Taken when handed out.
    event: Option<LineEvent>,
}

/// Whole lines of one file, read by a replica's reader thread, checked by a hashing thread,
/// handed out by [`TrailReader`], then reused.
#[derive(Debug, Default)]
struct Batch {
    /// The file's name.
    file: Arc<str>,
    /// Whether this is the file's first batch (its line numbers start again).
    first: bool,
    /// As read: whole lines; at the end of a file, possibly a last line without its `\n`.
    raw: Vec<u8>,
    /// Whether `raw` ends in a line longer than [`MAX_LINE`] (the reader stopped there).
    too_long: bool,
    /// `raw` once checked to be UTF-8 (up to a line that is not).
    text: String,
    /// Its events, in order.
    entries: Vec<Entry>,
    /// How many lines it holds (blank ones included).
    lines: usize,
    /// The first line that is not an event: its number in the batch, and why.
    bad: Option<(usize, String)>,
    /// The file could not be read: this batch holds nothing else.
    error: Option<TrailError>,
}

impl Batch {
    /// Checks every line: `raw` becomes `text`, `entries` and at most one `bad` line, after
    /// which nothing is looked at.
    fn check(&mut self) {
        self.entries.clear();
        self.bad = None;
        self.lines = 0;
        let raw = std::mem::take(&mut self.raw);
        // A last line without its `\n`: the end of a file cut short, or a line too long.
        let tail = raw.last().is_some_and(|b| *b != b'\n');
        let (text, not_utf8) = match String::from_utf8(raw) {
            Ok(text) => (text, false),
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let mut raw = e.into_bytes();
                // In the last line without its `\n`, it is that line's fault (below).
                let not_utf8 = memchr::memchr(b'\n', &raw[valid..]).is_some();
                // The whole lines before the one that is not UTF-8: they end at a `\n`, a
                // character boundary inside the valid part, so this cannot fail.
                raw.truncate(memchr::memrchr(b'\n', &raw[..valid]).map_or(0, |k| k + 1));
                (String::from_utf8(raw).unwrap_or_default(), not_utf8)
            }
        };
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', text.as_bytes()).map(|k| k + 1) {
            let line = self.lines;
            self.lines += 1;
            let Some(s) = text.get(start..end) else { break };
            let range = start..end;
            start = end;
            if s.trim().is_empty() {
                continue;
            }
            match checked(s) {
                Ok(event) => self.entries.push(Entry {
                    text: range,
                    line,
                    seq: event.seq(),
                    event: Some(event),
                }),
                Err(why) => {
                    self.bad = Some((line, why));
                    break;
                }
            }
        }
        if self.bad.is_none() {
            let why = if not_utf8 {
                Some("it is not UTF-8 text".to_owned())
            } else if tail && self.too_long {
                Some(format!("it is longer than {MAX_LINE} bytes"))
            } else {
                tail.then(|| "the last line is cut short (a write that never completed)".to_owned())
            };
            if let Some(why) = why {
                self.bad = Some((self.lines, why));
            }
        }
        // One buffer per batch: the reader fills it as `raw`, it is handed out as `text`.
        self.text = text;
    }
}

/// The event of one line (with its `\n`): proven canonical and hashed, or parsed.
fn checked(line: &str) -> Result<LineEvent, String> {
    // Tests make the hashing thread checking this line fail, as a bug would.
    #[cfg(test)]
    assert_ne!(line, tests::FAILS, "the hashing thread failed");
    if let Some(c) = Canonical::scan(line) {
        return Ok(LineEvent::Canonical(c.check_hash(line)));
    }
    let event = serde_json::from_str::<AuditEvent>(line).map_err(|e| e.to_string())?;
    unique_keys(line)?;
    Ok(LineEvent::Parsed(Box::new(event)))
}

/// A batch handed to the hashing threads, and where its checked self goes.
struct Job {
    batch: Batch,
    done: SyncSender<Batch>,
}

/// The hashing threads: each takes the next job, checks its batch and hands it back.
fn hash_batches(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        // Every reader thread is gone: no more work.
        let Ok(Job { mut batch, done }) = job else {
            return;
        };
        batch.check();
        // The caller may have stopped reading: then nobody waits for it.
        let _ = done.send(batch);
    }
}

/// How a block read from a file ends.
enum Fill {
    /// In whole lines; the part of a line after them was kept for the next block.
    Lines,
    /// At the end of the file (the last line may lack its `\n`).
    End,
    /// In a line longer than [`MAX_LINE`].
    TooLong,
}

/// Reads about `batch_bytes` more of `file` into `buf` (which starts with `carry`, the part
/// of a line left over from the block before), and moves the part after its last `\n` to
/// `carry`.
fn fill(
    file: &mut File,
    buf: &mut Vec<u8>,
    carry: &mut Vec<u8>,
    batch_bytes: usize,
) -> std::io::Result<Fill> {
    buf.extend_from_slice(carry);
    carry.clear();
    let mut want = batch_bytes.saturating_sub(buf.len()).max(1);
    loop {
        let searched = buf.len();
        let got = file.by_ref().take(want as u64).read_to_end(buf)?;
        if got < want {
            return Ok(Fill::End);
        }
        if let Some(k) = memchr::memrchr(b'\n', &buf[searched..]) {
            carry.extend_from_slice(&buf[searched + k + 1..]);
            buf.truncate(searched + k + 1);
            return Ok(Fill::Lines);
        }
        // No line ends in `buf` (`carry` held none either): it is all one line so far.
        if buf.len() >= MAX_LINE {
            return Ok(Fill::TooLong);
        }
        want = batch_bytes.clamp(1, MAX_LINE - buf.len());
    }
}

/// One replica's reader thread: reads its files in order into the free batches, hands each to
/// the hashing threads and its place in line to the caller. Stops at the first file that
/// cannot be read, or once the caller is gone.
fn read_files(
    files: Vec<PathBuf>,
    batch_bytes: usize,
    free: Receiver<Batch>,
    ahead: SyncSender<Receiver<Batch>>,
    jobs: Sender<Job>,
) {
    let mut carry = Vec::new();
    let mut spare: Option<Batch> = None;
    // Hands `batch` on; false once the caller (or every hashing thread) is gone.
    let hand_on = |batch: Batch, hash: bool| {
        let (done, checked) = sync_channel(1);
        if hash {
            // If no hashing thread is left, `done` is dropped with the job: the caller sees
            // the batch never came back.
            let _ = jobs.send(Job { batch, done });
        } else {
            let _ = done.send(batch);
        }
        ahead.send(checked).is_ok()
    };
    for path in files {
        let name: Arc<str> = path.display().to_string().into();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) => {
                let error = Some(TrailError::Io {
                    path: name.to_string(),
                    error,
                });
                hand_on(
                    Batch {
                        error,
                        ..Batch::default()
                    },
                    false,
                );
                return;
            }
        };
        let mut first = true;
        loop {
            let batch = match spare.take() {
                Some(batch) => Some(batch),
                None => free.recv().ok(),
            };
            // The caller is gone.
            let Some(mut batch) = batch else { return };
            batch.file = name.clone();
            batch.first = first;
            batch.too_long = false;
            batch.error = None;
            // The batch's one buffer: as handed back (`text`), or left unused (`raw`).
            let mut buf = std::mem::take(&mut batch.raw);
            if buf.capacity() == 0 {
                buf = std::mem::take(&mut batch.text).into_bytes();
            }
            buf.clear();
            let filled = fill(&mut file, &mut buf, &mut carry, batch_bytes);
            // Tests make the reading thread fail on a batch holding this line, as a bug would.
            #[cfg(test)]
            assert!(
                memchr::memmem::find(&buf, tests::READ_FAILS.as_bytes()).is_none(),
                "the reading thread failed"
            );
            batch.raw = buf;
            match filled {
                Ok(Fill::Lines) => {
                    if !hand_on(batch, true) {
                        return;
                    }
                }
                Ok(Fill::End) if batch.raw.is_empty() => {
                    spare = Some(batch);
                    break;
                }
                Ok(Fill::End) => {
                    if !hand_on(batch, true) {
                        return;
                    }
                    break;
                }
                Ok(Fill::TooLong) => {
                    batch.too_long = true;
                    hand_on(batch, true);
                    return;
                }
                Err(error) => {
                    batch.raw.clear();
                    batch.error = Some(TrailError::Io {
                        path: name.to_string(),
                        error,
                    });
                    hand_on(batch, false);
                    return;
                }
            }
            first = false;
        }
    }
}

/// One replica's files as the caller sees them: checked batches in order, one handed out
/// line by line.
struct ReplicaLines {
    /// Each batch's place in line, in file order.
    ahead: Receiver<Receiver<Batch>>,
    /// Where batches go back to the reader thread.
    free: SyncSender<Batch>,
    /// The batch being handed out, and how many of its entries were.
    batch: Option<Batch>,
    next: usize,
    /// Lines of the batch's file before the batch.
    line_base: usize,
    reader: Option<JoinHandle<()>>,
}

impl ReplicaLines {
    /// Moves on until the next entry is at hand (or the files are done); a line that is not
    /// an event, or a file that cannot be read, is an error here, in file order.
    fn settle(&mut self) -> Result<(), TrailError> {
        loop {
            if let Some(b) = self.batch.as_mut() {
                if self.next < b.entries.len() {
                    return Ok(());
                }
                if let Some(error) = b.error.take() {
                    return Err(error);
                }
                if let Some((line, why)) = b.bad.take() {
                    return Err(TrailError::BadLine {
                        at: format!("{}:{}", b.file, self.line_base + line + 1),
                        why,
                    });
                }
                self.line_base += b.lines;
            }
            if let Some(done) = self.batch.take() {
                // Never blocks: the channel holds every batch there is.
                let _ = self.free.try_send(done);
            }
            let Ok(checked) = self.ahead.recv() else {
                // The reader thread is done, or failed.
                return match self.reader.take().map(JoinHandle::join) {
                    Some(Err(_)) => Err(TrailError::Stopped),
                    _ => Ok(()),
                };
            };
            let batch = checked.recv().map_err(|_| TrailError::Stopped)?;
            if batch.first {
                self.line_base = 0;
            }
            self.batch = Some(batch);
            self.next = 0;
        }
    }

    fn head(&self) -> Option<&Entry> {
        self.batch.as_ref()?.entries.get(self.next)
    }

    /// `file:line` of the next entry.
    fn at(&self) -> String {
        match (self.batch.as_ref(), self.head()) {
            (Some(b), Some(e)) => format!("{}:{}", b.file, self.line_base + e.line + 1),
            _ => String::new(),
        }
    }
}

/// Reads a trail — a directory of trail files of one or several replicas, or single files —
/// as one run ordered by seq: each replica's files in order of their first seq, the replicas
/// merged by seq. Files named as the sink names them are grouped by replica wherever they
/// are given; any other file is read as it is, as one more replica. Holds a bounded number of
/// batches of lines per replica: constant memory, however long the trail.
pub struct TrailReader {
    replicas: Vec<ReplicaLines>,
    /// The replica whose line was handed out last: it moves on at the next call.
    taken: Option<usize>,
    workers: Vec<JoinHandle<()>>,
}

impl TrailReader {
    /// A reader over `paths`: directories (their `audit-*.jsonl` files) and files.
    pub fn open(paths: &[PathBuf]) -> Result<Self, TrailError> {
        Self::open_with(paths, BATCH_BYTES)
    }

    /// [`TrailReader::open`] reading blocks of about `batch_bytes` (tests cut batches small).
    pub(crate) fn open_with(paths: &[PathBuf], batch_bytes: usize) -> Result<Self, TrailError> {
        let groups: Vec<Vec<PathBuf>> = files_by_replica(paths)?
            .into_iter()
            .map(|(_, files)| files)
            .collect();
        let batch_bytes = batch_bytes
            .min(BUDGET_BYTES / (BATCHES * groups.len().max(1)))
            .max(1);
        // Declared before the job channel, so dropped after it when a thread cannot be
        // started: its `Drop` waits for the hashing threads, which end once `jobs` is gone.
        let mut reader = Self {
            replicas: Vec::with_capacity(groups.len()),
            taken: None,
            workers: Vec::new(),
        };
        if groups.is_empty() {
            return Ok(reader);
        }
        // Unbounded, yet it never holds more than the batches there are.
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        for _ in 0..cores.clamp(1, MAX_WORKERS) {
            let queue = queue.clone();
            let worker = std::thread::Builder::new()
                .name("audit-hash".into())
                .spawn(move || hash_batches(&queue))
                .map_err(TrailError::Threads)?;
            reader.workers.push(worker);
        }
        for files in groups {
            let (free, pool) = sync_channel(BATCHES);
            for _ in 0..BATCHES {
                let _ = free.try_send(Batch::default());
            }
            let (ready, ahead) = sync_channel(BATCHES);
            let jobs = jobs.clone();
            let thread = std::thread::Builder::new()
                .name("audit-read".into())
                .spawn(move || read_files(files, batch_bytes, pool, ready, jobs))
                .map_err(TrailError::Threads)?;
            reader.replicas.push(ReplicaLines {
                ahead,
                free,
                batch: None,
                next: 0,
                line_base: 0,
                reader: Some(thread),
            });
        }
        Ok(reader)
    }

    /// The next line by seq, or `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<TrailLine<'_>>, TrailError> {
        if let Some(i) = self.taken.take() {
            self.replicas[i].next += 1;
        }
        let mut best: Option<(usize, u64)> = None;
        for i in 0..self.replicas.len() {
            self.replicas[i].settle()?;
            let Some(seq) = self.replicas[i].head().map(|e| e.seq) else {
                continue;
            };
            match best {
                Some((_, b)) if b < seq => {}
                Some((b, bseq)) if bseq == seq => {
                    return Err(TrailError::Duplicate {
                        at: self.replicas[i].at(),
                        seq,
                        other: self.replicas[b].at(),
                    });
                }
                _ => best = Some((i, seq)),
            }
        }
        let Some((i, _)) = best else {
            return Ok(None);
        };
        self.taken = Some(i);
        let r = &mut self.replicas[i];
        let line_base = r.line_base;
        let Some(b) = r.batch.as_mut() else {
            return Ok(None);
        };
        let Some(entry) = b.entries.get_mut(r.next) else {
            return Ok(None);
        };
        let Some(event) = entry.event.take() else {
            return Ok(None);
        };
        Ok(Some(TrailLine {
            text: b.text.get(entry.text.clone()).unwrap_or_default(),
            event,
            at: At {
                file: &b.file,
                line_no: line_base + entry.line + 1,
            },
        }))
    }

    /// The next event by seq, or `None` at the end.
    pub fn next_event(&mut self) -> Result<Option<ReadEvent>, TrailError> {
        let Some(line) = self.next_line()? else {
            return Ok(None);
        };
        let at = line.at.to_string();
        let event = match line.event {
            LineEvent::Parsed(e) => *e,
            LineEvent::Canonical(_) => {
                serde_json::from_str(line.text).map_err(|e| TrailError::BadLine {
                    at: at.clone(),
                    why: e.to_string(),
                })?
            }
        };
        Ok(Some(ReadEvent { event, at }))
    }
}

impl Drop for TrailReader {
    /// Stops the threads: each reader thread ends at its next batch once its replica's
    /// channels are gone, and the hashing threads once every reader thread has.
    fn drop(&mut self) {
        let readers: Vec<JoinHandle<()>> = std::mem::take(&mut self.replicas)
            .into_iter()
            .filter_map(|mut r| r.reader.take())
            .collect();
        for thread in readers.into_iter().chain(std::mem::take(&mut self.workers)) {
            // A thread that panicked has nothing more to say here.
            let _ = thread.join();
        }
    }
}

/// The files under `paths` by replica, each replica's in order of their first seq: folders'
/// trail files and files named as trail files by the replica their name gives (replicas in
/// name order), then any other file on its own, named by its path, in the order given.
pub fn files_by_replica(paths: &[PathBuf]) -> Result<Vec<(String, Vec<PathBuf>)>, TrailError> {
    let mut by_replica: std::collections::BTreeMap<String, Vec<(u64, PathBuf)>> =
        std::collections::BTreeMap::new();
    let mut singles = Vec::new();
    let mut add = |p: PathBuf, in_folder: bool| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        match parse_file_name(name) {
            Some((replica, seq)) => by_replica
                .entry(replica.to_owned())
                .or_default()
                .push((seq, p.clone())),
            None if !in_folder => singles.push(p),
            None => {}
        }
    };
    for path in paths {
        if path.is_dir() {
            let io = |error| TrailError::Io {
                path: path.display().to_string(),
                error,
            };
            for entry in std::fs::read_dir(path).map_err(io)? {
                add(entry.map_err(io)?.path(), true);
            }
        } else {
            add(path.clone(), false);
        }
    }
    Ok(by_replica
        .into_iter()
        .map(|(name, mut files)| {
            files.sort();
            (name, files.into_iter().map(|(_, p)| p).collect())
        })
        .chain(
            singles
                .into_iter()
                .map(|p| (p.display().to_string(), vec![p])),
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::file_name;
    use super::*;

    /// Batch sizes that cut lines everywhere: inside lines, at their ends, several per batch.
    const CUTS: [usize; 6] = [1, 7, 100, 333, 4096, BATCH_BYTES];

    /// The line a hashing thread fails on ([`checked`]).
    pub(super) const FAILS: &str = "{\"v\":2,\"fail\":\"the hashing thread\"}\n";
    /// The line the reading thread fails on ([`read_files`]).
    pub(super) const READ_FAILS: &str = "{\"v\":2,\"fail\":\"the reading thread\"}\n";

    fn event(seq: u64) -> AuditEvent {
        let mut e =
            AuditEvent::new("grant.issued", seq as i64).with("pad", "x".repeat(seq as usize % 50));
        e.seq = seq;
        e.subject = Some(format!("user{seq}"));
        e
    }

    /// The line of `event(seq)`: canonical, or respelled (so parsed) when `seq % 5 == 0`.
    fn line(seq: u64) -> String {
        let text = serde_json::to_string(&event(seq)).expect("json");
        if seq.is_multiple_of(5) {
            text.replacen("{\"v\":", "{ \"v\":", 1) + "\n"
        } else {
            text + "\n"
        }
    }

    /// A line as read: seq, `file:line`, the text, and whether its hash matches (canonical).
    type Read = (u64, String, String, Option<bool>);

    /// Everything a reader hands out: seq, `file:line`, the text, and whether its hash
    /// matches (canonical lines).
    fn read_all(r: &mut TrailReader) -> Result<Vec<Read>, TrailError> {
        let mut out = Vec::new();
        while let Some(l) = r.next_line()? {
            let (seq, digest) = match &l.event {
                LineEvent::Canonical(h) => {
                    let again = Canonical::scan(l.text).map(|c| c.check_hash(l.text));
                    assert_eq!(Some(h), again.as_ref(), "the check of its own line");
                    (h.canonical().seq(), Some(h.matches()))
                }
                LineEvent::Parsed(e) => (e.seq, None),
            };
            out.push((seq, l.at.to_string(), l.text.to_owned(), digest));
        }
        Ok(out)
    }

    /// Two files of one replica (blank lines amid the events) and one file of another,
    /// read with batches cut anywhere: the same lines, in seq order, at the same places.
    #[test]
    fn lines_come_out_the_same_wherever_batches_are_cut() {
        let dir = tempfile::tempdir().expect("dir");
        let (a1, a2, b) = (
            dir.path().join(file_name("a", 1)),
            dir.path().join(file_name("a", 40)),
            dir.path().join(file_name("b", 2)),
        );
        let mut expected = Vec::new();
        let mut write = |path: &PathBuf, seqs: Vec<u64>| {
            let mut text = String::new();
            for (i, seq) in seqs.into_iter().enumerate() {
                if i % 7 == 3 {
                    text.push_str("  \n");
                }
                text.push_str(&line(seq));
                let line_no = text.lines().count();
                expected.push((seq, format!("{}:{line_no}", path.display()), line(seq)));
            }
            std::fs::write(path, text).expect("write");
        };
        write(&a1, (1..40).filter(|s| s % 3 != 2).collect());
        write(&a2, (40..90).filter(|s| s % 3 != 2).collect());
        write(&b, (2..90).step_by(3).collect());
        expected.sort();
        for cut in CUTS {
            let mut r = TrailReader::open_with(&[dir.path().to_path_buf()], cut).expect("open");
            let got = read_all(&mut r).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            let got: Vec<_> = got
                .into_iter()
                .map(|(s, at, text, _)| (s, at, text))
                .collect();
            assert_eq!(got, expected, "cut {cut}");
        }
        // Canonical lines carry their digest; respelled ones are parsed.
        let mut r = TrailReader::open(&[dir.path().to_path_buf()]).expect("open");
        let all = read_all(&mut r).expect("read");
        assert!(all.iter().all(|(s, _, _, d)| d.is_some() == (s % 5 != 0)));
    }

    /// A line that is not an event stops the reading there, named by file and line, after
    /// the lines before it were handed out, wherever the batch was cut.
    #[test]
    fn a_bad_line_is_an_error_at_its_place_after_the_lines_before_it() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(file_name("a", 1));
        let good: String = (1..=20).map(line).collect();
        let cases: [(&[u8], &str); 5] = [
            (b"{\"v\":2,\"ts\":1", "cut short"),
            (b"{\"v\":2,\"reason\":\"\xc3", "cut short"),
            (b"{\"v\":2}\n", "at line 1 column"),
            (b"{\"v\":2,\"ts\":\xff}\n", "not UTF-8"),
            (b"\xc3\n", "not UTF-8"),
        ];
        for (bad, why) in cases {
            let mut bytes = good.clone().into_bytes();
            bytes.extend_from_slice(bad);
            bytes.extend_from_slice(line(21).as_bytes());
            if why == "cut short" {
                bytes.truncate(good.len() + bad.len());
            }
            std::fs::write(&path, &bytes).expect("write");
            for cut in CUTS {
                let mut r = TrailReader::open_with(std::slice::from_ref(&path), cut).expect("open");
                let mut seen = 0;
                let err = loop {
                    match r.next_line() {
                        Ok(Some(_)) => seen += 1,
                        Ok(None) => panic!("{why}, cut {cut}: read to the end"),
                        Err(e) => break e.to_string(),
                    }
                };
                assert_eq!(seen, 20, "{why}, cut {cut}");
                assert!(
                    err.starts_with(&format!("{}:21: not an audit event", path.display()))
                        && err.contains(why),
                    "{why}, cut {cut}: {err}"
                );
            }
        }
    }

    /// Files pieced together at random from events, blank lines, broken lines, bytes that
    /// are not UTF-8 and torn tails read the same — the same lines at the same places, then
    /// the same error — wherever the batches are cut.
    #[test]
    fn random_files_read_the_same_wherever_batches_are_cut() {
        let mut rng = 0x5eed_0000_0000_0033_u64;
        let mut next = |n: u64| {
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        };
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(file_name("a", 1));
        let outcome = |cut: usize| {
            let mut r = TrailReader::open_with(std::slice::from_ref(&path), cut).expect("open");
            let mut out = Vec::new();
            loop {
                match r.next_line() {
                    Ok(Some(l)) => out.push(format!("{} {}", l.at, l.event.seq())),
                    Ok(None) => return out,
                    Err(e) => {
                        out.push(e.to_string());
                        return out;
                    }
                }
            }
        };
        for round in 0..60 {
            let mut bytes = Vec::new();
            let mut seq = 0;
            for _ in 0..next(40) {
                match next(if round % 3 == 0 { 9 } else { 6 }) {
                    0..=3 => {
                        seq += 1 + next(3);
                        bytes.extend_from_slice(line(seq).as_bytes());
                    }
                    4 => bytes.extend_from_slice(b"\n"),
                    5 => bytes.extend_from_slice(b" \t\n"),
                    6 => bytes.extend_from_slice(b"{\"v\":2}\n"),
                    7 => bytes.extend_from_slice(b"\xe2\x82"),
                    _ => bytes.extend_from_slice(&line(seq + 1).as_bytes()[..next(50) as usize]),
                }
            }
            std::fs::write(&path, &bytes).expect("write");
            let whole = outcome(BATCH_BYTES);
            for cut in [1, 2, 5, 64, 300, 1000] {
                assert_eq!(outcome(cut), whole, "round {round}, cut {cut}");
            }
        }
    }

    /// A line of `MAX_LINE` bytes with its `\n` is read; one byte more is refused (without
    /// reading it whole), named by its place.
    #[test]
    fn lines_are_bounded_at_max_line() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(file_name("a", 1));
        let sized = |seq: u64, len: usize| {
            let mut e = event(seq);
            let bare = serde_json::to_string(&e).expect("json").len() + 1;
            e.reason = Some("r".repeat(len - bare - ",\"reason\":\"\"".len()));
            let text = serde_json::to_string(&e).expect("json") + "\n";
            assert_eq!(text.len(), len);
            text
        };
        for cut in [333, BATCH_BYTES] {
            std::fs::write(&path, line(1) + &sized(2, MAX_LINE) + &line(3)).expect("write");
            let mut r = TrailReader::open_with(std::slice::from_ref(&path), cut).expect("open");
            let all = read_all(&mut r).expect("at the bound");
            assert_eq!(all.iter().map(|l| l.0).collect::<Vec<_>>(), [1, 2, 3]);
            std::fs::write(&path, line(1) + &sized(2, MAX_LINE + 1) + &line(3)).expect("write");
            let mut r = TrailReader::open_with(std::slice::from_ref(&path), cut).expect("open");
            let err = read_all(&mut r).expect_err("past the bound").to_string();
            assert!(
                err.starts_with(&format!("{}:2: ", path.display())) && err.contains("longer than"),
                "{err}"
            );
        }
    }

    /// A file the reader thread cannot open is an error naming it, once the files before it
    /// were read.
    #[test]
    fn a_file_that_cannot_be_read_is_an_error_in_its_turn() {
        let dir = tempfile::tempdir().expect("dir");
        let first = dir.path().join(file_name("a", 1));
        let missing = dir.path().join(file_name("a", 4));
        std::fs::write(&first, (1..=3).map(line).collect::<String>()).expect("write");
        let mut r = TrailReader::open(&[missing.clone(), first]).expect("open");
        for seq in 1..=3 {
            assert_eq!(
                r.next_line().expect("line").map(|l| l.event.seq()),
                Some(seq)
            );
        }
        let err = r.next_line().expect_err("missing").to_string();
        assert!(
            err.starts_with(&format!("{}: ", missing.display())),
            "{err}"
        );
    }

    /// Reads `paths` to the end or to the first error, on a thread of its own (a reader that
    /// waits forever fails the test instead of hanging it): the lines read, and the error.
    fn read_to_end(paths: &[PathBuf], cut: usize) -> (usize, Option<TrailError>) {
        let paths = paths.to_vec();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = TrailReader::open_with(&paths, cut).expect("open");
            let mut seen = 0;
            let end = loop {
                match r.next_line() {
                    Ok(Some(_)) => seen += 1,
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            drop(r);
            let _ = tx.send((seen, end));
        });
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("the reader answers and its threads stop")
    }

    /// The reading thread failing (a later file of the replica): the lines of the files
    /// before it come out, then the reader says the reading stopped, not that the trail ended.
    #[test]
    fn a_reading_thread_that_fails_stops_the_reading() {
        let dir = tempfile::tempdir().expect("dir");
        let first = dir.path().join(file_name("a", 1));
        let second = dir.path().join(file_name("a", 21));
        std::fs::write(&first, (1..=20).map(line).collect::<String>()).expect("write");
        std::fs::write(&second, line(21) + READ_FAILS + &line(22)).expect("write");
        // A batch per line (cut 1: line 21 comes out before the batch that fails), or one
        // batch per file.
        for (cut, before) in [(1, 21), (BATCH_BYTES, 20)] {
            let (seen, end) = read_to_end(&[first.clone(), second.clone()], cut);
            assert_eq!(seen, before, "cut {cut}");
            assert_eq!(
                end.map(|e| e.to_string()).as_deref(),
                Some("reading the audit files stopped: a reading thread failed"),
                "cut {cut}"
            );
        }
    }

    /// A hashing thread that fails never hands its batch back: the reader says the reading
    /// stopped, after the lines of the batches before it, rather than waiting for the batch
    /// or ending as if the trail ended there; so it does when every hashing thread fails.
    #[test]
    fn a_hashing_thread_that_fails_stops_the_reading() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(file_name("a", 1));
        let read = |text: String, cut: usize| {
            std::fs::write(&path, text).expect("write");
            read_to_end(std::slice::from_ref(&path), cut)
        };
        let good: String = (1..=20).map(line).collect();
        // A batch per line (cut 1), or one batch for the whole file.
        for (cut, before) in [(1, 20), (BATCH_BYTES, 0)] {
            let (seen, end) = read(good.clone() + FAILS + &line(21), cut);
            assert_eq!(seen, before, "cut {cut}");
            assert!(
                matches!(end, Some(TrailError::Stopped)),
                "cut {cut}: {end:?}"
            );
        }
        let (seen, end) = read(FAILS.repeat(50), 1);
        assert_eq!(seen, 0);
        let end = end.map(|e| e.to_string());
        assert_eq!(
            end.as_deref(),
            Some("reading the audit files stopped: a reading thread failed")
        );
    }

    /// A caller that stops early (after a line, or before any) does not wait for the rest of
    /// the trail: dropping the reader stops its threads, however many batches were ahead.
    #[test]
    fn stopping_early_stops_the_threads() {
        let dir = tempfile::tempdir().expect("dir");
        for replica in ["a", "b"] {
            let text: String = (1..=2000).map(line).collect();
            std::fs::write(dir.path().join(file_name(replica, 1)), text).expect("write");
        }
        let paths = [dir.path().join(file_name("a", 1))];
        for cut in [1, 100, 4096] {
            let mut r = TrailReader::open_with(&paths, cut).expect("open");
            assert!(r.next_line().expect("line").is_some());
            drop(r);
            drop(TrailReader::open_with(&paths, cut).expect("open"));
        }
        // Two replicas with the same seqs: the error comes at once, and dropping still stops.
        let mut r = TrailReader::open_with(&[dir.path().to_path_buf()], 100).expect("open");
        let err = r.next_line().expect_err("duplicate").to_string();
        assert!(err.contains("seq 1 appears twice"), "{err}");
        drop(r);
    }
}
