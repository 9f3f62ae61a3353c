//! The gateway in front of an http upstream (a recording fake Git server): the broker's own
//! credential replaces the client's, `Git-Protocol` and gzip pass through, bodies stream both
//! ways, upstream refusals and silence become clear 502/504 answers, and idle connections to
//! the upstream are kept only as long as `keepalive_secs` says.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use jit_broker::config::{UpstreamConfig, UpstreamCredential};
use jit_broker::gateway::Gateway;

mod support;

#[derive(Debug, Clone)]
struct Seen {
    /// The gateway's end of the connection the request came on.
    peer: SocketAddr,
    uri: String,
    headers: HeaderMap,
    body_len: usize,
}

async fn fake_upstream(seen: Arc<Mutex<Vec<Seen>>>) -> SocketAddr {
    let app = axum::Router::new().fallback(
        move |ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request| {
            let seen = seen.clone();
            async move {
                let uri = req.uri().to_string();
                if uri.contains("/slow.git/") {
                    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                }
                let headers = req.headers().clone();
                let mut body = req.into_body().into_data_stream();
                let mut body_len = 0;
                while let Some(Ok(chunk)) = body.next().await {
                    body_len += chunk.len();
                }
                seen.lock().expect("lock").push(Seen {
                    peer,
                    uri,
                    headers: headers.clone(),
                    body_len,
                });
                // "jit:s3cret"
                if headers.get("authorization").map(|v| v.as_bytes())
                    != Some(b"Basic aml0OnMzY3JldA==")
                {
                    return StatusCode::UNAUTHORIZED.into_response();
                }
                let big = vec![b'x'; 3 * 1024 * 1024];
                Response::builder()
                    .header("content-type", "application/x-git-upload-pack-result")
                    .header("set-cookie", "leak=1")
                    .body(Body::from(big))
                    .expect("response")
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn upstream(repos: &str, url: String, password_file: &std::path::Path) -> UpstreamConfig {
    UpstreamConfig {
        repositories: vec![repos.into()],
        url,
        credential: Some(UpstreamCredential::Basic {
            username: "jit".into(),
            password_env: None,
            password_file: Some(password_file.to_path_buf()),
        }),
        connect_timeout_secs: 2,
        idle_timeout_secs: 1,
        keepalive_secs: 4,
    }
}

/// Requests the gateway sends through its pool (ref advertisements; an RPC of known length to
/// an `http://` upstream goes on a connection of its own) share a connection one after
/// another, unless the upstream's entry keeps none (`keepalive_secs = 0`): then each has its
/// own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_kept_as_keepalive_secs_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let password = dir.path().join("good");
    std::fs::write(&password, "s3cret\n").expect("write");
    for (keepalive_secs, connections) in [(4, 1), (0, 3)] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let up = fake_upstream(seen.clone()).await;
        let gateway = Gateway::from_config(&[UpstreamConfig {
            keepalive_secs,
            ..upstream("acme/*", format!("http://{up}"), &password)
        }])
        .expect("gateway");
        let broker = support::start(gateway).await;
        let (token, _) = broker.token("repo:acme/api:read", &[]).await;
        let client = reqwest::Client::new();
        for _ in 0..3 {
            let resp = client
                .get(format!(
                    "http://{}/acme/api.git/info/refs?service=git-upload-pack",
                    broker.addr
                ))
                .bearer_auth(&token)
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status(), 200);
            resp.bytes().await.expect("body");
        }
        let peers: BTreeSet<SocketAddr> =
            seen.lock().expect("lock").iter().map(|s| s.peer).collect();
        assert_eq!(
            peers.len(),
            connections,
            "keepalive_secs = {keepalive_secs}: connections to the upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_upstream_gets_the_brokers_credential_and_streams() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up = fake_upstream(seen.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    std::fs::write(&good, "s3cret\n").expect("write");
    std::fs::write(&bad, "wrong").expect("write");
    let gateway = Gateway::from_config(&[
        upstream("acme/wrong", format!("http://{up}"), &bad),
        upstream("acme/*", format!("http://{up}/prefix"), &good),
    ])
    .expect("gateway");
    let broker = support::start(gateway).await;
    let mut tokens = Vec::new();
    for repo in ["acme/api", "acme/wrong", "acme/slow"] {
        tokens.push(broker.token(&format!("repo:{repo}:read"), &[]).await.0);
    }
    let broker = broker.addr;
    let client = reqwest::Client::new();

    // A streamed 5 MiB request body, gzip-labelled, protocol v2.
    let chunks = (0..80).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 64 * 1024]));
    let resp = client
        .post(format!("http://{broker}/acme/api.git/git-upload-pack"))
        .bearer_auth(&tokens[0])
        .header("git-protocol", "version=2")
        .header("content-encoding", "gzip")
        .header("content-type", "application/x-git-upload-pack-request")
        .header("cookie", "session=secret")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/x-git-upload-pack-result"
    );
    assert!(resp.headers().get("set-cookie").is_none());
    assert_eq!(resp.bytes().await.expect("body").len(), 3 * 1024 * 1024);
    let s = seen.lock().expect("lock")[0].clone();
    assert_eq!(s.uri, "/prefix/acme/api.git/git-upload-pack");
    assert_eq!(s.body_len, 80 * 64 * 1024);
    assert_eq!(s.headers["authorization"], "Basic aml0OnMzY3JldA==");
    assert_eq!(s.headers["git-protocol"], "version=2");
    assert_eq!(s.headers["content-encoding"], "gzip");
    assert!(s.headers.get("cookie").is_none());

    // info/refs takes exactly the service parameter: anything more is refused before the
    // upstream; the plain request reaches it with only that parameter.
    let resp = client
        .get(format!(
            "http://{broker}/acme/api/info/refs?service=git-upload-pack&evil=1"
        ))
        .basic_auth("anyone", Some(&tokens[0]))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400);
    assert_eq!(
        seen.lock().expect("lock").len(),
        1,
        "nothing reached the upstream"
    );
    let resp = client
        .get(format!(
            "http://{broker}/acme/api/info/refs?service=git-upload-pack"
        ))
        .basic_auth("anyone", Some(&tokens[0]))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        seen.lock().expect("lock")[1].uri,
        "/prefix/acme/api.git/info/refs?service=git-upload-pack"
    );

    // The upstream refuses the broker's credential: 502, not the upstream's challenge.
    let resp = client
        .get(format!(
            "http://{broker}/acme/wrong.git/info/refs?service=git-upload-pack"
        ))
        .bearer_auth(&tokens[1])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 502);
    assert!(resp.headers().get("www-authenticate").is_none());
    assert!(
        resp.text()
            .await
            .expect("text")
            .contains("refused the broker's credential")
    );

    // A silent upstream: 504.
    let resp = client
        .get(format!(
            "http://{broker}/acme/slow.git/info/refs?service=git-upload-pack"
        ))
        .bearer_auth(&tokens[2])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 504);
    assert!(
        resp.text()
            .await
            .expect("text")
            .contains("did not answer in time")
    );
}
