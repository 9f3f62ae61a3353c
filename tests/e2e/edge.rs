//! The broker's edge, attacked through the real process with raw sockets: duplicated
//! `Authorization` headers, connections that never finish their headers, trickled headers, a
//! separate metrics address, and who may introspect.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, Result};
use jit_e2e::BrokerProcess;
use jit_e2e::bins::generate_keys;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The loopback address the tests' "other" client speaks from: Linux routes all of
/// 127.0.0.0/8 to the loopback interface, so a socket may bind any of it.
const OTHER_CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Generous bound on any single answer; a broker that keeps a socket open past it fails.
const ANSWER_BOUND: Duration = Duration::from_secs(30);

/// A broker on the memory store with `extra` appended to its config; its keys live in its
/// own directory.
async fn broker(extra: &str, env: &[(&str, &str)]) -> Result<BrokerProcess> {
    let keys = tempfile::tempdir()?;
    generate_keys(keys.path())?;
    let config = format!(
        r#"
[broker]
listen = "{{{{LISTEN}}}}"
public_url = "{{{{URL}}}}"
keys_dir = "{keys}"

[store]
kind = "memory"
{extra}
"#,
        keys = keys.path().display(),
    );
    let broker = BrokerProcess::start_with_env(&config, env).await?;
    // The keys were read at start.
    drop(keys);
    Ok(broker)
}

/// Sends `request` by hand on a std socket and reads until the broker closes it.
fn raw_std(port: u16, request: &[u8]) -> Result<String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_read_timeout(Some(ANSWER_BOUND))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .context("the broker did not answer and close in time")?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Sends `request` from `from` (a loopback address) and reads until the broker closes the
/// connection; `Err` when it neither answers nor closes within [`ANSWER_BOUND`].
async fn raw_from(from: IpAddr, port: u16, request: &[u8]) -> Result<String> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let mut s = socket
        .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await?;
    s.write_all(request).await?;
    let mut out = Vec::new();
    match tokio::time::timeout(ANSWER_BOUND, s.read_to_end(&mut out)).await {
        Err(_) => anyhow::bail!("no answer from {from} within {ANSWER_BOUND:?}"),
        // Closed on us (a refused connection may be reset): what came before counts.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(r) => {
            r?;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: broker\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The value of sample `name{labels}` in an exposition, 0 when absent.
fn sample(exposition: &str, name_and_labels: &str) -> u64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn metrics_text(url: &str) -> Result<String> {
    let r = jit_e2e::http_client()
        .get(format!("{url}/metrics"))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "/metrics answered {}", r.status());
    Ok(r.text().await?)
}

/// Regression (issue 12, item 3): two `Authorization` headers — which one counts would
/// depend on who reads them — are a 400 on every door of the running broker.
#[test]
fn two_authorization_headers_are_refused_on_every_door_of_the_process() -> Result<()> {
    crate::support::run(async move {
        let broker = broker("", &[]).await?;
        let port = broker.port();
        let two = "Authorization: Bearer first\r\nAuthorization: Basic eDpzZWNvbmQ=\r\n";
        let form = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
                    &subject_token=x&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token\
                    &scope=repo%3Aacme%2Fapi%3Aread";
        let requests = [
            format!(
                "POST /oauth/token HTTP/1.1\r\nHost: b\r\n{two}Content-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
                form.len()
            ),
            format!(
                "GET /authz HTTP/1.1\r\nHost: b\r\n{two}X-Original-URI: /acme/api.git/info/refs?service=git-upload-pack\r\n\
                 X-Original-Method: GET\r\nConnection: close\r\n\r\n"
            ),
            format!(
                "GET /acme/api.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: b\r\n{two}Connection: close\r\n\r\n"
            ),
            format!("GET /v1/grants HTTP/1.1\r\nHost: b\r\n{two}Connection: close\r\n\r\n"),
        ];
        for request in &requests {
            let answer = tokio::task::spawn_blocking({
                let request = request.clone();
                move || raw_std(port, request.as_bytes())
            })
            .await??;
            let line = request.lines().next().unwrap_or_default();
            assert!(answer.starts_with("HTTP/1.1 400 "), "{line}: {answer}");
            assert!(
                answer.contains("more than one Authorization header"),
                "{line}: {answer}"
            );
            // The same request with only the first header is not this 400.
            let one = request.replace("Authorization: Basic eDpzZWNvbmQ=\r\n", "");
            let answer =
                tokio::task::spawn_blocking(move || raw_std(port, one.as_bytes())).await??;
            assert!(
                !answer.contains("more than one Authorization header"),
                "{line}: {answer}"
            );
        }
        // The rest of the class: the other headers a decision reads as one value.
        for (name, request) in [
            (
                "X-Original-URI",
                "GET /authz HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer x\r\n\
                 X-Original-URI: /acme/api.git/info/refs?service=git-upload-pack\r\n\
                 X-Original-URI: /acme/api.git/info/refs?service=git-receive-pack\r\n\
                 Connection: close\r\n\r\n",
            ),
            (
                "Content-Encoding",
                "POST /acme/api.git/git-receive-pack HTTP/1.1\r\nHost: b\r\n\
                 Authorization: Bearer x\r\nContent-Encoding: identity\r\n\
                 Content-Encoding: gzip\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            ),
        ] {
            let answer =
                tokio::task::spawn_blocking(move || raw_std(port, request.as_bytes())).await??;
            assert!(answer.starts_with("HTTP/1.1 400 "), "{name}: {answer}");
            assert!(
                answer.contains(&format!("more than one {name} header")),
                "{answer}"
            );
        }
        Ok(())
    })
}

/// Regression (issue 12, item 9): 300 connections that never finish their headers exhausted
/// a broker limited to 256 descriptors. Now one address may hold only its share of the cap;
/// connections over it are closed at once, and `/healthz` answers another address while the
/// attack goes on.
#[test]
fn healthz_answers_while_300_connections_hold_unfinished_headers() -> Result<()> {
    crate::support::run(async move {
        let broker = broker(
            "[server]\nmax_connections = 64\nmax_connections_per_address_percent = 50\n\
             header_read_timeout_secs = 120\n",
            &[],
        )
        .await?;
        let port = broker.port();
        // The descriptor limit of the original finding.
        let pid = broker.pid().context("broker pid")?;
        rlimit::prlimit(
            i32::try_from(pid)?,
            rlimit::Resource::NOFILE,
            Some((256, 256)),
            None,
        )
        .context("prlimit --nofile=256 on the broker")?;

        // The harness's readiness probe may still hold a kept-alive connection from 127.0.0.1:
        // start when only the asking one is open, so the attack gets the whole share.
        let other = IpAddr::from(OTHER_CLIENT);
        jit_e2e::process::wait_for("the probe's connection to close", ANSWER_BOUND, || async {
            let text = raw_from(other, port, &get("/metrics")).await?;
            Ok((sample(&text, "jit_connections_open") <= 1).then_some(()))
        })
        .await?;

        let mut attack = Vec::new();
        for _ in 0..300 {
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
            // A refused connection may be closed before this write: that is the point.
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: broker\r\nX-Slow: ");
            attack.push(s);
        }
        let answer = raw_from(OTHER_CLIENT.into(), port, &get("/healthz")).await?;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert!(answer.ends_with("ok\n"), "{answer}");
        // Once the broker has taken all 300 from its accept queue (whose order under load need
        // not be the order of connect), the attacking address holds its whole share and the
        // rest were refused…
        jit_e2e::process::wait_for("all 300 accepted or refused", ANSWER_BOUND, || async {
            let text = raw_from(other, port, &get("/metrics")).await?;
            let refused = sample(
                &text,
                "jit_connections_refused_total{reason=\"address_share\"}",
            );
            Ok((refused >= 300 - 32).then_some(()))
        })
        .await?;
        // …so it is turned away, not queued.
        let answer = raw_from(Ipv4Addr::LOCALHOST.into(), port, &get("/healthz")).await?;
        assert!(!answer.starts_with("HTTP/1.1 200 "), "{answer}");

        drop(attack);
        // Its places are given back as its connections close.
        jit_e2e::process::wait_for("/healthz from 127.0.0.1 again", ANSWER_BOUND, || async {
            let answer = raw_from(Ipv4Addr::LOCALHOST.into(), port, &get("/healthz")).await?;
            Ok(answer.starts_with("HTTP/1.1 200 ").then_some(()))
        })
        .await?;
        let text = metrics_text(&broker.url()).await?;
        // 300 attempts, 32 held (50 % of 64), the rest refused, plus the turned-away probe.
        let refused = sample(
            &text,
            "jit_connections_refused_total{reason=\"address_share\"}",
        );
        assert!(refused > 268, "{refused}\n{text}");
        assert_eq!(
            sample(
                &text,
                "jit_connections_refused_total{reason=\"accept_error\"}"
            ),
            0,
            "{text}"
        );
        Ok(())
    })
}

/// Regression (issue 12, item 9): headers trickled a line at a time were kept open for 43 s+.
/// With `header_read_timeout_secs = 1` the broker closes the connection (counted), however
/// steadily the client keeps sending.
#[test]
fn a_trickled_header_is_closed_after_the_header_read_timeout() -> Result<()> {
    crate::support::run(async move {
        let broker = broker("[server]\nheader_read_timeout_secs = 1\n", &[]).await?;
        let stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, broker.port())).await?;
        let (mut read, mut write) = stream.into_split();
        let trickle = tokio::spawn(async move {
            if write
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: broker\r\n")
                .await
                .is_err()
            {
                return;
            }
            // One header line every 100 ms, for at most the answer bound.
            for i in 0..300 {
                let line = format!("X-Trickle-{i}: x\r\n");
                if write.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut out = Vec::new();
        let closed = tokio::time::timeout(ANSWER_BOUND, read.read_to_end(&mut out)).await;
        trickle.abort();
        match closed {
            Err(_) => panic!("the broker kept a trickling connection open for {ANSWER_BOUND:?}"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        let answer = String::from_utf8_lossy(&out);
        assert!(!answer.contains("ok\n"), "no request was served: {answer}");
        let text = metrics_text(&broker.url()).await?;
        assert!(
            sample(
                &text,
                "jit_connections_timed_out_total{reason=\"header_read\"}"
            ) >= 1,
            "{text}"
        );
        Ok(())
    })
}

/// A configured cap the descriptor limit cannot hold is kept, with a warning at start that
/// names the limit (Linux allows at most 2^30 descriptors per process: 2e9 never fits).
#[test]
fn a_cap_beyond_the_descriptor_limit_is_warned_at_start() -> Result<()> {
    crate::support::run(async move {
        let broker = broker("[server]\nmax_connections = 2000000000\n", &[]).await?;
        let logs = broker.logs();
        assert!(
            logs.lines()
                .any(|l| l.contains("WARN") && l.contains("RLIMIT_NOFILE")),
            "{logs}"
        );
        Ok(())
    })
}

/// Regression (issue 12, item 11): `/metrics` was public on the main listener. With
/// `server.metrics_listen` it is served there and nowhere else.
#[test]
fn metrics_move_to_their_own_address() -> Result<()> {
    crate::support::run(async move {
        let metrics_port = jit_e2e::process::free_port()?;
        let broker = broker(
            &format!("[server]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n"),
            &[],
        )
        .await?;
        let http = jit_e2e::http_client();
        let main = http.get(format!("{}/metrics", broker.url())).send().await?;
        assert_ne!(main.status(), 200);
        let body = main.text().await?;
        assert!(!body.contains("jit_"), "{body}");
        let text = metrics_text(&format!("http://127.0.0.1:{metrics_port}")).await?;
        assert!(text.contains("jit_connections_open"), "{text}");
        // The metrics address serves nothing else.
        let other = http
            .get(format!("http://127.0.0.1:{metrics_port}/healthz"))
            .send()
            .await?;
        assert_eq!(other.status(), 404);
        Ok(())
    })
}

/// Regression (issue 12, item 11): `/oauth/introspect` answered anyone. Now a configured
/// client (HTTP Basic) or a loopback caller not relayed by a proxy; others get 401 with a
/// Basic challenge, and 429 once their address has spent its refusals.
#[test]
fn introspection_needs_a_client_credential_or_loopback() -> Result<()> {
    crate::support::run(async move {
        let hashed = "b".repeat(40);
        let digest = {
            let d = ring::digest::digest(&ring::digest::SHA256, hashed.as_bytes());
            d.as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let broker = broker(
            &format!(
                r#"
[exchange.rate_limit]
refused_per_minute = 1
refused_burst = 3

[[server.introspection.client]]
client_id = "proxy"
secret_env = "JIT_TEST_INTROSPECT_SECRET"

[[server.introspection.client]]
client_id = "hashed"
secret_sha256 = "{digest}"
"#
            ),
            &[(
                "JIT_TEST_INTROSPECT_SECRET",
                "a-long-random-introspection-secret",
            )],
        )
        .await?;
        let http = jit_e2e::http_client();
        let url = format!("{}/oauth/introspect", broker.url());
        let form = [("token", "not-a-token")];
        let ask = |user: Option<(&str, &str)>, relayed: bool| {
            let mut r = http.post(&url).form(&form);
            if let Some((u, p)) = user {
                r = r.basic_auth(u, Some(p));
            }
            if relayed {
                r = r.header("X-Forwarded-For", "203.0.113.9");
            }
            r.send()
        };
        // Loopback, not relayed: let in.
        let r = ask(None, false).await?;
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<serde_json::Value>().await?["active"], false);
        // Configured clients, from "anywhere".
        for (user, pass) in [
            ("proxy", "a-long-random-introspection-secret"),
            ("hashed", hashed.as_str()),
        ] {
            let r = ask(Some((user, pass)), true).await?;
            assert_eq!(r.status(), 200, "{user}");
        }
        // Relayed without a credential, or with a wrong one: 401 with a Basic challenge.
        for user in [None, Some(("proxy", "wrong")), Some(("nobody", "x"))] {
            let r = ask(user, true).await?;
            assert_eq!(r.status(), 401, "{user:?}");
            assert_eq!(
                r.headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Basic realm=\"git-jit\"")
            );
            let body: serde_json::Value = r.json().await?;
            assert_eq!(body["error"], "invalid_client", "{body}");
        }
        // The address's budget (3) is spent: 429 with a retry time.
        let r = ask(None, true).await?;
        assert_eq!(r.status(), 429);
        assert!(r.headers().contains_key("retry-after"));
        // A configured client still gets in.
        let r = ask(Some(("proxy", "a-long-random-introspection-secret")), true).await?;
        assert_eq!(r.status(), 200);

        let md: serde_json::Value = http
            .get(format!(
                "{}/.well-known/oauth-authorization-server",
                broker.url()
            ))
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(
            md["introspection_endpoint_auth_methods_supported"],
            serde_json::json!(["client_secret_basic"])
        );
        Ok(())
    })
}
