//! The notes of chunks written ahead of the headers that list them
//! (`Store::write_chunks_ahead`, in transactions of their own, so that a revision capture of
//! many changed chunks does not hold redb's write lock, and every commit of a source delta
//! behind it, for the whole of its write).
//!
//! Until a header lists it, a chunk written ahead is noted in `chunks_ahead` (key: its content
//! key, no value). [`Store::write_revisions`] removes the notes of the chunks its headers
//! list. The notes left by a capture that never wrote its headers (the process stopped in
//! between) are swept, with the chunks that no header lists, by the next write ahead and by
//! garbage collection; `prr check` does not call such a chunk unlisted. A store without the
//! table has no chunk written ahead.

use std::collections::BTreeSet;

use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};

use crate::Error;

/// `chunks_ahead`: the content keys of chunks written ahead of their headers.
pub(super) const CHUNKS_AHEAD: TableDefinition<u128, ()> = TableDefinition::new("chunks_ahead");

/// Notes `key`, a chunk written ahead of its header, in `txn`.
pub(super) fn note_in(txn: &WriteTransaction, key: u128) -> Result<(), Error> {
    txn.open_table(CHUNKS_AHEAD)?.insert(key, ())?;
    Ok(())
}

/// Forgets the notes of the chunks `keys` (listed by a header now), in `txn`.
pub(super) fn listed_in(
    txn: &WriteTransaction,
    keys: impl IntoIterator<Item = u128>,
) -> Result<(), Error> {
    let mut ahead = txn.open_table(CHUNKS_AHEAD)?;
    if ahead.is_empty()? {
        return Ok(());
    }
    for key in keys {
        ahead.remove(key)?;
    }
    Ok(())
}

/// Forgets every note and returns the chunks noted, in `txn`: those of a capture that
/// stopped before its headers, for the caller to delete unless a header lists them.
pub(super) fn take_in(txn: &WriteTransaction) -> Result<BTreeSet<u128>, Error> {
    let mut ahead = txn.open_table(CHUNKS_AHEAD)?;
    let mut keys = BTreeSet::new();
    if ahead.is_empty()? {
        return Ok(keys);
    }
    for entry in ahead.iter()? {
        keys.insert(entry?.0.value());
    }
    ahead.retain(|_, _| false)?;
    Ok(keys)
}

/// The chunks written ahead of a header that none lists yet, in `txn` (none without the
/// table).
pub(super) fn ahead_in(txn: &ReadTransaction) -> Result<BTreeSet<u128>, Error> {
    let ahead = match txn.open_table(CHUNKS_AHEAD) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeSet::new()),
        Err(e) => return Err(e.into()),
    };
    let mut keys = BTreeSet::new();
    for entry in ahead.iter()? {
        keys.insert(entry?.0.value());
    }
    Ok(keys)
}
