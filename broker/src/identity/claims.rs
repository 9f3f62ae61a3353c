//! What makes a signed token an identity token of a trusted issuer: its JOSE `typ` (not an
//! access, logout or security-event token the same issuer signs with the same keys), `iss`,
//! `aud` and `azp` (OpenID Connect Core §3.1.3.7), and its time claims — bounded
//! NumericDates ([`jit_proto::time`]) checked before any arithmetic, with [`LEEWAY_SECS`] of
//! clock skew.

use jit_proto::time::numeric_date;
use serde_json::{Map, Value};

use super::{IdentityError, IssuerConfig, LEEWAY_SECS, shown};
use crate::config::KeyProblem;

/// `typ` values (normalised by [`normalise_typ`]) of tokens that are never identity tokens,
/// with what they are. An issuer signs these with the same keys as its ID tokens, often with
/// the same `iss` and an `aud` that may be the client id.
const NOT_IDENTITY_TYPES: &[(&str, &str)] = &[
    ("at+jwt", "an OAuth access token (RFC 9068)"),
    (
        "logout+jwt",
        "a logout token (OpenID Connect Back-Channel Logout)",
    ),
    ("secevent+jwt", "a security event token (RFC 8417)"),
    ("dpop+jwt", "a DPoP proof (RFC 9449)"),
    (
        "token-introspection+jwt",
        "an introspection response (RFC 9701)",
    ),
    (
        "oauth-authz-req+jwt",
        "an authorization request object (RFC 9101)",
    ),
    ("jit+jwt", "a git-jit token"),
];

/// A `typ` value as RFC 7515 §4.1.9 compares it: media types ignore case, and a value without
/// a `/` means `application/<value>`.
pub(super) fn normalise_typ(typ: &str) -> String {
    let lower = typ.trim().to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(short) if !short.contains('/') => short.to_owned(),
        _ => lower,
    }
}

/// What a non-identity `typ` is, when it is one.
fn not_identity(typ: &str) -> Option<&'static str> {
    let t = normalise_typ(typ);
    NOT_IDENTITY_TYPES
        .iter()
        .find(|(known, _)| *known == t)
        .map(|(_, what)| *what)
}

/// Checks `accepted_typ` of the issuer at `key` (`issuer[0].accepted_typ`).
pub(super) fn validate_accepted_typ(key: &str, accepted: &[String]) -> Result<(), KeyProblem> {
    let err = |problem: String| KeyProblem {
        key: key.to_owned(),
        problem,
    };
    if accepted.is_empty() {
        return Err(err(
            "must name at least one type (the default is [\"JWT\"])".into(),
        ));
    }
    for t in accepted {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
            return Err(err(format!(
                "{t:?} is not a media type (printable ASCII, no spaces or quotes)"
            )));
        }
        if let Some(what) = not_identity(t) {
            return Err(err(format!(
                "{t:?} is the type of {what}, never an identity token; remove it"
            )));
        }
    }
    Ok(())
}

/// Checks the header's `typ` against the issuer's `accepted_typ` and `require_typ`.
pub(super) fn check_typ(cfg: &IssuerConfig, typ: Option<&str>) -> Result<(), IdentityError> {
    let refused = |shown_typ: String| IdentityError::TokenType {
        issuer: cfg.name.clone(),
        typ: shown_typ,
        accepted: cfg.accepted_typ.join(", "),
    };
    let Some(typ) = typ else {
        return if cfg.require_typ {
            Err(refused("(none)".into()))
        } else {
            Ok(())
        };
    };
    // Never an identity token, whatever the configuration says.
    if let Some(what) = not_identity(typ) {
        return Err(IdentityError::NotIdentityToken {
            typ: shown(typ),
            what,
        });
    }
    let t = normalise_typ(typ);
    if cfg.accepted_typ.iter().any(|a| normalise_typ(a) == t) {
        Ok(())
    } else {
        Err(refused(shown(typ)))
    }
}

/// A time claim: absent, or a NumericDate in range.
fn time_claim(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, IdentityError> {
    claims
        .get(name)
        .map(|v| numeric_date(v).map_err(|why| IdentityError::BadTime { claim: name, why }))
        .transpose()
}

/// Checks `aud` (contains the configured audience) and `azp`: with several audiences it
/// must be present, and when present it must name the audience or the issuer's client id.
fn check_audience(cfg: &IssuerConfig, claims: &Map<String, Value>) -> Result<(), IdentityError> {
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&cfg.audience.as_str()) {
        return Err(IdentityError::Audience(cfg.audience.clone()));
    }
    let several = matches!(claims.get("aud"), Some(Value::Array(list)) if list.len() > 1);
    let ours = |azp: &str| azp == cfg.audience || cfg.client_id.as_deref() == Some(azp);
    match claims.get("azp") {
        None if several => Err(IdentityError::MissingAzp(cfg.audience.clone())),
        None => Ok(()),
        Some(Value::String(azp)) if ours(azp) => Ok(()),
        Some(Value::String(azp)) => Err(IdentityError::AuthorizedParty {
            azp: shown(azp),
            expected: cfg.audience.clone(),
        }),
        Some(_) => Err(IdentityError::AuthorizedParty {
            azp: "(not a string)".into(),
            expected: cfg.audience.clone(),
        }),
    }
}

/// Checks `iss`, `aud`/`azp`, the token kind and the time claims of verified claims at `now`
/// (seconds).
pub(super) fn check_claims(
    cfg: &IssuerConfig,
    claims: &Map<String, Value>,
    now: i64,
) -> Result<(), IdentityError> {
    if claims.get("iss").and_then(Value::as_str) != Some(cfg.issuer.as_str()) {
        return Err(IdentityError::Issuer(cfg.issuer.clone()));
    }
    check_audience(cfg, claims)?;
    // Logout tokens and other security event tokens carry `events` (RFC 8417 §2.2), even
    // when their issuer leaves out the `typ` that would name them.
    if claims.contains_key("events") {
        return Err(IdentityError::NotIdentityToken {
            typ: "(an 'events' claim)".into(),
            what: "a security event or logout token (RFC 8417)",
        });
    }
    // Every time claim is checked for range before any of them is compared.
    let exp = time_claim(claims, "exp")?.ok_or(IdentityError::MissingTime("exp"))?;
    let nbf = time_claim(claims, "nbf")?;
    let iat = time_claim(claims, "iat")?;
    let auth_time = time_claim(claims, "auth_time")?;
    // All values are within 0..=year 9999 and `now` is a clock reading: no overflow.
    if now >= exp.saturating_add(LEEWAY_SECS) {
        return Err(IdentityError::Expired);
    }
    if nbf.is_some_and(|nbf| now.saturating_add(LEEWAY_SECS) < nbf) {
        return Err(IdentityError::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > now.saturating_add(LEEWAY_SECS)) {
        return Err(IdentityError::IssuedInFuture("iat"));
    }
    // `auth_time` decides whether a revocation covers the identity: one in the future would
    // outlive every revocation.
    if auth_time.is_some_and(|t| t > now.saturating_add(LEEWAY_SECS)) {
        return Err(IdentityError::IssuedInFuture("auth_time"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_values_compare_as_media_types() {
        for (a, b) in [
            ("JWT", "jwt"),
            ("application/jwt", "JWT"),
            ("Application/AT+JWT", "at+jwt"),
            (" at+jwt ", "AT+JWT"),
        ] {
            assert_eq!(normalise_typ(a), normalise_typ(b), "{a} {b}");
        }
        assert_ne!(normalise_typ("text/at+jwt"), normalise_typ("at+jwt"));
        assert_ne!(
            normalise_typ("application/a/at+jwt"),
            normalise_typ("at+jwt")
        );
    }

    #[test]
    fn access_token_types_cannot_be_accepted_in_the_config() {
        assert!(validate_accepted_typ("k", &["JWT".into(), "application/jwt".into()]).is_ok());
        for bad in [
            "at+jwt",
            "application/at+jwt",
            "AT+JWT",
            "logout+jwt",
            "jit+jwt",
        ] {
            let e = validate_accepted_typ("issuer[0].accepted_typ", &[bad.into()]).expect_err(bad);
            assert_eq!(e.key, "issuer[0].accepted_typ");
            assert!(
                e.problem.contains("never an identity token"),
                "{}",
                e.problem
            );
        }
        assert!(validate_accepted_typ("k", &[]).is_err());
        assert!(validate_accepted_typ("k", &["".into()]).is_err());
        assert!(validate_accepted_typ("k", &["a b".into()]).is_err());
    }
}
