//! Validation of one event object.

use serde_json::{Map, Value};

use super::{Event, FieldError, kind};

/// Where an event's `room_id` comes from when it lacks one.
pub(super) enum RoomSource {
    /// Nowhere: `room_id` is required.
    None,
    /// The file's room.
    Known(String),
    /// The file's room, not read yet: a placeholder is used and the caller fills it in.
    Deferred,
}

fn required_string(obj: &mut Map<String, Value>, field: &str) -> Result<String, FieldError> {
    match obj.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(FieldError::new(
            field,
            format!("expected a string, found {}", kind(&other)),
        )),
        None => Err(FieldError::new(field, "missing (required string)")),
    }
}

/// Validates one event object; `Ok(None)` when it is valid but ignored.
pub(super) fn validate_event(
    mut obj: Map<String, Value>,
    room: &RoomSource,
) -> Result<Option<Event>, FieldError> {
    let event_id = required_string(&mut obj, "event_id")?;
    let event_type = required_string(&mut obj, "type")?;
    let room_id = match (obj.contains_key("room_id"), room) {
        (false, RoomSource::Known(r)) => r.clone(),
        (false, RoomSource::Deferred) => String::new(),
        _ => required_string(&mut obj, "room_id")?,
    };
    let sender = required_string(&mut obj, "sender")?;
    let content = match obj.remove("content") {
        Some(Value::Object(content)) => content,
        Some(other) => {
            return Err(FieldError::new(
                "content",
                format!("expected an object, found {}", kind(&other)),
            ));
        }
        None => return Err(FieldError::new("content", "missing (required object)")),
    };
    let state_key = match obj.remove("state_key") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(FieldError::new(
                "state_key",
                format!("expected a string, found {}", kind(&other)),
            ));
        }
    };
    let origin_server_ts = match obj.remove("origin_server_ts") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(ts) => Some(ts),
            None if n.is_u64() => {
                return Err(FieldError::new(
                    "origin_server_ts",
                    format!("expected a 64-bit signed integer, found {n} (out of range)"),
                ));
            }
            None => {
                return Err(FieldError::new(
                    "origin_server_ts",
                    format!("expected an integer, found {n}"),
                ));
            }
        },
        Some(other) => {
            return Err(FieldError::new(
                "origin_server_ts",
                format!("expected an integer, found {}", kind(&other)),
            ));
        }
    };
    let redacted_because = match obj.get("unsigned") {
        None | Some(Value::Null) => false,
        Some(Value::Object(unsigned)) => unsigned
            .get("redacted_because")
            .is_some_and(|v| !v.is_null()),
        Some(other) => {
            return Err(FieldError::new(
                "unsigned",
                format!("expected an object, found {}", kind(other)),
            ));
        }
    };
    let redacts = if event_type == "m.room.redaction" {
        match obj.get("redacts") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => match content.get("redacts") {
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            },
        }
    } else {
        None
    };
    if state_key.is_none() && redacts.is_none() {
        return Ok(None);
    }
    Ok(Some(Event {
        event_id,
        room_id,
        event_type,
        state_key,
        sender,
        origin_server_ts,
        content,
        redacted_because,
        redacts,
    }))
}
