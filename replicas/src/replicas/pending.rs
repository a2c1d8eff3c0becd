//! `pending`: the intents without a `done` outcome, what the effect handlers would do next.
//! Two reductions: per ban intent `(instance, room, user)` over its `member_bans` record and
//! its `done` ban outcome, and per instance over its out-of-sync rooms (`acl_sync`), its
//! intent (`server_acl`, by fingerprint) and its `done` ACL outcomes. Both are resumed by the
//! same group logic ([`resume_reduce`]), the old groups looked up in the inputs' revisions.

use prr_engine::{Coll, Dictionary, Id, Input, ReplicaDescription, Revision, Seeds};

use crate::intent::acl_fingerprint;
use crate::known::Known;
use crate::record::{Action, OutcomeStatus, Rec};
use crate::reduce::resume_reduce;

/// `pending`'s description (inputs: `member_bans`, `acl_sync`, `server_acl`, `outcomes`).
pub(crate) fn description(dict: &Dictionary, known: &Known) -> ReplicaDescription<Rec> {
    let (d, d2) = (dict.clone(), dict.clone());
    let (empty, empty2) = (known.empty, known.empty);
    ReplicaDescription::derived(
        "pending",
        "instance",
        Rec::partition,
        vec![
            Input::full("member_bans"),
            Input::full("acl_sync"),
            Input::full("server_acl"),
            Input::full("outcomes"),
        ],
        move |i| {
            let bans = ban_values(i[0].clone(), i[3].clone()).reduce_named("PendingBans", bans);
            let acls = acl_values(i[1].clone(), i[2].clone(), i[3].clone(), &d)
                .reduce_named("PendingAcls", acls);
            records(bans, acls, empty)
        },
    )
    .with_resume(move |deltas, seeds| resume(deltas, seeds, &d2, empty2))
    .with_record_type("(instance, room_id, ban|server_acl, target)")
    .with_logic_version(1)
}

/// A ban intent's key: `(instance, room, user)`.
type BanKey = (Id, Id, Id);

/// A ban intent's group: `0` for its `member_bans` record, `1` for a `done` outcome.
fn ban_value(r: Rec) -> Option<(BanKey, u8)> {
    match r {
        Rec::Ban {
            instance,
            room,
            user,
            ..
        } => Some(((instance, room, user), 0)),
        Rec::Outcome(o) if o.action == Action::Ban && o.status == OutcomeStatus::Done => {
            Some(((o.instance, o.room, o.target), 1))
        }
        _ => None,
    }
}

fn ban_values<'s>(bans: Coll<'s, Rec>, outcomes: Coll<'s, Rec>) -> Coll<'s, (BanKey, u8)> {
    bans.concat(outcomes).flat_map(ban_value)
}

/// A ban is pending while its intent is there and no `done` outcome is.
fn bans(_key: &BanKey, input: &[(&u8, isize)], output: &mut Vec<((), isize)>) {
    let count = |tag: u8| -> isize {
        (input.iter().filter(|(t, _)| **t == tag))
            .map(|(_, m)| m)
            .sum()
    };
    if count(0) > 0 && count(1) <= 0 {
        output.push(((), 1));
    }
}

/// An instance's ACL group: `(0, room, 0)` for a room out of sync, `(1, 0, fingerprint)` for
/// the intent, `(2, room, fingerprint)` for a `done` ACL outcome.
type AclValue = (u8, Id, u64);

fn acl_value(r: Rec, dict: &Dictionary) -> Option<(Id, AclValue)> {
    match r {
        Rec::AclSync {
            instance,
            room,
            in_sync: false,
        } => Some((instance, (0, room, 0))),
        Rec::Acl { instance, deny } => Some((instance, (1, 0, acl_fingerprint(dict, &deny)))),
        Rec::Outcome(o) if o.action == Action::ServerAcl && o.status == OutcomeStatus::Done => {
            Some((o.instance, (2, o.room, o.intent)))
        }
        _ => None,
    }
}

fn acl_values<'s>(
    acl_sync: Coll<'s, Rec>,
    server_acl: Coll<'s, Rec>,
    outcomes: Coll<'s, Rec>,
    dict: &Dictionary,
) -> Coll<'s, (Id, AclValue)> {
    let d = dict.clone();
    acl_sync
        .concat(server_acl)
        .concat(outcomes)
        .flat_map(move |r| acl_value(r, &d))
}

/// An instance's rooms whose ACL is pending: out of sync, and no `done` outcome for the
/// current intent (the same fingerprint).
fn acls(_instance: &Id, input: &[(&AclValue, isize)], output: &mut Vec<(Id, isize)>) {
    let intents: Vec<u64> = (input.iter())
        .filter(|((tag, _, _), m)| *tag == 1 && *m > 0)
        .map(|((_, _, fp), _)| *fp)
        .collect();
    for ((tag, room, _), m) in input {
        if *tag != 0 || *m <= 0 {
            continue;
        }
        let done = (input.iter())
            .any(|((t, r, fp), m)| *t == 2 && r == room && *m > 0 && intents.contains(fp));
        if !done {
            output.push((*room, 1));
        }
    }
}

fn records<'s>(bans: Coll<'s, (BanKey, ())>, acls: Coll<'s, (Id, Id)>, empty: Id) -> Coll<'s, Rec> {
    let bans = bans.map(|((instance, room, user), ())| Rec::Pending {
        instance,
        room,
        action: Action::Ban,
        target: user,
    });
    let acls = acls.map(move |(instance, room)| Rec::Pending {
        instance,
        room,
        action: Action::ServerAcl,
        target: empty,
    });
    bans.concat(acls)
}

/// What `pending`'s resume looks up: its inputs at the restore point.
struct PendingSeeds {
    /// `member_bans`, sorted by record: by instance, room, user.
    bans: Revision<Rec>,
    /// `acl_sync`, sorted by instance, room.
    acl_sync: Revision<Rec>,
    /// `server_acl`, sorted by instance.
    server_acl: Revision<Rec>,
    /// `outcomes`, sorted by instance, room, action, target.
    outcomes: Revision<Rec>,
    dict: Dictionary,
}

impl PendingSeeds {
    fn ban_group(&self, key: &BanKey) -> Vec<(u8, isize)> {
        let of_ban = |r: &Rec| match r {
            Rec::Ban {
                instance,
                room,
                user,
                ..
            } => (*instance, *room, *user),
            _ => (0, 0, 0),
        };
        let of_outcome = |r: &Rec| match r {
            Rec::Outcome(o) => (o.instance, o.room, o.action, o.target),
            _ => (0, 0, Action::Ban, 0),
        };
        let (instance, room, user) = *key;
        let bans = self.bans.range(of_ban, key).into_iter();
        let outcomes = (self.outcomes)
            .range(of_outcome, &(instance, room, Action::Ban, user))
            .into_iter();
        (bans.chain(outcomes))
            .filter_map(|(r, m)| ban_value(r).map(|(_, v)| (v, m)))
            .collect()
    }

    fn acl_group(&self, instance: &Id) -> Vec<(AclValue, isize)> {
        let of = |r: &Rec| match r {
            Rec::AclSync { instance, .. } | Rec::Acl { instance, .. } => *instance,
            Rec::Outcome(o) => o.instance,
            _ => 0,
        };
        let rows = [&self.acl_sync, &self.server_acl, &self.outcomes]
            .into_iter()
            .flat_map(|rev| rev.range(of, instance));
        rows.filter_map(|(r, m)| acl_value(r, &self.dict).map(|(_, v)| (v, m)))
            .collect()
    }
}

/// `pending`'s delta after the restore point: each reduction's `f(old + d) − f(old)`.
fn resume<'s>(
    deltas: &[Coll<'s, Rec>],
    seeds: &Seeds<Rec>,
    dict: &Dictionary,
    empty: Id,
) -> Coll<'s, Rec> {
    let d = dict.clone();
    let old = seeds.shared(move |s| PendingSeeds {
        bans: s.revision(0),
        acl_sync: s.revision(1),
        server_acl: s.revision(2),
        outcomes: s.revision(3),
        dict: d,
    });
    let o = old.clone();
    let d_bans = resume_reduce(
        "PendingBans",
        ban_values(deltas[0].clone(), deltas[3].clone()),
        move |k| o.get().ban_group(k),
        bans,
    );
    let d_acls = resume_reduce(
        "PendingAcls",
        acl_values(
            deltas[1].clone(),
            deltas[2].clone(),
            deltas[3].clone(),
            dict,
        ),
        move |k| old.get().acl_group(k),
        acls,
    );
    records(d_bans, d_acls, empty)
}

#[cfg(test)]
mod tests {
    crate::replicas::resume_check::resume_test!(
        "`pending` resumed after a restart equals its computation from scratch after every \
         input delta (both reductions resumed).",
        member_bans,
        acl_sync,
        server_acl,
        outcomes
    );
}
