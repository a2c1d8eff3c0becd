//! The events a homeserver source brings (a transaction, a room's state, a sync response) as
//! [`Received`]: state events and redactions, each validated as `prr ingest` validates a
//! file's; an invalid one becomes a reject instead of failing the rest.

use prr_replicas::{Location, Received, parse_event, sha256_base64};
use serde_json::{Map, Value};

fn string_field(o: Option<&Map<String, Value>>, field: &str) -> Option<String> {
    o.and_then(|o| o.get(field))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The events prr keeps: state events (with a `state_key`) and redactions, each validated
/// as `prr ingest` validates a file's events. An invalid one becomes [`Received::Invalid`]
/// (a reject) instead of failing the transaction. Other events (messages, ...) are left out.
pub(crate) fn received(txn_id: &str, events: Vec<Value>) -> Vec<Received> {
    let file = format!("transaction {txn_id}");
    let mut out = Vec::new();
    for (i, ev) in events.into_iter().enumerate() {
        let obj = ev.as_object();
        let kept = match obj {
            Some(o) => {
                o.contains_key("state_key")
                    || o.get("type").and_then(Value::as_str) == Some("m.room.redaction")
            }
            None => true,
        };
        if !kept {
            continue;
        }
        let event_id = string_field(obj, "event_id")
            .unwrap_or_else(|| format!("~sha256:{}", sha256_base64(&ev.to_string())));
        let invalid = |reason: String| Received::Invalid {
            room_id: string_field(obj, "room_id").unwrap_or_default(),
            event_id: event_id.clone(),
            event_type: string_field(obj, "type").unwrap_or_default(),
            state_key: string_field(obj, "state_key").unwrap_or_default(),
            reason,
        };
        let got = parse_event(&file, Location::Index(i as u64), ev.clone());
        match got {
            Ok(Some(event)) => out.push(Received::Valid(event)),
            // A redaction without a usable `redacts`: ignored, as by `prr ingest`.
            Ok(None) => {}
            Err(e) => {
                let reason = match &e.field {
                    Some(f) => format!("field \"{f}\": {}", e.message),
                    None => e.message.clone(),
                };
                out.push(invalid(reason));
            }
        }
    }
    out
}
