//! The Git smart-HTTP gateway: routes `/<repo>.git/info/refs`, `git-upload-pack` and
//! `git-receive-pack` requests, lets one through only when its token grants that repository,
//! that action and — for pushes — every ref it updates, and streams it to the configured
//! upstream (an http(s) Git server, or `git http-backend` over local bare repositories).
//!
//! The request path is read raw, before any decoding, and its repository part goes through
//! [`RepoPath::parse`], the one normaliser tokens were issued with: `%`-escapes, `..`, `//`,
//! trailing slashes and backslashes are refused, case is kept. [`classify`] is shared with
//! `/authz`, so both decide the needed scope identically.

pub mod body;
pub mod cgi;
pub mod coalesce;
pub mod demo;
pub mod http10;
pub mod pktline;
pub mod proxy;
pub mod push;
pub mod receive_pack;
pub mod symref;
pub mod upstream;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jit_proto::{Action, RepoPath, Scope, ScopeError};

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

/// Answer with `body` as a streamed response: used by the upstream modules.
pub fn streamed(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

#[cfg(test)]
mod tests;
