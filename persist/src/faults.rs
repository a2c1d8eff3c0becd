//! Fault injection for tests: a redb storage backend over a file that fails writes, fsyncs or
//! space on command ([`FaultyBackend`], opened with `Store::open_with_backend`).

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use redb::StorageBackend;
use redb::backends::FileBackend;

/// A kind of storage fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `write` fails with an I/O error.
    Write,
    /// `sync_data` (fsync) fails with an I/O error; the data written stays where it was (in
    /// the operating system's cache), as after a real failed fsync.
    Sync,
    /// The disk is full: `write` and growing the file fail with `StorageFull` (ENOSPC).
    Full,
    /// The device is gone: once its turn comes (counted in writes), every operation fails,
    /// reads included, so a failed commit cannot even be read back.
    Device,
}

#[derive(Debug, Default)]
struct State {
    /// The armed fault and the number of its operations still to let through.
    armed: Option<(Fault, u64)>,
    /// Whether the armed fault has failed an operation.
    fired: bool,
    /// The operations of each kind seen (writes, fsyncs, growths), for choosing where to fail.
    writes: u64,
    syncs: u64,
}

/// The switch of one or more [`FaultyBackend`]s (shared: the backends a store reopens share
/// it with the test).
#[derive(Clone, Debug, Default)]
pub struct Faults(Arc<Mutex<State>>);

impl Faults {
    /// No fault armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms `fault`: its operations (writes for [`Fault::Write`] and [`Fault::Full`], fsyncs
    /// for [`Fault::Sync`]) succeed `after` more times, then every one fails until
    /// [`Faults::clear`].
    pub fn arm(&self, fault: Fault, after: u64) {
        let mut s = self.lock();
        s.armed = Some((fault, after));
        s.fired = false;
    }

    /// Disarms: every operation succeeds from now on.
    pub fn clear(&self) {
        self.lock().armed = None;
    }

    /// Whether the armed (or last cleared) fault has failed an operation since it was armed.
    pub fn fired(&self) -> bool {
        self.lock().fired
    }

    /// The number of writes and of fsyncs seen so far.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.lock();
        (s.writes, s.syncs)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts an operation that `matches` the armed fault; fails it if its turn has come.
    fn operation(&self, is_sync: bool) -> std::io::Result<()> {
        let mut s = self.lock();
        if is_sync {
            s.syncs += 1;
        } else {
            s.writes += 1;
        }
        let Some((fault, left)) = s.armed else {
            return Ok(());
        };
        if (fault == Fault::Sync) != is_sync {
            return Ok(());
        }
        if left > 0 {
            s.armed = Some((fault, left - 1));
            return Ok(());
        }
        s.fired = true;
        Err(match fault {
            Fault::Full => std::io::Error::from(std::io::ErrorKind::StorageFull),
            Fault::Write => std::io::Error::other("injected write failure"),
            Fault::Sync => std::io::Error::other("injected fsync failure"),
            Fault::Device => std::io::Error::other("injected device failure"),
        })
    }

    /// Whether the device is gone now (reads fail too).
    fn gone(&self) -> std::io::Result<()> {
        let s = self.lock();
        match s.armed {
            Some((Fault::Device, 0)) if s.fired => {
                Err(std::io::Error::other("injected device failure"))
            }
            _ => Ok(()),
        }
    }

    /// Whether the disk is full now (growing the file fails).
    fn full(&self) -> bool {
        let s = self.lock();
        matches!(s.armed, Some((Fault::Full, 0)))
    }
}

/// A redb storage backend over a file whose writes, fsyncs and growth fail when its
/// [`Faults`] say so. It takes no file locks: one test opens the file at a time.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: FileBackend,
    faults: Faults,
}

impl FaultyBackend {
    /// Opens (or creates) the file at `path`.
    pub fn open(path: &Path, faults: &Faults) -> std::io::Result<Self> {
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(FaultyBackend {
            inner: FileBackend::new(file).map_err(std::io::Error::other)?,
            faults: faults.clone(),
        })
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.faults.gone()?;
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.faults.gone()?;
        if self.faults.full() && len > self.inner.len()? {
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.faults.gone()?;
        self.faults.operation(true)?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.faults.operation(false)?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }
}
