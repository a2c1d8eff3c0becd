//! Upgrading a store of an older format to [`FORMAT_VERSION`] (7), in one transaction:
//! - from format 1, every value is sealed with its checksum and the dictionary moves from `dict`
//!   (`&str` values) to `dictionary` (checksummed UTF-8 bytes), as format 2 did;
//! - from formats 1 and 2, each revision's chunks move from `revision_chunks` (keyed by
//!   `(replica, as_of, chunk)`) to `chunks` (keyed by content, stored once), and its header
//!   lists them;
//! - from formats 1 to 3, the dictionary moves from `dictionary` (a value per id) to `strings`
//!   (blocks of consecutive ids, see `strings`);
//! - from format 4, no table changes: format 5 changed the records of `source_events` (their
//!   time received), which the Matrix replicas read in either encoding;
//! - from formats 1 to 5, the records are rewritten by the program that knows them (a
//!   [`RecordUpgrade`], see `records`): format 6 gave every `room_state` record of the Matrix
//!   replicas the facts parsed from its content. Without one, such a store does not open;
//! - from formats 1 to 6, every revision chunk and log entry is stored packed (compressed when
//!   that makes it smaller, see `packed`): format 7. A store of format 6 needs no program for
//!   it;
//! - the format version becomes 7.
//!
//! redb's commit is atomic: a crash during the upgrade leaves the file as it was, and the next
//! open upgrades it again. A value the upgrade reads that fails its checksum fails the open,
//! naming it (the upgrade never seals damaged bytes under a new checksum).

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::revisions::{CHUNKS, ChunkRef, REVISIONS, RevisionInfo, chunk_key};
use super::strings::{Packer, STRINGS};
use super::{
    FORMAT_VERSION, KEY_DICT_LEN, KEY_FORMAT, KEY_LAST_SEQ, LOG, META, Store, contained, le_u64,
    read_meta_u64, sealed, sealed_u64,
};
use crate::Error;

mod records;
#[cfg(test)]
mod tests;

pub use records::{RecordUpgrade, RecordsUnchanged, UpgradeStrings};

/// Format 1's dictionary: the strings as redb `&str` values, without checksums.
const DICT_V1: TableDefinition<u64, &str> = TableDefinition::new("dict");
/// Formats 2 and 3's dictionary: a sealed string per id, dense from 0.
const DICT_V3: TableDefinition<u64, &[u8]> = TableDefinition::new("dictionary");
/// Formats 1 and 2's chunks: by `(replica, as_of, chunk)`; sealed in format 2.
const CHUNKS_V2: TableDefinition<(&str, u64, u32), &[u8]> = TableDefinition::new("revision_chunks");

/// Entries rewritten per batch (a write transaction cannot iterate a table while inserting).
const BATCH: usize = 4096;

/// Whether a store of format `found` is upgraded when opened (given the program's records
/// upgrade, see [`records_for`]).
pub(super) fn upgradable(found: u32) -> bool {
    (1..=6).contains(&found)
}

/// The records upgrade that brings a store of format `found` to [`FORMAT_VERSION`]: the
/// program's `given` one, or, for a store of format 6 (only repacked, its records the same),
/// [`RecordsUnchanged`] when none is given. `None` when the program gave none and the
/// store's records need one.
pub(super) fn records_for(
    found: u32,
    given: Option<&dyn RecordUpgrade>,
) -> Option<&dyn RecordUpgrade> {
    given.or_else(|| (found >= 6).then_some(&RecordsUnchanged as &dyn RecordUpgrade))
}

/// Upgrades `store`, of format `found` (see [`upgradable`]), to [`FORMAT_VERSION`] in one
/// transaction, its records rewritten by `records`.
pub(super) fn upgrade(store: &Store, found: u32, records: &dyn RecordUpgrade) -> Result<(), Error> {
    let what = format!("a store of format {found} while upgrading it");
    contained(&what, || {
        let txn = store.begin_write()?;
        if found == 1 {
            v1_to_v2_in(&txn)?;
        }
        if found <= 2 {
            chunks_by_content_in(&txn, found == 1)?;
        }
        if found <= 3 {
            strings_in_blocks_in(&txn)?;
        }
        records::records_in(&txn, found, records)?;
        txn.open_table(META)?
            .insert(KEY_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())?;
        txn.commit()?;
        Ok(())
    })
}

fn v1_to_v2_in(txn: &WriteTransaction) -> Result<(), Error> {
    {
        let mut meta = txn.open_table(META)?;
        for key in [KEY_LAST_SEQ, KEY_DICT_LEN] {
            let v = match meta.get(key)? {
                Some(v) => le_u64(v.value(), key)?,
                None => return Err(Error::Corrupt(format!("table meta: `{key}` is missing"))),
            };
            meta.insert(key, sealed_u64(key, v).as_slice())?;
        }
    }
    rewrite_log_in(txn, |seq, v| Ok(Some(sealed::log(seq).seal(v))))?;
    {
        let old = txn.open_table(DICT_V1)?;
        let mut dict = txn.open_table(DICT_V3)?;
        for entry in old.iter()? {
            let (k, v) = entry?;
            let id = k.value();
            dict.insert(id, sealed::dict(id).seal(v.value().as_bytes()).as_slice())?;
        }
    }
    txn.delete_table(DICT_V1)?;
    Ok(())
}

/// Rewrites the log entries in `txn`, in batches (a write transaction cannot iterate a table
/// while inserting): `rewrite(seq, value)` gives an entry's new value, `None` to keep it.
fn rewrite_log_in(
    txn: &WriteTransaction,
    mut rewrite: impl FnMut(u64, &[u8]) -> Result<Option<Vec<u8>>, Error>,
) -> Result<(), Error> {
    let mut log = txn.open_table(LOG)?;
    let mut from = 0u64;
    loop {
        let batch = (log.range(from..)?.take(BATCH))
            .map(|e| e.map(|(k, v)| (k.value(), v.value().to_vec())))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(last) = batch.last().map(|(k, _)| *k) else {
            break;
        };
        for (seq, v) in &batch {
            if let Some(new) = rewrite(*seq, v)? {
                log.insert(*seq, new.as_slice())?;
            }
        }
        match last.checked_add(1) {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(())
}

/// Moves every revision's chunks from `revision_chunks` to `chunks` and rewrites its header
/// with their keys and record counts. `plain`: format 1's values, without checksums. A chunk's
/// record count is its payload's first 8 bytes (bincode's `u64 LE` length of the encoded
/// `Vec`, as `docs/design.md` documents the payload).
fn chunks_by_content_in(txn: &WriteTransaction, plain: bool) -> Result<(), Error> {
    let mut revs = txn.open_table(REVISIONS)?;
    let headers = (revs.iter()?)
        .map(|e| e.map(|(k, v)| (k.value().0.to_string(), k.value().1, v.value().to_vec())))
        .collect::<Result<Vec<_>, _>>()?;
    let old = txn.open_table(CHUNKS_V2)?;
    let mut chunks = txn.open_table(CHUNKS)?;
    for (replica, as_of, v) in headers {
        let name = || format!("table revisions: revision ({replica}, {as_of}) header");
        let b = if plain {
            v.as_slice()
        } else {
            sealed::header(&replica, as_of).open(&v, name)?
        };
        let ((logic_version, description_hash, records, n), rest) =
            RevisionInfo::decode_fixed(&replica, as_of, b)?;
        if !rest.is_empty() {
            return Err(Error::Corrupt(format!(
                "{} has {} bytes, expected 24",
                name(),
                b.len()
            )));
        }
        let mut refs = Vec::with_capacity(n as usize);
        for i in 0..n {
            let what = || format!("table revision_chunks: revision ({replica}, {as_of}) chunk {i}");
            let Some(raw) = old.get((replica.as_str(), as_of, i))? else {
                return Err(Error::Corrupt(format!("{} is missing", what())));
            };
            let raw = raw.value().to_vec();
            let payload = if plain {
                raw.as_slice()
            } else {
                sealed::chunk_v2(&replica, as_of, i).open(&raw, what)?
            };
            let count = (payload.first_chunk::<8>())
                .map(|c| u64::from_le_bytes(*c))
                .and_then(|c| u32::try_from(c).ok())
                .ok_or_else(|| Error::Corrupt(format!("{} has no record count", what())))?;
            let key = chunk_key(payload);
            if chunks.get(key)?.is_none() {
                chunks.insert(key, sealed::chunk(key).seal(payload).as_slice())?;
            }
            refs.push(ChunkRef {
                key,
                records: count,
            });
        }
        let info = RevisionInfo {
            replica: replica.clone(),
            as_of,
            logic_version,
            description_hash,
            records,
            chunks: refs,
        };
        revs.insert((replica.as_str(), as_of), info.encode().as_slice())?;
    }
    drop((old, chunks, revs));
    txn.delete_table(CHUNKS_V2)?;
    Ok(())
}

/// Moves format 3's dictionary, a sealed string per id, into blocks of `strings`, checking
/// each string and that the ids are dense up to `dict_len`.
fn strings_in_blocks_in(txn: &WriteTransaction) -> Result<(), Error> {
    let dict_len = read_meta_u64(&txn.open_table(META)?, KEY_DICT_LEN)?;
    {
        let old = txn.open_table(DICT_V3)?;
        let mut new = txn.open_table(STRINGS)?;
        let mut packer = Packer::default();
        let mut next = 0u64;
        for entry in old.iter()? {
            let (k, v) = entry?;
            let id = k.value();
            if id != next {
                return Err(Error::Corrupt(format!(
                    "table dictionary: id {id} follows id {}: ids must be dense",
                    next as i64 - 1
                )));
            }
            let payload =
                sealed::dict(id).open(v.value(), || format!("table dictionary: id {id}"))?;
            let s = std::str::from_utf8(payload).map_err(|e| {
                Error::Corrupt(format!("table dictionary: id {id} is not UTF-8: {e}"))
            })?;
            packer.push(id, Some(s));
            next = id + 1;
        }
        for (first, value) in packer.finish() {
            new.insert(first, value.as_slice())?;
        }
        if next != dict_len {
            return Err(Error::Corrupt(format!(
                "table dictionary: holds {next} strings, meta `dict_len` says {dict_len}"
            )));
        }
    }
    txn.delete_table(DICT_V3)?;
    Ok(())
}
