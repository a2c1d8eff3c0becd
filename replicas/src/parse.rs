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

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

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

/// The content keys that survive redaction of an event of `event_type`.
///
/// `m.room.member`: `membership`, `join_authorised_via_users_server`; `m.room.create`: all;
/// `m.room.join_rules`: `join_rule`, `allow`; `m.room.power_levels`: `ban`, `events`,
/// `events_default`, `invite`, `kick`, `redact`, `state_default`, `users`, `users_default`;
/// `m.room.history_visibility`: `history_visibility`; every other type: none.
pub fn redact_content(event_type: &str, content: &Map<String, Value>) -> Map<String, Value> {
    let keep: &[&str] = match event_type {
        "m.room.create" => return content.clone(),
        "m.room.member" => &["membership", "join_authorised_via_users_server"],
        "m.room.join_rules" => &["join_rule", "allow"],
        "m.room.power_levels" => &[
            "ban",
            "events",
            "events_default",
            "invite",
            "kick",
            "redact",
            "state_default",
            "users",
            "users_default",
        ],
        "m.room.history_visibility" => &["history_visibility"],
        _ => &[],
    };
    content
        .iter()
        .filter(|(key, _)| keep.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
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

// ---------------------------------------------------------------------------------------------
// NDJSON

/// Non-blank lines with their 1-based numbers.
fn non_blank_lines(text: &str) -> impl Iterator<Item = (u64, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, line)| (i as u64 + 1, line))
        .filter(|(_, line)| !line.trim_matches(is_json_ws).is_empty())
}

fn parses_as_object(line: &str) -> bool {
    line.trim_start_matches(is_json_ws).starts_with('{')
        && serde_json::from_str::<IgnoredAny>(line).is_ok()
}

fn first_line_is_object(text: &str) -> bool {
    non_blank_lines(text)
        .next()
        .is_some_and(|(_, line)| parses_as_object(line))
}

/// Whether a file that is not one valid JSON value is meant as NDJSON: its first non-blank
/// line starts an object on that line, and that line or the next non-blank one is a whole
/// JSON object by itself (pretty-printed JSON never puts a whole non-empty object on a line
/// after a line that opens one).
fn looks_like_ndjson(text: &str) -> bool {
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

fn parse_ndjson(file: &str, text: &str) -> Result<Vec<SourceItem>, ParseError> {
    let mut items = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if let Some(item) = parse_line(file, i as u64 + 1, line)? {
            items.push(item);
        }
    }
    Ok(items)
}

// ---------------------------------------------------------------------------------------------
// Event validation

/// Where an event's `room_id` comes from when it lacks one.
enum RoomSource {
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
fn validate_event(
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

// ---------------------------------------------------------------------------------------------
// Manifest validation

fn is_user_id(id: &str) -> bool {
    id.strip_prefix('@')
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(localpart, server)| !localpart.is_empty() && !server.is_empty())
}

fn parse_manifest(instances: Value) -> Result<Vec<ManifestEntry>, FieldError> {
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

// ---------------------------------------------------------------------------------------------
// Streaming reader of whole files

/// Shared state of one streaming parse: the first validation error, and where the reader is
/// (to place JSON syntax errors).
struct Ctx<'f> {
    file: &'f str,
    failure: RefCell<Option<ParseError>>,
    /// The array element being read, when inside an event array.
    index: Cell<Option<u64>>,
    /// The top-level field being read, when inside one.
    field: Cell<Option<&'static str>>,
}

impl<'f> Ctx<'f> {
    fn new(file: &'f str) -> Self {
        Ctx {
            file,
            failure: RefCell::new(None),
            index: Cell::new(None),
            field: Cell::new(None),
        }
    }

    /// Records a validation error and returns the serde error that aborts the parse.
    fn fail<E: de::Error>(&self, err: ParseError) -> E {
        *self.failure.borrow_mut() = Some(err);
        E::custom("invalid source data")
    }

    /// Turns the error that aborted the parse into a [`ParseError`].
    fn convert(&self, e: serde_json::Error) -> ParseError {
        if let Some(err) = self.failure.borrow_mut().take() {
            return err;
        }
        let message = serde_message(&e);
        if let Some(i) = self.index.get() {
            return error(
                self.file,
                Location::Index(i),
                None,
                format!(
                    "invalid JSON: {message} at line {} column {}",
                    e.line(),
                    e.column()
                ),
            );
        }
        let field = self.field.get().map(str::to_owned);
        let message = if is_syntax(&e) {
            format!("invalid JSON: {message} at column {}", e.column())
        } else {
            message
        };
        error(self.file, Location::Line(e.line() as u64), field, message)
    }
}

/// Events read from one array, with those whose room is still to be filled in.
#[derive(Default)]
struct ArrayOut {
    events: Vec<Event>,
    /// Positions in `events` of events that lacked `room_id`.
    lacking: Vec<usize>,
    /// The array index of the first element (kept or not) that lacked `room_id`.
    first_lacking: Option<u64>,
}

fn read_events<'de, A: SeqAccess<'de>>(
    ctx: &Ctx<'_>,
    mut seq: A,
    room: &RoomSource,
) -> Result<ArrayOut, A::Error> {
    let mut out = ArrayOut::default();
    if let Some(n) = seq.size_hint() {
        out.events.reserve(n);
    }
    let mut i = 0u64;
    loop {
        ctx.index.set(Some(i));
        let Some(value) = seq.next_element::<Value>()? else {
            break;
        };
        let result = match value {
            Value::Object(obj) => {
                let lacking = matches!(room, RoomSource::Deferred) && !obj.contains_key("room_id");
                if lacking && out.first_lacking.is_none() {
                    out.first_lacking = Some(i);
                }
                validate_event(obj, room).map(|ev| ev.map(|ev| (ev, lacking)))
            }
            other => Err(FieldError {
                field: None,
                message: format!("expected an event object, found {}", kind(&other)),
            }),
        };
        match result {
            Ok(Some((event, lacking))) => {
                if lacking {
                    out.lacking.push(out.events.len());
                }
                out.events.push(event);
            }
            Ok(None) => {}
            Err(fe) => return Err(ctx.fail(fe.at(ctx.file, Location::Index(i)))),
        }
        i += 1;
    }
    ctx.index.set(None);
    Ok(out)
}

/// The first JSON value of a file, read with event arrays validated on the fly.
enum Top {
    Array(ArrayOut),
    Object(Box<TopObject>),
}

/// A top-level object: the container fields apart, every other field in `rest`.
struct TopObject {
    state: Option<ArrayOut>,
    events: Option<ArrayOut>,
    room_id: Option<Value>,
    instances: Option<Value>,
    rest: Map<String, Value>,
}

struct TopSeed<'c, 'f> {
    ctx: &'c Ctx<'f>,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_> {
    type Value = Top;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Top, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_> {
    type Value = Top;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of events or a JSON object (top level)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Top, A::Error> {
        read_events(self.ctx, seq, &RoomSource::None).map(Top::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let (mut state, mut events, mut room_id, mut instances) = (None, None, None, None);
        let mut rest = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "state" | "events" => {
                    let field = if key == "state" { "state" } else { "events" };
                    let room = match &room_id {
                        Some(Value::String(r)) => RoomSource::Known(r.clone()),
                        _ => RoomSource::Deferred,
                    };
                    self.ctx.field.set(Some(field));
                    let out = map.next_value_seed(ArraySeed {
                        ctx: self.ctx,
                        room,
                    })?;
                    self.ctx.field.set(None);
                    if field == "state" {
                        state = Some(out);
                    } else {
                        events = Some(out);
                    }
                }
                "room_id" => room_id = Some(map.next_value::<Value>()?),
                "instances" => instances = Some(map.next_value::<Value>()?),
                _ => {
                    let value = map.next_value::<Value>()?;
                    rest.insert(key, value);
                }
            }
        }
        Ok(Top::Object(Box::new(TopObject {
            state,
            events,
            room_id,
            instances,
            rest,
        })))
    }
}

struct ArraySeed<'c, 'f> {
    ctx: &'c Ctx<'f>,
    room: RoomSource,
}

impl<'de> DeserializeSeed<'de> for ArraySeed<'_, '_> {
    type Value = ArrayOut;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ArrayOut, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ArraySeed<'_, '_> {
    type Value = ArrayOut;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ArrayOut, A::Error> {
        read_events(self.ctx, seq, &self.room)
    }
}

fn events_to_items(events: Vec<Event>) -> Vec<SourceItem> {
    events.into_iter().map(SourceItem::Event).collect()
}

/// Turns the first (and only) JSON value of a file into items.
fn finish_top(file: &str, text: &str, top: Top) -> Result<Vec<SourceItem>, ParseError> {
    let TopObject {
        state,
        events,
        room_id,
        instances,
        rest,
    } = match top {
        Top::Array(out) => return Ok(events_to_items(out.events)),
        Top::Object(object) => *object,
    };
    if let Some(instances) = instances {
        if state.is_some() || events.is_some() {
            return Err(error(
                file,
                Location::Whole,
                Some("instances".into()),
                "a manifest cannot also hold events (\"state\" or \"events\")".into(),
            ));
        }
        let entries = parse_manifest(instances).map_err(|fe| fe.at(file, Location::Whole))?;
        return Ok(vec![SourceItem::Manifest(entries)]);
    }
    let array = match (state, events) {
        (Some(_), Some(_)) => {
            return Err(error(
                file,
                Location::Whole,
                Some("events".into()),
                "unexpected alongside \"state\": a file holds one event array".into(),
            ));
        }
        (Some(array), None) | (None, Some(array)) => array,
        (None, None) => return single_event(file, text, room_id, rest),
    };
    let file_room = match room_id {
        None => None,
        Some(Value::String(r)) => Some(r),
        Some(other) => {
            return Err(error(
                file,
                Location::Whole,
                Some("room_id".into()),
                format!("expected a string, found {}", kind(&other)),
            ));
        }
    };
    let mut out = array;
    match (file_room, out.first_lacking) {
        (_, None) => {}
        (None, Some(i)) => {
            return Err(error(
                file,
                Location::Index(i),
                Some("room_id".into()),
                "missing (required string)".into(),
            ));
        }
        (Some(r), Some(_)) => {
            for &pos in &out.lacking {
                out.events[pos].room_id.clone_from(&r);
            }
        }
    }
    Ok(events_to_items(out.events))
}

/// A file whose content is one JSON object that is neither a manifest nor an event array: an
/// event (NDJSON with one record).
fn single_event(
    file: &str,
    text: &str,
    room_id: Option<Value>,
    mut obj: Map<String, Value>,
) -> Result<Vec<SourceItem>, ParseError> {
    if !obj.contains_key("event_id") && !obj.contains_key("type") {
        return Err(error(
            file,
            Location::Whole,
            None,
            "unrecognised JSON object: expected an event, a manifest {\"instances\": [...]}, \
             {\"state\": [...]} or {\"room_id\": ..., \"events\": [...]}"
                .into(),
        ));
    }
    if let Some(room_id) = room_id {
        obj.insert("room_id".into(), room_id);
    }
    let line = non_blank_lines(text).next().map_or(1, |(n, _)| n);
    let event =
        validate_event(obj, &RoomSource::None).map_err(|fe| fe.at(file, Location::Line(line)))?;
    Ok(event.map(SourceItem::Event).into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(id: &str, ty: &str, sk: Option<&str>) -> Value {
        let mut v = json!({
            "event_id": id, "type": ty, "room_id": "!r:x", "sender": "@a:x",
            "origin_server_ts": 5, "content": {"membership": "join", "displayname": "A"}
        });
        if let Some(sk) = sk {
            v["state_key"] = json!(sk);
        }
        v
    }

    fn events(items: &[SourceItem]) -> Vec<&Event> {
        items
            .iter()
            .map(|item| match item {
                SourceItem::Event(e) => e,
                SourceItem::Manifest(_) => panic!("unexpected manifest"),
            })
            .collect()
    }

    fn err(file: &str, text: &str) -> ParseError {
        parse_file(file, text.as_bytes()).expect_err("expected an error")
    }

    #[test]
    fn array_shape() {
        let text = json!([
            ev("$1", "m.room.member", Some("@a:x")),
            ev("$2", "m.room.message", None)
        ])
        .to_string();
        let items = parse_file("a.json", text.as_bytes()).unwrap();
        let evs = events(&items);
        assert_eq!(evs.len(), 1);
        let e = evs[0];
        assert_eq!(e.event_id, "$1");
        assert_eq!(e.room_id, "!r:x");
        assert_eq!(e.event_type, "m.room.member");
        assert_eq!(e.state_key.as_deref(), Some("@a:x"));
        assert_eq!(e.sender, "@a:x");
        assert_eq!(e.origin_server_ts, Some(5));
        assert_eq!(e.content["membership"], "join");
        assert!(!e.redacted_because);
        assert_eq!(e.redacts, None);
    }

    #[test]
    fn pretty_array_and_empty_array() {
        let text =
            serde_json::to_string_pretty(&json!([ev("$1", "m.room.topic", Some(""))])).unwrap();
        assert_eq!(parse_file("a.json", text.as_bytes()).unwrap().len(), 1);
        assert!(parse_file("a.json", b"[]").unwrap().is_empty());
    }

    #[test]
    fn state_shape() {
        let text = json!({"state": [ev("$1", "m.room.name", Some("")), ev("$2", "m.room.topic", Some(""))]});
        let items = parse_file("s.json", text.to_string().as_bytes()).unwrap();
        assert_eq!(
            events(&items)
                .iter()
                .map(|e| e.event_id.as_str())
                .collect::<Vec<_>>(),
            ["$1", "$2"]
        );
    }

    #[test]
    fn room_dump_shape_fills_room_id() {
        let mut lacking = ev("$1", "m.room.name", Some(""));
        lacking.as_object_mut().unwrap().remove("room_id");
        let own = ev("$2", "m.room.topic", Some(""));
        // room_id before and after the events array.
        for text in [
            format!(r#"{{"room_id": "!dump:x", "events": [{lacking}, {own}]}}"#),
            format!(r#"{{"events": [{lacking}, {own}], "room_id": "!dump:x"}}"#),
        ] {
            let items = parse_file("d.json", text.as_bytes()).unwrap();
            let evs = events(&items);
            assert_eq!(evs[0].room_id, "!dump:x");
            assert_eq!(evs[1].room_id, "!r:x");
        }
        // Without a file room, the event lacking room_id is invalid.
        let e = err("d.json", &format!(r#"{{"events": [{own}, {lacking}]}}"#));
        assert_eq!(
            (e.location, e.field.as_deref()),
            (Location::Index(1), Some("room_id"))
        );
        // An event's own room_id must be a string.
        let e = err(
            "d.json",
            r#"{"room_id": "!d:x", "events": [{"event_id": "$1", "type": "t", "room_id": 3}]}"#,
        );
        assert_eq!(
            e.to_string(),
            r#"d.json: index 0: field "room_id": expected a string, found number"#
        );
        let e = err("d.json", r#"{"room_id": 7, "events": []}"#);
        assert_eq!(e.field.as_deref(), Some("room_id"));
        let e = err("d.json", r#"{"room_id": "!d:x", "events": 7}"#);
        assert_eq!(e.field.as_deref(), Some("events"));
        assert!(e.message.contains("expected an array of events"), "{e}");
    }

    #[test]
    fn manifest_shape() {
        let text = r#"{"instances": [
            {"id": "@draupnir:example.org", "watch": ["!list:example.org"], "protect": ["!room:example.org", "!v12room"]},
            {"id": "@old:example.org", "remove": true, "watch": 5},
            {"id": "@bare:example.org"}
        ]}"#;
        let items = parse_file("m.json", text.as_bytes()).unwrap();
        assert_eq!(
            items,
            vec![SourceItem::Manifest(vec![
                ManifestEntry::Set {
                    id: "@draupnir:example.org".into(),
                    watch: vec!["!list:example.org".into()],
                    protect: vec!["!room:example.org".into(), "!v12room".into()],
                },
                ManifestEntry::Remove {
                    id: "@old:example.org".into()
                },
                ManifestEntry::Set {
                    id: "@bare:example.org".into(),
                    watch: vec![],
                    protect: vec![]
                },
            ])]
        );
    }

    #[test]
    fn manifest_invalid() {
        let cases = [
            (r#"{"instances": 3}"#, "instances"),
            (r#"{"instances": [5]}"#, "instances[0]"),
            (r#"{"instances": [{"watch": []}]}"#, "instances[0].id"),
            (
                r#"{"instances": [{"id": "draupnir:x"}]}"#,
                "instances[0].id",
            ),
            (
                r#"{"instances": [{"id": "@draupnir:"}]}"#,
                "instances[0].id",
            ),
            (r#"{"instances": [{"id": "@:x"}]}"#, "instances[0].id"),
            (
                r##"{"instances": [{"id": "@a:x"}, {"id": "@b:x", "watch": ["#alias:x"]}]}"##,
                "instances[1].watch[0]",
            ),
            (
                r#"{"instances": [{"id": "@a:x", "protect": ["!a:x", 4]}]}"#,
                "instances[0].protect[1]",
            ),
            (
                r#"{"instances": [{"id": "@a:x", "protect": "!a:x"}]}"#,
                "instances[0].protect",
            ),
            (
                r#"{"instances": [{"id": "@a:x", "remove": "yes"}]}"#,
                "instances[0].remove",
            ),
        ];
        for (text, field) in cases {
            let e = err("m.json", text);
            assert_eq!(e.field.as_deref(), Some(field), "{text}: {e}");
        }
        let e = err(
            "m.json",
            r##"{"instances": [{"id": "@b:x", "watch": ["#alias:x"]}]}"##,
        );
        assert_eq!(
            e.to_string(),
            r##"m.json: field "instances[0].watch[0]": expected a room ID starting with '!', found "#alias:x""##
        );
    }

    #[test]
    fn ndjson_with_blank_lines_and_manifests() {
        let text = format!(
            "{}\n\n   \r\n{}\r\n{}\n{}\n",
            ev("$1", "m.room.member", Some("@a:x")),
            r#"{"instances": [{"id": "@d:x", "watch": ["!l:x"]}]}"#,
            ev("$2", "m.room.message", None),
            ev("$3", "m.room.member", Some("@b:x")),
        );
        let items = parse_file("s.ndjson", text.as_bytes()).unwrap();
        assert_eq!(items.len(), 3);
        assert!(matches!(&items[0], SourceItem::Event(e) if e.event_id == "$1"));
        assert!(matches!(&items[1], SourceItem::Manifest(m) if m.len() == 1));
        assert!(matches!(&items[2], SourceItem::Event(e) if e.event_id == "$3"));
    }

    #[test]
    fn single_event_object_is_one_line_ndjson() {
        let text = format!(
            "\n{}\n",
            serde_json::to_string_pretty(&ev("$1", "m.room.member", Some("@a:x"))).unwrap()
        );
        assert_eq!(parse_file("e.json", text.as_bytes()).unwrap().len(), 1);
        let mut bad = ev("$1", "m.room.member", Some("@a:x"));
        bad["sender"] = json!(1);
        let e = err("e.json", &format!("\n{bad}"));
        assert_eq!(
            e.to_string(),
            r#"e.json: line 2: field "sender": expected a string, found number"#
        );
        let e = err("e.json", r#"{"rooms": {}}"#);
        assert!(e.message.starts_with("unrecognised JSON object"), "{e}");
    }

    #[test]
    fn parse_line_cases() {
        assert_eq!(parse_line("s", 1, "  \r").unwrap(), None);
        assert_eq!(
            parse_line("s", 1, &ev("$2", "m.room.message", None).to_string()).unwrap(),
            None
        );
        assert!(matches!(
            parse_line("s", 1, &ev("$2", "m.room.name", Some("")).to_string()).unwrap(),
            Some(SourceItem::Event(_))
        ));
        let e = parse_line("s", 4, "[1]").unwrap_err();
        assert_eq!(e.location, Location::Line(4));
        let e = parse_line("x.ndjson", 7, r#"{"event_id": "$1""#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.ndjson: line 7: invalid JSON: EOF while parsing an object at column 17"
        );
    }

    #[test]
    fn missing_fields() {
        for field in ["event_id", "type", "room_id", "sender", "content"] {
            let mut v = ev("$1", "m.room.name", Some(""));
            v.as_object_mut().unwrap().remove(field);
            let e = err(
                "a.json",
                &json!([ev("$0", "m.room.topic", Some("")), v]).to_string(),
            );
            assert_eq!(e.location, Location::Index(1));
            assert_eq!(e.field.as_deref(), Some(field));
            assert!(e.message.starts_with("missing"), "{e}");
        }
    }

    #[test]
    fn wrong_types() {
        let cases = [
            ("event_id", json!(1), "expected a string, found number"),
            ("type", json!(null), "expected a string, found null"),
            ("room_id", json!(["!r:x"]), "expected a string, found array"),
            ("sender", json!({}), "expected a string, found object"),
            ("content", json!("x"), "expected an object, found string"),
            ("state_key", json!(null), "expected a string, found null"),
            ("state_key", json!(3), "expected a string, found number"),
            (
                "origin_server_ts",
                json!(1.5),
                "expected an integer, found 1.5",
            ),
            (
                "origin_server_ts",
                json!("12"),
                "expected an integer, found string",
            ),
            ("origin_server_ts", json!(u64::MAX), "out of range"),
            ("unsigned", json!([]), "expected an object, found array"),
        ];
        for (field, value, message) in cases {
            let mut v = ev("$1", "m.room.name", Some(""));
            v[field] = value;
            let e = err("events.json", &json!([v]).to_string());
            assert_eq!(e.field.as_deref(), Some(field));
            assert!(e.message.contains(message), "{field}: {e}");
        }
        let mut v = ev("$1", "m.room.name", Some(""));
        v["sender"] = json!(3);
        let ok = ev("$0", "m.room.name", Some(""));
        let e = err("events.json", &json!([ok, ok, ok, v]).to_string());
        assert_eq!(
            e.to_string(),
            r#"events.json: index 3: field "sender": expected a string, found number"#
        );
        let e = err("events.json", "[5]");
        assert_eq!((e.location, e.field.clone()), (Location::Index(0), None));
        assert!(e.message.contains("expected an event object, found number"));
    }

    #[test]
    fn ts_null_or_absent_and_unsigned_null() {
        let mut a = ev("$1", "m.room.name", Some(""));
        a["origin_server_ts"] = Value::Null;
        a["unsigned"] = Value::Null;
        let mut b = ev("$2", "m.room.name", Some(""));
        b.as_object_mut().unwrap().remove("origin_server_ts");
        b["unsigned"] = json!({"redacted_because": {"event_id": "$r"}});
        let mut c = ev("$3", "m.room.name", Some(""));
        c["unsigned"] = json!({"redacted_because": null, "age": 3});
        let c = c;
        let items = parse_file("a.json", json!([a, b, c]).to_string().as_bytes()).unwrap();
        let evs = events(&items);
        assert_eq!(evs[0].origin_server_ts, None);
        assert_eq!(evs[1].origin_server_ts, None);
        assert!(!evs[0].redacted_because);
        assert!(evs[1].redacted_because);
        assert!(!evs[2].redacted_because);
    }

    #[test]
    fn redactions() {
        let mut top = ev("$r1", "m.room.redaction", None);
        top["redacts"] = json!("$1");
        let mut v11 = ev("$r2", "m.room.redaction", None);
        v11["content"] = json!({"redacts": "$2"});
        let mut both = ev("$r3", "m.room.redaction", None);
        both["redacts"] = json!("$top");
        both["content"] = json!({"redacts": "$content"});
        let mut none = ev("$r4", "m.room.redaction", None);
        none["content"] = json!({"redacts": 5});
        let items = parse_file(
            "r.json",
            json!([top, v11, both, none]).to_string().as_bytes(),
        )
        .unwrap();
        let evs = events(&items);
        assert_eq!(evs.len(), 3);
        assert_eq!(
            evs.iter()
                .map(|e| e.redacts.as_deref().unwrap())
                .collect::<Vec<_>>(),
            ["$1", "$2", "$top"]
        );
        assert!(evs.iter().all(|e| e.state_key.is_none()));
    }

    #[test]
    fn events_without_state_key_dropped() {
        let text = json!([
            ev("$1", "m.room.message", None),
            ev("$2", "m.room.member", Some("@a:x")),
            ev("$3", "m.reaction", None)
        ]);
        let items = parse_file("a.json", text.to_string().as_bytes()).unwrap();
        assert_eq!(
            events(&items)
                .iter()
                .map(|e| e.event_id.as_str())
                .collect::<Vec<_>>(),
            ["$2"]
        );
        // Dropped events are still validated.
        let mut bad = ev("$1", "m.room.message", None);
        bad.as_object_mut().unwrap().remove("sender");
        let e = err("a.json", &json!([bad]).to_string());
        assert_eq!(e.field.as_deref(), Some("sender"));
    }

    #[test]
    fn invalid_json_in_array_names_index_and_line() {
        let text = "[\n  {\"event_id\": \"$1\", \"type\": \"m.room.name\", \"room_id\": \"!r:x\", \"sender\": \"@a:x\", \"state_key\": \"\", \"content\": {}},\n  {\"event_id\": \"$2\",\n   \"type\": ";
        let e = err("a.json", text);
        assert_eq!(e.location, Location::Index(1));
        assert!(
            e.message
                .starts_with("invalid JSON: EOF while parsing a value at line 4"),
            "{e}"
        );
        let good = ev("$1", "m.room.name", Some(""));
        let e = err("a.json", &format!("[{good} {good}]"));
        assert_eq!(e.location, Location::Index(1));
        let e = err("s.json", &format!("{{\"state\": [{good}, {{\"x\": ]}}"));
        assert_eq!(e.location, Location::Index(1));
    }

    #[test]
    fn invalid_json_outside_arrays() {
        let e = err("f.json", "{\n  \"instances\": [\n    {\"id\": }\n");
        assert_eq!(e.location, Location::Line(3));
        assert!(
            e.message
                .starts_with("invalid JSON: expected value at column"),
            "{e}"
        );
        let e = err("f.json", "{\"event_id\": \"$1\", \"type\" \"x\"}");
        assert_eq!(
            e.to_string(),
            "f.json: line 1: invalid JSON: expected `:` at column 27"
        );
        // A complete array followed by garbage is not NDJSON.
        let e = err("f.json", "[\n]\n]\n");
        assert_eq!(e.location, Location::Line(3));
        assert!(e.message.contains("trailing characters"), "{e}");
        let e = err("f.json", "42");
        assert!(
            e.message
                .contains("expected a JSON array of events or a JSON object"),
            "{e}"
        );
    }

    #[test]
    fn invalid_json_in_ndjson_names_line() {
        let good = ev("$1", "m.room.name", Some("")).to_string();
        let text = format!("{good}\n\n{good}\n{{\"event_id\": \"$9\", \"type\":\n{good}\n");
        let e = err("x.ndjson", &text);
        assert_eq!(e.location, Location::Line(4));
        assert!(
            e.message
                .starts_with("invalid JSON: EOF while parsing a value at column"),
            "{e}"
        );
        // The first line broken, the rest fine.
        let text = format!("{{\"event_id\": \n{good}\n{good}\n");
        let e = err("x.ndjson", &text);
        assert_eq!(e.location, Location::Line(1));
        // A validation error on a later line.
        let text = format!(
            "{good}\n{}\n",
            json!({"event_id": "$2", "type": "t", "room_id": "!r:x", "sender": "@a:x", "content": [], "state_key": ""})
        );
        let e = err("x.ndjson", &text);
        assert_eq!(
            e.to_string(),
            r#"x.ndjson: line 2: field "content": expected an object, found array"#
        );
    }

    #[test]
    fn invalid_utf8_and_empty() {
        let mut bytes = b"[\n{\"event_id\": \"$1\",\n \"type\": \"".to_vec();
        let at = bytes.len();
        bytes.extend_from_slice(b"\xff\"}]");
        let e = parse_file("f.json", &bytes).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("f.json: invalid UTF-8 at byte {at} (line 3)")
        );
        for empty in ["", "  \n\r\n\t"] {
            let e = err("e.json", empty);
            assert_eq!(e.to_string(), "e.json: empty file: no events");
        }
        // A UTF-8 byte order mark is skipped.
        let text = format!("\u{feff}{}", json!([ev("$1", "m.room.name", Some(""))]));
        assert_eq!(parse_file("b.json", text.as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn mixed_or_ambiguous_objects() {
        let e = err("m.json", r#"{"instances": [], "events": []}"#);
        assert_eq!(e.field.as_deref(), Some("instances"));
        let e = err("m.json", r#"{"state": [], "events": []}"#);
        assert_eq!(e.field.as_deref(), Some("events"));
    }

    #[test]
    fn redact_content_keys() {
        let content = |keys: &[&str]| -> Map<String, Value> {
            keys.iter().map(|k| (k.to_string(), json!(1))).collect()
        };
        let keys = |m: Map<String, Value>| -> Vec<String> {
            let mut k: Vec<String> = m.keys().cloned().collect();
            k.sort();
            k
        };
        let member = content(&[
            "membership",
            "displayname",
            "avatar_url",
            "join_authorised_via_users_server",
        ]);
        assert_eq!(
            keys(redact_content("m.room.member", &member)),
            ["join_authorised_via_users_server", "membership"]
        );
        let create = content(&["creator", "room_version", "m.federate", "predecessor"]);
        assert_eq!(redact_content("m.room.create", &create), create);
        let join_rules = content(&["join_rule", "allow", "other"]);
        assert_eq!(
            keys(redact_content("m.room.join_rules", &join_rules)),
            ["allow", "join_rule"]
        );
        let pl_keys = [
            "ban",
            "events",
            "events_default",
            "invite",
            "kick",
            "redact",
            "state_default",
            "users",
            "users_default",
        ];
        let mut pl = content(&pl_keys);
        pl.insert("notifications".into(), json!({"room": 50}));
        assert_eq!(keys(redact_content("m.room.power_levels", &pl)), pl_keys);
        let hv = content(&["history_visibility", "x"]);
        assert_eq!(
            keys(redact_content("m.room.history_visibility", &hv)),
            ["history_visibility"]
        );
        let rule = content(&["entity", "recommendation", "reason"]);
        assert!(redact_content("m.policy.rule.user", &rule).is_empty());
        assert!(redact_content("m.room.server_acl", &content(&["allow", "deny"])).is_empty());
    }
}
