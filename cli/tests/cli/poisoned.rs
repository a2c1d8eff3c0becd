//! `prr status`, `prr show poisoned` and `prr ack-poisoned` on a store holding a quarantined
//! delta.
//!
//! No Matrix replica panics on any record (that would be a bug to fix, not a fixture), so the
//! store is made through the engine's API, the way an embedding program would make it: the
//! Matrix replicas plus `tripwire` (`prr_replicas::dag_with_tripwire`), a test replica whose
//! computation panics on the event `$poison`. The quarantine and the log name only the Matrix source replicas, so `prr` (the
//! Matrix replicas alone) reads the store as any other; no revision of `tripwire` is written.

use std::path::Path;

use prr_engine::{Runtime, RuntimeConfig, Seq};
use prr_replicas::{Ingestor, Rec, dag_with_tripwire, parse_file};
use serde_json::Value;

use crate::support::Scratch;

/// One `m.room.member` event of `!r:x`.
fn member(event_id: &str, user: &str) -> Vec<prr_replicas::SourceItem> {
    let file = format!(
        r#"[{{"event_id": "{event_id}", "room_id": "!r:x", "type": "m.room.member",
            "state_key": "{user}", "sender": "{user}", "content": {{"membership": "join"}}}}]"#
    );
    parse_file("f.json", file.as_bytes()).unwrap()
}

/// Ingests three members at seqs 1..=3 through a runtime with `tripwire`: the second
/// (`$poison`, `@b:x`) is quarantined.
fn store_with_a_poisoned_delta(path: &Path) {
    let config = RuntimeConfig::new()
        .with_store(path)
        .with_revision_on_shutdown(false);
    let mut rt: Runtime<Rec> =
        Runtime::start_with(config, |dict| dag_with_tripwire(dict, "$poison")).unwrap();
    let rs = rt.replica("room_state").unwrap();
    let inst = rt.replica("instances").unwrap();
    let mut ingestor = Ingestor::new(rs, inst, []);
    for (event_id, user) in [("$1", "@a:x"), ("$poison", "@b:x"), ("$3", "@c:x")] {
        let mut prepared = ingestor.prepare(rt.dictionary(), &member(event_id, user));
        rt.push(std::mem::take(&mut prepared.delta)).unwrap();
        rt.sync().unwrap();
        ingestor.commit(prepared);
    }
    assert_eq!(rt.newly_poisoned(), [Seq(2)]);
    rt.shutdown().unwrap();
}

fn users(s: &Scratch) -> Vec<String> {
    (s.show("room_members").iter())
        .map(|r| r["user_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn status_show_poisoned_and_ack_poisoned_report_and_drop_a_quarantined_delta() {
    let s = Scratch::new();
    store_with_a_poisoned_delta(&s.store());

    let st: Value = serde_json::from_str(&s.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(st["seq"], 3);
    assert_eq!(st["poisoned"], serde_json::json!({"count": 1, "seqs": [2]}));
    let table = s.ok(&["status"]);
    assert!(
        table.contains("poisoned 1 quarantined source deltas: seq 2"),
        "{table}"
    );

    let listed = s.show("poisoned");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["seq"], 2);
    let message = listed[0]["message"].as_str().unwrap();
    assert!(message.contains("tripwire: event $poison"), "{message}");
    let at = listed[0]["quarantined_at"].as_str().unwrap();
    assert!(at.len() == 24 && at.ends_with('Z'), "{at}");
    let json: Value =
        serde_json::from_str(&s.ok(&["show", "poisoned", "--format", "json"])).unwrap();
    assert_eq!(json, Value::Array(listed));
    let table = s.ok(&["show", "poisoned", "--format", "table"]);
    assert!(
        table.starts_with("seq") && table.contains("tripwire") && table.contains("(1 records)"),
        "{table}"
    );
    let out = s.prr(&["show", "poisoned", "--as-of", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        users(&s),
        ["@a:x", "@c:x"],
        "the quarantined delta is skipped"
    );

    // An unknown seq is an error naming the quarantined ones; nothing changes.
    let before = crate::support::bytes(&s.store());
    let out = s.prr(&["ack-poisoned", "3"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("seq 3 is not a quarantined delta; quarantined: 2"),
        "{err}"
    );
    assert_eq!(crate::support::bytes(&s.store()), before);

    let out = s.ok(&["ack-poisoned", "2"]);
    assert!(out.contains("seq 2"), "{out}");
    assert!(s.show("poisoned").is_empty());
    let st: Value = serde_json::from_str(&s.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(st["poisoned"], serde_json::json!({"count": 0, "seqs": []}));
    assert_eq!(
        users(&s),
        ["@a:x", "@c:x"],
        "dropped for good: never replayed"
    );
    s.ok(&["rebuild", "--check"]);
    assert!(s.ok(&["check"]).contains("sound"));
    assert_eq!(s.prr(&["ack-poisoned", "2"]).status.code(), Some(1));
}

#[test]
fn ack_poisoned_without_a_store_says_so_and_creates_none() {
    let s = Scratch::new();
    let out = s.prr(&["ack-poisoned", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no store at"), "{err}");
    assert!(!s.store().exists());
}
