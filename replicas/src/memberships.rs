//! Memberships of `room_members` joined with the protected rooms of `instances`, read by
//! `member_set` and `member_bans`, and resumed for both: the old memberships are looked up in
//! the sorted `room_members` seed by `(room, user)`, the old protections in an
//! [`InstanceIndex`].

use prr_engine::{Coll, Id, Revision, Seeds, Shared};

use crate::record::{Membership, Rec};
use crate::relations::{InstanceIndex, all};

/// The memberships and protections at the restore point.
pub(crate) struct Memberships {
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
    /// From the seeds of inputs `members` (`room_members`) and `instances`.
    pub(crate) fn build(seeds: &Seeds<Rec>, members: usize, instances: usize) -> Memberships {
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
    pub(crate) fn rooms_of(
        &self,
        instance: Id,
        user: Id,
        keep: fn(Membership) -> bool,
    ) -> Vec<(Id, isize)> {
        all(&self.instances.protected, &instance)
            .iter()
            .map(|(room, pm)| (*room, pm * self.member(*room, user, keep)))
            .filter(|(_, m)| *m != 0)
            .collect()
    }
}

impl AsRef<Memberships> for Memberships {
    fn as_ref(&self) -> &Memberships {
        self
    }
}

/// The delta of `members(room, user) ⋈ protects(room, instance)` keyed by `(instance, user)`,
/// with the room: `dM ⋈ P_old + dM ⋈ dP + M_old ⋈ dP`, for members that pass `keep`.
pub(crate) fn resume_user_rooms<'s>(
    d_members: Coll<'s, (Id, Id)>,
    d_protects: Coll<'s, (Id, Id)>,
    old: &Shared<impl AsRef<Memberships> + Send + Sync + 'static>,
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
