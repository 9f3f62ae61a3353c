//! Waiting for a person's approval, for `git jit request`: poll the token endpoint with the
//! request's id as RFC 8628 says — every `interval` seconds, 5 s more after each
//! `slow_down` — with a fresh identity each time, showing progress, until the token comes,
//! the request ends (denied, cancelled, expired), or Ctrl-C withdraws it. The wait takes
//! its cancellation as a future and its pace as a parameter, so tests drive both.

use std::future::Future;
use std::io::Write;

use jit_proto::Scope;
use jit_proto::approval::{PendingDetails, RequestId};
use jit_proto::display::clean;
use jit_proto::exchange::ApprovalAsk;

use super::CliError;
use crate::admin::CredentialSource;
use crate::approvals::{ApprovalClient, Verdict};
use crate::broker::{BrokerError, Extras};
use crate::credential::{Exchanger, HelperError, Obtained};
use crate::identity::Source;
use crate::login::Pacing;

/// RFC 8628 §3.2: the interval when the broker names none (seconds).
pub const DEFAULT_INTERVAL: u64 = 5;
/// RFC 8628 §3.5: what each `slow_down` adds to the interval (seconds).
pub const SLOW_DOWN_STEP: u64 = 5;
/// The longest interval honoured: a broker's larger value would leave a person waiting
/// long after the approval (seconds).
pub const MAX_INTERVAL: u64 = 600;
/// How long past the request's deadline the wait goes on before giving up locally, in case
/// the broker never says `expired_token` (seconds).
pub const DEADLINE_GRACE: i64 = 60;
/// Without a change, a plain (non-terminal) progress line at most this often (seconds).
pub const PLAIN_EVERY: i64 = 60;
/// The reason a withdrawal by Ctrl-C records.
pub const CANCEL_REASON: &str = "cancelled by the requester";

/// Where the wait's words go and how long its seconds are.
pub struct WaitIo<'w> {
    /// Progress and notes (stderr).
    pub err: &'w mut dyn Write,
    /// Whether `err` is a terminal: a redrawn progress line, else plain lines on change.
    pub tty: bool,
    /// One second's length and the clock.
    pub pacing: Pacing,
}

/// A poll: the same exchange as the filing, with the request's id.
pub struct Poll<'a> {
    /// The broker, ready.
    pub ex: &'a Exchanger<'a>,
    /// The scope asked for.
    pub scope: &'a Scope,
    /// Refs, role, reason, lifetime, as filed.
    pub extras: Extras<'a>,
    /// The request.
    pub id: &'a RequestId,
}

/// The interval after an answer: the broker's, or the current one; after `slow_down` at
/// least 5 s more than before. Never 0 (a busy loop), never past [`MAX_INTERVAL`].
pub fn next_interval(current: u64, answer: &PendingDetails, slow_down: bool) -> u64 {
    let asked = answer.interval.unwrap_or(current);
    let next = if slow_down {
        asked.max(current.saturating_add(SLOW_DOWN_STEP))
    } else {
        asked
    };
    next.clamp(1, MAX_INTERVAL)
}

/// `1 approval` / `2 approvals`.
fn approvals(n: u8) -> String {
    if n == 1 {
        "1 approval".into()
    } else {
        format!("{n} approvals")
    }
}

/// `45 s`, `30 min`, `2 h 05 min`.
pub fn span(secs: i64) -> String {
    match secs {
        ..60 => format!("{} s", secs.max(0)),
        60..7200 => format!("{} min", secs / 60),
        _ => format!("{} h {:02} min", secs / 3600, secs % 3600 / 60),
    }
}

/// The two lines that say a request was filed: its id and role, who may approve, how long
/// it may wait.
pub fn announcement(id: &RequestId, d: &PendingDetails) -> String {
    let needed = d
        .required
        .unwrap_or(1)
        .saturating_sub(d.approvals.unwrap_or(0));
    let role = d.role.as_deref().map(clean).unwrap_or_default();
    let who = d
        .approvers
        .iter()
        .map(|a| clean(a).into_owned())
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!("approval needed: request {id} filed under role {role}; ");
    if who.is_empty() {
        s.push_str(&format!("{} needed", approvals(needed)));
    } else {
        s.push_str(&format!("{} needed from: {who}", approvals(needed)));
    }
    if let Some(e) = d.expires_in {
        s.push_str(&format!("\nexpires in {}", span(e)));
    }
    s
}

/// Where a request stands, as the progress line shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Standing {
    approvals: u8,
    required: u8,
}

impl Standing {
    fn of(d: &PendingDetails, before: Option<Standing>) -> Self {
        Self {
            approvals: d.approvals.or(before.map(|b| b.approvals)).unwrap_or(0),
            required: d.required.or(before.map(|b| b.required)).unwrap_or(1),
        }
    }
}

/// The progress line's text: `waiting for approval … 1m 12s, 0/1 approvals`.
fn progress_text(elapsed: i64, s: Standing) -> String {
    let elapsed = elapsed.max(0);
    let t = if elapsed < 60 {
        format!("{elapsed}s")
    } else if elapsed < 3600 {
        format!("{}m {:02}s", elapsed / 60, elapsed % 60)
    } else {
        format!("{}h {:02}m", elapsed / 3600, elapsed % 3600 / 60)
    };
    format!(
        "waiting for approval … {t}, {}/{} approvals",
        s.approvals, s.required
    )
}

/// The progress display: on a terminal one line redrawn with `\r` and a spinner; otherwise
/// a plain line when the standing changes, or after [`PLAIN_EVERY`] seconds without one.
struct Progress<'w, 'x> {
    io: &'x mut WaitIo<'w>,
    started: i64,
    last: Option<(i64, Standing)>,
    frame: usize,
}

impl<'w, 'x> Progress<'w, 'x> {
    fn new(io: &'x mut WaitIo<'w>) -> Self {
        let started = (io.pacing.clock)();
        Self {
            io,
            started,
            last: None,
            frame: 0,
        }
    }

    fn show(&mut self, s: Standing) {
        let now = (self.io.pacing.clock)();
        let text = progress_text(now - self.started, s);
        // Progress is a courtesy: a closed stderr does not end the wait.
        if self.io.tty {
            const SPIN: [char; 4] = ['|', '/', '-', '\\'];
            self.frame = (self.frame + 1) % SPIN.len();
            let _ = write!(self.io.err, "\r{} {text}\x1b[K", SPIN[self.frame]);
            let _ = self.io.err.flush();
            self.last = Some((now, s));
            return;
        }
        let due = match self.last {
            None => true,
            Some((at, before)) => before != s || now - at >= PLAIN_EVERY,
        };
        if due {
            let _ = writeln!(self.io.err, "{text}");
            self.last = Some((now, s));
        }
    }

    /// Ends a redrawn line so what follows starts on its own.
    fn done(&mut self) {
        if self.io.tty && self.last.is_some() {
            let _ = writeln!(self.io.err);
        }
    }
}

/// How a wait ends when the broker says no more: its words, naming the request.
fn ended(id: &RequestId, e: &BrokerError) -> CliError {
    let said = e.to_string();
    if said.contains(id.as_str()) {
        CliError::Approval(said)
    } else {
        CliError::Approval(format!("request {id}: {said}"))
    }
}

/// The credential source matching an identity (what a 401 should advise).
fn source_of(s: &Source) -> CredentialSource {
    match s {
        Source::EnvVar(v) => CredentialSource::EnvVar(v.clone()),
        _ => CredentialSource::Session,
    }
}

/// An approval client speaking as the requester: the identity the request was filed with.
pub async fn as_requester(ex: &Exchanger<'_>) -> Result<ApprovalClient, CliError> {
    let subject = ex.subject().await?;
    Ok(ApprovalClient::new(
        ex.broker().clone(),
        subject.token,
        source_of(&subject.source),
    ))
}

/// Withdraws the request after Ctrl-C; the error says whether that worked.
async fn withdraw(p: &Poll<'_>) -> CliError {
    let result = match as_requester(p.ex).await {
        Ok(c) => c
            .decide(p.id, Verdict::Cancel, CANCEL_REASON)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    CliError::Cancelled {
        id: p.id.clone(),
        failure: result.err(),
    }
}

/// Waits for the request `p` names, `first` being the broker's answer to its filing:
/// the token once approved (cached like any other), or why not. `cancelled` resolving
/// withdraws the request.
pub async fn wait(
    p: &Poll<'_>,
    first: &PendingDetails,
    io: &mut WaitIo<'_>,
    cancelled: impl Future<Output = ()>,
) -> Result<Obtained, CliError> {
    let tick = io.pacing.tick;
    let clock = io.pacing.clock;
    let deadline = first
        .expires_in
        .map(|e| clock().saturating_add(e).saturating_add(DEADLINE_GRACE));
    let mut interval = next_interval(DEFAULT_INTERVAL, first, false);
    let mut standing = Standing::of(first, None);
    let ask = ApprovalAsk::Poll(p.id.clone());
    let mut progress = Progress::new(io);
    tokio::pin!(cancelled);
    loop {
        // One tick at a time, so the terminal line counts seconds.
        for _ in 0..interval {
            progress.show(standing);
            tokio::select! {
                () = &mut cancelled => {
                    progress.done();
                    return Err(withdraw(p).await);
                }
                () = tokio::time::sleep(tick) => {}
            }
        }
        let extras = Extras {
            approval: Some(&ask),
            ssh_public_key: None,
            ..p.extras
        };
        let answer = tokio::select! {
            () = &mut cancelled => {
                progress.done();
                return Err(withdraw(p).await);
            }
            r = p.ex.obtain(p.scope, extras) => r,
        };
        match answer {
            Ok(got) => {
                progress.done();
                return Ok(got);
            }
            Err(HelperError::Broker(BrokerError::ApprovalPending { details, slow_down })) => {
                interval = next_interval(interval, &details, slow_down);
                standing = Standing::of(&details, Some(standing));
            }
            // Told to come back later by the rate limiter: as a slow_down.
            Err(HelperError::Broker(BrokerError::RateLimited { .. })) => {
                interval = next_interval(interval, &PendingDetails::default(), true);
            }
            Err(HelperError::Broker(
                e @ (BrokerError::ApprovalDenied { .. } | BrokerError::ApprovalExpired { .. }),
            )) => {
                progress.done();
                return Err(ended(p.id, &e));
            }
            Err(e) => {
                progress.done();
                return Err(CliError::Approval(format!(
                    "{e} (request {} may still be approved: resume with `git jit request --wait {}`)",
                    p.id, p.id
                )));
            }
        }
        if deadline.is_some_and(|d| clock() > d) {
            progress.done();
            return Err(CliError::Approval(format!(
                "request {} was not approved in time",
                p.id
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(v: serde_json::Value) -> PendingDetails {
        serde_json::from_value(v).expect("details")
    }

    #[test]
    fn slow_down_raises_the_interval_by_five_seconds_at_least() {
        let none = PendingDetails::default();
        assert_eq!(next_interval(5, &none, false), 5);
        assert_eq!(next_interval(5, &none, true), 10);
        assert_eq!(next_interval(10, &none, true), 15);
        let asked = details(serde_json::json!({"interval": 30}));
        assert_eq!(
            next_interval(5, &asked, true),
            30,
            "the broker's larger value"
        );
        assert_eq!(next_interval(5, &asked, false), 30);
        let less = details(serde_json::json!({"interval": 7}));
        assert_eq!(next_interval(10, &less, true), 15, "never less than +5");
        let zero = details(serde_json::json!({"interval": 0}));
        assert_eq!(next_interval(5, &zero, false), 1, "never a busy loop");
        let huge = details(serde_json::json!({"interval": u64::MAX}));
        assert_eq!(next_interval(5, &huge, false), MAX_INTERVAL);
        assert_eq!(next_interval(u64::MAX, &none, true), MAX_INTERVAL);
    }

    #[test]
    fn the_announcement_says_who_and_how_long() {
        let id = RequestId::parse("rq_abcdefghijklmnopqrstuvwxyz").expect("id");
        let d = details(serde_json::json!({
            "request_id": id, "state": "pending", "role": "prod-push",
            "approvers": ["bob (corp)", "groups contains sre (corp)"],
            "approvals": 0, "required": 1, "interval": 5, "expires_in": 1800,
        }));
        assert_eq!(
            announcement(&id, &d),
            "approval needed: request rq_abcdefghijklmnopqrstuvwxyz filed under role prod-push; \
             1 approval needed from: bob (corp), groups contains sre (corp)\nexpires in 30 min"
        );
        let evil = details(
            serde_json::json!({"role": "x\u{1b}[2J", "approvers": ["\u{202e}bob"], "required": 2}),
        );
        let shown = announcement(&id, &evil);
        assert!(
            !shown.contains(jit_proto::display::is_dangerous),
            "{shown:?}"
        );
        assert!(shown.contains("2 approvals needed"), "{shown}");
    }

    #[test]
    fn spans_and_progress_read_well() {
        assert_eq!(span(45), "45 s");
        assert_eq!(span(1800), "30 min");
        assert_eq!(span(7500), "2 h 05 min");
        let s = Standing {
            approvals: 0,
            required: 1,
        };
        assert_eq!(
            progress_text(72, s),
            "waiting for approval … 1m 12s, 0/1 approvals"
        );
        assert_eq!(
            progress_text(3, s),
            "waiting for approval … 3s, 0/1 approvals"
        );
        assert_eq!(
            progress_text(3720, s),
            "waiting for approval … 1h 02m, 0/1 approvals"
        );
    }

    static NOW: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1000);

    fn clock() -> i64 {
        NOW.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn at(t: i64) {
        NOW.store(t, std::sync::atomic::Ordering::SeqCst);
    }

    /// Not on a terminal: a line when the standing changes, else one a minute at most.
    #[test]
    fn plain_progress_prints_on_change_or_once_a_minute() {
        at(1000);
        let mut err = Vec::new();
        let mut io = WaitIo {
            err: &mut err,
            tty: false,
            pacing: Pacing {
                tick: std::time::Duration::from_millis(1),
                clock,
            },
        };
        let zero = Standing {
            approvals: 0,
            required: 2,
        };
        let one = Standing {
            approvals: 1,
            ..zero
        };
        let mut p = Progress::new(&mut io);
        for (t, s) in [
            (1000, zero),
            (1030, zero),
            (1059, zero),
            (1060, zero),
            (1061, zero),
            (1075, one),
            (1076, one),
            (1136, one),
        ] {
            at(t);
            p.show(s);
        }
        p.done();
        assert_eq!(
            String::from_utf8(err).expect("utf8"),
            "waiting for approval … 0s, 0/2 approvals\n\
             waiting for approval … 1m 00s, 0/2 approvals\n\
             waiting for approval … 1m 15s, 1/2 approvals\n\
             waiting for approval … 2m 16s, 1/2 approvals\n"
        );
    }

    /// On a terminal: one line redrawn in place, ended by a newline.
    #[test]
    fn terminal_progress_redraws_one_line() {
        let mut err = Vec::new();
        let mut io = WaitIo {
            err: &mut err,
            tty: true,
            pacing: Pacing {
                tick: std::time::Duration::from_millis(1),
                clock: || 5,
            },
        };
        let s = Standing {
            approvals: 0,
            required: 1,
        };
        let mut p = Progress::new(&mut io);
        p.show(s);
        p.show(s);
        p.done();
        let shown = String::from_utf8(err).expect("utf8");
        assert_eq!(
            shown,
            "\r/ waiting for approval … 0s, 0/1 approvals\x1b[K\r- waiting for approval … 0s, 0/1 approvals\x1b[K\n"
        );
    }
}
