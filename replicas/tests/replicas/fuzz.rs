//! Property-based fuzzing of what reads untrusted bytes: the file and line parsers, the
//! ingest of whatever they accept, and the engine's decoders of log entries and revision
//! chunks of `Rec`. Each input gives a value or a clear error, never a panic. Bounded in CI
//! (`CI` set): a few seconds on 2 cores.
//!
//! The coverage-guided targets of the same entry points are in `fuzz/` (not part of the
//! workspace, not run by CI); findings of either become tests here.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prr_engine::{Error, RuntimeConfig, oracle};
use prr_replicas::{Matrix, REPLICAS, Rec, SourceItem, parse_file, parse_line};
use serde_json::{Map, Value, json};

fn cases(local: u32, ci: u32) -> u32 {
    if std::env::var("CI").is_ok() {
        ci
    } else {
        local
    }
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// A parse error names the file first (then the line or index, the field and what is wrong).
fn clear(file: &str, e: &prr_replicas::ParseError) {
    let text = e.to_string();
    assert!(text.starts_with(file), "{text:?} does not name {file}");
    assert!(!e.message.is_empty(), "{text:?} says nothing");
}

// ---------------------------------------------------------------------------------------------
// Structure-aware JSON: events and manifests with fields of the right type, of a wrong type,
// missing, huge, unicode and nested.

/// Strings a parser or a glob may trip on.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9@!:.$#_*?-]{0,16}",
        2 => any::<String>(),
        1 => "[@!$#]?[a-z*?]{0,6}:[a-z0-9.*?\\[\\]:-]{0,12}",
        1 => Just(String::new()),
        1 => "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{202a}-\\u{202e}\\u{feff}]{1,8}",
        1 => (1usize..4096).prop_map(|n| "*a".repeat(n / 2) + "*b"),
        1 => (1usize..4096).prop_map(|n| "\u{1F600}".repeat(n)),
    ]
}

/// User IDs: mostly a few that meet again across events, rules and files.
fn user() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["@a:x.example", "@b:x.example", "@evil:spam.example"])
            .prop_map(String::from),
        2 => "@[a-z]{1,4}:[a-z]{1,3}\\.example",
        1 => "@[a-z*?]{1,4}:[a-z*?.]{1,8}",
        1 => text(),
    ]
}

/// Rule entities: globs and literals that match the usual users, or anything.
fn entity() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "@*:spam.example", "@a:x.example", "*", "@?:x.example", "spam.example",
            "*.example", "@*:*", "x.example",
        ])
        .prop_map(String::from),
        1 => user(),
    ]
}

fn room() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["!a:x.example", "!b:x.example", "!list:y.example"])
            .prop_map(String::from),
        1 => text(),
    ]
}

/// Any JSON value, nested up to a few levels.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

type Field = BoxedStrategy<Option<Value>>;

/// A field. Tame: always present and plausible. Hostile: usually plausible, sometimes any
/// value (likely of a wrong type), sometimes absent.
fn field(plausible: impl Strategy<Value = Value> + 'static, hostile: bool) -> Field {
    if hostile {
        prop_oneof![
            6 => plausible.prop_map(Some),
            2 => value().prop_map(Some),
            1 => Just(None),
        ]
        .boxed()
    } else {
        plausible.prop_map(Some).boxed()
    }
}

const TYPES: &[&str] = &[
    "m.room.member",
    "m.policy.rule.user",
    "m.policy.rule.server",
    "m.policy.rule.room",
    "org.matrix.mjolnir.rule.user",
    "m.room.server_acl",
    "m.room.redaction",
    "m.room.create",
    "m.room.power_levels",
    "m.room.topic",
];

/// The content of an event of type `ty`: usually what that type holds, sometimes what
/// another holds. The parser checks only that it is an object, so its fields are always
/// hostile: the ingest and the replicas meet them.
fn content(ty: &str, hostile: bool) -> BoxedStrategy<Value> {
    let membership = prop::sample::select(vec![
        "join", "join", "join", "leave", "ban", "invite", "knock", "x",
    ]);
    let recommendation = prop::sample::select(vec!["m.ban", "org.matrix.mjolnir.ban", "m.x"]);
    let member = (
        field(membership.prop_map(Value::from), true),
        field(text().prop_map(Value::from), true),
    )
        .prop_map(|(m, d)| object([("membership", m), ("displayname", d)]))
        .boxed();
    let rule = (
        field(entity().prop_map(Value::from), true),
        field(recommendation.prop_map(Value::from), true),
        field(text().prop_map(Value::from), true),
        prop_oneof![3 => Just(None), 1 => text().prop_map(Some)],
    )
        .prop_map(|(entity, rec, reason, hash)| {
            let hashes = hash.map(|h| json!({ "sha256": h }));
            object([
                ("entity", entity),
                ("recommendation", rec),
                ("reason", reason),
                ("hashes", hashes),
            ])
        })
        .boxed();
    let acl = (
        field(
            prop::collection::vec(entity(), 0..4).prop_map(Value::from),
            true,
        ),
        field(
            prop::collection::vec(entity(), 0..4).prop_map(Value::from),
            true,
        ),
        field(any::<bool>().prop_map(Value::from), true),
        field(text().prop_map(Value::from), true),
    )
        .prop_map(|(allow, deny, ip, redacts)| {
            object([
                ("allow", allow),
                ("deny", deny),
                ("allow_ip_literals", ip),
                ("redacts", redacts),
            ])
        })
        .boxed();
    let any_object = prop::collection::btree_map(text(), value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .boxed();
    let fitting = match ty {
        "m.room.member" => member.clone(),
        t if t.contains("rule") => rule.clone(),
        "m.room.server_acl" => acl.clone(),
        _ => any_object.clone(),
    };
    let objects = prop_oneof![8 => fitting, 1 => member, 1 => rule, 1 => acl, 1 => any_object];
    if hostile {
        prop_oneof![4 => objects, 1 => value()].boxed()
    } else {
        objects.boxed()
    }
}

fn object<const N: usize>(fields: [(&str, Option<Value>); N]) -> Value {
    let mut m = Map::new();
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    }
    Value::Object(m)
}

fn event(hostile: bool) -> BoxedStrategy<Value> {
    let unsigned: Field = if hostile {
        prop_oneof![
            8 => Just(None),
            1 => Just(Some(json!({ "redacted_because": {} }))),
            1 => value().prop_map(Some),
        ]
        .boxed()
    } else {
        prop_oneof![8 => Just(None), 1 => Just(Some(json!({ "redacted_because": {} })))].boxed()
    };
    let ty = prop_oneof![
        4 => Just("m.room.member"),
        2 => Just("m.policy.rule.user"),
        1 => prop::sample::select(TYPES),
    ];
    // The state key fits the type: a user for a member event, a rule's key for a rule, the
    // empty key for the others; sometimes anything.
    let typed = ty.prop_flat_map(move |ty| {
        let fitting = match ty {
            "m.room.member" => user().boxed(),
            t if t.contains("rule") => prop_oneof![entity(), text()].boxed(),
            _ => Just(String::new()).boxed(),
        };
        let key = prop_oneof![4 => fitting, 1 => text()];
        (
            field(Just(Value::from(ty)), hostile),
            field(key.prop_map(Value::from), hostile),
            content(ty, hostile).prop_map(Some),
        )
    });
    (
        (
            field("\\$[a-z0-9]{1,6}".prop_map(Value::from), hostile),
            field(room().prop_map(Value::from), hostile),
            typed,
            field(user().prop_map(Value::from), hostile),
        ),
        (
            field(any::<i64>().prop_map(Value::from), hostile),
            field("\\$[a-z0-9]{1,6}".prop_map(Value::from), true),
            unsigned,
        ),
    )
        .prop_map(
            |((id, room, (ty, key, content), sender), (ts, redacts, unsigned))| {
                object([
                    ("event_id", id),
                    ("room_id", room),
                    ("type", ty),
                    ("state_key", key),
                    ("sender", sender),
                    ("origin_server_ts", ts),
                    ("content", content),
                    ("redacts", redacts),
                    ("unsigned", unsigned),
                ])
            },
        )
        .boxed()
}

fn manifest(hostile: bool) -> BoxedStrategy<Value> {
    let id = if hostile {
        user().boxed()
    } else {
        "@[a-z]{1,4}:[a-z]{1,3}\\.example".boxed()
    };
    let remove: Field = if hostile {
        prop_oneof![4 => Just(None), 1 => field(any::<bool>().prop_map(Value::from), true)].boxed()
    } else {
        prop_oneof![4 => Just(None), 1 => any::<bool>().prop_map(|b| Some(Value::from(b)))].boxed()
    };
    let entry = (
        field(id.prop_map(Value::from), hostile),
        field(
            prop::collection::vec(room(), 0..3).prop_map(Value::from),
            hostile,
        ),
        field(
            prop::collection::vec(room(), 0..3).prop_map(Value::from),
            hostile,
        ),
        remove,
    )
        .prop_map(|(id, watch, protect, remove)| {
            object([
                ("id", id),
                ("watch", watch),
                ("protect", protect),
                ("remove", remove),
            ])
        });
    field(
        prop::collection::vec(entry, 0..4).prop_map(Value::Array),
        hostile,
    )
    .prop_map(|instances| object([("instances", instances)]))
    .boxed()
}

/// A whole file in one of the accepted shapes (or nearly): tame (every field present and of
/// its type; contents hostile) or hostile (fields of wrong types or missing, any JSON, one
/// byte damaged).
fn file() -> impl Strategy<Value = Vec<u8>> {
    any::<bool>().prop_flat_map(|hostile| {
        let events = move || prop::collection::vec(event(hostile), 0..8);
        let line = prop_oneof![3 => event(hostile), 1 => manifest(hostile)];
        let mut shapes = vec![
            events().prop_map(|e| Value::Array(e).to_string()).boxed(),
            events()
                .prop_map(|e| json!({ "state": e }).to_string())
                .boxed(),
            (room(), events())
                .prop_map(|(r, e)| json!({ "room_id": r, "events": e }).to_string())
                .boxed(),
            prop::collection::vec(line, 1..6)
                .prop_map(|lines| {
                    let lines: Vec<String> = lines.iter().map(Value::to_string).collect();
                    lines.join("\n")
                })
                .boxed(),
            manifest(hostile).prop_map(|m| m.to_string()).boxed(),
            event(hostile).prop_map(|e| e.to_string()).boxed(),
        ];
        if hostile {
            shapes.push(value().prop_map(|v| v.to_string()).boxed());
        }
        let damage: BoxedStrategy<Option<(prop::sample::Index, u8)>> = if hostile {
            prop_oneof![3 => Just(None), 1 => any::<(prop::sample::Index, u8)>().prop_map(Some)]
                .boxed()
        } else {
            Just(None).boxed()
        };
        (prop::strategy::Union::new(shapes), damage).prop_map(|(text, damage)| {
            let mut bytes = text.into_bytes();
            if let Some((at, b)) = damage
                && !bytes.is_empty()
            {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            bytes
        })
    })
}

/// Parses and ingests files into a fresh runtime, then reads every replica: anything the
/// parser accepts is ingested and read back without a panic (a worker's panic would come
/// back as `Error::WorkerFailed`).
/// Returns how many files were ingested, and whether a rule matched a member.
fn parse_and_ingest(files: &[Vec<u8>]) -> (usize, bool) {
    let mut ingested = 0;
    let mut m = Matrix::start(RuntimeConfig::new()).unwrap();
    for (n, bytes) in files.iter().enumerate() {
        let name = format!("fuzz-{n}.json");
        match parse_file(&name, bytes) {
            Err(e) => clear(&name, &e),
            Ok(items) => {
                let lines = String::from_utf8_lossy(bytes);
                for (i, line) in lines.lines().enumerate() {
                    if let Err(e) = parse_line(&name, i as u64 + 1, line) {
                        clear(&name, &e);
                    }
                }
                if items.is_empty() {
                    continue;
                }
                match m.ingest(&items) {
                    Ok(_) => ingested += 1,
                    Err(e) => assert!(!matches!(e, Error::WorkerFailed(_)), "ingest: {e}"),
                }
            }
        }
    }
    let mut matched = false;
    for r in REPLICAS {
        match m.show(r, None, None) {
            Err(e) => panic!("show {r} after the ingest: {e}"),
            Ok(rows) => matched |= r == "member_matches" && !rows.is_empty(),
        }
    }
    m.shutdown().unwrap();
    (ingested, matched)
}

#[test]
fn arbitrary_bytes_parse_or_fail_with_the_file_named() {
    let mut runner = TestRunner::new(config(cases(4096, 512)));
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
            if let Err(e) = parse_file("bytes.json", &bytes) {
                clear("bytes.json", &e);
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = parse_line("bytes.ndjson", 7, &text) {
                clear("bytes.ndjson", &e);
                assert_eq!(e.location, prr_replicas::Location::Line(7));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn structured_json_parses_and_ingests_or_fails_cleanly() {
    let cases = cases(512, 128);
    let mut runner = TestRunner::new(config(cases));
    let (files_seen, ingested) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let matched = std::cell::Cell::new(0);
    // Half the time an instance first watches and protects every room the events use, with
    // a ban rule and a member it matches, so that the generated events meet rules, members
    // and matches (and may change or redact them).
    let bot = json!({ "instances": [{
        "id": "@bot:x.example",
        "watch": ["!a:x.example", "!b:x.example", "!list:y.example"],
        "protect": ["!a:x.example", "!b:x.example"],
    }]})
    .to_string()
    .into_bytes();
    let seed = json!([
        {"event_id": "$rule", "room_id": "!list:y.example", "type": "m.policy.rule.user",
         "state_key": "rule", "sender": "@a:x.example",
         "content": {"entity": "@*:spam.example", "recommendation": "m.ban", "reason": "spam"}},
        {"event_id": "$evil", "room_id": "!a:x.example", "type": "m.room.member",
         "state_key": "@evil:spam.example", "sender": "@evil:spam.example",
         "content": {"membership": "join"}},
    ])
    .to_string()
    .into_bytes();
    let files = (any::<bool>(), prop::collection::vec(file(), 1..4)).prop_map(move |(b, f)| {
        if b {
            [bot.clone(), seed.clone()].into_iter().chain(f).collect()
        } else {
            f
        }
    });
    runner
        .run(&files, |files: Vec<Vec<u8>>| {
            files_seen.set(files_seen.get() + files.len());
            let (n, m) = parse_and_ingest(&files);
            ingested.set(ingested.get() + n);
            matched.set(matched.get() + usize::from(m));
            Ok(())
        })
        .unwrap();
    // The generator must reach the ingest, not only the parser's errors.
    assert!(
        ingested.get() * 4 >= files_seen.get(),
        "only {} of {} generated files were ingested",
        ingested.get(),
        files_seen.get()
    );
    assert!(
        matched.get() > 0,
        "no case reached a rule matching a member"
    );
    eprintln!(
        "{} of {} generated files ingested; a rule matched a member in {} of {cases} cases",
        ingested.get(),
        files_seen.get(),
        matched.get()
    );
}

#[test]
fn structured_json_lines_parse_or_fail_with_their_line() {
    let mut runner = TestRunner::new(config(cases(2048, 256)));
    let line =
        prop_oneof![event(true), event(false), manifest(true), value()].prop_map(|v| v.to_string());
    runner
        .run(&line, |line| {
            match parse_line("s.ndjson", 3, &line) {
                Err(e) => {
                    clear("s.ndjson", &e);
                    assert_eq!(e.location, prr_replicas::Location::Line(3));
                }
                Ok(Some(SourceItem::Event(ev))) => {
                    assert!(ev.state_key.is_some() || ev.redacts.is_some(), "{ev:?}")
                }
                Ok(_) => {}
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [200, 10_000, 100_000] {
        let content = "[".repeat(depth) + &"]".repeat(depth);
        let event = format!(
            r#"{{"event_id":"$1","room_id":"!r:x","type":"m.room.topic","state_key":"","sender":"@a:x","content":{{"x":{content}}}}}"#
        );
        for (name, bytes) in [
            ("deep.json", format!("[{event}]")),
            ("deep.ndjson", format!("{event}\n{event}")),
        ] {
            let e = parse_file(name, bytes.as_bytes()).expect_err("nesting past the limit");
            clear(name, &e);
        }
        let e = parse_line("deep.ndjson", 1, &event).expect_err("nesting past the limit");
        clear("deep.ndjson", &e);
    }
}

// ---------------------------------------------------------------------------------------------
// The engine's decoders on `Rec`: arbitrary bytes, and real log entries and revision chunks
// of a demo store, damaged.

/// Every decoder on `bytes`: a value or `Error::Corrupt` naming what, never a panic.
fn decode_all(bytes: &[u8]) {
    if let Err(e) = oracle::decode_log_entry::<Rec>(bytes, 9) {
        assert!(matches!(e, Error::Corrupt(_)), "{e:?}");
        assert!(e.to_string().contains("log entry 9"), "{e}");
    }
    let (whole, first) = oracle::decode_revision_chunk::<Rec>(bytes, "room_state", 3, 1);
    for e in [whole.err(), first.err()].into_iter().flatten() {
        assert!(matches!(e, Error::Corrupt(_)), "{e:?}");
        assert!(
            e.to_string().contains("revision (room_state, 3) chunk 1"),
            "{e}"
        );
    }
}

#[test]
fn arbitrary_bytes_decode_as_rec_or_fail_cleanly() {
    let mut runner = TestRunner::new(config(cases(4096, 512)));
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
            decode_all(&bytes);
            Ok(())
        })
        .unwrap();
}

/// The log entries and revision chunks of the demo data in a store.
fn demo_store_values() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.redb");
    let mut m = Matrix::start(RuntimeConfig::new().with_store(&path)).unwrap();
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/demo");
    let mut names: Vec<_> = std::fs::read_dir(&demo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for f in names {
        let items = parse_file(&f.display().to_string(), &std::fs::read(&f).unwrap()).unwrap();
        m.ingest(&items).unwrap();
    }
    m.shutdown().unwrap();
    let store = prr_persist::Store::open_read_only(&path).unwrap();
    let mut values: Vec<Vec<u8>> = store
        .log_from(1)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    for r in store.revisions().unwrap() {
        values.extend(store.revision_chunks(&r.replica, r.as_of).unwrap());
    }
    assert!(
        values.len() > 10,
        "the demo store has log entries and chunks"
    );
    values
}

#[test]
fn damaged_log_entries_and_chunks_of_rec_decode_or_fail_cleanly() {
    let values = Arc::new(demo_store_values());
    let mut runner = TestRunner::new(config(cases(4096, 512)));
    let damage = (
        any::<prop::sample::Index>(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        any::<prop::sample::Index>(),
    );
    runner
        .run(&damage, |(which, flips, cut)| {
            let original = which.get(&values);
            let mut bytes = original.clone();
            for (at, b) in &flips {
                let i = at.index(bytes.len());
                bytes[i] ^= b | 1;
            }
            decode_all(&bytes);
            decode_all(&original[..cut.index(original.len())]);
            Ok(())
        })
        .unwrap();
}
