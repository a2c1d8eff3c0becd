//! Collecting the dictionary: strings no retained log entry or revision uses leave the store,
//! their ids are never handed out again, and a collected string used again goes back.

use std::path::Path;

use prr_engine::{Runtime, RuntimeConfig, Seq, SourceDelta};

use super::integrity::dag;

fn config(path: &Path) -> RuntimeConfig {
    RuntimeConfig::new()
        .with_store(path)
        .with_workers(1)
        .with_keep_revisions(1)
}

fn push(rt: &mut Runtime<u64>, add: &[u64], remove: &[u64]) -> Seq {
    let ids = rt.replica("ids").unwrap();
    let mut d = SourceDelta::new();
    for x in add {
        d.insert(ids, *x);
    }
    for x in remove {
        d.remove(ids, *x);
    }
    rt.push(d).unwrap()
}

fn read(rt: &mut Runtime<u64>, name: &str) -> Vec<u64> {
    let id = rt.replica(name).unwrap();
    let mut v: Vec<u64> = (rt.read(id, None).unwrap().into_iter())
        .map(|(r, _)| r)
        .collect();
    v.sort();
    v
}

/// Interns `words`, uses `used` of them, removes `dropped`, captures and cuts the log: the
/// strings of `dropped` and of the unused words are no longer referenced by anything stored.
fn store_with_unused_strings(path: &Path) -> Runtime<u64> {
    let mut rt = Runtime::start(config(path), dag()).unwrap();
    for w in ["a", "b", "c", "d", "e"] {
        rt.dictionary().intern(w);
    }
    push(&mut rt, &[0, 1, 2], &[]);
    push(&mut rt, &[], &[1]);
    rt.capture_revisions().unwrap();
    rt.collect_garbage(true).unwrap();
    rt
}

#[test]
fn strings_nothing_uses_are_collected_and_their_ids_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let mut rt = store_with_unused_strings(&path);
        // "b" (1, removed, its log entries cut), "d" (3) and "e" (4) (never used) go.
        assert_eq!(rt.collect_strings().unwrap(), 3);
        assert_eq!(rt.dictionary().holes(), (3, 0));
        assert_eq!(rt.collect_strings().unwrap(), 0, "nothing more to collect");
        // Still here while this process runs.
        assert_eq!(rt.dictionary().get(3), "d");
        assert_eq!(read(&mut rt, "same"), vec![0, 2]);
        assert!(rt.check_store().unwrap().is_empty());
        rt.shutdown().unwrap();
    }
    let mut rt = Runtime::start(config(&path), dag()).unwrap();
    assert_eq!(rt.dictionary().len(), 5, "collected ids still count");
    assert_eq!(rt.dictionary().holes(), (3, 3));
    assert_eq!(rt.dictionary().lookup("a"), Some(0));
    assert_eq!(rt.dictionary().lookup("c"), Some(2));
    assert_eq!(rt.dictionary().lookup("b"), None);
    assert_eq!(
        rt.dictionary().intern("d"),
        5,
        "a collected string is new again"
    );
    assert_eq!(read(&mut rt, "same"), vec![0, 2]);
    push(&mut rt, &[5], &[]);
    rt.shutdown().unwrap();
    let mut rt = Runtime::start(config(&path), dag()).unwrap();
    assert_eq!(read(&mut rt, "same"), vec![0, 2, 5]);
    assert_eq!(rt.dictionary().get(5), "d");
    assert!(rt.check_store().unwrap().is_empty());
}

/// A collected string used again by the process that collected it goes back into the store
/// at its id: handed out again by `intern`, or used by a record whose id was handed out
/// before the collection.
#[test]
fn a_collected_string_used_again_goes_back_at_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let mut rt = store_with_unused_strings(&path);
        assert_eq!(rt.collect_strings().unwrap(), 3);
        // Interned again: the same id.
        assert_eq!(rt.dictionary().intern("b"), 1);
        push(&mut rt, &[1], &[]);
        // Used by a record without being interned again (an id held from before).
        push(&mut rt, &[3], &[]);
        assert_eq!(rt.dictionary().holes(), (1, 0), "only \"e\" is still out");
        assert_eq!(read(&mut rt, "same"), vec![0, 1, 2, 3]);
        rt.shutdown().unwrap();
    }
    let mut rt = Runtime::start(config(&path), dag()).unwrap();
    assert_eq!(read(&mut rt, "same"), vec![0, 1, 2, 3]);
    for (w, id) in [("a", 0), ("b", 1), ("c", 2), ("d", 3)] {
        assert_eq!(rt.dictionary().lookup(w), Some(id), "{w}");
    }
    assert_eq!(rt.dictionary().lookup("e"), None);
    assert!(rt.check_store().unwrap().is_empty());
    // A revision captured after the collection with a revived id restores too.
    rt.capture_revisions().unwrap();
    rt.shutdown().unwrap();
    let mut rt = Runtime::start(config(&path), dag()).unwrap();
    assert_eq!(read(&mut rt, "same"), vec![0, 1, 2, 3]);
}

/// Collecting in memory: the collected strings leave this process's memory too (as after a
/// restart), the ids the DAG's build handed out stay whatever records use, the replicas read
/// the same, a subscription goes on with the restarted dataflow, and a restart reads it all.
#[test]
fn strings_collected_in_memory_leave_the_process_but_the_builds_stay() {
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let config = config(&path).with_workers(workers);
        let build = |dict: &prr_engine::Dictionary| {
            dict.intern("built");
            Ok(dag())
        };
        let mut rt = Runtime::start_with(config.clone(), build).unwrap();
        let built = rt.dictionary().lookup("built").unwrap();
        for w in ["a", "b", "c", "d", "e"] {
            rt.dictionary().intern(w);
        }
        let a = rt.dictionary().lookup("a").unwrap();
        push(&mut rt, &[a, a + 1, a + 2], &[]);
        let same = rt.replica("same").unwrap();
        let sub = rt.subscribe(same).unwrap();
        let seq = push(&mut rt, &[], &[a + 1]);
        rt.step_until(seq).unwrap();
        assert_eq!(sub.try_iter().count(), 1);
        rt.capture_revisions().unwrap();
        rt.collect_garbage(true).unwrap();
        // "b" (removed), "d" and "e" (never used) go; "built" stays.
        assert_eq!(
            rt.collect_strings_in_memory().unwrap(),
            3,
            "{workers} workers"
        );
        assert_eq!(rt.dictionary().holes(), (3, 3), "gone from memory too");
        assert_eq!(rt.dictionary().lookup("b"), None);
        assert_eq!(rt.dictionary().lookup("built"), Some(built));
        assert_eq!(read(&mut rt, "same"), vec![a, a + 2]);
        // The subscription follows the restarted dataflow.
        let f = rt.dictionary().intern("f");
        let seq = push(&mut rt, &[f], &[]);
        rt.step_until(seq).unwrap();
        let deltas: Vec<_> = sub.try_iter().collect();
        assert_eq!(deltas.len(), 1, "{workers} workers: {deltas:?}");
        assert_eq!(deltas[0].updates, vec![(f, 1)]);
        assert!(rt.check_store().unwrap().is_empty());
        rt.shutdown().unwrap();
        let mut rt = Runtime::start_with(config, build).unwrap();
        assert_eq!(read(&mut rt, "same"), vec![a, a + 2, f]);
        assert_eq!(rt.dictionary().get(f), "f");
    }
}
