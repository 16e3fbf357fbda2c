//! Borderless, left-aligned text tables (kubectl style).

use std::fmt::{self, Write as _};
use std::ops::Range;

/// Render rows (the first is the header) with columns padded to fit.
pub fn render(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    render_into(&mut out, rows, "");
    out
}

/// [`render`], appended to `out`, each line after `indent`.
pub fn render_into(out: &mut String, rows: &[Vec<String>], indent: &str) {
    write_rows(
        out,
        || rows.iter().map(|r| r.iter().map(String::as_str)),
        indent,
    );
}

/// Rows of cells written one after another into one string: a table of
/// 64,000 rows (a plan of 1,000 VIPs x 64 backends) without a `String`
/// per cell and a `Vec` per row, which cost half of rendering it.
#[derive(Debug, Default)]
pub struct Rows {
    text: String,
    /// Where each cell ends in `text`.
    cells: Vec<usize>,
    /// Where each row ends in `cells`.
    rows: Vec<usize>,
}

impl Rows {
    /// Rows whose first is `header`.
    pub fn with_header(header: &[&str]) -> Rows {
        let mut rows = Rows::default();
        for cell in header {
            rows.cell(cell);
        }
        rows.end_row();
        rows
    }

    /// Room for `rows` more rows of `cells` cells of `bytes` bytes each.
    pub fn reserve(&mut self, rows: usize, cells: usize, bytes: usize) {
        self.rows.reserve(rows);
        self.cells.reserve(rows * cells);
        self.text.reserve(rows * cells * bytes);
    }

    /// A cell of the current row.
    pub fn cell(&mut self, s: &str) -> &mut Rows {
        self.text.push_str(s);
        self.cells.push(self.text.len());
        self
    }

    /// A cell written by `format_args!`.
    pub fn cell_fmt(&mut self, args: fmt::Arguments<'_>) -> &mut Rows {
        self.text
            .write_fmt(args)
            .expect("writing into a String cannot fail");
        self.cells.push(self.text.len());
        self
    }

    /// The end of the current row: the next cell starts a new one.
    pub fn end_row(&mut self) {
        self.rows.push(self.cells.len());
    }

    /// How many rows, the header included.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there is no row, not even a header.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The cells of row `i`.
    fn row(&self, i: usize) -> impl Iterator<Item = &str> + '_ {
        let first = if i == 0 { 0 } else { self.rows[i - 1] };
        (first..self.rows[i]).map(move |c| &self.text[self.span(c)])
    }

    fn span(&self, c: usize) -> Range<usize> {
        let start = if c == 0 { 0 } else { self.cells[c - 1] };
        start..self.cells[c]
    }

    /// The rows as [`render_into`] writes them.
    pub fn render_into(&self, out: &mut String, indent: &str) {
        write_rows(out, || (0..self.rows.len()).map(|i| self.row(i)), indent);
    }
}

/// A cell's width in characters (bytes for ASCII, which nearly all are).
fn width(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// The rows `rows()` gives (twice: once for the widths, once to write),
/// padded to the widest cell of each column, each line after `indent`,
/// without trailing blanks (the indent stays).
fn write_rows<'a, R, C>(out: &mut String, rows: impl Fn() -> R, indent: &str)
where
    R: Iterator<Item = C>,
    C: Iterator<Item = &'a str>,
{
    let mut widths: Vec<usize> = Vec::new();
    for row in rows() {
        for (c, cell) in row.enumerate() {
            if c == widths.len() {
                widths.push(0);
            }
            widths[c] = widths[c].max(width(cell));
        }
    }
    const SPACES: &str = "                                ";
    for row in rows() {
        out.push_str(indent);
        let start = out.len();
        // Padding owed before the next cell: written only when one comes,
        // so a line never ends in blanks of its own making.
        let mut owed = 0;
        for (c, cell) in row.enumerate() {
            if c > 0 {
                owed += 3;
            }
            if !cell.is_empty() {
                while owed > 0 {
                    let n = owed.min(SPACES.len());
                    out.push_str(&SPACES[..n]);
                    owed -= n;
                }
                out.push_str(cell);
            }
            owed += widths[c] - width(cell);
        }
        let kept = out[start..].trim_end().len();
        out.truncate(start + kept);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pads_columns() {
        let rows = vec![
            vec!["A".to_string(), "BB".to_string()],
            vec!["ccc".to_string(), "d".to_string()],
        ];
        assert_eq!(super::render(&rows), "A     BB\nccc   d\n");
    }

    /// Each line after the indent; trailing blanks of a line go, the
    /// indent stays; wide characters pad by characters, as before.
    #[test]
    fn renders_into_a_string_after_an_indent() {
        let rows = vec![
            vec!["é".to_string(), "".to_string(), "x".to_string()],
            vec!["ab".to_string(), "c".to_string(), "".to_string()],
            vec![String::new()],
        ];
        let mut out = "head\n".to_string();
        super::render_into(&mut out, &rows, "  ");
        assert_eq!(out, "head\n  é        x\n  ab   c\n  \n");
        assert_eq!(super::render(&rows), "é        x\nab   c\n\n");
    }

    /// [`super::Rows`] renders what the same cells as strings render:
    /// rows of other lengths, empty cells within and at the end, wide
    /// characters, a cell wider than the spaces written at once.
    #[test]
    fn rows_render_as_strings_do() {
        let wide = "w".repeat(50);
        let cells: Vec<Vec<&str>> = vec![
            vec!["HEAD", "B", "C"],
            vec!["é", "", "x"],
            vec!["ab", "c"],
            vec![""],
            vec![&wide, "", "", "z "],
            vec!["q", "ü", "", ""],
        ];
        let strings: Vec<Vec<String>> = cells
            .iter()
            .map(|r| r.iter().map(|c| c.to_string()).collect())
            .collect();
        let mut rows = super::Rows::with_header(&cells[0]);
        for row in &cells[1..] {
            for cell in row {
                rows.cell_fmt(format_args!("{cell}"));
            }
            rows.end_row();
        }
        assert_eq!(rows.len(), cells.len());
        for indent in ["", "  "] {
            let (mut a, mut b) = ("x\n".to_string(), "x\n".to_string());
            super::render_into(&mut a, &strings, indent);
            rows.render_into(&mut b, indent);
            assert_eq!(a, b, "indent {indent:?}");
        }
    }
}
