//! `acl_sync`: whether each protected room's current `m.room.server_acl` equals its
//! instance's intent. `rooms ⋈ intents`, with `rooms` each protected room and its ACL, a
//! reduction per room ([`room_acls`]). Resumed as the join's delta, with `rooms` resumed by
//! the same group logic; recomputing it needs all of `room_state`: resuming lets a restore
//! leave it out of the dataflow.

use std::sync::Arc;

use foldhash::HashMap;
use prr_engine::{Coll, Dictionary, Id, Input, ReplicaDescription, Revision, Seeds};
use serde::{Deserialize, Serialize};

use crate::known::Known;
use crate::record::{Facts, Rec, acl_equals};
use crate::reduce::{apply_group, resume_reduce};
use crate::relations::{InstanceIndex, all, protect_pair};

/// `acl_sync`'s description (inputs: `room_state`, `server_acl`, `instances`).
pub(crate) fn description(_: &Dictionary, known: &Known) -> ReplicaDescription<Rec> {
    let (k, k2) = (known.clone(), known.clone());
    ReplicaDescription::derived(
        "acl_sync",
        "instance",
        Rec::partition,
        vec![
            Input::full("room_state"),
            Input::full("server_acl"),
            Input::full("instances"),
        ],
        move |i| acl_sync(i[0].clone(), i[1].clone(), i[2].clone(), &k),
    )
    .with_resume(move |deltas, seeds| resume(deltas, seeds, &k2))
    .with_record_type("(instance, room_id, in_sync)")
    .with_logic_version(1)
}

/// What an ACL event denies, if an intent can equal it (see [`Facts::Acl`]).
type AclDeny = Option<Arc<[Id]>>;

/// A value of a room's group for [`room_acls`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum RoomValue {
    /// A protection of the room, by an instance.
    Protected(Id),
    /// The room's ACL event.
    Acl(AclDeny),
}

/// A room's group for [`room_acls`]: a protection of `room_state`'s room and its ACL event,
/// keyed by room.
fn room_values<'s>(
    room_state: Coll<'s, Rec>,
    instances: Coll<'s, Rec>,
    known: &Known,
) -> Coll<'s, (Id, RoomValue)> {
    let k = known.clone();
    let acls =
        room_state.flat_map(move |r| acl_event(&r, &k).map(|(room, a)| (room, RoomValue::Acl(a))));
    let protections = instances.flat_map(|r| {
        protect_pair(r).map(|(room, instance)| (room, RoomValue::Protected(instance)))
    });
    protections.concat(acls)
}

/// Whether each protected room's current `m.room.server_acl` equals its instance's intent.
fn acl_sync<'s>(
    room_state: Coll<'s, Rec>,
    server_acl: Coll<'s, Rec>,
    instances: Coll<'s, Rec>,
    known: &Known,
) -> Coll<'s, Rec> {
    let rooms = room_values(room_state, instances, known)
        .reduce_named("AclRooms", room_acls)
        .map(|(room, (instance, acl))| (instance, (room, acl)));
    let intents = server_acl.flat_map(acl_intent_of);
    rooms
        .join(intents)
        .map(move |(instance, ((room, acl), deny))| acl_sync_record(instance, room, &acl, &deny))
}

/// `(room, what it denies)` of a room's current `m.room.server_acl` event in `room_state`.
fn acl_event(r: &Rec, known: &Known) -> Option<(Id, AclDeny)> {
    match r {
        Rec::RoomState(s) if s.event_type == known.server_acl && s.state_key == known.empty => {
            match &s.facts {
                Facts::Acl(deny) => Some((s.room, deny.clone())),
                // An ACL event always has ACL facts; other facts (damage) read as no intent's.
                _ => Some((s.room, None)),
            }
        }
        _ => None,
    }
}

/// `(instance, deny)` of a `server_acl` record.
fn acl_intent_of(r: Rec) -> Option<(Id, Vec<Id>)> {
    match r {
        Rec::Acl { instance, deny } => Some((instance, deny)),
        _ => None,
    }
}

/// An `acl_sync` record: whether `room`'s ACL `acl` (if it has one) equals the intent `deny`.
fn acl_sync_record(instance: Id, room: Id, acl: &Option<AclDeny>, deny: &[Id]) -> Rec {
    Rec::AclSync {
        instance,
        room,
        in_sync: acl.as_ref().is_some_and(|a| acl_equals(a, deny)),
    }
}

/// A protected room's state as `acl_sync` sees it: `(instance, its ACL, if it has one)`.
type RoomAcl = (Id, Option<AclDeny>);

/// The protected rooms of a room's group: a protection meets each ACL (multiplicities
/// multiply), and stands alone with multiplicity `m × (1 − Σ ACL multiplicities)`: the
/// contents of `protected ⋈ acls + protected ▷ acls`.
fn room_acls(_room: &Id, input: &[(&RoomValue, isize)], output: &mut Vec<(RoomAcl, isize)>) {
    let acls: Vec<(&AclDeny, isize)> = (input.iter())
        .filter_map(|(v, m)| match v {
            RoomValue::Acl(a) => Some((a, *m)),
            RoomValue::Protected(_) => None,
        })
        .collect();
    let total: isize = acls.iter().map(|(_, m)| m).sum();
    for (v, pm) in input {
        let RoomValue::Protected(instance) = v else {
            continue;
        };
        for (acl, am) in &acls {
            output.push(((*instance, Some((*acl).clone())), pm * am));
        }
        if pm * (1 - total) != 0 {
            output.push(((*instance, None), pm * (1 - total)));
        }
    }
}

/// What `acl_sync`'s resume looks up: the instances, each room's ACL events, and the intents.
struct SyncSeeds {
    instances: InstanceIndex,
    acls: HashMap<Id, Vec<(AclDeny, isize)>>,
    /// `server_acl`, sorted by record: by instance.
    intents: Revision<Rec>,
}

impl SyncSeeds {
    /// A room's old group (see [`room_acls`]).
    fn room_group(&self, room: Id) -> Vec<(RoomValue, isize)> {
        let protections = all(&self.instances.protectors, &room)
            .iter()
            .map(|(i, m)| (RoomValue::Protected(*i), *m));
        let acls = (all(&self.acls, &room).iter()).map(|(a, m)| (RoomValue::Acl(a.clone()), *m));
        protections.chain(acls).collect()
    }

    /// `instance`'s old protected rooms with their ACLs.
    fn rooms_of(&self, instance: Id) -> Vec<((Id, Option<AclDeny>), isize)> {
        let mut rooms: Vec<Id> = all(&self.instances.protected, &instance)
            .iter()
            .map(|(room, _)| *room)
            .collect();
        rooms.sort_unstable();
        rooms.dedup();
        let mut out = Vec::new();
        for room in rooms {
            let acls = apply_group(&room, self.room_group(room), &room_acls);
            out.extend(
                acls.into_iter()
                    .filter(|((i, _), _)| *i == instance)
                    .map(|((_, acl), m)| ((room, acl), m)),
            );
        }
        out
    }

    /// `instance`'s old intent.
    fn intent(&self, instance: Id) -> Vec<(Vec<Id>, isize)> {
        let of = |r: &Rec| match r {
            Rec::Acl { instance, .. } => *instance,
            _ => 0,
        };
        (self.intents.range(of, &instance).into_iter())
            .filter_map(|(r, m)| acl_intent_of(r).map(|(_, deny)| (deny, m)))
            .collect()
    }
}

/// `acl_sync`'s delta: `dRooms ⋈ I_old + dRooms ⋈ dI + Rooms_old ⋈ dI`, with `dRooms` the
/// delta of the reduction [`room_acls`].
fn resume<'s>(deltas: &[Coll<'s, Rec>], seeds: &Seeds<Rec>, known: &Known) -> Coll<'s, Rec> {
    let k = known.clone();
    let old = seeds.shared(move |s| {
        let mut acls: HashMap<Id, Vec<(AclDeny, isize)>> = HashMap::default();
        for (r, m) in s.input(0) {
            if let Some((room, acl)) = acl_event(r, &k) {
                acls.entry(room).or_default().push((acl, *m));
            }
        }
        SyncSeeds {
            instances: InstanceIndex::build(s.input(2)),
            acls,
            intents: s.revision(1),
        }
    });
    let o = old.clone();
    let d_rooms = resume_reduce(
        "AclRooms",
        room_values(deltas[0].clone(), deltas[2].clone(), known),
        move |room| o.get().room_group(*room),
        room_acls,
    )
    .map(|(room, (instance, acl))| (instance, (room, acl)));
    let d_intents = deltas[1].clone().flat_map(acl_intent_of);
    // dRooms ⋈ I_old
    let o = old.clone();
    let new_rooms = d_rooms.clone().explode(move |(instance, room)| {
        o.get()
            .intent(instance)
            .into_iter()
            .map(move |(deny, m)| ((instance, (room.clone(), deny)), m))
    });
    // dRooms ⋈ dI
    let both = d_rooms.join(d_intents.clone());
    // Rooms_old ⋈ dI
    let new_intents = d_intents.explode(move |(instance, deny)| {
        old.get()
            .rooms_of(instance)
            .into_iter()
            .map(move |(room, m)| ((instance, (room, deny.clone())), m))
    });
    new_rooms
        .concat(both)
        .concat(new_intents)
        .map(move |(instance, ((room, acl), deny))| acl_sync_record(instance, room, &acl, &deny))
}

#[cfg(test)]
mod tests {
    crate::replicas::resume_check::resume_test!(
        "`acl_sync` resumed after a restart equals its computation from scratch after every \
         input delta (the rooms' reduction and the join with the intents, resumed).",
        room_state,
        server_acl,
        instances
    );
}
