//! The reports: markdown tables, their cells (seconds, bytes, ratios, verdicts) and the
//! heading that names a benchmark's workload.

use crate::workload::{Size, Workload};

/// A markdown table.
#[derive(Clone, Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as GitHub markdown.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(&self.headers));
        out.push_str(&line(
            &self
                .headers
                .iter()
                .map(|_| "---".to_string())
                .collect::<Vec<_>>(),
        ));
        for r in &self.rows {
            let mut cells = r.clone();
            cells.resize(self.headers.len(), String::new());
            out.push_str(&line(&cells));
        }
        out
    }
}

/// Seconds for a table: `12.3 s`, `456 ms`, `7.8 ms`.
pub fn fmt_secs(s: f64) -> String {
    if s >= 100.0 {
        format!("{s:.0} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.01 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}

/// Bytes for a table, in MiB or KiB.
pub fn fmt_bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.0} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

/// A ratio `a / b` for a table: `12.3x`.
pub fn fmt_ratio(a: f64, b: f64) -> String {
    if b <= 0.0 || !a.is_finite() || !b.is_finite() {
        return "n/a".into();
    }
    let r = a / b;
    if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 10.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

/// Seconds for a table, or `-` when not a number (not measured).
pub fn fmt_secs_or_dash(s: f64) -> String {
    if s.is_finite() {
        fmt_secs(s)
    } else {
        "-".into()
    }
}

/// A target's verdict: `met` or `not met`.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "not met" }
}

/// The heading of a benchmark's section (without a line break):
/// `## TITLE: size SIZE (R rules, M membership records, I instances[, largest room L]), W worker(s)`.
pub fn heading(
    title: &str,
    size: Size,
    workload: &Workload,
    instances: usize,
    largest_room: bool,
    workers: u64,
) -> String {
    let largest = if largest_room {
        format!(", largest room {}", workload.largest_room())
    } else {
        String::new()
    };
    format!(
        "## {title}: size {} ({} rules, {} membership records, {instances} instances{largest}), {workers} worker(s)",
        size.name(),
        workload.rules(),
        workload.memberships(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_as_markdown() {
        let mut t = Table::new(&["a", "b"]);
        t.row(vec!["1".into()]);
        assert_eq!(t.render(), "| a | b |\n| --- | --- |\n| 1 |  |\n");
    }

    #[test]
    fn cells() {
        assert_eq!(fmt_secs(123.4), "123 s");
        assert_eq!(fmt_secs(0.5), "500 ms");
        assert_eq!(fmt_secs(0.0025), "2.50 ms");
        assert_eq!(fmt_secs_or_dash(f64::NAN), "-");
        assert_eq!(fmt_ratio(50.0, 2.0), "25.0x");
        assert_eq!(fmt_ratio(1.0, 0.0), "n/a");
        assert_eq!(fmt_bytes(3.0 * 1024.0 * 1024.0), "3 MiB");
    }
}
