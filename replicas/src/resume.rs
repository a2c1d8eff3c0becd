//! Resume computations: how a restore derives a replica's delta after the restore point from
//! its inputs' deltas and their contents there (see [`prr_engine::Seeds`]), instead of
//! recomputing the replica from scratch. With one for every derived replica, a restore feeds
//! nothing to the dataflow: every replica's revision is its base, and the dataflow computes
//! only what changes after it.
//!
//! Two patterns cover the replicas:
//! - a join `A ⋈ B` has the delta `dA ⋈ B_old + dA ⋈ dB + A_old ⋈ dB`: the deltas flow through
//!   the dataflow (joined with each other where two meet), and the old contents are looked up
//!   in indexes built from the seeds;
//! - a reduction `f` over groups has, for each group that changed, the delta
//!   `f(old + d) − f(old)` ([`resume_reduce`]): the dataflow accumulates `d`, the old group is
//!   looked up.

mod acl;
mod matches;
mod members;
mod slots;

pub(crate) use acl::{acl_sync, server_acl};
pub(crate) use matches::resume as member_matches;
pub(crate) use members::{member_bans, member_set};
pub(crate) use slots::{policy_room, rejects};

use foldhash::HashMap;
use prr_engine::dataflow::differential_dataflow::{Data, ExchangeData, Hashable};
use prr_engine::{Coll, Id, Strings};

use crate::dag::{GroupLogic, relation_pair};
use crate::record::{Rec, Relation, Rule};
use crate::rules::{MatchKey, rule_key, rule_matches_user};

/// The key by which a rule meets the users it may match (`None`: it matches no user).
pub(crate) fn rule_match_key(rule: &Rule, s: &Strings<'_>) -> Option<MatchKey> {
    rule_key(
        rule.kind,
        rule.matcher,
        rule.entity.map(|e| s.get(e)),
        rule.sha256.map(|h| s.get(h)),
    )
}

/// Whether `rule` matches `user` (once they meet by key).
pub(crate) fn rule_matches(rule: &Rule, user: Id, s: &Strings<'_>) -> bool {
    rule_matches_user(
        rule.kind,
        rule.matcher,
        rule.entity.map(|e| s.get(e)),
        rule.sha256.map(|h| s.get(h)),
        s.get(user),
    )
}

/// Sorts by value and sums the multiplicities of equal values, dropping zeros.
fn consolidate<V: Ord>(v: &mut Vec<(V, isize)>) {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(V, isize)> = Vec::with_capacity(v.len());
    for (x, d) in v.drain(..) {
        match out.last_mut() {
            Some(last) if last.0 == x => last.1 += d,
            _ => out.push((x, d)),
        }
    }
    out.retain(|(_, d)| *d != 0);
    *v = out;
}

/// The delta of `delta.reduce(logic)` over groups that held `old(key)` at the restore point:
/// for each key whose group changed, `logic(old + d) − logic(old)`. `logic` is the
/// reduction's own (it sees a group as DD's `reduce` presents it: sorted, consolidated,
/// non-empty).
pub(crate) fn resume_reduce<'s, K, V, O>(
    name: &str,
    delta: Coll<'s, (K, V)>,
    old: impl Fn(&K) -> Vec<(V, isize)> + 'static,
    logic: impl GroupLogic<K, V, O>,
) -> Coll<'s, (K, O)>
where
    K: ExchangeData + Hashable,
    V: ExchangeData,
    O: Data + Ord,
{
    delta.reduce_named(name, move |key, input, output| {
        let mut before = old(key);
        consolidate(&mut before);
        let mut after = before.clone();
        after.extend(input.iter().map(|(v, d)| ((*v).clone(), *d)));
        consolidate(&mut after);
        let mut out = Vec::new();
        for (group, sign) in [(&after, 1), (&before, -1)] {
            if group.is_empty() {
                continue;
            }
            let refs: Vec<(&V, isize)> = group.iter().map(|(v, d)| (v, *d)).collect();
            let mut part = Vec::new();
            logic(key, &refs, &mut part);
            out.extend(part.into_iter().map(|(o, d)| (o, d * sign)));
        }
        consolidate(&mut out);
        output.extend(out);
    })
}

/// The `instances` source at the restore point, indexed both ways.
#[derive(Default)]
struct InstanceIndex {
    /// Instance -> multiplicity of its `exists` record.
    exists: HashMap<Id, isize>,
    /// Room -> the instances protecting it.
    protectors: HashMap<Id, Vec<(Id, isize)>>,
    /// Instance -> the rooms it protects.
    protected: HashMap<Id, Vec<(Id, isize)>>,
    /// Room -> the instances watching it.
    watchers: HashMap<Id, Vec<(Id, isize)>>,
    /// Instance -> the rooms it watches.
    watched: HashMap<Id, Vec<(Id, isize)>>,
}

impl InstanceIndex {
    fn build(rows: &[(Rec, isize)]) -> InstanceIndex {
        let mut ix = InstanceIndex::default();
        for (r, m) in rows {
            if let Some((_, instance)) = relation_pair(r.clone(), Relation::Exists) {
                *ix.exists.entry(instance).or_default() += m;
            }
            if let Some((room, instance)) = relation_pair(r.clone(), Relation::Protect) {
                ix.protectors.entry(room).or_default().push((instance, *m));
                ix.protected.entry(instance).or_default().push((room, *m));
            }
            if let Some((room, instance)) = relation_pair(r.clone(), Relation::Watch) {
                ix.watchers.entry(room).or_default().push((instance, *m));
                ix.watched.entry(instance).or_default().push((room, *m));
            }
        }
        ix
    }
}

/// The entries of `map` under `k` (none if absent).
fn all<'a, K: std::hash::Hash + Eq, V>(map: &'a HashMap<K, Vec<V>>, k: &K) -> &'a [V] {
    map.get(k).map(Vec::as_slice).unwrap_or(&[])
}
