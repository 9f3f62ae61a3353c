//! The notification event: the facts of one approval request at one moment (created,
//! decided, expired), as every webhook payload carries them. It holds no token and no secret:
//! a request has none until it is approved, and the grant it leads to is the requester's.

use serde::Serialize;

/// What happened (serialised as "request.created", "request.approved", "request.denied",
/// "request.cancelled", "request.expired", "request.break_glass").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum NotifyKind {
    /// A request was made and awaits approval.
    #[serde(rename = "request.created")]
    RequestCreated,
    /// An approver approved a request (it may need more approvals).
    #[serde(rename = "request.approved")]
    RequestApproved,
    /// An approver denied a request.
    #[serde(rename = "request.denied")]
    RequestDenied,
    /// The requester (or an admin) withdrew a request.
    #[serde(rename = "request.cancelled")]
    RequestCancelled,
    /// A request was not decided in time.
    #[serde(rename = "request.expired")]
    RequestExpired,
    /// A break-glass role was used: approved by the requester at once, to be reviewed.
    #[serde(rename = "request.break_glass")]
    BreakGlass,
}

impl NotifyKind {
    /// Every kind, in the order of [`crate::config::EVENT_NAMES`].
    pub const ALL: [Self; 6] = [
        Self::RequestCreated,
        Self::RequestApproved,
        Self::RequestDenied,
        Self::RequestCancelled,
        Self::RequestExpired,
        Self::BreakGlass,
    ];

    /// The name, as in `X-Jit-Event`, the JSON payload and the config's `events` filter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestCreated => "request.created",
            Self::RequestApproved => "request.approved",
            Self::RequestDenied => "request.denied",
            Self::RequestCancelled => "request.cancelled",
            Self::RequestExpired => "request.expired",
            Self::BreakGlass => "request.break_glass",
        }
    }
}

/// One notification: facts of an approval request, never a token or secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotifyEvent {
    /// What happened.
    #[serde(rename = "event")]
    pub kind: NotifyKind,
    /// The approval request's id.
    pub request_id: String,
    /// The requester's subject.
    pub requester: String,
    /// The name of the requester's issuer (`[[issuer]]` name).
    pub requester_idp: String,
    /// The role asked for.
    pub role: String,
    /// The scope asked for (`repo:acme/api:write`).
    pub scope: String,
    /// The repository.
    pub repo: String,
    /// The ref patterns a write is limited to; empty: any.
    pub refs: Vec<String>,
    /// The lifetime asked for, in minutes.
    pub ttl_minutes: u32,
    /// The requester's reason.
    pub reason: Option<String>,
    /// Who may approve, human-readable (`bob@corp (corp)`, `groups contains sre (corp)`).
    pub approvers: Vec<String>,
    /// Approvals so far.
    pub approvals: u8,
    /// Approvals needed.
    pub required: u8,
    /// The subject of whoever approved, denied or cancelled.
    pub decided_by: Option<String>,
    /// The reason given with that decision.
    pub decision_reason: Option<String>,
    /// Break-glass: self-approved at once, to be reviewed now.
    pub urgent: bool,
    /// When it happened, in seconds since the Unix epoch.
    pub at: i64,
    /// The broker's public URL, so a receiver can link to it.
    pub broker: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_config_filter_and_serde() {
        let names: Vec<&str> = NotifyKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, crate::config::EVENT_NAMES);
        for kind in NotifyKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).expect("json"),
                serde_json::Value::from(kind.as_str())
            );
        }
    }
}
