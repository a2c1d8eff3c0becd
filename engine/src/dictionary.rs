//! Interned identifiers: strings mapped to dense integer ids.

use std::hash::BuildHasher;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use hashbrown::HashTable;

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

    /// Replaces the contents with persisted strings, which `each` hands over in id order
    /// (`0, 1, 2, ...`). On `each`'s error, or a string stored twice (a corrupt store), the
    /// dictionary is left empty.
    pub(crate) fn load(
        &self,
        expected: usize,
        each: impl FnOnce(&mut dyn FnMut(u64, &str)) -> Result<u64, crate::Error>,
    ) -> Result<(), crate::Error> {
        let mut inner = self.inner.write().expect("dictionary lock");
        *inner = Inner::default();
        // Sized once: growing would hash every string again at each doubling.
        inner.index.reserve(expected, |_| 0);
        inner.ends.reserve(expected);
        let mut duplicate = None;
        let result = each(&mut |id, s| {
            let hash = inner.hasher.hash_one(s);
            if let Some(first) = inner.find(s, hash) {
                duplicate.get_or_insert((first, id));
            }
            inner.push(s, hash);
        });
        let result = result.and_then(|_| match duplicate {
            Some((first, id)) => Err(crate::Error::Corrupt(format!(
                "dictionary ids {first} and {id} hold the same string"
            ))),
            None => Ok(()),
        });
        match result {
            Ok(()) => inner.persisted = inner.ends.len() as u64,
            Err(_) => *inner = Inner::default(),
        }
        result
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
        d.load(4, |f: &mut dyn FnMut(u64, &str)| {
            for (i, s) in stored.iter().enumerate() {
                f(i as u64, s);
            }
            Ok(stored.len() as u64)
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

    #[test]
    fn a_string_stored_twice_is_a_corrupt_store() {
        let d = Dictionary::new();
        let e = d
            .load(1, |f: &mut dyn FnMut(u64, &str)| {
                for (i, s) in ["a", "b", "a"].iter().enumerate() {
                    f(i as u64, s);
                }
                Ok(3)
            })
            .unwrap_err();
        assert!(e.to_string().contains("ids 0 and 2"), "{e}");
        assert!(d.is_empty());
    }
}
