//! The harness every benchmark binary runs on: its command-line options, its child processes
//! and its markdown tables.
//!
//! - [`args`]: the options the binaries share (`--size`, `--seed`, `--workers`, limits of
//!   the children), the preparation of the workload directory they name, and the argument
//!   lists a parent passes to its children.
//! - [`child`]: running a measurement in a fresh child process of the binary (or of `node`),
//!   the JSON lines a child prints for its parent, and the node peer.
//! - [`table`]: markdown tables, their cells (seconds, bytes, ratios) and headings.

pub mod args;
pub mod child;
pub mod table;
