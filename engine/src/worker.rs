//! The worker threads: the command loop each timely worker runs over its compiled dataflow
//! (`compile`), and [`Workers`], the controller's handle that starts them and drives them
//! through channels.

mod compile;

pub(crate) use compile::ResumePlan;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, unbounded};
use differential_dataflow::trace::TraceReader;
use differential_dataflow::trace::cursor::{Cursor, cursor_list};
use differential_dataflow::trace::implementations::spine_fueled::SpineBatch;
use timely::WorkerConfig;
use timely::communication::initialize::WorkerGuards;
use timely::progress::frontier::Antichain;
use timely::worker::Worker;

use crate::dag::Dag;
use crate::description::ReplicaId;
use crate::error::{Error, panic_message};
use crate::record::Record;
pub(crate) use compile::{Capture, Captured};
use compile::{Compiled, Trace, compile};

/// How often a controller waiting for the workers checks whether one of them panicked.
const PANIC_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// One update of a source replica: `(source replica index, record, diff)`.
pub(crate) type SourceUpdate<R> = (u32, R, isize);

/// What the controller asks a worker to do.
pub(crate) enum Command<R> {
    /// Feed this worker's share of a source delta at time `seq`, then close `seq`.
    Delta {
        seq: u64,
        updates: Vec<SourceUpdate<R>>,
    },
    /// Reply `Synced` once every replica is final for all times `< upper`.
    Sync { upper: u64 },
    /// Reply with the worker's shard of a replica (optionally one partition).
    Read {
        replica: u32,
        partition: Option<u64>,
    },
    /// Reply with every replica's frontier as this worker sees it.
    Frontiers,
    /// Leave the loop.
    Shutdown,
}

/// What a worker answers.
pub(crate) enum Reply<R> {
    Synced,
    Rows(Vec<(R, isize)>),
    Frontiers(Vec<u64>),
}

/// Channels and flags a worker shares with the controller.
pub(crate) struct WorkerLink<R> {
    pub commands: Receiver<Command<R>>,
    pub replies: Sender<(usize, Reply<R>)>,
    pub captured: Sender<Captured<R>>,
    /// `capture[i]`: what of replica `i`'s deltas is sent to the controller (a [`Capture`]).
    pub capture: Arc<Vec<AtomicU8>>,
}

/// Builds the shared dataflow on this worker and serves commands until `Shutdown`.
pub(crate) fn run_worker<R: Record>(
    worker: &mut Worker,
    dag: &Dag<R>,
    link: &WorkerLink<R>,
    plan: Option<&ResumePlan<R>>,
) {
    let index = worker.index();
    let Compiled {
        mut inputs,
        mut traces,
        probes,
        all_probe,
    } = compile(worker, dag, &link.capture, &link.captured, plan);
    let mut upper: u64 = 0; // every input is closed below `upper`
    let mut pending_syncs: Vec<u64> = Vec::new();
    loop {
        let busy = all_probe.less_than(&upper);
        let command = if busy {
            match link.commands.try_recv() {
                Ok(c) => Some(c),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        } else {
            match link.commands.recv() {
                Ok(c) => Some(c),
                Err(_) => return,
            }
        };
        match command {
            Some(Command::Delta { seq, updates }) => {
                for (source, record, diff) in updates {
                    let session = inputs[source as usize].as_mut().expect("a source replica");
                    if *session.time() < seq {
                        session.advance_to(seq);
                    }
                    session.update(record, diff);
                }
                upper = upper.max(seq + 1);
                for session in inputs.iter_mut().flatten() {
                    session.advance_to(upper);
                    session.flush();
                }
            }
            Some(Command::Sync { upper: target }) => pending_syncs.push(target),
            Some(Command::Read { replica, partition }) => {
                let rows = match traces[replica as usize].as_mut() {
                    Some(trace) => read_trace(trace, partition),
                    None => Vec::new(), // a view: the controller never asks
                };
                if link.replies.send((index, Reply::Rows(rows))).is_err() {
                    return;
                }
            }
            Some(Command::Frontiers) => {
                let mut f: Vec<u64> = probes
                    .iter()
                    .map(|p| p.with_frontier(|f| f.first().copied().unwrap_or(u64::MAX)))
                    .collect();
                // A view is final where its inputs are.
                for (i, desc) in dag.replicas().iter().enumerate() {
                    if desc.is_view() {
                        let inputs = dag.inputs_of(ReplicaId(i as u32));
                        f[i] = inputs
                            .iter()
                            .map(|x| f[x.index()])
                            .min()
                            .unwrap_or(u64::MAX);
                    }
                }
                if link.replies.send((index, Reply::Frontiers(f))).is_err() {
                    return;
                }
            }
            Some(Command::Shutdown) => return,
            None => {
                worker.step();
            }
        }
        if !pending_syncs.is_empty() {
            let mut answered = false;
            let mut i = 0;
            while i < pending_syncs.len() {
                if !all_probe.less_than(&pending_syncs[i]) {
                    pending_syncs.swap_remove(i);
                    answered = true;
                    if link.replies.send((index, Reply::Synced)).is_err() {
                        return;
                    }
                } else {
                    i += 1;
                }
            }
            if answered {
                // History below the synced frontier is no longer needed: revisions in the
                // store serve time travel.
                let frontier = all_probe.with_frontier(|f| f.to_owned());
                let frontier = if frontier.is_empty() {
                    Antichain::from_elem(upper)
                } else {
                    frontier
                };
                for t in traces.iter_mut().flatten() {
                    t.set_logical_compaction(frontier.borrow());
                    t.set_physical_compaction(frontier.borrow());
                }
            }
        }
    }
}

/// Reads the consolidated contents of this worker's shard of a replica at its current upper.
fn read_trace<R: Record>(trace: &mut Trace<R>, partition: Option<u64>) -> Vec<(R, isize)> {
    let mut upper = Antichain::new();
    trace.read_upper(&mut upper);
    let Some(batches) = trace.batches_through(upper.borrow()) else {
        return Vec::new();
    };
    let (mut cursor, storage) = cursor_list(batches);
    let mut rows = Vec::new();
    if partition.is_none() {
        // The updates are an upper bound of the records, and close to it in a consolidated
        // trace: room for them at once spares a large replica's copies while its rows grow.
        rows.reserve_exact(storage.iter().map(|b| b.len()).sum());
    }
    if let Some(p) = partition {
        cursor.seek_key(&storage, &p);
        if cursor.get_key(&storage) == Some(&p) {
            collect_vals(&mut cursor, &storage, &mut rows);
        }
    } else {
        while cursor.key_valid(&storage) {
            collect_vals(&mut cursor, &storage, &mut rows);
            cursor.step_key(&storage);
        }
    }
    rows
}

fn collect_vals<R: Record, C>(cursor: &mut C, storage: &C::Storage, rows: &mut Vec<(R, isize)>)
where
    C: for<'a> Cursor<
            Key<'a> = &'a u64,
            Val<'a> = &'a R,
            TimeGat<'a> = &'a u64,
            DiffGat<'a> = &'a isize,
        >,
{
    while let Some(v) = cursor.get_val(storage) {
        let mut sum = 0isize;
        cursor.map_times(storage, |_t, d| sum += *d);
        if sum != 0 {
            rows.push((v.clone(), sum));
        }
        cursor.step_val(storage);
    }
}

/// The live dataflow: worker threads and the channels to them.
pub(crate) struct Workers<R: Record> {
    commands: Vec<Sender<Command<R>>>,
    replies: Receiver<(usize, Reply<R>)>,
    pub(crate) captured: Receiver<Captured<R>>,
    capture: Arc<Vec<AtomicU8>>,
    guards: Option<WorkerGuards<()>>,
    next_worker: usize,
    /// The messages of the workers' panics, the first first.
    panics: Arc<Mutex<Vec<String>>>,
}

impl<R: Record> Workers<R> {
    pub(crate) fn start(
        dag: Arc<Dag<R>>,
        workers: usize,
        plan: Option<Arc<ResumePlan<R>>>,
    ) -> Result<Self, Error> {
        let (reply_tx, replies) = unbounded();
        let (captured_tx, captured) = unbounded();
        let capture: Arc<Vec<AtomicU8>> = Arc::new(
            (0..dag.len())
                .map(|_| AtomicU8::new(Capture::Nothing as u8))
                .collect(),
        );
        let mut commands = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = unbounded();
            commands.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let capture_w = capture.clone();
        let panics: Arc<Mutex<Vec<String>>> = Arc::default();
        let panics_w = panics.clone();
        let mut worker_config = WorkerConfig::default();
        differential_dataflow::configure(
            &mut worker_config,
            &differential_dataflow::Config::default().idle_merge_effort(Some(1000)),
        );
        let config = timely::Config {
            communication: if workers == 1 {
                timely::CommunicationConfig::Thread
            } else {
                timely::CommunicationConfig::Process(workers)
            },
            worker: worker_config,
        };
        let guards = timely::execute(config, move |worker| {
            let rx = receivers.lock().expect("receivers lock")[worker.index()]
                .take()
                .expect("each worker takes its own receiver once");
            let link = WorkerLink {
                commands: rx,
                replies: reply_tx.clone(),
                captured: captured_tx.clone(),
                capture: capture_w.clone(),
            };
            // The link outlives a panic of the loop: the controller sees the channels close
            // only once the panic's message is recorded.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_worker(worker, &dag, &link, plan.as_deref())
            }));
            if let Err(payload) = run {
                let message = panic_message(payload.as_ref());
                panics_w
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(message);
                drop(link);
                std::panic::resume_unwind(payload);
            }
            // Stopped: nothing more is read from the dataflow, so it is dropped rather than
            // run to completion, which a peer that panicked would never let it reach.
            for dataflow in worker.installed_dataflows() {
                worker.drop_dataflow(dataflow);
            }
        })
        .map_err(Error::Workers)?;
        Ok(Workers {
            commands,
            replies,
            captured,
            capture,
            guards: Some(guards),
            next_worker: 0,
            panics,
        })
    }

    /// The error of a worker that stopped: the message of the first panic, if one was
    /// recorded.
    pub(crate) fn failed(&self) -> Error {
        let panics = self.panics.lock().unwrap_or_else(|e| e.into_inner());
        Error::WorkerFailed(
            panics
                .first()
                .cloned()
                .unwrap_or_else(|| "it stopped without a panic message".into()),
        )
    }

    pub(crate) fn peers(&self) -> usize {
        self.commands.len()
    }

    pub(crate) fn send_all(&self, make: impl Fn() -> Command<R>) -> Result<(), Error> {
        for tx in &self.commands {
            tx.send(make()).map_err(|_| self.failed())?;
        }
        Ok(())
    }

    /// Sends a source delta at `seq`, spread over the workers.
    pub(crate) fn feed(&mut self, seq: u64, updates: Vec<SourceUpdate<R>>) -> Result<(), Error> {
        let peers = self.peers();
        let mut shares: Vec<Vec<SourceUpdate<R>>> = (0..peers).map(|_| Vec::new()).collect();
        if peers == 1 {
            shares[0] = updates;
        } else {
            for u in updates {
                shares[self.next_worker].push(u);
                self.next_worker = (self.next_worker + 1) % peers;
            }
        }
        for (tx, share) in self.commands.iter().zip(shares) {
            tx.send(Command::Delta {
                seq,
                updates: share,
            })
            .map_err(|_| self.failed())?;
        }
        Ok(())
    }

    /// Waits for one reply of every worker. A worker that panicked fails the wait even while
    /// the others still run (they may wait for it forever).
    pub(crate) fn wait_all(&self, mut on_reply: impl FnMut(Reply<R>)) -> Result<(), Error> {
        let mut replied = 0;
        while replied < self.peers() {
            match self.replies.recv_timeout(PANIC_POLL) {
                Ok((_, reply)) => {
                    on_reply(reply);
                    replied += 1;
                }
                Err(RecvTimeoutError::Timeout) if !self.has_panicked() => {}
                Err(_) => return Err(self.failed()),
            }
        }
        Ok(())
    }

    /// Whether a worker panicked.
    fn has_panicked(&self) -> bool {
        !self
            .panics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Waits until every replica is final for all times `< upper`.
    pub(crate) fn sync(&self, upper: u64) -> Result<(), Error> {
        self.send_all(|| Command::Sync { upper })?;
        self.wait_all(|_| {})
    }

    /// Reads a replica's consolidated contents (all workers' shards). Call after `sync`.
    pub(crate) fn read(
        &self,
        replica: ReplicaId,
        partition: Option<u64>,
    ) -> Result<Vec<(R, isize)>, Error> {
        self.send_all(|| Command::Read {
            replica: replica.0,
            partition,
        })?;
        let mut parts = Vec::new();
        self.wait_all(|reply| {
            if let Reply::Rows(r) = reply {
                parts.push(r);
            }
        })?;
        // One worker's rows are kept as they are: a large replica is not copied to be read,
        // and is sorted in place (its records are distinct: an unstable sort is the same).
        let mut rows = if parts.len() == 1 {
            parts.pop().unwrap_or_default()
        } else {
            parts.concat()
        };
        rows.sort_unstable();
        Ok(rows)
    }

    pub(crate) fn frontiers(&self) -> Result<Vec<u64>, Error> {
        self.send_all(|| Command::Frontiers)?;
        let mut out: Option<Vec<u64>> = None;
        self.wait_all(|reply| {
            if let Reply::Frontiers(f) = reply {
                out = Some(match out.take() {
                    None => f,
                    Some(o) => o.into_iter().zip(f).map(|(a, b)| a.min(b)).collect(),
                });
            }
        })?;
        Ok(out.unwrap_or_default())
    }

    /// Sends at least `what` of `replica`'s deltas to the controller from now on (records
    /// once anything needs them: the controller counts them itself then).
    pub(crate) fn set_capture(&self, replica: ReplicaId, what: Capture) {
        self.capture[replica.index()].fetch_max(what as u8, Ordering::Relaxed);
    }

    pub(crate) fn stop(&mut self) -> Result<(), Error> {
        for tx in &self.commands {
            let _ = tx.send(Command::Shutdown);
        }
        if let Some(guards) = self.guards.take() {
            for r in guards.join() {
                r.map_err(|_| self.failed())?;
            }
        }
        Ok(())
    }
}

impl<R: Record> Drop for Workers<R> {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
