//! Notifications against real local receivers (axum servers on 127.0.0.1:0 that record each
//! request and answer as scripted), with the waits between attempts shortened.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use ring::hmac;
use serde_json::Value;
use tokio::sync::mpsc;

use super::delivery::{Report, Tuning};
use super::*;
use crate::metrics::Metrics;

const SECRET: &str = "whsec-0123456789abcdef";

/// One request a receiver saw.
struct Seen {
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// A scripted answer: status and `Retry-After`.
type Answer = (u16, Option<&'static str>);

#[derive(Clone)]
struct Script {
    /// The next answers; 200 once they run out.
    answers: Arc<Mutex<VecDeque<Answer>>>,
    seen: mpsc::UnboundedSender<Seen>,
}

async fn hook(State(s): State<Script>, headers: HeaderMap, body: Bytes) -> Response {
    let _ = s.seen.send(Seen { headers, body });
    let (status, retry_after) = s
        .answers
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or((200, None));
    let status = StatusCode::from_u16(status).expect("status");
    match retry_after {
        Some(v) => (status, [("retry-after", v)]).into_response(),
        None => status.into_response(),
    }
}

struct Receiver {
    url: String,
    seen: mpsc::UnboundedReceiver<Seen>,
}

/// A receiver answering `answers` in turn, then 200.
async fn receiver(answers: &[Answer]) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/hook/T0/SECRETPATH",
        listener.local_addr().expect("addr")
    );
    let (tx, seen) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/hook/T0/SECRETPATH", post(hook))
        .with_state(Script {
            answers: Arc::new(Mutex::new(answers.iter().copied().collect())),
            seen: tx,
        });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver { url, seen }
}

/// A receiver that accepts connections and never answers.
async fn hanging() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

/// Waits for the next item; the timeout only keeps a broken test from hanging.
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("in time")
        .expect("channel open")
}

/// `[[notify.webhook]]` entries `(name, url, extra lines)`, signed with `HOOK_SECRET`.
fn config(hooks: &[(&str, &str, &str)]) -> NotifyConfig {
    #[derive(serde::Deserialize)]
    struct File {
        notify: NotifyConfig,
    }
    let text: String = hooks
        .iter()
        .map(|(name, url, extra)| {
            format!(
                "[[notify.webhook]]\nname = {name:?}\nurl = {url:?}\nsecret_env = \"HOOK_SECRET\"\n{extra}\n"
            )
        })
        .collect();
    toml::from_str::<File>(&text).expect("valid").notify
}

struct Started {
    notifier: Notifier,
    metrics: WebhookMetrics,
    reports: mpsc::UnboundedReceiver<Report>,
}

fn start(hooks: &[(&str, &str, &str)], tune: impl FnOnce(&mut Tuning)) -> Started {
    let (tx, reports) = mpsc::unbounded_channel();
    let mut tuning = Tuning {
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(4),
        report: Some(tx),
        ..Tuning::default()
    };
    tune(&mut tuning);
    let metrics = Metrics::new().webhooks;
    let webhooks = webhook::load(&config(hooks), |var| {
        (var == "HOOK_SECRET").then(|| SECRET.to_owned())
    })
    .expect("webhooks");
    let notifier = Notifier::spawn(webhooks, metrics.clone(), tuning).expect("started");
    Started {
        notifier,
        metrics,
        reports,
    }
}

fn event(kind: NotifyKind) -> NotifyEvent {
    NotifyEvent {
        kind,
        request_id: "R-7".into(),
        requester: "alice".into(),
        requester_idp: "corp".into(),
        role: "prod-push".into(),
        scope: "repo:acme/api:write".into(),
        repo: "acme/api".into(),
        refs: vec!["refs/heads/main".into()],
        ttl_minutes: 30,
        reason: Some("hotfix <INC-42> & rollback".into()),
        approvers: vec![
            "bob@corp (corp)".into(),
            "groups contains sre (corp)".into(),
        ],
        approvals: 0,
        required: 1,
        decided_by: None,
        decision_reason: None,
        urgent: false,
        at: 1_700_000_000,
        broker: "https://jit.example.com".into(),
    }
}

fn report(webhook: &str, outcome: WebhookOutcome, attempts: u32) -> Report {
    Report {
        webhook: Arc::from(webhook),
        request_id: "R-7".into(),
        outcome,
        attempts,
    }
}

/// What a receiver computes: HMAC-SHA256(secret, timestamp "." body).
fn expected_signature(timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("sha256={}", hex::encode(hmac::sign(&key, &signed).as_ref()))
}

#[tokio::test]
async fn a_json_event_arrives_signed_with_only_the_event_fields() {
    let mut rx = receiver(&[]).await;
    let mut s = start(&[("ops", &rx.url, "")], |_| {});
    let sent = event(NotifyKind::RequestCreated);
    s.notifier.send(sent.clone());
    let seen = next(&mut rx.seen).await;
    assert_eq!(seen.header("content-type"), "application/json");
    assert_eq!(seen.header("x-jit-event"), "request.created");
    assert_eq!(seen.header("x-jit-delivery").len(), 36);
    assert!(seen.header("user-agent").starts_with("git-jit-broker/"));
    let timestamp = seen.header("x-jit-timestamp");
    assert!(timestamp.parse::<i64>().expect("unix seconds") > 1_700_000_000);
    assert_eq!(
        seen.header("x-jit-signature-256"),
        expected_signature(timestamp, &seen.body)
    );
    // A receiver with another key, or a replayed body under a new timestamp, fails to verify.
    assert_ne!(
        seen.header("x-jit-signature-256"),
        expected_signature("1", &seen.body)
    );

    let body = seen.json();
    let keys: BTreeSet<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "v",
        "event",
        "request_id",
        "requester",
        "requester_idp",
        "role",
        "scope",
        "repo",
        "refs",
        "ttl_minutes",
        "reason",
        "approvers",
        "approvals",
        "required",
        "decided_by",
        "decision_reason",
        "urgent",
        "at",
        "broker",
    ]
    .into();
    assert_eq!(keys, expected);
    assert_eq!(body["v"], 1);
    assert_eq!(body["event"], "request.created");
    assert_eq!(body["reason"], "hotfix <INC-42> & rollback");
    assert_eq!(body["approvers"][1], "groups contains sre (corp)");
    assert_eq!(body["decided_by"], Value::Null);

    assert_eq!(
        next(&mut s.reports).await,
        report("ops", WebhookOutcome::Delivered, 1)
    );
    assert_eq!(s.metrics.deliveries("ops", WebhookOutcome::Delivered), 1);
    assert_eq!(s.metrics.attempts("ops"), 1);
}

#[tokio::test]
async fn a_slack_message_names_who_what_and_why_escaped() {
    let mut rx = receiver(&[]).await;
    let s = start(&[("chat", &rx.url, "format = \"slack\"")], |_| {});
    s.notifier.send(event(NotifyKind::RequestCreated));
    let seen = next(&mut rx.seen).await;
    assert_eq!(seen.header("x-jit-event"), "request.created");
    assert_eq!(
        seen.header("x-jit-signature-256"),
        expected_signature(seen.header("x-jit-timestamp"), &seen.body)
    );
    let body = seen.json();
    assert_eq!(body.as_object().map(|o| o.len()), Some(1), "{body}");
    let text = body["text"].as_str().expect("text");
    for part in [
        "alice (corp)",
        "acme/api",
        "prod-push",
        "\"hotfix &lt;INC-42&gt; &amp; rollback\"",
        "request R-7",
        "bob@corp (corp), groups contains sre (corp)",
    ] {
        assert!(text.contains(part), "{text:?} lacks {part:?}");
    }
    assert!(!text.contains('<'), "{text}");
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_delivery_id() {
    let mut rx = receiver(&[(500, None), (500, None)]).await;
    let mut s = start(&[("ops", &rx.url, "")], |_| {});
    s.notifier.send(event(NotifyKind::RequestApproved));
    assert_eq!(
        next(&mut s.reports).await,
        report("ops", WebhookOutcome::Delivered, 3)
    );
    let ids: Vec<String> = [
        next(&mut rx.seen).await,
        next(&mut rx.seen).await,
        next(&mut rx.seen).await,
    ]
    .iter()
    .map(|seen| {
        assert_eq!(
            seen.header("x-jit-signature-256"),
            expected_signature(seen.header("x-jit-timestamp"), &seen.body),
            "each attempt is signed"
        );
        seen.header("x-jit-delivery").to_owned()
    })
    .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert!(rx.seen.try_recv().is_err(), "no fourth attempt");
    assert_eq!(s.metrics.attempts("ops"), 3);
    assert_eq!(s.metrics.deliveries("ops", WebhookOutcome::Delivered), 1);
    assert_eq!(s.metrics.deliveries("ops", WebhookOutcome::Failed), 0);
}

#[tokio::test]
async fn a_receiver_that_always_fails_is_a_failure_after_the_last_attempt() {
    let rx = receiver(&[(503, None); 10]).await;
    let mut s = start(&[("ops", &rx.url, "")], |t| t.attempts = 4);
    s.notifier.send(event(NotifyKind::RequestDenied));
    assert_eq!(
        next(&mut s.reports).await,
        report("ops", WebhookOutcome::Failed, 4)
    );
    assert_eq!(s.metrics.deliveries("ops", WebhookOutcome::Failed), 1);
    assert_eq!(s.metrics.attempts("ops"), 4);
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let mut rx = receiver(&[(400, None), (400, None)]).await;
    let mut s = start(&[("ops", &rx.url, "")], |_| {});
    s.notifier.send(event(NotifyKind::RequestCreated));
    assert_eq!(
        next(&mut s.reports).await,
        report("ops", WebhookOutcome::Failed, 1)
    );
    next(&mut rx.seen).await;
    assert!(rx.seen.try_recv().is_err(), "one request only");
    assert_eq!(s.metrics.deliveries("ops", WebhookOutcome::Failed), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_within_the_window() {
    let rx = receiver(&[(429, Some("0"))]).await;
    let mut s = start(&[("ops", &rx.url, "")], |_| {});
    s.notifier.send(event(NotifyKind::RequestCreated));
    assert_eq!(
        next(&mut s.reports).await,
        report("ops", WebhookOutcome::Delivered, 2)
    );

    // A wait past the retry window ends the delivery now rather than holding a slot.
    let rx = receiver(&[(503, Some("3600"))]).await;
    let mut s = start(&[("ops", &rx.url, "")], |_| {});
    s.notifier.send(event(NotifyKind::RequestCreated));
    assert_eq!(
        next(&mut s.reports).await,
        report("ops", WebhookOutcome::Failed, 1)
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let mut rx = receiver(&[(307, None)]).await;
    let mut s = start(&[("ops", &rx.url, "")], |_| {});
    s.notifier.send(event(NotifyKind::RequestCreated));
    assert_eq!(
        next(&mut s.reports).await,
        report("ops", WebhookOutcome::Failed, 1)
    );
    next(&mut rx.seen).await;
    assert!(rx.seen.try_recv().is_err());
}

#[tokio::test]
async fn a_hanging_webhook_does_not_delay_a_healthy_one() {
    let dead = hanging().await;
    let mut rx = receiver(&[]).await;
    let mut s = start(
        &[("dead", &dead, "timeout_secs = 30"), ("live", &rx.url, "")],
        |_| {},
    );
    s.notifier.send(event(NotifyKind::BreakGlass));
    assert_eq!(
        next(&mut rx.seen).await.header("x-jit-event"),
        "request.break_glass"
    );
    assert_eq!(
        next(&mut s.reports).await,
        report("live", WebhookOutcome::Delivered, 1)
    );
    // The dead webhook's first attempt is still waiting on its 30 s timeout.
    assert_eq!(s.metrics.attempts("dead"), 1);
    assert_eq!(s.metrics.deliveries("dead", WebhookOutcome::Failed), 0);
    assert_eq!(s.metrics.deliveries("dead", WebhookOutcome::Delivered), 0);
}

// The current-thread runtime runs no delivery task until the test awaits: every `send` below
// meets the queue exactly as the one before left it.
#[tokio::test(flavor = "current_thread")]
async fn send_on_a_full_queue_returns_at_once_and_counts_a_drop() {
    let mut rx = receiver(&[]).await;
    let mut s = start(&[("ops", &rx.url, "")], |t| t.queue = 1);
    for _ in 0..5 {
        s.notifier.send(event(NotifyKind::RequestCreated));
    }
    assert_eq!(s.metrics.deliveries("ops", WebhookOutcome::Dropped), 4);
    assert_eq!(
        next(&mut s.reports).await,
        report("ops", WebhookOutcome::Delivered, 1)
    );
    next(&mut rx.seen).await;
    assert!(
        rx.seen.try_recv().is_err(),
        "the dropped events were never sent"
    );
}

#[tokio::test]
async fn the_event_filter_chooses_what_a_webhook_gets() {
    let mut rx = receiver(&[]).await;
    let mut s = start(
        &[("urgent", &rx.url, "events = [\"request.break_glass\"]")],
        |_| {},
    );
    s.notifier.send(event(NotifyKind::RequestCreated));
    s.notifier.send(event(NotifyKind::BreakGlass));
    next(&mut s.reports).await;
    assert_eq!(
        next(&mut rx.seen).await.header("x-jit-event"),
        "request.break_glass"
    );
    assert!(rx.seen.try_recv().is_err());
    assert_eq!(s.metrics.attempts("urgent"), 1);
}

#[tokio::test]
async fn the_tasks_end_when_every_notifier_is_dropped() {
    let rx = receiver(&[]).await;
    let mut s = start(&[("a", &rx.url, ""), ("b", &rx.url, "")], |_| {});
    let clone = s.notifier.clone();
    drop(s.notifier);
    clone.send(event(NotifyKind::RequestExpired));
    drop(clone);
    // Both deliveries in flight finish; then the tasks end and drop the report channel.
    let mut got = vec![next(&mut s.reports).await, next(&mut s.reports).await];
    got.sort_by(|x, y| x.webhook.cmp(&y.webhook));
    assert_eq!(
        got,
        [
            report("a", WebhookOutcome::Delivered, 1),
            report("b", WebhookOutcome::Delivered, 1)
        ]
    );
    let end = tokio::time::timeout(Duration::from_secs(20), s.reports.recv()).await;
    assert!(matches!(end, Ok(None)), "the tasks ended");
}

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Current-thread: the delivery task logs on this thread, under the test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_failure_is_one_log_line_without_url_secret_or_reason() {
    let lines = Lines::default();
    let w = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .finish();
    // With a single live dispatcher, tracing caches a call site's interest from whichever
    // thread reaches it first; a parallel test logging the same warning with no subscriber
    // would silence it here. A second live dispatcher makes the cache ask every one of them.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());
    let _guard = tracing::subscriber::set_default(subscriber);
    let rx = receiver(&[(403, None)]).await;
    // A port nothing listens on: connections are refused.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let gone = format!("http://{closed}/hook/T0/SECRETPATH");
    let mut s = start(&[("ops", &rx.url, ""), ("gone", &gone, "")], |t| {
        t.attempts = 2
    });
    s.notifier.send(event(NotifyKind::RequestCreated));
    next(&mut s.reports).await;
    next(&mut s.reports).await;
    let text = String::from_utf8(lines.0.lock().expect("lock").clone()).expect("utf-8");
    let failures: Vec<&str> = text.lines().filter(|l| l.contains("failed")).collect();
    assert_eq!(failures.len(), 2, "{text}");
    let line = |name: &str| {
        failures
            .iter()
            .find(|l| l.contains(&format!("webhook={name} ")))
            .unwrap_or_else(|| panic!("no line for {name}: {text}"))
    };
    for part in [
        "WARN",
        "event=\"request.created\"",
        "request_id=R-7",
        "attempts=1",
        "error=HTTP 403",
    ] {
        assert!(line("ops").contains(part), "{text} lacks {part}");
    }
    for part in [
        "attempts=2",
        "error sending request",
        "gave up after 2 attempts",
    ] {
        assert!(line("gone").contains(part), "{text} lacks {part}");
    }
    for secret in [SECRET, "SECRETPATH", "hotfix"] {
        assert!(!text.contains(secret), "{text} shows {secret}");
    }
}

#[test]
fn a_disabled_notifier_sends_nothing_and_starting_needs_a_runtime() {
    Notifier::disabled().send(event(NotifyKind::RequestCreated));
    let empty = Notifier::start(&NotifyConfig::default(), WebhookMetrics::default());
    assert!(format!("{:?}", empty.expect("no webhooks: disabled")) == "[]");
    let webhooks = webhook::load(
        &config(&[("ops", "https://hooks.example.com/x", "")]),
        |_| Some(SECRET.into()),
    )
    .expect("webhooks");
    assert!(matches!(
        Notifier::spawn(webhooks, WebhookMetrics::default(), Tuning::default()),
        Err(NotifyError::NoRuntime)
    ));
}
