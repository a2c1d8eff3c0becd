//! Interned identifiers: strings mapped to dense integer ids.

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use hashbrown::HashTable;

use crate::bits::Bits;

mod load;

use load::Loaded;

/// An interned string's id. Ids start at 0 and are never reused: once a store has persisted an
/// id, it means the same string forever. A string the store collects (see
/// `Runtime::collect_strings`) leaves a hole: its id is not handed out again.
pub type Id = u64;

/// The strings, packed: string `i` is `bytes[ends[i - 1]..ends[i]]` (from 0 for the first).
/// One allocation for all of them instead of one each: a store with millions of identifiers
/// loads, and is dropped, in a fraction of the time, and takes about 60 bytes less per string.
#[derive(Default)]
struct Inner {
    bytes: String,
    ends: Vec<u64>,
    /// The ids loaded from the store, found by their strings' hashes (see [`Loaded`]).
    loaded: Loaded,
    /// The ids interned since the load (every id, without a store), hashed by their strings,
    /// in [`SHARDS`] tables (see [`shard_of`]; empty until the first string): a table that
    /// doubles holds its old and new slots at once, a sixteenth of the index, not all of it.
    index: Vec<HashTable<Id>>,
    /// Seeded per process: identifiers chosen to collide cannot be prepared in advance.
    hasher: foldhash::fast::RandomState,
    /// Ids `>= persisted` are not yet written to the store.
    persisted: u64,
    /// Ids below `persisted` whose strings the store does not hold: collected.
    holes: Bits,
    /// Of the holes, those whose strings this process does not have either (holes when the
    /// dictionary was loaded): never handed out, and a record that uses one is damage.
    gone: Bits,
    /// Holes handed out again (by [`Dictionary::intern`] or [`Dictionary::lookup`], or used by
    /// a record about to be stored): their strings go back into the store with its next write.
    revived: BTreeSet<Id>,
}

/// The number of tables [`Inner`]'s index of new strings is split into (a power of 2).
const SHARDS: usize = 16;

/// The first bit of the hash that picks a new string's index table.
///
/// Not the top bits: a `HashTable` compares the top 7 bits of the hash (its tag) before the
/// key, and places by the low bits. Tables picked by the top bits held hashes whose tags had 3
/// bits of their own, so a probe compared the strings of about one slot in 8, each a cache
/// miss. Bits 32 and up are placement bits only for tables of more than 2^32 slots.
const SHARD_SHIFT: u32 = 32;

/// The index table of a new string's `hash`.
fn shard_of(hash: u64) -> usize {
    (hash >> SHARD_SHIFT) as usize & (SHARDS - 1)
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
        let is = |id: &Id| self.str(*id) == s;
        let new = self
            .index
            .get(shard_of(hash))
            .and_then(|t| t.find(hash, is));
        new.copied().or_else(|| self.loaded.find(hash, is))
    }

    /// Whether `id` is a hole not yet revived: handing it out revives it.
    fn needs_revival(&self, id: Id) -> bool {
        !self.holes.is_empty() && self.holes.contains(id) && !self.revived.contains(&id)
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
        if index.is_empty() {
            index.resize_with(SHARDS, HashTable::new);
        }
        // Growing a table rehashes its ids by their strings.
        index[shard_of(hash)]
            .insert_unique(hash, id, |id| hasher.hash_one(packed(bytes, ends, *id)));
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
    /// Held by a store write of new strings from taking them until it marks them persisted
    /// (see `with_new_strings`): two writers (a commit, a capture in the
    /// background) must not both take the same ids.
    persisting: Arc<std::sync::Mutex<()>>,
    /// Whether the ids handed out are kept (see [`Dictionary::keeping`]).
    keeping: Arc<AtomicBool>,
    /// The ids handed out while keeping: never collected.
    kept: Arc<std::sync::Mutex<BTreeSet<Id>>>,
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

    /// Whether `id` was handed out and its string is here (not a hole loaded as such): a
    /// record read from the store that uses another id is damage.
    pub(crate) fn len(&self) -> usize {
        self.inner.ends.len()
    }

    pub(crate) fn knows(&self, id: Id) -> bool {
        id < self.inner.ends.len() as u64 && !self.inner.gone.contains(id)
    }
}

impl Dictionary {
    /// An empty dictionary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` keeping every id handed out meanwhile from ever being collected (for the
    /// DAG's build: its computations may hold ids of strings that no record uses, e.g. event
    /// types they compare with, for as long as the process runs).
    pub(crate) fn keeping<T>(&self, f: impl FnOnce() -> T) -> T {
        self.keeping.store(true, Ordering::SeqCst);
        let out = f();
        self.keeping.store(false, Ordering::SeqCst);
        out
    }

    /// Notes `id` as kept while keeping.
    fn handed_out(&self, id: Id) -> Id {
        if self.keeping.load(Ordering::Relaxed) {
            (self.kept.lock())
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(id);
        }
        id
    }

    /// The id of `s`, interning it if it is new.
    pub fn intern(&self, s: &str) -> Id {
        let id = self.intern_inner(s);
        self.handed_out(id)
    }

    fn intern_inner(&self, s: &str) -> Id {
        let hash = {
            let inner = self.inner.read().expect("dictionary lock");
            let hash = inner.hasher.hash_one(s);
            if let Some(id) = inner.find(s, hash) {
                if inner.needs_revival(id) {
                    drop(inner);
                    self.revive([id]);
                }
                return id;
            }
            hash
        };
        let mut inner = self.inner.write().expect("dictionary lock");
        if let Some(id) = inner.find(s, hash) {
            if inner.needs_revival(id) {
                inner.revived.insert(id);
            }
            return id;
        }
        inner.push(s, hash)
    }

    /// The id of `s`, if it is interned.
    pub fn lookup(&self, s: &str) -> Option<Id> {
        self.lookup_inner(s).map(|id| self.handed_out(id))
    }

    fn lookup_inner(&self, s: &str) -> Option<Id> {
        let inner = self.inner.read().expect("dictionary lock");
        let hash = inner.hasher.hash_one(s);
        let id = inner.find(s, hash)?;
        if inner.needs_revival(id) {
            drop(inner);
            self.revive([id]);
        }
        Some(id)
    }

    /// Whether the store collected strings that this process still has (see
    /// [`Dictionary::revive`]).
    pub(crate) fn has_holes(&self) -> bool {
        let inner = self.inner.read().expect("dictionary lock");
        inner.holes.len() > inner.gone.len()
    }

    /// Has the holes among `ids` (ids about to be stored in records) put back into the store
    /// with its next write. Cheap when there are no holes.
    pub(crate) fn revive(&self, ids: impl IntoIterator<Item = Id>) {
        if self.inner.read().expect("dictionary lock").holes.is_empty() {
            return;
        }
        let mut inner = self.inner.write().expect("dictionary lock");
        for id in ids {
            if inner.holes.contains(id) && !inner.gone.contains(id) {
                inner.revived.insert(id);
            }
        }
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

    /// The number of ids handed out (holes included).
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

    /// Held while a store write takes the strings not yet persisted, until it marks them.
    pub(crate) fn persisting(&self) -> std::sync::MutexGuard<'_, ()> {
        self.persisting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that every id below `upto` is in the store.
    pub(crate) fn mark_persisted(&self, upto: Id) {
        let mut inner = self.inner.write().expect("dictionary lock");
        inner.persisted = inner.persisted.max(upto);
    }

    /// The revived holes (see [`Dictionary::revive`]) with their strings, to put back into the
    /// store with its next write.
    pub(crate) fn revived(&self) -> Vec<(Id, String)> {
        let inner = self.inner.read().expect("dictionary lock");
        (inner.revived.iter())
            .map(|id| (*id, inner.str(*id).to_string()))
            .collect()
    }

    /// Records that the store holds these revived strings again.
    pub(crate) fn mark_revived(&self, ids: impl IntoIterator<Item = Id>) {
        let mut inner = self.inner.write().expect("dictionary lock");
        for id in ids {
            inner.revived.remove(&id);
            inner.holes.remove(id);
        }
    }

    /// Records that the store collected `ids` (persisted ones): holes from now on, revived if
    /// handed out again. Their strings stay in memory while this process runs.
    pub(crate) fn mark_collected(&self, ids: &[Id]) {
        let mut inner = self.inner.write().expect("dictionary lock");
        for id in ids {
            inner.holes.insert(*id);
        }
    }

    /// The ids that must stay in the store whatever its records use: the revived holes, the
    /// kept ids (see [`Dictionary::keeping`]), and every id not yet persisted.
    pub(crate) fn pinned(&self) -> (BTreeSet<Id>, Id) {
        let mut pinned = (self.kept.lock())
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let inner = self.inner.read().expect("dictionary lock");
        pinned.extend(inner.revived.iter().copied());
        (pinned, inner.persisted)
    }

    /// The number of holes (collected ids), and of those this process has no string for.
    pub fn holes(&self) -> (usize, usize) {
        let inner = self.inner.read().expect("dictionary lock");
        (inner.holes.len(), inner.gone.len())
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
                Ok(to - from)
            })
            .unwrap_err();
        assert!(e.to_string().contains("ids 2..4"), "{e}");
        assert!(d.is_empty());
        // Ids out of order.
        let e = d
            .load_parallel(4, 1, |_, _, f| {
                f(1, "b");
                f(0, "a");
                Ok(2)
            })
            .unwrap_err();
        assert!(e.to_string().contains("id 0 out of order"), "{e}");
    }

    /// Ids the store skips are holes: never handed out again, unknown to records; a string
    /// collected while this process runs is revived when it is handed out again.
    #[test]
    fn holes_are_never_handed_out_and_collected_strings_revive() {
        let d = Dictionary::new();
        let stored = [(1, "b"), (2, "c"), (5, "f")];
        d.load_parallel(7, 2, |from, to, f| {
            let mut n = 0;
            for (id, s) in stored.iter().filter(|(id, _)| (from..to).contains(id)) {
                f(*id, s);
                n += 1;
            }
            Ok(n)
        })
        .unwrap();
        assert_eq!(d.len(), 7);
        assert_eq!(d.holes(), (4, 4));
        assert_eq!((d.lookup("b"), d.lookup("f")), (Some(1), Some(5)));
        assert_eq!(d.get(5), "f");
        let s = d.strings();
        assert!(!s.knows(0) && s.knows(1) && !s.knows(3) && s.knows(5) && !s.knows(6));
        assert!(!s.knows(7));
        drop(s);
        assert_eq!(d.intern("a"), 7, "a hole's string is new again");
        assert_eq!(d.unpersisted(), (7, vec!["a".to_string()]));
        // Gone holes are not revived, whatever a record says.
        d.revive([0, 3]);
        assert!(d.revived().is_empty());
        // "c" is collected by the store: still here, revived when handed out.
        d.mark_collected(&[2]);
        assert_eq!(d.holes(), (5, 4));
        assert!(d.strings().knows(2));
        assert_eq!(d.lookup("c"), Some(2));
        assert_eq!(d.revived(), vec![(2, "c".to_string())]);
        assert_eq!(d.pinned().0.into_iter().collect::<Vec<_>>(), vec![2]);
        d.mark_revived([2]);
        assert!(d.revived().is_empty());
        assert_eq!(d.holes(), (4, 4));
        // And through a record that uses it.
        d.mark_collected(&[5]);
        d.revive([5, 1]);
        assert_eq!(d.revived(), vec![(5, "f".to_string())]);
    }
}
