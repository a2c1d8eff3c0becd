//! Hand-written cases for the points of `spec/matrix-replicas.md` where this crate deliberately
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

// ---------------------------------------------------------------------------------------------
// Differs 1: policy_room

#[test]
fn differs_policy_room_edit_replaces_the_rule_instead_of_keeping_the_old_one() {
    let (mut m, _dir) = matrix_with_store();
    standard_manifest(&mut m);
    ingest_events(
        &mut m,
        vec![
            member("$m1", ROOM, "@old:evil.org", "join"),
            member("$m2", ROOM, "@new:evil.org", "join"),
        ],
    );
    let first = ingest_events(
        &mut m,
        vec![user_ban("$r1", LIST, "r1", "@old:evil.org", Some("first"))],
    );
    let first_rule = json!({
        "room_id": LIST, "kind": "user", "state_key": "r1", "type": "m.policy.rule.user",
        "event_id": "$r1", "sender": MOD, "match": "literal", "entity": "@old:evil.org",
        "sha256": null, "recommendation": "m.ban", "class": "ban", "reason": "first",
    });
    assert_eq!(
        show_in(&mut m, "policy_room", LIST),
        vec![first_rule.clone()]
    );
    assert_eq!(
        show(&mut m, "member_bans"),
        vec![json!({
            "instance": BOT, "room_id": ROOM, "user_id": "@old:evil.org",
            "rule_room_id": LIST, "rule_event_id": "$r1", "reason": "first",
        })]
    );

    // The rule is edited: same slot, new entity. Exactly one rule, the new one.
    ingest_events(
        &mut m,
        vec![user_ban("$r2", LIST, "r1", "@new:evil.org", Some("second"))],
    );
    let second_rule = json!({
        "room_id": LIST, "kind": "user", "state_key": "r1", "type": "m.policy.rule.user",
        "event_id": "$r2", "sender": MOD, "match": "literal", "entity": "@new:evil.org",
        "sha256": null, "recommendation": "m.ban", "class": "ban", "reason": "second",
    });
    assert_eq!(
        show_in(&mut m, "policy_room", LIST),
        vec![second_rule.clone()]
    );
    let mut listed = second_rule.clone();
    listed
        .as_object_mut()
        .unwrap()
        .insert("instance".into(), json!(BOT));
    assert_eq!(show(&mut m, "policy_list"), vec![listed]);
    let matches = show(&mut m, "member_matches");
    assert_eq!(
        match_keys(&matches),
        keys(&[("@new:evil.org", "user", "r1")]),
        "{matches:?}"
    );
    assert_eq!(
        show(&mut m, "member_bans"),
        vec![json!({
            "instance": BOT, "room_id": ROOM, "user_id": "@new:evil.org",
            "rule_room_id": LIST, "rule_event_id": "$r2", "reason": "second",
        })]
    );

    // The rule is removed (blanked): nothing keeps matching.
    ingest_events(
        &mut m,
        vec![rule("$r3", LIST, "m.policy.rule.user", "r1", json!({}))],
    );
    assert_eq!(show(&mut m, "policy_room"), Vec::<Value>::new());
    assert_eq!(show(&mut m, "policy_list"), Vec::<Value>::new());
    assert_eq!(show(&mut m, "member_matches"), Vec::<Value>::new());
    assert_eq!(show(&mut m, "member_bans"), Vec::<Value>::new());

    // History is still readable: as of the first rule, the first version alone.
    assert_eq!(
        m.show("policy_room", Some(LIST), Some(first)).unwrap(),
        vec![first_rule]
    );

    // Two versions of one slot in the same file: the later line wins, alone.
    ingest_events(
        &mut m,
        vec![
            user_ban("$r4", LIST, "r1", "@old:evil.org", Some("third")),
            user_ban("$r5", LIST, "r1", "@new:evil.org", Some("fourth")),
        ],
    );
    let rows = show(&mut m, "policy_room");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(field(&rows[0], "event_id"), "$r5");
    assert_eq!(field(&rows[0], "entity"), "@new:evil.org");
    let matches = show(&mut m, "member_matches");
    assert_eq!(
        match_keys(&matches),
        keys(&[("@new:evil.org", "user", "r1")]),
        "{matches:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Differs 2: member_set

#[test]
fn differs_member_set_counts_invite_then_join_once_and_leave_removes_presence() {
    let (mut m, _dir) = matrix_with_store();
    standard_manifest(&mut m);
    let user = "@u:evil.org";
    let row = |rooms: u64| vec![json!({"instance": BOT, "user_id": user, "rooms": rooms})];

    let invited = ingest_events(&mut m, vec![member("$i", ROOM, user, "invite")]);
    assert_eq!(show(&mut m, "member_set"), row(1));

    // invite -> join in the same room: still one room, and no member_set change at all.
    let joined = ingest_events(&mut m, vec![member("$j", ROOM, user, "join")]);
    assert_eq!(show(&mut m, "member_set"), row(1));
    let changes: Vec<Value> = m
        .deltas("member_set", invited)
        .unwrap()
        .into_iter()
        .filter(|d| d["seq"] == json!(joined.0))
        .collect();
    assert_eq!(
        changes,
        Vec::<Value>::new(),
        "invite -> join changes nothing in member_set"
    );
    // (The delta history itself works: the invite added the record.)
    assert_eq!(
        m.deltas("member_set", Seq(invited.0 - 1)).unwrap(),
        vec![
            json!({"seq": invited.0, "diff": 1, "record": {"instance": BOT, "user_id": user, "rooms": 1}})
        ]
    );

    // The same join re-sent: still one.
    ingest_events(&mut m, vec![member("$j", ROOM, user, "join")]);
    assert_eq!(show(&mut m, "member_set"), row(1));

    // Presence in a room that is not protected does not count.
    ingest_events(
        &mut m,
        vec![member("$x", "!elsewhere:good.net", user, "join")],
    );
    assert_eq!(show(&mut m, "member_set"), row(1));

    ingest_events(&mut m, vec![member("$j2", ROOM2, user, "join")]);
    assert_eq!(show(&mut m, "member_set"), row(2));

    // Leave removes presence in that room.
    ingest_events(&mut m, vec![member("$l", ROOM, user, "leave")]);
    assert_eq!(show(&mut m, "member_set"), row(1));

    // Ban in the last room: no longer present anywhere, no record.
    ingest_events(&mut m, vec![member("$b", ROOM2, user, "ban")]);
    assert_eq!(show(&mut m, "member_set"), Vec::<Value>::new());

    // Knock is presence.
    ingest_events(&mut m, vec![member("$k", ROOM, user, "knock")]);
    assert_eq!(show(&mut m, "member_set"), row(1));

    // Leave and invite again in one file, then join, then leave: 1, 1, 0.
    ingest_events(
        &mut m,
        vec![
            member("$l2", ROOM, user, "leave"),
            member("$i2", ROOM, user, "invite"),
        ],
    );
    assert_eq!(show(&mut m, "member_set"), row(1));
    ingest_events(&mut m, vec![member("$j3", ROOM, user, "join")]);
    assert_eq!(show(&mut m, "member_set"), row(1));
    ingest_events(&mut m, vec![member("$l3", ROOM, user, "leave")]);
    assert_eq!(show(&mut m, "member_set"), Vec::<Value>::new());
}

// ---------------------------------------------------------------------------------------------
// Differs 3: member_matches, server rules

#[test]
fn differs_member_matches_server_rules_match_the_server_name_not_the_whole_user_id() {
    let mut m = matrix();
    standard_manifest(&mut m);
    ingest_events(
        &mut m,
        vec![
            member("$m1", ROOM, "@alice:evil.org", "join"),
            member("$m2", ROOM, "@bob:EVIL.org:8448", "join"),
            member("$m3", ROOM, "@evil.org:good.net", "join"),
            member("$m4", ROOM2, "@carol:sub.evil.org", "join"),
            member("$m5", ROOM2, "@dave:good.net", "invite"),
        ],
    );
    ingest_events(
        &mut m,
        vec![
            server_rule("$s1", LIST, "s1", "evil.org", "m.ban"),
            // Would match @bob's whole ID; the port is dropped from the server name.
            server_rule("$s2", LIST, "s2", "*:8448", "m.ban"),
            // Would match every whole user ID; a server name never starts with `@`.
            server_rule("$s3", LIST, "s3", "@*", "m.ban"),
            server_rule("$s4", LIST, "s4", "*.evil.org", "m.ban"),
            server_rule("$s5", LIST, "s5", "EVIL.ORG", "m.ban"),
            // Would match "@evil.org:good.net" as a whole ID; its server is good.net.
            server_rule("$s6", LIST, "s6", "*evil.org*", "m.ban"),
            server_rule("$s7", LIST, "s7", "good.n?t", "m.ban"),
            // A server rule with a port matches nobody: names are compared without ports.
            server_rule("$s8", LIST, "s8", "evil.org:8448", "m.ban"),
            // User rules are matched against the whole user ID, case-sensitively.
            user_ban("$u1", LIST, "u1", "*:evil.org", None),
            user_ban("$u2", LIST, "u2", "evil.org", None),
            // Room rules never match users.
            rule(
                "$r1",
                LIST,
                "m.policy.rule.room",
                "r1",
                json!({"entity": "*", "recommendation": "m.ban"}),
            ),
        ],
    );
    let rows = show_in(&mut m, "member_matches", BOT);
    let expected = keys(&[
        ("@alice:evil.org", "server", "s1"),
        ("@alice:evil.org", "server", "s5"),
        ("@alice:evil.org", "server", "s6"),
        ("@alice:evil.org", "user", "u1"),
        ("@bob:EVIL.org:8448", "server", "s1"),
        ("@bob:EVIL.org:8448", "server", "s5"),
        ("@bob:EVIL.org:8448", "server", "s6"),
        ("@carol:sub.evil.org", "server", "s4"),
        ("@carol:sub.evil.org", "server", "s6"),
        ("@dave:good.net", "server", "s7"),
        ("@evil.org:good.net", "server", "s7"),
    ]);
    assert_eq!(match_keys(&rows), expected, "{rows:#?}");
    assert_eq!(rows.len(), expected.len());
    let bob_s1 = rows
        .iter()
        .find(|r| r["user_id"] == "@bob:EVIL.org:8448" && r["state_key"] == "s1")
        .expect("bob matches s1");
    assert_eq!(
        *bob_s1,
        json!({
            "instance": BOT, "user_id": "@bob:EVIL.org:8448", "room_id": LIST, "kind": "server",
            "state_key": "s1", "event_id": "$s1", "match": "literal", "entity": "evil.org",
            "recommendation": "m.ban", "class": "ban", "reason": null,
        })
    );

    // Only user rules make bans: alice, by u1, in the room she is in.
    assert_eq!(
        show(&mut m, "member_bans"),
        vec![json!({
            "instance": BOT, "room_id": ROOM, "user_id": "@alice:evil.org",
            "rule_room_id": LIST, "rule_event_id": "$u1", "reason": NO_REASON,
        })]
    );

    // A member joining after the rules matches at once.
    ingest_events(
        &mut m,
        vec![member("$m6", ROOM, "@erin:Evil.Org:443", "join")],
    );
    let rows = show_in(&mut m, "member_matches", BOT);
    let erin: BTreeSet<_> = match_keys(&rows)
        .into_iter()
        .filter(|(u, _, _)| u == "@erin:Evil.Org:443")
        .collect();
    assert_eq!(
        erin,
        keys(&[
            ("@erin:Evil.Org:443", "server", "s1"),
            ("@erin:Evil.Org:443", "server", "s5"),
            ("@erin:Evil.Org:443", "server", "s6")
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// Differs 4: member_matches, hashed rules

#[test]
fn differs_member_matches_hashed_rules_join_directly_without_a_reversal_step() {
    let (mut m, _dir) = matrix_with_store();
    standard_manifest(&mut m);
    ingest_events(
        &mut m,
        vec![
            member("$m1", ROOM, "@spam:evil.org", "join"),
            member("$m2", ROOM, "@Eve:Evil.ORG:8448", "join"),
            member("$m3", ROOM2, "@ok:good.net", "join"),
        ],
    );
    let hashed = |id: &str, kind: &str, sk: &str, hash_field: &str, of: &str| {
        rule(
            id,
            LIST,
            &format!("m.policy.rule.{kind}"),
            sk,
            json!({ hash_field: {"sha256": sha(of)}, "recommendation": "m.ban" }),
        )
    };
    let msc = "org.matrix.msc4205.hashes";
    let rules_seq = ingest_events(
        &mut m,
        vec![
            hashed("$h1", "user", "h1", "hashes", "@spam:evil.org"),
            // User hashes are of the exact user ID: no lower-casing, port kept.
            hashed("$h2", "user", "h2", msc, "@Eve:Evil.ORG:8448"),
            hashed("$h3", "user", "h3", "hashes", "@eve:evil.org"),
            // Server hashes are of the lower-cased server name without its port.
            hashed("$h4", "server", "h4", "hashes", "evil.org"),
            hashed("$h5", "server", "h5", msc, "evil.org"),
            hashed("$h6", "server", "h6", "hashes", "Evil.ORG"),
            hashed("$h7", "server", "h7", "hashes", "evil.org:8448"),
            // Not the hash of the whole user ID.
            hashed("$h8", "server", "h8", "hashes", "@spam:evil.org"),
            // Both fields: `hashes.sha256` is the one used.
            rule(
                "$h9",
                LIST,
                "m.policy.rule.server",
                "h9",
                json!({
                    "hashes": {"sha256": sha("good.net")},
                    msc: {"sha256": sha("evil.org")},
                    "recommendation": "m.ban",
                }),
            ),
        ],
    );

    // policy_room: hashed rules have no entity and carry their hash.
    let rows = show_in(&mut m, "policy_room", LIST);
    assert_eq!(rows.len(), 9, "{rows:#?}");
    let h1 = rows.iter().find(|r| r["state_key"] == "h1").unwrap();
    assert_eq!(
        *h1,
        json!({
            "room_id": LIST, "kind": "user", "state_key": "h1", "type": "m.policy.rule.user",
            "event_id": "$h1", "sender": MOD, "match": "hashed", "entity": null,
            "sha256": sha("@spam:evil.org"), "recommendation": "m.ban", "class": "ban", "reason": null,
        })
    );
    let h2 = rows.iter().find(|r| r["state_key"] == "h2").unwrap();
    assert_eq!(h2["sha256"], json!(sha("@Eve:Evil.ORG:8448")));
    let h9 = rows.iter().find(|r| r["state_key"] == "h9").unwrap();
    assert_eq!(h9["sha256"], json!(sha("good.net")));

    // The matches exist at the Seq that added the rules: no separate reversal step.
    let expected = keys(&[
        ("@Eve:Evil.ORG:8448", "server", "h4"),
        ("@Eve:Evil.ORG:8448", "server", "h5"),
        ("@Eve:Evil.ORG:8448", "user", "h2"),
        ("@ok:good.net", "server", "h9"),
        ("@spam:evil.org", "server", "h4"),
        ("@spam:evil.org", "server", "h5"),
        ("@spam:evil.org", "user", "h1"),
    ]);
    let rows = m
        .show("member_matches", Some(BOT), Some(rules_seq))
        .unwrap();
    assert_eq!(match_keys(&rows), expected, "{rows:#?}");
    assert_eq!(rows.len(), expected.len());
    let spam_h1 = rows
        .iter()
        .find(|r| r["user_id"] == "@spam:evil.org" && r["state_key"] == "h1")
        .unwrap();
    assert_eq!(
        *spam_h1,
        json!({
            "instance": BOT, "user_id": "@spam:evil.org", "room_id": LIST, "kind": "user",
            "state_key": "h1", "event_id": "$h1", "match": "hashed", "entity": null,
            "recommendation": "m.ban", "class": "ban", "reason": null,
        })
    );

    // Hashed user rules make bans; hashed server rules never reach the ACL.
    assert_eq!(
        show(&mut m, "member_bans"),
        vec![
            json!({"instance": BOT, "room_id": ROOM, "user_id": "@Eve:Evil.ORG:8448",
                   "rule_room_id": LIST, "rule_event_id": "$h2", "reason": NO_REASON}),
            json!({"instance": BOT, "room_id": ROOM, "user_id": "@spam:evil.org",
                   "rule_room_id": LIST, "rule_event_id": "$h1", "reason": NO_REASON}),
        ]
    );
    assert_eq!(deny_of(&mut m, BOT), Vec::<String>::new());

    // A user joining after the rules matches in the same Seq.
    let joined = ingest_events(
        &mut m,
        vec![member("$m4", ROOM2, "@spam2:EVIL.org", "join")],
    );
    let rows = m.show("member_matches", Some(BOT), Some(joined)).unwrap();
    let spam2: BTreeSet<_> = match_keys(&rows)
        .into_iter()
        .filter(|(u, _, _)| u == "@spam2:EVIL.org")
        .collect();
    assert_eq!(
        spam2,
        keys(&[
            ("@spam2:EVIL.org", "server", "h4"),
            ("@spam2:EVIL.org", "server", "h5")
        ])
    );

    // Leaving, and blanking a rule, remove matches.
    ingest_events(
        &mut m,
        vec![
            member("$m5", ROOM, "@spam:evil.org", "leave"),
            rule("$h2x", LIST, "m.policy.rule.user", "h2", json!({})),
        ],
    );
    let rows = show_in(&mut m, "member_matches", BOT);
    assert_eq!(
        match_keys(&rows),
        keys(&[
            ("@Eve:Evil.ORG:8448", "server", "h4"),
            ("@Eve:Evil.ORG:8448", "server", "h5"),
            ("@ok:good.net", "server", "h9"),
            ("@spam2:EVIL.org", "server", "h4"),
            ("@spam2:EVIL.org", "server", "h5"),
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// Differs 5: server_acl class filter

#[test]
fn differs_server_acl_never_denies_allow_or_unknown_recommendations() {
    let mut m = matrix();
    standard_manifest(&mut m);
    // Rules arrive one file at a time (the suite's incremental path), with the deny list
    // expected after each.
    let steps: Vec<(Value, &[&str], &str)> = vec![
        (
            server_rule("$a", LIST, "a", "a.example", "m.ban"),
            &["a.example"],
            "ban",
        ),
        (
            server_rule("$e", LIST, "e", "e.example", "org.matrix.mjolnir.allow"),
            &["a.example"],
            "allow",
        ),
        (
            server_rule("$f", LIST, "f", "f.example", "com.example.unknown"),
            &["a.example"],
            "unknown",
        ),
        (
            server_rule("$g", LIST, "g", "g.example", "M.BAN"),
            &["a.example"],
            "unknown",
        ),
        (
            server_rule("$b", LIST, "b", "b.example", "org.matrix.mjolnir.ban"),
            &["a.example", "b.example"],
            "ban",
        ),
        (
            server_rule("$c", LIST, "c", "c.example", "m.takedown"),
            &["a.example", "b.example", "c.example"],
            "takedown",
        ),
        (
            server_rule(
                "$d",
                LIST,
                "d",
                "*.d.example",
                "org.matrix.msc4204.takedown",
            ),
            &["*.d.example", "a.example", "b.example", "c.example"],
            "takedown",
        ),
        // An allow rule for a denied server does not remove it, and adds nothing.
        (
            server_rule(
                "$a2",
                LIST,
                "a-allow",
                "a.example",
                "org.matrix.mjolnir.allow",
            ),
            &["*.d.example", "a.example", "b.example", "c.example"],
            "allow",
        ),
        // The same entity banned twice is denied once.
        (
            server_rule("$a3", LIST, "a-again", "a.example", "m.ban"),
            &["*.d.example", "a.example", "b.example", "c.example"],
            "ban",
        ),
        // Hashed server rules, user rules and room rules are never in the deny list.
        (
            rule(
                "$h",
                LIST,
                "m.policy.rule.server",
                "h",
                json!({"hashes": {"sha256": sha("h.example")}, "recommendation": "m.ban"}),
            ),
            &["*.d.example", "a.example", "b.example", "c.example"],
            "ban",
        ),
        (
            user_ban("$u", LIST, "u", "@x:u.example", None),
            &["*.d.example", "a.example", "b.example", "c.example"],
            "ban",
        ),
        (
            rule(
                "$r",
                LIST,
                "m.policy.rule.room",
                "r",
                json!({"entity": "r.example", "recommendation": "m.ban"}),
            ),
            &["*.d.example", "a.example", "b.example", "c.example"],
            "ban",
        ),
        // A ban edited into an allow leaves the list; an allow edited into a ban joins it.
        (
            server_rule("$c2", LIST, "c", "c.example", "org.matrix.mjolnir.allow"),
            &["*.d.example", "a.example", "b.example"],
            "allow",
        ),
        (
            server_rule("$e2", LIST, "e", "e.example", "m.ban"),
            &["*.d.example", "a.example", "b.example", "e.example"],
            "ban",
        ),
    ];
    for (i, (event, deny, class)) in steps.into_iter().enumerate() {
        let event_id = field(&event, "event_id").to_owned();
        ingest_events(&mut m, vec![event]);
        let rule_row = show_in(&mut m, "policy_room", LIST)
            .into_iter()
            .find(|r| r["event_id"] == json!(event_id))
            .unwrap_or_else(|| panic!("step {i}: rule {event_id} is in policy_room"));
        assert_eq!(
            rule_row["class"],
            json!(class),
            "step {i}: class of {rule_row}"
        );
        assert_eq!(
            show(&mut m, "server_acl"),
            vec![
                json!({"instance": BOT, "allow": ["*"], "deny": deny, "allow_ip_literals": false})
            ],
            "step {i} ({event_id})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The rule slot

#[test]
fn slot_newest_type_wins_even_when_blank() {
    let mut m = matrix();
    let ban = |entity: &str| json!({"entity": entity, "recommendation": "m.ban"});
    ingest_events(
        &mut m,
        vec![rule("$old", LIST, "m.room.rule.user", "s", ban("@a:x.org"))],
    );
    let rows = show_in(&mut m, "policy_room", LIST);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (field(&rows[0], "type"), field(&rows[0], "entity")),
        ("m.room.rule.user", "@a:x.org")
    );

    // An older type arriving later does not take the slot.
    ingest_events(
        &mut m,
        vec![rule(
            "$older",
            LIST,
            "org.matrix.mjolnir.rule.user",
            "s",
            ban("@b:x.org"),
        )],
    );
    let rows = show_in(&mut m, "policy_room", LIST);
    assert_eq!(rows.len(), 1);
    assert_eq!(field(&rows[0], "event_id"), "$old");

    // The newest type with empty content empties the slot, though the older ones have content.
    ingest_events(
        &mut m,
        vec![rule("$blank", LIST, "m.policy.rule.user", "s", json!({}))],
    );
    assert_eq!(show_in(&mut m, "policy_room", LIST), Vec::<Value>::new());
    assert_eq!(
        show_in(&mut m, "room_state", LIST).len(),
        3,
        "all three events stay in room_state"
    );
    assert_eq!(
        show(&mut m, "rejects"),
        Vec::<Value>::new(),
        "a blank rule is not a reject"
    );

    // The newest type with content takes the slot.
    ingest_events(
        &mut m,
        vec![rule(
            "$new",
            LIST,
            "m.policy.rule.user",
            "s",
            ban("@c:x.org"),
        )],
    );
    assert_eq!(
        show_in(&mut m, "policy_room", LIST),
        vec![json!({
            "room_id": LIST, "kind": "user", "state_key": "s", "type": "m.policy.rule.user",
            "event_id": "$new", "sender": MOD, "match": "literal", "entity": "@c:x.org",
            "sha256": null, "recommendation": "m.ban", "class": "ban", "reason": null,
        })]
    );

    // The newest type, invalid: the slot is empty (no fallback) and the event is a reject.
    ingest_events(
        &mut m,
        vec![rule(
            "$bad",
            LIST,
            "m.policy.rule.user",
            "s",
            json!({"entity": 5, "recommendation": "m.ban"}),
        )],
    );
    assert_eq!(show_in(&mut m, "policy_room", LIST), Vec::<Value>::new());
    let rejects = show(&mut m, "rejects");
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    let mut reject = rejects[0].clone();
    reject.as_object_mut().unwrap().remove("reason");
    assert_eq!(
        reject,
        json!({"room_id": LIST, "event_id": "$bad", "type": "m.policy.rule.user", "state_key": "s", "replica": "policy_room"})
    );

    // Only the slot's event is parsed: an invalid older-type event under a valid newer one is
    // neither a rule nor a reject. Kinds have separate slots at the same state_key.
    ingest_events(
        &mut m,
        vec![
            rule(
                "$t1",
                LIST,
                "org.matrix.mjolnir.rule.user",
                "t",
                json!({"recommendation": "m.ban"}),
            ),
            rule("$t2", LIST, "m.room.rule.user", "t", ban("@t:x.org")),
            rule("$srv", LIST, "m.policy.rule.server", "s", ban("x.org")),
            // A type that is not a rule type.
            rule("$not", LIST, "m.policy.rule.users", "u", ban("@u:x.org")),
        ],
    );
    let rows = show_in(&mut m, "policy_room", LIST);
    let got: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                field(r, "kind"),
                field(r, "state_key"),
                field(r, "event_id"),
            )
        })
        .collect();
    assert_eq!(got, vec![("server", "s", "$srv"), ("user", "t", "$t2")]);
    assert_eq!(show(&mut m, "rejects").len(), 1, "still only $bad");

    // A redacted newest-type event also empties the slot.
    ingest_events(
        &mut m,
        vec![
            rule("$w1", LIST, "m.room.rule.user", "w", ban("@w:x.org")),
            json!({
                "event_id": "$w2", "room_id": LIST, "type": "m.policy.rule.user", "state_key": "w",
                "sender": MOD, "content": ban("@w2:x.org"),
                "unsigned": {"redacted_because": {"type": "m.room.redaction", "event_id": "$rw", "sender": MOD, "content": {}}},
            }),
        ],
    );
    let rows = show_in(&mut m, "policy_room", LIST);
    assert!(rows.iter().all(|r| r["state_key"] != "w"), "{rows:?}");
}

// ---------------------------------------------------------------------------------------------
// Redactions

fn redaction(
    event_id: &str,
    room: &str,
    top_level: Option<&str>,
    in_content: Option<&str>,
) -> Value {
    let mut ev = json!({"event_id": event_id, "room_id": room, "type": "m.room.redaction", "sender": MOD, "content": {}});
    if let Some(t) = top_level {
        ev["redacts"] = json!(t);
    }
    if let Some(t) = in_content {
        ev["content"]["redacts"] = json!(t);
    }
    ev
}

#[test]
fn redaction_by_later_event_top_level_and_content_redacts() {
    let mut m = matrix();
    standard_manifest(&mut m);
    let user = "@mallory:evil.org";
    ingest_events(
        &mut m,
        vec![
            state(
                "$m1",
                ROOM,
                "m.room.member",
                user,
                user,
                json!({"membership": "join", "displayname": "Mallory", "avatar_url": "mxc://x/y"}),
            ),
            user_ban("$r1", LIST, "r1", user, Some("spam")),
            state(
                "$pl",
                ROOM,
                "m.room.power_levels",
                "",
                MOD,
                json!({"ban": 50, "users": {MOD: 100}, "notifications": {"room": 50}, "state_default": 50}),
            ),
            state(
                "$jr",
                ROOM,
                "m.room.join_rules",
                "",
                MOD,
                json!({"join_rule": "restricted", "allow": [], "x": 1}),
            ),
            state(
                "$cr",
                ROOM,
                "m.room.create",
                "",
                MOD,
                json!({"room_version": "11", "creator": MOD, "x": 1}),
            ),
            state(
                "$tp",
                ROOM,
                "m.room.topic",
                "",
                MOD,
                json!({"topic": "hello"}),
            ),
        ],
    );
    assert_eq!(show(&mut m, "member_bans").len(), 1);

    // Top-level `redacts` (room versions before 11).
    ingest_events(&mut m, vec![redaction("$x1", LIST, Some("$r1"), None)]);
    assert_eq!(
        show_in(&mut m, "room_state", LIST),
        vec![json!({
            "room_id": LIST, "type": "m.policy.rule.user", "state_key": "r1", "event_id": "$r1",
            "sender": MOD, "origin_server_ts": 1_700_000_000_000_i64, "content": {}, "redacted": true,
        })]
    );
    assert_eq!(show(&mut m, "policy_room"), Vec::<Value>::new());
    assert_eq!(show(&mut m, "member_bans"), Vec::<Value>::new());
    assert_eq!(show(&mut m, "rejects"), Vec::<Value>::new());

    // `content.redacts` (room version 11), several in one file.
    ingest_events(
        &mut m,
        vec![
            redaction("$x2", ROOM, None, Some("$m1")),
            redaction("$x3", ROOM, None, Some("$pl")),
            redaction("$x4", ROOM, None, Some("$jr")),
            redaction("$x5", ROOM, None, Some("$cr")),
            redaction("$x6", ROOM, Some("$tp"), Some("$tp")),
        ],
    );
    let by_type = |m: &mut Matrix, ty: &str| {
        show_in(m, "room_state", ROOM)
            .into_iter()
            .find(|r| r["type"] == ty)
            .unwrap_or_else(|| panic!("{ty} in room_state"))
    };
    let mem = by_type(&mut m, "m.room.member");
    assert_eq!(
        mem,
        json!({
            "room_id": ROOM, "type": "m.room.member", "state_key": user, "event_id": "$m1",
            "sender": user, "origin_server_ts": 1_700_000_000_000_i64,
            "content": {"membership": "join"}, "redacted": true,
        })
    );
    assert_eq!(
        show_in(&mut m, "room_members", ROOM),
        vec![json!({"room_id": ROOM, "user_id": user, "membership": "join", "displayname": null})]
    );
    let pl = by_type(&mut m, "m.room.power_levels");
    assert_eq!(
        pl["content"],
        json!({"ban": 50, "users": {MOD: 100}, "state_default": 50})
    );
    assert_eq!(pl["redacted"], json!(true));
    let jr = by_type(&mut m, "m.room.join_rules");
    assert_eq!(
        jr["content"],
        json!({"join_rule": "restricted", "allow": []})
    );
    let cr = by_type(&mut m, "m.room.create");
    assert_eq!(
        cr["content"],
        json!({"room_version": "11", "creator": MOD, "x": 1})
    );
    assert_eq!(cr["redacted"], json!(true));
    // Both forms at once, naming the same event.
    let tp = by_type(&mut m, "m.room.topic");
    assert_eq!(
        (tp["content"].clone(), tp["redacted"].clone()),
        (json!({}), json!(true))
    );

    // An event and its redaction in one file, in that order: redacted. The other order: the
    // redaction came first, so it redacts nothing.
    ingest_events(
        &mut m,
        vec![
            user_ban("$r2", LIST, "r2", "@a:x.org", None),
            redaction("$x7", LIST, Some("$r2"), None),
        ],
    );
    ingest_events(
        &mut m,
        vec![
            redaction("$x8", LIST, Some("$r3"), None),
            user_ban("$r3", LIST, "r3", "@b:x.org", None),
        ],
    );
    let rows = show_in(&mut m, "policy_room", LIST);
    let got: Vec<&str> = rows.iter().map(|r| field(r, "event_id")).collect();
    assert_eq!(got, vec!["$r3"]);

    // A redaction in another room does not touch the event.
    ingest_events(&mut m, vec![redaction("$x9", ROOM2, Some("$r3"), None)]);
    assert_eq!(show_in(&mut m, "policy_room", LIST).len(), 1);
}

#[test]
fn redaction_of_a_non_current_event_does_nothing() {
    let mut m = matrix();
    ingest_events(
        &mut m,
        vec![user_ban("$v1", LIST, "s", "@a:x.org", Some("one"))],
    );
    ingest_events(
        &mut m,
        vec![user_ban("$v2", LIST, "s", "@b:x.org", Some("two"))],
    );
    let before_state = show(&mut m, "room_state");
    let before_rules = show(&mut m, "policy_room");
    assert_eq!(before_rules.len(), 1);
    assert_eq!(field(&before_rules[0], "event_id"), "$v2");

    ingest_events(&mut m, vec![redaction("$x1", LIST, Some("$v1"), None)]);
    assert_eq!(show(&mut m, "room_state"), before_state);
    assert_eq!(show(&mut m, "policy_room"), before_rules);

    // A redaction of an event never seen does nothing either.
    ingest_events(&mut m, vec![redaction("$x2", LIST, None, Some("$unknown"))]);
    assert_eq!(show(&mut m, "room_state"), before_state);

    // Redact the current one, then a new event at the key is unredacted again.
    ingest_events(&mut m, vec![redaction("$x3", LIST, Some("$v2"), None)]);
    assert_eq!(show(&mut m, "policy_room"), Vec::<Value>::new());
    ingest_events(&mut m, vec![user_ban("$v3", LIST, "s", "@c:x.org", None)]);
    let rows = show(&mut m, "room_state");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (field(&rows[0], "event_id"), rows[0]["redacted"].clone()),
        ("$v3", json!(false))
    );
    assert_eq!(
        rows[0]["content"],
        json!({"entity": "@c:x.org", "recommendation": "m.ban"})
    );
}

#[test]
fn unsigned_redacted_because_marks_the_event_redacted() {
    let mut m = matrix();
    let because = json!({"redacted_because": {"type": "m.room.redaction", "event_id": "$r", "sender": MOD, "content": {}}});
    let mut mem = state(
        "$m1",
        ROOM,
        "m.room.member",
        "@u:x.org",
        "@u:x.org",
        json!({"membership": "invite", "displayname": "U", "join_authorised_via_users_server": "@a:x.org"}),
    );
    mem["unsigned"] = because.clone();
    let mut rl = user_ban("$rl", LIST, "r", "@u:x.org", Some("gone"));
    rl["unsigned"] = because.clone();
    let mut jr = state(
        "$jr",
        ROOM,
        "m.room.join_rules",
        "",
        MOD,
        json!({"join_rule": "public", "extra": true}),
    );
    jr["unsigned"] = because;
    ingest_events(&mut m, vec![mem, rl, jr]);

    assert_eq!(
        show_in(&mut m, "room_state", ROOM),
        vec![
            json!({"room_id": ROOM, "type": "m.room.join_rules", "state_key": "", "event_id": "$jr", "sender": MOD,
                   "origin_server_ts": 1_700_000_000_000_i64, "content": {"join_rule": "public"}, "redacted": true}),
            json!({"room_id": ROOM, "type": "m.room.member", "state_key": "@u:x.org", "event_id": "$m1",
                   "sender": "@u:x.org", "origin_server_ts": 1_700_000_000_000_i64,
                   "content": {"membership": "invite", "join_authorised_via_users_server": "@a:x.org"},
                   "redacted": true}),
        ]
    );
    assert_eq!(
        show(&mut m, "room_members"),
        vec![
            json!({"room_id": ROOM, "user_id": "@u:x.org", "membership": "invite", "displayname": null})
        ]
    );
    let rule_state = show_in(&mut m, "room_state", LIST);
    assert_eq!(
        (
            rule_state[0]["content"].clone(),
            rule_state[0]["redacted"].clone()
        ),
        (json!({}), json!(true))
    );
    assert_eq!(show(&mut m, "policy_room"), Vec::<Value>::new());
    assert_eq!(show(&mut m, "rejects"), Vec::<Value>::new());
}

// ---------------------------------------------------------------------------------------------
// server_acl: an instance never bans its own server

#[test]
fn server_acl_never_denies_the_instance_own_server_with_port_and_case() {
    let mut m = matrix();
    let own = "@bot:Evil.ORG:8448";
    ingest_manifest(
        &mut m,
        json!([{"id": own, "watch": [LIST], "protect": [ROOM]}, {"id": BOT, "watch": [LIST]}]),
    );
    ingest_events(
        &mut m,
        [
            ("1", "evil.org"),
            ("2", "EVIL.org"),
            ("3", "*.org"),
            ("4", "ev?l.*"),
            ("5", "*"),
            ("6", "sub.evil.org"),
            ("7", "good.net"),
            ("8", "other.example"),
        ]
        .iter()
        .map(|(sk, entity)| server_rule(&format!("${sk}"), LIST, sk, entity, "m.ban"))
        .collect(),
    );
    assert_eq!(
        deny_of(&mut m, own),
        vec!["good.net", "other.example", "sub.evil.org"]
    );
    // Another instance (on good.net) watching the same list: only its own server and `*` go.
    assert_eq!(
        deny_of(&mut m, BOT),
        vec![
            "*.org",
            "EVIL.org",
            "ev?l.*",
            "evil.org",
            "other.example",
            "sub.evil.org"
        ]
    );
    assert_eq!(
        show(&mut m, "server_acl"),
        vec![
            json!({"instance": own, "allow": ["*"], "deny": ["good.net", "other.example", "sub.evil.org"], "allow_ip_literals": false}),
            json!({"instance": BOT, "allow": ["*"],
                   "deny": ["*.org", "EVIL.org", "ev?l.*", "evil.org", "other.example", "sub.evil.org"],
                   "allow_ip_literals": false}),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// acl_sync

#[test]
fn acl_sync_compares_sets_and_treats_missing_allow_ip_literals_as_true() {
    let (mut m, _dir) = matrix_with_store();
    let rooms = [
        "!r1:good.net",
        "!r2:good.net",
        "!r3:good.net",
        "!r4:good.net",
        "!r5:good.net",
        "!r6:good.net",
    ];
    ingest_manifest(
        &mut m,
        json!([{"id": BOT, "watch": [LIST], "protect": rooms}]),
    );
    // No rules yet: the intent is an empty deny list, and every room lacks an ACL.
    assert_eq!(
        show(&mut m, "server_acl"),
        vec![json!({"instance": BOT, "allow": ["*"], "deny": [], "allow_ip_literals": false})]
    );
    assert!(sync_of(&mut m, BOT).iter().all(|(_, s)| !s));

    ingest_events(
        &mut m,
        vec![
            server_rule("$s1", LIST, "s1", "evil.org", "m.ban"),
            server_rule("$s2", LIST, "s2", "*.evil.org", "m.ban"),
        ],
    );
    ingest_events(
        &mut m,
        vec![
            // Other order, a duplicate: equal as sets.
            acl(
                "$a1",
                rooms[0],
                json!({"allow": ["*"], "deny": ["evil.org", "*.evil.org", "evil.org"], "allow_ip_literals": false}),
            ),
            // allow_ip_literals missing = true: out of sync.
            acl(
                "$a2",
                rooms[1],
                json!({"allow": ["*"], "deny": ["*.evil.org", "evil.org"]}),
            ),
            acl(
                "$a3",
                rooms[2],
                json!({"allow": ["*"], "deny": ["*.evil.org", "evil.org"], "allow_ip_literals": true}),
            ),
            // rooms[3]: no ACL at all.
            acl(
                "$a5",
                rooms[4],
                json!({"allow": ["*"], "deny": ["*.evil.org", "evil.org", "more.example"], "allow_ip_literals": false}),
            ),
            acl(
                "$a6",
                rooms[5],
                json!({"allow": ["*", "good.net"], "deny": ["*.evil.org", "evil.org"], "allow_ip_literals": false}),
            ),
        ],
    );
    assert_eq!(
        sync_of(&mut m, BOT),
        syncs(&[
            (rooms[0], true),
            (rooms[1], false),
            (rooms[2], false),
            (rooms[3], false),
            (rooms[4], false),
            (rooms[5], false),
        ])
    );
    assert_eq!(
        show_in(&mut m, "acl_sync", BOT)[0],
        json!({"instance": BOT, "room_id": rooms[0], "in_sync": true})
    );

    // Fix rooms[1]: now in sync.
    ingest_events(
        &mut m,
        vec![acl(
            "$a2b",
            rooms[1],
            json!({"allow": ["*"], "deny": ["*.evil.org", "evil.org"], "allow_ip_literals": false}),
        )],
    );
    assert_eq!(
        sync_of(&mut m, BOT)[..2],
        syncs(&[(rooms[0], true), (rooms[1], true)])[..]
    );

    // A new ban rule: every room falls out of sync.
    let added = ingest_events(
        &mut m,
        vec![server_rule("$s3", LIST, "s3", "more.example", "m.ban")],
    );
    assert_eq!(
        sync_of(&mut m, BOT),
        syncs(&[
            (rooms[0], false),
            (rooms[1], false),
            (rooms[2], false),
            (rooms[3], false),
            (rooms[4], true),
            (rooms[5], false),
        ])
    );

    // A rule and the matching ACL in one file: in sync at that very Seq (both branches).
    let both = ingest_events(
        &mut m,
        vec![
            server_rule("$s4", LIST, "s4", "fourth.example", "m.ban"),
            acl(
                "$a1b",
                rooms[0],
                json!({"allow": ["*"], "deny": ["*.evil.org", "evil.org", "fourth.example", "more.example"], "allow_ip_literals": false}),
            ),
        ],
    );
    let at = |m: &mut Matrix, seq: Seq| -> Vec<(String, bool)> {
        m.show("acl_sync", Some(BOT), Some(seq))
            .unwrap()
            .iter()
            .map(|r| {
                (
                    field(r, "room_id").to_owned(),
                    r["in_sync"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        at(&mut m, both),
        syncs(&[
            (rooms[0], true),
            (rooms[1], false),
            (rooms[2], false),
            (rooms[3], false),
            (rooms[4], false),
            (rooms[5], false),
        ])
    );
    assert_eq!(
        at(&mut m, added)[4],
        (rooms[4].to_owned(), true),
        "history is kept"
    );
}

// ---------------------------------------------------------------------------------------------
// member_bans

#[test]
fn member_bans_reason_default_and_smallest_rule_room_and_event_id() {
    let mut m = matrix();
    let list_a = "!a-list:good.net";
    let list_b = "!b-list:good.net";
    ingest_manifest(
        &mut m,
        json!([{"id": BOT, "watch": [list_b, list_a], "protect": [ROOM, ROOM2]}]),
    );
    ingest_events(
        &mut m,
        vec![
            member("$1", ROOM, "@spam:evil.org", "join"),
            member("$2", ROOM2, "@spam:evil.org", "leave"),
            member("$3", ROOM, "@banned:evil.org", "ban"),
            member("$4", ROOM2, "@banned:evil.org", "join"),
            member("$5", ROOM, "@gone:evil.org", "leave"),
            member("$6", ROOM, "@nr:evil.org", "join"),
            member("$7", ROOM, "@srv:evil.org", "join"),
            member("$8", ROOM, "@allowed:evil.org", "join"),
        ],
    );
    ingest_events(
        &mut m,
        vec![
            user_ban("$b1", list_b, "b1", "@spam:evil.org", Some("from b")),
            rule(
                "$b2",
                list_b,
                "m.policy.rule.user",
                "b2",
                json!({"entity": "@banned:evil.org", "recommendation": "m.takedown", "reason": "takedown!"}),
            ),
            // A non-string reason is no reason.
            rule(
                "$b3",
                list_b,
                "m.policy.rule.user",
                "b3",
                json!({"entity": "@nr:evil.org", "recommendation": "m.ban", "reason": 7}),
            ),
            user_ban("$b4", list_b, "b4", "@gone:evil.org", Some("gone")),
            user_ban("$2", list_a, "a2", "@spam:*", Some("a two")),
            // "$10" < "$2" as strings.
            rule(
                "$10",
                list_a,
                "m.policy.rule.user",
                "a10",
                json!({"entity": "@sp*:evil.org", "recommendation": "org.matrix.mjolnir.ban"}),
            ),
            server_rule("$s", list_a, "s", "evil.org", "m.ban"),
            rule(
                "$al",
                list_a,
                "m.policy.rule.user",
                "al",
                json!({"entity": "@allowed:evil.org", "recommendation": "org.matrix.mjolnir.allow", "reason": "ok"}),
            ),
            rule(
                "$un",
                list_a,
                "m.policy.rule.user",
                "un",
                json!({"entity": "@allowed:evil.org", "recommendation": "com.example.watch"}),
            ),
        ],
    );
    let ban = |room: &str, user: &str, rule_room: &str, rule_event: &str, reason: &str| {
        json!({"instance": BOT, "room_id": room, "user_id": user, "rule_room_id": rule_room,
               "rule_event_id": rule_event, "reason": reason})
    };
    assert_eq!(
        show_in(&mut m, "member_bans", BOT),
        vec![
            // "!room2:..." sorts before "!room:..." ('2' < ':').
            ban(ROOM2, "@banned:evil.org", list_b, "$b2", "takedown!"),
            // Left ROOM2 but present in ROOM: the intent covers ROOM2 too.
            ban(ROOM2, "@spam:evil.org", list_a, "$10", NO_REASON),
            ban(ROOM, "@nr:evil.org", list_b, "$b3", NO_REASON),
            ban(ROOM, "@spam:evil.org", list_a, "$10", NO_REASON),
        ]
    );

    // Remove the chosen rule: the next smallest takes over.
    ingest_events(
        &mut m,
        vec![rule("$10x", list_a, "m.policy.rule.user", "a10", json!({}))],
    );
    let rows = show_in(&mut m, "member_bans", BOT);
    let spam: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter(|r| r["user_id"] == "@spam:evil.org")
        .map(|r| {
            (
                field(r, "rule_room_id"),
                field(r, "rule_event_id"),
                field(r, "reason"),
            )
        })
        .collect();
    assert_eq!(spam, vec![(list_a, "$2", "a two"), (list_a, "$2", "a two")]);
    ingest_events(
        &mut m,
        vec![rule("$2x", list_a, "m.policy.rule.user", "a2", json!({}))],
    );
    let rows = show_in(&mut m, "member_bans", BOT);
    let spam: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter(|r| r["user_id"] == "@spam:evil.org")
        .map(|r| {
            (
                field(r, "rule_room_id"),
                field(r, "rule_event_id"),
                field(r, "reason"),
            )
        })
        .collect();
    assert_eq!(
        spam,
        vec![(list_b, "$b1", "from b"), (list_b, "$b1", "from b")]
    );

    // Banned in ROOM: no longer present anywhere, so no intent at all for them.
    ingest_events(&mut m, vec![member("$9", ROOM, "@spam:evil.org", "ban")]);
    assert_eq!(
        show_in(&mut m, "member_bans", BOT),
        vec![
            ban(ROOM2, "@banned:evil.org", list_b, "$b2", "takedown!"),
            ban(ROOM, "@nr:evil.org", list_b, "$b3", NO_REASON)
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// A policy room that is also protected

#[test]
fn policy_room_that_is_also_a_protected_room() {
    let mut m = matrix();
    let both = "!both:good.net";
    ingest_manifest(
        &mut m,
        json!([{"id": BOT, "watch": [both], "protect": [both]}]),
    );
    ingest_events(
        &mut m,
        vec![
            member("$m0", both, MOD, "join"),
            member("$m1", both, "@spam:evil.org", "join"),
            user_ban("$u", both, "u", "@spam:evil.org", Some("spam")),
            server_rule("$s", both, "s", "evil.org", "m.ban"),
            acl(
                "$acl",
                both,
                json!({"allow": ["*"], "deny": ["evil.org"], "allow_ip_literals": false}),
            ),
        ],
    );
    assert_eq!(show_in(&mut m, "policy_room", both).len(), 2);
    assert_eq!(show_in(&mut m, "policy_list", BOT).len(), 2);
    assert_eq!(
        show(&mut m, "member_set"),
        vec![
            json!({"instance": BOT, "user_id": MOD, "rooms": 1}),
            json!({"instance": BOT, "user_id": "@spam:evil.org", "rooms": 1}),
        ]
    );
    let rows = show(&mut m, "member_matches");
    assert_eq!(
        match_keys(&rows),
        keys(&[
            ("@spam:evil.org", "server", "s"),
            ("@spam:evil.org", "user", "u")
        ])
    );
    assert!(rows.iter().all(|r| r["room_id"] == both));
    assert_eq!(
        show(&mut m, "member_bans"),
        vec![
            json!({"instance": BOT, "room_id": both, "user_id": "@spam:evil.org",
                    "rule_room_id": both, "rule_event_id": "$u", "reason": "spam"})
        ]
    );
    assert_eq!(deny_of(&mut m, BOT), vec!["evil.org"]);
    assert_eq!(sync_of(&mut m, BOT), syncs(&[(both, true)]));

    // The user is banned: no intent left; the list is unchanged.
    ingest_events(&mut m, vec![member("$m2", both, "@spam:evil.org", "ban")]);
    assert_eq!(show(&mut m, "member_bans"), Vec::<Value>::new());
    assert_eq!(
        show(&mut m, "member_set"),
        vec![json!({"instance": BOT, "user_id": MOD, "rooms": 1})]
    );
    assert_eq!(show_in(&mut m, "policy_list", BOT).len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Manifests

#[test]
fn manifest_replace_and_remove() {
    const INSTANCE_REPLICAS: [&str; 6] = [
        "policy_list",
        "member_set",
        "member_matches",
        "member_bans",
        "server_acl",
        "acl_sync",
    ];
    let other = "@other:good.net";
    let mut m = matrix();
    ingest_manifest(
        &mut m,
        json!([
            {"id": BOT, "watch": [LIST], "protect": [ROOM]},
            {"id": other, "watch": [LIST], "protect": [ROOM]},
        ]),
    );
    ingest_events(
        &mut m,
        vec![
            member("$m1", ROOM, "@spam:evil.org", "join"),
            member("$m2", ROOM2, "@x:good.net", "join"),
            user_ban("$u", LIST, "u", "@spam:evil.org", None),
            server_rule("$s", LIST, "s", "evil.org", "m.ban"),
        ],
    );
    let other_before: Vec<Vec<Value>> = INSTANCE_REPLICAS
        .iter()
        .map(|r| show_in(&mut m, r, other))
        .collect();
    for (name, rows) in INSTANCE_REPLICAS.iter().zip(&other_before) {
        assert!(!rows.is_empty(), "{name} has rows for {other}");
        assert_eq!(
            show_in(&mut m, name, BOT).len(),
            rows.len(),
            "{name}: both instances alike"
        );
    }

    // Replace: the entry's sets replace the old ones (no union).
    ingest_manifest(
        &mut m,
        json!([{"id": BOT, "watch": [], "protect": [ROOM2]}]),
    );
    assert_eq!(show_in(&mut m, "policy_list", BOT), Vec::<Value>::new());
    assert_eq!(
        show_in(&mut m, "member_set", BOT),
        vec![json!({"instance": BOT, "user_id": "@x:good.net", "rooms": 1})]
    );
    assert_eq!(show_in(&mut m, "member_matches", BOT), Vec::<Value>::new());
    assert_eq!(show_in(&mut m, "member_bans", BOT), Vec::<Value>::new());
    assert_eq!(deny_of(&mut m, BOT), Vec::<String>::new());
    assert_eq!(sync_of(&mut m, BOT), syncs(&[(ROOM2, false)]));

    // Remove: nothing is left for the instance; the other instance is untouched.
    ingest_manifest(&mut m, json!([{"id": BOT, "remove": true}]));
    for (name, rows) in INSTANCE_REPLICAS.iter().zip(&other_before) {
        assert_eq!(
            show_in(&mut m, name, BOT),
            Vec::<Value>::new(),
            "{name} after remove"
        );
        assert_eq!(
            &show_in(&mut m, name, other),
            rows,
            "{name} of {other} unchanged"
        );
        assert!(
            show(&mut m, name).iter().all(|r| r["instance"] == other),
            "{name}: only {other} left"
        );
    }
    // The source rooms are untouched.
    assert_eq!(show_in(&mut m, "policy_room", LIST).len(), 2);
    assert_eq!(show(&mut m, "room_members").len(), 2);

    // Re-adding the instance brings its records back.
    ingest_manifest(
        &mut m,
        json!([{"id": BOT, "watch": [LIST], "protect": [ROOM]}]),
    );
    for (name, rows) in INSTANCE_REPLICAS.iter().zip(&other_before) {
        assert_eq!(
            show_in(&mut m, name, BOT).len(),
            rows.len(),
            "{name} after re-adding"
        );
    }
}
