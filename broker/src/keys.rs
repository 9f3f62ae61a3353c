//! The signing key ring: Ed25519 keys in PKCS#8 PEM files, several at once for rotation.
//!
//! The newest key (by file name: `jit-<UTC timestamp to the microsecond>-<kid prefix>.pem`,
//! so names sort by age) signs; every key in the ring verifies. A key's `kid` is its RFC 7638
//! JWK thumbprint.
//!
//! The SSH certificate authority's keys ([`ssh`]) live beside them, in `ssh/`, and travel
//! with the ring.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub mod ssh;

pub use ssh::SshCa;

const PEM_LABEL: &str = "PRIVATE KEY";

/// Why the key ring could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The directory or a file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error (part of the message, not a separate cause: printed once).
        error: std::io::Error,
    },
    /// A file was not a PKCS#8 PEM Ed25519 private key.
    #[error("{path}: not a PKCS#8 PEM Ed25519 private key: {why}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// A key file is readable by others, or by its group when it is not root's, or writable
    /// by its group.
    #[error(
        "{path}: key file is readable by others (mode {mode:o}); chmod 600 it (or, owned by root, chmod 640 to let only its group read it)"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The directory held no `*.pem` key.
    #[error("{0}: no signing keys (*.pem); run `jit-broker keys generate --dir {0}`")]
    Empty(PathBuf),
    /// The random generator failed.
    #[error("could not generate a key: the system random generator failed")]
    Rng,
    /// A file was not an unencrypted OpenSSH Ed25519 private key.
    #[error("{path}: not an OpenSSH Ed25519 private key without passphrase: {why}")]
    BadSshKey {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// The SSH CA folder exists but holds no `*.key`.
    #[error("{0}: no SSH CA keys (*.key); run `jit-broker keys generate --ssh`")]
    EmptySsh(PathBuf),
}

/// One Ed25519 key of the ring.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_x: String,
}

impl SigningKey {
    /// Builds a key from PKCS#8 DER bytes.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| e.to_string())?;
        let public = pair.public_key().as_ref();
        let public_x = URL_SAFE_NO_PAD.encode(public);
        Ok(Self {
            kid: thumbprint(&public_x),
            encoding: EncodingKey::from_ed_der(der),
            decoding: DecodingKey::from_ed_der(public),
            public_x,
        })
    }

    /// Generates a fresh key; returns it and its PKCS#8 DER encoding.
    pub fn generate() -> Result<(Self, Vec<u8>), KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Rng)?;
        let der = doc.as_ref().to_vec();
        let key = Self::from_pkcs8(&der).map_err(|_| KeyError::Rng)?;
        Ok((key, der))
    }

    /// The key id (RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key for signing.
    pub fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    /// The key for verifying.
    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> PublicJwk {
        PublicJwk {
            kty: "OKP",
            crv: "Ed25519",
            x: self.public_x.clone(),
            kid: self.kid.clone(),
            alg: "EdDSA",
            use_: "sig",
        }
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key: members in lexical order, no spaces.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A public key as served in the JWKS.
#[derive(Debug, Clone, Serialize)]
pub struct PublicJwk {
    kty: &'static str,
    crv: &'static str,
    x: String,
    kid: String,
    alg: &'static str,
    #[serde(rename = "use")]
    use_: &'static str,
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, Serialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<PublicJwk>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the public identity; the private key never prints.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The broker's keys: the newest signs, all verify; and the SSH CA, when there is one.
#[derive(Debug)]
pub struct KeyRing {
    /// Oldest first; never empty.
    keys: Vec<SigningKey>,
    /// The SSH certificate authority (`None`: no SSH certificates are issued).
    ssh: Option<SshCa>,
}

impl KeyRing {
    /// A ring of the given keys, oldest first, without an SSH CA. `None` if empty.
    pub fn new(keys: Vec<SigningKey>) -> Option<Self> {
        (!keys.is_empty()).then_some(Self { keys, ssh: None })
    }

    /// A ring of one fresh key and a fresh SSH CA that live only in memory (`jit-broker dev`).
    pub fn ephemeral() -> Result<Self, KeyError> {
        let (key, _) = SigningKey::generate()?;
        Ok(Self {
            keys: vec![key],
            ssh: Some(SshCa::ephemeral()?),
        })
    }

    /// The SSH certificate authority, if the broker has one.
    pub fn ssh_ca(&self) -> Option<&SshCa> {
        self.ssh.as_ref()
    }

    /// Loads every `*.pem` file of `dir`, sorted by name (oldest first), and the SSH CA
    /// keys of `dir/ssh` when that folder exists.
    pub fn load_dir(dir: &Path) -> Result<Self, KeyError> {
        let mut ring = Self::load_token_keys(dir)?;
        ring.ssh = SshCa::load_dir(&dir.join(ssh::SSH_DIR))?;
        Ok(ring)
    }

    fn load_token_keys(dir: &Path) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for (path, text) in read_key_files(dir, "pem")? {
            let der = pem_decode(&text).map_err(|why| KeyError::BadKey {
                path: path.clone(),
                why,
            })?;
            let key = SigningKey::from_pkcs8(&der).map_err(|why| KeyError::BadKey {
                path: path.clone(),
                why,
            })?;
            keys.push(key);
        }
        Self::new(keys).ok_or_else(|| KeyError::Empty(dir.to_path_buf()))
    }

    /// Writes a fresh key into `dir` (created 0700 if missing) as a 0600 file; returns its path
    /// and `kid`.
    pub fn generate_into(
        dir: &Path,
        now: time::OffsetDateTime,
    ) -> Result<(PathBuf, String), KeyError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| KeyError::Io {
                path,
                error: source,
            }
        };
        create_private_dir(dir)?;
        let (key, der) = SigningKey::generate()?;
        let stamp = file_stamp(now);
        let path = dir.join(format!("jit-{stamp}-{}.pem", &key.kid()[..8]));
        let mut file = create_private_file(&path)?;
        file.write_all(pem_encode(&der).as_bytes())
            .map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
        Ok((path, key.kid().to_owned()))
    }

    /// The key that signs new tokens.
    pub fn signer(&self) -> &SigningKey {
        // Invariant: `keys` is never empty (checked in `new`).
        &self.keys[self.keys.len() - 1]
    }

    /// The key with this `kid`, if it is in the ring.
    pub fn get(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// All public keys, newest first.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self.keys.iter().rev().map(SigningKey::jwk).collect(),
        }
    }
}

/// Every `*.<extension>` file of `dir`, sorted by name (oldest first), each checked to be
/// readable by its owner only, with its text.
fn read_key_files(dir: &Path, extension: &str) -> Result<Vec<(PathBuf, String)>, KeyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| KeyError::Io {
            path,
            error: source,
        }
    };
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            check_mode(&path)?;
            let text = fs::read_to_string(&path).map_err(io(&path))?;
            Ok((path, text))
        })
        .collect()
}

/// Creates `dir` (and its parents) 0700 when it is missing.
fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|source| KeyError::Io {
        path: dir.to_path_buf(),
        error: source,
    })
}

/// Creates a new 0600 file (never overwriting one).
fn create_private_file(path: &Path) -> Result<fs::File, KeyError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        error: source,
    })
}

/// A key file's time stamp: `20260101T000000Z`, so names sort by age.
fn file_stamp(now: time::OffsetDateTime) -> String {
    now.format(time::macros::format_description!(
        "[year][month][day]T[hour][minute][second].[subsecond digits:6]Z"
    ))
    .unwrap_or_default()
}

#[cfg(unix)]
fn check_mode(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        error: source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if !key_mode_allowed(mode, std::os::unix::fs::MetadataExt::uid(&meta)) {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Whether a key file of `mode`, owned by `owner`, is private enough: readable by its owner
/// alone (0600, 0400), or root's and readable by its group alone (0640, 0440) — how systemd
/// (`root:git-jit`) and a Kubernetes Secret with `fsGroup` (`root:<fsGroup>`) hand a key to a
/// service user that must not be able to change it. Never writable by the group, never
/// readable by others.
#[cfg(unix)]
fn key_mode_allowed(mode: u32, owner: u32) -> bool {
    mode & 0o077 == 0 || (owner == 0 && mode & 0o037 == 0)
}

#[cfg(not(unix))]
fn check_mode(_: &Path) -> Result<(), KeyError> {
    Ok(())
}

fn pem_encode(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {PEM_LABEL}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {PEM_LABEL}-----\n"));
    out
}

fn pem_decode(text: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {PEM_LABEL}-----");
    let end = format!("-----END {PEM_LABEL}-----");
    let start = text.find(&begin).ok_or("missing BEGIN PRIVATE KEY line")?;
    let body = &text[start + begin.len()..];
    let stop = body.find(&end).ok_or("missing END PRIVATE KEY line")?;
    let b64: String = body[..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("bad base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_and_rotate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = time::macros::datetime!(2026-01-01 0:00 UTC);
        let (p1, kid1) = KeyRing::generate_into(dir.path(), t0).expect("gen");
        let ring = KeyRing::load_dir(dir.path()).expect("load");
        assert_eq!(ring.signer().kid(), kid1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p1).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let (_, kid2) =
            KeyRing::generate_into(dir.path(), t0 + time::Duration::days(1)).expect("gen");
        let ring = KeyRing::load_dir(dir.path()).expect("load");
        assert_eq!(ring.signer().kid(), kid2, "the newest key signs");
        assert!(ring.get(&kid1).is_some(), "older keys still verify");
        assert_eq!(ring.jwks().keys.len(), 2);
    }

    #[test]
    fn refuses_bad_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            KeyRing::load_dir(dir.path()),
            Err(KeyError::Empty(_))
        ));
        let bad = dir.path().join("bad.pem");
        fs::write(
            &bad,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&bad, fs::Permissions::from_mode(0o644)).expect("chmod");
            assert!(matches!(
                KeyRing::load_dir(dir.path()),
                Err(KeyError::Permissions { .. })
            ));
            fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let err = KeyRing::load_dir(dir.path()).expect_err("refused");
        assert!(matches!(err, KeyError::BadKey { .. }), "{err}");
    }

    #[test]
    fn thumbprint_matches_rfc8037_example() {
        // RFC 8037 appendix A.3: the thumbprint of the example Ed25519 key.
        assert_eq!(
            thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    /// Regression: two keys generated within one second were named by the same second, so
    /// the one that signs was whichever `kid` sorted last, not the newest.
    #[test]
    fn the_newest_key_signs_even_within_one_second() {
        let dir = tempfile::tempdir().expect("dir");
        let t0 = time::macros::datetime!(2026-01-01 0:00 UTC);
        let mut newest = String::new();
        for ms in 0..8 {
            let at = t0 + time::Duration::milliseconds(ms);
            newest = KeyRing::generate_into(dir.path(), at).expect("gen").1;
        }
        let ring = KeyRing::load_dir(dir.path()).expect("load");
        assert_eq!(ring.signer().kid(), newest);
    }

    /// Regression: the key folder was created 0755 although the help says 0700.
    #[cfg(unix)]
    #[test]
    fn generate_creates_the_key_folder_0700() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let keys = dir.path().join("new").join("keys");
        KeyRing::generate_into(&keys, time::OffsetDateTime::UNIX_EPOCH).expect("generate");
        let mode = fs::metadata(&keys).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{mode:o}");
    }

    #[cfg(unix)]
    #[test]
    fn a_key_is_private_to_its_user_or_to_roots_group() {
        // The owner's alone: any owner.
        assert!(key_mode_allowed(0o600, 1000));
        assert!(key_mode_allowed(0o400, 0));
        // Root's, readable by its group (systemd root:git-jit 0640, Kubernetes fsGroup 0440).
        assert!(key_mode_allowed(0o640, 0));
        assert!(key_mode_allowed(0o440, 0));
        // A group that may read a user's own key, or write root's, or anyone else: refused.
        assert!(!key_mode_allowed(0o640, 1000));
        assert!(!key_mode_allowed(0o660, 0));
        assert!(!key_mode_allowed(0o644, 0));
        assert!(!key_mode_allowed(0o604, 0));
        assert!(!key_mode_allowed(0o650, 0));
    }
}
