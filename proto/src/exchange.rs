//! The RFC 8693 token exchange request (`POST /oauth/token`, `application/x-www-form-urlencoded`)
//! and its git-jit extension parameters (`role`, `reason`, `ttl`, `refs`).
//!
//! Two layers, one contract: [`ExchangeForm`] is the form exactly as it travels (every
//! parameter optional, so a receiver can say precisely which one is missing or wrong), and
//! [`ExchangeRequest`] is the only valid shape of it. The helper builds an `ExchangeRequest`
//! and sends [`ExchangeRequest::to_form`]; the broker reads an `ExchangeForm` and turns it into
//! an `ExchangeRequest` with [`TryFrom`], whose [`ExchangeError`] carries the OAuth error code
//! and the message the client sees. The answer is [`TokenResponse`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::api::TokenResponse;
use crate::api::{
    GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT,
    TOKEN_TYPE_SSH_CERTIFICATE,
};
use crate::approval::{APPROVAL_REQUEST, RequestId, RequestIdError};
use crate::refs::{RefError, RefPattern};
use crate::scope::{Scope, ScopeError};
use crate::secret::Secret;
use crate::ssh::{SshKeyError, SshPublicKey};

/// Largest subject token accepted, in bytes.
pub const MAX_SUBJECT_TOKEN_LEN: usize = 16 * 1024;
/// Longest reason accepted, in bytes (after trimming).
pub const MAX_REASON_LEN: usize = 1024;
/// Most ref patterns one request may name. Each is matched against every ref of every push
/// the grant makes, so the count multiplies the cost of a push; real grants name one to three.
/// (Each pattern is at most [`crate::refs::MAX_REF_PATTERN_LEN`] bytes.)
pub const MAX_REFS: usize = 8;
/// Longest lifetime the `ttl` parameter can express, in minutes (roles allow far less).
pub use crate::time::MAX_TTL_MINUTES;
/// Longest role name, in bytes.
pub const MAX_ROLE_LEN: usize = 64;
/// How much of a refused scope an error message repeats, in characters.
const SCOPE_ECHO: usize = 200;

/// The form body of `POST /oauth/token` exactly as it travels. `Debug` never shows a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeForm {
    /// Must be [`GRANT_TYPE_TOKEN_EXCHANGE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<String>,
    /// The OIDC ID token or CI JWT being exchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_token: Option<Secret>,
    /// [`TOKEN_TYPE_ID_TOKEN`] or [`TOKEN_TYPE_JWT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_token_type: Option<String>,
    /// Exactly one `repo:<path>:<actions>` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The role to use (absent or empty: the broker chooses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Why access is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Lifetime: `30m`, `2h` or bare minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Space-separated ref patterns a write grant is narrowed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refs: Option<String>,
    /// When present, [`TOKEN_TYPE_ACCESS_TOKEN`] or [`TOKEN_TYPE_SSH_CERTIFICATE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_token_type: Option<String>,
    /// The OpenSSH public key to certify (`ssh-ed25519 AAAA…`), with an SSH certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// RFC 8693 delegation; refused by git-jit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_token: Option<Secret>,
    /// `request`: file an approval request when the role needs a person's yes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// Poll the approval request with this id (instead of filing one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The RFC 8693 type of a subject token git-jit accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectTokenType {
    /// An OIDC ID token ([`TOKEN_TYPE_ID_TOKEN`]): a person's `git jit login`.
    IdToken,
    /// A JWT ([`TOKEN_TYPE_JWT`]): a CI platform's OIDC token.
    Jwt,
}

impl SubjectTokenType {
    /// The RFC 8693 URN.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdToken => TOKEN_TYPE_ID_TOKEN,
            Self::Jwt => TOKEN_TYPE_JWT,
        }
    }

    /// The type named by its URN, if git-jit accepts it.
    pub fn from_urn(urn: &str) -> Option<Self> {
        match urn {
            TOKEN_TYPE_ID_TOKEN => Some(Self::IdToken),
            TOKEN_TYPE_JWT => Some(Self::Jwt),
            _ => None,
        }
    }
}

impl fmt::Display for SubjectTokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a `ttl` parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    /// Not minutes (`30`, `30m`) or hours (`2h`), or zero.
    #[error("ttl {0:?} must be minutes ('30', '30m') or hours ('2h'), at least 1 minute")]
    Syntax(String),
    /// More than [`MAX_TTL_MINUTES`].
    #[error("ttl {0:?} is far longer than any role allows")]
    TooLong(String),
}

/// A requested lifetime, in whole minutes (1 to [`MAX_TTL_MINUTES`]). Travels as `<n>m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(u32);

impl Ttl {
    /// A lifetime of `minutes`, if it is within 1 to [`MAX_TTL_MINUTES`].
    pub fn from_minutes(minutes: u32) -> Option<Self> {
        (1..=MAX_TTL_MINUTES)
            .contains(&minutes)
            .then_some(Self(minutes))
    }

    /// Parses `30m`, `2h` or bare minutes (`45`).
    pub fn parse(s: &str) -> Result<Self, TtlError> {
        let bad = || TtlError::Syntax(s.to_owned());
        let (digits, factor) = match s.strip_suffix('h') {
            Some(d) => (d, 60),
            None => (s.strip_suffix('m').unwrap_or(s), 1),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u32 = digits.parse().map_err(|_| bad())?;
        match n.checked_mul(factor) {
            Some(0) => Err(bad()),
            Some(m) if m <= MAX_TTL_MINUTES => Ok(Self(m)),
            _ => Err(TtlError::TooLong(s.to_owned())),
        }
    }

    /// The lifetime in minutes.
    pub fn minutes(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}m", self.0)
    }
}

impl FromStr for Ttl {
    type Err = TtlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Whether `s` is a role name: 1 to [`MAX_ROLE_LEN`] characters of `A-Z a-z 0-9 _ - .`.
pub fn is_role_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ROLE_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Why an exchange form was refused. The message is what the client is told; the variant
/// decides the OAuth error code ([`ExchangeError::oauth_code`]). Never holds a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// No `grant_type`.
    #[error("missing form parameter 'grant_type'")]
    MissingGrantType,
    /// A `grant_type` other than token exchange.
    #[error("grant_type must be {GRANT_TYPE_TOKEN_EXCHANGE}")]
    UnsupportedGrantType,
    /// No (or an empty) `subject_token`.
    #[error("missing form parameter 'subject_token'")]
    MissingSubjectToken,
    /// A `subject_token` over [`MAX_SUBJECT_TOKEN_LEN`].
    #[error("subject_token is larger than {MAX_SUBJECT_TOKEN_LEN} bytes")]
    SubjectTokenTooLarge,
    /// A missing or unsupported `subject_token_type`.
    #[error("subject_token_type must be {TOKEN_TYPE_ID_TOKEN} or {TOKEN_TYPE_JWT}")]
    SubjectTokenType,
    /// A `requested_token_type` other than an access token or an SSH certificate.
    #[error(
        "requested_token_type must be {TOKEN_TYPE_ACCESS_TOKEN} or {TOKEN_TYPE_SSH_CERTIFICATE}"
    )]
    RequestedTokenType,
    /// An SSH certificate asked for without a `public_key`, or a `public_key` without it.
    #[error(
        "public_key is needed with, and only with, requested_token_type {TOKEN_TYPE_SSH_CERTIFICATE}"
    )]
    PublicKeyWithoutSsh,
    /// A `public_key` that is not an OpenSSH public key line.
    #[error("public_key: {0}")]
    PublicKey(#[from] SshKeyError),
    /// An `actor_token`: delegation is not supported.
    #[error("actor_token (delegation) is not supported")]
    ActorToken,
    /// No scope.
    #[error("a scope is required: repo:<path>:<read|write|read,write>")]
    MissingScope,
    /// More than one scope.
    #[error("exactly one repo: scope may be requested")]
    SeveralScopes,
    /// A scope that does not parse (the text is cut to 200 characters).
    #[error("scope {scope:?} is invalid: {source}")]
    Scope {
        /// The refused scope, cut.
        scope: String,
        /// Why it was refused.
        source: ScopeError,
    },
    /// A role that is not a role name.
    #[error("role must be a role name (A-Z a-z 0-9 _ - .)")]
    Role,
    /// A bad `ttl`.
    #[error(transparent)]
    Ttl(#[from] TtlError),
    /// More than [`MAX_REFS`] ref patterns.
    #[error("at most {MAX_REFS} ref patterns may be requested")]
    TooManyRefs,
    /// A ref pattern that does not parse.
    #[error(transparent)]
    Ref(#[from] RefError),
    /// A reason over [`MAX_REASON_LEN`].
    #[error("reason is longer than {MAX_REASON_LEN} bytes")]
    ReasonTooLong,
    /// A reason with control characters (they would forge audit lines).
    #[error("reason must not contain control characters")]
    ReasonControl,
    /// An `approval` other than `request`.
    #[error("approval must be 'request'")]
    Approval,
    /// A `request_id` that is not a request id.
    #[error("request_id: {0}")]
    RequestId(#[from] RequestIdError),
    /// Both `approval=request` and a `request_id`.
    #[error("approval=request files a new request; request_id polls one: send one of them")]
    ApprovalAndRequestId,
}

impl ExchangeError {
    /// The RFC 6749 §5.2 / RFC 8693 §2.2.2 error code for this refusal.
    pub fn oauth_code(&self) -> &'static str {
        match self {
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::MissingScope | Self::SeveralScopes | Self::Scope { .. } => "invalid_scope",
            _ => "invalid_request",
        }
    }
}

/// A valid token exchange request. `Debug` never shows the subject token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRequest {
    /// The OIDC ID token or CI JWT (at most [`MAX_SUBJECT_TOKEN_LEN`] bytes, not empty).
    pub subject_token: Secret,
    /// Its type.
    pub subject_token_type: SubjectTokenType,
    /// The one scope asked for.
    pub scope: Scope,
    /// The role to use (a role name), when not the broker's choice.
    pub role: Option<String>,
    /// Why: trimmed, not empty, at most [`MAX_REASON_LEN`] bytes, no control characters.
    pub reason: Option<String>,
    /// The lifetime asked for, when not the role's default.
    pub ttl: Option<Ttl>,
    /// Ref patterns a write grant is narrowed to (at most [`MAX_REFS`]; empty: all refs).
    pub refs: Vec<RefPattern>,
    /// What to do when the role needs a person's approval.
    pub approval: ApprovalAsk,
    /// Certify this key (an OpenSSH user certificate) instead of issuing a Bearer token.
    pub ssh_public_key: Option<SshPublicKey>,
}

/// What an exchange asks of an approval role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ApprovalAsk {
    /// Nothing: a role needing approval answers `approval_required`, saying how to ask.
    #[default]
    None,
    /// File a request (`approval=request`), or find the identical pending one.
    Request,
    /// Poll this request (`request_id=…`); the answer is its token once approved.
    Poll(RequestId),
}

impl ExchangeRequest {
    /// A request for `scope` with `subject_token`; the extension parameters are unset.
    pub fn new(subject_token: Secret, subject_token_type: SubjectTokenType, scope: Scope) -> Self {
        Self {
            subject_token,
            subject_token_type,
            scope,
            role: None,
            reason: None,
            ttl: None,
            refs: Vec::new(),
            approval: ApprovalAsk::None,
            ssh_public_key: None,
        }
    }

    /// The form to send (`reqwest`'s `.form(&request.to_form())`).
    pub fn to_form(&self) -> ExchangeForm {
        let refs = self
            .refs
            .iter()
            .map(RefPattern::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        ExchangeForm {
            grant_type: Some(GRANT_TYPE_TOKEN_EXCHANGE.to_owned()),
            subject_token: Some(self.subject_token.clone()),
            subject_token_type: Some(self.subject_token_type.as_str().to_owned()),
            scope: Some(self.scope.to_string()),
            role: self.role.clone(),
            reason: self.reason.clone(),
            ttl: self.ttl.map(|t| t.to_string()),
            refs: (!refs.is_empty()).then_some(refs),
            requested_token_type: self
                .ssh_public_key
                .as_ref()
                .map(|_| TOKEN_TYPE_SSH_CERTIFICATE.to_owned()),
            public_key: self.ssh_public_key.as_ref().map(|k| k.as_str().to_owned()),
            actor_token: None,
            approval: (self.approval == ApprovalAsk::Request).then(|| APPROVAL_REQUEST.to_owned()),
            request_id: match &self.approval {
                ApprovalAsk::Poll(id) => Some(id.to_string()),
                _ => None,
            },
        }
    }
}

/// Parses space-separated ref patterns (at most [`MAX_REFS`]).
pub fn parse_refs(s: &str) -> Result<Vec<RefPattern>, ExchangeError> {
    let refs: Vec<&str> = s.split_whitespace().collect();
    if refs.len() > MAX_REFS {
        return Err(ExchangeError::TooManyRefs);
    }
    refs.into_iter()
        .map(|r| RefPattern::parse(r).map_err(ExchangeError::from))
        .collect()
}

impl TryFrom<ExchangeForm> for ExchangeRequest {
    type Error = ExchangeError;

    /// Checks the parameters in a fixed order and reports the first problem.
    fn try_from(f: ExchangeForm) -> Result<Self, Self::Error> {
        match f.grant_type.as_deref() {
            None => return Err(ExchangeError::MissingGrantType),
            Some(GRANT_TYPE_TOKEN_EXCHANGE) => {}
            Some(_) => return Err(ExchangeError::UnsupportedGrantType),
        }
        let subject_token = f
            .subject_token
            .filter(|t| !t.expose().is_empty())
            .ok_or(ExchangeError::MissingSubjectToken)?;
        if subject_token.expose().len() > MAX_SUBJECT_TOKEN_LEN {
            return Err(ExchangeError::SubjectTokenTooLarge);
        }
        let subject_token_type = f
            .subject_token_type
            .as_deref()
            .and_then(SubjectTokenType::from_urn)
            .ok_or(ExchangeError::SubjectTokenType)?;
        let wants_ssh = match f.requested_token_type.as_deref() {
            None | Some(TOKEN_TYPE_ACCESS_TOKEN) => false,
            Some(TOKEN_TYPE_SSH_CERTIFICATE) => true,
            Some(_) => return Err(ExchangeError::RequestedTokenType),
        };
        let ssh_public_key = match (wants_ssh, f.public_key.as_deref()) {
            (false, None) => None,
            (true, Some(k)) => Some(SshPublicKey::parse(k)?),
            _ => return Err(ExchangeError::PublicKeyWithoutSsh),
        };
        if f.actor_token.is_some() {
            return Err(ExchangeError::ActorToken);
        }
        let scope_text = f.scope.unwrap_or_default();
        let scope = match scope_text.split_whitespace().collect::<Vec<_>>().as_slice() {
            [] => return Err(ExchangeError::MissingScope),
            [one] => Scope::parse(one).map_err(|source| ExchangeError::Scope {
                scope: one.chars().take(SCOPE_ECHO).collect(),
                source,
            })?,
            _ => return Err(ExchangeError::SeveralScopes),
        };
        let role = f.role.filter(|r| !r.is_empty());
        if role.as_deref().is_some_and(|r| !is_role_name(r)) {
            return Err(ExchangeError::Role);
        }
        let ttl = f
            .ttl
            .filter(|t| !t.is_empty())
            .map(|t| Ttl::parse(&t))
            .transpose()?;
        let refs = parse_refs(f.refs.as_deref().unwrap_or_default())?;
        let reason = f
            .reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        if let Some(r) = &reason {
            if r.len() > MAX_REASON_LEN {
                return Err(ExchangeError::ReasonTooLong);
            }
            if r.chars().any(char::is_control) {
                return Err(ExchangeError::ReasonControl);
            }
        }
        let filed = match f.approval.as_deref().filter(|a| !a.is_empty()) {
            None => false,
            Some(APPROVAL_REQUEST) => true,
            Some(_) => return Err(ExchangeError::Approval),
        };
        let polled = f
            .request_id
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(RequestId::parse)
            .transpose()?;
        let approval = match (filed, polled) {
            (true, Some(_)) => return Err(ExchangeError::ApprovalAndRequestId),
            (true, None) => ApprovalAsk::Request,
            (false, Some(id)) => ApprovalAsk::Poll(id),
            (false, None) => ApprovalAsk::None,
        };
        Ok(Self {
            subject_token,
            subject_token_type,
            scope,
            role,
            reason,
            ttl,
            refs,
            approval,
            ssh_public_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::{Actions, RepoPath};
    use crate::testrng::Rng;

    /// The form as a urlencoded body, decoded the way axum's `Form` decodes it.
    fn form(pairs: &[(&str, &str)]) -> ExchangeForm {
        let body = serde_urlencoded::to_string(pairs).expect("encodes");
        serde_urlencoded::from_str(&body).expect("decodes")
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", "eyJ.idt.sig"),
            ("subject_token_type", TOKEN_TYPE_JWT),
            ("scope", "repo:acme/api:write"),
        ]
    }

    fn with(extra: &[(&'static str, &'static str)]) -> ExchangeForm {
        let mut p = good();
        for (k, v) in extra {
            p.retain(|(n, _)| n != k);
            p.push((k, v));
        }
        form(&p)
    }

    fn without(name: &str) -> ExchangeForm {
        let mut p = good();
        p.retain(|(n, _)| *n != name);
        form(&p)
    }

    #[test]
    fn accepts_a_full_request() {
        let r = ExchangeRequest::try_from(with(&[
            ("role", "oncall"),
            ("reason", "  INC-1  "),
            ("ttl", "2h"),
            ("refs", "refs/heads/hotfix/*  refs/tags/v*"),
            ("requested_token_type", TOKEN_TYPE_ACCESS_TOKEN),
        ]))
        .expect("valid");
        assert_eq!(r.subject_token.expose(), "eyJ.idt.sig");
        assert_eq!(r.subject_token_type, SubjectTokenType::Jwt);
        assert_eq!(r.scope.to_string(), "repo:acme/api:write");
        assert_eq!(r.role.as_deref(), Some("oncall"));
        assert_eq!(r.reason.as_deref(), Some("INC-1"));
        assert_eq!(r.ttl.map(Ttl::minutes), Some(120));
        assert_eq!(r.refs.len(), 2);
        // Empty optional parameters mean "not given".
        let r = ExchangeRequest::try_from(with(&[("role", ""), ("ttl", ""), ("reason", " ")]))
            .expect("valid");
        assert_eq!((r.role, r.ttl, r.reason), (None, None, None));
    }

    /// The ref bounds at the limit pass and one past it fail, naming the limit.
    #[test]
    fn ref_pattern_bounds() {
        let at = ["refs/heads/a"; MAX_REFS].join(" ");
        assert_eq!(parse_refs(&at).map(|r| r.len()), Ok(MAX_REFS));
        let past = ["refs/heads/a"; MAX_REFS + 1].join(" ");
        assert_eq!(
            parse_refs(&past).map_err(|e| e.to_string()),
            Err("at most 8 ref patterns may be requested".to_owned())
        );
        let max = crate::refs::MAX_REF_PATTERN_LEN;
        let long = |n: usize| format!("refs/heads/{}", "x".repeat(n - "refs/heads/".len()));
        assert!(parse_refs(&long(max)).is_ok());
        let err = parse_refs(&long(max + 1))
            .expect_err("too long")
            .to_string();
        assert!(err.contains("at most 128 are allowed"), "{err}");
    }

    /// An SSH certificate is asked for with its public key, which travels and parses back.
    #[test]
    fn ssh_certificate_requests() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let r = ExchangeRequest::try_from(with(&[
            ("requested_token_type", TOKEN_TYPE_SSH_CERTIFICATE),
            ("public_key", key),
        ]))
        .expect("valid");
        assert_eq!(
            r.ssh_public_key.as_ref().map(SshPublicKey::as_str),
            Some(key)
        );
        assert_eq!(ExchangeRequest::try_from(r.to_form()), Ok(r));
        for (form, e) in [
            (
                with(&[("requested_token_type", TOKEN_TYPE_SSH_CERTIFICATE)]),
                ExchangeError::PublicKeyWithoutSsh,
            ),
            (
                with(&[("public_key", key)]),
                ExchangeError::PublicKeyWithoutSsh,
            ),
            (
                with(&[
                    ("requested_token_type", TOKEN_TYPE_SSH_CERTIFICATE),
                    ("public_key", "ssh-dss AAAAAAAAAAAAAAAAAAAAAAAAAA"),
                ]),
                ExchangeError::PublicKey(SshKeyError::Algorithm("ssh-dss".into())),
            ),
        ] {
            assert_eq!(ExchangeRequest::try_from(form), Err(e.clone()));
            assert_eq!(e.oauth_code(), "invalid_request");
        }
    }

    /// Every refusal, with the error it is named by and the OAuth code the client gets.
    #[test]
    fn bad_forms_table() {
        let long_token = "a".repeat(MAX_SUBJECT_TOKEN_LEN + 1);
        let long_reason = "r".repeat(MAX_REASON_LEN + 1);
        let many_refs = ["refs/heads/a"; MAX_REFS + 1].join(" ");
        let long_ref = format!(
            "refs/heads/{}",
            "x".repeat(crate::refs::MAX_REF_PATTERN_LEN)
        );
        let cases: Vec<(ExchangeForm, ExchangeError, &str)> = vec![
            (
                without("grant_type"),
                ExchangeError::MissingGrantType,
                "invalid_request",
            ),
            (
                with(&[("grant_type", "password")]),
                ExchangeError::UnsupportedGrantType,
                "unsupported_grant_type",
            ),
            (
                without("subject_token"),
                ExchangeError::MissingSubjectToken,
                "invalid_request",
            ),
            (
                with(&[("subject_token", "")]),
                ExchangeError::MissingSubjectToken,
                "invalid_request",
            ),
            (
                ExchangeForm {
                    subject_token: Some(Secret::new(long_token)),
                    ..with(&[])
                },
                ExchangeError::SubjectTokenTooLarge,
                "invalid_request",
            ),
            (
                without("subject_token_type"),
                ExchangeError::SubjectTokenType,
                "invalid_request",
            ),
            (
                with(&[("subject_token_type", TOKEN_TYPE_ACCESS_TOKEN)]),
                ExchangeError::SubjectTokenType,
                "invalid_request",
            ),
            (
                with(&[("requested_token_type", TOKEN_TYPE_JWT)]),
                ExchangeError::RequestedTokenType,
                "invalid_request",
            ),
            (
                with(&[("actor_token", "x")]),
                ExchangeError::ActorToken,
                "invalid_request",
            ),
            (
                without("scope"),
                ExchangeError::MissingScope,
                "invalid_scope",
            ),
            (
                with(&[("scope", "   ")]),
                ExchangeError::MissingScope,
                "invalid_scope",
            ),
            (
                with(&[("scope", "repo:a/b:read repo:a/c:read")]),
                ExchangeError::SeveralScopes,
                "invalid_scope",
            ),
            (
                with(&[("scope", "repo:acme/../x:read")]),
                ExchangeError::Scope {
                    scope: "repo:acme/../x:read".into(),
                    source: ScopeError::DotSegment(".."),
                },
                "invalid_scope",
            ),
            (
                with(&[("role", "on call")]),
                ExchangeError::Role,
                "invalid_request",
            ),
            (
                with(&[("ttl", "0")]),
                ExchangeError::Ttl(TtlError::Syntax("0".into())),
                "invalid_request",
            ),
            (
                with(&[("ttl", "1d")]),
                ExchangeError::Ttl(TtlError::Syntax("1d".into())),
                "invalid_request",
            ),
            (
                with(&[("ttl", "99999999h")]),
                ExchangeError::Ttl(TtlError::TooLong("99999999h".into())),
                "invalid_request",
            ),
            (
                ExchangeForm {
                    refs: Some(many_refs),
                    ..with(&[])
                },
                ExchangeError::TooManyRefs,
                "invalid_request",
            ),
            (
                ExchangeForm {
                    refs: Some(long_ref.clone()),
                    ..with(&[])
                },
                ExchangeError::Ref(RefError::PatternTooLong(long_ref.len())),
                "invalid_request",
            ),
            (
                ExchangeForm {
                    reason: Some(long_reason),
                    ..with(&[])
                },
                ExchangeError::ReasonTooLong,
                "invalid_request",
            ),
            (
                with(&[("reason", "a\nb")]),
                ExchangeError::ReasonControl,
                "invalid_request",
            ),
        ];
        for (form, want, code) in cases {
            let got = ExchangeRequest::try_from(form.clone());
            assert_eq!(got.as_ref().err(), Some(&want), "{form:?}");
            assert_eq!(want.oauth_code(), code, "{want}");
        }
        assert!(matches!(
            ExchangeRequest::try_from(with(&[("refs", "refs/heads/a..b")])),
            Err(ExchangeError::Ref(_))
        ));
    }

    #[test]
    fn messages_are_the_brokers() {
        let msg = |f: ExchangeForm| {
            ExchangeRequest::try_from(f)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            msg(without("grant_type")),
            "missing form parameter 'grant_type'"
        );
        assert_eq!(
            msg(with(&[("ttl", "1d")])),
            "ttl \"1d\" must be minutes ('30', '30m') or hours ('2h'), at least 1 minute"
        );
        assert_eq!(
            msg(with(&[("scope", "repo:a/b:admin")])),
            "scope \"repo:a/b:admin\" is invalid: unknown action \"admin\"; expected 'read' or 'write'"
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let f = with(&[("actor_token", "act0r-secret")]);
        let text = format!("{f:?}");
        assert!(
            !text.contains("eyJ.idt.sig") && !text.contains("act0r-secret"),
            "{text}"
        );
        let r = ExchangeRequest::try_from(with(&[])).expect("valid");
        let text = format!("{r:?} {:?}", r.to_form());
        assert!(!text.contains("eyJ.idt.sig"), "{text}");
        let e = ExchangeRequest::try_from(with(&[("scope", "repo:eyJ.idt.sig")]));
        assert!(e.is_err());
    }

    #[test]
    fn ttl_round_trips_and_refuses() {
        assert_eq!(Ttl::parse("45").map(Ttl::minutes), Ok(45));
        assert_eq!(Ttl::parse("45m").map(Ttl::minutes), Ok(45));
        assert_eq!(Ttl::parse("2h").map(Ttl::minutes), Ok(120));
        for bad in [
            "",
            "m",
            "h",
            "-1",
            "+1",
            "1.5h",
            "0h",
            "0m",
            " 5",
            "5 ",
            "5s",
            "٣",
            "99999999999999999999",
        ] {
            assert_eq!(
                Ttl::parse(bad),
                Err(TtlError::Syntax(bad.into())),
                "{bad:?}"
            );
        }
        for long in ["100001", "1667h", "99999999h"] {
            assert_eq!(
                Ttl::parse(long),
                Err(TtlError::TooLong(long.into())),
                "{long:?}"
            );
        }
        assert_eq!(Ttl::from_minutes(0), None);
        assert_eq!(Ttl::from_minutes(MAX_TTL_MINUTES + 1), None);
    }

    /// Field names are the wire names, in the order the helper has always sent them, and
    /// absent parameters do not travel at all.
    #[test]
    fn form_field_names_are_the_wire_names() {
        let mut r = ExchangeRequest::new(
            Secret::new("t"),
            SubjectTokenType::IdToken,
            Scope::parse("repo:acme/api:read").expect("scope"),
        );
        let body = serde_urlencoded::to_string(r.to_form()).expect("encodes");
        assert_eq!(
            body,
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &subject_token=t\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token\
             &scope=repo%3Aacme%2Fapi%3Aread"
        );
        r.refs = vec![RefPattern::parse("refs/heads/x").expect("ref")];
        r.ttl = Ttl::from_minutes(30);
        r.role = Some("dev".into());
        r.reason = Some("why".into());
        let body = serde_urlencoded::to_string(r.to_form()).expect("encodes");
        assert!(
            body.ends_with("&role=dev&reason=why&ttl=30m&refs=refs%2Fheads%2Fx"),
            "{body}"
        );
    }

    #[test]
    fn approval_parameters_file_or_poll_but_never_both() {
        let id = "rq_abcdefghijklmnopqrstuvwxyz";
        let parsed = |f| ExchangeRequest::try_from(f).map(|r| r.approval);
        assert_eq!(parsed(with(&[])), Ok(ApprovalAsk::None));
        assert_eq!(parsed(with(&[("approval", "")])), Ok(ApprovalAsk::None));
        assert_eq!(
            parsed(with(&[("approval", "request")])),
            Ok(ApprovalAsk::Request)
        );
        assert_eq!(
            parsed(with(&[("request_id", id)])),
            Ok(ApprovalAsk::Poll(RequestId::parse(id).expect("id")))
        );
        assert_eq!(
            parsed(with(&[("approval", "yes")])),
            Err(ExchangeError::Approval)
        );
        assert_eq!(
            parsed(with(&[("request_id", "rq_../../x")])),
            Err(ExchangeError::RequestId(RequestIdError))
        );
        let both = parsed(with(&[("approval", "request"), ("request_id", id)]));
        assert_eq!(both, Err(ExchangeError::ApprovalAndRequestId));
        assert!(
            ExchangeError::ApprovalAndRequestId
                .to_string()
                .contains("one of them")
        );
    }

    fn random_request(rng: &mut Rng) -> ExchangeRequest {
        const TOKEN: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~+/=";
        const NAME: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.";
        const REASON: &str = "abc XYZ 019 -_.,:;!?()[]{}'\"\\/#%&=+*<>|~`@$^ éü∕🙂";
        let repo = {
            let segs: Vec<String> = (0..1 + rng.below(3))
                .map(|_| rng.string("abcdefghijklmnopqrstuvwxyz0123456789", 1, 12))
                .collect();
            RepoPath::parse(&segs.join("/")).expect("generated paths are valid")
        };
        let actions = *rng.pick(&[&Actions::READ, &Actions::WRITE, &Actions::READ_WRITE]);
        let mut r = ExchangeRequest::new(
            Secret::new(rng.string(TOKEN, 1, 300)),
            *rng.pick(&[&SubjectTokenType::IdToken, &SubjectTokenType::Jwt]),
            Scope::new(repo, actions),
        );
        if !rng.one_in(3) {
            r.role = Some(rng.string(NAME, 1, MAX_ROLE_LEN));
        }
        if !rng.one_in(3) {
            let text = rng.string(REASON, 1, 80);
            let text = text.trim();
            r.reason = (!text.is_empty()).then(|| text.to_owned());
        }
        if !rng.one_in(3) {
            r.ttl = Ttl::from_minutes(1 + rng.below(MAX_TTL_MINUTES as usize) as u32);
        }
        if rng.one_in(3) {
            r.approval = if rng.one_in(2) {
                ApprovalAsk::Request
            } else {
                let mut bytes = [0u8; 17];
                bytes.iter_mut().for_each(|b| *b = rng.below(256) as u8);
                ApprovalAsk::Poll(RequestId::from_random(bytes))
            };
        }
        for _ in 0..rng.below(4) {
            let name = format!(
                "refs/{}/{}",
                rng.pick(&["heads", "tags"]),
                rng.string("abcdefghij0123456789", 1, 10)
            );
            let pattern = if rng.one_in(2) {
                format!("{name}/*")
            } else {
                name
            };
            r.refs
                .push(RefPattern::parse(&pattern).expect("generated refs are valid"));
        }
        r
    }

    /// Build → urlencoded body → form → parse is the identity.
    #[test]
    fn pseudo_random_requests_round_trip() {
        let mut rng = Rng::new(0x7e_c4a9_e000_0001);
        for _ in 0..2000 {
            let r = random_request(&mut rng);
            let form = r.to_form();
            let body = serde_urlencoded::to_string(&form).expect("encodes");
            let decoded: ExchangeForm = serde_urlencoded::from_str(&body).expect("decodes");
            assert_eq!(decoded, form);
            assert_eq!(
                ExchangeRequest::try_from(decoded).as_ref(),
                Ok(&r),
                "{form:?}"
            );
        }
    }

    /// Arbitrary forms never panic, and whatever is accepted prints back to itself.
    #[test]
    fn pseudo_random_forms_never_panic() {
        const DICT: &[&str] = &[
            GRANT_TYPE_TOKEN_EXCHANGE,
            TOKEN_TYPE_JWT,
            TOKEN_TYPE_ID_TOKEN,
            "repo:",
            "acme/api",
            ":read",
            ":write",
            " ",
            "\n",
            "2h",
            "30m",
            "0",
            "refs/heads/",
            "*",
            "..",
            "x",
            "request",
            "rq_abcdefghijklmnopqrstuvwxyz",
        ];
        let mut rng = Rng::new(42);
        let pick = |rng: &mut Rng| (!rng.one_in(4)).then(|| rng.input(DICT, 4));
        let mut accepted = 0;
        for _ in 0..3000 {
            let f = ExchangeForm {
                grant_type: if rng.one_in(8) {
                    pick(&mut rng)
                } else {
                    Some(GRANT_TYPE_TOKEN_EXCHANGE.into())
                },
                subject_token: if rng.one_in(4) {
                    pick(&mut rng).map(Secret::new)
                } else {
                    Some(Secret::new("eyJ.x.y"))
                },
                subject_token_type: if rng.one_in(8) {
                    pick(&mut rng)
                } else {
                    Some(TOKEN_TYPE_JWT.into())
                },
                scope: if rng.one_in(3) {
                    pick(&mut rng)
                } else {
                    Some(
                        rng.pick(&["repo:acme/api:read", "repo:a/b:read,write"])
                            .to_string(),
                    )
                },
                role: pick(&mut rng),
                reason: pick(&mut rng),
                ttl: pick(&mut rng),
                refs: pick(&mut rng),
                requested_token_type: None,
                public_key: None,
                actor_token: None,
                approval: pick(&mut rng),
                request_id: pick(&mut rng),
            };
            if let Ok(r) = ExchangeRequest::try_from(f) {
                accepted += 1;
                assert_eq!(ExchangeRequest::try_from(r.to_form()), Ok(r));
            }
        }
        assert!(accepted > 0, "the generator must reach valid requests");
    }
}
