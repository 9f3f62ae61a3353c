//! The certificate sshd accepted, from the file `ExposeAuthInfo yes` names in `SSH_USER_AUTH`:
//! one line per successful method, `publickey <type> <base64>` for a key or certificate.

use std::path::Path;

use jit_proto::ssh::MAX_CERTIFICATE_LEN;

/// Largest `SSH_USER_AUTH` file read, in bytes.
const MAX_AUTH_INFO: u64 = 64 * 1024;

/// Why no certificate could be read.
#[derive(Debug, thiserror::Error)]
pub enum AuthInfoError {
    /// `SSH_USER_AUTH` is not set: sshd lacks `ExposeAuthInfo yes`.
    #[error("SSH_USER_AUTH is not set; the server's sshd needs 'ExposeAuthInfo yes'")]
    NotExposed,
    /// The file could not be read.
    #[error("cannot read SSH_USER_AUTH: {0}")]
    Read(std::io::Error),
    /// The client did not log in with a certificate.
    #[error(
        "this account takes git-jit SSH certificates only (set it up with `git jit setup --ssh`)"
    )]
    NoCertificate,
}

/// The one certificate line in `text` (`<type>-cert-v01@openssh.com <base64>`).
pub fn parse(text: &str) -> Result<String, AuthInfoError> {
    text.lines()
        .filter_map(|l| l.strip_prefix("publickey "))
        .map(str::trim)
        .find(|l| {
            l.split(' ')
                .next()
                .is_some_and(|t| t.ends_with("-cert-v01@openssh.com"))
                && l.len() <= MAX_CERTIFICATE_LEN
        })
        .map(str::to_owned)
        .ok_or(AuthInfoError::NoCertificate)
}

/// The certificate of the file at `path`.
pub fn certificate(path: Option<&Path>) -> Result<String, AuthInfoError> {
    use std::io::Read as _;
    let path = path.ok_or(AuthInfoError::NotExposed)?;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_AUTH_INFO).read_to_string(&mut text))
        .map_err(AuthInfoError::Read)?;
    parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_certificate_line_only() {
        let text = "publickey ssh-ed25519-cert-v01@openssh.com AAAAIGNlcnQ= \n";
        assert_eq!(
            parse(text).expect("found"),
            "ssh-ed25519-cert-v01@openssh.com AAAAIGNlcnQ="
        );
        let two = "keyboard-interactive\npublickey ssh-ed25519 AAAAkey\n\
                   publickey ecdsa-sha2-nistp256-cert-v01@openssh.com AAAAc2\n";
        assert_eq!(
            parse(two).expect("found"),
            "ecdsa-sha2-nistp256-cert-v01@openssh.com AAAAc2"
        );
        for bad in ["", "publickey ssh-ed25519 AAAA\n", "password\n"] {
            assert!(
                matches!(parse(bad), Err(AuthInfoError::NoCertificate)),
                "{bad:?}"
            );
        }
        let huge = format!(
            "publickey ssh-ed25519-cert-v01@openssh.com {}\n",
            "A".repeat(MAX_CERTIFICATE_LEN)
        );
        assert!(parse(&huge).is_err());
        assert!(matches!(certificate(None), Err(AuthInfoError::NotExposed)));
    }
}
