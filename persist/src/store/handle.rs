//! The redb database under a [`Store`](super::Store), and reopening it after a storage failure.
//!
//! After a write or an fsync fails, redb fails every later operation on that database with
//! `PreviousIo` until it is dropped and opened again (which repairs the file). A handle that
//! saw such a failure is marked failed; the next operation reopens the database through the
//! handle's opener (the file's path, or a custom backend in tests) and goes on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use redb::{
    Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, StorageBackend, WriteTransaction,
};

use crate::Error;

/// Opens the database again (for writing).
pub(super) type Opener = Arc<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// Opens the file underneath for reading, to read it back while the database cannot be
/// reopened for writing.
pub(super) type ReadOpener =
    Arc<dyn Fn() -> std::io::Result<Box<dyn StorageBackend>> + Send + Sync>;

/// The database underneath: open for writing, read-only (which never changes the file), or
/// closed after a failure until it is reopened.
pub(super) enum Db {
    Write(Database),
    Read(ReadOnlyDatabase),
    Closed,
}

/// The database and how to reopen it.
pub(super) struct Handle {
    db: RwLock<Db>,
    /// `None` for a read-only handle, which never writes and so never needs reopening.
    opener: Option<Opener>,
    read_opener: Option<ReadOpener>,
    failed: AtomicBool,
}

impl Handle {
    pub(super) fn write(db: Database, opener: Opener, read_opener: ReadOpener) -> Self {
        Handle {
            db: RwLock::new(Db::Write(db)),
            opener: Some(opener),
            read_opener: Some(read_opener),
            failed: AtomicBool::new(false),
        }
    }

    pub(super) fn read_only(db: ReadOnlyDatabase) -> Self {
        Handle {
            db: RwLock::new(Db::Read(db)),
            opener: None,
            read_opener: None,
            failed: AtomicBool::new(false),
        }
    }

    pub(super) fn is_read_only(&self) -> bool {
        self.opener.is_none()
    }

    /// Records that the storage failed under an operation: the next one reopens the database.
    pub(super) fn mark_failed(&self) {
        if self.opener.is_some() {
            self.failed.store(true, Ordering::Release);
        }
    }

    /// Reopens the database if an operation failed in the storage since it was opened.
    pub(super) fn reopen_if_failed(&self) -> Result<(), Error> {
        let Some(opener) = &self.opener else {
            return Ok(());
        };
        if !self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if !self.failed.load(Ordering::Acquire) {
            return Ok(()); // another thread reopened it
        }
        // The failed database goes first: it holds the file's lock.
        *db = Db::Closed;
        *db = Db::Write(opener()?);
        self.failed.store(false, Ordering::Release);
        Ok(())
    }

    /// A read transaction on the file as it is now, opened read-only apart from this handle,
    /// for when the database cannot be reopened for writing (the storage still fails).
    pub(super) fn read_back<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let Some(read_opener) = &self.read_opener else {
            return f(&self.begin_read()?);
        };
        let _closed = self.db.write().unwrap_or_else(PoisonError::into_inner);
        let scratch = Scratch {
            base: read_opener().map_err(redb::StorageError::from)?,
            writes: Mutex::new((None, Vec::new())),
        };
        let db = super::builder().create_with_backend(scratch)?;
        f(&db.begin_read()?)
    }

    pub(super) fn begin_read(&self) -> Result<ReadTransaction, Error> {
        self.reopen_if_failed()?;
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let txn = match &*db {
            Db::Write(db) => db.begin_read(),
            Db::Read(db) => db.begin_read(),
            Db::Closed => return Err(closed()),
        };
        txn.map_err(|e| self.failure(e.into()))
    }

    /// A write transaction, or `None` for a read-only handle.
    pub(super) fn begin_write(&self) -> Result<Option<WriteTransaction>, Error> {
        self.reopen_if_failed()?;
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        match &*db {
            Db::Write(db) => db
                .begin_write()
                .map(Some)
                .map_err(|e| self.failure(e.into())),
            Db::Read(_) => Ok(None),
            Db::Closed => Err(closed()),
        }
    }

    /// Marks the handle failed if `e` is a failure of the storage, and returns it.
    pub(super) fn failure(&self, e: Error) -> Error {
        if e.is_storage_failure() {
            self.mark_failed();
        }
        e
    }

    /// Takes the database out, leaving the handle closed (to drop it where a panic of the
    /// storage library is contained).
    pub(super) fn close(&mut self) -> Db {
        let db = self.db.get_mut().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(db, Db::Closed)
    }

    /// The writable database, for operations that need it exclusively (compaction).
    pub(super) fn database_mut(&mut self) -> Result<Option<&mut Database>, Error> {
        self.reopen_if_failed()?;
        match self.db.get_mut().unwrap_or_else(PoisonError::into_inner) {
            Db::Write(db) => Ok(Some(db)),
            Db::Read(_) => Ok(None),
            Db::Closed => Err(closed()),
        }
    }
}

fn closed() -> Error {
    Error::Storage(redb::Error::DatabaseClosed)
}

/// A storage over a file that is never written: writes (a repair's) stay in memory. Opening a
/// database on it reads what a reopened file will hold, and repairs it if need be, without
/// writing to a disk that fails.
#[derive(Debug)]
struct Scratch {
    base: Box<dyn StorageBackend>,
    writes: Mutex<Overlay>,
}

/// The length set, if any, and the writes `(offset, bytes)`, in order.
type Overlay = (Option<u64>, Vec<(u64, Vec<u8>)>);

impl StorageBackend for Scratch {
    fn len(&self) -> std::io::Result<u64> {
        match self.writes.lock().unwrap_or_else(PoisonError::into_inner).0 {
            Some(len) => Ok(len),
            None => self.base.len(),
        }
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        let base_len = self.base.len()?;
        let end = offset + out.len() as u64;
        if end > writes.0.unwrap_or(base_len).max(base_len) {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        out.fill(0);
        let from_base = base_len.min(writes.0.unwrap_or(base_len));
        if offset < from_base {
            let n = (from_base - offset).min(out.len() as u64) as usize;
            self.base.read(offset, &mut out[..n])?;
        }
        for (at, data) in &writes.1 {
            let (start, stop) = ((*at).max(offset), (at + data.len() as u64).min(end));
            if start < stop {
                out[(start - offset) as usize..(stop - offset) as usize]
                    .copy_from_slice(&data[(start - at) as usize..(stop - at) as usize]);
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        writes.0 = Some(len);
        writes.1.retain_mut(|(at, data)| {
            data.truncate(len.saturating_sub(*at) as usize);
            !data.is_empty()
        });
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut writes = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        writes.1.push((offset, data.to_vec()));
        Ok(())
    }
}
