//! The grant as an OpenSSH user certificate, signed by the broker's SSH CA: the same claims as
//! a Bearer token, in the certificate's own fields, and read back from it after verification.
//!
//! | claim | certificate field |
//! |---|---|
//! | `jti` | key id (so sshd's log line and a KRL can name the grant) |
//! | `iat`/`nbf`, `exp` | valid after, valid before |
//! | `scope` | principal (beside [`PRINCIPAL`], the one the Git server accepts) and extension [`EXT_SCOPE`] |
//! | `sub`, `idp`, `role`, `refs` | extensions [`EXT_SUBJECT`], [`EXT_ISSUER`], [`EXT_ROLE`], [`EXT_REFS`] |
//!
//! No standard extension is set: a git-jit certificate permits no terminal, no forwarding of
//! ports, agents or X11, and no `~/.ssh/rc`. There are no critical options, so any sshd
//! accepts it; what it may reach is `jit-ssh-gate`'s decision. Verification (`read`)
//! checks the CA signature against the ring's fingerprints, the time window, the certificate
//! type, the principal, and that no critical option is present.

use jit_proto::ssh::{
    EXT_ISSUER, EXT_REFS, EXT_ROLE, EXT_SCOPE, EXT_SUBJECT, MAX_CERTIFICATE_LEN, PRINCIPAL,
};
use jit_proto::{Claims, RefPattern, Scope};
use ring::rand::{SecureRandom as _, SystemRandom};
use sha2::Digest as _;
use ssh_key::certificate::{Builder, CertType};
use ssh_key::{Certificate, PublicKey};

use super::{TokenError, TokenSigner};

/// Why a certificate could not be issued or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshCertError {
    /// The broker has no SSH CA keys.
    #[error("this broker has no SSH certificate authority (jit-broker keys generate --ssh)")]
    NoCa,
    /// The public key to certify does not decode.
    #[error("public_key does not decode as an OpenSSH public key")]
    PublicKey,
    /// Signing failed.
    #[error("the certificate could not be signed")]
    Sign,
    /// Not an OpenSSH certificate, or too large.
    #[error("certificate is malformed")]
    Malformed,
    /// Not signed by a CA key of this broker, or outside its validity window.
    #[error("certificate is not signed by this broker's SSH CA, or is outside its validity")]
    Untrusted,
    /// A host certificate, a foreign principal, a critical option or missing extensions.
    #[error("certificate is not a git-jit user certificate")]
    NotOurs,
}

impl From<SshCertError> for TokenError {
    fn from(e: SshCertError) -> Self {
        match e {
            SshCertError::Malformed => TokenError::Malformed,
            _ => TokenError::Invalid,
        }
    }
}

/// The certificate's serial: the first 8 bytes of the SHA-256 of the `jti` (never 0), so a KRL
/// can also name a grant by serial.
pub fn serial_of(jti: &str) -> u64 {
    let digest = sha2::Sha256::digest(jti.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes).max(1)
}

impl TokenSigner {
    /// Whether this broker can issue SSH certificates.
    pub fn has_ssh_ca(&self) -> bool {
        self.keys().ssh_ca().is_some()
    }

    /// Certifies `public_key` (an OpenSSH public key line) for the grant `claims`, with the
    /// newest SSH CA key; the certificate as one OpenSSH line, and the key's SHA-256
    /// fingerprint (for the audit trail).
    pub fn sign_ssh(
        &self,
        claims: &Claims,
        public_key: &str,
    ) -> Result<(String, String), SshCertError> {
        let ca = self.keys().ssh_ca().ok_or(SshCertError::NoCa)?;
        let key = PublicKey::from_openssh(public_key).map_err(|_| SshCertError::PublicKey)?;
        let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
        let mut nonce = [0u8; 32];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SshCertError::Sign)?;
        let window = |t: i64| u64::try_from(t).map_err(|_| SshCertError::Sign);
        let mut b = Builder::new(
            nonce.to_vec(),
            key.key_data().clone(),
            window(claims.iat)?,
            window(claims.exp)?,
        )
        .map_err(|_| SshCertError::Sign)?;
        let sign = |_| SshCertError::Sign;
        b.serial(serial_of(&claims.jti)).map_err(sign)?;
        b.cert_type(CertType::User).map_err(sign)?;
        b.key_id(claims.jti.clone()).map_err(sign)?;
        b.valid_principal(PRINCIPAL).map_err(sign)?;
        b.valid_principal(claims.scope.to_string()).map_err(sign)?;
        b.extension(EXT_SCOPE, claims.scope.to_string())
            .map_err(sign)?;
        b.extension(EXT_SUBJECT, claims.sub.clone()).map_err(sign)?;
        b.extension(EXT_ISSUER, claims.idp.clone()).map_err(sign)?;
        b.extension(EXT_ROLE, claims.role.clone()).map_err(sign)?;
        if !claims.refs.is_empty() {
            let refs: Vec<&str> = claims.refs.iter().map(RefPattern::as_str).collect();
            b.extension(EXT_REFS, refs.join(" ")).map_err(sign)?;
        }
        b.comment(claims.jti.clone()).map_err(sign)?;
        let cert = b.sign(ca.signer().private()).map_err(sign)?;
        let text = cert.to_openssh().map_err(sign)?;
        Ok((text, fingerprint))
    }

    /// Verifies an OpenSSH certificate line at `now` (seconds) and reads the grant's claims
    /// from it. Whether the grant is live is the store's question, as for a token.
    pub fn verify_ssh(&self, certificate: &str, now: i64) -> Result<Claims, SshCertError> {
        let ca = self.keys().ssh_ca().ok_or(SshCertError::NoCa)?;
        if certificate.len() > MAX_CERTIFICATE_LEN {
            return Err(SshCertError::Malformed);
        }
        let cert =
            Certificate::from_openssh(certificate.trim()).map_err(|_| SshCertError::Malformed)?;
        let now = u64::try_from(now).map_err(|_| SshCertError::Untrusted)?;
        cert.validate_at(now, ca.fingerprints().iter())
            .map_err(|_| SshCertError::Untrusted)?;
        read(&cert, self.issuer(), self.audience())
    }
}

/// The claims of a verified certificate.
fn read(cert: &Certificate, iss: &str, aud: &str) -> Result<Claims, SshCertError> {
    if cert.cert_type() != CertType::User
        || !cert.critical_options().is_empty()
        || !cert.valid_principals().iter().any(|p| p == PRINCIPAL)
    {
        return Err(SshCertError::NotOurs);
    }
    let ext = |name: &str| cert.extensions().get(name).cloned();
    let scope = ext(EXT_SCOPE)
        .and_then(|s| Scope::parse(&s).ok())
        .ok_or(SshCertError::NotOurs)?;
    let refs = match ext(EXT_REFS) {
        None => Vec::new(),
        Some(r) => r
            .split(' ')
            .map(RefPattern::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| SshCertError::NotOurs)?,
    };
    let time = |t: u64| i64::try_from(t).map_err(|_| SshCertError::NotOurs);
    Ok(Claims {
        iss: iss.to_owned(),
        aud: aud.to_owned(),
        sub: ext(EXT_SUBJECT).ok_or(SshCertError::NotOurs)?,
        idp: ext(EXT_ISSUER).ok_or(SshCertError::NotOurs)?,
        iat: time(cert.valid_after())?,
        nbf: time(cert.valid_after())?,
        exp: time(cert.valid_before())?,
        jti: cert.key_id().to_owned(),
        scope,
        refs,
        role: ext(EXT_ROLE).ok_or(SshCertError::NotOurs)?,
        reason: None,
        req: None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ssh_key::PrivateKey;
    use ssh_key::private::{Ed25519Keypair, KeypairData};

    use super::*;
    use crate::keys::KeyRing;
    use crate::token::tests::{AUD, ISS, claims};

    fn signer() -> TokenSigner {
        TokenSigner::new(
            Arc::new(KeyRing::ephemeral().expect("ring")),
            ISS.to_owned(),
            AUD.to_owned(),
        )
    }

    fn user_key(seed: u8) -> PrivateKey {
        let pair = Ed25519Keypair::from_seed(&[seed; 32]);
        PrivateKey::new(KeypairData::Ed25519(pair), "").expect("key")
    }

    fn public_line(k: &PrivateKey) -> String {
        k.public_key().to_openssh().expect("line")
    }

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn certificate_carries_the_grant_and_reads_back() {
        let s = signer();
        let mut c = claims(NOW, 600);
        c.refs = vec![RefPattern::parse("refs/heads/fix/*").expect("pattern")];
        let key = user_key(7);
        let (text, fp) = s.sign_ssh(&c, &public_line(&key)).expect("signed");
        assert!(
            text.starts_with("ssh-ed25519-cert-v01@openssh.com "),
            "{text}"
        );
        assert!(fp.starts_with("SHA256:"), "{fp}");
        let cert = Certificate::from_openssh(&text).expect("parses");
        assert_eq!(cert.key_id(), c.jti);
        assert_eq!(cert.valid_after(), NOW as u64);
        assert_eq!(cert.valid_before(), (NOW + 600) as u64);
        assert_eq!(cert.valid_principals(), [PRINCIPAL, "repo:acme/api:read"]);
        assert_eq!(cert.cert_type(), CertType::User);
        assert!(cert.critical_options().is_empty());
        assert!(
            !cert.extensions().keys().any(|k| k.starts_with("permit-")),
            "no terminal, no forwarding: {:?}",
            cert.extensions()
        );
        assert_eq!(cert.public_key(), key.public_key().key_data());
        assert_eq!(cert.serial(), serial_of(&c.jti));
        let back = s.verify_ssh(&text, NOW + 1).expect("verifies");
        assert_eq!(
            back,
            Claims {
                reason: None,
                req: None,
                ..c
            }
        );
    }

    #[test]
    fn refuses_foreign_expired_and_garbage_certificates() {
        let s = signer();
        let c = claims(NOW, 600);
        let (text, _) = s.sign_ssh(&c, &public_line(&user_key(1))).expect("signed");
        assert_eq!(s.verify_ssh(&text, NOW + 600), Err(SshCertError::Untrusted));
        assert_eq!(s.verify_ssh(&text, NOW - 1), Err(SshCertError::Untrusted));
        let other = signer();
        assert_eq!(other.verify_ssh(&text, NOW), Err(SshCertError::Untrusted));
        assert_eq!(
            s.verify_ssh("ssh-ed25519 AAAA", NOW),
            Err(SshCertError::Malformed)
        );
        let huge = format!("{text}{}", " ".repeat(MAX_CERTIFICATE_LEN));
        assert_eq!(s.verify_ssh(&huge, NOW), Err(SshCertError::Malformed));

        // A certificate signed by the right CA but without git-jit's principal (say, one an
        // operator made by hand with the same key) is not a grant.
        let ca = s.keys().ssh_ca().expect("ca").signer().private().clone();
        let mut b = Builder::new(
            vec![0; 32],
            user_key(2).public_key().key_data().clone(),
            NOW as u64,
            NOW as u64 + 60,
        )
        .expect("builder");
        b.cert_type(CertType::User).expect("type");
        b.key_id(c.jti.clone()).expect("id");
        b.valid_principal("git").expect("principal");
        let hand = b.sign(&ca).expect("sign").to_openssh().expect("text");
        assert_eq!(s.verify_ssh(&hand, NOW), Err(SshCertError::NotOurs));
    }

    #[test]
    fn no_ca_no_certificate() {
        let ring =
            KeyRing::new(vec![crate::keys::SigningKey::generate().expect("key").0]).expect("ring");
        let s = TokenSigner::new(Arc::new(ring), ISS.to_owned(), AUD.to_owned());
        let c = claims(NOW, 60);
        assert_eq!(
            s.sign_ssh(&c, &public_line(&user_key(3))),
            Err(SshCertError::NoCa)
        );
        assert_eq!(
            s.sign_ssh(&c, "ssh-ed25519 AAAA").err(),
            Some(SshCertError::NoCa)
        );
        let ca_signer = signer();
        assert_eq!(
            ca_signer.sign_ssh(&c, "ssh-ed25519 AAAAAAAAAAAAAAAAAAAAAAAA"),
            Err(SshCertError::PublicKey)
        );
    }
}
