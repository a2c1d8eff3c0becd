//! The core's tests: writes under storage faults, captures, pruning, compacting in process.

use std::sync::Arc;

use prr_engine::{Runtime, RuntimeConfig};
use prr_persist::{Fault, Faults, FaultyBackend, Store};
use prr_replicas::{Matrix, matrix_dag, parse_file};

use super::*;
use crate::http::engine_status;

fn member(event_id: &str, user: &str) -> Vec<SourceItem> {
    member_with(event_id, user, "join")
}

fn member_with(event_id: &str, user: &str, membership: &str) -> Vec<SourceItem> {
    let file = format!(
        r#"[{{"event_id": "{event_id}", "room_id": "!r:x", "type": "m.room.member",
            "state_key": "{user}", "sender": "{user}", "content": {{"membership": "{membership}"}}}}]"#
    );
    parse_file("f.json", file.as_bytes()).unwrap()
}

fn ingest(core: &mut Core, items: Vec<SourceItem>) -> Result<Seq, Error> {
    let (reply, mut rx) = oneshot::channel();
    core.handle(Command::Ingest { items, reply });
    rx.try_recv().expect("answered at once")
}

fn transaction(core: &mut Core, events: Vec<Received>) -> Result<Option<Seq>, Error> {
    let (reply, mut rx) = oneshot::channel();
    core.handle(Command::Transaction {
        txn_id: "t".into(),
        events,
        reply,
    });
    rx.try_recv().expect("answered at once")
}

fn show(core: &mut Core, replica: &str) -> Vec<Value> {
    let (reply, mut rx) = oneshot::channel();
    core.handle(Command::Show {
        replica: replica.into(),
        partition: None,
        as_of: None,
        reply,
    });
    rx.try_recv().expect("answered at once").unwrap()
}

/// A storage fault makes writes fail as 503 (nothing acknowledged), reads go on, and the
/// same core writes again once the fault clears; a transaction retried after the fault is
/// applied once.
/// A core on a fresh store whose storage fails when `Faults` say so, capturing revisions
/// every `captures` (interval, deltas); the store's directory, the faults and the
/// published last seq come with it.
fn faulty_core(
    captures: (Duration, Option<u64>),
) -> (Core, Faults, watch::Receiver<u64>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let faults = Faults::new();
    let (p, f) = (path.clone(), faults.clone());
    let store = Store::open_with_backend(&path, move || FaultyBackend::open(&p, &f)).unwrap();
    let rt = Runtime::start_on(RuntimeConfig::new(), store, matrix_dag).unwrap();
    let (seq_tx, seq_rx) = watch::channel(0);
    let metrics = Arc::new(Metrics::new());
    let mut m = Matrix::from_runtime(rt);
    let door = Door::start(&mut m).unwrap();
    let core = Core::new(m, metrics, seq_tx, captures, door);
    (core, faults, seq_rx, dir)
}

#[test]
fn writes_answer_503_while_the_storage_fails_and_resume_after() {
    let (mut core, faults, seq_rx, _dir) = faulty_core((Duration::from_secs(60), None));
    assert_eq!(ingest(&mut core, member("$1", "@a:x")).unwrap(), Seq(1));
    assert_eq!(*seq_rx.borrow(), 1);

    for fault in [Fault::Write, Fault::Sync, Fault::Full] {
        faults.arm(fault, 0);
        let e = ingest(&mut core, member("$2", "@b:x")).unwrap_err();
        assert_eq!(
            engine_status(&e),
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "{fault:?}: {e}"
        );
        assert!(core.sources.storage_fault.is_some());
        let event = match member("$t", "@t:x").remove(0) {
            SourceItem::Event(e) => e,
            SourceItem::Manifest(_) => unreachable!(),
        };
        let e = transaction(&mut core, vec![Received::Valid(event)]).unwrap_err();
        assert_eq!(
            engine_status(&e),
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        // Reads go on.
        assert_eq!(show(&mut core, "room_members").len(), 1, "{fault:?}");
        faults.clear();
    }
    // The fault cleared: the same core writes again, and the status forgets the fault.
    let seq = ingest(&mut core, member("$2", "@b:x")).unwrap();
    assert!(core.sources.storage_fault.is_none());
    let event = match member("$t", "@t:x").remove(0) {
        SourceItem::Event(e) => e,
        SourceItem::Manifest(_) => unreachable!(),
    };
    let applied = transaction(&mut core, vec![Received::Valid(event.clone())]).unwrap();
    assert_eq!(applied, Some(Seq(seq.0 + 1)));
    assert_eq!(
        transaction(&mut core, vec![Received::Valid(event)]).unwrap(),
        None
    );
    let users: Vec<String> = (show(&mut core, "room_members").iter())
        .map(|r| r["user_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(users, ["@a:x", "@b:x", "@t:x"]);
    assert_eq!(*seq_rx.borrow(), seq.0 + 1);
}

/// Every `revision_every` deltas a capture starts in the background and commits go on
/// while it runs; one that the storage fails leaves the core dirty, and the next writes
/// the revisions.
#[test]
fn captures_every_n_deltas_run_in_the_background() {
    let (mut core, faults, _, _dir) = faulty_core((Duration::from_secs(3600), Some(2)));
    let captured = |core: &mut Core, as_of: u64| {
        (core.m.runtime().revisions().unwrap().iter())
            .any(|r| r.replica == "room_state" && r.as_of == as_of)
    };
    ingest(&mut core, member("$1", "@a:x")).unwrap();
    assert!(!core.capture_due());
    ingest(&mut core, member("$2", "@b:x")).unwrap();
    assert!(core.capture_due());
    core.start_capture();
    assert!(core.capturing);
    assert_eq!(ingest(&mut core, member("$3", "@c:x")).unwrap(), Seq(3));
    core.capture_ended(true);
    assert!(!core.capturing && captured(&mut core, 2));
    assert!(!core.capture_due(), "one delta since");
    ingest(&mut core, member("$4", "@d:x")).unwrap();
    assert!(core.capture_due());
    faults.arm(Fault::Write, 0);
    core.start_capture();
    core.capture_ended(true);
    faults.clear();
    assert!(core.dirty && !captured(&mut core, 4));
    ingest(&mut core, member("$5", "@e:x")).unwrap();
    ingest(&mut core, member("$6", "@f:x")).unwrap();
    assert!(core.capture_due());
    core.start_capture();
    core.capture_ended(true);
    assert!(!core.dirty && captured(&mut core, 6));
    assert_eq!(show(&mut core, "room_members").len(), 6);
}

/// `source_events` is pruned only once the service has run the retention, then every
/// quarter of it (at least 1 s): what left is what was received before the retention and
/// is no longer the current state.
#[test]
fn source_events_are_pruned_after_the_retention_once_the_service_ran_it() {
    let (core, _, _, _dir) = faulty_core((Duration::from_secs(3600), None));
    let mut core = core.with_dedup_retention(Duration::from_secs(1));
    let due = core.prune_due().unwrap();
    assert!(
        due > Duration::from_millis(500),
        "not before the retention: {due:?}"
    );
    for (id, membership) in [("$1", "join"), ("$2", "leave")] {
        let event = match member_with(id, "@a:x", membership).remove(0) {
            SourceItem::Event(e) => e,
            SourceItem::Manifest(_) => unreachable!(),
        };
        transaction(&mut core, vec![Received::Valid(event)]).unwrap();
    }
    assert_eq!(show(&mut core, "source_events").len(), 2);
    // Received over a second ago, by a service started over a second ago.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(core.prune_due(), Some(Duration::ZERO));
    core.prune();
    let kept: Vec<Value> = show(&mut core, "source_events");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["event_id"], "$2", "the current state stays");
    assert!(core.dirty, "a capture follows");
    let next = core.prune_due().unwrap();
    assert!(
        next > Duration::from_millis(500),
        "then every second: {next:?}"
    );
}

fn named(event_id: &str, user: &str, name: &str) -> Vec<SourceItem> {
    let file = format!(
        r#"[{{"event_id": "{event_id}", "room_id": "!r:x", "type": "m.room.member",
            "state_key": "{user}", "sender": "{user}",
            "content": {{"membership": "join", "displayname": "{name}"}}}}]"#
    );
    parse_file("f.json", file.as_bytes()).unwrap()
}

/// Compacting in process: the strings of replaced events leave the store and memory, the
/// replicas read the same, the door and the handlers' subscription follow the restarted
/// dataflow, and what comes next is applied.
#[test]
fn compacting_in_process_collects_replaced_strings_from_memory() {
    let (core, _, _, _dir) = faulty_core((Duration::from_secs(3600), None));
    let mut core = core.with_compact_every(Duration::from_secs(3600));
    // A member renamed 40 times: each event's ID and content are new strings.
    for i in 0..40 {
        ingest(
            &mut core,
            named(&format!("$n{i}"), "@a:x", &format!("name {i}")),
        )
        .unwrap();
    }
    let (reply, mut rx) = oneshot::channel();
    core.handle(Command::Intents {
        instance: "@bot:x".into(),
        only: None,
        reply,
    });
    rx.try_recv().unwrap().unwrap();
    let before: Vec<Vec<Value>> = ["room_state", "room_members"]
        .map(|r| show(&mut core, r))
        .into();
    let dict = core.m.runtime().dictionary().clone();
    assert!(dict.lookup("$n3").is_some());
    core.compact();
    let (holes, gone) = dict.holes();
    assert!(
        gone >= 78,
        "39 event IDs and contents gone from memory: {holes} {gone}"
    );
    assert_eq!(dict.lookup("$n3"), None, "not in memory any more");
    let after: Vec<Vec<Value>> = ["room_state", "room_members"]
        .map(|r| show(&mut core, r))
        .into();
    assert_eq!(before, after);
    assert!(!core.dirty, "revisions captured");
    // The next delta is applied, and the subscriptions follow it.
    ingest(&mut core, named("$next", "@a:x", "name 3")).unwrap();
    ingest(&mut core, member("$b", "@b:x")).unwrap();
    let members = show(&mut core, "room_members");
    assert_eq!(members.len(), 2, "{members:?}");
    assert_eq!(members[0]["displayname"], "name 3");
    // The door follows the restarted dataflow: a rule and a manifest after it refuse a user.
    let door = core.door.shared();
    assert!(door.read().unwrap().check("@evil:x", "!r:x").is_none());
    let manifest = r#"{"instances": [{"id": "@bot:x", "watch": ["!p:x"], "protect": ["!r:x"]}]}"#;
    ingest(
        &mut core,
        parse_file("m.json", manifest.as_bytes()).unwrap(),
    )
    .unwrap();
    let rule = r#"[{"event_id": "$rule", "room_id": "!p:x", "type": "m.policy.rule.user",
        "state_key": "r1", "sender": "@mod:x",
        "content": {"entity": "@evil:x", "recommendation": "m.ban", "reason": "spam"}}]"#;
    ingest(&mut core, parse_file("r.json", rule.as_bytes()).unwrap()).unwrap();
    assert!(door.read().unwrap().check("@evil:x", "!r:x").is_some());
    core.compact();
    assert_eq!(show(&mut core, "room_members"), members);
    assert!(door.read().unwrap().check("@evil:x", "!r:x").is_some());
}
