//! What of an event's content survives its redaction.

use serde_json::{Map, Value};

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
