//! `http.sslCAInfo`: the CA file git itself uses for HTTPS, honoured for the broker too, so a
//! broker whose certificate comes from a private CA works wherever `git` already does. Read
//! as git reads it: `GIT_SSL_CAINFO` first, else `git config http.sslCAInfo` with git's own
//! URL matching (`http.<url>.sslCAInfo` for the broker's URL wins over the plain key). Asked
//! only for an `https://` broker, so a loopback broker over `http://` costs nothing.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::config::Env;

/// The CA file for requests to `url`, when git is configured with one.
pub fn ca_file(url: &str, env: Env<'_>) -> Option<PathBuf> {
    ca_file_with(url, env, &[])
}

/// [`ca_file`], with `git_args` given to git before `config` (tests pass `-c key=value`).
pub(crate) fn ca_file_with(url: &str, env: Env<'_>, git_args: &[&str]) -> Option<PathBuf> {
    if !url.starts_with("https://") {
        return None;
    }
    if let Some(v) = env("GIT_SSL_CAINFO").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(v));
    }
    let out = Command::new("git")
        .args(git_args)
        .args([
            "config",
            "--type=path",
            "--get-urlmatch",
            "http.sslCAInfo",
            url,
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let path = String::from_utf8(out.stdout).ok()?;
    let path = path.trim_end_matches(['\n', '\r']);
    (!path.is_empty()).then(|| PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_then_git_config_by_url_and_only_for_https() {
        let none = |_: &str| None;
        let set = |k: &str| (k == "GIT_SSL_CAINFO").then(|| "/etc/env-ca.pem".to_owned());
        assert_eq!(ca_file("http://127.0.0.1:8080", &set), None);
        assert_eq!(
            ca_file("https://jit.example", &set),
            Some(PathBuf::from("/etc/env-ca.pem"))
        );
        let git = [
            "-c",
            "http.sslCAInfo=/etc/any-ca.pem",
            "-c",
            "http.https://jit.example.sslCAInfo=/etc/jit-ca.pem",
        ];
        assert_eq!(
            ca_file_with("https://jit.example/", &none, &git),
            Some(PathBuf::from("/etc/jit-ca.pem"))
        );
        assert_eq!(
            ca_file_with("https://git.example/", &none, &git),
            Some(PathBuf::from("/etc/any-ca.pem"))
        );
        assert_eq!(
            ca_file_with(
                "https://git.example/",
                &none,
                &["-c", "http.sslVerify=true"]
            ),
            None
        );
    }

    /// A broker terminating TLS with a certificate from a private CA: reached over HTTP/2
    /// with `GIT_SSL_CAINFO` naming the CA, refused with the system's roots alone.
    #[tokio::test]
    async fn a_broker_with_a_private_ca_is_trusted_through_git_ssl_cainfo() {
        use std::time::Duration;

        use jit_broker::http::listener::{ConnectionPolicy, Edge, serve_edge};

        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("dir");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("cert");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).expect("write");
        let tls = jit_broker::config::TlsConfig {
            cert: dir.path().join("broker.crt"),
            key: dir.path().join("broker.key"),
        };
        std::fs::write(&tls.cert, cert.pem()).expect("write");
        std::fs::write(&tls.key, key.serialize_pem()).expect("write");
        let reloadable = jit_broker::http::tls::ReloadableCert::load(&tls).expect("load");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let router = axum::Router::new().route("/ok", axum::routing::get(|| async { "ok" }));
        let edge = Edge {
            tls: Some(tokio_rustls::TlsAcceptor::from(
                reloadable.server_config().expect("config"),
            )),
            proxies: Default::default(),
        };
        let policy = ConnectionPolicy {
            max_connections: 8,
            per_address: 8,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
        };
        tokio::spawn(serve_edge(
            listener,
            router,
            policy,
            edge,
            jit_broker::metrics::ConnectionMetrics::default(),
            std::future::pending(),
        ));
        let url = format!("https://localhost:{port}/ok");
        let ca = ca_file.display().to_string();
        let with_ca = move |k: &str| (k == "GIT_SSL_CAINFO").then(|| ca.clone());
        let client = crate::http_client_for(&url, &with_ca).expect("client");
        let r = client
            .get(&url)
            .send()
            .await
            .expect("trusted through the CA file");
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.text().await.expect("body"), "ok");
        let none = |_: &str| None;
        let plain = crate::http_client_for(&url, &none).expect("client");
        assert!(plain.get(&url).send().await.is_err(), "unknown CA refused");
        // A CA file that is not one is named.
        let bad = dir.path().join("broker.key").display().to_string();
        let with_bad = move |k: &str| (k == "GIT_SSL_CAINFO").then(|| bad.clone());
        let e = crate::http_client_for(&url, &with_bad).expect_err("not a CA");
        assert!(e.starts_with("http.sslCAInfo: "), "{e}");
    }
}
