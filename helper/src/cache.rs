//! The token cache: broker tokens per (broker, repository, actions, refs) in one 0600 JSON
//! file (`tokens.json`) in the cache directory. Writers take an exclusive lock on
//! `tokens.lock` and replace the file by atomic rename, so concurrent git processes never see
//! or leave a torn file; readers need no lock. The file is not synced to disk: a crash of the
//! machine may leave it empty or torn, which reads as an empty cache (tokens are fetched
//! again). Time is a parameter (seconds since the epoch).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;
use jit_proto::{Action, RefPattern, RepoPath, Scope, Secret};
use serde::{Deserialize, Serialize};

/// A cached token is reused until this many seconds before it expires.
pub const REUSE_MARGIN_SECS: i64 = 60;

const FILE: &str = "tokens.json";
const LOCK: &str = "tokens.lock";
const VERSION: u32 = 1;

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file operation on the cache failed.
    #[error("token cache {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The cache could not be serialised.
    #[error("token cache: {0}")]
    Json(#[from] serde_json::Error),
}

/// One cached broker token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedToken {
    /// The broker that issued it (its base URL).
    pub broker: String,
    /// The repository and actions it grants.
    pub scope: Scope,
    /// The ref patterns a write grant is narrowed to; empty for every ref.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<RefPattern>,
    /// The token.
    pub token: Secret,
    /// When it expires (seconds since the epoch, local clock).
    pub expires_at: i64,
    /// The token's id, for `git jit status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl CachedToken {
    fn same_key(&self, other: &CachedToken) -> bool {
        self.broker == other.broker && self.scope == other.scope && self.refs == other.refs
    }

    /// Whether the token may still be handed out at `now`.
    pub fn fresh(&self, now: i64) -> bool {
        self.expires_at - REUSE_MARGIN_SECS > now
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    tokens: Vec<CachedToken>,
}

/// The token cache in one directory.
#[derive(Debug, Clone)]
pub struct TokenCache {
    dir: PathBuf,
}

impl TokenCache {
    /// A cache in `dir` (created on first write, mode 0700).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn io(&self, name: &str) -> impl FnOnce(std::io::Error) -> CacheError + use<> {
        let path = self.dir.join(name);
        move |source| CacheError::Io { path, source }
    }

    /// Every entry, fresh or not. A missing or unreadable file is an empty cache: a damaged
    /// cache must never stop git, and the next write replaces it.
    pub fn entries(&self) -> Result<Vec<CachedToken>, CacheError> {
        match std::fs::read(self.dir.join(FILE)) {
            Ok(bytes) => Ok(serde_json::from_slice::<CacheFile>(&bytes)
                .ok()
                .filter(|f| f.version == VERSION)
                .map(|f| f.tokens)
                .unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.io(FILE)(e)),
        }
    }

    /// The best fresh token for `want` from `broker`: one that covers the actions, preferring
    /// one not narrowed to refs (a narrowed write token is still used: the person asked for
    /// it with `git jit request`), then the longest-lived.
    pub fn find(
        &self,
        broker: &str,
        want: &Scope,
        now: i64,
    ) -> Result<Option<CachedToken>, CacheError> {
        let mut best: Option<CachedToken> = None;
        for t in self.entries()? {
            if t.broker != broker || !t.scope.covers(want) || !t.fresh(now) {
                continue;
            }
            let better = match &best {
                None => true,
                Some(b) => (t.refs.is_empty(), t.expires_at) > (b.refs.is_empty(), b.expires_at),
            };
            if better {
                best = Some(t);
            }
        }
        Ok(best)
    }

    /// The broadest fresh token for `repo` from `broker`, for a request whose needed actions
    /// are unknown (git before 2.41 passes no challenge to the helper, so a push and a fetch
    /// look alike): read,write first, then write, then read; among equals, one not narrowed
    /// to refs, then the longest-lived. A write token only ever comes from `git jit request`
    /// — the helper asks for read on its own — so the person who asked for it means to push.
    pub fn find_widest(
        &self,
        broker: &str,
        repo: &RepoPath,
        now: i64,
    ) -> Result<Option<CachedToken>, CacheError> {
        let breadth = |t: &CachedToken| {
            let a = t.scope.actions;
            (
                a.contains(Action::Read) && a.contains(Action::Write),
                a.contains(Action::Write),
                t.refs.is_empty(),
                t.expires_at,
            )
        };
        Ok(self
            .entries()?
            .into_iter()
            .filter(|t| t.broker == broker && &t.scope.repo == repo && t.fresh(now))
            .max_by_key(breadth))
    }

    /// Stores a token, replacing any with the same key and dropping expired ones.
    pub fn put(&self, token: CachedToken, now: i64) -> Result<(), CacheError> {
        self.update(|tokens| {
            tokens.retain(|t| !t.same_key(&token) && t.expires_at > now);
            tokens.push(token);
        })
    }

    /// Drops every token for `repo` from `broker`; returns how many were dropped.
    pub fn remove_repo(&self, broker: &str, repo: &RepoPath) -> Result<usize, CacheError> {
        let mut n = 0;
        self.update(|tokens| {
            let before = tokens.len();
            tokens.retain(|t| !(t.broker == broker && &t.scope.repo == repo));
            n = before - tokens.len();
        })?;
        Ok(n)
    }

    /// Drops everything (used by `git jit logout`).
    pub fn clear(&self) -> Result<(), CacheError> {
        self.update(Vec::clear)
    }

    fn update(&self, change: impl FnOnce(&mut Vec<CachedToken>)) -> Result<(), CacheError> {
        create_private_dir(&self.dir).map_err(self.io(""))?;
        let lock = open_private(&self.dir.join(LOCK)).map_err(self.io(LOCK))?;
        lock.lock_exclusive().map_err(self.io(LOCK))?;
        let mut tokens = self.entries()?;
        change(&mut tokens);
        let body = serde_json::to_vec_pretty(&CacheFile {
            version: VERSION,
            tokens,
        })?;
        // Not synced: a file a crash left torn reads as an empty cache (see `entries`), and
        // the next fill fetches again. The sync cost each cold fill a disk flush.
        write_private(&self.dir, FILE, &body, Durability::Unsynced).map_err(self.io(FILE))?;
        // The lock is released when `lock` is closed.
        drop(lock);
        Ok(())
    }
}

/// Creates a directory (and parents) readable only by the user.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

fn open_private(path: &Path) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// Writes `name` in `dir` through a 0600 temporary file synced to disk, then renamed into
/// place: after a crash the file holds the old content or the new, never a torn mix.
pub fn write_private_atomic(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    write_private(dir, name, body, Durability::Synced)
}

/// Whether [`write_private`] syncs the new content before it replaces the old.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Synced first: the file is never torn.
    Synced,
    /// Not synced: only for files whose reader takes a torn file for an empty one.
    Unsynced,
}

fn write_private(
    dir: &Path,
    name: &str,
    body: &[u8],
    durability: Durability,
) -> std::io::Result<()> {
    // tempfile creates its files with mode 0600 on Unix.
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(body)?;
    if durability == Durability::Synced {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jit_proto::Actions;

    fn tok(repo: &str, actions: Actions, refs: &[&str], value: &str, exp: i64) -> CachedToken {
        CachedToken {
            broker: "https://b".into(),
            scope: Scope::new(RepoPath::parse(repo).expect("repo"), actions),
            refs: refs
                .iter()
                .map(|r| RefPattern::parse(r).expect("ref"))
                .collect(),
            token: Secret::new(value),
            expires_at: exp,
            jti: Some(format!("jti-{value}")),
        }
    }

    fn scope(s: &str) -> Scope {
        Scope::parse(s).expect("scope")
    }

    #[test]
    fn reuses_until_sixty_seconds_before_expiry() {
        let tmp = tempfile::tempdir().expect("tmp");
        let c = TokenCache::new(tmp.path().join("git-jit"));
        c.put(tok("acme/api", Actions::READ, &[], "t1", 1000), 0)
            .expect("put");
        let want = scope("repo:acme/api:read");
        assert!(c.find("https://b", &want, 939).expect("find").is_some());
        assert!(c.find("https://b", &want, 940).expect("find").is_none());
        assert!(c.find("https://other", &want, 0).expect("find").is_none());
        assert!(
            c.find("https://b", &scope("repo:acme/api:write"), 0)
                .expect("find")
                .is_none()
        );
    }

    #[test]
    fn read_write_token_covers_read() {
        let tmp = tempfile::tempdir().expect("tmp");
        let c = TokenCache::new(tmp.path());
        c.put(tok("acme/api", Actions::READ_WRITE, &[], "rw", 1000), 0)
            .expect("put");
        let got = c
            .find("https://b", &scope("repo:acme/api:read"), 0)
            .expect("find");
        assert_eq!(
            got.map(|t| t.token.expose().to_owned()).as_deref(),
            Some("rw")
        );
    }

    #[test]
    fn prefers_unnarrowed_tokens_but_uses_narrowed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let c = TokenCache::new(tmp.path());
        c.put(
            tok(
                "acme/api",
                Actions::WRITE,
                &["refs/heads/hotfix/*"],
                "narrow",
                2000,
            ),
            0,
        )
        .expect("put");
        let want = scope("repo:acme/api:write");
        let got = c
            .find("https://b", &want, 0)
            .expect("find")
            .expect("narrowed is used");
        assert_eq!(got.token.expose(), "narrow");
        c.put(tok("acme/api", Actions::WRITE, &[], "wide", 1000), 0)
            .expect("put");
        let got = c.find("https://b", &want, 0).expect("find").expect("some");
        assert_eq!(got.token.expose(), "wide");
        assert_eq!(
            c.entries().expect("entries").len(),
            2,
            "different refs, different keys"
        );
    }

    /// Regression: with git 2.39 (no challenge) the helper picked the longer-lived read
    /// token over the read,write one `git jit request` had just cached, so the push that
    /// the helper's advice promised got a 403.
    #[test]
    fn widest_prefers_read_write_then_write_over_a_longer_lived_read() {
        let tmp = tempfile::tempdir().expect("tmp");
        let c = TokenCache::new(tmp.path());
        let api = RepoPath::parse("acme/api").expect("repo");
        let widest = |now| {
            c.find_widest("https://b", &api, now)
                .expect("find")
                .map(|t| t.token.expose().to_owned())
        };
        assert_eq!(widest(0), None);
        c.put(tok("acme/api", Actions::READ, &[], "read", 9000), 0)
            .expect("put");
        c.put(tok("acme/web", Actions::READ_WRITE, &[], "web", 9000), 0)
            .expect("put");
        assert_eq!(widest(0).as_deref(), Some("read"));
        c.put(tok("acme/api", Actions::WRITE, &[], "write", 2000), 0)
            .expect("put");
        assert_eq!(widest(0).as_deref(), Some("write"));
        c.put(
            tok(
                "acme/api",
                Actions::READ_WRITE,
                &["refs/heads/x"],
                "rw-x",
                1000,
            ),
            0,
        )
        .expect("put");
        assert_eq!(widest(0).as_deref(), Some("rw-x"));
        c.put(tok("acme/api", Actions::READ_WRITE, &[], "rw", 500), 0)
            .expect("put");
        assert_eq!(widest(0).as_deref(), Some("rw"));
        // Once the broad ones are stale, the read token is used again.
        assert_eq!(widest(2000).as_deref(), Some("read"));
        assert!(
            c.find_widest("https://other", &api, 0)
                .expect("find")
                .is_none()
        );
    }

    #[test]
    fn put_replaces_same_key_and_prunes_expired() {
        let tmp = tempfile::tempdir().expect("tmp");
        let c = TokenCache::new(tmp.path());
        c.put(tok("acme/api", Actions::READ, &[], "old", 100), 0)
            .expect("put");
        c.put(tok("acme/web", Actions::READ, &[], "gone", 50), 0)
            .expect("put");
        c.put(tok("acme/api", Actions::READ, &[], "new", 1000), 60)
            .expect("put");
        let all = c.entries().expect("entries");
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].token.expose(), "new");
    }

    #[test]
    fn remove_repo_drops_only_that_repo() {
        let tmp = tempfile::tempdir().expect("tmp");
        let c = TokenCache::new(tmp.path());
        c.put(tok("acme/api", Actions::READ, &[], "a", 1000), 0)
            .expect("put");
        c.put(tok("acme/api", Actions::WRITE, &[], "b", 1000), 0)
            .expect("put");
        c.put(tok("acme/web", Actions::READ, &[], "c", 1000), 0)
            .expect("put");
        let n = c
            .remove_repo("https://b", &RepoPath::parse("acme/api").expect("repo"))
            .expect("rm");
        assert_eq!(n, 2);
        assert_eq!(c.entries().expect("entries").len(), 1);
        c.clear().expect("clear");
        assert!(c.entries().expect("entries").is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("git-jit");
        let c = TokenCache::new(&dir);
        c.put(tok("acme/api", Actions::READ, &[], "a", 1000), 0)
            .expect("put");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(FILE)), 0o600);
        assert_eq!(mode(&dir.join(LOCK)), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn damaged_file_is_an_empty_cache() {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::write(tmp.path().join(FILE), b"{not json").expect("write");
        let c = TokenCache::new(tmp.path());
        assert!(c.entries().expect("entries").is_empty());
        c.put(tok("acme/api", Actions::READ, &[], "a", 1000), 0)
            .expect("put repairs");
        assert_eq!(c.entries().expect("entries").len(), 1);
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().to_path_buf();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let c = TokenCache::new(&dir);
                std::thread::spawn(move || {
                    for j in 0..10 {
                        let repo = format!("acme/r{i}x{j}");
                        c.put(tok(&repo, Actions::READ, &[], "t", 1000), 0)
                            .expect("put");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(TokenCache::new(&dir).entries().expect("entries").len(), 80);
    }
}
