//! The broker's approval API as `git jit requests|approve|deny|cancel` sees it: requests
//! listed page by page (`GET /v1/requests`), one read (`GET /v1/requests/{id}`), and the
//! decisions (`POST /v1/requests/{id}/approve|deny|cancel`). The credential is the person's
//! own — the login session's ID token, a token from an environment variable, or the subject
//! token the request was filed with — sent as a Bearer token, never logged. Refusals become
//! one actionable line.

use jit_proto::Secret;
use jit_proto::api::OAuthError;
use jit_proto::approval::{
    DecideRequest, MAX_REQUEST_PAGE, RequestId, RequestInfo, RequestPage, RequestsQuery,
};
use reqwest::StatusCode;

use crate::admin::{AdminError, CredentialSource};
use crate::broker::{self, BrokerClient, BrokerError};

/// Most requests a listing follows `next_cursor` for: enough for any screen, bounded so a
/// broker's endless paging cannot keep the command running.
pub const MAX_LISTED: usize = 2000;

/// Why an approval API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// Reaching or understanding the broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// No credential (not logged in, `--token-env` unset, …).
    #[error(transparent)]
    Credential(#[from] AdminError),
    /// The broker did not accept the credential (401).
    #[error("the broker did not accept your credential: {description} ({hint})")]
    Unauthenticated {
        /// The broker's reason.
        description: String,
        /// What to do about it.
        hint: String,
    },
    /// The broker refused the decision (403): an own request, not an approver, …
    #[error("refused: {0}")]
    Refused(String),
    /// The request is no longer pending (409).
    #[error("{id}: {description}; nothing changed (see `git jit requests --state all`)")]
    NotPending {
        /// The request.
        id: RequestId,
        /// The broker's words ("request is denied, not pending").
        description: String,
    },
    /// No such request, or not one the caller may see (404).
    #[error("no request {id} at {broker} that you may see (list them with `git jit requests`)")]
    Unknown {
        /// The id asked for.
        id: RequestId,
        /// The broker asked.
        broker: String,
    },
}

/// What to do with a pending request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Approve it (an approver).
    Approve,
    /// Deny it (an approver).
    Deny,
    /// Withdraw it (its requester).
    Cancel,
}

impl Verdict {
    /// The path segment: `approve`, `deny`, `cancel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Deny => "deny",
            Verdict::Cancel => "cancel",
        }
    }
}

/// A client of one broker's approval API, holding the caller's credential.
#[derive(Debug, Clone)]
pub struct ApprovalClient {
    broker: BrokerClient,
    token: Secret,
    source: CredentialSource,
}

impl ApprovalClient {
    /// A client that authenticates with `token`, which came from `source`.
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

    /// Sends a request with the credential; the body of a 2xx answer, or what the refusal
    /// means (`id`: the request it was about, if one).
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        id: Option<&RequestId>,
    ) -> Result<Vec<u8>, ApprovalError> {
        let resp = req
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| BrokerClient::unreachable(url, &e))?;
        let status = resp.status();
        let retry_after = broker::header(resp.headers(), "retry-after");
        let body = resp
            .bytes()
            .await
            .map_err(|e| BrokerClient::unreachable(url, &e))?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(BrokerError::RateLimited { retry_after }.into());
        }
        Err(self.refusal(status, &body, url, id))
    }

    fn refusal(
        &self,
        status: StatusCode,
        body: &[u8],
        url: &str,
        id: Option<&RequestId>,
    ) -> ApprovalError {
        let err = serde_json::from_slice::<OAuthError>(body).ok();
        // The broker's words reach a terminal: no control or bidi character may drive it.
        let description = err.as_ref().map(|e| {
            jit_proto::display::clean(e.error_description.as_deref().unwrap_or(e.error.as_str()))
                .into_owned()
        });
        match (status, description, id) {
            (StatusCode::NOT_FOUND, _, Some(id)) => ApprovalError::Unknown {
                id: id.clone(),
                broker: self.base(),
            },
            (_, None, _) => protocol(url, format!("status {status} without an OAuth error body")),
            (StatusCode::UNAUTHORIZED, Some(description), _) => ApprovalError::Unauthenticated {
                description,
                hint: self.source.hint(),
            },
            (StatusCode::FORBIDDEN, Some(d), _) => ApprovalError::Refused(d),
            (StatusCode::CONFLICT, Some(description), Some(id)) => ApprovalError::NotPending {
                id: id.clone(),
                description,
            },
            (StatusCode::SERVICE_UNAVAILABLE, Some(d), _) => BrokerError::Unavailable(d).into(),
            (_, Some(description), _) => BrokerError::Denied {
                error: err
                    .map(|e| jit_proto::display::clean(&e.error).into_owned())
                    .unwrap_or_default(),
                description,
                skew: None,
            }
            .into(),
        }
    }

    /// One page of requests passing `filter` (its `cursor` and `limit` are used as given).
    pub async fn page(&self, filter: &RequestsQuery) -> Result<RequestPage, ApprovalError> {
        let url = format!("{}/v1/requests", self.base());
        let req = self.broker.http().get(&url).query(filter);
        let body = self.send(req, &url, None).await?;
        serde_json::from_slice(&body).map_err(|e| protocol(&url, format!("bad request page: {e}")))
    }

    /// Requests passing `filter`'s filters, newest first, following `next_cursor` up to
    /// `max` (at most [`MAX_LISTED`]); and whether more match.
    pub async fn list(
        &self,
        filter: &RequestsQuery,
        max: usize,
    ) -> Result<(Vec<RequestInfo>, bool), ApprovalError> {
        let max = max.min(MAX_LISTED);
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = RequestsQuery {
                cursor: cursor.clone(),
                limit: Some((max - out.len()).clamp(1, MAX_REQUEST_PAGE)),
                ..filter.clone()
            };
            let page = self.page(&query).await?;
            out.extend(page.requests);
            out.truncate(max);
            match page.next_cursor {
                None => return Ok((out, false)),
                Some(_) if out.len() >= max => return Ok((out, true)),
                // A cursor that does not move would loop for ever.
                Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                    return Err(protocol(
                        &format!("{}/v1/requests", self.base()),
                        "paging returned the same cursor twice",
                    ));
                }
                Some(next) => cursor = Some(next),
            }
        }
    }

    /// One request.
    pub async fn get(&self, id: &RequestId) -> Result<RequestInfo, ApprovalError> {
        let url = format!("{}/v1/requests/{id}", self.base());
        let body = self
            .send(self.broker.http().get(&url), &url, Some(id))
            .await?;
        serde_json::from_slice(&body).map_err(|e| protocol(&url, format!("bad request: {e}")))
    }

    /// Approves, denies or cancels a request; the request as it now is.
    pub async fn decide(
        &self,
        id: &RequestId,
        verdict: Verdict,
        reason: &str,
    ) -> Result<RequestInfo, ApprovalError> {
        let url = format!("{}/v1/requests/{id}/{}", self.base(), verdict.as_str());
        let body = DecideRequest {
            reason: reason.to_owned(),
        };
        let req = self.broker.http().post(&url).json(&body);
        let body = self.send(req, &url, Some(id)).await?;
        serde_json::from_slice(&body).map_err(|e| protocol(&url, format!("bad request: {e}")))
    }
}

fn protocol(url: &str, reason: impl Into<String>) -> ApprovalError {
    BrokerError::Protocol {
        url: url.to_owned(),
        reason: reason.into(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testserver::{Reply, TestServer, client};
    use serde_json::json;

    const RQ: &str = "rq_abcdefghijklmnopqrstuvwxyz";

    /// A request as the broker shows it.
    fn info(id: &str, state: &str) -> serde_json::Value {
        json!({"id": id, "state": state, "requester": "alice", "idp": "corp", "role": "prod-push",
               "scope": "repo:acme/api:write", "refs": ["refs/heads/main"], "ttl_minutes": 30,
               "reason": "hotfix INC-42", "created": 1_700_000_000, "expires": 1_700_001_800,
               "required": 1, "approvers": ["bob (corp)"], "approvals": []})
    }

    fn client_of(srv: &TestServer) -> ApprovalClient {
        let b = BrokerClient::new(&srv.url, client()).expect("url");
        ApprovalClient::new(b, Secret::new("id-t0ken"), CredentialSource::Session)
    }

    fn id() -> RequestId {
        RequestId::parse(RQ).expect("id")
    }

    #[tokio::test]
    async fn decisions_post_the_reason_with_the_bearer() {
        let srv = TestServer::start(|_| {
            let mut v = info(RQ, "approved");
            v["approvals"] =
                json!([{"by": "bob", "idp": "corp", "reason": "ok", "at": 1_700_000_100}]);
            Reply::json(200, v)
        });
        let c = client_of(&srv);
        for v in [Verdict::Approve, Verdict::Deny, Verdict::Cancel] {
            let r = c.decide(&id(), v, "looks right").await.expect("decided");
            assert_eq!(r.approvals.len(), 1);
        }
        let seen = srv.seen();
        let targets: Vec<_> = seen.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                format!("/v1/requests/{RQ}/approve"),
                format!("/v1/requests/{RQ}/deny"),
                format!("/v1/requests/{RQ}/cancel"),
            ]
        );
        for r in &seen {
            assert_eq!(r.method, "POST");
            assert_eq!(r.header("authorization"), Some("Bearer id-t0ken"));
            let body: serde_json::Value = serde_json::from_str(&r.body).expect("json");
            assert_eq!(body, json!({"reason": "looks right"}));
        }
    }

    #[tokio::test]
    async fn refusals_are_one_actionable_line() {
        let srv = TestServer::start(|r| match r.target.rsplit('/').next() {
            Some("approve") => Reply::json(
                403,
                json!({"error": "access_denied", "error_description": "you cannot approve your own request"}),
            ),
            Some("deny") => Reply::json(
                409,
                json!({"error": "invalid_request", "error_description": "request is denied, not pending"}),
            ),
            Some("cancel") => Reply::json(
                401,
                json!({"error": "invalid_token", "error_description": "expired"}),
            ),
            _ => Reply::json(404, json!({"error": "not_found"})),
        });
        let c = client_of(&srv);
        let said = |r: Result<RequestInfo, ApprovalError>| r.expect_err("refused").to_string();
        assert_eq!(
            said(c.decide(&id(), Verdict::Approve, "x").await),
            "refused: you cannot approve your own request"
        );
        assert_eq!(
            said(c.decide(&id(), Verdict::Deny, "x").await),
            format!(
                "{RQ}: request is denied, not pending; nothing changed (see `git jit requests --state all`)"
            )
        );
        assert_eq!(
            said(c.decide(&id(), Verdict::Cancel, "x").await),
            "the broker did not accept your credential: expired (run `git jit login` again)"
        );
        let unknown = said(c.get(&id()).await);
        assert!(
            unknown.starts_with(&format!("no request {RQ} at {}", srv.url)),
            "{unknown}"
        );
        for line in srv.seen().iter().map(|r| r.target.clone()) {
            assert!(!line.contains("id-t0ken"));
        }
    }

    #[tokio::test]
    async fn listing_follows_cursors_and_stops_at_the_bound() {
        let srv = TestServer::start(|r| {
            let n: usize = r
                .target
                .split("cursor=c")
                .nth(1)
                .and_then(|s| s.split('&').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let mut page = json!({"requests": [info(RQ, "pending")]});
            if n < 4 {
                page["next_cursor"] = json!(format!("c{}", n + 1));
            }
            Reply::json(200, page)
        });
        let c = client_of(&srv);
        let filter = RequestsQuery {
            state: Some("pending".into()),
            mine_to_approve: Some(true),
            ..RequestsQuery::default()
        };
        let (all, more) = c.list(&filter, MAX_LISTED).await.expect("list");
        assert_eq!((all.len(), more), (5, false));
        let first = &srv.seen()[0];
        assert_eq!(
            first.target,
            format!("/v1/requests?state=pending&mine_to_approve=true&limit={MAX_REQUEST_PAGE}")
        );
        assert_eq!(first.header("authorization"), Some("Bearer id-t0ken"));
        let (some, more) = c.list(&filter, 2).await.expect("list");
        assert_eq!((some.len(), more), (2, true));
        // A cursor that does not move is an error, not a loop.
        let stuck =
            TestServer::start(|_| Reply::json(200, json!({"requests": [], "next_cursor": "same"})));
        let e = client_of(&stuck)
            .list(&filter, 10)
            .await
            .expect_err("stuck");
        assert!(e.to_string().contains("same cursor twice"), "{e}");
    }
}
