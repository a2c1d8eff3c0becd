//! Interned identifiers: strings mapped to dense integer ids.

use std::hash::BuildHasher;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use hashbrown::HashTable;

use crate::error::Error;

/// An interned string's id. Ids are dense, start at 0, and are never reused: once a store has
/// persisted an id, it means the same string forever.
pub type Id = u64;

/// The strings, packed: string `i` is `bytes[ends[i - 1]..ends[i]]` (from 0 for the first).
/// One allocation for all of them instead of one each: a store with millions of identifiers
/// loads, and is dropped, in a fraction of the time, and takes about 60 bytes less per string.
#[derive(Default)]
struct Inner {
    bytes: String,
    ends: Vec<u64>,
    /// The ids, hashed by their strings.
    index: HashTable<Id>,
    /// Seeded per process: identifiers chosen to collide cannot be prepared in advance.
    hasher: foldhash::fast::RandomState,
    /// Ids `>= persisted` are not yet written to the store.
    persisted: u64,
}

/// String `id` of the packed `bytes` (see [`Inner`]).
fn packed<'a>(bytes: &'a str, ends: &[u64], id: Id) -> &'a str {
    let i = id as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    &bytes[start..ends[i] as usize]
}

impl Inner {
    fn str(&self, id: Id) -> &str {
        packed(&self.bytes, &self.ends, id)
    }

    fn find(&self, s: &str, hash: u64) -> Option<Id> {
        self.index.find(hash, |id| self.str(*id) == s).copied()
    }

    /// Appends `s` with the next id (the caller knows it is not interned).
    fn push(&mut self, s: &str, hash: u64) -> Id {
        let id = self.ends.len() as Id;
        self.bytes.push_str(s);
        self.ends.push(self.bytes.len() as u64);
        let Inner {
            index,
            bytes,
            ends,
            hasher,
            ..
        } = self;
        // Growing the table rehashes every id by its string.
        index.insert_unique(hash, id, |id| hasher.hash_one(packed(bytes, ends, *id)));
        id
    }
}

/// A thread-safe string interner shared by the host and the dataflow workers.
///
/// The dataflow works on integer ids (records are small fixed-size tuples); strings enter and
/// leave at the edges. The runtime writes new ids to the store in the same transaction as the
/// source delta that first uses them.
#[derive(Clone, Default)]
pub struct Dictionary {
    inner: Arc<RwLock<Inner>>,
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dictionary({} strings)", self.len())
    }
}

/// A read lock on a [`Dictionary`]: many strings read without locking each time. Do not intern
/// through the same dictionary while holding it.
pub struct Strings<'a> {
    inner: RwLockReadGuard<'a, Inner>,
}

impl Strings<'_> {
    /// The string of `id` (see [`Dictionary::get`]).
    pub fn get(&self, id: Id) -> &str {
        self.inner.str(id)
    }
}

impl Dictionary {
    /// An empty dictionary.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `s`, interning it if it is new.
    pub fn intern(&self, s: &str) -> Id {
        let hash = {
            let inner = self.inner.read().expect("dictionary lock");
            let hash = inner.hasher.hash_one(s);
            if let Some(id) = inner.find(s, hash) {
                return id;
            }
            hash
        };
        let mut inner = self.inner.write().expect("dictionary lock");
        if let Some(id) = inner.find(s, hash) {
            return id;
        }
        inner.push(s, hash)
    }

    /// The id of `s`, if it is interned.
    pub fn lookup(&self, s: &str) -> Option<Id> {
        let inner = self.inner.read().expect("dictionary lock");
        let hash = inner.hasher.hash_one(s);
        inner.find(s, hash)
    }

    /// The string of an id, copied (see [`Dictionary::with`] and [`Dictionary::strings`] to read
    /// without copying). Panics on an id that was never handed out: ids only come from this
    /// dictionary.
    pub fn get(&self, id: Id) -> String {
        self.inner
            .read()
            .expect("dictionary lock")
            .str(id)
            .to_string()
    }

    /// Calls `f` with the string of `id`, without copying it.
    pub fn with<T>(&self, id: Id, f: impl FnOnce(&str) -> T) -> T {
        let inner = self.inner.read().expect("dictionary lock");
        f(inner.str(id))
    }

    /// A read lock for reading many strings without copying them.
    pub fn strings(&self) -> Strings<'_> {
        Strings {
            inner: self.inner.read().expect("dictionary lock"),
        }
    }

    /// The number of interned strings.
    pub fn len(&self) -> usize {
        self.inner.read().expect("dictionary lock").ends.len()
    }

    /// Whether no string is interned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The strings interned since the last [`Dictionary::mark_persisted`], with their ids.
    pub(crate) fn unpersisted(&self) -> (Id, Vec<String>) {
        let inner = self.inner.read().expect("dictionary lock");
        let from = inner.persisted;
        let strings = (from..inner.ends.len() as Id)
            .map(|id| inner.str(id).to_string())
            .collect();
        (from, strings)
    }

    /// Records that every id below `upto` is in the store.
    pub(crate) fn mark_persisted(&self, upto: Id) {
        let mut inner = self.inner.write().expect("dictionary lock");
        inner.persisted = inner.persisted.max(upto);
    }

    /// Replaces the contents with `expected` persisted strings, read in `parts` ranges of ids
    /// by as many threads: `read(from, to, f)` hands over the strings with ids in `from..to`,
    /// in id order, and returns their number. On an error of `read`, a range that does not
    /// hold as many strings as its ids, or a string stored twice (a corrupt store), the
    /// dictionary is left empty.
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
                    s.spawn(move || {
                        Part::read((to - from) as usize, hasher, |f| {
                            let n = read(from, to, f)?;
                            if n != to - from {
                                return Err(Error::Corrupt(format!(
                                    "the dictionary has {n} strings with ids {from}..{to}, \
                                     expected {}",
                                    to - from
                                )));
                            }
                            Ok(())
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("dictionary readers do not panic"))
                .collect()
        });
        match parts.into_iter().collect::<Result<Vec<Part>, _>>() {
            Ok(parts) => self.assemble(expected as usize, hasher, parts),
            Err(e) => {
                *self.inner.write().expect("dictionary lock") = Inner::default();
                Err(e)
            }
        }
    }

    /// Replaces the contents with `parts`, in id order, hashed by `hasher`; a string stored
    /// twice is a corrupt store (the dictionary is left empty).
    fn assemble(
        &self,
        expected: usize,
        hasher: foldhash::fast::RandomState,
        parts: Vec<Part>,
    ) -> Result<(), Error> {
        let mut inner = self.inner.write().expect("dictionary lock");
        *inner = Inner {
            hasher,
            ..Inner::default()
        };
        let mut result = Ok(());
        {
            let total: usize = parts.iter().map(|p| p.bytes.len()).sum();
            inner.bytes.reserve(total);
            inner.ends.reserve(expected);
            // Sized once: growing would hash every string again at each doubling.
            inner.index.reserve(expected, |_| 0);
            for part in &parts {
                let base = inner.bytes.len() as u64;
                inner.bytes.push_str(&part.bytes);
                inner.ends.extend(part.ends.iter().map(|e| base + e));
            }
            let mut duplicate = None;
            let mut id = 0u64;
            for part in &parts {
                for hash in &part.hashes {
                    let Inner {
                        index,
                        bytes,
                        ends,
                        hasher,
                        ..
                    } = &mut *inner;
                    let s = packed(bytes, ends, id);
                    if let Some(first) = index.find(*hash, |x| packed(bytes, ends, *x) == s) {
                        duplicate.get_or_insert((*first, id));
                    }
                    index.insert_unique(*hash, id, |x| hasher.hash_one(packed(bytes, ends, *x)));
                    id += 1;
                }
            }
            if let Some((first, id)) = duplicate {
                result = Err(Error::Corrupt(format!(
                    "dictionary ids {first} and {id} hold the same string"
                )));
            }
        }
        match result {
            Ok(()) => inner.persisted = inner.ends.len() as u64,
            Err(_) => *inner = Inner::default(),
        }
        result
    }
}

/// Strings read by one loader: packed as in [`Inner`] (ends relative to the part), with their
/// hashes.
struct Part {
    bytes: String,
    ends: Vec<u64>,
    hashes: Vec<u64>,
}

impl Part {
    /// Reads the strings `each` hands over.
    fn read(
        expected: usize,
        hasher: &foldhash::fast::RandomState,
        each: impl FnOnce(&mut dyn FnMut(u64, &str)) -> Result<(), Error>,
    ) -> Result<Part, Error> {
        let mut part = Part {
            bytes: String::new(),
            ends: Vec::with_capacity(expected),
            hashes: Vec::with_capacity(expected),
        };
        let (bytes, ends, hashes) = (&mut part.bytes, &mut part.ends, &mut part.hashes);
        each(&mut |_id, s| {
            bytes.push_str(s);
            ends.push(bytes.len() as u64);
            hashes.push(hasher.hash_one(s));
        })?;
        Ok(part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_dense_stable_and_lossless() {
        let d = Dictionary::new();
        let words = ["", "a", "@alice:example.org", "a", "ü🦀", "", "!room:x"];
        let ids: Vec<Id> = words.iter().map(|w| d.intern(w)).collect();
        assert_eq!(ids, vec![0, 1, 2, 1, 3, 0, 4]);
        for (w, id) in words.iter().zip(&ids) {
            assert_eq!(&*d.get(*id), *w);
            assert_eq!(d.lookup(w), Some(*id));
            assert_eq!(d.strings().get(*id), *w);
        }
        assert_eq!(d.lookup("absent"), None);
        assert_eq!(d.len(), 5);
    }

    #[test]
    fn load_replaces_and_keeps_ids() {
        let d = Dictionary::new();
        d.intern("old");
        let stored = ["x", "yy", "", "zzz"];
        d.load_parallel(4, 3, |from, to, f| {
            for i in from..to {
                f(i, stored[i as usize]);
            }
            Ok(to - from)
        })
        .unwrap();
        assert_eq!(d.lookup("old"), None);
        for (i, s) in stored.iter().enumerate() {
            assert_eq!(d.lookup(s), Some(i as Id));
        }
        assert_eq!(d.unpersisted(), (4, vec![]));
        assert_eq!(d.intern("new"), 4);
        assert_eq!(d.unpersisted(), (4, vec!["new".to_string()]));
        // Many strings: the index grows and rehashes without losing any.
        for i in 0..10_000 {
            assert_eq!(d.intern(&format!("s{i}")), 5 + i);
        }
        for i in 0..10_000 {
            assert_eq!(d.lookup(&format!("s{i}")), Some(5 + i));
        }
    }

    /// Many strings read by several threads: each is found, the ones interned after the load
    /// get the next ids, and of two equal strings far apart (in different parts) the first
    /// pair is reported.
    #[test]
    fn a_large_load_finds_every_string_and_the_first_duplicate() {
        let n = 20_000u64;
        let d = Dictionary::new();
        d.load_parallel(n, 3, |from, to, f| {
            for i in from..to {
                f(i, &format!("@user{i}:example.org"));
            }
            Ok(to - from)
        })
        .unwrap();
        for i in (0..n).step_by(7) {
            assert_eq!(d.lookup(&format!("@user{i}:example.org")), Some(i));
        }
        assert_eq!(d.intern("new"), n);
        assert_eq!(d.intern("@user5:example.org"), 5);
        let stored = |i: u64| match i {
            15_000 => "@user3:example.org".to_string(),
            19_000 => "@user12000:example.org".to_string(),
            i => format!("@user{i}:example.org"),
        };
        let e = d
            .load_parallel(n, 2, |from, to, f| {
                for i in from..to {
                    f(i, &stored(i));
                }
                Ok(to - from)
            })
            .unwrap_err();
        assert!(e.to_string().contains("ids 3 and 15000"), "{e}");
        assert!(d.is_empty());
    }

    #[test]
    fn a_string_stored_twice_is_a_corrupt_store() {
        let d = Dictionary::new();
        let stored = ["a", "b", "a"];
        let e = d
            .load_parallel(3, 2, |from, to, f| {
                for i in from..to {
                    f(i, stored[i as usize]);
                }
                Ok(to - from)
            })
            .unwrap_err();
        assert!(e.to_string().contains("ids 0 and 2"), "{e}");
        assert!(d.is_empty());
        // A range missing a string: the store's count and contents disagree.
        d.intern("kept until the load");
        let e = d
            .load_parallel(4, 2, |from, to, f| {
                for i in from..to.min(3) {
                    f(i, &format!("s{i}"));
                }
                Ok(to.min(3) - from)
            })
            .unwrap_err();
        assert!(e.to_string().contains("ids 2..4"), "{e}");
        assert!(d.is_empty());
    }
}
