//! Chunks written ahead of the headers that list them, in transactions of their own, so that
//! a revision capture of many changed chunks does not hold redb's write lock (and every
//! commit of a source delta behind it) for the whole of its write.
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

use super::revisions::{CHUNKS, ChunkRef, ChunkWrite, REVISIONS, RevisionInfo, RevisionWrite};
use super::{Store, append, chunk_key, contained, sealed};
use crate::Error;

/// `chunks_ahead`: the content keys of chunks written ahead of their headers.
pub(super) const CHUNKS_AHEAD: TableDefinition<u128, ()> = TableDefinition::new("chunks_ahead");

/// About how many bytes of chunks one transaction of [`Store::write_chunks_ahead`] writes:
/// a commit that comes during one waits for it.
const BATCH_BYTES: usize = 1 << 20;

impl Store {
    /// Writes the new chunks of `writes` (but those of a write that overwrites) ahead of their
    /// headers, in durable transactions of about 1 MiB each: other writes, such as the commits
    /// of source deltas, go between them, and first when they wait. Each chunk written, or found stored already, becomes
    /// a [`ChunkWrite::Stored`] in `writes`, for [`Store::write_revisions`] to list.
    ///
    /// Garbage collection must not run between this and the `write_revisions` that lists the
    /// chunks: a chunk found stored is listed by a revision that collection may delete.
    pub fn write_chunks_ahead(&self, writes: &mut [RevisionWrite]) -> Result<(), Error> {
        let mut pending: Vec<&mut ChunkWrite> = (writes.iter_mut())
            .filter(|w| !w.overwrite)
            .flat_map(|w| w.chunks.iter_mut())
            .filter(|c| matches!(c, ChunkWrite::New { .. }))
            .collect();
        let mut first = true;
        while first || !pending.is_empty() {
            let mut bytes = 0;
            let take = (pending.iter())
                .take_while(|c| {
                    let fits = bytes < BATCH_BYTES;
                    if let ChunkWrite::New { payload, .. } = c {
                        bytes += payload.len();
                    }
                    fits
                })
                .count();
            let batch: Vec<&mut ChunkWrite> = pending.drain(..take).collect();
            let sweep = std::mem::take(&mut first);
            // redb's write lock is not fair: the writers that wait go first.
            while self
                .waiting_writers
                .load(std::sync::atomic::Ordering::SeqCst)
                > 0
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            contained("chunks", || {
                self.write(|txn| {
                    if sweep {
                        sweep_ahead_in(txn)?;
                    }
                    write_ahead_in(txn, &batch)
                })
                .map_err(append::WriteFailure::into_error)
            })?;
            for c in batch {
                if let ChunkWrite::New { payload, records } = c {
                    *c = ChunkWrite::Stored(ChunkRef {
                        key: chunk_key(payload),
                        records: *records,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Writes the chunks of `batch` not stored yet and notes them as written ahead, in `txn`.
fn write_ahead_in(txn: &WriteTransaction, batch: &[&mut ChunkWrite]) -> Result<(), Error> {
    let mut chunks = txn.open_table(CHUNKS)?;
    let mut ahead = txn.open_table(CHUNKS_AHEAD)?;
    for c in batch {
        let ChunkWrite::New { payload, .. } = &**c else {
            continue;
        };
        let key = chunk_key(payload);
        if chunks.get(key)?.is_none() {
            chunks.insert(key, sealed::chunk(key).seal(payload).as_slice())?;
            ahead.insert(key, ())?;
        }
    }
    Ok(())
}

/// Forgets the notes of the chunks `refs` (listed by a header now), in `txn`.
pub(super) fn listed_in<'a>(
    txn: &WriteTransaction,
    refs: impl IntoIterator<Item = &'a ChunkRef>,
) -> Result<(), Error> {
    let mut ahead = txn.open_table(CHUNKS_AHEAD)?;
    if ahead.is_empty()? {
        return Ok(());
    }
    for r in refs {
        ahead.remove(r.key)?;
    }
    Ok(())
}

/// Deletes the chunks written ahead that no header lists (a capture stopped before its
/// headers) and forgets every note, in `txn`. A header that does not decode keeps them all.
pub(super) fn sweep_ahead_in(txn: &WriteTransaction) -> Result<(), Error> {
    let mut ahead = txn.open_table(CHUNKS_AHEAD)?;
    if ahead.is_empty()? {
        return Ok(());
    }
    let mut orphans = BTreeSet::new();
    for entry in ahead.iter()? {
        orphans.insert(entry?.0.value());
    }
    ahead.retain(|_, _| false)?;
    drop(ahead);
    let revs = txn.open_table(REVISIONS)?;
    for entry in revs.iter()? {
        let (k, v) = entry?;
        let (replica, as_of) = k.value();
        match RevisionInfo::decode(replica, as_of, v.value()) {
            Ok(info) => info.chunks.iter().for_each(|c| {
                orphans.remove(&c.key);
            }),
            Err(_) => return Ok(()),
        }
    }
    drop(revs);
    let mut chunks = txn.open_table(CHUNKS)?;
    for key in orphans {
        chunks.remove(key)?;
    }
    Ok(())
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

#[cfg(test)]
mod tests;
