//! A block-style YAML writer for JSON values: Synapse's config and appservice registrations.
//!
//! Strings are always written double-quoted with JSON escapes, which YAML's double-quoted
//! scalars accept, so no value can turn into a number, a boolean or a YAML construct.

use serde_json::Value;

/// `value` (an object) as a YAML document.
pub(crate) fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => block(value, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

/// A value that fits on one line: a scalar, or an empty list or map.
fn scalar(value: &Value) -> String {
    match value {
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        // serde_json never writes `\/`, the one JSON escape YAML lacks.
        other => other.to_string(),
    }
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
        _ => false,
    }
}

/// Writes a non-empty list or map at `indent`, each entry on its own line.
fn block(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                out.push_str(&pad);
                out.push_str(&Value::String(k.clone()).to_string());
                if is_block(v) {
                    out.push_str(":\n");
                    block(v, indent + 2, out);
                } else {
                    out.push_str(": ");
                    out.push_str(&scalar(v));
                    out.push('\n');
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                out.push_str(&pad);
                if is_block(v) {
                    out.push_str("-\n");
                    block(v, indent + 2, out);
                } else {
                    out.push_str("- ");
                    out.push_str(&scalar(v));
                    out.push('\n');
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_maps_and_lists() {
        let v = json!({
            "id": "prr",
            "url": null,
            "n": 5,
            "flag": false,
            "empty": [],
            "namespaces": {"users": [{"exclusive": true, "regex": "@prr_.*:localhost"}], "rooms": []},
            "list": ["a", "b\"c"],
        });
        assert_eq!(
            to_yaml(&v),
            "\"id\": \"prr\"\n\"url\": null\n\"n\": 5\n\"flag\": false\n\"empty\": []\n\
             \"namespaces\":\n  \"users\":\n    -\n      \"exclusive\": true\n      \
             \"regex\": \"@prr_.*:localhost\"\n  \"rooms\": []\n\
             \"list\":\n  - \"a\"\n  - \"b\\\"c\"\n"
        );
    }
}
