//! The broker's admin API as `git jit admin` sees it: live grants (`GET /v1/grants`, followed
//! page by page), revocation (`POST /v1/revoke`) and the audit trail (`GET /v1/audit`, JSON
//! lines or CSV, followed by `x-next-after-seq`). The credential is the admin's OIDC ID token
//! from the `git jit login` session, or a token read from an environment variable — never
//! from the command line. Failures become one actionable line, as in `broker`.

use jit_proto::Secret;
use jit_proto::admin::{
    AuditFormat, AuditParams, GrantInfo, GrantPage, GrantsQuery, MAX_AUDIT_PAGE, MAX_GRANT_PAGE,
    NEXT_AFTER_SEQ_HEADER, NEXT_AUDIT_CURSOR_HEADER, RevokeRequest, RevokeResponse,
};
use jit_proto::api::OAuthError;
use jit_proto::audit::AuditEvent;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::broker::{self, BrokerClient, BrokerError};
use crate::config::Env;
use crate::export::CsvExport;
use crate::login::{self, LoginError};
use crate::session::SessionStore;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Reaching or understanding the broker failed, or it refused the request.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The login session is missing or expired.
    #[error(transparent)]
    Login(#[from] LoginError),
    /// The `--token-env` variable is unset or empty.
    #[error(
        "environment variable {0} is not set or empty (--token-env names the variable holding the admin token)"
    )]
    TokenEnv(String),
    /// The broker did not accept the credential (401).
    #[error("the broker did not accept your credential: {description} ({hint})")]
    Unauthenticated {
        /// The broker's reason.
        description: String,
        /// What to do about it, depending on where the credential came from.
        hint: String,
    },
    /// The credential is valid but not an admin's (403).
    #[error("not an admin: {0} (the broker's [admin] config must name your identity or role)")]
    NotAdmin(String),
}

/// Where the admin credential came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// The `git jit login` session's ID token.
    Session,
    /// An environment variable (`--token-env`).
    EnvVar(String),
}

impl CredentialSource {
    pub(crate) fn hint(&self) -> String {
        match self {
            CredentialSource::Session => "run `git jit login` again".into(),
            CredentialSource::EnvVar(v) => format!("check the token in ${v}"),
        }
    }
}

/// The admin credential: from `token_env` when given, otherwise the login session's ID
/// token for the broker's login issuer (refreshed silently when about to expire).
pub async fn credential(
    env: Env<'_>,
    config_dir: &std::path::Path,
    broker: &BrokerClient,
    token_env: Option<&str>,
) -> Result<(Secret, CredentialSource), AdminError> {
    if let Some(var) = token_env {
        let token = env(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| AdminError::TokenEnv(var.to_owned()))?;
        return Ok((Secret::new(token), CredentialSource::EnvVar(var.to_owned())));
    }
    let md = broker.metadata().await?;
    let issuer = md
        .login_issuer
        .as_deref()
        .ok_or_else(|| LoginError::NoLoginIssuer(broker.base()))?;
    let store = SessionStore::new(config_dir);
    // Admin commands talk only to the configured broker (`broker_url(None)`).
    let token =
        login::current_id_token(&store, issuer, &broker.base(), true, broker.clock()).await?;
    Ok((token, CredentialSource::Session))
}

/// Parses a JSON-lines audit body; blank lines are skipped.
pub fn parse_audit(body: &str) -> Result<Vec<AuditEvent>, serde_json::Error> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
}

/// A client of one broker's admin API, holding the admin's credential.
#[derive(Debug, Clone)]
pub struct AdminClient {
    broker: BrokerClient,
    token: Secret,
    source: CredentialSource,
}

impl AdminClient {
    /// A client that authenticates with `token`.
    pub fn new(broker: BrokerClient, token: Secret, source: CredentialSource) -> Self {
        Self {
            broker,
            token,
            source,
        }
    }

    /// The broker's base URL.
    pub fn base(&self) -> String {
        self.broker.base()
    }

    /// Sends a request with the credential; the body and headers of a 2xx answer, or the
    /// error the broker's answer means.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<(HeaderMap, Vec<u8>), AdminError> {
        let resp = req
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| BrokerClient::unreachable(url, &e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| BrokerClient::unreachable(url, &e))?;
        if status.is_success() {
            return Ok((headers, body.to_vec()));
        }
        Err(self.classify(status, &headers, &body, url))
    }

    fn classify(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        url: &str,
    ) -> AdminError {
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = broker::header(headers, "retry-after");
            return BrokerError::RateLimited { retry_after }.into();
        }
        let Ok(err) = serde_json::from_slice::<OAuthError>(body) else {
            return BrokerError::Protocol {
                url: url.to_owned(),
                reason: format!("status {status} without an OAuth error body"),
            }
            .into();
        };
        // The broker's words reach a terminal: no control or bidi character may drive it.
        let description = jit_proto::display::clean(
            err.error_description
                .as_deref()
                .unwrap_or(err.error.as_str()),
        )
        .into_owned();
        match status {
            StatusCode::UNAUTHORIZED => AdminError::Unauthenticated {
                description,
                hint: self.source.hint(),
            },
            StatusCode::FORBIDDEN => AdminError::NotAdmin(description),
            StatusCode::SERVICE_UNAVAILABLE => BrokerError::Unavailable(description).into(),
            _ => BrokerError::Denied {
                error: jit_proto::display::clean(&err.error).into_owned(),
                description,
                skew: broker::skew(headers, (self.broker.clock())()),
            }
            .into(),
        }
    }

    fn protocol(url: &str, reason: impl Into<String>) -> AdminError {
        BrokerError::Protocol {
            url: url.to_owned(),
            reason: reason.into(),
        }
        .into()
    }

    /// One page of live grants passing `filter` (its filters; `cursor` and `limit` are
    /// the arguments').
    pub async fn grant_page(
        &self,
        filter: &GrantsQuery,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<GrantPage, AdminError> {
        let url = format!("{}/v1/grants", self.base());
        let query = GrantsQuery {
            cursor,
            limit: Some(limit),
            ..filter.clone()
        };
        let req = self.broker.http().get(&url).query(&query);
        let (_, body) = self.send(req, &url).await?;
        serde_json::from_slice(&body)
            .map_err(|e| Self::protocol(&url, format!("bad grant page: {e}")))
    }

    /// Live grants passing `filter`'s filters (at most `limit`), following `next_cursor`
    /// (a page may be short, even empty, and still have one); and whether more match.
    pub async fn grants(
        &self,
        filter: &GrantsQuery,
        limit: Option<usize>,
    ) -> Result<(Vec<GrantInfo>, bool), AdminError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let want = limit.map_or(MAX_GRANT_PAGE, |l| (l - out.len()).min(MAX_GRANT_PAGE));
            let page = self.grant_page(filter, cursor.clone(), want).await?;
            out.extend(page.grants);
            if let Some(l) = limit {
                out.truncate(l);
            }
            match page.next_cursor {
                Some(_) if limit.is_some_and(|l| out.len() >= l) => return Ok((out, true)),
                // A cursor that does not move would loop for ever.
                Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                    return Err(Self::protocol(
                        &format!("{}/v1/grants", self.base()),
                        "paging returned the same cursor twice",
                    ));
                }
                Some(next) => cursor = Some(next),
                None => return Ok((out, false)),
            }
        }
    }

    /// Revokes; the broker's answer (in force when it comes).
    pub async fn revoke(&self, req: &RevokeRequest) -> Result<RevokeResponse, AdminError> {
        let url = format!("{}/v1/revoke", self.base());
        let (_, body) = self
            .send(self.broker.http().post(&url).json(req), &url)
            .await?;
        serde_json::from_slice(&body)
            .map_err(|e| Self::protocol(&url, format!("bad revoke answer: {e}")))
    }

    /// One page of the audit trail passing `filter`'s filters (at most `limit` events from
    /// `from`): the body and where the next page starts, when there is one.
    pub async fn audit_page(
        &self,
        filter: &AuditParams,
        format: AuditFormat,
        from: &AuditFrom,
        limit: usize,
    ) -> Result<(String, Option<AuditFrom>), AdminError> {
        let url = format!("{}/v1/audit", self.base());
        let (after_seq, cursor) = match from {
            AuditFrom::AfterSeq(n) => (*n, None),
            AuditFrom::Cursor(c) => (0, Some(c.clone())),
        };
        let query = AuditParams {
            after_seq,
            cursor,
            limit: Some(limit),
            format: Some(format.as_str().to_owned()),
            ..filter.clone()
        };
        let req = self.broker.http().get(&url).query(&query);
        let (headers, body) = self.send(req, &url).await?;
        let body =
            String::from_utf8(body).map_err(|_| Self::protocol(&url, "audit body is not UTF-8"))?;
        // The cursor pages any store; a broker from before replica chains sends only the seq.
        if let Some(c) = broker::header(&headers, NEXT_AUDIT_CURSOR_HEADER) {
            return Ok((body, Some(AuditFrom::Cursor(c.trim().to_owned()))));
        }
        let next = match broker::header(&headers, NEXT_AFTER_SEQ_HEADER) {
            None => None,
            Some(v) => Some(AuditFrom::AfterSeq(v.trim().parse::<u64>().map_err(
                |_| Self::protocol(&url, format!("x-next-after-seq {v:?} is not a number")),
            )?)),
        };
        Ok((body, next))
    }

    /// The audit trail (at most `limit` events), following `x-next-cursor` (or
    /// `x-next-after-seq`): JSON lines, or CSV with one header line.
    pub async fn audit(
        &self,
        filter: &AuditParams,
        format: AuditFormat,
        limit: Option<usize>,
    ) -> Result<String, AdminError> {
        let url = format!("{}/v1/audit", self.base());
        // JSON lines are passed on exactly; CSV is re-written for people (`export`).
        let mut out = String::new();
        let mut csv = CsvExport::new();
        let mut from = AuditFrom::AfterSeq(0);
        let mut seen = 0;
        loop {
            let want = limit.map_or(MAX_AUDIT_PAGE, |l| (l - seen).min(MAX_AUDIT_PAGE));
            let (body, next) = self.audit_page(filter, format, &from, want).await?;
            seen += match format {
                AuditFormat::Csv => csv
                    .push_page(&body)
                    .map_err(|e| Self::protocol(&url, e.to_string()))?,
                AuditFormat::JsonLines => {
                    out.push_str(&body);
                    // A JSON line holds no raw newline: lines count events.
                    body.lines().filter(|l| !l.is_empty()).count()
                }
            };
            match next {
                Some(_) if limit.is_some_and(|l| seen >= l) => break,
                // A page that does not advance would loop for ever.
                Some(n) if n.advances(&from) => from = n,
                Some(n) => {
                    return Err(Self::protocol(
                        &url,
                        format!("paging went from {from} to {n}"),
                    ));
                }
                None => break,
            }
        }
        match format {
            AuditFormat::Csv => csv
                .finish()
                .map_err(|e| Self::protocol(&url, e.to_string())),
            AuditFormat::JsonLines => Ok(out),
        }
    }
}

/// Where a page of the audit trail starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditFrom {
    /// After this seq (a store holding one replica's chain, or an older broker).
    AfterSeq(u64),
    /// The broker's opaque cursor (`x-next-cursor`).
    Cursor(String),
}

impl AuditFrom {
    /// Whether starting here moves on from `before` (a cursor must change, a seq grow).
    fn advances(&self, before: &AuditFrom) -> bool {
        match (before, self) {
            (AuditFrom::AfterSeq(a), AuditFrom::AfterSeq(b)) => b > a,
            (a, b) => a != b,
        }
    }
}

impl std::fmt::Display for AuditFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditFrom::AfterSeq(n) => write!(f, "after_seq {n}"),
            AuditFrom::Cursor(c) => write!(f, "cursor {c:?}"),
        }
    }
}

impl AdminClient {
    /// The audit trail as parsed events (at most `limit`).
    pub async fn audit_events(
        &self,
        filter: &AuditParams,
        limit: Option<usize>,
    ) -> Result<Vec<AuditEvent>, AdminError> {
        let body = self.audit(filter, AuditFormat::JsonLines, limit).await?;
        parse_audit(&body).map_err(|e| {
            Self::protocol(
                &format!("{}/v1/audit", self.base()),
                format!("bad audit event: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testserver::{Reply, TestServer, client};
    use jit_proto::admin::RevokeBy;
    use serde_json::json;

    fn admin(srv: &TestServer) -> AdminClient {
        let b = BrokerClient::new(&srv.url, client()).expect("url");
        AdminClient::new(
            b,
            Secret::new("adm1n"),
            CredentialSource::EnvVar("JIT_ADMIN".into()),
        )
    }

    fn grant(i: usize) -> serde_json::Value {
        json!({"jti": format!("j{i}"), "sub": "alice", "idp": "corp", "role": "dev",
               "scope": "repo:acme/api:read", "issued_ms": 1, "exp": 100})
    }

    fn query(target: &str) -> Vec<(String, String)> {
        reqwest::Url::parse(&format!("http://x{target}"))
            .expect("url")
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn param(target: &str, k: &str) -> Option<String> {
        query(target)
            .into_iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v)
    }

    /// Serves 5 grants two at a time; its cursors are `at<offset>`.
    fn grant_server() -> TestServer {
        TestServer::start(|r| {
            let off: usize = param(&r.target, "cursor")
                .and_then(|v| v.strip_prefix("at").and_then(|n| n.parse().ok()))
                .unwrap_or(0);
            let lim: usize = param(&r.target, "limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(2)
                .min(2);
            let end = (off + lim).min(5);
            let grants: Vec<_> = (off..end).map(grant).collect();
            let mut page = json!({"grants": grants});
            if end < 5 {
                page["next_cursor"] = json!(format!("at{end}"));
            }
            Reply::json(200, page)
        })
    }

    #[tokio::test]
    async fn grants_sends_filters_and_bearer_and_follows_pages() {
        let srv = grant_server();
        let filter = GrantsQuery {
            subject: Some("alice@example.com".into()),
            repo: Some("acme/api".into()),
            issuer: Some("corp".into()),
            ..GrantsQuery::default()
        };
        let (grants, more) = admin(&srv).grants(&filter, None).await.expect("grants");
        assert_eq!((grants.len(), more), (5, false));
        assert_eq!(grants[4].jti, "j4");
        let seen = srv.seen();
        assert_eq!(seen.len(), 3);
        // Byte for byte: the first page has no cursor.
        assert_eq!(
            seen[0].target,
            "/v1/grants?subject=alice%40example.com&repo=acme%2Fapi&issuer=corp&limit=1000"
        );
        let first = &seen[0];
        assert_eq!(first.method, "GET");
        assert!(first.target.starts_with("/v1/grants?"), "{}", first.target);
        assert_eq!(first.header("authorization"), Some("Bearer adm1n"));
        assert_eq!(
            param(&first.target, "subject").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(param(&first.target, "repo").as_deref(), Some("acme/api"));
        assert_eq!(param(&first.target, "issuer").as_deref(), Some("corp"));
        assert_eq!(param(&first.target, "role"), None);
        assert_eq!(param(&first.target, "limit").as_deref(), Some("1000"));
        let cursors: Vec<_> = seen.iter().map(|r| param(&r.target, "cursor")).collect();
        assert_eq!(cursors, [None, Some("at2".into()), Some("at4".into())]);
    }

    #[tokio::test]
    async fn grants_stops_at_the_limit() {
        let srv = grant_server();
        let (grants, more) = admin(&srv)
            .grants(&GrantsQuery::default(), Some(3))
            .await
            .expect("grants");
        assert_eq!((grants.len(), more), (3, true));
        let limits: Vec<_> = srv
            .seen()
            .iter()
            .map(|r| param(&r.target, "limit"))
            .collect();
        assert_eq!(limits, [Some("3".into()), Some("1".into())]);
    }

    #[tokio::test]
    async fn paging_that_does_not_advance_is_an_error_not_a_loop() {
        let srv = TestServer::start(|_| {
            Reply::json(200, json!({"grants": [grant(0)], "next_cursor": "same"}))
        });
        let e = admin(&srv)
            .grants(&GrantsQuery::default(), None)
            .await
            .expect_err("loop");
        assert!(e.to_string().contains("same cursor twice"), "{e}");
        // An empty page with a cursor is followed, not taken for the end.
        let srv = TestServer::start(|r| match param(&r.target, "cursor") {
            None => Reply::json(200, json!({"grants": [], "next_cursor": "more"})),
            Some(_) => Reply::json(200, json!({"grants": [grant(7)]})),
        });
        let (grants, more) = admin(&srv)
            .grants(&GrantsQuery::default(), None)
            .await
            .expect("grants");
        assert_eq!((grants.len(), more), (1, false));
        let srv = TestServer::start(|_| Reply {
            status: 200,
            headers: vec![("x-next-after-seq".into(), "0".into())],
            body: String::new(),
        });
        let e = admin(&srv)
            .audit(&AuditParams::default(), AuditFormat::JsonLines, None)
            .await
            .expect_err("loop");
        assert!(
            e.to_string().contains("from after_seq 0 to after_seq 0"),
            "{e}"
        );
    }

    /// A broker with several replica chains pages by cursor: the helper sends each page's
    /// `x-next-cursor` back as given (and no longer needs `x-next-after-seq`), and a cursor
    /// that comes back unchanged is a loop, not the end.
    #[tokio::test]
    async fn audit_follows_the_cursor() {
        let srv = TestServer::start(|r| {
            let page = param(&r.target, "cursor").unwrap_or_default();
            let (seqs, next): (&[u64], Option<&str>) = match page.as_str() {
                "" => (&[1, 2], Some("a1.p2")),
                "a1.p2" => (&[3, 4], Some("a1.p3")),
                _ => (&[5], None),
            };
            let mut reply = Reply {
                status: 200,
                headers: vec![],
                body: seqs.iter().map(|s| event(*s) + "\n").collect(),
            };
            if let Some(n) = next {
                reply = reply.with("x-next-cursor", n);
            }
            reply
        });
        let events = admin(&srv)
            .audit_events(&AuditParams::default(), None)
            .await
            .expect("audit");
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        let cursors: Vec<_> = srv
            .seen()
            .iter()
            .map(|r| param(&r.target, "cursor"))
            .collect();
        assert_eq!(
            cursors,
            [None, Some("a1.p2".to_owned()), Some("a1.p3".to_owned())]
        );
        let srv = TestServer::start(|_| Reply {
            status: 200,
            headers: vec![("x-next-cursor".into(), "a1.same".into())],
            body: String::new(),
        });
        let e = admin(&srv)
            .audit(&AuditParams::default(), AuditFormat::JsonLines, None)
            .await
            .expect_err("loop");
        assert!(e.to_string().contains("to cursor \"a1.same\""), "{e}");
    }

    #[tokio::test]
    async fn revoke_posts_the_request_body() {
        let srv = TestServer::start(|_| {
            Reply::json(
                200,
                json!({"at_most": 3, "target": "subject alice@example.com", "tidy_pending": true}),
            )
        });
        let req = RevokeRequest {
            by: RevokeBy::Subject,
            value: Some("alice@example.com".into()),
            reason: "INC-7 laptop stolen".into(),
        };
        let got = admin(&srv).revoke(&req).await.expect("revoked");
        assert_eq!((got.at_most, got.tidy_pending), (3, true));
        let post = &srv.seen()[0];
        assert_eq!(
            (post.method.as_str(), post.target.as_str()),
            ("POST", "/v1/revoke")
        );
        assert_eq!(post.header("authorization"), Some("Bearer adm1n"));
        let body: serde_json::Value = serde_json::from_str(&post.body).expect("json");
        assert_eq!(
            body,
            json!({"by": "subject", "value": "alice@example.com", "reason": "INC-7 laptop stolen"})
        );
        let all = RevokeRequest {
            by: RevokeBy::All,
            value: None,
            reason: "x".into(),
        };
        admin(&srv).revoke(&all).await.expect("revoked");
        let body: serde_json::Value = serde_json::from_str(&srv.seen()[1].body).expect("json");
        assert_eq!(
            body,
            json!({"by": "all", "reason": "x"}),
            "no value for all"
        );
    }

    fn event(seq: u64) -> String {
        json!({"v": 1, "id": seq.to_string(), "ts": 1_700_000_000_000i64 + seq as i64, "event": "grant.issued",
               "subject": "alice", "repo": "acme/api", "jti": format!("jti-{seq}"), "seq": seq,
               "prev": "", "hash": "h", "data": {"ttl": 60}})
        .to_string()
    }

    /// Serves events 1..=5 after `after_seq`, `limit` at a time, as the broker does.
    fn audit_server() -> TestServer {
        TestServer::start(|r| {
            let after: u64 = param(&r.target, "after_seq")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let limit: u64 = param(&r.target, "limit")
                .and_then(|v| v.parse().ok())
                .unwrap_or(2)
                .min(2);
            let seqs: Vec<u64> = (after + 1..=5).take(limit as usize).collect();
            let csv = param(&r.target, "format").as_deref() == Some("csv");
            let body: String = if csv {
                std::iter::once("seq,ts,event\n".to_owned())
                    .chain(seqs.iter().map(|s| format!("{s},0,grant.issued\n")))
                    .collect()
            } else {
                seqs.iter().map(|s| event(*s) + "\n").collect()
            };
            let mut reply = Reply {
                status: 200,
                headers: vec![],
                body,
            };
            if let Some(last) = seqs.last().filter(|_| seqs.len() as u64 == limit) {
                reply = reply.with("x-next-after-seq", &last.to_string());
            }
            reply
        })
    }

    #[tokio::test]
    async fn audit_sends_filters_and_follows_next_after_seq() {
        let srv = audit_server();
        let filter = AuditParams {
            from: Some("1000".into()),
            to: Some("2000".into()),
            subject: Some("alice".into()),
            repo: Some("acme/api".into()),
            event: Some("grant.issued".into()),
            ..AuditParams::default()
        };
        let body = admin(&srv)
            .audit(&filter, AuditFormat::JsonLines, None)
            .await
            .expect("audit");
        let events = parse_audit(&body).expect("parses");
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(events[0].jti.as_deref(), Some("jti-1"));
        let seen = srv.seen();
        let first = &seen[0].target;
        assert_eq!(
            first,
            "/v1/audit?from=1000&to=2000&subject=alice&repo=acme%2Fapi&event=grant.issued\
             &after_seq=0&limit=10000&format=jsonl"
        );
        for (k, v) in [
            ("from", "1000"),
            ("to", "2000"),
            ("subject", "alice"),
            ("repo", "acme/api"),
            ("event", "grant.issued"),
            ("format", "jsonl"),
            ("after_seq", "0"),
        ] {
            assert_eq!(param(first, k).as_deref(), Some(v), "{k}");
        }
        let afters: Vec<_> = seen
            .iter()
            .filter_map(|r| param(&r.target, "after_seq"))
            .collect();
        assert_eq!(afters, ["0", "2", "4"]);
    }

    #[tokio::test]
    async fn audit_csv_keeps_one_header_and_the_limit_holds() {
        let srv = audit_server();
        let body = admin(&srv)
            .audit(&AuditParams::default(), AuditFormat::Csv, None)
            .await
            .expect("audit");
        assert_eq!(
            body.lines().filter(|l| l.starts_with("seq,")).count(),
            1,
            "{body}"
        );
        assert_eq!(body.lines().count(), 6, "{body}");
        let body = admin(&srv)
            .audit(&AuditParams::default(), AuditFormat::Csv, Some(3))
            .await
            .expect("audit");
        assert_eq!(body.lines().count(), 4, "{body}");
        let body = admin(&srv)
            .audit(&AuditParams::default(), AuditFormat::JsonLines, Some(3))
            .await
            .expect("audit");
        assert_eq!(parse_audit(&body).expect("parses").len(), 3);
    }

    async fn fail_with(reply: fn() -> Reply) -> AdminError {
        let srv = TestServer::start(move |_| reply());
        admin(&srv)
            .grants(&GrantsQuery::default(), None)
            .await
            .expect_err("fails")
    }

    #[tokio::test]
    async fn errors_are_one_actionable_line() {
        let e = fail_with(|| {
            Reply::json(
                401,
                json!({"error": "invalid_token", "error_description": "token expired"}),
            )
        })
        .await;
        assert_eq!(
            e.to_string(),
            "the broker did not accept your credential: token expired (check the token in $JIT_ADMIN)"
        );
        let e = fail_with(|| Reply::json(403, json!({"error": "insufficient_scope", "error_description": "bob\u{1b}]0;owned\u{7} is not an admin"}))).await;
        assert!(
            !e.to_string().chars().any(jit_proto::display::is_dangerous),
            "{e}"
        );
        let e = fail_with(|| Reply::json(403, json!({"error": "insufficient_scope", "error_description": "bob (issuer corp) is not an admin"}))).await;
        assert_eq!(
            e.to_string(),
            "not an admin: bob (issuer corp) is not an admin (the broker's [admin] config must name your identity or role)"
        );
        let e = fail_with(|| {
            Reply::json(
                400,
                json!({"error": "invalid_request", "error_description": "repo: bad path"}),
            )
        })
        .await;
        assert_eq!(e.to_string(), "repo: bad path");
        let e = fail_with(|| Reply::json(503, json!({"error": "temporarily_unavailable", "error_description": "store unreachable"}))).await;
        assert_eq!(
            e.to_string(),
            "the broker is temporarily unavailable: store unreachable"
        );
        let e = fail_with(|| Reply {
            status: 404,
            headers: vec![],
            body: "not found".into(),
        })
        .await;
        assert!(
            e.to_string()
                .contains("status 404 Not Found without an OAuth error body"),
            "{e}"
        );
        let e = fail_with(|| Reply::json(200, json!({"nope": 1}))).await;
        assert!(e.to_string().contains("bad grant page"), "{e}");
    }

    #[tokio::test]
    async fn credential_from_env_or_session() {
        let srv = TestServer::start(|_| Reply::json(404, json!({})));
        let b = BrokerClient::new(&srv.url, client()).expect("url");
        let tmp = tempfile::tempdir().expect("tmp");
        let env = |k: &str| (k == "JIT_ADMIN").then(|| " tok\n".to_owned());
        let (t, src) = credential(&env, tmp.path(), &b, Some("JIT_ADMIN"))
            .await
            .expect("env");
        assert_eq!(
            (t.expose(), src),
            ("tok", CredentialSource::EnvVar("JIT_ADMIN".into()))
        );
        let e = credential(&env, tmp.path(), &b, Some("OTHER"))
            .await
            .expect_err("unset");
        assert!(
            matches!(e, AdminError::TokenEnv(ref v) if v == "OTHER"),
            "{e}"
        );
        assert!(srv.seen().is_empty(), "an env token needs no network");
    }

    #[tokio::test]
    async fn credential_from_the_login_session() {
        let srv = TestServer::start(|r| {
            Reply::json(
                200,
                json!({"issuer": "https://b", "token_endpoint": format!("http://{}/oauth/token", r.header("host").unwrap_or("")),
                       "introspection_endpoint": "https://b/i", "jwks_uri": "https://b/j",
                       "grant_types_supported": [], "token_audience": "git",
                       "subject_token_audience": "git-jit", "login_issuer": "https://idp",
                       "login_client_id": "cli", "scope_syntax": "x"}),
            )
        });
        let b = BrokerClient::new(&srv.url, client())
            .expect("url")
            .with_clock(|| 1000);
        let tmp = tempfile::tempdir().expect("tmp");
        let none = |_: &str| None;
        let e = credential(&none, tmp.path(), &b, None)
            .await
            .expect_err("no session");
        assert_eq!(e.to_string(), "not logged in: run `git jit login`");
        let idt = crate::claims::fake_jwt(&json!({"sub": "sec", "exp": 9000}));
        SessionStore::new(tmp.path())
            .save(&crate::session::Session {
                issuer: "https://idp".into(),
                client_id: "cli".into(),
                token_endpoint: "https://idp/token".into(),
                id_token: Secret::new(&idt),
                id_token_expires_at: 9000,
                refresh_token: None,
                // Saved before sessions named their broker: fine for the configured one.
                broker: None,
            })
            .expect("save");
        let (t, src) = credential(&none, tmp.path(), &b, None)
            .await
            .expect("session");
        assert_eq!((t.expose(), src), (idt.as_str(), CredentialSource::Session));
    }
}
