//! The Matrix replicas, one file each: its description (a function returning its
//! [`prr_engine::ReplicaDescription`]), its computation, its resume computation and the
//! helpers only it uses. The contract they implement is `docs/replicas.md`.
//!
//! Every derived stored replica is *resumable*: a restore derives its delta after the
//! restore point from its inputs' deltas and their contents there (see
//! [`prr_engine::Seeds`]) instead of recomputing it from scratch. With one for every derived
//! replica, a restore feeds nothing to the dataflow: every replica's revision is its base, and
//! the dataflow computes only what changes after it. Two patterns cover the replicas:
//! - a join `A ⋈ B` has the delta `dA ⋈ B_old + dA ⋈ dB + A_old ⋈ dB`: the deltas flow through
//!   the dataflow (joined with each other where two meet), and the old contents are looked up
//!   in indexes built from the seeds;
//! - a reduction `f` over groups has, for each group that changed, the delta
//!   `f(old + d) − f(old)` ([`crate::reduce::resume_reduce`]): the dataflow accumulates `d`,
//!   the old group is looked up, and `f` is the computation's own group logic.
//!
//! Every description has the logic version 1: bump a replica's own when its computation
//! changes (stores made by other logic are then rebuilt, with rebuild deltas).

pub(crate) mod acl_sync;
pub(crate) mod instances;
pub(crate) mod member_bans;
pub(crate) mod member_matches;
pub(crate) mod member_set;
pub(crate) mod outcomes;
pub(crate) mod pending;
pub(crate) mod policy_list;
pub(crate) mod policy_room;
pub(crate) mod rejects;
pub(crate) mod room_members;
pub(crate) mod room_state;
pub(crate) mod server_acl;
pub(crate) mod source_events;
pub(crate) mod source_positions;

#[cfg(test)]
mod resume_check;
