//! What a refused requester can run next: the `git jit request` command lines the exchange
//! appends to its refusals. One builder writes them all, so each is a command the CLI
//! accepts, quoted for a POSIX shell; the helper crate's table test parses every one with
//! the CLI's own parser. The policy stays pure: it says why, this module says what to do.

use std::fmt;

use jit_proto::approval::RequestId;
use jit_proto::{Action, Actions, RefPattern, RepoPath};

use crate::policy::{CompiledPolicy, CompiledRole, Decision, Denial, DenialKind, Gate, Request};

/// What a reason looks like in a suggested command: the person writes their own.
pub const REASON_PLACEHOLDER: &str = "…";

/// A `git jit request` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    /// `--repo`.
    pub repo: RepoPath,
    /// `--action`.
    pub actions: Actions,
    /// `--role`, when the line names one.
    pub role: Option<String>,
    /// `--refs` (one value holding every pattern).
    pub refs: Vec<RefPattern>,
    /// `--ttl`, minutes.
    pub ttl: Option<u32>,
    /// Whether the line asks for `--reason`.
    pub reason: bool,
}

impl RequestLine {
    /// The line that asks again for exactly `request` (without its reason's text).
    pub fn of(request: &Request) -> Self {
        Self {
            repo: request.scope.repo.clone(),
            actions: request.scope.actions,
            role: request.role.clone(),
            refs: request.refs.clone(),
            ttl: request.ttl,
            reason: request.reason.is_some(),
        }
    }

    /// The line that asks for a decision's grant under its role, with a reason.
    pub fn for_decision(d: &Decision) -> Self {
        Self {
            repo: d.scope.repo.clone(),
            actions: d.scope.actions,
            role: Some(d.role.clone()),
            refs: d.refs.clone(),
            ttl: None,
            reason: true,
        }
    }
}

impl fmt::Display for RequestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "git jit request --repo {} --action {}",
            quote(self.repo.as_str()),
            self.actions
        )?;
        if let Some(r) = &self.role {
            write!(f, " --role {}", quote(r))?;
        }
        if !self.refs.is_empty() {
            let refs: Vec<&str> = self.refs.iter().map(RefPattern::as_str).collect();
            write!(f, " --refs {}", quote(&refs.join(" ")))?;
        }
        if let Some(t) = self.ttl {
            write!(f, " --ttl {t}")?;
        }
        if self.reason {
            write!(f, " --reason \"{REASON_PLACEHOLDER}\"")?;
        }
        Ok(())
    }
}

/// `s` as one POSIX shell word: bare when it holds only characters no shell reads
/// specially, else single-quoted (a `'` inside becomes `'\''`).
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | ',' | ':'));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Whether `role` turns a request without a reason away (or files none).
fn wants_reason(role: &CompiledRole) -> bool {
    role.reason_required || role.gate != Gate::Open
}

/// The command that gets past `d`, a refusal of `request`, when the requester can do
/// anything about it: give a reason, ask for the role's lifetime or refs, name a
/// break-glass role, drop an unknown role. `None` when only a change of policy (or of
/// identity) helps: the identity or the scope is outside every role.
pub fn denial_hint(policy: &CompiledPolicy, d: &Denial, request: &Request) -> Option<RequestLine> {
    let mut line = RequestLine::of(request);
    let role = d.role.as_deref().and_then(|name| policy.role(name));
    match (d.kind, role) {
        (DenialKind::Reason | DenialKind::Approval, Some(r)) => {
            line.role = Some(r.name.clone());
            line.reason = true;
        }
        (DenialKind::Lifetime, Some(r)) => {
            line.role = Some(r.name.clone());
            line.ttl = Some(r.max_ttl);
            line.reason |= wants_reason(r);
        }
        (DenialKind::Refs, Some(r)) => {
            line.role = Some(r.name.clone());
            line.refs = r.refs.clone();
            line.reason |= wants_reason(r);
        }
        (DenialKind::UnknownRole, _) => line.role = None,
        (DenialKind::InvalidRequest, _) => {
            if line.ttl == Some(0) {
                line.ttl = None;
            }
            if !line.refs.is_empty() && !line.actions.contains(Action::Write) {
                line.actions = Actions::READ_WRITE;
            }
        }
        _ => return None,
    }
    Some(line)
}

/// The refusal's words with the command to run next, when there is one.
pub fn with_hint(message: &str, hint: Option<&RequestLine>) -> String {
    match hint {
        Some(h) => format!("{message}; run: {h}"),
        None => message.to_owned(),
    }
}

/// The command that collects the token of an approved request.
pub fn collect_line(id: &RequestId) -> String {
    format!("git jit request --wait {id}")
}
