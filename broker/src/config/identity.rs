//! `[[issuer]]` and `[login]`: the trusted OIDC issuers and the terminal login, as written in
//! the config file. Plain data; [`crate::identity`] compiles it into verifiers.

use serde::Deserialize;

use super::KeyProblem;

/// An `[[issuer]]` entry: an OIDC issuer (SSO or CI platform) whose tokens the broker trusts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Unique name (`corp`, `github`), used by roles and recorded as the tokens' `idp`.
    pub name: String,
    /// The issuer URL, compared exactly with the token's `iss` (mind trailing slashes).
    pub issuer: String,
    /// The audience the tokens must carry in `aud` (for an SSO: the client id). When `aud`
    /// holds several values, `azp` must name this audience or `client_id`, and a present `azp`
    /// always must (OpenID Connect Core §3.1.3.7).
    pub audience: String,
    /// The claim that names the subject. Default `sub`.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// The public client id `git jit login` uses at this issuer (people's SSO only).
    #[serde(default)]
    pub client_id: Option<String>,
    /// The JWKS URL, for issuers without OIDC discovery. Default: discovered from
    /// `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Accepted signature algorithms. Default `["RS256", "ES256"]`; asymmetric only
    /// (RS*, PS*, ES256, ES384, EdDSA).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The JOSE header `typ` values accepted, compared without regard to case and with or
    /// without the `application/` prefix (RFC 7515 §4.1.9). Default `["JWT"]`, what OIDC
    /// providers and CI platforms put on ID tokens. Types of other tokens an issuer signs —
    /// OAuth access tokens (`at+jwt`, RFC 9068), logout and security-event tokens, DPoP
    /// proofs, git-jit's own `jit+jwt` — cannot be listed: they are never identity tokens.
    #[serde(default = "default_accepted_typ")]
    pub accepted_typ: Vec<String>,
    /// Whether a token without a `typ` header is refused. Default `false`: `typ` is optional
    /// (RFC 7519 §5.1) and some issuers send none (Kubernetes service-account tokens).
    #[serde(default)]
    pub require_typ: bool,
}

impl IssuerConfig {
    /// An issuer with the defaults of every optional key.
    pub fn new(name: &str, issuer: &str, audience: &str) -> Self {
        Self {
            name: name.to_owned(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            subject_claim: default_subject_claim(),
            client_id: None,
            jwks_url: None,
            algorithms: default_algorithms(),
            accepted_typ: default_accepted_typ(),
            require_typ: false,
        }
    }
}

/// `[login]`: how people log in from the terminal (`git jit login`), published in the
/// broker's metadata for the helper.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// The `name` of the `[[issuer]]` people log in with.
    pub issuer: String,
    /// The public client id to use there. Default: that issuer's `client_id`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The scopes `git jit login` asks for: they decide which claims the ID token carries,
    /// and roles can only match claims that are there. Must include `openid`.
    /// Default `["openid", "offline_access", "email", "profile", "groups"]`.
    #[serde(default = "default_login_scopes")]
    pub scopes: Vec<String>,
}

fn default_login_scopes() -> Vec<String> {
    ["openid", "offline_access", "email", "profile", "groups"]
        .map(str::to_owned)
        .to_vec()
}

impl LoginConfig {
    /// The issuer URL and client id the helper should use, from the configured issuers.
    pub fn resolve(&self, issuers: &[IssuerConfig]) -> Result<(String, String), KeyProblem> {
        let issuer = issuers
            .iter()
            .find(|i| i.name == self.issuer)
            .ok_or_else(|| KeyProblem {
                key: "login.issuer".into(),
                problem: format!("no [[issuer]] is named {:?}", self.issuer),
            })?;
        let client_id = self
            .client_id
            .clone()
            .or_else(|| issuer.client_id.clone())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| KeyProblem {
                key: "login.client_id".into(),
                problem: format!(
                    "missing: set it here or as client_id of issuer {:?}",
                    issuer.name
                ),
            })?;
        Ok((issuer.issuer.clone(), client_id))
    }

    /// The scopes as one space-separated OAuth `scope` value.
    pub fn scope(&self) -> Result<String, KeyProblem> {
        let bad = |problem: &str| KeyProblem {
            key: "login.scopes".into(),
            problem: problem.to_owned(),
        };
        if self.scopes.iter().any(|s| {
            s.is_empty()
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        }) {
            return Err(bad(
                "each scope must be a non-empty token without spaces or quotes",
            ));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(bad("must include \"openid\" (the login needs an ID token)"));
        }
        Ok(self.scopes.join(" "))
    }
}

fn default_subject_claim() -> String {
    "sub".to_owned()
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned(), "ES256".to_owned()]
}

fn default_accepted_typ() -> Vec<String> {
    vec!["JWT".to_owned()]
}
