//! Plain-text tables for `git jit admin`: columns padded by display width, long cells cut
//! with `…`, and control and bidirectional-override characters from the broker shown
//! escaped, so a crafted subject or reason can neither drive the terminal nor reorder what
//! an admin reads.

/// Space between columns.
const GAP: &str = "  ";

/// A table: titled columns, each with a maximum width, and rows of cells.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(&'static str, usize)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these `(title, max width)` columns.
    pub fn new(columns: &[(&'static str, usize)]) -> Self {
        Self {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped. Cells are cleaned and
    /// cut to their column's maximum width.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut row: Vec<String> = cells
            .into_iter()
            .zip(&self.columns)
            .map(|(c, (_, max))| truncate(&clean(c.as_ref()), *max))
            .collect();
        row.resize(self.columns.len(), String::new());
        self.rows.push(row);
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text: a header line, then one line per row, each ending in a newline,
    /// without trailing spaces.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (title, _))| {
                self.rows
                    .iter()
                    .map(|r| width(&r[i]))
                    .chain([width(title)])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let titles: Vec<String> = self.columns.iter().map(|(t, _)| (*t).to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&titles).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(
                    ' ',
                    widths[i].saturating_sub(width(cell)),
                ));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Whether a character must not reach the terminal as is: C0/C1 controls and the Unicode
/// bidirectional overrides and isolates.
fn is_dangerous(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` with dangerous characters written as escapes (`\u{1b}`, `\n`).
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

/// Columns a character takes in a terminal: 0 for combining marks and zero-width
/// characters, 2 for East Asian wide characters and emoji, 1 otherwise. An approximation of
/// Unicode's East Asian Width covering the common ranges, without a dependency.
pub fn char_width(c: char) -> usize {
    match c as u32 {
        0x0300..=0x036F
        | 0x1AB0..=0x1AFF
        | 0x1DC0..=0x1DFF
        | 0x200B..=0x200F
        | 0x20D0..=0x20FF
        | 0xFE00..=0xFE0F
        | 0xFE20..=0xFE2F
        | 0xFEFF => 0,
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD => 2,
        _ if c.is_control() => 0,
        _ => 1,
    }
}

/// The display width of `s`.
pub fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// `s` cut to at most `max` columns, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_width(c);
        // One column is kept for the ellipsis.
        if used + w + 1 > max {
            break;
        }
        used += w;
        out.push(c);
    }
    if max > 0 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_by_display_width_without_trailing_spaces() {
        let mut t = Table::new(&[("A", 10), ("NAME", 10), ("Z", 10)]);
        t.row(["x", "日本", "end"]);
        t.row(["longer", "é", ""]);
        assert_eq!(
            t.render(),
            "A       NAME  Z\n\
             x       日本  end\n\
             longer  é\n"
        );
    }

    #[test]
    fn cuts_long_cells_with_an_ellipsis() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcd", 4), "abcd");
        assert_eq!(truncate("日本語", 4), "日…");
        assert_eq!(width(&truncate("日本語日本語", 7)), 7);
        let mut t = Table::new(&[("R", 5)]);
        t.row(["a reason too long"]);
        assert_eq!(t.render(), "R\na re…\n");
    }

    #[test]
    fn missing_cells_are_blank() {
        let mut t = Table::new(&[("A", 5), ("B", 5)]);
        t.row(["1"]);
        assert!(!t.is_empty());
        assert_eq!(t.render(), "A  B\n1\n");
    }

    #[test]
    fn broker_text_cannot_drive_the_terminal() {
        let evil = "alice\u{1b}[2J\r\nbob\u{202E}txt.exe";
        let shown = clean(evil);
        assert!(!shown.contains(is_dangerous), "{shown:?}");
        assert_eq!(shown, "alice\\u{1b}[2J\\r\\nbob\\u{202e}txt.exe");
        let mut t = Table::new(&[("S", 80)]);
        t.row([evil]);
        assert_eq!(t.render().lines().count(), 2);
    }
}
