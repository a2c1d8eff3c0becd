//! Upgrading a store of format 1 to format 2, in one transaction: every value is sealed with
//! its checksum, the dictionary moves from `dict` (`&str` values) to `dictionary` (checksummed
//! UTF-8 bytes), and the format version becomes 2. redb's commit is atomic: a crash during the
//! upgrade leaves the file as it was, of format 1, and the next open upgrades it again.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{
    CHUNKS, DICT, FORMAT_VERSION, KEY_DICT_LEN, KEY_FORMAT, KEY_LAST_SEQ, LOG, META, REVISIONS,
    RevisionInfo, Store, contained, le_u64, sealed, sealed_u64,
};
use crate::Error;

/// Format 1's dictionary: the strings as redb `&str` values, without checksums.
const DICT_V1: TableDefinition<u64, &str> = TableDefinition::new("dict");

/// Entries rewritten per batch (a write transaction cannot iterate a table while inserting).
const BATCH: usize = 4096;

/// Upgrades `store`, of format 1, to [`FORMAT_VERSION`] in one transaction.
pub(super) fn from_v1(store: &Store) -> Result<(), Error> {
    contained("a store of format 1 while upgrading it", || {
        let txn = store.begin_write()?;
        upgrade_in(&txn)?;
        txn.commit()?;
        Ok(())
    })
}

fn upgrade_in(txn: &WriteTransaction) -> Result<(), Error> {
    {
        let mut meta = txn.open_table(META)?;
        for key in [KEY_LAST_SEQ, KEY_DICT_LEN] {
            let v = match meta.get(key)? {
                Some(v) => le_u64(v.value(), key)?,
                None => return Err(Error::Corrupt(format!("table meta: `{key}` is missing"))),
            };
            meta.insert(key, sealed_u64(key, v).as_slice())?;
        }
        meta.insert(KEY_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())?;
    }
    {
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
                log.insert(*seq, sealed::log(*seq).seal(v).as_slice())?;
            }
            match last.checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
    }
    {
        let old = txn.open_table(DICT_V1)?;
        let mut dict = txn.open_table(DICT)?;
        for entry in old.iter()? {
            let (k, v) = entry?;
            let id = k.value();
            dict.insert(id, sealed::dict(id).seal(v.value().as_bytes()).as_slice())?;
        }
    }
    txn.delete_table(DICT_V1)?;
    {
        let mut revs = txn.open_table(REVISIONS)?;
        let headers = (revs.iter()?)
            .map(|e| e.map(|(k, v)| (k.value().0.to_string(), k.value().1, v.value().to_vec())))
            .collect::<Result<Vec<_>, _>>()?;
        for (replica, as_of, v) in headers {
            let info = RevisionInfo::decode_plain(&replica, as_of, &v)?;
            revs.insert((replica.as_str(), as_of), info.encode().as_slice())?;
        }
    }
    {
        let mut chunks = txn.open_table(CHUNKS)?;
        let mut from: Option<(String, u64, u32)> = None;
        loop {
            let batch = {
                let range = match &from {
                    Some((r, a, i)) => chunks.range((r.as_str(), *a, *i)..)?,
                    None => chunks.range::<(&str, u64, u32)>(..)?,
                };
                (range.skip(usize::from(from.is_some())).take(BATCH))
                    .map(|e| {
                        e.map(|(k, v)| {
                            let (r, a, i) = k.value();
                            ((r.to_string(), a, i), v.value().to_vec())
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?
            };
            let Some(last) = batch.last().map(|(k, _)| k.clone()) else {
                break;
            };
            for ((r, a, i), v) in &batch {
                let sealed = sealed::chunk(r, *a, *i).seal(v);
                chunks.insert((r.as_str(), *a, *i), sealed.as_slice())?;
            }
            from = Some(last);
        }
    }
    Ok(())
}
