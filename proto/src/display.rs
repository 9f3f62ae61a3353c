//! Text for people: what the broker and the helper put in tables, CSV cells and log lines.
//! Subjects come from identity providers and ref names from pushes, so they may hold terminal
//! escapes or spreadsheet formulas; these functions make them inert. JSON stays exact.

use std::borrow::Cow;

/// Whether a character must not reach a terminal as is:
/// - C0 controls and DEL (ESC starts CSI/OSC sequences — OSC 8 hyperlinks, title changes —
///   BEL ends OSC, CR and LF forge lines), and C1 controls U+0080–U+009F (U+009B is an 8-bit
///   CSI, U+009D an 8-bit OSC, in terminals that honour them);
/// - the Unicode bidirectional embeddings, overrides and isolates (U+202A–U+202E,
///   U+2066–U+2069) and marks (U+200E, U+200F, U+061C), which reorder what is shown
///   ("Trojan Source", CVE-2021-42574);
/// - the line and paragraph separators U+2028 and U+2029, which some viewers break lines at.
///
/// Other characters — letters of every script, emoji, zero-width joiners — are shown as they
/// are: they change no terminal state and reorder nothing.
pub fn is_dangerous(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{061C}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `s` with dangerous characters written as visible escapes (`\u{1b}`, `\n`).
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.contains(is_dangerous) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if is_dangerous(c) {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// JSON text with every dangerous character written as a JSON `\uXXXX` escape: the same
/// JSON values, exactly (a parser reads back the very same strings), but nothing in the bytes
/// that drives or reorders a terminal. `serde_json` escapes only what JSON requires (C0,
/// `"`, `\`), so C1 controls, bidi controls and line separators would otherwise pass raw.
/// Outside strings valid JSON holds no such character, so only string contents change.
pub fn json_inert(json: &str) -> String {
    if !json.contains(|c: char| c != '\n' && is_dangerous(c)) {
        return json.to_owned();
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c != '\n' && is_dangerous(c) {
            // Every dangerous character is in the Basic Multilingual Plane: one escape.
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A CSV cell as a spreadsheet should get it: dangerous characters escaped visibly, and a
/// cell starting with `=`, `+`, `-`, `@`, tab or CR prefixed with `'` so it stays text
/// (OWASP's CSV-injection advice). Idempotent: a neutralised cell stays as it is.
pub fn csv_cell(s: &str) -> String {
    let s = clean(s);
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_cannot_become_formulas_or_drive_the_terminal() {
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(csv_cell("alice\u{1b}]8;;x\u{7}"), "alice\\u{1b}]8;;x\\u{7}");
        assert_eq!(csv_cell("a\u{202E}b"), "a\\u{202e}b");
        assert_eq!(csv_cell("plain@example.com"), "plain@example.com");
        for s in ["=1+1", "-x", "\u{1b}[31m", "ok", "\u{9b}31m"] {
            assert_eq!(csv_cell(&csv_cell(s)), csv_cell(s), "{s:?}");
        }
    }

    /// Every class the broker and helper neutralise, as attackers would send them: ESC with
    /// CSI and OSC 8 (a hyperlink), BEL, 8-bit CSI and OSC, bidi overrides and marks, line
    /// separators. Nothing dangerous survives, the text stays readable, and plain text (any
    /// script) is untouched.
    #[test]
    fn every_class_is_neutralised() {
        let cases = [
            ("\u{1b}[2J", "\\u{1b}[2J"),
            (
                "\u{1b}]8;;https://evil.example\u{1b}\\x\u{1b}]8;;\u{1b}\\",
                "\\u{1b}]8;;https://evil.example\\u{1b}\\x\\u{1b}]8;;\\u{1b}\\",
            ),
            ("ding\u{7}", "ding\\u{7}"),
            ("\u{9b}31m", "\\u{9b}31m"),
            ("\u{9d}0;title\u{9c}", "\\u{9d}0;title\\u{9c}"),
            ("a\u{202E}fdp.exe", "a\\u{202e}fdp.exe"),
            ("x\u{2067}y\u{2069}", "x\\u{2067}y\\u{2069}"),
            ("\u{200F}rtl", "\\u{200f}rtl"),
            ("one\u{2028}two", "one\\u{2028}two"),
            ("a\r\nforged log line", "a\\r\\nforged log line"),
            ("\u{7f}", "\\u{7f}"),
        ];
        for (raw, shown) in cases {
            assert_eq!(clean(raw), shown, "{raw:?}");
            assert!(!clean(raw).contains(is_dangerous), "{raw:?}");
        }
        for plain in [
            "alice@example.com",
            "Jürgen Müller",
            "王小明",
            "שלום",
            "👩‍💻",
            "refs/heads/main",
        ] {
            assert_eq!(clean(plain), plain);
        }
    }

    #[test]
    fn json_stays_exact_and_becomes_inert() {
        let value =
            serde_json::json!({"subject": "eve\u{1b}]8;;x\u{7}\u{9b}2J\u{202e}\u{2028}", "n": 1});
        for text in [
            serde_json::to_string(&value).expect("json"),
            serde_json::to_string_pretty(&value).expect("json"),
        ] {
            let shown = json_inert(&text);
            assert!(
                !shown.contains(|c: char| c != '\n' && is_dangerous(c)),
                "{shown:?}"
            );
            let back: serde_json::Value = serde_json::from_str(&shown).expect("still JSON");
            assert_eq!(back, value, "the same values");
        }
        assert_eq!(json_inert("{\"a\":\"plain é\"}"), "{\"a\":\"plain é\"}");
    }
}
