//! The embedded runtime: a DAG of replicas running in timely workers, optionally persisted in a
//! store.
//!
//! Life cycle: [`Runtime::start`] opens the store (if any) and loads the dictionary; the dataflow
//! starts lazily, restored from the newest revisions plus the source log after them, the first
//! time something needs it. [`Runtime::push`] commits a source delta to the log, then feeds it;
//! [`Runtime::step_until`] waits until every replica is final through a `Seq` and delivers the
//! deltas to subscribers; [`Runtime::shutdown`] captures revisions and stops the workers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use prr_persist::{RevisionInfo, RevisionWrite, Store, StoreStats};

use crate::codec::{self, LoggedDelta};
use crate::description::{Dag, Record, ReplicaId};
use crate::dictionary::Dictionary;
use crate::engine::{
    Delta, DeltaKind, Engine, Frontier, RuntimeConfig, SourceDelta, Subscription, difference,
};
use crate::worker::SourceUpdate;
use crate::{Error, Seq};

/// The embedded runtime. See the module documentation for its life cycle.
pub struct Runtime<R: Record> {
    config: RuntimeConfig,
    dag: Arc<Dag<R>>,
    dictionary: Dictionary,
    store: Option<Store>,
    engine: Option<Engine<R>>,
    last_seq: u64,
    since_revision: u64,
    rebuild_deltas: Vec<Delta<R>>,
}

/// Where a replay starts: the revisions of every source replica as of `as_of` (none when 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StartPoint {
    as_of: u64,
}

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

/// Status of a runtime, for `prr status`.
#[derive(Clone, Debug)]
pub struct Status {
    /// The last committed `Seq` (0 for an empty store).
    pub seq: Seq,
    /// Per replica: its frontier, its record count, its newest revision, its logic version.
    pub replicas: Vec<ReplicaStatus>,
    /// Store sizes, when persisted.
    pub store: Option<StoreStats>,
}

/// One replica's line in [`Status`].
#[derive(Clone, Debug)]
pub struct ReplicaStatus {
    /// The replica's name.
    pub name: String,
    /// Everything below this `Seq` is final.
    pub frontier: Seq,
    /// The number of records (counting multiplicity).
    pub records: u64,
    /// The `as_of` of its newest stored revision.
    pub newest_revision: Option<Seq>,
    /// The logic version of the code.
    pub logic_version: u32,
}

impl<R: Record> Runtime<R> {
    /// Starts a runtime for `dag`. With a store, opens it (one writer at a time), loads the
    /// dictionary and checks that the stored state can be restored; the dataflow itself starts
    /// when first needed.
    pub fn start(config: RuntimeConfig, dag: Dag<R>) -> Result<Self, Error> {
        Self::start_with(config, |_| Ok(dag))
    }

    /// Like [`Runtime::start`], for a DAG whose computations use interned identifiers: `build`
    /// gets the dictionary, loaded from the store, and may intern the strings it needs (they
    /// are persisted before anything else happens).
    pub fn start_with(
        config: RuntimeConfig,
        build: impl FnOnce(&Dictionary) -> Result<Dag<R>, crate::DagError>,
    ) -> Result<Self, Error> {
        let dictionary = Dictionary::new();
        let (store, last_seq) = match &config.store {
            Some(path) => {
                let store = if config.read_only {
                    Store::open_read_only(path)?
                } else {
                    Store::open(path)?
                };
                dictionary.load(store.strings()?);
                let last = store.last_seq()?;
                (Some(store), last)
            }
            None => (None, 0),
        };
        let dag = Arc::new(build(&dictionary)?);
        if let Some(store) = store.as_ref().filter(|s| !s.is_read_only()) {
            let (first_id, strings) = dictionary.unpersisted();
            if !strings.is_empty() {
                store.append(&[], first_id, &strings)?;
                dictionary.mark_persisted(first_id + strings.len() as u64);
            }
        }
        let mut rt = Runtime {
            config,
            dag,
            dictionary,
            store,
            engine: None,
            last_seq,
            since_revision: 0,
            rebuild_deltas: Vec::new(),
        };
        if rt.store.is_none() {
            rt.engine = Some(Engine::start(rt.dag.clone(), rt.config.workers)?);
        } else {
            // Fail now, not at first use, if the store cannot be restored.
            rt.start_point(rt.last_seq)?;
        }
        Ok(rt)
    }

    /// The replicas.
    pub fn dag(&self) -> &Dag<R> {
        &self.dag
    }

    /// The id of a replica by name.
    pub fn replica(&self, name: &str) -> Result<ReplicaId, Error> {
        self.dag.id(name).ok_or_else(|| Error::UnknownReplica {
            name: name.to_string(),
            known: self
                .dag
                .replicas()
                .iter()
                .map(|d| d.name().to_string())
                .collect(),
        })
    }

    /// The dictionary of interned identifiers shared with the dataflow.
    pub fn dictionary(&self) -> &Dictionary {
        &self.dictionary
    }

    /// The last committed (or, without a store, pushed) `Seq`.
    pub fn last_seq(&self) -> Seq {
        Seq(self.last_seq)
    }

    /// The store, if the runtime is persisted.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Commits a source delta durably (with a store) and feeds it to the dataflow; returns its
    /// `Seq`. Nothing of a delta that fails is stored.
    pub fn push(&mut self, delta: SourceDelta<R>) -> Result<Seq, Error> {
        Ok(self.push_many(vec![delta])?[0])
    }

    /// Commits several source deltas in one durable transaction (a group commit) and feeds them.
    pub fn push_many(&mut self, deltas: Vec<SourceDelta<R>>) -> Result<Vec<Seq>, Error> {
        for d in &deltas {
            for (replica, _, _) in &d.updates {
                if !self.dag.replica(*replica).is_source() {
                    return Err(Error::NotASource(
                        self.dag.replica(*replica).name().to_string(),
                    ));
                }
            }
        }
        self.ensure_engine()?;
        let seqs: Vec<u64> = match &self.store {
            Some(store) => {
                let encoded: Vec<Vec<u8>> = deltas
                    .iter()
                    .map(|d| codec::encode(&self.logged(d)))
                    .collect();
                let slices: Vec<&[u8]> = encoded.iter().map(|e| e.as_slice()).collect();
                let (first_id, strings) = self.dictionary.unpersisted();
                match store.append(&slices, first_id, &strings) {
                    Ok(seqs) => {
                        self.dictionary
                            .mark_persisted(first_id + strings.len() as u64);
                        seqs
                    }
                    // The new strings stay interned (unpersisted): the dataflow may hold their ids
                    // already, and they are written with the next commit.
                    Err(e) => return Err(e.into()),
                }
            }
            None => (1..=deltas.len() as u64)
                .map(|i| self.last_seq + i)
                .collect(),
        };
        let engine = self.engine.as_mut().expect("engine started");
        for (seq, delta) in seqs.iter().zip(deltas) {
            let updates = delta
                .updates
                .into_iter()
                .map(|(r, rec, d)| (r.0, rec, d))
                .collect();
            engine.feed(*seq, updates)?;
        }
        self.last_seq = *seqs.last().unwrap_or(&self.last_seq);
        self.since_revision += seqs.len() as u64;
        if let Some(every) = self.config.revision_every
            && self.store.is_some()
            && self.since_revision >= every
        {
            self.capture_revisions()?;
        }
        Ok(seqs.into_iter().map(Seq).collect())
    }

    fn logged(&self, delta: &SourceDelta<R>) -> LoggedDelta<R> {
        let mut by: BTreeMap<ReplicaId, Vec<(R, i64)>> = BTreeMap::new();
        for (r, rec, d) in &delta.updates {
            by.entry(*r).or_default().push((rec.clone(), *d as i64));
        }
        by.into_iter()
            .map(|(r, v)| (self.dag.replica(r).name().to_string(), v))
            .collect()
    }

    /// Steps the workers until every replica is final through `seq`, and delivers the deltas
    /// up to it to subscribers, in `Seq` order.
    pub fn step_until(&mut self, seq: Seq) -> Result<(), Error> {
        self.ensure_engine()?;
        self.engine
            .as_mut()
            .expect("engine started")
            .step_until(seq.0)
    }

    /// Steps until everything pushed is final.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.step_until(Seq(self.last_seq))
    }

    /// Subscribes to a replica's deltas after the current `Seq`.
    pub fn subscribe(&mut self, replica: ReplicaId) -> Result<Subscription<R>, Error> {
        self.ensure_engine()?;
        self.engine
            .as_mut()
            .expect("engine started")
            .subscribe(replica)
    }

    /// Rebuild deltas published when the runtime was restored: the difference between a stored
    /// revision and its recomputation by a changed logic version.
    pub fn take_rebuild_deltas(&mut self) -> Vec<Delta<R>> {
        std::mem::take(&mut self.rebuild_deltas)
    }

    /// A replica's current contents, `(record, multiplicity)` sorted by record; all of it or
    /// one partition. Served from a current revision without starting the dataflow when one
    /// exists.
    pub fn read(
        &mut self,
        replica: ReplicaId,
        partition: Option<u64>,
    ) -> Result<Vec<(R, isize)>, Error> {
        if self.engine.is_none()
            && let Some(rows) = self.fresh_revision(replica, self.last_seq)?
        {
            return Ok(self.filter_partition(replica, rows, partition));
        }
        self.ensure_engine()?;
        self.engine
            .as_mut()
            .expect("engine started")
            .read(replica, partition)
    }

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
        self.replay_log(&mut engine, start.as_of + 1, self.last_seq)?;
        engine.step_until(self.last_seq)?;
        engine.stop()?;
        Ok(sub.try_iter().filter(|d| d.seq > since).collect())
    }

    /// Every replica's frontier.
    pub fn frontiers(&mut self) -> Result<Vec<Frontier>, Error> {
        let raw = match self.engine.as_mut() {
            Some(e) => e.frontiers()?,
            // Nothing is running: everything committed is final.
            None => vec![self.last_seq + 1; self.dag.len()],
        };
        Ok(raw
            .into_iter()
            .enumerate()
            .map(|(i, f)| Frontier {
                replica: ReplicaId(i as u32),
                name: self.dag.replicas()[i].name().to_string(),
                frontier: Seq(if f == u64::MAX { self.last_seq + 1 } else { f }),
            })
            .collect())
    }

    /// The stored revisions' headers.
    pub fn revisions(&self) -> Result<Vec<RevisionInfo>, Error> {
        match &self.store {
            Some(s) => Ok(s.revisions()?),
            None => Ok(Vec::new()),
        }
    }

    /// Status for `prr status`.
    pub fn status(&mut self) -> Result<Status, Error> {
        let frontiers = self.frontiers()?;
        let revisions = self.revisions()?;
        let mut replicas = Vec::new();
        for f in frontiers {
            let newest = revisions
                .iter()
                .filter(|r| r.replica == f.name)
                .map(|r| r.as_of)
                .max();
            let records = match (
                &self.engine,
                revisions
                    .iter()
                    .find(|r| r.replica == f.name && r.as_of == self.last_seq),
            ) {
                (None, Some(info)) if self.is_fresh(info) => info.records,
                _ => self
                    .read(f.replica, None)?
                    .iter()
                    .map(|(_, d)| *d as u64)
                    .sum(),
            };
            replicas.push(ReplicaStatus {
                logic_version: self.dag.replica(f.replica).logic_version(),
                name: f.name,
                frontier: f.frontier,
                records,
                newest_revision: newest.map(Seq),
            });
        }
        let store = match &self.store {
            Some(s) => Some(s.stats()?),
            None => None,
        };
        Ok(Status {
            seq: Seq(self.last_seq),
            replicas,
            store,
        })
    }

    /// Captures a revision of every replica as of the last `Seq`, in one transaction, then
    /// collects garbage. Returns the `as_of`.
    pub fn capture_revisions(&mut self) -> Result<Seq, Error> {
        if self.store.is_none() {
            return Err(Error::NoStore("capturing revisions"));
        }
        let as_of = self.last_seq;
        let all_fresh = self.engine.is_none()
            && self.dag.replicas().iter().enumerate().all(|(i, _)| {
                self.revision_info(ReplicaId(i as u32), as_of)
                    .is_some_and(|info| self.is_fresh(&info))
            });
        if !all_fresh {
            self.ensure_engine()?;
            let engine = self.engine.as_mut().expect("engine started");
            engine.step_until(as_of)?;
            let mut writes = Vec::with_capacity(self.dag.len());
            for (i, desc) in self.dag.replicas().iter().enumerate() {
                writes.push(revision_write(
                    desc,
                    engine.read(ReplicaId(i as u32), None)?,
                ));
            }
            self.write_revisions(as_of, &writes)?;
        }
        self.since_revision = 0;
        self.collect_garbage(self.config.log_gc)?;
        Ok(Seq(as_of))
    }

    /// Deletes what no retained revision needs: revisions beyond the newest
    /// `keep_revisions` of each replica (never one that a retained revision of a transitive
    /// dependent at the same `as_of` still needs), and, with `cut_log`, the source-log entries
    /// at or below the oldest retained restore point.
    pub fn collect_garbage(&mut self, cut_log: bool) -> Result<(), Error> {
        let Some(store) = &self.store else {
            return Err(Error::NoStore("collecting garbage"));
        };
        let revisions = store.revisions()?;
        let (delete, log_through) = gc_plan(&self.dag, &revisions, self.config.keep_revisions);
        let log_through = log_through.filter(|_| cut_log);
        if !delete.is_empty() || log_through.is_some() {
            store.collect_garbage(&delete, log_through)?;
        }
        Ok(())
    }

    /// Rewrites the store file to give back the space of deleted entries.
    pub fn compact_store(&mut self) -> Result<(), Error> {
        match self.store.as_mut() {
            Some(s) => Ok(s.compact_file()?),
            None => Err(Error::NoStore("compacting the store file")),
        }
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
        if let Some(engine) = self.engine.take() {
            engine.stop()?;
        }
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
            self.replay_log(&mut engine, at + 1, as_of)?;
            engine.step_until(as_of)?;
            at = as_of;
            let mut writes = Vec::new();
            for info in revisions.iter().filter(|i| i.as_of == as_of) {
                let Some(id) = self.dag.id(&info.replica) else {
                    continue;
                };
                if !selected.contains(&id) {
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
                    writes.push(revision_write(desc, rebuilt));
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

    /// Stops the workers; with a store, first captures revisions (unless configured not to).
    pub fn shutdown(mut self) -> Result<(), Error> {
        if self.store.is_some()
            && self.config.revision_on_shutdown
            && !self.config.read_only
            && self.engine.is_some()
        {
            self.capture_revisions()?;
        }
        if let Some(engine) = self.engine.take() {
            engine.stop()?;
        }
        Ok(())
    }

    /// Writes revisions in one transaction with the dictionary strings not yet stored.
    fn write_revisions(&self, as_of: u64, writes: &[RevisionWrite]) -> Result<(), Error> {
        let (first_id, strings) = self.dictionary.unpersisted();
        let store = self.store.as_ref().expect("store");
        store.write_revisions(as_of, writes, first_id, &strings)?;
        self.dictionary
            .mark_persisted(first_id + strings.len() as u64);
        Ok(())
    }

    // ---- restore and replay ----

    fn ensure_engine(&mut self) -> Result<(), Error> {
        if self.engine.is_some() {
            return Ok(());
        }
        let start = self.start_point(self.last_seq)?;
        let mut engine = self.replay_engine(start, start.as_of, None)?;
        // Rebuild deltas: derived replicas whose stored revision at the start point was made by
        // other logic are recomputed; the difference is published.
        let mut stale = false;
        if start.as_of > 0 {
            for (i, desc) in self.dag.replicas().iter().enumerate() {
                let id = ReplicaId(i as u32);
                if desc.is_source() {
                    continue;
                }
                if let Some(info) = self.revision_info(id, start.as_of)
                    && !self.is_fresh(&info)
                {
                    stale = true;
                    let stored = self.decode_revision(desc.name(), start.as_of)?;
                    let now = engine.read(id, None)?;
                    let updates = difference(&stored, &now);
                    self.rebuild_deltas.push(Delta {
                        seq: Seq(start.as_of),
                        replica: id,
                        kind: DeltaKind::Rebuild,
                        updates,
                    });
                }
            }
        }
        self.replay_log(&mut engine, start.as_of + 1, self.last_seq)?;
        engine.step_until(self.last_seq)?;
        self.engine = Some(engine);
        if stale && !self.config.read_only {
            self.capture_revisions()?;
        }
        Ok(())
    }

    /// A fresh engine fed with the source revisions of `start` and the log up to `upto`.
    fn replay_engine(
        &self,
        start: StartPoint,
        upto: u64,
        _capture: Option<ReplicaId>,
    ) -> Result<Engine<R>, Error> {
        let mut engine = Engine::start(self.dag.clone(), self.config.workers)?;
        if start.as_of > 0 {
            let mut updates: Vec<SourceUpdate<R>> = Vec::new();
            for id in self.dag.sources() {
                let rows = self.decode_revision(self.dag.replica(id).name(), start.as_of)?;
                updates.extend(rows.into_iter().map(|(r, d)| (id.0, r, d)));
            }
            engine.feed(start.as_of, updates)?;
            engine.step_until(start.as_of)?;
        }
        self.replay_log(&mut engine, start.as_of + 1, upto)?;
        engine.step_until(upto)?;
        Ok(engine)
    }

    fn replay_log(&self, engine: &mut Engine<R>, from: u64, through: u64) -> Result<(), Error> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        if from > through {
            return Ok(());
        }
        let mut expected = from;
        store.for_each_log(from, |seq, bytes| {
            if seq > through {
                return Ok(());
            }
            if seq != expected {
                return Err(Error::HistoryUnavailable(format!(
                    "the source log lacks seq {expected} (next retained: {seq})"
                )));
            }
            expected += 1;
            let logged: LoggedDelta<R> = codec::decode(bytes, &format!("log entry {seq}"))?;
            let mut updates = Vec::new();
            for (name, rows) in logged {
                let id = self.dag.id(&name).ok_or_else(|| {
                    Error::Corrupt(format!("log entry {seq} names replica `{name}`, which this program does not declare"))
                })?;
                updates.extend(rows.into_iter().map(|(r, d)| (id.0, r, d as isize)));
            }
            engine.feed(seq, updates)
        })?;
        if expected <= through {
            return Err(Error::HistoryUnavailable(format!(
                "the source log ends before seq {expected}"
            )));
        }
        Ok(())
    }

    /// The newest restore point at or before `upto`: a complete, current set of source
    /// revisions, or the empty beginning when the log reaches back to seq 1.
    fn start_point(&self, upto: u64) -> Result<StartPoint, Error> {
        let Some(store) = &self.store else {
            return Ok(StartPoint { as_of: 0 });
        };
        let revisions = store.revisions()?;
        let first_log = store.first_log_seq()?;
        let sets = self.source_sets(&revisions);
        if let Some(as_of) = sets.iter().rev().find(|a| **a <= upto) {
            return Ok(StartPoint { as_of: *as_of });
        }
        if self.log_reaches_start(first_log) {
            return Ok(StartPoint { as_of: 0 });
        }
        Err(Error::HistoryUnavailable(format!(
            "nothing retained reaches back to seq {upto}: the log {} and the oldest restore point is {}",
            first_log
                .map(|f| format!("starts at seq {f}"))
                .unwrap_or_else(|| "is empty".into()),
            sets.first()
                .map(|s| format!("seq {s}"))
                .unwrap_or_else(|| "none".into())
        )))
    }

    /// The oldest restore point: the start of a rebuild from the log.
    fn log_start_point(&self) -> Result<StartPoint, Error> {
        let store = self.store.as_ref().expect("store");
        let first_log = store.first_log_seq()?;
        if self.log_reaches_start(first_log) {
            return Ok(StartPoint { as_of: 0 });
        }
        let sets = self.source_sets(&store.revisions()?);
        sets.first()
            .map(|a| StartPoint { as_of: *a })
            .ok_or_else(|| {
                Error::HistoryUnavailable(
                    "the log does not start at seq 1 and no source revision is retained".into(),
                )
            })
    }

    /// Whether the retained log begins at seq 1 (an empty log only if nothing was committed).
    fn log_reaches_start(&self, first_log: Option<u64>) -> bool {
        match first_log {
            Some(f) => f <= 1,
            None => self.last_seq == 0,
        }
    }

    /// The `as_of`s at which every source replica has a current revision, ascending.
    fn source_sets(&self, revisions: &[RevisionInfo]) -> Vec<u64> {
        let mut by_as_of: BTreeMap<u64, usize> = BTreeMap::new();
        for info in revisions {
            if let Some(id) = self.dag.id(&info.replica)
                && self.dag.replica(id).is_source()
                && self.is_fresh(info)
            {
                *by_as_of.entry(info.as_of).or_default() += 1;
            }
        }
        let n = self.dag.sources().count();
        by_as_of
            .into_iter()
            .filter(|(_, c)| *c == n)
            .map(|(a, _)| a)
            .collect()
    }

    fn is_fresh(&self, info: &RevisionInfo) -> bool {
        self.dag.id(&info.replica).is_some_and(|id| {
            let d = self.dag.replica(id);
            d.logic_version() == info.logic_version && d.description_hash() == info.description_hash
        })
    }

    fn revision_info(&self, replica: ReplicaId, as_of: u64) -> Option<RevisionInfo> {
        let name = self.dag.replica(replica).name();
        self.store
            .as_ref()?
            .revisions()
            .ok()?
            .into_iter()
            .find(|i| i.replica == name && i.as_of == as_of)
    }

    fn fresh_revision(
        &self,
        replica: ReplicaId,
        as_of: u64,
    ) -> Result<Option<Vec<(R, isize)>>, Error> {
        match self.revision_info(replica, as_of) {
            Some(info) if self.is_fresh(&info) => {
                Ok(Some(self.decode_revision(&info.replica, as_of)?))
            }
            _ => Ok(None),
        }
    }

    fn decode_revision(&self, replica: &str, as_of: u64) -> Result<Vec<(R, isize)>, Error> {
        let store = self.store.as_ref().expect("store");
        let mut rows = Vec::new();
        for (i, chunk) in store.revision_chunks(replica, as_of)?.iter().enumerate() {
            let part: Vec<(R, i64)> =
                codec::decode(chunk, &format!("revision ({replica}, {as_of}) chunk {i}"))?;
            rows.extend(part.into_iter().map(|(r, d)| (r, d as isize)));
        }
        Ok(rows)
    }

    fn filter_partition(
        &self,
        replica: ReplicaId,
        rows: Vec<(R, isize)>,
        partition: Option<u64>,
    ) -> Vec<(R, isize)> {
        match partition {
            None => rows,
            Some(p) => {
                let desc = self.dag.replica(replica);
                rows.into_iter()
                    .filter(|(r, _)| desc.partition_of(r) == p)
                    .collect()
            }
        }
    }

    /// Checks the store: the engine's encodings on top of the store's own invariants.
    pub fn check_store(&self) -> Result<Vec<String>, Error> {
        let Some(store) = &self.store else {
            return Err(Error::NoStore("checking the store"));
        };
        let dag = self.dag.clone();
        let mut problems = store.check(
            |bytes| {
                let logged: LoggedDelta<R> =
                    codec::decode(bytes, "log entry").map_err(|e| e.to_string())?;
                for (name, _) in logged {
                    if dag.id(&name).is_none() {
                        return Err(format!("unknown replica `{name}`"));
                    }
                }
                Ok(())
            },
            |bytes| {
                let rows: Vec<(R, i64)> =
                    codec::decode(bytes, "chunk").map_err(|e| e.to_string())?;
                if rows.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err("records are not sorted and distinct".into());
                }
                Ok(rows.len() as u64)
            },
        )?;
        if let Err(e) = self.start_point(self.last_seq) {
            problems.push(e.to_string());
        }
        Ok(problems)
    }
}

/// A replica's consolidated contents as a revision to write.
fn revision_write<R: Record>(
    desc: &crate::ReplicaDescription<R>,
    rows: Vec<(R, isize)>,
) -> RevisionWrite {
    let rows: Vec<(R, i64)> = rows.into_iter().map(|(r, d)| (r, d as i64)).collect();
    RevisionWrite {
        replica: desc.name().to_string(),
        logic_version: desc.logic_version(),
        description_hash: desc.description_hash(),
        records: rows.len() as u64,
        chunks: codec::encode_chunks(&rows),
    }
}

/// Which revisions and log entries garbage collection deletes.
fn gc_plan<R: Record>(
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
    for (name, as_of) in &candidates {
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
