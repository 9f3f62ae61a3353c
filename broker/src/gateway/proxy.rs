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
}

impl HttpUpstream {
    /// An upstream at `base` with its own connection pool and timeouts.
    pub fn new(
        base: Url,
        auth: Option<UpstreamAuth>,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        // The binary installs the ring provider at start; tests and embedders may not have.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The process's one TLS provider (ring); installing it again is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .read_timeout(idle_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { base, auth, client })
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
        let url = self.url(&f);
        let mut req = self
            .client
            .request(f.method(), &url)
            .headers(f.headers.clone());
        if let Some(v) = &f.git_protocol {
            req = req.header(&GIT_PROTOCOL, v.clone());
        }
        if let Some(v) = &f.content_encoding {
            req = req.header(header::CONTENT_ENCODING, v.clone());
        }
        if let Some(auth) = self.auth.as_ref().and_then(UpstreamAuth::header) {
            req = req.header(header::AUTHORIZATION, auth);
        }
        if f.method() == Method::POST {
            if let Some(n) = f.content_length {
                req = req.header(header::CONTENT_LENGTH, n);
            }
            req = req.body(reqwest::Body::wrap_stream(body));
        }
        let host = self.base.host_str().unwrap_or("?").to_owned();
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return upstream_error(&host, &e),
        };
        let status = resp.status();
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
            for v in resp.headers().get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        // nginx relays an unbuffered FastCGI answer in ~4 KB chunks, each its own frame here:
        // gathered so that they reach the client in large writes (see `coalesce`).
        let upstream: BodyStream = Box::pin(resp.bytes_stream().map_err(std::io::Error::other));
        let body = Body::from_stream(Coalesced::new(upstream));
        super::streamed(status, headers, body)
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
