//! `prr-benches`: the workload generator and the benchmark harness of prr.
//!
//! - [`Workload`]: a seeded generator of policy rooms, protected rooms and instance manifests
//!   at three [`Size`]s, written as the files `prr ingest` reads or handed over as parsed
//!   items.
//! - [`NaiveState`]: a from-scratch recomputation of the intents over ordinary maps, the
//!   plain-Rust peer.
//! - [`harness`]: what every benchmark binary runs on: its shared options ([`harness::args`]),
//!   its child processes ([`harness::child`]) and its markdown tables ([`harness::table`]).
//! - [`measure`]: peak memory, time, the machine and its load.
//!
//! The benchmarks are `harness = false` binaries that print markdown tables of ratios
//! measured side by side in one run (see `docs/benchmarks.md`):
//! `cargo run --release -p prr-benches --bin restore -- --size small` and
//! `--bin cold_build`.
//!
//! ```
//! use prr_benches::{Workload, WorkloadConfig, Size};
//!
//! let config = WorkloadConfig { rules: 50, memberships: 300, instances: 2, ..WorkloadConfig::for_size(Size::Small) };
//! let w = Workload::generate(&config);
//! assert_eq!(w.memberships(), 300);
//! let manifest = w.file(w.file_count() - 1);
//! assert_eq!(manifest.name, "90-manifest.json");
//! ```

pub mod drive;
pub mod harness;
pub mod measure;
mod naive;
pub mod waves;
mod workload;

pub use naive::{Matching, NaiveOutput, NaiveState};
pub use workload::{
    Size, Workload, WorkloadConfig, WorkloadFile, WorkloadStats, item_to_json, list_files,
    read_dir, read_file, state_event,
};
