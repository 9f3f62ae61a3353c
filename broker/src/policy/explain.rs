//! `jit-broker explain`: what the policy would answer for a set of claims, role by role, for
//! policy authors. The claims are taken as given (nothing is verified).

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::{Decision, Request, decide, evaluate_all};
use crate::config::Config;
use crate::identity::VerifiedIdentity;

/// The answer of `explain`.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The human report.
    pub report: String,
    /// Whether the request would be granted.
    pub granted: bool,
}

fn describe(d: &Decision) -> String {
    let mut s = format!("{} for {} min", d.scope, d.ttl_minutes);
    if !d.refs.is_empty() {
        let refs: Vec<&str> = d.refs.iter().map(|r| r.as_str()).collect();
        let _ = write!(s, ", refs {}", refs.join(" "));
    }
    s
}

/// The identity the claims describe: the issuer named `issuer`, or the one whose URL is the
/// claims' `iss`; the subject from its `subject_claim`.
pub fn identity_from_claims(
    config: &Config,
    claims: Map<String, Value>,
    issuer: Option<&str>,
) -> Result<VerifiedIdentity, String> {
    let iss = claims.get("iss").and_then(Value::as_str);
    let cfg = match issuer {
        Some(name) => config.issuer.iter().find(|i| i.name == name),
        None => config
            .issuer
            .iter()
            .find(|i| Some(i.issuer.as_str()) == iss),
    }
    .ok_or_else(|| match (issuer, iss) {
        (Some(name), _) => format!("no [[issuer]] is named {name:?}"),
        (None, Some(iss)) => {
            format!("no [[issuer]] has the claims' iss {iss:?} (or pass --issuer NAME)")
        }
        (None, None) => "the claims have no 'iss'; pass --issuer NAME".to_owned(),
    })?;
    let subject = claims
        .get(&cfg.subject_claim)
        .and_then(super::pattern::scalar_text)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            format!(
                "the claims have no '{}' (issuer {:?}'s subject claim)",
                cfg.subject_claim, cfg.name
            )
        })?;
    Ok(VerifiedIdentity {
        issuer: cfg.name.clone(),
        subject,
        claims,
    })
}

/// Explains the policy's answer to `request` from `identity` at `now` (seconds).
pub fn explain(
    config: &Config,
    identity: &VerifiedIdentity,
    request: &Request,
    now: i64,
) -> Result<Explanation, String> {
    let policy = super::check_config(config).map_err(|e| e.to_string())?;
    let mut r = String::new();
    let _ = writeln!(
        r,
        "identity: issuer '{}', subject '{}'",
        identity.issuer, identity.subject
    );
    let _ = writeln!(
        r,
        "request:  {}{}{}{}",
        request.scope,
        request
            .role
            .as_deref()
            .map(|x| format!(", role {x}"))
            .unwrap_or_default(),
        request
            .ttl
            .map(|t| format!(", ttl {t} min"))
            .unwrap_or_default(),
        if request.reason.is_some() {
            ", with a reason"
        } else {
            ", no reason"
        },
    );
    let width = policy
        .roles()
        .iter()
        .map(|x| x.name.len())
        .max()
        .unwrap_or(0);
    for v in evaluate_all(&policy, identity, request, now) {
        match &v.result {
            Ok(d) => {
                let _ = writeln!(r, "  grants  {:width$}  {}", v.role, describe(d));
            }
            Err(d) => {
                let _ = writeln!(r, "  no      {:width$}  {}", v.role, d.message);
            }
        }
    }
    let decision = decide(&policy, identity, request, now);
    match &decision {
        Ok(d) => {
            let _ = writeln!(
                r,
                "decision: granted under role '{}': {}",
                d.role,
                describe(d)
            );
        }
        Err(d) => {
            let _ = writeln!(r, "decision: refused: {}", d.message);
        }
    }
    Ok(Explanation {
        report: r,
        granted: decision.is_ok(),
    })
}
