//! The pure decision: (compiled policy, verified identity, request, now) → grant or denial.
//!
//! Rules, in the order a role is checked (the first that fails is the denial's reason):
//! 1. the identity comes from the role's issuer;
//! 2. every claim condition holds (a missing claim never matches);
//! 3. the repository matches one of the role's patterns (after `{claim}` substitution);
//! 4. the role grants every requested action;
//! 5. each requested ref pattern lies within the role's refs (when the role limits refs);
//! 6. the lifetime (requested, else the role's default) is at most the role's maximum —
//!    a longer request is refused, never shortened;
//! 7. a reason is given when the role requires one, at least as long as its approval rule
//!    (or break-glass) asks.
//!
//! A role that passes grants under its [`Gate`]: at once, after distinct people approved
//! ([`super::approval`]), or break-glass (approved by the requester at once, loudly).
//!
//! The granted scope is always exactly the requested scope. Refs: a write that names refs
//! gets exactly those; a write that names none under a role limited to refs is granted the
//! role's refs (a narrowing, never a widening); a request naming refs without `write` is
//! refused. With no role named, the narrowest role that grants the request is chosen (see
//! `CompiledRole::narrowness`); roles requiring approval are chosen only if nothing else
//! grants, and break-glass roles only when named.

use jit_proto::{Action, RefPattern, Scope};
use serde_json::{Map, Value};

use super::approval::{BREAK_GLASS_MIN_REASON, Gate};
use super::pattern::ConditionFailure;
use super::{CompiledPolicy, CompiledRole};
use crate::identity::VerifiedIdentity;

/// At most this many roles' reasons are listed in a denial when no role was named.
const LISTED_FAILURES: usize = 5;

/// What the requester asks for (already parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The one repository and its actions.
    pub scope: Scope,
    /// The role asked for; `None`: the narrowest role that grants the request.
    pub role: Option<String>,
    /// Lifetime in minutes; `None`: the role's default.
    pub ttl: Option<u32>,
    /// The requester's reason.
    pub reason: Option<String>,
    /// Ref patterns a write should be limited to.
    pub refs: Vec<RefPattern>,
}

/// A grant the policy allows: exactly the requested scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The role it is granted under.
    pub role: String,
    /// The scope: always the requested one.
    pub scope: Scope,
    /// Ref patterns the write is limited to (empty: any ref, or no write).
    pub refs: Vec<RefPattern>,
    /// Lifetime in minutes.
    pub ttl_minutes: u32,
    /// Issued at (seconds).
    pub iat: i64,
    /// Expires at (seconds).
    pub exp: i64,
    /// The reason given, if any.
    pub reason: Option<String>,
    /// The identity's claims the role's conditions and patterns read (for the audit).
    pub deciding_claims: Map<String, Value>,
    /// What stands between this decision and its token.
    pub gate: Gate,
}

/// What kind of rule refused a request (chooses the OAuth error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialKind {
    /// The request itself is inconsistent (refs without write, zero lifetime).
    InvalidRequest,
    /// The named role does not exist.
    UnknownRole,
    /// The identity's issuer or claims do not satisfy the role.
    Identity,
    /// The repository or actions are outside the role.
    Scope,
    /// The requested refs are outside the role's refs.
    Refs,
    /// The lifetime exceeds the role's maximum.
    Lifetime,
    /// The role requires a reason and none was given.
    Reason,
    /// A break-glass role that was not asked for by name.
    Approval,
    /// No role grants the request, for various reasons.
    NoRole,
}

/// A refusal with a precise, safe message (it names roles, claims and patterns).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denial {
    /// Which rule refused.
    pub kind: DenialKind,
    /// The role concerned, when one was.
    pub role: Option<String>,
    /// What failed.
    pub message: String,
}

/// One role's answer to a request (for `explain`).
#[derive(Debug, Clone)]
pub struct RoleVerdict {
    /// The role.
    pub role: String,
    /// Its grant, or the first condition that failed.
    pub result: Result<Decision, Denial>,
}

/// Decides a request. Pure: no I/O; `now` is seconds since the epoch.
pub fn decide(
    policy: &CompiledPolicy,
    identity: &VerifiedIdentity,
    request: &Request,
    now: i64,
) -> Result<Decision, Denial> {
    check_request(request)?;
    if let Some(name) = &request.role {
        let role = policy.role(name).ok_or_else(|| Denial {
            kind: DenialKind::UnknownRole,
            role: Some(name.clone()),
            message: format!("no role is named '{name}'"),
        })?;
        return check_role(role, identity, request, now);
    }
    let mut verdicts = evaluate_all(policy, identity, request, now);
    // Break-glass is never chosen for anyone: it must be asked for by name.
    for v in &mut verdicts {
        if matches!(&v.result, Ok(d) if d.gate == Gate::BreakGlass) {
            v.result = Err(Denial {
                kind: DenialKind::Approval,
                role: Some(v.role.clone()),
                message: format!(
                    "role '{}' is break-glass: it is used only when asked for by name, with a reason",
                    v.role
                ),
            });
        }
    }
    // Self-serve first; a role that needs a person's yes only when nothing else grants.
    let best = verdicts
        .iter()
        .filter_map(|v| v.result.as_ref().ok().map(|d| (v, d)))
        .filter_map(|(v, d)| policy.role(&v.role).map(|r| (r, d)))
        .min_by(|(a, x), (b, y)| {
            (x.gate != Gate::Open, a.narrowness()).cmp(&(y.gate != Gate::Open, b.narrowness()))
        });
    if let Some((_, decision)) = best {
        return Ok(decision.clone());
    }
    let failures: Vec<&Denial> = verdicts
        .iter()
        .filter_map(|v| v.result.as_ref().err())
        .collect();
    // Roles of other issuers say nothing useful to this requester. The others are listed
    // by how far they got, so the most actionable reason comes first; a single role that
    // got past identity and scope alone (e.g. "requires a reason") is the whole answer.
    let mut relevant: Vec<&Denial> = policy
        .roles()
        .iter()
        .zip(&failures)
        .filter(|(r, _)| r.issuer == identity.issuer)
        .map(|(_, d)| *d)
        .collect();
    relevant.sort_by_key(|d| std::cmp::Reverse(stage(d.kind)));
    if let [first, rest @ ..] = relevant.as_slice() {
        let top = stage(first.kind);
        if top > stage(DenialKind::Scope) && rest.iter().all(|d| stage(d.kind) < top) {
            return Err((*first).clone());
        }
    }
    match relevant.as_slice() {
        [] => Err(Denial {
            kind: DenialKind::Identity,
            role: None,
            message: format!(
                "no role accepts identities from issuer '{}'",
                identity.issuer
            ),
        }),
        [one] => Err((*one).clone()),
        many => {
            let kind = if many.iter().all(|d| d.kind == many[0].kind) {
                many[0].kind
            } else {
                DenialKind::NoRole
            };
            let mut listed: Vec<&str> = many
                .iter()
                .take(LISTED_FAILURES)
                .map(|d| d.message.as_str())
                .collect();
            let more = many.len().saturating_sub(LISTED_FAILURES);
            let tail = format!("and {more} more");
            if more > 0 {
                listed.push(&tail);
            }
            Err(Denial {
                kind,
                role: None,
                message: format!(
                    "no role grants {} to this identity: {}",
                    request.scope,
                    listed.join("; ")
                ),
            })
        }
    }
}

/// Every role's answer to the request, in config order (for `explain`).
pub fn evaluate_all(
    policy: &CompiledPolicy,
    identity: &VerifiedIdentity,
    request: &Request,
    now: i64,
) -> Vec<RoleVerdict> {
    policy
        .roles()
        .iter()
        .map(|role| RoleVerdict {
            role: role.name.clone(),
            result: check_request(request).and_then(|()| check_role(role, identity, request, now)),
        })
        .collect()
}

/// How far a role's check got before it failed (see the order in the module docs).
fn stage(kind: DenialKind) -> u8 {
    match kind {
        DenialKind::InvalidRequest | DenialKind::UnknownRole | DenialKind::NoRole => 0,
        DenialKind::Identity => 1,
        DenialKind::Scope => 2,
        DenialKind::Refs => 3,
        DenialKind::Lifetime => 4,
        DenialKind::Reason => 5,
        DenialKind::Approval => 6,
    }
}

fn check_request(request: &Request) -> Result<(), Denial> {
    let invalid = |message: &str| Denial {
        kind: DenialKind::InvalidRequest,
        role: None,
        message: message.to_owned(),
    };
    if request.ttl == Some(0) {
        return Err(invalid("a lifetime must be at least one minute"));
    }
    if !request.refs.is_empty() && !request.scope.actions.contains(Action::Write) {
        return Err(invalid(
            "refs limit a write, but the scope asks for no write",
        ));
    }
    Ok(())
}

fn check_role(
    role: &CompiledRole,
    identity: &VerifiedIdentity,
    request: &Request,
    now: i64,
) -> Result<Decision, Denial> {
    let deny = |kind: DenialKind, message: String| Denial {
        kind,
        role: Some(role.name.clone()),
        message,
    };
    let name = &role.name;
    if role.issuer != identity.issuer {
        return Err(deny(
            DenialKind::Identity,
            format!(
                "role '{name}' accepts identities from issuer '{}', not '{}'",
                role.issuer, identity.issuer
            ),
        ));
    }
    for cond in &role.conditions {
        let claim = cond.claim();
        match cond.check(&identity.claims) {
            Ok(()) => {}
            Err(ConditionFailure::Missing) => {
                return Err(deny(
                    DenialKind::Identity,
                    format!("role '{name}': claim '{claim}' is missing from the identity"),
                ));
            }
            Err(ConditionFailure::Mismatch(shown)) => {
                return Err(deny(
                    DenialKind::Identity,
                    format!(
                        "role '{name}': claim '{claim}' = {shown} does not match {}",
                        cond.expected()
                    ),
                ));
            }
        }
    }
    let repo = &request.scope.repo;
    let mut shown = Vec::with_capacity(role.repositories.len());
    let mut matched = false;
    for p in &role.repositories {
        match p.matches(repo, &identity.claims) {
            Ok(true) => {
                matched = true;
                break;
            }
            Ok(false) if p.claims().next().is_some() => match p.substitute(&identity.claims) {
                Ok(s) => shown.push(format!("{} (= {s})", p.source())),
                Err(e) => shown.push(format!("{} ({e})", p.source())),
            },
            Ok(false) => shown.push(p.source().to_owned()),
            Err(e) => shown.push(format!("{} ({e})", p.source())),
        }
    }
    if !matched {
        return Err(deny(
            DenialKind::Scope,
            format!(
                "repository '{repo}' does not match any of role '{name}' patterns: {}",
                shown.join(", ")
            ),
        ));
    }
    if !role.actions.covers(request.scope.actions) {
        return Err(deny(
            DenialKind::Scope,
            format!(
                "role '{name}' grants {} on '{repo}', not {}",
                role.actions, request.scope.actions
            ),
        ));
    }
    let writes = request.scope.actions.contains(Action::Write);
    if !role.refs.is_empty() {
        for r in &request.refs {
            if !role.refs.iter().any(|outer| r.within(outer)) {
                return Err(deny(
                    DenialKind::Refs,
                    format!(
                        "role '{name}': ref pattern '{r}' is not within the role's refs: {}",
                        join(&role.refs)
                    ),
                ));
            }
        }
    }
    let refs = match (writes, request.refs.is_empty()) {
        (false, _) => Vec::new(),
        (true, true) => role.refs.clone(),
        (true, false) => request.refs.clone(),
    };
    let ttl = request.ttl.unwrap_or(role.default_ttl);
    if ttl > role.max_ttl {
        return Err(deny(
            DenialKind::Lifetime,
            format!(
                "role '{name}': a lifetime of {ttl} minutes exceeds its maximum of {} minutes",
                role.max_ttl
            ),
        ));
    }
    let reason = request
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    // A role that needs approval asks for the reason when a request is filed
    // ([`check_reason`]): an exchange that does not file one is told how to ask instead.
    if role.gate != Gate::Approval {
        check_reason(role, reason).map_err(|m| deny(DenialKind::Reason, m))?;
    }
    let mut deciding_claims = Map::new();
    let names = role
        .conditions
        .iter()
        .map(|c| c.claim())
        .chain(role.repositories.iter().flat_map(|p| p.claims()));
    for c in names {
        if let Some(v) = identity.claims.get(c) {
            deciding_claims.insert(c.to_owned(), v.clone());
        }
    }
    Ok(Decision {
        role: name.clone(),
        scope: request.scope.clone(),
        refs,
        ttl_minutes: ttl,
        iat: now,
        exp: now.saturating_add(i64::from(ttl) * 60),
        reason: reason.map(str::to_owned),
        deciding_claims,
        gate: role.gate,
    })
}

/// Whether `reason` (trimmed) satisfies `role`: given when required, at least as long as
/// its approval rule (or break-glass) asks. The refusal's message otherwise.
pub fn check_reason(role: &CompiledRole, reason: Option<&str>) -> Result<(), String> {
    let name = &role.name;
    if role.reason_required && reason.is_none() {
        return Err(format!("role '{name}' requires a reason"));
    }
    let min_reason = match role.gate {
        Gate::Open => 0,
        Gate::Approval => role.approval.as_ref().map_or(0, |a| a.min_reason),
        Gate::BreakGlass => BREAK_GLASS_MIN_REASON,
    };
    let given = reason.map_or(0, |r| r.chars().count());
    if given < usize::from(min_reason) {
        return Err(format!(
            "role '{name}' requires a reason of at least {min_reason} characters ({given} given)"
        ));
    }
    Ok(())
}

fn join(refs: &[RefPattern]) -> String {
    refs.iter()
        .map(RefPattern::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
