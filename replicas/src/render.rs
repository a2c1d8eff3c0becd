//! Records as the spec's JSON objects, and the keys `prr show` sorts them by.

use prr_engine::{Dictionary, Id, Quarantined, Status};
use serde_json::{Map, Value, json};

use crate::record::{Rec, RejectReason, Relation, Rule};

/// The reason of a ban whose rule gives none.
pub const NO_REASON: &str = "<no reason supplied>";

fn s(dict: &Dictionary, id: Id) -> Value {
    Value::String(dict.get(id))
}

fn opt(dict: &Dictionary, id: Option<Id>) -> Value {
    id.map(|i| s(dict, i)).unwrap_or(Value::Null)
}

fn rule_fields(dict: &Dictionary, r: &Rule, out: &mut Map<String, Value>) {
    out.insert("room_id".into(), s(dict, r.room));
    out.insert("kind".into(), json!(r.kind.as_str()));
    out.insert("state_key".into(), s(dict, r.state_key));
    out.insert("type".into(), s(dict, r.event_type));
    out.insert("event_id".into(), s(dict, r.event_id));
    out.insert("sender".into(), s(dict, r.sender));
    out.insert("match".into(), json!(r.matcher.as_str()));
    out.insert("entity".into(), opt(dict, r.entity));
    out.insert("sha256".into(), opt(dict, r.sha256));
    out.insert("recommendation".into(), s(dict, r.recommendation));
    out.insert("class".into(), json!(r.class.as_str()));
    out.insert("reason".into(), opt(dict, r.reason));
}

/// A record as the JSON object of its replica, with the spec's fields in the spec's order.
pub fn to_json(dict: &Dictionary, rec: &Rec) -> Value {
    let mut m = Map::new();
    match rec {
        Rec::RoomState(r) => {
            m.insert("room_id".into(), s(dict, r.room));
            m.insert("type".into(), s(dict, r.event_type));
            m.insert("state_key".into(), s(dict, r.state_key));
            m.insert("event_id".into(), s(dict, r.event_id));
            m.insert("sender".into(), s(dict, r.sender));
            m.insert(
                "origin_server_ts".into(),
                r.ts.map(Value::from).unwrap_or(Value::Null),
            );
            m.insert(
                "content".into(),
                dict.with(r.content, |c| {
                    serde_json::from_str(c).unwrap_or(Value::Null)
                }),
            );
            m.insert("redacted".into(), Value::Bool(r.redacted));
        }
        Rec::Instance {
            instance,
            relation,
            room,
        } => {
            m.insert("instance".into(), s(dict, *instance));
            let (rel, room) = match relation {
                Relation::Exists => ("exists", Value::Null),
                Relation::Watch => ("watch", s(dict, *room)),
                Relation::Protect => ("protect", s(dict, *room)),
            };
            m.insert("relation".into(), json!(rel));
            m.insert("room_id".into(), room);
        }
        Rec::Rule(r) => rule_fields(dict, r, &mut m),
        Rec::ListRule { instance, rule } => {
            m.insert("instance".into(), s(dict, *instance));
            rule_fields(dict, rule, &mut m);
        }
        Rec::Member {
            room,
            user,
            membership,
            displayname,
        } => {
            m.insert("room_id".into(), s(dict, *room));
            m.insert("user_id".into(), s(dict, *user));
            m.insert("membership".into(), json!(membership.as_str()));
            m.insert("displayname".into(), opt(dict, *displayname));
        }
        Rec::MemberSet {
            instance,
            user,
            rooms,
        } => {
            m.insert("instance".into(), s(dict, *instance));
            m.insert("user_id".into(), s(dict, *user));
            m.insert("rooms".into(), json!(rooms));
        }
        Rec::Match {
            instance,
            user,
            rule,
        } => {
            m.insert("instance".into(), s(dict, *instance));
            m.insert("user_id".into(), s(dict, *user));
            m.insert("room_id".into(), s(dict, rule.room));
            m.insert("kind".into(), json!(rule.kind.as_str()));
            m.insert("state_key".into(), s(dict, rule.state_key));
            m.insert("event_id".into(), s(dict, rule.event_id));
            m.insert("match".into(), json!(rule.matcher.as_str()));
            m.insert("entity".into(), opt(dict, rule.entity));
            m.insert("recommendation".into(), s(dict, rule.recommendation));
            m.insert("class".into(), json!(rule.class.as_str()));
            m.insert("reason".into(), opt(dict, rule.reason));
        }
        Rec::Ban {
            instance,
            room,
            user,
            rule,
        } => {
            m.insert("instance".into(), s(dict, *instance));
            m.insert("room_id".into(), s(dict, *room));
            m.insert("user_id".into(), s(dict, *user));
            m.insert("rule_room_id".into(), s(dict, rule.room));
            m.insert("rule_event_id".into(), s(dict, rule.event));
            m.insert(
                "reason".into(),
                (rule.reason)
                    .map(|r| s(dict, r))
                    .unwrap_or_else(|| json!(NO_REASON)),
            );
        }
        Rec::Acl { instance, deny } => {
            m.insert("instance".into(), s(dict, *instance));
            m.insert("allow".into(), json!(["*"]));
            m.insert(
                "deny".into(),
                Value::Array(deny.iter().map(|d| s(dict, *d)).collect()),
            );
            m.insert("allow_ip_literals".into(), Value::Bool(false));
        }
        Rec::AclSync {
            instance,
            room,
            in_sync,
        } => {
            m.insert("instance".into(), s(dict, *instance));
            m.insert("room_id".into(), s(dict, *room));
            m.insert("in_sync".into(), Value::Bool(*in_sync));
        }
        Rec::Reject(r) => {
            m.insert("room_id".into(), s(dict, r.room));
            m.insert("event_id".into(), s(dict, r.event_id));
            m.insert("type".into(), s(dict, r.event_type));
            m.insert("state_key".into(), s(dict, r.state_key));
            m.insert("replica".into(), json!(r.reason.replica()));
            let text = match r.reason {
                RejectReason::InvalidEvent(text) => s(dict, text),
                other => json!(other.message()),
            };
            m.insert("reason".into(), text);
        }
        Rec::SourceEvent { event, .. } | Rec::UntimedSourceEvent(event) => {
            m.insert("room_id".into(), s(dict, event.room));
            m.insert("event_id".into(), s(dict, event.event_id));
            m.insert("type".into(), s(dict, event.event_type));
            m.insert("state_key".into(), s(dict, event.state_key));
            m.insert("valid".into(), Value::Bool(event.invalid.is_none()));
            m.insert(
                "reason".into(),
                event.invalid.map(|r| s(dict, r)).unwrap_or(Value::Null),
            );
        }
        Rec::SourcePosition { source, position } => {
            m.insert("source".into(), s(dict, *source));
            m.insert("position".into(), s(dict, *position));
        }
        Rec::Outcome(o) => {
            m.insert("instance".into(), s(dict, o.instance));
            m.insert("room_id".into(), s(dict, o.room));
            m.insert("action".into(), json!(o.action.as_str()));
            m.insert("target".into(), s(dict, o.target));
            m.insert("status".into(), json!(o.status.as_str()));
            let error = o.error.map(|(errcode, message)| {
                json!({"errcode": dict.get(errcode), "error": dict.get(message)})
            });
            m.insert("error".into(), error.unwrap_or(Value::Null));
            m.insert("intent_seq".into(), json!(o.intent_seq));
            m.insert("attempts".into(), json!(o.attempts));
            m.insert("at".into(), json!(o.at));
        }
        Rec::Pending {
            instance,
            room,
            action,
            target,
        } => {
            m.insert("instance".into(), s(dict, *instance));
            m.insert("room_id".into(), s(dict, *room));
            m.insert("action".into(), json!(action.as_str()));
            m.insert("target".into(), s(dict, *target));
        }
    }
    Value::Object(m)
}

/// The JSON of `prr status --format json` (also the base of `prr serve`'s `GET /v1/status`):
/// `seq`, `replicas` (name, frontier, records, newest revision, logic version), `log`,
/// `store` (`store_path` as given), `store_bytes`, `rejects` (the records of `rejects`) and
/// `poisoned` (count and seqs).
pub fn status_json(st: &Status, store_path: &std::path::Path) -> Value {
    let rejects = (st.replicas.iter())
        .find(|r| r.name == "rejects")
        .map(|r| r.records)
        .unwrap_or(0);
    let replicas: Vec<Value> = (st.replicas.iter())
        .map(|r| {
            json!({
                "name": r.name,
                "frontier": r.frontier.0,
                "records": r.records,
                "newest_revision": r.newest_revision.map(|s| s.0),
                "logic_version": r.logic_version,
            })
        })
        .collect();
    let store = st.store.as_ref();
    json!({
        "seq": st.seq.0,
        "replicas": replicas,
        "log": {
            "entries": store.map(|s| s.log_entries).unwrap_or(0),
            "first_seq": store.and_then(|s| s.first_log_seq),
        },
        "store": store_path.display().to_string(),
        "store_bytes": store.map(|s| s.file_bytes).unwrap_or(0),
        "rejects": rejects,
        "poisoned": {
            "count": st.poisoned.len(),
            "seqs": st.poisoned.iter().map(|s| s.0).collect::<Vec<_>>(),
        },
    })
}

/// A quarantined (poisoned) source delta as `prr show poisoned` prints it:
/// `{"seq", "quarantined_at" (RFC 3339 UTC), "message"}`.
pub fn poisoned_json(q: &Quarantined) -> Value {
    json!({
        "seq": q.seq,
        "quarantined_at": utc(q.unix_ms),
        "message": q.message,
    })
}

/// A time in milliseconds since the Unix epoch as RFC 3339 UTC, `2026-12-05T13:01:02.345Z`.
fn utc(unix_ms: u64) -> String {
    let (days, ms) = (unix_ms / 86_400_000, unix_ms % 86_400_000);
    // Days to a civil date (Howard Hinnant's `civil_from_days`), from 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The key a record is sorted by in output: the spec's key fields, as text.
pub fn sort_key(dict: &Dictionary, rec: &Rec) -> Vec<String> {
    let t = |id: Id| dict.get(id);
    match rec {
        Rec::RoomState(r) => vec![t(r.room), t(r.event_type), t(r.state_key)],
        Rec::Instance {
            instance,
            relation,
            room,
        } => {
            let room = if *relation == Relation::Exists {
                String::new()
            } else {
                t(*room)
            };
            vec![t(*instance), format!("{relation:?}"), room]
        }
        Rec::Rule(r) => vec![t(r.room), r.kind.as_str().into(), t(r.state_key)],
        Rec::ListRule { instance, rule } => vec![
            t(*instance),
            t(rule.room),
            rule.kind.as_str().into(),
            t(rule.state_key),
        ],
        Rec::Member { room, user, .. } => vec![t(*room), t(*user)],
        Rec::MemberSet { instance, user, .. } => vec![t(*instance), t(*user)],
        Rec::Match {
            instance,
            user,
            rule,
        } => {
            vec![
                t(*instance),
                t(*user),
                t(rule.room),
                rule.kind.as_str().into(),
                t(rule.state_key),
            ]
        }
        Rec::Ban {
            instance,
            room,
            user,
            ..
        } => vec![t(*instance), t(*room), t(*user)],
        Rec::Acl { instance, .. } => vec![t(*instance)],
        Rec::AclSync { instance, room, .. } => vec![t(*instance), t(*room)],
        Rec::Reject(r) => {
            // The event ID only orders invalid events from a homeserver source that share the
            // rest (a missing type or state key); other rejects are unique without it.
            vec![
                t(r.room),
                t(r.event_type),
                t(r.state_key),
                r.reason.replica().into(),
                t(r.event_id),
            ]
        }
        Rec::SourceEvent { event, .. } | Rec::UntimedSourceEvent(event) => {
            vec![t(event.room), t(event.event_id)]
        }
        Rec::SourcePosition { source, .. } => vec![t(*source)],
        Rec::Outcome(o) => vec![
            t(o.instance),
            t(o.room),
            o.action.as_str().into(),
            t(o.target),
        ],
        Rec::Pending {
            instance,
            room,
            action,
            target,
        } => vec![t(*instance), t(*room), action.as_str().into(), t(*target)],
    }
}

/// Records as JSON objects, sorted by their keys (records repeated by their multiplicity).
pub fn render_sorted(dict: &Dictionary, rows: &[(Rec, isize)]) -> Vec<Value> {
    let mut keyed: Vec<(Vec<String>, Value)> = Vec::with_capacity(rows.len());
    for (rec, count) in rows {
        for _ in 0..(*count).max(0) {
            keyed.push((sort_key(dict, rec), to_json(dict, rec)));
        }
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, v)| v).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_writes_rfc_3339() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(1_764_940_862_345), "2025-12-05T13:21:02.345Z");
    }
}
