//! The store: one redb file, its tables and their encodings.

use std::path::{Path, PathBuf};

use redb::{
    Database, ReadOnlyDatabase, ReadTransaction, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};

use crate::Error;

mod handle;

use handle::{Handle, Opener, ReadOpener};

/// The format version this build writes and reads. Bump it on any change of a table's layout.
pub const FORMAT_VERSION: u32 = 1;

/// `meta`: metadata by name. Values are little-endian integers (see `docs/design.md`).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// `log`: the source log. Key: `Seq`. Value: an encoded source delta (opaque here).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// `dict`: interned identifiers. Key: id. Value: the string.
const DICT: TableDefinition<u64, &str> = TableDefinition::new("dict");
/// `revisions`: one row per revision. Key: `(replica, as_of)`. Value: 24 bytes, see [`RevisionInfo`].
const REVISIONS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("revisions");
/// `revision_chunks`: a revision's records. Key: `(replica, as_of, chunk)`. Value: opaque bytes.
const CHUNKS: TableDefinition<(&str, u64, u32), &[u8]> = TableDefinition::new("revision_chunks");

const KEY_FORMAT: &str = "format_version";
const KEY_LAST_SEQ: &str = "last_seq";
const KEY_DICT_LEN: &str = "dict_len";

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
    /// The number of chunks in `revision_chunks`.
    pub chunks: u32,
}

impl RevisionInfo {
    fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..4].copy_from_slice(&self.logic_version.to_le_bytes());
        b[4..12].copy_from_slice(&self.description_hash.to_le_bytes());
        b[12..20].copy_from_slice(&self.records.to_le_bytes());
        b[20..24].copy_from_slice(&self.chunks.to_le_bytes());
        b
    }

    fn decode(replica: &str, as_of: u64, b: &[u8]) -> Result<Self, Error> {
        let b: &[u8; 24] = b.try_into().map_err(|_| {
            Error::Corrupt(format!(
                "revision ({replica}, {as_of}) header has {} bytes, expected 24",
                b.len()
            ))
        })?;
        let (logic, rest) = b.split_at(4);
        let (hash, rest) = rest.split_at(8);
        let (records, chunks) = rest.split_at(8);
        let le4 = |x: &[u8]| u32::from_le_bytes([x[0], x[1], x[2], x[3]]);
        let le8 = |x: &[u8]| u64::from_le_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]);
        Ok(RevisionInfo {
            replica: replica.to_string(),
            as_of,
            logic_version: le4(logic),
            description_hash: le8(hash),
            records: le8(records),
            chunks: le4(chunks),
        })
    }
}

/// One revision to write: its header fields and its chunks, sorted.
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
    /// The encoded chunks, in order.
    pub chunks: Vec<Vec<u8>>,
}

/// Sizes of what the store holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// The last committed sequence number (0 for an empty store).
    pub last_seq: u64,
    /// The number of source-log entries retained.
    pub log_entries: u64,
    /// The oldest retained source-log entry, if any.
    pub first_log_seq: Option<u64>,
    /// The number of interned identifiers.
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
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

fn le_u64(b: &[u8], what: &str) -> Result<u64, Error> {
    b.try_into()
        .map(u64::from_le_bytes)
        .map_err(|_| Error::Corrupt(format!("meta `{what}` has {} bytes, expected 8", b.len())))
}

impl Store {
    /// Opens the store at `path`, creating it (with the current format version) if the file
    /// does not exist. Fails if another process has it open, if the file is not a prr store,
    /// or if its format version is not [`FORMAT_VERSION`].
    pub fn open(path: impl AsRef<Path>) -> Result<Store, Error> {
        let path = path.as_ref().to_path_buf();
        let exists = path.exists()
            && std::fs::metadata(&path)
                .map(|m| m.len() > 0)
                .unwrap_or(false);
        let db = match if exists {
            Database::open(&path)
        } else {
            Database::create(&path)
        } {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(Error::Locked { path }),
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) if exists => {
                return Err(Error::NotAStore {
                    path,
                    reason: e.to_string(),
                });
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
        let opener: Opener = std::sync::Arc::new(move || Database::open(&reopen));
        let reread = path.clone();
        let read_opener: ReadOpener = std::sync::Arc::new(move || {
            let file = std::fs::File::open(&reread)?;
            let base = redb::backends::FileBackend::new(file).map_err(std::io::Error::other)?;
            Ok(Box::new(base) as Box<dyn redb::StorageBackend>)
        });
        let store = Store {
            db: Handle::write(db, opener, read_opener),
            path,
        };
        if exists {
            store.check_format()?;
        } else {
            store.initialize()?;
        }
        Ok(store)
    }

    /// Opens an existing store read-only: nothing this handle does changes the file, and
    /// every write fails with [`Error::ReadOnly`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Store, Error> {
        let path = path.as_ref().to_path_buf();
        let db = match ReadOnlyDatabase::open(&path) {
            Ok(db) => db,
            // Not closed cleanly (a crash): a read-only handle cannot repair it. Open it for
            // writing once, which repairs it, then read-only again.
            Err(redb::DatabaseError::RepairAborted) => {
                drop(Store::open(&path)?);
                ReadOnlyDatabase::open(&path)?
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(Error::Locked { path }),
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(Error::Missing(format!("no store at {}", path.display())));
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
        };
        store.check_format()?;
        Ok(store)
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
            Database::builder().create_with_backend(b().map_err(redb::StorageError::from)?)
        });
        let read_opener: ReadOpener =
            std::sync::Arc::new(move || Ok(Box::new(backend()?) as Box<dyn redb::StorageBackend>));
        let store = Store {
            db: Handle::write(opener()?, opener, read_opener),
            path,
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
            store.check_format()?;
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

    /// Runs `f` in a write transaction and commits it. A failure of the storage marks the
    /// database for reopening (the transaction is dropped first). A failure at commit carries
    /// what `f` returned: whether that commit took place is not known.
    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, Error>,
    ) -> Result<T, WriteFailure<T>> {
        let failed = |error: Error, at_commit: Option<T>| WriteFailure {
            error: self.db.failure(error),
            at_commit,
        };
        let txn = self.begin_write().map_err(|e| failed(e, None))?;
        let value = match f(&txn) {
            Ok(v) => v,
            Err(e) => {
                drop(txn);
                return Err(failed(e, None));
            }
        };
        match txn.commit() {
            Ok(()) => Ok(value),
            Err(e) => Err(failed(e.into(), Some(value))),
        }
    }

    fn initialize(&self) -> Result<(), Error> {
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(KEY_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())?;
            meta.insert(KEY_LAST_SEQ, 0u64.to_le_bytes().as_slice())?;
            meta.insert(KEY_DICT_LEN, 0u64.to_le_bytes().as_slice())?;
            txn.open_table(LOG)?;
            txn.open_table(DICT)?;
            txn.open_table(REVISIONS)?;
            txn.open_table(CHUNKS)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn check_format(&self) -> Result<(), Error> {
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
        let found = match <[u8; 4]>::try_from(bytes) {
            Ok(b) => u32::from_le_bytes(b),
            Err(_) => {
                return Err(Error::NotAStore {
                    path: self.path.clone(),
                    reason: format!("its format version has {} bytes, expected 4", bytes.len()),
                });
            }
        };
        if found != FORMAT_VERSION {
            return Err(Error::FormatVersion {
                path: self.path.clone(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        Ok(())
    }

    /// The store's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn meta_u64(&self, key: &str) -> Result<u64, Error> {
        let txn = self.begin_read()?;
        let meta = txn.open_table(META)?;
        let v = meta
            .get(key)?
            .ok_or_else(|| Error::Corrupt(format!("meta `{key}` is missing")))?;
        le_u64(v.value(), key)
    }

    /// The last committed sequence number, 0 for an empty store.
    pub fn last_seq(&self) -> Result<u64, Error> {
        self.meta_u64(KEY_LAST_SEQ)
    }

    /// Appends source deltas to the log in one durable transaction (a group commit), together
    /// with the dictionary strings first used by them (`strings[i]` gets id `first_id + i`),
    /// and returns their sequence numbers. When this returns, they are on disk.
    pub fn append<S: AsRef<str>>(
        &self,
        deltas: &[&[u8]],
        first_id: u64,
        strings: &[S],
    ) -> Result<Vec<u64>, Error> {
        let written = self.write(|txn| append_in(txn, deltas, first_id, strings));
        let failure = match written {
            Ok(appended) => return Ok(appended.seqs),
            Err(failure) => failure,
        };
        let what = |before: Option<&Appended>| match before {
            Some(a) if !deltas.is_empty() => {
                format!(
                    "source deltas seq {}..={}",
                    a.last + 1,
                    a.last + deltas.len() as u64
                )
            }
            _ if !deltas.is_empty() => format!(
                "the {} source delta(s) after the last committed seq",
                deltas.len()
            ),
            _ => format!("{} dictionary strings", strings.len()),
        };
        let Some(appended) = failure.at_commit else {
            return Err(Error::NotCommitted {
                what: what(None),
                source: Box::new(failure.error),
            });
        };
        // The commit failed: read the store back to tell whether it took place.
        let what = what(Some(&appended));
        let after = (
            appended.last + deltas.len() as u64,
            appended.dict_len + strings.len() as u64,
        );
        match self.settle_commit() {
            Ok(now) if now == after => Ok(appended.seqs),
            Ok(now) if now == (appended.last, appended.dict_len) => Err(Error::NotCommitted {
                what,
                source: Box::new(failure.error),
            }),
            Ok((seq, dict)) => Err(Error::Corrupt(format!(
                "after a failed commit of {what}, the store holds last seq {seq} and {dict} strings, neither what it held before ({}, {}) nor after ({}, {})",
                appended.last, appended.dict_len, after.0, after.1
            ))),
            Err(reopen) => Err(Error::InDoubt {
                what,
                source: Box::new(failure.error),
                reopen: Box::new(reopen),
            }),
        }
    }

    /// After a failed commit: reopens the database, reads the last seq and the number of
    /// strings back, and commits an empty transaction so that what is read is durable.
    fn settle_commit(&self) -> Result<(u64, u64), Error> {
        self.db.mark_failed();
        if let Err(reopen) = self.db.reopen_if_failed() {
            // The storage still fails: read the file back without writing to it.
            return self
                .db
                .read_back(|txn| {
                    let meta = txn.open_table(META)?;
                    let read = |key: &str| -> Result<u64, Error> {
                        let v = meta
                            .get(key)?
                            .ok_or_else(|| Error::Corrupt(format!("meta `{key}` is missing")))?;
                        le_u64(v.value(), key)
                    };
                    Ok((read(KEY_LAST_SEQ)?, read(KEY_DICT_LEN)?))
                })
                .map_err(|_| reopen);
        }
        let now = (self.last_seq()?, self.meta_u64(KEY_DICT_LEN)?);
        let txn = self.begin_write()?;
        txn.commit().map_err(|e| self.db.failure(e.into()))?;
        Ok(now)
    }

    /// The source-log entries with `seq >= from`, in order.
    pub fn log_from(&self, from: u64) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        let mut out = Vec::new();
        self.for_each_log(from, |seq, bytes| {
            out.push((seq, bytes.to_vec()));
            Ok::<(), Error>(())
        })?;
        Ok(out)
    }

    /// Calls `f` on each source-log entry with `seq >= from`, in order.
    pub fn for_each_log<E: From<Error>>(
        &self,
        from: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let txn = self.begin_read()?;
        let log = txn.open_table(LOG).map_err(Error::from)?;
        for entry in log.range(from..).map_err(Error::from)? {
            let (k, v) = entry.map_err(Error::from)?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }

    /// The oldest retained source-log entry's sequence number.
    pub fn first_log_seq(&self) -> Result<Option<u64>, Error> {
        let txn = self.begin_read()?;
        let log = txn.open_table(LOG)?;
        Ok(log.first()?.map(|(k, _)| k.value()))
    }

    /// Every interned string, by id.
    pub fn strings(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        self.for_each_string(|_, s| out.push(s.to_string()))?;
        Ok(out)
    }

    /// The number of interned strings.
    pub fn string_count(&self) -> Result<u64, Error> {
        let txn = self.begin_read()?;
        Ok(txn.open_table(DICT)?.len()?)
    }

    /// Calls `f(id, string)` for every interned string, in id order (`0, 1, 2, ...`), without
    /// allocating one `String` each. Ids that are not dense are a corrupt store.
    pub fn for_each_string(&self, f: impl FnMut(u64, &str)) -> Result<u64, Error> {
        self.for_each_string_in(0, u64::MAX, f)
    }

    /// Calls `f(i, chunk)` for the chunks `range` of a revision, in order, without copying
    /// them (several ranges can be read by several threads at once). A chunk of the range that
    /// is missing is a corrupt store.
    pub fn for_each_revision_chunk<E: From<Error>>(
        &self,
        replica: &str,
        as_of: u64,
        range: std::ops::Range<u32>,
        mut f: impl FnMut(u32, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let txn = self.begin_read()?;
        let chunks = txn.open_table(CHUNKS).map_err(Error::from)?;
        let mut next = range.start;
        let entries = chunks
            .range((replica, as_of, range.start)..(replica, as_of, range.end))
            .map_err(Error::from)?;
        for entry in entries {
            let (k, v) = entry.map_err(Error::from)?;
            let i = k.value().2;
            if i != next {
                break;
            }
            f(i, v.value())?;
            next += 1;
        }
        if next != range.end {
            return Err(Error::Corrupt(format!(
                "revision ({replica}, {as_of}) lacks chunk {next}"
            ))
            .into());
        }
        Ok(())
    }

    /// Calls `f(id, string)` for the interned strings with ids in `from..to`, in id order,
    /// as [`Store::for_each_string`] does for all of them (several ranges can be read by
    /// several threads at once). Returns the number read; ids in the range that are not dense
    /// are a corrupt store.
    pub fn for_each_string_in(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, &str),
    ) -> Result<u64, Error> {
        let txn = self.begin_read()?;
        let dict = txn.open_table(DICT)?;
        let mut next = from;
        for entry in dict.range(from..to)? {
            let (k, v) = entry?;
            if k.value() != next {
                return Err(Error::Corrupt(format!(
                    "dictionary id {} follows id {}: ids must be dense",
                    k.value(),
                    next as i64 - 1
                )));
            }
            f(next, v.value());
            next += 1;
        }
        Ok(next - from)
    }

    /// Writes revisions of several replicas, all as of `as_of`, in one transaction, with the
    /// dictionary strings they use that are not yet stored (`strings[i]` gets id
    /// `first_id + i`). A revision that already exists at the same `(replica, as_of)` is
    /// replaced.
    pub fn write_revisions<S: AsRef<str>>(
        &self,
        as_of: u64,
        writes: &[RevisionWrite],
        first_id: u64,
        strings: &[S],
    ) -> Result<(), Error> {
        self.write(|txn| write_revisions_in(txn, as_of, writes, first_id, strings))
            .map_err(WriteFailure::into_error)
    }

    /// Every stored revision's header, by replica then `as_of`.
    pub fn revisions(&self) -> Result<Vec<RevisionInfo>, Error> {
        let txn = self.begin_read()?;
        let revs = txn.open_table(REVISIONS)?;
        let mut out = Vec::new();
        for entry in revs.iter()? {
            let (k, v) = entry?;
            let (replica, as_of) = k.value();
            out.push(RevisionInfo::decode(replica, as_of, v.value())?);
        }
        Ok(out)
    }

    /// The chunks of one revision, in order.
    pub fn revision_chunks(&self, replica: &str, as_of: u64) -> Result<Vec<Vec<u8>>, Error> {
        let txn = self.begin_read()?;
        let revs = txn.open_table(REVISIONS)?;
        let info = match revs.get((replica, as_of))? {
            Some(v) => RevisionInfo::decode(replica, as_of, v.value())?,
            None => {
                return Err(Error::Missing(format!(
                    "no revision of `{replica}` as of seq {as_of}"
                )));
            }
        };
        let chunks = txn.open_table(CHUNKS)?;
        let mut out = Vec::with_capacity(info.chunks as usize);
        for entry in chunks.range((replica, as_of, 0u32)..=(replica, as_of, u32::MAX))? {
            let (_, v) = entry?;
            out.push(v.value().to_vec());
        }
        if out.len() != info.chunks as usize {
            return Err(Error::Corrupt(format!(
                "revision ({replica}, {as_of}) has {} chunks, its header says {}",
                out.len(),
                info.chunks
            )));
        }
        Ok(out)
    }

    /// Deletes revisions and the source-log entries with `seq <= log_through`, in one
    /// transaction. Which ones may go is the caller's decision (the engine's GC plan).
    pub fn collect_garbage(
        &self,
        revisions: &[(String, u64)],
        log_through: Option<u64>,
    ) -> Result<(), Error> {
        self.write(|txn| {
            let mut revs = txn.open_table(REVISIONS)?;
            let mut chunks = txn.open_table(CHUNKS)?;
            for (replica, as_of) in revisions {
                delete_revision_in(&mut revs, &mut chunks, replica, *as_of)?;
            }
            if let Some(through) = log_through {
                let mut log = txn.open_table(LOG)?;
                log.retain_in(..=through, |_, _| false)?;
            }
            Ok(())
        })
        .map_err(WriteFailure::into_error)
    }

    /// Sizes of what the store holds.
    pub fn stats(&self) -> Result<StoreStats, Error> {
        let last_seq = self.last_seq()?;
        let txn = self.begin_read()?;
        let log = txn.open_table(LOG)?;
        let dict = txn.open_table(DICT)?;
        let revs = txn.open_table(REVISIONS)?;
        Ok(StoreStats {
            last_seq,
            log_entries: log.len()?,
            first_log_seq: log.first()?.map(|(k, _)| k.value()),
            strings: dict.len()?,
            revisions: revs.len()?,
            file_bytes: std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
        })
    }

    /// Checks the store's invariants; returns the problems found (empty when it is sound).
    /// `decode_log` and `decode_chunk` check that opaque values decode.
    pub fn check(
        &self,
        mut decode_log: impl FnMut(&[u8]) -> Result<(), String>,
        mut decode_chunk: impl FnMut(&[u8]) -> Result<u64, String>,
    ) -> Result<Vec<String>, Error> {
        let mut problems = Vec::new();
        let last_seq = self.last_seq()?;
        let dict_len = self.meta_u64(KEY_DICT_LEN)?;
        let strings = self.strings();
        match strings {
            Ok(s) if s.len() as u64 != dict_len => problems.push(format!(
                "dictionary holds {} strings, metadata says {dict_len}",
                s.len()
            )),
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
        }
        let txn = self.begin_read()?;
        let log = txn.open_table(LOG)?;
        let mut previous: Option<u64> = None;
        for entry in log.iter()? {
            let (k, v) = entry?;
            let seq = k.value();
            if seq == 0 || seq > last_seq {
                problems.push(format!("log entry {seq} is outside 1..={last_seq}"));
            }
            if let Some(p) = previous
                && seq != p + 1
            {
                problems.push(format!("log has a gap between seq {p} and seq {seq}"));
            }
            previous = Some(seq);
            if let Err(e) = decode_log(v.value()) {
                problems.push(format!("log entry {seq} does not decode: {e}"));
            }
        }
        if let Some(p) = previous
            && p != last_seq
        {
            problems.push(format!(
                "log ends at seq {p}, metadata says last seq {last_seq}"
            ));
        }
        drop(log);
        drop(txn);
        for info in self.revisions()? {
            if info.as_of > last_seq {
                problems.push(format!(
                    "revision ({}, {}) is newer than the last seq {last_seq}",
                    info.replica, info.as_of
                ));
            }
            match self.revision_chunks(&info.replica, info.as_of) {
                Ok(chunks) => {
                    let mut records = 0u64;
                    for (i, c) in chunks.iter().enumerate() {
                        match decode_chunk(c) {
                            Ok(n) => records += n,
                            Err(e) => problems.push(format!(
                                "revision ({}, {}) chunk {i} does not decode: {e}",
                                info.replica, info.as_of
                            )),
                        }
                    }
                    if records != info.records {
                        problems.push(format!(
                            "revision ({}, {}) has {records} records, its header says {}",
                            info.replica, info.as_of, info.records
                        ));
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        Ok(problems)
    }

    /// Rewrites the file to release the space of deleted entries.
    pub fn compact_file(&mut self) -> Result<(), Error> {
        match self.db.database_mut()? {
            Some(db) => {
                db.compact().map_err(|e| self.db.failure(e.into()))?;
                Ok(())
            }
            None => Err(Error::ReadOnly(self.path.clone())),
        }
    }
}

/// What [`append_in`] wrote: the last seq and the number of strings before it, and the new
/// seqs.
struct Appended {
    last: u64,
    dict_len: u64,
    seqs: Vec<u64>,
}

/// A failed write transaction: why, and what its body returned if it failed at commit.
struct WriteFailure<T> {
    error: Error,
    at_commit: Option<T>,
}

impl<T> WriteFailure<T> {
    /// The error, for a write whose outcome either way leaves a sound store (a revision
    /// capture, garbage collection): the next operation reopens the database if need be.
    fn into_error(self) -> Error {
        self.error
    }
}

fn write_revisions_in<S: AsRef<str>>(
    txn: &WriteTransaction,
    as_of: u64,
    writes: &[RevisionWrite],
    first_id: u64,
    strings: &[S],
) -> Result<(), Error> {
    append_in(txn, &[], first_id, strings)?;
    let mut revs = txn.open_table(REVISIONS)?;
    let mut chunks = txn.open_table(CHUNKS)?;
    for w in writes {
        delete_revision_in(&mut revs, &mut chunks, &w.replica, as_of)?;
        let info = RevisionInfo {
            replica: w.replica.clone(),
            as_of,
            logic_version: w.logic_version,
            description_hash: w.description_hash,
            records: w.records,
            chunks: w.chunks.len() as u32,
        };
        revs.insert((w.replica.as_str(), as_of), info.encode().as_slice())?;
        for (i, c) in w.chunks.iter().enumerate() {
            chunks.insert((w.replica.as_str(), as_of, i as u32), c.as_slice())?;
        }
    }
    Ok(())
}

fn append_in<S: AsRef<str>>(
    txn: &WriteTransaction,
    deltas: &[&[u8]],
    first_id: u64,
    strings: &[S],
) -> Result<Appended, Error> {
    let mut meta = txn.open_table(META)?;
    let read = |meta: &redb::Table<&str, &[u8]>, key: &str| -> Result<u64, Error> {
        let v = meta
            .get(key)?
            .ok_or_else(|| Error::Corrupt(format!("meta `{key}` is missing")))?;
        le_u64(v.value(), key)
    };
    let last = read(&meta, KEY_LAST_SEQ)?;
    let dict_len = read(&meta, KEY_DICT_LEN)?;
    if !strings.is_empty() {
        if first_id != dict_len {
            return Err(Error::Corrupt(format!(
                "new dictionary ids start at {first_id}, but the store holds {dict_len}"
            )));
        }
        let mut dict = txn.open_table(DICT)?;
        for (i, s) in strings.iter().enumerate() {
            dict.insert(first_id + i as u64, s.as_ref())?;
        }
        meta.insert(
            KEY_DICT_LEN,
            (dict_len + strings.len() as u64).to_le_bytes().as_slice(),
        )?;
    }
    let mut log = txn.open_table(LOG)?;
    let mut seqs = Vec::with_capacity(deltas.len());
    for (i, d) in deltas.iter().enumerate() {
        let seq = last + 1 + i as u64;
        log.insert(seq, *d)?;
        seqs.push(seq);
    }
    meta.insert(
        KEY_LAST_SEQ,
        (last + deltas.len() as u64).to_le_bytes().as_slice(),
    )?;
    Ok(Appended {
        last,
        dict_len,
        seqs,
    })
}

fn delete_revision_in(
    revs: &mut redb::Table<(&str, u64), &[u8]>,
    chunks: &mut redb::Table<(&str, u64, u32), &[u8]>,
    replica: &str,
    as_of: u64,
) -> Result<(), Error> {
    revs.remove((replica, as_of))?;
    chunks.retain_in(
        (replica, as_of, 0u32)..=(replica, as_of, u32::MAX),
        |_, _| false,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
