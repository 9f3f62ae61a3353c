//! The Git gateway's handler: every path not routed elsewhere. Classifies the request, lets
//! git's credential-less probe through, asks the [`Gatekeeper`], inspects a push's ref
//! updates, and streams an allowed request to its upstream.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::FromRef;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{denied, text};
use crate::gatekeeper::{Door, Gatekeeper, is_probe_shape};
use crate::gateway::{Endpoint, Gateway, GitRequest, GitService, classify, proxy, push};

/// The gateway's narrow state: the decision and the upstreams.
#[derive(Clone)]
pub struct GatewayState {
    /// Decides.
    pub gatekeeper: Gatekeeper,
    /// Where allowed requests go.
    pub upstreams: Arc<Gateway>,
}

impl FromRef<crate::state::AppState> for GatewayState {
    fn from_ref(s: &crate::state::AppState) -> Self {
        Self {
            gatekeeper: Gatekeeper::from_ref(s),
            upstreams: s.gateway.clone(),
        }
    }
}

/// The gateway's handler.
pub async fn serve(State(state): State<GatewayState>, request: Request) -> Response {
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
    let info = super::request_info(request.headers(), client, Door::Gateway);
    let needed = git.needed_scope();
    let request = match answer_probe(&git, request).await {
        Ok(r) => r,
        Err(answered) => return answered,
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let gatekeeper = &state.gatekeeper;
    let allowed = match gatekeeper.check(authorization, &needed, &info).await {
        Ok(a) => a,
        Err(d) => return denied(&d),
    };
    let Some(upstream) = state.upstreams.upstream_for(&git.repo) else {
        tracing::warn!(repo = %git.repo, "no upstream configured for repository");
        return text(
            StatusCode::NOT_FOUND,
            &format!("git-jit: no upstream serves repository {}", git.repo),
        );
    };
    let claims = &allowed.claims;
    let (parts, body) = request.into_parts();
    let mut forward = proxy::Forward::new(&git, &parts.headers, &claims.sub, client);
    let body = body.into_data_stream();
    if git.endpoint == Endpoint::Rpc(GitService::ReceivePack) {
        let target = push::PushTarget {
            gateway: &state.upstreams,
            upstream,
            forward: &forward,
        };
        let metrics = gatekeeper.audit.counts();
        match push::inspect(&parts.headers, body, claims, target).await {
            Ok(push::Inspected::Forward {
                list,
                body,
                decoded,
            }) => {
                let updates = push::updates_json(&list, metrics);
                if let Err(d) = gatekeeper.allow(&allowed, &info, Some(updates)).await {
                    return denied(&d);
                }
                if decoded {
                    forward.content_encoding = None;
                    forward.content_length = None;
                }
                state.upstreams.forward(upstream, forward, body).await
            }
            Ok(push::Inspected::Refused {
                list,
                refused,
                answer,
            }) => {
                let denial = push::denial_text(&refused, metrics);
                let updates = push::updates_json(&list, metrics);
                match gatekeeper
                    .refuse_push(&allowed, &info, denial, updates)
                    .await
                {
                    Some(over_budget) => denied(&over_budget),
                    None => answer,
                }
            }
            Err(e) => {
                tracing::info!(repo = %git.repo, jti = %claims.jti, error = %e, "malformed push");
                e.into_response()
            }
        }
    } else {
        if let Err(d) = gatekeeper.allow(&allowed, &info, None).await {
            return denied(&d);
        }
        state
            .upstreams
            .forward(upstream, forward, push::passthrough(body))
            .await
    }
}

/// Before a request too large to buffer (a big push, a long fetch negotiation), git POSTs a
/// 4-byte probe, `0000` (a flush: no commands, no wants), to learn whether it may stream the
/// real one (see [`is_probe_shape`]). A flush asks for nothing and changes nothing, so it is
/// answered here — never forwarded, never with data — and the real request that follows,
/// which does carry the token, is checked as usual. Anything else is handed back untouched.
async fn answer_probe(git: &GitRequest, request: Request) -> Result<Request, Response> {
    let Endpoint::Rpc(service) = git.endpoint else {
        return Ok(request);
    };
    let headers = request.headers();
    if !is_probe_shape(
        true,
        headers.get(header::AUTHORIZATION).is_some(),
        headers.get(header::CONTENT_ENCODING).is_some(),
        headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()),
    ) {
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
