//! Admin API bodies and query strings (`/v1/grants`, `/v1/revoke`, `/v1/audit`), shared by
//! the broker and `git jit admin`. Query parameters keep their raw text where the broker's
//! answer to a bad value must name it; typed accessors do the checking.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::refs::RefPattern;
use crate::scope::{RepoPath, Scope, ScopeError};

/// Grants per page when `limit` is absent.
pub const DEFAULT_GRANT_PAGE: usize = 100;
/// Largest page of grants the broker serves.
pub const MAX_GRANT_PAGE: usize = 1000;
/// Audit events per page when `limit` is absent.
pub const DEFAULT_AUDIT_PAGE: usize = 1000;
/// Largest page of audit events the broker serves.
pub const MAX_AUDIT_PAGE: usize = 10_000;
/// The response header naming the `after_seq` of the next audit page, when there is one and
/// one sequence number can say where it starts (a store holding one replica's chain).
pub const NEXT_AFTER_SEQ_HEADER: &str = "x-next-after-seq";
/// The response header carrying the [`AuditCursor`] of the next audit page, when there is one.
pub const NEXT_AUDIT_CURSOR_HEADER: &str = "x-next-cursor";

/// Why an admin query parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminQueryError {
    /// `repo` is not a repository path.
    #[error("repo: {0}")]
    Repo(#[from] ScopeError),
    /// `format` is neither `jsonl` nor `csv`.
    #[error("format {0:?}: use jsonl or csv")]
    Format(String),
    /// `cursor` is not a cursor the broker gave.
    #[error("cursor: {0}")]
    Cursor(&'static str),
}

/// `GET /v1/grants?subject=&repo=&role=&issuer=&cursor=&limit=`; absent filters match all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsQuery {
    /// Only this verified subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Only this repository path (checked by [`GrantsQuery::repo_path`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Only this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Only this trusted issuer's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Where the page starts: the `next_cursor` of the page before (absent: the oldest).
    /// Opaque; bound to the filters it was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size (see [`GrantsQuery::page_size`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl GrantsQuery {
    /// The `repo` filter as a repository path.
    pub fn repo_path(&self) -> Result<Option<RepoPath>, AdminQueryError> {
        Ok(self.repo.as_deref().map(RepoPath::parse).transpose()?)
    }

    /// The page size: `limit`, or [`DEFAULT_GRANT_PAGE`], within 1 to [`MAX_GRANT_PAGE`].
    pub fn page_size(&self) -> usize {
        self.limit
            .unwrap_or(DEFAULT_GRANT_PAGE)
            .clamp(1, MAX_GRANT_PAGE)
    }
}

/// The audit trail's formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AuditFormat {
    /// One JSON object per line (`jsonl`, the default).
    #[default]
    JsonLines,
    /// CSV with a header line (`csv`).
    Csv,
}

impl AuditFormat {
    /// The `format` parameter's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JsonLines => "jsonl",
            Self::Csv => "csv",
        }
    }
}

impl fmt::Display for AuditFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditFormat {
    type Err = AdminQueryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jsonl" => Ok(Self::JsonLines),
            "csv" => Ok(Self::Csv),
            other => Err(AdminQueryError::Format(other.to_owned())),
        }
    }
}

/// `GET /v1/audit?from=&to=&subject=&repo=&event=&after_seq=&limit=&format=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Earliest event time, inclusive: milliseconds since the epoch or RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Latest event time, inclusive: milliseconds since the epoch or RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Only this subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Only this repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Only this event kind (exact), or kind prefix ending in `.` (`grant.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Only events after this chain position (paging a store that holds one replica's
    /// chain; `cursor` pages any store).
    #[serde(default)]
    pub after_seq: u64,
    /// Where the page starts: the [`NEXT_AUDIT_CURSOR_HEADER`] of the previous page, as
    /// given (see [`AuditParams::cursor`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Page size (see [`AuditParams::page_size`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// `jsonl` (default) or `csv` (see [`AuditParams::format`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl AuditParams {
    /// The requested format.
    pub fn format(&self) -> Result<AuditFormat, AdminQueryError> {
        self.format
            .as_deref()
            .map_or(Ok(AuditFormat::default()), str::parse)
    }

    /// The cursor the page starts from, if one was given.
    pub fn cursor(&self) -> Result<Option<AuditCursor>, AdminQueryError> {
        self.cursor.as_deref().map(AuditCursor::decode).transpose()
    }

    /// The page size: `limit`, or [`DEFAULT_AUDIT_PAGE`], within 1 to [`MAX_AUDIT_PAGE`].
    pub fn page_size(&self) -> usize {
        self.limit
            .unwrap_or(DEFAULT_AUDIT_PAGE)
            .clamp(1, MAX_AUDIT_PAGE)
    }
}

/// Where a page of the audit trail starts: right after the last event read, as its *place*
/// in the merged order of every replica's chain.
///
/// The store keeps one chain per replica, each in seq order, and gives every event a place
/// `(t, chain, seq)`: `t` is the event's time, or the latest time of an earlier event of its
/// chain when that is later (so `t` never goes back along a chain), then the chain's name,
/// then the seq. Pages are the events in that order, so the last one read says where every
/// chain resumes, however many chains there are: the cursor's size does not grow with them.
///
/// On the wire it is opaque: `a2.` and base64url of `<t>.<seq>.<chain>` (the chain written
/// before replica chains has the empty name; others are replica names, `[A-Za-z0-9._-]`, at
/// most 64). A cursor of the format before (`a1.`, one position per chain) is refused with
/// what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuditCursor {
    t: i64,
    chain: String,
    seq: u64,
}

/// Longest audit cursor text accepted (the longest one the broker makes is 146).
pub const MAX_AUDIT_CURSOR_LEN: usize = 256;

impl AuditCursor {
    /// The cursor right after the event of `chain` at `seq`, placed at `t`.
    pub fn at(t: i64, chain: &str, seq: u64) -> Self {
        Self {
            t,
            chain: chain.to_owned(),
            seq,
        }
    }

    /// The place's time (ms): the event's own, or a later one of its chain before it.
    pub fn t(&self) -> i64 {
        self.t
    }

    /// The chain of the last event read.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// The seq of the last event read, in its chain.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The opaque text form.
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        let raw = format!("{}.{}.{}", self.t, self.seq, self.chain);
        format!(
            "a2.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        )
    }

    /// A cursor in its text form; refused with the reason when it is not one.
    pub fn decode(text: &str) -> Result<Self, AdminQueryError> {
        use base64::Engine as _;
        let bad = AdminQueryError::Cursor;
        if text.len() > MAX_AUDIT_CURSOR_LEN {
            return Err(bad("too long"));
        }
        if text.starts_with("a1.") {
            return Err(bad(
                "made by an older broker (one position per replica chain), which this one \
                 no longer reads: start again without a cursor, with from= the time of the \
                 last event you have",
            ));
        }
        let body = text.strip_prefix("a2.").ok_or(bad(
            "not an audit cursor (give the x-next-cursor value as is)",
        ))?;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| bad("not base64url"))?;
        let raw = String::from_utf8(raw).map_err(|_| bad("not text"))?;
        let mut parts = raw.splitn(3, '.');
        let (Some(t), Some(seq), Some(chain)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("not a place (time, seq and chain)"));
        };
        let t: i64 = t.parse().map_err(|_| bad("a time is not a number"))?;
        let seq: u64 = seq.parse().map_err(|_| bad("a seq is not a number"))?;
        let name_ok = chain.len() <= 64
            && chain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err(bad("a chain name is not a replica name"));
        }
        Ok(Self::at(t, chain, seq))
    }
}

/// One live grant as the admin API shows it (never the token, only its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantInfo {
    /// The token id.
    pub jti: String,
    /// The verified identity.
    pub sub: String,
    /// The trusted issuer's name.
    pub idp: String,
    /// The role.
    pub role: String,
    /// The repository and actions.
    pub scope: Scope,
    /// Ref patterns a write is narrowed to (empty: all refs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs: Vec<RefPattern>,
    /// The requester's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Issued at, milliseconds since the epoch.
    #[serde(deserialize_with = "crate::time::de_epoch_ms")]
    pub issued_ms: i64,
    /// Expires at, seconds since the epoch.
    #[serde(deserialize_with = "crate::time::de_numeric_date")]
    pub exp: i64,
    /// The approval request it was issued for, when a person approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Issued under a break-glass role: to be reviewed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub break_glass: bool,
}

/// A page of live grants. The broker bounds the work of one page, so a page may hold fewer
/// grants than asked (even none) and still have a `next_cursor`: page on until there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantPage {
    /// The grants on this page, oldest first (by issue time, then jti).
    pub grants: Vec<GrantInfo>,
    /// The `cursor` of the next page, when the listing may hold more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// What a revocation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevokeBy {
    /// One token (`value` = its jti).
    Jti,
    /// One identity (`value` = its subject).
    Subject,
    /// One repository (`value` = its path).
    Repo,
    /// One role (`value` = its name).
    Role,
    /// One trusted issuer (`value` = its configured name).
    Issuer,
    /// Everything (`value` must be absent).
    All,
}

/// `POST /v1/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// What to revoke.
    pub by: RevokeBy,
    /// Which one (absent for `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Why: required, recorded in the audit trail.
    pub reason: String,
}

/// The answer to a revocation, given as soon as it is in force on every replica (before any
/// record is tidied): what can be said in O(1), whatever the number of grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeResponse {
    /// What was revoked, e.g. `subject alice@example.com`.
    pub target: String,
    /// At most this many live grants were ended: exact for one token (1, or 0 if it was not
    /// live); for a bulk target the number of grants indexed under it, which may still count
    /// some that had already expired or been revoked.
    pub at_most: u64,
    /// Whether deleting the ended grants' records is left to the broker's background tidy-up
    /// (they are refused already).
    pub tidy_pending: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testrng::Rng;

    #[test]
    fn query_strings_are_the_wire_names() {
        let q = GrantsQuery {
            subject: Some("alice@example.com".into()),
            repo: Some("acme/api".into()),
            cursor: Some("YzEu".into()),
            limit: Some(100),
            ..GrantsQuery::default()
        };
        assert_eq!(
            serde_urlencoded::to_string(&q).expect("encodes"),
            "subject=alice%40example.com&repo=acme%2Fapi&cursor=YzEu&limit=100"
        );
        let p = AuditParams {
            from: Some("1700000000000".into()),
            event: Some("grant.".into()),
            after_seq: 7,
            limit: Some(10),
            format: Some("csv".into()),
            ..AuditParams::default()
        };
        assert_eq!(
            serde_urlencoded::to_string(&p).expect("encodes"),
            "from=1700000000000&event=grant.&after_seq=7&limit=10&format=csv"
        );
        let empty: GrantsQuery = serde_urlencoded::from_str("").expect("all optional");
        assert_eq!(empty, GrantsQuery::default());
        assert_eq!(empty.page_size(), DEFAULT_GRANT_PAGE);
        let empty: AuditParams = serde_urlencoded::from_str("").expect("all optional");
        assert_eq!(empty.format(), Ok(AuditFormat::JsonLines));
        assert_eq!(empty.page_size(), DEFAULT_AUDIT_PAGE);
    }

    #[test]
    fn audit_cursor_round_trips_and_refuses_forgeries() {
        let longest = "r".repeat(64);
        for c in [
            AuditCursor::at(1_700_000_000_000, "broker-a", 7),
            AuditCursor::at(-5, "", 40),
            AuditCursor::at(i64::MAX, "b.2_x", u64::MAX),
            AuditCursor::at(i64::MIN, &longest, 0),
        ] {
            let text = c.encode();
            assert!(text.starts_with("a2."), "{text}");
            assert!(text.len() <= MAX_AUDIT_CURSOR_LEN, "{}", text.len());
            assert_eq!(AuditCursor::decode(&text), Ok(c));
        }
        let b64 = |s: &str| {
            use base64::Engine as _;
            format!(
                "a2.{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
            )
        };
        let refused = |t: &str| AuditCursor::decode(t).expect_err(t).to_string();
        assert!(refused("41").contains("not an audit cursor"));
        assert!(refused("a2.!!").contains("not base64url"));
        assert!(refused(&b64("12.3")).contains("not a place"));
        assert!(refused(&b64("x.3.a")).contains("time is not a number"));
        assert!(refused(&b64("1.-3.a")).contains("seq is not a number"));
        assert!(refused(&b64("1.3.{audit}")).contains("not a replica name"));
        assert!(refused(&b64(&format!("1.3.{}", "a".repeat(65)))).contains("not a replica name"));
        // The format before, one position per chain: refused, saying what to do instead.
        let old = "a1.cjE9Mztycj0x";
        assert!(refused(old).contains("start again without a cursor, with from="));
        // At the length bound and one past it.
        let at = format!("a2.{}", "A".repeat(MAX_AUDIT_CURSOR_LEN - 3));
        assert!(!refused(&at).contains("too long"));
        assert!(refused(&format!("{at}A")).contains("too long"));
        let p: AuditParams = serde_urlencoded::from_str("cursor=zz").expect("raw text");
        assert!(p.cursor().is_err());
    }

    /// The stable twin of the `audit_cursor` fuzz target: pseudo-random text, and base64url
    /// of pseudo-random places, is refused or read as a place that encodes and reads back.
    #[test]
    fn audit_cursor_pseudo_random_text_never_panics_and_round_trips() {
        use base64::Engine as _;
        let mut rng = Rng::new(0xa2_c0_50);
        const TEXT: &str = "a2.-_09.xyzAZ=;{}é";
        let mut read = 0;
        for _ in 0..5000 {
            let text = if rng.one_in(2) {
                rng.string(TEXT, 0, 40)
            } else {
                let raw = format!(
                    "{}.{}.{}",
                    rng.string("0123456789-+x", 0, 21),
                    rng.string("0123456789-", 0, 21),
                    rng.string("ab9.-_{}é", 0, 70)
                );
                format!(
                    "a2.{}",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
                )
            };
            if let Ok(c) = AuditCursor::decode(&text) {
                read += 1;
                let again = c.encode();
                assert!(again.len() <= MAX_AUDIT_CURSOR_LEN, "{again}");
                assert_eq!(AuditCursor::decode(&again), Ok(c), "{text}");
            }
        }
        assert!(read > 0, "some places were read");
    }

    #[test]
    fn bad_queries_table() {
        let g = |s: &str| serde_urlencoded::from_str::<GrantsQuery>(s).map_err(|e| e.to_string());
        let a = |s: &str| serde_urlencoded::from_str::<AuditParams>(s).map_err(|e| e.to_string());
        assert!(g("offset=10").is_err_and(|e| e.contains("unknown field `offset`")));
        assert!(g("limit=ten").is_err_and(|e| e.contains("invalid digit")));
        assert!(a("after_seq=x").is_err_and(|e| e.contains("invalid digit")));
        let q = g("repo=acme/../x").expect("raw text parses");
        assert_eq!(
            q.repo_path(),
            Err(AdminQueryError::Repo(ScopeError::DotSegment("..")))
        );
        assert_eq!(
            q.repo_path().expect_err("bad").to_string(),
            "repo: repository path has a '..' segment"
        );
        let p = a("format=xml").expect("raw text parses");
        assert_eq!(p.format(), Err(AdminQueryError::Format("xml".into())));
        assert_eq!(
            p.format().expect_err("bad").to_string(),
            "format \"xml\": use jsonl or csv"
        );
        assert_eq!(g("limit=0").map(|q| q.page_size()), Ok(1));
        assert_eq!(g("limit=99999").map(|q| q.page_size()), Ok(MAX_GRANT_PAGE));
        assert_eq!(a("limit=99999").map(|q| q.page_size()), Ok(MAX_AUDIT_PAGE));
    }

    /// Build → query string → parse is the identity.
    #[test]
    fn pseudo_random_queries_round_trip() {
        const TEXT: &str = "aZ09 -_.:/@&=+%?#é🙂";
        let mut rng = Rng::new(0xad_0010_0e57);
        for _ in 0..2000 {
            let opt = |rng: &mut Rng| (!rng.one_in(2)).then(|| rng.string(TEXT, 0, 20));
            let q = GrantsQuery {
                subject: opt(&mut rng),
                repo: opt(&mut rng),
                role: opt(&mut rng),
                issuer: opt(&mut rng),
                cursor: opt(&mut rng),
                limit: (!rng.one_in(2)).then(|| rng.below(1 << 20)),
            };
            let text = serde_urlencoded::to_string(&q).expect("encodes");
            assert_eq!(serde_urlencoded::from_str(&text).as_ref(), Ok(&q), "{text}");
            let p = AuditParams {
                from: opt(&mut rng),
                to: opt(&mut rng),
                subject: opt(&mut rng),
                repo: opt(&mut rng),
                event: opt(&mut rng),
                after_seq: rng.next_u64(),
                cursor: opt(&mut rng),
                limit: (!rng.one_in(2)).then(|| rng.below(1 << 20)),
                format: opt(&mut rng),
            };
            let text = serde_urlencoded::to_string(&p).expect("encodes");
            assert_eq!(serde_urlencoded::from_str(&text).as_ref(), Ok(&p), "{text}");
        }
        for f in [AuditFormat::JsonLines, AuditFormat::Csv] {
            assert_eq!(f.as_str().parse(), Ok(f));
        }
    }
}
