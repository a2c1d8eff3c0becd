//! Newline-delimited JSON: telling it from a pretty-printed JSON value, and reading it line
//! by line.

use serde::de::IgnoredAny;

use super::{ParseError, SourceItem, is_json_ws, parse_line};

/// Non-blank lines with their 1-based numbers.
pub(super) fn non_blank_lines(text: &str) -> impl Iterator<Item = (u64, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, line)| (i as u64 + 1, line))
        .filter(|(_, line)| !line.trim_matches(is_json_ws).is_empty())
}

fn parses_as_object(line: &str) -> bool {
    line.trim_start_matches(is_json_ws).starts_with('{')
        && serde_json::from_str::<IgnoredAny>(line).is_ok()
}

pub(super) fn first_line_is_object(text: &str) -> bool {
    non_blank_lines(text)
        .next()
        .is_some_and(|(_, line)| parses_as_object(line))
}

/// Whether a file that is not one valid JSON value is meant as NDJSON: its first non-blank
/// line starts an object on that line, and that line or the next non-blank one is a whole
/// JSON object by itself (pretty-printed JSON never puts a whole non-empty object on a line
/// after a line that opens one).
pub(super) fn looks_like_ndjson(text: &str) -> bool {
    let mut lines = non_blank_lines(text);
    let Some((_, first)) = lines.next() else {
        return false;
    };
    let first_trimmed = first.trim_matches(is_json_ws);
    if !first_trimmed.starts_with('{') || first_trimmed == "{" {
        return false;
    }
    let Some((_, second)) = lines.next() else {
        return false;
    };
    parses_as_object(first) || (parses_as_object(second) && second.trim_matches(is_json_ws) != "{}")
}

pub(super) fn parse_ndjson(file: &str, text: &str) -> Result<Vec<SourceItem>, ParseError> {
    let mut items = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if let Some(item) = parse_line(file, i as u64 + 1, line)? {
            items.push(item);
        }
    }
    Ok(items)
}
