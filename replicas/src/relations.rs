//! The relations of the `instances` source: `(room, instance)` pairs of each relation, and
//! their index at a restore point, read by several replicas and their resume computations.

use foldhash::HashMap;
use prr_engine::{Coll, Id};

use crate::record::{Rec, Relation};

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

/// `(room, instance)` of an `instances` record of a protected room.
pub(crate) fn protect_pair(r: Rec) -> Option<(Id, Id)> {
    relation_pair(r, Relation::Protect)
}

/// `(room, instance)` for every watched policy room.
pub(crate) fn watches(instances: Coll<'_, Rec>) -> Coll<'_, (Id, Id)> {
    instances.flat_map(|r| relation_pair(r, Relation::Watch))
}

/// `(room, instance)` for every protected room.
pub(crate) fn protects(instances: Coll<'_, Rec>) -> Coll<'_, (Id, Id)> {
    instances.flat_map(protect_pair)
}

/// The `instances` source at the restore point, indexed both ways.
#[derive(Default)]
pub(crate) struct InstanceIndex {
    /// Instance -> multiplicity of its `exists` record.
    pub exists: HashMap<Id, isize>,
    /// Room -> the instances protecting it.
    pub protectors: HashMap<Id, Vec<(Id, isize)>>,
    /// Instance -> the rooms it protects.
    pub protected: HashMap<Id, Vec<(Id, isize)>>,
    /// Room -> the instances watching it.
    pub watchers: HashMap<Id, Vec<(Id, isize)>>,
    /// Instance -> the rooms it watches.
    pub watched: HashMap<Id, Vec<(Id, isize)>>,
}

impl InstanceIndex {
    pub(crate) fn build(rows: &[(Rec, isize)]) -> InstanceIndex {
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
pub(crate) fn all<'a, K: std::hash::Hash + Eq, V>(map: &'a HashMap<K, Vec<V>>, k: &K) -> &'a [V] {
    map.get(k).map(Vec::as_slice).unwrap_or(&[])
}
