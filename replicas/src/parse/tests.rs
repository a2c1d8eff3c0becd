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
    let text = serde_json::to_string_pretty(&json!([ev("$1", "m.room.topic", Some(""))])).unwrap();
    assert_eq!(parse_file("a.json", text.as_bytes()).unwrap().len(), 1);
    assert!(parse_file("a.json", b"[]").unwrap().is_empty());
}

#[test]
fn state_shape() {
    let text =
        json!({"state": [ev("$1", "m.room.name", Some("")), ev("$2", "m.room.topic", Some(""))]});
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
