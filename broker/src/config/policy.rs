//! `[[role]]`: who may get which access, as written in the config file. Plain data;
//! [`crate::policy`] compiles it into a policy that can only exist valid.

use std::collections::BTreeMap;

use jit_proto::Action;
use serde::Deserialize;

use super::KeyProblem;

/// A `[[role]]` entry as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// Unique name (`[A-Za-z0-9_.-]+`), used in requests (`role=`), tokens and audit events.
    pub name: String,
    /// What the role is for, shown by `explain`.
    #[serde(default)]
    pub description: String,
    /// The `name` of the `[[issuer]]` whose identities may use the role.
    pub issuer: String,
    /// Claim conditions, all of which must hold: `claim = "exact"`, `claim = "glob*"`,
    /// `claim = true`, `claim = 42`, or a list of alternatives. A missing claim never matches;
    /// an array claim (e.g. `groups`) matches when any element does. A value containing `*`
    /// is a pattern in the dialect of `docs/patterns.md`.
    #[serde(default)]
    pub claims: BTreeMap<String, ConditionConfig>,
    /// Repository patterns (`acme/api`, `acme/*`, `acme/**`, `{repository}`); `{claim}` is
    /// replaced by the identity's claim, which must itself be a repository path. Dialect and
    /// examples: `docs/patterns.md`.
    pub repositories: Vec<String>,
    /// Actions the role may grant: `read`, `write`.
    pub actions: Vec<Action>,
    /// Ref patterns a `write` is limited to (`refs/heads/main`, `refs/tags/v*`); empty: any.
    /// Dialect and examples: `docs/patterns.md`.
    #[serde(default)]
    pub refs: Vec<String>,
    /// Lifetime when the request names none, in minutes. Default 15 (at most `max_ttl`).
    #[serde(default)]
    pub default_ttl: Option<u32>,
    /// Longest lifetime that may be requested, in minutes (1..=1440). Default 60.
    #[serde(default)]
    pub max_ttl: Option<u32>,
    /// Whether a request must give a reason.
    #[serde(default)]
    pub reason_required: bool,
    /// Whether a person must approve each request. Not available in this version: requests
    /// under such a role are refused, saying so.
    #[serde(default)]
    pub approval_required: bool,
}

/// A claim value as written in the config: a string (exact or glob), a bool or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ScalarConfig {
    /// `true` / `false`, compared with the claim's string form.
    Bool(bool),
    /// An integer, compared with the claim's string form.
    Int(i64),
    /// Exact, or a glob when it contains `*`.
    Str(String),
}

/// A claim condition as written in the config: one value, or a list of alternatives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ConditionConfig {
    /// The claim must match this value.
    One(ScalarConfig),
    /// The claim must match one of these values.
    AnyOf(Vec<ScalarConfig>),
}

pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Checks a name used as a key (`issuer[0].name`, `role[1].name`).
pub fn check_name(key: &str, name: &str) -> Result<(), KeyProblem> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(KeyProblem {
            key: key.to_owned(),
            problem: format!("{name:?} must be 1-64 characters of A-Z a-z 0-9 _ - ."),
        })
    }
}
