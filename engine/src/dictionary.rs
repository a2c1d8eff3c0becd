//! Interned identifiers: strings mapped to dense integer ids.

use foldhash::HashMap;
use std::sync::{Arc, RwLock};

/// An interned string's id. Ids are dense, start at 0, and are never reused: once a store has
/// persisted an id, it means the same string forever.
pub type Id = u64;

#[derive(Default)]
struct Inner {
    strings: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, Id>,
    /// Ids `>= persisted` are not yet written to the store.
    persisted: u64,
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

impl Dictionary {
    /// An empty dictionary.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `s`, interning it if it is new.
    pub fn intern(&self, s: &str) -> Id {
        if let Some(id) = self.lookup(s) {
            return id;
        }
        let mut inner = self.inner.write().expect("dictionary lock");
        if let Some(id) = inner.ids.get(s) {
            return *id;
        }
        let id = inner.strings.len() as Id;
        let a: Arc<str> = Arc::from(s);
        inner.strings.push(a.clone());
        inner.ids.insert(a, id);
        id
    }

    /// The id of `s`, if it is interned.
    pub fn lookup(&self, s: &str) -> Option<Id> {
        self.inner
            .read()
            .expect("dictionary lock")
            .ids
            .get(s)
            .copied()
    }

    /// The string of an id. Panics on an id that was never handed out: ids only come from
    /// this dictionary.
    pub fn get(&self, id: Id) -> Arc<str> {
        self.inner.read().expect("dictionary lock").strings[id as usize].clone()
    }

    /// Calls `f` with the string of `id`, without cloning it.
    pub fn with<T>(&self, id: Id, f: impl FnOnce(&str) -> T) -> T {
        let inner = self.inner.read().expect("dictionary lock");
        f(&inner.strings[id as usize])
    }

    /// The number of interned strings.
    pub fn len(&self) -> usize {
        self.inner.read().expect("dictionary lock").strings.len()
    }

    /// Whether no string is interned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The strings interned since the last [`Dictionary::mark_persisted`], with their ids.
    pub(crate) fn unpersisted(&self) -> (Id, Vec<Arc<str>>) {
        let inner = self.inner.read().expect("dictionary lock");
        let from = inner.persisted;
        (from, inner.strings[from as usize..].to_vec())
    }

    /// Records that every id below `upto` is in the store.
    pub(crate) fn mark_persisted(&self, upto: Id) {
        let mut inner = self.inner.write().expect("dictionary lock");
        inner.persisted = inner.persisted.max(upto);
    }

    /// Loads persisted strings: `strings[i]` has id `i`.
    pub(crate) fn load(&self, strings: Vec<String>) {
        let mut inner = self.inner.write().expect("dictionary lock");
        inner.strings.clear();
        inner.ids.clear();
        inner.ids.reserve(strings.len());
        for (i, s) in strings.into_iter().enumerate() {
            let a: Arc<str> = Arc::from(s);
            inner.ids.insert(a.clone(), i as Id);
            inner.strings.push(a);
        }
        inner.persisted = inner.strings.len() as u64;
    }
}
