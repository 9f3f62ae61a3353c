//! What every request passes first, in one middleware (`observe`): the header checks, the
//! request id, the latency histogram by route — and the log format that names the request id
//! on every line logged while a request is served ([`RequestIdFormat`]).
//!
//! One `from_fn` instead of a stack of layers: a request id layer, its propagation layer, a
//! tracing span per request and a second middleware each cost the `/authz` hot path work of
//! their own (a boxed future, a cloned route, a span registered, formatted and closed) for
//! what one function does in a few lines. The request id reaches log lines through the same
//! task-local the audit recorder reads ([`crate::recorder::in_request`]), at the cost of a
//! lookup when a line is written instead of a span on every request.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::{MAX_REQUEST_ID, REQUEST_ID, authz, text};
use crate::metrics::{GATEWAY_ROUTE, HttpLabels, Metrics, method_label};

/// Request ids: a random per-process prefix and a counter. Unique across replicas and
/// restarts, and one atomic add per request — a UUID took a `getrandom` system call on every
/// request of the hot path.
#[derive(Clone)]
pub(super) struct RequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    pub(super) fn new() -> Self {
        let mut seed = [0u8; 8];
        let prefix =
            match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed) {
                Ok(()) => hex::encode(seed),
                // No randomness: the start time still tells replicas and restarts apart.
                Err(_) => format!(
                    "{:x}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos())
                ),
            };
        Self {
            prefix: Arc::from(prefix),
            next: Arc::default(),
        }
    }

    /// A fresh id: `prefix-counter` (lower-case hex, as `{:x}` writes it, without the
    /// formatting machinery: this runs on every request).
    fn make(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(self.prefix.len() + 17);
        id.push_str(&self.prefix);
        id.push('-');
        let digits = (u64::BITS - n.leading_zeros()).div_ceil(4).max(1);
        for i in (0..digits).rev() {
            id.push(char::from(
                b"0123456789abcdef"[((n >> (4 * i)) & 0xf) as usize],
            ));
        }
        id
    }
}

/// Whether a client-supplied request id is kept: short, and only characters that are safe in
/// logs, headers and JSON without escaping.
pub(super) fn sane_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
}

/// Headers a decision reads as one value, by the name a refusal gives them. Two of any is a
/// 400: which one counts would otherwise depend on who reads the headers (the broker takes the
/// first, a server behind a proxy may take the last) — two `Authorization`s, two
/// `X-Original-URI`s for `/authz`, two `Content-Encoding`s on a push whose body the gateway
/// reads one way and the upstream another.
const SINGLE_VALUED: [(&str, HeaderName); 7] = [
    ("Authorization", header::AUTHORIZATION),
    ("Host", header::HOST),
    ("Content-Type", header::CONTENT_TYPE),
    ("Content-Encoding", header::CONTENT_ENCODING),
    (
        "X-Original-URI",
        HeaderName::from_static(authz::ORIGINAL_URI),
    ),
    (
        "X-Original-Method",
        HeaderName::from_static(authz::ORIGINAL_METHOD),
    ),
    (
        "X-Original-Content-Length",
        HeaderName::from_static(authz::ORIGINAL_CONTENT_LENGTH),
    ),
];

/// The routes of [`super::app`], so their label costs no allocation per request. A route
/// missing here is still labelled, with a copy of its template.
const ROUTES: [&str; 12] = [
    "/authz",
    "/oauth/token",
    "/oauth/introspect",
    "/healthz",
    "/readyz",
    "/metrics",
    "/.well-known/jwks.json",
    "/.well-known/oauth-authorization-server",
    "/v1/grants",
    "/v1/revoke",
    "/v1/audit",
    GATEWAY_ROUTE,
];

/// The latency histogram's label of the route template `path`.
fn route_label(path: &str) -> Cow<'static, str> {
    match ROUTES.iter().find(|r| **r == path) {
        Some(r) => Cow::Borrowed(r),
        None => Cow::Owned(path.to_owned()),
    }
}

/// The state of [`observe`].
#[derive(Clone)]
pub(super) struct Observer {
    pub(super) metrics: Arc<Metrics>,
    pub(super) ids: RequestIds,
}

/// Every request, in order:
/// - more than one of a [`SINGLE_VALUED`] header is a 400 for every route;
/// - the request id: the client's (or proxy's) one when it is exactly one and
///   [`sane_request_id`], else a fresh one; set on the request, echoed on the response, in
///   scope for the audit recorder and the log lines while the request is served;
/// - the latency by route template (the gateway's label for unrouted paths, so raw paths
///   never become labels), method and status.
pub(super) async fn observe(
    State(o): State<Observer>,
    mut request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    // As many values as names: no header is repeated, and the lookups below can be skipped.
    let repeated = headers.len() > headers.keys_len();
    for (shown, name) in SINGLE_VALUED.iter().filter(|_| repeated) {
        if headers.get_all(name).iter().nth(1).is_some() {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("git-jit: more than one {shown} header; send exactly one"),
            );
        }
    }
    let mut ids = headers.get_all(&REQUEST_ID).iter();
    let kept = match (ids.next(), ids.next()) {
        (Some(id), None) if sane_request_id(id.as_bytes()) => {
            // Sane means ASCII: never fails.
            id.to_str().ok().map(|s| (s.to_owned(), id.clone()))
        }
        _ => None,
    };
    let (id, value) = match kept {
        Some(kept) => kept,
        None => {
            let id = o.ids.make();
            // Hex digits and a dash: a valid header value.
            let Ok(value) = HeaderValue::from_str(&id) else {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "git-jit: request id");
            };
            request.headers_mut().insert(REQUEST_ID, value.clone());
            (id, value)
        }
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(Cow::Borrowed(GATEWAY_ROUTE), |p| route_label(p.as_str()));
    let method = method_label(request.method().as_str());
    let started = Instant::now();
    let mut response = crate::recorder::in_request(Some(id), next.run(request)).await;
    o.metrics.http_request(
        &HttpLabels {
            route,
            method,
            status: response.status().as_u16(),
        },
        started.elapsed(),
    );
    response.headers_mut().entry(REQUEST_ID).or_insert(value);
    response
}

/// An event format that adds the request id to every line logged while a request is served:
/// ` request_id=…` at the end of a human line, a top-level `"request_id"` in a JSON line.
/// Lines logged outside a request are the inner format's, unchanged.
pub struct RequestIdFormat<E> {
    /// For a writer without colours (and for JSON).
    plain: E,
    /// For a terminal that takes colours.
    colored: E,
    json: bool,
}

impl RequestIdFormat<Format<Full>> {
    /// The default human format.
    pub fn human() -> Self {
        Self {
            plain: Format::default().with_ansi(false),
            colored: Format::default().with_ansi(true),
            json: false,
        }
    }
}

impl RequestIdFormat<Format<Json>> {
    /// One JSON object per line, the event's fields at the top level.
    pub fn json() -> Self {
        Self {
            plain: Format::default().json().flatten_event(true),
            colored: Format::default().json().flatten_event(true),
            json: true,
        }
    }
}

impl<S, N, E> FormatEvent<S, N> for RequestIdFormat<E>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let inner = if writer.has_ansi_escapes() {
            &self.colored
        } else {
            &self.plain
        };
        crate::recorder::with_request_id(|id| {
            let Some(id) = id else {
                return inner.format_event(ctx, writer.by_ref(), event);
            };
            let mut line = String::new();
            inner.format_event(ctx, Writer::new(&mut line), event)?;
            let body = line.strip_suffix('\n').unwrap_or(&line);
            match body.strip_suffix('}').filter(|_| self.json) {
                // The id is sane (see `observe`): nothing to escape.
                Some(head) if head.ends_with('{') => {
                    writeln!(writer, "{head}\"request_id\":\"{id}\"}}")
                }
                Some(head) => writeln!(writer, "{head},\"request_id\":\"{id}\"}}"),
                None => writeln!(writer, "{body} request_id={id}"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
        }
    }

    #[test]
    fn request_ids_count_in_hex_after_the_prefix() {
        let ids = RequestIds::new();
        for n in [0u64, 1, 9, 10, 15, 16, 255, 256, 0xdead_beef, u64::MAX] {
            ids.next.store(n, Ordering::Relaxed);
            assert_eq!(ids.make(), format!("{}-{n:x}", ids.prefix), "{n}");
        }
    }

    #[test]
    fn route_labels_are_the_templates() {
        assert!(matches!(route_label("/authz"), Cow::Borrowed("/authz")));
        assert!(matches!(route_label("/dev/jwks"), Cow::Owned(ref r) if r == "/dev/jwks"));
    }

    async fn log_in_and_out_of_a_request() {
        tracing::info!(answer = 42, "inside");
        crate::recorder::in_request(Some("abc-1f".to_owned()), async {
            tracing::warn!(answer = 43, "in a request");
        })
        .await;
    }

    #[tokio::test]
    async fn log_lines_of_a_request_name_its_id_in_both_formats() {
        let lines = Lines::default();
        let w = lines.clone();
        let human = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .event_format(RequestIdFormat::human())
            .finish();
        let guard = tracing::subscriber::set_default(human);
        log_in_and_out_of_a_request().await;
        drop(guard);
        let text = lines.text();
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got.len(), 2, "{text}");
        assert!(got[0].ends_with("inside answer=42"), "{text}");
        assert!(
            got[1].ends_with("in a request answer=43 request_id=abc-1f"),
            "{text}"
        );

        let lines = Lines::default();
        let w = lines.clone();
        let json = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .json()
            .flatten_event(true)
            .event_format(RequestIdFormat::json())
            .finish();
        let guard = tracing::subscriber::set_default(json);
        log_in_and_out_of_a_request().await;
        drop(guard);
        let text = lines.text();
        let got: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(got.len(), 2, "{text}");
        assert_eq!(got[0]["message"], "inside");
        assert!(got[0].get("request_id").is_none(), "{text}");
        assert_eq!(got[1]["message"], "in a request");
        assert_eq!(got[1]["answer"], 43);
        assert_eq!(got[1]["request_id"], "abc-1f");
    }
}
