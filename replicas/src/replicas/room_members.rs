//! `room_members`: the membership of each member event of `room_state` whose membership is
//! valid. A function of each event alone: read in deltas, so resumed by its own computation.

use prr_engine::{Dictionary, Input, ReplicaDescription};

use crate::known::Known;
use crate::member_events::member_of;
use crate::record::Rec;

/// `room_members`' description (input: `room_state`, in deltas).
pub(crate) fn description(_: &Dictionary, known: &Known) -> ReplicaDescription<Rec> {
    let k = known.clone();
    ReplicaDescription::derived(
        "room_members",
        "room_id",
        Rec::partition,
        vec![Input::deltas("room_state")],
        move |i| {
            let k = k.clone();
            i[0].clone().flat_map(move |r| member_of(&r, &k)?.ok())
        },
    )
    .with_record_type("(room_id, user_id, membership, displayname)")
    .with_logic_version(1)
}

#[cfg(test)]
mod tests {
    crate::replicas::resume_check::resume_test!(
        "`room_members` resumed after a restart equals its computation from scratch after every \
         input delta (member events resumed from their deltas alone).",
        room_state
    );
}
