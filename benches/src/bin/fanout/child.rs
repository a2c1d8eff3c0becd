//! The measurement children: each ingests a workload directory (untimed), then times every
//! op of an ops file and prints its result.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use prr_benches::drive::{ingest_dir, intent_counts};
use prr_benches::harness::args::RuntimeArgs;
use prr_benches::harness::child::{emit_progress, emit_result};
use prr_benches::measure::secs;
use prr_benches::{Matching, NaiveState, list_files, read_file};
use prr_replicas::{Matrix, Rec};
use serde_json::{Map, Value, json};

use crate::ops::read_ops;

/// prr: ingest the directory (untimed), then time every op until every replica is final.
pub(crate) fn prr(dir: &Path, ops: &Path, runtime: &RuntimeArgs) -> anyhow::Result<()> {
    let ops = read_ops(ops)?;
    let start = Instant::now();
    let mut m = Matrix::start(runtime.config())?;
    let t = ingest_dir(&mut m, dir, 0)?;
    let setup = secs(start);
    emit_progress(json!({"setup": setup, "parse": t.parse}));
    let counts_before = intent_counts(m.runtime())?;
    // Subscribed as a deployment acting on intents would be; also counts what changed.
    let rt = m.runtime();
    let subs = [
        (
            "member_matches",
            rt.subscribe(rt.replica("member_matches")?)?,
        ),
        ("member_bans", rt.subscribe(rt.replica("member_bans")?)?),
        ("server_acl", rt.subscribe(rt.replica("server_acl")?)?),
    ];
    let mut latencies: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut changed: BTreeMap<String, Value> = BTreeMap::new();
    for op in &ops {
        let t = Instant::now();
        m.ingest(&op.items)?;
        let dt = secs(t);
        let mut sizes = Map::new();
        let mut instances: BTreeSet<u64> = BTreeSet::new();
        for (name, sub) in &subs {
            let mut n: u64 = 0;
            for d in sub.try_iter() {
                for (r, diff) in &d.updates {
                    n += diff.unsigned_abs() as u64;
                    if let Rec::Match { instance, .. } = r {
                        instances.insert(*instance);
                    }
                }
            }
            sizes.insert((*name).into(), n.into());
        }
        sizes.insert("instances".into(), instances.len().into());
        if op.timed {
            latencies.entry(op.kind.clone()).or_default().push(dt);
            changed
                .entry(op.kind.clone())
                .or_insert(Value::Object(sizes));
        }
    }
    let counts_after = intent_counts(m.runtime())?;
    emit_result(json!({
        "setup": setup, "parse": t.parse, "latencies": latencies, "changed": changed,
        "counts_before": counts_before, "counts_after": counts_after,
    }));
    Ok(())
}

/// The naive recomputation: apply the directory, then recompute after timed ops (at most
/// `reps` of each kind).
pub(crate) fn naive(dir: &Path, ops: &Path, reps: usize) -> anyhow::Result<()> {
    let ops = read_ops(ops)?;
    let start = Instant::now();
    let mut state = NaiveState::new();
    for path in list_files(dir)? {
        state.apply(&read_file(&path)?);
    }
    let setup = secs(start);
    let t = Instant::now();
    let first = state.compute(Matching::Indexed, |_, _| true);
    let full = secs(t);
    emit_progress(json!({"setup": setup, "full": full}));
    let mut latencies: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut last = first.clone();
    for op in &ops {
        state.apply(&op.items);
        let done = latencies.get(&op.kind).map_or(0, Vec::len);
        if op.timed && done < reps {
            let t = Instant::now();
            last = state.compute(Matching::Indexed, |_, _| true);
            latencies.entry(op.kind.clone()).or_default().push(secs(t));
            emit_progress(json!({"kind": op.kind, "done": done + 1}));
        }
    }
    // The ops end on an untimed undo, so the state is back: recompute it for the counts.
    last = if ops.last().is_some_and(|o| !o.timed) {
        state.compute(Matching::Indexed, |_, _| true)
    } else {
        last
    };
    let counts = |o: &prr_benches::NaiveOutput| {
        json!({"member_set": o.member_set, "member_matches": o.member_matches,
               "member_bans": o.member_bans, "ban_intents": o.ban_intents, "acl_deny": o.acl_deny})
    };
    emit_result(json!({
        "setup": setup, "full": full, "latencies": latencies,
        "counts_before": counts(&first), "counts_after": counts(&last),
    }));
    Ok(())
}
