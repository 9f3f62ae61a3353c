//! Delivery: one task per webhook takes events off that webhook's bounded queue and POSTs
//! them, a few at a time, so a dead or slow receiver holds up only its own queue. Network
//! errors, 5xx and 429 are retried with exponential backoff and full jitter, or after the
//! receiver's `Retry-After`, within a bounded number of attempts and time; any other answer
//! is final. A failed delivery is a metric and one log line naming the webhook, the event and
//! the error — never the URL, the key or the body.

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use super::event::NotifyEvent;
use super::payload::{self, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::webhook::Webhook;
use crate::clock::{Clock, SystemClock};
use crate::metrics::{WebhookMetrics, WebhookOutcome};

/// How deliveries queue, overlap and retry. The defaults are production's; tests shorten
/// the waits.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    /// Events waiting per webhook; past it, [`super::Notifier::send`] drops them.
    pub queue: usize,
    /// Deliveries in flight at once per webhook.
    pub in_flight: usize,
    /// Attempts per delivery, the first included.
    pub attempts: u32,
    /// The first backoff's ceiling; each retry doubles it up to `backoff_cap`.
    pub backoff_base: Duration,
    /// The longest backoff ceiling.
    pub backoff_cap: Duration,
    /// The most a delivery waits between attempts in all; a `Retry-After` that would pass
    /// it ends the delivery as failed.
    pub window: Duration,
    /// Where each delivery's final outcome is reported, besides the metrics (tests).
    pub report: Option<mpsc::UnboundedSender<Report>>,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            queue: 1024,
            in_flight: 4,
            attempts: 6,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(16),
            window: Duration::from_secs(60),
            report: None,
        }
    }
}

/// The final outcome of one event at one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// The webhook's name.
    pub webhook: Arc<str>,
    /// The request the event was about.
    pub request_id: String,
    /// Delivered or failed.
    pub outcome: WebhookOutcome,
    /// HTTP requests made.
    pub attempts: u32,
}

/// Sends what arrives on `queue` to `webhook` until every sender is gone, then finishes the
/// deliveries in flight.
pub(crate) async fn run(
    webhook: Arc<Webhook>,
    mut queue: mpsc::Receiver<Arc<NotifyEvent>>,
    metrics: WebhookMetrics,
    tuning: Arc<Tuning>,
) {
    let slots = Arc::new(Semaphore::new(tuning.in_flight.max(1)));
    let mut running = JoinSet::new();
    while let Some(event) = queue.recv().await {
        // The queue bounds what waits, the slots what is sent at once.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        while running.try_join_next().is_some() {}
        let (webhook, metrics, tuning) =
            (Arc::clone(&webhook), metrics.clone(), Arc::clone(&tuning));
        running.spawn(async move {
            deliver(&webhook, &event, &metrics, &tuning).await;
            drop(slot);
        });
    }
    while running.join_next().await.is_some() {}
}

/// What one HTTP request came to.
enum Attempt {
    /// 2xx.
    Delivered,
    /// Worth another try (network error, 5xx, 429), perhaps after the receiver's wait.
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// Final (any other status).
    Refused(String),
}

/// Delivers `event` to `webhook`, retrying as [`Tuning`] says; counts, logs and reports the
/// outcome.
async fn deliver(
    webhook: &Webhook,
    event: &NotifyEvent,
    metrics: &WebhookMetrics,
    tuning: &Tuning,
) {
    let kind = event.kind.as_str();
    let (outcome, attempts) = match send_with_retries(webhook, event, metrics, tuning).await {
        Ok(attempts) => {
            tracing::debug!(webhook = %webhook.name, event = kind, request_id = %event.request_id, attempts, "webhook delivered");
            (WebhookOutcome::Delivered, attempts)
        }
        Err((failure, attempts)) => {
            tracing::warn!(webhook = %webhook.name, event = kind, request_id = %event.request_id, attempts, error = %failure, "webhook delivery failed");
            (WebhookOutcome::Failed, attempts)
        }
    };
    metrics.delivery(&webhook.name, outcome);
    if let Some(tx) = &tuning.report {
        let _ = tx.send(Report {
            webhook: Arc::clone(&webhook.name),
            request_id: event.request_id.clone(),
            outcome,
            attempts,
        });
    }
}

/// POSTs `event` until it is delivered (the attempts made) or given up (why, and the
/// attempts made).
async fn send_with_retries(
    webhook: &Webhook,
    event: &NotifyEvent,
    metrics: &WebhookMetrics,
    tuning: &Tuning,
) -> Result<u32, (String, u32)> {
    let body = payload::body(webhook.format, event)
        .map(Bytes::from)
        .map_err(|e| (format!("cannot serialise the event: {e}"), 0))?;
    let delivery = delivery_id();
    let mut waited = Duration::ZERO;
    let mut attempts = 0;
    loop {
        attempts += 1;
        metrics.attempt(&webhook.name);
        let (why, after) = match attempt(webhook, &body, &delivery, event.kind.as_str()).await {
            Attempt::Delivered => return Ok(attempts),
            Attempt::Refused(why) => return Err((why, attempts)),
            Attempt::Retry { why, after } => (why, after),
        };
        if attempts >= tuning.attempts {
            return Err((
                format!("{why} (gave up after {attempts} attempts)"),
                attempts,
            ));
        }
        let delay = after.unwrap_or_else(|| backoff(tuning, attempts));
        if waited + delay > tuning.window {
            return Err((
                format!(
                    "{why} (gave up: waiting {}s more would pass the {}s retry window)",
                    delay.as_secs(),
                    tuning.window.as_secs()
                ),
                attempts,
            ));
        }
        waited += delay;
        tokio::time::sleep(delay).await;
    }
}

/// One signed POST of `body`.
async fn attempt(webhook: &Webhook, body: &Bytes, delivery: &str, kind: &'static str) -> Attempt {
    let now = SystemClock.now();
    let sent = webhook
        .client
        .post(webhook.url.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, kind)
        .header(DELIVERY_HEADER, delivery)
        .header(TIMESTAMP_HEADER, now.to_string())
        .header(
            SIGNATURE_HEADER,
            payload::signature(&webhook.key, now, body),
        )
        .body(body.clone())
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            return Attempt::Retry {
                why: describe(e),
                after: None,
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        Attempt::Delivered
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Attempt::Retry {
            why: format!("HTTP {}", status.as_u16()),
            after: response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| retry_after(v, now)),
        }
    } else if status.is_redirection() {
        Attempt::Refused(format!(
            "HTTP {}: redirects are not followed",
            status.as_u16()
        ))
    } else {
        Attempt::Refused(format!("HTTP {}", status.as_u16()))
    }
}

/// A network error and its causes, without the URL (it may hold a credential).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut cause = e.source();
    // A few levels say enough (`client error (Connect)`, `tcp connect error`, the OS error).
    for _ in 0..4 {
        let Some(c) = cause else { break };
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// `Retry-After` as a wait from `now`: delay-seconds, or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(value: &HeaderValue, now: i64) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822)
        .ok()?
        .unix_timestamp();
    Some(Duration::from_secs(u64::try_from(at - now).unwrap_or(0)))
}

/// Full jitter: a random wait up to `base * 2^(attempt - 1)`, at most `cap`.
fn backoff(tuning: &Tuning, attempt: u32) -> Duration {
    let ceiling = tuning
        .backoff_base
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(tuning.backoff_cap);
    let mut bytes = [0u8; 8];
    // Should the system generator fail, the wait is the ceiling: still a backoff.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return ceiling;
    }
    let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(u64::from_le_bytes(bytes) % ceiling_ms.saturating_add(1))
}

/// A random id in the UUID v4 layout, the same across a delivery's attempts.
fn delivery_id() -> String {
    let mut b = [0u8; 16];
    // A failed generator leaves zeros: ids would repeat, which only costs receivers their
    // de-duplication; the signature does not depend on it.
    let _ = SystemRandom::new().fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = 1_445_412_480; // Wed, 21 Oct 2015 07:28:00 GMT
        let v = |s: &str| HeaderValue::from_str(s).expect("header");
        assert_eq!(retry_after(&v("120"), now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(&v(" 0 "), now), Some(Duration::ZERO));
        assert_eq!(
            retry_after(&v("Wed, 21 Oct 2015 07:29:00 GMT"), now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_after(&v("Wed, 21 Oct 2015 07:27:00 GMT"), now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(retry_after(&v("soon"), now), None);
        assert_eq!(retry_after(&v("-5"), now), None);
    }

    #[test]
    fn backoff_grows_within_its_ceiling() {
        let t = Tuning::default();
        for attempt in 1..=10 {
            let ceiling = Duration::from_secs(1 << (attempt - 1)).min(t.backoff_cap);
            for _ in 0..50 {
                assert!(backoff(&t, attempt) <= ceiling, "attempt {attempt}");
            }
        }
        // Full jitter: not always the ceiling.
        assert!((0..50).any(|_| backoff(&t, 5) < Duration::from_secs(16)));
        // The default schedule waits at most 1+2+4+8+16 s: inside the retry window.
        let worst: Duration = (1..t.attempts)
            .map(|a| Duration::from_secs(1 << (a - 1)).min(t.backoff_cap))
            .sum();
        assert!(worst <= t.window, "{worst:?}");
    }

    #[test]
    fn delivery_ids_are_uuid_shaped_and_fresh() {
        let (a, b) = (delivery_id(), delivery_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert_eq!(
            a.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
    }
}
