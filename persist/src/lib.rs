//! `prr-persist`: the redb store of prr.
//!
//! One file holds everything a runtime needs to survive restarts and crashes:
//! - the **source log** (write-ahead): every source delta, durable before it is acknowledged,
//!   keyed by its sequence number;
//! - the **dictionary** of interned identifiers (string ids), written in the same transaction
//!   as the source delta that first uses them;
//! - **revisions**: each replica's consolidated contents as of a sequence number, in sorted
//!   chunks, with its logic version and description hash;
//! - **metadata**: the format version and the last sequence number;
//! - the **quarantine**: source deltas that a replica's computation panicked on, skipped by
//!   every replay until dropped.
//!
//! The crate knows nothing of Matrix or of dataflows: log entries and revision chunks are
//! opaque bytes. The byte layout of every table is documented in `docs/design.md`.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! let store = prr_persist::Store::open(dir.path().join("prr.redb")).unwrap();
//! let seqs = store.append(&[b"first delta".as_slice()], 0, &["@alice:example.org"]).unwrap();
//! assert_eq!(seqs, vec![1]);
//! assert_eq!(store.last_seq().unwrap(), 1);
//! let log: Vec<_> = store.log_from(1).unwrap();
//! assert_eq!(log, vec![(1, b"first delta".to_vec())]);
//! ```

mod error;
#[cfg(feature = "test-util")]
mod faults;
mod store;

pub use error::Error;
#[cfg(feature = "test-util")]
pub use faults::{Fault, Faults, FaultyBackend};
pub use store::{
    ChunkRef, ChunkWrite, FORMAT_VERSION, Quarantined, RecordUpgrade, RecordsUnchanged,
    RevisionInfo, RevisionWrite, Store, StoreStats, UpgradeStrings, chunk_key,
};
#[cfg(feature = "test-util")]
pub use store::{stored_chunk, stored_log_entry};
