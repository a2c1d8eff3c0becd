//! Parsing and validation of source files: room state events and instance manifests.
//!
//! A source file is one of these shapes, detected from its content:
//! - a JSON array of events (`GET /_matrix/client/v3/rooms/{roomId}/state`);
//! - `{"state": [events]}` (Synapse's admin API);
//! - `{"room_id": R, "events": [events]}` (a room dump; events lacking `room_id` take `R`);
//! - a manifest `{"instances": [...]}`;
//! - newline-delimited JSON: one event or manifest per line, blank lines skipped. A file
//!   that is a single event object is NDJSON with one line.
//!
//! Arrays are validated element by element while they are read, so the raw JSON of a whole
//! file is never held in memory at once. Errors name the file, the line (NDJSON) or array
//! index, and the field.

mod event;
mod manifest;
mod ndjson;
mod redact;
mod shape;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::de::DeserializeSeed;
use serde_json::{Map, Value};

use event::{RoomSource, validate_event};
use manifest::parse_manifest;
use ndjson::{first_line_is_object, looks_like_ndjson, parse_ndjson};
pub use redact::redact_content;
use shape::{Ctx, TopSeed, finish_top};

/// One parsed state event (validated).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The event ID (`event_id`).
    pub event_id: String,
    /// The room ID (`room_id`, or the room given by the file).
    pub room_id: String,
    /// The event type (JSON field `type`).
    pub event_type: String,
    /// The state key; `None` only for `m.room.redaction` events without one.
    pub state_key: Option<String>,
    /// The sender's user ID.
    pub sender: String,
    /// `origin_server_ts`; `None` when absent or `null`.
    pub origin_server_ts: Option<i64>,
    /// The event content, as written.
    pub content: Map<String, Value>,
    /// Whether `unsigned.redacted_because` is present and not `null`.
    pub redacted_because: bool,
    /// For `m.room.redaction`: the top-level `redacts`, else `content.redacts` (room
    /// version 11), when it is a string. `None` for every other type.
    pub redacts: Option<String>,
}

/// A manifest entry.
#[derive(Clone, Debug, PartialEq)]
pub enum ManifestEntry {
    /// Replace the instance's watched and protected rooms.
    Set {
        /// The instance's Matrix user ID.
        id: String,
        /// Policy rooms the instance watches, as written.
        watch: Vec<String>,
        /// Rooms the instance protects, as written.
        protect: Vec<String>,
    },
    /// Delete the instance.
    Remove {
        /// The instance's Matrix user ID.
        id: String,
    },
}

/// One item of a source delta, in file order.
// Events are by far the most common item; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum SourceItem {
    /// A state event, or an `m.room.redaction` event.
    Event(Event),
    /// A manifest: its entries in file order.
    Manifest(Vec<ManifestEntry>),
}

/// Where in a file an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// The file as a whole.
    Whole,
    /// A 1-based line number (NDJSON lines, and JSON syntax errors outside arrays).
    Line(u64),
    /// A 0-based index into the file's event array (top-level, `state` or `events`).
    Index(u64),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Whole => f.write_str("whole file"),
            Location::Line(n) => write!(f, "line {n}"),
            Location::Index(i) => write!(f, "index {i}"),
        }
    }
}

/// A parse or validation error a person reads: file, location, field, what.
///
/// Displays as `events.json: index 3: field "sender": expected a string, found number`;
/// the location is left out when it is [`Location::Whole`], the field when it is `None`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{file}{}{}: {message}", location_part(.location), field_part(.field))]
pub struct ParseError {
    /// The file name, as given by the caller.
    pub file: String,
    /// Where in the file.
    pub location: Location,
    /// The offending field (for manifests a path such as `instances[2].watch[0]`).
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

fn location_part(location: &Location) -> String {
    match location {
        Location::Whole => String::new(),
        other => format!(": {other}"),
    }
}

fn field_part(field: &Option<String>) -> String {
    match field {
        Some(name) => format!(": field \"{name}\""),
        None => String::new(),
    }
}

/// Parses a whole source file (any accepted shape) into its items, in file order.
///
/// Events without a `state_key` are dropped, except `m.room.redaction` events with a string
/// `redacts`. Any invalid event, invalid JSON, invalid UTF-8 or an empty file rejects the
/// whole file.
pub fn parse_file(file: &str, bytes: &[u8]) -> Result<Vec<SourceItem>, ParseError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let at = e.valid_up_to();
            let line = count_newlines(&bytes[..at]) + 1;
            return Err(error(
                file,
                Location::Whole,
                None,
                format!("invalid UTF-8 at byte {at} (line {line})"),
            ));
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim_matches(is_json_ws).is_empty() {
        return Err(error(
            file,
            Location::Whole,
            None,
            "empty file: no events".into(),
        ));
    }

    let ctx = Ctx::new(file);
    let mut de = serde_json::Deserializer::from_str(text);
    let top = match (TopSeed { ctx: &ctx }).deserialize(&mut de) {
        Ok(top) => top,
        Err(e) => {
            if ctx.failure.borrow().is_none() && is_syntax(&e) && looks_like_ndjson(text) {
                return parse_ndjson(file, text);
            }
            return Err(ctx.convert(e));
        }
    };
    if let Err(e) = de.end() {
        // More follows the first value: NDJSON, if the first line is an object on its own.
        if first_line_is_object(text) {
            drop(top);
            return parse_ndjson(file, text);
        }
        return Err(error(
            file,
            Location::Line(e.line() as u64),
            None,
            format!(
                "invalid JSON: {} at column {}",
                serde_message(&e),
                e.column()
            ),
        ));
    }
    finish_top(file, text, top)
}

/// Parses one NDJSON line (an event or a manifest); `line_no` is 1-based and used in errors.
///
/// Returns `Ok(None)` for a blank line and for an event that is ignored (no `state_key` and
/// not a usable `m.room.redaction`).
pub fn parse_line(file: &str, line_no: u64, line: &str) -> Result<Option<SourceItem>, ParseError> {
    if line.trim_matches(is_json_ws).is_empty() {
        return Ok(None);
    }
    let at = Location::Line(line_no);
    let value: Value = serde_json::from_str(line).map_err(|e| {
        let position = if e.line() <= 1 {
            format!("column {}", e.column())
        } else {
            format!("line {} column {} of the record", e.line(), e.column())
        };
        error(
            file,
            at,
            None,
            format!("invalid JSON: {} at {position}", serde_message(&e)),
        )
    })?;
    let Value::Object(mut obj) = value else {
        let found = kind(&value);
        return Err(error(
            file,
            at,
            None,
            format!("expected a JSON object (an event or a manifest), found {found}"),
        ));
    };
    if let Some(instances) = obj.remove("instances") {
        return parse_manifest(instances)
            .map(|entries| Some(SourceItem::Manifest(entries)))
            .map_err(|fe| fe.at(file, at));
    }
    validate_event(obj, &RoomSource::None)
        .map(|ev| ev.map(SourceItem::Event))
        .map_err(|fe| fe.at(file, at))
}

/// Validates one event given as JSON (an event of an appservice transaction), as an event of
/// a file is validated; `file` and `location` name it in errors.
///
/// Returns `Ok(None)` for an event that is ignored (no `state_key` and not a usable
/// `m.room.redaction`).
pub fn parse_event(
    file: &str,
    location: Location,
    value: Value,
) -> Result<Option<Event>, ParseError> {
    let Value::Object(obj) = value else {
        let found = kind(&value);
        return Err(error(
            file,
            location,
            None,
            format!("expected a JSON object (an event), found {found}"),
        ));
    };
    validate_event(obj, &RoomSource::None).map_err(|fe| fe.at(file, location))
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A validation error before it is given a file and a location.
#[derive(Debug)]
struct FieldError {
    field: Option<String>,
    message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    fn at(self, file: &str, location: Location) -> ParseError {
        error(file, location, self.field, self.message)
    }
}

fn error(file: &str, location: Location, field: Option<String>, message: String) -> ParseError {
    ParseError {
        file: file.to_owned(),
        location,
        field,
        message,
    }
}

/// The JSON kind of a value, for "found ..." in messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// serde_json's message without its trailing " at line L column C".
fn serde_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(message) => message.to_owned(),
        None => full,
    }
}

fn is_syntax(e: &serde_json::Error) -> bool {
    matches!(
        e.classify(),
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof
    )
}

fn is_json_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn count_newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}
