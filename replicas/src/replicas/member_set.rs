//! `member_set`: for each instance, the users present in its protected rooms and how many of
//! them: `count(present members ⋈ protects)`. Resumed as the join's delta (see
//! [`crate::memberships`]) then the count's, a reduction with the same group logic.

use prr_engine::dataflow::differential_dataflow::operators::CountTotal;
use prr_engine::{Coll, Dictionary, Id, Input, ReplicaDescription, Seeds};

use crate::known::Known;
use crate::member_events::{member_pair, present};
use crate::memberships::{Memberships, resume_user_rooms};
use crate::record::Rec;
use crate::reduce::{GroupLogic, resume_reduce};
use crate::relations::{protect_pair, protects};

/// `member_set`'s description (inputs: `room_members`, `instances`).
pub(crate) fn description(_dict: &Dictionary, _known: &Known) -> ReplicaDescription<Rec> {
    ReplicaDescription::derived(
        "member_set",
        "instance",
        Rec::partition,
        vec![Input::full("room_members"), Input::full("instances")],
        |i| {
            // Counted by `count_total`: its output is not arranged (the replica's own
            // arrangement holds the records), which a reduce's would be, 1.9M records at large.
            i[0].clone()
                .flat_map(|r| member_pair(r, present))
                .join(protects(i[1].clone()))
                .map(|(_room, (user, instance))| (instance, user))
                .count_total()
                .map(|((instance, user), rooms)| Rec::MemberSet {
                    instance,
                    user,
                    rooms: rooms as u32,
                })
        },
    )
    .with_resume(resume)
    .with_record_type("(instance, user_id, rooms)")
    .with_logic_version(1)
}

/// A `member_set` record from the group of `(instance, user)`: its protected rooms where the
/// user is present, counted.
fn count_rooms() -> impl GroupLogic<(Id, Id), (), Rec> {
    |&(instance, user), input, output| {
        output.push((
            Rec::MemberSet {
                instance,
                user,
                rooms: input[0].1 as u32,
            },
            1,
        ))
    }
}

/// `member_set`'s delta: the count of protected rooms per `(instance, user)`, resumed from
/// the old count.
fn resume<'s>(deltas: &[Coll<'s, Rec>], seeds: &Seeds<Rec>) -> Coll<'s, Rec> {
    let old = seeds.shared(|s| Memberships::build(s, 0, 1));
    let pairs = resume_user_rooms(
        deltas[0].clone().flat_map(|r| member_pair(r, present)),
        deltas[1].clone().flat_map(protect_pair),
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
        count_rooms(),
    )
    .map(|(_, rec)| rec)
}

#[cfg(test)]
mod tests {
    crate::replicas::resume_check::resume_test!(
        "`member_set` resumed after a restart equals its computation from scratch after every \
         input delta (the memberships' join resumed, then the count).",
        room_members,
        instances
    );
}
