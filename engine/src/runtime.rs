//! The embedded runtime: a DAG of replicas running in timely workers, optionally persisted in a
//! store.
//!
//! Life cycle: [`Runtime::start`] opens the store (if any) and loads the dictionary; the dataflow
//! starts lazily, restored from the newest revisions plus the source log after them, the first
//! time something needs it. [`Runtime::push`] commits a source delta to the log, then feeds it;
//! [`Runtime::step_until`] waits until every replica is final through a `Seq` and delivers the
//! deltas to subscribers; [`Runtime::shutdown`] captures revisions and stops the workers.

mod gc;
mod history;
mod restore;

use gc::gc_plan;
pub use history::RebuildOutcome;

use std::collections::BTreeMap;
use std::sync::Arc;

use prr_persist::{RevisionInfo, RevisionWrite, Store, StoreStats};

use crate::codec::{self, LoggedDelta};
use crate::description::{Dag, Record, ReplicaId};
use crate::dictionary::Dictionary;
use crate::engine::{Delta, Engine, Frontier, RuntimeConfig, SourceDelta, Split, Subscription};
use crate::resume::Decoding;
use crate::{Error, Seq};

/// The embedded runtime. See the module documentation for its life cycle.
pub struct Runtime<R: Record> {
    config: RuntimeConfig,
    dag: Arc<Dag<R>>,
    dictionary: Dictionary,
    /// Shared with the threads that decode a restore's seeds.
    store: Option<Arc<Store>>,
    engine: Option<Engine<R>>,
    last_seq: u64,
    since_revision: u64,
    rebuild_deltas: Vec<Delta<R>>,
    resumed: Vec<String>,
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
                let n = store.string_count()? as usize;
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                dictionary.load_parallel(n as u64, threads as u64, |from, to, f| {
                    Ok(store.for_each_string_in(from, to, f)?)
                })?;
                let last = store.last_seq()?;
                (Some(Arc::new(store)), last)
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
            resumed: Vec::new(),
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
        self.store.as_deref()
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
        self.give_bases(&[replica])?;
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
        if let Some(view) = self.dag.replica(replica).view().cloned() {
            let inputs = self.dag.inputs_of(replica).to_vec();
            let right_partition = partition.filter(|_| view.partition_follows_right);
            let left = self.read(inputs[0], None)?;
            let right = self.read(inputs[1], right_partition)?;
            let rows = view.eval(&left, &right);
            return Ok(self.filter_partition(replica, rows, partition));
        }
        if self.engine.is_none()
            && let Some(rows) = self.fresh_revision(replica, self.last_seq)?
        {
            return Ok(self.filter_partition(replica, rows, partition));
        }
        self.ensure_engine()?;
        self.engine_read(replica, partition)
    }

    /// A stored replica's contents as its base revision (shared, not copied) and the changes
    /// since it ([`Split`]), from the running dataflow (started if need be). For a reader that
    /// keeps a large replica's contents, e.g. an ingest state, after a restore.
    ///
    /// # Panics
    /// If `replica` is a view.
    pub fn read_split(&mut self, replica: ReplicaId) -> Result<Split<R>, Error> {
        self.ensure_engine()?;
        self.give_bases(&[replica])?;
        self.engine
            .as_mut()
            .expect("engine started")
            .read_split(replica)
    }

    /// A replica's contents in the running dataflow (with its base revision, if based).
    fn engine_read(
        &mut self,
        replica: ReplicaId,
        partition: Option<u64>,
    ) -> Result<Vec<(R, isize)>, Error> {
        self.give_bases(&[replica])?;
        self.engine
            .as_mut()
            .expect("engine started")
            .read(replica, partition)
    }

    /// Decodes the base revisions of `replicas` (of their inputs, for views) that the running
    /// dataflow needs and does not have yet.
    fn give_bases(&mut self, replicas: &[ReplicaId]) -> Result<(), Error> {
        let engine = self.engine.as_ref().expect("engine started");
        let Some((as_of, _)) = engine.base() else {
            return Ok(());
        };
        let mut wanted = Vec::new();
        for id in replicas {
            if self.dag.replica(*id).is_view() {
                wanted.extend(self.dag.inputs_of(*id).iter().copied());
            } else {
                wanted.push(*id);
            }
        }
        wanted.retain(|id| engine.needs_base(*id));
        for id in wanted {
            let rows = sorted(self.decode_revision(self.dag.replica(id).name(), as_of)?);
            let engine = self.engine.as_mut().expect("engine started");
            engine.set_base(id, Decoding::done(Arc::new(rows)));
        }
        Ok(())
    }

    /// Stops the running dataflow, if any (it restarts from the store when next needed). Its
    /// seeds are decoded first: a revision handed out (`read_split`) outlives it and stays
    /// readable.
    fn stop_engine(&mut self) -> Result<(), Error> {
        self.resumed.clear();
        match self.engine.take() {
            Some(engine) => {
                let decoded = engine.wait_decodings();
                engine.stop()?;
                decoded
            }
            None => Ok(()),
        }
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

    /// The number of records of a replica now, counting multiplicity. A view's records are
    /// counted from its inputs without being built.
    pub fn records(&mut self, replica: ReplicaId) -> Result<u64, Error> {
        if let Some(view) = self.dag.replica(replica).view().cloned() {
            let inputs = self.dag.inputs_of(replica).to_vec();
            let left = self.read(inputs[0], None)?;
            let right = self.read(inputs[1], None)?;
            return Ok(view.count(&left, &right));
        }
        Ok(self
            .read(replica, None)?
            .iter()
            .map(|(_, d)| *d as u64)
            .sum())
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
            let desc = self.dag.replica(f.replica);
            let records = match (
                desc.view(),
                &self.engine,
                revisions
                    .iter()
                    .find(|r| r.replica == f.name && r.as_of == self.last_seq),
            ) {
                (Some(_), _, _) => self.records(f.replica)?,
                (None, None, Some(info)) if self.is_fresh(info) => info.records,
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
            && self.dag.replicas().iter().enumerate().all(|(i, d)| {
                d.is_view()
                    || self
                        .revision_info(ReplicaId(i as u32), as_of)
                        .is_some_and(|info| self.is_fresh(&info))
            });
        if !all_fresh {
            self.ensure_engine()?;
            let engine = self.engine.as_mut().expect("engine started");
            engine.step_until(as_of)?;
            let mut writes = Vec::with_capacity(self.dag.len());
            let dag = self.dag.clone();
            for (i, desc) in dag.replicas().iter().enumerate() {
                if desc.is_view() {
                    continue; // evaluated from its inputs' revisions when read
                }
                let rows = self.engine_read(ReplicaId(i as u32), None)?;
                writes.push(revision_write(desc, rows, self.config.chunk_records));
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
        // The running dataflow's base and seed revisions are decoded before they go.
        if let Some((base, _)) = self.engine.as_ref().and_then(|e| e.base()) {
            let going: Vec<ReplicaId> = (delete.iter())
                .filter(|(_, as_of)| *as_of == base)
                .filter_map(|(name, _)| self.dag.id(name))
                .collect();
            self.give_bases(&going)?;
            if !going.is_empty() {
                self.engine
                    .as_ref()
                    .expect("engine started")
                    .wait_decodings()?;
            }
        }
        let log_through = log_through.filter(|_| cut_log);
        if !delete.is_empty() || log_through.is_some() {
            let store = self.store.as_ref().expect("store");
            store.collect_garbage(&delete, log_through)?;
        }
        Ok(())
    }

    /// Rewrites the store file to give back the space of deleted entries.
    pub fn compact_store(&mut self) -> Result<(), Error> {
        let Some(store) = self.store.as_mut() else {
            return Err(Error::NoStore("compacting the store file"));
        };
        // A restore's seeds hold the store until they are decoded (a few seconds at most).
        if let Some(engine) = &self.engine {
            engine.wait_decodings()?;
        }
        loop {
            if let Some(s) = Arc::get_mut(store) {
                return Ok(s.compact_file()?);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
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
        self.close()
    }

    /// Stops the workers and the threads decoding a restore's seeds, then closes the store
    /// (nothing else holds it now: the revisions handed out hold it weakly), then drops the
    /// dataflow, which abandons the seeds left undecoded: a thread that waits for one gives up
    /// instead of reading it, and the file is closed cleanly when this returns.
    fn close(&mut self) -> Result<(), Error> {
        self.resumed.clear();
        let mut engine = self.engine.take();
        let stopped = engine.as_mut().map_or(Ok(()), Engine::stop_threads);
        self.store.take();
        drop(engine);
        stopped
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
            rows.extend(codec::decode_chunk(chunk, replica, as_of, i as u32)?);
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

impl<R: Record> Drop for Runtime<R> {
    /// A runtime dropped without [`Runtime::shutdown`] (an error path) stops the same way,
    /// without capturing revisions.
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// `rows` sorted by record (decoded revisions are; this only checks, for a store written
/// otherwise).
pub(crate) fn sorted<R: Record>(mut rows: Vec<(R, isize)>) -> Vec<(R, isize)> {
    if !rows.is_sorted_by(|a, b| a.0 <= b.0) {
        rows.sort_by(|a, b| a.0.cmp(&b.0));
    }
    rows
}

/// A replica's consolidated contents as a revision to write.
fn revision_write<R: Record>(
    desc: &crate::ReplicaDescription<R>,
    rows: Vec<(R, isize)>,
    per_chunk: usize,
) -> RevisionWrite {
    let rows: Vec<(R, i64)> = rows.into_iter().map(|(r, d)| (r, d as i64)).collect();
    RevisionWrite {
        replica: desc.name().to_string(),
        logic_version: desc.logic_version(),
        description_hash: desc.description_hash(),
        records: rows.len() as u64,
        chunks: codec::encode_chunks(&rows, per_chunk),
    }
}
