//! Text for people: what the broker and the helper put in tables, CSV cells and log lines.
//! Subjects come from identity providers and ref names from pushes, so they may hold terminal
//! escapes or spreadsheet formulas; these functions make them inert. JSON stays exact.

/// Whether a character must not reach a terminal as is: C0/C1 controls and the Unicode
/// bidirectional overrides and isolates.
pub fn is_dangerous(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` with dangerous characters written as visible escapes (`\u{1b}`, `\n`).
pub fn clean(s: &str) -> String {
    if !s.contains(is_dangerous) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if is_dangerous(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A CSV cell as a spreadsheet should get it: dangerous characters escaped visibly, and a
/// cell starting with `=`, `+`, `-`, `@`, tab or CR prefixed with `'` so it stays text
/// (OWASP's CSV-injection advice). Idempotent: a neutralised cell stays as it is.
pub fn csv_cell(s: &str) -> String {
    let s = clean(s);
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s
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
        for s in ["=1+1", "-x", "\u{1b}[31m", "ok"] {
            assert_eq!(csv_cell(&csv_cell(s)), csv_cell(s), "{s:?}");
        }
    }
}
