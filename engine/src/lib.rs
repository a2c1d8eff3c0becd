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

// The modules, bottom to top: each uses only those listed before it (see docs/design.md).
mod api;
mod bits;
mod capture;
mod check;
mod codec;
mod controller;
mod dag;
mod decoders;
mod description;
mod dictionary;
mod error;
mod gc;
mod history;
#[cfg(feature = "test-util")]
pub mod oracle;
mod record;
mod restore;
mod revision;
mod runtime;
mod seeds;
mod seq;
mod stored;
mod updates;
mod upgrade;
mod worker;

pub use api::{
    CountSubscription, Delta, DeltaCount, DeltaKind, Frontier, RebuildOutcome, ReplicaStatus,
    RuntimeConfig, SourceDelta, Split, Status, Subscription,
};
pub use dag::Dag;
pub use description::{
    Compute, Input, InputMode, JoinView, PartitionFn, ReplicaDescription, ReplicaId,
};
pub use dictionary::{Dictionary, Id, Strings};
pub use error::{DagError, Error, catch_damage, damage_panic};
pub use prr_persist::{Quarantined, RevisionInfo, StoreStats};
pub use prr_persist::{RecordUpgrade, UpgradeStrings};
pub use record::{Coll, Record, RecordIds};
pub use revision::Revision;
pub use runtime::Runtime;
pub use seeds::{Resume, Seeds, Shared};
pub use seq::Seq;
pub use upgrade::{LegacyRecords, read_encoded, record_upgrade};

/// Re-exports of the dataflow crates, so replica code uses the same versions as the engine.
pub mod dataflow {
    pub use differential_dataflow;
    pub use timely;
}
