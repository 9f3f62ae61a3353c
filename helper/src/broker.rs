//! The broker's HTTP interface as the helper sees it: discovery
//! (`/.well-known/oauth-authorization-server`) and the RFC 8693 token exchange, with every
//! failure turned into a message a person can act on (denied: the broker's reason verbatim;
//! unreachable: URL and cause; clock skew from the `Date` header). A role that needs a
//! person's approval answers with its own codes (RFC 8628's polling errors), each its own
//! variant so no caller mistakes one for a plain refusal or retries it.

use std::time::{SystemTime, UNIX_EPOCH};

use jit_proto::api::{OAuthError, ServerMetadata};
use jit_proto::approval::{
    ACCESS_DENIED, APPROVAL_REQUIRED, AUTHORIZATION_PENDING, EXPIRED_TOKEN, PendingDetails,
    RequestId, SLOW_DOWN,
};
use jit_proto::exchange::{ApprovalAsk, ExchangeRequest, SubjectTokenType, TokenResponse, Ttl};
use jit_proto::{RefPattern, Scope, Secret};
use reqwest::{StatusCode, Url};

use crate::retry::{self, RetryPolicy};

/// Clock skew beyond which the helper warns (seconds).
pub const MAX_SKEW_SECS: i64 = 60;

/// Seconds since the epoch on the local clock.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A failed conversation with the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The configured broker URL is not an http(s) URL.
    #[error("broker URL {0:?} is not a valid http(s) URL")]
    InvalidUrl(String),
    /// A plain-http broker URL for a host other than this machine.
    #[error("broker URL {0:?} must use https (plain http is accepted only on loopback)")]
    InsecureUrl(String),
    /// The broker could not be reached.
    #[error("cannot reach the broker at {url}: {cause}")]
    Unreachable {
        /// The URL that was tried.
        url: String,
        /// The cause, including the underlying error chain.
        cause: String,
    },
    /// The broker refused the request; `description` is safe to show verbatim.
    #[error("{}{}", description, skew_note(*skew))]
    Denied {
        /// The OAuth error code.
        error: String,
        /// The broker's reason.
        description: String,
        /// How far the broker's clock is ahead of ours, when it is more than a minute.
        skew: Option<i64>,
    },
    /// The broker needs a reason for this grant (`--reason`). Its words say what to run;
    /// an older broker's that do not are completed by [`crate::credential::reason_line`].
    #[error("{description}")]
    ReasonRequired {
        /// The broker's words.
        description: String,
    },
    /// The role needs a person's approval (`approval_required`); the broker's words say
    /// how to ask for it.
    #[error("{description}")]
    ApprovalRequired {
        /// The broker's words.
        description: String,
        /// The role, its approvers, and an earlier request for the same scope, if any.
        details: Box<PendingDetails>,
    },
    /// An approval request waits (`authorization_pending`; `slow_down`: poll less often).
    #[error("request {} is waiting for approval", request_label(details))]
    ApprovalPending {
        /// The request, its approvals so far and the polling interval.
        details: Box<PendingDetails>,
        /// The poll came sooner than `interval` after the last.
        slow_down: bool,
    },
    /// An approval request was denied, cancelled or revoked (`access_denied` naming a
    /// request).
    #[error("{description}")]
    ApprovalDenied {
        /// The broker's words: by whom and why.
        description: String,
        /// The request.
        request_id: Option<RequestId>,
    },
    /// An approval request expired unapproved, or its grant's lifetime ran out before it
    /// was collected (`expired_token`).
    #[error("{description}")]
    ApprovalExpired {
        /// The broker's words.
        description: String,
        /// The request.
        request_id: Option<RequestId>,
    },
    /// Too many requests.
    #[error("the broker is rate-limiting requests; retry after {}", retry_after.as_deref().unwrap_or("a while"))]
    RateLimited {
        /// The `Retry-After` header.
        retry_after: Option<String>,
    },
    /// The broker is up but cannot issue tokens now (its store is down); it fails closed.
    #[error("the broker is temporarily unavailable: {0}")]
    Unavailable(String),
    /// The broker answered something that is not the protocol.
    #[error("unexpected answer from the broker at {url}: {reason}")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

fn skew_note(skew: Option<i64>) -> String {
    match skew {
        Some(s) => format!(
            " (note: this machine's clock is {}s {} the broker's; fix the clock)",
            s.abs(),
            if s > 0 { "behind" } else { "ahead of" }
        ),
        None => String::new(),
    }
}

fn request_label(d: &PendingDetails) -> String {
    d.request_id
        .as_ref()
        .map_or_else(|| "(no id)".to_owned(), RequestId::to_string)
}

impl BrokerError {
    /// Whether it is about an approval request (required, pending, denied, expired): none
    /// of these is asked again, and the credential helper tells the person what to run.
    pub fn is_approval(&self) -> bool {
        matches!(
            self,
            Self::ApprovalRequired { .. }
                | Self::ApprovalPending { .. }
                | Self::ApprovalDenied { .. }
                | Self::ApprovalExpired { .. }
        )
    }
}

/// The full cause chain of an error, on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = c.source();
    }
    s
}

/// What to ask for beyond the scope.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extras<'a> {
    /// Ref patterns to narrow a write grant to.
    pub refs: &'a [RefPattern],
    /// The role to use, when not the broker's choice.
    pub role: Option<&'a str>,
    /// Why.
    pub reason: Option<&'a str>,
    /// Lifetime.
    pub ttl: Option<Ttl>,
    /// File an approval request, or poll one (`None`: neither).
    pub approval: Option<&'a ApprovalAsk>,
    /// Ask for an SSH certificate of this key instead of a Bearer token.
    pub ssh_public_key: Option<&'a jit_proto::ssh::SshPublicKey>,
}

/// What to ask the broker for.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The OIDC ID token or CI JWT.
    pub subject_token: &'a Secret,
    /// Its RFC 8693 token type.
    pub subject_token_type: SubjectTokenType,
    /// The scope wanted.
    pub scope: &'a Scope,
    /// Refs, role, reason, lifetime.
    pub extras: Extras<'a>,
}

/// A granted token.
#[derive(Debug, Clone)]
pub struct Granted {
    /// The broker's answer.
    pub response: TokenResponse,
    /// When the token expires on the local clock (now + `expires_in`).
    pub expires_at: i64,
    /// The broker's clock minus ours, when more than a minute off.
    pub skew: Option<i64>,
}

/// Checks and normalises a broker URL: http(s), a host, no query or fragment, no trailing '/'.
pub(crate) fn parse_base(base: &str) -> Result<Url, BrokerError> {
    let invalid = || BrokerError::InvalidUrl(base.to_owned());
    let mut url = Url::parse(base).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid());
    }
    // Identity tokens travel to the broker: never in clear text beyond this machine.
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(BrokerError::InsecureUrl(base.to_owned()));
    }
    url.set_query(None);
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// Whether `url`'s host is this machine (`localhost`, 127.0.0.0/8, `::1`).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// A client of one broker.
#[derive(Debug, Clone)]
pub struct BrokerClient {
    base: Url,
    http: reqwest::Client,
    clock: fn() -> i64,
    retry: RetryPolicy,
}

impl BrokerClient {
    /// A client for the broker at `base` (`https://git.example.com`).
    pub fn new(base: &str, http: reqwest::Client) -> Result<Self, BrokerError> {
        Ok(Self {
            base: parse_base(base)?,
            http,
            clock: now,
            retry: RetryPolicy::default(),
        })
    }

    /// Replaces the retry policy (tests; `RetryPolicy::none()` to never retry).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sends the request `make` builds, again after a 429 or a 503 as the retry policy
    /// allows (honouring `Retry-After`); any other answer, or a network error, at once.
    async fn send(
        &self,
        url: &str,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BrokerError> {
        let started = std::time::Instant::now();
        let mut tries = 0;
        loop {
            let resp = make()
                .send()
                .await
                .map_err(|e| Self::unreachable(url, &e))?;
            tries += 1;
            if !retry::retryable(resp.status()) {
                return Ok(resp);
            }
            let asked = retry::retry_after(
                header(resp.headers(), "retry-after").as_deref(),
                SystemTime::now(),
            );
            match self.retry.wait(tries, started.elapsed(), asked) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Ok(resp),
            }
        }
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: fn() -> i64) -> Self {
        self.clock = clock;
        self
    }

    /// The normalised base URL, without a trailing slash: the cache key.
    pub fn base(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }

    /// The cache key of the broker at `base` without building a client (the warm path of
    /// the credential helper never touches the network stack).
    pub fn base_of(base: &str) -> Result<String, BrokerError> {
        Ok(parse_base(base)?.as_str().trim_end_matches('/').to_owned())
    }

    /// The HTTP client (the admin API client shares it).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The local clock (seconds since the epoch).
    pub(crate) fn clock(&self) -> fn() -> i64 {
        self.clock
    }

    pub(crate) fn unreachable(url: &str, e: &reqwest::Error) -> BrokerError {
        BrokerError::Unreachable {
            url: url.to_owned(),
            cause: chain(e),
        }
    }

    /// Fetches the broker's metadata.
    pub async fn metadata(&self) -> Result<ServerMetadata, BrokerError> {
        let url = format!("{}/.well-known/oauth-authorization-server", self.base());
        let resp = self.send(&url, || self.http.get(&url)).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(BrokerError::Protocol {
                url,
                reason: format!("status {status}"),
            });
        }
        let md = resp
            .json::<ServerMetadata>()
            .await
            .map_err(|e| BrokerError::Protocol {
                url: url.clone(),
                reason: format!("bad metadata: {}", chain(&e)),
            })?;
        // The identity token goes to `token_endpoint`: only ever to the broker itself, under
        // its own path prefix (another application may share the origin).
        let prefix = self.base.path().trim_end_matches('/');
        let own = Url::parse(&md.token_endpoint).is_ok_and(|t| {
            t.origin() == self.base.origin()
                && t.path()
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        });
        if !own {
            return Err(BrokerError::Protocol {
                url,
                reason: format!(
                    "token_endpoint {:?} is not under the broker's own URL; refusing to send an identity there",
                    md.token_endpoint
                ),
            });
        }
        Ok(md)
    }

    /// Exchanges a subject token for a broker token (RFC 8693).
    pub async fn exchange(
        &self,
        md: &ServerMetadata,
        req: &Exchange<'_>,
    ) -> Result<Granted, BrokerError> {
        let url = md.token_endpoint.clone();
        let x = req.extras;
        let form = ExchangeRequest {
            role: x.role.map(str::to_owned),
            reason: x.reason.map(str::to_owned),
            ttl: x.ttl,
            refs: x.refs.to_vec(),
            approval: x.approval.cloned().unwrap_or_default(),
            ssh_public_key: x.ssh_public_key.cloned(),
            ..ExchangeRequest::new(
                req.subject_token.clone(),
                req.subject_token_type,
                req.scope.clone(),
            )
        }
        .to_form();
        let resp = self.send(&url, || self.http.post(&url).form(&form)).await?;
        let now = (self.clock)();
        let skew = skew(resp.headers(), now);
        let status = resp.status();
        let retry_after = header(resp.headers(), "retry-after");
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Self::unreachable(&url, &e))?;
        if status.is_success() {
            let response: TokenResponse =
                serde_json::from_slice(&bytes).map_err(|e| BrokerError::Protocol {
                    url,
                    reason: format!("bad token response: {e}"),
                })?;
            let expires_at = now.saturating_add(response.expires_in);
            return Ok(Granted {
                response,
                expires_at,
                skew,
            });
        }
        let err: Option<OAuthError> = serde_json::from_slice(&bytes).ok();
        Err(classify(status, err, retry_after, skew, url))
    }
}

pub(crate) fn header(h: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The broker's clock minus ours, when beyond [`MAX_SKEW_SECS`].
pub(crate) fn skew(h: &reqwest::header::HeaderMap, now: i64) -> Option<i64> {
    let date = header(h, "date")?;
    let at = httpdate::parse_http_date(&date).ok()?;
    let theirs = at.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    let d = theirs - now;
    (d.abs() > MAX_SKEW_SECS).then_some(d)
}

/// Whether an error says a reason is required. The broker has no dedicated error code yet,
/// so this recognises `reason_required` or a description that says so (the broker's own:
/// "role 'R' requires a reason").
fn says_reason_required(e: &OAuthError) -> bool {
    let d = e
        .error_description
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    e.error == "reason_required"
        || d.contains("requires a reason")
        || (d.contains("reason") && d.contains("required"))
}

fn classify(
    status: StatusCode,
    err: Option<OAuthError>,
    retry_after: Option<String>,
    skew: Option<i64>,
    url: String,
) -> BrokerError {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return BrokerError::RateLimited { retry_after };
    }
    let Some(err) = err else {
        return BrokerError::Protocol {
            url,
            reason: format!("status {status} without an OAuth error body"),
        };
    };
    // The broker's words reach a terminal: no control or bidi character may drive it.
    let description = jit_proto::display::clean(
        err.error_description
            .as_deref()
            .unwrap_or(err.error.as_str()),
    )
    .into_owned();
    if status == StatusCode::SERVICE_UNAVAILABLE || err.error == "temporarily_unavailable" {
        return BrokerError::Unavailable(description);
    }
    // Before the reason check: "approval required" descriptions may well mention a reason.
    if let Some(e) = approval_error(&err, &description) {
        return e;
    }
    if says_reason_required(&err) {
        return BrokerError::ReasonRequired { description };
    }
    BrokerError::Denied {
        error: jit_proto::display::clean(&err.error).into_owned(),
        description,
        skew,
    }
}

/// The approval codes (a 429 `slow_down` never gets here: it is rate limiting). A plain
/// `access_denied`, about no request, stays a plain refusal.
fn approval_error(err: &OAuthError, description: &str) -> Option<BrokerError> {
    let details = || Box::new(err.approval.clone());
    let description = description.to_owned();
    let request_id = err.approval.request_id.clone();
    Some(match err.error.as_str() {
        APPROVAL_REQUIRED => BrokerError::ApprovalRequired {
            description,
            details: details(),
        },
        AUTHORIZATION_PENDING | SLOW_DOWN => BrokerError::ApprovalPending {
            details: details(),
            slow_down: err.error == SLOW_DOWN,
        },
        EXPIRED_TOKEN => BrokerError::ApprovalExpired {
            description,
            request_id,
        },
        ACCESS_DENIED if request_id.is_some() => BrokerError::ApprovalDenied {
            description,
            request_id,
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testserver::{Reply, TestServer, client};
    use jit_proto::api::GRANT_TYPE_TOKEN_EXCHANGE;
    use serde_json::json;

    fn md(url: &str) -> ServerMetadata {
        ServerMetadata {
            issuer: url.to_owned(),
            token_endpoint: format!("{url}/oauth/token"),
            introspection_endpoint: format!("{url}/oauth/introspect"),
            introspection_endpoint_auth_methods_supported: vec![],
            jwks_uri: format!("{url}/.well-known/jwks.json"),
            grant_types_supported: vec![GRANT_TYPE_TOKEN_EXCHANGE.to_owned()],
            token_audience: "git".into(),
            subject_token_audience: "git-jit".into(),
            login_issuer: None,
            login_client_id: None,
            login_scope: None,
            scope_syntax: "repo:<path>:<actions>".into(),
        }
    }

    fn ask<'a>(tok: &'a Secret, scope: &'a Scope, refs: &'a [RefPattern]) -> Exchange<'a> {
        Exchange {
            subject_token: tok,
            subject_token_type: SubjectTokenType::Jwt,
            scope,
            extras: Extras {
                refs,
                role: Some("oncall"),
                reason: Some("INC-1"),
                ttl: Ttl::from_minutes(30),
                approval: None,
                ssh_public_key: None,
            },
        }
    }

    /// Identity tokens never travel in clear text beyond this machine, and never to another
    /// origin than the broker's, whatever its metadata says.
    #[tokio::test]
    async fn identity_goes_only_to_the_brokers_own_origin() {
        for insecure in [
            "http://broker.example",
            "http://10.0.0.1:8080",
            "http://[2001:db8::1]",
        ] {
            assert!(
                matches!(
                    BrokerClient::new(insecure, client()),
                    Err(BrokerError::InsecureUrl(_))
                ),
                "{insecure}"
            );
        }
        for fine in [
            "http://127.0.0.1:8080",
            "http://localhost",
            "http://[::1]:1",
            "https://b.example",
        ] {
            assert!(BrokerClient::new(fine, client()).is_ok(), "{fine}");
        }
        let srv = TestServer::start(|_| {
            Reply::json(
                200,
                serde_json::to_value(md("http://127.0.0.1:9")).expect("json"),
            )
        });
        let b = BrokerClient::new(&srv.url, client()).expect("client");
        let err = b.metadata().await.expect_err("foreign token_endpoint");
        assert!(
            err.to_string().contains("not under the broker's own URL"),
            "{err}"
        );
    }

    /// A broker under a path prefix sends identities only below that prefix: another
    /// application on the same origin does not get them.
    #[tokio::test]
    async fn identity_stays_under_the_brokers_path_prefix() {
        let srv = TestServer::start(|r| {
            let host = r.header("host").unwrap_or("").to_owned();
            // Under /jit the metadata points next door, /jitx; under /ok it points home.
            let home = if r.target.starts_with("/jit/") {
                format!("http://{host}/jitx")
            } else {
                format!("http://{host}/ok")
            };
            Reply::json(200, serde_json::to_value(md(&home)).expect("json"))
        });
        let b = BrokerClient::new(&format!("{}/jit", srv.url), client()).expect("client");
        let err = b.metadata().await.expect_err("token_endpoint outside /jit");
        assert!(
            err.to_string().contains("not under the broker's own URL"),
            "{err}"
        );
        let b = BrokerClient::new(&format!("{}/ok", srv.url), client()).expect("client");
        assert!(b.metadata().await.is_ok(), "its own endpoint");
    }

    /// Regression: a 307 from the token endpoint made the helper re-post the subject token to
    /// the redirect's target, another origin.
    #[tokio::test]
    async fn a_redirected_exchange_sends_the_identity_nowhere_else() {
        let elsewhere = TestServer::start(|_| Reply::json(200, json!({})));
        let target = format!("{}/steal", elsewhere.url);
        let srv = TestServer::start(move |_| Reply::json(307, json!({})).with("location", &target));
        let b = BrokerClient::new(&srv.url, client()).expect("client");
        let tok = Secret::new("eyJ.identity.token");
        let scope = Scope::parse("repo:acme/api:read").expect("scope");
        let result = b.exchange(&md(&srv.url), &ask(&tok, &scope, &[])).await;
        assert!(result.is_err(), "a redirect is not a token");
        assert_eq!(srv.seen().len(), 1);
        assert!(
            elsewhere.seen().is_empty(),
            "the identity token followed the redirect"
        );
    }

    #[test]
    fn base_is_normalised() {
        let b = BrokerClient::new("https://b.example/sub/?q#f", client()).expect("ok");
        assert_eq!(b.base(), "https://b.example/sub");
        for bad in ["ftp://x", "not a url", "file:///etc"] {
            assert!(BrokerClient::new(bad, client()).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn metadata_and_exchange() {
        let srv = TestServer::start(|r| match r.target.as_str() {
            "/.well-known/oauth-authorization-server" => {
                let own = format!("http://{}", r.header("host").unwrap_or(""));
                Reply::json(200, serde_json::to_value(md(&own)).expect("json"))
            }
            _ => Reply::json(
                200,
                json!({"access_token": "brk", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 1800, "scope": "repo:acme/api:write", "jti": "j1"}),
            ),
        });
        let b = BrokerClient::new(&srv.url, client())
            .expect("ok")
            .with_clock(|| 1000);
        let m = b.metadata().await.expect("metadata");
        assert_eq!(m.subject_token_audience, "git-jit");
        let tok = Secret::new("idt");
        let scope = Scope::parse("repo:acme/api:write").expect("scope");
        let refs = [
            RefPattern::parse("refs/heads/hotfix/*").expect("ref"),
            RefPattern::parse("refs/tags/v*").expect("ref"),
        ];
        let g = b
            .exchange(&md(&srv.url), &ask(&tok, &scope, &refs))
            .await
            .expect("granted");
        assert_eq!(g.response.access_token.expose(), "brk");
        assert_eq!(g.expires_at, 2800);
        let seen = srv.seen();
        let post = &seen[1];
        assert_eq!(post.target, "/oauth/token");
        assert_eq!(
            post.form("grant_type").as_deref(),
            Some(GRANT_TYPE_TOKEN_EXCHANGE)
        );
        assert_eq!(post.form("subject_token").as_deref(), Some("idt"));
        assert_eq!(post.form("scope").as_deref(), Some("repo:acme/api:write"));
        assert_eq!(
            post.form("refs").as_deref(),
            Some("refs/heads/hotfix/* refs/tags/v*")
        );
        assert_eq!(post.form("role").as_deref(), Some("oncall"));
        assert_eq!(post.form("reason").as_deref(), Some("INC-1"));
        assert_eq!(post.form("ttl").as_deref(), Some("30m"));
    }

    async fn fail_with(reply: fn() -> Reply) -> BrokerError {
        let srv = TestServer::start(move |_| reply());
        let b = BrokerClient::new(&srv.url, client())
            .expect("ok")
            .with_clock(|| 784_111_777)
            .with_retry(RetryPolicy::none());
        let tok = Secret::new("idt");
        let scope = Scope::parse("repo:acme/api:read").expect("scope");
        b.exchange(&md(&srv.url), &ask(&tok, &scope, &[]))
            .await
            .expect_err("refused")
    }

    #[tokio::test]
    async fn denial_shows_the_brokers_reason_verbatim() {
        let e = fail_with(|| Reply::json(403, json!({"error": "invalid_scope", "error_description": "role ci may not write refs/heads/main"}))).await;
        assert_eq!(e.to_string(), "role ci may not write refs/heads/main");
    }

    #[tokio::test]
    async fn a_brokers_words_cannot_drive_the_terminal() {
        let e = fail_with(|| Reply::json(403, json!({"error": "invalid\u{1b}]8;;x\u{7}scope", "error_description": "role \u{1b}[2Jci\u{9b}1m \u{202e}may not"}))).await;
        let shown = e.to_string();
        assert!(
            !shown.chars().any(jit_proto::display::is_dangerous),
            "{shown:?}"
        );
        assert!(
            shown.contains("ci") && shown.contains("may not"),
            "{shown:?}"
        );
        let BrokerError::Denied { error, .. } = e else {
            panic!("not a denial: {e:?}")
        };
        assert!(
            !error.chars().any(jit_proto::display::is_dangerous),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn denial_with_clock_skew_says_so() {
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT; the broker says 5 minutes later.
        let e = fail_with(|| {
            Reply::json(
                400,
                json!({"error": "invalid_grant", "error_description": "token not yet valid"}),
            )
            .with("date", "Sun, 06 Nov 1994 08:54:37 GMT")
        })
        .await;
        assert!(
            matches!(
                e,
                BrokerError::Denied {
                    skew: Some(300),
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("300s behind"), "{e}");
    }

    #[tokio::test]
    async fn reason_required_rate_limit_and_unavailable() {
        let e = fail_with(|| Reply::json(400, json!({"error": "invalid_request", "error_description": "role oncall: a reason is required"}))).await;
        assert!(matches!(e, BrokerError::ReasonRequired { .. }), "{e:?}");
        // The broker's own words for a role that requires a reason.
        const SAID: &str = "role 'dev-write' requires a reason; run: git jit request --repo acme/api --action write --role dev-write --reason \"…\"";
        let e = fail_with(|| {
            Reply::json(
                403,
                json!({"error": "access_denied", "error_description": SAID}),
            )
        })
        .await;
        assert!(matches!(e, BrokerError::ReasonRequired { .. }), "{e:?}");
        assert_eq!(e.to_string(), SAID);
        let e =
            fail_with(|| Reply::json(429, json!({"error": "slow_down"})).with("retry-after", "7"))
                .await;
        assert!(e.to_string().contains("retry after 7"), "{e}");
        let e = fail_with(|| Reply::json(503, json!({"error": "temporarily_unavailable", "error_description": "store unreachable"}))).await;
        assert_eq!(
            e.to_string(),
            "the broker is temporarily unavailable: store unreachable"
        );
        let e = fail_with(|| Reply {
            status: 502,
            headers: vec![],
            body: "<html>".into(),
        })
        .await;
        assert!(matches!(e, BrokerError::Protocol { .. }), "{e:?}");
    }

    fn granted() -> Reply {
        Reply::json(
            200,
            json!({"access_token": "brk", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 1800, "scope": "repo:acme/api:read", "jti": "j1"}),
        )
    }

    /// Answers the exchange with `first` for the first `n` requests, then with a grant.
    fn refusing(n: usize, first: fn() -> Reply) -> TestServer {
        let count = std::sync::atomic::AtomicUsize::new(0);
        TestServer::start(move |_| {
            if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
                first()
            } else {
                granted()
            }
        })
    }

    /// The default policy with millisecond jitter, so the tests do not wait for seconds.
    fn quick() -> RetryPolicy {
        RetryPolicy {
            backoff: std::time::Duration::from_millis(5),
            backoff_cap: std::time::Duration::from_millis(20),
            ..RetryPolicy::default()
        }
    }

    async fn exchange_on(srv: &TestServer, retry: RetryPolicy) -> Result<Granted, BrokerError> {
        let b = BrokerClient::new(&srv.url, client())
            .expect("ok")
            .with_retry(retry);
        let tok = Secret::new("idt");
        let scope = Scope::parse("repo:acme/api:read").expect("scope");
        b.exchange(&md(&srv.url), &ask(&tok, &scope, &[])).await
    }

    #[tokio::test]
    async fn a_429_or_503_is_retried_after_retry_after() {
        let srv = refusing(2, || {
            Reply::json(429, json!({"error": "slow_down"})).with("retry-after", "0")
        });
        let g = exchange_on(&srv, quick())
            .await
            .expect("granted on the third try");
        assert_eq!(g.response.access_token.expose(), "brk");
        assert_eq!(srv.seen().len(), 3);
        // The same identity each time: the form is sent again whole.
        assert!(
            srv.seen()
                .iter()
                .all(|r| r.form("subject_token").as_deref() == Some("idt"))
        );

        let srv = refusing(1, || {
            Reply::json(503, json!({"error": "temporarily_unavailable"}))
                .with("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")
        });
        exchange_on(&srv, quick())
            .await
            .expect("granted on the second try");
        assert_eq!(srv.seen().len(), 2);
    }

    #[tokio::test]
    async fn other_errors_are_never_retried() {
        for reply in [
            (|| Reply::json(400, json!({"error": "invalid_scope"}))) as fn() -> Reply,
            || Reply::json(403, json!({"error": "access_denied"})),
            || Reply::json(500, json!({"error": "server_error"})),
            || Reply::json(502, json!({"error": "bad_gateway"})).with("retry-after", "0"),
        ] {
            let srv = refusing(1, reply);
            assert!(exchange_on(&srv, quick()).await.is_err());
            assert_eq!(srv.seen().len(), 1);
        }
    }

    const RQ: &str = "rq_abcdefghijklmnopqrstuvwxyz";

    /// Each approval answer is its own error, carrying the request's details, and is asked
    /// exactly once: no retry, whatever the status. A plain `access_denied`, about no
    /// request, stays a plain refusal.
    #[tokio::test]
    async fn approval_answers_are_their_own_errors_and_never_retried() {
        let required = || {
            Reply::json(
                403,
                json!({"error": "approval_required", "error_description": "role prod-push needs approval: a reason is required",
                       "role": "prod-push", "approvers": ["bob (corp)"], "min_reason": 10}),
            )
        };
        let pending = || {
            Reply::json(
                400,
                json!({"error": "authorization_pending", "request_id": RQ, "state": "pending",
                       "role": "prod-push", "approvers": ["bob (corp)"], "approvals": 0, "required": 1,
                       "interval": 5, "expires_in": 1800}),
            )
        };
        let slow = || {
            Reply::json(
                400,
                json!({"error": "slow_down", "request_id": RQ, "interval": 10}),
            )
        };
        let expired = || {
            Reply::json(
                400,
                json!({"error": "expired_token", "error_description": "request expired unapproved", "request_id": RQ}),
            )
        };
        let denied = || {
            Reply::json(
                403,
                json!({"error": "access_denied", "error_description": "denied by bob: not now", "request_id": RQ, "state": "denied"}),
            )
        };
        let plain = || {
            Reply::json(
                403,
                json!({"error": "access_denied", "error_description": "no role lets you write"}),
            )
        };
        type Case = (fn() -> Reply, &'static str);
        let cases: [Case; 6] = [
            (required, "required"),
            (pending, "pending"),
            (slow, "slow"),
            (expired, "expired"),
            (denied, "denied"),
            (plain, "plain"),
        ];
        for (reply, name) in cases {
            let srv = refusing(usize::MAX, reply);
            let e = exchange_on(&srv, quick()).await.expect_err(name);
            assert_eq!(srv.seen().len(), 1, "{name}: asked once");
            assert_eq!(e.is_approval(), name != "plain", "{name}: {e:?}");
            match (name, &e) {
                (
                    "required",
                    BrokerError::ApprovalRequired {
                        description,
                        details,
                    },
                ) => {
                    assert!(description.starts_with("role prod-push needs approval"));
                    assert_eq!(details.role.as_deref(), Some("prod-push"));
                    assert_eq!(details.min_reason, Some(10));
                }
                (
                    "pending",
                    BrokerError::ApprovalPending {
                        details,
                        slow_down: false,
                    },
                ) => {
                    assert_eq!(details.request_id.as_ref().map(RequestId::as_str), Some(RQ));
                    assert_eq!((details.approvals, details.required), (Some(0), Some(1)));
                    assert_eq!(
                        e.to_string(),
                        format!("request {RQ} is waiting for approval")
                    );
                }
                (
                    "slow",
                    BrokerError::ApprovalPending {
                        details,
                        slow_down: true,
                    },
                ) => {
                    assert_eq!(details.interval, Some(10));
                }
                (
                    "expired",
                    BrokerError::ApprovalExpired {
                        request_id: Some(_),
                        ..
                    },
                )
                | (
                    "denied",
                    BrokerError::ApprovalDenied {
                        request_id: Some(_),
                        ..
                    },
                )
                | ("plain", BrokerError::Denied { .. }) => {}
                _ => panic!("{name}: {e:?}"),
            }
        }
        assert_eq!(
            exchange_on(&refusing(1, denied), quick())
                .await
                .expect_err("denied")
                .to_string(),
            "denied by bob: not now"
        );
    }

    /// The poll and the filing are the exchange's form with `request_id` or `approval`.
    #[tokio::test]
    async fn approval_parameters_go_in_the_form() {
        let srv = refusing(0, || Reply::json(500, json!({})));
        let b = BrokerClient::new(&srv.url, client()).expect("ok");
        let tok = Secret::new("idt");
        let scope = Scope::parse("repo:acme/api:read").expect("scope");
        let id = RequestId::parse(RQ).expect("id");
        for ask_for in [ApprovalAsk::Request, ApprovalAsk::Poll(id)] {
            let mut x = ask(&tok, &scope, &[]);
            x.extras.approval = Some(&ask_for);
            b.exchange(&md(&srv.url), &x).await.expect("granted");
        }
        let seen = srv.seen();
        assert_eq!(seen[0].form("approval").as_deref(), Some("request"));
        assert_eq!(seen[0].form("request_id"), None);
        assert_eq!(seen[1].form("approval"), None);
        assert_eq!(seen[1].form("request_id").as_deref(), Some(RQ));
    }

    #[tokio::test]
    async fn retries_are_bounded_in_tries_and_time() {
        let srv = refusing(usize::MAX, || {
            Reply::json(429, json!({"error": "slow_down"})).with("retry-after", "0")
        });
        let e = exchange_on(&srv, quick())
            .await
            .expect_err("always refused");
        assert!(matches!(e, BrokerError::RateLimited { .. }), "{e:?}");
        assert_eq!(srv.seen().len(), 4, "four tries at most");

        // A wait past the budget is not made: the refusal is answered at once.
        let srv = refusing(usize::MAX, || {
            Reply::json(429, json!({"error": "slow_down"})).with("retry-after", "3600")
        });
        let e = exchange_on(&srv, RetryPolicy::default())
            .await
            .expect_err("refused");
        assert!(e.to_string().contains("retry after 3600"), "{e}");
        assert_eq!(srv.seen().len(), 1);
    }

    #[tokio::test]
    async fn unreachable_names_url_and_cause() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let b = BrokerClient::new(&format!("http://127.0.0.1:{port}"), client()).expect("ok");
        let e = b.metadata().await.expect_err("nothing listens");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "cannot reach the broker at http://127.0.0.1:{port}/"
            )),
            "{msg}"
        );
        assert!(msg.to_lowercase().contains("connect"), "{msg}");
    }
}
