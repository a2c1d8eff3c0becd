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

use prr_persist::{RevisionInfo, Store};

use crate::api::{
    CountSubscription, Delta, Frontier, RebuildOutcome, ReplicaStatus, RuntimeConfig, SourceDelta,
    Split, Status, Subscriber, Subscription,
};
use crate::check;
use crate::codec::{self, LoggedDelta};
use crate::controller::{Controller, Subscribers};
use crate::dag::Dag;
use crate::description::ReplicaId;
use crate::dictionary::Dictionary;
use crate::error::{DagError, Error};
use crate::gc::gc_plan;
use crate::history;
use crate::record::Record;
use crate::restore::{restore, settle_after_fault};
use crate::revision::Decoding;
use crate::seq::Seq;
use crate::stored::{Stored, with_new_strings};

mod counts;
mod poison;
mod preview;
mod revisions;
mod strings;

/// The embedded runtime. See the module documentation for its life cycle.
pub struct Runtime<R: Record> {
    stored: Stored<R>,
    /// The running dataflow, once started.
    controller: Option<Controller<R>>,
    since_revision: u64,
    /// A commit of source deltas failed without telling whether it took place
    /// (`prr_persist::Error::InDoubt`): the next operation reads the store back first.
    unsettled: bool,
    rebuild_deltas: Vec<Delta<R>>,
    resumed: Vec<String>,
    /// The deltas this runtime quarantined since it started, in order.
    newly_poisoned: Vec<Seq>,
    /// A revision capture running in the background (see `revisions`).
    capturing: Option<revisions::InFlight>,
    /// How a capture in the background ended, when something else waited for it.
    captured: Option<Result<Seq, Error>>,
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
        build: impl FnOnce(&Dictionary) -> Result<Dag<R>, DagError>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let store = match &config.store {
            Some(path) => Some(config.open_store(path, config.read_only)?),
            None => None,
        };
        Self::start_inner(config, store, build)
    }

    /// Like [`Runtime::start_with`], on a store opened by the caller (e.g. on a
    /// fault-injecting storage backend, `Store::open_with_backend`); `config`'s store path is
    /// ignored.
    #[cfg(feature = "test-util")]
    pub fn start_on(
        config: RuntimeConfig,
        store: Store,
        build: impl FnOnce(&Dictionary) -> Result<Dag<R>, DagError>,
    ) -> Result<Self, Error> {
        Self::start_inner(config, Some(store), build)
    }

    fn start_inner(
        config: RuntimeConfig,
        store: Option<Store>,
        build: impl FnOnce(&Dictionary) -> Result<Dag<R>, DagError>,
    ) -> Result<Self, Error> {
        let dictionary = Dictionary::new();
        let (store, last_seq) = match store {
            Some(store) => {
                let n = store.string_count()?;
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                dictionary.load_parallel(n, threads as u64, |from, to, f| {
                    Ok(store.for_each_string_in(from, to, f)?)
                })?;
                let last = store.last_seq()?;
                (Some(Arc::new(store)), last)
            }
            None => (None, 0),
        };
        let quarantine = match &store {
            Some(s) => (s.quarantined()?.into_iter()).map(|q| (q.seq, q)).collect(),
            None => BTreeMap::new(),
        };
        // What the build hands out stays (its computations may hold those ids), see
        // `Runtime::collect_strings_in_memory`.
        let dag = Arc::new(dictionary.keeping(|| build(&dictionary))?);
        if let Some(store) = store.as_ref().filter(|s| !s.is_read_only()) {
            with_new_strings(&dictionary, store, |first_id, strings| {
                if strings.is_empty() {
                    return Ok(Vec::new());
                }
                store.append(&[], first_id, strings)
            })?;
        }
        let mut rt = Runtime {
            stored: Stored {
                config,
                dag,
                dictionary,
                store,
                last_seq,
                quarantine,
            },
            controller: None,
            since_revision: 0,
            unsettled: false,
            rebuild_deltas: Vec::new(),
            resumed: Vec::new(),
            newly_poisoned: Vec::new(),
            capturing: None,
            captured: None,
        };
        if rt.stored.store.is_none() {
            let controller = Controller::start(rt.stored.dag.clone(), rt.stored.config.workers)?;
            rt.controller = Some(controller);
        } else {
            // Fail now, not at first use, if the store cannot be restored.
            rt.stored.start_point(rt.stored.last_seq)?;
        }
        Ok(rt)
    }

    /// The replicas.
    pub fn dag(&self) -> &Dag<R> {
        &self.stored.dag
    }

    /// The id of a replica by name.
    pub fn replica(&self, name: &str) -> Result<ReplicaId, Error> {
        let dag = &self.stored.dag;
        dag.id(name).ok_or_else(|| Error::UnknownReplica {
            name: name.to_string(),
            known: dag
                .replicas()
                .iter()
                .map(|d| d.name().to_string())
                .collect(),
        })
    }

    /// The dictionary of interned identifiers shared with the dataflow.
    pub fn dictionary(&self) -> &Dictionary {
        &self.stored.dictionary
    }

    /// The last committed (or, without a store, pushed) `Seq`.
    pub fn last_seq(&self) -> Seq {
        Seq(self.stored.last_seq)
    }

    /// Commits a source delta durably (with a store) and feeds it to the dataflow; returns its
    /// `Seq`. Nothing of a delta that fails is stored. A delta that a replica's computation
    /// panics on is quarantined, not an error (see [`Runtime::poisoned`]).
    pub fn push(&mut self, delta: SourceDelta<R>) -> Result<Seq, Error> {
        let seqs = self.push_many(vec![delta])?;
        Ok(seqs.first().copied().unwrap_or(Seq(self.stored.last_seq)))
    }

    /// Commits several source deltas in one durable transaction (a group commit) and feeds them.
    pub fn push_many(&mut self, deltas: Vec<SourceDelta<R>>) -> Result<Vec<Seq>, Error> {
        self.only_sources(&deltas)?;
        self.ensure_controller()?;
        let last_seq = self.stored.last_seq;
        let committed = match &self.stored.store {
            Some(store) => {
                let encoded: Vec<Vec<u8>> = deltas
                    .iter()
                    .map(|d| codec::encode(&self.logged(d)))
                    .collect();
                let slices: Vec<&[u8]> = encoded.iter().map(|e| e.as_slice()).collect();
                let dictionary = &self.stored.dictionary;
                if dictionary.has_holes()
                    && let Some(ids) = self.stored.dag.record_ids()
                {
                    // Collected strings these records use again go back into the store.
                    let mut used = Vec::new();
                    for (_, r, _) in deltas.iter().flat_map(|d| &d.updates) {
                        ids(r, &mut |id| used.push(id));
                    }
                    dictionary.revive(used);
                }
                // On failure the new strings stay interned (unpersisted): the dataflow may hold
                // their ids already, and they are written with the next commit. The store says
                // whether a failed commit took place; when it cannot tell, the next operation
                // reads it back (`settle`).
                with_new_strings(dictionary, store, |first_id, strings| {
                    store.append(&slices, first_id, strings)
                })
            }
            None => Ok((1..=deltas.len() as u64).map(|i| last_seq + i).collect()),
        };
        let seqs = match committed {
            Ok(seqs) => seqs,
            Err(e) => {
                self.unsettled = matches!(e, prr_persist::Error::InDoubt { .. });
                return Err(e.into());
            }
        };
        self.stored.last_seq = *seqs.last().unwrap_or(&last_seq);
        for (seq, delta) in seqs.iter().zip(deltas) {
            let updates = delta
                .updates
                .into_iter()
                .map(|(r, rec, d)| (r.0, rec, d))
                .collect();
            match self.ensure_controller()?.feed(*seq, updates) {
                Err(Error::WorkerFailed(_)) if self.stored.store.is_some() => {
                    // The sorting out feeds every committed delta from the log, these too.
                    self.quarantine_poisoned(self.computed_through())?;
                    break;
                }
                fed => fed?,
            }
        }
        self.since_revision += seqs.len() as u64;
        let seqs: Vec<Seq> = seqs.into_iter().map(Seq).collect();
        if let Some(every) = self.stored.config.revision_every
            && self.stored.store.is_some()
            && self.since_revision >= every
            && let Err(e) = self.capture_revisions()
        {
            return Err(Error::CaptureFailed {
                committed: seqs,
                source: Box::new(e),
            });
        }
        Ok(seqs)
    }

    /// An error unless every update of `deltas` is to a source replica.
    fn only_sources(&self, deltas: &[SourceDelta<R>]) -> Result<(), Error> {
        let dag = &self.stored.dag;
        for d in deltas {
            for (replica, _, _) in &d.updates {
                if !dag.replica(*replica).is_source() {
                    return Err(Error::NotASource(dag.replica(*replica).name().to_string()));
                }
            }
        }
        Ok(())
    }

    /// After a commit whose outcome the store could not tell: reads the store back and makes
    /// the runtime equal to it (the dataflow is fed what was committed after all, the
    /// dictionary marks what is stored). Fails, changing nothing, while the store cannot be
    /// read.
    fn settle(&mut self) -> Result<(), Error> {
        if !self.unsettled {
            return Ok(());
        }
        let through = settle_after_fault(&self.stored, self.controller.as_mut())?;
        self.since_revision += through - self.stored.last_seq;
        self.stored.last_seq = through;
        self.unsettled = false;
        Ok(())
    }

    fn logged(&self, delta: &SourceDelta<R>) -> LoggedDelta<R> {
        let mut by: BTreeMap<ReplicaId, Vec<(R, i64)>> = BTreeMap::new();
        for (r, rec, d) in &delta.updates {
            by.entry(*r).or_default().push((rec.clone(), *d as i64));
        }
        by.into_iter()
            .map(|(r, v)| (self.stored.dag.replica(r).name().to_string(), v))
            .collect()
    }

    /// Steps the workers until every replica is final through `seq`, and delivers the deltas
    /// up to it to subscribers, in `Seq` order.
    pub fn step_until(&mut self, seq: Seq) -> Result<(), Error> {
        self.on_dataflow(&[], |c| c.step_until(seq.0))
    }

    /// Steps until everything pushed is final.
    pub fn sync(&mut self) -> Result<(), Error> {
        self.step_until(Seq(self.stored.last_seq))
    }

    /// Subscribes to a replica's deltas after the current `Seq`.
    pub fn subscribe(&mut self, replica: ReplicaId) -> Result<Subscription<R>, Error> {
        self.on_dataflow(&[replica], |c| c.subscribe(replica))
    }

    /// Subscribes to how many records a replica's deltas add and remove after the current
    /// `Seq`, without their records: a stored replica's are counted in the dataflow, so
    /// following every replica of a large ingest costs no copy of what it derives. A view's
    /// are counted from its deltas, derived as for [`Runtime::subscribe`].
    pub fn subscribe_counts(&mut self, replica: ReplicaId) -> Result<CountSubscription, Error> {
        let view = self.stored.dag.replica(replica).is_view();
        let bases = if view { vec![replica] } else { Vec::new() };
        self.on_dataflow(&bases, |c| c.subscribe_counts(replica))
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
        let dag = self.stored.dag.clone();
        if let Some(view) = dag.replica(replica).view() {
            let inputs = dag.inputs_of(replica);
            let right_partition = partition.filter(|_| view.partition_follows_right);
            let left = self.read(inputs[0], None)?;
            let right = self.read(inputs[1], right_partition)?;
            let rows = view.eval(&left, &right);
            return Ok(self.stored.filter_partition(replica, rows, partition));
        }
        if self.controller.is_none()
            && let Some(rows) = self.stored.fresh_revision(replica, self.stored.last_seq)?
        {
            return Ok(self.stored.filter_partition(replica, rows, partition));
        }
        self.controller_read(replica, partition)
    }

    /// A stored replica's contents as its base revision (shared, not copied) and the changes
    /// since it ([`Split`]), from the running dataflow (started if need be). For a reader that
    /// keeps a large replica's contents, e.g. an ingest state, after a restore.
    ///
    /// A view has no base: its contents are all changes.
    pub fn read_split(&mut self, replica: ReplicaId) -> Result<Split<R>, Error> {
        if self.stored.dag.replica(replica).is_view() {
            return Ok(Split {
                base: Default::default(),
                changes: self.read(replica, None)?,
            });
        }
        self.on_dataflow(&[replica], |c| c.read_split(replica))
    }

    /// A replica's contents in the running dataflow, started if need be (with its base
    /// revision, if based).
    fn controller_read(
        &mut self,
        replica: ReplicaId,
        partition: Option<u64>,
    ) -> Result<Vec<(R, isize)>, Error> {
        self.on_dataflow(&[replica], |c| c.read(replica, partition))
    }

    /// Runs `op` on the running dataflow (restored first if need be, with the base revisions of
    /// `bases`). If a worker panics (with a store), the deltas the dataflow was computing are
    /// sorted out ([`Runtime::quarantine_poisoned`]) and `op` runs once more, on the restarted
    /// dataflow.
    fn on_dataflow<T>(
        &mut self,
        bases: &[ReplicaId],
        mut op: impl FnMut(&mut Controller<R>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.ensure_controller()?;
        self.give_bases(bases)?;
        match op(self.ensure_controller()?) {
            Err(Error::WorkerFailed(_)) if self.stored.store.is_some() => {
                self.quarantine_poisoned(self.computed_through())?;
                self.give_bases(bases)?;
                op(self.ensure_controller()?)
            }
            done => done,
        }
    }

    /// The `Seq` through which the running dataflow computed everything (whatever failed
    /// after).
    fn computed_through(&self) -> u64 {
        (self.controller.as_ref()).map_or(0, |c| c.synced_upper.saturating_sub(1))
    }

    /// The running dataflow, restored first if it is not running. A delta of the log that
    /// panics while it is replayed (committed, but not quarantined before the process stopped)
    /// is quarantined now.
    fn ensure_controller(&mut self) -> Result<&mut Controller<R>, Error> {
        self.settle()?;
        if self.controller.is_none() {
            let last = self.stored.last_seq;
            match self.restart_dataflow(last) {
                Err(Error::WorkerFailed(_)) if self.stored.store.is_some() => {
                    let good = self.stored.start_point(last)?.as_of;
                    self.quarantine_poisoned(good)?;
                }
                restarted => restarted?,
            }
        }
        (self.controller.as_mut())
            .ok_or_else(|| Error::WorkerFailed("the dataflow is not running".into()))
    }

    /// Starts the dataflow afresh from the store, through `through`: the newest restore point
    /// at or before it, then the log up to it, quarantined deltas skipped. A running dataflow
    /// (a failed one) is stopped first; its subscribers move to the new one, which delivers
    /// the deltas after `through` to them.
    fn restart_dataflow(&mut self, through: u64) -> Result<(), Error> {
        self.wait_capture();
        // It failed: its error is the one being handled.
        let (subscribers, _) = self.take_dataflow();
        self.restore_dataflow(through, subscribers)
    }

    /// Stops the running dataflow, if any, and returns its subscribers (for the next one,
    /// see [`Runtime::restore_dataflow`]) with how the stop went.
    fn take_dataflow(&mut self) -> (Subscribers<R>, Result<(), Error>) {
        match self.controller.take() {
            Some(mut old) => {
                // A revision handed out by `read_split` stays readable (see `stop_controller`).
                let decoded =
                    (old.wait_decodings()).and_then(|()| old.decode_bases(&self.stored.dag.ids()));
                let subscribers = old.take_subscribers();
                let stopped = old.stop_threads();
                (subscribers, decoded.and(stopped))
            }
            None => (Vec::new(), Ok(())),
        }
    }

    /// Starts the dataflow from the store through `through` (see
    /// [`Runtime::restart_dataflow`]), with `subscribers`.
    fn restore_dataflow(&mut self, through: u64, subscribers: Subscribers<R>) -> Result<(), Error> {
        self.resumed.clear();
        let restored = restore(&self.stored, through)?;
        let stale = !restored.rebuild_deltas.is_empty();
        self.resumed = restored.resumed;
        self.rebuild_deltas.extend(restored.rebuild_deltas);
        self.controller = Some(restored.controller);
        self.adopt_subscribers(subscribers)?;
        // Fresh revisions replace stale ones, as of the last `Seq` only.
        if stale && !self.stored.config.read_only && through == self.stored.last_seq {
            self.capture_revisions()?;
        }
        Ok(())
    }

    /// Gives `subscribers` (taken from a dataflow that stopped) to the running one, with the
    /// base revisions of the replicas they follow.
    fn adopt_subscribers(&mut self, subscribers: Subscribers<R>) -> Result<(), Error> {
        if subscribers.iter().any(|s| !s.is_empty()) {
            let dag = &self.stored.dag;
            // Counts need no base: they come from the dataflow's deltas alone.
            let subscribed: Vec<ReplicaId> = (subscribers.iter().enumerate())
                .filter(|(i, s)| {
                    s.iter().any(Subscriber::wants_records)
                        || (!s.is_empty() && dag.replica(ReplicaId(*i as u32)).is_view())
                })
                .map(|(i, _)| ReplicaId(i as u32))
                .collect();
            self.give_bases(&subscribed)?;
            if let Some(c) = self.controller.as_mut() {
                c.adopt_subscribers(subscribers)?;
            }
        }
        Ok(())
    }

    /// Decodes the base revisions of `replicas` (of their inputs, for views) that the running
    /// dataflow needs and does not have yet.
    fn give_bases(&mut self, replicas: &[ReplicaId]) -> Result<(), Error> {
        let Some(controller) = self.controller.as_mut() else {
            return Ok(());
        };
        let Some((as_of, _)) = controller.base() else {
            return Ok(());
        };
        let dag = &self.stored.dag;
        let mut wanted = Vec::new();
        for id in replicas {
            if dag.replica(*id).is_view() {
                wanted.extend(dag.inputs_of(*id).iter().copied());
            } else {
                wanted.push(*id);
            }
        }
        wanted.retain(|id| controller.needs_base(*id));
        if wanted.is_empty() {
            return Ok(());
        }
        // Read by chunk as looked up, decoded whole by its first reader of all of it.
        let store = self.stored.store("reading a revision")?.clone();
        let revisions = store.revisions()?;
        for id in wanted {
            let name = dag.replica(id).name();
            let info = (revisions.iter())
                .find(|i| i.replica == name && i.as_of == as_of)
                .ok_or_else(|| {
                    Error::Store(prr_persist::Error::Missing(format!(
                        "no revision of `{name}` as of seq {as_of}"
                    )))
                })?;
            let base = Decoding::lazy(&store, Arc::new(info.clone()), self.stored.id_check());
            controller.set_base(id, base);
        }
        Ok(())
    }

    /// Stops the running dataflow, if any (it restarts from the store when next needed). Its
    /// seeds are decoded first: a revision handed out (`read_split`) outlives it and stays
    /// readable.
    fn stop_controller(&mut self) -> Result<(), Error> {
        self.wait_capture();
        self.resumed.clear();
        match self.controller.take() {
            Some(controller) => {
                // A base revision handed out (`read_split`) stays readable after GC too.
                let decoded = (controller.wait_decodings())
                    .and_then(|()| controller.decode_bases(&self.stored.dag.ids()));
                controller.stop()?;
                decoded
            }
            None => Ok(()),
        }
    }

    /// The replicas the dataflow's restore resumed from their revisions instead of
    /// recomputing them (none before the dataflow starts, or when it started from scratch).
    pub fn resumed(&self) -> &[String] {
        &self.resumed
    }

    /// Every replica's frontier.
    pub fn frontiers(&mut self) -> Result<Vec<Frontier>, Error> {
        let raw = match self.controller.is_some() {
            true => self.on_dataflow(&[], |c| c.frontiers())?,
            // Nothing is running: everything committed is final.
            false => vec![self.stored.last_seq + 1; self.stored.dag.len()],
        };
        let last_seq = self.stored.last_seq;
        Ok(raw
            .into_iter()
            .enumerate()
            .map(|(i, f)| Frontier {
                replica: ReplicaId(i as u32),
                name: self.stored.dag.replicas()[i].name().to_string(),
                frontier: Seq(if f == u64::MAX { last_seq + 1 } else { f }),
            })
            .collect())
    }

    /// The stored revisions' headers.
    pub fn revisions(&self) -> Result<Vec<RevisionInfo>, Error> {
        self.stored.revisions()
    }

    /// Status for `prr status`.
    pub fn status(&mut self) -> Result<Status, Error> {
        let frontiers = self.frontiers()?;
        let revisions = self.revisions()?;
        let last_seq = self.stored.last_seq;
        let mut replicas = Vec::new();
        for f in frontiers {
            let newest = revisions
                .iter()
                .filter(|r| r.replica == f.name)
                .map(|r| r.as_of)
                .max();
            let desc = self.stored.dag.replica(f.replica);
            let logic_version = desc.logic_version();
            let current = revisions
                .iter()
                .find(|r| r.replica == f.name && r.as_of == last_seq);
            let records = match (desc.is_view(), &self.controller, current) {
                (true, _, _) => self.records(f.replica)?,
                (false, None, Some(info)) if self.stored.is_fresh(info) => info.records,
                _ => self.records(f.replica)?,
            };
            replicas.push(ReplicaStatus {
                logic_version,
                name: f.name,
                frontier: f.frontier,
                records,
                newest_revision: newest.map(Seq),
            });
        }
        let store = match &self.stored.store {
            Some(s) => Some(s.stats()?),
            None => None,
        };
        Ok(Status {
            seq: Seq(last_seq),
            replicas,
            store,
            poisoned: self.stored.quarantine.keys().map(|s| Seq(*s)).collect(),
        })
    }

    /// Deletes what no retained revision needs: revisions beyond the newest
    /// `keep_revisions` of each replica (never one that a retained revision of a transitive
    /// dependent at the same `as_of` still needs, nor the base revisions of the running
    /// dataflow), and, with `cut_log`, the source-log entries at or below the oldest retained
    /// restore point.
    pub fn collect_garbage(&mut self, cut_log: bool) -> Result<(), Error> {
        self.wait_capture();
        let store = self.stored.store("collecting garbage")?.clone();
        self.settle()?;
        let revisions = store.revisions()?;
        let dag = self.stored.dag.clone();
        let (mut delete, log_through) =
            gc_plan(&dag, &revisions, self.stored.config.keep_revisions);
        if let Some(controller) = &self.controller
            && let Some((base, based)) = controller.base()
        {
            // The running dataflow's base revisions stay while it runs: its reads and its
            // captures look them up by chunk (decoding one whole here would stall the
            // ingest behind it). The next restore lets them go.
            delete.retain(|(name, as_of)| {
                *as_of != base || !dag.id(name).is_some_and(|id| based[id.index()])
            });
            // Its seeds are decoded before they go.
            if delete.iter().any(|(_, as_of)| *as_of == base) {
                controller.wait_decodings()?;
            }
        }
        let log_through = log_through.filter(|_| cut_log);
        if !delete.is_empty() || log_through.is_some() {
            store.collect_garbage(&delete, log_through)?;
        }
        Ok(())
    }

    /// Rewrites the store file to give back the space of deleted entries.
    pub fn compact_store(&mut self) -> Result<(), Error> {
        self.wait_capture();
        // A restore's seeds, and the base revisions read by chunk, hold the store until they
        // are decoded (a few seconds at most).
        if let Some(controller) = &self.controller {
            controller.wait_decodings()?;
            controller.decode_bases(&self.stored.dag.ids())?;
        }
        let Some(store) = self.stored.store.as_mut() else {
            return Err(Error::NoStore("compacting the store file"));
        };
        loop {
            if let Some(s) = Arc::get_mut(store) {
                return Ok(s.compact_file()?);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// A replica's contents as of an earlier `seq` (time travel), from a retained revision or
    /// a replay of the log after one.
    pub fn read_as_of(
        &mut self,
        replica: ReplicaId,
        seq: Seq,
        partition: Option<u64>,
    ) -> Result<Vec<(R, isize)>, Error> {
        let last = self.stored.last_seq;
        if seq.0 > last {
            return Err(Error::FutureSeq {
                seq,
                last: Seq(last),
            });
        }
        if seq.0 == last {
            return self.read(replica, partition);
        }
        let dag = self.stored.dag.clone();
        if let Some(view) = dag.replica(replica).view() {
            let inputs = dag.inputs_of(replica);
            let right_partition = partition.filter(|_| view.partition_follows_right);
            let left = self.read_as_of(inputs[0], seq, None)?;
            let right = self.read_as_of(inputs[1], seq, right_partition)?;
            let rows = view.eval(&left, &right);
            return Ok(self.stored.filter_partition(replica, rows, partition));
        }
        history::read_as_of(&self.stored, replica, seq.0, partition)
    }

    /// A replica's deltas for every `Seq > since`, in order, as far back as the retained log
    /// and revisions reach.
    pub fn deltas_since(&mut self, replica: ReplicaId, since: Seq) -> Result<Vec<Delta<R>>, Error> {
        history::deltas_since(&self.stored, replica, since)
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
        self.stored.store("rebuilding from the log")?;
        self.stop_controller()?;
        let selected: BTreeSet<ReplicaId> = if replicas.is_empty() {
            (0..self.stored.dag.len() as u32).map(ReplicaId).collect()
        } else {
            replicas.iter().copied().collect()
        };
        history::rebuild(&self.stored, &selected, check_only)
    }

    /// Stops the workers; with a store, first captures revisions (unless configured not to).
    pub fn shutdown(mut self) -> Result<(), Error> {
        let config = &self.stored.config;
        if self.stored.store.is_some()
            && config.revision_on_shutdown
            && !config.read_only
            && self.controller.is_some()
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
        self.wait_capture();
        self.resumed.clear();
        let mut controller = self.controller.take();
        let stopped = controller.as_mut().map_or(Ok(()), Controller::stop_threads);
        self.stored.store.take();
        drop(controller);
        stopped
    }

    /// Checks the store: every checksum and invariant `docs/design.md` states, and that
    /// every log entry and revision chunk decodes as this program's records with dictionary
    /// ids in range. Returns the problems found, each naming the table and entry (empty when
    /// the store is sound).
    pub fn check_store(&self) -> Result<Vec<String>, Error> {
        check::check(&self.stored)
    }

    /// Checks the store of `config` as [`Runtime::check_store`] does, without starting a
    /// runtime (which damage can keep from starting): opens it read-only, and reports a
    /// dictionary that does not load as a problem too. `build` builds the DAG, as for
    /// [`Runtime::start_with`].
    pub fn check_store_at(
        config: RuntimeConfig,
        build: impl FnOnce(&Dictionary) -> Result<Dag<R>, DagError>,
    ) -> Result<Vec<String>, Error> {
        check::check_at(config, build)
    }
}

impl<R: Record> Drop for Runtime<R> {
    /// A runtime dropped without [`Runtime::shutdown`] (an error path) stops the same way,
    /// without capturing revisions.
    fn drop(&mut self) {
        let _ = self.close();
    }
}
