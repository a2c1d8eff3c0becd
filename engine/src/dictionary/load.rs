//! Loading a [`Dictionary`] from the store: its strings read by several threads at once, and
//! the index of the loaded ids ([`Loaded`]) made by sorting their hashes.
//!
//! Sorting, not inserting: a hash table filled one string at a time misses the cache on
//! nearly every insert (80 ms on two threads for the 2.3M strings of the large benchmark
//! store, a sixth of a one-event `prr ingest`), where a counting sort by the hash's top bits
//! reads and writes in order and sorts the few entries of each bucket in cache.

use std::hash::BuildHasher;

use super::{Dictionary, Id, Inner, packed};
use crate::bits::Bits;
use crate::error::Error;

/// The hash's top bits that pick a shard: the loaded ids are sorted one shard per thread.
const SHARD_BITS: u32 = 4;
/// The number of shards.
const SORT_SHARDS: usize = 1 << SHARD_BITS;
/// The hash's top bits that [`Loaded`]'s guide tells the entries of.
const GUIDE_BITS: u32 = 16;
/// The guide's slots per shard.
const PER_SHARD: usize = 1 << (GUIDE_BITS - SHARD_BITS);

/// The shard of a string's `hash`.
fn sort_shard_of(hash: u64) -> usize {
    (hash >> (64 - SHARD_BITS)) as usize
}

/// The guide slot of a string's `hash`.
fn guide_of(hash: u64) -> usize {
    (hash >> (64 - GUIDE_BITS)) as usize
}

/// The index of the ids loaded from the store: their strings' hashes with the ids, sorted,
/// and for each value of a hash's top [`GUIDE_BITS`] bits, where its entries start. A lookup
/// searches only the entries that share those bits (about one in 65,536). Empty until a load;
/// the ids interned after it are in [`Inner`]'s hash table.
#[derive(Default)]
pub(super) struct Loaded {
    /// `(hash, id)`, sorted.
    entries: Vec<(u64, Id)>,
    /// The entries whose hashes' top bits are `g` are `entries[guide[g]..guide[g + 1]]`.
    guide: Vec<usize>,
}

impl Loaded {
    /// The id among those whose strings hash to `hash` for which `is` holds.
    pub(super) fn find(&self, hash: u64, is: impl Fn(&Id) -> bool) -> Option<Id> {
        let g = guide_of(hash);
        let (lo, hi) = (*self.guide.get(g)?, *self.guide.get(g + 1)?);
        let bucket = self.entries.get(lo..hi)?;
        let at = bucket.partition_point(|e| e.0 < hash);
        (bucket[at..].iter())
            .take_while(|e| e.0 == hash)
            .map(|e| e.1)
            .find(|id| is(id))
    }
}

impl Dictionary {
    /// Replaces the contents with the persisted strings of ids below `expected` (the ids
    /// handed out), read in `parts` ranges of ids by as many threads: `read(from, to, f)`
    /// hands over the strings with ids in `from..to`, in id order (an id it skips is a hole,
    /// see [`Id`]), and returns their number. On an error of `read`, ids out of order or out
    /// of their range, or a string stored twice (a corrupt store), the dictionary is left
    /// empty.
    pub(crate) fn load_parallel(
        &self,
        expected: u64,
        parts: u64,
        read: impl Fn(u64, u64, &mut dyn FnMut(u64, &str)) -> Result<u64, Error> + Sync,
    ) -> Result<(), Error> {
        let hasher = foldhash::fast::RandomState::default();
        let parts = parts.clamp(1, expected.max(1));
        let bounds: Vec<u64> = (0..=parts).map(|i| expected * i / parts).collect();
        let read = &read;
        let parts: Vec<Result<Part, Error>> = std::thread::scope(|s| {
            let handles: Vec<_> = bounds
                .windows(2)
                .map(|w| {
                    let (from, to, hasher) = (w[0], w[1], &hasher);
                    s.spawn(move || Part::read(from, to, hasher, |f| read(from, to, f)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("dictionary readers do not panic"))
                .collect()
        });
        match parts.into_iter().collect::<Result<Vec<Part>, _>>() {
            Ok(parts) => self.assemble(expected, hasher, parts),
            Err(e) => {
                *self.inner.write().expect("dictionary lock") = Inner::default();
                Err(e)
            }
        }
    }

    /// Replaces the contents with `parts` (of ids `0..expected`, in id order), hashed by
    /// `hasher`; a string stored twice is a corrupt store (the dictionary is left empty).
    fn assemble(
        &self,
        expected: u64,
        hasher: foldhash::fast::RandomState,
        parts: Vec<Part>,
    ) -> Result<(), Error> {
        let mut guard = self.inner.write().expect("dictionary lock");
        let inner = &mut *guard;
        *inner = Inner {
            hasher,
            ..Inner::default()
        };
        let total: usize = parts.iter().map(|p| p.bytes.len()).sum();
        let mut gone = Bits::with_len(expected);
        let mut shards: Vec<Vec<Vec<(u64, Id)>>> = vec![Vec::new(); SORT_SHARDS];
        for part in parts {
            if inner.ends.is_empty() {
                // The first part's strings become the dictionary's, without a copy.
                inner.bytes = part.bytes;
                inner.ends = part.ends;
                inner.bytes.reserve(total - inner.bytes.len());
                inner.ends.reserve(expected as usize - inner.ends.len());
            } else {
                let base = inner.bytes.len() as u64;
                inner.bytes.push_str(&part.bytes);
                inner.ends.extend(part.ends.iter().map(|end| base + end));
            }
            for id in part.gone {
                gone.insert(id);
            }
            for (shard, items) in part.by_shard.into_iter().enumerate() {
                shards[shard].push(items);
            }
        }
        inner.holes = gone.clone();
        inner.gone = gone;
        let (loaded, duplicate) = sort_loaded(&shards, &inner.bytes, &inner.ends);
        match duplicate {
            None => {
                inner.loaded = loaded;
                inner.persisted = inner.ends.len() as u64;
                Ok(())
            }
            Some((first, id)) => {
                *inner = Inner::default();
                Err(Error::Corrupt(format!(
                    "dictionary ids {first} and {id} hold the same string"
                )))
            }
        }
    }
}

/// The index of the loaded ids, `shards` holding each shard's `(hash, id)` in lists (one from
/// each part), sorted one shard per thread; and, of the strings found twice, the pair whose
/// later id is first.
fn sort_loaded(
    shards: &[Vec<Vec<(u64, Id)>>],
    bytes: &str,
    ends: &[u64],
) -> (Loaded, Option<(Id, Id)>) {
    let total: usize = shards.iter().flatten().map(Vec::len).sum();
    let mut entries = vec![(0u64, 0 as Id); total];
    let mut guide = vec![0usize; (1 << GUIDE_BITS) + 1];
    guide[1 << GUIDE_BITS] = total;
    // Each shard's lists, its range of the entries, its guide slots, and where it starts.
    let mut work = Vec::with_capacity(SORT_SHARDS);
    let (mut rest, mut rest_guide, mut base) = (&mut entries[..], &mut guide[..], 0);
    for lists in shards {
        let n: usize = lists.iter().map(Vec::len).sum();
        let (out, r) = std::mem::take(&mut rest).split_at_mut(n);
        let (slots, g) = std::mem::take(&mut rest_guide).split_at_mut(PER_SHARD);
        work.push((lists, out, slots, base));
        (rest, rest_guide, base) = (r, g, base + n);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = SORT_SHARDS.div_ceil(threads.clamp(1, SORT_SHARDS));
    let duplicate = std::thread::scope(|scope| {
        let handles: Vec<_> = (work.chunks_mut(per_thread))
            .map(|chunk| {
                scope.spawn(move || {
                    (chunk.iter_mut())
                        .filter_map(|(lists, out, slots, base)| {
                            sort_shard(lists, out, slots, *base, bytes, ends)
                        })
                        .min_by_key(|pair| pair.1)
                })
            })
            .collect();
        (handles.into_iter())
            .filter_map(|h| h.join().expect("index sorters do not panic"))
            .min_by_key(|pair| pair.1)
    });
    (Loaded { entries, guide }, duplicate)
}

/// Sorts one shard's `lists` of `(hash, id)` into `out`, filling its `guide` slots (its
/// entries start at `base`): counted into buckets by the guide's bits, then each bucket sorted.
/// Returns, of the strings found twice, the pair whose later id is first.
fn sort_shard(
    lists: &[Vec<(u64, Id)>],
    out: &mut [(u64, Id)],
    guide: &mut [usize],
    base: usize,
    bytes: &str,
    ends: &[u64],
) -> Option<(Id, Id)> {
    let bucket = |hash: u64| guide_of(hash) % PER_SHARD;
    // Each bucket's size, then where it starts, then (once filled) where it ends.
    let mut next = vec![0usize; PER_SHARD];
    for (hash, _) in lists.iter().flatten() {
        next[bucket(*hash)] += 1;
    }
    let mut at = 0;
    for (slot, n) in guide.iter_mut().zip(&mut next) {
        *slot = base + at;
        (*n, at) = (at, at + *n);
    }
    for &(hash, id) in lists.iter().flatten() {
        let b = bucket(hash);
        out[next[b]] = (hash, id);
        next[b] += 1;
    }
    let mut start = 0;
    for end in next {
        out[start..end].sort_unstable();
        start = end;
    }
    // Equal strings have equal hashes: only those are compared.
    let mut duplicate: Option<(Id, Id)> = None;
    for same_hash in out.chunk_by(|a, b| a.0 == b.0).filter(|run| run.len() > 1) {
        for (i, (_, a)) in same_hash.iter().enumerate() {
            for (_, b) in &same_hash[i + 1..] {
                if packed(bytes, ends, *a) == packed(bytes, ends, *b) {
                    let pair = (*a.min(b), *a.max(b));
                    if duplicate.is_none_or(|d| pair.1 < d.1) {
                        duplicate = Some(pair);
                    }
                }
            }
        }
    }
    duplicate
}

/// Strings read by one loader, of ids `from..to`: packed as in [`Inner`] (ends relative to the
/// part, one for each id, a hole's empty), the holes, and `(hash, id)` by shard.
struct Part {
    bytes: String,
    ends: Vec<u64>,
    gone: Vec<Id>,
    by_shard: Vec<Vec<(u64, Id)>>,
}

impl Part {
    /// Reads the strings with ids in `from..to` that `each` hands over (ascending).
    fn read(
        from: u64,
        to: u64,
        hasher: &foldhash::fast::RandomState,
        each: impl FnOnce(&mut dyn FnMut(u64, &str)) -> Result<u64, Error>,
    ) -> Result<Part, Error> {
        let expected = (to - from) as usize;
        let mut part = Part {
            bytes: String::new(),
            ends: Vec::with_capacity(expected),
            gone: Vec::new(),
            by_shard: (0..SORT_SHARDS)
                .map(|_| Vec::with_capacity(expected / SORT_SHARDS * 9 / 8))
                .collect(),
        };
        let mut bad = None;
        // The next id: those below it are read (or holes).
        let mut next = from;
        let mut seen = 0u64;
        let Part {
            bytes,
            ends,
            gone,
            by_shard,
        } = &mut part;
        let n = each(&mut |id, s| {
            if id < next || id >= to {
                bad.get_or_insert(id);
                return;
            }
            holes(next..id, gone, ends, bytes.len());
            next = id + 1;
            seen += 1;
            bytes.push_str(s);
            ends.push(bytes.len() as u64);
            let hash = hasher.hash_one(s);
            by_shard[sort_shard_of(hash)].push((hash, id));
        })?;
        if let Some(id) = bad {
            return Err(Error::Corrupt(format!(
                "the dictionary hands over id {id} out of order or outside ids {from}..{to}"
            )));
        }
        if n != seen {
            return Err(Error::Corrupt(format!(
                "the dictionary counts {n} strings with ids {from}..{to}, but hands over {seen}"
            )));
        }
        holes(next..to, &mut part.gone, &mut part.ends, part.bytes.len());
        Ok(part)
    }
}

/// Notes `ids` as holes: in `gone`, and each with an empty string (ending where the strings
/// before it do, at `end`).
fn holes(ids: std::ops::Range<u64>, gone: &mut Vec<Id>, ends: &mut Vec<u64>, end: usize) {
    ends.resize(ends.len() + (ids.end - ids.start) as usize, end as u64);
    gone.extend(ids);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes chosen by hand: shared by different strings, at the edges of shards and guide
    /// buckets; every id is found by its own string, and only equal strings are duplicates.
    #[test]
    fn the_sorted_index_finds_each_id_by_its_hash_and_string() {
        let strings = ["a", "b", "c", "d", "e", "f"];
        let (bytes, ends) = (
            strings.concat(),
            (1..=strings.len() as u64).collect::<Vec<_>>(),
        );
        let hashes = [u64::MAX, 0, 7, 7, 1 << 48, (1 << 60) - 1];
        let mut shards = vec![vec![Vec::new(), Vec::new()]; SORT_SHARDS];
        for (id, hash) in hashes.iter().enumerate() {
            shards[sort_shard_of(*hash)][id % 2].push((*hash, id as Id));
        }
        let (loaded, duplicate) = sort_loaded(&shards, &bytes, &ends);
        assert_eq!(duplicate, None);
        assert!(loaded.entries.is_sorted());
        for (id, (hash, s)) in hashes.iter().zip(strings).enumerate() {
            let found = loaded.find(*hash, |x| packed(&bytes, &ends, *x) == s);
            assert_eq!(found, Some(id as Id), "{s}");
            assert_eq!(
                loaded.find(*hash ^ 1, |x| packed(&bytes, &ends, *x) == s),
                None
            );
        }
        assert_eq!(loaded.find(7, |_| false), None);
        assert_eq!(Loaded::default().find(7, |_| true), None);
        // Ids 1 and 3 hold the same string (and hash); ids 0 and 4 share a hash only.
        let (bytes, ends) = ("abcbe", [1, 2, 3, 4, 5]);
        let mut shards = vec![vec![Vec::new()]; SORT_SHARDS];
        for (id, hash) in [(0, 5), (1, 9), (2, 9), (3, 9), (4, 5)] {
            shards[0][0].push((hash, id));
        }
        let (_, duplicate) = sort_loaded(&shards, bytes, &ends);
        assert_eq!(duplicate, Some((1, 3)));
    }
}
