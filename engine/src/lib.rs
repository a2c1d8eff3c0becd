//! `prr-engine`: replica descriptions compiled into differential dataflow, and the embedded
//! runtime that runs them, persisted in a `prr-persist` store.
//!
//! A [`Dag`] of [`ReplicaDescription`]s is compiled into one shared dataflow per timely worker,
//! with `Seq` (the source sequence number) as its timestamp: an input per source replica, an
//! arrangement and a probe per replica. The [`Runtime`] feeds source deltas, steps the workers
//! until every replica's frontier has passed a `Seq`, and delivers each replica's consolidated
//! deltas in `Seq` order.
//!
//! ```
//! use prr_engine::{Dag, Input, ReplicaDescription, Runtime, RuntimeConfig, SourceDelta};
//!
//! // numbers (a source) and their squares (derived), partitioned by value modulo 10.
//! let dag = Dag::new(vec![
//!     ReplicaDescription::<u64>::source("numbers", "n % 10", |n| n % 10),
//!     ReplicaDescription::derived("squares", "n % 10", |n| n % 10, vec![Input::deltas("numbers")],
//!         |inputs| inputs[0].clone().map(|n| n * n)),
//! ]).unwrap();
//! let mut rt = Runtime::start(RuntimeConfig::new(), dag).unwrap();
//! let numbers = rt.replica("numbers").unwrap();
//! let squares = rt.replica("squares").unwrap();
//! let sub = rt.subscribe(squares).unwrap();
//! let mut delta = SourceDelta::new();
//! delta.insert(numbers, 3);
//! delta.insert(numbers, 4);
//! let seq = rt.push(delta).unwrap();
//! rt.step_until(seq).unwrap();
//! let d = sub.try_iter().next().unwrap();
//! assert_eq!((d.seq, d.updates), (seq, vec![(9, 1), (16, 1)]));
//! assert_eq!(rt.read(squares, Some(6)).unwrap(), vec![(16, 1)]);
//! rt.shutdown().unwrap();
//! ```

mod codec;
mod description;
mod dictionary;
mod engine;
mod error;
#[cfg(feature = "test-util")]
pub mod oracle;
mod resume;
mod runtime;
mod seq;
mod worker;

pub use description::{
    Coll, Compute, Dag, DagError, Input, InputMode, JoinView, PartitionFn, Record,
    ReplicaDescription, ReplicaId,
};
pub use dictionary::{Dictionary, Id, Strings};
pub use engine::{Delta, DeltaKind, Frontier, RuntimeConfig, SourceDelta, Split, Subscription};
pub use error::Error;
pub use prr_persist::{RevisionInfo, StoreStats};
pub use resume::{Resume, Revision, Seeds, Shared};
pub use runtime::{RebuildOutcome, ReplicaStatus, Runtime, Status};
pub use seq::Seq;

/// Re-exports of the dataflow crates, so replica code uses the same versions as the engine.
pub mod dataflow {
    pub use differential_dataflow;
    pub use timely;
}
