//! Poisoned deltas: a source delta that a replica's computation panics on is quarantined with
//! the panic's message; the replicas (source replicas included) stay as if it never came,
//! later deltas go on, nothing loops, and the quarantine survives restarts until it is
//! acknowledged. With 1 and 2 workers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prr_engine::{Dag, Error, Input, ReplicaDescription, Runtime, RuntimeConfig, Seq, SourceDelta};

/// Whether `x` makes `checked` panic (when the DAG panics at all).
fn unlucky(x: u64) -> bool {
    x % 100 == 13
}

/// numbers (source) -> checked (a map that panics on an unlucky record, counting how often it
/// sees one in `tries`) -> counts (per residue mod 3, over checked in full).
fn dag(panics: bool, tries: Arc<AtomicUsize>) -> Dag<u64> {
    Dag::new(vec![
        ReplicaDescription::source("numbers", "x % 5", |x| x % 5),
        ReplicaDescription::derived(
            "checked",
            "x % 5",
            |x| x % 5,
            vec![Input::deltas("numbers")],
            move |i| {
                let tries = tries.clone();
                i[0].clone().map(move |x| {
                    if unlucky(x) {
                        tries.fetch_add(1, Ordering::SeqCst);
                        assert!(!panics, "record {x} is unlucky");
                    }
                    x
                })
            },
        ),
        ReplicaDescription::derived(
            "counts",
            "residue",
            |x| x / 1000,
            vec![Input::full("checked")],
            |i| {
                i[0].clone()
                    .map(|x| x % 3)
                    .count()
                    .map(|(k, c)| k * 1000 + c as u64)
            },
        ),
    ])
    .unwrap()
}

fn start(path: &Path, workers: usize, panics: bool) -> (Runtime<u64>, Arc<AtomicUsize>) {
    let tries = Arc::new(AtomicUsize::new(0));
    let config = RuntimeConfig::new().with_store(path).with_workers(workers);
    let rt = Runtime::start(config, dag(panics, tries.clone())).unwrap();
    (rt, tries)
}

fn delta(rt: &Runtime<u64>, xs: &[u64]) -> SourceDelta<u64> {
    let numbers = rt.replica("numbers").unwrap();
    let mut d = SourceDelta::new();
    for x in xs {
        d.insert(numbers, *x);
    }
    d
}

fn contents(rt: &mut Runtime<u64>) -> BTreeMap<String, Vec<(u64, isize)>> {
    let mut out = BTreeMap::new();
    for name in ["numbers", "checked", "counts"] {
        let id = rt.replica(name).unwrap();
        out.insert(name.to_string(), rt.read(id, None).unwrap());
    }
    out
}

/// The oracle: every replica from scratch, over the deltas given (the quarantined left out).
fn oracle(deltas: &[&[u64]]) -> BTreeMap<String, Vec<(u64, isize)>> {
    let mut numbers: BTreeMap<u64, isize> = BTreeMap::new();
    for x in deltas.iter().flat_map(|d| d.iter()) {
        *numbers.entry(*x).or_default() += 1;
    }
    let mut per_residue: BTreeMap<u64, u64> = BTreeMap::new();
    for (x, m) in &numbers {
        *per_residue.entry(x % 3).or_default() += *m as u64;
    }
    let numbers: Vec<(u64, isize)> = numbers.into_iter().collect();
    let counts = per_residue.into_iter().map(|(k, c)| (k * 1000 + c, 1));
    BTreeMap::from([
        ("numbers".to_string(), numbers.clone()),
        ("checked".to_string(), numbers),
        ("counts".to_string(), counts.collect()),
    ])
}

fn poisoned_seqs(rt: &Runtime<u64>) -> Vec<u64> {
    rt.poisoned().iter().map(|q| q.seq).collect()
}

#[test]
fn a_delta_that_panics_is_quarantined_and_later_deltas_go_on() {
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (mut rt, tries) = start(&path, workers, true);
        let counts = rt.replica("counts").unwrap();
        let sub = rt.subscribe(counts).unwrap();
        let d1: &[u64] = &[1, 2, 3, 4];
        let poison: &[u64] = &[12, 113, 14];
        let d3: &[u64] = &[20, 21, 22];
        rt.push(delta(&rt, d1)).unwrap();
        rt.sync().unwrap();
        assert_eq!(rt.push(delta(&rt, poison)).unwrap(), Seq(2));
        assert_eq!(rt.push(delta(&rt, d3)).unwrap(), Seq(3));
        rt.sync().expect("a poisoned delta is not an error");

        let poisoned = rt.poisoned();
        assert_eq!(poisoned_seqs(&rt), [2], "{workers} workers");
        assert!(
            poisoned[0].message.contains("record 113 is unlucky"),
            "{workers} workers: {}",
            poisoned[0].message
        );
        assert!(poisoned[0].unix_ms > 0);
        assert_eq!(rt.newly_poisoned(), [Seq(2)]);
        assert_eq!(contents(&mut rt), oracle(&[d1, d3]), "{workers} workers");
        assert_eq!(rt.status().unwrap().poisoned, [Seq(2)]);
        // Tried in its group, then alone: never again.
        let tried = tries.load(Ordering::SeqCst);
        assert!((1..=2).contains(&tried), "tried {tried} times");

        // The subscriber of the failed dataflow gets every delta but the poisoned one's.
        let d4: &[u64] = &[30, 31];
        rt.push(delta(&rt, d4)).unwrap();
        rt.sync().unwrap();
        assert_eq!(tries.load(Ordering::SeqCst), tried, "not tried again");
        let deltas: Vec<_> = sub.try_iter().collect();
        let seqs: Vec<u64> = deltas.iter().map(|d| d.seq.0).collect();
        assert_eq!(seqs, [1, 3, 4], "{workers} workers");
        let mut acc: BTreeMap<u64, isize> = BTreeMap::new();
        for (r, d) in deltas.iter().flat_map(|d| d.updates.iter()) {
            *acc.entry(*r).or_default() += d;
        }
        acc.retain(|_, d| *d != 0);
        let expected = oracle(&[d1, d3, d4]);
        assert_eq!(acc.into_iter().collect::<Vec<_>>(), expected["counts"]);

        // History skips it too.
        let numbers = rt.replica("numbers").unwrap();
        let history = rt.deltas_since(numbers, Seq(0)).unwrap();
        assert!(history.iter().all(|d| d.seq != Seq(2)), "{history:?}");
        assert_eq!(
            rt.read_as_of(numbers, Seq(2), None).unwrap(),
            oracle(&[d1])["numbers"]
        );
        let rebuilt = rt.rebuild(&[], true).unwrap();
        assert!(rebuilt.iter().all(|o| o.missing == 0 && o.extra == 0));
        rt.shutdown().unwrap();

        // The quarantine survives a restart (from revisions, and from the log alone).
        let (mut rt, _) = start(&path, workers, true);
        assert_eq!(poisoned_seqs(&rt), [2]);
        assert!(rt.newly_poisoned().is_empty());
        assert_eq!(contents(&mut rt), expected);
        drop(rt);
        let config = RuntimeConfig::new().with_store(&path).with_workers(workers);
        let tries = Arc::new(AtomicUsize::new(0));
        let mut rt = Runtime::start(config, dag(true, tries.clone())).unwrap();
        rt.collect_garbage(false).unwrap();
        let replayed = rt.rebuild(&[], false).unwrap();
        assert!(replayed.iter().all(|o| !o.replaced), "{replayed:?}");
        assert_eq!(contents(&mut rt), expected);
        assert_eq!(tries.load(Ordering::SeqCst), 0, "never fed again");

        // Acknowledged, it is gone for good.
        let err = rt.ack_poisoned(Seq(3)).unwrap_err();
        assert!(matches!(err, Error::NotPoisoned { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("seq 3 is not a quarantined delta; quarantined: 2"),
            "{err}"
        );
        rt.ack_poisoned(Seq(2)).unwrap();
        assert!(rt.poisoned().is_empty());
        assert_eq!(contents(&mut rt), expected);
        rt.shutdown().unwrap();
        let (mut rt, tries) = start(&path, workers, true);
        assert!(rt.poisoned().is_empty());
        assert!(rt.check_store().unwrap().is_empty());
        let replayed = rt.rebuild(&[], true).unwrap();
        assert!(replayed.iter().all(|o| o.missing == 0 && o.extra == 0));
        assert_eq!(contents(&mut rt), expected);
        assert_eq!(tries.load(Ordering::SeqCst), 0, "never replayed");
        assert!(matches!(
            rt.ack_poisoned(Seq(2)),
            Err(Error::NotPoisoned { .. })
        ));
        rt.shutdown().unwrap();
    }
}

#[test]
fn several_poisoned_deltas_in_one_group_are_each_quarantined() {
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (mut rt, _) = start(&path, workers, true);
        let groups: [&[u64]; 5] = [&[1, 2], &[13], &[5, 6], &[7, 213], &[8]];
        let deltas = groups.iter().map(|g| delta(&rt, g)).collect();
        assert_eq!(rt.push_many(deltas).unwrap(), [1, 2, 3, 4, 5].map(Seq));
        rt.sync().unwrap();
        assert_eq!(poisoned_seqs(&rt), [2, 4], "{workers} workers");
        let messages: Vec<String> = rt.poisoned().into_iter().map(|q| q.message).collect();
        assert!(messages[0].contains("record 13 is unlucky"), "{messages:?}");
        assert!(
            messages[1].contains("record 213 is unlucky"),
            "{messages:?}"
        );
        let expected = oracle(&[groups[0], groups[2], groups[4]]);
        assert_eq!(contents(&mut rt), expected, "{workers} workers");
        // Pushing on a runtime that just recovered.
        rt.push(delta(&rt, &[313])).unwrap();
        rt.push(delta(&rt, &[9])).unwrap();
        rt.sync().unwrap();
        assert_eq!(poisoned_seqs(&rt), [2, 4, 6]);
        let expected = oracle(&[groups[0], groups[2], groups[4], &[9]]);
        assert_eq!(contents(&mut rt), expected);
        rt.shutdown().unwrap();
    }
}

#[test]
fn a_poisoned_delta_met_in_the_replayed_log_is_quarantined_at_restore() {
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        // Committed by a program whose replica did not panic on it (or by one that stopped
        // before it could quarantine it): the log holds it, no revision after it.
        let config = RuntimeConfig::new()
            .with_store(&path)
            .with_revision_on_shutdown(false);
        let mut rt = Runtime::start(config, dag(false, Arc::default())).unwrap();
        rt.push(delta(&rt, &[1, 2])).unwrap();
        rt.capture_revisions().unwrap();
        rt.push(delta(&rt, &[3, 13])).unwrap();
        rt.push(delta(&rt, &[4])).unwrap();
        rt.shutdown().unwrap();
        let expected = oracle(&[&[1, 2], &[4]]);

        // Read-only: quarantined for the runtime's life, the store unchanged.
        let config = RuntimeConfig::new()
            .with_store(&path)
            .with_workers(workers)
            .with_read_only(true);
        let mut rt = Runtime::start(config, dag(true, Arc::default())).unwrap();
        assert_eq!(contents(&mut rt), expected, "{workers} workers");
        assert_eq!(poisoned_seqs(&rt), [2]);
        drop(rt);
        drop(stored_quarantine(&path, &[]));

        let (mut rt, tries) = start(&path, workers, true);
        assert_eq!(contents(&mut rt), expected, "{workers} workers");
        assert_eq!(poisoned_seqs(&rt), [2]);
        assert!(rt.poisoned()[0].message.contains("record 13 is unlucky"));
        let tried = tries.load(Ordering::SeqCst);
        assert!((1..=2).contains(&tried), "tried {tried} times");
        rt.shutdown().unwrap();
        drop(stored_quarantine(&path, &[2]));
    }
}

/// Checks, through a fresh runtime of a DAG that does not panic, which deltas the store
/// holds quarantined.
fn stored_quarantine(path: &Path, seqs: &[u64]) -> Runtime<u64> {
    let config = RuntimeConfig::new().with_store(path).with_read_only(true);
    let rt = Runtime::start(config, dag(false, Arc::default())).unwrap();
    assert_eq!(poisoned_seqs(&rt), seqs);
    rt
}

#[test]
fn without_a_store_a_panic_stops_the_runtime() {
    let mut rt = Runtime::start(RuntimeConfig::new(), dag(true, Arc::default())).unwrap();
    rt.push(delta(&rt, &[13])).unwrap();
    let err = rt.sync().unwrap_err();
    assert!(matches!(err, Error::WorkerFailed(_)), "{err:?}");
    assert!(rt.poisoned().is_empty());
}
