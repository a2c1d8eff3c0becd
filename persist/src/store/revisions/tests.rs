//! Unit tests of chunks written ahead of their headers.

use std::collections::BTreeSet;

use super::super::chunks_ahead::ahead_in;
use super::super::tests::{check_ok, chunk_keys, new_chunks, temp, write};
use super::*;

fn ahead(store: &Store) -> BTreeSet<u128> {
    ahead_in(&store.begin_read().unwrap()).unwrap()
}

fn keys(payloads: &[&[u8]]) -> BTreeSet<u128> {
    payloads.iter().map(|p| chunk_key(p)).collect()
}

/// Chunks written ahead are noted until a header lists them; those of a capture that stopped
/// before its headers are not called unlisted by `check`, and are swept by the next write
/// ahead and by garbage collection, the chunks that headers list staying.
#[test]
fn chunks_written_ahead_are_listed_or_swept() {
    let (_d, path) = temp();
    {
        let store = Store::open(&path).unwrap();
        store.append(&[b"a".as_slice()], 0, &[] as &[&str]).unwrap();
        let mut writes = vec![write("r", new_chunks(&[b"one", b"two"]))];
        store.write_chunks_ahead(&mut writes).unwrap();
        assert!(
            (writes[0].chunks.iter()).all(|c| matches!(c, ChunkWrite::Stored(_))),
            "{writes:?}"
        );
        assert_eq!(ahead(&store), keys(&[b"one", b"two"]));
        assert!(check_ok(&store).is_empty(), "{:?}", check_ok(&store));
        store
            .write_revisions(1, &writes, 0, &[] as &[&str])
            .unwrap();
        assert!(ahead(&store).is_empty(), "listed now");
        assert_eq!(
            store.revision_chunks("r", 1).unwrap(),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        // A capture that stops after writing ahead: `one` was stored, only `six` is noted.
        let mut stopped = vec![write("r", new_chunks(&[b"one", b"six"]))];
        store.write_chunks_ahead(&mut stopped).unwrap();
        assert_eq!(ahead(&store), keys(&[b"six"]));
    }
    let store = Store::open(&path).unwrap();
    assert!(check_ok(&store).is_empty(), "{:?}", check_ok(&store));
    assert!(chunk_keys(&store).contains(&chunk_key(b"six")));
    let mut next = vec![write("r", new_chunks(&[b"two", b"ten"]))];
    store.write_chunks_ahead(&mut next).unwrap();
    assert_eq!(
        chunk_keys(&store).into_iter().collect::<BTreeSet<_>>(),
        keys(&[b"one", b"two", b"ten"]),
        "six swept, the listed chunks kept"
    );
    assert_eq!(ahead(&store), keys(&[b"ten"]));
    store.collect_garbage(&[], None).unwrap();
    assert!(ahead(&store).is_empty());
    assert_eq!(
        chunk_keys(&store).into_iter().collect::<BTreeSet<_>>(),
        keys(&[b"one", b"two"]),
        "garbage collection sweeps them too"
    );
    assert!(check_ok(&store).is_empty(), "{:?}", check_ok(&store));
}

/// Chunks of more than a transaction's worth are written in several, each listed in order; a
/// write that overwrites keeps its chunks for its header's transaction.
#[test]
fn chunks_ahead_go_in_several_transactions_in_order() {
    let (_d, path) = temp();
    let store = Store::open(&path).unwrap();
    let big: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 3 << 20]).collect();
    let payloads: Vec<&[u8]> = big.iter().map(Vec::as_slice).collect();
    let mut writes = vec![
        write("r", new_chunks(&payloads)),
        RevisionWrite {
            overwrite: true,
            ..write("q", new_chunks(&[b"one"]))
        },
    ];
    store.write_chunks_ahead(&mut writes).unwrap();
    let listed: Vec<u128> = (writes[0].chunks.iter())
        .map(|c| match c {
            ChunkWrite::Stored(r) => r.key,
            ChunkWrite::New { .. } => panic!("not written ahead"),
        })
        .collect();
    assert_eq!(
        listed,
        payloads.iter().map(|p| chunk_key(p)).collect::<Vec<_>>()
    );
    assert!(matches!(writes[1].chunks[0], ChunkWrite::New { .. }));
    store
        .write_revisions(1, &writes, 0, &[] as &[&str])
        .unwrap();
    assert_eq!(store.revision_chunks("r", 1).unwrap(), big);
    assert_eq!(
        store.revision_chunks("q", 1).unwrap(),
        vec![b"one".to_vec()]
    );
    assert!(ahead(&store).is_empty());
}

/// A capture that writes ahead one replica at a time sweeps what a stopped capture left, once,
/// at its first write: the chunks its own earlier writes put ahead stay until its headers list
/// them.
#[test]
fn more_chunks_ahead_keep_the_capture_s_earlier_ones() {
    let (_d, path) = temp();
    let store = Store::open(&path).unwrap();
    store.append(&[b"a".as_slice()], 0, &[] as &[&str]).unwrap();
    let mut stopped = vec![write("r", new_chunks(&[b"old"]))];
    store.write_chunks_ahead(&mut stopped).unwrap();
    let mut first = vec![write("r", new_chunks(&[b"one"]))];
    store.write_chunks_ahead(&mut first).unwrap();
    assert_eq!(
        ahead(&store),
        keys(&[b"one"]),
        "the stopped capture's swept"
    );
    let mut second = vec![write("q", new_chunks(&[b"two"]))];
    store.write_more_chunks_ahead(&mut second).unwrap();
    assert_eq!(ahead(&store), keys(&[b"one", b"two"]), "the first kept");
    first.extend(second);
    store.write_revisions(1, &first, 0, &[] as &[&str]).unwrap();
    assert!(ahead(&store).is_empty(), "listed now");
    assert_eq!(
        store.revision_chunks("r", 1).unwrap(),
        vec![b"one".to_vec()]
    );
    assert_eq!(
        store.revision_chunks("q", 1).unwrap(),
        vec![b"two".to_vec()]
    );
    assert!(check_ok(&store).is_empty(), "{:?}", check_ok(&store));
}
