//! The dictionary's table (format 4): interned strings packed in blocks of consecutive ids, so
//! that millions of them load as a few thousand values, each checked by one checksum.
//!
//! `strings`: key = a block's first id; value = sealed `count u32 LE | live u32 LE | count
//! entries`, one per id from the key on, each a LEB128 varint `v`: 0 for an id whose string was
//! collected (a hole), else the string's length + 1 followed by its UTF-8 bytes. `live` counts
//! the entries that are not holes. Blocks ascend without overlapping; ids between blocks, and
//! from the last block's end up to `dict_len`, are holes too.
//!
//! Blocks are cut at [`BLOCK`] bytes of entries, so that each fits in one 4 KiB page of redb
//! (larger values take pages of a power-of-two size, and rewriting one rewrites its
//! neighbours in the same page). A commit's new strings fill up the last block (rewritten
//! whole) and go on in new blocks; [`collect_in`] repacks every block.

use std::collections::BTreeMap;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::sealed;
use crate::Error;

/// `strings`: the dictionary (see the module's documentation).
pub(super) const STRINGS: TableDefinition<u64, &[u8]> = TableDefinition::new("strings");

/// A block takes entries while they fit in this many bytes (a block of one longer string is
/// larger): with its header, checksum and redb's own, one 4 KiB page.
const BLOCK: usize = 3_900;
/// A collection ends a block at a run of this many holes (each would cost a byte).
const HOLE_RUN: usize = 64;

/// The context of the block that starts at `first`.
fn context(first: u64) -> sealed::Context {
    let mut c = sealed::Context::new("strings");
    c.u64(first);
    c
}

/// `first`, a block's first id, if it does not overlap the block before it, ending at `end`.
fn after(first: u64, end: u64) -> Result<u64, Error> {
    if first < end {
        return Err(corrupt(
            first,
            &format!("overlaps the block ending at id {end}"),
        ));
    }
    Ok(first)
}

fn corrupt(first: u64, what: &str) -> Error {
    Error::Corrupt(format!("table strings: block at id {first} {what}"))
}

/// A block being written: its entries' bytes and counts.
#[derive(Default)]
struct BlockWriter {
    body: Vec<u8>,
    count: u32,
    live: u32,
}

impl BlockWriter {
    fn push(&mut self, s: Option<&str>) {
        match s {
            None => self.body.push(0),
            Some(s) => {
                varint(&mut self.body, s.len() as u64 + 1);
                self.body.extend_from_slice(s.as_bytes());
                self.live += 1;
            }
        }
        self.count += 1;
    }

    /// Whether `s` still fits (an empty block takes anything).
    fn fits(&self, s: Option<&str>) -> bool {
        self.count == 0 || self.body.len() + s.map_or(1, |s| s.len() + 5) <= BLOCK
    }

    /// The sealed value of this block, starting at `first`.
    fn seal(&self, first: u64) -> Vec<u8> {
        let mut payload = Vec::with_capacity(8 + self.body.len());
        payload.extend_from_slice(&self.count.to_le_bytes());
        payload.extend_from_slice(&self.live.to_le_bytes());
        payload.extend_from_slice(&self.body);
        context(first).seal(&payload)
    }
}

/// Blocks being written for consecutive ids: [`Packer::push`] starts a new block when an
/// entry would not fit, or when its id does not follow the last one.
#[derive(Default)]
pub(super) struct Packer {
    blocks: Vec<(u64, Vec<u8>)>,
    current: Option<(u64, BlockWriter)>,
}

impl Packer {
    /// Adds the entry of `id` (`None`: a hole).
    pub(super) fn push(&mut self, id: u64, s: Option<&str>) {
        let follows = (self.current.as_ref())
            .is_some_and(|(first, w)| first + u64::from(w.count) == id && w.fits(s));
        if !follows {
            self.cut();
        }
        let (_, w) = self
            .current
            .get_or_insert_with(|| (id, BlockWriter::default()));
        w.push(s);
    }

    /// Whether a block is being written.
    pub(super) fn is_open(&self) -> bool {
        self.current.is_some()
    }

    /// Ends the current block (one of holes only is dropped).
    pub(super) fn cut(&mut self) {
        if let Some((first, w)) = self.current.take()
            && w.live > 0
        {
            self.blocks.push((first, w.seal(first)));
        }
    }

    /// The sealed blocks, by first id.
    pub(super) fn finish(mut self) -> Vec<(u64, Vec<u8>)> {
        self.cut();
        self.blocks
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Opens the sealed block at `first` and calls `f(id, string)` for each of its entries
/// (`None`: a hole), checking its checksum, its entries and their UTF-8. Returns the end of
/// its ids (`first + count`) and its number of live strings.
pub(super) fn read_block<'a>(
    first: u64,
    sealed: &'a [u8],
    mut f: impl FnMut(u64, Option<&'a str>),
) -> Result<(u64, u32), Error> {
    let payload = context(first).open(sealed, || format!("table strings: block at id {first}"))?;
    let header = |at: usize| {
        (payload.get(at..at + 4))
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| corrupt(first, "is too short for its header"))
    };
    let (count, live) = (header(0)?, header(4)?);
    let mut at = 8;
    let mut seen = 0u32;
    for i in 0..u64::from(count) {
        let id = first + i;
        let v = read_varint(payload, &mut at)
            .ok_or_else(|| corrupt(first, &format!("ends inside entry {id}")))?;
        if v == 0 {
            f(id, None);
            continue;
        }
        let end = (usize::try_from(v - 1).ok())
            .and_then(|n| at.checked_add(n))
            .filter(|end| *end <= payload.len())
            .ok_or_else(|| corrupt(first, &format!("ends inside the string of id {id}")))?;
        let s = std::str::from_utf8(&payload[at..end])
            .map_err(|e| corrupt(first, &format!("holds id {id}, not UTF-8: {e}")))?;
        at = end;
        seen += 1;
        f(id, Some(s));
    }
    if at != payload.len() {
        return Err(corrupt(first, "has bytes after its last entry"));
    }
    if seen != live {
        return Err(corrupt(
            first,
            &format!("holds {seen} strings, its header says {live}"),
        ));
    }
    Ok((first + u64::from(count), live))
}

/// Calls `f(id, string)` for the strings with ids in `from..to`, in id order, skipping holes;
/// returns their number. Blocks that overlap are a corrupt store.
pub(super) fn for_each_in<T: ReadableTable<u64, &'static [u8]>>(
    table: &T,
    from: u64,
    to: u64,
    mut f: impl FnMut(u64, &str),
) -> Result<u64, Error> {
    if from >= to {
        return Ok(0);
    }
    // The block holding `from`, if one starts before it.
    let start = match table.range(..=from)?.next_back() {
        Some(e) => e?.0.value(),
        None => from,
    };
    let mut n = 0u64;
    let mut end = start;
    for entry in table.range(start..to)? {
        let (k, v) = entry?;
        let first = after(k.value(), end)?;
        // `f` is the caller's: a panic in it is its own, not a damaged file's.
        (end, _) = super::callback(|| {
            read_block(first, v.value(), |id, s| {
                if let Some(s) = s.filter(|_| id >= from && id < to) {
                    n += 1;
                    f(id, s);
                }
            })
        })?;
    }
    Ok(n)
}

/// The number of strings stored (holes not counted), from the blocks' headers.
pub(super) fn live_count<T: ReadableTable<u64, &'static [u8]>>(table: &T) -> Result<u64, Error> {
    let mut n = 0u64;
    for entry in table.iter()? {
        let (k, v) = entry?;
        let payload = context(k.value()).open(v.value(), || {
            format!("table strings: block at id {}", k.value())
        })?;
        let live = (payload.get(4..8))
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| corrupt(k.value(), "is too short for its header"))?;
        n += u64::from(live);
    }
    Ok(n)
}

/// The entries of the block at `first`, owned.
fn owned_block(first: u64, sealed: &[u8]) -> Result<Vec<Option<String>>, Error> {
    let mut entries = Vec::new();
    read_block(first, sealed, |_, s| entries.push(s.map(str::to_string)))?;
    Ok(entries)
}

fn write_block(
    table: &mut Table<'_, u64, &'static [u8]>,
    first: u64,
    entries: &[Option<String>],
) -> Result<(), Error> {
    let mut w = BlockWriter::default();
    for e in entries {
        w.push(e.as_deref());
    }
    table.insert(first, w.seal(first).as_slice())?;
    Ok(())
}

/// Writes new strings (`strings[i]` gets id `first_id + i`, `first_id` being the number of
/// ids handed out so far) and puts back collected ones (`revived`: ids below `first_id`
/// whose strings return), in `txn`.
pub(super) fn put_in<S: AsRef<str>>(
    txn: &WriteTransaction,
    first_id: u64,
    strings: &[S],
    revived: &BTreeMap<u64, String>,
) -> Result<(), Error> {
    let mut table = txn.open_table(STRINGS)?;
    let mut revived = revived.iter().peekable();
    while let Some((&id, s)) = revived.next() {
        if id >= first_id {
            return Err(Error::Corrupt(format!(
                "a collected string put back at id {id}, but only {first_id} ids were handed out"
            )));
        }
        let block = match table.range(..=id)?.next_back() {
            Some(e) => {
                let (k, v) = e?;
                Some((k.value(), owned_block(k.value(), v.value())?))
            }
            None => None,
        };
        match block {
            Some((first, mut entries)) if id < first + entries.len() as u64 => {
                entries[(id - first) as usize] = Some(s.clone());
                // Others of the same block, in one rewrite.
                while let Some((&next, s)) =
                    revived.next_if(|(next, _)| **next < first + entries.len() as u64)
                {
                    entries[(next - first) as usize] = Some(s.clone());
                }
                write_block(&mut table, first, &entries)?;
            }
            // Between blocks: a block of its own.
            _ => write_block(&mut table, id, &[Some(s.clone())])?,
        }
    }
    if strings.is_empty() {
        return Ok(());
    }
    // The last block, if the new ids follow it, is filled up first.
    let mut packer = Packer::default();
    if let Some((k, v)) = table.last()? {
        let first = k.value();
        let entries = owned_block(first, v.value())?;
        if first + entries.len() as u64 == first_id {
            for (i, e) in entries.iter().enumerate() {
                packer.push(first + i as u64, e.as_deref());
            }
        }
    }
    for (i, s) in strings.iter().enumerate() {
        packer.push(first_id + i as u64, Some(s.as_ref()));
    }
    for (first, value) in packer.finish() {
        table.insert(first, value.as_slice())?;
    }
    Ok(())
}

/// Rewrites the table keeping only the strings for which `live(id)` holds, repacked into
/// blocks of up to [`BLOCK`] bytes; returns the ids collected (stored before, holes
/// now), ascending.
pub(super) fn collect_in(
    txn: &WriteTransaction,
    live: &dyn Fn(u64) -> bool,
) -> Result<Vec<u64>, Error> {
    let mut table = txn.open_table(STRINGS)?;
    let mut collected = Vec::new();
    let mut packer = Packer::default();
    // Holes in a row within the current block: a long run ends it.
    let mut holes = 0usize;
    let mut end = 0u64;
    for entry in table.iter()? {
        let (k, v) = entry?;
        let first = after(k.value(), end)?;
        (end, _) = read_block(first, v.value(), |id, s| {
            let s = match s {
                Some(s) if live(id) => Some(s),
                Some(_) => {
                    collected.push(id);
                    None
                }
                None => None,
            };
            match s {
                Some(s) => {
                    holes = 0;
                    packer.push(id, Some(s));
                }
                None if packer.is_open() && holes + 1 < HOLE_RUN => {
                    holes += 1;
                    packer.push(id, None);
                }
                None => {
                    holes = 0;
                    packer.cut();
                }
            }
        })?;
    }
    let blocks = packer.finish();
    table.retain(|_, _| false)?;
    for (first, value) in blocks {
        table.insert(first, value.as_slice())?;
    }
    Ok(collected)
}

#[cfg(test)]
mod tests;
