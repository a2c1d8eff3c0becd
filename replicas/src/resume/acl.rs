//! `server_acl` and `acl_sync` resumed. Both are small (one record per instance or protected
//! room), but recomputing them needs all of `room_state` and `policy_room`: resuming them
//! lets a restore leave those out of the dataflow.

use foldhash::HashMap;
use prr_engine::{Coll, Dictionary, Id, Revision, Seeds};

use super::{InstanceIndex, all, resume_reduce};
use crate::dag::{
    Known, acl_event, acl_intent, acl_intent_of, acl_sync_record, denies, relation_pair,
    server_rule,
};
use crate::record::{MatchKind, Rec, Relation};

/// Policy room -> its server rules `((entity, matcher), multiplicity)`.
type ServerRules = HashMap<Id, Vec<((Id, MatchKind), isize)>>;

/// What `server_acl` looks up: the instances, and the server rules of each policy room.
struct AclSeeds {
    instances: InstanceIndex,
    server_rules: ServerRules,
    dict: Dictionary,
}

impl AclSeeds {
    /// `instance`'s old group: `None` if it exists, and each denied entity.
    fn group(&self, instance: Id) -> Vec<(Option<Id>, isize)> {
        let mut out = Vec::new();
        if let Some(m) = self.instances.exists.get(&instance) {
            out.push((None, *m));
        }
        let s = self.dict.strings();
        for (room, wm) in all(&self.instances.watched, &instance) {
            for ((entity, matcher), rm) in all(&self.server_rules, room) {
                if denies(&s, instance, *entity, *matcher) {
                    out.push((Some(*entity), wm * rm));
                }
            }
        }
        out
    }
}

/// `server_acl`'s delta: a reduction per instance over its existence and denied entities,
/// which are `server_rules ⋈ watches` (inputs: `policy_room`, `instances`).
pub(crate) fn server_acl<'s>(
    deltas: &[Coll<'s, Rec>],
    seeds: &Seeds<Rec>,
    dict: &Dictionary,
) -> Coll<'s, Rec> {
    let d = dict.clone();
    let old = seeds.shared(move |s| {
        let mut server_rules = ServerRules::default();
        for (r, m) in s.input(0) {
            if let Some((room, rule)) = server_rule(r.clone()) {
                server_rules.entry(room).or_default().push((rule, *m));
            }
        }
        AclSeeds {
            instances: InstanceIndex::build(s.input(1)),
            server_rules,
            dict: d,
        }
    });
    let d_exists = deltas[1].clone().flat_map(|r| {
        relation_pair(r, Relation::Exists).map(|(_, instance)| (instance, None::<Id>))
    });
    let d_rules = deltas[0].clone().flat_map(server_rule);
    let d_watches = deltas[1]
        .clone()
        .flat_map(|r| relation_pair(r, Relation::Watch));
    let o = old.clone();
    let new_rules = d_rules.clone().explode(move |(room, rule)| {
        all(&o.get().instances.watchers, &room)
            .iter()
            .map(|(instance, m)| ((*instance, rule), *m))
            .collect::<Vec<_>>()
    });
    let both = d_rules
        .join(d_watches.clone())
        .map(|(_room, (rule, instance))| (instance, rule));
    let o = old.clone();
    let new_watches = d_watches.explode(move |(room, instance)| {
        all(&o.get().server_rules, &room)
            .iter()
            .map(|(rule, m)| ((instance, *rule), *m))
            .collect::<Vec<_>>()
    });
    let d = dict.clone();
    let d_denied = new_rules
        .concat(both)
        .concat(new_watches)
        .filter(move |(instance, (entity, matcher))| {
            denies(&d.strings(), *instance, *entity, *matcher)
        })
        .map(|(instance, (entity, _))| (instance, Some(entity)));
    resume_reduce(
        "AclIntent",
        d_exists.concat(d_denied),
        move |instance| old.get().group(*instance),
        acl_intent(dict),
    )
    .map(|(_, rec)| rec)
}

/// A protected room's state as `acl_sync` sees it: `(instance, content of its ACL, if any)`.
type RoomAcl = (Id, Option<Id>);

/// The protected rooms of a room's group: values `(0, instance)` for a protection and
/// `(1, content)` for an ACL event. As `protected ⋈ acls + protected ▷ acls` in DD: a
/// protection meets each ACL (multiplicities multiply), and stands alone with multiplicity
/// `m × (1 − Σ ACL multiplicities)`.
fn room_acls(_room: &Id, input: &[(&(u8, Id), isize)], output: &mut Vec<(RoomAcl, isize)>) {
    let acls: Vec<(Id, isize)> = (input.iter())
        .filter(|((tag, _), _)| *tag == 1)
        .map(|((_, c), m)| (*c, *m))
        .collect();
    let total: isize = acls.iter().map(|(_, m)| m).sum();
    for ((_, instance), pm) in input.iter().filter(|((tag, _), _)| *tag == 0) {
        for (content, am) in &acls {
            output.push(((*instance, Some(*content)), pm * am));
        }
        if pm * (1 - total) != 0 {
            output.push(((*instance, None), pm * (1 - total)));
        }
    }
}

/// What `acl_sync` looks up: the instances, each room's ACL events, and the intents.
struct SyncSeeds {
    instances: InstanceIndex,
    acls: HashMap<Id, Vec<(Id, isize)>>,
    /// `server_acl`, sorted by record: by instance.
    intents: Revision<Rec>,
}

impl SyncSeeds {
    /// A room's old group (see [`room_acls`]).
    fn room_group(&self, room: Id) -> Vec<((u8, Id), isize)> {
        let protections = all(&self.instances.protectors, &room)
            .iter()
            .map(|(i, m)| ((0, *i), *m));
        let acls = all(&self.acls, &room).iter().map(|(c, m)| ((1, *c), *m));
        protections.chain(acls).collect()
    }

    /// `instance`'s old protected rooms with their ACLs.
    fn rooms_of(&self, instance: Id) -> Vec<((Id, Option<Id>), isize)> {
        let mut rooms: Vec<Id> = all(&self.instances.protected, &instance)
            .iter()
            .map(|(room, _)| *room)
            .collect();
        rooms.sort_unstable();
        rooms.dedup();
        let mut out = Vec::new();
        for room in rooms {
            let mut group = self.room_group(room);
            super::consolidate(&mut group);
            let refs: Vec<(&(u8, Id), isize)> = group.iter().map(|(v, m)| (v, *m)).collect();
            let mut acls = Vec::new();
            if !refs.is_empty() {
                room_acls(&room, &refs, &mut acls);
            }
            out.extend(
                acls.into_iter()
                    .filter(|((i, _), _)| *i == instance)
                    .map(|((_, content), m)| ((room, content), m)),
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

/// `acl_sync`'s delta: `rooms ⋈ intents`, with `rooms` each protected room and its ACL
/// (inputs: `room_state`, `server_acl`, `instances`).
pub(crate) fn acl_sync<'s>(
    deltas: &[Coll<'s, Rec>],
    seeds: &Seeds<Rec>,
    dict: &Dictionary,
    known: &Known,
) -> Coll<'s, Rec> {
    let k = known.clone();
    let old = seeds.shared(move |s| {
        let mut acls: HashMap<Id, Vec<(Id, isize)>> = HashMap::default();
        for (r, m) in s.input(0) {
            if let Some((room, content)) = acl_event(r, &k) {
                acls.entry(room).or_default().push((content, *m));
            }
        }
        SyncSeeds {
            instances: InstanceIndex::build(s.input(2)),
            acls,
            intents: s.revision(1),
        }
    });
    let k = known.clone();
    let d_acls = deltas[0]
        .clone()
        .flat_map(move |r| acl_event(&r, &k).map(|(room, c)| (room, (1u8, c))));
    let d_protects = deltas[2].clone().flat_map(|r| {
        relation_pair(r, Relation::Protect).map(|(room, instance)| (room, (0u8, instance)))
    });
    let o = old.clone();
    let d_rooms = resume_reduce(
        "AclRooms",
        d_protects.concat(d_acls),
        move |room| o.get().room_group(*room),
        room_acls,
    )
    .map(|(room, (instance, content))| (instance, (room, content)));
    let d_intents = deltas[1].clone().flat_map(acl_intent_of);
    // dRooms ⋈ I_old
    let o = old.clone();
    let new_rooms = d_rooms.clone().explode(move |(instance, room)| {
        o.get()
            .intent(instance)
            .into_iter()
            .map(move |(deny, m)| ((instance, (room, deny)), m))
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
    let d = dict.clone();
    new_rooms
        .concat(both)
        .concat(new_intents)
        .map(move |(instance, ((room, content), deny))| {
            acl_sync_record(instance, room, content, &deny, &d)
        })
}
