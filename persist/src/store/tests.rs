//! Unit tests of the store: formats, one writer, revisions, garbage collection, checks.

use super::*;

fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    (dir, path)
}

#[test]
fn append_assigns_consecutive_seqs_and_persists_strings() {
    let (_d, path) = temp();
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store
            .append(&[b"a".as_slice(), b"b"], 0, &["x", "y"])
            .unwrap(),
        vec![1, 2]
    );
    assert_eq!(
        store.append(&[b"c".as_slice()], 2, &["z"]).unwrap(),
        vec![3]
    );
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.last_seq().unwrap(), 3);
    assert_eq!(store.strings().unwrap(), vec!["x", "y", "z"]);
    assert_eq!(store.log_from(2).unwrap().len(), 2);
}

#[test]
fn dictionary_ids_out_of_step_are_refused() {
    let (_d, path) = temp();
    let store = Store::open(&path).unwrap();
    assert!(store.append(&[b"a".as_slice()], 5, &["x"]).is_err());
    assert_eq!(
        store.last_seq().unwrap(),
        0,
        "nothing of the failed append is stored"
    );
}

#[test]
fn second_open_is_refused_while_the_first_holds_the_store() {
    let (_d, path) = temp();
    let _first = Store::open(&path).unwrap();
    match Store::open(&path) {
        Err(Error::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn newer_format_version_is_refused() {
    let (_d, path) = temp();
    {
        let store = Store::open(&path).unwrap();
        let txn = store.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(KEY_FORMAT, 99u32.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    match Store::open(&path) {
        Err(e @ Error::FormatVersion { found: 99, .. }) => {
            assert!(e.to_string().contains("format version 99"), "{e}")
        }
        other => panic!("expected FormatVersion, got {other:?}"),
    }
}

#[test]
fn a_file_that_is_not_redb_is_refused() {
    let (_d, path) = temp();
    std::fs::write(
        &path,
        b"this is not a database, just some text that is long enough",
    )
    .unwrap();
    match Store::open(&path) {
        Err(Error::NotAStore { .. }) => {}
        other => panic!("expected NotAStore, got {other:?}"),
    }
}

#[test]
fn revisions_round_trip_and_gc_deletes_them() {
    let (_d, path) = temp();
    let store = Store::open(&path).unwrap();
    store
        .append(&[b"a".as_slice(), b"b", b"c"], 0, &[] as &[&str])
        .unwrap();
    let w = RevisionWrite {
        replica: "r".into(),
        logic_version: 3,
        description_hash: 42,
        records: 2,
        chunks: vec![b"one".to_vec(), b"two".to_vec()],
    };
    store
        .write_revisions(2, std::slice::from_ref(&w), 0, &[] as &[&str])
        .unwrap();
    let infos = store.revisions().unwrap();
    assert_eq!(infos.len(), 1);
    assert_eq!(
        (
            infos[0].logic_version,
            infos[0].description_hash,
            infos[0].chunks
        ),
        (3, 42, 2)
    );
    assert_eq!(store.revision_chunks("r", 2).unwrap(), w.chunks);
    // Chunk ranges read in place; a range past the last chunk is a corrupt store.
    let mut seen = Vec::new();
    store
        .for_each_revision_chunk("r", 2, 1..2, |i, c| {
            seen.push((i, c.to_vec()));
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(seen, vec![(1, b"two".to_vec())]);
    let e = store
        .for_each_revision_chunk("r", 2, 0..3, |_, _| Ok::<_, Error>(()))
        .unwrap_err();
    assert!(e.to_string().contains("lacks chunk 2"), "{e}");
    store.collect_garbage(&[("r".into(), 2)], Some(2)).unwrap();
    assert!(store.revisions().unwrap().is_empty());
    assert_eq!(store.first_log_seq().unwrap(), Some(3));
    assert!(store.revision_chunks("r", 2).is_err());
}

#[test]
fn check_finds_a_sound_store_sound() {
    let (_d, path) = temp();
    let store = Store::open(&path).unwrap();
    store.append(&[b"a".as_slice()], 0, &["s"]).unwrap();
    let problems = store.check(|_| Ok(()), |_| Ok(0)).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

/// Appends one delta with one new string under each fault at each of its operations; the
/// outcome said is the truth read back after the fault clears, and the store goes on.
#[cfg(feature = "test-util")]
#[test]
fn a_failed_append_says_whether_it_committed_and_the_store_goes_on() {
    use crate::{Fault, Faults, FaultyBackend};
    for fault in [Fault::Write, Fault::Sync, Fault::Full, Fault::Device] {
        let (_d, path) = temp();
        let faults = Faults::new();
        let (p, f) = (path.clone(), faults.clone());
        let store = Store::open_with_backend(&path, move || FaultyBackend::open(&p, &f)).unwrap();
        let mut expected = 0u64;
        for at in 0.. {
            faults.arm(fault, at);
            let string = format!("s{expected}");
            let id = store.string_count().unwrap_or(expected);
            let result = store.append(&[string.as_bytes()], id, &[string.as_str()]);
            let fired = faults.fired();
            faults.clear();
            match &result {
                Ok(seqs) => {
                    expected += 1;
                    assert_eq!(seqs, &vec![expected]);
                }
                Err(Error::NotCommitted { .. }) => {}
                Err(Error::InDoubt { .. }) => {
                    // Settled by the next operation.
                    let now = store.last_seq().unwrap();
                    assert!(now == expected || now == expected + 1, "{fault:?} at {at}");
                    expected = now;
                }
                Err(e) => panic!("{fault:?} at {at}: unexpected error {e}"),
            }
            assert!(
                result.is_ok() || fired,
                "{fault:?} at {at}: failed without a fault"
            );
            assert_eq!(store.last_seq().unwrap(), expected, "{fault:?} at {at}");
            assert_eq!(store.string_count().unwrap(), expected);
            if !fired {
                break;
            }
            assert!(
                at < 200,
                "{fault:?}: the fault still fires after 200 operations"
            );
        }
        assert!(expected >= 1);
        let log = store.log_from(1).unwrap();
        let strings = store.strings().unwrap();
        drop(store);
        let reopened = Store::open(&path).unwrap();
        assert_eq!(reopened.last_seq().unwrap(), expected);
        assert_eq!(reopened.log_from(1).unwrap(), log);
        assert_eq!(reopened.strings().unwrap(), strings);
    }
}
