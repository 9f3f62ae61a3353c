//! Ref names and ref patterns for narrowed `write` grants (`refs/heads/hotfix/*`).
//!
//! Patterns use the dialect of [`crate::glob`] (`docs/patterns.md`): `*` matches any run of
//! characters within one path segment (never `/`); `**` matches any run including `/`.
//! Patterns are anchored at both ends: `refs/heads/main` matches only itself.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest accepted ref name, in bytes. git itself sets no length in
/// `check_refname_format`, but a loose ref is a file below `.git/`, so the operating system
/// caps it (`PATH_MAX`, 4096 on Linux, for the whole path; `NAME_MAX`, 255, per segment);
/// 1024 is far beyond any ref a person or tool names, and bounds what one pushed command
/// costs the broker (parsing, matching, auditing).
pub const MAX_REF_LEN: usize = 1024;

/// Longest accepted ref pattern, in bytes. Patterns come from token requests and are
/// matched against every ref of every push, so their size multiplies the cost of a push:
/// 128 bytes holds any real branch or tag namespace (`refs/heads/team/project/hotfix/*`).
pub const MAX_REF_PATTERN_LEN: usize = 128;

/// Why a ref name or ref pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// Did not start with `refs/`.
    #[error("ref {0:?} must start with 'refs/'")]
    NotUnderRefs(String),
    /// Longer than [`MAX_REF_LEN`].
    #[error("ref is {0} bytes long; at most {MAX_REF_LEN} are allowed")]
    TooLong(usize),
    /// A pattern longer than [`MAX_REF_PATTERN_LEN`].
    #[error("ref pattern is {0} bytes long; at most {MAX_REF_PATTERN_LEN} are allowed")]
    PatternTooLong(usize),
    /// Broke one of git's ref-name rules (`git check-ref-format`).
    #[error("ref {name:?} is not a valid ref name: {why}")]
    Invalid {
        /// The offending name.
        name: String,
        /// Which rule it broke.
        why: &'static str,
    },
}

fn check_ref_chars(name: &str, allow_glob: bool) -> Result<(), RefError> {
    let invalid = |why| RefError::Invalid {
        name: name.to_owned(),
        why,
    };
    if name.len() > MAX_REF_LEN {
        return Err(RefError::TooLong(name.len()));
    }
    if !name.starts_with("refs/") {
        return Err(RefError::NotUnderRefs(name.to_owned()));
    }
    for c in name.chars() {
        match c {
            c if c.is_control() => return Err(invalid("control character")),
            ' ' | '~' | '^' | ':' | '?' | '[' | '\\' => return Err(invalid("forbidden character")),
            '*' if !allow_glob => return Err(invalid("'*' is only allowed in patterns")),
            _ => {}
        }
    }
    if name.contains("..") {
        return Err(invalid("contains '..'"));
    }
    if name.contains("@{") {
        return Err(invalid("contains '@{'"));
    }
    if name.ends_with('/') || name.ends_with('.') || name.contains("//") {
        return Err(invalid("empty segment or trailing '/' or '.'"));
    }
    for seg in name.split('/') {
        if seg.starts_with('.') || seg.ends_with(".lock") {
            return Err(invalid("segment starts with '.' or ends with '.lock'"));
        }
    }
    Ok(())
}

/// Checks a concrete ref name as pushed by a client (`refs/heads/main`).
pub fn check_ref_name(name: &str) -> Result<(), RefError> {
    check_ref_chars(name, false)
}

/// A ref pattern such as `refs/heads/hotfix/*`, `refs/tags/v*` or `refs/heads/**`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RefPattern(String);

impl RefPattern {
    /// Parses a pattern; it must be a valid ref name apart from `*` and `**`, and use no
    /// syntax outside the dialect (`?`, `[...]`, `{...}`, `***`).
    pub fn parse(s: &str) -> Result<Self, RefError> {
        if s.len() > MAX_REF_PATTERN_LEN {
            return Err(RefError::PatternTooLong(s.len()));
        }
        // The dialect's check runs first so that `?` or `[` is reported as pattern syntax
        // rather than as a character git forbids in ref names.
        crate::glob::check(s).map_err(|e| RefError::Invalid {
            name: s.to_owned(),
            why: e.why(),
        })?;
        check_ref_chars(s, true)?;
        Ok(Self(s.to_owned()))
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the concrete ref `name` matches this pattern, anchored at both ends.
    pub fn matches(&self, name: &str) -> bool {
        crate::glob::glob_match(&self.0, name)
    }

    /// [`matches`](Self::matches) against a ref prepared once for several patterns;
    /// `steps` counts the work (see [`crate::glob::Text`]).
    pub fn matches_text(&self, name: &crate::glob::Text<'_>, steps: &mut u64) -> bool {
        name.matches(&self.0, steps)
    }

    /// Whether every ref this pattern matches is also matched by `outer`, used to check that
    /// a requested narrowing stays inside what a role allows. Conservative: besides equality
    /// and a literal ref that `outer` matches, only an `outer` of the form `<literal>/**`
    /// (anything below) or `<literal>/*` (one more segment) covers a glob.
    pub fn within(&self, outer: &RefPattern) -> bool {
        if self == outer {
            return true;
        }
        if !self.0.contains('*') {
            return outer.matches(&self.0);
        }
        let (base, deep) = if let Some(b) = outer.0.strip_suffix("**") {
            (b, true)
        } else if let Some(b) = outer.0.strip_suffix('*') {
            (b, false)
        } else {
            return false;
        };
        if !base.ends_with('/') || base.contains('*') {
            return false;
        }
        match self.0.strip_prefix(base) {
            Some(rest) => deep || !(rest.contains('/') || rest.contains("**")),
            None => false,
        }
    }
}

impl fmt::Display for RefPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RefPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RefPattern {
        RefPattern::parse(s).expect("valid pattern")
    }

    #[test]
    fn matching() {
        assert!(p("refs/heads/main").matches("refs/heads/main"));
        assert!(!p("refs/heads/main").matches("refs/heads/main2"));
        assert!(!p("refs/heads/main").matches("refs/heads/mai"));
        assert!(p("refs/heads/hotfix/*").matches("refs/heads/hotfix/x"));
        assert!(!p("refs/heads/hotfix/*").matches("refs/heads/hotfix/a/b"));
        assert!(!p("refs/heads/hotfix/*").matches("refs/heads/hotfix"));
        assert!(p("refs/heads/hotfix/**").matches("refs/heads/hotfix/a/b"));
        assert!(p("refs/tags/v*").matches("refs/tags/v1.2.3"));
        assert!(!p("refs/tags/v*").matches("refs/tags/x1"));
        assert!(!p("refs/tags/v*").matches("refs/tags/v1/evil"));
        assert!(p("refs/**").matches("refs/heads/anything/at/all"));
    }

    #[test]
    fn parsing() {
        for bad in [
            "heads/main",
            "refs/heads/../x",
            "refs/heads/a b",
            "refs/heads/x.lock",
            "refs/heads/.x",
            "refs/heads/",
            "refs//x",
            "refs/heads/a@{1}",
            "refs/heads/a\0",
            "refs/heads/***",
            "refs/heads/x:y",
            "refs/heads/x\\y",
            "refs/heads/{a,b}",
            "refs/heads/?",
            "refs/heads/[ab]",
        ] {
            assert!(RefPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_ref_name("refs/heads/*").is_err());
    }

    #[test]
    fn lengths_at_and_past_the_bounds() {
        let name = |len: usize| format!("refs/heads/{}", "x".repeat(len - "refs/heads/".len()));
        assert_eq!(check_ref_name(&name(MAX_REF_LEN)), Ok(()));
        assert_eq!(
            check_ref_name(&name(MAX_REF_LEN + 1)),
            Err(RefError::TooLong(MAX_REF_LEN + 1))
        );
        assert!(RefPattern::parse(&name(MAX_REF_PATTERN_LEN)).is_ok());
        let err = RefPattern::parse(&name(MAX_REF_PATTERN_LEN + 1)).expect_err("too long");
        assert_eq!(err, RefError::PatternTooLong(MAX_REF_PATTERN_LEN + 1));
        assert_eq!(
            err.to_string(),
            format!(
                "ref pattern is {} bytes long; at most 128 are allowed",
                MAX_REF_PATTERN_LEN + 1
            )
        );
        assert!(check_ref_name("refs/heads/feature/x").is_ok());
    }

    #[test]
    fn within() {
        assert!(p("refs/heads/hotfix/*").within(&p("refs/heads/**")));
        assert!(p("refs/heads/hotfix/x").within(&p("refs/heads/hotfix/*")));
        assert!(!p("refs/heads/*").within(&p("refs/heads/hotfix/*")));
        assert!(!p("refs/tags/*").within(&p("refs/heads/**")));
        assert!(p("refs/tags/v*").within(&p("refs/tags/v*")));
    }
}
