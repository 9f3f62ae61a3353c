//! Who must say yes before a role grants: `[role.approval]` compiled, and the rules that make
//! an approval count.
//!
//! An approval counts when the approver matches one of the role's approver entries (issuer
//! plus subjects or claim conditions) and is not the requester. "Not the requester" is read
//! strictly: the same subject under *any* issuer, or the same verified email address, is the
//! same person; and one person counts once however many accounts or issuers they approve
//! through.

use jit_proto::exchange::MAX_REASON_LEN;
use serde_json::{Map, Value};

use super::PolicyError;
use super::pattern::ClaimCondition;
use crate::config::IssuerConfig;
use crate::config::{ApprovalConfig, ApproverConfig};

/// Most distinct approvals a role may require.
pub const MAX_REQUIRED: u8 = 5;
/// How long a request waits for approval when the role does not say, in minutes.
pub const DEFAULT_WAIT_MINUTES: u32 = 30;
/// Longest a request may wait, in minutes.
pub const MAX_WAIT_MINUTES: u32 = 1440;
/// Longest lifetime of a break-glass role, in minutes.
pub const MAX_BREAK_GLASS_TTL: u32 = 60;
/// Shortest reason a break-glass request must give, in characters, when the role asks no
/// longer one.
pub const BREAK_GLASS_MIN_REASON: u16 = 10;

/// What stands between a role's decision and its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gate {
    /// Nothing: the token is issued at once.
    #[default]
    Open,
    /// Distinct people must approve first.
    Approval,
    /// Approved by the requester at once, loudly.
    BreakGlass,
}

/// One approver entry, compiled.
#[derive(Debug, Clone)]
pub struct Approver {
    /// The trusted issuer's name.
    pub issuer: String,
    /// Exact subjects; empty: any subject meeting the conditions.
    pub subjects: Vec<String>,
    /// Claim conditions, all of which must hold.
    pub conditions: Vec<ClaimCondition>,
}

impl Approver {
    /// Whether a verified identity of `issuer` with `subject` and `claims` matches.
    pub fn matches(&self, issuer: &str, subject: &str, claims: &Map<String, Value>) -> bool {
        self.issuer == issuer
            && (self.subjects.is_empty() || self.subjects.iter().any(|s| s == subject))
            && self.conditions.iter().all(|c| c.check(claims).is_ok())
    }

    /// The entry for people: `bob (corp)`, `groups contains 'sre' (corp)`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if !self.subjects.is_empty() {
            parts.push(self.subjects.join(" or "));
        }
        for c in &self.conditions {
            parts.push(format!("{} contains {}", c.claim(), c.expected()));
        }
        format!("{} ({})", parts.join(" and "), self.issuer)
    }
}

/// `[role.approval]`, compiled.
#[derive(Debug, Clone)]
pub struct ApprovalRule {
    /// Who may approve.
    pub approvers: Vec<Approver>,
    /// Distinct approvals needed.
    pub required: u8,
    /// How long a request may wait, in minutes.
    pub wait_minutes: u32,
    /// The shortest reason accepted, in characters.
    pub min_reason: u16,
}

impl ApprovalRule {
    /// Whether this identity may approve under the rule (own requests aside).
    pub fn may_approve(&self, issuer: &str, subject: &str, claims: &Map<String, Value>) -> bool {
        self.approvers
            .iter()
            .any(|a| a.matches(issuer, subject, claims))
    }

    /// Whether a broker token's holder (no claims but its subject and issuer) may approve:
    /// only entries that name subjects and set no claim conditions can say.
    pub fn may_approve_by_name(&self, issuer: &str, subject: &str) -> bool {
        self.approvers.iter().any(|a| {
            a.issuer == issuer && a.conditions.is_empty() && a.subjects.iter().any(|s| s == subject)
        })
    }

    /// Who may approve, for people.
    pub fn describe(&self) -> Vec<String> {
        self.approvers.iter().map(Approver::describe).collect()
    }
}

/// Compiles a role's `[role.approval]` and `break_glass`, refusing rules nobody can satisfy.
/// `field` names a key of the role for errors; `max_ttl` is the role's.
pub fn compile(
    approval: Option<&ApprovalConfig>,
    approval_required: bool,
    break_glass: bool,
    max_ttl: u32,
    issuers: &[IssuerConfig],
    field: &dyn Fn(&str) -> String,
) -> Result<(Gate, Option<ApprovalRule>), PolicyError> {
    let err = |key: &str, problem: String| PolicyError {
        key: field(key),
        problem,
    };
    match (approval, approval_required, break_glass) {
        (_, _, true) => {
            if approval.is_some() || approval_required {
                return Err(err(
                    "break_glass",
                    "a break-glass role is approved by its requester at once; it cannot also need [role.approval]".into(),
                ));
            }
            if max_ttl > MAX_BREAK_GLASS_TTL {
                return Err(err(
                    "max_ttl",
                    format!(
                        "a break-glass role may grant at most {MAX_BREAK_GLASS_TTL} minutes (set max_ttl to {MAX_BREAK_GLASS_TTL} or less)"
                    ),
                ));
            }
            Ok((Gate::BreakGlass, None))
        }
        (None, true, false) => Err(err(
            "approval_required",
            "needs [role.approval] naming who may approve (approvers, required)".into(),
        )),
        (None, false, false) => Ok((Gate::Open, None)),
        (Some(a), _, false) => {
            let rule = compile_rule(a, issuers, &|k| field(&format!("approval.{k}")))?;
            Ok((Gate::Approval, Some(rule)))
        }
    }
}

fn compile_rule(
    a: &ApprovalConfig,
    issuers: &[IssuerConfig],
    field: &dyn Fn(&str) -> String,
) -> Result<ApprovalRule, PolicyError> {
    let err = |key: &str, problem: String| PolicyError {
        key: field(key),
        problem,
    };
    let required = a.required.unwrap_or(1);
    if !(1..=MAX_REQUIRED).contains(&required) {
        return Err(err(
            "required",
            format!("{required} is out of bounds (1..={MAX_REQUIRED})"),
        ));
    }
    let wait_minutes = a.wait.unwrap_or(DEFAULT_WAIT_MINUTES);
    if !(1..=MAX_WAIT_MINUTES).contains(&wait_minutes) {
        return Err(err(
            "wait",
            format!("{wait_minutes} minutes is out of bounds (1..={MAX_WAIT_MINUTES})"),
        ));
    }
    let min_reason = a.min_reason.unwrap_or(0);
    if usize::from(min_reason) > MAX_REASON_LEN {
        return Err(err(
            "min_reason",
            format!("{min_reason} is longer than any reason may be ({MAX_REASON_LEN} bytes)"),
        ));
    }
    if a.approvers.is_empty() {
        return Err(err(
            "approvers",
            "names nobody: add [[role.approval.approvers]] entries (issuer plus subjects or claims)"
                .into(),
        ));
    }
    let approvers = a
        .approvers
        .iter()
        .enumerate()
        .map(|(j, c)| compile_approver(c, issuers, &|k| field(&format!("approvers[{j}].{k}"))))
        .collect::<Result<Vec<_>, _>>()?;
    // Only entries naming subjects without conditions bound the number of people; any entry
    // with claim conditions (a group) may match any number.
    if approvers.iter().all(|a| !a.subjects.is_empty()) {
        let mut people: Vec<&str> = approvers
            .iter()
            .flat_map(|a| a.subjects.iter().map(String::as_str))
            .collect();
        people.sort_unstable();
        people.dedup();
        if people.len() < usize::from(required) {
            return Err(err(
                "required",
                format!(
                    "{required} distinct approvals can never be given: the approvers name only {} person(s), and nobody approves their own request",
                    people.len()
                ),
            ));
        }
    }
    Ok(ApprovalRule {
        approvers,
        required,
        wait_minutes,
        min_reason,
    })
}

fn compile_approver(
    c: &ApproverConfig,
    issuers: &[IssuerConfig],
    field: &dyn Fn(&str) -> String,
) -> Result<Approver, PolicyError> {
    let err = |key: &str, problem: String| PolicyError {
        key: field(key),
        problem,
    };
    if !issuers.iter().any(|i| i.name == c.issuer) {
        return Err(err(
            "issuer",
            format!("no [[issuer]] is named {:?}", c.issuer),
        ));
    }
    if c.subjects.is_empty() && c.claims.is_empty() {
        return Err(err(
            "subjects",
            "names neither subjects nor claims: every identity of the issuer would approve".into(),
        ));
    }
    if let Some(s) = c.subjects.iter().find(|s| s.trim().is_empty()) {
        return Err(err("subjects", format!("{s:?} is not a subject")));
    }
    let conditions = c
        .claims
        .iter()
        .map(|(claim, cond)| {
            ClaimCondition::compile(claim, cond).map_err(|p| err(&format!("claims.{claim}"), p))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Approver {
        issuer: c.issuer.clone(),
        subjects: c.subjects.clone(),
        conditions,
    })
}

/// A person as far as approvals are concerned: their subject, issuer and verified email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person<'a> {
    /// The verified subject.
    pub subject: &'a str,
    /// The trusted issuer's name.
    pub issuer: &'a str,
    /// The verified email address, lower-cased, when the issuer vouched for one.
    pub email: Option<&'a str>,
}

impl Person<'_> {
    /// Whether the two are (or may be) the same person: the same subject under any issuer,
    /// or the same verified email.
    pub fn same_as(&self, other: &Person<'_>) -> bool {
        self.subject == other.subject
            || matches!((self.email, other.email), (Some(a), Some(b)) if a == b)
    }
}

/// The verified email address of an identity's claims, lower-cased: `email` when
/// `email_verified` is `true` (a boolean, or the string `"true"` some issuers send).
pub fn verified_email(claims: &Map<String, Value>) -> Option<String> {
    let verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    let email = claims.get("email")?.as_str()?.trim();
    (verified && email.contains('@') && !email.is_empty()).then(|| email.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn same_person_across_issuers_and_by_verified_email() {
        let alice = Person {
            subject: "alice",
            issuer: "corp",
            email: Some("alice@acme.test"),
        };
        let alice_elsewhere = Person {
            subject: "alice",
            issuer: "github",
            email: None,
        };
        let alice_second_account = Person {
            subject: "a.smith",
            issuer: "corp",
            email: Some("alice@acme.test"),
        };
        let bob = Person {
            subject: "bob",
            issuer: "corp",
            email: Some("bob@acme.test"),
        };
        let unverified = Person {
            subject: "bob2",
            issuer: "corp",
            email: None,
        };
        assert!(alice.same_as(&alice_elsewhere));
        assert!(alice.same_as(&alice_second_account));
        assert!(!alice.same_as(&bob));
        assert!(!alice.same_as(&unverified));
    }

    #[test]
    fn only_verified_emails_count() {
        let e = |v| verified_email(&claims(v));
        assert_eq!(
            e(json!({"email": "Alice@Acme.test", "email_verified": true})).as_deref(),
            Some("alice@acme.test")
        );
        assert_eq!(
            e(json!({"email": "a@b", "email_verified": "true"})).as_deref(),
            Some("a@b")
        );
        assert_eq!(e(json!({"email": "a@b", "email_verified": false})), None);
        assert_eq!(e(json!({"email": "a@b"})), None);
        assert_eq!(e(json!({"email": "nobody", "email_verified": true})), None);
        assert_eq!(e(json!({"email": 7, "email_verified": true})), None);
    }
}
