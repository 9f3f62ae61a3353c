//! The Repository page's timeline: who had which access to one repository over a window,
//! drawn by the server as inline SVG — one lane per subject, a bar per grant (issued until it
//! expired or was revoked), a mark per push and per revocation — from the audit trail alone
//! (`grant.issued`, `grant.revoked`, `access.allowed`). Presentation attributes only: the
//! console's CSP allows no inline style.

use std::collections::{BTreeMap, HashMap};

use maud::{Markup, html};

use super::utc_text;
use crate::audit::AuditEvent;

/// One grant on the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// The grant's jti.
    pub jti: String,
    /// Its role.
    pub role: String,
    /// Its scope.
    pub scope: String,
    /// Issued (ms).
    pub start_ms: i64,
    /// Expired or revoked (ms).
    pub end_ms: i64,
    /// Whether a revocation ended it.
    pub revoked: bool,
}

/// A moment on a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A push (an allowed write).
    Push(i64),
    /// A revocation that ended a grant of this lane.
    Revoked(i64),
}

/// The timeline of one repository over a window.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Window start (ms).
    pub from_ms: i64,
    /// Window end (ms).
    pub to_ms: i64,
    /// Per subject: the bars and marks, subjects in order.
    pub lanes: BTreeMap<String, (Vec<Bar>, Vec<Mark>)>,
}

/// The field `key` of a revocation's `data.target` (`sub alice`, `repo acme/api`, `all`).
fn target(e: &AuditEvent) -> Option<(&str, &str)> {
    let t = e.data.get("target")?.as_str()?;
    Some(t.split_once(' ').unwrap_or((t, "")))
}

/// Builds the timeline of `repo` over `[from_ms, to_ms]` from its events (`repo_events`:
/// those whose `repo` is this repository) and every revocation of the window
/// (`revocations`: a revocation by token or subject names no repository).
pub fn build(
    repo: &str,
    from_ms: i64,
    to_ms: i64,
    repo_events: &[AuditEvent],
    revocations: &[AuditEvent],
) -> Timeline {
    let mut t = Timeline {
        from_ms,
        to_ms,
        ..Default::default()
    };
    // Grants first, with who holds them.
    let mut owner: HashMap<String, (String, Option<String>)> = HashMap::new();
    for e in repo_events
        .iter()
        .filter(|e| e.event.as_str() == "grant.issued")
    {
        let (Some(sub), Some(jti)) = (&e.subject, &e.jti) else {
            continue;
        };
        let exp_ms = e
            .data
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .map_or(to_ms, |s| s * 1000);
        owner.insert(jti.clone(), (sub.clone(), e.idp.clone()));
        t.lanes.entry(sub.clone()).or_default().0.push(Bar {
            jti: jti.clone(),
            role: e.role.clone().unwrap_or_default(),
            scope: e.scope.clone().unwrap_or_default(),
            start_ms: e.ts,
            end_ms: exp_ms,
            revoked: false,
        });
    }
    // Revocations end the bars they cover that were live then, and mark their lanes.
    for r in revocations {
        let Some((kind, value)) = target(r) else {
            continue;
        };
        for (sub, (bars, marks)) in t.lanes.iter_mut() {
            let mut hit = false;
            for b in bars.iter_mut() {
                let covers = match kind {
                    "jti" => r.jti.as_deref() == Some(b.jti.as_str()),
                    "sub" => value == sub,
                    "repo" => value == repo,
                    "role" => value == b.role,
                    "idp" => owner
                        .get(&b.jti)
                        .is_some_and(|(_, idp)| idp.as_deref() == Some(value)),
                    "all" => true,
                    _ => false,
                };
                if covers && b.start_ms <= r.ts && r.ts < b.end_ms {
                    b.end_ms = r.ts;
                    b.revoked = true;
                    hit = true;
                }
            }
            if hit {
                marks.push(Mark::Revoked(r.ts));
            }
        }
    }
    for e in repo_events
        .iter()
        .filter(|e| e.event.as_str() == "access.allowed")
    {
        let write = e.data.get("action").and_then(serde_json::Value::as_str) == Some("write");
        if let (true, Some(sub)) = (write, &e.subject) {
            t.lanes
                .entry(sub.clone())
                .or_default()
                .1
                .push(Mark::Push(e.ts));
        }
    }
    // Only what shows in the window: grants read from before it may have ended before it.
    for (bars, marks) in t.lanes.values_mut() {
        bars.retain(|b| b.end_ms >= from_ms && b.start_ms <= to_ms);
        marks.retain(|m| {
            let (Mark::Push(ms) | Mark::Revoked(ms)) = *m;
            (from_ms..=to_ms).contains(&ms)
        });
    }
    t.lanes
        .retain(|_, (bars, marks)| !bars.is_empty() || !marks.is_empty());
    t
}

const WIDTH: i64 = 1000;
const LABEL: i64 = 230;
const LANE: i64 = 30;
const AXIS: i64 = 24;

impl Timeline {
    fn x(&self, ms: i64) -> i64 {
        let span = (self.to_ms - self.from_ms).max(1);
        let ms = ms.clamp(self.from_ms, self.to_ms);
        LABEL + (ms - self.from_ms) * (WIDTH - LABEL - 10) / span
    }

    /// The timeline as inline SVG, with a title and a text summary for screen readers.
    pub fn svg(&self) -> Markup {
        let height = AXIS + LANE * i64::try_from(self.lanes.len()).unwrap_or(0).max(1) + 8;
        let (grants, pushes, revocations) = self.counts();
        let summary = format!(
            "{} subjects, {grants} grants, {pushes} pushes, {revocations} revocations between {} and {}",
            self.lanes.len(),
            utc_text(self.from_ms),
            utc_text(self.to_ms)
        );
        html! {
            svg xmlns="http://www.w3.org/2000/svg" id="timeline" role="img" aria-label=(summary)
                viewBox=(format!("0 0 {WIDTH} {height}")) width="100%" font-family="sans-serif" font-size="12" {
                title { (summary) }
                text x=(LABEL) y="14" fill="#57606a" { (utc_text(self.from_ms)) }
                text x=(WIDTH - 10) y="14" fill="#57606a" text-anchor="end" { (utc_text(self.to_ms)) }
                line x1=(LABEL) y1=(AXIS - 4) x2=(WIDTH - 10) y2=(AXIS - 4) stroke="#d0d7de" {}
                @for (i, (sub, (bars, marks))) in self.lanes.iter().enumerate() {
                    @let y = AXIS + LANE * i64::try_from(i).unwrap_or(0);
                    g data-subject=(sub) {
                        text x="4" y=(y + 19) fill="#1b1f24" { (sub) }
                        line x1=(LABEL) y1=(y + LANE) x2=(WIDTH - 10) y2=(y + LANE) stroke="#eaeef2" {}
                        @for b in bars {
                            @let (x1, x2) = (self.x(b.start_ms), self.x(b.end_ms));
                            rect.bar data-jti=(b.jti) x=(x1) y=(y + 6) width=((x2 - x1).max(2)) height="16" rx="3"
                                fill=(if b.revoked { "#f4a29a" } else { "#7fb2f0" }) stroke="#0a58ca" stroke-width="0.5" {
                                title { (b.role) " " (b.scope) ": " (utc_text(b.start_ms)) " to " (utc_text(b.end_ms)) @if b.revoked { " (revoked)" } }
                            }
                        }
                        @for m in marks {
                            @match m {
                                Mark::Push(ms) => {
                                    circle.push cx=(self.x(*ms)) cy=(y + 14) r="4" fill="#1a7f37" {
                                        title { "push at " (utc_text(*ms)) }
                                    }
                                }
                                Mark::Revoked(ms) => {
                                    path.revoked d=(format!("M{x} {a} L{x} {b}", x = self.x(*ms), a = y + 2, b = y + 26))
                                        stroke="#b42318" stroke-width="3" {
                                        title { "revoked at " (utc_text(*ms)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Grants, pushes and revocation marks drawn.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for (bars, marks) in self.lanes.values() {
            c.0 += bars.len();
            for m in marks {
                match m {
                    Mark::Push(_) => c.1 += 1,
                    Mark::Revoked(_) => c.2 += 1,
                }
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, ts: i64, sub: &str, jti: &str) -> AuditEvent {
        let mut e = AuditEvent::new(kind, ts);
        e.subject = Some(sub.into());
        e.jti = Some(jti.into());
        e.repo = Some("acme/api".into());
        e.role = Some("dev".into());
        e.idp = Some("corp".into());
        e
    }

    fn issued(ts: i64, sub: &str, jti: &str, exp_s: i64) -> AuditEvent {
        ev("grant.issued", ts, sub, jti).with("exp", exp_s)
    }

    fn revoked(ts: i64, target: &str, jti: Option<&str>) -> AuditEvent {
        let mut e = AuditEvent::new("grant.revoked", ts).with("target", target);
        e.jti = jti.map(str::to_owned);
        e
    }

    #[test]
    fn bars_end_at_expiry_or_revocation_and_marks_land_on_their_lanes() {
        let events = vec![
            issued(1_000, "alice", "a1", 100),
            issued(2_000, "bob", "b1", 50),
            issued(60_000, "bob", "b2", 200),
            ev("access.allowed", 3_000, "bob", "b1").with("action", "write"),
            ev("access.allowed", 3_500, "alice", "a1").with("action", "read"),
        ];
        let revs = vec![
            revoked(10_000, "jti a1", Some("a1")),
            // Bob's first grant had expired by then: only the second ends.
            revoked(70_000, "sub bob", None),
            // Another repository's revocation touches nothing here.
            revoked(80_000, "repo acme/web", None),
        ];
        let t = build("acme/api", 0, 300_000, &events, &revs);
        let (alice_bars, alice_marks) = &t.lanes["alice"];
        assert_eq!(alice_bars[0].end_ms, 10_000);
        assert!(alice_bars[0].revoked);
        assert_eq!(alice_marks, &vec![Mark::Revoked(10_000)]);
        let (bob_bars, bob_marks) = &t.lanes["bob"];
        assert_eq!((bob_bars[0].end_ms, bob_bars[0].revoked), (50_000, false));
        assert_eq!((bob_bars[1].end_ms, bob_bars[1].revoked), (70_000, true));
        assert_eq!(bob_marks, &vec![Mark::Revoked(70_000), Mark::Push(3_000)]);
        assert_eq!(t.counts(), (3, 1, 2));
        // A later window shows only what overlaps it.
        let later = build("acme/api", 60_000, 300_000, &events, &revs);
        assert!(!later.lanes.contains_key("alice"));
        assert_eq!(later.lanes["bob"].0.len(), 1);
        assert_eq!(later.counts(), (1, 0, 1));
    }

    #[test]
    fn the_svg_has_a_lane_per_subject_and_no_inline_style() {
        let events = vec![issued(1_000, "alice <x>", "a1", 100)];
        let t = build("acme/api", 0, 200_000, &events, &[]);
        let svg = t.svg().into_string();
        assert!(svg.contains("data-subject=\"alice &lt;x&gt;\""), "{svg}");
        assert!(svg.contains("data-jti=\"a1\""));
        assert!(
            !svg.contains("style="),
            "the CSP forbids inline style: {svg}"
        );
        assert!(svg.contains("1 subjects, 1 grants, 0 pushes, 0 revocations"));
    }
}
