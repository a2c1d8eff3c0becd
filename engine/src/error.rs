//! Errors of the engine: the runtime's [`Error`] and the DAG's [`DagError`].

use crate::seq::Seq;

/// An error of the runtime. A caller's misuse (unknown replica, pushing to a derived replica)
/// is told apart from the store failing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The replica descriptions are invalid.
    #[error(transparent)]
    Dag(#[from] DagError),
    /// No replica has this name.
    #[error("unknown replica `{name}`; the replicas are: {}", known.join(", "))]
    UnknownReplica {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },
    /// The operation is one of views (replicas evaluated when read).
    #[error("replica `{0}` is not a view")]
    NotAView(String),
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
    /// A `RuntimeConfig` setting is out of its range (see `RuntimeConfig::validate`).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The timely workers could not start.
    #[error("cannot start the workers: {0}")]
    Workers(String),
    /// A worker thread stopped (it panicked, with this message); the runtime cannot go on.
    #[error("a dataflow worker stopped unexpectedly: {0}")]
    WorkerFailed(String),
    /// A stored value does not decode as this program's records.
    #[error("store is damaged or was written by other replica code: {0}")]
    Corrupt(String),
    /// `ack_poisoned` of a `Seq` that is not quarantined.
    #[error(
        "{seq} is not a quarantined delta; quarantined: {}",
        list_seqs(poisoned)
    )]
    NotPoisoned {
        /// The `Seq` asked for.
        seq: Seq,
        /// The quarantined ones.
        poisoned: Vec<Seq>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] prr_persist::Error),
    /// Source deltas were committed (durable) and fed, but the revision capture due after
    /// them failed. Nothing is lost: the next capture retries it.
    #[error(
        "{} committed and durable, but the revision capture due after it failed (the next capture retries it): {source}",
        seq_range(committed)
    )]
    CaptureFailed {
        /// The `Seq`s of the source deltas committed by the call that failed.
        committed: Vec<Seq>,
        /// Why the capture failed.
        source: Box<Error>,
    },
}

impl Error {
    /// The source deltas that the call returning this error committed nonetheless (none
    /// unless [`Error::CaptureFailed`]).
    pub fn committed(&self) -> &[Seq] {
        match self {
            Error::CaptureFailed { committed, .. } => committed,
            _ => &[],
        }
    }

    /// Whether a commit failed without the store telling whether it took place (the next
    /// operation reads the store back): see `prr_persist::Error::InDoubt`.
    pub fn is_in_doubt(&self) -> bool {
        matches!(self, Error::Store(prr_persist::Error::InDoubt { .. }))
    }

    /// Whether the storage failed underneath (an I/O error, a full disk, a failed fsync): the
    /// operation may succeed once the fault clears.
    pub fn is_storage_failure(&self) -> bool {
        match self {
            Error::Store(e) => e.is_storage_failure(),
            Error::CaptureFailed { source, .. } => source.is_storage_failure(),
            _ => false,
        }
    }
}

/// `source deltas seq 3..=5`, for messages.
fn seq_range(seqs: &[Seq]) -> String {
    match (seqs.first(), seqs.last()) {
        (Some(a), Some(b)) if a == b => format!("source delta seq {}", a.0),
        (Some(a), Some(b)) => format!("source deltas seq {}..={}", a.0, b.0),
        _ => "no source delta".to_string(),
    }
}

/// `3, 7`, or `none`.
fn list_seqs(seqs: &[Seq]) -> String {
    if seqs.is_empty() {
        return "none".into();
    }
    let s: Vec<String> = seqs.iter().map(|s| s.0.to_string()).collect();
    s.join(", ")
}
/// An error in a set of replica descriptions. Each names the replica at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DagError {
    /// Two descriptions share a name.
    #[error("replica `{0}` is declared twice")]
    DuplicateName(String),
    /// A description names an input that no description declares.
    #[error("replica `{replica}` reads unknown input `{input}`")]
    UnknownInput {
        /// The replica whose input is unknown.
        replica: String,
        /// The unknown input's name.
        input: String,
    },
    /// The inputs form a cycle through this replica.
    #[error("replica `{0}` depends on itself through its inputs (a cycle)")]
    Cycle(String),
    /// A derived replica without inputs.
    #[error("derived replica `{0}` has no inputs")]
    NoInputs(String),
    /// A view read by a computed replica or another view: views exist only at read time.
    #[error(
        "replica `{replica}` reads view `{view}`; a view is evaluated when read and cannot be an input"
    )]
    ViewInput {
        /// The replica that reads the view.
        replica: String,
        /// The view.
        view: String,
    },
}

/// The message of a panic's payload (a `&str` or a `String`, as `panic!` makes them, or a
/// [`Damage`]).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .or_else(|| payload.downcast_ref::<Damage>().map(|d| d.0.clone()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The payload of a panic that carries damage found in the store (a revision a worker reads
/// that does not decode) out of replica code that cannot return an error: the worker catches
/// it and the runtime reports it as an error, so the panic hook does not print it.
struct Damage(String);

static QUIET_HOOK: std::sync::Once = std::sync::Once::new();

/// Runs `f`, code that may find the store damaged where it cannot return an error (a lookup
/// in a revision that does not decode, see [`damage_panic`]), outside a dataflow worker:
/// such damage becomes `Error::Corrupt`; any other panic goes on.
pub fn catch_damage<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Ok(v),
        Err(payload) => match payload.downcast::<Damage>() {
            Ok(damage) => Err(Error::Corrupt(damage.0)),
            Err(other) => std::panic::resume_unwind(other),
        },
    }
}

/// For replica code that finds the store damaged where it cannot return an error (inside a
/// computation, e.g. a seed revision that does not decode): stops the worker with `message`,
/// which the runtime reports as an error (`Error::WorkerFailed`); unlike a `panic!`, the
/// panic hook prints nothing for it.
pub fn damage_panic(message: String) -> ! {
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<Damage>().is_none() {
                previous(info);
            }
        }));
    });
    std::panic::panic_any(Damage(message))
}
