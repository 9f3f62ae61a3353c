//! Signing in to the console with the `[login]` issuer: OpenID Connect authorization code
//! with PKCE (S256) and a nonce, on the `openidconnect` crate over the broker's reqwest
//! (following no redirects, answers bounded). The issuer's discovery document and keys are
//! read on first use and again after [`DISCOVERY_TTL`], so a broker starts without its IdP
//! and follows its key rotations.
//!
//! The ID token is checked here for what only the login knows (signature by the issuer's
//! keys, `iss`, `aud` = the client, `exp`, and the nonce); the caller then verifies it again
//! with the broker's own verifier, so claims and admin rules are exactly the API's.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jit_proto::Secret;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AsyncHttpClient, AuthorizationCode, ClientId, CsrfToken, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, HttpRequest, HttpResponse, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, TokenResponse,
};
use tokio::sync::Mutex;

use super::session::{PendingLogin, SessionError, random_token};

/// How long a discovery document (and its keys) is used before it is read again.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(300);
/// The largest answer read from the issuer.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// How long one request to the issuer may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// ID-token algorithms accepted: asymmetric only.
pub const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 2] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
];

/// Why a login failed. The messages name the step, never a code, token or verifier.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The broker has no `[login]` issuer.
    #[error("the broker has no [login] issuer configured; the console cannot sign anyone in")]
    NotConfigured,
    /// The issuer could not be read or answered outside the protocol.
    #[error("the login issuer {issuer}: {reason}")]
    Issuer {
        /// The issuer URL.
        issuer: String,
        /// What went wrong.
        reason: String,
    },
    /// The code exchange failed.
    #[error("the login issuer refused the code exchange: {0}")]
    Exchange(String),
    /// The ID token did not verify.
    #[error("the ID token failed verification: {0}")]
    IdToken(String),
    /// A session table or the random generator failed.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// Why an HTTP exchange with the issuer failed below the protocol.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request could not be sent or the answer not read.
    #[error(transparent)]
    Send(#[from] reqwest::Error),
    /// The answer was larger than [`MAX_ANSWER_BYTES`].
    #[error("the answer is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
}

/// The HTTP client for the issuer: no redirects (a redirected token request would carry the
/// code and verifier elsewhere), bounded answers.
#[derive(Debug, Clone)]
pub struct IdpHttp(reqwest::Client);

impl IdpHttp {
    /// A new client.
    pub fn new() -> Result<Self, reqwest::Error> {
        crate::outbound::client_builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .user_agent(crate::outbound::USER_AGENT)
            .build()
            .map(Self)
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let mut answer = self.0.execute(request.try_into()?).await?;
        let mut body = Vec::new();
        while let Some(chunk) = answer.chunk().await? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(HttpError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let mut response = HttpResponse::new(body);
        *response.status_mut() = answer.status();
        *response.headers_mut() = std::mem::take(answer.headers_mut());
        Ok(response)
    }
}

impl<'c> AsyncHttpClient<'c> for IdpHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

type LoginClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The console's client at the login issuer.
pub struct Login {
    issuer: String,
    client_id: String,
    scopes: Vec<String>,
    redirect: RedirectUrl,
    http: IdpHttp,
    discovered: Mutex<Option<(std::time::Instant, CoreProviderMetadata)>>,
}

/// Where to send the browser, and what to remember until it comes back.
pub struct Started {
    /// The issuer's authorization URL.
    pub url: String,
    /// The `state` parameter: the key of the pending login.
    pub state: String,
    /// What the callback needs.
    pub pending: PendingLogin,
}

impl Login {
    /// The console's client of `issuer` as `client_id`, asking for `scope` (space-separated;
    /// `offline_access` is dropped: the console keeps no refresh token), returning to
    /// `redirect_uri`.
    pub fn new(
        issuer: &str,
        client_id: &str,
        scope: Option<&str>,
        redirect_uri: &str,
    ) -> Result<Self, LoginError> {
        let fail = |reason: String| LoginError::Issuer {
            issuer: issuer.to_owned(),
            reason,
        };
        let redirect =
            RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| fail(e.to_string()))?;
        let http = IdpHttp::new().map_err(|e| fail(format!("HTTP client: {e}")))?;
        let scopes = scope
            .unwrap_or("openid email profile groups")
            .split_whitespace()
            .filter(|s| *s != "openid" && *s != "offline_access")
            .map(str::to_owned)
            .collect();
        Ok(Self {
            issuer: issuer.to_owned(),
            client_id: client_id.to_owned(),
            scopes,
            redirect,
            http,
            discovered: Mutex::new(None),
        })
    }

    fn fail(&self, reason: impl std::fmt::Display) -> LoginError {
        LoginError::Issuer {
            issuer: self.issuer.clone(),
            reason: reason.to_string(),
        }
    }

    async fn client(&self) -> Result<LoginClient, LoginError> {
        let mut cached = self.discovered.lock().await;
        let fresh = cached
            .as_ref()
            .filter(|(at, _)| at.elapsed() < DISCOVERY_TTL)
            .map(|(_, m)| m.clone());
        let metadata = match fresh {
            Some(m) => m,
            None => {
                let url = IssuerUrl::new(self.issuer.clone()).map_err(|e| self.fail(e))?;
                let m = CoreProviderMetadata::discover_async(url, &self.http)
                    .await
                    .map_err(|e| self.fail(format!("discovery failed: {}", chain(&e))))?;
                *cached = Some((std::time::Instant::now(), m.clone()));
                m
            }
        };
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.client_id.clone()),
            None,
        )
        .set_redirect_uri(self.redirect.clone()))
    }

    /// Starts a login: fresh state, nonce and PKCE verifier (256 bits each), and the URL to
    /// send the browser to.
    pub async fn start(&self) -> Result<Started, LoginError> {
        let client = self.client().await?;
        let state = random_token()?;
        let nonce = random_token()?;
        let verifier = PkceCodeVerifier::new(random_token()?);
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                {
                    let s = state.clone();
                    move || CsrfToken::new(s)
                },
                {
                    let n = nonce.clone();
                    move || Nonce::new(n)
                },
            )
            .set_pkce_challenge(challenge);
        for s in &self.scopes {
            request = request.add_scope(Scope::new(s.clone()));
        }
        let (url, _, _) = request.url();
        let pending = PendingLogin::new(nonce, verifier.secret().clone(), random_token()?);
        Ok(Started {
            url: url.to_string(),
            state,
            pending,
        })
    }

    /// Exchanges `code` for tokens with the pending login's verifier, checks the ID token
    /// (signature, `iss`, `aud`, `exp` at `now` seconds, the nonce) and returns it.
    pub async fn finish(
        &self,
        code: &str,
        pending: &PendingLogin,
        now: i64,
    ) -> Result<Secret, LoginError> {
        let client = self.client().await?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| self.fail(e))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                LoginError::Exchange(match e {
                    RequestTokenError::ServerResponse(r) => r.error().to_string(),
                    RequestTokenError::Request(e) => chain(&e),
                    // Where the answer went wrong, never serde's message (it may quote a token).
                    RequestTokenError::Parse(e, _) => {
                        format!("the answer does not parse (at `{}`)", e.path())
                    }
                    RequestTokenError::Other(m) => m,
                })
            })?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| LoginError::IdToken("the issuer sent no ID token".into()))?;
        let now: DateTime<Utc> = DateTime::from_timestamp(now, 0)
            .ok_or_else(|| LoginError::IdToken("the clock is out of range".into()))?;
        let verifier = client
            .id_token_verifier()
            .set_allowed_algs(ALLOWED_ALGS)
            .set_time_fn(move || now);
        id_token
            .claims(&verifier, &Nonce::new(pending.nonce.clone()))
            .map_err(|e| LoginError::IdToken(e.to_string()))?;
        Ok(Secret::new(id_token.to_string()))
    }
}

/// An error and its causes, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
