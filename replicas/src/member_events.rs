//! Member events of `room_state` read as memberships: `room_members` keeps the valid ones,
//! `rejects` the others.

use prr_engine::{Dictionary, Id};
use serde_json::Value;

use crate::known::{Known, content_of};
use crate::record::{Membership, Rec, RejectReason, RoomState};

/// The fields of a member event's content that the replicas read. Deserializing only these
/// skips every other field without building it (a restore reads a million member events).
#[derive(serde::Deserialize, Default)]
struct MemberFields {
    membership: Option<Value>,
    displayname: Option<Value>,
}

/// A `room_members` record or a reject, for a member event of `room_state`.
pub(crate) fn member_of(r: &Rec, dict: &Dictionary, known: &Known) -> Option<Result<Rec, Rec>> {
    let Rec::RoomState(s) = r else { return None };
    if s.event_type != known.member {
        return None;
    }
    let content: MemberFields = content_of(dict, s.content);
    Some(match membership_of(s, &content) {
        Ok(membership) => Ok(Rec::Member {
            room: s.room,
            user: s.state_key,
            membership,
            displayname: content
                .displayname
                .as_ref()
                .and_then(Value::as_str)
                .map(|n| dict.intern(n)),
        }),
        Err(reject) => Err(reject),
    })
}

/// The reject of a member event of `room_state` whose membership is missing or unknown: what
/// [`member_of`] rejects, without building the member records.
pub(crate) fn member_reject(r: &Rec, dict: &Dictionary, known: &Known) -> Option<Rec> {
    let Rec::RoomState(s) = r else { return None };
    if s.event_type != known.member {
        return None;
    }
    membership_of(s, &content_of(dict, s.content)).err()
}

fn membership_of(s: &RoomState, content: &MemberFields) -> Result<Membership, Rec> {
    let reject = |reason| Rec::Reject {
        room: s.room,
        event_id: s.event_id,
        event_type: s.event_type,
        state_key: s.state_key,
        reason,
    };
    match &content.membership {
        Some(Value::String(m)) => {
            Membership::parse(m).ok_or_else(|| reject(RejectReason::MembershipUnknown))
        }
        _ => Err(reject(RejectReason::MembershipMissing)),
    }
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
