//! `rejects`: the events that could not be read: the rule slots' rejects (see
//! [`crate::slots`]) and the member events whose membership is missing or unknown (a function
//! of each event alone, so resumed from the delta alone).

use prr_engine::{Coll, Dictionary, Input, ReplicaDescription};

use crate::known::Known;
use crate::member_events::member_reject;
use crate::record::Rec;
use crate::slots::{resume_rule_slots, rule_slots};

/// `rejects`' description (input: `room_state`).
pub(crate) fn description(dict: &Dictionary, known: &Known) -> ReplicaDescription<Rec> {
    let (d, k) = (dict.clone(), known.clone());
    let (d2, k2) = (dict.clone(), known.clone());
    ReplicaDescription::derived(
        "rejects",
        "room_id",
        Rec::partition,
        vec![Input::full("room_state")],
        move |i| {
            let slots = rule_slots(i[0].clone(), &d, &k).filter(is_reject);
            slots.concat(member_rejects(i[0].clone(), &d, &k))
        },
    )
    .with_resume(move |deltas, seeds| {
        let slots = resume_rule_slots(deltas[0].clone(), seeds, &d2, &k2).filter(is_reject);
        slots.concat(member_rejects(deltas[0].clone(), &d2, &k2))
    })
    .with_record_type("(room_id, event_id, type, state_key, replica, reason)")
    .with_logic_version(1)
}

fn is_reject(r: &Rec) -> bool {
    matches!(r, Rec::Reject { .. })
}

/// The rejected member events of `room_state` (or of its delta).
fn member_rejects<'s>(
    room_state: Coll<'s, Rec>,
    dict: &Dictionary,
    known: &Known,
) -> Coll<'s, Rec> {
    let (d, k) = (dict.clone(), known.clone());
    room_state.flat_map(move |r| member_reject(&r, &d, &k))
}

#[cfg(test)]
mod tests {
    crate::replicas::resume_check::resume_test!(
        "`rejects` resumed after a restart equals its computation from scratch after every \
         input delta (rule slots and member events resumed from the `room_state` seed).",
        room_state
    );
}
