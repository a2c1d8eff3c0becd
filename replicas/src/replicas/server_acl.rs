//! `server_acl`: each instance's intended server ACL, the entities of the non-hashed server
//! ban rules of the policy rooms it watches, minus those that match its own server. A
//! reduction per instance over its existence and denied entities (`server_rules ⋈ watches`);
//! resumed with the same group logic, the join's delta computed from the seeds. Both are
//! small, but recomputing them needs all of `policy_room`: resuming lets a restore leave it
//! out of the dataflow.

use foldhash::HashMap;
use prr_engine::{Coll, Dictionary, Id, Input, ReplicaDescription, Seeds, Strings};

use crate::known::Known;
use crate::record::{Kind, MatchKind, Rec, Relation};
use crate::reduce::{GroupLogic, resume_reduce};
use crate::relations::{InstanceIndex, all, relation_pair, watches};
use crate::rules::{normalize_server, server_entity_matches, server_name};

/// `server_acl`'s description (inputs: `policy_room`, `instances`).
pub(crate) fn description(dict: &Dictionary, _known: &Known) -> ReplicaDescription<Rec> {
    let (d, d2) = (dict.clone(), dict.clone());
    ReplicaDescription::derived(
        "server_acl",
        "instance",
        Rec::partition,
        vec![Input::full("policy_room"), Input::full("instances")],
        move |i| server_acl(i[0].clone(), i[1].clone(), &d),
    )
    .with_resume(move |deltas, seeds| resume(deltas, seeds, &d2))
    .with_record_type("(instance, deny)")
    .with_logic_version(1)
}

/// Each instance's intended server ACL: the entities of its non-hashed server ban rules,
/// minus those that match its own server.
fn server_acl<'s>(
    policy_room: Coll<'s, Rec>,
    instances: Coll<'s, Rec>,
    dict: &Dictionary,
) -> Coll<'s, Rec> {
    let exists = instances.clone().flat_map(exists_of);
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

/// `(instance, None)` of an instance's `exists` record: the value that says it exists.
fn exists_of(r: Rec) -> Option<(Id, Option<Id>)> {
    relation_pair(r, Relation::Exists).map(|(_, instance)| (instance, None))
}

/// `(room, (entity, matcher))` of a non-hashed server ban rule of `policy_room`.
fn server_rule(r: Rec) -> Option<(Id, (Id, MatchKind))> {
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
fn denies(s: &Strings<'_>, instance: Id, entity: Id, matcher: MatchKind) -> bool {
    let own = server_name(s.get(instance)).map(normalize_server);
    let e = s.get(entity);
    !own.is_some_and(|own| server_entity_matches(matcher, Some(e), None, &own))
}

/// An instance's server ACL intent from its group: `None` (the instance exists, sorted first;
/// without it there is no instance) and the denied entities.
fn acl_intent(dict: &Dictionary) -> impl GroupLogic<Id, Option<Id>, Rec> {
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

/// Policy room -> its server rules `((entity, matcher), multiplicity)`.
type ServerRules = HashMap<Id, Vec<((Id, MatchKind), isize)>>;

/// What `server_acl`'s resume looks up: the instances, and the server rules of each policy
/// room.
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
fn resume<'s>(deltas: &[Coll<'s, Rec>], seeds: &Seeds<Rec>, dict: &Dictionary) -> Coll<'s, Rec> {
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
    let d_exists = deltas[1].clone().flat_map(exists_of);
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

#[cfg(test)]
mod tests {
    crate::replicas::resume_check::resume_test!(
        "`server_acl` resumed after a restart equals its computation from scratch after every \
         input delta (the intent's reduction over the server rules' join with the watches, resumed).",
        policy_room,
        instances
    );
}
