//! Convergence: a replica that joins two branches derived from the same source never exposes a
//! delta that reflects one branch at a Seq without the other.

use prr_engine::oracle::DeltaLog;
use prr_engine::{Dag, Input, ReplicaDescription, Runtime, RuntimeConfig, SourceDelta};

/// Records `(key, a, b)`. The source holds `(k, v, 0)`; `doubled` is `(k, 2v, 0)`; `tripled`
/// is `(k, 3v, 0)` for even v only; `joined` is `(k, 2v, 3v)`: consistent iff `a / 2 == b / 3`.
type Rec = (u64, u64, u64);

fn dag() -> Dag<Rec> {
    Dag::new(vec![
        ReplicaDescription::source("source", "key", |r: &Rec| r.0),
        ReplicaDescription::derived(
            "doubled",
            "key",
            |r| r.0,
            vec![Input::deltas("source")],
            |i| i[0].clone().map(|(k, v, _)| (k, 2 * v, 0)),
        ),
        ReplicaDescription::derived(
            "tripled",
            "key",
            |r| r.0,
            vec![Input::deltas("source")],
            |i| {
                i[0].clone()
                    .filter(|(_, v, _)| v % 2 == 0)
                    .map(|(k, v, _)| (k, 3 * v, 0))
            },
        ),
        ReplicaDescription::derived(
            "joined",
            "key",
            |r| r.0,
            vec![Input::full("doubled"), Input::full("tripled")],
            |i| {
                let a = i[0].clone().map(|(k, a, _)| (k, a));
                let b = i[1].clone().map(|(k, b, _)| (k, b));
                a.join(b).map(|(k, (a, b))| (k, a, b))
            },
        ),
    ])
    .unwrap()
}

fn run(workers: usize) {
    let mut rt = Runtime::start(RuntimeConfig::new().with_workers(workers), dag()).unwrap();
    let source = rt.replica("source").unwrap();
    let joined = rt.replica("joined").unwrap();
    let mut log = DeltaLog::attach(&mut rt).unwrap();
    // Every key's value changes at every seq, so each branch changes at every seq: a delta
    // that mixed one branch's new state with the other's old would hold (k, 2v', 3v).
    let keys = 20u64;
    let mut values: Vec<u64> = vec![0; keys as usize];
    let mut d = SourceDelta::new();
    for k in 0..keys {
        d.insert(source, (k, 0, 0));
    }
    let mut seq = rt.push(d).unwrap();
    for round in 1..=15u64 {
        log.advance(&mut rt, seq).unwrap();
        let expected: Vec<(Rec, isize)> = (0..keys)
            .filter(|k| values[*k as usize].is_multiple_of(2))
            .map(|k| ((k, 2 * values[k as usize], 3 * values[k as usize]), 1))
            .collect();
        log.check(&mut rt, seq, |id, _| {
            (id == joined).then(|| expected.clone())
        })
        .unwrap();
        let mut d = SourceDelta::new();
        for k in 0..keys {
            let old = values[k as usize];
            let new = old + 1 + (k + round) % 3;
            d.remove(source, (k, old, 0));
            d.insert(source, (k, new, 0));
            values[k as usize] = new;
        }
        seq = rt.push(d).unwrap();
    }
    let deltas = log.advance(&mut rt, seq).unwrap();
    assert!(deltas.iter().any(|d| d.replica == joined));
    for d in deltas.iter().filter(|d| d.replica == joined) {
        for ((_, a, b), _) in &d.updates {
            assert_eq!(a / 2, b / 3, "a delta of `joined` mixes branches: {d:?}");
        }
    }
    rt.shutdown().unwrap();
}

#[test]
fn diamond_never_mixes_branches_one_worker() {
    run(1);
}

#[test]
fn diamond_never_mixes_branches_two_workers() {
    run(2);
}
