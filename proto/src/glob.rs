//! The one pattern dialect of git-jit, shared by role repository patterns, ref patterns,
//! upstream repository patterns and claim conditions (documented in `docs/patterns.md`):
//!
//! - `*` matches any run of characters except `/` (within one path segment);
//! - `**` matches any run of characters including `/`;
//! - every other character matches itself; patterns are anchored at both ends.
//!
//! `***`, `?`, `[...]` and `{...}` are refused by [`check`] rather than read as literals,
//! so that a pattern written for another glob dialect fails loudly instead of silently never
//! matching. (`{claim}` placeholders in role repository patterns are substituted by the
//! broker before matching; they are not part of this dialect.)
//!
//! Matching is linear in pattern × text, whatever the number of stars — the patterns come
//! from token requests and configs, the text from the network.

use std::fmt;

/// Why a pattern is not in the dialect. The caller names the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// `***` is neither `*` followed by `**` nor the reverse in any useful way.
    #[error("'***' is ambiguous; use '*' or '**'")]
    TripleStar,
    /// `?`, which other dialects read as "one character".
    #[error("'?' is not pattern syntax; only '*' and '**' are wildcards")]
    QuestionMark,
    /// `[` or `]`, which other dialects read as a character class.
    #[error("'[...]' character classes are not pattern syntax; only '*' and '**' are wildcards")]
    Class,
    /// `{` or `}`, which other dialects read as alternation.
    #[error(
        "'{{...}}' is not pattern syntax (no alternation; list several patterns instead, and \
         '{{claim}}' placeholders exist only in role repository patterns)"
    )]
    Brace,
}

impl GlobError {
    /// The problem as a static string, for error types that carry one.
    pub fn why(self) -> &'static str {
        match self {
            Self::TripleStar => "'***' is ambiguous; use '*' or '**'",
            Self::QuestionMark => "'?' is not pattern syntax; only '*' and '**' are wildcards",
            Self::Class => {
                "'[...]' character classes are not pattern syntax; only '*' and '**' are wildcards"
            }
            Self::Brace => {
                "'{...}' is not pattern syntax (no alternation; list several patterns instead, \
                 and '{claim}' placeholders exist only in role repository patterns)"
            }
        }
    }
}

/// Checks that `pattern` uses only the dialect's syntax.
pub fn check(pattern: &str) -> Result<(), GlobError> {
    if pattern.contains("***") {
        return Err(GlobError::TripleStar);
    }
    match pattern
        .chars()
        .find(|c| matches!(c, '?' | '[' | ']' | '{' | '}'))
    {
        Some('?') => Err(GlobError::QuestionMark),
        Some('[' | ']') => Err(GlobError::Class),
        Some(_) => Err(GlobError::Brace),
        None => Ok(()),
    }
}

/// A pattern known to be in the dialect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Glob(String);

impl Glob {
    /// Checks and keeps `pattern`.
    pub fn parse(pattern: &str) -> Result<Self, GlobError> {
        check(pattern)?;
        Ok(Self(pattern.to_owned()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` matches, anchored at both ends.
    pub fn matches(&self, text: &str) -> bool {
        glob_match(&self.0, text)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `text` matches `pattern`. Only `*` and `**` are special here; callers refuse
/// patterns outside the dialect with [`check`] first. O(pattern length × text length) time,
/// O(text) memory.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let text = text.as_bytes();
    let pat = pattern.as_bytes();
    // reach[i]: the pattern consumed so far can match text[..i].
    let mut reach = vec![false; text.len() + 1];
    reach[0] = true;
    let mut p = 0;
    while p < pat.len() {
        let mut next = vec![false; text.len() + 1];
        if pat[p] == b'*' {
            let deep = pat.get(p + 1) == Some(&b'*');
            p += if deep { 2 } else { 1 };
            next[0] = reach[0];
            for i in 1..=text.len() {
                next[i] = reach[i] || (next[i - 1] && (deep || text[i - 1] != b'/'));
            }
        } else {
            for i in 0..text.len() {
                next[i + 1] = reach[i] && text[i] == pat[p];
            }
            p += 1;
        }
        reach = next;
    }
    reach[text.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RefPattern;

    #[test]
    fn semantics() {
        assert!(glob_match("refs/heads/*", "refs/heads/main"));
        assert!(!glob_match("refs/heads/*", "refs/heads/a/b"));
        assert!(glob_match("refs/heads/**", "refs/heads/a/b"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
        assert!(glob_match("**", ""));
    }

    #[test]
    fn syntax_of_other_dialects_is_refused() {
        assert_eq!(check("acme/*"), Ok(()));
        assert_eq!(check("acme/**"), Ok(()));
        assert_eq!(check("acme/***"), Err(GlobError::TripleStar));
        assert_eq!(check("acme/ap?"), Err(GlobError::QuestionMark));
        assert_eq!(check("acme/[ab]pi"), Err(GlobError::Class));
        assert_eq!(check("acme/]"), Err(GlobError::Class));
        assert_eq!(check("acme/{api,web}"), Err(GlobError::Brace));
        assert_eq!(check("acme/}"), Err(GlobError::Brace));
        for e in [
            GlobError::TripleStar,
            GlobError::QuestionMark,
            GlobError::Class,
            GlobError::Brace,
        ] {
            assert_eq!(e.to_string(), e.why());
        }
    }

    /// Regression: a pattern of many stars against a long non-matching text used to take
    /// exponential time (a write grant could freeze the broker with one push). With the old
    /// matcher this test does not finish; the test runner's timeout (.config/nextest.toml)
    /// turns that into a failure.
    #[test]
    fn many_stars_against_a_long_ref() {
        let pattern = format!("refs/heads/{}b", "*a".repeat(40));
        let text = format!("refs/heads/{}", "a".repeat(1000));
        assert!(!glob_match(&pattern, &text));
        assert!(glob_match(&pattern, &format!("{text}b")));
    }

    /// One row of the examples table in `docs/patterns.md`.
    #[derive(Debug)]
    struct Example<'a> {
        used_in: &'a str,
        pattern: &'a str,
        text: &'a str,
        /// `Some(matches)`, or `None` when the pattern is refused.
        outcome: Option<bool>,
    }

    fn unquote(s: &str) -> &str {
        let s = s.trim();
        s.strip_prefix('`')
            .and_then(|s| s.strip_suffix('`'))
            .unwrap_or(s)
    }

    /// The rows of the table between `<!-- examples:begin -->` and `<!-- examples:end -->`.
    fn doc_examples(md: &str) -> Vec<Example<'_>> {
        let start = md.find("<!-- examples:begin -->").expect("begin marker");
        let end = md.find("<!-- examples:end -->").expect("end marker");
        md[start..end]
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(2) // header and separator
            .map(|l| {
                let cells: Vec<&str> = l.trim().trim_matches('|').split('|').collect();
                assert_eq!(cells.len(), 4, "row {l:?} must have 4 cells");
                let outcome = match cells[3].trim() {
                    "yes" => Some(true),
                    "no" => Some(false),
                    "refused" => None,
                    other => panic!("row {l:?}: outcome {other:?} is not yes, no or refused"),
                };
                Example {
                    used_in: cells[0].trim(),
                    pattern: unquote(cells[1]),
                    text: unquote(cells[2]),
                    outcome,
                }
            })
            .collect()
    }

    /// The documentation's examples are exactly what the code does: ref rows through
    /// [`RefPattern`], role and upstream rows through [`Glob`].
    #[test]
    fn documented_examples() {
        let rows = doc_examples(include_str!("../../docs/patterns.md"));
        assert!(rows.len() >= 10, "the table lost its rows");
        for r in rows {
            let got = match r.used_in {
                "ref" => RefPattern::parse(r.pattern).ok().map(|p| p.matches(r.text)),
                "role" | "upstream" => Glob::parse(r.pattern).ok().map(|g| g.matches(r.text)),
                other => panic!("{r:?}: unknown use {other:?}"),
            };
            assert_eq!(got, r.outcome, "{r:?}");
        }
    }
}
