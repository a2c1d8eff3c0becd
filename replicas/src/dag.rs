//! The Matrix replicas as engine descriptions: the DAG assembled from each replica's own
//! description (see [`crate::replicas`]).

use prr_engine::{Dag, DagError, Dictionary, ReplicaDescription};

use crate::known::Known;
use crate::record::Rec;
use crate::replicas::{
    acl_sync, instances, member_bans, member_matches, member_set, outcomes, pending, policy_list,
    policy_room, rejects, room_members, room_state, server_acl, source_events, source_positions,
};

/// The names of the replicas, in the order `prr show` and `status` list them.
pub const REPLICAS: [&str; 15] = [
    "room_state",
    "instances",
    "policy_room",
    "policy_list",
    "room_members",
    "member_set",
    "member_matches",
    "member_bans",
    "server_acl",
    "acl_sync",
    "outcomes",
    "pending",
    "source_events",
    "source_positions",
    "rejects",
];

/// A replica's description over the dictionary and the known ids.
type Describe = fn(&Dictionary, &Known) -> ReplicaDescription<Rec>;

/// Each replica's description, in the order of [`REPLICAS`].
const DESCRIPTIONS: [Describe; 15] = [
    room_state::description,
    instances::description,
    policy_room::description,
    policy_list::description,
    room_members::description,
    member_set::description,
    member_matches::description,
    member_bans::description,
    server_acl::description,
    acl_sync::description,
    outcomes::description,
    pending::description,
    source_events::description,
    source_positions::description,
    rejects::description,
];

/// Builds the DAG of the Matrix replicas over `dict`.
pub fn matrix_dag(dict: &Dictionary) -> Result<Dag<Rec>, DagError> {
    let known = Known::new(dict);
    Ok(
        Dag::new(DESCRIPTIONS.iter().map(|d| d(dict, &known)).collect())?
            .with_record_ids(|r, f| r.ids(f)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores on disk (and the golden store) restore without rebuild deltas only while every
    /// replica's logic version and description hash stay as they were written.
    #[test]
    fn logic_versions_and_description_hashes_are_stable() {
        let dag = matrix_dag(&Dictionary::new()).unwrap();
        let got: Vec<(&str, u32, u64)> = (dag.replicas().iter())
            .map(|d| (d.name(), d.logic_version(), d.description_hash()))
            .collect();
        let want: Vec<(&str, u32, u64)> = vec![
            ("room_state", 1, 0x1c00a6057b7401ab),
            ("instances", 1, 0xc1beb62d24320542),
            ("policy_room", 1, 0x05d5757d417a9584),
            ("policy_list", 1, 0x4b9bc0478e5e95ff),
            ("room_members", 1, 0xecb9786c73973e41),
            ("member_set", 1, 0xaa09974143998487),
            ("member_matches", 1, 0xf7f700b94aa5d470),
            ("member_bans", 1, 0x9ce1082c18b03eb3),
            ("server_acl", 1, 0x5f00187d5ffe6658),
            ("acl_sync", 1, 0xc03a52c11b2fb357),
            ("outcomes", 1, 0x94db2b3041223754),
            ("pending", 1, 0x9100efd07a08f4fa),
            ("source_events", 1, 0x8361ad117ef82acc),
            ("source_positions", 1, 0x1f3c5ccdd8df386a),
            // 2: it reads `source_events`' invalid events too.
            ("rejects", 2, 0xc7046debb8de44cb),
        ];
        assert_eq!(got, want);
        assert_eq!(
            REPLICAS.to_vec(),
            (dag.replicas().iter())
                .map(|d| d.name())
                .collect::<Vec<_>>()
        );
    }
}
