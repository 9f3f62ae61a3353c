//! Ref names and patterns from untrusted text (pushes, token requests, configs) and the one
//! pattern dialect they share with repository patterns (`jit_proto::glob`).
//!
//! Input: `pattern \n text \n outer` (missing parts are empty).
//!
//! Properties: never a panic; `glob_match` agrees with a plain backtracking reference
//! matcher (the differential oracle for the dialect, run on short inputs); every ref name
//! the gateway accepts is one git accepts too (gix-validate's implementation of
//! `git check-ref-format`, the differential oracle for ref names) and, unless it holds
//! `{`, `}` or `]`, is a pattern matching exactly itself; a parsed pattern matches its own text; `within` is sound: when `p.within(q)`
//! every ref `p` matches, `q` matches too; role repository patterns without placeholders
//! substitute to themselves and match what the glob matches.
#![no_main]

use jit_broker::policy::RepoPattern;
use jit_proto::RepoPath;
use jit_proto::glob::{self, Glob, glob_match};
use jit_proto::refs::{MAX_REF_PATTERN_LEN, RefError, RefPattern, check_ref_name};
use libfuzzer_sys::fuzz_target;

/// The dialect as specified, by backtracking: exponential, so only for short inputs.
fn reference(pat: &[u8], text: &[u8]) -> bool {
    match pat {
        [] => text.is_empty(),
        [b'*', b'*', rest @ ..] => (0..=text.len()).any(|i| reference(rest, &text[i..])),
        [b'*', rest @ ..] => (0..=text.len())
            .take_while(|&i| i == 0 || text[i - 1] != b'/')
            .any(|i| reference(rest, &text[i..])),
        [c, rest @ ..] => text.first() == Some(c) && reference(rest, &text[1..]),
    }
}

/// A concrete ref that `pattern` matches, with each `*` and `**` replaced by `fill`.
fn instance(pattern: &str, fill: &str, deep_fill: &str) -> String {
    pattern
        .replace("**", "\u{1}")
        .replace('*', fill)
        .replace('\u{1}', deep_fill)
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = input.splitn(3, '\n');
    let pattern = parts.next().unwrap_or_default();
    let text = parts.next().unwrap_or_default();
    let outer = parts.next().unwrap_or_default();

    if pattern.len() <= 24 && text.len() <= 24 && pattern.matches('*').count() <= 6 {
        assert_eq!(
            glob_match(pattern, text),
            reference(pattern.as_bytes(), text.as_bytes()),
            "glob_match({pattern:?}, {text:?})"
        );
    } else {
        let _ = glob_match(pattern, text);
    }
    assert_eq!(Glob::parse(pattern).is_ok(), glob::check(pattern).is_ok());

    for name in [pattern, text, outer] {
        if check_ref_name(name).is_ok() {
            assert!(
                gix_validate::reference::name(name.as_bytes().into()).is_ok(),
                "{name:?} accepted here but not by git's rules"
            );
            assert!(!name.contains('*'));
            // `{`, `}` and `]` are legal in ref names but refused in patterns (other
            // dialects' syntax), and a pattern is shorter than the longest ref name, so only
            // the other names are patterns of themselves; a longer one is refused for its
            // length and nothing else.
            if name.len() > MAX_REF_PATTERN_LEN {
                assert_eq!(
                    RefPattern::parse(name),
                    Err(RefError::PatternTooLong(name.len()))
                );
            } else if !name.contains(['{', '}', ']']) {
                let p = RefPattern::parse(name).expect("a ref name is a pattern");
                assert!(p.matches(name));
                assert!(!p.matches(&format!("{name}/x")) && !p.matches(&format!("{name}x")));
            }
        }
    }

    if let Ok(p) = RefPattern::parse(pattern) {
        assert_eq!(RefPattern::parse(p.as_str()).as_ref(), Ok(&p));
        assert!(p.matches(pattern));
        assert!(p.within(&p));
        let concrete = instance(pattern, "x", "x/y");
        if check_ref_name(&concrete).is_ok() {
            assert!(p.matches(&concrete), "{pattern:?} misses {concrete:?}");
        }
        if let Ok(q) = RefPattern::parse(outer) {
            if p.within(&q) {
                for candidate in [text.to_owned(), concrete, instance(pattern, "", "")] {
                    if check_ref_name(&candidate).is_ok() && p.matches(&candidate) {
                        assert!(
                            q.matches(&candidate),
                            "{pattern:?} within {outer:?}, yet {candidate:?} escapes"
                        );
                    }
                }
            }
        }
    }

    if let Ok(repo) = RepoPattern::compile(pattern) {
        if repo.claims().next().is_none() {
            let claims = serde_json::Map::new();
            assert_eq!(repo.substitute(&claims).as_deref(), Ok(pattern));
            if let Ok(path) = RepoPath::parse(text) {
                assert_eq!(
                    repo.matches(&path, &claims),
                    Ok(glob_match(pattern, path.as_str()))
                );
            }
        }
    }
});
