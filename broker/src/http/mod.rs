//! The HTTP floor: routes, handlers and the one place where a decision becomes a reply.
//! Handlers parse, call a service through their narrow state (axum `FromRef`), and map its
//! answer; they decide nothing themselves.

pub mod admin;
pub mod authz;
pub mod console;
pub mod discovery;
pub mod gateway;
pub mod listener;
pub mod oauth;
pub mod observe;
pub mod ops;
pub mod proxies;
pub mod requests;
pub mod ssh;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jit_proto::challenge::BearerChallenge;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

#[cfg(test)]
use self::observe::sane_request_id;
use self::observe::{Observer, RequestIds, observe};
use crate::approval::Approvals;
use crate::error::ApiError;
use crate::gatekeeper::{Denied, Door, RequestInfo};
pub use crate::gateway::text;
use crate::runtime::AdminRuntime;
use crate::state::AppState;
use axum::extract::FromRef;

/// Largest body accepted by the OAuth and admin endpoints.
pub const MAX_API_BODY: usize = 64 * 1024;

/// The longest a routed request may take before it is answered 503. The gateway has none (a
/// clone streams for as long as it needs), nor `/authz`, its decision behind another door.
pub const API_TIMEOUT: Duration = Duration::from_secs(30);

/// The request id header: kept from the client (or proxy) when it is sane
/// ([`MAX_REQUEST_ID`]), else a fresh one (a random per-process prefix and a counter); echoed
/// on the response, on every log line written while the request is served
/// ([`observe::RequestIdFormat`]) and in the `data.request_id` of its audit events.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id kept; a longer or odd one is replaced.
pub const MAX_REQUEST_ID: usize = 128;

/// How often every replica records approval requests whose deadline passed as expired.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The realm of the gateway's challenges.
pub const REALM: &str = "git-jit";

/// The broker's HTTP application.
pub fn app(state: AppState) -> Router {
    let on_admin = middleware::from_fn_with_state(state.admin_runtime.clone(), reads_on_admin);
    let reads = Router::new()
        .route("/v1/grants", get(admin::grants))
        .route("/v1/audit", get(admin::audit))
        .route("/v1/requests", get(requests::list))
        .route("/v1/requests/{id}", get(requests::one))
        .route_layer(on_admin.clone());
    let api = Router::new()
        .route("/oauth/introspect", post(oauth::introspect))
        .route("/oauth/token", post(oauth::token))
        .route("/v1/revoke", post(admin::revoke))
        .route("/v1/requests/{id}/{action}", post(requests::decide))
        .route("/ssh/check", post(ssh::check))
        .merge(reads)
        .layer(RequestBodyLimitLayer::new(MAX_API_BODY));
    let dev = match state.dev_issuer.clone() {
        Some(dev) => crate::devissuer::routes(dev),
        None => Router::new(),
    };
    let metrics = state.audit.metrics();
    let dev_mode = state.settings.dev_mode;
    // With `server.metrics_listen` set, `/metrics` is served there only ([`metrics_app`]).
    let ops = match state.server.metrics_listen {
        Some(_) => Router::new(),
        None => Router::new().route("/metrics", get(ops::metrics)),
    };
    let router = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .merge(ops)
        .route("/.well-known/jwks.json", get(discovery::jwks))
        .route("/.well-known/ssh-ca.pub", get(ssh::ca_keys))
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::metadata),
        )
        .merge(api)
        .merge(dev)
        .merge(console::routes(&state).route_layer(on_admin))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            API_TIMEOUT,
        ))
        // `/authz` is the gateway's decision behind another door, and like the gateway it has
        // no API timeout: every wait in it is bounded on its own (each Redis call by the
        // store's response timeout, connecting by its connect timeout, the audit append by the
        // chain's patience), and a timer per decision cost its hot path a registration and a
        // wake-up of the runtime's driver.
        .route("/authz", get(authz::authz))
        // Git traffic streams: no body limit, no timeout. Every path not routed above is the
        // gateway's.
        .fallback(gateway::serve)
        // Outermost first: the header checks, request id and timing, then tower-http's
        // failure log (inside, so its lines name the request id).
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(
                    Observer {
                        metrics,
                        ids: RequestIds::new(),
                    },
                    observe,
                ))
                .layer(TraceLayer::new_for_http()),
        )
        .with_state(state);
    // A development broker on 127.0.0.1 is still reachable from the developer's browser by a
    // page that rebinds its DNS name: every route answers loopback host names only.
    if dev_mode {
        router.layer(middleware::from_fn(crate::devissuer::loopback_host_only))
    } else {
        router
    }
}

/// Runs a read of the admin API or the console (`GET`, `HEAD`: listings, audit reads and
/// exports, pages) on the admin runtime ([`crate::runtime`]): extractors, handler and the
/// serialised reply, off the request runtime's workers. Actions (a revocation, a decision on
/// an approval request, signing out) are small and stay here, so that none of them waits
/// behind an export on the admin runtime's one thread.
async fn reads_on_admin(
    State(admin): State<AdminRuntime>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    match admin.run(next.run(req)).await {
        Ok(response) => response,
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

/// The application of `server.metrics_listen`: `GET /metrics` alone.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .with_state(state)
}

/// Serves the broker on `listener` until `shutdown` completes, under the connection caps and
/// timeouts of `[server]` ([`listener::serve`]), with the store's tidy worker
/// ([`crate::store::tidy::run_worker`]) and the approval requests' expiry sweep
/// ([`crate::approval::run_sweeper`]) on the admin runtime beside it: dropping either
/// mid-batch loses nothing.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let policy = listener::ConnectionPolicy::for_process(&state.server);
    let metrics = state.audit.counts().connections.clone();
    let (edge, reload) = edge(&state.server, state.audit.metrics())?;
    let background = {
        let admin = state.admin_runtime.clone();
        let (store, clock) = (state.store.clone(), state.clock.clone());
        let approvals = Approvals::from_ref(&state);
        state.admin_runtime.spawn(async move {
            // The store's admin connection (listings, revocations, tidying) is opened first,
            // from the admin runtime itself, so its replies are read on the admin thread.
            let probe = store.clone();
            let _ = admin
                .run_keeping_spawns(async move { probe.tidy_pending().await })
                .await;
            tokio::join!(
                crate::store::tidy::run_worker(store, clock),
                crate::approval::run_sweeper(approvals, SWEEP_EVERY),
            );
        })
    };
    let served = listener::serve_edge(listener, app(state), policy, edge, metrics, shutdown).await;
    background.abort();
    if let Some(reload) = reload {
        reload.abort();
    }
    served
}

/// The TLS and trusted proxies of `server`, with the task that reloads the certificate on
/// SIGHUP. A certificate that cannot be loaded fails the start, naming the file.
fn edge(
    server: &crate::config::ServerConfig,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> std::io::Result<(listener::Edge, Option<tokio::task::JoinHandle<()>>)> {
    let proxies = proxies::TrustedProxies::new(&server.trusted_proxies);
    let Some(config) = &server.tls else {
        return Ok((listener::Edge { tls: None, proxies }, None));
    };
    let invalid = |e: tls::TlsError| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let cert = tls::ReloadableCert::load_measured(config, metrics).map_err(invalid)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config().map_err(invalid)?);
    tracing::info!(cert = %config.cert.display(), "terminating TLS (HTTP/2 and HTTP/1.1); SIGHUP reloads the certificate");
    let reload = match tls::reload_on_hangup(cert) {
        Ok(task) => Some(tokio::spawn(task)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: server.tls will not be reloaded");
            None
        }
    };
    Ok((
        listener::Edge {
            tls: Some(acceptor),
            proxies,
        },
        reload,
    ))
}

/// Serves [`metrics_app`] on `listener` (`server.metrics_listen`) until `shutdown` completes,
/// with the same timeouts and a small cap of its own: it has one client, the scraper.
pub async fn run_metrics(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = &state.server;
    let policy = listener::ConnectionPolicy {
        max_connections: 16,
        per_address: 16,
        header_read_timeout: Duration::from_secs(server.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(server.idle_timeout_secs),
    };
    let metrics = state.audit.counts().connections.clone();
    listener::serve(listener, metrics_app(state), policy, metrics, shutdown).await
}

/// What the request says about its client, for the audit trail.
fn request_info(headers: &HeaderMap, client: Option<SocketAddr>, via: Door) -> RequestInfo {
    RequestInfo {
        client: client.map(|a| a.ip().to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(200).collect()),
        via,
    }
}

/// The one place a [`Denied`] becomes a reply, for every door: the status, git's message
/// (also in `X-Jit-Denial` for proxies that drop bodies), and for a 401 a Bearer challenge
/// naming the exact scope (git ≥ 2.41 hands it to the credential helper as `wwwauth[]`) with
/// RFC 6750's `invalid_token` and the reason when a credential was refused, plus a Basic
/// challenge for older clients; `Retry-After` for 429 and 503.
pub fn denied(d: &Denied) -> Response {
    let status = StatusCode::from_u16(d.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut r = text(status, &d.message());
    if let Some(needed) = d.needed() {
        let mut challenge = BearerChallenge::new(REALM, Some(needed.clone()));
        if let Denied::InvalidToken { reason, .. } = d {
            challenge = challenge.refused("invalid_token", reason.as_str());
        }
        let bearer = challenge.to_header_value();
        // A scope is built only from RepoPath characters and action names: a valid value.
        if let Ok(v) = HeaderValue::from_str(&bearer) {
            r.headers_mut().append(header::WWW_AUTHENTICATE, v);
        }
        r.headers_mut().append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"git-jit\""),
        );
    }
    let retry_after = match d {
        Denied::TooManyRefusals { retry_after } | Denied::TooManyDenials { retry_after } => {
            Some(retry_after.to_string())
        }
        Denied::Unavailable { .. } => Some("5".to_owned()),
        _ => None,
    };
    if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::extract::Request;
    use http_body_util::BodyExt;
    use jit_proto::Scope;
    use tower::ServiceExt;

    use super::*;
    use crate::audit::AuditQuery;
    use crate::clock::ManualClock;
    use crate::store::GrantStore;
    use crate::store::memory::MemoryStore;

    fn test_app() -> (Router, Arc<dyn GrantStore>) {
        let store: Arc<dyn GrantStore> = Arc::new(MemoryStore::new(100));
        let state = AppState::for_tests(store.clone(), Arc::new(ManualClock::new(1_000_000)));
        (app(state), store)
    }

    /// A request `/authz` refuses with an audited `access.denied` (a malformed token).
    fn refused_authz() -> axum::http::request::Builder {
        Request::get("/authz")
            .header(
                "X-Original-URI",
                "/acme/api.git/info/refs?service=git-upload-pack",
            )
            .header("X-Original-Method", "GET")
            .header(header::AUTHORIZATION, "Bearer not-a-token")
    }

    async fn audited(store: &dyn GrantStore) -> Vec<crate::audit::AuditEvent> {
        store
            .read_audit(&AuditQuery {
                limit: usize::MAX,
                ..Default::default()
            })
            .await
            .expect("read")
    }

    #[tokio::test]
    async fn audit_event_carries_the_responses_request_id() {
        let (app, store) = test_app();
        let r = app
            .clone()
            .oneshot(refused_authz().body(Body::empty()).expect("req"))
            .await
            .expect("infallible");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let id = r
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .expect("x-request-id on the response")
            .to_owned();
        // A generated id: the process's 16-hex-digit prefix, a dash, a hex counter.
        let (prefix, counter) = id.split_once('-').expect("prefix-counter");
        assert_eq!(prefix.len(), 16, "{id}");
        assert!(prefix.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert!(u64::from_str_radix(counter, 16).is_ok(), "{id}");
        assert!(sane_request_id(id.as_bytes()), "{id}");
        let events = audited(&*store).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "access.denied");
        assert_eq!(events[0].data.get("request_id"), Some(&id.clone().into()));

        // A proxy's sane id is kept end to end; an odd one is replaced.
        let r = app
            .clone()
            .oneshot(
                refused_authz()
                    .header(&REQUEST_ID, "nginx-0123abcd")
                    .body(Body::empty())
                    .expect("req"),
            )
            .await
            .expect("infallible");
        assert_eq!(
            r.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()),
            Some("nginx-0123abcd")
        );
        let events = audited(&*store).await;
        assert_eq!(
            events[1].data.get("request_id"),
            Some(&"nginx-0123abcd".into())
        );
        let odd = "x".repeat(MAX_REQUEST_ID + 1);
        for sent in [odd.as_str(), "a b", "\"a\""] {
            let r = app
                .clone()
                .oneshot(
                    refused_authz()
                        .header(&REQUEST_ID, sent)
                        .body(Body::empty())
                        .expect("req"),
                )
                .await
                .expect("infallible");
            let got = r.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok());
            // Replaced by a generated id (prefix-counter), never the odd one.
            assert!(
                got.is_some_and(
                    |g| g != sent && g.split_once('-').is_some_and(|(p, _)| p == prefix)
                ),
                "{got:?}"
            );
        }
        assert!(sane_request_id("x".repeat(MAX_REQUEST_ID).as_bytes()));
    }

    #[tokio::test]
    async fn metrics_endpoint_is_valid_exposition_by_route_template() {
        let (app, _) = test_app();
        for req in [
            refused_authz(),
            Request::get("/healthz"),
            Request::get("/acme/api.git/info/refs?service=git-upload-pack"),
            Request::get("/some/other/raw/path"),
        ] {
            app.clone()
                .oneshot(req.body(Body::empty()).expect("req"))
                .await
                .expect("infallible");
        }
        let r = app
            .oneshot(
                Request::get("/metrics")
                    .header(
                        header::ACCEPT,
                        "application/openmetrics-text; version=1.0.0",
                    )
                    .body(Body::empty())
                    .expect("req"),
            )
            .await
            .expect("infallible");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some(crate::metrics::CONTENT_TYPE)
        );
        let body = r.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        let samples = crate::metrics::tests::parse_exposition(&text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let has =
            |name: &str, labels: &str| samples.iter().any(|(n, l, _)| n == name && l == labels);
        assert!(
            has("jit_audit_events_total", "event=\"access.denied\""),
            "{text}"
        );
        assert!(has("jit_store_up", ""), "{text}");
        assert!(
            has(
                "jit_store_operation_duration_seconds_count",
                "op=\"append_audit\""
            ),
            "{text}"
        );
        for route in ["/authz", "/healthz"] {
            assert!(
                samples
                    .iter()
                    .any(|(n, l, _)| n == "jit_http_request_duration_seconds_count"
                        && l.starts_with(&format!("route=\"{route}\""))),
                "{route}: {text}"
            );
        }
        // Raw gateway paths never become labels.
        assert!(!text.contains("/acme/api.git"), "{text}");
        assert!(!text.contains("/some/other"), "{text}");
        assert!(text.contains("route=\"gateway\""), "{text}");
        promtool_check(&text);
    }

    /// Runs `promtool check metrics` on `text` when promtool is installed. Its parser is the
    /// classic text format's: a parse error fails (exit 1); of its lint problems (exit 3) only
    /// one is expected, from reading OpenMetrics counters classically — family `x` is typed
    /// `counter`, its sample `x_total` then looks like a family without help text.
    fn promtool_check(text: &str) {
        use std::io::Write as _;
        let child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("promtool is not installed: checked structurally only");
            return;
        };
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(text.as_bytes()).expect("write to promtool");
        }
        let out = child.wait_with_output().expect("promtool ran");
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let only_counter_suffixes = said.lines().filter(|l| !l.is_empty()).all(|l| {
            l.strip_suffix("_total no help text")
                .is_some_and(|family| text.contains(&format!("# TYPE {family} counter\n")))
        });
        assert!(
            out.status.success() || (out.status.code() == Some(3) && only_counter_suffixes),
            "promtool: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn challenge_names_the_needed_scope() {
        let needed = Scope::parse("repo:acme/api:write").expect("scope");
        let r = denied(&Denied::NoCredential {
            needed: needed.clone(),
        });
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let got: Vec<_> = r
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect();
        assert_eq!(
            got,
            [
                "Bearer realm=\"git-jit\", scope=\"repo:acme/api:write\"",
                "Basic realm=\"git-jit\""
            ]
        );
        let r = denied(&Denied::InvalidToken {
            needed,
            reason: "token has been \"revoked\"".into(),
        });
        let bearer = r
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            bearer,
            Some(
                "Bearer realm=\"git-jit\", scope=\"repo:acme/api:write\", error=\"invalid_token\", \
                 error_description=\"token has been revoked\""
            )
        );
        let r = denied(&Denied::TooManyRefusals { retry_after: 7 });
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("7")
        );
    }

    /// Two `Authorization` headers (the first valid-looking, the second something else) are
    /// refused with 400 on every door before any decision, and nothing is audited.
    #[tokio::test]
    async fn two_authorization_headers_are_a_400_everywhere() {
        let (app, store) = test_app();
        let requests = [
            Request::get("/acme/api.git/info/refs?service=git-upload-pack"),
            Request::get("/authz").header(
                "X-Original-URI",
                "/acme/api.git/info/refs?service=git-upload-pack",
            ),
            Request::get("/v1/grants"),
            Request::post("/oauth/introspect"),
        ];
        for r in requests {
            let r = r
                .header(header::AUTHORIZATION, "Bearer first")
                .header(header::AUTHORIZATION, "Basic eDpzZWNvbmQ=")
                .body(Body::empty())
                .expect("request");
            let uri = r.uri().clone();
            let response = app.clone().oneshot(r).await.expect("answer");
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
        }
        // The other single-valued headers too, each named.
        for (name, first, second) in [
            (
                "X-Original-URI",
                "/acme/api.git/info/refs?service=git-upload-pack",
                "/other/x.git/info/refs?service=git-receive-pack",
            ),
            ("X-Original-Method", "GET", "POST"),
            ("Content-Encoding", "identity", "gzip"),
            ("Host", "broker.test", "evil.test"),
        ] {
            let r = refused_authz()
                .header(name, first)
                .header(name, second)
                .body(Body::empty())
                .expect("request");
            let response = app.clone().oneshot(r).await.expect("answer");
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            let said = String::from_utf8_lossy(&body);
            assert!(
                said.contains(&format!("more than one {name} header")),
                "{said}"
            );
        }
        assert!(audited(store.as_ref()).await.is_empty());
        // One header is still fine.
        let r = refused_authz().body(Body::empty()).expect("request");
        let response = app.oneshot(r).await.expect("answer");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
}
