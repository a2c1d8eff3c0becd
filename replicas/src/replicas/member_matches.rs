//! `member_matches`: for each instance, the users of its `member_set` that a rule of a policy
//! room it watches matches. Each rule is matched once against each present user, whatever the
//! number of instances; then the matches are spread to the instances that watch the rule's
//! room and have the user.
//!
//! Resumed as a join: its contents are `R ⋈ P ⋈ W`: rules `R` that match a user,
//! `(user, instance)` pairs `P` of `member_set`, and `(instance, rule room)` watches `W`. With
//! `X_new = X_old + dX`, its delta is the delta-join sum
//! `dR ⋈ P_new ⋈ W_new + R_old ⋈ dP ⋈ W_new + R_old ⋈ P_old ⋈ dW`:
//! the deltas flow through the dataflow (joined with each other where two meet), and the old
//! contents are looked up in indexes built from the seeds.

use std::sync::{Arc, OnceLock};

use foldhash::HashMap;
use prr_engine::dataflow::differential_dataflow::operators::ThresholdTotal;
use prr_engine::{Coll, Dictionary, Id, Input, ReplicaDescription, Seeds, Strings};

use crate::known::Known;
use crate::record::{Kind, MatchKind, Rec, Relation, Rule};
use crate::relations::watches;
use crate::rules::{
    KeyFamily, MatchKey, rule_match_key, rule_matches, server_match_keys, server_name,
    user_keys_of, user_match_keys,
};

/// `member_matches`' description (inputs: `policy_room`, `member_set`, `instances`).
pub(crate) fn description(dict: &Dictionary, _known: &Known) -> ReplicaDescription<Rec> {
    let (d, d2) = (dict.clone(), dict.clone());
    ReplicaDescription::derived(
        "member_matches",
        "instance",
        Rec::partition,
        vec![
            Input::full("policy_room"),
            Input::full("member_set"),
            Input::full("instances"),
        ],
        move |i| member_matches(i[0].clone(), i[1].clone(), i[2].clone(), &d),
    )
    .with_resume(move |deltas, seeds| resume(deltas, seeds, &d2))
    .with_record_type("(instance, user_id, rule)")
    .with_logic_version(1)
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
        // Not arranged again: the users are read only by the probes below.
        .distinct_total();
    let d = dict.clone();
    let probes = users.flat_map(move |u| {
        let keys = d.with(u, user_match_keys);
        keys.into_iter().map(move |k| (k, u))
    });
    // Each candidate pair is compared inside the join: only matches leave it (a rule without a
    // usable literal part meets every user; the pairs are never materialized).
    let d = dict.clone();
    let matches = rules.join_core(probes.arrange_by_key(), move |_, rule, user| {
        rule_matches(rule, *user, &d.strings()).then(|| (*user, rule.clone()))
    });
    let present = member_set.flat_map(|r| match r {
        Rec::MemberSet { instance, user, .. } => Some((user, instance)),
        _ => None,
    });
    let watched = watches(instances).map(|(room, instance)| (instance, room));
    matches
        .join(present)
        .map(|(user, (rule, instance))| ((instance, rule.room), (user, rule)))
        .semijoin(watched)
        .map(|((instance, _), (user, rule))| Rec::Match {
            instance,
            user,
            rule,
        })
}

/// The contents of `member_matches`' inputs at the restore point, indexed.
struct MatchSeeds {
    /// Rules by match key, with their multiplicity.
    rules_by_key: HashMap<MatchKey, Vec<(Arc<Rule>, isize)>>,
    /// Rules by policy room.
    rules_by_room: HashMap<Id, Vec<(Arc<Rule>, isize)>>,
    /// `(instance, room)` watches.
    watched: HashMap<(Id, Id), isize>,
    /// The user indexes, built when first needed: only policy and watch changes need them (a
    /// membership change meets the old rules, not the old users). When the runtime decodes
    /// seeds ahead (a long-running process), a thread of their own starts building them at
    /// once. Or why they could not be: `member_set`'s revision did not decode, or the runtime
    /// stopped first.
    users: Arc<OnceLock<Result<UserSeeds, String>>>,
    /// What the user indexes are built from.
    from: (Seeds<Rec>, Dictionary),
}

/// The user indexes of [`MatchSeeds`], from `member_set`'s seed; or why it did not decode.
fn user_seeds((seeds, dict): &(Seeds<Rec>, Dictionary)) -> Result<UserSeeds, String> {
    // Not `Seeds::input`: the thread that builds them ahead may outlive the dataflow, and
    // the store.
    (seeds.try_input(MEMBER_SET)).map(|rows| UserSeeds::build(rows, dict))
}

/// The users of `member_set` at the restore point, each with its instances: user `users[i]`
/// has `instances[offsets[i]..offsets[i + 1]]` (one sort instead of a map with a vector per
/// user: a million users take a fraction of the time).
#[derive(Default)]
struct UserSeeds {
    users: Vec<Id>,
    offsets: Vec<usize>,
    instances: Vec<(Id, isize)>,
    /// Every user (once) under each of its match keys of a family, each family built when a
    /// rule of it first needs it ([`UserSeeds::by_key`]): glob, hashed, server. A literal
    /// rule's entity is its only candidate; the hashed keys cost a SHA-256 per user, which a
    /// glob rule need not wait for; the server keys are computed once per server.
    by_key: [OnceLock<HashMap<MatchKey, Vec<Id>>>; 3],
    dict: Dictionary,
}

const POLICY_ROOM: usize = 0;
const MEMBER_SET: usize = 1;
const INSTANCES: usize = 2;

impl MatchSeeds {
    fn build(seeds: &Seeds<Rec>, dict: &Dictionary) -> MatchSeeds {
        let mut rules_by_key: HashMap<MatchKey, Vec<(Arc<Rule>, isize)>> = HashMap::default();
        let mut rules_by_room: HashMap<Id, Vec<(Arc<Rule>, isize)>> = HashMap::default();
        // Waits for the decoded rules before read-locking the dictionary, and locks it a few
        // thousand rules at a time (an ingest interning a string must not wait long).
        for chunk in seeds.input(POLICY_ROOM).chunks(4096) {
            let s = dict.strings();
            for (r, m) in chunk {
                if let Rec::Rule(rule) = r {
                    if let Some(k) = rule_match_key(rule, &s) {
                        rules_by_key.entry(k).or_default().push((rule.clone(), *m));
                    }
                    rules_by_room
                        .entry(rule.room)
                        .or_default()
                        .push((rule.clone(), *m));
                }
            }
        }
        let mut watched: HashMap<(Id, Id), isize> = HashMap::default();
        for (r, m) in seeds.input(INSTANCES) {
            if let Rec::Instance {
                instance,
                relation: Relation::Watch,
                room,
            } = r
            {
                *watched.entry((*instance, *room)).or_default() += m;
            }
        }
        let users = Arc::new(OnceLock::new());
        let from = (seeds.clone(), dict.clone());
        if seeds.ahead() {
            let (u, from) = (users.clone(), from.clone());
            std::thread::spawn(move || {
                u.get_or_init(|| user_seeds(&from));
            });
        }
        MatchSeeds {
            rules_by_key,
            rules_by_room,
            watched,
            users,
            from,
        }
    }

    /// The user indexes: built here if no thread builds them, else waiting for them.
    ///
    /// # Panics
    /// If `member_set`'s revision did not decode (a corrupt store, which the runtime reports).
    fn users(&self) -> &UserSeeds {
        (self.users.get_or_init(|| user_seeds(&self.from)).as_ref())
            .unwrap_or_else(|e| prr_engine::damage_panic(format!("store is damaged: {e}")))
    }

    /// Old users that `rule` matches.
    fn old_users_matching<'a>(
        &'a self,
        rule: &'a Rule,
        s: &'a Strings<'_>,
    ) -> impl Iterator<Item = Id> + 'a {
        let users = self.users();
        let literal = rule.kind == Kind::User && rule.matcher == MatchKind::Literal;
        // The entity is interned as the user IDs are: equal strings, equal ids.
        let entity = (rule.entity).filter(|e| literal && users.users.binary_search(e).is_ok());
        // A literal rule's key has no index: its entity is its candidate.
        let keyed: &[Id] = rule_match_key(rule, s)
            .and_then(|k| users.by_key(KeyFamily::of(&k))?.get(&k))
            .map_or(&[], Vec::as_slice);
        entity
            .into_iter()
            .chain(keyed.iter().copied())
            .filter(move |u| rule_matches(rule, *u, s))
    }

    /// Old rules that match `user`, with their multiplicity.
    fn old_rules_matching(&self, user: Id, s: &Strings<'_>) -> Vec<(Arc<Rule>, isize)> {
        let mut out = Vec::new();
        for k in user_match_keys(s.get(user)) {
            for (rule, m) in self.rules_by_key.get(&k).into_iter().flatten() {
                if rule_matches(rule, user, s) {
                    out.push((rule.clone(), *m));
                }
            }
        }
        out
    }
}

impl UserSeeds {
    /// From `member_set`'s contents at the restore point.
    fn build(member_set: &[(Rec, isize)], dict: &Dictionary) -> UserSeeds {
        let mut pairs: Vec<(Id, Id, isize)> = member_set
            .iter()
            .filter_map(|(r, m)| match r {
                Rec::MemberSet { instance, user, .. } => Some((*user, *instance, *m)),
                _ => None,
            })
            .collect();
        pairs.sort_unstable();
        let mut seeds = UserSeeds {
            dict: dict.clone(),
            ..UserSeeds::default()
        };
        seeds.instances.reserve(pairs.len());
        for (user, instance, m) in pairs {
            if seeds.users.last() != Some(&user) {
                seeds.users.push(user);
                seeds.offsets.push(seeds.instances.len());
            }
            seeds.instances.push((instance, m));
        }
        seeds.offsets.push(seeds.instances.len());
        seeds
    }

    /// `user`'s old instances, with multiplicity.
    fn instances_of(&self, user: Id) -> &[(Id, isize)] {
        match self.users.binary_search(&user) {
            Ok(i) => &self.instances[self.offsets[i]..self.offsets[i + 1]],
            Err(_) => &[],
        }
    }

    /// The users under each of their match keys of `family` (none for literal keys: a
    /// literal rule's entity is its only candidate), built on first use.
    fn by_key(&self, family: KeyFamily) -> Option<&HashMap<MatchKey, Vec<Id>>> {
        let slot = match family {
            KeyFamily::UserLiteral => return None,
            KeyFamily::UserGlob => 0,
            KeyFamily::UserHash => 1,
            KeyFamily::Server => 2,
        };
        Some(self.by_key[slot].get_or_init(|| {
            let mut by_key: HashMap<MatchKey, Vec<Id>> = HashMap::default();
            let mut servers: HashMap<String, Vec<MatchKey>> = HashMap::default();
            let mut keys = Vec::new();
            // The dictionary is read-locked a few thousand users at a time: an ingest
            // interning a new string (a write) must not wait for the whole index.
            for chunk in self.users.chunks(4096) {
                let s = self.dict.strings();
                for user in chunk {
                    let u = s.get(*user);
                    keys.clear();
                    match (family, server_name(u)) {
                        (KeyFamily::Server, Some(server)) => {
                            if !servers.contains_key(server) {
                                servers.insert(server.to_string(), server_match_keys(server));
                            }
                            keys.extend_from_slice(&servers[server]);
                        }
                        _ => user_keys_of(u, family, &mut keys),
                    }
                    keys.sort_unstable();
                    keys.dedup();
                    for k in &keys {
                        by_key.entry(*k).or_default().push(*user);
                    }
                }
            }
            by_key
        }))
    }
}

/// `member_matches`' delta after the restore point, from the deltas of `policy_room`,
/// `member_set` and `instances` (see the module documentation).
fn resume<'s>(deltas: &[Coll<'s, Rec>], seeds: &Seeds<Rec>, dict: &Dictionary) -> Coll<'s, Rec> {
    let d = dict.clone();
    let old = seeds.shared(move |s| MatchSeeds::build(s, &d));
    let d_rules = deltas[POLICY_ROOM].clone().flat_map(|r| match r {
        Rec::Rule(rule) => Some(rule),
        _ => None,
    });
    let d_present = deltas[MEMBER_SET].clone().flat_map(|r| match r {
        Rec::MemberSet { instance, user, .. } => Some((user, instance)),
        _ => None,
    });
    let d_watched = deltas[INSTANCES].clone().flat_map(|r| match r {
        Rec::Instance {
            instance,
            relation: Relation::Watch,
            room,
        } => Some((instance, room)),
        _ => None,
    });

    // dR ⋈ P_old: the old users a changed rule matches, in each of their old instances.
    let (o, d) = (old.clone(), dict.clone());
    let rules_old_users = d_rules.clone().explode(move |rule| {
        let s = d.strings();
        let o = o.get();
        let users = o.users();
        let mut out = Vec::new();
        for user in o.old_users_matching(&rule, &s) {
            for (instance, m) in users.instances_of(user) {
                out.push(((*instance, user, rule.clone()), *m));
            }
        }
        out
    });
    // dR ⋈ dP: changed rules meet changed (user, instance) pairs by key.
    let d = dict.clone();
    let keyed_rules = d_rules.flat_map(move |rule| {
        let key = rule_match_key(&rule, &d.strings());
        key.map(|k| (k, rule))
    });
    let d = dict.clone();
    let keyed_present = d_present.clone().flat_map(move |(user, instance)| {
        let keys = user_match_keys(d.strings().get(user));
        keys.into_iter().map(move |k| (k, (user, instance)))
    });
    let d = dict.clone();
    let rules_new_users = keyed_rules.join_core(
        keyed_present.arrange_by_key(),
        move |_, rule, (user, instance)| {
            rule_matches(rule, *user, &d.strings()).then(|| (*instance, *user, rule.clone()))
        },
    );
    // R_old ⋈ dP: the old rules that match a changed pair's user.
    let (o, d) = (old.clone(), dict.clone());
    let old_rules_users = d_present.explode(move |(user, instance)| {
        o.get()
            .old_rules_matching(user, &d.strings())
            .into_iter()
            .map(move |(rule, m)| ((instance, user, rule), m))
    });
    let matched = rules_old_users
        .concat(rules_new_users)
        .concat(old_rules_users);
    // ... ⋈ W_new = ... ⋈ W_old + ... ⋈ dW.
    let o = old.clone();
    let watched_old = matched.clone().explode(move |(instance, user, rule)| {
        let m = o
            .get()
            .watched
            .get(&(instance, rule.room))
            .copied()
            .unwrap_or(0);
        (m != 0).then_some(((instance, user, rule), m))
    });
    let watched_new = matched
        .map(|(instance, user, rule)| ((instance, rule.room), (user, rule)))
        .semijoin(d_watched.clone())
        .map(|((instance, _), (user, rule))| (instance, user, rule));
    // R_old ⋈ P_old ⋈ dW: a changed watch meets the old rules of its room and the instance's
    // old users they match.
    let (o, d) = (old, dict.clone());
    let new_watches = d_watched.explode(move |(instance, room)| {
        let s = d.strings();
        let o = o.get();
        let users = o.users();
        let mut out = Vec::new();
        for (rule, rm) in o.rules_by_room.get(&room).into_iter().flatten() {
            for user in o.old_users_matching(rule, &s) {
                for (i, pm) in users.instances_of(user) {
                    if *i == instance {
                        out.push(((instance, user, rule.clone()), rm * pm));
                    }
                }
            }
        }
        out
    });
    watched_old
        .concat(watched_new)
        .concat(new_watches)
        .map(|(instance, user, rule)| Rec::Match {
            instance,
            user,
            rule,
        })
}

#[cfg(test)]
mod tests {
    crate::replicas::resume_check::resume_test!(
        "`member_matches` resumed after a restart equals its computation from scratch after every \
         input delta (the three-way join's delta, with the users indexed by match key).",
        policy_room,
        member_set,
        instances
    );
}
