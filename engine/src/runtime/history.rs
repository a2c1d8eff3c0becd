//! History: time travel, delta history, and rebuilds from the log.

use std::collections::BTreeSet;

use super::restore::Replay;
use super::{Runtime, revision_write};
use crate::description::{Record, ReplicaId};
use crate::engine::{Delta, difference};
use crate::{Error, Seq};

/// What [`Runtime::rebuild`] found for one stored revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebuildOutcome {
    /// The replica.
    pub replica: String,
    /// The revision's `as_of`.
    pub as_of: Seq,
    /// Records the recomputation has and the revision lacks.
    pub missing: u64,
    /// Records the revision has and the recomputation lacks.
    pub extra: u64,
    /// Whether the revision was replaced by the recomputation.
    pub replaced: bool,
}

impl<R: Record> Runtime<R> {
    /// A replica's contents as of an earlier `seq` (time travel), from a retained revision or
    /// a replay of the log after one.
    pub fn read_as_of(
        &mut self,
        replica: ReplicaId,
        seq: Seq,
        partition: Option<u64>,
    ) -> Result<Vec<(R, isize)>, Error> {
        if seq.0 > self.last_seq {
            return Err(Error::FutureSeq {
                seq,
                last: Seq(self.last_seq),
            });
        }
        if seq.0 == self.last_seq {
            return self.read(replica, partition);
        }
        if let Some(view) = self.dag.replica(replica).view().cloned() {
            let inputs = self.dag.inputs_of(replica).to_vec();
            let right_partition = partition.filter(|_| view.partition_follows_right);
            let left = self.read_as_of(inputs[0], seq, None)?;
            let right = self.read_as_of(inputs[1], seq, right_partition)?;
            let rows = view.eval(&left, &right);
            return Ok(self.filter_partition(replica, rows, partition));
        }
        if self.store.is_none() {
            return Err(Error::NoStore("reading an earlier seq"));
        }
        if let Some(rows) = self.fresh_revision(replica, seq.0)? {
            return Ok(self.filter_partition(replica, rows, partition));
        }
        let start = self.start_point(seq.0)?;
        let mut engine = self.replay_engine(start, seq.0, None)?;
        let rows = engine.read(replica, partition)?;
        engine.stop()?;
        Ok(rows)
    }

    /// A replica's deltas for every `Seq > since`, in order, as far back as the retained log
    /// and revisions reach.
    pub fn deltas_since(&mut self, replica: ReplicaId, since: Seq) -> Result<Vec<Delta<R>>, Error> {
        if self.store.is_none() {
            return Err(Error::NoStore("reading delta history"));
        }
        let start = self.start_point(since.0.min(self.last_seq))?;
        let mut engine = self.replay_engine(start, start.as_of, None)?;
        let sub = engine.subscribe(replica)?;
        self.replay_log(&mut engine, start.as_of + 1, self.last_seq, Replay::EachSeq)?;
        engine.step_until(self.last_seq)?;
        engine.stop()?;
        Ok(sub.try_iter().filter(|d| d.seq > since).collect())
    }

    /// Recomputes replicas from the source log alone (in batch) and compares them with every
    /// retained revision of `replicas` (all when empty); unless `check_only`, replaces the
    /// revisions that differ. Stops the running dataflow first: it restarts from the
    /// (possibly replaced) revisions when next needed.
    pub fn rebuild(
        &mut self,
        replicas: &[ReplicaId],
        check_only: bool,
    ) -> Result<Vec<RebuildOutcome>, Error> {
        if self.store.is_none() {
            return Err(Error::NoStore("rebuilding from the log"));
        }
        self.stop_engine()?;
        let selected: BTreeSet<ReplicaId> = if replicas.is_empty() {
            (0..self.dag.len() as u32).map(ReplicaId).collect()
        } else {
            replicas.iter().copied().collect()
        };
        let start = self.log_start_point()?;
        let mut engine = self.replay_engine(start, start.as_of, None)?;
        let revisions = self.revisions()?;
        let mut as_ofs: BTreeSet<u64> = BTreeSet::new();
        for info in &revisions {
            if let Some(id) = self.dag.id(&info.replica)
                && selected.contains(&id)
                && info.as_of >= start.as_of
            {
                as_ofs.insert(info.as_of);
            }
        }
        let mut outcomes = Vec::new();
        let mut at = start.as_of;
        for as_of in as_ofs {
            self.replay_log(&mut engine, at + 1, as_of, Replay::Batched)?;
            engine.step_until(as_of)?;
            at = as_of;
            let mut writes = Vec::new();
            for info in revisions.iter().filter(|i| i.as_of == as_of) {
                let Some(id) = self.dag.id(&info.replica) else {
                    continue;
                };
                // A view's revision (from a store of an earlier program) is not maintained;
                // garbage collection deletes it.
                if !selected.contains(&id) || self.dag.replica(id).is_view() {
                    continue;
                }
                let desc = self.dag.replica(id);
                let rebuilt = engine.read(id, None)?;
                let stored = self.decode_revision(&info.replica, as_of)?;
                let diff = difference(&stored, &rebuilt);
                let missing = diff
                    .iter()
                    .filter(|(_, d)| *d > 0)
                    .map(|(_, d)| *d as u64)
                    .sum();
                let extra = diff
                    .iter()
                    .filter(|(_, d)| *d < 0)
                    .map(|(_, d)| (-*d) as u64)
                    .sum();
                let stale = info.logic_version != desc.logic_version()
                    || info.description_hash != desc.description_hash();
                let replace = !check_only && (!diff.is_empty() || stale);
                if replace {
                    writes.push(revision_write(desc, rebuilt, self.config.chunk_records));
                }
                outcomes.push(RebuildOutcome {
                    replica: info.replica.clone(),
                    as_of: Seq(as_of),
                    missing,
                    extra,
                    replaced: replace,
                });
            }
            if !writes.is_empty() {
                self.write_revisions(as_of, &writes)?;
            }
        }
        engine.stop()?;
        Ok(outcomes)
    }
}
