//! Member events of `room_state` read as memberships: `room_members` keeps the valid ones,
//! `rejects` the others.

use std::sync::Arc;

use prr_engine::Id;

use crate::known::Known;
use crate::record::{Facts, Membership, Rec, RejectReason, Rejected};

/// A `room_members` record or a reject, for a member event of `room_state`, as its facts say.
pub(crate) fn member_of(r: &Rec, known: &Known) -> Option<Result<Rec, Rec>> {
    let Rec::RoomState(s) = r else { return None };
    if s.event_type != known.member {
        return None;
    }
    let reject = |reason| {
        Rec::Reject(Arc::new(Rejected {
            room: s.room,
            event_id: s.event_id,
            event_type: s.event_type,
            state_key: s.state_key,
            reason,
        }))
    };
    Some(match &s.facts {
        Facts::Member {
            membership,
            displayname,
        } => Ok(Rec::Member {
            room: s.room,
            user: s.state_key,
            membership: *membership,
            displayname: *displayname,
        }),
        Facts::BadMember(reason) => Err(reject(*reason)),
        // A member event always has member facts; other facts (damage) read as no membership.
        _ => Err(reject(RejectReason::MembershipMissing)),
    })
}

/// The reject of a member event of `room_state` whose membership is missing or unknown.
pub(crate) fn member_reject(r: &Rec, known: &Known) -> Option<Rec> {
    member_of(r, known)?.err()
}

/// `(room, user)` of a `room_members` record whose membership passes `keep`.
pub(crate) fn member_pair(r: Rec, keep: fn(Membership) -> bool) -> Option<(Id, Id)> {
    match r {
        Rec::Member {
            room,
            user,
            membership,
            ..
        } if keep(membership) => Some((room, user)),
        _ => None,
    }
}

/// Present members: join, invite, knock.
pub(crate) fn present(m: Membership) -> bool {
    m.present()
}

/// Memberships that are not `ban`.
pub(crate) fn not_ban(m: Membership) -> bool {
    m != Membership::Ban
}
