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
    /// Whether a person must approve each request: implied by `[role.approval]`, which says
    /// who; `true` without it is a config error.
    #[serde(default)]
    pub approval_required: bool,
    /// `[role.approval]`: who must approve each request, how many of them, how long it may
    /// wait, how long its reason must be.
    #[serde(default)]
    pub approval: Option<ApprovalConfig>,
    /// A break-glass role: a request with a reason is approved by its requester at once, its
    /// lifetime is short (at most 60 minutes), the notifications are marked urgent and the
    /// grant is flagged for review. Only used when asked for by name.
    #[serde(default)]
    pub break_glass: bool,
}

/// `[role.approval]` as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    /// `[[role.approval.approvers]]`: who may approve; anyone matching one entry may.
    #[serde(default)]
    pub approvers: Vec<ApproverConfig>,
    /// Distinct approvals needed (1..=5). Default 1.
    #[serde(default)]
    pub required: Option<u8>,
    /// How long a request may wait for its approvals, in minutes (1..=1440). Default 30.
    #[serde(default)]
    pub wait: Option<u32>,
    /// The shortest reason accepted, in characters (0..=1024). Default 0 (none required
    /// unless `reason_required`).
    #[serde(default)]
    pub min_reason: Option<u16>,
}

/// One `[[role.approval.approvers]]` entry: identities of one issuer, named by subject or
/// by claim conditions (e.g. `groups = "sre"`: the `groups` claim contains `sre`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverConfig {
    /// The `[[issuer]]` name whose verified identities this entry matches.
    pub issuer: String,
    /// These subjects (exact). Empty: any subject meeting `claims`.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Claim conditions, all of which must hold (as in roles).
    #[serde(default)]
    pub claims: BTreeMap<String, ConditionConfig>,
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
