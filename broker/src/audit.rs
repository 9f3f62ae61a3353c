//! Audit events: who, why, when, what — for every grant, denial, access and revocation.
//!
//! Events never carry a token, only its `jti`. The schema is versioned (`v`); the field set
//! is documented in docs/audit.md.

use serde::{Deserialize, Serialize};

/// Current version of the audit event schema.
pub const SCHEMA_VERSION: u32 = 1;

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Schema version.
    pub v: u32,
    /// The store's id for the event (a Redis stream id, or a sequence number); set on read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// When it happened, milliseconds since the epoch.
    pub ts: i64,
    /// What happened: `grant.issued`, `grant.denied`, `access.allowed`, `access.denied`,
    /// `grant.revoked`, `admin.*`.
    pub event: String,
    /// The identity that acted (verified subject), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The trusted issuer's name that vouched for the subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    /// The repository concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The scope asked for or used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The role under which it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The token's id — the only way a token ever appears here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The requester's reason, or the admin's reason for a revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why a request was denied, as told to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial: Option<String>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The client's user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Event-specific details (deciding claims, ref updates, lifetimes, counts).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl AuditEvent {
    /// An event of kind `event` at `ts` (ms); fill the rest with the builder methods.
    pub fn new(event: impl Into<String>, ts: i64) -> Self {
        Self {
            v: SCHEMA_VERSION,
            id: None,
            ts,
            event: event.into(),
            subject: None,
            idp: None,
            repo: None,
            scope: None,
            role: None,
            jti: None,
            reason: None,
            denial: None,
            client: None,
            user_agent: None,
            data: serde_json::Map::new(),
        }
    }

    /// Adds an event-specific detail.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.data.insert(key.to_owned(), value.into());
        self
    }
}

/// Which events to read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Earliest event time, inclusive (ms).
    pub from_ms: Option<i64>,
    /// Latest event time, inclusive (ms).
    pub to_ms: Option<i64>,
    /// Only this event kind (exact) or kind prefix ending in `.` (e.g. `grant.`).
    pub event: Option<String>,
    /// Only this subject.
    pub subject: Option<String>,
    /// Only this repository.
    pub repo: Option<String>,
    /// At most this many events (oldest first).
    pub limit: usize,
}

impl AuditQuery {
    /// Whether `e` passes the field filters (the time range is the store's job).
    pub fn matches(&self, e: &AuditEvent) -> bool {
        let event_ok = match &self.event {
            None => true,
            Some(k) if k.ends_with('.') => e.event.starts_with(k.as_str()),
            Some(k) => &e.event == k,
        };
        event_ok
            && self
                .subject
                .as_ref()
                .is_none_or(|s| e.subject.as_ref() == Some(s))
            && self
                .repo
                .as_ref()
                .is_none_or(|r| e.repo.as_ref() == Some(r))
    }
}

/// Records audit events: into the store (the durable trail) and the structured log.
///
/// A failure to record is returned to the caller, who must then refuse what it was about to
/// allow: there is never an unaudited grant or access.
#[derive(Clone)]
pub struct Auditor {
    store: std::sync::Arc<dyn crate::store::GrantStore>,
}

impl Auditor {
    /// An auditor writing to `store`.
    pub fn new(store: std::sync::Arc<dyn crate::store::GrantStore>) -> Self {
        Self { store }
    }

    /// Records one event.
    pub async fn record(&self, event: AuditEvent) -> Result<(), crate::store::StoreError> {
        let result = self.store.append_audit(&event).await;
        match &result {
            Ok(()) => tracing::info!(
                target: "audit",
                event = %event.event,
                subject = event.subject.as_deref(),
                repo = event.repo.as_deref(),
                jti = event.jti.as_deref(),
                denial = event.denial.as_deref(),
                "audit"
            ),
            Err(e) => {
                tracing::error!(target: "audit", event = %event.event, error = %e, "audit event not recorded")
            }
        }
        result
    }
}
