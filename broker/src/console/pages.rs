//! The console's pages, rendered on the server with maud (every value escaped by the macro).
//! They read with JavaScript off: filters are GET forms, actions are POST forms carrying the
//! session's CSRF token, bulk revocations go through a confirmation page. The script only
//! adds countdowns, local times and as-you-type filtering. No token is ever rendered: grants
//! are named by their `jti`.

use jit_proto::admin::RevokeResponse;
use maud::{DOCTYPE, Markup, html};
use openidconnect::url::form_urlencoded;

use super::assets::assets;
use super::session::Who;
use super::timeline::Timeline;
use super::{BASE, utc, utc_text};
use crate::audit::AuditEvent;
use crate::store::Grant;
use crate::store::requests::ApprovalRequest;

/// Which page is shown (for the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// Live grants.
    Now,
    /// Pending approval requests.
    Requests,
    /// The audit trail.
    Trail,
    /// One repository's timeline.
    Repository,
    /// Neither (sign-in, errors, confirmations).
    None,
}

/// A message above a page's content.
#[derive(Debug, Clone)]
pub enum Notice {
    /// Something was done.
    Ok(String),
    /// Something was refused or failed.
    Error(String),
}

/// The signed-in frame: who, where, and the logout form.
pub struct Frame<'a> {
    /// Who is signed in.
    pub who: &'a Who,
    /// The session's CSRF token, for every form.
    pub csrf: &'a str,
}

/// The values of the Now page's filters, as typed.
#[derive(Debug, Clone, Default)]
pub struct GrantFilterText {
    /// Subject.
    pub subject: String,
    /// Repository path.
    pub repo: String,
    /// Role.
    pub role: String,
    /// Issuer name.
    pub issuer: String,
}

/// A time the script shows in the viewer's zone; UTC (saying so) in the text until then,
/// and in the title, on hover.
pub fn when(ms: i64) -> Markup {
    let u = utc_text(ms);
    html! { time datetime=(utc(ms)) title=(u) data-local { (u) } }
}

/// The time left from `now_ms` until `until_ms`, roughly (`3m 20s`, `2h 5m`, `expired`).
pub fn span(now_ms: i64, until_ms: i64) -> String {
    let s = (until_ms - now_ms).div_euclid(1000);
    if s <= 0 {
        return "expired".into();
    }
    duration(s)
}

/// How long ago `since_ms` was at `now_ms`, roughly (`just now`, `3m 20s`).
pub fn age(since_ms: i64, now_ms: i64) -> String {
    let s = (now_ms - since_ms).div_euclid(1000);
    if s <= 0 {
        return "just now".into();
    }
    duration(s)
}

fn duration(s: i64) -> String {
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

fn page(title: &str, nav: Nav, frame: Option<&Frame>, head: Markup, body: Markup) -> Markup {
    let a = assets();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · git-jit console" }
                link rel="stylesheet" href=(format!("{BASE}/assets/{}", a.css.name));
                script src=(format!("{BASE}/assets/{}", a.js.name)) defer {}
                (head)
            }
            body {
                header {
                    span.brand { "git-jit security console" }
                    @if let Some(f) = frame {
                        nav aria-label="Console" {
                            @if f.who.admin {
                                a href=(BASE) aria-current=[(nav == Nav::Now).then_some("page")] { "Now" }
                            }
                            a href=(format!("{BASE}/requests"))
                                aria-current=[(nav == Nav::Requests).then_some("page")] { "Requests" }
                            @if f.who.admin {
                                a href=(format!("{BASE}/trail"))
                                    aria-current=[(nav == Nav::Trail).then_some("page")] { "Trail" }
                                a href=(format!("{BASE}/repo"))
                                    aria-current=[(nav == Nav::Repository).then_some("page")] { "Repository" }
                            }
                        }
                        span.who { (f.who.subject) " (" (f.who.idp) ")" }
                        form method="post" action=(format!("{BASE}/logout")) {
                            input type="hidden" name="csrf" value=(f.csrf);
                            button.quiet type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

fn notice(n: Option<&Notice>) -> Markup {
    html! {
        @match n {
            Some(Notice::Ok(m)) => p.notice.ok role="status" { (m) },
            Some(Notice::Error(m)) => p.notice.error role="alert" { (m) },
            None => {},
        }
    }
}

/// The page for someone not signed in.
pub fn sign_in(error: Option<&str>) -> Markup {
    let body = html! {
        h1 { "Sign in" }
        (notice(error.map(|e| Notice::Error(e.to_owned())).as_ref()))
        p { "The console shows who holds access now, lets you revoke it and decide on requests. It is open to the identities named in the broker's " code { "[admin]" } " configuration." }
        p { a.button id="sign-in" href=(format!("{BASE}/login")) { "Sign in with your company account" } }
    };
    page("Sign in", Nav::None, None, html! {}, body)
}

/// The page after a successful sign-in: a same-site step to the console, so the
/// `SameSite=Strict` session cookie is sent (it is not on the IdP's cross-site redirect).
/// After sign-in: on to the console's first page for them (an approver's is Requests).
pub fn signed_in(admin: bool) -> Markup {
    let to = if admin {
        BASE.to_owned()
    } else {
        format!("{BASE}/requests")
    };
    let head = html! { meta http-equiv="refresh" content=(format!("0;url={to}")); };
    let body = html! {
        h1 { "Signed in" }
        p { a href=(to) id="continue" { "Continue to the console" } }
    };
    page("Signed in", Nav::None, None, head, body)
}

/// Someone the console turns away, and why.
pub fn forbidden(why: &str) -> Markup {
    let body = html! {
        h1 { "Not allowed" }
        p.notice.error role="alert" { (why) }
        p { "The console is for the identities the broker's " code { "[admin]" } " configuration names, and for the approvers its roles name (who see the Requests page). Ask your security team if you need access." }
        p { a href=(format!("{BASE}/login")) { "Sign in as someone else" } }
    };
    page("Not allowed", Nav::None, None, html! {}, body)
}

/// An approver on a page for admins only.
pub fn admins_only(frame: &Frame) -> Markup {
    let body = html! {
        h1 { "For admins only" }
        p.notice.error role="alert" {
            "You are signed in as an approver: the Requests page is yours; this page is for the identities the broker's "
            code { "[admin]" } " configuration names."
        }
        p { a href=(format!("{BASE}/requests")) { "Go to the pending requests" } }
    };
    page("For admins only", Nav::None, Some(frame), html! {}, body)
}

/// An error page, signed in or not.
pub fn error(frame: Option<&Frame>, title: &str, message: &str) -> Markup {
    let body = html! {
        h1 { (title) }
        p.notice.error role="alert" { (message) }
        p { a href=(BASE) { "Back to the console" } }
    };
    page(title, Nav::None, frame, html! {}, body)
}

fn filter_link(key: &str, value: &str) -> Markup {
    let q = query(&[(key, value)]);
    html! { a href=(format!("{BASE}?{q}")) title=(format!("Only {key} {value}")) { (value) } }
}

/// The one dimension the filter names, if exactly one: what a bulk revocation may target.
fn single_dimension(f: &GrantFilterText) -> Option<(&'static str, &str)> {
    let set: Vec<_> = [
        ("subject", f.subject.as_str()),
        ("repo", f.repo.as_str()),
        ("role", f.role.as_str()),
        ("issuer", f.issuer.as_str()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect();
    match set.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

/// The Now page: live grants, filtered, with revoke forms.
pub fn now(
    frame: &Frame,
    filter: &GrantFilterText,
    grants: &[Grant],
    next: Option<&str>,
    now_ms: i64,
    message: Option<&Notice>,
) -> Markup {
    let body = html! {
        h1 { "Live grants" }
        (notice(message))
        form.filters method="get" action=(BASE) role="search" aria-label="Filter grants" {
            label { "Subject" input type="text" name="subject" value=(filter.subject); }
            label { "Repository" input type="text" name="repo" value=(filter.repo); }
            label { "Role" input type="text" name="role" value=(filter.role); }
            label { "Issuer" input type="text" name="issuer" value=(filter.issuer); }
            button type="submit" { "Filter" }
            a href=(BASE) { "Clear" }
        }
        p id="filter-live" hidden {
            label { "Filter the rows below as you type" input type="text" autocomplete="off"; }
        }
        @if let Some((by, value)) = single_dimension(filter) {
            p {
                a.button href=(format!("{BASE}/revoke?{}", query(&[("by", by), ("value", value)]))) {
                    "Revoke every grant of " (by) " " (value) "…"
                }
            }
        }
        div id="grants" data-live=(format!("{BASE}/events?{}", next_query(filter, ""))) aria-live="polite" {
        @if grants.is_empty() {
            p.muted { "No live grant matches." }
        } @else {
            div.table-wrap {
                table {
                    caption.sr-only { "Live grants" }
                    thead { tr {
                        th scope="col" { "Subject" }
                        th scope="col" { "Repository" }
                        th scope="col" { "Actions" }
                        th scope="col" .opt { "Refs" }
                        th scope="col" { "Role" }
                        th scope="col" .opt { "Issuer" }
                        th scope="col" .opt { "Reason" }
                        th scope="col" .opt { "Issued" }
                        th scope="col" { "Time left" }
                        th scope="col" { "Revoke" }
                    } }
                    tbody {
                        @for g in grants {
                            tr data-jti=(g.jti) {
                                td { (filter_link("subject", &g.sub)) }
                                td { (filter_link("repo", &g.scope.repo.to_string())) }
                                td { (g.scope.actions.to_string()) }
                                td.opt {
                                    @if g.refs.is_empty() { span.muted { "all" } }
                                    @for r in &g.refs { code { (r.to_string()) } " " }
                                }
                                td { (filter_link("role", &g.role)) @if g.break_glass { " (break-glass)" } }
                                td.opt { (filter_link("issuer", &g.idp)) }
                                td.opt { (g.reason.as_deref().unwrap_or("")) }
                                td.opt { (when(g.issued_ms)) }
                                td { span data-exp=(g.exp) title=(format!("until {}", utc_text(g.exp * 1000))) { (span(now_ms, g.exp * 1000)) } }
                                td {
                                    form.row-actions method="post" action=(format!("{BASE}/revoke")) {
                                        input type="hidden" name="csrf" value=(frame.csrf);
                                        input type="hidden" name="by" value="jti";
                                        input type="hidden" name="value" value=(g.jti);
                                        label.sr-only for=(format!("reason-{}", g.jti)) { "Reason to revoke " (g.jti) }
                                        input type="text" id=(format!("reason-{}", g.jti)) name="reason" required placeholder="reason";
                                        button.danger type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(n) = next {
            p { a href=(format!("{BASE}?{}", next_query(filter, n))) { "Next page" } }
        }
        }
    };
    page("Now", Nav::Now, Some(frame), html! {}, body)
}

/// A query string of `pairs`, form-encoded.
fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn next_query(f: &GrantFilterText, cursor: &str) -> String {
    query(&[
        ("subject", f.subject.as_str()),
        ("repo", f.repo.as_str()),
        ("role", f.role.as_str()),
        ("issuer", f.issuer.as_str()),
        ("cursor", cursor),
    ])
}

/// How many live grants a bulk revocation would end, as counted for its confirmation.
#[derive(Debug, Clone, Copy)]
pub struct Count {
    /// Live grants counted.
    pub live: usize,
    /// Whether the count covers every grant (false: the counting stopped at its bound).
    pub complete: bool,
}

/// The confirmation of a bulk revocation, naming how many grants will end.
pub fn confirm_revoke(frame: &Frame, by: &str, value: &str, count: Count) -> Markup {
    let body = html! {
        h1 { "Revoke every grant of " (by) " " (value) "?" }
        p.notice role="status" id="revoke-count" {
            @if count.complete {
                (count.live) " live grant" @if count.live != 1 { "s" } " of " (by) " " (value) " will end now."
            } @else {
                "At least " (count.live) " live grants of " (by) " " (value) " will end now (counting stopped there)."
            }
            " The count is of this moment: a grant issued before you confirm ends too; one issued after does not."
        }
        form method="post" action=(format!("{BASE}/revoke")) {
            input type="hidden" name="csrf" value=(frame.csrf);
            input type="hidden" name="by" value=(by);
            input type="hidden" name="value" value=(value);
            p { label { "Reason (recorded in the audit trail)" input type="text" name="reason" required; } }
            p {
                button.danger type="submit" { "Revoke them" }
                " "
                a href=(BASE) { "Cancel" }
            }
        }
    };
    page("Confirm revocation", Nav::None, Some(frame), html! {}, body)
}

/// The answer to a revocation.
pub fn revoked(frame: &Frame, r: &RevokeResponse) -> Markup {
    let body = html! {
        h1 { "Revoked" }
        p.notice.ok role="status" id="revoked" {
            "Revoked " (r.target) ": at most " (r.at_most) " live grant" @if r.at_most != 1 { "s" } " ended, on every replica, at once."
        }
        p.muted { "For one token the number is exact; for a subject, repository, role or issuer it is how many grants were indexed under it, which may include some that had already ended." }
        p { a href=(BASE) { "Back to live grants" } }
    };
    page("Revoked", Nav::None, Some(frame), html! {}, body)
}

/// The Requests page: pending approval requests with approve and deny forms.
pub fn requests(
    frame: &Frame,
    pending: &[ApprovalRequest],
    now_ms: i64,
    message: Option<&Notice>,
) -> Markup {
    let body = html! {
        h1 { "Pending requests" }
        (notice(message))
        @if pending.is_empty() {
            p.muted { "No request is waiting." }
        } @else {
            div.table-wrap {
                table {
                    caption.sr-only { "Pending approval requests" }
                    thead { tr {
                        th scope="col" { "Requester" }
                        th scope="col" { "Role" }
                        th scope="col" { "Access" }
                        th scope="col" { "Reason" }
                        th scope="col" .opt { "Asked" }
                        th scope="col" { "Waiting" }
                        th scope="col" { "Decide" }
                    } }
                    tbody {
                        @for r in pending {
                            tr data-request=(r.id.as_str()) {
                                td { (r.requester.sub) " (" (r.requester.idp) ")" }
                                td { (r.role) }
                                td { code { (r.scope.to_string()) } @for p in &r.refs { " " code { (p.to_string()) } } }
                                td { (r.reason.as_deref().unwrap_or("")) }
                                td.opt { (when(r.created_ms)) }
                                td { (age(r.created_ms, now_ms)) }
                                td {
                                    form.row-actions method="post" action=(format!("{BASE}/requests/{}", r.id.as_str())) {
                                        input type="hidden" name="csrf" value=(frame.csrf);
                                        label.sr-only for=(format!("why-{}", r.id.as_str())) { "Reason for the decision on " (r.id.as_str()) }
                                        input type="text" id=(format!("why-{}", r.id.as_str())) name="reason" required placeholder="reason";
                                        button type="submit" name="verdict" value="approve" { "Approve" }
                                        button.danger type="submit" name="verdict" value="deny" { "Deny" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Requests", Nav::Requests, Some(frame), html! {}, body)
}

/// The Trail page's search, as typed.
#[derive(Debug, Clone, Default)]
pub struct TrailSearch {
    /// Earliest time (RFC 3339 or ms).
    pub from: String,
    /// Latest time (RFC 3339 or ms).
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Repository.
    pub repo: String,
    /// Event kind, or a prefix ending in `.`.
    pub event: String,
}

impl TrailSearch {
    /// The search as query pairs (empty fields left out), plus `extra`.
    pub fn query(&self, extra: &[(&str, &str)]) -> String {
        let pairs: Vec<(&str, &str)> = [
            ("from", self.from.as_str()),
            ("to", self.to.as_str()),
            ("subject", self.subject.as_str()),
            ("repo", self.repo.as_str()),
            ("event", self.event.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .chain(extra.iter().copied())
        .collect();
        query(&pairs)
    }
}

/// What the chain check found, when it was asked for.
#[derive(Debug, Clone)]
pub enum ChainStatus {
    /// The chain verified; the report.
    Intact(String),
    /// The chain is broken (or could not be read); why.
    Broken(String),
}

/// The Trail page: audit events oldest first, searched, with exports and the chain check.
pub fn trail(
    frame: &Frame,
    search: &TrailSearch,
    events: &[AuditEvent],
    next_cursor: Option<&str>,
    chain: Option<&ChainStatus>,
    message: Option<&Notice>,
) -> Markup {
    let body = html! {
        h1 { "Audit trail" }
        (notice(message))
        form.filters method="get" action=(format!("{BASE}/trail")) role="search" aria-label="Search the trail" {
            label { "From (RFC 3339 or ms)" input type="text" name="from" value=(search.from) placeholder="2026-01-31T00:00:00Z"; }
            label { "To" input type="text" name="to" value=(search.to); }
            label { "Subject" input type="text" name="subject" value=(search.subject); }
            label { "Repository" input type="text" name="repo" value=(search.repo); }
            label { "Event (kind or prefix.)" input type="text" name="event" value=(search.event) placeholder="grant."; }
            button type="submit" { "Search" }
            a href=(format!("{BASE}/trail")) { "Clear" }
        }
        p.row-actions {
            a.button id="export-csv" href=(format!("{BASE}/trail/export?{}", search.query(&[("format", "csv")]))) { "Export CSV" }
            a.button id="export-jsonl" href=(format!("{BASE}/trail/export?{}", search.query(&[("format", "jsonl")]))) { "Export JSON lines" }
            a.button id="verify-chain" href=(format!("{BASE}/trail?{}", search.query(&[("verify", "1")]))) { "Verify the chain" }
        }
        @match chain {
            Some(ChainStatus::Intact(r)) => p.notice.ok role="status" id="chain" { "Chain verified: " (r) },
            Some(ChainStatus::Broken(r)) => p.notice.error role="alert" id="chain" { "Chain NOT intact: " (r) },
            None => p.muted id="chain" { "The hash chain of the events kept in the store is checked when you ask (it reads them all)." },
        }
        @if events.is_empty() {
            p.muted { "No event matches." }
        } @else {
            div.table-wrap {
                table {
                    caption.sr-only { "Audit events" }
                    thead { tr {
                        th scope="col" { "Seq" }
                        th scope="col" { "Time" }
                        th scope="col" { "Event" }
                        th scope="col" { "Subject" }
                        th scope="col" { "Repository" }
                        th scope="col" .opt { "Role" }
                        th scope="col" .opt { "Token (jti)" }
                        th scope="col" { "Reason or denial" }
                        th scope="col" .opt { "Client" }
                    } }
                    tbody {
                        @for e in events {
                            tr data-seq=(e.seq) {
                                td { (e.seq) }
                                td { (when(e.ts)) }
                                td { code { (e.event.as_str()) } }
                                td { (e.subject.as_deref().unwrap_or("")) }
                                td { (e.repo.as_deref().unwrap_or("")) }
                                td.opt { (e.role.as_deref().unwrap_or("")) }
                                td.opt { code { (e.jti.as_deref().unwrap_or("")) } }
                                td { (e.reason.as_deref().or(e.denial.as_deref()).unwrap_or("")) }
                                td.opt { (e.client.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(cursor) = next_cursor {
            p { a href=(format!("{BASE}/trail?{}", search.query(&[("cursor", cursor)]))) { "Next page" } }
        }
    };
    page("Trail", Nav::Trail, Some(frame), html! {}, body)
}

/// The Repository page's choice, as typed.
#[derive(Debug, Clone, Default)]
pub struct RepoWindow {
    /// The repository path.
    pub repo: String,
    /// Window start (RFC 3339 or ms; empty: 24 hours before its end).
    pub from: String,
    /// Window end (RFC 3339 or ms; empty: now).
    pub to: String,
}

/// The Repository page: who had which access to one repository over a window.
pub fn repository(
    frame: &Frame,
    choice: &RepoWindow,
    timeline: Option<&Timeline>,
    message: Option<&Notice>,
) -> Markup {
    let body = html! {
        h1 { "Repository access" }
        (notice(message))
        form.filters method="get" action=(format!("{BASE}/repo")) aria-label="Choose a repository and a window" {
            label { "Repository" input type="text" name="repo" value=(choice.repo) required placeholder="acme/api"; }
            label { "From (RFC 3339 or ms)" input type="text" name="from" value=(choice.from) placeholder="24 hours before To"; }
            label { "To" input type="text" name="to" value=(choice.to) placeholder="now"; }
            button type="submit" { "Show" }
        }
        @if let Some(t) = timeline {
            @if t.lanes.is_empty() {
                p.muted { "Nobody had access to " (choice.repo) " in this window." }
            } @else {
                p.muted { "From " (when(t.from_ms)) " to " (when(t.to_ms)) ". One lane per subject; bars are grants (blue: ran out, red: revoked), green dots pushes, red lines revocations. Hover for details." }
                (t.svg())
            }
        }
    };
    page("Repository", Nav::Repository, Some(frame), html! {}, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_and_age_read_as_people_say_them() {
        assert_eq!(span(0, 0), "expired");
        assert_eq!(span(0, 59_999), "59s");
        assert_eq!(span(0, 200_000), "3m 20s");
        assert_eq!(span(0, 7_500_000), "2h 5m");
        assert_eq!(age(1_000, 1_000), "just now");
        assert_eq!(age(0, 61_000), "1m 1s");
    }

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(utc(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc_text(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        let t = when(1_700_000_000_000).into_string();
        assert_eq!(
            t,
            r#"<time datetime="2023-11-14T22:13:20Z" title="2023-11-14 22:13:20 UTC" data-local>2023-11-14 22:13:20 UTC</time>"#
        );
    }
}
