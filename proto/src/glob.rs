//! The one glob matcher of git-jit (ref patterns, repository patterns, claim conditions):
//! `*` matches any run of characters except `/`, `**` any run including `/`, everything else
//! itself; anchored at both ends. Linear in pattern × text, whatever the number of stars — the
//! patterns come from token requests and configs, the text from the network.

/// Whether `text` matches `pattern`. O(pattern length × text length) time, O(text) memory.
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
}
