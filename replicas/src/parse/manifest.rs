//! Validation of a manifest's `instances`.

use serde_json::Value;

use super::{FieldError, ManifestEntry, kind};

fn is_user_id(id: &str) -> bool {
    id.strip_prefix('@')
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(localpart, server)| !localpart.is_empty() && !server.is_empty())
}

pub(super) fn parse_manifest(instances: Value) -> Result<Vec<ManifestEntry>, FieldError> {
    let Value::Array(items) = instances else {
        return Err(FieldError::new(
            "instances",
            format!("expected an array, found {}", kind(&instances)),
        ));
    };
    let mut entries = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("instances[{i}]");
        let Value::Object(mut obj) = item else {
            return Err(FieldError::new(
                path,
                format!("expected an object, found {}", kind(&item)),
            ));
        };
        let id = match obj.remove("id") {
            Some(Value::String(id)) if is_user_id(&id) => id,
            Some(Value::String(id)) => {
                return Err(FieldError::new(
                    format!("{path}.id"),
                    format!("expected a Matrix user ID (@localpart:server), found {id:?}"),
                ));
            }
            Some(other) => {
                return Err(FieldError::new(
                    format!("{path}.id"),
                    format!("expected a string, found {}", kind(&other)),
                ));
            }
            None => {
                return Err(FieldError::new(
                    format!("{path}.id"),
                    "missing (required user ID)",
                ));
            }
        };
        let remove = match obj.get("remove") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(FieldError::new(
                    format!("{path}.remove"),
                    format!("expected a boolean, found {}", kind(other)),
                ));
            }
        };
        if remove {
            entries.push(ManifestEntry::Remove { id });
            continue;
        }
        let watch = room_list(obj.remove("watch"), &path, "watch")?;
        let protect = room_list(obj.remove("protect"), &path, "protect")?;
        entries.push(ManifestEntry::Set { id, watch, protect });
    }
    Ok(entries)
}

fn room_list(value: Option<Value>, path: &str, name: &str) -> Result<Vec<String>, FieldError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(FieldError::new(
                format!("{path}.{name}"),
                format!("expected an array, found {}", kind(&other)),
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(j, item)| match item {
            Value::String(room) if room.starts_with('!') => Ok(room),
            Value::String(room) => Err(FieldError::new(
                format!("{path}.{name}[{j}]"),
                format!("expected a room ID starting with '!', found {room:?}"),
            )),
            other => Err(FieldError::new(
                format!("{path}.{name}[{j}]"),
                format!("expected a string, found {}", kind(&other)),
            )),
        })
        .collect()
}
