//! Errors of the store.

use std::path::PathBuf;

/// An error of the store: a caller's misuse or a damaged file is told apart from the storage
/// failing underneath.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process has the store open.
    #[error(
        "store {path} is in use by another process; wait for it to finish, or point --store / PRR_STORE at another file"
    )]
    Locked {
        /// The store's path.
        path: PathBuf,
    },
    /// The file was written by a newer or unknown format.
    #[error(
        "store {path} has format version {found}, but this prr reads version {supported}; use a prr that matches the store, or start a new store"
    )]
    FormatVersion {
        /// The store's path.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file is not a prr store (not redb, or redb without prr's metadata).
    #[error("{path} is not a prr store: {reason}")]
    NotAStore {
        /// The file's path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file cannot be opened or created: permission denied, a symbolic link loop, a
    /// parent that is not a directory, ... (the operating system's reason, in words).
    #[error("cannot open store {path}: {}", io_reason(.cause))]
    Io {
        /// The store's path.
        path: PathBuf,
        /// What the operating system said (its text is already in the message, so it is not
        /// chained as a source: a chained source is printed again).
        cause: std::io::Error,
    },
    /// A value in the store does not have the documented layout.
    #[error("store is damaged: {0}")]
    Corrupt(String),
    /// A write through a read-only handle.
    #[error("store {0} is open read-only")]
    ReadOnly(PathBuf),
    /// A requested entry is not in the store.
    #[error("{0}")]
    Missing(String),
    /// The storage engine failed.
    #[error("storage error: {0}")]
    Storage(#[from] redb::Error),
    /// A write failed and is known not to have been committed: nothing of it is in the store.
    #[error("{what} not committed: {source}")]
    NotCommitted {
        /// What was being written, e.g. `source deltas seq 5..=7`.
        what: String,
        /// Why it failed.
        source: Box<Error>,
    },
    /// The storage failed while a write was being committed, and the store could not be read
    /// back to tell whether the commit took place: either all of it is in the store or nothing.
    /// The next operation reopens the store and settles it (its last seq tells).
    #[error(
        "{what} may or may not be committed: {source}; the store could not be read back ({reopen}); its last seq tells once the storage works again"
    )]
    InDoubt {
        /// What was being written, e.g. `source deltas seq 5..=7`.
        what: String,
        /// Why the commit failed.
        source: Box<Error>,
        /// Why the store could not be read back.
        reopen: Box<Error>,
    },
}

impl Error {
    /// Whether this is a failure of the storage underneath (an I/O error, a full disk, a
    /// failed fsync, or an operation refused after one), as opposed to misuse or damage.
    pub fn is_storage_failure(&self) -> bool {
        match self {
            Error::Storage(e) => matches!(
                e,
                redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed
            ),
            Error::NotCommitted { source, .. } => source.is_storage_failure(),
            Error::InDoubt { .. } => true,
            _ => false,
        }
    }
}

/// `ELOOP`: too many levels of symbolic links (`std::io::ErrorKind::FilesystemLoop` is not
/// stable yet, so the number is matched; it differs between Linux and the BSDs).
const ELOOP: i32 = if cfg!(any(target_os = "linux", target_os = "android")) {
    40
} else {
    62
};

/// Why an I/O operation on the store's path failed, in words that say what to look at.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    if e.raw_os_error() == Some(ELOOP) {
        return "a symbolic link loop (too many levels of symbolic links)".into();
    }
    match e.kind() {
        ErrorKind::PermissionDenied => {
            "permission denied; check the permissions of the file and its directories".into()
        }
        ErrorKind::NotFound => "no such file or directory".into(),
        ErrorKind::NotADirectory => "a component of the path is not a directory".into(),
        ErrorKind::IsADirectory => "it is a directory, not a file".into(),
        ErrorKind::ReadOnlyFilesystem => "the file system is read-only".into(),
        ErrorKind::StorageFull => "no space left on the device".into(),
        _ => e.to_string(),
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.into())
            }
        }
    )*};
}

storage_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError
);
