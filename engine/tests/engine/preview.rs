//! `Runtime::preview`: the deltas that source deltas would cause, without committing them.
//! They equal the deltas the same pushes then cause, at the same `Seq`s; the store file is
//! byte-identical afterwards (also on a read-only runtime); a subscriber sees nothing of the
//! preview; with 1 and 2 workers.

use std::path::Path;

use prr_engine::{Delta, Error, ReplicaId, Runtime, RuntimeConfig, SourceDelta};

use super::faults::dag;

fn delta(rt: &Runtime<u64>, add: &[u64], remove: &[u64]) -> SourceDelta<u64> {
    let numbers = rt.replica("numbers").unwrap();
    let mut d = SourceDelta::new();
    for x in add {
        d.update(numbers, *x, 1);
    }
    for x in remove {
        d.update(numbers, *x, -1);
    }
    d
}

fn start(path: &Path, workers: usize, read_only: bool) -> Runtime<u64> {
    let config = RuntimeConfig::new()
        .with_store(path)
        .with_workers(workers)
        .with_read_only(read_only);
    Runtime::start(config, dag()).unwrap()
}

/// A delta's `(seq, replica, updates)`.
type Plain = (u64, ReplicaId, Vec<(u64, isize)>);

/// `(seq, replica, updates)` of each delta.
fn plain(deltas: &[Delta<u64>]) -> Vec<Plain> {
    (deltas.iter())
        .map(|d| (d.seq.0, d.replica, d.updates.clone()))
        .collect()
}

#[test]
fn a_preview_equals_the_pushes_after_it_and_changes_nothing() {
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let mut rt = start(&path, workers, false);
        for i in 0..20u64 {
            let d = delta(&rt, &[i * 7, i * 7 + 2], &[]);
            rt.push(d).unwrap();
        }
        rt.capture_revisions().unwrap();
        rt.push(delta(&rt, &[500, 502], &[14])).unwrap();
        rt.sync().unwrap();
        let ids: Vec<ReplicaId> = ["numbers", "evens", "counts"]
            .iter()
            .map(|n| rt.replica(n).unwrap())
            .collect();
        let following = rt.subscribe(ids[2]).unwrap();
        let next = || {
            vec![
                [&[1000, 1002][..], &[0, 2]],
                [&[1004][..], &[1000]],
                [&[][..], &[7, 9]],
            ]
        };
        let previewed = {
            let deltas = (next().iter()).map(|[a, r]| delta(&rt, a, r)).collect();
            rt.preview(&ids, deltas).unwrap()
        };
        assert!(!previewed.is_empty());
        assert_eq!(rt.last_seq().0, 21, "nothing committed");
        let counts_before = rt.read(ids[2], None).unwrap();
        rt.shutdown().unwrap();

        // A read-only runtime previews the same, and the file stays byte-identical.
        let bytes = std::fs::read(&path).unwrap();
        let mut ro = start(&path, workers, true);
        let deltas = (next().iter()).map(|[a, r]| delta(&ro, a, r)).collect();
        assert_eq!(plain(&ro.preview(&ids, deltas).unwrap()), plain(&previewed));
        assert_eq!(ro.read(ids[2], None).unwrap(), counts_before, "restored");
        ro.shutdown().unwrap();
        assert!(std::fs::read(&path).unwrap() == bytes, "the store changed");

        // The real pushes cause the same deltas, at the same seqs.
        let mut rt = start(&path, workers, false);
        let subs: Vec<_> = ids.iter().map(|r| rt.subscribe(*r).unwrap()).collect();
        for [a, r] in next() {
            let d = delta(&rt, a, r);
            rt.push(d).unwrap();
        }
        rt.sync().unwrap();
        let mut real: Vec<Delta<u64>> = subs.iter().flat_map(|s| s.try_iter()).collect();
        real.sort_by_key(|d| (d.seq, d.replica));
        assert_eq!(plain(&real), plain(&previewed));
        // The first runtime's subscriber saw nothing of the preview.
        assert!(following.try_iter().next().is_none());
    }
}

#[test]
fn a_preview_needs_a_store_and_sources_only() {
    let mut rt = Runtime::start(RuntimeConfig::new(), dag()).unwrap();
    let evens = rt.replica("evens").unwrap();
    let d = delta(&rt, &[2], &[]);
    assert!(matches!(
        rt.preview(&[evens], vec![d]),
        Err(Error::NoStore(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut rt = start(&dir.path().join("s.redb"), 1, false);
    let mut d = SourceDelta::new();
    d.update(evens, 2, 1);
    assert!(matches!(
        rt.preview(&[evens], vec![d]),
        Err(Error::NotASource(_))
    ));
}
