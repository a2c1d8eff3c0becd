//! The core thread: the one owner of the [`Matrix`]. It serves commands from a channel, one at
//! a time, and answers each through a oneshot channel; reads wait behind at most the one
//! command in hand (an ingest step). Every `revision_interval` after a change it captures
//! revisions; when every sender is gone it answers what is queued, captures revisions and
//! stops the runtime.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prr_engine::{Error, Seq, Status, Subscription};
use prr_replicas::{
    Action, IntentKey, Intents, Matrix, NewOutcome, Rec, Received, SourceItem, Work, explain_acl,
    explain_user, poisoned_json,
};
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use crate::door::Door;
use crate::history::DeltaHistory;
use crate::metrics::Metrics;

/// A command to the core, with the channel its answer goes to.
pub(crate) enum Command {
    /// One source delta from `POST /v1/ingest`.
    Ingest {
        items: Vec<SourceItem>,
        reply: oneshot::Sender<Result<Seq, Error>>,
    },
    /// One appservice transaction's kept events.
    Transaction {
        txn_id: String,
        events: Vec<Received>,
        reply: oneshot::Sender<Result<Option<Seq>, Error>>,
    },
    /// Catch-up starts fetching a room's state: from now on, the keys that transactions
    /// change there are kept from being overwritten by the fetched state.
    FetchStarted { room_id: String },
    /// A room's state fetched from the homeserver (catch-up, resync): authoritative.
    RoomState {
        room_id: String,
        events: Vec<Received>,
        reply: oneshot::Sender<Result<Option<Seq>, Error>>,
    },
    /// What one `/sync` response brought (bot mode), with the source's new position.
    Sync {
        events: Vec<Received>,
        extra: Vec<SourceItem>,
        source: String,
        position: String,
        reply: oneshot::Sender<Result<Option<Seq>, Error>>,
    },
    /// Where a homeserver source is.
    SourcePosition {
        source: String,
        reply: oneshot::Sender<Result<Option<String>, Error>>,
    },
    /// `prr show`.
    Show {
        replica: String,
        partition: Option<String>,
        as_of: Option<Seq>,
        reply: oneshot::Sender<Result<Vec<Value>, Error>>,
    },
    /// `prr show poisoned`.
    Poisoned { reply: oneshot::Sender<Vec<Value>> },
    /// `prr deltas`.
    Deltas {
        replica: String,
        since: Seq,
        reply: oneshot::Sender<Result<Vec<Value>, Error>>,
    },
    /// `prr preview`: the deltas one source delta would cause, stored nowhere.
    Preview {
        items: Vec<SourceItem>,
        emit: Vec<String>,
        reply: oneshot::Sender<Result<Vec<Value>, Error>>,
    },
    /// `prr explain`: a user (`user`) or the server ACL (`user` is `None`).
    Explain {
        instance: String,
        user: Option<String>,
        room: Option<String>,
        reply: oneshot::Sender<Result<Value, Error>>,
    },
    /// An instance's intents for the effect handlers.
    Intents {
        instance: String,
        only: Option<Action>,
        reply: oneshot::Sender<Result<Intents, Error>>,
    },
    /// Whether an intent is still pending, the same, when its turn comes.
    StillPending {
        work: Box<Work>,
        reply: oneshot::Sender<Result<bool, Error>>,
    },
    /// Outcomes of the effect handlers, one source delta.
    Outcomes {
        outcomes: Vec<NewOutcome>,
        reply: oneshot::Sender<Result<Option<Seq>, Error>>,
    },
    /// `prr status`, with the instances and the sources.
    Status {
        reply: oneshot::Sender<Result<Report, Error>>,
    },
}

/// What `GET /v1/status` and `/metrics` are made of.
pub(crate) struct Report {
    pub status: Status,
    /// The instance IDs of the `instances` replica, sorted.
    pub instances: Vec<String>,
    pub sources: Sources,
}

/// The position and state of each source.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sources {
    /// `POST /v1/ingest`: the last seq it added and how many deltas.
    pub api_last_seq: Option<u64>,
    pub api_deltas: u64,
    /// The last appservice transaction: its id, outcome, seq and time (Unix ms).
    pub appservice: Option<LastTransaction>,
    pub appservice_transactions: u64,
    /// The last storage failure of a write, while writes fail: its message and time.
    pub storage_fault: Option<(String, u64)>,
}

/// The last appservice transaction the core handled.
#[derive(Clone, Debug)]
pub(crate) struct LastTransaction {
    pub txn_id: String,
    /// `applied`, `duplicate` or `failed`.
    pub outcome: &'static str,
    pub seq: Option<u64>,
    pub unix_ms: u64,
}

fn now_ms() -> u64 {
    (SystemTime::now().duration_since(UNIX_EPOCH)).map_or(0, |d| d.as_millis() as u64)
}

/// The core's state besides the runtime.
pub(crate) struct Core {
    m: Matrix,
    metrics: std::sync::Arc<Metrics>,
    seq_tx: watch::Sender<u64>,
    sources: Sources,
    revision_interval: Duration,
    /// Capture revisions after this many source deltas too.
    revision_every: Option<u64>,
    /// The last seq when the last capture started.
    captured_seq: u64,
    /// Whether source deltas came since the last revision capture.
    dirty: bool,
    last_capture: Instant,
    /// Whether a revision capture runs in the background.
    capturing: bool,
    /// Rooms whose state catch-up is fetching, with the keys `(type, state_key)` that
    /// transactions changed since the fetch began: the fetched state may be older there.
    fetching: HashMap<String, HashSet<(String, String)>>,
    /// The index of the checks at the door, kept current after each commit.
    door: Door,
    /// For the effect handlers, once they ask: `pending`'s deltas, and per instance the keys
    /// that entered `pending` since the handlers' last read of it (an intent that comes and
    /// goes between two reads is withdrawn, not forgotten).
    appeared: Option<(Subscription<Rec>, Appeared)>,
    /// Every replica's recent deltas, for `deltas?since=` without a replay (`None` when it
    /// could not subscribe: the replay answers).
    history: Option<DeltaHistory>,
    /// `--dedup-retention`: how long `source_events` keeps an event received, and when the
    /// core started and last pruned it (see [`Core::prune_due`]).
    dedup_retention: Option<Duration>,
    started: Instant,
    last_prune: Instant,
    /// `--compact-every`: how often the core compacts in process, and when last.
    compact_every: Option<Duration>,
    last_compact: Instant,
}

/// Instance -> the keys that entered `pending` since the handlers last read its intents.
type Appeared = HashMap<String, Vec<IntentKey>>;

impl Core {
    pub(crate) fn new(
        m: Matrix,
        metrics: std::sync::Arc<Metrics>,
        seq_tx: watch::Sender<u64>,
        (revision_interval, revision_every): (Duration, Option<u64>),
        door: Door,
    ) -> Self {
        let mut m = m;
        let captured_seq = m.runtime().last_seq().0;
        Core {
            m,
            metrics,
            seq_tx,
            sources: Sources::default(),
            revision_interval,
            revision_every,
            captured_seq,
            dirty: false,
            last_capture: Instant::now(),
            capturing: false,
            fetching: HashMap::new(),
            door,
            appeared: None,
            history: None,
            dedup_retention: None,
            started: Instant::now(),
            last_prune: Instant::now(),
            compact_every: None,
            last_compact: Instant::now(),
        }
    }

    /// Compacts in process every `every` (see [`Core::compact`]).
    pub(crate) fn with_compact_every(mut self, every: Duration) -> Self {
        self.compact_every = Some(every);
        self
    }

    /// How long until compacting in process is due (zero: now), if ever.
    fn compact_due(&self) -> Option<Duration> {
        Some((self.compact_every?).saturating_sub(self.last_compact.elapsed()))
    }

    /// Compacts in process (`Matrix::compact_in_process`): the source log before the oldest
    /// retained revision goes, as with `prr compact`, and so do the strings that nothing
    /// retained uses any more (replaced events' contents, pruned event IDs), from the store
    /// and from memory. Revisions are captured and the dataflow restarts from them, the
    /// commands waiting meanwhile (the checks at the door answer from their own index). What holds ids read from the replicas is read first
    /// (the door's and the handlers' deltas) or dropped (the delta history).
    fn compact(&mut self) {
        self.last_compact = Instant::now();
        self.capture_ended(true);
        self.door.refresh(&mut self.m);
        self.absorb_appeared();
        self.history = None;
        let seq = self.m.runtime().last_seq().0;
        match self.m.compact_in_process() {
            Ok(collected) => {
                tracing::info!(
                    collected,
                    seconds = self.last_compact.elapsed().as_secs_f64(),
                    "compacted: log and strings collected"
                );
                // Revisions were captured.
                self.dirty = self.m.runtime().last_seq().0 != seq;
                self.captured_seq = seq;
                self.last_capture = Instant::now();
            }
            Err(e) => tracing::warn!(error = %e, "compacting failed"),
        }
    }

    /// Prunes `source_events` of the events received more than `keep` ago (see
    /// `Matrix::prune_source_events`), once the service has run that long: a homeserver
    /// retries a transaction left unanswered by a crash within minutes of the restart, so an
    /// event received before a long outage stays deduplicated through the retries.
    pub(crate) fn with_dedup_retention(mut self, keep: Duration) -> Self {
        self.dedup_retention = Some(keep);
        self
    }

    /// How long until a pruning of `source_events` is due (zero: now), if ever: once the
    /// service has run the retention, then every quarter of it (between 1 s and 1 h).
    fn prune_due(&self) -> Option<Duration> {
        let keep = self.dedup_retention?;
        let every = (keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        let after_start = keep.saturating_sub(self.started.elapsed());
        let after_last = every.saturating_sub(self.last_prune.elapsed());
        Some(after_start.max(after_last))
    }

    /// Prunes `source_events` (a source delta when anything leaves it).
    fn prune(&mut self) {
        let Some(keep) = self.dedup_retention else {
            return;
        };
        self.last_prune = Instant::now();
        let before = (now_ms() / 1000).saturating_sub(keep.as_secs());
        let got = self.m.prune_source_events(before);
        match self.committed(got, self.last_prune) {
            Ok(Some(seq)) => tracing::info!(seq = seq.0, "source_events pruned"),
            Ok(None) => {}
            // `committed` logged it; the next pruning tries again.
            Err(_) => {}
        }
    }

    /// Serves `rx` until every sender is dropped, then captures revisions and stops the
    /// runtime. Every `revision_interval` after a change, a capture starts in the background
    /// (see `Runtime::start_capture`): commands go on while it encodes and writes.
    pub(crate) fn run(mut self, rx: Receiver<Command>) -> Result<(), Error> {
        loop {
            let mut wait = self
                .revision_interval
                .saturating_sub(self.last_capture.elapsed());
            if self.capturing {
                // Polled to log its end and collect garbage after it.
                wait = wait.min(Duration::from_millis(50));
            }
            for due in [self.prune_due(), self.compact_due()].into_iter().flatten() {
                wait = wait.min(due);
            }
            match rx.recv_timeout(wait.max(Duration::from_millis(10))) {
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.capture_ended(false);
            if self.prune_due() == Some(Duration::ZERO) {
                self.prune();
            }
            if self.compact_due() == Some(Duration::ZERO) {
                self.compact();
            }
            if self.dirty && !self.capturing && self.capture_due() {
                self.start_capture();
            }
        }
        self.capture_ended(true);
        tracing::info!("capturing revisions and stopping the runtime");
        self.m.shutdown()
    }

    /// Whether a capture is due: `revision_interval` since the last, or `revision_every`
    /// deltas.
    fn capture_due(&mut self) -> bool {
        let deltas = self.m.runtime().last_seq().0 - self.captured_seq;
        self.last_capture.elapsed() >= self.revision_interval
            || self.revision_every.is_some_and(|n| deltas >= n)
    }

    /// Starts a revision capture in the background.
    fn start_capture(&mut self) {
        self.last_capture = Instant::now();
        self.captured_seq = self.m.runtime().last_seq().0;
        // What comes from now on needs the next capture.
        self.dirty = false;
        match self.m.runtime().start_capture() {
            Ok(started) => self.capturing = started,
            Err(e) => {
                self.dirty = true;
                tracing::warn!(error = %e, "revision capture failed");
            }
        }
    }

    /// Logs how the capture in the background ended, once it did (waiting for it with
    /// `wait`). A failed one is retried at the next interval; nothing acknowledged depends
    /// on it.
    fn capture_ended(&mut self, wait: bool) {
        let Some(outcome) = self.m.runtime().finish_capture(wait) else {
            return;
        };
        self.capturing = false;
        match outcome {
            Ok(as_of) => tracing::info!(as_of = as_of.0, "revisions captured"),
            Err(e) => {
                self.dirty = true;
                tracing::warn!(error = %e, "revision capture failed");
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Ingest { items, reply } => {
                let events = items.len() as u64;
                let started = Instant::now();
                let got = self.m.ingest_many(&[items]).map(|seqs| seqs[0]);
                let got = self.committed(got.map(Some), started);
                if let Ok(Some(seq)) = &got {
                    self.sources.api_last_seq = Some(seq.0);
                    self.sources.api_deltas += 1;
                    self.metrics.source_delta("api", events);
                }
                let _ = reply.send(got.map(|s| s.expect("an ingest adds a delta")));
            }
            Command::Transaction {
                txn_id,
                events,
                reply,
            } => {
                let started = Instant::now();
                let n = events.len() as u64;
                if !self.fetching.is_empty() {
                    for e in &events {
                        if let Received::Valid(ev) = e
                            && let Some(keys) = self.fetching.get_mut(&ev.room_id)
                            && let Some(key) = &ev.state_key
                        {
                            keys.insert((ev.event_type.clone(), key.clone()));
                        }
                    }
                }
                let got = self.m.ingest_received(events);
                let got = self.committed(got, started);
                let (outcome, seq) = match &got {
                    Ok(Some(seq)) => {
                        self.metrics.source_delta("appservice", n);
                        ("applied", Some(seq.0))
                    }
                    Ok(None) => ("duplicate", None),
                    Err(_) => ("failed", None),
                };
                self.sources.appservice_transactions += 1;
                self.sources.appservice = Some(LastTransaction {
                    txn_id,
                    outcome,
                    seq,
                    unix_ms: now_ms(),
                });
                let _ = reply.send(got);
            }
            Command::FetchStarted { room_id } => {
                self.fetching.entry(room_id).or_default();
            }
            Command::RoomState {
                room_id,
                events,
                reply,
            } => {
                let started = Instant::now();
                let n = events.len() as u64;
                let newer = self.fetching.remove(&room_id).unwrap_or_default();
                let got = self.m.ingest_room_state(&room_id, events, &newer);
                let got = self.committed(got, started);
                if let Ok(Some(_)) = &got {
                    self.metrics.source_delta("catch_up", n);
                }
                let _ = reply.send(got);
            }
            Command::Sync {
                events,
                extra,
                source,
                position,
                reply,
            } => {
                let started = Instant::now();
                let n = (events.len() + extra.len()) as u64;
                let got = self.m.ingest_from_source(events, extra, &source, &position);
                let got = self.committed(got, started);
                if let Ok(Some(_)) = &got {
                    self.metrics.source_delta("sync", n);
                }
                let _ = reply.send(got);
            }
            Command::SourcePosition { source, reply } => {
                let _ = reply.send(self.m.source_position(&source));
            }
            Command::Show {
                replica,
                partition,
                as_of,
                reply,
            } => {
                let _ = reply.send(self.m.show(&replica, partition.as_deref(), as_of));
            }
            Command::Poisoned { reply } => {
                let rows = self.m.runtime().poisoned();
                let _ = reply.send(rows.iter().map(poisoned_json).collect());
            }
            Command::Deltas {
                replica,
                since,
                reply,
            } => {
                let _ = reply.send(self.deltas(&replica, since));
            }
            Command::Preview { items, emit, reply } => {
                let _ = reply.send(self.m.preview(&[items], &emit));
            }
            Command::Explain {
                instance,
                user,
                room,
                reply,
            } => {
                let got = match &user {
                    Some(u) => explain_user(&mut self.m, &instance, u, room.as_deref()),
                    None => explain_acl(&mut self.m, &instance),
                };
                let _ = reply.send(got);
            }
            Command::Status { reply } => {
                let _ = reply.send(self.report());
            }
            Command::Intents {
                instance,
                only,
                reply,
            } => {
                let appeared = self.appeared(&instance);
                let _ = reply.send(appeared.and_then(|a| self.m.intents(&instance, only, &a)));
            }
            Command::StillPending { work, reply } => {
                let _ = reply.send(self.m.still_pending(&work));
            }
            Command::Outcomes { outcomes, reply } => {
                let started = Instant::now();
                let n = outcomes.len() as u64;
                let got = self.m.record_outcomes(&outcomes);
                let got = self.committed(got, started);
                if let Ok(Some(_)) = &got {
                    self.metrics.source_delta("effects", n);
                    for o in &outcomes {
                        if o.status != prr_replicas::OutcomeStatus::Started {
                            self.metrics
                                .effect(o.key.action.as_str(), o.status.as_str());
                        }
                    }
                }
                let _ = reply.send(got);
            }
        }
    }

    /// `replica`'s deltas after `since`: none when `since` is the last seq or later, from the
    /// history when it holds them, else from a replay of the log.
    fn deltas(&mut self, replica: &str, since: Seq) -> Result<Vec<Value>, Error> {
        let id = self.m.runtime().replica(replica)?;
        if since >= self.m.runtime().last_seq() {
            return Ok(Vec::new());
        }
        if self.history.is_none() {
            match DeltaHistory::start(&mut self.m, crate::history::BUDGET) {
                Ok(h) => self.history = Some(h),
                Err(e) => tracing::warn!(error = %e, "no delta history: deltas are replayed"),
            }
        }
        if let Some(deltas) = self.history.as_mut().and_then(|h| h.since(id, since)) {
            return Ok(self.m.deltas_json(&deltas));
        }
        self.m.deltas(replica, since)
    }

    /// The keys that entered `pending` for `instance` since the last call (none at the first:
    /// the handlers read every pending intent then).
    fn appeared(&mut self, instance: &str) -> Result<Vec<IntentKey>, Error> {
        if self.appeared.is_none() {
            let id = self.m.runtime().replica("pending")?;
            let sub = self.m.runtime().subscribe(id)?;
            self.appeared = Some((sub, HashMap::new()));
        }
        self.absorb_appeared();
        let (_, by_instance) = self.appeared.as_mut().expect("subscribed");
        Ok(by_instance.remove(instance).unwrap_or_default())
    }

    /// Reads the deltas of `pending` delivered since the last call into the keys that
    /// appeared, by instance (nothing before the handlers' first read).
    fn absorb_appeared(&mut self) {
        let dict = self.m.runtime().dictionary().clone();
        let Some((sub, by_instance)) = self.appeared.as_mut() else {
            return;
        };
        for delta in sub.try_iter() {
            for (rec, diff) in &delta.updates {
                if let Rec::Pending {
                    instance,
                    room,
                    action,
                    target,
                } = rec
                    && *diff > 0
                {
                    let key = IntentKey {
                        instance: dict.get(*instance),
                        room_id: dict.get(*room),
                        action: *action,
                        target: dict.get(*target),
                    };
                    by_instance
                        .entry(key.instance.clone())
                        .or_default()
                        .push(key);
                }
            }
        }
    }

    /// A write's outcome: a commit whose revision capture failed is a success (the delta is
    /// durable; the capture is retried); a storage failure is remembered for the status until
    /// a write succeeds again.
    fn committed(
        &mut self,
        got: Result<Option<Seq>, Error>,
        started: Instant,
    ) -> Result<Option<Seq>, Error> {
        let got = match got {
            Err(e) if !e.committed().is_empty() => {
                tracing::warn!(error = %e, "committed, but the revision capture after it failed");
                let seq = *e.committed().last().expect("not empty");
                // Replicas are computed through it before it is answered.
                self.m.wait(seq).map(|()| Some(seq))
            }
            other => other,
        };
        match &got {
            Ok(Some(seq)) => {
                self.metrics.commit_seconds(started.elapsed());
                self.sources.storage_fault = None;
                self.dirty = true;
                // Before the answer: a check after it sees this delta.
                self.door.refresh(&mut self.m);
                if let Some(h) = &mut self.history {
                    h.absorb();
                }
                self.seq_tx.send_replace(seq.0);
                let newly = self.m.runtime().newly_poisoned();
                if newly.last() == Some(seq) {
                    tracing::warn!(seq = seq.0, "a replica panicked on this delta: quarantined");
                }
            }
            Ok(None) => {}
            Err(e) if e.is_storage_failure() => {
                tracing::error!(error = %e, "storage failure: writes answer 503 until it clears");
                self.sources.storage_fault = Some((e.to_string(), now_ms()));
            }
            Err(e) => tracing::error!(error = %e, "write failed"),
        }
        got
    }

    fn report(&mut self) -> Result<Report, Error> {
        let status = self.m.runtime().status()?;
        let rows = self.m.show("instances", None, None)?;
        let mut instances: Vec<String> = (rows.iter())
            .filter_map(|r| r["instance"].as_str().map(str::to_string))
            .collect();
        instances.dedup();
        Ok(Report {
            status,
            instances,
            sources: self.sources.clone(),
        })
    }
}

/// Sends `make(reply)` to the core and waits for its answer; `None` when the core is gone
/// (stopping).
pub(crate) async fn ask<T>(
    core: &Sender<Command>,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    core.send(make(tx)).ok()?;
    rx.await.ok()
}

#[cfg(test)]
mod tests;
