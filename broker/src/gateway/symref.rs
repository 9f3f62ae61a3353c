//! Symbolic refs on the upstream. `git receive-pack` writes *through* a symbolic ref: a push to
//! `refs/heads/hotfix/alias`, a symref pointing at `refs/heads/main`, moves (or deletes)
//! `main`. A ref-limited push is therefore decided on the ref that will really change: before
//! forwarding it, the gateway asks the upstream which of the pushed names are symrefs, with a
//! protocol v2 `ls-refs` request carrying `symrefs` and one `ref-prefix` per pushed name
//! (gitprotocol-v2(5)); the answer names each symref's final target (git resolves chains). A v0
//! advertisement would not do: it reports no symref but `HEAD`.
//!
//! The question goes through the same upstream, with the same credential, as the push itself
//! (a `POST git-upload-pack`), so it sees the repository the push would change. When the
//! upstream cannot answer, the push is refused: the gateway never guesses.
//!
//! What `ls-refs` cannot show: a *dangling* symref (one whose target does not exist yet) is
//! not listed, and a push creating it creates its target. Only someone administering the
//! upstream can make such a symref; `docs/gateway.md` says so.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use bytes::{Buf, BytesMut};
use futures_util::StreamExt;

use super::body::BodyStream;
use super::pktline::{self, Packet, PktError};
use super::proxy::Forward;
use super::upstream::{Gateway, Upstream};
use super::{Endpoint, GitService};

/// The most bytes of an `ls-refs` answer the gateway reads. `ref-prefix` matches by prefix,
/// so the answer may list more refs than were pushed; an answer larger than this fails the
/// lookup (and so refuses the push) rather than holding memory without bound.
pub const MAX_LS_REFS_ANSWER: usize = 32 * 1024 * 1024;

/// Why the upstream could not say which pushed refs are symbolic.
#[derive(Debug, thiserror::Error)]
pub enum SymrefError {
    /// The upstream answered with an error status (its message is in the broker's log).
    #[error("the upstream answered HTTP {0}")]
    Status(u16),
    /// The answer is not an `ls-refs` answer (an upstream without protocol v2, or garbage).
    #[error("the upstream's answer is not a protocol v2 ls-refs answer: {0}")]
    Malformed(String),
    /// The upstream sent an `ERR` packet.
    #[error("the upstream refused the ls-refs request: {0}")]
    Remote(String),
    /// The answer could not be read.
    #[error("cannot read the upstream's answer: {0}")]
    Read(#[source] std::io::Error),
    /// The answer exceeds [`MAX_LS_REFS_ANSWER`].
    #[error("the upstream's ls-refs answer exceeds {MAX_LS_REFS_ANSWER} bytes")]
    TooLarge,
}

impl From<PktError> for SymrefError {
    fn from(e: PktError) -> Self {
        SymrefError::Malformed(e.to_string())
    }
}

/// The body of a protocol v2 `ls-refs` request for `names` with their symref targets.
/// `sha256`: the repository's object format (git refuses a request whose format differs).
pub fn ls_refs_request<'a>(names: impl IntoIterator<Item = &'a str>, sha256: bool) -> Vec<u8> {
    let mut out = Vec::new();
    pktline::write_data(&mut out, b"command=ls-refs\n");
    pktline::write_data(&mut out, b"agent=git-jit\n");
    if sha256 {
        pktline::write_data(&mut out, b"object-format=sha256\n");
    }
    out.extend_from_slice(b"0001");
    pktline::write_data(&mut out, b"symrefs\n");
    for name in names {
        pktline::write_data(&mut out, format!("ref-prefix {name}\n").as_bytes());
    }
    pktline::write_flush(&mut out);
    out
}

/// Incremental reader of an `ls-refs` answer: keeps only the symrefs among `wanted`.
#[derive(Debug)]
pub struct LsRefsAnswer<'a> {
    wanted: &'a BTreeSet<&'a str>,
    buf: BytesMut,
    read: usize,
    targets: BTreeMap<String, String>,
    done: bool,
}

impl<'a> LsRefsAnswer<'a> {
    /// A reader looking for the names in `wanted`.
    pub fn new(wanted: &'a BTreeSet<&'a str>) -> Self {
        Self {
            wanted,
            buf: BytesMut::new(),
            read: 0,
            targets: BTreeMap::new(),
            done: false,
        }
    }

    /// Feeds the next bytes of the answer; `Ok(true)` once its closing flush was seen.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<bool, SymrefError> {
        self.read += chunk.len();
        if self.read > MAX_LS_REFS_ANSWER {
            return Err(SymrefError::TooLarge);
        }
        self.buf.extend_from_slice(chunk);
        while !self.done {
            let Some((packet, used)) = pktline::parse(&self.buf)? else {
                break;
            };
            match packet {
                Packet::Flush => self.done = true,
                Packet::Data(_) => {
                    let line = packet.line().unwrap_or_default();
                    if let Some((name, target)) = symref_line(line)?
                        && self.wanted.contains(name)
                    {
                        self.targets.insert(name.to_owned(), target.to_owned());
                    }
                }
            }
            self.buf.advance(used);
        }
        Ok(self.done)
    }

    /// The symrefs found: pushed name → the ref it finally points at.
    pub fn finish(self) -> Result<BTreeMap<String, String>, SymrefError> {
        if !self.done {
            return Err(SymrefError::Malformed(
                "the answer ends before its flush".into(),
            ));
        }
        Ok(self.targets)
    }
}

/// One answer line: `<oid> SP <name> *(SP <attribute>)`. Returns the name and its
/// `symref-target:` when it has one.
fn symref_line(line: &[u8]) -> Result<Option<(&str, &str)>, SymrefError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| SymrefError::Malformed("a line is not text".into()))?;
    if let Some(msg) = text.strip_prefix("ERR ") {
        let shown: String = msg.chars().take(200).filter(|c| !c.is_control()).collect();
        return Err(SymrefError::Remote(shown));
    }
    let mut parts = text.split(' ');
    let (Some(oid), Some(name)) = (parts.next(), parts.next()) else {
        return Err(SymrefError::Malformed("a line is not '<oid> <ref>'".into()));
    };
    // "unborn" stands in for the oid of an unborn HEAD; anything else must be an object id.
    let oid_ok = oid == "unborn"
        || ((oid.len() == 40 || oid.len() == 64) && oid.bytes().all(|b| b.is_ascii_hexdigit()));
    if !oid_ok || name.is_empty() {
        return Err(SymrefError::Malformed("a line is not '<oid> <ref>'".into()));
    }
    let target = parts.find_map(|a| a.strip_prefix("symref-target:"));
    Ok(target.map(|t| (name, t)))
}

/// Asks `upstream` which of `names` (refs a push to `push.repo` updates) are symbolic refs,
/// and what they point at. `sha256`: the push's object ids are SHA-256.
pub async fn lookup(
    gateway: &Gateway,
    upstream: &Upstream,
    push: &Forward,
    names: &BTreeSet<&str>,
    sha256: bool,
) -> Result<BTreeMap<String, String>, SymrefError> {
    let request = ls_refs_request(names.iter().copied(), sha256);
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-git-upload-pack-request"),
    );
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/x-git-upload-pack-result"),
    );
    let ask = Forward {
        repo: push.repo.clone(),
        endpoint: Endpoint::Rpc(GitService::UploadPack),
        content_encoding: None,
        content_length: Some(request.len() as u64),
        git_protocol: Some(HeaderValue::from_static("version=2")),
        headers,
        remote_user: push.remote_user.clone(),
        client: push.client,
    };
    let body: BodyStream = Box::pin(futures_util::stream::once(async move {
        Ok(bytes::Bytes::from(request))
    }));
    let answer = gateway.forward(upstream, ask, body).await;
    if answer.status() != StatusCode::OK {
        tracing::warn!(repo = %push.repo, status = %answer.status(), "ls-refs on the upstream failed");
        return Err(SymrefError::Status(answer.status().as_u16()));
    }
    let mut stream = answer.into_body().into_data_stream();
    let mut reader = LsRefsAnswer::new(names);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| SymrefError::Read(std::io::Error::other(e)))?;
        if reader.feed(&chunk)? {
            break;
        }
    }
    reader.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "199d3166ea1dd075fac466e9d315e610cd8725af";

    fn answer(lines: &[&str]) -> Vec<u8> {
        let mut v = Vec::new();
        for l in lines {
            pktline::write_data(&mut v, format!("{l}\n").as_bytes());
        }
        pktline::write_flush(&mut v);
        v
    }

    #[test]
    fn request_is_a_v2_ls_refs_with_symrefs_and_prefixes() {
        let body = ls_refs_request(["refs/heads/a", "refs/tags/v1"], false);
        assert_eq!(
            String::from_utf8_lossy(&body),
            "0014command=ls-refs\n0012agent=git-jit\n0001000csymrefs\n\
             001cref-prefix refs/heads/a\n001cref-prefix refs/tags/v1\n0000"
        );
        assert!(
            String::from_utf8_lossy(&ls_refs_request([], true)).contains("object-format=sha256")
        );
    }

    #[test]
    fn answer_keeps_only_wanted_symrefs_whatever_the_chunking() {
        let wanted: BTreeSet<&str> = ["refs/heads/hotfix/alias", "refs/heads/hotfix/plain"]
            .into_iter()
            .collect();
        let body = answer(&[
            &format!("{OID} refs/heads/hotfix/alias symref-target:refs/heads/main"),
            &format!("{OID} refs/heads/hotfix/alias2 symref-target:refs/heads/x"),
            &format!("{OID} refs/heads/hotfix/plain"),
            &format!("{OID} refs/tags/v1 peeled:{OID}"),
        ]);
        for size in [1, 3, 7, body.len()] {
            let mut r = LsRefsAnswer::new(&wanted);
            let mut done = false;
            for c in body.chunks(size) {
                done = r.feed(c).expect("valid");
            }
            assert!(done);
            let got = r.finish().expect("complete");
            assert_eq!(
                got.into_iter().collect::<Vec<_>>(),
                [(
                    "refs/heads/hotfix/alias".to_owned(),
                    "refs/heads/main".to_owned()
                )]
            );
        }
    }

    #[test]
    fn bad_answers_fail_the_lookup() {
        let wanted = BTreeSet::new();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (answer(&["ERR access denied"]), "refused"),
            (answer(&["not an answer"]), "not '<oid> <ref>'"),
            (
                b"001e# service=git-upload-pack\n0000".to_vec(),
                "not '<oid>",
            ),
            (b"zzzz".to_vec(), "hex"),
        ];
        for (body, needle) in cases {
            let mut r = LsRefsAnswer::new(&wanted);
            let err = r.feed(&body).and_then(|_| r.finish().map(|_| true));
            let err = err.expect_err(needle).to_string();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
        let mut r = LsRefsAnswer::new(&wanted);
        assert!(!r.feed(&answer(&[])[..2]).expect("partial"));
        assert!(r.finish().is_err(), "an answer without its flush");
        let mut r = LsRefsAnswer::new(&wanted);
        let line = answer(&[&format!("{OID} refs/heads/{}", "x".repeat(60_000))]);
        let mut err = None;
        for _ in 0..(MAX_LS_REFS_ANSWER / line.len() + 2) {
            if let Err(e) = r.feed(&line[..line.len() - 4]) {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(SymrefError::TooLarge)), "{err:?}");
    }
}
