//! The console's accessibility, checked in the real browser on one page at a time: every
//! control has an accessible name; real Tab presses reach every link, button and field in
//! order, each with a visible focus ring; nothing spills sideways on a 400 px window or at
//! 200 % zoom (a 640 px window) except inside a table's own scroller; every time is a
//! `<time>` shown in the viewer's zone with UTC on hover, and says UTC with JavaScript off.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use fantoccini::Client;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use serde::Deserialize;
use serde_json::Value;

/// The zone the browser runs in (set on chromedriver, inherited by chromium): not UTC, and
/// with a half-hour offset, so a time left in UTC or converted wrongly shows (a name ICU
/// keeps as it is, for the comparison).
pub const ZONE: &str = "Australia/Adelaide";

/// The window the other steps use.
const WIDE: (u32, u32) = (1280, 900);

/// Controls without an accessible name (hidden inputs carry none and need none).
const UNNAMED: &str = r#"
var bad = [];
function text(el) { return (el.textContent || '').trim() !== ''; }
document.querySelectorAll('input, select, textarea, button, a[href]').forEach(function (el) {
  if (el.type === 'hidden') return;
  var by = (el.getAttribute('aria-labelledby') || '').split(/\s+/).some(function (id) {
    var l = id && document.getElementById(id);
    return l && text(l);
  });
  var named = (el.getAttribute('aria-label') || '').trim() !== '' || by
    || Array.prototype.some.call(el.labels || [], text)
    || ((el.tagName === 'BUTTON' || el.tagName === 'A') && text(el));
  if (!named) bad.push(el.outerHTML.slice(0, 160));
});
return bad;
"#;

/// Numbers the controls a keyboard user must reach, in document order; their descriptions.
const CONTROLS: &str = r#"
var list = [];
document.querySelectorAll('a[href], button, input, select, textarea').forEach(function (el) {
  if (el.type === 'hidden' || el.disabled || el.getClientRects().length === 0) return;
  if (getComputedStyle(el).visibility === 'hidden') return;
  el.setAttribute('data-a11y', String(list.length));
  list.push(el.tagName.toLowerCase() + ' ' +
    (el.getAttribute('name') || el.textContent || '').trim().slice(0, 40));
});
if (document.activeElement && document.activeElement !== document.body) {
  document.activeElement.blur();
}
return list;
"#;

/// Where the focus is and whether it shows.
const FOCUSED: &str = r#"
var el = document.activeElement;
if (!el || el === document.body) return { at: null, what: 'nothing', shown: false };
var s = getComputedStyle(el);
return {
  at: el.getAttribute('data-a11y'),
  what: el.outerHTML.slice(0, 120),
  shown: el.matches(':focus-visible') && s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0
};
"#;

/// What sticks out to the right of the viewport, outside a table's scroller (an element
/// positioned out of the scroller, such as a visually hidden label, spills past it).
const OVERFLOW: &str = r#"
var w = document.documentElement.clientWidth, bad = [];
document.querySelectorAll('body *').forEach(function (el) {
  var wrap = el.parentElement && el.parentElement.closest('.table-wrap');
  if (wrap) {
    var pos = getComputedStyle(el).position;
    if ((pos !== 'absolute' && pos !== 'fixed') || (el.offsetParent && wrap.contains(el.offsetParent))) return;
  }
  var r = el.getBoundingClientRect();
  if (r.width > 0 && r.right > w + 1) {
    bad.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + ' ends at ' +
      Math.round(r.right) + ': ' + (el.textContent || '').trim().slice(0, 60));
  }
});
return { scroll: document.documentElement.scrollWidth, client: w, bad: bad.slice(0, 20) };
"#;

/// Every `<time>`: its text the viewer's local rendering, its title the UTC one; and no time
/// written outside a `<time>` (the timeline's SVG axis names UTC itself).
const TIMES: &str = r#"
var bad = [], count = 0;
document.querySelectorAll('time').forEach(function (t) {
  count++;
  var d = new Date(t.getAttribute('datetime'));
  if (isNaN(d.getTime())) { bad.push('no datetime: ' + t.outerHTML); return; }
  var local = d.toLocaleString(undefined, { timeZoneName: 'short' });
  var utc = d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  if (t.textContent !== local) {
    bad.push('shows ' + JSON.stringify(t.textContent) + ', not the local ' + JSON.stringify(local));
  }
  if (t.title !== utc) bad.push('hover says ' + JSON.stringify(t.title) + ', not ' + utc);
  if (t.textContent === t.title) bad.push('shown in UTC: ' + t.outerHTML);
});
var walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walk.nextNode()) {
  var node = walk.currentNode;
  if (node.parentElement.closest('time, svg, script')) continue;
  if (/\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}/.test(node.nodeValue)) {
    bad.push('a time outside <time>: ' + node.nodeValue.trim().slice(0, 80));
  }
}
return { zone: Intl.DateTimeFormat().resolvedOptions().timeZone, count: count, bad: bad };
"#;

#[derive(Deserialize)]
struct Focused {
    at: Option<String>,
    what: String,
    shown: bool,
}

#[derive(Deserialize)]
struct Overflow {
    scroll: u64,
    client: u64,
    bad: Vec<String>,
}

#[derive(Deserialize)]
struct Times {
    zone: String,
    count: usize,
    bad: Vec<String>,
}

async fn run<T: serde::de::DeserializeOwned>(browser: &Client, script: &str) -> Result<T> {
    let v: Value = browser.execute(script, vec![]).await?;
    serde_json::from_value(v.clone()).with_context(|| format!("script answered {v}"))
}

async fn press_tab(browser: &Client) -> Result<()> {
    let tab = '\u{E004}';
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: tab })
        .then(KeyAction::Up { value: tab });
    browser.perform_actions(keys).await?;
    Ok(())
}

/// Checks the page at `url` (opened afresh) as described above; `times` is how many
/// `<time>` elements it must at least show. `session` is the console cookie, for the
/// JavaScript-off reading. Screenshots go to `shots` as `<name>-narrow` and `<name>-zoom200`.
pub async fn check_page(
    browser: &Client,
    url: &str,
    session: &str,
    times: usize,
    shots: &Path,
    name: &str,
) -> Result<()> {
    browser.set_window_size(WIDE.0, WIDE.1).await?;
    browser.goto(url).await?;
    let mut problems = Vec::new();

    let unnamed: Vec<String> = run(browser, UNNAMED).await?;
    for c in unnamed {
        problems.push(format!("no accessible name: {c}"));
    }

    let controls: Vec<String> = run(browser, CONTROLS).await?;
    ensure!(!controls.is_empty(), "{name}: no control found to reach");
    for (i, control) in controls.iter().enumerate() {
        press_tab(browser).await?;
        let f: Focused = run(browser, FOCUSED).await?;
        if f.at.as_deref() != Some(i.to_string().as_str()) {
            problems.push(format!(
                "Tab press {} should reach `{control}` but focus is on {}",
                i + 1,
                f.what
            ));
            break;
        }
        if !f.shown {
            problems.push(format!("focus on `{control}` is not visible: {}", f.what));
        }
    }

    let t: Times = run(browser, TIMES).await?;
    ensure!(
        t.zone == ZONE,
        "the browser runs in {}, not {ZONE}: the zone check would prove nothing",
        t.zone
    );
    if t.count < times {
        problems.push(format!(
            "{} <time> shown, expected at least {times}",
            t.count
        ));
    }
    problems.extend(t.bad);

    for (width, label) in [(400, "narrow"), (640, "zoom200")] {
        browser.set_window_size(width, 800).await?;
        let o: Overflow = run(browser, OVERFLOW).await?;
        ensure!(
            o.client <= u64::from(width),
            "{name}: a {width} px window shows {} px",
            o.client
        );
        if o.scroll > o.client || !o.bad.is_empty() {
            problems.push(format!(
                "at {width} px the page is {} px wide for {} px: {:?}",
                o.scroll, o.client, o.bad
            ));
        }
        super::shot(browser, shots, &format!("{name}-{label}")).await?;
    }
    browser.set_window_size(WIDE.0, WIDE.1).await?;

    // With JavaScript off, the server's text is what shows: UTC, saying so.
    let html = jit_e2e::http_client()
        .get(url)
        .header("cookie", session)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    for tag in html.split("<time ").skip(1) {
        let element = tag.split("</time>").next().unwrap_or(tag);
        let ok = element.contains(" UTC\" data-local>") && element.ends_with(" UTC");
        if !ok {
            problems.push(format!("server-rendered time not in UTC: <time {element}"));
        }
    }

    ensure!(
        problems.is_empty(),
        "{name} ({url}) is not accessible:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}
