//! TLS for the helper's HTTP client, with the system's trust store read only when a TLS server
//! actually presents a certificate. Building the platform verifier reads every file of the
//! system's CA store (on Debian, over a hundred); the credential helper is a short-lived
//! process, and a broker on loopback over plain `http://` never needs them, so paying that on
//! every `git credential fill` would double its time. The verification itself is the
//! platform verifier's, unchanged: only its construction is deferred to the first handshake.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_platform_verifier::Verifier;

/// The platform verifier, built on first use.
#[derive(Debug)]
pub struct LazyPlatformVerifier {
    provider: Arc<CryptoProvider>,
    inner: OnceLock<Result<Verifier, rustls::Error>>,
}

impl LazyPlatformVerifier {
    /// A verifier for `provider`'s algorithms; nothing is read yet.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        Self {
            provider,
            inner: OnceLock::new(),
        }
    }

    /// Whether the trust store has been read.
    pub fn loaded(&self) -> bool {
        self.inner.get().is_some()
    }

    fn inner(&self) -> Result<&Verifier, rustls::Error> {
        self.inner
            .get_or_init(|| Verifier::new(self.provider.clone()))
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for LazyPlatformVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // What the platform verifier offers too: the provider's algorithms, no roots needed.
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls configuration of every git-jit HTTP client: the installed crypto provider (ring,
/// installed by the binaries; ring's default otherwise), safe protocol versions, the lazy
/// platform verifier, HTTP/2 and HTTP/1.1 offered by ALPN.
pub fn client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(LazyPlatformVerifier::new(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// [`client_config`] trusting only the PEM certificates in `ca` (git's `http.sslCAInfo`).
/// The error names the file and the key.
pub fn client_config_with_ca(ca: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject as _;
    let problem = |what: String| format!("http.sslCAInfo: {}: {what}", ca.display());
    let pem = std::fs::read(ca).map_err(|e| problem(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| problem(format!("not PEM certificates: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| problem(format!("not a usable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(problem("holds no CERTIFICATE block".into()));
    }
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_read_until_a_certificate_is_checked() {
        let v = LazyPlatformVerifier::new(Arc::new(rustls::crypto::ring::default_provider()));
        assert!(!v.supported_verify_schemes().is_empty());
        assert!(!v.loaded(), "offering schemes reads no trust store");
        // A certificate that is not one: refused, after the store was read.
        let name = ServerName::try_from("example.com").expect("name");
        let r = v.verify_server_cert(
            &CertificateDer::from(vec![0u8; 8]),
            &[],
            &name,
            &[],
            UnixTime::now(),
        );
        assert!(r.is_err());
        assert!(v.loaded());
    }
}
