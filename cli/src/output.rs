//! Human-readable output.

use serde_json::Value;

/// The widest a table cell gets before it is cut.
const MAX_CELL: usize = 48;

/// Whether a character would act on the terminal instead of showing: a C0 or C1 control
/// (ESC starts ANSI sequences, CR returns to the start of the line, U+009B is a one-character
/// CSI), or an invisible format character that reorders or hides text (the bidi embeddings,
/// overrides and isolates such as U+202E, zero-width characters, line and paragraph
/// separators, the byte order mark).
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// `s` with every character that would act on the terminal written visibly: `\t`, `\n`,
/// `\r`, and `\u{1b}` for the others (Rust's notation). Untrusted text (a `state_key`, a
/// display name) then cannot move the cursor, erase or fake rows, or reorder a line.
/// Backslashes are left as they are: the table is for reading; `--format json` is exact.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(acts_on_terminal) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if acts_on_terminal(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

fn cell(v: &Value) -> String {
    let s = match v {
        Value::String(s) => escape(s).into_owned(),
        Value::Null => "-".to_string(),
        other => escape(&other.to_string()).into_owned(),
    };
    if s.chars().count() > MAX_CELL {
        let cut: String = s.chars().take(MAX_CELL - 1).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// A delta line `{"seq", "diff", "record"}` flattened for a table: `seq`, `diff`, then the
/// record's fields.
pub fn flat_delta(r: &Value) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("seq".into(), r["seq"].clone());
    o.insert("diff".into(), r["diff"].clone());
    if let Some(rec) = r["record"].as_object() {
        o.extend(rec.clone());
    }
    Value::Object(o)
}

/// Objects as aligned columns, with the first object's keys as the header.
pub fn table(rows: &[Value]) -> String {
    let Some(first) = rows.first().and_then(Value::as_object) else {
        return "(no records)\n".to_string();
    };
    let keys: Vec<&String> = first.keys().collect();
    let headers: Vec<String> = keys.iter().map(|k| escape(k).into_owned()).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            keys.iter()
                .map(|h| cell(r.get(h.as_str()).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(h.chars().count())
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, values: &[String]| {
        let parts: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut out, &headers);
    for c in &cells {
        line(&mut out, c);
    }
    out.push_str(&format!("({} records)\n", rows.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character that acts on a terminal, in a string, a nested JSON value and a key.
    const HOSTILE: &[&str] = &[
        "\u{1b}[2K\u{1b}[1A",
        "a\rb",
        "a\nb",
        "a\tb",
        "\u{7}\u{8}\u{0}\u{7f}",
        "\u{9b}31m",
        "\u{85}",
        "\u{202e}gro.elpmaxe:lia",
        "\u{2066}x\u{2069}",
        "\u{200b}\u{feff}\u{2028}",
    ];

    #[test]
    fn problem_9_table_cells_escape_what_acts_on_the_terminal() {
        for h in HOSTILE {
            let mut row = serde_json::Map::new();
            row.insert("state_key".into(), Value::String(h.to_string()));
            row.insert("content".into(), serde_json::json!({ "k": [h] }));
            row.insert(h.to_string(), Value::String("x".into()));
            let out = table(&[Value::Object(row)]);
            assert_eq!(out.lines().count(), 3, "header, one row, count: {out:?}");
            assert!(
                !out.chars().any(|c| c != '\n' && acts_on_terminal(c)),
                "{out:?}"
            );
        }
        assert_eq!(escape("\u{1b}[31m"), "\\u{1b}[31m");
        assert_eq!(escape("a\r\nb\t"), "a\\r\\nb\\t");
        assert_eq!(escape("\u{202e}abc"), "\\u{202e}abc");
        assert_eq!(
            escape("@alice:example.org é 日本"),
            "@alice:example.org é 日本"
        );
    }
}
