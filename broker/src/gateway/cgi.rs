//! The `dir:` upstream: bare repositories on local disk (`{root}/{repo}.git`), served by
//! running `git http-backend` as a CGI program per request. The request body is streamed to
//! its stdin while its stdout is streamed back, so neither side is ever held in memory; the
//! child is killed if the client goes away. Pushes are enabled through `GIT_CONFIG_COUNT`
//! (`http.receivepack=true`): the gateway has already decided who may push.

use std::path::PathBuf;
use std::process::Stdio;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, stream};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use super::body::BodyStream;
use super::proxy::Forward;
use super::text;

/// The largest CGI header block accepted from `git http-backend`.
const MAX_CGI_HEADER: usize = 64 * 1024;
/// Read size for the child's output.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes of the child's stderr copied into the log per request.
const MAX_STDERR_LOG: usize = 16 * 1024;

/// Why `git http-backend` could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CgiError {
    /// The program could not be started.
    #[error("cannot start git http-backend: {0}")]
    Spawn(#[source] std::io::Error),
    /// Reading its output failed.
    #[error("cannot read git http-backend's output: {0}")]
    Read(#[source] std::io::Error),
    /// Its output did not start with a valid CGI header block.
    #[error("git http-backend answered without a valid CGI header: {0}")]
    Header(&'static str),
}

/// A `dir:` upstream.
#[derive(Debug, Clone)]
pub struct DirUpstream {
    /// The directory holding `{repo}.git` bare repositories.
    pub root: PathBuf,
    /// The `git` program.
    pub git: PathBuf,
}

impl DirUpstream {
    /// Repositories under `root`, served by the `git` found on `PATH`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            git: PathBuf::from("git"),
        }
    }

    fn command(&self, f: &Forward) -> Command {
        let mut cmd = Command::new(&self.git);
        cmd.arg("http-backend").env_clear();
        for keep in ["PATH", "HOME", "LANG", "TMPDIR"] {
            if let Some(v) = std::env::var_os(keep) {
                cmd.env(keep, v);
            }
        }
        let remote_user: String = f
            .remote_user
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        cmd.env("GIT_PROJECT_ROOT", &self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.receivepack")
            .env("GIT_CONFIG_VALUE_0", "true")
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("REQUEST_METHOD", f.method().as_str())
            .env(
                "PATH_INFO",
                format!("/{}.git/{}", f.repo, f.endpoint.suffix()),
            )
            .env("QUERY_STRING", f.endpoint.query().unwrap_or_default())
            .env("REMOTE_USER", remote_user);
        if let Some(addr) = f.client {
            cmd.env("REMOTE_ADDR", addr.ip().to_string());
        }
        let vars: [(&str, Option<&HeaderValue>); 3] = [
            (
                "CONTENT_TYPE",
                f.headers.get(axum::http::header::CONTENT_TYPE),
            ),
            ("HTTP_CONTENT_ENCODING", f.content_encoding.as_ref()),
            ("HTTP_GIT_PROTOCOL", f.git_protocol.as_ref()),
        ];
        for (name, value) in vars {
            if let Some(v) = value.and_then(|v| v.to_str().ok()) {
                cmd.env(name, v);
            }
        }
        if let Some(n) = f.content_length {
            cmd.env("CONTENT_LENGTH", n.to_string());
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `git http-backend` for one request.
    pub async fn forward(&self, f: Forward, body: BodyStream) -> Response {
        match self.run(&f, body).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(repo = %f.repo, error = %e, "dir: upstream failed");
                text(
                    StatusCode::BAD_GATEWAY,
                    "git-jit: the local Git backend failed; see the broker's log",
                )
            }
        }
    }

    async fn run(&self, f: &Forward, mut body: BodyStream) -> Result<Response, CgiError> {
        let mut child = self.command(f).spawn().map_err(CgiError::Spawn)?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(CgiError::Spawn(std::io::Error::other("missing pipe")));
        };
        tokio::spawn(async move {
            // A failed copy (client gone, backend exited) just closes stdin; the backend
            // then sees a short request and fails on its own.
            while let Some(Ok(chunk)) = body.next().await {
                if stdin.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let _ = stdin.shutdown().await;
        });
        let repo = f.repo.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut logged = 0;
            while let Ok(Some(line)) = lines.next_line().await {
                if logged < MAX_STDERR_LOG {
                    logged += line.len();
                    // The upstream's words may quote a pushed ref name: no control or bidi
                    // character reaches an operator's terminal.
                    let line = jit_proto::display::clean(&line);
                    tracing::warn!(%repo, "git http-backend: {line}");
                }
            }
        });
        let mut stdout = stdout;
        let (status, headers, rest) = read_header(&mut stdout).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(text(
                StatusCode::NOT_FOUND,
                &format!("git-jit: repository {} not found", f.repo),
            ));
        }
        let body = stream::try_unfold(
            Output {
                first: Some(rest),
                stdout,
                child: Some(child),
            },
            next_output,
        );
        Ok(super::streamed(status, headers, Body::from_stream(body)))
    }
}

struct Output {
    first: Option<Bytes>,
    stdout: ChildStdout,
    child: Option<Child>,
}

async fn next_output(mut o: Output) -> Result<Option<(Bytes, Output)>, std::io::Error> {
    if let Some(first) = o.first.take().filter(|b| !b.is_empty()) {
        return Ok(Some((first, o)));
    }
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let n = o.stdout.read_buf(&mut buf).await?;
    if n > 0 {
        return Ok(Some((buf.freeze(), o)));
    }
    if let Some(mut child) = o.child.take() {
        match child.wait().await {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::warn!(status = %s, "git http-backend exited with failure"),
            Err(e) => tracing::warn!(error = %e, "cannot reap git http-backend"),
        }
    }
    Ok(None)
}

/// Reads the CGI header block; returns the status, the headers to pass on and the body bytes
/// already read.
async fn read_header(stdout: &mut ChildStdout) -> Result<(StatusCode, HeaderMap, Bytes), CgiError> {
    let mut buf = BytesMut::new();
    loop {
        if let Some((end, sep)) = find_blank_line(&buf) {
            let head = buf.split_to(end + sep);
            let (status, headers) = parse_header(&head[..end])?;
            return Ok((status, headers, buf.freeze()));
        }
        if buf.len() > MAX_CGI_HEADER {
            return Err(CgiError::Header("header block too large"));
        }
        let n = stdout.read_buf(&mut buf).await.map_err(CgiError::Read)?;
        if n == 0 {
            return Err(CgiError::Header("output ended before the header block did"));
        }
    }
}

fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn parse_header(head: &[u8]) -> Result<(StatusCode, HeaderMap), CgiError> {
    let text = std::str::from_utf8(head).map_err(|_| CgiError::Header("not text"))?;
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let (name, value) = line
            .split_once(':')
            .ok_or(CgiError::Header("line without ':'"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or_default();
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or(CgiError::Header("bad Status"))?;
            continue;
        }
        // The body is streamed; its length is the transport's business.
        if name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| CgiError::Header("bad header name"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| CgiError::Header("bad header value"))?;
        headers.append(name, value);
    }
    Ok((status, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cgi_headers() {
        let (s, h) = parse_header(
            b"Status: 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nExpires: Fri, 01 Jan 1980 00:00:00 GMT",
        )
        .expect("valid");
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert_eq!(
            h.get("content-type").map(|v| v.as_bytes()),
            Some(&b"text/plain"[..])
        );
        assert!(h.get("content-length").is_none());
        let (s, _) = parse_header(b"Content-Type: application/x-git-upload-pack-advertisement")
            .expect("valid");
        assert_eq!(s, StatusCode::OK);
        assert!(parse_header(b"garbage").is_err());
        assert!(parse_header(b"Status: abc").is_err());
    }

    #[test]
    fn finds_the_first_blank_line() {
        assert_eq!(find_blank_line(b"a: b\r\n\r\nbody\n\n"), Some((4, 4)));
        assert_eq!(find_blank_line(b"a: b\n\nbody\r\n\r\n"), Some((4, 2)));
        assert_eq!(find_blank_line(b"a: b\r\n"), None);
    }
}
