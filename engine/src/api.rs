//! The types of the embedded API that are not the runtime itself: its configuration, source
//! deltas going in, deltas and subscriptions coming out, frontiers, status and rebuild outcomes.

use crossbeam_channel::{Receiver, Sender, unbounded};
use prr_persist::StoreStats;

use crate::codec::CHUNK_RECORDS;
use crate::description::ReplicaId;
use crate::error::Error;
use crate::revision::Revision;
use crate::seq::Seq;

/// How to run a `Runtime`.
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
    /// Whether a restore decodes its seed revisions ahead, in the background (see
    /// [`RuntimeConfig::with_decode_ahead`]).
    pub(crate) decode_ahead: bool,
    /// Tests: the threads that decode a restore's seeds wait until stopped.
    pub(crate) pause_decoding: bool,
    /// How the records of a store of an older format are rewritten when it is opened.
    pub(crate) record_upgrade: Option<RecordUpgrader>,
}

/// A store's record upgrade, as a [`RuntimeConfig`] holds it.
#[derive(Clone)]
pub(crate) struct RecordUpgrader(
    pub(crate) std::sync::Arc<dyn prr_persist::RecordUpgrade + Send + Sync>,
);

impl std::fmt::Debug for RecordUpgrader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordUpgrade")
    }
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
            chunk_records: CHUNK_RECORDS,
            decode_ahead: true,
            pause_decoding: false,
            record_upgrade: None,
        }
    }
}

impl RuntimeConfig {
    /// The most worker threads per core that [`Self::validate`] accepts.
    pub const WORKERS_PER_CORE: usize = 4;

    /// The most records per revision chunk that [`Self::validate`] accepts: a chunk is read
    /// and decoded whole by a lookup, so one of millions of records would make every lookup
    /// slow and every decoding thread hold it all.
    pub const MAX_CHUNK_RECORDS: usize = 1 << 20;

    /// One worker, no store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of timely worker threads: at least 1 and at most [`Self::max_workers`]
    /// (at most the number of cores is wise). [`Self::validate`] (and so `Runtime::start`)
    /// refuses a number out of that range.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The most worker threads a runtime starts on this machine: [`Self::WORKERS_PER_CORE`] per
    /// core (`std::thread::available_parallelism`, 1 if unknown). More threads than cores only
    /// add scheduling and exchange costs; far more (hundreds, thousands) make every step
    /// crawl and every worker's arrangements take memory.
    pub fn max_workers() -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.saturating_mul(Self::WORKERS_PER_CORE)
    }

    /// Checks every setting: `workers` in `1..=max_workers()`, `keep_revisions` at least 1,
    /// `chunk_records` in `1..=MAX_CHUNK_RECORDS`, `revision_every` not `Some(0)`.
    /// `Runtime::start` calls it first, before it opens anything; an error names the setting,
    /// the value and the bound.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        let max = Self::max_workers();
        if self.workers == 0 {
            return bad("workers is 0; a runtime needs at least 1 worker thread".into());
        }
        if self.workers > max {
            return bad(format!(
                "workers is {}, more than the limit of {max} on this machine ({} per core, {} cores)",
                self.workers,
                Self::WORKERS_PER_CORE,
                max / Self::WORKERS_PER_CORE
            ));
        }
        if self.keep_revisions == 0 {
            return bad("keep_revisions is 0; at least the newest revision is kept".into());
        }
        if self.chunk_records == 0 || self.chunk_records > Self::MAX_CHUNK_RECORDS {
            return bad(format!(
                "chunk_records is {}, outside 1..={}",
                self.chunk_records,
                Self::MAX_CHUNK_RECORDS
            ));
        }
        if self.revision_every == Some(0) {
            return bad(
                "revision_every is Some(0); use None to capture revisions only on demand".into(),
            );
        }
        Ok(())
    }

    /// Whether a restore resumes the replicas that can be resumed from their revisions (the
    /// default) instead of recomputing every derived replica from the source revisions (see
    /// [`crate::Seeds`]). Both give the same contents; turning it off is for comparisons.
    pub fn with_resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// The most records a revision chunk holds (default 1,024; at least 1, at most
    /// [`Self::MAX_CHUNK_RECORDS`]). A restore looks
    /// records up by chunk and decodes chunks in parallel; small chunks are for tests that
    /// need revisions of several chunks.
    pub fn with_chunk_records(mut self, n: usize) -> Self {
        self.chunk_records = n;
        self
    }

    /// Upgrades a store of an older format when it is opened, its records rewritten by
    /// `records` (see [`crate::record_upgrade`]). Without it, such a store is refused.
    pub fn with_record_upgrade(
        mut self,
        records: std::sync::Arc<dyn prr_persist::RecordUpgrade + Send + Sync>,
    ) -> Self {
        self.record_upgrade = Some(RecordUpgrader(records));
        self
    }

    /// Whether a record upgrade is set (see [`Self::with_record_upgrade`]).
    pub fn has_record_upgrade(&self) -> bool {
        self.record_upgrade.is_some()
    }

    /// Opens the store at `path` for this configuration: read-only or not, upgrading an
    /// older format if it has a record upgrade.
    pub(crate) fn open_store(
        &self,
        path: &std::path::Path,
        read_only: bool,
    ) -> Result<prr_persist::Store, prr_persist::Error> {
        use prr_persist::Store;
        match (&self.record_upgrade, read_only) {
            (Some(u), true) => Store::open_read_only_upgrading(path, u.0.as_ref()),
            (Some(u), false) => Store::open_upgrading(path, u.0.as_ref()),
            (None, true) => Store::open_read_only(path),
            (None, false) => Store::open(path),
        }
    }

    /// Persists the runtime in the redb store at `path` (created if missing).
    pub fn with_store(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.store = Some(path.into());
        self
    }

    /// Captures revisions after every `n` source deltas (`None`: only on demand and at
    /// shutdown; `Some(0)` is refused).
    pub fn with_revision_every(mut self, n: Option<u64>) -> Self {
        self.revision_every = n;
        self
    }

    /// After how many source deltas revisions are captured (see
    /// [`RuntimeConfig::with_revision_every`]).
    pub fn revision_every(&self) -> Option<u64> {
        self.revision_every
    }

    /// How many revisions of each replica to keep (the newest, plus older ones for time
    /// travel). At least 1.
    pub fn with_keep_revisions(mut self, n: usize) -> Self {
        self.keep_revisions = n;
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
    /// `Runtime::collect_garbage` with the log cuts it).
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

    /// Whether a restore decodes the revisions its resumed replicas read (their seeds) ahead,
    /// on threads of its own, while the dataflow starts (the default: a long-running process
    /// has them ready by the time a change needs them whole). Without it, a seed is read a
    /// chunk at a time by the lookups that need it, and decoded whole (on as many threads as
    /// there are cores) only by its first reader of all of it: a command that applies a few
    /// changes and exits decodes only what they touch.
    pub fn with_decode_ahead(mut self, yes: bool) -> Self {
        self.decode_ahead = yes;
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

/// A replica's contents as a shared base and the changes beside it (`Runtime::read_split`):
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

/// How many records one replica's delta at one `Seq` added and removed, counting multiplicity:
/// what a [`CountSubscription`] delivers in place of the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaCount {
    /// The source delta it derives from.
    pub seq: Seq,
    /// The replica that issued it.
    pub replica: ReplicaId,
    /// Why it was published.
    pub kind: DeltaKind,
    /// The sum of the delta's positive diffs.
    pub added: u64,
    /// The sum of the delta's negative diffs, negated.
    pub removed: u64,
}

impl DeltaCount {
    /// The count of `delta`.
    pub fn of<R>(delta: &Delta<R>) -> DeltaCount {
        let (added, removed) = added_removed(delta.updates.iter().map(|(_, d)| *d));
        DeltaCount {
            seq: delta.seq,
            replica: delta.replica,
            kind: delta.kind,
            added,
            removed,
        }
    }
}

/// The sums of the positive diffs and of the negative diffs (negated) of `diffs`.
pub(crate) fn added_removed(diffs: impl Iterator<Item = isize>) -> (u64, u64) {
    diffs.fold((0, 0), |(a, r), d| {
        if d > 0 {
            (a + d.unsigned_abs() as u64, r)
        } else {
            (a, r + d.unsigned_abs() as u64)
        }
    })
}

/// A subscription to how many records one replica's deltas add and remove, delivered in `Seq`
/// order once final. The records themselves are not copied out of the dataflow: following a
/// large replica this way costs next to nothing (see `Runtime::subscribe_counts`).
#[derive(Debug)]
pub struct CountSubscription {
    rx: Receiver<DeltaCount>,
}

impl CountSubscription {
    /// The counts delivered so far and not yet taken.
    pub fn try_iter(&self) -> impl Iterator<Item = DeltaCount> + '_ {
        self.rx.try_iter()
    }

    /// Waits for the next count; `None` once the runtime is gone.
    pub fn recv(&self) -> Option<DeltaCount> {
        self.rx.recv().ok()
    }
}

/// A subscriber of one replica: to its deltas, or to their counts only.
#[derive(Debug)]
pub(crate) enum Subscriber<R> {
    Deltas(Sender<Delta<R>>),
    Counts(Sender<DeltaCount>),
}

impl<R> Subscriber<R> {
    /// A subscriber to deltas and its subscription.
    pub(crate) fn deltas() -> (Subscriber<R>, Subscription<R>) {
        let (tx, rx) = unbounded();
        (Subscriber::Deltas(tx), Subscription { rx })
    }

    /// A subscriber to counts and its subscription.
    pub(crate) fn counts() -> (Subscriber<R>, CountSubscription) {
        let (tx, rx) = unbounded();
        (Subscriber::Counts(tx), CountSubscription { rx })
    }

    /// Whether it follows the records, not only their counts.
    pub(crate) fn wants_records(&self) -> bool {
        matches!(self, Subscriber::Deltas(_))
    }
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

/// Status of a runtime, for `prr status`.
#[derive(Clone, Debug)]
pub struct Status {
    /// The last committed `Seq` (0 for an empty store).
    pub seq: Seq,
    /// Per replica: its frontier, its record count, its newest revision, its logic version.
    pub replicas: Vec<ReplicaStatus>,
    /// Store sizes, when persisted.
    pub store: Option<StoreStats>,
    /// The quarantined source deltas (see `Runtime::poisoned`).
    pub poisoned: Vec<Seq>,
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

/// What `Runtime::rebuild` found for one stored revision.
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
    /// Why the stored revision could not be read (it fails its checksums or does not decode),
    /// if so: then `missing` counts every record of the recomputation.
    pub damage: Option<String>,
}
