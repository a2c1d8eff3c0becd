//! The Matrix replicas as engine descriptions.

use foldhash::HashMap;
use std::sync::Arc;

use prr_engine::{
    Coll, Dag, DagError, Dictionary, Id, Input, JoinView, ReplicaDescription, Strings,
};
use serde_json::{Map, Value};

use crate::record::{Kind, MatchKind, Membership, Rec, RejectReason, Relation, RoomState, Rule};
use crate::resume::{self, rule_match_key, rule_matches};
use crate::rules::{self, normalize_server, parse_rule, server_name, user_match_keys};

/// The names of the replicas, in the order `prr show` and `status` list them.
pub const REPLICAS: [&str; 11] = [
    "room_state",
    "instances",
    "policy_room",
    "policy_list",
    "room_members",
    "member_set",
    "member_matches",
    "member_bans",
    "server_acl",
    "acl_sync",
    "rejects",
];

/// Ids of the strings the computations compare with, interned once when the DAG is built.
#[derive(Clone)]
pub(crate) struct Known {
    pub member: Id,
    pub server_acl: Id,
    pub empty: Id,
    /// Rule event type -> (kind, rank: 0 newest).
    pub rule_types: Arc<HashMap<Id, (Kind, u8)>>,
}

/// A reduction's logic as DD's `reduce` calls it: the key, the group (sorted, consolidated,
/// non-empty) and the output to fill.
pub(crate) trait GroupLogic<K, V, O>:
    Fn(&K, &[(&V, isize)], &mut Vec<(O, isize)>) + 'static
{
}

impl<K, V, O, F: Fn(&K, &[(&V, isize)], &mut Vec<(O, isize)>) + 'static> GroupLogic<K, V, O> for F {}

/// Rule event types by kind, newest first.
pub(crate) fn rule_type_names(kind: Kind) -> [String; 3] {
    let k = kind.as_str();
    [
        format!("m.policy.rule.{k}"),
        format!("m.room.rule.{k}"),
        format!("org.matrix.mjolnir.rule.{k}"),
    ]
}

impl Known {
    pub(crate) fn new(dict: &Dictionary) -> Known {
        let mut rule_types = HashMap::default();
        for kind in [Kind::User, Kind::Server, Kind::Room] {
            for (rank, t) in rule_type_names(kind).iter().enumerate() {
                rule_types.insert(dict.intern(t), (kind, rank as u8));
            }
        }
        Known {
            member: dict.intern("m.room.member"),
            server_acl: dict.intern("m.room.server_acl"),
            empty: dict.intern(""),
            rule_types: Arc::new(rule_types),
        }
    }
}

fn content_of(dict: &Dictionary, id: Id) -> Map<String, Value> {
    dict.with(id, |s| serde_json::from_str(s).unwrap_or_default())
}

/// The logic version of every replica: bump one when its computation changes.
const LOGIC_VERSION: u32 = 1;

/// Builds the DAG of the Matrix replicas over `dict`.
pub fn matrix_dag(dict: &Dictionary) -> Result<Dag<Rec>, DagError> {
    let known = Known::new(dict);
    let by_room: fn(&Rec) -> u64 = Rec::partition;
    let by_instance: fn(&Rec) -> u64 = Rec::partition;
    let mut descs = vec![
        ReplicaDescription::source("room_state", "room_id", by_room).with_record_type(
            "(room_id, type, state_key, event_id, sender, origin_server_ts, content, redacted)",
        ),
        ReplicaDescription::source("instances", "instance", by_instance)
            .with_record_type("(instance, exists|watch|protect, room_id)"),
    ];
    let (d, k) = (dict.clone(), known.clone());
    let (d2, k2) = (dict.clone(), known.clone());
    descs.push(
        ReplicaDescription::derived(
            "policy_room",
            "room_id",
            by_room,
            vec![Input::full("room_state")],
            move |i| rule_slots(i[0].clone(), &d, &k).filter(|r| matches!(r, Rec::Rule(_))),
        )
        .with_resume(move |deltas, seeds| resume::policy_room(deltas, seeds, &d2, &k2))
        .with_record_type("rule (room_id, kind, state_key, ...)"),
    );
    // A view: one record per (instance, watched rule) is the largest replica by far (18.9M
    // records for 100k rules and 1,000 instances) and nothing else reads it, so it is
    // evaluated from `policy_room` and the watches when read instead of being stored.
    descs.push(
        ReplicaDescription::join_view(
            "policy_list",
            "instance",
            by_instance,
            "policy_room",
            "instances",
            JoinView {
                left_key: |r| match r {
                    Rec::Rule(rule) => Some(rule.room),
                    _ => None,
                },
                right_key: |r| match r {
                    Rec::Instance {
                        relation: Relation::Watch,
                        room,
                        ..
                    } => Some(*room),
                    _ => None,
                },
                combine: |l, r| match (l, r) {
                    (Rec::Rule(rule), Rec::Instance { instance, .. }) => Some(Rec::ListRule {
                        instance: *instance,
                        rule: rule.clone(),
                    }),
                    _ => None,
                },
                partition_follows_right: true,
            },
        )
        .with_record_type("(instance, rule)"),
    );
    let (d, k) = (dict.clone(), known.clone());
    descs.push(
        ReplicaDescription::derived(
            "room_members",
            "room_id",
            by_room,
            vec![Input::deltas("room_state")],
            move |i| {
                let (d, k) = (d.clone(), k.clone());
                i[0].clone().flat_map(move |r| match member_of(&r, &d, &k) {
                    Some(Ok(m)) => Some(m),
                    _ => None,
                })
            },
        )
        .with_record_type("(room_id, user_id, membership, displayname)"),
    );
    descs.push(
        ReplicaDescription::derived(
            "member_set",
            "instance",
            by_instance,
            vec![Input::full("room_members"), Input::full("instances")],
            |i| {
                present_members(i[0].clone())
                    .join(protects(i[1].clone()))
                    .map(|(_room, (user, instance))| (instance, user))
                    .count()
                    .map(|((instance, user), rooms)| Rec::MemberSet {
                        instance,
                        user,
                        rooms: rooms as u32,
                    })
            },
        )
        .with_resume(resume::member_set)
        .with_record_type("(instance, user_id, rooms)"),
    );
    let (d, d2) = (dict.clone(), dict.clone());
    descs.push(
        ReplicaDescription::derived(
            "member_matches",
            "instance",
            by_instance,
            vec![
                Input::full("policy_room"),
                Input::full("member_set"),
                Input::full("instances"),
            ],
            move |i| member_matches(i[0].clone(), i[1].clone(), i[2].clone(), &d),
        )
        .with_resume(move |deltas, seeds| resume::member_matches(deltas, seeds, &d2))
        .with_record_type("(instance, user_id, rule)"),
    );
    let (d, d2) = (dict.clone(), dict.clone());
    descs.push(
        ReplicaDescription::derived(
            "member_bans",
            "instance",
            by_instance,
            vec![
                Input::full("member_matches"),
                Input::full("room_members"),
                Input::full("instances"),
            ],
            move |i| member_bans(i[0].clone(), i[1].clone(), i[2].clone(), &d),
        )
        .with_resume(move |deltas, seeds| resume::member_bans(deltas, seeds, &d2))
        .with_record_type("(instance, room_id, user_id, rule_room_id, rule_event_id, reason)"),
    );
    let (d, d2) = (dict.clone(), dict.clone());
    descs.push(
        ReplicaDescription::derived(
            "server_acl",
            "instance",
            by_instance,
            vec![Input::full("policy_room"), Input::full("instances")],
            move |i| server_acl(i[0].clone(), i[1].clone(), &d),
        )
        .with_resume(move |deltas, seeds| resume::server_acl(deltas, seeds, &d2))
        .with_record_type("(instance, deny)"),
    );
    let (d, k) = (dict.clone(), known.clone());
    let (d2, k2) = (dict.clone(), known.clone());
    descs.push(
        ReplicaDescription::derived(
            "acl_sync",
            "instance",
            by_instance,
            vec![
                Input::full("room_state"),
                Input::full("server_acl"),
                Input::full("instances"),
            ],
            move |i| acl_sync(i[0].clone(), i[1].clone(), i[2].clone(), &d, &k),
        )
        .with_resume(move |deltas, seeds| resume::acl_sync(deltas, seeds, &d2, &k2))
        .with_record_type("(instance, room_id, in_sync)"),
    );
    let (d, k) = (dict.clone(), known.clone());
    let (d2, k2) = (dict.clone(), known.clone());
    descs.push(
        ReplicaDescription::derived(
            "rejects",
            "room_id",
            by_room,
            vec![Input::full("room_state")],
            move |i| {
                let slots =
                    rule_slots(i[0].clone(), &d, &k).filter(|r| matches!(r, Rec::Reject { .. }));
                let (d, k) = (d.clone(), k.clone());
                let members = i[0].clone().flat_map(move |r| member_reject(&r, &d, &k));
                slots.concat(members)
            },
        )
        .with_resume(move |deltas, seeds| resume::rejects(deltas, seeds, &d2, &k2))
        .with_record_type("(room_id, event_id, type, state_key, replica, reason)"),
    );
    Dag::new(
        descs
            .into_iter()
            .map(|d| d.with_logic_version(LOGIC_VERSION))
            .collect(),
    )
}

/// `(room, instance)` for every watched policy room.
fn watches(instances: Coll<'_, Rec>) -> Coll<'_, (Id, Id)> {
    relation(instances, Relation::Watch)
}

/// `(room, instance)` for every protected room.
fn protects(instances: Coll<'_, Rec>) -> Coll<'_, (Id, Id)> {
    relation(instances, Relation::Protect)
}

fn relation(instances: Coll<'_, Rec>, which: Relation) -> Coll<'_, (Id, Id)> {
    instances.flat_map(move |r| relation_pair(r, which))
}

/// `(room, instance)` of an `instances` record of relation `which`.
pub(crate) fn relation_pair(r: Rec, which: Relation) -> Option<(Id, Id)> {
    match r {
        Rec::Instance {
            instance,
            relation,
            room,
        } if relation == which => Some((room, instance)),
        _ => None,
    }
}

/// `(room, user)` for every present member (join, invite, knock).
fn present_members(members: Coll<'_, Rec>) -> Coll<'_, (Id, Id)> {
    members.flat_map(present_member)
}

/// `(room, user)` of a `room_members` record of a present member.
pub(crate) fn present_member(r: Rec) -> Option<(Id, Id)> {
    match r {
        Rec::Member {
            room,
            user,
            membership,
            ..
        } if membership.present() => Some((room, user)),
        _ => None,
    }
}

/// The fields of a member event's content that the replicas read. Deserializing only these
/// skips every other field without building it (a restore reads a million member events).
#[derive(serde::Deserialize, Default)]
struct MemberFields {
    membership: Option<Value>,
    displayname: Option<Value>,
}

/// The member fields of a stored content (stored contents are JSON objects without duplicate
/// keys, written by the ingest; anything else reads as an empty object, as in [`content_of`]).
fn member_fields(dict: &Dictionary, id: Id) -> MemberFields {
    dict.with(id, |c| serde_json::from_str(c).unwrap_or_default())
}

/// A `room_members` record or a reject, for a member event of `room_state`.
fn member_of(r: &Rec, dict: &Dictionary, known: &Known) -> Option<Result<Rec, Rec>> {
    let Rec::RoomState(s) = r else { return None };
    if s.event_type != known.member {
        return None;
    }
    let content = member_fields(dict, s.content);
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
    membership_of(s, &member_fields(dict, s.content)).err()
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

/// A rule slot: `(room, kind, state_key)`.
pub(crate) type SlotKey = (Id, Kind, Id);

/// The slot of a policy rule event of `room_state`, with the event's rank (0: newest type).
pub(crate) fn slot_of(r: Rec, known: &Known) -> Option<(SlotKey, (u8, RoomState))> {
    match r {
        Rec::RoomState(s) => known
            .rule_types
            .get(&s.event_type)
            .map(|(kind, rank)| ((s.room, *kind, s.state_key), (*rank, s))),
        _ => None,
    }
}

/// What a slot holds: its newest-type event decides (a rule, a reject, or nothing).
pub(crate) fn slot_logic(dict: &Dictionary) -> impl GroupLogic<SlotKey, (u8, RoomState), Rec> {
    let d = dict.clone();
    move |key, input, output| {
        let (_rank, s) = input[0].0;
        if s.redacted {
            return;
        }
        let content = content_of(&d, s.content);
        match parse_rule(&content) {
            Ok(None) => {}
            Ok(Some(rc)) => {
                let rule = Rule {
                    room: key.0,
                    kind: key.1,
                    state_key: key.2,
                    event_type: s.event_type,
                    event_id: s.event_id,
                    sender: s.sender,
                    matcher: rc.matcher,
                    entity: rc.entity.map(|e| d.intern(e)),
                    sha256: rc.sha256.map(|h| d.intern(h)),
                    recommendation: d.intern(rc.recommendation),
                    class: crate::record::Class::of(rc.recommendation),
                    reason: rc.reason.map(|r| d.intern(r)),
                };
                output.push((Rec::Rule(Arc::new(rule)), 1));
            }
            Err(reason) => output.push((
                Rec::Reject {
                    room: key.0,
                    event_id: s.event_id,
                    event_type: s.event_type,
                    state_key: key.2,
                    reason,
                },
                1,
            )),
        }
    }
}

/// Policy rule slots: for each `(room, kind, state_key)`, the newest-type event present
/// decides: a rule, a reject, or nothing (empty or redacted).
fn rule_slots<'s>(room_state: Coll<'s, Rec>, dict: &Dictionary, known: &Known) -> Coll<'s, Rec> {
    let k = known.clone();
    room_state
        .flat_map(move |r| slot_of(r, &k))
        .reduce_named("RuleSlots", slot_logic(dict))
        .map(|(_, rec)| rec)
}

/// Each rule is matched once against each present user, whatever the number of instances;
/// then the matches are spread to the instances that watch the rule's room and have the user.
fn member_matches<'s>(
    policy_room: Coll<'s, Rec>,
    member_set: Coll<'s, Rec>,
    instances: Coll<'s, Rec>,
    dict: &Dictionary,
) -> Coll<'s, Rec> {
    let d = dict.clone();
    let rules = policy_room.flat_map(move |r| match r {
        Rec::Rule(rule) => {
            let key = rule_match_key(&rule, &d.strings());
            key.map(|k| (k, rule))
        }
        _ => None,
    });
    let users = member_set
        .clone()
        .flat_map(|r| match r {
            Rec::MemberSet { user, .. } => Some(user),
            _ => None,
        })
        .distinct();
    let d = dict.clone();
    let probes = users.flat_map(move |u| {
        let keys = d.with(u, user_match_keys);
        keys.into_iter().map(move |k| (k, u))
    });
    let d = dict.clone();
    let matches = rules
        .join(probes)
        .filter(move |(_, (rule, user))| rule_matches(rule, *user, &d.strings()));
    let present = member_set.flat_map(|r| match r {
        Rec::MemberSet { instance, user, .. } => Some((user, instance)),
        _ => None,
    });
    let watched = watches(instances).map(|(room, instance)| (instance, room));
    matches
        .map(|(_, (rule, user))| (user, rule))
        .join(present)
        .map(|(user, (rule, instance))| ((instance, rule.room), (user, rule)))
        .semijoin(watched)
        .map(|((instance, _), (user, rule))| Rec::Match {
            instance,
            user,
            rule,
        })
}

/// What `member_bans` keeps of a user ban rule match: `(rule room, event id, state key,
/// reason)`.
pub(crate) type BanRule = (Id, Id, Id, Option<Id>);

/// A `member_matches` record of a user ban rule, keyed by `(instance, user)`.
pub(crate) fn ban_value(r: Rec) -> Option<((Id, Id), BanRule)> {
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
pub(crate) fn choose_ban_rule(dict: &Dictionary) -> impl GroupLogic<(Id, Id), BanRule, BanRule> {
    let d = dict.clone();
    move |_key, input, output| {
        let s = d.strings();
        let text = |v: &BanRule| (s.get(v.0), s.get(v.1), s.get(v.2));
        let chosen = input
            .iter()
            .map(|(v, _)| *v)
            .min_by(|a, b| text(a).cmp(&text(b)))
            .expect("non-empty group");
        output.push((*chosen, 1));
    }
}

/// A `member_bans` record.
pub(crate) fn ban_record(instance: Id, user: Id, rule: BanRule, room: Id) -> Rec {
    let (rule_room, rule_event, _, reason) = rule;
    Rec::Ban {
        instance,
        room,
        user,
        rule_room,
        rule_event,
        reason,
    }
}

/// `(room, user)` for every membership that is not `ban`.
pub(crate) fn not_banned(r: Rec) -> Option<(Id, Id)> {
    match r {
        Rec::Member {
            room,
            user,
            membership,
            ..
        } if membership != Membership::Ban => Some((room, user)),
        _ => None,
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
        .flat_map(not_banned)
        .join(protects(instances))
        .map(|(room, (user, instance))| ((instance, user), room));
    best.join(user_rooms)
        .map(|((instance, user), (rule, room))| ban_record(instance, user, rule, room))
}

/// Each instance's intended server ACL: the entities of its non-hashed server ban rules,
/// minus those that match its own server.
fn server_acl<'s>(
    policy_room: Coll<'s, Rec>,
    instances: Coll<'s, Rec>,
    dict: &Dictionary,
) -> Coll<'s, Rec> {
    let exists = instances.clone().flat_map(|r| match r {
        Rec::Instance {
            instance,
            relation: Relation::Exists,
            ..
        } => Some((instance, None)),
        _ => None,
    });
    let server_rules = policy_room.flat_map(server_rule);
    let d = dict.clone();
    let denied = server_rules
        .join(watches(instances))
        .map(|(_, ((entity, matcher), instance))| (instance, (entity, matcher)))
        .filter(move |(instance, (entity, matcher))| {
            denies(&d.strings(), *instance, *entity, *matcher)
        })
        .map(|(instance, (entity, _))| (instance, Some(entity)));
    exists
        .concat(denied)
        .reduce_named("AclIntent", acl_intent(dict))
        .map(|(_, rec)| rec)
}

/// `(room, (entity, matcher))` of a non-hashed server ban rule of `policy_room`.
pub(crate) fn server_rule(r: Rec) -> Option<(Id, (Id, MatchKind))> {
    match r {
        Rec::Rule(rule)
            if rule.kind == Kind::Server
                && rule.matcher != MatchKind::Hashed
                && rule.class.bans() =>
        {
            rule.entity.map(|e| (rule.room, (e, rule.matcher)))
        }
        _ => None,
    }
}

/// Whether `instance`'s server ACL denies a server rule's entity: unless it matches the
/// instance's own server.
pub(crate) fn denies(s: &Strings<'_>, instance: Id, entity: Id, matcher: MatchKind) -> bool {
    let own = server_name(s.get(instance)).map(normalize_server);
    let e = s.get(entity);
    !own.is_some_and(|own| rules::server_entity_matches(matcher, Some(e), None, &own))
}

/// An instance's server ACL intent from its group: `None` (the instance exists, sorted first;
/// without it there is no instance) and the denied entities.
pub(crate) fn acl_intent(dict: &Dictionary) -> impl GroupLogic<Id, Option<Id>, Rec> {
    let d = dict.clone();
    move |instance, input, output| {
        if input[0].0.is_some() {
            return;
        }
        let mut deny: Vec<Id> = input.iter().filter_map(|(e, _)| **e).collect();
        let s = d.strings();
        deny.sort_by(|a, b| s.get(*a).cmp(s.get(*b)));
        deny.dedup();
        output.push((
            Rec::Acl {
                instance: *instance,
                deny,
            },
            1,
        ));
    }
}

/// Whether each protected room's current `m.room.server_acl` equals its instance's intent.
fn acl_sync<'s>(
    room_state: Coll<'s, Rec>,
    server_acl: Coll<'s, Rec>,
    instances: Coll<'s, Rec>,
    dict: &Dictionary,
    known: &Known,
) -> Coll<'s, Rec> {
    let k = known.clone();
    let acls = room_state.flat_map(move |r| acl_event(&r, &k));
    let protected = protects(instances);
    let with_acl = protected
        .clone()
        .join(acls.clone())
        .map(|(room, (instance, content))| (instance, (room, Some(content))));
    let without = protected
        .antijoin(acls.map(|(room, _)| room))
        .map(|(room, instance)| (instance, (room, None)));
    let intents = server_acl.flat_map(acl_intent_of);
    let d = dict.clone();
    with_acl
        .concat(without)
        .join(intents)
        .map(move |(instance, ((room, content), deny))| {
            acl_sync_record(instance, room, content, &deny, &d)
        })
}

/// `(room, content)` of a room's current `m.room.server_acl` event in `room_state`.
pub(crate) fn acl_event(r: &Rec, known: &Known) -> Option<(Id, Id)> {
    match r {
        Rec::RoomState(s) if s.event_type == known.server_acl && s.state_key == known.empty => {
            Some((s.room, s.content))
        }
        _ => None,
    }
}

/// `(instance, deny)` of a `server_acl` record.
pub(crate) fn acl_intent_of(r: Rec) -> Option<(Id, Vec<Id>)> {
    match r {
        Rec::Acl { instance, deny } => Some((instance, deny)),
        _ => None,
    }
}

/// An `acl_sync` record: whether `room`'s ACL `content` (if any) equals the intent `deny`.
pub(crate) fn acl_sync_record(
    instance: Id,
    room: Id,
    content: Option<Id>,
    deny: &[Id],
    dict: &Dictionary,
) -> Rec {
    Rec::AclSync {
        instance,
        room,
        in_sync: content.is_some_and(|c| acl_equals_intent(&content_of(dict, c), deny, dict)),
    }
}

/// `allow` and `deny` compared as sets (missing = empty; not an array of strings = unequal),
/// `allow_ip_literals` missing = true.
fn acl_equals_intent(content: &Map<String, Value>, deny: &[Id], dict: &Dictionary) -> bool {
    fn as_set(v: Option<&Value>) -> Option<std::collections::BTreeSet<String>> {
        match v {
            None => Some(Default::default()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect(),
            Some(_) => None,
        }
    }
    let want_deny: std::collections::BTreeSet<String> =
        deny.iter().map(|id| dict.get(*id)).collect();
    let allow_ip = content
        .get("allow_ip_literals")
        .unwrap_or(&Value::Bool(true));
    as_set(content.get("allow")) == Some(std::iter::once("*".to_string()).collect())
        && as_set(content.get("deny")) == Some(want_deny)
        && *allow_ip == Value::Bool(false)
}
