//! One RPC to a plain `http://` upstream on a connection of its own, in HTTP/1.0, with the
//! answer read straight off the socket by the response body.
//!
//! Why: a Git server behind nginx relays its backend's output unbuffered, in ~4 KB HTTP/1.1
//! chunks. The pooled HTTP client (reqwest over hyper) decodes each chunk into its own frame
//! and hands the frames from its connection task to the response one at a time (a one-slot
//! channel, a wake-up each way): ~54,000 hand-overs for a 220 MB pack, and even an unframed
//! answer is handed over 8 KB at a time. Asked in HTTP/1.0, the upstream sends its answer
//! unframed, to the end of the connection; read here by the task that writes to the client,
//! it costs one `recv` per [`READ_SIZE`] at most and no hand-over at all.
//!
//! Back-pressure: the socket is read only when the client's side asks for more, so nothing is
//! read faster than the client takes it, and at most one read is held here. The answer's head
//! is bounded ([`MAX_HEAD`], [`MAX_HEADERS`]); waits are bounded by the upstream's idle
//! timeout. An answer without a length ends with the connection: one cut short looks
//! complete to HTTP, and Git's own framing (the pack's checksum, the final flush) tells the
//! client.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, timeout};

use super::body::BodyStream;

/// The most bytes one read of the answer takes off the socket (one frame at most).
pub const READ_SIZE: usize = 128 * 1024;
/// The longest answer head (status line and headers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most answer headers accepted.
pub const MAX_HEADERS: usize = 100;

/// Why an RPC on its own connection failed before its answer's body.
#[derive(Debug, thiserror::Error)]
pub enum Http10Error {
    /// The upstream could not be reached.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// Connecting, sending or waiting for the head took longer than allowed.
    #[error("no progress within the timeout")]
    Timeout,
    /// The client's request body was not of the length it declared.
    #[error("the request body is not {declared} bytes long, as declared")]
    BodyLength {
        /// The declared `Content-Length`.
        declared: u64,
    },
    /// Reading the client's request body failed.
    #[error("reading the request body: {0}")]
    Body(std::io::Error),
    /// Writing to or reading from the upstream failed.
    #[error("upstream connection: {0}")]
    Io(std::io::Error),
    /// The upstream's answer is not an HTTP answer this module accepts.
    #[error("the upstream's answer is malformed: {0}")]
    Malformed(&'static str),
}

/// Where and what to send: `POST target` to `host:port`.
pub struct Rpc<'a> {
    /// The host to connect to (a name or an address, without brackets).
    pub connect_host: &'a str,
    /// The port.
    pub port: u16,
    /// The `Host` header (`name[:port]`, an IPv6 address in brackets).
    pub host_header: &'a str,
    /// The path (and query) of the request.
    pub target: &'a str,
    /// Headers to send besides `Host` and `Content-Length`.
    pub headers: &'a HeaderMap,
    /// The request body's declared length.
    pub content_length: u64,
}

/// An upstream's answer, its body still on the wire.
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, read as it is asked for.
    pub body: BodyStream,
}

/// Sends `rpc` with `body` (streamed) on a new connection and reads the answer's head.
pub async fn send(
    rpc: Rpc<'_>,
    mut body: BodyStream,
    connect_timeout: Duration,
    idle_timeout: Duration,
) -> Result<Answer, Http10Error> {
    let mut sock = timeout(
        connect_timeout,
        TcpStream::connect((rpc.connect_host, rpc.port)),
    )
    .await
    .map_err(|_| Http10Error::Timeout)?
    .map_err(Http10Error::Connect)?;
    // The head and the body's frames are separate writes: none of them may wait for an ACK.
    sock.set_nodelay(true).map_err(Http10Error::Io)?;

    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"POST ");
    head.extend_from_slice(rpc.target.as_bytes());
    head.extend_from_slice(b" HTTP/1.0\r\nHost: ");
    head.extend_from_slice(rpc.host_header.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in rpc.headers {
        if name == header::HOST || name == header::CONTENT_LENGTH || name == header::CONNECTION {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", rpc.content_length).as_bytes());
    write(&mut sock, &head, idle_timeout).await?;

    let mut sent: u64 = 0;
    while let Some(frame) = timeout(idle_timeout, body.next())
        .await
        .map_err(|_| Http10Error::Timeout)?
    {
        let frame = frame.map_err(Http10Error::Body)?;
        sent = sent.saturating_add(frame.len() as u64);
        if sent > rpc.content_length {
            return Err(Http10Error::BodyLength {
                declared: rpc.content_length,
            });
        }
        write(&mut sock, &frame, idle_timeout).await?;
    }
    if sent != rpc.content_length {
        return Err(Http10Error::BodyLength {
            declared: rpc.content_length,
        });
    }

    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let (status, headers, head_len) = loop {
        let n = timeout(idle_timeout, sock.read_buf(&mut buf))
            .await
            .map_err(|_| Http10Error::Timeout)?
            .map_err(Http10Error::Io)?;
        if n == 0 {
            return Err(Http10Error::Malformed(
                "the connection closed before the head",
            ));
        }
        if let Some(parsed) = parse_head(&buf)? {
            break parsed;
        }
        if buf.len() >= MAX_HEAD {
            return Err(Http10Error::Malformed("the head is too long"));
        }
    };
    let _ = buf.split_to(head_len);
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Http10Error::Malformed(
            "a transfer-encoded answer to an HTTP/1.0 request",
        ));
    }
    let remaining = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Some(0)
    } else {
        match headers.get(header::CONTENT_LENGTH) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or(Http10Error::Malformed("an invalid Content-Length"))?,
            ),
        }
    };
    let body = Unframed {
        sock,
        buf,
        remaining,
        idle_timeout,
        idle: Box::pin(tokio::time::sleep(idle_timeout)),
        armed: false,
        done: false,
    };
    Ok(Answer {
        status,
        headers,
        body: Box::pin(body),
    })
}

async fn write(
    sock: &mut TcpStream,
    bytes: &[u8],
    idle_timeout: Duration,
) -> Result<(), Http10Error> {
    timeout(idle_timeout, sock.write_all(bytes))
        .await
        .map_err(|_| Http10Error::Timeout)?
        .map_err(Http10Error::Io)
}

/// The status, headers and length of a complete head at the start of `buf`, or `None` if
/// more is needed.
fn parse_head(buf: &[u8]) -> Result<Option<(StatusCode, HeaderMap, usize)>, Http10Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut slots);
    let len = match answer.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Http10Error::Malformed("too many headers"));
        }
        Err(_) => return Err(Http10Error::Malformed("not an HTTP answer head")),
    };
    let status = answer
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(|s| !s.is_informational())
        .ok_or(Http10Error::Malformed("an invalid status"))?;
    let mut headers = HeaderMap::with_capacity(answer.headers.len());
    for h in answer.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| Http10Error::Malformed("an invalid header name"))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| Http10Error::Malformed("an invalid header value"))?;
        headers.append(name, value);
    }
    Ok(Some((status, headers, len)))
}

/// An answer's body, read off the socket as it is asked for.
struct Unframed {
    sock: TcpStream,
    /// Read and not yet handed on (after the head: what came with it).
    buf: BytesMut,
    /// Bytes of a `Content-Length` still to come; `None`: to the end of the connection.
    remaining: Option<u64>,
    idle_timeout: Duration,
    /// When the upstream has been silent too long, while the body is waiting for it.
    idle: Pin<Box<Sleep>>,
    /// `idle` was set since the last data.
    armed: bool,
    /// Ended or failed: nothing more.
    done: bool,
}

impl Unframed {
    /// Hands on what is in `buf`, no more than `remaining`.
    fn hand_on(&mut self) -> Bytes {
        if let Some(left) = self.remaining {
            let keep = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            self.buf.truncate(keep);
            self.remaining = Some(left - keep as u64);
        }
        self.buf.split().freeze()
    }

    fn fail(
        &mut self,
        kind: std::io::ErrorKind,
        what: String,
    ) -> Poll<Option<std::io::Result<Bytes>>> {
        self.done = true;
        Poll::Ready(Some(Err(std::io::Error::new(kind, what))))
    }
}

impl Stream for Unframed {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done || this.remaining == Some(0) {
                this.done = true;
                return Poll::Ready(None);
            }
            if !this.buf.is_empty() {
                let frame = this.hand_on();
                return Poll::Ready(Some(Ok(frame)));
            }
            match this.sock.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return this.fail(e.kind(), e.to_string()),
                Poll::Pending => {
                    if !this.armed {
                        this.armed = true;
                        let deadline = Instant::now() + this.idle_timeout;
                        this.idle.as_mut().reset(deadline);
                    }
                    if this.idle.as_mut().poll(cx).is_ready() {
                        let secs = this.idle_timeout.as_secs();
                        return this.fail(
                            std::io::ErrorKind::TimedOut,
                            format!("the upstream sent nothing for {secs} s"),
                        );
                    }
                    return Poll::Pending;
                }
            }
            // Taken from the shared allocation while enough of it is left, else a new one:
            // frames handed on keep theirs until written.
            if this.buf.capacity() < READ_SIZE / 4 {
                this.buf.reserve(READ_SIZE);
            }
            match this.sock.try_read_buf(&mut this.buf) {
                Ok(0) => {
                    if matches!(this.remaining, Some(left) if left > 0) {
                        return this.fail(
                            std::io::ErrorKind::UnexpectedEof,
                            "the upstream closed the connection before the end of the answer"
                                .into(),
                        );
                    }
                    this.done = true;
                    return Poll::Ready(None);
                }
                Ok(_) => this.armed = false,
                // Readiness was stale: cleared, polled again above.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return this.fail(e.kind(), e.to_string()),
            }
        }
    }
}
