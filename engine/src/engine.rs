//! The in-memory engine under a runtime (workers, feeding, stepping, delivery of deltas) and the
//! types of the embedded API.

use std::collections::BTreeMap;

use foldhash::HashMap;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::description::{Dag, JoinView, Record, ReplicaId};
use crate::resume::{Decoders, Decoding, ResumePlan, Revision};
use crate::worker::SourceUpdate;
use crate::{Error, Seq};

mod workers;

pub(crate) use workers::Workers;

/// How to run a [`crate::Runtime`].
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub(crate) workers: usize,
    pub(crate) store: Option<std::path::PathBuf>,
    pub(crate) revision_every: Option<u64>,
    pub(crate) keep_revisions: usize,
    pub(crate) revision_on_shutdown: bool,
    pub(crate) log_gc: bool,
    pub(crate) read_only: bool,
    pub(crate) resume: bool,
    pub(crate) chunk_records: usize,
    /// Tests: the threads that decode a restore's seeds wait until stopped.
    #[cfg(test)]
    pub(crate) pause_decoding: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            workers: 1,
            store: None,
            revision_every: None,
            keep_revisions: 2,
            revision_on_shutdown: true,
            log_gc: false,
            read_only: false,
            resume: true,
            chunk_records: crate::codec::CHUNK_RECORDS,
            #[cfg(test)]
            pause_decoding: false,
        }
    }
}

impl RuntimeConfig {
    /// One worker, no store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of timely worker threads (at least 1; at most the number of cores is wise).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Whether a restore resumes the replicas that can be resumed from their revisions (the
    /// default) instead of recomputing every derived replica from the source revisions (see
    /// [`crate::Seeds`]). Both give the same contents; turning it off is for comparisons.
    pub fn with_resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// The most records a revision chunk holds (default 8,192; at least 1). A restore looks
    /// records up by chunk and decodes chunks in parallel; small chunks are for tests that
    /// need revisions of several chunks.
    pub fn with_chunk_records(mut self, n: usize) -> Self {
        self.chunk_records = n.max(1);
        self
    }

    /// Persists the runtime in the redb store at `path` (created if missing).
    pub fn with_store(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.store = Some(path.into());
        self
    }

    /// Captures revisions after every `n` source deltas (`None`: only on demand and at
    /// shutdown).
    pub fn with_revision_every(mut self, n: Option<u64>) -> Self {
        self.revision_every = n.filter(|n| *n > 0);
        self
    }

    /// How many revisions of each replica to keep (the newest, plus older ones for time
    /// travel). At least 1.
    pub fn with_keep_revisions(mut self, n: usize) -> Self {
        self.keep_revisions = n.max(1);
        self
    }

    /// Whether a clean shutdown captures revisions (default: yes).
    pub fn with_revision_on_shutdown(mut self, yes: bool) -> Self {
        self.revision_on_shutdown = yes;
        self
    }

    /// Whether the garbage collection after each revision capture also deletes the source log
    /// up to the oldest retained restore point (default: no; the log then keeps the whole
    /// history for `deltas` and time travel, and only an explicit
    /// [`crate::Runtime::collect_garbage`] with the log cuts it).
    pub fn with_log_gc(mut self, yes: bool) -> Self {
        self.log_gc = yes;
        self
    }

    /// Opens the store read-only: the file is never changed (no revision capture, no garbage
    /// collection); pushing fails. For commands that only read.
    pub fn with_read_only(mut self, yes: bool) -> Self {
        self.read_only = yes;
        self
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.workers
    }
}

/// A batch of updates to source replicas: one atomic source delta.
#[derive(Clone, Debug)]
pub struct SourceDelta<R> {
    pub(crate) updates: Vec<(ReplicaId, R, isize)>,
}

impl<R> Default for SourceDelta<R> {
    fn default() -> Self {
        SourceDelta {
            updates: Vec::new(),
        }
    }
}

impl<R> SourceDelta<R> {
    /// An empty source delta.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `record` to source replica `replica`.
    pub fn insert(&mut self, replica: ReplicaId, record: R) {
        self.updates.push((replica, record, 1));
    }

    /// Removes `record` from source replica `replica`.
    pub fn remove(&mut self, replica: ReplicaId, record: R) {
        self.updates.push((replica, record, -1));
    }

    /// Adds `diff` copies of `record` (negative: removes).
    pub fn update(&mut self, replica: ReplicaId, record: R, diff: isize) {
        self.updates.push((replica, record, diff));
    }

    /// The number of updates.
    pub fn len(&self) -> usize {
        self.updates.len()
    }

    /// Whether there are no updates.
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }

    /// The updates.
    pub fn updates(&self) -> &[(ReplicaId, R, isize)] {
        &self.updates
    }
}

/// Why a delta was published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaKind {
    /// The change caused by the source delta at `seq`.
    Source,
    /// The difference between a stored revision (as of `seq`) and its recomputation by a new
    /// logic version.
    Rebuild,
}

/// The consolidated change of one replica at one `Seq`, with its provenance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta<R> {
    /// The source delta it derives from.
    pub seq: Seq,
    /// The replica that issued it.
    pub replica: ReplicaId,
    /// Why it was published.
    pub kind: DeltaKind,
    /// `(record, diff)`, sorted by record, no zero diffs.
    pub updates: Vec<(R, isize)>,
}

/// A replica's contents as a shared base and the changes beside it ([`crate::Runtime::read_split`]):
/// the contents are `base + changes`.
#[derive(Clone, Debug)]
pub struct Split<R> {
    /// The revision the running dataflow was restored from (empty when it holds everything),
    /// shared with the runtime.
    pub base: Revision<R>,
    /// The changes since the base (everything, when the base is empty), sorted by record, no
    /// zero diffs.
    pub changes: Vec<(R, isize)>,
}

/// A subscription to one replica's deltas, delivered in `Seq` order once final.
#[derive(Debug)]
pub struct Subscription<R> {
    rx: Receiver<Delta<R>>,
}

impl<R> Subscription<R> {
    /// The deltas delivered so far and not yet taken.
    pub fn try_iter(&self) -> impl Iterator<Item = Delta<R>> + '_ {
        self.rx.try_iter()
    }

    /// Waits for the next delta; `None` once the runtime is gone.
    pub fn recv(&self) -> Option<Delta<R>> {
        self.rx.recv().ok()
    }
}

/// Deltas captured from the workers and not yet delivered: by `(seq, replica)`.
type Pending<R> = BTreeMap<(u64, u32), Vec<(R, isize)>>;

/// The state a subscribed view keeps to derive its deltas: both inputs' contents by join key.
struct ViewState<R> {
    left: HashMap<u64, BTreeMap<R, isize>>,
    right: HashMap<u64, BTreeMap<R, isize>>,
}

impl<R: Record> ViewState<R> {
    fn new(view: &JoinView<R>, left: Vec<(R, isize)>, right: Vec<(R, isize)>) -> Self {
        let mut state = ViewState {
            left: HashMap::default(),
            right: HashMap::default(),
        };
        apply(&mut state.left, view.left_key, &left);
        apply(&mut state.right, view.right_key, &right);
        state
    }

    /// Applies the inputs' deltas at one `Seq` and returns the view's delta:
    /// `dL ⋈ R + (L + dL) ⋈ dR`.
    fn step(
        &mut self,
        view: &JoinView<R>,
        d_left: &[(R, isize)],
        d_right: &[(R, isize)],
    ) -> Vec<(R, isize)> {
        let mut out = Vec::new();
        for (l, dl) in d_left {
            let Some(k) = (view.left_key)(l) else {
                continue;
            };
            for (r, dr) in self.right.get(&k).into_iter().flatten() {
                if let Some(v) = (view.combine)(l, r) {
                    out.push((v, dl * dr));
                }
            }
        }
        apply(&mut self.left, view.left_key, d_left);
        for (r, dr) in d_right {
            let Some(k) = (view.right_key)(r) else {
                continue;
            };
            for (l, dl) in self.left.get(&k).into_iter().flatten() {
                if let Some(v) = (view.combine)(l, r) {
                    out.push((v, dl * dr));
                }
            }
        }
        apply(&mut self.right, view.right_key, d_right);
        consolidate(out)
    }
}

fn apply<R: Record>(
    side: &mut HashMap<u64, BTreeMap<R, isize>>,
    key: fn(&R) -> Option<u64>,
    updates: &[(R, isize)],
) {
    for (r, d) in updates {
        let Some(k) = key(r) else { continue };
        let group = side.entry(k).or_default();
        let count = group.entry(r.clone()).or_insert(0);
        *count += d;
        if *count == 0 {
            group.remove(r);
            if group.is_empty() {
                side.remove(&k);
            }
        }
    }
}

/// The revisions at the restore point of the replicas a restore left *based* (see
/// [`crate::Seeds`]): the dataflow holds only their deltas after `as_of`, and reads add their
/// revision. The runtime decodes a revision when first needed ([`Engine::needs_base`]).
pub(crate) struct Base<R> {
    pub(crate) as_of: u64,
    pub(crate) based: Vec<bool>,
    pub(crate) rows: Vec<Option<Arc<Decoding<R>>>>,
}

/// The in-memory engine under a [`crate::Runtime`]: the workers and the delivery of deltas.
pub(crate) struct Engine<R: Record> {
    dag: Arc<Dag<R>>,
    /// Per view with subscribers: the state its deltas are derived from.
    views: Vec<Option<ViewState<R>>>,
    pub(crate) workers: Workers<R>,
    /// The threads that decode a resumed dataflow's seeds (see [`Engine::why`]). Declared
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
    subscribers: Vec<Vec<Sender<Delta<R>>>>,
}

impl<R: Record> Engine<R> {
    pub(crate) fn start(dag: Arc<Dag<R>>, workers: usize) -> Result<Self, Error> {
        Self::start_resumed(dag, workers, None)
    }

    /// Starts an engine whose dataflow resumes the replicas of `plan` (see [`ResumePlan`]).
    pub(crate) fn start_resumed(
        dag: Arc<Dag<R>>,
        workers: usize,
        resume: Option<(Arc<ResumePlan<R>>, Decoders<R>)>,
    ) -> Result<Self, Error> {
        let n = dag.len();
        let (plan, decoders) = resume.unzip();
        Ok(Engine {
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
        for (replica, rows) in self.workers.captured.try_iter() {
            for (r, t, d) in rows {
                self.pending.entry((t, replica)).or_default().push((r, d));
            }
        }
        // One `Seq` at a time: a view's delta at `t` needs both inputs' deltas at `t`.
        while let Some((&(t, _), _)) = self.pending.first_key_value() {
            if t >= self.synced_upper {
                break;
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

    pub(crate) fn publish(&mut self, delta: Delta<R>) {
        let subs = &mut self.subscribers[delta.replica.index()];
        subs.retain(|s| s.send(delta.clone()).is_ok());
    }

    pub(crate) fn subscribe(&mut self, replica: ReplicaId) -> Result<Subscription<R>, Error> {
        // Everything fed so far is final first, so the subscription sees whole deltas only.
        self.step_until(self.fed)?;
        if self.dag.replica(replica).is_view() {
            if self.views[replica.index()].is_none() {
                let inputs = self.dag.inputs_of(replica).to_vec();
                for i in &inputs {
                    self.workers.set_capture(*i);
                }
                let left = self.contents(inputs[0], None)?;
                let right = self.contents(inputs[1], None)?;
                let view = self.dag.replica(replica).view().expect("a view");
                self.views[replica.index()] = Some(ViewState::new(view, left, right));
            }
        } else {
            self.workers.set_capture(replica);
        }
        let (tx, rx) = unbounded();
        self.subscribers[replica.index()].push(tx);
        Ok(Subscription { rx })
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
    /// If `replica` is a view, or is based and its base was not given ([`Engine::needs_base`]).
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
    /// If it is based and its base was not given ([`Engine::needs_base`]).
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
        if matches!(e, Error::WorkerFailed) {
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

    /// Stops the workers, then the threads decoding the seeds; dropping the engine then
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

/// Sorts updates and sums the diffs of equal records, dropping zeros.
pub(crate) fn consolidate<R: Ord>(mut updates: Vec<(R, isize)>) -> Vec<(R, isize)> {
    updates.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(R, isize)> = Vec::with_capacity(updates.len());
    for (r, d) in updates {
        match out.last_mut() {
            Some((last, ld)) if *last == r => *ld += d,
            _ => out.push((r, d)),
        }
    }
    out.retain(|(_, d)| *d != 0);
    out
}

/// The difference `new - old` of two consolidated, sorted contents.
pub(crate) fn difference<R: Ord + Clone>(
    old: &[(R, isize)],
    new: &[(R, isize)],
) -> Vec<(R, isize)> {
    let mut all: Vec<(R, isize)> = new.to_vec();
    all.extend(old.iter().map(|(r, d)| (r.clone(), -d)));
    consolidate(all)
}

/// A replica's frontier: the smallest `Seq` at which it may still change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontier {
    /// The replica.
    pub replica: ReplicaId,
    /// Its name.
    pub name: String,
    /// Everything below this `Seq` is final.
    pub frontier: Seq,
}

/// The consolidated sum of two collections sorted by record: a base and a delta.
fn merge_sorted<'a, R: Record>(
    base: impl Iterator<Item = &'a (R, isize)>,
    delta: Vec<(R, isize)>,
) -> Vec<(R, isize)> {
    let mut out = Vec::with_capacity(delta.len());
    let mut delta = delta.into_iter().peekable();
    for (r, d) in base {
        while let Some(x) = delta.next_if(|(x, _)| x < r) {
            if x.1 != 0 {
                out.push(x);
            }
        }
        let mut sum = *d;
        if let Some((_, dd)) = delta.next_if(|(x, _)| x == r) {
            sum += dd;
        }
        if sum != 0 {
            out.push((r.clone(), sum));
        }
    }
    out.extend(delta.filter(|(_, d)| *d != 0));
    out
}
