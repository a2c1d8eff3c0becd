//! Hand-written cases for the points of `docs/replicas.md` where this crate deliberately
//! differs from the protection suite (the spec's **Differs** notes), and for spec points that the
//! random workload of the oracle test may reach only rarely: the rule slot, redactions, an
//! instance's own server, `acl_sync`, the choice of the rule behind a member ban, a policy room
//! that is also protected, and manifest removal.
//!
//! Every input is inline JSON, sent through the real file parser; every check is on the exact
//! rows that `show` returns.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prr_engine::{RuntimeConfig, Seq};
use prr_replicas::{Matrix, parse_file};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Helpers (also used by `real_data`)

/// The policy room most tests use.
pub const LIST: &str = "!list:good.net";
/// The protected rooms most tests use.
pub const ROOM: &str = "!room:good.net";
pub const ROOM2: &str = "!room2:good.net";
/// The instance most tests use.
pub const BOT: &str = "@draupnir:good.net";
/// The sender of policy rules.
pub const MOD: &str = "@mod:good.net";
/// What `member_bans` says when the rule has no (string) reason.
pub const NO_REASON: &str = "<no reason supplied>";

/// A fresh in-memory runtime with the Matrix replicas.
pub fn matrix() -> Matrix {
    Matrix::start(RuntimeConfig::new()).expect("runtime starts")
}

/// A runtime with an on-disk store in a temporary directory: time travel (`show` with
/// `as_of`) and delta history (`deltas`) need one. Keep the directory alive with it.
pub fn matrix_with_store() -> (Matrix, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let m = Matrix::start(RuntimeConfig::new().with_store(dir.path().join("store.redb")))
        .expect("runtime starts");
    (m, dir)
}

/// Ingests a JSON value (an event array or a manifest) as one file, through the real parser.
pub fn ingest(m: &mut Matrix, file: &Value) -> Seq {
    let bytes = file.to_string().into_bytes();
    let items =
        parse_file("inline.json", &bytes).unwrap_or_else(|e| panic!("inline file is valid: {e}"));
    m.ingest(&items).expect("ingest succeeds")
}

/// Ingests a list of events as one file (a JSON array).
pub fn ingest_events(m: &mut Matrix, events: Vec<Value>) -> Seq {
    ingest(m, &Value::Array(events))
}

/// Ingests a manifest `{"instances": entries}` as one file.
pub fn ingest_manifest(m: &mut Matrix, entries: Value) -> Seq {
    ingest(m, &json!({ "instances": entries }))
}

/// A replica's current rows, all partitions.
pub fn show(m: &mut Matrix, replica: &str) -> Vec<Value> {
    m.show(replica, None, None).expect("replica exists")
}

/// A replica's current rows of one partition (a room or an instance).
pub fn show_in(m: &mut Matrix, replica: &str, partition: &str) -> Vec<Value> {
    m.show(replica, Some(partition), None)
        .expect("replica exists")
}

/// A state event.
pub fn state(
    event_id: &str,
    room: &str,
    ty: &str,
    state_key: &str,
    sender: &str,
    content: Value,
) -> Value {
    json!({
        "event_id": event_id,
        "room_id": room,
        "type": ty,
        "state_key": state_key,
        "sender": sender,
        "origin_server_ts": 1_700_000_000_000_i64,
        "content": content,
    })
}

/// A policy rule event of `ty` in `room`, sent by [`MOD`].
pub fn rule(event_id: &str, room: &str, ty: &str, state_key: &str, content: Value) -> Value {
    state(event_id, room, ty, state_key, MOD, content)
}

/// An `m.policy.rule.user` event banning (`m.ban`) the literal or glob `entity`.
pub fn user_ban(
    event_id: &str,
    room: &str,
    state_key: &str,
    entity: &str,
    reason: Option<&str>,
) -> Value {
    let mut content = json!({"entity": entity, "recommendation": "m.ban"});
    if let Some(r) = reason {
        content["reason"] = json!(r);
    }
    rule(event_id, room, "m.policy.rule.user", state_key, content)
}

/// An `m.policy.rule.server` event with the given entity and recommendation.
pub fn server_rule(
    event_id: &str,
    room: &str,
    state_key: &str,
    entity: &str,
    recommendation: &str,
) -> Value {
    rule(
        event_id,
        room,
        "m.policy.rule.server",
        state_key,
        json!({"entity": entity, "recommendation": recommendation}),
    )
}

/// An `m.room.member` event for `user` in `room`, sent by the user.
pub fn member(event_id: &str, room: &str, user: &str, membership: &str) -> Value {
    state(
        event_id,
        room,
        "m.room.member",
        user,
        user,
        json!({"membership": membership}),
    )
}

/// An `m.room.server_acl` event.
pub fn acl(event_id: &str, room: &str, content: Value) -> Value {
    state(event_id, room, "m.room.server_acl", "", MOD, content)
}

/// Padded standard base64 of the SHA-256 of `s`, computed here (not with the crate's helper).
pub fn sha(s: &str) -> String {
    STANDARD.encode(Sha256::digest(s.as_bytes()))
}

/// A string field of a row.
pub fn field<'a>(row: &'a Value, name: &str) -> &'a str {
    row[name]
        .as_str()
        .unwrap_or_else(|| panic!("field {name} is a string in {row}"))
}

/// `(user_id, kind, state_key)` of every `member_matches` row.
fn match_keys(rows: &[Value]) -> BTreeSet<(String, String, String)> {
    rows.iter()
        .map(|r| {
            (
                field(r, "user_id").to_owned(),
                field(r, "kind").to_owned(),
                field(r, "state_key").to_owned(),
            )
        })
        .collect()
}

fn keys(items: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    items
        .iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect()
}

/// The `deny` list of the instance's `server_acl` row.
fn deny_of(m: &mut Matrix, instance: &str) -> Vec<String> {
    let rows = show_in(m, "server_acl", instance);
    assert_eq!(rows.len(), 1, "one server_acl row per instance: {rows:?}");
    rows[0]["deny"]
        .as_array()
        .expect("deny is an array")
        .iter()
        .map(|v| v.as_str().expect("deny entries are strings").to_owned())
        .collect()
}

/// `(room_id, in_sync)` of the instance's `acl_sync` rows.
fn sync_of(m: &mut Matrix, instance: &str) -> Vec<(String, bool)> {
    show_in(m, "acl_sync", instance)
        .iter()
        .map(|r| {
            (
                field(r, "room_id").to_owned(),
                r["in_sync"].as_bool().expect("in_sync is a bool"),
            )
        })
        .collect()
}

fn syncs(items: &[(&str, bool)]) -> Vec<(String, bool)> {
    items.iter().map(|(r, b)| ((*r).to_owned(), *b)).collect()
}

/// The standard instance: [`BOT`] watches [`LIST`] and protects [`ROOM`] and [`ROOM2`].
fn standard_manifest(m: &mut Matrix) -> Seq {
    ingest_manifest(
        m,
        json!([{"id": BOT, "watch": [LIST], "protect": [ROOM, ROOM2]}]),
    )
}

#[test]
fn the_test_hash_helper_is_padded_standard_base64_of_sha256() {
    // SHA-256 of the empty string, a published test vector.
    assert_eq!(sha(""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    assert_eq!(sha("evil.org"), prr_replicas::sha256_base64("evil.org"));
}

#[path = "differs/redactions.rs"]
mod redactions;
#[path = "differs/rooms_and_manifests.rs"]
mod rooms_and_manifests;
#[path = "differs/slots.rs"]
mod slots;
#[path = "differs/suite.rs"]
mod suite;
