//! `jit-broker dev` against DNS rebinding: it listens on 127.0.0.1, but a web page whose DNS
//! name rebinds to 127.0.0.1 can reach it from the developer's browser. Such requests carry
//! the page's name in `Host`, and the whole dev broker refuses them — the dev issuer, which
//! mints an identity for anyone local, first of all.

use std::process::Command;

use crate::support::raw_request;
use anyhow::Result;
use jit_e2e::bin_path;
use jit_e2e::process::{ManagedProcess, free_port, wait_healthy};

fn mint(host: &str) -> String {
    let body = "sub=mallory%40evil.example&groups=security";
    format!(
        "POST /dev/issuer/token HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

#[test]
fn dev_broker_refuses_requests_for_a_rebound_host_name() -> Result<()> {
    crate::support::run(async move {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut cmd = Command::new(bin_path(jit_e2e::bins::JIT_BROKER)?);
        cmd.args(["dev", "--listen", &format!("127.0.0.1:{port}"), "--repos"])
            .arg(dir.path().join("repos"))
            .env("RUST_LOG", "info");
        let process = ManagedProcess::spawn("jit-broker-dev", cmd, dir.path())?;
        let broker = wait_healthy(
            "jit-broker dev",
            process,
            &format!("http://127.0.0.1:{port}/healthz"),
        )
        .await
        .map_err(|(e, _)| e)?;

        // The rebinding page's request: the dev issuer would mint it an identity.
        let rebound = format!("rebind.evil.example:{port}");
        let (status, answer) = raw_request(port, &mint(&rebound)).await?;
        assert_eq!(status, 421, "{answer}");
        assert!(
            answer.contains(&format!("not to host \"{rebound}\"")),
            "{answer}"
        );
        assert!(!answer.contains("id_token"), "{answer}");
        // Every other route of the dev broker too: exchange, metadata, gateway.
        let exchange = format!(
            "POST /oauth/token HTTP/1.1\r\nHost: {rebound}\r\nContent-Type: \
             application/x-www-form-urlencoded\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(raw_request(port, &exchange).await?.0, 421);
        for path in [
            "/.well-known/oauth-authorization-server",
            "/dev/issuer/jwks",
            "/demo/hello.git/info/refs?service=git-upload-pack",
        ] {
            assert_eq!(
                raw_request(port, &get(path, &rebound)).await?.0,
                421,
                "{path}"
            );
        }
        // Without a Host header, or with a second, foreign one.
        let (status, _) =
            raw_request(port, "GET /healthz HTTP/1.0\r\nConnection: close\r\n\r\n").await?;
        assert_eq!(status, 421);
        let two = format!(
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: {rebound}\r\nConnection: close\r\n\r\n"
        );
        let (status, _) = raw_request(port, &two).await?;
        assert!(status == 400 || status == 421, "{status}");

        // The loopback names still work, with and without a port.
        for host in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            "localhost".to_owned(),
        ] {
            let (status, answer) = raw_request(port, &mint(&host)).await?;
            assert_eq!(status, 200, "{host}: {answer}");
            assert!(answer.contains("id_token"), "{answer}");
        }
        let log = broker.logs();
        assert!(log.contains("DNS rebinding"), "{log}");
        crate::support::assert_no_jwt("dev broker log", &log);
        Ok(())
    })
}
