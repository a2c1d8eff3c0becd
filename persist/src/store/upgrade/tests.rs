//! Upgrades from older formats: format 1's layout, format 5's records rewritten by the
//! program, format 6's values packed.

use std::path::Path;

use redb::{ReadableTable, TableDefinition};

use super::super::revisions::{CHUNKS, REVISIONS, chunk_key};
use super::super::strings::STRINGS;
use super::super::tests::{temp, write};
use super::super::{KEY_DICT_LEN, KEY_FORMAT, KEY_LAST_SEQ, LOG, META, sealed};
use crate::{
    ChunkWrite, Error, FORMAT_VERSION, RecordUpgrade, RecordsUnchanged, Store, UpgradeStrings,
};

/// A chunk of two records, as bincode writes its length: `u64 LE` 2, then the records.
const V1_CHUNK: [u8; 11] = [2, 0, 0, 0, 0, 0, 0, 0, b't', b'w', b'o'];

/// Writes a store of format 1 as that format laid it out: raw values, `dict` of `&str`.
fn write_v1(path: &Path) {
    let store = Store::open(path).unwrap();
    let txn = store.begin_write().unwrap();
    {
        let mut meta = txn.open_table(META).unwrap();
        meta.insert(KEY_FORMAT, 1u32.to_le_bytes().as_slice())
            .unwrap();
        meta.insert(KEY_LAST_SEQ, 2u64.to_le_bytes().as_slice())
            .unwrap();
        meta.insert(KEY_DICT_LEN, 2u64.to_le_bytes().as_slice())
            .unwrap();
        let mut log = txn.open_table(LOG).unwrap();
        log.insert(1, b"a".as_slice()).unwrap();
        log.insert(2, b"b".as_slice()).unwrap();
        let v1: TableDefinition<u64, &str> = TableDefinition::new("dict");
        let mut dict = txn.open_table(v1).unwrap();
        dict.insert(0, "x").unwrap();
        dict.insert(1, "y").unwrap();
        let mut revs = txn.open_table(REVISIONS).unwrap();
        let mut header = [0u8; 24];
        header[12] = 2; // records
        header[20] = 1; // chunks
        revs.insert(("r", 2), header.as_slice()).unwrap();
        let v2: TableDefinition<(&str, u64, u32), &[u8]> = TableDefinition::new("revision_chunks");
        let mut chunks = txn.open_table(v2).unwrap();
        chunks.insert(("r", 2, 0), V1_CHUNK.as_slice()).unwrap();
    }
    txn.delete_table(STRINGS).unwrap();
    txn.delete_table(CHUNKS).unwrap();
    txn.commit().unwrap();
}

#[test]
fn a_store_of_format_1_is_upgraded_on_open() {
    let (_d, path) = temp();
    write_v1(&path);
    // Not without the program's record upgrade: the file stays as it was.
    for refused in [Store::open(&path), Store::open_read_only(&path)] {
        match refused {
            Err(Error::FormatVersion { found: 1, .. }) => {}
            other => panic!("expected a refusal of format 1, got {other:?}"),
        }
    }
    // A read-only open upgrades it too (once, through a writable handle).
    let store = Store::open_read_only_upgrading(&path, &RecordsUnchanged).unwrap();
    assert_eq!(store.format_version().unwrap(), FORMAT_VERSION);
    assert_eq!(store.last_seq().unwrap(), 2);
    assert_eq!(store.strings().unwrap(), vec!["x", "y"]);
    assert_eq!(
        store.log_from(1).unwrap(),
        vec![(1, b"a".to_vec()), (2, b"b".to_vec())]
    );
    assert_eq!(
        store.revision_chunks("r", 2).unwrap(),
        vec![V1_CHUNK.to_vec()]
    );
    let info = &store.revisions().unwrap()[0];
    assert_eq!((info.records, info.chunk_count()), (2, 1));
    assert_eq!(info.chunks[0].records, 2, "the count bincode wrote");
    assert!(
        store
            .check(|_, _| Ok(()), |_, _, _, _| Ok(2))
            .unwrap()
            .is_empty()
    );
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(
        store.append(&[b"c".as_slice()], 2, &["z"]).unwrap(),
        vec![3]
    );
}

/// A record upgrade for the tests: `old` becomes `NEW:` and the id of a string it interns;
/// `broken` cannot be read. It keeps its progress reports.
#[derive(Default)]
struct Renaming {
    progress: std::sync::Mutex<Vec<(u64, u64)>>,
}

impl Renaming {
    fn rewrite(payload: &[u8], strings: &mut UpgradeStrings) -> Result<Option<Vec<u8>>, String> {
        match payload {
            b"old" => Ok(Some(format!("NEW:{}", strings.intern("fact")).into_bytes())),
            b"broken" => Err("`broken` is not a record".into()),
            _ => Ok(None),
        }
    }
}

impl RecordUpgrade for Renaming {
    fn chunk(
        &self,
        from: u32,
        payload: &[u8],
        strings: &mut UpgradeStrings,
    ) -> Result<Option<Vec<u8>>, String> {
        assert_eq!(from, 5);
        Self::rewrite(payload, strings)
    }

    fn log_entry(
        &self,
        from: u32,
        payload: &[u8],
        strings: &mut UpgradeStrings,
    ) -> Result<Option<Vec<u8>>, String> {
        assert_eq!(from, 5);
        Self::rewrite(payload, strings)
    }

    fn progress(&self, done: u64, total: u64) {
        self.progress.lock().unwrap().push((done, total));
    }
}

/// A store of format 5: log entries and chunks of `payloads`, strings `x` and `y`.
fn write_v5(path: &Path, payloads: &[&[u8]]) {
    let store = Store::open(path).unwrap();
    store.append(payloads, 0, &["x", "y"]).unwrap();
    let chunks = payloads.iter().map(|p| ChunkWrite::New {
        payload: p.to_vec(),
        records: 1,
    });
    let w = write("r", chunks.collect());
    store.write_revisions(1, &[w], 0, &[] as &[&str]).unwrap();
    as_format(&store, 5);
}

/// Makes `store` one of format `version` (5 or 6): every log entry and chunk sealed as it is,
/// not packed, and the version written.
fn as_format(store: &Store, version: u32) {
    let txn = store.begin_write().unwrap();
    {
        let mut log = txn.open_table(LOG).unwrap();
        let entries: Vec<(u64, Vec<u8>)> = (log.iter().unwrap())
            .map(|e| e.map(|(k, v)| (k.value(), v.value().to_vec())).unwrap())
            .collect();
        for (seq, v) in entries {
            let payload = sealed::log(seq).open_packed(&v, String::new).unwrap();
            log.insert(seq, sealed::log(seq).seal(&payload).as_slice())
                .unwrap();
        }
        let mut chunks = txn.open_table(CHUNKS).unwrap();
        let all: Vec<(u128, Vec<u8>)> = (chunks.iter().unwrap())
            .map(|e| e.map(|(k, v)| (k.value(), v.value().to_vec())).unwrap())
            .collect();
        for (key, v) in all {
            let payload = sealed::chunk(key).open_packed(&v, String::new).unwrap();
            chunks
                .insert(key, sealed::chunk(key).seal(&payload).as_slice())
                .unwrap();
        }
        (txn.open_table(META).unwrap())
            .insert(KEY_FORMAT, version.to_le_bytes().as_slice())
            .unwrap();
    }
    txn.commit().unwrap();
}

/// Format 7 packs what format 6 kept as it was: a store of format 6 is repacked when opened,
/// by any program (its records are the same), and reads the same; nothing is left raw.
#[test]
fn a_store_of_format_6_is_packed_when_opened() {
    let (_d, path) = temp();
    let long: Vec<u8> = (0..4000u32).flat_map(|i| (i % 13).to_le_bytes()).collect();
    let payloads: [&[u8]; 3] = [b"short", &long, b"same"];
    {
        let store = Store::open(&path).unwrap();
        store.append(&payloads, 0, &["x"]).unwrap();
        let chunks = payloads.iter().map(|p| ChunkWrite::New {
            payload: p.to_vec(),
            records: 1,
        });
        let w = write("r", chunks.collect());
        store.write_revisions(3, &[w], 0, &[] as &[&str]).unwrap();
        as_format(&store, 6);
    }
    let raw_size = |path: &Path| {
        let store = Store::open_read_only(path).unwrap();
        let txn = store.begin_read().unwrap();
        let chunks = txn.open_table(CHUNKS).unwrap();
        let v = chunks.get(chunk_key(&long)).unwrap().unwrap();
        v.value().len()
    };
    // A read-only open upgrades it first, with no program's records upgrade.
    assert_eq!(
        raw_size(&path),
        4 + 1 + 4 + lz4_flex::block::compress(&long).len()
    );
    let store = Store::open(&path).unwrap();
    assert_eq!(store.format_version().unwrap(), FORMAT_VERSION);
    let log = store.log_from(1).unwrap();
    let want: Vec<(u64, Vec<u8>)> = (1..).zip(payloads.iter().map(|p| p.to_vec())).collect();
    assert_eq!(log, want);
    assert_eq!(
        store.revision_chunks("r", 3).unwrap(),
        payloads.iter().map(|p| p.to_vec()).collect::<Vec<_>>()
    );
    let problems = store.check(|_, _| Ok(()), |_, _, _, _| Ok(1)).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    // Each value is packed: its codec byte follows the checksum.
    let txn = store.begin_read().unwrap();
    for e in txn.open_table(LOG).unwrap().iter().unwrap() {
        let (_, v) = e.unwrap();
        assert!(v.value()[4] <= 1, "{:?}", v.value());
    }
}

/// The records step of an upgrade: chunks and log entries rewritten by the program, headers
/// listing the new chunks, the strings it interned stored, all in one transaction.
#[test]
fn a_store_of_format_5_has_its_records_rewritten() {
    let (_d, path) = temp();
    write_v5(&path, &[b"old", b"same"]);
    let renaming = Renaming::default();
    let store = Store::open_upgrading(&path, &renaming).unwrap();
    // Two chunks, then two log entries, each reported.
    let reports = renaming.progress.lock().unwrap().clone();
    assert_eq!(reports, [(1, 4), (2, 4), (3, 4), (4, 4)]);
    assert_eq!(store.format_version().unwrap(), FORMAT_VERSION);
    assert_eq!(store.strings().unwrap(), vec!["x", "y", "fact"]);
    let log = store.log_from(1).unwrap();
    assert_eq!(log, vec![(1, b"NEW:2".to_vec()), (2, b"same".to_vec())]);
    assert_eq!(
        store.revision_chunks("r", 1).unwrap(),
        vec![b"NEW:2".to_vec(), b"same".to_vec()]
    );
    assert_eq!(
        store.revisions().unwrap()[0].chunks[0].key,
        chunk_key(b"NEW:2")
    );
    let problems = store.check(|_, _| Ok(()), |_, _, _, _| Ok(1)).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(store.stats().unwrap().strings, 3);
}

/// A record the program cannot read fails the open, naming it, and leaves the store as it was.
#[test]
fn a_record_upgrade_that_fails_changes_nothing() {
    let (_d, path) = temp();
    write_v5(&path, &[b"old", b"broken"]);
    let e = Store::open_upgrading(&path, &Renaming::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("records of format 5 cannot be upgraded")
            && e.to_string().contains("`broken` is not a record"),
        "{e}"
    );
    let txn = Store::open_read_only(&path);
    assert!(
        matches!(txn, Err(Error::FormatVersion { found: 5, .. })),
        "{txn:?}"
    );
}
