//! Persistence: restore, rebuild deltas, garbage collection, time travel, crashes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use prr_engine::{
    Dag, DeltaKind, Input, JoinView, ReplicaDescription, Runtime, RuntimeConfig, Seq, SourceDelta,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// numbers (source) -> evens -> per-residue counts; `version` changes the logic of `counts`.
fn dag(version: u32) -> Dag<u64> {
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
            move |i| {
                let m = if version == 1 { 5 } else { 3 };
                i[0].clone()
                    .map(move |x| x % m)
                    .count()
                    .map(|(k, c)| k * 1000 + c as u64)
            },
        )
        .with_logic_version(version),
    ])
    .unwrap()
}

fn config(path: &Path) -> RuntimeConfig {
    RuntimeConfig::new().with_store(path).with_keep_revisions(2)
}

fn push_numbers(rt: &mut Runtime<u64>, xs: &[u64]) -> Seq {
    let numbers = rt.replica("numbers").unwrap();
    let mut d = SourceDelta::new();
    for x in xs {
        d.insert(numbers, *x);
    }
    rt.push(d).unwrap()
}

fn contents(rt: &mut Runtime<u64>) -> BTreeMap<String, Vec<(u64, isize)>> {
    let names: Vec<String> = rt
        .dag()
        .replicas()
        .iter()
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

/// The same source deltas in a runtime without a store: the batch answer.
fn in_memory(version: u32, deltas: &[Vec<u64>]) -> BTreeMap<String, Vec<(u64, isize)>> {
    let mut rt = Runtime::start(RuntimeConfig::new(), dag(version)).unwrap();
    for d in deltas {
        push_numbers(&mut rt, d);
    }
    contents(&mut rt)
}

#[test]
fn restart_resumes_from_revisions_and_the_log_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let deltas: Vec<Vec<u64>> = (0..6).map(|i| (i * 10..i * 10 + 7).collect()).collect();
    {
        let mut rt = Runtime::start(config(&path), dag(1)).unwrap();
        for d in &deltas[..3] {
            push_numbers(&mut rt, d);
        }
        rt.capture_revisions().unwrap();
        for d in &deltas[3..] {
            push_numbers(&mut rt, d);
        }
        // No clean shutdown: drop without capturing (as after a crash, minus the kill).
        drop(rt);
    }
    let mut rt = Runtime::start(config(&path), dag(1)).unwrap();
    assert_eq!(rt.last_seq(), Seq(6));
    assert_eq!(contents(&mut rt), in_memory(1, &deltas));
    assert!(rt.take_rebuild_deltas().is_empty());
    // And it goes on from there.
    push_numbers(&mut rt, &[100, 102]);
    let mut all = deltas.clone();
    all.push(vec![100, 102]);
    assert_eq!(contents(&mut rt), in_memory(1, &all));
    rt.shutdown().unwrap();
    // A clean shutdown left revisions at the last seq: reading needs no dataflow.
    let mut rt = Runtime::start(config(&path), dag(1)).unwrap();
    let revisions = rt.revisions().unwrap();
    assert!(
        revisions
            .iter()
            .any(|r| r.as_of == 7 && r.replica == "counts")
    );
    assert_eq!(contents(&mut rt), in_memory(1, &all));
}

#[test]
fn changed_logic_version_publishes_a_correct_rebuild_delta() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let deltas: Vec<Vec<u64>> = vec![vec![2, 4, 6, 8], vec![10, 12, 3]];
    {
        let mut rt = Runtime::start(config(&path), dag(1)).unwrap();
        for d in &deltas {
            push_numbers(&mut rt, d);
        }
        rt.shutdown().unwrap();
    }
    let old = in_memory(1, &deltas)["counts"].clone();
    let new = in_memory(2, &deltas)["counts"].clone();
    assert_ne!(old, new);
    let mut rt = Runtime::start(config(&path), dag(2)).unwrap();
    let counts = rt.replica("counts").unwrap();
    assert_eq!(rt.read(counts, None).unwrap(), new);
    let rebuild = rt.take_rebuild_deltas();
    assert_eq!(rebuild.len(), 1, "{rebuild:?}");
    assert_eq!(
        (rebuild[0].kind, rebuild[0].seq, rebuild[0].replica),
        (DeltaKind::Rebuild, Seq(2), counts)
    );
    // Applying the rebuild delta to the old contents gives the new contents.
    let mut applied: BTreeMap<u64, isize> = old.into_iter().collect();
    for (r, d) in &rebuild[0].updates {
        *applied.entry(*r).or_insert(0) += d;
    }
    applied.retain(|_, d| *d != 0);
    assert_eq!(applied.into_iter().collect::<Vec<_>>(), new);
    // The stale revision was replaced: the next start publishes nothing.
    rt.shutdown().unwrap();
    let mut rt = Runtime::start(config(&path), dag(2)).unwrap();
    rt.sync().unwrap();
    assert!(rt.take_rebuild_deltas().is_empty());
}

#[test]
fn garbage_collection_never_breaks_restore_or_time_travel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let mut rng = StdRng::seed_from_u64(7);
    let mut deltas: Vec<Vec<u64>> = Vec::new();
    let mut rt = Runtime::start(
        config(&path).with_revision_every(Some(3)).with_log_gc(true),
        dag(1),
    )
    .unwrap();
    for _ in 0..14 {
        let d: Vec<u64> = (0..rng.random_range(1..5))
            .map(|_| rng.random_range(0..40))
            .collect();
        push_numbers(&mut rt, &d);
        deltas.push(d);
        // Every retained point of history still reads back right.
        let revisions = rt.revisions().unwrap();
        let oldest = revisions.iter().map(|r| r.as_of).min().unwrap_or(0);
        let first_log = rt.status().unwrap().store.unwrap().first_log_seq;
        let reach = if first_log == Some(1) {
            1
        } else {
            oldest.max(1)
        };
        for seq in reach..=deltas.len() as u64 {
            let want = in_memory(1, &deltas[..seq as usize]);
            for (name, rows) in &want {
                let id = rt.replica(name).unwrap();
                assert_eq!(
                    &rt.read_as_of(id, Seq(seq), None).unwrap(),
                    rows,
                    "{name} as of {seq}"
                );
            }
        }
    }
    // keep_revisions = 2: at most two revisions per replica, and the log was cut.
    let revisions = rt.revisions().unwrap();
    for name in ["numbers", "evens", "counts"] {
        assert!(revisions.iter().filter(|r| r.replica == name).count() <= 2);
    }
    assert!(
        rt.status()
            .unwrap()
            .store
            .unwrap()
            .first_log_seq
            .is_none_or(|f| f > 1),
        "GC cut the log"
    );
    // Beyond the retained history, a clear error.
    let numbers = rt.replica("numbers").unwrap();
    let err = rt.read_as_of(numbers, Seq(1), None).unwrap_err();
    assert!(err.to_string().contains("history not retained"), "{err}");
    drop(rt);
    let mut rt = Runtime::start(config(&path), dag(1)).unwrap();
    assert_eq!(contents(&mut rt), in_memory(1, &deltas));
    assert!(rt.check_store().unwrap().is_empty());
}

#[test]
fn deltas_since_replays_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let mut rt = Runtime::start(config(&path), dag(1)).unwrap();
    push_numbers(&mut rt, &[2, 4]);
    push_numbers(&mut rt, &[6]);
    push_numbers(&mut rt, &[1, 8]);
    let evens = rt.replica("evens").unwrap();
    let all = rt.deltas_since(evens, Seq(0)).unwrap();
    let seqs: Vec<(u64, Vec<(u64, isize)>)> =
        all.iter().map(|d| (d.seq.0, d.updates.clone())).collect();
    assert_eq!(
        seqs,
        vec![
            (1, vec![(2, 1), (4, 1)]),
            (2, vec![(6, 1)]),
            (3, vec![(8, 1)])
        ]
    );
    // After a revision at seq 3, garbage collection cuts the log: history since seq 3 and
    // later is still there, older history is a clear error.
    rt.capture_revisions().unwrap();
    rt.collect_garbage(true).unwrap();
    push_numbers(&mut rt, &[10, 11]);
    let later = rt.deltas_since(evens, Seq(3)).unwrap();
    assert_eq!(
        later
            .iter()
            .map(|d| (d.seq.0, d.updates.clone()))
            .collect::<Vec<_>>(),
        vec![(4, vec![(10, 1)])]
    );
    let err = rt.deltas_since(evens, Seq(1)).unwrap_err();
    assert!(err.to_string().contains("history not retained"), "{err}");
}

#[test]
fn rebuild_check_finds_a_damaged_revision_and_rebuild_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let mut rt = Runtime::start(config(&path), dag(1)).unwrap();
        push_numbers(&mut rt, &[2, 4, 5]);
        rt.shutdown().unwrap();
    }
    // Write a wrong revision for `evens` as if by a buggy program.
    {
        let wrong = dag(1);
        let store = prr_persist::Store::open(&path).unwrap();
        let desc = wrong.replica(wrong.id("evens").unwrap());
        let rows: Vec<(u64, i64)> = vec![(2, 1)];
        store
            .write_revisions(
                1,
                &[prr_persist::RevisionWrite {
                    replica: "evens".into(),
                    logic_version: desc.logic_version(),
                    description_hash: desc.description_hash(),
                    records: 1,
                    chunks: vec![prr_persist::ChunkWrite::New {
                        payload: bincode::serialize(&rows).unwrap(),
                        records: 1,
                    }],
                    overwrite: false,
                }],
                0,
                &[] as &[&str],
            )
            .unwrap();
    }
    let mut rt = Runtime::start(config(&path), dag(1)).unwrap();
    let report = rt.rebuild(&[], true).unwrap();
    let evens = report.iter().find(|o| o.replica == "evens").unwrap();
    assert_eq!((evens.missing, evens.extra, evens.replaced), (1, 0, false));
    assert!(
        report
            .iter()
            .filter(|o| o.replica != "evens")
            .all(|o| o.missing == 0 && o.extra == 0)
    );
    let report = rt.rebuild(&[], false).unwrap();
    assert!(report.iter().any(|o| o.replica == "evens" && o.replaced));
    assert!(
        rt.rebuild(&[], true)
            .unwrap()
            .iter()
            .all(|o| o.missing == 0 && o.extra == 0)
    );
    let id = rt.replica("evens").unwrap();
    assert_eq!(rt.read(id, None).unwrap(), vec![(2, 1), (4, 1)]);
}

#[test]
fn second_writer_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let _first = Runtime::start(config(&path), dag(1)).unwrap();
    let err = Runtime::start(config(&path), dag(1))
        .err()
        .expect("second open fails");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
}

/// The child of the crash test: pushes deltas given by the seed, printing each acknowledged
/// seq, capturing revisions often, until killed.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var("PRR_CRASH_STORE") else {
        return;
    };
    let seed: u64 = std::env::var("PRR_CRASH_SEED").unwrap().parse().unwrap();
    let mut rt = Runtime::start(
        RuntimeConfig::new()
            .with_store(&path)
            .with_revision_every(Some(2))
            .with_keep_revisions(2)
            .with_log_gc(true),
        dag(1),
    )
    .unwrap();
    let start = rt.last_seq().0;
    let mut rng = StdRng::seed_from_u64(seed);
    for i in 0.. {
        let d = crash_delta(&mut rng, start + i + 1);
        let seq = push_numbers(&mut rt, &d);
        println!("ack {}", seq.0);
    }
}

/// The numbers of the delta at `seq`: a pure function of the seq, so the parent can recompute.
fn crash_delta(_rng: &mut StdRng, seq: u64) -> Vec<u64> {
    let mut r = StdRng::seed_from_u64(seq);
    (0..r.random_range(1..200))
        .map(|_| r.random_range(0..10_000))
        .collect()
}

#[test]
fn sigkill_at_any_point_loses_no_acknowledged_delta_and_restores_to_a_batch_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let exe = std::env::current_exe().unwrap();
    let rounds: u64 = if std::env::var("CI").is_ok() { 6 } else { 10 };
    let mut acknowledged = 0u64;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "engine::persistence::crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PRR_CRASH_STORE", &path)
            .env("PRR_CRASH_SEED", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Let it run for a varying number of acknowledgements, then kill it mid-flight.
        let target = 3 + round * 2;
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(seq) = line.strip_prefix("ack ") {
                acknowledged = seq.trim().parse().unwrap();
                seen += 1;
                if seen >= target {
                    break;
                }
            }
        }
        // Give it a moment into its next commit or revision capture, varying by round.
        std::thread::sleep(std::time::Duration::from_millis(round * 7 % 23));
        child.kill().unwrap(); // SIGKILL
        for line in lines.map_while(Result::ok) {
            if let Some(seq) = line.strip_prefix("ack ") {
                acknowledged = seq.trim().parse().unwrap();
            }
        }
        child.wait().unwrap();
        // Reopen: every acknowledged delta is there, no partial one, and the replicas equal a
        // batch computation of the log.
        let mut rt =
            Runtime::start(config(&path).with_revision_on_shutdown(false), dag(1)).unwrap();
        let last = rt.last_seq().0;
        assert!(
            last >= acknowledged,
            "round {round}: acknowledged {acknowledged}, store has {last}"
        );
        assert!(
            last <= acknowledged + 1,
            "round {round}: at most the in-flight delta is extra"
        );
        let deltas: Vec<Vec<u64>> = (1..=last)
            .map(|s| crash_delta(&mut StdRng::seed_from_u64(0), s))
            .collect();
        assert_eq!(contents(&mut rt), in_memory(1, &deltas), "round {round}");
        assert!(rt.check_store().unwrap().is_empty(), "round {round}");
        assert!(
            rt.rebuild(&[], true)
                .unwrap()
                .iter()
                .all(|o| o.missing == 0 && o.extra == 0)
        );
        drop(rt);
    }
}

/// numbers and tags (sources), and a view pairing them on `x % 4`: `x * 100 + tag`.
fn view_dag() -> Dag<u64> {
    Dag::new(vec![
        ReplicaDescription::source("numbers", "x % 5", |x| x % 5),
        ReplicaDescription::source("tags", "tag % 4", |t| t % 4),
        ReplicaDescription::join_view(
            "tagged",
            "tag % 4",
            |v| (v % 100) % 4,
            "numbers",
            "tags",
            JoinView {
                left_key: |x| Some(x % 4),
                right_key: |t| Some(t % 4),
                combine: |x, t| (*x != 0).then_some(x * 100 + t),
                partition_follows_right: true,
            },
        ),
    ])
    .unwrap()
}

fn tagged_oracle(numbers: &BTreeMap<u64, isize>, tags: &BTreeMap<u64, isize>) -> Vec<(u64, isize)> {
    let mut out: BTreeMap<u64, isize> = BTreeMap::new();
    for (x, dx) in numbers {
        for (t, dt) in tags {
            if x % 4 == t % 4 && *x != 0 {
                *out.entry(x * 100 + t).or_insert(0) += dx * dt;
            }
        }
    }
    out.into_iter().filter(|(_, d)| *d != 0).collect()
}

#[test]
fn a_view_is_never_stored_and_reads_deltas_and_time_travel_follow_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.redb");
    let mut rng = StdRng::seed_from_u64(7);
    let mut rt = Runtime::start(
        config(&path)
            .with_revision_every(Some(3))
            .with_keep_revisions(3),
        view_dag(),
    )
    .unwrap();
    let (numbers, tags, tagged) = (
        rt.replica("numbers").unwrap(),
        rt.replica("tags").unwrap(),
        rt.replica("tagged").unwrap(),
    );
    let sub = rt.subscribe(tagged).unwrap();
    let mut state = (BTreeMap::new(), BTreeMap::new());
    let mut expected: Vec<Vec<(u64, isize)>> = vec![Vec::new()];
    for _ in 0..14 {
        let mut d = SourceDelta::new();
        for _ in 0..rng.random_range(1..4) {
            let (id, side, x) = if rng.random_bool(0.6) {
                (numbers, &mut state.0, rng.random_range(0..12))
            } else {
                (tags, &mut state.1, rng.random_range(0..8))
            };
            let present = side.get(&x).copied().unwrap_or(0);
            let diff = if present > 0 && rng.random_bool(0.4) {
                -1
            } else {
                1
            };
            d.update(id, x, diff);
            *side.entry(x).or_insert(0) += diff;
            side.retain(|_, c| *c != 0);
        }
        let seq = rt.push(d).unwrap();
        rt.step_until(seq).unwrap();
        expected.push(tagged_oracle(&state.0, &state.1));
        assert_eq!(rt.read(tagged, None).unwrap(), expected[seq.0 as usize]);
    }
    // Subscribed deltas accumulate to the contents at every seq.
    let mut acc: BTreeMap<u64, isize> = BTreeMap::new();
    for delta in sub.try_iter() {
        for (r, d) in &delta.updates {
            *acc.entry(*r).or_insert(0) += d;
        }
        acc.retain(|_, d| *d != 0);
        let got: Vec<(u64, isize)> = acc.iter().map(|(r, d)| (*r, *d)).collect();
        assert_eq!(
            got, expected[delta.seq.0 as usize],
            "subscription at {}",
            delta.seq
        );
    }
    rt.shutdown().unwrap();

    // No revision of the view is ever written.
    let mut rt = Runtime::start(config(&path).with_keep_revisions(3), view_dag()).unwrap();
    assert!(
        rt.revisions()
            .unwrap()
            .iter()
            .all(|r| r.replica != "tagged")
    );
    // Read from the inputs' revisions, without the dataflow; one partition too.
    let last = expected.len() - 1;
    assert_eq!(rt.read(tagged, None).unwrap(), expected[last]);
    for p in 0..4 {
        let want: Vec<(u64, isize)> = expected[last]
            .iter()
            .filter(|(v, _)| (v % 100) % 4 == p)
            .copied()
            .collect();
        assert_eq!(rt.read(tagged, Some(p)).unwrap(), want, "partition {p}");
    }
    let status = rt.status().unwrap();
    let line = status.replicas.iter().find(|r| r.name == "tagged").unwrap();
    let want_count: isize = expected[last].iter().map(|(_, d)| d).sum();
    assert_eq!(line.records, want_count as u64);
    // Time travel at every retained seq, and the delta history of the view.
    let oldest = rt
        .revisions()
        .unwrap()
        .iter()
        .map(|r| r.as_of)
        .min()
        .unwrap();
    for seq in oldest..=last as u64 {
        assert_eq!(
            rt.read_as_of(tagged, Seq(seq), None).unwrap(),
            expected[seq as usize],
            "as of {seq}"
        );
    }
    let history = rt.deltas_since(tagged, Seq(oldest)).unwrap();
    let mut acc: BTreeMap<u64, isize> = expected[oldest as usize].iter().copied().collect();
    for delta in &history {
        for (r, d) in &delta.updates {
            *acc.entry(*r).or_insert(0) += d;
        }
        acc.retain(|_, d| *d != 0);
        let got: Vec<(u64, isize)> = acc.iter().map(|(r, d)| (*r, *d)).collect();
        assert_eq!(
            got, expected[delta.seq.0 as usize],
            "history at {}",
            delta.seq
        );
    }
    assert!(rt.check_store().unwrap().is_empty());
    assert!(
        rt.rebuild(&[], true)
            .unwrap()
            .iter()
            .all(|o| o.missing == 0 && o.extra == 0)
    );
    rt.shutdown().unwrap();
}
