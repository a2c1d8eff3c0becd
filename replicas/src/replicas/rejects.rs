//! `rejects`: the events that could not be read: the rule slots' rejects (see
//! [`crate::slots`]), the member events whose membership is missing or unknown (a function
//! of each event alone, so resumed from the delta alone), and the invalid events a homeserver
//! source delivered (`source_events`, read in deltas).

use std::sync::Arc;

use prr_engine::{Coll, Dictionary, Input, ReplicaDescription};

use crate::known::Known;
use crate::member_events::member_reject;
use crate::record::{Rec, RejectReason, Rejected};
use crate::slots::{resume_rule_slots, rule_slots};

/// `rejects`' description (inputs: `room_state`, `source_events`).
pub(crate) fn description(_: &Dictionary, known: &Known) -> ReplicaDescription<Rec> {
    let (k, k2) = (known.clone(), known.clone());
    ReplicaDescription::derived(
        "rejects",
        "room_id",
        Rec::partition,
        vec![Input::full("room_state"), Input::deltas("source_events")],
        move |i| {
            let slots = rule_slots(i[0].clone(), &k).filter(is_reject);
            let members = member_rejects(i[0].clone(), &k);
            slots.concat(members).concat(invalid_events(i[1].clone()))
        },
    )
    .with_resume(move |deltas, seeds| {
        let slots = resume_rule_slots(deltas[0].clone(), seeds, &k2).filter(is_reject);
        let members = member_rejects(deltas[0].clone(), &k2);
        slots
            .concat(members)
            .concat(invalid_events(deltas[1].clone()))
    })
    .with_record_type("(room_id, event_id, type, state_key, replica, reason)")
    // 2: the invalid events of `source_events`.
    .with_logic_version(2)
}

fn is_reject(r: &Rec) -> bool {
    matches!(r, Rec::Reject(_))
}

/// The invalid events of `source_events` (or of its delta), as rejects.
fn invalid_events(source_events: Coll<'_, Rec>) -> Coll<'_, Rec> {
    source_events.flat_map(|r| {
        let e = r.delivered()?;
        Some(Rec::Reject(Arc::new(Rejected {
            room: e.room,
            event_id: e.event_id,
            event_type: e.event_type,
            state_key: e.state_key,
            reason: RejectReason::InvalidEvent(e.invalid?),
        })))
    })
}

/// The rejected member events of `room_state` (or of its delta).
fn member_rejects<'s>(room_state: Coll<'s, Rec>, known: &Known) -> Coll<'s, Rec> {
    let k = known.clone();
    room_state.flat_map(move |r| member_reject(&r, &k))
}

#[cfg(test)]
mod tests {
    crate::replicas::resume_check::resume_test!(
        "`rejects` resumed after a restart equals its computation from scratch after every \
         input delta (rule slots and member events resumed from the `room_state` seed).",
        room_state
    );
}
