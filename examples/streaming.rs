//! Embedded streaming with prr: build a small DAG of replicas, stream source deltas in, and
//! print every replica's deltas as they become final.
//!
//! The DAG: `readings` (a source: `(sensor, value)`), `alerts` (derived: readings above a
//! threshold), and `alert_counts` (derived: alerts per sensor). Run it with
//! `cargo run -p prr-examples --example streaming`.

use anyhow::Result;
use prr_engine::{Dag, Input, ReplicaDescription, Runtime, RuntimeConfig, SourceDelta};

/// Records are `(sensor, value)` pairs; partitioned by sensor.
type Rec = (u64, u64);

fn dag() -> Result<Dag<Rec>> {
    Ok(Dag::new(vec![
        ReplicaDescription::source("readings", "sensor", |r: &Rec| r.0),
        ReplicaDescription::derived(
            "alerts",
            "sensor",
            |r| r.0,
            vec![Input::deltas("readings")],
            |i| i[0].clone().filter(|(_, value)| *value > 80),
        ),
        ReplicaDescription::derived(
            "alert_counts",
            "sensor",
            |r| r.0,
            vec![Input::full("alerts")],
            |i| {
                i[0].clone()
                    .map(|(sensor, _)| sensor)
                    .count()
                    .map(|(sensor, n)| (sensor, n as u64))
            },
        ),
    ])?)
}

fn main() -> Result<()> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get().min(2))
        .unwrap_or(1);
    let mut rt = Runtime::start(RuntimeConfig::new().with_workers(workers), dag()?)?;
    let readings = rt.replica("readings")?;
    let names = ["readings", "alerts", "alert_counts"];
    let subs = names
        .iter()
        .map(|n| Ok((*n, rt.subscribe(rt.replica(n)?)?)))
        .collect::<Result<Vec<_>>>()?;

    // A stream of readings: each batch is one source delta. A sensor's new reading replaces its
    // previous one (a removal and an insertion in the same delta).
    let batches: Vec<Vec<Rec>> = vec![
        vec![(1, 70), (2, 85)],
        vec![(1, 90)],
        vec![(2, 60), (3, 99)],
        vec![(1, 40)],
    ];
    let mut current: std::collections::BTreeMap<u64, u64> = Default::default();
    for batch in batches {
        let mut delta = SourceDelta::new();
        for (sensor, value) in batch {
            if let Some(old) = current.insert(sensor, value) {
                delta.remove(readings, (sensor, old));
            }
            delta.insert(readings, (sensor, value));
        }
        let seq = rt.push(delta)?;
        rt.step_until(seq)?;
        for (name, sub) in &subs {
            for d in sub.try_iter() {
                for (rec, diff) in &d.updates {
                    println!("{}  {name:<13} {diff:+}  {rec:?}", d.seq);
                }
            }
        }
    }
    for f in rt.frontiers()? {
        println!("frontier of {:<13} {}", f.name, f.frontier);
    }
    rt.shutdown()?;
    Ok(())
}
