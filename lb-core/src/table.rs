//! Borderless, left-aligned text tables (kubectl style).

/// Render rows (the first is the header) with columns padded to fit.
pub fn render(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    render_into(&mut out, rows, "");
    out
}

/// [`render`], appended to `out`, each line after `indent`. Written in
/// place, cell by cell: a plan of 1,000 VIPs x 64 backends is 64,000
/// rows, and a string per padded cell and per line cost a fifth of the
/// command's time.
pub fn render_into(out: &mut String, rows: &[Vec<String>], indent: &str) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        out.push_str(indent);
        let start = out.len();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                out.push_str("   ");
            }
            out.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c].saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
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
}
