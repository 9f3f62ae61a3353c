//! The broker's metrics: one Prometheus registry per broker state and the typed handles that
//! the HTTP floor, the recorder and the store decorator update. Depends on nothing else of the
//! crate, so every floor may import it; `/metrics` only encodes it.
//!
//! Every label has a bounded set of values: route templates (never raw paths), audit event
//! kinds and refusal reasons (the broker's own fixed names), store operation names, normalised
//! methods and status codes.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub mod exposition;

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus
/// scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `route` label of requests that no route matched: the Git gateway.
pub const GATEWAY_ROUTE: &str = "gateway";

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route template (`/oauth/token`), or [`GATEWAY_ROUTE`]; borrowed for the
    /// broker's own routes, so labelling a request allocates nothing.
    pub route: std::borrow::Cow<'static, str>,
    /// The method, one of the standard ones or `other`.
    pub method: &'static str,
    /// The response status code.
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

// Rate limiting and audit retention (abuse limits of the doors and the trail).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimiterLabels {
    limiter: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    op: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 1 ms to about a minute: store round trips, API calls, a gateway's answer head.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.5, 13))
}

/// The registry and its handles. Cheap to update from any task; [`Metrics::encode`] renders
/// the text exposition.
pub struct Metrics {
    registry: Registry,
    http: Histograms<HttpLabels>,
    events: Family<EventLabels, Counter>,
    unaudited: Family<ReasonLabels, Counter>,
    audit_failures: Counter,
    store_up: Gauge,
    store: Histograms<StoreLabels>,
    store_errors: Family<StoreLabels, Counter>,
    // Rate limiting (abuse limits of the doors and the exchange).
    rate_limited: Family<LimiterLabels, Counter>,
    rate_limit_unavailable: Family<LimiterLabels, Counter>,
    /// Gateway: audit details summarised because they were too large (issue 12, item 7).
    summarised: Family<FieldLabels, Counter>,
    /// Label values seen so far, for the snapshots: a family cannot be iterated.
    kinds_seen: Mutex<BTreeSet<String>>,
    reasons_seen: Mutex<BTreeSet<&'static str>>,
    /// The listener's connection counts (edge: caps and timeouts).
    pub connections: ConnectionMetrics,
    /// Approval notifications: deliveries and attempts per webhook.
    pub webhooks: WebhookMetrics,
    /// When each certificate the broker presents or uses expires.
    certificates: Family<CertificateLabels, Gauge>,
}

/// Labels of a certificate: the broker's fixed name for it (`tls`, `redis_client`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http = Histograms::<HttpLabels>::new_with_constructor(latency_buckets as fn() -> _);
        let events = Family::<EventLabels, Counter>::default();
        let unaudited = Family::<ReasonLabels, Counter>::default();
        let audit_failures = Counter::default();
        let store_up = Gauge::default();
        let store = Histograms::<StoreLabels>::new_with_constructor(latency_buckets as fn() -> _);
        let store_errors = Family::<StoreLabels, Counter>::default();
        // Rate limiting (abuse limits of the doors and the exchange).
        let rate_limited = Family::<LimiterLabels, Counter>::default();
        registry.register(
            "jit_rate_limited",
            "Requests refused with 429 by a rate limiter, by limiter (exchange_identity, exchange_client, refused_address, denied_token, denied_identity)",
            rate_limited.clone(),
        );
        let rate_limit_unavailable = Family::<LimiterLabels, Counter>::default();
        registry.register(
            "jit_rate_limit_unavailable",
            "Requests refused because their rate limit could not be checked (Redis unreachable: fail closed), by limiter",
            rate_limit_unavailable.clone(),
        );
        let summarised = Family::<FieldLabels, Counter>::default();
        // Counters get their `_total` suffix from the encoder: `jit_audit_events_total`.
        registry.register(
            "jit_http_request_duration_seconds",
            "Time to answer an HTTP request (to the response head; gateway bodies stream on), by route template, method and status",
            http.clone(),
        );
        registry.register(
            "jit_audit_events",
            "Audit events recorded by this process, by kind (every decision is one)",
            events.clone(),
        );
        registry.register(
            "jit_unaudited_refusals",
            "Refusals counted instead of audited (credential-less challenges, refused credentials over an address's budget)",
            unaudited.clone(),
        );
        registry.register(
            "jit_audit_failures",
            "Audit events that could not be recorded (their requests were refused)",
            audit_failures.clone(),
        );
        registry.register(
            "jit_store_up",
            "Whether the grant store answered its last ping",
            store_up.clone(),
        );
        registry.register(
            "jit_store_operation_duration_seconds",
            "Time of grant store calls, by operation",
            store.clone(),
        );
        registry.register(
            "jit_store_errors",
            "Grant store calls that failed, by operation",
            store_errors.clone(),
        );
        let certificates = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "jit_certificate_expiry_timestamp_seconds",
            "When a certificate the broker loaded expires (its notAfter, Unix seconds), by certificate",
            certificates.clone(),
        );
        let connections = ConnectionMetrics::register(&mut registry);
        let webhooks = WebhookMetrics::register(&mut registry);
        registry.register(
            "jit_audit_summarised",
            "Audit event details too large to record whole, summarised instead (by field: a push's `updates`, its `denial`)",
            summarised.clone(),
        );
        Self {
            registry,
            connections,
            webhooks,
            http,
            events,
            unaudited,
            audit_failures,
            store_up,
            store,
            store_errors,
            rate_limited,
            rate_limit_unavailable,
            summarised,
            certificates,
            kinds_seen: Mutex::default(),
            reasons_seen: Mutex::default(),
        }
    }

    /// Observes one answered HTTP request.
    pub fn http_request(&self, labels: &HttpLabels, took: Duration) {
        self.http.get_or_create(labels).observe(took.as_secs_f64());
    }

    /// Counts one recorded audit event of `kind`.
    pub fn audit_event(&self, kind: &str) {
        self.events
            .get_or_create(&EventLabels {
                event: kind.to_owned(),
            })
            .inc();
        let Ok(mut seen) = self.kinds_seen.lock() else {
            return;
        };
        if !seen.contains(kind) {
            seen.insert(kind.to_owned());
        }
    }

    /// Counts `n` audit events that could not be recorded.
    pub fn audit_failed(&self, n: u64) {
        self.audit_failures.inc_by(n);
    }

    /// Counts a refusal that is deliberately not an audit event (`no_credential`: git's first,
    /// credential-less request of every clone; `refused_over_limit`: an address presenting
    /// refused credentials faster than its budget), so a flood cannot push the trail out.
    pub fn unaudited(&self, reason: &'static str) {
        self.unaudited.get_or_create(&ReasonLabels { reason }).inc();
        if let Ok(mut seen) = self.reasons_seen.lock() {
            seen.insert(reason);
        }
    }

    /// Counts one request refused by the rate limiter named `limiter`.
    pub fn rate_limited(&self, limiter: &'static str) {
        self.rate_limited
            .get_or_create(&LimiterLabels { limiter })
            .inc();
    }

    /// Counts one request refused because the limiter named `limiter` could not be checked.
    pub fn rate_limit_unavailable(&self, limiter: &'static str) {
        self.rate_limit_unavailable
            .get_or_create(&LimiterLabels { limiter })
            .inc();
    }

    /// Records when the certificate named `certificate` (a fixed name: `tls`,
    /// `redis_client`) expires, as Unix seconds; what loads a certificate sets it, so the
    /// expiry alert of `deploy/prometheus/alerts.yaml` sees it.
    pub fn certificate_expires(&self, certificate: &'static str, not_after_unix: i64) {
        self.certificates
            .get_or_create(&CertificateLabels { certificate })
            .set(not_after_unix);
    }

    /// Records whether the store answered.
    pub fn store_up(&self, up: bool) {
        self.store_up.set(i64::from(up));
    }

    /// Observes one store call named `op`, and counts it if it failed.
    pub fn store_call(&self, op: &'static str, took: Duration, ok: bool) {
        self.store_histogram(op).observe(took.as_secs_f64());
        if !ok {
            self.store_error(op);
        }
    }

    /// The latency histogram of store calls named `op`: a handle to keep, so a hot path
    /// observes without looking its label set up on every call.
    pub fn store_histogram(&self, op: &'static str) -> Histogram {
        self.store.get_or_create(&StoreLabels { op }).clone()
    }

    /// Counts one failed store call named `op`.
    pub fn store_error(&self, op: &'static str) {
        self.store_errors.get_or_create(&StoreLabels { op }).inc();
    }

    /// The [`Metrics::unaudited`] counts, sorted by reason.
    pub fn unaudited_snapshot(&self) -> Vec<(&'static str, u64)> {
        let reasons = self
            .reasons_seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        reasons
            .into_iter()
            .map(|reason| {
                let n = self.unaudited.get_or_create(&ReasonLabels { reason }).get();
                (reason, n)
            })
            .collect()
    }

    /// `(kind, count)` pairs of recorded audit events, sorted, and the failed count.
    pub fn snapshot(&self) -> (Vec<(String, u64)>, u64) {
        let kinds = self
            .kinds_seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        let counts = kinds
            .into_iter()
            .map(|event| {
                let n = self
                    .events
                    .get_or_create(&EventLabels {
                        event: event.clone(),
                    })
                    .get();
                (event, n)
            })
            .collect();
        (counts, self.audit_failures.get())
    }

    /// The text exposition of every family in the Prometheus text format
    /// ([`exposition::PROMETHEUS_TEXT`]).
    pub fn encode_prometheus_text(&self) -> String {
        exposition::to_prometheus_text(&self.encode())
    }

    /// The text exposition of every family ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a `String` cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

// ---- edge: the listener's connections (caps, timeouts) -------------------------------------

/// Counts of the HTTP listener: connections open, refused at accept, and closed for a timeout.
/// Reasons are the listener's fixed names.
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    open: Gauge,
    refused: Family<ReasonLabels, Counter>,
    timed_out: Family<ReasonLabels, Counter>,
}

impl ConnectionMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "jit_connections_open",
            "Client connections open now",
            m.open.clone(),
        );
        registry.register(
            "jit_connections_refused",
            "Connections closed as soon as they were accepted, by reason (capacity: the cap on connections; address_share: one address's share of it; accept_error: the process could not accept, e.g. out of descriptors)",
            m.refused.clone(),
        );
        registry.register(
            "jit_connections_timed_out",
            "Connections closed for a timeout, by reason (header_read: request headers not complete in time, also between kept-alive requests; idle: no byte moved for too long)",
            m.timed_out.clone(),
        );
        m
    }

    /// One more connection open (`1`) or one closed (`-1`).
    pub fn open(&self, delta: i64) {
        self.open.inc_by(delta);
    }

    /// Counts a connection refused for `reason`.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a connection closed for the timeout `reason`.
    pub fn timed_out(&self, reason: &'static str) {
        self.timed_out.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The refused and timed-out counts of `reason` (for tests and reports).
    pub fn counts(&self, reason: &'static str) -> (u64, u64) {
        let labels = ReasonLabels { reason };
        (
            self.refused.get_or_create(&labels).get(),
            self.timed_out.get_or_create(&labels).get(),
        )
    }
}

// ---- end of edge ----------------------------------------------------------------------------

// --- Gateway: oversize audit details (issue 12, item 7) ---------------------------------

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FieldLabels {
    field: &'static str,
}

impl Metrics {
    /// Counts one audit detail (`updates`, `denial`) summarised because it was too large.
    pub fn audit_summarised(&self, field: &'static str) {
        self.summarised.get_or_create(&FieldLabels { field }).inc();
    }

    /// How many `field` details were summarised.
    pub fn audit_summarised_count(&self, field: &'static str) -> u64 {
        self.summarised.get_or_create(&FieldLabels { field }).get()
    }
}

// --- end gateway ---------------------------------------------------------------------

// --- approval notifications: webhooks (issue 13, item 6) ------------------------------

/// What became of one event at one webhook: the `outcome` label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The attempts ran out, or the receiver refused it (a 4xx other than 429).
    Failed,
    /// Never sent: the webhook's queue was full.
    Dropped,
}

impl WebhookOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    webhook: String,
    outcome: &'static str,
}

/// Counts of the approval-notification webhooks, labelled by the webhook's configured name
/// (a bounded set: the config's `[[notify.webhook]]` entries).
#[derive(Clone, Default)]
pub struct WebhookMetrics {
    deliveries: Family<DeliveryLabels, Counter>,
    attempts: Family<WebhookLabels, Counter>,
}

impl WebhookMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "jit_webhook_deliveries",
            "Notification events by webhook and outcome (delivered: answered 2xx; failed: refused or out of attempts; dropped: the webhook's queue was full)",
            m.deliveries.clone(),
        );
        registry.register(
            "jit_webhook_attempts",
            "HTTP requests made to notification webhooks, retries included, by webhook",
            m.attempts.clone(),
        );
        m
    }

    /// Counts one event's `outcome` at `webhook`.
    pub fn delivery(&self, webhook: &str, outcome: WebhookOutcome) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                webhook: webhook.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts one HTTP request to `webhook`.
    pub fn attempt(&self, webhook: &str) {
        self.attempts
            .get_or_create(&WebhookLabels {
                webhook: webhook.to_owned(),
            })
            .inc();
    }

    /// How many events reached `outcome` at `webhook` (for tests and reports).
    pub fn deliveries(&self, webhook: &str, outcome: WebhookOutcome) -> u64 {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                webhook: webhook.to_owned(),
                outcome: outcome.as_str(),
            })
            .get()
    }

    /// How many HTTP requests went to `webhook`.
    pub fn attempts(&self, webhook: &str) -> u64 {
        self.attempts
            .get_or_create(&WebhookLabels {
                webhook: webhook.to_owned(),
            })
            .get()
    }
}

// --- end approval notifications --------------------------------------------------------

/// `method` as a bounded label value.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Checks `text` structurally as an OpenMetrics/Prometheus text exposition: every sample
    /// belongs to a family declared by a `# TYPE` line before it (with the suffixes its type
    /// allows), names and labels are valid, values are numbers, `# EOF` ends it. Returns the
    /// samples as `(name, labels, value)`.
    pub(crate) fn parse_exposition(text: &str) -> Result<Vec<(String, String, f64)>, String> {
        fn valid_name(s: &str) -> bool {
            let mut chars = s.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        }
        fn valid_labels(s: &str) -> bool {
            // `k="v",k2="v2"` with values free of quotes, backslashes and newlines (ours are).
            s.split(',').all(|pair| {
                pair.split_once('=').is_some_and(|(k, v)| {
                    valid_name(k)
                        && !k.starts_with("__")
                        && v.len() >= 2
                        && v.starts_with('"')
                        && v.ends_with('"')
                        && !v[1..v.len() - 1].contains(['"', '\\', '\n'])
                })
            })
        }
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut samples = Vec::new();
        let mut eof = false;
        for line in text.lines() {
            if eof {
                return Err(format!("text after # EOF: {line:?}"));
            }
            if line == "# EOF" {
                eof = true;
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE: {line:?}"))?;
                if !valid_name(name) {
                    return Err(format!("bad family name: {name:?}"));
                }
                if ![
                    "counter",
                    "gauge",
                    "histogram",
                    "summary",
                    "info",
                    "unknown",
                ]
                .contains(&kind)
                {
                    return Err(format!("bad type: {line:?}"));
                }
                if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                    return Err(format!("family declared twice: {name}"));
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default();
                if !valid_name(name) {
                    return Err(format!("bad HELP: {line:?}"));
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                return Err(format!("unexpected line: {line:?}"));
            }
            let (series, value) = line
                .rsplit_once(' ')
                .ok_or(format!("sample without value: {line:?}"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().map_err(|_| format!("bad value: {line:?}"))?,
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .strip_suffix('}')
                        .ok_or(format!("unclosed labels: {line:?}"))?;
                    if !valid_labels(labels) {
                        return Err(format!("bad labels: {line:?}"));
                    }
                    (name, labels)
                }
                None => (series, ""),
            };
            if !valid_name(name) {
                return Err(format!("bad sample name: {line:?}"));
            }
            let owner = |suffixes: &[&str]| {
                suffixes.iter().find_map(|s| {
                    let family = name.strip_suffix(s)?;
                    types.get(family).map(|t| (family, t.as_str()))
                })
            };
            let typed = match owner(&[""]) {
                Some((_, t)) if t == "gauge" || t == "unknown" => true,
                _ => match owner(&["_total", "_created"]) {
                    Some((_, "counter")) => true,
                    _ => matches!(
                        owner(&["_bucket", "_sum", "_count", "_created"]),
                        Some((_, "histogram" | "summary"))
                    ),
                },
            };
            if !typed {
                return Err(format!("sample of no declared family: {line:?}"));
            }
            samples.push((name.to_owned(), labels.to_owned(), value));
        }
        if !eof {
            return Err("no # EOF".into());
        }
        Ok(samples)
    }

    #[test]
    fn exposition_is_well_formed_and_keeps_dashboard_names() {
        let m = Metrics::new();
        m.audit_event("grant.issued");
        m.audit_event("grant.issued");
        m.audit_event("access.denied");
        m.audit_failed(3);
        m.unaudited("no_credential");
        m.store_up(true);
        m.store_call("check", Duration::from_millis(2), true);
        m.store_call("put", Duration::from_millis(40), false);
        m.http_request(
            &HttpLabels {
                route: "/oauth/token".into(),
                method: method_label("POST"),
                status: 200,
            },
            Duration::from_millis(5),
        );
        let text = m.encode();
        let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let value = |name: &str, labels: &str| {
            samples
                .iter()
                .find(|(n, l, _)| n == name && l == labels)
                .map(|s| s.2)
        };
        assert_eq!(
            value("jit_audit_events_total", "event=\"grant.issued\""),
            Some(2.0)
        );
        assert_eq!(
            value("jit_unaudited_refusals_total", "reason=\"no_credential\""),
            Some(1.0)
        );
        assert_eq!(value("jit_audit_failures_total", ""), Some(3.0));
        assert_eq!(value("jit_store_up", ""), Some(1.0));
        assert_eq!(value("jit_store_errors_total", "op=\"put\""), Some(1.0));
        assert_eq!(
            value("jit_store_operation_duration_seconds_count", "op=\"check\""),
            Some(1.0)
        );
        assert_eq!(
            value(
                "jit_http_request_duration_seconds_count",
                "route=\"/oauth/token\",method=\"POST\",status=\"200\""
            ),
            Some(1.0)
        );
        assert_eq!(
            m.snapshot(),
            (
                vec![
                    ("access.denied".to_owned(), 1),
                    ("grant.issued".to_owned(), 2)
                ],
                3
            )
        );
        assert_eq!(m.unaudited_snapshot(), [("no_credential", 1)]);
    }

    #[test]
    fn structural_check_refuses_untyped_samples() {
        assert!(parse_exposition("# TYPE a counter\na_total 1\n# EOF\n").is_ok());
        assert!(parse_exposition("# TYPE a counter\nb_total 1\n# EOF\n").is_err());
        assert!(parse_exposition("# TYPE a gauge\na_total 1\n# EOF\n").is_err());
        assert!(parse_exposition("# TYPE a gauge\na{1x=\"v\"} 1\n# EOF\n").is_err());
        assert!(parse_exposition("# TYPE a gauge\na 1\n").is_err());
    }

    #[test]
    fn webhook_counters_are_labelled_by_name_and_outcome() {
        let m = Metrics::new();
        m.webhooks.attempt("security-slack");
        m.webhooks.attempt("security-slack");
        m.webhooks
            .delivery("security-slack", WebhookOutcome::Delivered);
        m.webhooks.delivery("audit-sink", WebhookOutcome::Dropped);
        let text = m.encode();
        let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let value = |name: &str, labels: &str| {
            samples
                .iter()
                .find(|(n, l, _)| n == name && l == labels)
                .map(|s| s.2)
        };
        assert_eq!(
            value(
                "jit_webhook_deliveries_total",
                "webhook=\"security-slack\",outcome=\"delivered\""
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                "jit_webhook_deliveries_total",
                "webhook=\"audit-sink\",outcome=\"dropped\""
            ),
            Some(1.0)
        );
        assert_eq!(
            value("jit_webhook_attempts_total", "webhook=\"security-slack\""),
            Some(2.0)
        );
        assert_eq!(
            m.webhooks
                .deliveries("security-slack", WebhookOutcome::Delivered),
            1
        );
    }

    #[test]
    fn methods_are_bounded() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("BREW"), "other");
    }
}
