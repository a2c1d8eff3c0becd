//! Rule slots resumed: `policy_room` (the slots' rules) and `rejects` (the slots' rejects and
//! the rejected member events). A slot's contents are a reduction over its events in
//! `room_state`; the old events of each slot are indexed from the `room_state` seed.

use foldhash::HashMap;
use prr_engine::{Coll, Dictionary, Seeds};

use super::resume_reduce;
use crate::dag::{Known, SlotKey, member_reject, slot_logic, slot_of};
use crate::record::{Rec, RoomState};

/// Slot -> its events in `room_state` at the restore point, with their ranks.
type SlotIndex = HashMap<SlotKey, Vec<((u8, RoomState), isize)>>;

/// The slots' delta (rules and rejects) from `room_state`'s delta; `room_state` is input 0.
fn slots<'s>(
    room_state: Coll<'s, Rec>,
    seeds: &Seeds<Rec>,
    dict: &Dictionary,
    known: &Known,
) -> Coll<'s, Rec> {
    let k = known.clone();
    let old = seeds.shared(move |s| {
        let mut ix = SlotIndex::default();
        for (r, m) in s.input(0) {
            let is_rule =
                matches!(r, Rec::RoomState(e) if k.rule_types.contains_key(&e.event_type));
            if let Some((key, v)) = is_rule.then(|| slot_of(r.clone(), &k)).flatten() {
                ix.entry(key).or_default().push((v, *m));
            }
        }
        ix
    });
    let k = known.clone();
    resume_reduce(
        "RuleSlots",
        room_state.flat_map(move |r| slot_of(r, &k)),
        move |key| old.get().get(key).cloned().unwrap_or_default(),
        slot_logic(dict),
    )
    .map(|(_, rec)| rec)
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
