//! Revision captures after a restore: a capture shares the chunks a change did not touch and
//! writes only the others, and what it writes holds exactly the replica's contents.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use prr_engine::{Dag, Input, ReplicaDescription, Runtime, RuntimeConfig, SourceDelta};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// numbers (source) -> evens (resumable: deltas only): both based after a restore.
fn dag() -> Dag<u64> {
    Dag::new(vec![
        ReplicaDescription::source("numbers", "x % 5", |x| x % 5),
        ReplicaDescription::derived(
            "evens",
            "x % 5",
            |x| x % 5,
            vec![Input::deltas("numbers")],
            |i| i[0].clone().filter(|x| x % 2 == 0),
        ),
    ])
    .unwrap()
}

fn config(path: &Path) -> RuntimeConfig {
    RuntimeConfig::new()
        .with_store(path)
        .with_keep_revisions(2)
        .with_chunk_records(64)
}

/// The chunk keys of each replica's revisions, by `as_of`.
fn chunk_keys(path: &Path) -> BTreeMap<(String, u64), BTreeSet<u128>> {
    let store = prr_persist::Store::open_read_only(path).unwrap();
    (store.revisions().unwrap().into_iter())
        .map(|r| {
            let keys = r.chunks.iter().map(|c| c.key).collect();
            ((r.replica, r.as_of), keys)
        })
        .collect()
}

/// Restart after restart, a few numbers added and removed, then a capture: the new
/// revisions list the old chunks but those around the changes, a rebuild finds them equal
/// to a recomputation from the log, and `check` finds the store sound; with 1 and 2 workers.
#[test]
fn a_capture_after_a_small_change_writes_only_the_chunks_it_touched() {
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let mut rng = StdRng::seed_from_u64(workers as u64);
        let mut present: BTreeSet<u64> = BTreeSet::new();
        {
            let mut rt = Runtime::start(config(&path).with_workers(workers), dag()).unwrap();
            let numbers = rt.replica("numbers").unwrap();
            let mut d = SourceDelta::new();
            for _ in 0..6000 {
                let x = rng.random_range(0..1_000_000u64);
                if present.insert(x) {
                    d.insert(numbers, x);
                }
            }
            rt.push(d).unwrap();
            rt.shutdown().unwrap();
        }
        for round in 0..4 {
            let before = chunk_keys(&path);
            let mut rt = Runtime::start(config(&path).with_workers(workers), dag()).unwrap();
            let numbers = rt.replica("numbers").unwrap();
            let mut d = SourceDelta::new();
            for _ in 0..3 {
                let x = rng.random_range(0..1_000_000u64);
                if present.insert(x) {
                    d.insert(numbers, x);
                }
                let gone = *present
                    .iter()
                    .nth(rng.random_range(0..present.len()))
                    .unwrap();
                present.remove(&gone);
                d.remove(numbers, gone);
            }
            rt.push(d).unwrap();
            assert_eq!(rt.resumed(), ["evens"], "round {round}");
            let as_of = rt.capture_revisions().unwrap().0;
            let rebuilt = rt.rebuild(&[], true).unwrap();
            for o in &rebuilt {
                assert_eq!((o.missing, o.extra), (0, 0), "round {round}: {o:?}");
                assert!(o.damage.is_none(), "round {round}: {o:?}");
            }
            assert_eq!(rt.check_store().unwrap(), Vec::<String>::new());
            rt.shutdown().unwrap();
            let after = chunk_keys(&path);
            for replica in ["numbers", "evens"] {
                let old = (before.iter().rev())
                    .find(|((r, _), _)| r == replica)
                    .map(|(_, keys)| keys)
                    .unwrap();
                let new = &after[&(replica.to_string(), as_of)];
                let written = new.difference(old).count();
                assert!(new.len() > 30, "{replica}: {} chunks", new.len());
                // Six changes: at most two chunks each, usually one.
                assert!(
                    written <= 12,
                    "round {round}, {replica}: {written} of {} chunks written",
                    new.len()
                );
            }
        }
        // The rows, read back through a restart, are the numbers pushed.
        let mut rt = Runtime::start(config(&path).with_workers(workers), dag()).unwrap();
        let numbers = rt.replica("numbers").unwrap();
        let rows: Vec<u64> = rt
            .read(numbers, None)
            .unwrap()
            .into_iter()
            .map(|(x, _)| x)
            .collect();
        let mut want: Vec<u64> = present.iter().copied().collect();
        want.sort_by_key(|x| (x % 5, *x));
        let mut got = rows.clone();
        got.sort_by_key(|x| (x % 5, *x));
        assert_eq!(got, want);
        rt.shutdown().unwrap();
    }
}

/// A capture in the background (`start_capture`): commits go on while it runs; it writes the
/// contents as of the `Seq` it started at, sharing the untouched chunks as a capture at once
/// does; a second start while it runs starts nothing; with nothing new, nothing starts; and a
/// restart reads everything committed, during the capture too. With 1 and 2 workers.
#[test]
fn a_capture_in_the_background_lets_commits_go_on() {
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let mut rng = StdRng::seed_from_u64(10 + workers as u64);
        let mut present: BTreeSet<u64> = BTreeSet::new();
        let mut add = |rt: &mut Runtime<u64>, present: &mut BTreeSet<u64>, n: usize| {
            let numbers = rt.replica("numbers").unwrap();
            let mut d = SourceDelta::new();
            for _ in 0..n {
                let x = rng.random_range(0..1_000_000u64);
                if present.insert(x) {
                    d.insert(numbers, x);
                }
            }
            rt.push(d).unwrap()
        };
        {
            let mut rt = Runtime::start(config(&path).with_workers(workers), dag()).unwrap();
            add(&mut rt, &mut present, 6000);
            rt.shutdown().unwrap();
        }
        let before = chunk_keys(&path);
        let mut rt = Runtime::start(config(&path).with_workers(workers), dag()).unwrap();
        assert!(!rt.start_capture().unwrap(), "nothing new to capture");
        assert!(rt.finish_capture(false).is_none());
        let as_of = add(&mut rt, &mut present, 4);
        let at_start = present.clone();
        assert!(rt.start_capture().unwrap());
        assert!(!rt.start_capture().unwrap(), "one in flight already");
        for _ in 0..5 {
            add(&mut rt, &mut present, 3);
        }
        let ended = rt.finish_capture(true).expect("it ran").unwrap();
        assert_eq!(ended, as_of);
        assert!(rt.finish_capture(false).is_none(), "reported once");
        let numbers = rt.replica("numbers").unwrap();
        let mut got: Vec<u64> = (rt.read_as_of(numbers, as_of, None).unwrap().into_iter())
            .map(|(x, _)| x)
            .collect();
        got.sort();
        assert_eq!(got, at_start.iter().copied().collect::<Vec<_>>());
        for o in rt.rebuild(&[], true).unwrap() {
            assert_eq!((o.missing, o.extra), (0, 0), "{o:?}");
            assert!(o.damage.is_none(), "{o:?}");
        }
        assert_eq!(rt.check_store().unwrap(), Vec::<String>::new());
        rt.shutdown().unwrap();
        let after = chunk_keys(&path);
        for replica in ["numbers", "evens"] {
            let old = &before[&(replica.to_string(), 1)];
            let new = &after[&(replica.to_string(), as_of.0)];
            let written = new.difference(old).count();
            assert!(written <= 8, "{replica}: {written} of {} chunks", new.len());
        }
        let mut rt = Runtime::start(config(&path).with_workers(workers), dag()).unwrap();
        let numbers = rt.replica("numbers").unwrap();
        let mut got: Vec<u64> = (rt.read(numbers, None).unwrap().into_iter())
            .map(|(x, _)| x)
            .collect();
        got.sort();
        assert_eq!(got, present.iter().copied().collect::<Vec<_>>());
        rt.shutdown().unwrap();
    }
}
