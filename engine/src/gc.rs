//! Which revisions and log entries garbage collection may delete.

use std::collections::{BTreeMap, BTreeSet};

use prr_persist::RevisionInfo;

use crate::dag::Dag;
use crate::record::Record;

/// Which revisions and log entries garbage collection deletes.
pub(crate) fn gc_plan<R: Record>(
    dag: &Dag<R>,
    revisions: &[RevisionInfo],
    keep: usize,
) -> (Vec<(String, u64)>, Option<u64>) {
    let mut by_replica: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in revisions {
        by_replica
            .entry(r.replica.as_str())
            .or_default()
            .push(r.as_of);
    }
    let mut retained: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut candidates: BTreeSet<(String, u64)> = BTreeSet::new();
    for (name, mut as_ofs) in by_replica {
        as_ofs.sort_unstable();
        let cut = as_ofs.len().saturating_sub(keep);
        for (i, a) in as_ofs.into_iter().enumerate() {
            if i < cut {
                candidates.insert((name.to_string(), a))
            } else {
                retained.insert((name.to_string(), a))
            };
        }
    }
    // A revision stays while a retained revision of a transitive dependent at the same as_of
    // needs it (to restore it or to roll it back).
    let mut delete = Vec::new();
    // Views are evaluated when read: a revision of one (written by an earlier program, where
    // the replica was stored) is never needed.
    let is_view = |name: &str| dag.id(name).is_some_and(|id| dag.replica(id).is_view());
    for (name, as_of) in retained.iter().chain(&candidates) {
        if is_view(name) {
            delete.push((name.clone(), *as_of));
        }
    }
    retained.retain(|(name, _)| !is_view(name));
    for (name, as_of) in &candidates {
        if is_view(name) {
            continue;
        }
        let needed = dag.id(name).is_some_and(|id| {
            dag.dependents(id)
                .into_iter()
                .any(|d| retained.contains(&(dag.replica(d).name().to_string(), *as_of)))
        });
        if !needed {
            delete.push((name.clone(), *as_of));
        }
    }
    // The log is needed after the oldest retained restore point (a complete set of source
    // revisions); with none, all of it is.
    let deleted: BTreeSet<(String, u64)> = delete.iter().cloned().collect();
    let sources: Vec<String> = dag
        .sources()
        .map(|s| dag.replica(s).name().to_string())
        .collect();
    let mut set_counts: BTreeMap<u64, usize> = BTreeMap::new();
    for r in revisions {
        if sources.contains(&r.replica) && !deleted.contains(&(r.replica.clone(), r.as_of)) {
            *set_counts.entry(r.as_of).or_default() += 1;
        }
    }
    let oldest_set = set_counts
        .into_iter()
        .find(|(_, c)| *c == sources.len())
        .map(|(a, _)| a);
    (delete, oldest_set)
}
