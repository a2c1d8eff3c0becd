//! `policy_room`: the rules in force, the rules of the rule slots (see [`crate::slots`]).

use prr_engine::{Dictionary, Input, ReplicaDescription};

use crate::known::Known;
use crate::record::Rec;
use crate::slots::{resume_rule_slots, rule_slots};

/// `policy_room`'s description (input: `room_state`).
pub(crate) fn description(_: &Dictionary, known: &Known) -> ReplicaDescription<Rec> {
    let (k, k2) = (known.clone(), known.clone());
    ReplicaDescription::derived(
        "policy_room",
        "room_id",
        Rec::partition,
        vec![Input::full("room_state")],
        move |i| rule_slots(i[0].clone(), &k).filter(is_rule),
    )
    .with_resume(move |deltas, seeds| {
        resume_rule_slots(deltas[0].clone(), seeds, &k2).filter(is_rule)
    })
    .with_record_type("rule (room_id, kind, state_key, ...)")
    .with_logic_version(1)
}

fn is_rule(r: &Rec) -> bool {
    matches!(r, Rec::Rule(_))
}

#[cfg(test)]
mod tests {
    crate::replicas::resume_check::resume_test!(
        "`policy_room` resumed after a restart equals its computation from scratch after every \
         input delta (rule slots resumed from the `room_state` seed: a changed slot's old events, under each event type of its kind).",
        room_state
    );
}
