//! What `serve` will need, checked before it is needed. `check-config` runs these checks and
//! `serve` runs the same ones before it opens anything, so a broker that passed
//! `check-config` as its service user starts, and one that cannot start says why once,
//! naming the configuration file and the key: the signing keys load (readable, well formed,
//! private), the audit export and the audit folder can be written; with `--online`, the store
//! answers as the topology configured (AUTH included) and every issuer's discovery document
//! and keys can be fetched. `serve` refuses to start while the store does not answer, or
//! waits for it with a logged countdown.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::compile::Compiled;
use crate::config::{ConfigError, StoreConfig};
use crate::keys::KeyRing;
use crate::recorder::sink::SinkTarget;
use crate::store::GrantStore;

/// Longest time one store probe may take before it counts as unanswered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time between two probes while `serve --wait-for-store` waits.
const RETRY_EVERY: Duration = Duration::from_secs(2);

/// What the checks found: a line per thing that is ready, an error per thing that is not.
#[derive(Debug, Default)]
pub struct Report {
    /// `key: what was found`, for the things that are ready.
    pub ready: Vec<String>,
    /// The things that are not, each naming the file and key.
    pub problems: Vec<ConfigError>,
}

impl Report {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems, one per line.
    pub fn problems_text(&self) -> String {
        self.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Adds `result` as a ready line or a problem of `key` in `file`.
    pub fn check(&mut self, file: &Path, key: &str, result: Result<String, String>) {
        match result {
            Ok(found) => self.ready.push(format!("{key}: {found}")),
            Err(problem) => self.problems.push(ConfigError::Invalid {
                file: file.to_path_buf(),
                key: key.to_owned(),
                problem,
            }),
        }
    }
}

/// The checks that need no network: signing keys, audit export, audit folder.
pub fn files(compiled: &Compiled, file: &Path) -> Report {
    let mut report = Report::default();
    report.check(file, "broker.keys_dir", keys(&compiled.keys_dir));
    if let Some(path) = compiled.export.as_deref().filter(|e| *e != "stdout") {
        report.check(file, "audit.export", appendable(Path::new(path)));
    }
    if let SinkTarget::File { dir, .. } = &compiled.audit.sink {
        report.check(file, "audit.dir", audit_dir(dir));
    }
    report
}

/// The checks that need the network (`check-config --online`): the store as configured,
/// every issuer's discovery document and keys.
pub async fn online(compiled: &Compiled, store: &dyn GrantStore, file: &Path) -> Report {
    let mut report = Report::default();
    report.check(file, store_key(&compiled.store), probe_store(store).await);
    for (name, fetched) in compiled.verifier.probe().await {
        let found = match fetched {
            Ok(0) => Err("discovery answered, but the issuer's JWKS holds no usable key".into()),
            Ok(n) => Ok(format!("discovery and JWKS fetched, {n} usable keys")),
            Err(e) => Err(e),
        };
        report.check(file, &format!("issuer {name:?}"), found);
    }
    report
}

/// `serve` at start: the store answers, now (`wait` unset), or within `wait`, probing every
/// couple of seconds and logging how long is left.
pub async fn store_ready(
    store: &dyn GrantStore,
    config: &StoreConfig,
    file: &Path,
    wait: Option<Duration>,
) -> Result<String, ConfigError> {
    let deadline = tokio::time::Instant::now() + wait.unwrap_or_default();
    loop {
        let problem = match probe_store(store).await {
            Ok(found) => return Ok(found),
            Err(problem) => problem,
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            let problem = match wait {
                Some(w) => format!("{problem} (waited {}s)", w.as_secs()),
                None => format!("{problem} (to wait for it, start with --wait-for-store SECS)"),
            };
            return Err(ConfigError::Invalid {
                file: file.to_path_buf(),
                key: store_key(config).to_owned(),
                problem,
            });
        }
        tracing::warn!(
            key = store_key(config),
            seconds_left = left.as_secs(),
            error = %problem,
            "waiting for the store"
        );
        tokio::time::sleep(RETRY_EVERY.min(left)).await;
    }
}

/// The key that names the store in errors.
fn store_key(config: &StoreConfig) -> &'static str {
    match config.kind {
        crate::config::StoreKind::Memory => "store.kind",
        crate::config::StoreKind::Redis if config.cluster.is_empty() => "store.url",
        crate::config::StoreKind::Redis => "store.cluster",
    }
}

async fn probe_store(store: &dyn GrantStore) -> Result<String, String> {
    match tokio::time::timeout(PROBE_TIMEOUT, store.probe()).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "grant store unavailable: no answer within {}s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// The key ring loads, as `serve` loads it.
fn keys(dir: &Path) -> Result<String, String> {
    let ring = KeyRing::load_dir(dir).map_err(|e| e.to_string())?;
    Ok(format!(
        "keys: {}, in {}; {} signs",
        ring.jwks().keys.len(),
        dir.display(),
        ring.signer().kid()
    ))
}

/// `path` can be appended to, as the export opens it (created if missing).
fn appendable(path: &Path) -> Result<String, String> {
    if path.is_dir() {
        return Err(format!("{} is a directory", path.display()));
    }
    if path.exists() {
        OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot append to {}: {e}", path.display()))?;
        return Ok(format!("{} can be appended to", path.display()));
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    writable_dir(&parent).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    Ok(format!("{} can be created", path.display()))
}

/// The audit folder can be written, or created (as the sink creates it), and is not writable
/// by other users (the sink refuses such a folder).
fn audit_dir(dir: &Path) -> Result<String, String> {
    if dir.exists() {
        use std::os::unix::fs::PermissionsExt as _;
        let meta =
            std::fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        if !meta.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(format!(
                "{} is writable by other users (mode {mode:o}); chmod go-w it",
                dir.display()
            ));
        }
        writable_dir(dir).map_err(|e| format!("cannot write into {}: {e}", dir.display()))?;
        return Ok(format!("{} can be written", dir.display()));
    }
    let existing = dir
        .ancestors()
        .skip(1)
        .find(|a| a.as_os_str().is_empty() || a.exists())
        .map(|a| {
            if a.as_os_str().is_empty() {
                Path::new(".")
            } else {
                a
            }
        })
        .unwrap_or(Path::new("/"));
    writable_dir(existing).map_err(|e| {
        format!(
            "cannot create {}: {} cannot be written: {e}",
            dir.display(),
            existing.display()
        )
    })?;
    Ok(format!("{} will be created", dir.display()))
}

/// Whether this user can create a file in `dir`: creates and removes a probe file (the
/// permission bits alone do not tell, e.g. for root, ACLs or a read-only mount).
fn writable_dir(dir: &Path) -> Result<(), std::io::Error> {
    let probe = dir.join(format!(".jit-check-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn compiled(dir: &Path, extra: &str) -> Compiled {
        let text = format!(
            r#"
[broker]
listen = "127.0.0.1:0"
public_url = "https://jit.example.com"
keys_dir = "{keys}"

[store]
kind = "memory"

[audit]
dir = "{audit}"
{extra}
"#,
            keys = dir.join("keys").display(),
            audit = dir.join("audit").display(),
        );
        let file = Path::new("broker.toml");
        let config = Config::parse(&text, file).unwrap_or_else(|e| panic!("{e}"));
        crate::compile::compile(&config, file).unwrap_or_else(|e| panic!("{e}"))
    }

    fn problems(report: &Report) -> Vec<String> {
        report.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_ready_broker_passes_and_says_what_it_found() {
        let dir = tempfile::tempdir().expect("dir");
        KeyRing::generate_into(&dir.path().join("keys"), time::OffsetDateTime::UNIX_EPOCH)
            .expect("key");
        let export = dir.path().join("export.jsonl");
        let c = compiled(
            dir.path(),
            &format!("export = {:?}", export.display().to_string()),
        );
        let report = files(&c, Path::new("broker.toml"));
        assert!(report.is_ok(), "{}", report.problems_text());
        let ready = report.ready.join("\n");
        assert!(ready.contains("broker.keys_dir: keys: 1,"), "{ready}");
        assert!(ready.contains("audit.export: "), "{ready}");
        assert!(ready.contains("audit.dir: "), "{ready}");
        assert!(!export.exists(), "the check creates nothing");
        assert!(
            !dir.path().join("audit").exists(),
            "the check creates nothing"
        );
    }

    /// Regression: `check-config` said ok for a missing key folder, and `serve` then said
    /// `…/nokeys: No such file or directory (os error 2): No such file or directory (os error
    /// 2)`, naming neither the file nor the key.
    #[test]
    fn a_missing_key_folder_is_named_once_with_file_and_key() {
        let dir = tempfile::tempdir().expect("dir");
        let report = files(&compiled(dir.path(), ""), Path::new("broker.toml"));
        let p = problems(&report);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("broker.toml: broker.keys_dir: "), "{p:?}");
        assert_eq!(p[0].matches("No such file").count(), 1, "{p:?}");
    }

    #[test]
    fn a_corrupt_key_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let keys = dir.path().join("keys");
        std::fs::create_dir(&keys).expect("dir");
        let pem = keys.join("jit-1.pem");
        std::fs::write(
            &pem,
            "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let p = problems(&files(&compiled(dir.path(), ""), Path::new("broker.toml")));
        assert!(
            p.len() == 1 && p[0].contains("broker.keys_dir: ") && p[0].contains("not a PKCS#8"),
            "{p:?}"
        );
    }

    #[test]
    fn unwritable_audit_paths_are_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        KeyRing::generate_into(&dir.path().join("keys"), time::OffsetDateTime::UNIX_EPOCH)
            .expect("key");
        let export = dir.path().join("no-such-folder").join("export.jsonl");
        let c = compiled(
            dir.path(),
            &format!("export = {:?}", export.display().to_string()),
        );
        std::fs::create_dir(dir.path().join("audit")).expect("dir");
        std::fs::set_permissions(
            dir.path().join("audit"),
            std::fs::Permissions::from_mode(0o777),
        )
        .expect("chmod");
        let p = problems(&files(&c, Path::new("broker.toml")));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("broker.toml: audit.export: cannot create "),
            "{p:?}"
        );
        assert!(
            p[1].contains("audit.dir: ") && p[1].contains("writable by other users"),
            "{p:?}"
        );
        // An export path that is a folder.
        let c = compiled(
            dir.path(),
            &format!("export = {:?}", dir.path().display().to_string()),
        );
        let p = problems(&files(&c, Path::new("broker.toml")));
        assert!(p[0].contains("is a directory"), "{p:?}");
    }

    #[test]
    fn an_unreachable_store_is_named_and_waiting_is_offered() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let config = StoreConfig {
            url: Some(format!("redis://127.0.0.1:{port}")),
            ..StoreConfig::default()
        };
        let store = crate::store::redis::RedisStore::new(
            crate::store::redis::Topology::Single(format!("redis://127.0.0.1:{port}")),
            "jit",
            10,
        );
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let err = rt
            .block_on(store_ready(&store, &config, Path::new("b.toml"), None))
            .expect_err("unreachable")
            .to_string();
        assert!(
            err.starts_with("b.toml: store.url: grant store unavailable"),
            "{err}"
        );
        assert!(err.ends_with("start with --wait-for-store SECS)"), "{err}");
        let memory = crate::store::memory::MemoryStore::new(10);
        let found = rt
            .block_on(store_ready(
                &memory,
                &StoreConfig::default(),
                Path::new("b"),
                None,
            ))
            .expect("memory answers");
        assert_eq!(found, "answers");
    }
}
