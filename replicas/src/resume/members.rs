//! `member_set` and `member_bans` resumed. Both join memberships of `room_members` with the
//! protected rooms of `instances`: the old memberships are looked up in the sorted
//! `room_members` seed by `(room, user)`, the old protections in an [`InstanceIndex`].

use prr_engine::{Coll, Dictionary, Id, Revision, Seeds};

use super::{InstanceIndex, all, resume_reduce};
use crate::dag::{
    BanRule, ban_record, ban_value, choose_ban_rule, not_banned, present_member, relation_pair,
};
use crate::record::{Membership, Rec, Relation};

/// The memberships and protections at the restore point.
struct Memberships {
    /// `room_members`, sorted by record: by room, then user.
    members: Revision<Rec>,
    instances: InstanceIndex,
}

fn room_of(r: &Rec) -> Id {
    match r {
        Rec::Member { room, .. } => *room,
        _ => 0,
    }
}

fn room_user_of(r: &Rec) -> (Id, Id) {
    match r {
        Rec::Member { room, user, .. } => (*room, *user),
        _ => (0, 0),
    }
}

fn membership_of(r: &Rec) -> Option<Membership> {
    match r {
        Rec::Member { membership, .. } => Some(*membership),
        _ => None,
    }
}

impl Memberships {
    fn build(seeds: &Seeds<Rec>, members: usize, instances: usize) -> Memberships {
        Memberships {
            members: seeds.revision(members),
            instances: InstanceIndex::build(seeds.input(instances)),
        }
    }

    /// Old members of `room` whose membership passes `keep`: `(user, multiplicity)`.
    fn members_of(&self, room: Id, keep: fn(Membership) -> bool) -> Vec<(Id, isize)> {
        (self.members.range(room_of, &room).iter())
            .filter(|(r, _)| membership_of(r).is_some_and(keep))
            .map(|(r, m)| (room_user_of(r).1, *m))
            .collect()
    }

    /// The old multiplicity of `user`'s memberships in `room` that pass `keep`.
    fn member(&self, room: Id, user: Id, keep: fn(Membership) -> bool) -> isize {
        (self.members.range(room_user_of, &(room, user)).iter())
            .filter(|(r, _)| membership_of(r).is_some_and(keep))
            .map(|(_, m)| *m)
            .sum()
    }

    /// `instance`'s old protected rooms where `user` has a membership that passes `keep`,
    /// with the multiplicity of the join.
    fn rooms_of(&self, instance: Id, user: Id, keep: fn(Membership) -> bool) -> Vec<(Id, isize)> {
        all(&self.instances.protected, &instance)
            .iter()
            .map(|(room, pm)| (*room, pm * self.member(*room, user, keep)))
            .filter(|(_, m)| *m != 0)
            .collect()
    }
}

fn present(m: Membership) -> bool {
    m.present()
}

fn not_ban(m: Membership) -> bool {
    m != Membership::Ban
}

/// The delta of `members(room, user) ⋈ protects(room, instance)` keyed by `(instance, user)`,
/// with the room: `dM ⋈ P_old + dM ⋈ dP + M_old ⋈ dP`, for members that pass `keep`.
fn user_rooms<'s>(
    d_members: Coll<'s, (Id, Id)>,
    d_protects: Coll<'s, (Id, Id)>,
    old: &prr_engine::Shared<impl AsRef<Memberships> + Send + Sync + 'static>,
    keep: fn(Membership) -> bool,
) -> Coll<'s, ((Id, Id), Id)> {
    let o = old.clone();
    let new_members = d_members.clone().explode(move |(room, user)| {
        all(&o.get().as_ref().instances.protectors, &room)
            .iter()
            .map(|(instance, m)| (((*instance, user), room), *m))
            .collect::<Vec<_>>()
    });
    let both = d_members
        .join(d_protects.clone())
        .map(|(room, (user, instance))| ((instance, user), room));
    let o = old.clone();
    let new_protects = d_protects.explode(move |(room, instance)| {
        o.get()
            .as_ref()
            .members_of(room, keep)
            .into_iter()
            .map(move |(user, m)| (((instance, user), room), m))
    });
    new_members.concat(both).concat(new_protects)
}

impl AsRef<Memberships> for Memberships {
    fn as_ref(&self) -> &Memberships {
        self
    }
}

fn protects(r: Rec) -> Option<(Id, Id)> {
    relation_pair(r, Relation::Protect)
}

/// `member_set`'s delta: the count of protected rooms per `(instance, user)`, resumed from
/// the old count (inputs: `room_members`, `instances`).
pub(crate) fn member_set<'s>(deltas: &[Coll<'s, Rec>], seeds: &Seeds<Rec>) -> Coll<'s, Rec> {
    let old = seeds.shared(|s| Memberships::build(s, 0, 1));
    let pairs = user_rooms(
        deltas[0].clone().flat_map(present_member),
        deltas[1].clone().flat_map(protects),
        &old,
        present,
    );
    resume_reduce(
        "MemberSetCount",
        pairs.map(|(k, _room)| (k, ())),
        move |(instance, user)| {
            let c: isize = (old.get().rooms_of(*instance, *user, present).iter())
                .map(|(_, m)| m)
                .sum();
            if c == 0 { Vec::new() } else { vec![((), c)] }
        },
        |&(instance, user), input, output| {
            output.push((
                Rec::MemberSet {
                    instance,
                    user,
                    rooms: input[0].1 as u32,
                },
                1,
            ))
        },
    )
    .map(|(_, rec)| rec)
}

/// What `member_bans` looks up: the memberships, and `member_matches` at the restore point.
struct BanSeeds {
    members: Memberships,
    /// `member_matches`, sorted by record: by instance, then user.
    matches: Revision<Rec>,
    dict: Dictionary,
}

impl AsRef<Memberships> for BanSeeds {
    fn as_ref(&self) -> &Memberships {
        &self.members
    }
}

impl BanSeeds {
    /// The old ban rules matching `user` for `instance`.
    fn ban_rules(&self, key: &(Id, Id)) -> Vec<(BanRule, isize)> {
        let of = |r: &Rec| match r {
            Rec::Match { instance, user, .. } => (*instance, *user),
            _ => (0, 0),
        };
        (self.matches.range(of, key).into_iter())
            .filter_map(|(r, m)| ban_value(r).map(|(_, v)| (v, m)))
            .collect()
    }

    /// The old chosen ban rule of `(instance, user)`, if any.
    fn chosen(&self, key: &(Id, Id)) -> Vec<(BanRule, isize)> {
        let mut group = self.ban_rules(key);
        super::consolidate(&mut group);
        if group.is_empty() {
            return Vec::new();
        }
        let refs: Vec<(&BanRule, isize)> = group.iter().map(|(v, m)| (v, *m)).collect();
        let mut out = Vec::new();
        choose_ban_rule(&self.dict)(key, &refs, &mut out);
        out
    }
}

/// `member_bans`' delta: `best ⋈ user_rooms`, with `best` a reduction over `member_matches`
/// (inputs: `member_matches`, `room_members`, `instances`).
pub(crate) fn member_bans<'s>(
    deltas: &[Coll<'s, Rec>],
    seeds: &Seeds<Rec>,
    dict: &Dictionary,
) -> Coll<'s, Rec> {
    let d = dict.clone();
    let old = seeds.shared(move |s| BanSeeds {
        members: Memberships::build(s, 1, 2),
        matches: s.revision(0),
        dict: d,
    });
    let o = old.clone();
    let d_best = resume_reduce(
        "ChooseBanRule",
        deltas[0].clone().flat_map(ban_value),
        move |k| o.get().ban_rules(k),
        choose_ban_rule(dict),
    );
    let d_rooms = user_rooms(
        deltas[1].clone().flat_map(not_banned),
        deltas[2].clone().flat_map(protects),
        &old,
        not_ban,
    );
    // dB ⋈ UR_old
    let o = old.clone();
    let new_rules = d_best.clone().explode(move |((instance, user), rule)| {
        o.get()
            .members
            .rooms_of(instance, user, not_ban)
            .into_iter()
            .map(move |(room, m)| (((instance, user), (rule, room)), m))
    });
    // dB ⋈ dUR
    let both = d_best.join(d_rooms.clone());
    // B_old ⋈ dUR
    let new_rooms = d_rooms.explode(move |(key, room)| {
        old.get()
            .chosen(&key)
            .into_iter()
            .map(move |(rule, m)| ((key, (rule, room)), m))
    });
    new_rules
        .concat(both)
        .concat(new_rooms)
        .map(|((instance, user), (rule, room))| ban_record(instance, user, rule, room))
}
