//! Real Matrix room state (see `examples/data/real/NOTICE.md`) through the replicas.
//!
//! Expected figures are computed here from the JSON with plain `serde_json`, and also checked
//! against the numbers of the data set's manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use prr_engine::Seq;
use prr_replicas::{Matrix, parse_file};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::differs::{
    field, ingest_events, ingest_manifest, matrix, matrix_with_store, rule, server_rule, show,
    show_in,
};

const MATRIX_DEV: &str = "derived/mtxclient_join_matrix-dev_state.json";
const NHEKO: &str = "derived/mtxclient_join_nheko_state.json";
const CHITCHAT_STATE: &str = "derived/chitchat_matrix-spec_state.json";
const CHITCHAT_DUMP: &str = "original/chitchat_room_1_matrix-spec.json";
const SPEC_EXAMPLES: &str = "derived/spec_examples_policy_acl_member.json";

/// The `#matrix-spec` room of the ChitChat dump.
const MATRIX_SPEC_ROOM: &str = "!NasysSDfxKxZBzJJoE:matrix.org";

fn data_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data/real")
        .join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    let path = data_path(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn json_of(rel: &str) -> Value {
    serde_json::from_slice(&read(rel)).expect("real data file is JSON")
}

/// The events of a state file (an array) or of a room dump (`{room_id, events}`).
fn events_of(rel: &str) -> Vec<Value> {
    match json_of(rel) {
        Value::Array(events) => events,
        Value::Object(mut dump) => match dump.remove("events") {
            Some(Value::Array(events)) => events,
            other => panic!("{rel}: no events array: {other:?}"),
        },
        other => panic!("{rel}: unexpected shape {other}"),
    }
}

/// Ingests a real data file as one source delta, through the real parser.
fn ingest_file(m: &mut Matrix, rel: &str) -> Seq {
    let items = parse_file(rel, &read(rel)).unwrap_or_else(|e| panic!("parsing {rel}: {e}"));
    m.ingest(&items)
        .unwrap_or_else(|e| panic!("ingesting {rel}: {e}"))
}

/// `membership -> count`, counted from the JSON: the last `m.room.member` event per user
/// (file order), the memberships the spec accepts only.
fn memberships_from_json(events: &[Value]) -> BTreeMap<String, usize> {
    let mut latest: BTreeMap<&str, &Value> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "m.room.member") {
        latest.insert(e["state_key"].as_str().expect("member state_key"), e);
    }
    let mut counts = BTreeMap::new();
    for e in latest.values() {
        if let Some(m @ ("join" | "invite" | "knock" | "leave" | "ban")) =
            e["content"]["membership"].as_str()
        {
            *counts.entry(m.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// `membership -> count` of `room_members` rows.
fn memberships_of(rows: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in rows {
        *counts.entry(field(r, "membership").to_owned()).or_default() += 1;
    }
    counts
}

fn counts(items: &[(&str, usize)]) -> BTreeMap<String, usize> {
    items.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// The server name of a user ID (everything after the first `:`).
fn server_of(user_id: &str) -> &str {
    user_id
        .split_once(':')
        .map(|(_, s)| s)
        .expect("user IDs have a server")
}

/// `server -> members` over `room_members` rows.
fn servers_of(rows: &[Value]) -> BTreeMap<String, usize> {
    let mut servers = BTreeMap::new();
    for r in rows {
        *servers
            .entry(server_of(field(r, "user_id")).to_owned())
            .or_default() += 1;
    }
    servers
}

/// The current `m.room.member` content per user, from the JSON (last event per user).
fn displaynames_from_json(events: &[Value]) -> BTreeMap<String, Value> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| {
            let name = match &e["content"]["displayname"] {
                Value::String(s) => json!(s),
                _ => Value::Null,
            };
            (e["state_key"].as_str().unwrap().to_owned(), name)
        })
        .collect()
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn real_data_files_are_the_manifest_bytes() {
    // (file, bytes, first 16 hex digits of SHA-256), from the data set's MANIFEST.md.
    let files = [
        (MATRIX_DEV, 1_193_299, "dd2d6e75608af3bf"),
        (NHEKO, 51_257, "1d150b3939673ae3"),
        (CHITCHAT_STATE, 41_231, "66677dec2800a02e"),
        (CHITCHAT_DUMP, 80_518, "bc4ead4bac2e108f"),
        (SPEC_EXAMPLES, 2_171, "1733cec5e6456618"),
    ];
    for (rel, len, sha) in files {
        let bytes = read(rel);
        assert_eq!(bytes.len(), len, "{rel}: size");
        assert_eq!(&hex_sha256(&bytes)[..16], sha, "{rel}: sha256");
    }
    for licence in [
        "ChitChat-Apache-2.0.txt",
        "mtxclient-MIT.txt",
        "matrix-spec-Apache-2.0.txt",
    ] {
        assert!(
            !read(&format!("licenses/{licence}")).is_empty(),
            "{licence}"
        );
    }
    assert!(data_path("NOTICE.md").is_file());
}

#[test]
fn real_matrix_dev_state_members_and_servers() {
    let events = events_of(MATRIX_DEV);
    let room = events[0]["room_id"].as_str().unwrap().to_owned();
    let mut m = matrix();
    ingest_file(&mut m, MATRIX_DEV);

    // room_state: every event has a state_key and no key repeats.
    let keys: BTreeSet<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["state_key"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(keys.len(), 2_631);
    let state = show_in(&mut m, "room_state", &room);
    assert_eq!(state.len(), keys.len());
    // The two events carrying unsigned.redacted_because are redacted and keep only membership.
    let redacted_in_json = events
        .iter()
        .filter(|e| !e["unsigned"]["redacted_because"].is_null())
        .count();
    let redacted: Vec<&Value> = state
        .iter()
        .filter(|r| r["redacted"] == json!(true))
        .collect();
    assert_eq!((redacted_in_json, redacted.len()), (2, 2));
    for r in redacted {
        assert_eq!(r["type"], "m.room.member");
        assert_eq!(r["content"], json!({"membership": "join"}));
    }

    // room_members: the counts of the JSON, and of the manifest.
    let members = show_in(&mut m, "room_members", &room);
    let expected = memberships_from_json(&events);
    assert_eq!(memberships_of(&members), expected);
    assert_eq!(
        expected,
        counts(&[("join", 1_610), ("leave", 988), ("ban", 4), ("invite", 3)])
    );
    assert_eq!(members.len(), 2_605);
    let member_events = events
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .count();
    assert_eq!(member_events, 2_605, "every member event is a record");
    assert_eq!(show(&mut m, "rejects"), Vec::<Value>::new(), "no rejects");

    // Display names: null when absent or not a string (1,215 in the manifest).
    let names = displaynames_from_json(&events);
    let shown: BTreeMap<String, Value> = members
        .iter()
        .map(|r| (field(r, "user_id").to_owned(), r["displayname"].clone()))
        .collect();
    // The two redacted members lose their display name.
    let mut expected_names = names.clone();
    for e in events
        .iter()
        .filter(|e| !e["unsigned"]["redacted_because"].is_null())
    {
        expected_names.insert(e["state_key"].as_str().unwrap().to_owned(), Value::Null);
    }
    assert_eq!(shown, expected_names);
    assert_eq!(shown.values().filter(|v| v.is_null()).count(), 1_215);

    // Servers among members: 583 distinct (as written), matrix.org with 1,938, 523 with one
    // member, 3 with a port.
    let servers = servers_of(&members);
    let from_json: BTreeSet<&str> = events
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| server_of(e["state_key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        servers.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        from_json
    );
    assert_eq!(servers.len(), 583);
    assert_eq!(servers["matrix.org"], 1_938);
    assert_eq!(servers.values().filter(|&&n| n == 1).count(), 523);
    assert_eq!(
        servers
            .keys()
            .filter(|s| prr_replicas::normalize_server(s) != s.to_ascii_lowercase())
            .count(),
        3
    );

    // member_set of an instance protecting the room: the present members (join + invite).
    ingest_manifest(
        &mut m,
        json!([{"id": "@draupnir:policy.example", "protect": [room]}]),
    );
    let set = show(&mut m, "member_set");
    assert_eq!(set.len(), expected["join"] + expected["invite"]);
    assert_eq!(set.len(), 1_613);
    assert!(set.iter().all(|r| r["rooms"] == json!(1)));
}

#[test]
fn real_nheko_state_members_and_servers() {
    let events = events_of(NHEKO);
    let room = events[0]["room_id"].as_str().unwrap().to_owned();
    let mut m = matrix();
    ingest_file(&mut m, NHEKO);
    assert_eq!(show_in(&mut m, "room_state", &room).len(), events.len());
    assert_eq!(events.len(), 112);
    let members = show_in(&mut m, "room_members", &room);
    let expected = memberships_from_json(&events);
    assert_eq!(memberships_of(&members), expected);
    assert_eq!(expected, counts(&[("join", 83), ("leave", 18)]));
    assert_eq!(servers_of(&members).len(), 33);
    assert_eq!(show(&mut m, "rejects"), Vec::<Value>::new());
}

/// The `m.room.server_acl` content of the ChitChat state file, from the JSON.
fn chitchat_acl(events: &[Value]) -> Value {
    let acls: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "m.room.server_acl")
        .collect();
    assert_eq!(acls.len(), 1);
    acls[0]["content"].clone()
}

#[test]
fn real_chitchat_state_members_acl_and_sync() {
    let events = events_of(CHITCHAT_STATE);
    let mut m = matrix();
    ingest_file(&mut m, CHITCHAT_STATE);

    let members = show_in(&mut m, "room_members", MATRIX_SPEC_ROOM);
    let expected = memberships_from_json(&events);
    assert_eq!(memberships_of(&members), expected);
    assert_eq!(
        expected,
        counts(&[("join", 39), ("ban", 42), ("invite", 1), ("leave", 1)])
    );
    assert_eq!(members.len(), 83);
    assert_eq!(servers_of(&members).len(), 42);
    assert_eq!(show(&mut m, "rejects"), Vec::<Value>::new());

    // The ACL as stored, and as described in the manifest.
    let acl = chitchat_acl(&events);
    let rows = show_in(&mut m, "room_state", MATRIX_SPEC_ROOM);
    let shown: Vec<&Value> = rows
        .iter()
        .filter(|r| r["type"] == "m.room.server_acl")
        .collect();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0]["state_key"], "");
    assert_eq!(shown[0]["redacted"], json!(false));
    assert_eq!(shown[0]["content"], acl);
    let deny: Vec<&str> = acl["deny"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(deny.len(), 16);
    assert_eq!(deny.iter().filter(|d| d.contains('*')).count(), 7);
    assert_eq!(acl["allow"], json!(["*"]));
    assert_eq!(acl["allow_ip_literals"], json!(false));

    // An instance protecting the room, watching a list that bans exactly the ACL's servers.
    let bot = "@draupnir:policy.example";
    let list = "!policies:policy.example";
    ingest_manifest(
        &mut m,
        json!([{"id": bot, "watch": [list], "protect": [MATRIX_SPEC_ROOM]}]),
    );
    let sync = |m: &mut Matrix| show_in(m, "acl_sync", bot);
    assert_eq!(
        sync(&mut m),
        vec![json!({"instance": bot, "room_id": MATRIX_SPEC_ROOM, "in_sync": false})]
    );
    ingest_events(
        &mut m,
        deny.iter()
            .enumerate()
            .map(|(i, entity)| {
                server_rule(
                    &format!("$ban{i}"),
                    list,
                    &format!("rule:{entity}"),
                    entity,
                    "m.ban",
                )
            })
            .collect(),
    );
    let rules = show_in(&mut m, "policy_room", list);
    assert_eq!(rules.iter().filter(|r| r["match"] == "glob").count(), 7);
    assert_eq!(rules.iter().filter(|r| r["match"] == "literal").count(), 9);
    let mut sorted_deny = deny.clone();
    sorted_deny.sort_unstable();
    sorted_deny.dedup();
    assert_eq!(
        show(&mut m, "server_acl"),
        vec![
            json!({"instance": bot, "allow": ["*"], "deny": sorted_deny, "allow_ip_literals": false})
        ]
    );
    assert_eq!(
        sync(&mut m),
        vec![json!({"instance": bot, "room_id": MATRIX_SPEC_ROOM, "in_sync": true})]
    );

    // Present members matched by those server rules, computed here: a `*.x` entity matches
    // names ending in `.x`, a literal matches the same name (port dropped, lower case).
    let present: Vec<&str> = members
        .iter()
        .filter(|r| matches!(field(r, "membership"), "join" | "invite" | "knock"))
        .map(|r| field(r, "user_id"))
        .collect();
    assert_eq!(show(&mut m, "member_set").len(), present.len());
    let mut expected_matches = 0;
    for user in &present {
        let server = prr_replicas::normalize_server(server_of(user));
        for d in &deny {
            let hit = match d.strip_prefix('*') {
                Some(suffix) => server.ends_with(suffix),
                None => server == *d,
            };
            expected_matches += usize::from(hit);
        }
    }
    assert_eq!(show(&mut m, "member_matches").len(), expected_matches);

    // One more server ban: out of sync. Blank it again: in sync.
    ingest_events(
        &mut m,
        vec![server_rule(
            "$extra",
            list,
            "rule:extra",
            "spam.example",
            "m.ban",
        )],
    );
    assert_eq!(
        sync(&mut m),
        vec![json!({"instance": bot, "room_id": MATRIX_SPEC_ROOM, "in_sync": false})]
    );
    ingest_events(
        &mut m,
        vec![rule(
            "$extra2",
            list,
            "m.policy.rule.server",
            "rule:extra",
            json!({}),
        )],
    );
    assert_eq!(
        sync(&mut m),
        vec![json!({"instance": bot, "room_id": MATRIX_SPEC_ROOM, "in_sync": true})]
    );
}

#[test]
fn real_chitchat_dump_gives_the_same_state_as_the_derived_state_file() {
    let dump = json_of(CHITCHAT_DUMP);
    assert_eq!(dump["room_id"], MATRIX_SPEC_ROOM);
    let events = events_of(CHITCHAT_DUMP);
    assert_eq!(events.len(), 149);

    let mut from_dump = matrix();
    ingest_file(&mut from_dump, CHITCHAT_DUMP);
    let (mut from_state, _dir) = matrix_with_store();
    let first = ingest_file(&mut from_state, CHITCHAT_STATE);

    // The history's latest event per key is the current state.
    let keys: BTreeSet<(&str, &str)> = events
        .iter()
        .filter_map(|e| Some((e["type"].as_str()?, e["state_key"].as_str()?)))
        .collect();
    let dump_state = show_in(&mut from_dump, "room_state", MATRIX_SPEC_ROOM);
    assert_eq!(dump_state.len(), keys.len());
    assert_eq!(dump_state.len(), 95);
    assert_eq!(
        dump_state,
        show_in(&mut from_state, "room_state", MATRIX_SPEC_ROOM)
    );

    let dump_members = show_in(&mut from_dump, "room_members", MATRIX_SPEC_ROOM);
    assert_eq!(
        dump_members,
        show_in(&mut from_state, "room_members", MATRIX_SPEC_ROOM)
    );
    assert_eq!(dump_members.len(), 83);
    assert_eq!(
        memberships_of(&dump_members),
        memberships_from_json(&events)
    );

    // The dump after the state file changes nothing. (The delta history itself works: the
    // state file added every member.)
    let added = from_state.deltas("room_members", Seq(first.0 - 1)).unwrap();
    assert_eq!(added.len(), 83);
    assert!(
        added
            .iter()
            .all(|d| d["seq"] == json!(first.0) && d["diff"] == json!(1))
    );
    let seq = ingest_file(&mut from_state, CHITCHAT_DUMP);
    for replica in ["room_state", "room_members"] {
        let changes: Vec<Value> = from_state
            .deltas(replica, Seq(seq.0 - 1))
            .unwrap()
            .into_iter()
            .filter(|d| d["seq"] == json!(seq.0))
            .collect();
        assert_eq!(changes, Vec::<Value>::new(), "{replica}");
    }
}

#[test]
fn real_spec_examples_policy_acl_and_member() {
    let events = events_of(SPEC_EXAMPLES);
    let room = events[0]["room_id"].as_str().unwrap().to_owned();
    let event_id = events[0]["event_id"].as_str().unwrap().to_owned();
    // All five examples share one event ID.
    assert!(events.iter().all(|e| e["event_id"] == json!(event_id)));

    let mut m = matrix();
    ingest_file(&mut m, SPEC_EXAMPLES);
    assert_eq!(show_in(&mut m, "room_state", &room).len(), 5);
    let rules = show_in(&mut m, "policy_room", &room);
    let got: Vec<(&str, &str, &str, &str)> = rules
        .iter()
        .map(|r| {
            (
                field(r, "kind"),
                field(r, "match"),
                field(r, "entity"),
                field(r, "reason"),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("room", "glob", "#*:example.org", "undesirable content"),
            ("server", "glob", "*.example.org", "undesirable engagement"),
            (
                "user",
                "glob",
                "@alice*:example.org",
                "undesirable behaviour"
            ),
        ]
    );

    // Two instances watch and protect the room (a policy room that is also protected).
    let on_example = "@draupnir:example.org";
    let on_sub = "@bot:mod.example.org";
    ingest_manifest(
        &mut m,
        json!([
            {"id": on_example, "watch": [room], "protect": [room]},
            {"id": on_sub, "watch": [room], "protect": [room]},
        ]),
    );
    for instance in [on_example, on_sub] {
        assert_eq!(
            show_in(&mut m, "member_bans", instance),
            vec![
                json!({"instance": instance, "room_id": room, "user_id": "@alice:example.org",
                        "rule_room_id": room, "rule_event_id": event_id, "reason": "undesirable behaviour"})
            ]
        );
        // `*.example.org` does not match `example.org`: only the user rule matches alice.
        let matches = show_in(&mut m, "member_matches", instance);
        assert_eq!(matches.len(), 1, "{matches:?}");
        assert_eq!(matches[0]["kind"], "user");
        // The room's ACL denies evil.com, not the intent.
        assert_eq!(
            show_in(&mut m, "acl_sync", instance),
            vec![json!({"instance": instance, "room_id": room, "in_sync": false})]
        );
    }
    let deny =
        |m: &mut Matrix, instance: &str| show_in(m, "server_acl", instance)[0]["deny"].clone();
    assert_eq!(deny(&mut m, on_example), json!(["*.example.org"]));
    // `*.example.org` matches mod.example.org: an instance never bans its own server.
    assert_eq!(deny(&mut m, on_sub), json!([]));

    // One redaction of the shared event ID redacts every record that carries it.
    ingest_events(
        &mut m,
        vec![
            json!({"event_id": "$redact", "room_id": room, "type": "m.room.redaction", "sender": "@example:example.org",
                    "redacts": event_id, "content": {}}),
        ],
    );
    let state = show_in(&mut m, "room_state", &room);
    assert!(
        state.iter().all(|r| r["redacted"] == json!(true)),
        "{state:#?}"
    );
    assert_eq!(show_in(&mut m, "policy_room", &room), Vec::<Value>::new());
    assert_eq!(
        show_in(&mut m, "room_members", &room),
        vec![
            json!({"room_id": room, "user_id": "@alice:example.org", "membership": "join", "displayname": null})
        ]
    );
    assert_eq!(show(&mut m, "member_bans"), Vec::<Value>::new());
    assert_eq!(deny(&mut m, on_example), json!([]));
}
