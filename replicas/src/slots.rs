//! Policy rule slots, read by `policy_room` (the slots' rules) and `rejects` (the slots'
//! rejects): for each `(room, kind, state_key)`, the newest-type event present decides: a
//! rule, a reject, or nothing (empty or redacted). A reduction over the slot's events in
//! `room_state`; resumed with the same group logic, the old events of each changed slot
//! looked up in the `room_state` seed.

use std::sync::Arc;

use prr_engine::{Coll, Id, Seeds};

use crate::known::Known;
use crate::record::{Facts, Kind, Rec, Rejected, RoomState};
use crate::reduce::{GroupLogic, resume_reduce};

/// A rule slot: `(room, kind, state_key)`.
type SlotKey = (Id, Kind, Id);

/// The slot of a policy rule event of `room_state`, with the event's rank (0: newest type).
fn slot_of(r: Rec, known: &Known) -> Option<(SlotKey, (u8, Arc<RoomState>))> {
    match r {
        Rec::RoomState(s) => known
            .rule_types
            .get(&s.event_type)
            .map(|(kind, rank)| ((s.room, *kind, s.state_key), (*rank, s))),
        _ => None,
    }
}

/// What a slot holds: its newest-type event decides (a rule, a reject, or nothing), as its
/// facts say (the rule itself is the event's, shared).
fn slot_logic() -> impl GroupLogic<SlotKey, (u8, Arc<RoomState>), Rec> {
    move |key, input, output| {
        let (_rank, s) = input[0].0;
        if s.redacted {
            return;
        }
        match &s.facts {
            Facts::Rule(rule) => output.push((Rec::Rule(rule.clone()), 1)),
            Facts::BadRule(reason) => output.push((
                Rec::Reject(Arc::new(Rejected {
                    room: key.0,
                    event_id: s.event_id,
                    event_type: s.event_type,
                    state_key: key.2,
                    reason: *reason,
                })),
                1,
            )),
            _ => {}
        }
    }
}

/// The slots (rules and rejects) of `room_state`.
pub(crate) fn rule_slots<'s>(room_state: Coll<'s, Rec>, known: &Known) -> Coll<'s, Rec> {
    let k = known.clone();
    room_state
        .flat_map(move |r| slot_of(r, &k))
        .reduce_named("RuleSlots", slot_logic())
        .map(|(_, rec)| rec)
}

/// The slots' delta (rules and rejects) from `room_state`'s delta; `room_state` is input 0.
/// A changed slot's old events are looked up in the `room_state` seed, at the slot's key under
/// each event type of its kind.
pub(crate) fn resume_rule_slots<'s>(
    room_state: Coll<'s, Rec>,
    seeds: &Seeds<Rec>,
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
        slot_logic(),
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
