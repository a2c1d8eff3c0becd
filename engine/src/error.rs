//! Errors of the engine.

use crate::Seq;

/// An error of the runtime. A caller's misuse (unknown replica, pushing to a derived replica)
/// is told apart from the store failing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The replica descriptions are invalid.
    #[error(transparent)]
    Dag(#[from] crate::DagError),
    /// No replica has this name.
    #[error("unknown replica `{name}`; the replicas are: {}", known.join(", "))]
    UnknownReplica {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },
    /// Source deltas only update source replicas.
    #[error("replica `{0}` is derived: source deltas only update source replicas")]
    NotASource(String),
    /// The operation needs a store.
    #[error("{0} needs a store")]
    NoStore(&'static str),
    /// A `Seq` after the last committed one.
    #[error("{seq} is in the future: the last committed is {last}")]
    FutureSeq {
        /// The `Seq` asked for.
        seq: Seq,
        /// The last committed `Seq`.
        last: Seq,
    },
    /// What was asked for is older than the retained log and revisions reach.
    #[error("history not retained: {0}")]
    HistoryUnavailable(String),
    /// The timely workers could not start.
    #[error("cannot start the workers: {0}")]
    Workers(String),
    /// A worker thread stopped (it panicked); the runtime cannot go on.
    #[error("a dataflow worker stopped unexpectedly")]
    WorkerFailed,
    /// A stored value does not decode as this program's records.
    #[error("store is damaged or was written by other replica code: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] prr_persist::Error),
}
