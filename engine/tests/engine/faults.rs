//! Storage faults: a failing write, a failing fsync and a full disk injected (through redb's
//! storage backend, `prr_persist::FaultyBackend`) at every operation of every commit point of
//! the runtime: the log append of a push and of a group commit, the revision capture (alone
//! and due after a push) and garbage collection. Each time:
//! 1. the call returns an error (a push says whether it committed), never panics or hangs;
//! 2. once the fault clears, the same runtime goes on, and its replicas equal a runtime
//!    without a store fed the acknowledged deltas (the oracle);
//! 3. a fresh runtime on the file starts at the last acknowledged delta (nothing acknowledged
//!    lost, nothing unacknowledged present, nothing applied twice), equal to the oracle and
//!    to a rebuild from the log.
//!
//! With 1 and 2 workers. Under `CI=true` every third operation is tried.

use std::collections::BTreeMap;
use std::path::Path;

use prr_engine::{Dag, Error, Input, ReplicaDescription, Runtime, RuntimeConfig, SourceDelta};
use prr_persist::{Fault, Faults, FaultyBackend, Store};

/// numbers (source) -> evens -> per-residue counts (also the DAG of the preview tests).
pub(crate) fn dag() -> Dag<u64> {
    Dag::new(vec![
        ReplicaDescription::source("numbers", "x % 5", |x| x % 5),
        ReplicaDescription::derived(
            "evens",
            "x % 5",
            |x| x % 5,
            vec![Input::deltas("numbers")],
            |i| i[0].clone().filter(|x| x % 2 == 0),
        ),
        ReplicaDescription::derived(
            "counts",
            "residue",
            |x| x / 1000,
            vec![Input::full("evens")],
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

/// The commits found in doubt, by every test of this module.
static IN_DOUBT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Where the fault strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Point {
    /// The log append of one push.
    Push,
    /// The log append of a group commit of two deltas.
    GroupCommit,
    /// The revision capture due after a push (`revision_every`), and its garbage collection.
    CaptureAfterPush,
    /// An explicit revision capture.
    Capture,
    /// An explicit garbage collection that cuts the log.
    CollectGarbage,
}

/// The source deltas acknowledged, in order, and one whose commit is in doubt.
#[derive(Default)]
struct Acked {
    deltas: Vec<Vec<u64>>,
    in_doubt: Option<Vec<Vec<u64>>>,
}

impl Acked {
    /// Pushes `group` (one delta per element) and records what the runtime acknowledged.
    fn push(&mut self, rt: &mut Runtime<u64>, group: Vec<Vec<u64>>, what: &str) -> bool {
        let numbers = rt.replica("numbers").unwrap();
        let before = rt.last_seq().0;
        let deltas: Vec<SourceDelta<u64>> = group
            .iter()
            .map(|xs| {
                let mut d = SourceDelta::new();
                for x in xs {
                    // A new dictionary string with every delta, committed with it.
                    rt.dictionary().intern(&format!("s{x}"));
                    d.insert(numbers, *x);
                }
                d
            })
            .collect();
        match rt.push_many(deltas) {
            Ok(seqs) => {
                self.settle(before);
                assert_eq!(
                    seqs.iter().map(|s| s.0).collect::<Vec<_>>(),
                    (1..=group.len() as u64)
                        .map(|i| self.deltas.len() as u64 + i)
                        .collect::<Vec<_>>(),
                    "{what}: seqs"
                );
                self.deltas.extend(group);
                true
            }
            Err(Error::CaptureFailed { committed, .. }) => {
                self.settle(before);
                assert_eq!(committed.len(), group.len(), "{what}");
                self.deltas.extend(group);
                true
            }
            Err(Error::Store(prr_persist::Error::NotCommitted { .. })) => false,
            Err(Error::Store(prr_persist::Error::InDoubt { .. })) => {
                IN_DOUBT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                assert!(self.in_doubt.is_none(), "{what}: two commits in doubt");
                self.in_doubt = Some(group);
                false
            }
            // Failed before the commit (e.g. settling an earlier doubt while the store fails).
            Err(Error::Store(e)) if e.is_storage_failure() => false,
            Err(e) => panic!("{what}: unexpected error: {e}"),
        }
    }

    /// After a push that succeeded, starting from `before`: the commit in doubt, if any,
    /// took place if the runtime's `Seq` moved past it.
    fn settle(&mut self, before: u64) {
        if let Some(group) = self.in_doubt.take()
            && before == (self.deltas.len() + group.len()) as u64
        {
            self.deltas.extend(group);
        }
    }
}

fn contents(rt: &mut Runtime<u64>) -> BTreeMap<String, Vec<(u64, isize)>> {
    let names: Vec<String> = (rt.dag().replicas().iter())
        .map(|d| d.name().to_string())
        .collect();
    names
        .into_iter()
        .map(|n| {
            let id = rt.replica(&n).unwrap();
            (n, rt.read(id, None).unwrap())
        })
        .collect()
}

fn dictionary(rt: &Runtime<u64>) -> Vec<String> {
    let d = rt.dictionary();
    (0..d.len() as u64).map(|id| d.get(id)).collect()
}

/// The replicas after `deltas`, from a runtime without a store.
fn oracle(deltas: &[Vec<u64>]) -> BTreeMap<String, Vec<(u64, isize)>> {
    let mut rt = Runtime::start(RuntimeConfig::new(), dag()).unwrap();
    let numbers = rt.replica("numbers").unwrap();
    for xs in deltas {
        let mut d = SourceDelta::new();
        for x in xs {
            d.insert(numbers, *x);
        }
        rt.push(d).unwrap();
    }
    contents(&mut rt)
}

fn config(workers: usize, point: Point) -> RuntimeConfig {
    let every = (point == Point::CaptureAfterPush).then_some(2);
    RuntimeConfig::new()
        .with_workers(workers)
        .with_keep_revisions(1)
        .with_revision_every(every)
        .with_revision_on_shutdown(false)
}

/// Deltas of distinct numbers: a delta applied twice shows as a multiplicity of 2.
fn delta(i: u64) -> Vec<u64> {
    vec![10 * i, 10 * i + 3, 10 * i + 4]
}

/// One run: a few deltas, then `fault` armed to strike after `at` operations of its kind
/// during `point`, one more attempt while it lasts, then it clears and the runtime goes on.
/// Returns whether the fault struck.
fn run(dir: &Path, workers: usize, point: Point, fault: Fault, at: u64) -> bool {
    let path = dir.join(format!("{point:?}-{fault:?}-{workers}-{at}.redb"));
    let what = format!("{fault:?} at operation {at} of {point:?}, {workers} worker(s)");
    let faults = Faults::new();
    let (p, f) = (path.clone(), faults.clone());
    let store = Store::open_with_backend(&path, move || FaultyBackend::open(&p, &f)).unwrap();
    let mut rt = Runtime::start_on(config(workers, point), store, |_| Ok(dag())).unwrap();
    let mut acked = Acked::default();
    let mut next = 0u64;
    let mut group = |n: u64| -> Vec<Vec<u64>> {
        next += n;
        (next - n..next).map(delta).collect()
    };
    // Garbage to collect: two captures, and log entries below the newest.
    for _ in 0..3 {
        assert!(acked.push(&mut rt, group(1), &what));
    }
    rt.capture_revisions().unwrap();
    assert!(acked.push(&mut rt, group(1), &what));
    if point == Point::CollectGarbage {
        rt.capture_revisions().unwrap();
    }

    faults.arm(fault, at);
    match point {
        Point::Push | Point::CaptureAfterPush => {
            acked.push(&mut rt, group(1), &what);
        }
        Point::GroupCommit => {
            acked.push(&mut rt, group(2), &what);
        }
        Point::Capture => {
            let _ = rt.capture_revisions();
        }
        Point::CollectGarbage => {
            let _ = rt.collect_garbage(true);
        }
    }
    let fired = faults.fired();
    if fired {
        // While the fault lasts, a push fails without panicking, or commits.
        acked.push(&mut rt, group(1), &what);
    }
    faults.clear();

    // 2. The same runtime goes on.
    for _ in 0..2 {
        assert!(
            acked.push(&mut rt, group(1), &what),
            "{what}: after the fault"
        );
    }
    assert!(acked.in_doubt.is_none(), "{what}: still in doubt");
    rt.sync().unwrap();
    assert_eq!(rt.last_seq().0, acked.deltas.len() as u64, "{what}");
    let expected = oracle(&acked.deltas);
    assert_eq!(contents(&mut rt), expected, "{what}: the running runtime");
    rt.capture_revisions().unwrap();
    rt.collect_garbage(true).unwrap();
    let strings = dictionary(&rt);
    drop(rt);

    // 3. A fresh runtime on the file.
    let config = config(workers, point).with_store(&path);
    let mut fresh = Runtime::start(config, dag()).unwrap();
    assert_eq!(fresh.last_seq().0, acked.deltas.len() as u64, "{what}");
    assert_eq!(contents(&mut fresh), expected, "{what}: after reopening");
    assert_eq!(dictionary(&fresh), strings, "{what}: the dictionary");
    let rebuilt = fresh.rebuild(&[], true).unwrap();
    assert!(
        rebuilt.iter().all(|o| o.missing == 0 && o.extra == 0),
        "{what}: a rebuild from the log differs: {rebuilt:?}"
    );
    assert_eq!(contents(&mut fresh), expected, "{what}: after the rebuild");
    fresh.shutdown().unwrap();
    std::fs::remove_file(&path).unwrap();
    fired
}

/// Every commit point, every fault kind, every operation of the kind until one that the
/// commit point does not reach (every third under CI).
fn every_operation(workers: usize, points: &[Point]) {
    every_operation_of(workers, points, &[Fault::Write, Fault::Sync, Fault::Full]);
}

fn every_operation_of(workers: usize, points: &[Point], kinds: &[Fault]) {
    let stride = if std::env::var("CI").is_ok_and(|v| v == "true") {
        3
    } else {
        1
    };
    let dir = tempfile::tempdir().unwrap();
    for &point in points {
        for &fault in kinds {
            let mut at = 0;
            while run(dir.path(), workers, point, fault, at) {
                at += stride;
                assert!(at < 500, "{fault:?} during {point:?} never stops striking");
            }
            assert!(at > 0, "{fault:?} never struck during {point:?}");
        }
    }
}

#[test]
fn faults_at_every_log_append_leave_the_runtime_equal_to_the_store() {
    for workers in [1, 2] {
        every_operation(workers, &[Point::Push, Point::GroupCommit]);
    }
}

#[test]
fn faults_at_every_revision_capture_leave_the_runtime_equal_to_the_store() {
    for workers in [1, 2] {
        every_operation(workers, &[Point::Capture, Point::CaptureAfterPush]);
    }
}

#[test]
fn faults_at_every_garbage_collection_leave_the_runtime_equal_to_the_store() {
    for workers in [1, 2] {
        every_operation(workers, &[Point::CollectGarbage]);
    }
}

/// The device gone during a push: the commit cannot be read back (in doubt); the runtime
/// fails until the device returns, then reads the store back and feeds what was committed.
#[test]
fn a_commit_in_doubt_is_settled_once_the_store_can_be_read() {
    for workers in [1, 2] {
        every_operation_of(
            workers,
            &[Point::Push, Point::GroupCommit],
            &[Fault::Device],
        );
    }
    assert!(IN_DOUBT.load(std::sync::atomic::Ordering::Relaxed) > 0);
}
