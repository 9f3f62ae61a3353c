//! The SSH certificate authority: Ed25519 keys in OpenSSH private key files, separate from the
//! token keys, in the `ssh/` folder of the key folder, several at once for rotation.
//!
//! Like the token keys, the newest file (by name: `ssh-ca-<UTC timestamp>-….key`) signs and
//! every key is published (`GET /.well-known/ssh-ca.pub`, one line each, the form sshd's
//! `TrustedUserCAKeys` file takes), so a new CA key can be published before it signs and an
//! old one kept until the last certificate it signed has expired.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom as _, SystemRandom};
use ssh_key::private::{Ed25519Keypair, KeypairData};
use ssh_key::{Fingerprint, HashAlg, LineEnding, PrivateKey, PublicKey};

use super::KeyError;

/// The folder of the SSH CA keys inside the broker's key folder.
pub const SSH_DIR: &str = "ssh";

/// One CA key.
pub struct SshCaKey {
    key: PrivateKey,
    fingerprint: Fingerprint,
}

impl std::fmt::Debug for SshCaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the public identity; the private key never prints.
        f.debug_struct("SshCaKey")
            .field("fingerprint", &self.fingerprint.to_string())
            .finish_non_exhaustive()
    }
}

impl SshCaKey {
    /// A fresh key from the system's random generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| KeyError::Rng)?;
        let pair = Ed25519Keypair::from_seed(&seed);
        let key = PrivateKey::new(KeypairData::Ed25519(pair), "git-jit ssh ca")
            .map_err(|_| KeyError::Rng)?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: PrivateKey) -> Self {
        let fingerprint = key.public_key().fingerprint(HashAlg::Sha256);
        Self { key, fingerprint }
    }

    /// The private key, for signing certificates.
    pub fn private(&self) -> &PrivateKey {
        &self.key
    }

    /// The public key.
    pub fn public(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// The SHA-256 fingerprint (`SHA256:…`).
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }
}

/// The SSH CA keys: the newest signs, all are trusted.
#[derive(Debug)]
pub struct SshCa {
    /// Oldest first; never empty.
    keys: Vec<SshCaKey>,
}

impl SshCa {
    /// A CA of one fresh key that lives only in memory (`jit-broker dev`, tests).
    pub fn ephemeral() -> Result<Self, KeyError> {
        Ok(Self {
            keys: vec![SshCaKey::generate()?],
        })
    }

    /// Loads every `*.key` file of `dir` (oldest first by name); `None` when `dir` does not
    /// exist (the broker then issues no SSH certificates). Files must be 0600 Ed25519 keys
    /// without a passphrase.
    pub fn load_dir(dir: &Path) -> Result<Option<Self>, KeyError> {
        if !dir.exists() {
            return Ok(None);
        }
        let mut keys = Vec::new();
        for (path, text) in super::read_key_files(dir, "key")? {
            let bad = |why: String| KeyError::BadSshKey {
                path: path.clone(),
                why,
            };
            let key = PrivateKey::from_openssh(&text).map_err(|e| bad(e.to_string()))?;
            if key.is_encrypted() {
                return Err(bad(
                    "the key has a passphrase; the broker needs it without".into()
                ));
            }
            if !matches!(key.key_data(), KeypairData::Ed25519(_)) {
                return Err(bad(format!(
                    "a {} key; the SSH CA is Ed25519",
                    key.algorithm()
                )));
            }
            keys.push(SshCaKey::from_key(key));
        }
        if keys.is_empty() {
            return Err(KeyError::EmptySsh(dir.to_path_buf()));
        }
        Ok(Some(Self { keys }))
    }

    /// Writes a fresh CA key into `dir` (created 0700 if missing) as a 0600 OpenSSH private
    /// key file; returns its path and fingerprint.
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
        super::create_private_dir(dir)?;
        let key = SshCaKey::generate()?;
        let text = key
            .private()
            .to_openssh(LineEnding::LF)
            .map_err(|_| KeyError::Rng)?;
        let stamp = super::file_stamp(now);
        let fingerprint = key.fingerprint().to_string();
        let short: String = fingerprint
            .trim_start_matches("SHA256:")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect();
        let path = dir.join(format!("ssh-ca-{stamp}-{short}.key"));
        let mut file = super::create_private_file(&path)?;
        file.write_all(text.as_bytes()).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
        Ok((path, fingerprint))
    }

    /// The key that signs new certificates.
    pub fn signer(&self) -> &SshCaKey {
        // Invariant: `keys` is never empty (checked where built).
        &self.keys[self.keys.len() - 1]
    }

    /// The fingerprints of every trusted CA key.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.keys.iter().map(|k| k.fingerprint).collect()
    }

    /// Every CA public key, one OpenSSH line each, newest first: a `TrustedUserCAKeys` file.
    pub fn public_lines(&self) -> String {
        let mut out = String::new();
        for k in self.keys.iter().rev() {
            if let Ok(line) = k.public().to_openssh() {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn generate_load_and_rotate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ssh = dir.path().join(SSH_DIR);
        assert!(SshCa::load_dir(&ssh).expect("absent").is_none());
        let t0 = time::macros::datetime!(2026-01-01 0:00 UTC);
        let (p1, fp1) = SshCa::generate_into(&ssh, t0).expect("gen");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p1).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let mode = fs::metadata(&ssh).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }
        let ca = SshCa::load_dir(&ssh).expect("load").expect("present");
        assert_eq!(ca.signer().fingerprint().to_string(), fp1);
        let (_, fp2) = SshCa::generate_into(&ssh, t0 + time::Duration::days(1)).expect("gen");
        let ca = SshCa::load_dir(&ssh).expect("load").expect("present");
        assert_eq!(
            ca.signer().fingerprint().to_string(),
            fp2,
            "the newest signs"
        );
        assert_eq!(ca.fingerprints().len(), 2, "both are trusted");
        let lines = ca.public_lines();
        assert_eq!(lines.lines().count(), 2);
        assert!(
            lines.lines().all(|l| l.starts_with("ssh-ed25519 ")),
            "{lines}"
        );
        assert!(!lines.contains("PRIVATE"), "{lines}");
    }

    #[test]
    fn refuses_bad_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("e")).expect("mkdir");
        assert!(matches!(
            SshCa::load_dir(&dir.path().join("e")),
            Err(KeyError::EmptySsh(_))
        ));
        let bad = dir.path().join("bad.key");
        fs::write(&bad, "not a key\n").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&bad, fs::Permissions::from_mode(0o644)).expect("chmod");
            assert!(matches!(
                SshCa::load_dir(dir.path()),
                Err(KeyError::Permissions { .. })
            ));
            fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let err = SshCa::load_dir(dir.path()).expect_err("refused");
        assert!(matches!(err, KeyError::BadSshKey { .. }), "{err}");
        assert!(err.to_string().contains("bad.key"), "{err}");
    }

    #[test]
    fn debug_prints_no_private_key() {
        let ca = SshCa::ephemeral().expect("ca");
        let text = format!("{ca:?}");
        assert!(text.contains("SHA256:"), "{text}");
        let private = ca
            .signer()
            .private()
            .to_openssh(LineEnding::LF)
            .expect("pem");
        assert!(
            !text.contains(private.lines().nth(1).unwrap_or("-")),
            "{text}"
        );
    }
}
