//! The Matrix replicas on a runtime: ingest parsed files, read replicas as JSON.

use std::collections::{BTreeMap, HashSet};

use prr_engine::{Error, Id, Runtime, RuntimeConfig, Seq, catch_damage};
use serde_json::Value;

use crate::dag::matrix_dag;
use crate::ingest::Ingestor;
use crate::legacy::matrix_records;
use crate::parse::SourceItem;
use crate::record::Rec;
use crate::render::{render_sorted, to_json};

mod effects;
mod preview;
mod sources;

pub use effects::{Gone, IntentKey, Intents, NewOutcome, Previous, Work};
pub use sources::Received;

/// A runtime running the Matrix replicas, with the ingest state beside it.
pub struct Matrix {
    rt: Runtime<Rec>,
    ingestor: Option<Ingestor>,
    /// How many deltas the runtime had quarantined when the ingest state was loaded.
    ingestor_poisoned: usize,
    /// The event IDs of `source_events`, loaded when first needed (and again after a failed
    /// commit or a quarantine, like the ingest state).
    seen: Option<HashSet<Id>>,
}

/// What one ingest changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestSummary {
    /// The source deltas added, in order.
    pub seqs: Vec<Seq>,
    /// Per replica, the records added and removed.
    pub changes: BTreeMap<String, (u64, u64)>,
}

impl Matrix {
    /// Starts the runtime (opening its store, if configured) with the Matrix replicas. A store
    /// of an older format is upgraded (by [`matrix_records`], unless `config` has its own
    /// record upgrade, such as one of `matrix_records_reporting`).
    pub fn start(config: RuntimeConfig) -> Result<Self, Error> {
        let config = match config.has_record_upgrade() {
            true => config,
            false => config.with_record_upgrade(matrix_records()),
        };
        let rt = Runtime::start_with(config, matrix_dag)?;
        Ok(Self::from_runtime(rt))
    }

    /// The Matrix replicas on a runtime already started with [`matrix_dag`] (e.g. on a store
    /// with a fault-injecting backend, for tests).
    pub fn from_runtime(rt: Runtime<Rec>) -> Self {
        Matrix {
            rt,
            ingestor: None,
            ingestor_poisoned: 0,
            seen: None,
        }
    }

    /// The runtime underneath.
    pub fn runtime(&mut self) -> &mut Runtime<Rec> {
        &mut self.rt
    }

    /// The ingest state, loaded from the replicas when first needed, and again after the
    /// runtime quarantined a delta: the state had applied it, the replicas have not.
    fn ingestor(&mut self) -> Result<&mut Ingestor, Error> {
        let poisoned = self.rt.newly_poisoned().len();
        if poisoned != self.ingestor_poisoned {
            self.ingestor = None;
            self.seen = None;
            self.ingestor_poisoned = poisoned;
        }
        if self.ingestor.is_none() {
            let rs = self.rt.replica("room_state")?;
            let inst = self.rt.replica("instances")?;
            // After a restore, `room_state` is the revision restored from (shared, looked up
            // in place) and the changes since it: nothing of a million records is copied.
            let states = self.rt.read_split(rs)?;
            let instances = self.rt.read(inst, None)?;
            let changes = states.changes.into_iter().chain(instances);
            self.ingestor = Some(Ingestor::split(rs, inst, states.base, changes));
        }
        Ok(self.ingestor.as_mut().expect("ingestor loaded"))
    }

    /// Ingests one source delta (a parsed file): commits it durably and feeds it. Returns its
    /// `Seq`; replicas are final through it when this returns (a delta that a replica's
    /// computation panicked on is quarantined instead: see `Runtime::newly_poisoned`).
    pub fn ingest(&mut self, items: &[SourceItem]) -> Result<Seq, Error> {
        Ok(self.ingest_many(&[items])?[0])
    }

    /// Ingests several source deltas in one durable commit (a group commit); replicas are final
    /// through the last when this returns.
    pub fn ingest_many<B: AsRef<[SourceItem]>>(
        &mut self,
        batches: &[B],
    ) -> Result<Vec<Seq>, Error> {
        let seqs = self.submit_many(batches)?;
        self.rt
            .step_until(*seqs.last().expect("at least one batch"))?;
        Ok(seqs)
    }

    /// Commits several source deltas in one durable commit (a group commit) and hands them to
    /// the dataflow, without waiting for them to be computed: the workers compute while the
    /// caller prepares and commits the next group ([`Pipeline`]). Each delta is acknowledged
    /// (durable) when this returns; [`Matrix::wait`] waits until replicas are final through a
    /// `Seq`. At least one batch.
    pub fn submit_many<B: AsRef<[SourceItem]>>(
        &mut self,
        batches: &[B],
    ) -> Result<Vec<Seq>, Error> {
        assert!(!batches.is_empty(), "submit_many needs at least one batch");
        self.ingestor()?;
        let dict = self.rt.dictionary().clone();
        let ingestor = self.ingestor.as_mut().expect("ingestor loaded");
        // Each batch sees the state left by the ones before it.
        let mut deltas = Vec::with_capacity(batches.len());
        for items in batches {
            // A lookup in a damaged revision is an error: the batches before it are staged
            // but not stored, so the ingest state is reloaded.
            let mut prepared = match catch_damage(|| ingestor.prepare(&dict, items.as_ref())) {
                Ok(p) => p,
                Err(e) => {
                    self.ingestor = None;
                    return Err(e);
                }
            };
            deltas.push(std::mem::take(&mut prepared.delta));
            ingestor.commit(prepared);
        }
        self.rt.push_many(deltas).inspect_err(|e| {
            if e.committed().is_empty() {
                // The ingest state ran ahead of the store: reload it from the replicas.
                self.ingestor = None;
            }
        })
    }

    /// Ingests the events a homeserver source delivered (one appservice transaction) as one
    /// What `prr compact` does but rewriting the file, in process: captures revisions,
    /// deletes the revisions and the source log that no retained revision needs, and
    /// collects the dictionary's strings that nothing retained uses, in the store and in
    /// memory (see `Runtime::collect_strings_in_memory`). The dataflow restarts from the
    /// store; the ingest state and the seen event IDs are read again when next needed.
    /// Returns how many strings the store collected.
    pub fn compact_in_process(&mut self) -> Result<u64, Error> {
        self.ingestor = None;
        self.seen = None;
        self.rt.capture_revisions()?;
        self.rt.collect_garbage(true)?;
        self.rt.collect_strings_in_memory()
    }

    /// Waits until every replica is final through `seq` (and delivers the deltas up to it to
    /// subscribers).
    pub fn wait(&mut self, seq: Seq) -> Result<(), Error> {
        self.rt.step_until(seq)
    }

    /// A replica's records as the spec's JSON objects, sorted by key: all of them or one
    /// partition (a room or instance ID), now or as of an earlier `Seq`.
    pub fn show(
        &mut self,
        replica: &str,
        partition: Option<&str>,
        as_of: Option<Seq>,
    ) -> Result<Vec<Value>, Error> {
        let id = self.rt.replica(replica)?;
        let part = match partition {
            Some(p) => match self.rt.dictionary().lookup(p) {
                Some(pid) => Some(pid),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let rows = match as_of {
            Some(seq) => self.rt.read_as_of(id, seq, part)?,
            None => self.rt.read(id, part)?,
        };
        Ok(render_sorted(self.rt.dictionary(), &rows))
    }

    /// A replica's deltas after `since`, as `{"seq", "diff", "record"}` objects in `Seq` order.
    pub fn deltas(&mut self, replica: &str, since: Seq) -> Result<Vec<Value>, Error> {
        let id = self.rt.replica(replica)?;
        let deltas = self.rt.deltas_since(id, since)?;
        Ok(self.render_deltas(&deltas, false))
    }

    /// `deltas` (of one replica, in `Seq` order) as the lines [`Matrix::deltas`] gives.
    pub fn deltas_json(&self, deltas: &[prr_engine::Delta<Rec>]) -> Vec<Value> {
        self.render_deltas(deltas, false)
    }

    /// Each update of `deltas` as JSON lines `{"seq", "diff", "record"}` (`diff` 1 or -1, an
    /// update of multiplicity n as n lines), per delta in the order of [`Matrix::deltas`];
    /// with `named`, each line starts with `"replica"`.
    fn render_deltas(&self, deltas: &[prr_engine::Delta<Rec>], named: bool) -> Vec<Value> {
        let dict = self.rt.dictionary();
        let dag = self.rt.dag();
        let mut out = Vec::new();
        for d in deltas {
            let mut rows: Vec<(Vec<String>, isize, Value)> = d
                .updates
                .iter()
                .map(|(r, diff)| (crate::render::sort_key(dict, r), *diff, to_json(dict, r)))
                .collect();
            rows.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
            for (_, diff, record) in rows {
                let mut line = serde_json::Map::new();
                if named {
                    line.insert("replica".into(), dag.replica(d.replica).name().into());
                }
                line.insert("seq".into(), d.seq.0.into());
                line.insert("diff".into(), diff.signum().into());
                line.insert("record".into(), record);
                for _ in 0..diff.unsigned_abs() {
                    out.push(Value::Object(line.clone()));
                }
            }
        }
        out
    }

    /// Stops the runtime, capturing revisions first.
    pub fn shutdown(self) -> Result<(), Error> {
        self.rt.shutdown()
    }
}

/// Group commits in a pipeline of depth one: each [`Pipeline::submit`] commits a group
/// ([`Matrix::submit_many`]) and then waits for the group submitted before it, so the workers
/// compute one group while the next is prepared and committed, and no more than two groups are
/// ever in flight. `prr ingest` ingests directories this way.
#[derive(Debug, Default)]
pub struct Pipeline {
    in_flight: Option<Seq>,
    final_through: Option<Seq>,
}

impl Pipeline {
    /// A group holds consecutive batches up to this many...
    pub const GROUP_BATCHES: usize = 64;
    /// ...or until it holds this many items, whichever comes first.
    pub const GROUP_ITEMS: usize = 100_000;

    /// The end (exclusive) of the group of batches that starts at `start`, among the first
    /// `len`: at least one batch, then more while the group has fewer than
    /// [`Pipeline::GROUP_BATCHES`] batches and [`Pipeline::GROUP_ITEMS`] items. `items(i)` is
    /// the number of items of batch `i`.
    pub fn group_end(start: usize, len: usize, items: impl Fn(usize) -> usize) -> usize {
        let mut end = start;
        let mut n = 0;
        while end < len
            && (end == start || (end - start < Self::GROUP_BATCHES && n < Self::GROUP_ITEMS))
        {
            n += items(end);
            end += 1;
        }
        end
    }

    /// An empty pipeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Commits `batches` (at least one) as one group, each its own source delta, then waits
    /// until the group submitted before is final. Returns the new group's `Seq`s.
    pub fn submit<B: AsRef<[SourceItem]>>(
        &mut self,
        m: &mut Matrix,
        batches: &[B],
    ) -> Result<Vec<Seq>, Error> {
        let seqs = m.submit_many(batches).inspect_err(|e| {
            // Committed, but the revision capture after them failed: they are in flight.
            if let Some(last) = e.committed().last() {
                self.in_flight = self.in_flight.max(Some(*last));
            }
        })?;
        if let Some(previous) = self
            .in_flight
            .replace(*seqs.last().expect("at least one batch"))
        {
            m.wait(previous)?;
            self.final_through = Some(previous);
        }
        Ok(seqs)
    }

    /// Waits until everything submitted is final.
    pub fn finish(&mut self, m: &mut Matrix) -> Result<(), Error> {
        if let Some(last) = self.in_flight.take() {
            m.wait(last)?;
            self.final_through = Some(last);
        }
        Ok(())
    }

    /// The last `Seq` this pipeline has waited for: every replica is final through it.
    pub fn final_through(&self) -> Option<Seq> {
        self.final_through
    }
}

#[cfg(test)]
mod tests {
    use prr_engine::{RuntimeConfig, Seq};

    use super::{Matrix, Pipeline};
    use crate::parse::parse_file;

    /// The Matrix replicas on a runtime, plus `tripwire`, which panics on `$poison`.
    fn with_tripwire(config: RuntimeConfig) -> Matrix {
        let rt = prr_engine::Runtime::start_with(config, |dict| {
            crate::dag_with_tripwire(dict, "$poison")
        })
        .unwrap();
        Matrix::from_runtime(rt)
    }

    pub(super) fn member(
        event_id: &str,
        user: &str,
        membership: &str,
    ) -> Vec<crate::parse::SourceItem> {
        let file = format!(
            r#"[{{"event_id": "{event_id}", "room_id": "!r:x", "type": "m.room.member",
                "state_key": "{user}", "sender": "{user}", "content": {{"membership": "{membership}"}}}}]"#
        );
        parse_file("f.json", file.as_bytes()).unwrap()
    }

    /// After a quarantine, the ingest state is reloaded from the replicas: the next delta
    /// replaces what the replicas hold, not what the quarantined delta would have put there.
    #[test]
    fn the_ingest_state_forgets_a_quarantined_delta() {
        for workers in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let config = RuntimeConfig::new()
                .with_store(dir.path().join("s.redb"))
                .with_workers(workers);
            let mut m = with_tripwire(config);
            m.ingest(&member("$1", "@a:x", "join")).unwrap();
            assert_eq!(
                m.ingest(&member("$poison", "@b:x", "join")).unwrap(),
                Seq(2)
            );
            assert_eq!(m.runtime().newly_poisoned(), [Seq(2)]);
            m.ingest(&member("$3", "@b:x", "leave")).unwrap();
            let state = m.show("room_state", None, None).unwrap();
            let ids: Vec<&str> = state
                .iter()
                .map(|r| r["event_id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, ["$1", "$3"], "{workers} workers: {state:?}");
            let members = m.show("room_members", None, None).unwrap();
            let got: Vec<(&str, &str)> = (members.iter())
                .map(|r| {
                    (
                        r["user_id"].as_str().unwrap(),
                        r["membership"].as_str().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [("@a:x", "join"), ("@b:x", "leave")],
                "{workers} workers"
            );
            m.shutdown().unwrap();
        }
    }

    #[test]
    fn groups_stop_at_the_batch_or_item_bound_and_hold_at_least_one_batch() {
        // Small batches: 64 per group.
        assert_eq!(Pipeline::group_end(0, 200, |_| 10), 64);
        assert_eq!(Pipeline::group_end(64, 100, |_| 10), 100);
        // Items: the group closes once it holds 100k or more.
        assert_eq!(Pipeline::group_end(0, 10, |_| 40_000), 3);
        // A batch larger than the bound is a group of its own.
        assert_eq!(Pipeline::group_end(5, 10, |_| 1_000_000), 6);
        assert_eq!(Pipeline::group_end(9, 10, |_| 1), 10);
        assert_eq!(Pipeline::group_end(10, 10, |_| 1), 10);
    }
}
