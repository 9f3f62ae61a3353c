//! The streaming reverse proxy to an http(s) Git server: the request body flows to the
//! upstream and the answer flows back as they arrive, so memory stays flat whatever the
//! pack size. The client's `Authorization` never leaves the broker; the upstream gets the
//! broker's own credential. What is forwarded is a short allow-list of headers.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::TryStreamExt;
use jit_proto::{RepoPath, Secret};
use reqwest::Url;

use super::body::BodyStream;
use super::coalesce::Coalesced;
use super::http10::{self, Http10Error};
use super::{Endpoint, GitRequest, text};

/// The `Git-Protocol` header (protocol v2 negotiation).
pub static GIT_PROTOCOL: HeaderName = HeaderName::from_static("git-protocol");

/// Request headers passed to the upstream as they are.
const FORWARDED_REQUEST_HEADERS: [HeaderName; 3] =
    [header::CONTENT_TYPE, header::ACCEPT, header::USER_AGENT];
/// Response headers passed back to the client.
const FORWARDED_RESPONSE_HEADERS: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::PRAGMA,
];

/// What the gateway forwards of one allowed request.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The repository.
    pub repo: RepoPath,
    /// The endpoint.
    pub endpoint: Endpoint,
    /// `Content-Encoding` of the body, when it is forwarded encoded.
    pub content_encoding: Option<HeaderValue>,
    /// `Content-Length` of the body, when known and unchanged.
    pub content_length: Option<u64>,
    /// `Git-Protocol` (e.g. `version=2`), when well-formed.
    pub git_protocol: Option<HeaderValue>,
    /// The allow-listed headers.
    pub headers: HeaderMap,
    /// The token's subject (`REMOTE_USER` for CGI).
    pub remote_user: String,
    /// The client's address.
    pub client: Option<SocketAddr>,
}

impl Forward {
    /// Picks what may be forwarded from the client's request.
    pub fn new(
        git: &GitRequest,
        from: &HeaderMap,
        remote_user: &str,
        client: Option<SocketAddr>,
    ) -> Self {
        let mut headers = HeaderMap::new();
        for name in &FORWARDED_REQUEST_HEADERS {
            if let Some(v) = from.get(name) {
                headers.insert(name.clone(), v.clone());
            }
        }
        let git_protocol = from.get(&GIT_PROTOCOL).filter(|v| {
            v.len() <= 256
                && v.as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"=:._-".contains(b))
        });
        Self {
            repo: git.repo.clone(),
            endpoint: git.endpoint,
            content_encoding: from.get(header::CONTENT_ENCODING).cloned(),
            content_length: from
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            git_protocol: git_protocol.cloned(),
            headers,
            remote_user: remote_user.to_owned(),
            client,
        }
    }

    /// The HTTP method for the endpoint.
    pub fn method(&self) -> Method {
        match self.endpoint {
            Endpoint::InfoRefs(_) => Method::GET,
            Endpoint::Rpc(_) => Method::POST,
        }
    }
}

/// The credential the broker presents to an upstream.
#[derive(Debug, Clone)]
pub enum UpstreamAuth {
    /// HTTP Basic.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// Bearer token.
    Bearer(Secret),
}

impl UpstreamAuth {
    fn header(&self) -> Option<HeaderValue> {
        let value = match self {
            UpstreamAuth::Basic { username, password } => format!(
                "Basic {}",
                STANDARD.encode(format!("{username}:{}", password.expose()))
            ),
            UpstreamAuth::Bearer(token) => format!("Bearer {}", token.expose()),
        };
        let mut v = HeaderValue::from_str(&value).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

/// An http(s) upstream.
#[derive(Debug, Clone)]
pub struct HttpUpstream {
    /// `http(s)://host/prefix`, without a trailing slash.
    pub base: Url,
    /// The injected credential.
    pub auth: Option<UpstreamAuth>,
    client: reqwest::Client,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl HttpUpstream {
    /// An upstream at `base` with its own connection pool and timeouts; a pooled connection
    /// idle for `keepalive` is dropped (zero keeps none).
    pub fn new(
        base: Url,
        auth: Option<UpstreamAuth>,
        connect_timeout: Duration,
        idle_timeout: Duration,
        keepalive: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = crate::outbound::client_builder_keeping(keepalive)
            .connect_timeout(connect_timeout)
            .read_timeout(idle_timeout)
            .build()?;
        Ok(Self {
            base,
            auth,
            client,
            connect_timeout,
            idle_timeout,
        })
    }

    fn url(&self, f: &Forward) -> String {
        let base = self.base.as_str().trim_end_matches('/');
        let mut url = format!("{base}/{}.git/{}", f.repo, f.endpoint.suffix());
        if let Some(q) = f.endpoint.query() {
            url.push('?');
            url.push_str(&q);
        }
        url
    }

    /// Sends the request, streaming `body`, and streams the answer back.
    pub async fn forward(&self, f: Forward, body: BodyStream) -> Response {
        let host = self.base.host_str().unwrap_or("?").to_owned();
        let answer = match (f.method(), f.content_length) {
            (Method::POST, Some(n)) if self.base.scheme() == "http" => {
                self.send_own_connection(&f, n, body).await
            }
            _ => self.send_pooled(&f, body).await,
        };
        let (status, upstream_headers, upstream) = match answer {
            Ok(answer) => answer,
            Err(refusal) => return refusal,
        };
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            tracing::error!(%host, %status, repo = %f.repo, "upstream refused the broker's credential");
            return text(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "git-jit: the upstream Git server refused the broker's credential (HTTP {})",
                    status.as_u16()
                ),
            );
        }
        if status == StatusCode::NOT_FOUND {
            return text(
                StatusCode::NOT_FOUND,
                &format!(
                    "git-jit: repository {} not found on the upstream Git server",
                    f.repo
                ),
            );
        }
        if status.is_server_error() {
            tracing::error!(%host, %status, repo = %f.repo, "upstream failed");
            return text(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "git-jit: the upstream Git server failed (HTTP {})",
                    status.as_u16()
                ),
            );
        }
        let mut headers = HeaderMap::new();
        for name in &FORWARDED_RESPONSE_HEADERS {
            for v in upstream_headers.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        // Frames may be small (one read of an unframed answer, or ~4 KB chunks through the
        // pooled client): gathered so that they reach the client in large writes (`coalesce`).
        let body = Body::from_stream(Coalesced::new(upstream));
        super::streamed(status, headers, body)
    }

    /// The headers every request to the upstream carries: the allow-listed ones, `Git-Protocol`,
    /// `Content-Encoding` and the broker's credential.
    fn request_headers(&self, f: &Forward) -> HeaderMap {
        let mut headers = f.headers.clone();
        if let Some(v) = &f.git_protocol {
            headers.insert(&GIT_PROTOCOL, v.clone());
        }
        if let Some(v) = &f.content_encoding {
            headers.insert(header::CONTENT_ENCODING, v.clone());
        }
        if let Some(auth) = self.auth.as_ref().and_then(UpstreamAuth::header) {
            headers.insert(header::AUTHORIZATION, auth);
        }
        headers
    }

    /// Through the pooled client: the answer's status, headers and body, or the response that
    /// tells the client why there is none.
    async fn send_pooled(
        &self,
        f: &Forward,
        body: BodyStream,
    ) -> Result<(StatusCode, HeaderMap, BodyStream), Response> {
        let mut req = self
            .client
            .request(f.method(), self.url(f))
            .headers(self.request_headers(f));
        if f.method() == Method::POST {
            if let Some(n) = f.content_length {
                req = req.header(header::CONTENT_LENGTH, n);
            }
            req = req.body(reqwest::Body::wrap_stream(body));
        }
        let host = self.base.host_str().unwrap_or("?");
        let mut resp = req.send().await.map_err(|e| upstream_error(host, &e))?;
        let status = resp.status();
        let headers = std::mem::take(resp.headers_mut());
        let body: BodyStream = Box::pin(resp.bytes_stream().map_err(std::io::Error::other));
        Ok((status, headers, body))
    }

    /// An RPC of known length to an `http://` upstream, on a connection of its own
    /// ([`http10`](super::http10)).
    async fn send_own_connection(
        &self,
        f: &Forward,
        content_length: u64,
        body: BodyStream,
    ) -> Result<(StatusCode, HeaderMap, BodyStream), Response> {
        // The table only holds http(s) bases with a host ([`super::upstream`]).
        let host = self.base.host_str().unwrap_or("?");
        let Some(port) = self.base.port_or_known_default() else {
            return Err(text(
                StatusCode::BAD_GATEWAY,
                &format!("git-jit: cannot connect to the upstream Git server {host}"),
            ));
        };
        let host_header = match self.base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        // The path below the base's, as `url` builds it (the base's path is already encoded).
        let prefix = self.base.path().trim_end_matches('/');
        let mut target = format!("{prefix}/{}.git/{}", f.repo, f.endpoint.suffix());
        if let Some(q) = f.endpoint.query() {
            target.push('?');
            target.push_str(&q);
        }
        let headers = self.request_headers(f);
        let rpc = http10::Rpc {
            // An IPv6 address without the brackets of its URL form.
            connect_host: host.trim_start_matches('[').trim_end_matches(']'),
            port,
            host_header: &host_header,
            target: &target,
            headers: &headers,
            content_length,
        };
        match http10::send(rpc, body, self.connect_timeout, self.idle_timeout).await {
            Ok(a) => Ok((a.status, a.headers, a.body)),
            Err(e) => Err(own_connection_error(host, &e)),
        }
    }
}

fn own_connection_error(host: &str, e: &Http10Error) -> Response {
    match e {
        Http10Error::Timeout => {
            tracing::error!(%host, error = %e, "upstream timed out");
            text(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("git-jit: the upstream Git server {host} did not answer in time"),
            )
        }
        Http10Error::Connect(_) => {
            tracing::error!(%host, error = %e, "cannot connect to upstream");
            text(
                StatusCode::BAD_GATEWAY,
                &format!("git-jit: cannot connect to the upstream Git server {host}"),
            )
        }
        Http10Error::BodyLength { .. } | Http10Error::Body(_) => {
            tracing::warn!(%host, error = %e, "request body not forwarded whole");
            text(StatusCode::BAD_REQUEST, &format!("git-jit: {e}"))
        }
        Http10Error::Io(_) | Http10Error::Malformed(_) => {
            tracing::error!(%host, error = %e, "upstream request failed");
            text(
                StatusCode::BAD_GATEWAY,
                &format!("git-jit: the request to the upstream Git server {host} failed"),
            )
        }
    }
}

fn upstream_error(host: &str, e: &reqwest::Error) -> Response {
    if e.is_timeout() {
        tracing::error!(%host, error = %e, "upstream timed out");
        text(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("git-jit: the upstream Git server {host} did not answer in time"),
        )
    } else if e.is_connect() {
        tracing::error!(%host, error = %e, "cannot connect to upstream");
        text(
            StatusCode::BAD_GATEWAY,
            &format!("git-jit: cannot connect to the upstream Git server {host}"),
        )
    } else {
        tracing::error!(%host, error = %e, "upstream request failed");
        text(
            StatusCode::BAD_GATEWAY,
            &format!("git-jit: the request to the upstream Git server {host} failed"),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;

    use super::*;
    use crate::gateway::GitService;

    const PROGRESS: &[u8] = b"0011\x02Counting...\n";
    const WAIT: Duration = Duration::from_secs(30);

    /// One request as the upstream saw it: the head (request line and headers, lower-cased)
    /// and the body.
    struct Seen {
        head: String,
        body: Vec<u8>,
    }

    /// Reads one request off `sock`: the head, then a body of its `Content-Length` or, chunked,
    /// up to the last chunk (kept with its framing).
    async fn read_request(sock: &mut TcpStream) -> std::io::Result<Seen> {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            sock.read_exact(&mut byte).await?;
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse::<usize>().ok());
        let body = match length {
            Some(n) => {
                let mut body = vec![0; n];
                sock.read_exact(&mut body).await?;
                body
            }
            None => {
                let mut raw = Vec::new();
                while !raw.ends_with(b"0\r\n\r\n") {
                    sock.read_exact(&mut byte).await?;
                    raw.push(byte[0]);
                }
                raw
            }
        };
        Ok(Seen { head, body })
    }

    /// An upstream for one request: it answers `head` and `first`, waits until the test lets it
    /// go on (e.g. once `first` reached the gateway's client), then sends `rest` and closes.
    struct Upstream {
        base: Url,
        seen: oneshot::Receiver<Seen>,
        go: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn upstream(head: &'static str, first: &'static [u8], rest: Vec<u8>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (seen_tx, seen) = oneshot::channel();
        let (go, go_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await?;
            let request = read_request(&mut sock).await?;
            let _ = seen_tx.send(request);
            sock.write_all(head.as_bytes()).await?;
            sock.write_all(first).await?;
            sock.flush().await?;
            let _ = go_rx.await;
            sock.write_all(&rest).await?;
            sock.shutdown().await
        });
        let base = Url::parse(&format!("http://{addr}/git")).expect("url");
        Upstream {
            base,
            seen,
            go,
            task,
        }
    }

    fn rpc(content_length: Option<u64>) -> Forward {
        let git = GitRequest {
            repo: RepoPath::parse("acme/api").expect("repo"),
            endpoint: Endpoint::Rpc(GitService::UploadPack),
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-git-upload-pack-request"),
        );
        let mut f = Forward::new(&git, &headers, "alice", None);
        f.content_length = content_length;
        f
    }

    fn body_of(bytes: &'static [u8]) -> BodyStream {
        Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(bytes))]))
    }

    fn client(base: Url, idle: Duration) -> HttpUpstream {
        let auth = UpstreamAuth::Basic {
            username: "jit".into(),
            password: Secret::new("hunter2"),
        };
        HttpUpstream::new(base, Some(auth), WAIT, idle, crate::outbound::POOL_IDLE).expect("client")
    }

    /// Reads `body` until `got` holds at least `n` bytes.
    async fn read_at_least(body: &mut Body, got: &mut Vec<u8>, n: usize) {
        while got.len() < n {
            let frame = tokio::time::timeout(WAIT, body.frame())
                .await
                .expect("the body went on")
                .expect("a frame, not the end")
                .expect("no error");
            if let Ok(data) = frame.into_data() {
                got.extend_from_slice(&data);
            }
        }
    }

    /// What follows in `body`: its end, or the text of its error.
    async fn end_of(body: &mut Body) -> Option<String> {
        match tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("ended")
        {
            None => None,
            Some(Ok(_)) => Some("more data".into()),
            Some(Err(e)) => Some(e.to_string()),
        }
    }

    #[tokio::test]
    async fn an_rpc_of_known_length_goes_as_http_1_0_on_its_own_connection_and_its_unframed_answer_streams_back()
     {
        // Unframed: no length, no chunks, the end of the answer is the end of the connection.
        // (The head seen upstream is lower-cased, the credential's Base64 with it.)
        let rest: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let up = upstream(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-result\r\n\
             Connection: close\r\n\r\n",
            PROGRESS,
            rest.clone(),
        )
        .await;
        let request = b"0011command=fetch0000";
        let resp = client(up.base, WAIT)
            .forward(rpc(Some(request.len() as u64)), body_of(request))
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/x-git-upload-pack-result"
        );

        let seen = up.seen.await.expect("the upstream got the request");
        let mut lines = seen.head.lines();
        assert_eq!(
            lines.next(),
            Some("post /git/acme/api.git/git-upload-pack http/1.0")
        );
        let headers: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
        let port = seen.head.split("host: 127.0.0.1:").nth(1).unwrap_or("");
        assert!(
            port.starts_with(|c: char| c.is_ascii_digit()),
            "{}",
            seen.head
        );
        for expected in [
            "content-type: application/x-git-upload-pack-request",
            "authorization: basic aml0omh1bnrlcji=",
            "content-length: 21",
        ] {
            assert!(headers.contains(&expected), "{expected}: {}", seen.head);
        }
        assert_eq!(headers.len(), 4, "{}", seen.head);
        assert_eq!(seen.body, request);

        // The progress line reaches the client while the upstream holds the rest back.
        let mut body = resp.into_body();
        let mut got = Vec::new();
        read_at_least(&mut body, &mut got, PROGRESS.len()).await;
        assert_eq!(got, PROGRESS);
        up.go.send(()).expect("the upstream waits");
        read_at_least(&mut body, &mut got, PROGRESS.len() + rest.len()).await;
        assert_eq!(end_of(&mut body).await, None);
        assert_eq!(&got[PROGRESS.len()..], &rest[..]);
        up.task.await.expect("upstream task").expect("upstream io");
    }

    #[tokio::test]
    async fn an_answer_with_a_length_ends_there_and_one_cut_short_is_an_error() {
        let up = upstream(
            "HTTP/1.0 200 OK\r\nContent-Length: 21\r\n\r\n",
            PROGRESS,
            b"00001234567890".to_vec(),
        )
        .await;
        up.go.send(()).expect("the upstream waits");
        let resp = client(up.base, WAIT)
            .forward(rpc(Some(4)), body_of(b"0000"))
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut got = Vec::new();
        read_at_least(&mut body, &mut got, 21).await;
        // What the upstream sent past its length is not handed on.
        assert_eq!(&got[..], b"0011\x02Counting...\n0000");
        assert_eq!(end_of(&mut body).await, None);

        let up = upstream(
            "HTTP/1.0 200 OK\r\nContent-Length: 100\r\n\r\n",
            PROGRESS,
            b"0000".to_vec(),
        )
        .await;
        up.go.send(()).expect("the upstream waits");
        let resp = client(up.base, WAIT)
            .forward(rpc(Some(4)), body_of(b"0000"))
            .await;
        let mut body = resp.into_body();
        let mut got = Vec::new();
        read_at_least(&mut body, &mut got, 21).await;
        let end = end_of(&mut body).await.unwrap_or_default();
        assert!(end.contains("before the end of the answer"), "{end}");
    }

    #[tokio::test]
    async fn a_chunked_or_malformed_answer_to_an_http_1_0_rpc_is_a_502() {
        for head in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
            "HTTP/1.1 2OO OK\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            let up = upstream(head, b"", Vec::new()).await;
            let resp = client(up.base, WAIT)
                .forward(rpc(Some(4)), body_of(b"0000"))
                .await;
            assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{head}");
            let _ = up.go.send(());
        }
    }

    #[tokio::test]
    async fn a_request_body_not_of_its_declared_length_is_refused() {
        let up = upstream("HTTP/1.0 200 OK\r\n\r\n", b"", Vec::new()).await;
        // Declared 4, sent 5: refused before the fifth byte leaves.
        let resp = client(up.base.clone(), WAIT)
            .forward(rpc(Some(4)), body_of(b"00000"))
            .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let text = resp.into_body().collect().await.expect("body").to_bytes();
        assert!(String::from_utf8_lossy(&text).contains("not 4 bytes long"));
    }

    #[tokio::test]
    async fn an_upstream_silent_past_the_idle_timeout_ends_the_answer_with_an_error() {
        let up = upstream("HTTP/1.0 200 OK\r\n\r\n", PROGRESS, Vec::new()).await;
        let resp = client(up.base, Duration::from_secs(1))
            .forward(rpc(Some(4)), body_of(b"0000"))
            .await;
        let mut body = resp.into_body();
        let mut got = Vec::new();
        read_at_least(&mut body, &mut got, PROGRESS.len()).await;
        let end = end_of(&mut body).await.unwrap_or_default();
        assert!(end.contains("sent nothing for 1 s"), "{end}");
        drop(up.go);
    }

    #[tokio::test]
    async fn an_rpc_of_unknown_length_goes_through_the_pool_as_http_1_1_chunked() {
        // A chunked answer: the progress line is the first chunk.
        let up = upstream(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-result\r\n\
             Transfer-Encoding: chunked\r\n\r\n11\r\n",
            PROGRESS,
            b"\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        )
        .await;
        let resp = client(up.base, WAIT)
            .forward(rpc(None), body_of(b"0000"))
            .await;
        assert_eq!(resp.status(), StatusCode::OK);

        let seen = up.seen.await.expect("the upstream got the request");
        assert!(
            seen.head
                .starts_with("post /git/acme/api.git/git-upload-pack http/1.1\r\n"),
            "{}",
            seen.head
        );
        assert!(seen.head.contains("\r\ntransfer-encoding: chunked\r\n"));
        assert_eq!(seen.body, b"4\r\n0000\r\n0\r\n\r\n");

        let mut body = resp.into_body();
        let mut got = Vec::new();
        up.go.send(()).expect("the upstream waits");
        read_at_least(&mut body, &mut got, PROGRESS.len() + 5).await;
        assert_eq!(&got[..PROGRESS.len()], PROGRESS);
        assert_eq!(&got[PROGRESS.len()..], b"hello");
        up.task.await.expect("upstream task").expect("upstream io");
    }
}
