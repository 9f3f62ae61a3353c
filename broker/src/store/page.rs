//! Listing pages: index members, the opaque cursor of `GET /v1/grants`, and a page.
//!
//! Every index (global, and one per subject, repository, role and issuer) orders grants by
//! one key, the *index member* `<issued ms, 16 digits>:<jti>`: issue time first, the token id
//! breaking ties, so paging "after member m" is exact even when many grants share a
//! millisecond. A cursor is that member, bound to the filter it was made for, base64url
//! encoded; the broker names what is wrong with one it did not make.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::{Grant, GrantFilter};

/// Digits of the issue time in a member: milliseconds since the epoch fit until year 316,000.
const ISSUED_DIGITS: usize = 16;
/// Longest token id a member or cursor may carry.
const MAX_JTI_LEN: usize = 256;
/// Longest cursor text accepted.
pub const MAX_CURSOR_LEN: usize = 512;
/// The cursor format's tag.
const CURSOR_TAG: &str = "c1";

/// A grant's position in every index: issue time, then token id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IndexMember(String);

impl IndexMember {
    /// The member of a grant issued at `issued_ms` (negative times count as 0).
    pub fn new(issued_ms: i64, jti: &str) -> Self {
        Self(format!("{:0ISSUED_DIGITS$}:{jti}", issued_ms.max(0)))
    }

    /// Reads a member back, if it is one.
    pub fn parse(s: &str) -> Option<Self> {
        let (digits, jti) = s.split_at_checked(ISSUED_DIGITS)?;
        let jti = jti.strip_prefix(':')?;
        let well_formed = digits.bytes().all(|b| b.is_ascii_digit())
            && !jti.is_empty()
            && jti.len() <= MAX_JTI_LEN
            && !jti.chars().any(char::is_control);
        well_formed.then(|| Self(s.to_owned()))
    }

    /// The smallest member of anything issued after `ms` (an exclusive lex bound's text:
    /// every member issued at or before `ms` sorts below it).
    pub fn after_ms(ms: i64) -> String {
        format!("{:0ISSUED_DIGITS$}:", ms.saturating_add(1).max(0))
    }

    /// A bound below every member issued after `ms` and above every other (no member itself).
    pub fn first_after_ms(ms: i64) -> Self {
        Self(Self::after_ms(ms))
    }

    /// The token id.
    pub fn jti(&self) -> &str {
        &self.0[ISSUED_DIGITS + 1..]
    }

    /// The issue time in milliseconds.
    pub fn issued_ms(&self) -> i64 {
        self.0[..ISSUED_DIGITS].parse().unwrap_or(0)
    }

    /// The member's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Longer than any cursor the broker makes.
    #[error("cursor is longer than {MAX_CURSOR_LEN} characters")]
    TooLong,
    /// Not base64url text of a cursor.
    #[error("cursor is garbled (not a cursor this broker made); start again without one")]
    Garbled,
    /// Made for a listing with other filters.
    #[error("cursor belongs to a listing with other filters; start again without one")]
    OtherFilter,
}

/// Where the next page of a listing starts: after this member, for this filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    after: IndexMember,
}

/// A short digest of a filter, so a cursor is not used with another one by mistake.
fn filter_tag(filter: &GrantFilter) -> String {
    let mut h = Sha256::new();
    for d in filter.dimensions() {
        h.update(d.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..4])
}

impl ListCursor {
    /// The cursor after `member`.
    pub fn after(member: IndexMember) -> Self {
        Self { after: member }
    }

    /// The member the page starts after.
    pub fn member(&self) -> &IndexMember {
        &self.after
    }

    /// The cursor's text for a listing filtered by `filter`.
    pub fn encode(&self, filter: &GrantFilter) -> String {
        let raw = format!(
            "{CURSOR_TAG}.{}.{}",
            filter_tag(filter),
            self.after.as_str()
        );
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Reads a cursor `encode` made for `filter`.
    pub fn decode(text: &str, filter: &GrantFilter) -> Result<Self, CursorError> {
        if text.len() > MAX_CURSOR_LEN {
            return Err(CursorError::TooLong);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(CursorError::Garbled)?;
        let mut parts = raw.splitn(3, '.');
        let (Some(CURSOR_TAG), Some(tag), Some(member)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(CursorError::Garbled);
        };
        let after = IndexMember::parse(member).ok_or(CursorError::Garbled)?;
        if tag != filter_tag(filter) {
            return Err(CursorError::OtherFilter);
        }
        Ok(Self { after })
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantListing {
    /// Live grants, oldest first.
    pub grants: Vec<Grant>,
    /// Where the next page starts, when the index may hold more.
    pub next: Option<ListCursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_sort_by_time_then_jti() {
        let a = IndexMember::new(999, "zz");
        let b = IndexMember::new(1000, "aa");
        let c = IndexMember::new(1000, "ab");
        assert!(a < b && b < c);
        assert_eq!((c.issued_ms(), c.jti()), (1000, "ab"));
        assert!(a.as_str() < IndexMember::after_ms(999).as_str());
        assert!(b.as_str() > IndexMember::after_ms(999).as_str());
        assert_eq!(IndexMember::parse(c.as_str()), Some(c));
        for bad in [
            "",
            "12:ab",
            "000000000000100x:ab",
            "0000000000001000:",
            "0000000000001000ab",
        ] {
            assert_eq!(IndexMember::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_name_what_is_wrong() {
        let f = GrantFilter {
            subject: Some("alice".into()),
            ..Default::default()
        };
        let c = ListCursor::after(IndexMember::new(1_700_000_000_000, "j-1"));
        let text = c.encode(&f);
        assert_eq!(ListCursor::decode(&text, &f), Ok(c.clone()));
        assert_eq!(
            ListCursor::decode(&text, &GrantFilter::default()),
            Err(CursorError::OtherFilter)
        );
        let other_tag = URL_SAFE_NO_PAD.encode("c2.00000000.0000000000001000:j-1");
        for garbled in ["%%%", "Zm9v", "YzEuMDAwMDAwMDAuMTI", &other_tag] {
            assert_eq!(
                ListCursor::decode(garbled, &f),
                Err(CursorError::Garbled),
                "{garbled}"
            );
        }
        let long = "A".repeat(MAX_CURSOR_LEN + 1);
        assert_eq!(ListCursor::decode(&long, &f), Err(CursorError::TooLong));
        // A jti with control characters is no member, even inside a well-made envelope.
        let forged = URL_SAFE_NO_PAD.encode(format!("c1.{}.0000000000001000:a\nb", filter_tag(&f)));
        assert_eq!(ListCursor::decode(&forged, &f), Err(CursorError::Garbled));
    }
}
