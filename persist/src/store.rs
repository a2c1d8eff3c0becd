//! The store: one redb file, its tables and their encodings.

use std::path::{Path, PathBuf};

use redb::{
    Database, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use crate::Error;

mod append;
mod check;
mod chunks_ahead;
mod guard;
mod handle;
mod packed;
mod quarantine;
mod revisions;
mod sealed;
mod strings;
mod upgrade;

pub use quarantine::Quarantined;
use revisions::{CHUNKS, REVISIONS};
pub use revisions::{ChunkRef, ChunkWrite, RevisionInfo, RevisionWrite, chunk_key};
use strings::STRINGS;
pub use upgrade::{RecordUpgrade, RecordsUnchanged, UpgradeStrings};

use guard::{callback, contained};
use handle::{Handle, Opener, ReadOpener};

/// The format version this build writes and reads. Bump it on any change of a table's layout
/// or of the records a program stores in it. A store of an older format (1 to 6) is upgraded
/// when opened (see `docs/design.md`). Formats 5 and 6 changed no table: format 5 gave the
/// records of `source_events` their time received, format 6 the `room_state` records their
/// facts (rewritten by the program's [`RecordUpgrade`]); an older build must not misread them.
/// Format 7 keeps revision chunks and log entries packed (compressed).
pub const FORMAT_VERSION: u32 = 7;

// Every value but the format version is sealed: `crc32 | payload` (see `sealed`).
/// `meta`: metadata by name. Values are little-endian integers (see `docs/design.md`).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// `log`: the source log. Key: `Seq`. Value: a sealed encoded source delta (opaque here).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// `quarantine`: source deltas set aside because a replica's computation panicked on them.
/// Key: `Seq`. Value: `unix_ms u64 LE | message UTF-8`. Created by the first quarantine; a
/// store without it has none.
const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine");

/// The most memory redb's page cache may hold (its default is 1 GiB). redb keeps every page a
/// commit writes or a read loads in this cache, up to its size: with the default, a large
/// store's pages stayed resident after an ingest or a restore, on top of the dataflow. The
/// operating system's page cache still holds the file; a read past this cache costs a copy
/// from it, not a disk read. Side by side at large, 16 MiB against 64 MiB and 1 GiB: the least
/// memory, and the same times but for `compact` (1.24x slower: it reads the store more than
/// once).
pub(crate) const CACHE_BYTES: usize = 16 << 20;

/// A redb builder with this store's settings.
pub(crate) fn builder() -> redb::Builder {
    let mut b = Database::builder();
    b.set_cache_size(CACHE_BYTES);
    b
}

const KEY_FORMAT: &str = "format_version";
const KEY_LAST_SEQ: &str = "last_seq";
const KEY_DICT_LEN: &str = "dict_len";

/// Sizes of what the store holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// The last committed sequence number (0 for an empty store).
    pub last_seq: u64,
    /// The number of source-log entries retained.
    pub log_entries: u64,
    /// The oldest retained source-log entry, if any.
    pub first_log_seq: Option<u64>,
    /// The number of interned strings stored (collected ones not counted).
    pub strings: u64,
    /// The number of revisions.
    pub revisions: u64,
    /// The size of the file in bytes.
    pub file_bytes: u64,
}

/// The store: a redb database in one file, opened for writing by one process at a time.
///
/// After the storage fails under a write (an I/O error, a failed fsync, a full disk), the
/// store reopens the database at the next operation, so a process goes on once the fault
/// clears. A failed [`Store::append`] says whether it was committed ([`Error::NotCommitted`],
/// or [`Error::InDoubt`] when the store cannot be read back to tell).
pub struct Store {
    db: Handle,
    path: PathBuf,
    /// Collected strings to put back with the next write (see [`Store::put_back_strings`]).
    revived: std::sync::Mutex<std::collections::BTreeMap<u64, String>>,
    /// Writers waiting for redb's write lock: a write in the background (chunks written
    /// ahead) lets them go first.
    waiting_writers: std::sync::atomic::AtomicUsize,
}

impl Drop for Store {
    /// Closes the database. After a contained panic of redb (a damaged page), closing can
    /// panic too (on a poisoned lock): contained as well, so that it does not end the process.
    fn drop(&mut self) {
        let db = self.db.close();
        let _ = contained("the file while closing it", || {
            drop(db);
            Ok::<(), Error>(())
        });
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

/// An I/O error while opening the file at `path`: a file too short or garbled for redb is
/// not a prr store; anything else is the operating system refusing (permission denied, a
/// symbolic link loop, ...), said as such.
fn open_io_error(path: PathBuf, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData => Error::NotAStore {
            path,
            reason: e.to_string(),
        },
        _ => Error::Io { path, cause: e },
    }
}

fn le_u64(b: &[u8], what: &str) -> Result<u64, Error> {
    b.try_into()
        .map(u64::from_le_bytes)
        .map_err(|_| Error::Corrupt(format!("meta `{what}` has {} bytes, expected 8", b.len())))
}

/// A sealed `meta` integer: its checksum, then `u64 LE`.
fn sealed_u64(key: &str, v: u64) -> Vec<u8> {
    sealed::meta(key).seal(&v.to_le_bytes())
}

/// Reads a sealed `meta` integer.
fn open_u64(key: &str, b: &[u8]) -> Result<u64, Error> {
    let payload = sealed::meta(key).open(b, || format!("table meta: `{key}`"))?;
    le_u64(payload, key)
}

/// Reads the sealed `meta` integer `key` of `meta`, which must be there.
fn read_meta_u64(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<u64, Error> {
    let v = meta
        .get(key)?
        .ok_or_else(|| Error::Corrupt(format!("table meta: `{key}` is missing")))?;
    open_u64(key, v.value())
}

/// Checks a log entry's checksum; its payload.
fn open_log(seq: u64, b: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, Error> {
    sealed::log(seq).open_packed(b, || format!("table log: entry at seq {seq}"))
}

/// The bytes the store keeps for log entry `seq` of `payload` (its checksum, then the payload
/// packed): for tests that find a value in the file to damage it.
#[cfg(feature = "test-util")]
pub fn stored_log_entry(seq: u64, payload: &[u8]) -> Vec<u8> {
    sealed::log(seq).seal_packed(payload)
}

/// The bytes the store keeps for the chunk of `payload` (see [`stored_log_entry`]).
#[cfg(feature = "test-util")]
pub fn stored_chunk(payload: &[u8]) -> Vec<u8> {
    sealed::chunk(revisions::chunk_key(payload)).seal_packed(payload)
}

impl Store {
    /// Opens the store at `path`, creating it (with the current format version) if the file
    /// does not exist. Fails if another process has it open, if the file is not a prr store,
    /// or if its format version is not [`FORMAT_VERSION`] (an older one is upgraded only by
    /// [`Store::open_upgrading`], which knows its records).
    pub fn open(path: impl AsRef<Path>) -> Result<Store, Error> {
        Self::open_with(path, None)
    }

    /// Like [`Store::open`], upgrading a store of an older format, its records rewritten by
    /// `records`.
    pub fn open_upgrading(
        path: impl AsRef<Path>,
        records: &dyn RecordUpgrade,
    ) -> Result<Store, Error> {
        Self::open_with(path, Some(records))
    }

    /// Like [`Store::open_read_only`], upgrading a store of an older format first (with a
    /// writable handle, once), its records rewritten by `records`.
    pub fn open_read_only_upgrading(
        path: impl AsRef<Path>,
        records: &dyn RecordUpgrade,
    ) -> Result<Store, Error> {
        Self::open_read_only_with(path, Some(records))
    }

    fn open_with(
        path: impl AsRef<Path>,
        records: Option<&dyn RecordUpgrade>,
    ) -> Result<Store, Error> {
        let path = path.as_ref().to_path_buf();
        let exists = path.exists()
            && std::fs::metadata(&path)
                .map(|m| m.len() > 0)
                .unwrap_or(false);
        let opened = contained("the file", || {
            Ok::<_, Error>(if exists {
                builder().open(&path)
            } else {
                builder().create(&path)
            })
        })?;
        let db = match opened {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(Error::Locked { path }),
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => {
                return Err(open_io_error(path, e));
            }
            Err(redb::DatabaseError::Storage(e)) if exists => {
                return Err(Error::NotAStore {
                    path,
                    reason: e.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let reopen = path.clone();
        let opener: Opener = std::sync::Arc::new(move || builder().open(&reopen));
        let reread = path.clone();
        let read_opener: ReadOpener = std::sync::Arc::new(move || {
            let file = std::fs::File::open(&reread)?;
            let base = redb::backends::FileBackend::new(file).map_err(std::io::Error::other)?;
            Ok(Box::new(base) as Box<dyn redb::StorageBackend>)
        });
        let store = Store {
            db: Handle::write(db, opener, read_opener),
            path,
            revived: Default::default(),
            waiting_writers: Default::default(),
        };
        if exists {
            store.check_format(records)?;
        } else {
            store.initialize()?;
        }
        Ok(store)
    }

    /// Opens an existing store read-only: nothing this handle does changes the file, and
    /// every write fails with [`Error::ReadOnly`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Store, Error> {
        Self::open_read_only_with(path, None)
    }

    fn open_read_only_with(
        path: impl AsRef<Path>,
        records: Option<&dyn RecordUpgrade>,
    ) -> Result<Store, Error> {
        let path = path.as_ref().to_path_buf();
        let opened = contained("the file", || {
            Ok::<_, Error>(builder().open_read_only(&path))
        })?;
        let db = match opened {
            Ok(db) => db,
            // Not closed cleanly (a crash): a read-only handle cannot repair it. Open it for
            // writing once, which repairs it, then read-only again.
            Err(redb::DatabaseError::RepairAborted) => {
                drop(Store::open_with(&path, records)?);
                builder().open_read_only(&path)?
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(Error::Locked { path }),
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(Error::Missing(format!("no store at {}", path.display())));
            }
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => {
                return Err(open_io_error(path, e));
            }
            Err(redb::DatabaseError::Storage(e)) => {
                return Err(Error::NotAStore {
                    path,
                    reason: e.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let store = Store {
            db: Handle::read_only(db),
            path,
            revived: Default::default(),
            waiting_writers: Default::default(),
        };
        match store.check_format(records) {
            // A store of an older format: upgraded by a writable handle, once, then read.
            Err(Error::FormatVersion { found, .. })
                if upgrade::upgradable(found) && upgrade::records_for(found, records).is_some() =>
            {
                let path = store.path.clone();
                drop(store);
                drop(Store::open_with(&path, records)?);
                Store::open_read_only_with(path, records)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(store),
        }
    }

    /// Opens (or creates) a store on a custom redb storage backend, for fault-injection
    /// tests: `backend` is called for the first open and again whenever the store reopens
    /// itself after a storage failure. `path` names the store in messages and statistics.
    #[cfg(feature = "test-util")]
    pub fn open_with_backend<B: redb::StorageBackend>(
        path: impl AsRef<Path>,
        backend: impl Fn() -> std::io::Result<B> + Send + Sync + 'static,
    ) -> Result<Store, Error> {
        let path = path.as_ref().to_path_buf();
        let backend = std::sync::Arc::new(backend);
        let b = backend.clone();
        let opener: Opener = std::sync::Arc::new(move || {
            builder().create_with_backend(b().map_err(redb::StorageError::from)?)
        });
        let read_opener: ReadOpener =
            std::sync::Arc::new(move || Ok(Box::new(backend()?) as Box<dyn redb::StorageBackend>));
        let store = Store {
            db: Handle::write(opener()?, opener, read_opener),
            path,
            revived: Default::default(),
            waiting_writers: Default::default(),
        };
        let fresh = {
            let txn = store.begin_read()?;
            matches!(
                txn.open_table(META),
                Err(redb::TableError::TableDoesNotExist(_))
            )
        };
        if fresh {
            store.initialize()?;
        } else {
            store.check_format(None)?;
        }
        Ok(store)
    }

    /// Whether this handle is read-only.
    pub fn is_read_only(&self) -> bool {
        self.db.is_read_only()
    }

    fn begin_read(&self) -> Result<ReadTransaction, Error> {
        self.db.begin_read()
    }

    fn begin_write(&self) -> Result<WriteTransaction, Error> {
        self.db
            .begin_write()?
            .ok_or_else(|| Error::ReadOnly(self.path.clone()))
    }

    fn initialize(&self) -> Result<(), Error> {
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(KEY_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())?;
            meta.insert(KEY_LAST_SEQ, sealed_u64(KEY_LAST_SEQ, 0).as_slice())?;
            meta.insert(KEY_DICT_LEN, sealed_u64(KEY_DICT_LEN, 0).as_slice())?;
            txn.open_table(LOG)?;
            txn.open_table(STRINGS)?;
            txn.open_table(REVISIONS)?;
            txn.open_table(CHUNKS)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Checks the format version; a writable handle given the program's `records` upgrades a
    /// store of an older format.
    fn check_format(&self, records: Option<&dyn RecordUpgrade>) -> Result<(), Error> {
        let found = contained("meta", || self.format_version())?;
        if let Some(records) = upgrade::records_for(found, records)
            .filter(|_| upgrade::upgradable(found) && !self.is_read_only())
        {
            return upgrade::upgrade(self, found, records);
        }
        if found != FORMAT_VERSION {
            return Err(Error::FormatVersion {
                path: self.path.clone(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        Ok(())
    }

    /// The format version written in `meta`.
    fn format_version(&self) -> Result<u32, Error> {
        let txn = self.begin_read()?;
        let meta = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Err(Error::NotAStore {
                    path: self.path.clone(),
                    reason: "it has no `meta` table".into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let Some(v) = meta.get(KEY_FORMAT)? else {
            return Err(Error::NotAStore {
                path: self.path.clone(),
                reason: "it has no format version".into(),
            });
        };
        let bytes = v.value();
        match <[u8; 4]>::try_from(bytes) {
            Ok(b) => Ok(u32::from_le_bytes(b)),
            Err(_) => Err(Error::NotAStore {
                path: self.path.clone(),
                reason: format!("its format version has {} bytes, expected 4", bytes.len()),
            }),
        }
    }

    /// The store's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn meta_u64(&self, key: &str) -> Result<u64, Error> {
        contained("meta", || {
            let txn = self.begin_read()?;
            read_meta_u64(&txn.open_table(META)?, key)
        })
    }

    /// The last committed sequence number, 0 for an empty store.
    pub fn last_seq(&self) -> Result<u64, Error> {
        self.meta_u64(KEY_LAST_SEQ)
    }

    /// The source-log entries with `seq >= from`, in order.
    pub fn log_from(&self, from: u64) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        let mut out = Vec::new();
        self.for_each_log(from.., |seq, bytes| {
            out.push((seq, bytes.to_vec()));
            Ok::<(), Error>(())
        })?;
        Ok(out)
    }

    /// Calls `f` on each source-log entry with a `seq` in `range`, in order.
    pub fn for_each_log<E: From<Error>>(
        &self,
        range: impl std::ops::RangeBounds<u64>,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        contained("log", || {
            let txn = self.begin_read()?;
            let log = txn.open_table(LOG).map_err(Error::from)?;
            for entry in log.range(range).map_err(Error::from)? {
                let (k, v) = entry.map_err(Error::from)?;
                let seq = k.value();
                let payload = open_log(seq, v.value())?;
                callback(|| f(seq, &payload))?;
            }
            Ok(())
        })
    }

    /// The oldest retained source-log entry's sequence number.
    pub fn first_log_seq(&self) -> Result<Option<u64>, Error> {
        contained("log", || {
            let txn = self.begin_read()?;
            let log = txn.open_table(LOG)?;
            Ok(log.first()?.map(|(k, _)| k.value()))
        })
    }

    /// Every interned string, by id.
    pub fn strings(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        self.for_each_string(|_, s| out.push(s.to_string()))?;
        Ok(out)
    }

    /// The number of ids handed out: the id the next new string gets. Collected strings
    /// (see [`Store::collect_strings`]) leave holes below it.
    pub fn string_count(&self) -> Result<u64, Error> {
        self.meta_u64(KEY_DICT_LEN)
    }

    /// Calls `f(id, string)` for every interned string, in id order, without allocating one
    /// `String` each; collected ids are skipped. Returns the number of strings.
    pub fn for_each_string(&self, f: impl FnMut(u64, &str)) -> Result<u64, Error> {
        self.for_each_string_in(0, u64::MAX, f)
    }

    /// Calls `f(id, string)` for the interned strings with ids in `from..to`, in id order,
    /// as [`Store::for_each_string`] does for all of them (several ranges can be read by
    /// several threads at once). Returns the number read.
    pub fn for_each_string_in(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, &str),
    ) -> Result<u64, Error> {
        contained("dictionary", || {
            let txn = self.begin_read()?;
            let table = txn.open_table(STRINGS)?;
            strings::for_each_in(&table, from, to, &mut f)
        })
    }

    /// Has the next write (an append or a revision capture) put back strings that
    /// [`Store::collect_strings`] collected, at their ids: the caller's records use them
    /// again. A failed write keeps them for the next one.
    pub fn put_back_strings(&self, revived: impl IntoIterator<Item = (u64, String)>) {
        self.revived.lock().expect("revived lock").extend(revived);
    }

    fn staged_strings(&self) -> std::collections::BTreeMap<u64, String> {
        self.revived.lock().expect("revived lock").clone()
    }

    fn unstage_strings(&self, written: &std::collections::BTreeMap<u64, String>) {
        let mut staged = self.revived.lock().expect("revived lock");
        for id in written.keys() {
            staged.remove(id);
        }
    }

    /// Collects the stored strings for which `live(id)` does not hold, in one transaction:
    /// their ids become holes, never handed out again. Returns the ids collected, ascending.
    /// Strings staged by [`Store::put_back_strings`] are kept whatever `live` says.
    pub fn collect_strings(&self, live: &dyn Fn(u64) -> bool) -> Result<Vec<u64>, Error> {
        let staged = self.staged_strings();
        let live = |id: u64| staged.contains_key(&id) || live(id);
        contained("dictionary", || {
            self.write(|txn| strings::collect_in(txn, &live))
                .map_err(append::WriteFailure::into_error)
        })
    }

    /// Sizes of what the store holds.
    pub fn stats(&self) -> Result<StoreStats, Error> {
        let last_seq = self.last_seq()?;
        contained("the tables' sizes", || {
            let txn = self.begin_read()?;
            let log = txn.open_table(LOG)?;
            let strings = txn.open_table(STRINGS)?;
            let revs = txn.open_table(REVISIONS)?;
            Ok(StoreStats {
                last_seq,
                log_entries: log.len()?,
                first_log_seq: log.first()?.map(|(k, _)| k.value()),
                strings: strings::live_count(&strings)?,
                revisions: revs.len()?,
                file_bytes: std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
            })
        })
    }

    /// Rewrites the file to release the space of deleted entries.
    pub fn compact_file(&mut self) -> Result<(), Error> {
        let path = self.path.clone();
        let handle = &mut self.db;
        contained("the file", || match handle.database_mut()? {
            Some(db) => match db.compact() {
                Ok(_) => Ok(()),
                Err(e) => Err(handle.failure(e.into())),
            },
            None => Err(Error::ReadOnly(path)),
        })
    }
}

#[cfg(test)]
mod tests;
