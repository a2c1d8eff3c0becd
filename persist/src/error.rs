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
