//! The broker binary terminating TLS itself (`[server.tls]`), with a certificate from a CA the
//! test makes: HTTP/2 by ALPN, an exchange over HTTPS, and a SIGHUP that makes new handshakes
//! present a renewed certificate while a connection opened before goes on being served.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use jit_e2e::bins::{JIT_BROKER, bin_path, generate_keys};
use jit_e2e::certs::TestCa;
use jit_e2e::process::{ManagedProcess, START_TIMEOUT, free_port, wait_for};
use jit_e2e::{CiIssuer, RedisServer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

fn client_config(ca: &Path, alpn: &[&[u8]]) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A TLS connection to `localhost:port` offering HTTP/1.1 only.
async fn open(port: u16, ca: &Path) -> Result<Tls> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca, &[b"http/1.1"])?));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    Ok(connector
        .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
        .await?)
}

fn presented(s: &Tls) -> Option<Vec<u8>> {
    s.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
}

/// `GET /healthz` on a kept-alive HTTP/1.1 connection; the status line.
async fn healthz(s: &mut Tls) -> Result<String> {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&out).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "closed: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[test]
fn the_broker_serves_https_with_h2_and_reloads_its_certificate_on_sighup() -> Result<()> {
    crate::support::run(async move {
        jit_e2e::install_crypto_provider();
        let redis = RedisServer::start().await?;
        let idp = CiIssuer::start().await?;
        let dir = tempfile::tempdir()?;
        let ca = TestCa::new(dir.path(), "git-jit test broker CA")?;
        let first = ca.server("broker-first")?;
        let served = ca.server("broker")?;
        std::fs::copy(&first.cert, &served.cert)?;
        std::fs::copy(&first.key, &served.key)?;
        let keys = dir.path().join("keys");
        generate_keys(&keys)?;
        let port = free_port()?;
        let public = format!("https://localhost:{port}");
        let config = crate::support::corp_broker(&keys, &redis.url(), &idp.issuer(), Some(&public))
            .replace("{{LISTEN}}", &format!("127.0.0.1:{port}"))
            + &format!(
                "\n[audit]\ndir = \"{audit}\"\n\n[server.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n",
                audit = dir.path().join("audit").display(),
                cert = served.cert.display(),
                key = served.key.display(),
            );
        let config_path = dir.path().join("broker.toml");
        std::fs::write(&config_path, config)?;
        let mut cmd = Command::new(bin_path(JIT_BROKER)?);
        cmd.args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info");
        let mut broker = ManagedProcess::spawn("jit-broker-tls", cmd, dir.path())?;
        let https = reqwest::Client::builder()
            .tls_backend_preconfigured(client_config(&ca.ca_file(), &[b"h2", b"http/1.1"])?)
            .build()?;
        let health = format!("{public}/healthz");
        wait_for("the broker over HTTPS", START_TIMEOUT, || {
            let exited = broker.exit_status().is_some();
            let req = https.get(&health).send();
            async move {
                anyhow::ensure!(!exited, "jit-broker exited");
                Ok(req.await.ok().filter(|r| r.status().is_success()))
            }
        })
        .await
        .with_context(|| broker.logs())?;
        let r = https.get(&health).send().await?;
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "h2 by ALPN");
        // A token exchange over HTTPS.
        let alice = idp
            .token()
            .subject("alice@example.com")
            .claim("groups", json!(["engineering"]))
            .sign();
        let r = https
            .post(format!("{public}/oauth/token"))
            .form(&[
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", alice.as_str()),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:id_token",
                ),
                ("scope", "repo:acme/api:read"),
            ])
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().await?);

        // The real credential helper over HTTPS, trusting the CA through git's own
        // http.<url>.sslCAInfo (and refusing the broker without it).
        let mut git = crate::helper_flow::client()?;
        git.env("GIT_JIT_ID_TOKEN", &alice);
        git.env("GIT_JIT_BROKER", &public);
        // Empty: git's own CA variable would win over the config (as it does for git).
        git.env("GIT_SSL_CAINFO", "");
        let ask = format!("protocol=https\nhost=localhost:{port}\npath=acme/api.git\n\n");
        let refused = crate::helper_flow::credential_get(&git, &ask).await;
        assert!(
            refused
                .as_ref()
                .map_or(true, |(out, _)| !out.contains("password=")),
            "no token from a broker whose CA is not trusted: {refused:?}"
        );
        let key = format!("http.{public}/.sslCAInfo");
        let ca_path = ca.ca_file().display().to_string();
        git.run(&["config", "--global", &key, &ca_path]).await?;
        let (out, err) = crate::helper_flow::credential_get(&git, &ask).await?;
        assert!(
            out.contains("password=eyJ"),
            "no token over HTTPS; stderr: {err}"
        );

        // A connection opened before the renewal.
        let mut before = open(port, &ca.ca_file()).await?;
        let first_der = std::fs::read(&first.cert)?;
        let first_der = CertificateDer::from_pem_slice(&first_der)?.to_vec();
        assert_eq!(presented(&before), Some(first_der.clone()));
        assert!(healthz(&mut before).await?.starts_with("HTTP/1.1 200"));

        // Renew and SIGHUP.
        let renewed = ca.server("broker-renewed")?;
        std::fs::copy(&renewed.cert, &served.cert)?;
        std::fs::copy(&renewed.key, &served.key)?;
        let renewed_der = CertificateDer::from_pem_slice(&std::fs::read(&renewed.cert)?)?.to_vec();
        let pid = broker.pid().context("pid")?;
        let hup = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()?;
        assert!(hup.success());
        let ca_file = ca.ca_file();
        wait_for(
            "new handshakes to present the renewed certificate",
            START_TIMEOUT,
            || {
                let ca_file = ca_file.clone();
                let renewed_der = renewed_der.clone();
                async move {
                    let s = open(port, &ca_file).await?;
                    Ok((presented(&s) == Some(renewed_der)).then_some(()))
                }
            },
        )
        .await
        .with_context(|| broker.logs())?;
        // The old connection is still served, and the process is the same.
        assert!(healthz(&mut before).await?.starts_with("HTTP/1.1 200"));
        assert!(
            broker.exit_status().is_none(),
            "the broker did not exit on SIGHUP"
        );
        assert!(broker.logs().contains("TLS certificate reloaded"));
        Ok(())
    })
}
