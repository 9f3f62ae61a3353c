//! Plain-text tables for `git jit admin`: columns padded by display width (`unicode-width`),
//! long cells cut with `…`, and control and bidirectional-override characters from the broker
//! shown escaped, so a crafted subject or reason can neither drive the terminal nor reorder what
//! an admin reads.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

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

pub use jit_proto::display::clean;

/// The display width of `s` in a terminal (Unicode East Asian Width: CJK and emoji take
/// two columns, combining marks none).
pub fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// `s` cut to at most `max` columns, ending in `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = UnicodeWidthChar::width(c).unwrap_or(0);
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
    fn wide_characters_and_emoji_align() {
        let mut t = Table::new(&[("SUBJECT", 20), ("ROLE", 10)]);
        t.row(["张伟@例子.中国", "dev"]);
        t.row(["🦀 crab", "admin"]);
        t.row(["é\u{301}bob", "ops"]);
        t.row(["plain", "x"]);
        let out = t.render();
        let role_column: Vec<usize> = out
            .lines()
            .map(|l| {
                let (before, _) = l.rsplit_once("  ").expect("two columns");
                width(before) + 2
            })
            .collect();
        assert_eq!(role_column, [16; 5], "{out}");
        assert_eq!(width("张伟"), 4);
        assert_eq!(width("🦀"), 2);
        assert_eq!(width("e\u{301}"), 1);
        assert_eq!(truncate("🦀🦀🦀", 4), "🦀…");
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
        assert!(
            !shown.contains(jit_proto::display::is_dangerous),
            "{shown:?}"
        );
        assert_eq!(shown, "alice\\u{1b}[2J\\r\\nbob\\u{202e}txt.exe");
        let mut t = Table::new(&[("S", 80)]);
        t.row([evil]);
        assert_eq!(t.render().lines().count(), 2);
    }
}
