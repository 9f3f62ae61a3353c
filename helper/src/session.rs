//! The login session on disk: `session.json` in the config directory, 0600, written
//! atomically. Holds the ID and refresh tokens `git jit login` obtained; the OIDC side
//! (device flow, refresh) is in `login`.

use std::path::PathBuf;

use jit_proto::Secret;
use serde::{Deserialize, Serialize};

use crate::cache::{create_private_dir, write_private_atomic};

const SESSION_FILE: &str = "session.json";

/// The session file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("session file {path}: {reason}")]
pub struct SessionError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// A stored login session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The OIDC issuer.
    pub issuer: String,
    /// The public client id used.
    pub client_id: String,
    /// The issuer's token endpoint (for refresh).
    pub token_endpoint: String,
    /// The current ID token.
    pub id_token: Secret,
    /// When it expires (its unverified `exp`).
    pub id_token_expires_at: i64,
    /// The refresh token, when the issuer gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    /// The broker `git jit login` ran for (its base URL): the ID token goes to no other.
    /// Sessions saved before this field existed are used only with the configured broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
}

/// The session file in the config directory.
#[derive(Debug, Clone)]
pub struct SessionStore {
    dir: PathBuf,
}

impl SessionStore {
    /// The store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The session file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(SESSION_FILE)
    }

    fn file_err(&self, e: impl std::fmt::Display) -> SessionError {
        SessionError {
            path: self.path(),
            reason: e.to_string(),
        }
    }

    /// The stored session, if any.
    pub fn load(&self) -> Result<Option<Session>, SessionError> {
        match std::fs::read(self.path()) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| self.file_err(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.file_err(e)),
        }
    }

    /// Saves the session (0600, atomic).
    pub fn save(&self, s: &Session) -> Result<(), SessionError> {
        create_private_dir(&self.dir).map_err(|e| self.file_err(e))?;
        let body = serde_json::to_vec_pretty(s).map_err(|e| self.file_err(e))?;
        write_private_atomic(&self.dir, SESSION_FILE, &body).map_err(|e| self.file_err(e))
    }

    /// Removes the session; whether there was one.
    pub fn remove(&self) -> Result<bool, SessionError> {
        match std::fs::remove_file(self.path()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.file_err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::fake_jwt;
    use serde_json::json;

    fn session(url: &str, exp: i64, refresh: Option<&str>) -> Session {
        Session {
            issuer: url.to_owned(),
            client_id: "git-jit-cli".into(),
            token_endpoint: format!("{url}/token"),
            id_token: Secret::new(fake_jwt(&json!({"sub": "alice", "exp": exp}))),
            id_token_expires_at: exp,
            refresh_token: refresh.map(Secret::new),
            broker: Some("https://b".into()),
        }
    }

    #[test]
    fn save_load_remove() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = SessionStore::new(tmp.path().join("cfg"));
        assert_eq!(store.load().expect("none"), None);
        let s = session("https://i", 7, None);
        store.save(&s).expect("save");
        assert_eq!(store.load().expect("load"), Some(s));
        assert!(store.remove().expect("rm"));
        assert!(!store.remove().expect("rm twice"));
        std::fs::write(store.path(), b"{").expect("write");
        let e = store.load().expect_err("corrupt");
        assert!(e.to_string().starts_with("session file "), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn session_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let store = SessionStore::new(tmp.path().join("git-jit"));
        store
            .save(&session("https://i", 1, Some("rt")))
            .expect("save");
        let mode = std::fs::metadata(store.path())
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}
