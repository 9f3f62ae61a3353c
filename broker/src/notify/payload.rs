//! The wire format of a notification: the body (the event as JSON, or a Slack `text`
//! message), and its signature, `X-Jit-Signature-256: sha256=<hex HMAC-SHA256(key,
//! timestamp "." body)>`, the scheme docs/notifications.md documents for receivers.

use jit_proto::Scope;
use ring::hmac;
use serde::Serialize;

use super::event::{NotifyEvent, NotifyKind};
use crate::config::WebhookFormat;

/// The version of the JSON payload (its `v` field).
pub const PAYLOAD_VERSION: u8 = 1;

/// Header naming the event kind.
pub const EVENT_HEADER: &str = "x-jit-event";
/// Header with the delivery's id, the same on every attempt.
pub const DELIVERY_HEADER: &str = "x-jit-delivery";
/// Header with the attempt's time, in seconds since the Unix epoch; it is signed.
pub const TIMESTAMP_HEADER: &str = "x-jit-timestamp";
/// Header with the signature of the timestamp and the body.
pub const SIGNATURE_HEADER: &str = "x-jit-signature-256";

/// Longest reason quoted in a Slack message, in characters; the JSON payload has it whole.
const SLACK_REASON_CHARS: usize = 300;
/// Ref patterns listed in a Slack message before "and N more".
const SLACK_REFS: usize = 5;

#[derive(Serialize)]
struct Versioned<'a> {
    v: u8,
    #[serde(flatten)]
    event: &'a NotifyEvent,
}

#[derive(Serialize)]
struct SlackMessage {
    text: String,
}

/// The body of `event` in `format`.
pub fn body(format: WebhookFormat, event: &NotifyEvent) -> Result<Vec<u8>, serde_json::Error> {
    match format {
        WebhookFormat::Json => serde_json::to_vec(&Versioned {
            v: PAYLOAD_VERSION,
            event,
        }),
        WebhookFormat::Slack => serde_json::to_vec(&SlackMessage {
            text: slack_text(event),
        }),
    }
}

/// `sha256=<hex>`: HMAC-SHA256 under `key` of the decimal `timestamp`, a `.`, and `body`.
pub fn signature(key: &hmac::Key, timestamp: i64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", hex::encode(ctx.sign().as_ref()))
}

/// `s` safe inside Slack `text`: `&`, `<` and `>` escaped (so no link, mention or
/// `<!channel>` can be smuggled in), control characters (line breaks) as spaces, so user
/// text cannot start a line of its own that looks like the broker's.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The first `n` characters of `s`, with `…` when cut.
fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// `write on acme/api (refs/heads/main)`, escaped.
fn access(e: &NotifyEvent) -> String {
    let actions = match Scope::parse(&e.scope) {
        Ok(scope) => scope
            .actions
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(" and "),
        Err(_) => e.scope.clone(),
    };
    let mut out = format!("{} on {}", esc(&actions), esc(&e.repo));
    if !e.refs.is_empty() {
        let shown: Vec<String> = e.refs.iter().take(SLACK_REFS).map(|r| esc(r)).collect();
        out.push_str(&format!(" ({}", shown.join(", ")));
        if e.refs.len() > SLACK_REFS {
            out.push_str(&format!(" and {} more", e.refs.len() - SLACK_REFS));
        }
        out.push(')');
    }
    out
}

/// `: "reason"`, or nothing.
fn quoted(reason: Option<&String>) -> String {
    reason.map_or_else(String::new, |r| {
        format!(": \"{}\"", esc(&clip(r, SLACK_REASON_CHARS)))
    })
}

fn plural(n: u8, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The Slack message of `event`: one line saying what happened, a second with the broker's
/// URL when someone should act (a new request, a break-glass use). Every value from the
/// event is escaped.
pub fn slack_text(e: &NotifyEvent) -> String {
    let who = format!("{} ({})", esc(&e.requester), esc(&e.requester_idp));
    let what = access(e);
    let role = esc(&e.role);
    let id = esc(&e.request_id);
    let decider = e
        .decided_by
        .as_deref()
        .map_or_else(|| "someone".to_owned(), esc);
    let urgent = e.urgent || e.kind == NotifyKind::BreakGlass;
    let mark = if urgent {
        ":rotating_light: BREAK-GLASS"
    } else {
        match e.kind {
            NotifyKind::RequestCreated => ":lock:",
            NotifyKind::RequestApproved => ":white_check_mark:",
            NotifyKind::RequestDenied => ":no_entry:",
            NotifyKind::RequestCancelled => ":heavy_multiplication_x:",
            NotifyKind::RequestExpired | NotifyKind::BreakGlass => ":hourglass:",
        }
    };
    let line = match e.kind {
        NotifyKind::RequestCreated => {
            let approvers = if e.approvers.is_empty() {
                "an approver".to_owned()
            } else {
                esc(&e.approvers.join(", "))
            };
            format!(
                "{who} requests {what} for {} min under {role}{} — request {id}, needs {} from {approvers}",
                e.ttl_minutes,
                quoted(e.reason.as_ref()),
                plural(e.required, "approval"),
            )
        }
        NotifyKind::BreakGlass => format!(
            "{who} took {what} for {} min under {role}{} — request {id}, self-approved; review it now",
            e.ttl_minutes,
            quoted(e.reason.as_ref()),
        ),
        NotifyKind::RequestApproved => format!(
            "{decider} approved {who}'s request {id}: {what} for {} min under {role} ({} of {}){}",
            e.ttl_minutes,
            e.approvals,
            plural(e.required, "approval"),
            quoted(e.decision_reason.as_ref()),
        ),
        NotifyKind::RequestDenied => format!(
            "{decider} denied {who}'s request {id}: {what} under {role}{}",
            quoted(e.decision_reason.as_ref()),
        ),
        NotifyKind::RequestCancelled => format!(
            "{who}'s request {id} for {what} under {role} was cancelled by {decider}{}",
            quoted(e.decision_reason.as_ref()),
        ),
        NotifyKind::RequestExpired => format!(
            "{who}'s request {id} for {what} under {role} expired undecided ({} of {})",
            e.approvals,
            plural(e.required, "approval"),
        ),
    };
    let mut text = format!("{mark} {line}");
    if matches!(e.kind, NotifyKind::RequestCreated | NotifyKind::BreakGlass) {
        text.push('\n');
        text.push_str(&esc(&e.broker));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: NotifyKind) -> NotifyEvent {
        NotifyEvent {
            kind,
            request_id: "R1".into(),
            requester: "alice".into(),
            requester_idp: "corp".into(),
            role: "prod-push".into(),
            scope: "repo:acme/api:write".into(),
            repo: "acme/api".into(),
            refs: vec!["refs/heads/main".into()],
            ttl_minutes: 30,
            reason: Some("hotfix INC-42".into()),
            approvers: vec!["bob (corp)".into()],
            approvals: 0,
            required: 1,
            decided_by: None,
            decision_reason: None,
            urgent: false,
            at: 1_700_000_000,
            broker: "https://jit.example.com".into(),
        }
    }

    #[test]
    fn created_reads_as_one_sentence() {
        assert_eq!(
            slack_text(&event(NotifyKind::RequestCreated)),
            ":lock: alice (corp) requests write on acme/api (refs/heads/main) for 30 min under \
             prod-push: \"hotfix INC-42\" — request R1, needs 1 approval from bob (corp)\n\
             https://jit.example.com"
        );
    }

    #[test]
    fn break_glass_is_marked_urgent() {
        let mut e = event(NotifyKind::BreakGlass);
        e.urgent = true;
        let text = slack_text(&e);
        assert!(
            text.starts_with(":rotating_light: BREAK-GLASS alice (corp) took write"),
            "{text}"
        );
        let mut created = event(NotifyKind::RequestCreated);
        created.urgent = true;
        assert!(slack_text(&created).starts_with(":rotating_light: BREAK-GLASS "));
    }

    #[test]
    fn decisions_name_the_decider() {
        let mut e = event(NotifyKind::RequestDenied);
        e.decided_by = Some("bob".into());
        e.decision_reason = Some("not during the freeze".into());
        assert_eq!(
            slack_text(&e),
            ":no_entry: bob denied alice (corp)'s request R1: write on acme/api \
             (refs/heads/main) under prod-push: \"not during the freeze\""
        );
        e.kind = NotifyKind::RequestApproved;
        e.approvals = 1;
        e.required = 2;
        e.decision_reason = None;
        assert!(slack_text(&e).contains("bob approved alice (corp)'s request R1"));
        assert!(slack_text(&e).contains("(1 of 2 approvals)"));
        e.kind = NotifyKind::RequestExpired;
        assert!(slack_text(&e).contains("expired undecided (1 of 2 approvals)"));
        e.kind = NotifyKind::RequestCancelled;
        e.decided_by = Some("alice".into());
        assert!(slack_text(&e).contains("was cancelled by alice"));
    }

    #[test]
    fn user_text_cannot_inject_markup_or_lines() {
        let mut e = event(NotifyKind::RequestCreated);
        e.reason = Some("<!channel> a&b <https://evil|click>\n:white_check_mark: approved".into());
        e.requester = "<@U123>".into();
        let text = slack_text(&e);
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        assert!(text.contains("&lt;!channel&gt; a&amp;b &lt;https://evil|click&gt;"));
        assert!(text.contains("&lt;@U123&gt; (corp)"));
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn long_reasons_and_ref_lists_are_shortened() {
        let mut e = event(NotifyKind::RequestCreated);
        e.reason = Some("é".repeat(SLACK_REASON_CHARS + 10));
        e.refs = (0..8).map(|i| format!("refs/heads/r{i}")).collect();
        let text = slack_text(&e);
        assert!(text.contains(&format!("\"{}…\"", "é".repeat(SLACK_REASON_CHARS))));
        assert!(text.contains("refs/heads/r4 and 3 more)"), "{text}");
        assert!(!text.contains("refs/heads/r5"));
    }

    #[test]
    fn signature_covers_timestamp_and_body() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"It's a Secret to Everybody");
        let sig = signature(&key, 1_700_000_000, b"Hello, World!");
        let expected = hmac::sign(&key, b"1700000000.Hello, World!");
        assert_eq!(sig, format!("sha256={}", hex::encode(expected.as_ref())));
        assert_ne!(sig, signature(&key, 1_700_000_001, b"Hello, World!"));
        assert_ne!(sig, signature(&key, 1_700_000_000, b"Hello, World?"));
    }

    #[test]
    fn json_body_is_the_event_with_a_version() {
        let e = event(NotifyKind::RequestCreated);
        let body: serde_json::Value =
            serde_json::from_slice(&body(WebhookFormat::Json, &e).expect("json")).expect("parse");
        assert_eq!(body["v"], 1);
        assert_eq!(body["event"], "request.created");
        assert_eq!(body["scope"], "repo:acme/api:write");
        let slack: serde_json::Value =
            serde_json::from_slice(&body_of(WebhookFormat::Slack, &e)).expect("parse");
        assert_eq!(slack.as_object().map(|o| o.len()), Some(1));
        assert_eq!(slack["text"], slack_text(&e));
    }

    fn body_of(format: WebhookFormat, e: &NotifyEvent) -> Vec<u8> {
        body(format, e).expect("serialise")
    }
}
