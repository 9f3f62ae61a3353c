//! The Git smart-HTTP gateway: routes `/<repo>.git/info/refs`, `git-upload-pack` and
//! `git-receive-pack` requests, lets one through only when its token grants that repository,
//! that action and — for pushes — every ref it updates, and streams it to the configured
//! upstream (an http(s) Git server, or `git http-backend` over local bare repositories).
//!
//! The request path is read raw, before any decoding, and its repository part goes through
//! [`RepoPath::parse`], the one normaliser tokens were issued with: `%`-escapes, `..`, `//`,
//! trailing slashes and backslashes are refused, case is kept. [`classify`] is shared with
//! `/authz`, so both decide the needed scope identically.

pub mod access;
pub mod cgi;
pub mod demo;
pub mod pktline;
pub mod proxy;
pub mod push;
pub mod receive_pack;
pub mod upstream;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jit_proto::{Action, RepoPath, Scope, ScopeError};

use crate::state::AppState;
pub use access::RequestInfo;
pub use upstream::{Gateway, UpstreamError};

/// A smart-HTTP service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitService {
    /// Clone, fetch, ls-remote.
    UploadPack,
    /// Push.
    ReceivePack,
}

impl GitService {
    /// `git-upload-pack` or `git-receive-pack`.
    pub fn as_str(self) -> &'static str {
        match self {
            GitService::UploadPack => "git-upload-pack",
            GitService::ReceivePack => "git-receive-pack",
        }
    }

    /// The action the service needs: upload-pack reads, receive-pack writes.
    pub fn action(self) -> Action {
        match self {
            GitService::UploadPack => Action::Read,
            GitService::ReceivePack => Action::Write,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "git-upload-pack" => Some(GitService::UploadPack),
            "git-receive-pack" => Some(GitService::ReceivePack),
            _ => None,
        }
    }
}

/// Which smart-HTTP endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET info/refs?service=…`: the ref advertisement.
    InfoRefs(GitService),
    /// `POST git-upload-pack` / `POST git-receive-pack`.
    Rpc(GitService),
}

impl Endpoint {
    /// The service either way.
    pub fn service(self) -> GitService {
        match self {
            Endpoint::InfoRefs(s) | Endpoint::Rpc(s) => s,
        }
    }

    /// The path below the repository: `info/refs` or the service name.
    pub fn suffix(self) -> &'static str {
        match self {
            Endpoint::InfoRefs(_) => "info/refs",
            Endpoint::Rpc(s) => s.as_str(),
        }
    }

    /// The query string to forward (`service=…` for info/refs; nothing else is forwarded).
    pub fn query(self) -> Option<String> {
        match self {
            Endpoint::InfoRefs(s) => Some(format!("service={}", s.as_str())),
            Endpoint::Rpc(_) => None,
        }
    }
}

/// A request the gateway understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRequest {
    /// The repository, normalised by [`RepoPath::parse`].
    pub repo: RepoPath,
    /// The endpoint.
    pub endpoint: Endpoint,
}

impl GitRequest {
    /// The exact scope this request needs.
    pub fn needed_scope(&self) -> Scope {
        Scope::new(self.repo.clone(), self.endpoint.service().action())
    }
}

/// Why a request is not one the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The path names no smart-HTTP endpoint.
    #[error(
        "not a Git smart-HTTP path (expected /<repo>.git/info/refs, git-upload-pack or git-receive-pack)"
    )]
    NotGit,
    /// The repository part of the path is not a valid repository path.
    #[error("invalid repository path {path:?}: {source}")]
    BadRepo {
        /// The raw repository part.
        path: String,
        /// Why it was refused.
        source: ScopeError,
    },
    /// `info/refs` whose query is not exactly `service=git-upload-pack|git-receive-pack`
    /// (dumb HTTP, extra or repeated parameters).
    #[error(
        "info/refs needs exactly ?service=git-upload-pack or ?service=git-receive-pack (dumb HTTP is not served)"
    )]
    NoService,
    /// The method does not fit the endpoint.
    #[error("method {0} is not allowed here")]
    Method(String),
}

impl RouteError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            RouteError::NotGit => StatusCode::NOT_FOUND,
            RouteError::BadRepo { .. } | RouteError::NoService => StatusCode::BAD_REQUEST,
            RouteError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// Decides what a request is for from its method and RAW path-and-query (as sent, before any
/// percent-decoding). The gateway and `/authz` both call this.
pub fn classify(method: &Method, path_and_query: &str) -> Result<GitRequest, RouteError> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let path = path.strip_prefix('/').ok_or(RouteError::NotGit)?;
    let (repo, endpoint) = if let Some(repo) = path.strip_suffix("/info/refs") {
        // Exactly one parameter, exactly spelled: a Git server behind `/authz` sees the same
        // query, and `git http-backend` decodes names and takes the *last* `service`, so
        // `?service=git-upload-pack&%73ervice=git-receive-pack` must not pass as a read.
        let service = query
            .and_then(|q| q.strip_prefix("service="))
            .and_then(GitService::parse)
            .ok_or(RouteError::NoService)?;
        (repo, Endpoint::InfoRefs(service))
    } else if let Some((repo, name)) = path.rsplit_once('/') {
        match GitService::parse(name) {
            Some(s) => (repo, Endpoint::Rpc(s)),
            None => return Err(RouteError::NotGit),
        }
    } else {
        return Err(RouteError::NotGit);
    };
    let repo = RepoPath::parse(repo).map_err(|source| RouteError::BadRepo {
        path: repo.to_owned(),
        source,
    })?;
    let method_ok = match endpoint {
        Endpoint::InfoRefs(_) => method == Method::GET || method == Method::HEAD,
        Endpoint::Rpc(_) => method == Method::POST,
    };
    if !method_ok {
        return Err(RouteError::Method(method.to_string()));
    }
    Ok(GitRequest { repo, endpoint })
}

/// The header repeating a 401/403 message, for proxies that drop the body (nginx
/// `auth_request` keeps only headers of its sub-request).
pub const DENIAL_HEADER: &str = "x-jit-denial";

/// A plain-text answer git shows to its user (`remote: …` or after `fatal:`). A 401 or 403
/// also carries the message in [`DENIAL_HEADER`].
pub fn text(status: StatusCode, message: &str) -> Response {
    let mut body = message.to_owned();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let mut r = (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        && let Ok(v) = HeaderValue::from_str(message.trim_end())
    {
        r.headers_mut().insert(DENIAL_HEADER, v);
    }
    r
}

/// What the request says about its client, for the audit trail.
fn request_info(headers: &HeaderMap, client: Option<SocketAddr>, via: &'static str) -> RequestInfo {
    RequestInfo {
        client: client.map(|a| a.ip().to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(200).collect()),
        via,
    }
}

/// The gateway's handler: everything not routed elsewhere comes here.
pub async fn serve(State(state): State<AppState>, request: Request) -> Response {
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let git = match classify(request.method(), &path_and_query) {
        Ok(g) => g,
        Err(e) => return text(e.status(), &format!("git-jit: {e}")),
    };
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let info = request_info(request.headers(), client, "gateway");
    let needed = git.needed_scope();
    let request = match answer_probe(&git, request).await {
        Ok(r) => r,
        Err(answered) => return answered,
    };
    let claims = match access::authorize(&state, request.headers(), &needed, &info).await {
        Ok(c) => c,
        Err(denied) => return denied,
    };
    let Some(upstream) = state.gateway.upstream_for(&git.repo) else {
        tracing::warn!(repo = %git.repo, "no upstream configured for repository");
        return text(
            StatusCode::NOT_FOUND,
            &format!("git-jit: no upstream serves repository {}", git.repo),
        );
    };
    let (parts, body) = request.into_parts();
    let mut forward = proxy::Forward::new(&git, &parts.headers, &claims.sub, client);
    let body = body.into_data_stream();
    if git.endpoint == Endpoint::Rpc(GitService::ReceivePack) {
        match push::inspect(&parts.headers, body, &claims).await {
            Ok(push::Inspected::Forward {
                list,
                body,
                decoded,
            }) => {
                let updates = push::updates_json(&list);
                if let Err(r) =
                    access::record_allowed(&state, &claims, &needed, &info, Some(updates)).await
                {
                    return r;
                }
                if decoded {
                    forward.content_encoding = None;
                    forward.content_length = None;
                }
                state.gateway.forward(upstream, forward, body).await
            }
            Ok(push::Inspected::Refused {
                list,
                refused,
                answer,
            }) => {
                let updates = push::updates_json(&list);
                let denial = access::push_denial(&refused);
                access::record_denied(&state, &claims, &needed, &info, denial, Some(updates)).await;
                answer
            }
            Err(e) => {
                tracing::info!(repo = %git.repo, jti = %claims.jti, error = %e, "malformed push");
                e.into_response()
            }
        }
    } else {
        if let Err(r) = access::record_allowed(&state, &claims, &needed, &info, None).await {
            return r;
        }
        state
            .gateway
            .forward(upstream, forward, push::passthrough(body))
            .await
    }
}

/// Before a request too large to buffer (a big push, a long fetch negotiation), git POSTs a
/// 4-byte probe, `0000` (a flush: no commands, no wants), to learn whether it may stream the
/// real one. git 2.46–2.47 send that probe without the Bearer header the credential helper
/// gave them, and give up on its 401. A flush asks for nothing and changes nothing, so it is
/// answered here — never forwarded, never with data — and the real request that follows,
/// which does carry the token, is checked as usual. Anything else is handed back untouched.
async fn answer_probe(git: &GitRequest, request: Request) -> Result<Request, Response> {
    let Endpoint::Rpc(service) = git.endpoint else {
        return Ok(request);
    };
    let headers = request.headers();
    let is_probe_shape = headers.get(header::AUTHORIZATION).is_none()
        && headers.get(header::CONTENT_ENCODING).is_none()
        && headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            == Some("4");
    if !is_probe_shape {
        return Ok(request);
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 4).await.unwrap_or_default();
    if bytes.as_ref() == b"0000" {
        let content_type = format!("application/x-{}-result", service.as_str());
        let mut r = StatusCode::OK.into_response();
        if let Ok(v) = HeaderValue::from_str(&content_type) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Err(r);
    }
    // Not a probe: the (tiny) body is put back; the request goes on to be refused for its
    // missing credential like any other.
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Answer with `body` as a streamed response: used by the upstream modules.
pub(crate) fn streamed(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

#[cfg(test)]
mod tests;
