//! The access policy: roles declared in the config (`[[role]]`), compiled once into a
//! [`CompiledPolicy`] that can only exist valid, and the pure decision ([`decide`]) that turns
//! a verified identity and a request into a grant or a precise denial.
//!
//! A role says *who* may use it (one trusted issuer plus claim conditions, all of which must
//! hold), *what* it grants (repository patterns, actions, ref patterns for `write`), *for how
//! long* (default and maximum lifetime in minutes) and *on what terms* (reason required,
//! a person's approval, or break-glass: [`approval`]).

pub mod approval;
mod decide;
pub mod explain;
pub mod pattern;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

use jit_proto::{Action, Actions, RefPattern};

pub use approval::{ApprovalRule, Gate};
pub use decide::{
    Decision, Denial, DenialKind, Request, RoleVerdict, check_reason, decide, evaluate_all,
};
pub use pattern::{ClaimCondition, ConditionConfig, RepoPattern, ScalarConfig};

use crate::config::{IssuerConfig, valid_name};
pub use crate::config::{KeyProblem as PolicyError, RoleConfig, check_name};

/// Shortest lifetime a role may grant, in minutes.
pub const MIN_TTL_MINUTES: u32 = 1;
/// Longest lifetime a role may grant, in minutes (24 h, the store's bound).
pub const MAX_TTL_MINUTES: u32 = 1440;
/// `default_ttl` when a role does not set one (capped by its `max_ttl`).
pub const DEFAULT_TTL_MINUTES: u32 = 15;
/// `max_ttl` when a role does not set one.
pub const DEFAULT_MAX_TTL_MINUTES: u32 = 60;

/// One compiled role.
#[derive(Debug, Clone)]
pub struct CompiledRole {
    /// Unique name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The trusted issuer's name.
    pub issuer: String,
    /// Claim conditions, in claim-name order.
    pub conditions: Vec<ClaimCondition>,
    /// Repository patterns.
    pub repositories: Vec<RepoPattern>,
    /// Actions it may grant.
    pub actions: Actions,
    /// Ref patterns a write is limited to; empty: any ref.
    pub refs: Vec<RefPattern>,
    /// Lifetime when none is asked, minutes.
    pub default_ttl: u32,
    /// Longest lifetime, minutes.
    pub max_ttl: u32,
    /// Whether a reason is required.
    pub reason_required: bool,
    /// What stands between a decision and its token: nothing, approval, break-glass.
    pub gate: Gate,
    /// Who must approve, when `gate` is [`Gate::Approval`].
    pub approval: Option<ApprovalRule>,
}

impl CompiledRole {
    /// The order used to pick a role when a request names none: the *narrowest* first —
    /// fewest actions, then a role limited to refs before an unlimited one, then the
    /// shortest `max_ttl`, then fewest repository patterns, then the name.
    fn narrowness(&self) -> (usize, bool, u32, usize, &str) {
        (
            self.actions.iter().count(),
            self.refs.is_empty(),
            self.max_ttl,
            self.repositories.len(),
            &self.name,
        )
    }
}

/// The compiled policy: every role, valid, in config order.
#[derive(Debug, Clone, Default)]
pub struct CompiledPolicy {
    roles: Vec<CompiledRole>,
}

impl CompiledPolicy {
    /// Compiles the roles against the configured issuers.
    pub fn compile(issuers: &[IssuerConfig], roles: &[RoleConfig]) -> Result<Self, PolicyError> {
        let mut names = HashSet::new();
        let mut compiled = Vec::with_capacity(roles.len());
        for (i, r) in roles.iter().enumerate() {
            let role = compile_role(i, r, issuers)?;
            if !names.insert(role.name.clone()) {
                return Err(PolicyError {
                    key: format!("role[{i}].name"),
                    problem: format!("duplicate role name {:?}", role.name),
                });
            }
            compiled.push(role);
        }
        Ok(Self { roles: compiled })
    }

    /// The roles, in config order.
    pub fn roles(&self) -> &[CompiledRole] {
        &self.roles
    }

    /// The role called `name`.
    pub fn role(&self, name: &str) -> Option<&CompiledRole> {
        self.roles.iter().find(|r| r.name == name)
    }
}

/// Checks the identity and access sections of a config: issuers, roles, `[login]` and
/// `[exchange]`. Errors name the key.
pub fn check_config(config: &crate::config::Config) -> Result<CompiledPolicy, PolicyError> {
    crate::identity::validate_issuers(&config.issuer)?;
    let policy = CompiledPolicy::compile(&config.issuer, &config.role)?;
    if let Some(login) = &config.login {
        login.resolve(&config.issuer)?;
    }
    if let Some(key) = config.exchange.rate_limit.zero_key() {
        return Err(PolicyError {
            key: format!("exchange.rate_limit.{key}"),
            problem: "must be at least 1".into(),
        });
    }
    Ok(policy)
}

fn compile_role(
    i: usize,
    r: &RoleConfig,
    issuers: &[IssuerConfig],
) -> Result<CompiledRole, PolicyError> {
    let named = |field: &str| {
        if valid_name(&r.name) {
            format!("role {:?}.{field}", r.name)
        } else {
            format!("role[{i}].{field}")
        }
    };
    let err = |field: &str, problem: String| PolicyError {
        key: named(field),
        problem,
    };
    check_name(&format!("role[{i}].name"), &r.name)?;
    if !issuers.iter().any(|iss| iss.name == r.issuer) {
        let known: Vec<&str> = issuers.iter().map(|i| i.name.as_str()).collect();
        return Err(err(
            "issuer",
            format!(
                "no [[issuer]] is named {:?} (known: {})",
                r.issuer,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ));
    }
    let mut conditions = Vec::with_capacity(r.claims.len());
    for (claim, cond) in &r.claims {
        let c =
            ClaimCondition::compile(claim, cond).map_err(|p| err(&format!("claims.{claim}"), p))?;
        conditions.push(c);
    }
    if r.repositories.is_empty() {
        return Err(err("repositories", "must name at least one pattern".into()));
    }
    let mut repositories = Vec::with_capacity(r.repositories.len());
    for (j, p) in r.repositories.iter().enumerate() {
        repositories
            .push(RepoPattern::compile(p).map_err(|e| err(&format!("repositories[{j}]"), e))?);
    }
    let has = |a: Action| r.actions.contains(&a);
    let actions = match (has(Action::Read), has(Action::Write)) {
        (true, true) => Actions::READ_WRITE,
        (true, false) => Actions::READ,
        (false, true) => Actions::WRITE,
        (false, false) => return Err(err("actions", "must name read and/or write".into())),
    };
    if r.actions.len() != actions.iter().count() {
        return Err(err("actions", "names an action twice".into()));
    }
    let mut refs = Vec::with_capacity(r.refs.len());
    for (j, p) in r.refs.iter().enumerate() {
        refs.push(RefPattern::parse(p).map_err(|e| err(&format!("refs[{j}]"), e.to_string()))?);
    }
    if !refs.is_empty() && !actions.contains(Action::Write) {
        return Err(err(
            "refs",
            "ref patterns limit writes, but the role grants no write".into(),
        ));
    }
    let max_ttl = r.max_ttl.unwrap_or(DEFAULT_MAX_TTL_MINUTES);
    if !(MIN_TTL_MINUTES..=MAX_TTL_MINUTES).contains(&max_ttl) {
        return Err(err(
            "max_ttl",
            format!("{max_ttl} minutes is out of bounds ({MIN_TTL_MINUTES}..={MAX_TTL_MINUTES})"),
        ));
    }
    let default_ttl = r.default_ttl.unwrap_or(DEFAULT_TTL_MINUTES.min(max_ttl));
    if !(MIN_TTL_MINUTES..=max_ttl).contains(&default_ttl) {
        return Err(err(
            "default_ttl",
            format!(
                "{default_ttl} minutes is out of bounds ({MIN_TTL_MINUTES}..=max_ttl {max_ttl})"
            ),
        ));
    }
    let (gate, approval) = approval::compile(
        r.approval.as_ref(),
        r.approval_required,
        r.break_glass,
        max_ttl,
        issuers,
        &named,
    )?;
    Ok(CompiledRole {
        name: r.name.clone(),
        description: r.description.clone(),
        issuer: r.issuer.clone(),
        conditions,
        repositories,
        actions,
        refs,
        default_ttl,
        max_ttl,
        reason_required: r.reason_required || gate == Gate::BreakGlass,
        gate,
        approval,
    })
}
