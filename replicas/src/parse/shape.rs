//! Streaming reader of whole files: the first JSON value of a file, with event arrays
//! validated element by element while they are read, and the file shape it gives (an event
//! array, `{"state": [...]}`, a room dump, a manifest or a single event).

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::event::{RoomSource, validate_event};
use super::manifest::parse_manifest;
use super::ndjson::non_blank_lines;
use super::{
    Event, FieldError, Location, ParseError, SourceItem, error, is_syntax, kind, serde_message,
};

/// Shared state of one streaming parse: the first validation error, and where the reader is
/// (to place JSON syntax errors).
pub(super) struct Ctx<'f> {
    file: &'f str,
    pub(super) failure: RefCell<Option<ParseError>>,
    /// The array element being read, when inside an event array.
    index: Cell<Option<u64>>,
    /// The top-level field being read, when inside one.
    field: Cell<Option<&'static str>>,
}

impl<'f> Ctx<'f> {
    pub(super) fn new(file: &'f str) -> Self {
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
    pub(super) fn convert(&self, e: serde_json::Error) -> ParseError {
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
pub(super) struct ArrayOut {
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
pub(super) enum Top {
    Array(ArrayOut),
    Object(Box<TopObject>),
}

/// A top-level object: the container fields apart, every other field in `rest`.
pub(super) struct TopObject {
    state: Option<ArrayOut>,
    events: Option<ArrayOut>,
    room_id: Option<Value>,
    instances: Option<Value>,
    rest: Map<String, Value>,
}

pub(super) struct TopSeed<'c, 'f> {
    pub(super) ctx: &'c Ctx<'f>,
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
pub(super) fn finish_top(file: &str, text: &str, top: Top) -> Result<Vec<SourceItem>, ParseError> {
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
