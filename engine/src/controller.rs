//! The controller: it drives the worker threads (feeding source deltas, stepping, reading),
//! delivers each replica's consolidated deltas to subscribers in `Seq` order (deriving a
//! subscribed view's deltas from its inputs'), and serves reads of a resumed dataflow by adding
//! the base revisions of its based replicas.

mod views;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::{
    CountSubscription, Delta, DeltaCount, DeltaKind, Split, Subscriber, Subscription,
};
use crate::dag::Dag;
use crate::decoders::Decoders;
use crate::description::ReplicaId;
use crate::error::Error;
use crate::record::Record;
use crate::revision::{Decoding, Revision};
use crate::seq::Seq;
use crate::updates::{consolidate, merge_sorted};
use crate::worker::{Capture, Captured, ResumePlan, SourceUpdate, Workers};
use views::ViewState;

/// Deltas captured from the workers and not yet delivered: by `(seq, replica)`.
type Pending<R> = BTreeMap<(u64, u32), Vec<(R, isize)>>;

/// Counts of deltas (of replicas followed by their counts only) captured from the workers and
/// not yet delivered: by `(seq, replica)`, `(added, removed)` summed over the workers.
type PendingCounts = BTreeMap<(u64, u32), (u64, u64)>;

/// The subscribers of a dataflow, by replica.
pub(crate) type Subscribers<R> = Vec<Vec<Subscriber<R>>>;

/// The revisions at the restore point of the replicas a restore left *based* (see
/// [`crate::Seeds`]): the dataflow holds only their deltas after `as_of`, and reads add their
/// revision. The runtime decodes a revision when first needed ([`Controller::needs_base`]).
pub(crate) struct Base<R> {
    pub(crate) as_of: u64,
    pub(crate) based: Vec<bool>,
    pub(crate) rows: Vec<Option<Arc<Decoding<R>>>>,
}

/// The controller under a `Runtime`: the workers, the delivery of deltas, the base revisions.
pub(crate) struct Controller<R: Record> {
    dag: Arc<Dag<R>>,
    /// Per view with subscribers: the state its deltas are derived from.
    views: Vec<Option<ViewState<R>>>,
    pub(crate) workers: Workers<R>,
    /// The threads that decode a resumed dataflow's seeds (see [`Controller::why`]). Declared
    /// after `workers`, so dropped after the workers stop: no worker waits for a revision
    /// when they stop.
    decoders: Option<Decoders<R>>,
    /// The base revisions of a resumed dataflow (see [`Base`]).
    base: Option<Base<R>>,
    /// Source deltas fed so far: the last `Seq`.
    pub(crate) fed: u64,
    /// Every replica is final below this.
    pub(crate) synced_upper: u64,
    pending: Pending<R>,
    pending_counts: PendingCounts,
    subscribers: Subscribers<R>,
}

impl<R: Record> Controller<R> {
    pub(crate) fn start(dag: Arc<Dag<R>>, workers: usize) -> Result<Self, Error> {
        Self::start_resumed(dag, workers, None)
    }

    /// Starts a controller whose dataflow resumes the replicas of `plan` (see [`ResumePlan`]).
    pub(crate) fn start_resumed(
        dag: Arc<Dag<R>>,
        workers: usize,
        resume: Option<(Arc<ResumePlan<R>>, Decoders<R>)>,
    ) -> Result<Self, Error> {
        let n = dag.len();
        let (plan, decoders) = resume.unzip();
        Ok(Controller {
            dag: dag.clone(),
            views: (0..n).map(|_| None).collect(),
            decoders,
            base: plan.as_ref().map(|p| Base {
                as_of: p.as_of,
                based: p.based.clone(),
                rows: vec![None; n],
            }),
            workers: Workers::start(dag, workers, plan)?,
            fed: 0,
            synced_upper: 0,
            pending: BTreeMap::new(),
            pending_counts: BTreeMap::new(),
            subscribers: (0..n).map(|_| Vec::new()).collect(),
        })
    }

    /// Feeds a source delta at `seq` (greater than every earlier one).
    pub(crate) fn feed(&mut self, seq: u64, updates: Vec<SourceUpdate<R>>) -> Result<(), Error> {
        debug_assert!(seq > self.fed || (seq == 0 && self.fed == 0));
        self.workers.feed(seq, updates).map_err(|e| self.why(e))?;
        self.fed = self.fed.max(seq);
        Ok(())
    }

    /// Steps until every replica is final through `seq`, then delivers the deltas up to it.
    pub(crate) fn step_until(&mut self, seq: u64) -> Result<(), Error> {
        // Nothing fed yet: every input is still open at time 0 and there is nothing to wait for.
        let upper = seq.min(self.fed) + 1;
        if self.fed > 0 && upper > self.synced_upper {
            self.workers.sync(upper).map_err(|e| self.why(e))?;
            self.synced_upper = upper;
        }
        self.deliver()
    }

    fn deliver(&mut self) -> Result<(), Error> {
        for captured in self.workers.captured.try_iter() {
            match captured {
                Captured::Records(replica, rows) => {
                    for (r, t, d) in rows {
                        self.pending.entry((t, replica)).or_default().push((r, d));
                    }
                }
                Captured::Counts(replica, counts) => {
                    for (t, added, removed) in counts {
                        let c = self.pending_counts.entry((t, replica)).or_default();
                        c.0 += added;
                        c.1 += removed;
                    }
                }
            }
        }
        // One `Seq` at a time: a view's delta at `t` needs both inputs' deltas at `t`.
        loop {
            let first = |k: Option<&(u64, u32)>| k.map_or(u64::MAX, |k| k.0);
            let t = first(self.pending.keys().next()).min(first(self.pending_counts.keys().next()));
            if t >= self.synced_upper {
                break;
            }
            while let Some(entry) = self.pending_counts.first_entry() {
                if entry.key().0 != t {
                    break;
                }
                let replica = ReplicaId(entry.key().1);
                let (added, removed) = entry.remove();
                if added + removed > 0 {
                    self.publish_count(DeltaCount {
                        seq: Seq(t),
                        replica,
                        kind: DeltaKind::Source,
                        added,
                        removed,
                    });
                }
            }
            let mut at_t: BTreeMap<u32, Vec<(R, isize)>> = BTreeMap::new();
            while let Some(entry) = self.pending.first_entry() {
                if entry.key().0 != t {
                    break;
                }
                let replica = entry.key().1;
                let updates = consolidate(entry.remove());
                if !updates.is_empty() {
                    at_t.insert(replica, updates);
                }
            }
            let mut view_deltas = Vec::new();
            for (v, state) in self.views.iter_mut().enumerate() {
                let Some(state) = state else { continue };
                let desc = self.dag.replica(ReplicaId(v as u32));
                let view = desc.view().expect("a view");
                let inputs = self.dag.inputs_of(ReplicaId(v as u32));
                let none = Vec::new();
                let d_left = at_t.get(&inputs[0].0).unwrap_or(&none);
                let d_right = at_t.get(&inputs[1].0).unwrap_or(&none);
                if d_left.is_empty() && d_right.is_empty() {
                    continue;
                }
                let updates = state.step(view, d_left, d_right);
                if !updates.is_empty() {
                    view_deltas.push((v as u32, updates));
                }
            }
            for (replica, updates) in at_t.into_iter().chain(view_deltas) {
                self.publish(Delta {
                    seq: Seq(t),
                    replica: ReplicaId(replica),
                    kind: DeltaKind::Source,
                    updates,
                });
            }
        }
        Ok(())
    }

    /// Sends `delta` to its replica's subscribers: the delta itself, or its count. The last
    /// subscriber to the delta gets it without a copy.
    pub(crate) fn publish(&mut self, delta: Delta<R>) {
        let subs = &mut self.subscribers[delta.replica.index()];
        let count = (subs.iter().any(|s| !s.wants_records())).then(|| DeltaCount::of(&delta));
        let last = subs.iter().rposition(Subscriber::wants_records);
        let mut delta = Some(delta);
        let mut i = 0;
        subs.retain(|s| {
            let sent = match s {
                Subscriber::Counts(tx) => count.is_some_and(|c| tx.send(c).is_ok()),
                Subscriber::Deltas(tx) if Some(i) == last => {
                    delta.take().is_some_and(|d| tx.send(d).is_ok())
                }
                Subscriber::Deltas(tx) => delta.clone().is_some_and(|d| tx.send(d).is_ok()),
            };
            i += 1;
            sent
        });
    }

    /// Sends `count` to its replica's subscribers, all of which follow counts only.
    fn publish_count(&mut self, count: DeltaCount) {
        let subs = &mut self.subscribers[count.replica.index()];
        subs.retain(|s| match s {
            Subscriber::Counts(tx) => tx.send(count).is_ok(),
            // Not reached: a replica with a subscriber to its records sends records.
            Subscriber::Deltas(_) => true,
        });
    }

    pub(crate) fn subscribe(&mut self, replica: ReplicaId) -> Result<Subscription<R>, Error> {
        let (sub, subscription) = Subscriber::deltas();
        self.add_subscriber(replica, sub)?;
        Ok(subscription)
    }

    pub(crate) fn subscribe_counts(
        &mut self,
        replica: ReplicaId,
    ) -> Result<CountSubscription, Error> {
        let (sub, subscription) = Subscriber::counts();
        self.add_subscriber(replica, sub)?;
        Ok(subscription)
    }

    fn add_subscriber(&mut self, replica: ReplicaId, sub: Subscriber<R>) -> Result<(), Error> {
        // Everything fed so far is final first, so the subscription sees whole deltas only.
        self.step_until(self.fed)?;
        self.capture(replica, sub.wants_records())?;
        self.subscribers[replica.index()].push(sub);
        Ok(())
    }

    /// Takes the subscribers of this (failed) dataflow, for the one that replaces it
    /// ([`Controller::adopt_subscribers`]).
    pub(crate) fn take_subscribers(&mut self) -> Subscribers<R> {
        let n = self.subscribers.len();
        std::mem::replace(&mut self.subscribers, (0..n).map(|_| Vec::new()).collect())
    }

    /// Gives the subscribers of a failed dataflow to this one, restarted where that one's
    /// deltas were last delivered: they receive the deltas after it from this one. The base
    /// revisions of the subscribed replicas (of their inputs, for views) are given first.
    pub(crate) fn adopt_subscribers(&mut self, subscribers: Subscribers<R>) -> Result<(), Error> {
        self.step_until(self.fed)?;
        for (i, subs) in subscribers.into_iter().enumerate() {
            if !subs.is_empty() {
                let records = subs.iter().any(Subscriber::wants_records);
                self.capture(ReplicaId(i as u32), records)?;
                self.subscribers[i].extend(subs);
            }
        }
        Ok(())
    }

    /// Captures `replica`'s deltas from now on, or only their counts unless `records` (a
    /// view's deltas, counted or not: its inputs', and its state).
    fn capture(&mut self, replica: ReplicaId, records: bool) -> Result<(), Error> {
        if self.dag.replica(replica).is_view() {
            if self.views[replica.index()].is_none() {
                let inputs = self.dag.inputs_of(replica).to_vec();
                for i in &inputs {
                    self.workers.set_capture(*i, Capture::Records);
                }
                let left = self.contents(inputs[0], None)?;
                let right = self.contents(inputs[1], None)?;
                let view = self.dag.replica(replica).view().expect("a view");
                self.views[replica.index()] = Some(ViewState::new(view, left, right));
            }
        } else if records {
            self.workers.set_capture(replica, Capture::Records);
        } else {
            self.workers.set_capture(replica, Capture::Counts);
        }
        Ok(())
    }

    pub(crate) fn read(
        &mut self,
        replica: ReplicaId,
        partition: Option<u64>,
    ) -> Result<Vec<(R, isize)>, Error> {
        self.step_until(self.fed)?;
        let desc = self.dag.replica(replica);
        match desc.view() {
            None => self.contents(replica, partition),
            Some(view) => {
                let inputs = self.dag.inputs_of(replica);
                let left = self.contents(inputs[0], None)?;
                let right_partition = partition.filter(|_| view.partition_follows_right);
                let right = self.contents(inputs[1], right_partition)?;
                let rows = view.eval(&left, &right);
                Ok(match partition {
                    Some(p) => rows
                        .into_iter()
                        .filter(|(r, _)| desc.partition_of(r) == p)
                        .collect(),
                    None => rows,
                })
            }
        }
    }

    /// A stored replica's contents in two parts: its base revision (shared, not decoded whole
    /// here, empty unless it is based) and what the dataflow holds beside it, consolidated and
    /// sorted; the contents are their sum.
    ///
    /// # Panics
    /// If `replica` is a view, or is based and its base was not given ([`Controller::needs_base`]).
    pub(crate) fn read_split(&mut self, replica: ReplicaId) -> Result<Split<R>, Error> {
        assert!(!self.dag.replica(replica).is_view(), "a stored replica");
        self.step_until(self.fed)?;
        let changes = self.workers.read(replica, None).map_err(|e| self.why(e))?;
        let i = replica.index();
        let base = match self.base.as_ref().filter(|b| b.based[i]) {
            None => Revision::default(),
            Some(base) => Revision::new(
                (base.rows[i].clone()).expect("the runtime gives a base before reads"),
            ),
        };
        Ok(Split { base, changes })
    }

    /// A stored replica's contents: the dataflow's, plus its base revision if it is based.
    ///
    /// # Panics
    /// If it is based and its base was not given ([`Controller::needs_base`]).
    fn contents(
        &self,
        replica: ReplicaId,
        partition: Option<u64>,
    ) -> Result<Vec<(R, isize)>, Error> {
        let rows = self
            .workers
            .read(replica, partition)
            .map_err(|e| self.why(e))?;
        let i = replica.index();
        let Some(base) = self.base.as_ref().filter(|b| b.based[i]) else {
            return Ok(rows);
        };
        let revision = (base.rows[i].as_ref())
            .expect("the runtime gives a base before reads")
            .wait()
            .map_err(|e| Error::Corrupt(e.to_string()))?;
        let desc = self.dag.replica(replica);
        let base_rows = revision
            .iter()
            .filter(|(r, _)| partition.is_none_or(|p| desc.partition_of(r) == p));
        Ok(merge_sorted(base_rows, rows))
    }

    /// Why the workers failed: a revision of the restore that did not decode (a worker that
    /// needed it stopped) is reported as such.
    fn why(&self, e: Error) -> Error {
        if matches!(e, Error::WorkerFailed(_)) {
            for d in self.decoders.iter().flat_map(|d| d.decodings()) {
                if let Some(Err(message)) = d.try_get() {
                    return Error::Corrupt(message.to_string());
                }
            }
        }
        e
    }

    /// Waits until every seed revision of the restore is decoded whole (it no longer reads
    /// the store).
    pub(crate) fn wait_decodings(&self) -> Result<(), Error> {
        for d in self.decoders.iter().flat_map(|d| d.decodings()) {
            d.wait().map_err(|e| Error::Corrupt(e.to_string()))?;
        }
        Ok(())
    }

    /// Decodes the given base revisions of `replicas` whole (they no longer read the store).
    pub(crate) fn decode_bases(&self, replicas: &[ReplicaId]) -> Result<(), Error> {
        let Some(base) = &self.base else {
            return Ok(());
        };
        for id in replicas {
            if let Some(d) = &base.rows[id.index()] {
                d.wait().map_err(|e| Error::Corrupt(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The base's restore point and which replicas are based, for a resumed dataflow.
    pub(crate) fn base(&self) -> Option<(u64, &[bool])> {
        self.base.as_ref().map(|b| (b.as_of, b.based.as_slice()))
    }

    /// Whether reading `replica` (or a view of it) needs its base revision, not yet given.
    pub(crate) fn needs_base(&self, replica: ReplicaId) -> bool {
        self.base
            .as_ref()
            .is_some_and(|b| b.based[replica.index()] && b.rows[replica.index()].is_none())
    }

    /// Gives `replica`'s base revision (sorted by record).
    pub(crate) fn set_base(&mut self, replica: ReplicaId, rows: Arc<Decoding<R>>) {
        if let Some(b) = self.base.as_mut() {
            b.rows[replica.index()] = Some(rows);
        }
    }

    pub(crate) fn frontiers(&mut self) -> Result<Vec<u64>, Error> {
        self.workers.frontiers()
    }

    /// Stops the workers, then the threads decoding the seeds; dropping the controller then
    /// abandons the seeds left undecoded (see [`Decoders`]).
    pub(crate) fn stop_threads(&mut self) -> Result<(), Error> {
        let stopped = self.workers.stop();
        if let Some(d) = self.decoders.as_mut() {
            d.stop();
        }
        stopped
    }

    pub(crate) fn stop(mut self) -> Result<(), Error> {
        self.stop_threads()
    }
}
