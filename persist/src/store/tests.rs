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
