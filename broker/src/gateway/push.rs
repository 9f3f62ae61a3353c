//! The push path: read a receive-pack request just far enough to see its command list
//! (at most [`MAX_COMMAND_LIST`](super::receive_pack::MAX_COMMAND_LIST) bytes), decide every ref update, and then either stream the
//! untouched rest to the upstream or answer git with a report-status refusal — in which case
//! nothing at all reaches the upstream.
//!
//! A gzip-encoded push body (`Content-Encoding: gzip`; git itself never compresses pushes,
//! other clients may) is decompressed as it streams and forwarded decompressed, without the
//! header: the command list must be read in clear, and forwarding one representation keeps
//! what was checked identical to what the upstream receives.

use std::io::Write as _;
use std::pin::Pin;
use std::time::Duration;

use axum::body::BodyDataStream;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use flate2::write::GzDecoder;
use futures_util::{Stream, StreamExt, stream};
use jit_proto::Claims;

use super::receive_pack::{
    CommandError, CommandList, CommandParser, RefRefusal, decide, refusal_report,
};

/// A request or response body on its way through the gateway.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// How long a refused push's remaining upload is read (and discarded) so the client sees
/// the answer rather than a broken pipe.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// Compressed bytes fed to the decoder at once: bounds the output of one step (~1 MiB).
const GUNZIP_STEP: usize = 1024;

/// Why a push request could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The command list is malformed or too large.
    #[error("malformed push request: {0}")]
    Commands(#[from] CommandError),
    /// The body could not be read or decompressed.
    #[error("cannot read the push request body: {0}")]
    Body(#[source] std::io::Error),
    /// A `Content-Encoding` other than gzip.
    #[error("unsupported Content-Encoding {0:?} (only gzip is accepted)")]
    Encoding(String),
}

impl IntoResponse for PushError {
    fn into_response(self) -> Response {
        let status = match &self {
            PushError::Commands(CommandError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            PushError::Encoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        super::text(status, &format!("git-jit: {self}"))
    }
}

/// The outcome of inspecting a push.
pub enum Inspected {
    /// Every update is allowed: forward `body` (the command list again, then the rest).
    Forward {
        /// The parsed command list.
        list: CommandList,
        /// The whole request body to forward.
        body: BodyStream,
        /// Whether `body` was gzip-decoded (drop `Content-Encoding` and `Content-Length`).
        decoded: bool,
    },
    /// At least one update is refused: send `answer`, forward nothing.
    Refused {
        /// The parsed command list.
        list: CommandList,
        /// The refused updates.
        refused: Vec<RefRefusal>,
        /// The answer for git.
        answer: Response,
    },
}

/// A body as the gateway's stream type.
pub fn passthrough(body: BodyDataStream) -> BodyStream {
    Box::pin(body.map(|r| r.map_err(std::io::Error::other)))
}

/// Reads the command list of a receive-pack request and decides it against `claims.refs`.
pub async fn inspect(
    headers: &HeaderMap,
    body: BodyDataStream,
    claims: &Claims,
) -> Result<Inspected, PushError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let (mut body, decoded) = match encoding.as_deref() {
        None | Some("identity") => (passthrough(body), false),
        Some("gzip" | "x-gzip") => (gunzip(passthrough(body)), true),
        Some(other) => return Err(PushError::Encoding(other.to_owned())),
    };
    let mut head = BytesMut::new();
    let mut parser = CommandParser::new();
    loop {
        match body.next().await {
            Some(chunk) => {
                head.extend_from_slice(&chunk.map_err(PushError::Body)?);
                if parser.advance(&head)?.is_some() {
                    break;
                }
            }
            None => {
                parser.advance(&head)?;
                break;
            }
        }
    }
    let list = parser.finish()?;
    let refused = decide(&list.commands, &claims.refs);
    if refused.is_empty() {
        let head = head.freeze();
        let body = Box::pin(stream::once(async move { Ok(head) }).chain(body));
        return Ok(Inspected::Forward {
            list,
            body,
            decoded,
        });
    }
    let _ = tokio::time::timeout(DRAIN_LIMIT, async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    let answer = match refusal_report(&list, &refused) {
        Some(report) => (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    "application/x-git-receive-pack-result",
                ),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            report,
        )
            .into_response(),
        None => {
            let lines: Vec<String> = refused
                .iter()
                .map(|r| format!("{}: {}", r.refname, r.reason))
                .collect();
            super::text(StatusCode::FORBIDDEN, &lines.join("\n"))
        }
    };
    Ok(Inspected::Refused {
        list,
        refused,
        answer,
    })
}

/// The audit form of a push's updates: `[{ref, kind, old, new}]`.
pub fn updates_json(list: &CommandList) -> serde_json::Value {
    list.commands
        .iter()
        .map(|c| {
            serde_json::json!({
                "ref": c.refname,
                "kind": c.kind().as_str(),
                "old": c.old,
                "new": c.new,
            })
        })
        .collect()
}

struct Gunzip {
    input: BodyStream,
    pending: Bytes,
    decoder: GzDecoder<Vec<u8>>,
    done: bool,
}

/// Decompresses a gzip stream as it flows, never holding more than one step's output.
pub fn gunzip(input: BodyStream) -> BodyStream {
    let state = Gunzip {
        input,
        pending: Bytes::new(),
        decoder: GzDecoder::new(Vec::new()),
        done: false,
    };
    Box::pin(stream::try_unfold(state, |mut s| async move {
        loop {
            if s.done {
                return Ok(None);
            }
            if s.pending.is_empty() {
                match s.input.next().await {
                    Some(chunk) => s.pending = chunk?,
                    None => {
                        s.decoder.try_finish()?;
                        s.done = true;
                    }
                }
            } else {
                let step = s.pending.split_to(s.pending.len().min(GUNZIP_STEP));
                s.decoder.write_all(&step)?;
            }
            let out = std::mem::take(s.decoder.get_mut());
            if !out.is_empty() {
                return Ok(Some((Bytes::from(out), s)));
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    async fn collect(s: BodyStream) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    fn chunks(data: Vec<u8>, size: usize) -> BodyStream {
        let parts: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(size)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(stream::iter(parts))
    }

    #[tokio::test]
    async fn gunzip_streams_and_bounds_each_step() {
        let plain: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(&plain).expect("gzip");
        let gz = enc.finish().expect("gzip");
        let mut s = gunzip(chunks(gz, 7000));
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            let c = c.expect("inflate");
            assert!(c.len() <= 2 * 1024 * 1024, "step of {} bytes", c.len());
            out.extend_from_slice(&c);
        }
        assert_eq!(out, plain);
    }

    #[tokio::test]
    async fn gunzip_refuses_garbage_and_truncation() {
        assert!(
            collect(gunzip(chunks(b"not gzip at all".to_vec(), 4)))
                .await
                .is_err()
        );
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(b"0000").expect("gzip");
        let mut gz = enc.finish().expect("gzip");
        gz.truncate(gz.len() - 3);
        assert!(collect(gunzip(chunks(gz, 5))).await.is_err());
    }
}
