//! A test fixture (feature `test-util`): the Matrix replicas plus `tripwire`, a derived replica
//! whose computation panics on the `room_state` record of one event. No Matrix replica panics
//! on any record (that would be a bug to fix, not a fixture), so tests of quarantine make their
//! poisoned delta with this.

use prr_engine::{Dag, DagError, Dictionary, Input, ReplicaDescription};

use crate::dag::matrix_dag;
use crate::record::Rec;

/// The Matrix DAG plus `tripwire`, which panics with `tripwire: event EVENT_ID` on the
/// `room_state` record of `event_id` and otherwise holds nothing.
pub fn dag_with_tripwire(dict: &Dictionary, event_id: &str) -> Result<Dag<Rec>, DagError> {
    let poison = dict.intern(event_id);
    let message = format!("tripwire: event {event_id}");
    let mut replicas = matrix_dag(dict)?.replicas().to_vec();
    replicas.push(ReplicaDescription::derived(
        "tripwire",
        "none",
        |_| 0,
        vec![Input::deltas("room_state")],
        move |i| {
            let message = message.clone();
            i[0].clone().filter(move |r| {
                let hit = matches!(r, Rec::RoomState(s) if s.event_id == poison);
                assert!(!hit, "{message}");
                false
            })
        },
    ));
    Dag::new(replicas)
}
