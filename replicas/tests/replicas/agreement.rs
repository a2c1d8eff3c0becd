//! The replicas agree with the oracle (a plain recomputation of the spec) on random
//! workloads, at every Seq, with 1 and 2 workers: both as read from the arrangements and as
//! accumulated from the published deltas.

use prr_engine::RuntimeConfig;
use prr_engine::oracle::DeltaLog;
use prr_replicas::{Matrix, Pipeline, REPLICAS, SourceItem, parse_line, render_sorted};
use serde_json::Value;

use super::oracle::{Item, Oracle};
use super::workload::random_workload;

/// The spec's replicas (the oracle's names).
const SPEC_REPLICAS: [&str; 10] = [
    "room_state",
    "policy_room",
    "policy_list",
    "room_members",
    "member_set",
    "member_matches",
    "member_bans",
    "server_acl",
    "acl_sync",
    "rejects",
];

/// Items as NDJSON lines through the real parser, so parsing is covered too.
pub fn to_source_items(items: &[Item]) -> Vec<SourceItem> {
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let v = match item {
                Item::Event(v) | Item::Manifest(v) => v,
            };
            parse_line("workload", i as u64 + 1, &v.to_string()).expect("workload items are valid")
        })
        .collect()
}

/// Rejects' `reason` is free text: compare the other fields.
fn comparable(replica: &str, mut rows: Vec<Value>) -> Vec<Value> {
    if replica == "rejects" {
        for r in &mut rows {
            r.as_object_mut().unwrap().remove("reason");
        }
    }
    rows
}

/// Every replica, read and accumulated from the published deltas, equals the oracle's.
fn check_replicas(
    m: &mut Matrix,
    log: &DeltaLog<prr_replicas::Rec>,
    oracle: &Oracle,
    seq: prr_engine::Seq,
    context: &str,
) {
    let want = oracle.replicas();
    for name in SPEC_REPLICAS {
        let expected = comparable(name, want[name].clone());
        let shown = comparable(name, m.show(name, None, None).unwrap());
        assert_eq!(shown, expected, "{context}, {seq}, replica {name} (read)");
        let id = m.runtime().replica(name).unwrap();
        let from_deltas = comparable(
            name,
            render_sorted(m.runtime().dictionary(), &log.contents(id)),
        );
        assert_eq!(
            from_deltas, expected,
            "{context}, {seq}, replica {name} (deltas)"
        );
    }
}

fn run(seed: u64, workers: usize, deltas: usize) {
    let workload = random_workload(seed, deltas);
    let mut m = Matrix::start(RuntimeConfig::new().with_workers(workers)).unwrap();
    let mut log = DeltaLog::attach(m.runtime()).unwrap();
    let mut oracle = Oracle::new();
    for (i, delta) in workload.iter().enumerate() {
        oracle.apply(delta);
        let seq = m.ingest(&to_source_items(delta)).unwrap();
        log.advance(m.runtime(), seq)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let context = format!("seed {seed}, {workers} workers, delta {i}\nitems: {delta:#?}");
        check_replicas(&mut m, &log, &oracle, seq, &context);
    }
}

fn seeds() -> std::ops::Range<u64> {
    if std::env::var("CI").is_ok() {
        0..12
    } else {
        0..24
    }
}

#[test]
fn replicas_agree_with_the_oracle_one_worker() {
    for seed in seeds() {
        run(seed, 1, 25);
    }
}

#[test]
fn replicas_agree_with_the_oracle_two_workers() {
    for seed in seeds() {
        run(seed + 1000, 2, 25);
    }
}

/// Pipelined group commits ([`Pipeline`]: `submit_many`, then waiting for the group before): every delta
/// computed while the next group is committed is still published whole and in order, and the
/// contents at every waited `Seq` are the oracle's.
fn run_pipelined(seed: u64, workers: usize, deltas: usize) {
    let workload = random_workload(seed, deltas);
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig::new()
        .with_workers(workers)
        .with_store(dir.path().join("prr.redb"));
    let mut m = Matrix::start(config).unwrap();
    let mut log = DeltaLog::attach(m.runtime()).unwrap();
    let mut oracle = Oracle::new();
    let mut expected = Vec::new(); // the oracle's replicas after each delta
    let items: Vec<Vec<SourceItem>> = workload.iter().map(|d| to_source_items(d)).collect();
    for delta in &workload {
        oracle.apply(delta);
        expected.push(oracle.replicas());
    }
    let check = |m: &mut Matrix, log: &DeltaLog<_>, seq: prr_engine::Seq| {
        let want = &expected[seq.0 as usize - 1];
        for name in SPEC_REPLICAS {
            let id = m.runtime().replica(name).unwrap();
            let from_deltas = comparable(
                name,
                render_sorted(m.runtime().dictionary(), &log.contents(id)),
            );
            assert_eq!(
                from_deltas,
                comparable(name, want[name].clone()),
                "seed {seed}, {workers} workers, pipelined, {seq}, replica {name} (deltas)"
            );
        }
    };
    let mut start = 0;
    let mut pipeline = Pipeline::new();
    let mut group = 1;
    while start < items.len() {
        let end = (start + group).min(items.len());
        let seqs = pipeline.submit(&mut m, &items[start..end]).unwrap();
        assert_eq!(
            seqs.first().unwrap().0,
            start as u64 + 1,
            "one Seq per delta"
        );
        if let Some(previous) = pipeline.final_through() {
            log.advance(m.runtime(), previous)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            check(&mut m, &log, previous);
        }
        start = end;
        group = group % 4 + 1;
    }
    pipeline.finish(&mut m).unwrap();
    let last = pipeline.final_through().unwrap();
    assert_eq!(last.0, items.len() as u64);
    log.advance(m.runtime(), last)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    check(&mut m, &log, last);
    let want = expected.last().unwrap();
    for name in SPEC_REPLICAS {
        assert_eq!(
            comparable(name, m.show(name, None, None).unwrap()),
            comparable(name, want[name].clone()),
            "seed {seed}, {workers} workers, pipelined, replica {name} (read)"
        );
    }
}

#[test]
fn pipelined_group_commits_agree_with_the_oracle() {
    for seed in seeds().take(6) {
        run_pipelined(seed + 2000, 1, 25);
        run_pipelined(seed + 3000, 2, 25);
    }
}

/// The derived replicas that are stored: all but the sources and the view `policy_list`.
fn derived() -> impl Iterator<Item = &'static str> {
    REPLICAS.into_iter().filter(|n| {
        ![
            "room_state",
            "instances",
            "source_events",
            "source_positions",
            "policy_list",
        ]
        .contains(n)
    })
}

/// Restarts at many points: after a clean shutdown, after capturing revisions and dropping the
/// runtime, and after dropping it with source deltas past the newest revisions. Each restore
/// resumes every derived replica from its revision (through its resume computation), so the
/// dataflow holds only what changes after the restore point; from there on, every replica must agree with the oracle at every `Seq`, read
/// and accumulated from the deltas published after the restart.
fn run_with_restarts(seed: u64, workers: usize, deltas: usize) -> usize {
    let workload = random_workload(seed, deltas);
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        RuntimeConfig::new()
            .with_workers(workers)
            .with_store(dir.path().join("prr.redb"))
    };
    let mut m = Matrix::start(config()).unwrap();
    let mut log = DeltaLog::attach(m.runtime()).unwrap();
    let mut oracle = Oracle::new();
    let every = 2 + (seed % 3) as usize;
    let mut resumed = 0;
    for (i, delta) in workload.iter().enumerate() {
        oracle.apply(delta);
        let seq = m.ingest(&to_source_items(delta)).unwrap();
        log.advance(m.runtime(), seq)
            .unwrap_or_else(|e| panic!("seed {seed}, {workers} workers: {e}"));
        let context = format!("seed {seed}, {workers} workers, delta {i}, with restarts");
        check_replicas(&mut m, &log, &oracle, seq, &context);
        if i % every == every - 1 {
            match (i / every + seed as usize) % 3 {
                0 => m.shutdown().unwrap(),
                1 => {
                    m.runtime().capture_revisions().unwrap();
                    drop(m);
                }
                _ => drop(m), // the log after the newest revisions is replayed
            }
            m = Matrix::start(config()).unwrap();
            log = DeltaLog::attach(m.runtime()).unwrap();
            let names = m.runtime().resumed();
            if derived().all(|d| names.iter().any(|r| r == d)) {
                resumed += 1;
            }
        }
    }
    resumed
}

#[test]
fn replicas_resumed_after_restarts_agree_with_the_oracle() {
    let mut resumed = 0;
    for seed in seeds().take(8) {
        resumed += run_with_restarts(seed + 4000, 1, 25);
        resumed += run_with_restarts(seed + 5000, 2, 25);
    }
    // Restores after a revision resume every derived replica (not after a restart at seq 0).
    assert!(
        resumed > 20,
        "every derived replica was resumed {resumed} times"
    );
}

/// A revision the restore decodes in the background (a seed) that does not decode: the
/// restore itself succeeds, and the first delta that needs the seed fails with an error that
/// names the revision, not a hang or a bare worker failure.
#[test]
fn a_seed_revision_that_does_not_decode_is_a_clear_error() {
    let workload = random_workload(7, 12);
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        RuntimeConfig::new()
            .with_workers(1)
            .with_store(dir.path().join("prr.redb"))
    };
    let mut m = Matrix::start(config()).unwrap();
    for delta in &workload {
        m.ingest(&to_source_items(delta)).unwrap();
    }
    let as_of = m.runtime().capture_revisions().unwrap().0;
    let info = (m.runtime().revisions().unwrap().into_iter())
        .find(|i| i.replica == "policy_room" && i.as_of == as_of)
        .unwrap();
    // Overwrite the revision with a chunk that does not decode, in the file itself.
    drop(m);
    let store = prr_persist::Store::open(dir.path().join("prr.redb")).unwrap();
    let next_id = store.string_count().unwrap();
    store
        .write_revisions(
            as_of,
            &[prr_persist_write(&info, vec![b"not a revision".to_vec()])],
            next_id,
            &[] as &[&str],
        )
        .unwrap();
    drop(store);
    let mut m = Matrix::start(config()).unwrap();
    m.runtime().sync().unwrap();
    // A new policy rule needs the old rules of its slot (policy_room's seed: room_state) and
    // member_matches' old rules (its seed: policy_room).
    let rule = r#"{"event_id":"$new","room_id":"!list:good.net","type":"m.policy.rule.user","state_key":"new","sender":"@mod:good.net","origin_server_ts":1,"content":{"entity":"@x:evil.org","recommendation":"m.ban","reason":"r"}}"#;
    let items = vec![parse_line("rule.ndjson", 1, rule).unwrap().unwrap()];
    let e = m.ingest(&items).unwrap_err().to_string();
    assert!(
        e.contains("revision (policy_room") && e.contains("does not decode"),
        "{e}"
    );
}

fn prr_persist_write(
    info: &prr_engine::RevisionInfo,
    chunks: Vec<Vec<u8>>,
) -> prr_persist::RevisionWrite {
    prr_persist::RevisionWrite {
        replica: info.replica.clone(),
        logic_version: info.logic_version,
        description_hash: info.description_hash,
        records: info.records,
        chunks,
    }
}
