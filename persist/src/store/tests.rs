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

#[test]
fn a_store_without_a_quarantine_table_has_no_quarantined_deltas() {
    let (_d, path) = temp();
    let store = Store::open(&path).unwrap();
    store.append(&[b"a".as_slice()], 0, &[] as &[&str]).unwrap();
    assert_eq!(store.quarantined().unwrap(), vec![]);
    drop(store);
    // Read-only, the missing table is not created and reads as empty too.
    let store = Store::open_read_only(&path).unwrap();
    assert_eq!(store.quarantined().unwrap(), vec![]);
    assert!(store.check(|_| Ok(()), |_| Ok(0)).unwrap().is_empty());
}

#[test]
fn quarantine_survives_a_reopen_and_dropping_it_empties_its_log_entry() {
    let (_d, path) = temp();
    let store = Store::open(&path).unwrap();
    store
        .append(&[b"a".as_slice(), b"poison", b"c"], 0, &[] as &[&str])
        .unwrap();
    let entry = Quarantined {
        seq: 2,
        unix_ms: 1_700_000_000_000,
        message: "record 13 is unlucky".into(),
    };
    store.quarantine(&entry).unwrap();
    let err = store
        .quarantine(&Quarantined {
            seq: 9,
            ..entry.clone()
        })
        .unwrap_err();
    assert!(err.to_string().contains("seq 9"), "{err}");
    drop(store);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.quarantined().unwrap(), vec![entry]);
    assert!(store.check(|_| Ok(()), |_| Ok(0)).unwrap().is_empty());
    let err = store.drop_quarantined(3, b"").unwrap_err();
    assert!(
        err.to_string().contains("no quarantined delta at seq 3"),
        "{err}"
    );
    store.drop_quarantined(2, b"empty").unwrap();
    assert_eq!(store.quarantined().unwrap(), vec![]);
    let log = store.log_from(1).unwrap();
    let bytes: Vec<&[u8]> = log.iter().map(|(_, b)| b.as_slice()).collect();
    assert_eq!(bytes, [b"a".as_slice(), b"empty", b"c"]);
    assert!(store.drop_quarantined(2, b"").is_err(), "dropped for good");
}

#[test]
fn a_damaged_quarantine_entry_is_an_error_not_a_panic() {
    let (_d, path) = temp();
    let store = Store::open(&path).unwrap();
    store.append(&[b"a".as_slice()], 0, &[] as &[&str]).unwrap();
    {
        let Db::Write(db) = &store.db else {
            unreachable!()
        };
        let txn = db.begin_write().unwrap();
        txn.open_table(QUARANTINE)
            .unwrap()
            .insert(1, [1u8, 2, 3].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = store.quarantined().unwrap_err();
    assert!(err.to_string().contains("quarantine entry 1"), "{err}");
    let problems = store.check(|_| Ok(()), |_| Ok(0)).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
}
