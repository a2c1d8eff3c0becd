//! Driving prr on a workload: ingest files one source delta each (as `prr ingest DIR` does),
//! and count what the intents hold so that peers can be compared with it.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use prr_engine::{Dag, Runtime, RuntimeConfig};
use prr_replicas::{Ingestor, Matrix, Pipeline, Rec, SourceItem, matrix_dag};
use serde_json::{Value, json};

use crate::harness::child::emit_progress;
use crate::measure::secs;
use crate::workload::{list_files, read_file};

/// Times of an ingest of a directory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct IngestTimes {
    /// Seconds reading and parsing files.
    pub parse: f64,
    /// Seconds in [`Matrix::ingest`] (durable commit, dataflow, until every replica is final).
    pub ingest: f64,
    /// Files ingested.
    pub files: usize,
    /// Seconds in [`Matrix::ingest`] for the last file alone (the manifest, in a generated
    /// workload: where every instance's list, members and intents are computed).
    pub last_file: f64,
}

/// Ingests every file of `dir` in name order, one source delta (`Seq`) per file, as
/// `prr ingest DIR` does: every file is read and parsed first (timed as `parse`), then
/// consecutive files are group-committed as `prr ingest` groups them
/// ([`Pipeline::group_end`]), one group computing while the next is prepared and committed.
/// The last file (the manifest, in a generated workload) is a
/// group of its own, submitted once everything before it is final and timed as `last_file`.
/// Prints a progress line every `progress_every` files (0: never).
pub fn ingest_dir(
    m: &mut Matrix,
    dir: &Path,
    progress_every: usize,
) -> anyhow::Result<IngestTimes> {
    let files = list_files(dir)?;
    let mut t = IngestTimes::default();
    let start = Instant::now();
    let mut parsed: Vec<Vec<SourceItem>> = files
        .iter()
        .map(|f| read_file(f))
        .collect::<Result<_, _>>()?;
    t.parse = secs(start);
    let start = Instant::now();
    let mut i = 0;
    let mut pipeline = Pipeline::new();
    while i + 1 < parsed.len() {
        let end = Pipeline::group_end(i, parsed.len() - 1, |f| parsed[f].len());
        pipeline.submit(m, &parsed[i..end])?;
        // Committed: the parsed items are not needed any more.
        parsed[i..end].iter_mut().for_each(|p| *p = Vec::new());
        let before = t.files;
        t.files += end - i;
        if progress_every > 0 && t.files / progress_every > before / progress_every {
            emit_progress(
                json!({"files": t.files, "of": files.len(), "parse": t.parse, "ingest": secs(start)}),
            );
        }
        i = end;
    }
    pipeline.finish(m)?;
    if let Some(last) = parsed.last() {
        let t_last = Instant::now();
        m.ingest(last)?;
        t.last_file = secs(t_last);
        t.files += 1;
    }
    t.ingest = secs(start);
    Ok(t)
}

/// Ingests items already parsed, one source delta per file.
pub fn ingest_items(m: &mut Matrix, files: &[Vec<SourceItem>]) -> anyhow::Result<f64> {
    let start = Instant::now();
    for items in files {
        m.ingest(items)?;
    }
    Ok(secs(start))
}

/// Counts of the intents, comparable across systems: `member_set`, `member_matches` and
/// `member_bans` records, distinct (instance, user) ban intents, denied ACL entities summed
/// over instances.
pub fn intent_counts(rt: &mut Runtime<Rec>) -> anyhow::Result<Value> {
    fn read(rt: &mut Runtime<Rec>, name: &str) -> anyhow::Result<Vec<(Rec, isize)>> {
        let id = rt.replica(name)?;
        Ok(rt.read(id, None)?)
    }
    let member_set = read(rt, "member_set")?.len();
    let member_matches = read(rt, "member_matches")?.len();
    let bans = read(rt, "member_bans")?;
    let intents: BTreeSet<(u64, u64)> = bans
        .iter()
        .filter_map(|(r, _)| match r {
            Rec::Ban { instance, user, .. } => Some((*instance, *user)),
            _ => None,
        })
        .collect();
    let acl_deny: usize = read(rt, "server_acl")?
        .iter()
        .map(|(r, _)| match r {
            Rec::Acl { deny, .. } => deny.len(),
            _ => 0,
        })
        .sum();
    Ok(json!({
        "member_set": member_set,
        "member_matches": member_matches,
        "member_bans": bans.len(),
        "ban_intents": intents.len(),
        "acl_deny": acl_deny,
    }))
}

/// An ablation: the Matrix DAG without the replicas named in `without` (which nothing else
/// may depend on), on a runtime of its own, fed through an [`Ingestor`] as
/// [`Matrix::ingest`] does. Shows what a replica costs.
pub struct Ablated {
    rt: Runtime<Rec>,
    ingestor: Ingestor,
}

impl Ablated {
    /// Starts the runtime of the reduced DAG.
    pub fn start(config: RuntimeConfig, without: &[String]) -> anyhow::Result<Self> {
        let without = without.to_vec();
        let rt = Runtime::start_with(config, move |dict| {
            let full = matrix_dag(dict)?;
            Dag::new(
                full.replicas()
                    .iter()
                    .filter(|d| !without.iter().any(|w| w == d.name()))
                    .cloned()
                    .collect(),
            )
        })?;
        let ingestor = Ingestor::new(
            rt.replica("room_state")?,
            rt.replica("instances")?,
            Vec::new(),
        );
        Ok(Ablated { rt, ingestor })
    }

    /// Ingests one file's items as one source delta; replicas are final when it returns.
    pub fn ingest(&mut self, items: &[SourceItem]) -> anyhow::Result<()> {
        let dict = self.rt.dictionary().clone();
        let mut prepared = self.ingestor.prepare(&dict, items);
        let delta = std::mem::take(&mut prepared.delta);
        self.ingestor.commit(prepared);
        let seq = self.rt.push(delta)?;
        self.rt.step_until(seq)?;
        Ok(())
    }

    /// The runtime underneath.
    pub fn runtime(&mut self) -> &mut Runtime<Rec> {
        &mut self.rt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Matching, NaiveState, Workload, WorkloadConfig};

    /// The naive peer and the dataflow must agree on the generated data, or the comparison
    /// compares different work.
    #[test]
    fn naive_peer_agrees_with_prr() {
        let config = WorkloadConfig {
            seed: 11,
            rules: 600,
            policy_rooms: 4,
            memberships: 4_000,
            protected_rooms: 20,
            instances: 6,
            servers: 40,
            users: 1_500,
        };
        let w = Workload::generate(&config);
        let mut m = Matrix::start(RuntimeConfig::new()).unwrap();
        let mut naive = NaiveState::new();
        for f in w.files() {
            m.ingest(&f.items).unwrap();
            naive.apply(&f.items);
        }
        let prr = intent_counts(m.runtime()).unwrap();
        let out = naive.compute(Matching::Indexed, |_, _| true);
        assert_eq!(prr["member_set"], out.member_set);
        assert_eq!(prr["member_matches"], out.member_matches);
        assert_eq!(prr["member_bans"], out.member_bans);
        assert_eq!(prr["ban_intents"], out.ban_intents);
        assert_eq!(prr["acl_deny"], out.acl_deny);
        assert!(out.member_bans > 0 && out.acl_deny > 0, "{out:?}");
    }
}
