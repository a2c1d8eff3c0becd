//! Capturing a revision: a stored replica's contents as of the last `Seq`, as chunks to write.
//!
//! After a restore, the dataflow holds only what changed since the base revision of a *based*
//! replica (see [`crate::seeds`]). Its new revision lists the base revision's chunks that
//! those changes leave alone and writes only the chunks they touch, so a capture after a small
//! change reads and writes in proportion to the change. Otherwise (no base, or changes to
//! more than a quarter of the records) the whole contents are encoded; chunks whose contents
//! did not change keep their keys (see [`codec::encode_chunks`]) and are not written again.

use prr_persist::{ChunkWrite, RevisionWrite};

use crate::api::Split;
use crate::codec::{self, ChunkEncoder};
use crate::description::ReplicaDescription;
use crate::error::Error;
use crate::record::Record;
use crate::updates::merge_sorted;

/// What a capture calls as a revision's new chunks are encoded, with the bytes of the chunk
/// just added: it may write the new chunks so far ahead of the header (which turns them into
/// [`ChunkWrite::Stored`]), so that a large replica is never held encoded whole.
pub(crate) type Spill<'a> = &'a mut dyn FnMut(&mut RevisionWrite, usize) -> Result<(), Error>;

/// A revision of a stored replica (not a view) from its contents `split` in the running
/// dataflow, in chunks of at most `per_chunk` records, its new chunks handed to `spill` as
/// they are encoded. Needs no dataflow: a capture in the background runs it on a thread of
/// its own.
pub(crate) fn revision<R: Record>(
    split: Split<R>,
    desc: &ReplicaDescription<R>,
    per_chunk: usize,
    spill: Spill<'_>,
) -> Result<RevisionWrite, Error> {
    if let Some(write) = incremental(&split, desc, per_chunk)? {
        return Ok(write);
    }
    let base = split.base.try_rows()?;
    let rows = if base.is_empty() {
        // Nothing to merge with (a first capture): the changes are the contents, not copied.
        let mut rows = split.changes;
        rows.retain(|(_, d)| *d != 0);
        rows
    } else {
        merge_sorted(base.iter(), split.changes)
    };
    whole(desc, rows, per_chunk, spill)
}

/// A revision of `rows` (sorted, consolidated), encoded whole, each new chunk handed to
/// `spill`.
pub(crate) fn whole<R: Record>(
    desc: &ReplicaDescription<R>,
    rows: Vec<(R, isize)>,
    per_chunk: usize,
    spill: Spill<'_>,
) -> Result<RevisionWrite, Error> {
    let rows: Vec<(R, i64)> = rows.into_iter().map(|(r, d)| (r, d as i64)).collect();
    let mut write = RevisionWrite {
        replica: desc.name().to_string(),
        logic_version: desc.logic_version(),
        description_hash: desc.description_hash(),
        records: rows.len() as u64,
        chunks: Vec::new(),
        overwrite: false,
    };
    let mut encoder = ChunkEncoder::new(per_chunk);
    let mut add = |write: &mut RevisionWrite, chunk: ChunkWrite| {
        let bytes = match &chunk {
            ChunkWrite::New { payload, .. } => payload.len(),
            ChunkWrite::Stored(_) => 0,
        };
        write.chunks.push(chunk);
        spill(write, bytes)
    };
    for row in &rows {
        if let Some(chunk) = encoder.push(row) {
            add(&mut write, chunk)?;
        }
    }
    if let Some(chunk) = encoder.finish() {
        add(&mut write, chunk)?;
    }
    Ok(write)
}

/// The base revision's chunks with those that `split.changes` touch replaced, if the base is
/// a stored revision of this logic and the changes are few.
fn incremental<R: Record>(
    split: &Split<R>,
    desc: &ReplicaDescription<R>,
    per_chunk: usize,
) -> Result<Option<RevisionWrite>, Error> {
    let decoding = split.base.decoding();
    let Some(header) = decoding.header() else {
        return Ok(None);
    };
    let fresh = header.logic_version == desc.logic_version()
        && header.description_hash == desc.description_hash();
    let few = (split.changes.len() as u64).saturating_mul(4) <= header.records;
    if !fresh || !few || header.chunks.is_empty() {
        return Ok(None);
    }
    let mut offsets = Vec::with_capacity(header.chunks.len() + 1);
    offsets.push(0usize);
    for c in &header.chunks {
        offsets.push(offsets.last().copied().unwrap_or(0) + c.records as usize);
    }
    let corrupt = |e: String| Error::Corrupt(e);
    // The changes by the chunk that holds their place: the last chunk whose first record is
    // not after them (the first chunk for those before every chunk).
    let mut touched: Vec<(usize, Vec<(R, isize)>)> = Vec::new();
    for (r, d) in &split.changes {
        let (mut lo, mut hi) = (1, header.chunks.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if decoding.chunk_first(mid, &offsets).map_err(corrupt)? <= *r {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let chunk = lo - 1;
        match touched.last_mut() {
            Some((c, changes)) if *c == chunk => changes.push((r.clone(), *d)),
            _ => touched.push((chunk, vec![(r.clone(), *d)])),
        }
    }
    let mut chunks = Vec::with_capacity(header.chunks.len() + touched.len());
    let mut touched = touched.into_iter().peekable();
    for (i, c) in header.chunks.iter().enumerate() {
        let Some((_, changes)) = touched.next_if(|(t, _)| *t == i) else {
            chunks.push(ChunkWrite::Stored(*c));
            continue;
        };
        let old = decoding.chunk_rows(i, &offsets).map_err(corrupt)?;
        let rows: Vec<(R, i64)> = merge_sorted(old.iter(), changes)
            .into_iter()
            .map(|(r, d)| (r, d as i64))
            .collect();
        chunks.extend(codec::encode_chunks(&rows, per_chunk));
    }
    Ok(Some(RevisionWrite {
        replica: desc.name().to_string(),
        logic_version: desc.logic_version(),
        description_hash: desc.description_hash(),
        records: chunks.iter().map(|c| u64::from(c.records())).sum(),
        chunks,
        overwrite: false,
    }))
}
