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
/// patterns outside the dialect with [`check`] first. See [`Text`] for the cost.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    Text::new(text).matches(pattern, &mut 0)
}

/// A text prepared for matching against any number of patterns (a pushed ref against every
/// pattern of a grant): one pass over the text builds a bit mask of its positions per byte
/// value, and matching then runs the pattern's automaton over all text positions at once,
/// 64 positions per machine word.
///
/// Cost of [`Text::matches`]: at most one step per pattern byte, a step being one pass over
/// the `(text length + 1) / 64` words of the position set — so O(pattern × text / 64) in the
/// worst case and never more, whatever the stars: nothing is retried, there is no
/// backtracking. It stops as soon as no position is reachable; a pattern without stars is
/// compared as a string, and a literal tail after the last star is checked first.
#[derive(Debug, Clone)]
pub struct Text<'a> {
    text: &'a str,
    /// Words per position set: positions 0..=text.len().
    words: usize,
    /// Per byte value, 1 + its index in `masks`; 0 when the byte is not in the text.
    slot: [u16; 256],
    /// For each byte value present, bit `i + 1` is set where `text[i]` is that byte.
    masks: Vec<u64>,
    /// Bit `i + 1` is set where `text[i]` is not `/`: where a `*` may extend its match.
    in_segment: Vec<u64>,
}

impl<'a> Text<'a> {
    /// Prepares `text`: O(text) time, O(text × distinct bytes / 64) memory.
    pub fn new(text: &'a str) -> Self {
        let bytes = text.as_bytes();
        let words = bytes.len() / 64 + 1;
        let mut slot = [0u16; 256];
        let mut distinct = 0u16;
        for &b in bytes {
            if slot[usize::from(b)] == 0 {
                distinct += 1;
                slot[usize::from(b)] = distinct;
            }
        }
        let mut masks = vec![0u64; usize::from(distinct) * words];
        let mut in_segment = vec![0u64; words];
        for (i, &b) in bytes.iter().enumerate() {
            let (word, bit) = ((i + 1) / 64, 1u64 << ((i + 1) % 64));
            let base = (usize::from(slot[usize::from(b)]) - 1) * words;
            masks[base + word] |= bit;
            if b != b'/' {
                in_segment[word] |= bit;
            }
        }
        Self {
            text,
            words,
            slot,
            masks,
            in_segment,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        self.text
    }

    /// Whether `pattern` matches the whole text. `steps` grows by the number of word
    /// operations spent (for tests and benchmarks that prove the bound).
    pub fn matches(&self, pattern: &str, steps: &mut u64) -> bool {
        let pat = pattern.as_bytes();
        let Some(last_star) = pat.iter().rposition(|&b| b == b'*') else {
            *steps += 1;
            return pattern == self.text;
        };
        // The literal tail must end the text: a cheap refusal of most non-matching refs.
        let tail = &pat[last_star + 1..];
        *steps += 1;
        if !self.text.as_bytes().ends_with(tail) {
            return false;
        }
        let w = self.words;
        let n = self.text.len();
        let mut reach = vec![0u64; w];
        reach[0] = 1;
        let mut next = vec![0u64; w];
        let mut p = 0;
        while p < pat.len() {
            *steps += w as u64;
            if pat[p] == b'*' {
                let deep = pat.get(p + 1) == Some(&b'*');
                p += if deep { 2 } else { 1 };
                if deep {
                    fill_from_lowest(&mut reach, n);
                } else {
                    fill_within_segments(&mut reach, &self.in_segment);
                }
            } else {
                let slot = usize::from(self.slot[usize::from(pat[p])]);
                p += 1;
                if slot == 0 {
                    return false;
                }
                let mask = &self.masks[(slot - 1) * w..slot * w];
                let (mut carry, mut any) = (0, 0);
                for ((n, &r), &m) in next.iter_mut().zip(reach.iter()).zip(mask) {
                    let v = ((r << 1) | carry) & m;
                    carry = r >> 63;
                    *n = v;
                    any |= v;
                }
                std::mem::swap(&mut reach, &mut next);
                if any == 0 {
                    return false;
                }
            }
        }
        reach[n / 64] & (1u64 << (n % 64)) != 0
    }
}

/// `**`: every position from the lowest reachable one to `n` becomes reachable.
fn fill_from_lowest(reach: &mut [u64], n: usize) {
    let Some(first) = reach.iter().position(|&x| x != 0) else {
        return;
    };
    let low = reach[first].trailing_zeros();
    reach[first] |= u64::MAX << low;
    for x in &mut reach[first + 1..] {
        *x = u64::MAX;
    }
    // Positions past `n` stay clear.
    let last = n / 64;
    let keep = (n % 64) as u32;
    reach[last] &= u64::MAX >> (63 - keep);
    for x in &mut reach[last + 1..] {
        *x = 0;
    }
}

/// `*`: from every reachable position, the positions after it up to the next `/` become
/// reachable. With `a` the positions one step past a reachable one and inside a segment,
/// adding `a` to the `in_segment` mask carries through each run of in-segment positions from
/// the lowest `a` bit to the run's end, so `((m + a) ^ m | a) & m` is exactly the filled run.
fn fill_within_segments(reach: &mut [u64], m: &[u64]) {
    let (mut shift, mut carry) = (0, false);
    for (r, &m) in reach.iter_mut().zip(m) {
        let a = ((*r << 1) | shift) & m;
        shift = *r >> 63;
        let (s, c1) = m.overflowing_add(a);
        let (s, c2) = s.overflowing_add(u64::from(carry));
        carry = c1 || c2;
        *r |= ((s ^ m) | a) & m;
    }
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

    /// The matcher of earlier versions, a plain dynamic program over pattern bytes × text
    /// positions: the reference the bit-parallel one must agree with.
    fn reference(pattern: &str, text: &str) -> bool {
        let (pat, text) = (pattern.as_bytes(), text.as_bytes());
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

    /// A textbook backtracking matcher of the same dialect, counting its steps (capped): what
    /// a pathological pattern would cost without the automaton.
    fn backtracking_steps(pat: &[u8], text: &[u8], steps: &mut u64) -> bool {
        *steps += 1;
        if *steps > 10_000_000 {
            return false;
        }
        match pat.first() {
            None => text.is_empty(),
            Some(b'*') => {
                let deep = pat.get(1) == Some(&b'*');
                let rest = &pat[if deep { 2 } else { 1 }..];
                for i in 0..=text.len() {
                    if backtracking_steps(rest, &text[i..], steps) {
                        return true;
                    }
                    if i < text.len() && !deep && text[i] == b'/' {
                        return false;
                    }
                }
                false
            }
            Some(&c) => {
                text.first() == Some(&c) && backtracking_steps(&pat[1..], &text[1..], steps)
            }
        }
    }

    /// Regression: a pattern of many stars against a long ref that almost matches used to
    /// cost pattern × text byte steps per ref and pattern (2.4 s of CPU for one push of 900
    /// refs against 5 patterns of 1 KB); a backtracking matcher would never finish. The work
    /// is counted, not timed: at most one word pass per pattern byte.
    #[test]
    fn pathological_pattern_costs_at_most_one_word_pass_per_pattern_byte() {
        // Every star keeps hundreds of positions alive until the last segment fails.
        let pattern = format!("refs/heads/{}*b/c", "*a".repeat(60));
        let text = format!("refs/heads/{}/b/c", "a".repeat(1000));
        let t = Text::new(&text);
        let mut steps = 0;
        assert!(!t.matches(&pattern, &mut steps));
        assert!(!reference(&pattern, &text));
        let words = (text.len() / 64 + 1) as u64;
        let bound = pattern.len() as u64 * words + 1;
        assert!(steps <= bound, "{steps} steps > {bound}");
        assert!(
            steps >= 120 * words,
            "the hard case was not exercised: {steps}"
        );

        // The same shape, much smaller, already explodes a backtracking matcher.
        let small_pattern = format!("refs/heads/{}*b/c", "*a".repeat(12));
        let small_text = format!("refs/heads/{}/b/c", "a".repeat(40));
        let mut bt = 0;
        assert!(!backtracking_steps(
            small_pattern.as_bytes(),
            small_text.as_bytes(),
            &mut bt
        ));
        let mut ours = 0;
        assert!(!Text::new(&small_text).matches(&small_pattern, &mut ours));
        assert!(
            bt > 1_000_000 && ours < 100,
            "backtracking {bt}, automaton {ours}"
        );

        // Deep stars do not change the bound.
        let deep = format!("refs/{}*c/d", "**a".repeat(40));
        let text = format!("refs/{}ac/d", "a/".repeat(500));
        let mut steps = 0;
        assert!(Text::new(&text).matches(&deep, &mut steps));
        assert!(steps <= deep.len() as u64 * (text.len() as u64 / 64 + 1) + 1);
        assert!(glob_match(
            &format!("refs/heads/{}b", "*a".repeat(40)),
            &format!("refs/heads/{}b", "a".repeat(1000))
        ));
    }

    #[test]
    fn agrees_with_the_reference_matcher() {
        let mut rng = crate::testrng::Rng::new(12);
        let alphabet = [b'a', b'b', b'/', b'*'];
        for _ in 0..20_000 {
            let plen = rng.below(12);
            let tlen = rng.below(150);
            let mut pattern: Vec<u8> = (0..plen).map(|_| alphabet[rng.below(4)]).collect();
            // The dialect refuses `***`.
            while let Some(i) = pattern.windows(3).position(|w| w == b"***") {
                pattern[i] = b'a';
            }
            let text: Vec<u8> = (0..tlen).map(|_| alphabet[rng.below(3)]).collect();
            let (pattern, text) = (
                String::from_utf8(pattern).expect("ascii"),
                String::from_utf8(text).expect("ascii"),
            );
            assert_eq!(
                glob_match(&pattern, &text),
                reference(&pattern, &text),
                "{pattern:?} against {text:?}"
            );
        }
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
