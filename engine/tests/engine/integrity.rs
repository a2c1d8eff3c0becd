//! Integrity: records read from the store are checked against the dictionary, `check` names
//! what is damaged, and `rebuild` repairs what it can and never spreads damage.

use std::path::Path;

use prr_engine::{Dag, Input, ReplicaDescription, Runtime, RuntimeConfig, Seq, SourceDelta};

/// `ids` (a source of dictionary ids) and `same` (derived: the same ids).
pub fn dag() -> Dag<u64> {
    Dag::new(vec![
        ReplicaDescription::source("ids", "id % 3", |x| x % 3),
        ReplicaDescription::derived(
            "same",
            "id % 3",
            |x| x % 3,
            vec![Input::deltas("ids")],
            |i| i[0].clone().map(|x| x),
        ),
    ])
    .unwrap()
    .with_record_ids(|r, f| f(*r))
}

fn config(path: &Path) -> RuntimeConfig {
    RuntimeConfig::new().with_store(path).with_workers(1)
}

fn push(rt: &mut Runtime<u64>, xs: &[u64]) -> Seq {
    let ids = rt.replica("ids").unwrap();
    let mut d = SourceDelta::new();
    for x in xs {
        d.insert(ids, *x);
    }
    rt.push(d).unwrap()
}

/// Problem 2: an id out of range in a log entry (here written with a sound checksum, as a bug
/// of a program would) passed `check` and made a later lookup index out of bounds. Now every
/// read of it fails naming the entry, `check` reports it, and `rebuild` replaces nothing.
#[test]
fn problem_2_ids_out_of_range_are_damage_even_under_a_sound_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let mut rt = Runtime::start(config(&path), dag()).unwrap();
        rt.dictionary().intern("a");
        rt.dictionary().intern("b");
        push(&mut rt, &[0, 1]);
        rt.capture_revisions().unwrap();
        push(&mut rt, &[9]);
        rt.step_until(Seq(2)).unwrap();
        // No revision at seq 2: the restore replays log entry 2.
        drop(rt);
    }
    let mut rt = Runtime::start(config(&path), dag()).unwrap();
    let problems = rt.check_store().unwrap();
    assert!(
        problems.iter().any(|p| p.contains(
            "table log: entry at seq 2 does not decode: log entry 2: record 0 uses dictionary id 9, but the dictionary holds 2 strings"
        )),
        "{problems:?}"
    );
    let same = rt.replica("same").unwrap();
    let e = rt.read(same, None).unwrap_err();
    assert!(
        e.to_string()
            .contains("log entry 2: record 0 uses dictionary id 9"),
        "{e}"
    );
    let e = rt.deltas_since(same, Seq(0)).unwrap_err();
    assert!(e.to_string().contains("dictionary id 9"), "{e}");
    let e = rt.rebuild(&[], false).unwrap_err();
    assert!(e.to_string().contains("no revision is replaced"), "{e}");
    assert!(e.to_string().contains("log entry 2"), "{e}");
    // The revisions at seq 1 are still the sound ones; only the log entry is reported.
    assert_eq!(rt.check_store().unwrap(), problems);
    assert_eq!(problems.len(), 1, "{problems:?}");
}

/// Problem 3: a revision chunk that does not decode (sealed correctly: written so by a bug, or
/// damaged before it was sealed) is rebuilt from the log, which is sound and reaches back to
/// seq 1; `check` finds the store sound afterwards.
#[test]
fn problem_3_a_revision_that_does_not_decode_is_rebuilt_from_a_sound_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let mut rt = Runtime::start(config(&path), dag()).unwrap();
        rt.dictionary().intern("a");
        rt.dictionary().intern("b");
        push(&mut rt, &[0, 1]);
        rt.shutdown().unwrap();
    }
    {
        let store = prr_persist::Store::open(&path).unwrap();
        let info = (store.revisions().unwrap().into_iter())
            .find(|i| i.replica == "same")
            .unwrap();
        store
            .write_revisions(
                info.as_of,
                &[prr_persist::RevisionWrite {
                    replica: "same".into(),
                    logic_version: info.logic_version,
                    description_hash: info.description_hash,
                    records: 2,
                    chunks: vec![prr_persist::ChunkWrite::New {
                        payload: b"not bincode".to_vec(),
                        records: 2,
                    }],
                    overwrite: false,
                }],
                2,
                &[] as &[&str],
            )
            .unwrap();
    }
    let mut rt = Runtime::start(config(&path), dag()).unwrap();
    let problems = rt.check_store().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("revision (same, 1) chunk 0 does not decode")),
        "{problems:?}"
    );
    let checked = rt.rebuild(&[], true).unwrap();
    let o = checked.iter().find(|o| o.replica == "same").unwrap();
    assert!(o.damage.is_some() && !o.replaced, "{o:?}");
    let rebuilt = rt.rebuild(&[], false).unwrap();
    let o = rebuilt.iter().find(|o| o.replica == "same").unwrap();
    assert!(o.damage.is_some() && o.replaced && o.missing == 2, "{o:?}");
    assert!(rt.check_store().unwrap().is_empty());
    let same = rt.replica("same").unwrap();
    assert_eq!(rt.read(same, None).unwrap(), vec![(0, 1), (1, 1)]);
}
