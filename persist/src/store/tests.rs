//! Unit tests of the store: formats, one writer, revisions, garbage collection, checks.

use super::*;

pub(super) fn temp() -> (tempfile::TempDir, PathBuf) {
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

/// New chunks of one record each.
pub(super) fn new_chunks(payloads: &[&[u8]]) -> Vec<ChunkWrite> {
    (payloads.iter())
        .map(|p| ChunkWrite::New {
            payload: p.to_vec(),
            records: 1,
        })
        .collect()
}

/// A revision of `replica` (logic 1, hash 1) listing `chunks`.
pub(super) fn write(replica: &str, chunks: Vec<ChunkWrite>) -> RevisionWrite {
    RevisionWrite {
        replica: replica.into(),
        logic_version: 1,
        description_hash: 1,
        records: chunks.iter().map(|c| u64::from(c.records())).sum(),
        chunks,
        overwrite: false,
    }
}

/// The keys in `chunks`.
pub(super) fn chunk_keys(store: &Store) -> Vec<u128> {
    let txn = store.begin_read().unwrap();
    let chunks = txn.open_table(CHUNKS).unwrap();
    chunks
        .iter()
        .unwrap()
        .map(|e| e.unwrap().0.value())
        .collect()
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
        chunks: new_chunks(&[b"one", b"two"]),
        overwrite: false,
    };
    let written = store
        .write_revisions(2, std::slice::from_ref(&w), 0, &[] as &[&str])
        .unwrap();
    let infos = store.revisions().unwrap();
    assert_eq!(infos, written);
    assert_eq!(
        (
            infos[0].logic_version,
            infos[0].description_hash,
            infos[0].chunk_count()
        ),
        (3, 42, 2)
    );
    assert_eq!(infos[0].chunks[1].key, chunk_key(b"two"));
    assert_eq!(
        store.revision_chunks("r", 2).unwrap(),
        vec![b"one".to_vec(), b"two".to_vec()]
    );
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
    assert!(chunk_keys(&store).is_empty(), "its chunks went with it");
    assert_eq!(store.first_log_seq().unwrap(), Some(3));
    assert!(store.revision_chunks("r", 2).is_err());
}

/// A revision that lists the chunks of another shares them: written once, kept while any
/// revision lists them, deleted with the last; the same contents under two replicas too.
#[test]
fn revisions_share_chunks_and_gc_keeps_what_is_listed() {
    let (_d, path) = temp();
    let store = Store::open(&path).unwrap();
    store
        .append(&[b"a".as_slice(), b"b"], 0, &[] as &[&str])
        .unwrap();
    let first = store
        .write_revisions(
            1,
            &[write("r", new_chunks(&[b"one", b"two"]))],
            0,
            &[] as &[&str],
        )
        .unwrap();
    let mut second = vec![ChunkWrite::Stored(first[0].chunks[0])];
    second.extend(new_chunks(&[b"three"]));
    store
        .write_revisions(
            2,
            &[write("r", second), write("q", new_chunks(&[b"two"]))],
            0,
            &[] as &[&str],
        )
        .unwrap();
    assert_eq!(chunk_keys(&store).len(), 3, "one, two and three, once each");
    store.collect_garbage(&[("r".into(), 1)], None).unwrap();
    let mut keys = chunk_keys(&store);
    keys.sort();
    let mut want = vec![chunk_key(b"one"), chunk_key(b"two"), chunk_key(b"three")];
    want.sort();
    assert_eq!(keys, want, "one is listed by (r, 2), two by (q, 2)");
    assert_eq!(
        store.revision_chunks("r", 2).unwrap(),
        vec![b"one".to_vec(), b"three".to_vec()]
    );
    // Replacing (q, 2) by other contents deletes `two`, which nothing lists any more.
    store
        .write_revisions(2, &[write("q", new_chunks(&[b"four"]))], 0, &[] as &[&str])
        .unwrap();
    assert!(!chunk_keys(&store).contains(&chunk_key(b"two")));
    assert!(check_ok(&store).is_empty(), "{:?}", check_ok(&store));
}

#[test]
fn check_finds_a_sound_store_sound() {
    let (_d, path) = temp();
    let store = Store::open(&path).unwrap();
    store.append(&[b"a".as_slice()], 0, &["s"]).unwrap();
    let problems = store.check(|_, _| Ok(()), |_, _, _, _| Ok(0)).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

/// Writes a raw value under a key of a table, as damage (or an older format) would leave it.
pub(super) fn poke<K: redb::Key + 'static>(
    store: &Store,
    table: TableDefinition<K, &[u8]>,
    key: K::SelfType<'_>,
    value: &[u8],
) {
    let txn = store.begin_write().unwrap();
    txn.open_table(table).unwrap().insert(key, value).unwrap();
    txn.commit().unwrap();
}

/// A store with two log entries, two strings and a revision of two chunks.
pub(super) fn small_store(path: &Path) -> Store {
    let store = Store::open(path).unwrap();
    store
        .append(&[b"a".as_slice(), b"b"], 0, &["x", "@evil:spam.example"])
        .unwrap();
    let w = RevisionWrite {
        replica: "r".into(),
        logic_version: 1,
        description_hash: 7,
        records: 2,
        chunks: new_chunks(&[b"one", b"two"]),
        overwrite: false,
    };
    store
        .write_revisions(2, std::slice::from_ref(&w), 2, &[] as &[&str])
        .unwrap();
    store
}

pub(super) fn check_ok(store: &Store) -> Vec<String> {
    store
        .check(|_, _| Ok(()), |_, _, _, c| Ok(c.len() as u64 / 3))
        .unwrap()
}

/// A value whose checksum matches but whose packed bytes do not decode (a codec this build
/// does not know, a body cut short before it was sealed) is damage, named, on read and by
/// `check`; never a panic.
#[test]
fn a_sealed_value_that_does_not_unpack_is_damage() {
    let (_d, path) = temp();
    let store = small_store(&path);
    poke(&store, LOG, 2, &sealed::log(2).seal(&[9, b'b']));
    let e = store.log_from(1).unwrap_err();
    assert!(
        e.to_string()
            .contains("table log: entry at seq 2 does not decode: unknown codec 9"),
        "{e}"
    );
    let key = chunk_key(b"two");
    poke(
        &store,
        CHUNKS,
        key,
        &sealed::chunk(key).seal(&[1, 200, 0, 0, 0, 7]),
    );
    let e = store.revision_chunks("r", 2).unwrap_err();
    assert!(
        e.to_string().contains("revision (r, 2) chunk 1 (key")
            && e.to_string().contains("does not decode"),
        "{e}"
    );
    let problems = check_ok(&store);
    for want in ["entry at seq 2 does not decode", "chunk 1 (key"] {
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{want}: {problems:?}"
        );
    }
}

#[test]
fn every_kind_of_value_is_checked_on_read_and_by_check() {
    let (_d, path) = temp();
    let store = small_store(&path);
    // A log entry with one byte changed.
    let mut v = sealed::log(2).seal_packed(b"b");
    v[4] ^= 1;
    poke(&store, LOG, 2, &v);
    let e = store.log_from(1).unwrap_err();
    assert!(
        e.to_string()
            .contains("log: entry at seq 2 fails its checksum"),
        "{e}"
    );
    // A chunk moved to another key fails the checksum of its new place.
    let moved = sealed::chunk(chunk_key(b"one")).seal_packed(b"one");
    poke(&store, CHUNKS, chunk_key(b"two"), &moved);
    let e = store.revision_chunks("r", 2).unwrap_err();
    assert!(
        e.to_string().contains("revision (r, 2) chunk 1 (key")
            && e.to_string().contains("fails its checksum"),
        "{e}"
    );
    // A header with a changed record count.
    let mut h = RevisionInfo::decode("r", 2, &sealed::header("r", 2).seal(&[0; 24]))
        .unwrap()
        .encode();
    h[10] ^= 4;
    poke(&store, REVISIONS, ("r", 2), &h);
    assert!(
        store
            .revisions()
            .unwrap_err()
            .to_string()
            .contains("header fails its checksum")
    );
    // meta `last_seq` changed.
    let mut m = sealed_u64(KEY_LAST_SEQ, 2);
    m[4] = 9;
    poke(&store, META, KEY_LAST_SEQ, &m);
    assert!(
        store
            .last_seq()
            .unwrap_err()
            .to_string()
            .contains("`last_seq` fails its checksum")
    );
    let problems = check_ok(&store);
    for want in [
        "log: entry at seq 2 fails",
        // (Its chunks are not read: the damaged header no longer says which they are.)
        "revision (r, 2) header fails",
        "`last_seq` fails",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{want}: {problems:?}"
        );
    }
}

#[test]
fn check_finds_gaps_missing_chunks_and_counts() {
    let (_d, path) = temp();
    let store = small_store(&path);
    {
        let txn = store.begin_write().unwrap();
        txn.open_table(LOG).unwrap().remove(1).unwrap();
        (txn.open_table(CHUNKS).unwrap())
            .remove(chunk_key(b"two"))
            .unwrap();
        txn.commit().unwrap();
    }
    poke(
        &store,
        CHUNKS,
        chunk_key(b"xxx"),
        &sealed::chunk(chunk_key(b"xxx")).seal_packed(b"xxx"),
    );
    // Sealed right, but under the key of other contents.
    poke(
        &store,
        CHUNKS,
        chunk_key(b"one"),
        &sealed::chunk(chunk_key(b"one")).seal_packed(b"eno"),
    );
    let problems = check_ok(&store);
    for want in [
        "revision (r, 2) chunk 1 (key",
        "is missing",
        "is listed by no revision",
        "revision (r, 2) chunk 0 (key",
        "holds contents of another key",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{want}: {problems:?}"
        );
    }
    // The log starts at 2 (as after garbage collection): no gap is reported for that.
    assert!(!problems.iter().any(|p| p.contains("gap")), "{problems:?}");
    let e = store.revision_chunks("r", 2).unwrap_err();
    assert!(e.to_string().contains("is missing"), "{e}");
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
    assert!(
        store
            .check(|_, _| Ok(()), |_, _, _, _| Ok(0))
            .unwrap()
            .is_empty()
    );
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
    assert!(
        store
            .check(|_, _| Ok(()), |_, _, _, _| Ok(0))
            .unwrap()
            .is_empty()
    );
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
        let txn = store.begin_write().unwrap();
        txn.open_table(QUARANTINE)
            .unwrap()
            .insert(1, [1u8, 2, 3].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = store.quarantined().unwrap_err();
    assert!(
        err.to_string().contains("quarantine: entry at seq 1"),
        "{err}"
    );
    let problems = store.check(|_, _| Ok(()), |_, _, _, _| Ok(0)).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn problem_10_permission_denied_is_said_as_such_with_the_path_once() {
    let path = PathBuf::from("/srv/prr/locked.redb");
    let e = open_io_error(
        path.clone(),
        std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    );
    let text = e.to_string();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(text.contains("permission denied"), "{text}");
    assert!(!text.contains("not a prr store"), "{text}");
    assert_eq!(text.matches("/srv/prr/locked.redb").count(), 1, "{text}");
    assert!(
        std::error::Error::source(&e).is_none(),
        "the cause is in the message and is not chained again: {text}"
    );
    // A file too short for redb is still "not a prr store".
    let short = open_io_error(
        path,
        std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
    );
    assert!(matches!(short, Error::NotAStore { .. }), "{short:?}");
}

#[test]
fn problem_10_a_symlink_loop_is_said_as_such() {
    let (d, path) = temp();
    let other = d.path().join("other.redb");
    std::os::unix::fs::symlink(&other, &path).unwrap();
    std::os::unix::fs::symlink(&path, &other).unwrap();
    for (how, result) in [
        ("open", Store::open(&path)),
        ("open_read_only", Store::open_read_only(&path)),
    ] {
        let e = result.expect_err(how);
        let text = e.to_string();
        assert!(matches!(e, Error::Io { .. }), "{how}: {e:?}");
        assert!(text.contains("symbolic link loop"), "{how}: {text}");
        assert!(!text.contains("no such file"), "{how}: {text}");
        assert_eq!(
            text.matches(path.to_str().unwrap()).count(),
            1,
            "{how}: {text}"
        );
    }
    assert!(
        std::fs::symlink_metadata(&path).unwrap().is_symlink(),
        "the link is untouched"
    );
}

#[test]
fn problem_10_a_parent_that_is_a_file_is_said_as_such() {
    let (d, _) = temp();
    let file = d.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let path = file.join("s.redb");
    for (how, result) in [
        ("open", Store::open(&path)),
        ("open_read_only", Store::open_read_only(&path)),
    ] {
        let e = result.expect_err(how);
        let text = e.to_string();
        assert!(matches!(e, Error::Io { .. }), "{how}: {e:?}");
        assert!(text.contains("not a directory"), "{how}: {text}");
        assert_eq!(
            text.matches(path.to_str().unwrap()).count(),
            1,
            "{how}: {text}"
        );
    }
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
