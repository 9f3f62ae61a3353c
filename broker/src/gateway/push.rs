//! The push path: read a receive-pack request just far enough to see its command list
//! (at most [`MAX_COMMAND_LIST`](super::receive_pack::MAX_COMMAND_LIST) bytes), decide every ref update, and then either stream the
//! untouched rest to the upstream or answer git with a report-status refusal — in which case
//! nothing at all reaches the upstream.
//!
//! Under a ref-limited grant the decision is on the refs that will really change: a pushed
//! name that is a symbolic ref on the upstream is decided on its target too ([`super::symref`]).
//!
//! The push's audit record is bounded whatever the push: beyond [`AUDIT_LISTED_UPDATES`]
//! updates or [`AUDIT_LISTED_REF_BYTES`] of ref names, it lists the first ones and
//! summarises the whole list by counts and a SHA-256 digest ([`updates_json`],
//! [`denial_text`]).
//!
//! A gzip-encoded push body (`Content-Encoding: gzip`; git itself never compresses pushes,
//! other clients may) is decompressed as it streams and forwarded decompressed, without the
//! header: the command list must be read in clear, and forwarding one representation keeps
//! what was checked identical to what the upstream receives.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::time::Duration;

use axum::body::BodyDataStream;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use flate2::write::GzDecoder;
use futures_util::{StreamExt, stream};
use jit_proto::{Claims, RefPattern};
use sha2::{Digest as _, Sha256};

use super::body::BodyStream;
use super::proxy::Forward;
use super::receive_pack::{
    Command, CommandError, CommandList, CommandParser, RefRefusal, decide, decide_targets,
    refusal_report,
};
use super::symref;
use super::upstream::{Gateway, Upstream};
use crate::metrics::Metrics;

/// How long a refused push's remaining upload is read (and discarded) so the client sees
/// the answer rather than a broken pipe.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// Compressed bytes fed to the decoder at once: bounds the output of one step (~1 MiB).
const GUNZIP_STEP: usize = 1024;
/// Matcher work (pattern bytes × ref words, summed) above which the decision leaves the
/// async runtime for a blocking thread, so no push holds a request thread for long.
const INLINE_DECISION_WORK: usize = 64 * 1024;

/// Ref updates an audit event lists one by one; a longer push is summarised.
pub const AUDIT_LISTED_UPDATES: usize = 20;
/// Bytes of ref names an audit event lists one by one; a longer push is summarised.
pub const AUDIT_LISTED_REF_BYTES: usize = 4096;
/// Bytes of refusal reasons an audit event's `denial` repeats; the rest is counted.
pub const AUDIT_DENIAL_BYTES: usize = 2048;

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
            PushError::Commands(CommandError::TooLarge | CommandError::TooManyCommands) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
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

/// The upstream a push will go to, asked which pushed names are symbolic refs.
#[derive(Clone, Copy)]
pub struct PushTarget<'a> {
    /// The upstream table.
    pub gateway: &'a Gateway,
    /// The push's upstream.
    pub upstream: &'a Upstream,
    /// What is forwarded of the push (repository, subject, client).
    pub forward: &'a Forward,
}

/// Reads the command list of a receive-pack request and decides it against `claims.refs`,
/// looking up symbolic refs on `target` when the grant is ref-limited.
pub async fn inspect(
    headers: &HeaderMap,
    body: BodyDataStream,
    claims: &Claims,
    target: PushTarget<'_>,
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
    let refused = check(&list, &claims.refs, target).await;
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

/// Decides the ref names, then — for a ref-limited grant whose names all passed — the refs
/// they really write on the upstream. When the upstream cannot say, every update is refused.
async fn check(
    list: &CommandList,
    allowed: &[RefPattern],
    target: PushTarget<'_>,
) -> Vec<RefRefusal> {
    let refused = decide_off_runtime(&list.commands, allowed).await;
    if !refused.is_empty() || allowed.is_empty() || list.commands.is_empty() {
        return refused;
    }
    let names: BTreeSet<&str> = list.commands.iter().map(|c| c.refname.as_str()).collect();
    let sha256 = list.commands.iter().any(|c| c.old.len() == 64);
    let PushTarget {
        gateway,
        upstream,
        forward,
    } = target;
    match symref::lookup(gateway, upstream, forward, &names, sha256).await {
        Ok(targets) => decide_targets(&list.commands, &targets, allowed),
        Err(e) => {
            tracing::warn!(repo = %forward.repo, error = %e, "cannot look up symbolic refs; push refused");
            list.commands
                .iter()
                .map(|c| RefRefusal {
                    refname: c.refname.clone(),
                    reason: format!(
                        "git-jit: cannot learn from the upstream whether the pushed refs are \
                         symbolic refs ({e}); a ref-limited push is refused until it can"
                    ),
                })
                .collect()
        }
    }
}

/// [`decide`], on a blocking thread when the matching work is large.
async fn decide_off_runtime(commands: &[Command], allowed: &[RefPattern]) -> Vec<RefRefusal> {
    let pattern_bytes: usize = allowed.iter().map(|p| p.as_str().len()).sum();
    let ref_words: usize = commands.iter().map(|c| c.refname.len() / 64 + 1).sum();
    if pattern_bytes.saturating_mul(ref_words) <= INLINE_DECISION_WORK {
        return decide(commands, allowed);
    }
    let (commands, allowed) = (commands.to_vec(), allowed.to_vec());
    let all = commands.clone();
    match tokio::task::spawn_blocking(move || decide(&commands, &allowed)).await {
        Ok(refused) => refused,
        Err(e) => {
            tracing::error!(error = %e, "ref decision failed");
            all.iter()
                .map(|c| RefRefusal {
                    refname: c.refname.clone(),
                    reason: "git-jit: internal error while checking the ref".into(),
                })
                .collect()
        }
    }
}

fn update_json(c: &Command) -> serde_json::Value {
    serde_json::json!({
        "ref": c.refname,
        "kind": c.kind().as_str(),
        "old": c.old,
        "new": c.new,
    })
}

/// The audit form of a push's updates: `[{ref, kind, old, new}]`, or — beyond
/// [`AUDIT_LISTED_UPDATES`] updates or [`AUDIT_LISTED_REF_BYTES`] of ref names — a summary
/// `{count, create, update, delete, sha256, listed}`: `listed` holds the first updates that
/// fit, `sha256` is the hex SHA-256 of every command line `old SP new SP ref LF` in push
/// order (what the client sent, so the whole list can be checked against a client's copy).
/// Summaries are counted in `metrics`.
pub fn updates_json(list: &CommandList, metrics: &Metrics) -> serde_json::Value {
    let ref_bytes: usize = list.commands.iter().map(|c| c.refname.len()).sum();
    if list.commands.len() <= AUDIT_LISTED_UPDATES && ref_bytes <= AUDIT_LISTED_REF_BYTES {
        return list.commands.iter().map(update_json).collect();
    }
    metrics.audit_summarised("updates");
    let mut digest = Sha256::new();
    let mut counts = [0usize; 3];
    for c in &list.commands {
        digest.update(format!("{} {} {}\n", c.old, c.new, c.refname).as_bytes());
        counts[match c.kind().as_str() {
            "create" => 0,
            "update" => 1,
            _ => 2,
        }] += 1;
    }
    let mut listed = Vec::new();
    let mut budget = AUDIT_LISTED_REF_BYTES;
    for c in list.commands.iter().take(AUDIT_LISTED_UPDATES) {
        if c.refname.len() > budget {
            break;
        }
        budget -= c.refname.len();
        listed.push(update_json(c));
    }
    serde_json::json!({
        "count": list.commands.len(),
        "create": counts[0],
        "update": counts[1],
        "delete": counts[2],
        "sha256": hex::encode(digest.finalize()),
        "listed": listed,
    })
}

/// The audit `denial` of a refused push: `ref: reason` joined by `; `, cut after
/// [`AUDIT_DENIAL_BYTES`] with the number of refusals left out (counted in `metrics`).
pub fn denial_text(refused: &[RefRefusal], metrics: &Metrics) -> String {
    let mut out = String::new();
    for (i, r) in refused.iter().enumerate() {
        let item = format!("{}: {}", r.refname, r.reason);
        if out.len() + item.len() > AUDIT_DENIAL_BYTES {
            metrics.audit_summarised("denial");
            let rest = refused.len() - i;
            if !out.is_empty() {
                out.push_str("; ");
            }
            out.push_str(&format!(
                "… and {rest} more refused ref updates ({} in all)",
                refused.len()
            ));
            return out;
        }
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&item);
    }
    out
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
