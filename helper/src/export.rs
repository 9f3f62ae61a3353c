//! CSV for people (`git jit admin audit --csv`): the broker's CSV pages read and written again
//! with the `csv` crate, one header, every cell made safe to open in a spreadsheet or show in
//! a terminal — control and bidirectional-override characters escaped visibly (as in tables),
//! and a cell that a spreadsheet would take for a formula prefixed with `'`. JSON output stays
//! exact; only CSV and tables are rewritten for human eyes.

/// Why a CSV page could not be taken in.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The page is not valid CSV, or a record has another number of cells than the header.
    #[error("not valid CSV: {0}")]
    Csv(#[from] csv::Error),
    /// A later page's header differs from the first page's.
    #[error("the CSV header changed from one page to the next")]
    Header,
    /// The output is not UTF-8 (cannot happen: every cell is a `str`).
    #[error("the CSV output is not UTF-8")]
    Utf8,
}

/// CSV being assembled from pages that each start with the same header line.
#[derive(Debug)]
pub struct CsvExport {
    writer: csv::Writer<Vec<u8>>,
    header: Option<csv::StringRecord>,
}

impl Default for CsvExport {
    fn default() -> Self {
        Self::new()
    }
}

impl CsvExport {
    /// An empty export.
    pub fn new() -> Self {
        Self {
            writer: csv::Writer::from_writer(Vec::new()),
            header: None,
        }
    }

    /// Takes in one page — a header line, then records — and returns how many records it
    /// held. The header is written once; an empty page adds nothing.
    pub fn push_page(&mut self, page: &str) -> Result<usize, ExportError> {
        if page.trim().is_empty() {
            return Ok(0);
        }
        let mut reader = csv::Reader::from_reader(page.as_bytes());
        let header = reader.headers()?.clone();
        match &self.header {
            Some(first) if *first != header => return Err(ExportError::Header),
            Some(_) => {}
            None => {
                self.writer.write_record(header.iter().map(cell))?;
                self.header = Some(header);
            }
        }
        let mut n = 0;
        for record in reader.records() {
            self.writer.write_record(record?.iter().map(cell))?;
            n += 1;
        }
        Ok(n)
    }

    /// The CSV text.
    pub fn finish(self) -> Result<String, ExportError> {
        let bytes = self
            .writer
            .into_inner()
            .map_err(|e| ExportError::Csv(e.into_error().into()))?;
        String::from_utf8(bytes).map_err(|_| ExportError::Utf8)
    }
}

pub use jit_proto::display::csv_cell as cell;

#[cfg(test)]
mod tests {
    use super::*;

    fn export(pages: &[&str]) -> Result<String, ExportError> {
        let mut x = CsvExport::new();
        for p in pages {
            x.push_page(p)?;
        }
        x.finish()
    }

    #[test]
    fn cells_cannot_become_formulas_or_drive_the_terminal() {
        for (raw, shown) in [
            ("=1+2", "'=1+2"),
            ("+1", "'+1"),
            ("-1+1", "'-1+1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("'=already", "'=already"),
            ("alice@example.com", "alice@example.com"),
            ("\t=1", "\\t=1"),
            ("\r=1", "\\r=1"),
            ("a\u{1b}[2Jb", "a\\u{1b}[2Jb"),
            ("line\nbreak", "line\\nbreak"),
            ("bob\u{202E}txt.exe", "bob\\u{202e}txt.exe"),
            ("\u{85}next", "\\u{85}next"),
        ] {
            assert_eq!(cell(raw), shown, "{raw:?}");
            assert_eq!(cell(&cell(raw)), shown, "idempotent: {raw:?}");
        }
    }

    #[test]
    fn pages_become_one_csv_with_one_header() {
        let out = export(&[
            "seq,subject,reason\n1,alice,\"fix, urgently\"\n",
            "seq,subject,reason\n2,\"bob\nsmith\",=HYPERLINK(\"x\")\n",
            "",
        ])
        .expect("csv");
        assert_eq!(
            out,
            "seq,subject,reason\n1,alice,\"fix, urgently\"\n2,bob\\nsmith,\"'=HYPERLINK(\"\"x\"\")\"\n"
        );
        let mut x = CsvExport::new();
        assert_eq!(x.push_page("a,b\n1,2\n3,4\n").expect("page"), 2);
        assert_eq!(x.push_page("a,b\n").expect("page"), 0);
    }

    #[test]
    fn refuses_what_is_not_the_same_csv() {
        assert!(matches!(
            export(&["a,b\n1,2\n", "a,c\n3,4\n"]),
            Err(ExportError::Header)
        ));
        assert!(matches!(
            export(&["a,b\n1,2,3\n"]),
            Err(ExportError::Csv(_))
        ));
    }
}
