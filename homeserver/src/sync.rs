//! A `/sync` response, reduced to what prr ingests.

use serde_json::{Map, Value};

/// What one `/sync` response brings prr: per room, the state events and redactions in the
/// order they apply, the account data, and the token to sync from next.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncBatch {
    /// The `since` of the next sync.
    pub next_batch: String,
    /// Joined and left rooms with events or a gap (a `limited` timeline), by room id.
    pub rooms: Vec<RoomEvents>,
    /// Rooms the account is invited to, by room id.
    pub invited: Vec<String>,
    /// Global account data that changed: `(type, content)`.
    pub account_data: Vec<(String, Value)>,
}

/// The events of one room in a sync response that prr ingests.
#[derive(Clone, Debug, PartialEq)]
pub struct RoomEvents {
    /// The room.
    pub room_id: String,
    /// Whether the account left the room (or was kicked or banned) in this batch.
    pub left: bool,
    /// The room's `state` events (the state before the timeline, complete when the timeline
    /// was limited), then the timeline's state events and redactions, in order; each carries
    /// its `room_id` (sync leaves it out).
    pub events: Vec<Value>,
    /// Whether the timeline is `limited`: events between the previous sync and the timeline
    /// were left out. Their state is in `state`, but a redaction among them is in no part of
    /// the response ([`RoomEvents::add_redactions_of`] recovers those of the current state).
    pub limited: bool,
}

impl RoomEvents {
    /// Adds the redactions of `state` (the room's current state events, client format, as
    /// `GET /rooms/{room}/state` gives them): a redacted event carries its redaction in
    /// `unsigned.redacted_because`. After a limited timeline, this is how a redaction of a
    /// state event in the gap reaches prr (its target was seen before, so the redacted copy
    /// is a duplicate by event id; the redaction is not). Returns how many it added.
    pub fn add_redactions_of(&mut self, state: &[Value]) -> usize {
        let mut added = 0;
        for e in state {
            let because = (e.get("unsigned")).and_then(|u| u.get("redacted_because"));
            let Some(Value::Object(redaction)) = because else {
                continue;
            };
            let mut redaction = redaction.clone();
            redaction
                .entry("room_id")
                .or_insert_with(|| Value::String(self.room_id.clone()));
            self.events.push(Value::Object(redaction));
            added += 1;
        }
        added
    }
}

impl SyncBatch {
    /// Reads a `/sync` response body. Fails naming the first part that does not have the
    /// shape the Client-Server API gives it.
    pub fn from_response(v: &Value) -> Result<SyncBatch, String> {
        let next_batch = v
            .get("next_batch")
            .and_then(Value::as_str)
            .ok_or("no string `next_batch`")?
            .to_string();
        let mut batch = SyncBatch {
            next_batch,
            ..SyncBatch::default()
        };
        let rooms = v
            .get("rooms")
            .filter(|r| !r.is_null())
            .unwrap_or(&Value::Null);
        object_at(v, "rooms")?;
        for (section, left) in [("join", false), ("leave", true)] {
            let Some(section) = object_at(rooms, section)? else {
                continue;
            };
            for (room_id, room) in section {
                let room_events = room_events(room_id, room, left).map_err(|e| {
                    format!(
                        "rooms.{}.{room_id}: {e}",
                        if left { "leave" } else { "join" }
                    )
                })?;
                // A limited timeline of messages only still says there was a gap.
                if !room_events.events.is_empty() || left || room_events.limited {
                    batch.rooms.push(room_events);
                }
            }
        }
        batch.rooms.sort_by(|a, b| a.room_id.cmp(&b.room_id));
        if let Some(invite) = object_at(rooms, "invite")? {
            batch.invited = invite.keys().cloned().collect();
            batch.invited.sort();
        }
        if let Some(events) = object_at(v, "account_data")?.and_then(|a| a.get("events")) {
            let events = events
                .as_array()
                .ok_or("account_data.events is not an array")?;
            for e in events {
                let kind = e.get("type").and_then(Value::as_str);
                let content = e.get("content").filter(|c| c.is_object());
                if let (Some(kind), Some(content)) = (kind, content) {
                    batch.account_data.push((kind.to_string(), content.clone()));
                }
            }
        }
        Ok(batch)
    }

    /// Whether the batch brings nothing to ingest.
    pub fn is_empty(&self) -> bool {
        self.rooms.iter().all(|r| r.events.is_empty()) && self.account_data.is_empty()
    }

    /// Every event, room by room.
    pub fn events(&self) -> impl Iterator<Item = &Value> {
        self.rooms.iter().flat_map(|r| r.events.iter())
    }
}

/// `v[key]` as an object: `None` when absent or null, an error when of another type.
fn object_at<'a>(v: &'a Value, key: &str) -> Result<Option<&'a Map<String, Value>>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(format!("`{key}` is not an object")),
    }
}

fn room_events(room_id: &str, room: &Value, left: bool) -> Result<RoomEvents, String> {
    let mut events = Vec::new();
    let limited = (room.get("timeline").and_then(|t| t.get("limited"))) == Some(&Value::Bool(true));
    for (part, only_state) in [("state", false), ("timeline", true)] {
        let Some(list) = object_at(room, part)?.and_then(|p| p.get("events")) else {
            continue;
        };
        let list = list
            .as_array()
            .ok_or_else(|| format!("{part}.events is not an array"))?;
        for e in list {
            let is_state = e.get("state_key").is_some();
            let is_redaction = e.get("type").and_then(Value::as_str) == Some("m.room.redaction");
            if only_state && !is_state && !is_redaction {
                continue;
            }
            let mut e = e.clone();
            if let Value::Object(o) = &mut e {
                o.entry("room_id")
                    .or_insert_with(|| Value::String(room_id.to_string()));
            }
            events.push(e);
        }
    }
    Ok(RoomEvents {
        room_id: room_id.to_string(),
        left,
        events,
        limited,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn state_then_timeline_state_and_redactions_with_room_ids() {
        let response = json!({
            "next_batch": "s72_1",
            "account_data": {"events": [
                {"type": "org.matrix.mjolnir.protected_rooms", "content": {"rooms": ["!a:x"]}}
            ]},
            "rooms": {
                "join": {
                    "!b:x": {
                        "state": {"events": [
                            {"type": "m.room.create", "state_key": "", "event_id": "$1", "sender": "@c:x", "content": {}}
                        ]},
                        "timeline": {"limited": true, "events": [
                            {"type": "m.room.message", "event_id": "$2", "sender": "@c:x", "content": {"body": "hi"}},
                            {"type": "m.room.member", "state_key": "@u:x", "event_id": "$3", "sender": "@u:x", "content": {"membership": "join"}},
                            {"type": "m.room.redaction", "redacts": "$9", "event_id": "$4", "sender": "@c:x", "content": {}}
                        ]}
                    },
                    "!gap:x": {"timeline": {"limited": true, "events": [
                        {"type": "m.room.message", "event_id": "$7", "sender": "@c:x", "content": {}}
                    ]}},
                    "!quiet:x": {"timeline": {"events": [
                        {"type": "m.room.message", "event_id": "$5", "sender": "@c:x", "content": {}}
                    ]}}
                },
                "leave": {"!a:x": {"timeline": {"events": [
                    {"type": "m.room.member", "state_key": "@bot:x", "event_id": "$6", "sender": "@mod:x", "content": {"membership": "ban"}}
                ]}}},
                "invite": {"!i:x": {"invite_state": {"events": []}}}
            }
        });
        let b = SyncBatch::from_response(&response).unwrap();
        assert_eq!(b.next_batch, "s72_1");
        let ids: Vec<(&str, bool, Vec<&str>)> = (b.rooms.iter())
            .map(|r| {
                let events = r.events.iter().map(|e| e["event_id"].as_str().unwrap());
                (r.room_id.as_str(), r.left, events.collect())
            })
            .collect();
        assert_eq!(
            ids,
            [
                ("!a:x", true, vec!["$6"]),
                ("!b:x", false, vec!["$1", "$3", "$4"]),
                ("!gap:x", false, vec![])
            ]
        );
        assert!(b.events().all(|e| e["room_id"].is_string()));
        assert_eq!(b.events().next().unwrap()["room_id"], "!a:x");
        let limited: Vec<bool> = b.rooms.iter().map(|r| r.limited).collect();
        assert_eq!(limited, [false, true, true]);
        assert_eq!(b.invited, ["!i:x"]);
        assert_eq!(b.account_data.len(), 1);
        assert!(!b.is_empty());
    }

    #[test]
    fn the_redactions_of_a_state_after_a_gap() {
        let mut room = RoomEvents {
            room_id: "!r".into(),
            left: false,
            events: vec![],
            limited: true,
        };
        let redaction = json!({"type": "m.room.redaction", "event_id": "$red", "sender": "@m:x",
            "redacts": "$rule", "content": {"redacts": "$rule"}});
        let state = [
            json!({"type": "m.policy.rule.user", "state_key": "r1", "event_id": "$rule",
                "sender": "@m:x", "content": {}, "unsigned": {"redacted_by": "$red",
                "redacted_because": redaction}}),
            json!({"type": "m.room.create", "state_key": "", "event_id": "$c", "sender": "@m:x",
                "content": {}, "unsigned": {"redacted_because": null}}),
            json!({"type": "m.room.member", "state_key": "@m:x", "event_id": "$m",
                "sender": "@m:x", "content": {"membership": "join"}}),
        ];
        assert_eq!(room.add_redactions_of(&state), 1);
        let mut want = redaction;
        want["room_id"] = json!("!r");
        assert_eq!(room.events, [want]);
    }

    #[test]
    fn a_response_of_another_shape_is_an_error_naming_the_part() {
        for (v, expect) in [
            (json!({}), "next_batch"),
            (json!({"next_batch": "s", "rooms": []}), "`rooms`"),
            (
                json!({"next_batch": "s", "rooms": {"join": {"!r": {"state": {"events": {}}}}}}),
                "rooms.join.!r: state.events",
            ),
            (
                json!({"next_batch": "s", "account_data": {"events": 3}}),
                "account_data.events",
            ),
        ] {
            let e = SyncBatch::from_response(&v).unwrap_err();
            assert!(e.contains(expect), "{e}");
        }
        let empty = SyncBatch::from_response(&json!({"next_batch": "s"})).unwrap();
        assert!(empty.is_empty());
    }
}
