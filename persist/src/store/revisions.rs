//! Revisions (format 3): a header per `(replica, as_of)` that lists its chunks by content key,
//! and the chunks, each stored once in `chunks` under the hash of its bytes and shared by
//! every revision that lists it. A revision written after a small change lists the chunks of
//! the one before it except the few that changed, so it writes only those.

use std::collections::BTreeSet;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, append, callback, chunks_ahead, contained, sealed};
use crate::Error;

/// `revisions`: one row per revision. Key: `(replica, as_of)`. Value: a sealed header, see
/// [`RevisionInfo`].
pub(super) const REVISIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("revisions");
/// `chunks`: revision chunks by content key ([`chunk_key`] of the payload). Value: the sealed
/// payload, opaque here.
pub(super) const CHUNKS: TableDefinition<u128, &[u8]> = TableDefinition::new("chunks");

/// The fixed part of a header: `logic_version u32 | description_hash u64 | records u64 |
/// chunks u32`, then one [`ChunkRef`] of [`CHUNK_REF_BYTES`] per chunk.
const HEADER_BYTES: usize = 24;
/// A header's fixed part: `(logic_version, description_hash, records, chunks)`.
pub(super) type Fixed = (u32, u64, u64, u32);

/// A chunk's entry in a header: `key u128 LE | records u32 LE`.
const CHUNK_REF_BYTES: usize = 20;

/// The content key of a chunk's payload: its 128-bit XXH3 hash.
pub fn chunk_key(payload: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(payload)
}

/// A chunk as a revision lists it: its content key and its number of records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkRef {
    /// [`chunk_key`] of its payload: its key in `chunks`.
    pub key: u128,
    /// The records it holds.
    pub records: u32,
}

/// A stored revision's header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionInfo {
    /// The replica's name.
    pub replica: String,
    /// The revision holds every update at a `Seq <= as_of`.
    pub as_of: u64,
    /// The logic version of the description that computed it.
    pub logic_version: u32,
    /// The hash of the description that computed it.
    pub description_hash: u64,
    /// The number of records.
    pub records: u64,
    /// Its chunks, in order.
    pub chunks: Vec<ChunkRef>,
}

impl RevisionInfo {
    /// The number of chunks.
    pub fn chunk_count(&self) -> u32 {
        self.chunks.len() as u32
    }

    /// The sealed header.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_BYTES + CHUNK_REF_BYTES * self.chunks.len());
        b.extend_from_slice(&self.logic_version.to_le_bytes());
        b.extend_from_slice(&self.description_hash.to_le_bytes());
        b.extend_from_slice(&self.records.to_le_bytes());
        b.extend_from_slice(&self.chunk_count().to_le_bytes());
        for c in &self.chunks {
            b.extend_from_slice(&c.key.to_le_bytes());
            b.extend_from_slice(&c.records.to_le_bytes());
        }
        sealed::header(&self.replica, self.as_of).seal(&b)
    }

    /// Decodes a sealed header, checking its checksum and its length.
    pub(super) fn decode(replica: &str, as_of: u64, sealed_bytes: &[u8]) -> Result<Self, Error> {
        let what = || format!("table revisions: revision ({replica}, {as_of}) header");
        let b = sealed::header(replica, as_of).open(sealed_bytes, what)?;
        let (fixed, refs) = Self::decode_fixed(replica, as_of, b)?;
        if refs.len() != fixed.3 as usize * CHUNK_REF_BYTES {
            return Err(Error::Corrupt(format!(
                "{} lists {} bytes of chunks, expected {} for {} chunks",
                what(),
                refs.len(),
                fixed.3 as usize * CHUNK_REF_BYTES,
                fixed.3
            )));
        }
        let chunks = refs
            .chunks_exact(CHUNK_REF_BYTES)
            .map(|c| ChunkRef {
                key: u128::from_le_bytes(c[..16].try_into().expect("16 bytes")),
                records: u32::from_le_bytes(c[16..].try_into().expect("4 bytes")),
            })
            .collect();
        Ok(RevisionInfo {
            replica: replica.to_string(),
            as_of,
            logic_version: fixed.0,
            description_hash: fixed.1,
            records: fixed.2,
            chunks,
        })
    }

    /// A header's fixed part `(logic_version, description_hash, records, chunks)` and the
    /// bytes after it.
    pub(super) fn decode_fixed<'a>(
        replica: &str,
        as_of: u64,
        b: &'a [u8],
    ) -> Result<(Fixed, &'a [u8]), Error> {
        let Some((fixed, rest)) = b.split_first_chunk::<HEADER_BYTES>() else {
            return Err(Error::Corrupt(format!(
                "revision ({replica}, {as_of}) header has {} bytes, expected at least {HEADER_BYTES}",
                b.len()
            )));
        };
        let le4 = |i: usize| u32::from_le_bytes(fixed[i..i + 4].try_into().expect("4 bytes"));
        let le8 = |i: usize| u64::from_le_bytes(fixed[i..i + 8].try_into().expect("8 bytes"));
        Ok(((le4(0), le8(4), le8(12), le4(20)), rest))
    }
}

/// A chunk of a revision to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkWrite {
    /// New records: stored under their [`chunk_key`] unless a chunk of that key is stored.
    New {
        /// The encoded records.
        payload: Vec<u8>,
        /// How many records it holds.
        records: u32,
    },
    /// A chunk that a stored revision lists already (shared, not written again).
    Stored(ChunkRef),
}

impl ChunkWrite {
    /// The records it holds.
    pub fn records(&self) -> u32 {
        match self {
            ChunkWrite::New { records, .. } => *records,
            ChunkWrite::Stored(c) => c.records,
        }
    }
}

/// One revision to write: its header fields and its chunks, in order.
#[derive(Clone, Debug)]
pub struct RevisionWrite {
    /// The replica's name.
    pub replica: String,
    /// The logic version of the description that computed it.
    pub logic_version: u32,
    /// The hash of the description that computed it.
    pub description_hash: u64,
    /// The number of records in all chunks.
    pub records: u64,
    /// The chunks, in order.
    pub chunks: Vec<ChunkWrite>,
    /// Write every new chunk even where a chunk of the same key is stored: a rebuild replacing
    /// a damaged chunk (whose sound contents have the same key).
    pub overwrite: bool,
}

/// Checks a chunk's checksum; its payload. `whose` names a revision that lists it.
pub(super) fn open_chunk(
    key: u128,
    b: &[u8],
    whose: impl Fn() -> String,
) -> Result<std::borrow::Cow<'_, [u8]>, Error> {
    sealed::chunk(key).open_packed(b, || format!("table chunks: {} (key {key:032x})", whose()))
}

impl Store {
    /// Writes revisions of several replicas, all as of `as_of`, in one transaction, with the
    /// dictionary strings they use that are not yet stored (`strings[i]` gets id
    /// `first_id + i`). A revision that already exists at the same `(replica, as_of)` is
    /// replaced. Returns the headers written.
    pub fn write_revisions<S: AsRef<str>>(
        &self,
        as_of: u64,
        writes: &[RevisionWrite],
        first_id: u64,
        strings: &[S],
    ) -> Result<Vec<RevisionInfo>, Error> {
        let revived = self.staged_strings();
        let written = contained("revisions", || {
            self.write(|txn| write_revisions_in(txn, as_of, writes, first_id, strings, &revived))
                .map_err(append::WriteFailure::into_error)
        })?;
        self.unstage_strings(&revived);
        Ok(written)
    }

    /// Every stored revision's header, by replica then `as_of`.
    pub fn revisions(&self) -> Result<Vec<RevisionInfo>, Error> {
        contained("revisions", || {
            let txn = self.begin_read()?;
            let revs = txn.open_table(REVISIONS)?;
            let mut out = Vec::new();
            for entry in revs.iter()? {
                let (k, v) = entry?;
                let (replica, as_of) = k.value();
                out.push(RevisionInfo::decode(replica, as_of, v.value())?);
            }
            Ok(out)
        })
    }

    /// The header of revision `(replica, as_of)`.
    pub fn revision(&self, replica: &str, as_of: u64) -> Result<RevisionInfo, Error> {
        contained("revisions", || {
            let txn = self.begin_read()?;
            let revs = txn.open_table(REVISIONS)?;
            match revs.get((replica, as_of))? {
                Some(v) => RevisionInfo::decode(replica, as_of, v.value()),
                None => Err(Error::Missing(format!(
                    "no revision of `{replica}` as of seq {as_of}"
                ))),
            }
        })
    }

    /// The chunks of one revision, in order.
    pub fn revision_chunks(&self, replica: &str, as_of: u64) -> Result<Vec<Vec<u8>>, Error> {
        let info = self.revision(replica, as_of)?;
        let mut out = Vec::with_capacity(info.chunks.len());
        self.for_each_chunk_of(&info, 0..info.chunk_count(), |_, c| {
            out.push(c.to_vec());
            Ok::<(), Error>(())
        })?;
        Ok(out)
    }

    /// Calls `f(i, chunk)` for the chunks `range` of revision `(replica, as_of)`, in order,
    /// without copying them. A chunk the header lists that is missing is a corrupt store.
    pub fn for_each_revision_chunk<E: From<Error>>(
        &self,
        replica: &str,
        as_of: u64,
        range: std::ops::Range<u32>,
        f: impl FnMut(u32, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let info = self.revision(replica, as_of)?;
        self.for_each_chunk_of(&info, range, f)
    }

    /// Calls `f(i, chunk)` for the chunks `range` of the revision `info` heads, in order,
    /// without copying them (several ranges can be read by several threads at once). A chunk
    /// out of the header's range, or missing from `chunks`, is a corrupt store.
    pub fn for_each_chunk_of<E: From<Error>>(
        &self,
        info: &RevisionInfo,
        range: std::ops::Range<u32>,
        mut f: impl FnMut(u32, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let (replica, as_of) = (&info.replica, info.as_of);
        contained("chunks", || {
            let txn = self.begin_read()?;
            let chunks = txn.open_table(CHUNKS).map_err(Error::from)?;
            for i in range {
                let whose = || format!("revision ({replica}, {as_of}) chunk {i}");
                let Some(c) = info.chunks.get(i as usize) else {
                    return Err(Error::Corrupt(format!(
                        "table revisions: revision ({replica}, {as_of}) lacks chunk {i} (it lists {})",
                        info.chunks.len()
                    ))
                    .into());
                };
                let Some(v) = chunks.get(c.key).map_err(Error::from)? else {
                    return Err(Error::Corrupt(format!(
                        "table chunks: {} (key {:032x}) is missing",
                        whose(),
                        c.key
                    ))
                    .into());
                };
                let payload = open_chunk(c.key, v.value(), whose)?;
                callback(|| f(i, &payload))?;
            }
            Ok(())
        })
    }

    /// Calls `f(chunk)` for every stored chunk, each once, in key order, without copying it.
    pub fn for_each_chunk<E: From<Error>>(
        &self,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        contained("chunks", || {
            let txn = self.begin_read()?;
            let chunks = txn.open_table(CHUNKS).map_err(Error::from)?;
            for entry in chunks.iter().map_err(Error::from)? {
                let (k, v) = entry.map_err(Error::from)?;
                let payload = open_chunk(k.value(), v.value(), || "a chunk".into())?;
                callback(|| f(&payload))?;
            }
            Ok(())
        })
    }

    /// Deletes revisions, the chunks no other revision lists, and the source-log entries with
    /// `seq <= log_through`, in one transaction. Which ones may go is the caller's decision
    /// (the engine's GC plan).
    pub fn collect_garbage(
        &self,
        revisions: &[(String, u64)],
        log_through: Option<u64>,
    ) -> Result<(), Error> {
        contained("revisions", || {
            self.write(|txn| {
                let mut revs = txn.open_table(REVISIONS)?;
                let mut going = BTreeSet::new();
                for (replica, as_of) in revisions {
                    going.extend(delete_revision_in(&mut revs, replica, *as_of)?);
                }
                drop(revs);
                // With the chunks a capture wrote ahead and never listed (it stopped).
                going.extend(chunks_ahead::take_in(txn)?);
                sweep_chunks_in(txn, going)?;
                if let Some(through) = log_through {
                    let mut log = txn.open_table(super::LOG)?;
                    log.retain_in(..=through, |_, _| false)?;
                }
                Ok(())
            })
            .map_err(append::WriteFailure::into_error)
        })
    }
}

fn write_revisions_in<S: AsRef<str>>(
    txn: &WriteTransaction,
    as_of: u64,
    writes: &[RevisionWrite],
    first_id: u64,
    strings: &[S],
    revived: &std::collections::BTreeMap<u64, String>,
) -> Result<Vec<RevisionInfo>, Error> {
    append::append_in(txn, &[], first_id, strings, revived)?;
    let mut revs = txn.open_table(REVISIONS)?;
    let mut chunks = txn.open_table(CHUNKS)?;
    let mut replaced = BTreeSet::new();
    let mut written = Vec::with_capacity(writes.len());
    for w in writes {
        replaced.extend(delete_revision_in(&mut revs, &w.replica, as_of)?);
        let mut refs = Vec::with_capacity(w.chunks.len());
        for c in &w.chunks {
            refs.push(match c {
                ChunkWrite::Stored(r) => *r,
                ChunkWrite::New { payload, records } => {
                    let key = chunk_key(payload);
                    if w.overwrite || chunks.get(key)?.is_none() {
                        chunks.insert(key, sealed::chunk(key).seal_packed(payload).as_slice())?;
                    }
                    ChunkRef {
                        key,
                        records: *records,
                    }
                }
            });
        }
        let info = RevisionInfo {
            replica: w.replica.clone(),
            as_of,
            logic_version: w.logic_version,
            description_hash: w.description_hash,
            records: w.records,
            chunks: refs,
        };
        revs.insert((w.replica.as_str(), as_of), info.encode().as_slice())?;
        written.push(info);
    }
    drop((revs, chunks));
    sweep_chunks_in(txn, replaced)?;
    chunks_ahead::listed_in(
        txn,
        written.iter().flat_map(|i| i.chunks.iter().map(|c| c.key)),
    )?;
    Ok(written)
}

/// Deletes a revision's header; the keys of the chunks it listed (an unreadable header lists
/// none: its chunks stay until `prr check` reports them unlisted).
fn delete_revision_in(
    revs: &mut redb::Table<(&str, u64), &[u8]>,
    replica: &str,
    as_of: u64,
) -> Result<Vec<u128>, Error> {
    let Some(old) = revs.remove((replica, as_of))? else {
        return Ok(Vec::new());
    };
    Ok(RevisionInfo::decode(replica, as_of, old.value())
        .map(|info| info.chunks.iter().map(|c| c.key).collect())
        .unwrap_or_default())
}

/// Deletes the chunks of `candidates` that no stored revision lists.
fn sweep_chunks_in(txn: &WriteTransaction, mut candidates: BTreeSet<u128>) -> Result<(), Error> {
    if candidates.is_empty() {
        return Ok(());
    }
    let revs = txn.open_table(REVISIONS)?;
    for entry in revs.iter()? {
        let (k, v) = entry?;
        let (replica, as_of) = k.value();
        // A header that does not decode keeps every candidate: nothing it may list goes.
        match RevisionInfo::decode(replica, as_of, v.value()) {
            Ok(info) => {
                for c in &info.chunks {
                    candidates.remove(&c.key);
                }
            }
            Err(_) => return Ok(()),
        }
    }
    drop(revs);
    let mut chunks = txn.open_table(CHUNKS)?;
    for key in candidates {
        chunks.remove(key)?;
    }
    Ok(())
}

/// About how many bytes of chunks one transaction of [`Store::write_chunks_ahead`] writes:
/// a commit that comes during one waits for it.
const BATCH_BYTES: usize = 1 << 20;

impl Store {
    /// Writes the new chunks of `writes` (but those of a write that overwrites) ahead of their
    /// headers, in durable transactions of about 1 MiB each: other writes, such as the commits
    /// of source deltas, go between them, and first when they wait. Each chunk written, or
    /// found stored already, becomes a [`ChunkWrite::Stored`] in `writes`, for
    /// [`Store::write_revisions`] to list.
    ///
    /// Garbage collection must not run between this and the `write_revisions` that lists the
    /// chunks: a chunk found stored is listed by a revision that collection may delete.
    ///
    /// The first transaction also deletes the chunks an earlier capture wrote ahead and never
    /// listed (it stopped). A capture that writes its replicas' chunks one replica at a time
    /// calls this for the first and [`Store::write_more_chunks_ahead`] for the others.
    pub fn write_chunks_ahead(&self, writes: &mut [RevisionWrite]) -> Result<(), Error> {
        self.chunks_ahead(writes, true)
    }

    /// As [`Store::write_chunks_ahead`], but keeping the chunks written ahead so far: more
    /// chunks of the same capture, whose headers are not written yet.
    pub fn write_more_chunks_ahead(&self, writes: &mut [RevisionWrite]) -> Result<(), Error> {
        self.chunks_ahead(writes, false)
    }

    fn chunks_ahead(&self, writes: &mut [RevisionWrite], first: bool) -> Result<(), Error> {
        let mut pending: Vec<&mut ChunkWrite> = (writes.iter_mut())
            .filter(|w| !w.overwrite)
            .flat_map(|w| w.chunks.iter_mut())
            .filter(|c| matches!(c, ChunkWrite::New { .. }))
            .collect();
        let mut sweep_first = first;
        while sweep_first || !pending.is_empty() {
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
            let sweep = std::mem::take(&mut sweep_first);
            // redb's write lock is not fair: the writers that wait go first.
            while self
                .waiting_writers
                .load(std::sync::atomic::Ordering::SeqCst)
                > 0
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            // Every chunk of `pending` is new: one payload per chunk of the batch.
            let payloads: Vec<&[u8]> = (batch.iter())
                .filter_map(|c| match &**c {
                    ChunkWrite::New { payload, .. } => Some(payload.as_slice()),
                    ChunkWrite::Stored(_) => None,
                })
                .collect();
            let keys = contained("chunks", || {
                self.write(|txn| {
                    if sweep {
                        let orphans = chunks_ahead::take_in(txn)?;
                        sweep_chunks_in(txn, orphans)?;
                    }
                    write_ahead_in(txn, &payloads)
                })
                .map_err(append::WriteFailure::into_error)
            })?;
            for (c, key) in batch.into_iter().zip(keys) {
                *c = ChunkWrite::Stored(ChunkRef {
                    key,
                    records: c.records(),
                });
            }
        }
        Ok(())
    }
}

/// Writes the chunks `payloads` not stored yet and notes them as written ahead, in `txn`;
/// returns the keys of all, in order.
fn write_ahead_in(txn: &WriteTransaction, payloads: &[&[u8]]) -> Result<Vec<u128>, Error> {
    let mut chunks = txn.open_table(CHUNKS)?;
    let mut keys = Vec::with_capacity(payloads.len());
    for payload in payloads {
        let key = chunk_key(payload);
        if chunks.get(key)?.is_none() {
            chunks.insert(key, sealed::chunk(key).seal_packed(payload).as_slice())?;
            chunks_ahead::note_in(txn, key)?;
        }
        keys.push(key);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
