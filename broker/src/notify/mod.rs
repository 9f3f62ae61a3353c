//! Approval notifications: on each new request and each decision, a JSON event POSTed to the
//! configured webhooks (`[[notify.webhook]]`), signed with HMAC-SHA256, retried with backoff
//! in the background. [`Notifier::send`] never blocks and never fails, so the request path
//! never waits on a receiver; an event that cannot be delivered is a metric and a log line.
//! Events carry the facts of a request, never a token or secret. Receivers: see
//! docs/notifications.md.
//!
//! - [`event`]: what is sent; [`payload`]: the bodies (JSON, Slack) and the signature;
//! - [`webhook`]: a configured webhook with its key and client;
//! - `delivery`: the per-webhook tasks, retries and backoff.

use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::config::{KeyProblem, NotifyConfig};
use crate::metrics::{WebhookMetrics, WebhookOutcome};

mod delivery;
pub mod event;
pub mod payload;
pub mod webhook;

#[cfg(test)]
mod tests;

pub use event::{NotifyEvent, NotifyKind};
pub use webhook::Webhook;

use delivery::Tuning;

/// Why notifications could not be started.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A webhook's configuration or signing secret is not acceptable (the key is named).
    #[error(transparent)]
    Invalid(#[from] KeyProblem),
    /// A webhook's HTTP client could not be built.
    #[error("notify.webhook[{index}]: cannot build the HTTP client: {source}")]
    Client {
        /// The entry.
        index: usize,
        /// The cause.
        source: reqwest::Error,
    },
    /// Started outside a tokio runtime, where no background task can run.
    #[error("notifications must be started inside the tokio runtime")]
    NoRuntime,
}

/// One webhook's end of the pipe: its filter and its queue.
struct Sink {
    webhook: Arc<Webhook>,
    queue: mpsc::Sender<Arc<NotifyEvent>>,
}

struct Inner {
    sinks: Vec<Sink>,
    metrics: WebhookMetrics,
}

/// Sends events to the configured webhooks in the background. Clones share the queues; the
/// background tasks end (after the deliveries in flight) once every clone is dropped.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.inner.sinks.iter().map(|s| s.webhook.name()))
            .finish()
    }
}

impl Notifier {
    /// A notifier that sends nothing (no webhooks configured).
    pub fn disabled() -> Self {
        Self {
            inner: Arc::new(Inner {
                sinks: Vec::new(),
                metrics: WebhookMetrics::default(),
            }),
        }
    }

    /// Starts the background sender (a tokio task per webhook) for `config`, reading the
    /// signing secrets from the process environment or their files; must be called inside
    /// a tokio runtime. With no webhook configured, the same as [`Notifier::disabled`].
    pub fn start(config: &NotifyConfig, metrics: WebhookMetrics) -> Result<Self, NotifyError> {
        let webhooks = webhook::load(config, |var| std::env::var(var).ok())?;
        Self::spawn(webhooks, metrics, Tuning::default())
    }

    /// Starts the background sender for webhooks already loaded ([`webhook::load`], as
    /// `check-config` does); must be called inside a tokio runtime.
    pub fn start_loaded(
        webhooks: Vec<Webhook>,
        metrics: WebhookMetrics,
    ) -> Result<Self, NotifyError> {
        Self::spawn(webhooks, metrics, Tuning::default())
    }

    fn spawn(
        webhooks: Vec<Webhook>,
        metrics: WebhookMetrics,
        tuning: Tuning,
    ) -> Result<Self, NotifyError> {
        if webhooks.is_empty() {
            return Ok(Self::disabled());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NotifyError::NoRuntime)?;
        let tuning = Arc::new(tuning);
        let sinks = webhooks
            .into_iter()
            .map(|w| {
                let webhook = Arc::new(w);
                let (queue, rx) = mpsc::channel(tuning.queue.max(1));
                runtime.spawn(delivery::run(
                    Arc::clone(&webhook),
                    rx,
                    metrics.clone(),
                    Arc::clone(&tuning),
                ));
                Sink { webhook, queue }
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner { sinks, metrics }),
        })
    }

    /// Queues `event` for every webhook that wants its kind; never blocks, never fails: a
    /// full queue drops the event, counted and logged.
    pub fn send(&self, event: NotifyEvent) {
        let kind = event.kind;
        let wanted = |s: &&Sink| s.webhook.wants(kind);
        if !self.inner.sinks.iter().any(|s| wanted(&s)) {
            return;
        }
        let event = Arc::new(event);
        for sink in self.inner.sinks.iter().filter(wanted) {
            let why = match sink.queue.try_send(Arc::clone(&event)) {
                Ok(()) => continue,
                Err(TrySendError::Full(_)) => "its queue is full",
                Err(TrySendError::Closed(_)) => "its delivery task has stopped",
            };
            let name = sink.webhook.name();
            self.inner.metrics.delivery(name, WebhookOutcome::Dropped);
            tracing::warn!(webhook = name, event = kind.as_str(), request_id = %event.request_id, "webhook event dropped: {why}");
        }
    }
}
