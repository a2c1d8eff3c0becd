//! A computation that panics inside a worker stops the runtime with an error that carries the
//! panic's message, with 1 and 2 workers, instead of a bare "worker stopped".

use prr_engine::{Dag, Error, Input, ReplicaDescription, Runtime, RuntimeConfig, SourceDelta};

/// numbers -> checked, whose computation panics on 13.
fn dag() -> Dag<u64> {
    Dag::new(vec![
        ReplicaDescription::source("numbers", "x", |x| *x),
        ReplicaDescription::derived(
            "checked",
            "x",
            |x| *x,
            vec![Input::deltas("numbers")],
            |i| {
                i[0].clone().map(|x| {
                    assert!(x != 13, "record {x} is unlucky");
                    x
                })
            },
        ),
    ])
    .unwrap()
}

#[test]
fn a_worker_panic_reaches_the_caller_with_its_message() {
    for workers in [1, 2] {
        let mut rt = Runtime::start(RuntimeConfig::new().with_workers(workers), dag()).unwrap();
        let numbers = rt.replica("numbers").unwrap();
        let mut ok = SourceDelta::new();
        ok.insert(numbers, 7);
        rt.push(ok).unwrap();
        rt.sync().unwrap();
        let mut bad = SourceDelta::new();
        // Several records, so that with 2 workers the bad one may land on either.
        for x in [12, 13, 14] {
            bad.insert(numbers, x);
        }
        let err = rt.push(bad).and_then(|_| rt.sync()).unwrap_err();
        assert!(matches!(err, Error::WorkerFailed(_)), "{workers}: {err:?}");
        assert!(
            err.to_string().contains("record 13 is unlucky"),
            "{workers} workers: {err}"
        );
    }
}
