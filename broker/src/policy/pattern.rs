//! The policy's compiled patterns: claim conditions (exact or glob) and repository patterns
//! that may use `{claim}` placeholders.
//!
//! Globs use the one dialect of [`jit_proto::glob`] (`docs/patterns.md`): anchored at both
//! ends, `*` matches any run of characters except `/`, `**` any run including `/`; `?`,
//! `[...]`, `{...}` (outside placeholders) and `***` are refused. There is no escape: a
//! condition containing `*` is always a glob. Matching is O(pattern × text), whatever the input.

use std::fmt;

use jit_proto::RepoPath;
use serde_json::Value;

pub use crate::config::{ConditionConfig, ScalarConfig};
pub use crate::identity::scalar_text;

/// Longest claim value shown in a denial message; longer ones are cut with `…`.
const SHOWN_VALUE_MAX: usize = 120;

/// One compiled alternative of a claim condition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ValuePattern {
    text: String,
    glob: bool,
}

impl ValuePattern {
    fn matches(&self, value: &str) -> bool {
        if self.glob {
            glob_match(&self.text, value)
        } else {
            self.text == value
        }
    }
}

/// A compiled claim condition: the claim must be present and (one of its elements, for an
/// array claim) must match one of the alternatives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCondition {
    claim: String,
    alternatives: Vec<ValuePattern>,
}

/// Why a claim condition failed, for the denial message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionFailure {
    /// The identity has no such claim (or it is null).
    Missing,
    /// The claim's value (shown) matches none of the alternatives.
    Mismatch(String),
}

impl ClaimCondition {
    /// Compiles the condition on `claim`; `Err` says what is wrong with the value.
    pub fn compile(claim: &str, config: &ConditionConfig) -> Result<Self, String> {
        if claim.is_empty() {
            return Err("a claim name must not be empty".into());
        }
        let scalars: &[ScalarConfig] = match config {
            ConditionConfig::One(s) => std::slice::from_ref(s),
            ConditionConfig::AnyOf(list) if list.is_empty() => {
                return Err("a list of alternatives must not be empty".into());
            }
            ConditionConfig::AnyOf(list) => list,
        };
        let mut alternatives = Vec::with_capacity(scalars.len());
        for s in scalars {
            let (text, glob) = match s {
                ScalarConfig::Bool(b) => (b.to_string(), false),
                ScalarConfig::Int(i) => (i.to_string(), false),
                ScalarConfig::Str(t) if t.is_empty() => {
                    return Err("a value must not be empty".into());
                }
                ScalarConfig::Str(t) if t.contains('*') => {
                    jit_proto::glob::check(t).map_err(|e| format!("{t:?}: {e}"))?;
                    (t.clone(), true)
                }
                ScalarConfig::Str(t) => (t.clone(), false),
            };
            alternatives.push(ValuePattern { text, glob });
        }
        Ok(Self {
            claim: claim.to_owned(),
            alternatives,
        })
    }

    /// The claim this condition reads.
    pub fn claim(&self) -> &str {
        &self.claim
    }

    /// Checks the condition against verified claims.
    pub fn check(&self, claims: &serde_json::Map<String, Value>) -> Result<(), ConditionFailure> {
        let value = match claims.get(&self.claim) {
            None | Some(Value::Null) => return Err(ConditionFailure::Missing),
            Some(v) => v,
        };
        let hit = match value {
            Value::Array(items) => items
                .iter()
                .filter_map(scalar_text)
                .any(|t| self.alternatives.iter().any(|p| p.matches(&t))),
            other => {
                scalar_text(other).is_some_and(|t| self.alternatives.iter().any(|p| p.matches(&t)))
            }
        };
        if hit {
            Ok(())
        } else {
            Err(ConditionFailure::Mismatch(show_value(value)))
        }
    }

    /// The condition's values as written (`'refs/heads/main'`, `one of 'a', 'b'`).
    pub fn expected(&self) -> String {
        let quoted: Vec<String> = self
            .alternatives
            .iter()
            .map(|p| format!("'{}'", p.text))
            .collect();
        match quoted.as_slice() {
            [one] => one.clone(),
            _ => format!("any of {}", quoted.join(", ")),
        }
    }
}

/// A claim value as shown in a denial: quoted, control characters escaped, cut if long.
pub fn show_value(v: &Value) -> String {
    let text = match v {
        Value::String(s) => format!("'{}'", s.escape_debug()),
        other => other.to_string(),
    };
    if text.chars().count() > SHOWN_VALUE_MAX {
        let cut: String = text.chars().take(SHOWN_VALUE_MAX).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// One piece of a repository pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Literal text, possibly with `*` globs.
    Text(String),
    /// `{claim}`: replaced by the claim's value, which must itself be a repository path.
    Claim(String),
}

/// A compiled repository pattern such as `acme/*`, `acme/**` or `{repository}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPattern {
    source: String,
    parts: Vec<Part>,
}

/// Why a repository pattern could not be applied to an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubstitutionFailure {
    /// The claim a placeholder names is missing.
    Missing(String),
    /// The claim's value is not itself a normal repository path.
    NotARepoPath(String, String),
}

impl fmt::Display for SubstitutionFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(c) => write!(f, "claim '{c}' is missing from the identity"),
            Self::NotARepoPath(c, v) => {
                write!(f, "claim '{c}' = {v} is not a repository path")
            }
        }
    }
}

impl RepoPattern {
    /// Compiles a pattern; `Err` says what is wrong with it.
    pub fn compile(source: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find('{') {
            let (text, after) = rest.split_at(open);
            let close = after
                .find('}')
                .ok_or_else(|| format!("{source:?}: '{{' without '}}'"))?;
            let name = &after[1..close];
            let ok_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !ok_name {
                return Err(format!(
                    "{source:?}: placeholder {{{name}}} must name a claim (letters, digits, '_', '-', '.'); \
                     there is no brace alternation, list several patterns instead"
                ));
            }
            if !text.is_empty() {
                parts.push(Part::Text(text.to_owned()));
            }
            parts.push(Part::Claim(name.to_owned()));
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{source:?}: '}}' without '{{'"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        for part in &parts {
            if let Part::Text(t) = part {
                jit_proto::glob::check(t).map_err(|e| format!("{source:?}: {e}"))?;
            }
        }
        // The shape must be a repository path once placeholders and globs stand for a name.
        let sample: String = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.replace('*', "x"),
                Part::Claim(_) => "x".to_owned(),
            })
            .collect();
        match RepoPath::parse(&sample) {
            Ok(p) if p.as_str() == sample => {}
            Ok(_) => return Err(format!("{source:?}: must not end in '.git'")),
            Err(e) => return Err(format!("{source:?} is not a repository pattern: {e}")),
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The pattern as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The claims the pattern's placeholders read.
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Claim(c) => Some(c.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The pattern with the identity's claims substituted (still possibly a glob). A
    /// substituted value must be a normal repository path, so it can never add `*` or `..`.
    pub fn substitute(
        &self,
        claims: &serde_json::Map<String, Value>,
    ) -> Result<String, SubstitutionFailure> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Claim(c) => {
                    let v = claims
                        .get(c)
                        .filter(|v| !v.is_null())
                        .ok_or_else(|| SubstitutionFailure::Missing(c.clone()))?;
                    let bad = || SubstitutionFailure::NotARepoPath(c.clone(), show_value(v));
                    let text = scalar_text(v).ok_or_else(bad)?;
                    match RepoPath::parse(&text) {
                        Ok(p) if p.as_str() == text => out.push_str(&text),
                        _ => return Err(bad()),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Whether `repo` matches the pattern for these claims.
    pub fn matches(
        &self,
        repo: &RepoPath,
        claims: &serde_json::Map<String, Value>,
    ) -> Result<bool, SubstitutionFailure> {
        Ok(glob_match(&self.substitute(claims)?, repo.as_str()))
    }
}

pub use jit_proto::glob::glob_match;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("refs/heads/main", "refs/heads/main"));
        assert!(!glob_match("refs/heads/main", "refs/heads/main2"));
        assert!(glob_match("refs/heads/*", "refs/heads/x"));
        assert!(!glob_match("refs/heads/*", "refs/heads/x/y"));
        assert!(glob_match("refs/heads/**", "refs/heads/x/y"));
        assert!(glob_match("*@example.com", "alice@example.com"));
        assert!(!glob_match("*@example.com", "alice@example.com.evil"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXbY"));
        assert!(glob_match("*", ""));
        let long = "a".repeat(5000);
        assert!(!glob_match("*a*a*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn repo_patterns_compile() {
        for good in [
            "acme/api",
            "acme/*",
            "acme/**",
            "{repository}",
            "acme/{team}-*",
        ] {
            assert!(RepoPattern::compile(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/acme",
            "acme/",
            "acme/../x",
            "acme/{",
            "acme/}",
            "acme/{}",
            "acme/{a b}",
            "acme/***",
            "acme/ap?",
            "acme/[ab]pi",
            "acme/api.git",
            "acme//x",
            "acme/%2e",
        ] {
            assert!(RepoPattern::compile(bad).is_err(), "{bad}");
        }
    }

    /// `(used in, pattern, text, Some(matches) or None when refused)` for each row of the
    /// examples table in `docs/patterns.md` (jit-proto's tests check the same rows).
    pub(crate) fn doc_examples() -> Vec<(String, String, String, Option<bool>)> {
        let md = include_str!("../../../docs/patterns.md");
        let table = md
            .split("<!-- examples:begin -->")
            .nth(1)
            .and_then(|t| t.split("<!-- examples:end -->").next())
            .expect("examples table");
        let cell = |c: &str| c.trim().trim_matches('`').to_owned();
        table
            .lines()
            .filter(|l| l.starts_with('|'))
            .skip(2)
            .map(|l| {
                let c: Vec<&str> = l.trim().trim_matches('|').split('|').collect();
                let outcome = match c[3].trim() {
                    "refused" => None,
                    yes_no => Some(yes_no == "yes"),
                };
                (cell(c[0]), cell(c[1]), cell(c[2]), outcome)
            })
            .collect()
    }

    #[test]
    fn documented_role_examples() {
        let rows = doc_examples();
        assert!(rows.iter().filter(|r| r.0 == "role").count() >= 5);
        for (used_in, pattern, text, outcome) in rows {
            if used_in != "role" {
                continue;
            }
            let got = RepoPattern::compile(&pattern).ok().map(|p| {
                p.matches(&RepoPath::parse(&text).expect("text"), &claims(json!({})))
                    .expect("no placeholders")
            });
            assert_eq!(got, outcome, "{pattern:?} against {text:?}");
        }
    }

    #[test]
    fn substitution_cannot_inject() {
        let p = RepoPattern::compile("{repository}").expect("pattern");
        let repo = RepoPath::parse("acme/api").expect("repo");
        assert_eq!(
            p.matches(&repo, &claims(json!({"repository": "acme/api"}))),
            Ok(true)
        );
        for evil in [
            "acme/*",
            "acme/**",
            "acme/../x",
            "*",
            "acme/api.git",
            "/acme/api",
        ] {
            assert!(
                p.matches(&repo, &claims(json!({ "repository": evil })))
                    .is_err(),
                "{evil}"
            );
        }
        assert_eq!(
            p.matches(&repo, &claims(json!({}))),
            Err(SubstitutionFailure::Missing("repository".into()))
        );
    }

    #[test]
    fn conditions() {
        let c = ClaimCondition::compile(
            "groups",
            &ConditionConfig::One(ScalarConfig::Str("git-*".into())),
        )
        .expect("compile");
        assert!(
            c.check(&claims(json!({"groups": ["x", "git-admins"]})))
                .is_ok()
        );
        assert!(c.check(&claims(json!({"groups": ["x"]}))).is_err());
        for refused in ["git-{a,b}*", "git-?*", "git-[ab]*", "git-***"] {
            let config = ConditionConfig::One(ScalarConfig::Str(refused.into()));
            let err = ClaimCondition::compile("groups", &config).expect_err(refused);
            assert!(err.contains(refused), "{err:?} does not name the pattern");
        }
        // Without '*' a value is exact, so these characters are plain text.
        let exact = ConditionConfig::One(ScalarConfig::Str("a?[b]{c}".into()));
        let e = ClaimCondition::compile("groups", &exact).expect("exact");
        assert!(e.check(&claims(json!({"groups": "a?[b]{c}"}))).is_ok());
        assert_eq!(
            c.check(&claims(json!({"other": 1}))),
            Err(ConditionFailure::Missing)
        );
        let b = ClaimCondition::compile(
            "ref_protected",
            &ConditionConfig::One(ScalarConfig::Bool(true)),
        )
        .expect("compile");
        assert!(b.check(&claims(json!({"ref_protected": true}))).is_ok());
        assert!(b.check(&claims(json!({"ref_protected": "true"}))).is_ok());
        assert!(b.check(&claims(json!({"ref_protected": false}))).is_err());
        let n = ClaimCondition::compile(
            "repository_owner_id",
            &ConditionConfig::One(ScalarConfig::Int(42)),
        )
        .expect("compile");
        assert!(
            n.check(&claims(json!({"repository_owner_id": "42"})))
                .is_ok()
        );
        assert!(n.check(&claims(json!({"repository_owner_id": 42}))).is_ok());
        assert!(
            n.check(&claims(json!({"repository_owner_id": 420})))
                .is_err()
        );
    }
}
