//! Rule slots resumed: `policy_room` (the slots' rules) and `rejects` (the slots' rejects and
//! the rejected member events). A slot's contents are a reduction over its events in
//! `room_state`; the old events of each slot are looked up in the `room_state` seed.

use prr_engine::{Coll, Dictionary, Id, Seeds};

use super::resume_reduce;
use crate::dag::{Known, SlotKey, member_reject, slot_logic, slot_of};
use crate::record::Rec;

/// The slots' delta (rules and rejects) from `room_state`'s delta; `room_state` is input 0.
/// A changed slot's old events are looked up in the `room_state` seed, at the slot's key under
/// each event type of its kind.
fn slots<'s>(
    room_state: Coll<'s, Rec>,
    seeds: &Seeds<Rec>,
    dict: &Dictionary,
    known: &Known,
) -> Coll<'s, Rec> {
    let (k, old) = (known.clone(), seeds.revision(0));
    let old_slot = move |&(room, kind, state_key): &SlotKey| {
        let mut events = Vec::new();
        for (event_type, (of_kind, _)) in k.rule_types.iter() {
            if *of_kind != kind {
                continue;
            }
            let at = old.range(state_key_of, &(room, *event_type, state_key));
            for (r, m) in at {
                events.extend(slot_of(r, &k).map(|(_, v)| (v, m)));
            }
        }
        events
    };
    let k = known.clone();
    resume_reduce(
        "RuleSlots",
        room_state.flat_map(move |r| slot_of(r, &k)),
        old_slot,
        slot_logic(dict),
    )
    .map(|(_, rec)| rec)
}

/// A `room_state` record's key: `(room, type, state_key)`.
fn state_key_of(r: &Rec) -> (Id, Id, Id) {
    match r {
        Rec::RoomState(s) => (s.room, s.event_type, s.state_key),
        _ => (0, 0, 0),
    }
}

/// `policy_room`'s delta after the restore point.
pub(crate) fn policy_room<'s>(
    deltas: &[Coll<'s, Rec>],
    seeds: &Seeds<Rec>,
    dict: &Dictionary,
    known: &Known,
) -> Coll<'s, Rec> {
    slots(deltas[0].clone(), seeds, dict, known).filter(|r| matches!(r, Rec::Rule(_)))
}

/// `rejects`' delta after the restore point: the slots' rejects, and the member events'
/// (a function of each event alone, so of the delta alone).
pub(crate) fn rejects<'s>(
    deltas: &[Coll<'s, Rec>],
    seeds: &Seeds<Rec>,
    dict: &Dictionary,
    known: &Known,
) -> Coll<'s, Rec> {
    let slot_rejects =
        slots(deltas[0].clone(), seeds, dict, known).filter(|r| matches!(r, Rec::Reject { .. }));
    let (d, k) = (dict.clone(), known.clone());
    let members = deltas[0]
        .clone()
        .flat_map(move |r| member_reject(&r, &d, &k));
    slot_rejects.concat(members)
}
