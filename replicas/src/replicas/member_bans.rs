//! `member_bans`: for each instance and user with a matching user ban rule, the rule with the
//! smallest `(room_id, event_id, state_key)`, in every protected room where the user has a
//! membership that is not `ban`. Resumed as `best ⋈ user_rooms`, with `best` a reduction over
//! `member_matches` (the same group logic) and `user_rooms` the memberships' join (see
//! [`crate::memberships`]).

use std::sync::Arc;

use prr_engine::{Coll, Dictionary, Id, Input, ReplicaDescription, Revision, Seeds};

use crate::known::Known;
use crate::member_events::{member_pair, not_ban};
use crate::memberships::{Memberships, resume_user_rooms};
use crate::record::{ChosenRule, Kind, Rec};
use crate::reduce::{GroupLogic, apply_group, resume_reduce};
use crate::relations::{protect_pair, protects};

/// `member_bans`' description (inputs: `member_matches`, `room_members`, `instances`).
pub(crate) fn description(dict: &Dictionary, _known: &Known) -> ReplicaDescription<Rec> {
    let (d, d2) = (dict.clone(), dict.clone());
    ReplicaDescription::derived(
        "member_bans",
        "instance",
        Rec::partition,
        vec![
            Input::full("member_matches"),
            Input::full("room_members"),
            Input::full("instances"),
        ],
        move |i| member_bans(i[0].clone(), i[1].clone(), i[2].clone(), &d),
    )
    .with_resume(move |deltas, seeds| resume(deltas, seeds, &d2))
    .with_record_type("(instance, room_id, user_id, rule_room_id, rule_event_id, reason)")
    .with_logic_version(1)
}

/// What `member_bans` keeps of a user ban rule match: `(rule room, event id, state key,
/// reason)`.
type BanRule = (Id, Id, Id, Option<Id>);

/// `((instance, user), (chosen rule, protected room))`: a ban before it is a record.
type BanInRoom = ((Id, Id), (BanRule, Id));

/// A `member_matches` record of a user ban rule, keyed by `(instance, user)`.
fn ban_value(r: Rec) -> Option<((Id, Id), BanRule)> {
    match r {
        Rec::Match {
            instance,
            user,
            rule,
        } if rule.kind == Kind::User && rule.class.bans() => Some((
            (instance, user),
            (rule.room, rule.event_id, rule.state_key, rule.reason),
        )),
        _ => None,
    }
}

/// The ban rule chosen for an `(instance, user)`: the smallest `(room_id, event_id,
/// state_key)` as text.
fn choose_ban_rule(dict: &Dictionary) -> impl GroupLogic<(Id, Id), BanRule, BanRule> {
    let d = dict.clone();
    move |_key, input, output| {
        let s = d.strings();
        let text = |v: &BanRule| (s.get(v.0), s.get(v.1), s.get(v.2));
        // DD's groups are never empty.
        let chosen = input
            .iter()
            .map(|(v, _)| *v)
            .min_by(|a, b| text(a).cmp(&text(b)));
        output.extend(chosen.map(|v| (*v, 1)));
    }
}

/// Makes `member_bans` records from `((instance, user), (rule, room))`. Consecutive bans of
/// the same chosen rule share one `ChosenRule`: the thousands of bans a glob rule adds or
/// removes at once hold one allocation, whose count stays in cache as differential dataflow
/// clones and drops them, not an allocation each.
fn ban_records() -> impl FnMut(BanInRoom) -> Rec + 'static {
    let mut last: Option<Arc<ChosenRule>> = None;
    move |((instance, user), ((rule_room, rule_event, _, reason), room))| {
        let chosen = ChosenRule {
            room: rule_room,
            event: rule_event,
            reason,
        };
        let rule = match &last {
            Some(shared) if **shared == chosen => shared.clone(),
            _ => last.insert(Arc::new(chosen)).clone(),
        };
        Rec::Ban {
            instance,
            room,
            user,
            rule,
        }
    }
}

/// For each (instance, user) with a matching user ban rule, the rule with the smallest
/// `(room_id, event_id)`; then every protected room where the user has a membership that is
/// not `ban`.
fn member_bans<'s>(
    matches: Coll<'s, Rec>,
    members: Coll<'s, Rec>,
    instances: Coll<'s, Rec>,
    dict: &Dictionary,
) -> Coll<'s, Rec> {
    let best = matches
        .flat_map(ban_value)
        .reduce_named("ChooseBanRule", choose_ban_rule(dict));
    // (instance, user) -> every protected room of the instance where the user has a membership
    // that is not `ban`: a chosen rule meets exactly the rooms of its ban intents, not every
    // room the instance protects (a glob matching thousands of users would otherwise be
    // joined with each instance's 1-20 rooms first and filtered afterwards).
    let user_rooms = members
        .flat_map(|r| member_pair(r, not_ban))
        .join(protects(instances))
        .map(|(room, (user, instance))| ((instance, user), room));
    best.join(user_rooms).map(ban_records())
}

/// What `member_bans`' resume looks up: the memberships, and `member_matches` at the restore
/// point.
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
        apply_group(key, self.ban_rules(key), &choose_ban_rule(&self.dict))
    }
}

/// `member_bans`' delta after the restore point.
fn resume<'s>(deltas: &[Coll<'s, Rec>], seeds: &Seeds<Rec>, dict: &Dictionary) -> Coll<'s, Rec> {
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
    let d_rooms = resume_user_rooms(
        deltas[1].clone().flat_map(|r| member_pair(r, not_ban)),
        deltas[2].clone().flat_map(protect_pair),
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
    new_rules.concat(both).concat(new_rooms).map(ban_records())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_bans_of_one_rule_share_its_chosen_rule() {
        let mut make = ban_records();
        let rule = |event| (1, event, 2, Some(3));
        let bans: Vec<Rec> = [(10, 100, 7), (10, 101, 7), (11, 101, 8), (10, 102, 7)]
            .into_iter()
            .map(|(user, room, event)| make(((5, user), (rule(event), room))))
            .collect();
        let chosen = |r: &Rec| match r {
            Rec::Ban { rule, .. } => rule.clone(),
            other => panic!("not a ban: {other:?}"),
        };
        let c: Vec<Arc<ChosenRule>> = bans.iter().map(chosen).collect();
        assert!(Arc::ptr_eq(&c[0], &c[1]), "the same rule, one allocation");
        assert!(!Arc::ptr_eq(&c[1], &c[2]));
        assert_eq!(
            *c[2],
            ChosenRule {
                room: 1,
                event: 8,
                reason: Some(3)
            }
        );
        // A rule seen again after another is equal, shared or not.
        assert_eq!(c[3], c[0]);
        assert_eq!(
            bans[1],
            Rec::Ban {
                instance: 5,
                room: 101,
                user: 10,
                rule: Arc::new((*c[0]).clone())
            }
        );
    }

    crate::replicas::resume_check::resume_test!(
        "`member_bans` resumed after a restart equals its computation from scratch after every \
         input delta (the chosen rule's reduction and the join with the memberships, resumed).",
        member_matches,
        room_members,
        instances
    );
}
