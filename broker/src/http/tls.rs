//! TLS termination (`[server.tls]`): the certificate chain and private key files, loaded at
//! start and again on SIGHUP. A reload swaps the certificate that *new* handshakes present;
//! connections already open keep theirs and are never dropped. A reload that fails (a missing
//! file, a key that does not match the certificate) keeps the certificate in use and says why.
//! ALPN offers HTTP/2 and HTTP/1.1; the accept loop serves whichever the client chose.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;
use crate::metrics::Metrics;

/// Why the certificate or key could not be loaded. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the kind needed.
    #[error("server.tls.{key}: {path}: {problem}")]
    File {
        /// `cert` or `key`.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The key does not fit the certificate, or the provider cannot use it.
    #[error("server.tls: {0}")]
    Pair(String),
}

/// The certificate every new handshake presents, replaceable while serving.
pub struct ReloadableCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ReloadableCert {
    /// Loads the chain and key `config` names.
    pub fn load(config: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let provider = provider();
        let current = certified_key(&config.cert, &config.key, &provider)?;
        Ok(Arc::new(Self {
            cert: config.cert.clone(),
            key: config.key.clone(),
            provider,
            current: RwLock::new(current),
            metrics: None,
        }))
    }

    /// Loads the chain and key `config` names and publishes the leaf's expiry as
    /// `jit_certificate_expiry_timestamp_seconds{certificate="tls"}`, now and on each reload,
    /// for the certificate-expiry alerts.
    pub fn load_measured(config: &TlsConfig, metrics: Arc<Metrics>) -> Result<Arc<Self>, TlsError> {
        let provider = provider();
        let current = certified_key(&config.cert, &config.key, &provider)?;
        let cert = Self {
            cert: config.cert.clone(),
            key: config.key.clone(),
            provider,
            current: RwLock::new(current),
            metrics: Some(metrics),
        };
        cert.publish_expiry();
        Ok(Arc::new(cert))
    }

    /// When the leaf certificate in use stops being valid (Unix seconds), if it can be read.
    pub fn not_after(&self) -> Option<i64> {
        let current = self.current();
        let leaf = current.cert.first()?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        Some(parsed.validity().not_after.timestamp())
    }

    fn publish_expiry(&self) {
        if let (Some(m), Some(t)) = (&self.metrics, self.not_after()) {
            m.certificate_expires("tls", t);
        }
    }

    /// Reads the files again; on success new handshakes present the new certificate, on
    /// failure the old one stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = certified_key(&self.cert, &self.key, &self.provider)?;
        // A panic while holding this lock cannot leave a half-written Arc.
        let mut current = match self.current.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *current = fresh;
        drop(current);
        self.publish_expiry();
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The rustls configuration serving this certificate: TLS 1.2 and 1.3, no client
    /// certificates, ALPN `h2` then `http/1.1`.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pair(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The installed provider (ring, installed by the binary), else ring's default.
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn file_error(key: &'static str, path: &Path, problem: impl ToString) -> TlsError {
    TlsError::File {
        key,
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

/// The chain in `cert` (leaf first) with the key in `key`, checked to belong together.
fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem = std::fs::read(cert).map_err(|e| file_error("cert", cert, e))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("cert", cert, format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(file_error("cert", cert, "holds no CERTIFICATE block"));
    }
    let pem = std::fs::read(key).map_err(|e| file_error("key", key, e))?;
    // The parser's error never quotes the key's bytes.
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        file_error(
            "key",
            key,
            "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )
    })?;
    let ck = CertifiedKey::from_der(chain, der, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Pair(format!(
            "the key in {} does not belong to the certificate in {}",
            key.display(),
            cert.display()
        )),
        e => TlsError::Pair(format!("{}: {e}", key.display())),
    })?;
    Ok(Arc::new(ck))
}

/// Listens for SIGHUP now, and returns the task that reloads `cert` on each one until the
/// process ends, logging the outcome.
pub fn reload_on_hangup(
    cert: Arc<ReloadableCert>,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(async move {
        while hangups.recv().await.is_some() {
            match cert.reload() {
                Ok(()) => tracing::info!(
                    cert = %cert.cert.display(),
                    "SIGHUP: TLS certificate reloaded; new connections use it"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: TLS certificate not reloaded; the previous one stays in use"
                ),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leaf_expiry_is_published_at_load_and_on_reload() {
        let dir = tempfile::tempdir().expect("dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["broker.test".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        let pem = params.self_signed(&key).expect("cert").pem();
        let (c, k) = (dir.path().join("b.crt"), dir.path().join("b.key"));
        std::fs::write(&c, pem).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        let metrics = Arc::new(Metrics::new());
        let config = TlsConfig {
            cert: c.clone(),
            key: k.clone(),
        };
        let cert = ReloadableCert::load_measured(&config, metrics.clone()).expect("load");
        // 2031-01-02T00:00:00Z
        assert_eq!(cert.not_after(), Some(1_925_078_400));
        let text = metrics.encode();
        assert!(
            text.contains(
                "jit_certificate_expiry_timestamp_seconds{certificate=\"tls\"} 1925078400"
            ),
            "{text}"
        );
        params.not_after = rcgen::date_time_ymd(2032, 1, 2);
        std::fs::write(&c, params.self_signed(&key).expect("cert").pem()).expect("write");
        cert.reload().expect("reload");
        // 2032-01-02T00:00:00Z
        assert!(
            metrics.encode().contains("1956614400"),
            "{}",
            metrics.encode()
        );
    }

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let c = dir.join(format!("{name}.crt"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c, k)
    }

    #[test]
    fn a_reload_swaps_the_certificate_and_a_bad_one_keeps_the_old() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = write_pair(dir.path(), "one.test");
        let config = TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        };
        let r = ReloadableCert::load(&config).expect("load");
        let first = r.current().cert[0].clone();
        let (cert2, key2) = write_pair(dir.path(), "two.test");
        std::fs::copy(&cert2, &cert).expect("copy");
        std::fs::copy(&key2, &key).expect("copy");
        r.reload().expect("reload");
        let second = r.current().cert[0].clone();
        assert_ne!(first, second, "new handshakes present the new certificate");
        // A key that does not belong to the certificate: refused, the old pair stays.
        let (_, key3) = write_pair(dir.path(), "three.test");
        std::fs::copy(&key3, &key).expect("copy");
        let e = r.reload().expect_err("mismatch");
        assert!(e.to_string().contains("does not belong"), "{e}");
        assert_eq!(r.current().cert[0], second);
    }

    /// A real SIGHUP to this process reloads the certificate.
    #[tokio::test]
    async fn sighup_reloads() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = write_pair(dir.path(), "one.test");
        let r = ReloadableCert::load(&TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        })
        .expect("load");
        let first = r.current().cert[0].clone();
        // The handler is in place before the signal is sent (else SIGHUP ends the process).
        tokio::spawn(reload_on_hangup(r.clone()).expect("signal handler"));
        let (cert2, key2) = write_pair(dir.path(), "two.test");
        std::fs::copy(&cert2, &cert).expect("copy");
        std::fs::copy(&key2, &key).expect("copy");
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(30), async {
            while r.current().cert[0] == first {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("reloaded after SIGHUP");
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = write_pair(dir.path(), "a.test");
        let missing = dir.path().join("missing.pem");
        let e = ReloadableCert::load(&TlsConfig {
            cert: missing.clone(),
            key: key.clone(),
        })
        .expect_err("missing");
        assert!(e.to_string().starts_with("server.tls.cert: "), "{e}");
        // The key file given as the certificate, and the certificate as the key.
        let e = ReloadableCert::load(&TlsConfig {
            cert: key.clone(),
            key: key.clone(),
        })
        .expect_err("no cert");
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
        let e = ReloadableCert::load(&TlsConfig {
            cert: cert.clone(),
            key: cert,
        })
        .expect_err("no key");
        assert!(e.to_string().starts_with("server.tls.key: "), "{e}");
        assert!(!e.to_string().contains("PRIVATE KEY-----"), "{e}");
    }

    use std::net::SocketAddr;
    use std::time::Duration;

    use axum::Router;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use crate::http::listener::{ConnectionPolicy, Edge, serve_edge};
    use crate::metrics::ConnectionMetrics;

    /// A broker-like server on a free port terminating TLS with `cert`.
    async fn tls_server(cert: &Arc<ReloadableCert>) -> SocketAddr {
        let router = Router::new().route("/ok", get(|| async { "ok\n" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let policy = ConnectionPolicy::small(Duration::from_secs(30));
        let edge = Edge {
            tls: Some(tokio_rustls::TlsAcceptor::from(
                cert.server_config().expect("config"),
            )),
            proxies: Default::default(),
        };
        tokio::spawn(serve_edge(
            listener,
            router,
            policy,
            edge,
            ConnectionMetrics::default(),
            std::future::pending(),
        ));
        addr
    }

    fn client_config(roots: &[&Path], alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut store = rustls::RootCertStore::empty();
        for r in roots {
            for c in CertificateDer::pem_file_iter(r).expect("pem") {
                store.add(c.expect("cert")).expect("root");
            }
        }
        let mut c = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(store)
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        c
    }

    /// Opens a TLS connection to `addr` as `name`, offering only HTTP/1.1.
    async fn open(
        addr: SocketAddr,
        name: &str,
        roots: &[&Path],
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, std::io::Error> {
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(client_config(roots, &[b"http/1.1"])));
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).expect("name");
        connector.connect(name, tcp).await
    }

    async fn get_ok(s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
        s.write_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while !out.ends_with(b"ok\n") {
            let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
                .await
                .expect("in time")
                .expect("read");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// HTTP/2 by ALPN, HTTP/1.1 otherwise; a reload serves the new certificate to new
    /// connections while one opened before goes on being served.
    #[tokio::test]
    async fn tls_serves_h2_and_h1_and_a_reload_keeps_open_connections() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = write_pair(dir.path(), "one.test");
        let old_root = dir.path().join("old-root.pem");
        std::fs::copy(&cert, &old_root).expect("copy");
        let reloadable = ReloadableCert::load(&TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        })
        .expect("load");
        let addr = tls_server(&reloadable).await;

        let h2 = reqwest::Client::builder()
            .tls_backend_preconfigured(client_config(&[&old_root], &[b"h2", b"http/1.1"]))
            .resolve("one.test", addr)
            .build()
            .expect("client");
        let r = h2
            .get(format!("https://one.test:{}/ok", addr.port()))
            .send()
            .await
            .expect("h2 request");
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.text().await.expect("body"), "ok\n");

        let mut before = open(addr, "one.test", &[&old_root]).await.expect("tls");
        assert_eq!(before.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert!(get_ok(&mut before).await.starts_with("HTTP/1.1 200 "));

        let (cert2, key2) = write_pair(dir.path(), "two.test");
        std::fs::copy(&cert2, &cert).expect("copy");
        std::fs::copy(&key2, &key).expect("copy");
        reloadable.reload().expect("reload");

        // New connections get the new certificate: the old root no longer verifies it.
        assert!(open(addr, "one.test", &[&old_root]).await.is_err());
        let mut after = open(addr, "two.test", &[&cert2]).await.expect("new cert");
        assert!(get_ok(&mut after).await.starts_with("HTTP/1.1 200 "));
        // The connection opened before the reload is still served.
        assert!(get_ok(&mut before).await.starts_with("HTTP/1.1 200 "));
    }
}
