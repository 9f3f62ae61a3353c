//! The login issuer as the helper sees it, on the `openidconnect` crate: the HTTP adapter
//! (over the workspace's reqwest, following no redirects), discovery, the token endpoint's
//! answer, and the verification of the ID tokens it hands out against the issuer's JWKS.
//! The flows themselves (device authorization, refresh) are in `login`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jit_proto::Secret;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreIdToken,
    CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::http::{HeaderValue, Method, Request, header};
use openidconnect::{
    AccessToken, AsyncHttpClient, Client, ClientId, DeviceAuthorizationUrl, EmptyAdditionalClaims,
    EndpointNotSet, EndpointSet, ErrorResponseType, HttpRequest, HttpResponse, IssuerUrl,
    JsonWebKeySetUrl, Nonce, OAuth2TokenResponse, RefreshToken, RequestTokenError, Scope,
    StandardErrorResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::broker::{chain, is_loopback};

/// The ID-token signature algorithms accepted: RS256 (what most issuers, and the test suite's
/// oidc-provider, sign with) and ES256 (the broker's dev issuer). Asymmetric only.
pub const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 2] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
];

/// The largest answer read from the issuer (discovery, JWKS, tokens).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Why an HTTP exchange with the issuer failed below the protocol.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request could not be built or sent, or the answer not read.
    #[error(transparent)]
    Send(#[from] reqwest::Error),
    /// The answer was larger than [`MAX_ANSWER_BYTES`].
    #[error("the answer is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
}

/// An OAuth error answer (RFC 6749 §5.2, RFC 8628 §3.5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match .description { Some(d) => format!("{}: {d}", .error), None => .error.clone() })]
pub struct OauthError {
    /// The error code, e.g. `access_denied`.
    pub error: String,
    /// The issuer's description, when it gave one.
    pub description: Option<String>,
}

/// Why talking to the login issuer failed.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    /// No HTTP client could be built.
    #[error("cannot set up an HTTP client for the login issuer: {0}")]
    Client(String),
    /// The issuer could not be reached.
    #[error("cannot reach the login issuer at {url}: {cause}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// The cause chain.
        cause: String,
    },
    /// The issuer answered outside the protocol.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The issuer answered with an OAuth error.
    #[error(transparent)]
    Oauth(#[from] OauthError),
    /// The ID token the issuer handed out failed verification.
    #[error("the ID token from {issuer} failed verification: {reason}")]
    IdToken {
        /// The issuer.
        issuer: String,
        /// What did not hold.
        reason: String,
    },
}

/// The HTTP client for the login issuer: the helper's usual client, except that it follows no
/// redirects (a redirected token request would carry a device code or a refresh token to
/// wherever the redirect points), and answers are bounded.
#[derive(Debug, Clone)]
pub struct IdpHttp(reqwest::Client);

impl IdpHttp {
    /// A new client (the binary has installed the TLS provider).
    pub fn new() -> Result<Self, IdpError> {
        crate::http_client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map(Self)
            .map_err(|e| IdpError::Client(chain(&e)))
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

/// A token endpoint's answer. Like `CoreTokenResponse`, except that `access_token` may be
/// absent: the helper uses only the ID and refresh tokens, and the broker's dev issuer (a
/// device-flow-only issuer) sends no access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdpTokens {
    /// Unused; empty when the issuer sent none.
    #[serde(default = "no_access_token")]
    access_token: AccessToken,
    /// Unused (`Bearer`).
    token_type: CoreTokenType,
    /// The access token's lifetime (seconds), unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_in: Option<u64>,
    /// The refresh token, when the issuer gave (or rotated) one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<RefreshToken>,
    /// The ID token, unverified until [`Provider::verify`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<CoreIdToken>,
}

fn no_access_token() -> AccessToken {
    AccessToken::new(String::new())
}

impl OAuth2TokenResponse for IdpTokens {
    type TokenType = CoreTokenType;
    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &CoreTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        None
    }
}

impl
    TokenResponse<
        EmptyAdditionalClaims,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    > for IdpTokens
{
    fn id_token(&self) -> Option<&CoreIdToken> {
        self.id_token.as_ref()
    }
}

/// The `openidconnect` client for a public client with a token endpoint: `CoreClient` with
/// [`IdpTokens`] as its token response.
pub type IdpClient<HasDeviceAuthUrl = EndpointNotSet> = Client<
    EmptyAdditionalClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    IdpTokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointNotSet,
    HasDeviceAuthUrl,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
>;

/// What the helper reads from the discovery document. Not `CoreProviderMetadata`: that
/// requires an `authorization_endpoint`, which a device-flow-only issuer such as the broker's
/// dev issuer does not have (RFC 8414 §2 lets it omit one); nothing here uses it.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: IssuerUrl,
    token_endpoint: TokenUrl,
    jwks_uri: JsonWebKeySetUrl,
    #[serde(default)]
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
}

/// An ID token that passed verification, with what the session keeps of it.
#[derive(Debug)]
pub struct Verified {
    /// The ID token (compact JWS).
    pub id_token: Secret,
    /// Its `sub`.
    pub subject: String,
    /// Its `exp` (seconds since the epoch).
    pub expires_at: i64,
    /// The refresh token of the same answer, when there was one.
    pub refresh_token: Option<Secret>,
}

/// A discovered issuer: the client and the device endpoint, if it has one.
#[derive(Debug, Clone)]
pub struct Provider {
    client: IdpClient,
    issuer: String,
    device: Option<DeviceAuthorizationUrl>,
}

impl Provider {
    /// Reads `{issuer}/.well-known/openid-configuration` and the JWKS it names. The document
    /// must name exactly `issuer` (OIDC Discovery §4.3).
    pub async fn discover(http: &IdpHttp, issuer: &str, client_id: &str) -> Result<Self, IdpError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let protocol = |reason: String| IdpError::Protocol {
            url: url.clone(),
            reason,
        };
        let request = Request::builder()
            .method(Method::GET)
            .uri(&url)
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .body(Vec::new())
            .map_err(|e| protocol(e.to_string()))?;
        let answer = http
            .send(request)
            .await
            .map_err(|e| IdpError::Unreachable {
                url: url.clone(),
                cause: chain(&e),
            })?;
        if !answer.status().is_success() {
            return Err(protocol(format!("status {}", answer.status())));
        }
        let doc: Discovery =
            serde_json::from_slice(answer.body()).map_err(|e| protocol(e.to_string()))?;
        if doc.issuer.as_str() != issuer {
            return Err(protocol(format!(
                "the document is for issuer {}, not {issuer}",
                doc.issuer.as_str()
            )));
        }
        // Device codes and refresh tokens go to these endpoints, keys come from the JWKS:
        // never in clear text beyond this machine.
        let device = doc.device_authorization_endpoint.as_ref().map(|d| d.url());
        for (name, u) in [
            ("issuer", Some(doc.issuer.url())),
            ("token_endpoint", Some(doc.token_endpoint.url())),
            ("jwks_uri", Some(doc.jwks_uri.url())),
            ("device_authorization_endpoint", device),
        ] {
            let Some(u) = u else { continue };
            let secure = u.scheme() == "https" || (u.scheme() == "http" && is_loopback(u));
            if !secure {
                return Err(protocol(format!(
                    "{name} {:?} must use https (plain http is accepted only on loopback)",
                    u.as_str()
                )));
            }
        }
        let jwks = CoreJsonWebKeySet::fetch_async(&doc.jwks_uri, http)
            .await
            .map_err(|e| IdpError::Protocol {
                url: doc.jwks_uri.to_string(),
                reason: chain(&e),
            })?;
        let issuer = doc.issuer.to_string();
        let client: IdpClient = Client::new(ClientId::new(client_id.to_owned()), doc.issuer, jwks)
            .set_token_uri(doc.token_endpoint);
        Ok(Self {
            client,
            issuer,
            device: doc.device_authorization_endpoint,
        })
    }

    /// The client, for refresh.
    pub fn client(&self) -> &IdpClient {
        &self.client
    }

    /// The client with the device authorization endpoint set, for login.
    pub fn device_client(&self) -> Result<IdpClient<EndpointSet>, IdpError> {
        let url = self.device.clone().ok_or_else(|| IdpError::Protocol {
            url: self.issuer.clone(),
            reason: "the issuer does not support the device authorization grant".into(),
        })?;
        Ok(self.client.clone().set_device_authorization_url(url))
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &TokenUrl {
        self.client.token_uri()
    }

    /// Verifies the ID token of `tokens` at time `now`: signature by a key of the issuer's
    /// JWKS with an algorithm of [`ALLOWED_ALGS`], `iss`, `aud` (this client, and no audience
    /// it does not trust), `exp`.
    pub fn verify(&self, tokens: &IdpTokens, now: i64) -> Result<Verified, IdpError> {
        let id_token = tokens.id_token.as_ref().ok_or_else(|| IdpError::Protocol {
            url: self.token_url().to_string(),
            reason: "no id_token in the token response (is `openid` allowed for this client?)"
                .into(),
        })?;
        let fail = |reason: String| IdpError::IdToken {
            issuer: self.issuer.clone(),
            reason,
        };
        let now: DateTime<Utc> = DateTime::from_timestamp(now, 0)
            .ok_or_else(|| fail(format!("the local clock ({now}) is out of range")))?;
        let verifier = self
            .client
            .id_token_verifier()
            .set_allowed_algs(ALLOWED_ALGS)
            .set_time_fn(move || now);
        // No nonce: neither the device grant nor a refresh sends one (OIDC Core §12.2).
        let claims = id_token
            .claims(&verifier, |_: Option<&Nonce>| Ok(()))
            .map_err(|e| fail(e.to_string()))?;
        Ok(Verified {
            id_token: Secret::new(id_token.to_string()),
            subject: claims.subject().to_string(),
            expires_at: claims.expiration().timestamp(),
            refresh_token: tokens
                .refresh_token
                .as_ref()
                .map(|r| Secret::new(r.secret().as_str())),
        })
    }
}

/// Maps a failed token-endpoint request to an [`IdpError`] that names `url` and never
/// carries the answer's body (a token answer that failed to parse may hold tokens).
pub fn request_error<T>(
    url: &str,
    e: RequestTokenError<HttpError, StandardErrorResponse<T>>,
) -> IdpError
where
    T: ErrorResponseType + AsRef<str> + std::fmt::Display + 'static,
{
    let protocol = |reason: String| IdpError::Protocol {
        url: url.to_owned(),
        reason,
    };
    match e {
        RequestTokenError::ServerResponse(r) => IdpError::Oauth(OauthError {
            error: r.error().as_ref().to_owned(),
            description: r.error_description().cloned(),
        }),
        RequestTokenError::Request(e) => IdpError::Unreachable {
            url: url.to_owned(),
            cause: chain(&e),
        },
        // Only where the answer went wrong, not serde's message, which may quote a value.
        RequestTokenError::Parse(e, _body) => {
            protocol(format!("the answer does not parse (at `{}`)", e.path()))
        }
        RequestTokenError::Other(m) => protocol(m),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! An identity provider's keys for tests: its JWKS and ID tokens signed with it.

    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};

    /// The test issuer's keys (one per algorithm), as a JWKS.
    pub fn jwks() -> Value {
        json!({"keys": [
            {"kty": "RSA", "kid": "rs", "alg": "RS256", "use": "sig", "e": "AQAB",
             "n": "sV2pOvOgECEKxB-AAAfyYQJdfT1lg-l4P5GT0ZwtbOD-OnCRgvr1KZU4ThR6wcU1D29sfEv8eDCUzQsArcmj5EnLEP9dkupKQvczR6_k0TgM0t2Q6MT9fmyIADTFOIyODNpZTqqhyBm2UrnnRfMkirciIhx_rRFl_BQgcH9Z2cYmJHrFHGFQI62xZGemGK3wyvpT68wUCOGBvuDryaosa1SZ0TvN7sWsV4wKcNoHbBzC9fRfAEUWrR12ASg59FGN-q_oB2Un7Vrg-uxHaAkA56Q2ZnOtKpXOWLDmoNpMGE8BzkX1X7gKJcZCantGz4tsoc66tG7Z4Y7P4aPh5L4WLw"},
            {"kty": "EC", "crv": "P-256", "kid": "es", "alg": "ES256", "use": "sig",
             "x": "rQ1nRZwHwXaLFmW0Qqpzkul3lpfOdIe0WGolBffoGqg",
             "y": "UTgEdgyErfBeqiEJw3qSRIwo6-qLNNRRWDkrYhQji0U"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "alg": "EdDSA", "use": "sig",
             "x": "Dq9MJLOFXJ2ySWzt03R9hy-F6CZQgYXsFMq-sLxu_SM"},
        ]})
    }

    /// Signs `claims` with the test key for `alg` (RS256, ES256 or EdDSA).
    pub fn sign(alg: Algorithm, claims: &Value) -> String {
        let (kid, key) = match alg {
            Algorithm::RS256 => (
                "rs",
                EncodingKey::from_rsa_pem(include_bytes!("../testdata/idp-rs256.TEST-ONLY.pem")),
            ),
            Algorithm::ES256 => (
                "es",
                EncodingKey::from_ec_pem(include_bytes!("../testdata/idp-es256.TEST-ONLY.pem")),
            ),
            Algorithm::EdDSA => (
                "ed",
                EncodingKey::from_ed_pem(include_bytes!("../testdata/idp-eddsa.TEST-ONLY.pem")),
            ),
            other => panic!("no test key for {other:?}"),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &key.expect("test key")).expect("sign")
    }

    /// ID-token claims from `iss` for client `aud` about `sub`, issued at 1000.
    pub fn claims(iss: &str, aud: &str, sub: &str, exp: i64) -> Value {
        json!({"iss": iss, "aud": aud, "sub": sub, "iat": 1000, "exp": exp, "email": sub})
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{claims, jwks, sign};
    use super::*;
    use crate::testserver::{Reply, TestServer};
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    fn http() -> IdpHttp {
        let _ = rustls::crypto::ring::default_provider().install_default();
        IdpHttp::new().expect("client")
    }

    fn issuer(device: bool) -> TestServer {
        let base = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let b2 = base.clone();
        let srv = TestServer::start(move |r| {
            let base = b2.lock().expect("lock").clone();
            match r.target.as_str() {
                "/.well-known/openid-configuration" => {
                    let mut doc = json!({"issuer": base, "token_endpoint": format!("{base}/token"),
                        "jwks_uri": format!("{base}/jwks")});
                    if device {
                        doc["device_authorization_endpoint"] = format!("{base}/device").into();
                    }
                    Reply::json(200, doc)
                }
                "/jwks" => Reply::json(200, jwks()),
                _ => Reply::json(404, json!({})),
            }
        });
        *base.lock().expect("lock") = srv.url.clone();
        srv
    }

    fn answer(id_token: &str) -> IdpTokens {
        serde_json::from_value(json!({"id_token": id_token, "token_type": "Bearer",
            "refresh_token": "rt"}))
        .expect("token answer")
    }

    #[tokio::test]
    async fn verifies_rs256_and_es256_and_refuses_the_rest() {
        let srv = issuer(true);
        let p = Provider::discover(&http(), &srv.url, "cli")
            .await
            .expect("discover");
        assert_eq!(p.token_url().as_str(), format!("{}/token", srv.url));
        p.device_client().expect("device endpoint");
        for alg in [Algorithm::RS256, Algorithm::ES256] {
            let t = sign(alg, &claims(&srv.url, "cli", "alice", 5000));
            let v = p.verify(&answer(&t), 1000).expect("valid");
            assert_eq!(
                (v.id_token.expose(), v.subject.as_str(), v.expires_at),
                (t.as_str(), "alice", 5000)
            );
            assert_eq!(v.refresh_token.as_ref().map(Secret::expose), Some("rt"));
        }
        let refused = |t: String, why: &str| {
            let e = p.verify(&answer(&t), 1000).expect_err(why);
            assert!(matches!(e, IdpError::IdToken { .. }), "{why}: {e}");
            assert!(
                !e.to_string().contains(&t),
                "{why}: the error quotes the token"
            );
        };
        let ok = claims(&srv.url, "cli", "alice", 5000);
        // EdDSA is a good algorithm, but not one the login accepts.
        refused(sign(Algorithm::EdDSA, &ok), "EdDSA");
        refused(
            sign(Algorithm::RS256, &claims(&srv.url, "other-app", "a", 5000)),
            "audience",
        );
        refused(
            sign(Algorithm::RS256, &claims("https://evil", "cli", "a", 5000)),
            "issuer",
        );
        refused(
            sign(Algorithm::ES256, &claims(&srv.url, "cli", "a", 999)),
            "expired",
        );
        let mut two = ok.clone();
        two["aud"] = json!(["cli", "someone-else"]);
        refused(sign(Algorithm::RS256, &two), "untrusted second audience");
        // Signed with the ES256 key but claiming RS256, and unsigned.
        let t = sign(Algorithm::ES256, &ok);
        let (_, rest) = t.split_once('.').expect("jws");
        let forged = |h: serde_json::Value| {
            use base64::Engine;
            let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_string());
            format!("{h}.{rest}")
        };
        refused(forged(json!({"alg": "RS256", "kid": "rs"})), "alg swap");
        let unsigned = forged(json!({"alg": "none"}));
        let unsigned = format!("{}.", unsigned.rsplit_once('.').expect("jws").0);
        refused(unsigned, "alg none");
        // A token answer without an ID token names the likely cause.
        let no_id: IdpTokens =
            serde_json::from_value(json!({"access_token": "a", "token_type": "Bearer"}))
                .expect("answer");
        let e = p.verify(&no_id, 1000).expect_err("no id_token");
        assert!(e.to_string().contains("openid"), "{e}");
    }

    #[tokio::test]
    async fn discovery_checks_the_issuer_and_the_device_endpoint() {
        let srv = issuer(false);
        let p = Provider::discover(&http(), &srv.url, "cli")
            .await
            .expect("discover");
        let e = p.device_client().expect_err("no device endpoint");
        assert!(e.to_string().contains("device authorization"), "{e}");
        let other = format!("{}/", srv.url);
        let e = Provider::discover(&http(), &other, "cli")
            .await
            .expect_err("another issuer");
        assert!(e.to_string().contains("not "), "{e}");
    }

    /// Refresh tokens and device codes go only to the issuer's endpoints over https (or on
    /// loopback): a discovery document naming a plain-http endpoint elsewhere is refused.
    #[tokio::test]
    async fn discovery_refuses_clear_text_endpoints_beyond_loopback() {
        for field in [
            "token_endpoint",
            "jwks_uri",
            "device_authorization_endpoint",
        ] {
            let srv = TestServer::start(move |r| {
                let base = format!("http://{}", r.header("host").unwrap_or(""));
                let mut doc = json!({"issuer": base, "token_endpoint": format!("{base}/token"),
                    "jwks_uri": format!("{base}/jwks"),
                    "device_authorization_endpoint": format!("{base}/device")});
                doc[field] = json!("http://idp.example/x");
                match r.target.as_str() {
                    "/jwks" => Reply::json(200, jwks()),
                    _ => Reply::json(200, doc),
                }
            });
            let e = Provider::discover(&http(), &srv.url, "cli")
                .await
                .expect_err(field);
            assert!(
                e.to_string()
                    .contains(&format!("{field} \"http://idp.example/x\" must use https")),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn follows_no_redirects_and_bounds_answers() {
        let big = "x".repeat(MAX_ANSWER_BYTES + 1);
        let srv = TestServer::start(move |r| match r.target.as_str() {
            "/moved" => Reply::json(307, json!({})).with("location", "/token"),
            "/big" => Reply::json(200, json!({ "x": big })),
            _ => Reply::json(200, json!({})),
        });
        let http = http();
        let get = |path: &str| {
            Request::builder()
                .uri(format!("{}{path}", srv.url))
                .body(Vec::new())
                .expect("request")
        };
        let r = http.call(get("/moved")).await.expect("answer");
        assert_eq!(r.status(), 307);
        assert_eq!(srv.seen().len(), 1, "the redirect was not followed");
        let e = http.call(get("/big")).await.expect_err("too large");
        assert!(matches!(e, HttpError::TooLarge), "{e}");
    }

    #[tokio::test]
    async fn token_answer_errors_never_quote_the_answer() {
        let srv = issuer(true);
        let http = http();
        let p = Provider::discover(&http, &srv.url, "cli")
            .await
            .expect("discover");
        // The test issuer answers 404 `{}` at /token: not an OAuth error.
        let rt = RefreshToken::new("rt".into());
        let e = p
            .client()
            .exchange_refresh_token(&rt)
            .request_async(&http)
            .await
            .expect_err("404");
        let e = request_error(p.token_url().as_str(), e);
        assert!(matches!(e, IdpError::Protocol { .. }), "{e}");
        assert!(e.to_string().contains("/token"), "{e}");
        // A 200 answer that does not parse is reported by where, never by what.
        let body = r#"{"token_type": "Bearer", "id_token": "secret.token.value"}"#;
        let srv = TestServer::start(move |r| match r.target.as_str() {
            "/token" => Reply {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: body.into(),
            },
            _ => Reply::json(404, json!({})),
        });
        let client: IdpClient = Client::new(
            ClientId::new("cli".into()),
            IssuerUrl::new(srv.url.clone()).expect("url"),
            CoreJsonWebKeySet::default(),
        )
        .set_token_uri(TokenUrl::new(format!("{}/token", srv.url)).expect("url"));
        let e = client
            .exchange_refresh_token(&rt)
            .request_async(&http)
            .await
            .expect_err("bad answer");
        let e = request_error("t", e);
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(e.to_string().contains("id_token"), "{e}");
    }
}
