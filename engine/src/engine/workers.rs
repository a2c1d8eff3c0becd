//! The live dataflow: timely worker threads, and the channels the engine drives them by.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, unbounded};
use timely::WorkerConfig;
use timely::communication::initialize::WorkerGuards;

use crate::Error;
use crate::description::{Dag, Record, ReplicaId};
use crate::resume::ResumePlan;
use crate::worker::{Captured, Command, Reply, SourceUpdate, WorkerLink, run_worker};

/// The live dataflow: worker threads and the channels to them.
pub(crate) struct Workers<R: Record> {
    commands: Vec<Sender<Command<R>>>,
    replies: Receiver<(usize, Reply<R>)>,
    pub(super) captured: Receiver<Captured<R>>,
    capture: Arc<Vec<AtomicBool>>,
    guards: Option<WorkerGuards<()>>,
    next_worker: usize,
}

impl<R: Record> Workers<R> {
    pub(crate) fn start(
        dag: Arc<Dag<R>>,
        workers: usize,
        plan: Option<Arc<ResumePlan<R>>>,
    ) -> Result<Self, Error> {
        let (reply_tx, replies) = unbounded();
        let (captured_tx, captured) = unbounded();
        let capture: Arc<Vec<AtomicBool>> =
            Arc::new((0..dag.len()).map(|_| AtomicBool::new(false)).collect());
        let mut commands = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = unbounded();
            commands.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let capture_w = capture.clone();
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
            run_worker(worker, &dag, link, plan.as_deref());
        })
        .map_err(Error::Workers)?;
        Ok(Workers {
            commands,
            replies,
            captured,
            capture,
            guards: Some(guards),
            next_worker: 0,
        })
    }

    pub(super) fn peers(&self) -> usize {
        self.commands.len()
    }

    pub(super) fn send_all(&self, make: impl Fn() -> Command<R>) -> Result<(), Error> {
        for tx in &self.commands {
            tx.send(make()).map_err(|_| Error::WorkerFailed)?;
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
            .map_err(|_| Error::WorkerFailed)?;
        }
        Ok(())
    }

    pub(super) fn wait_all(&self, mut on_reply: impl FnMut(Reply<R>)) -> Result<(), Error> {
        for _ in 0..self.peers() {
            let (_, reply) = self.replies.recv().map_err(|_| Error::WorkerFailed)?;
            on_reply(reply);
        }
        Ok(())
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
        let mut rows = Vec::new();
        self.wait_all(|reply| {
            if let Reply::Rows(r) = reply {
                rows.extend(r);
            }
        })?;
        rows.sort();
        Ok(rows)
    }

    pub(super) fn frontiers(&self) -> Result<Vec<u64>, Error> {
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

    pub(super) fn set_capture(&self, replica: ReplicaId) {
        self.capture[replica.index()].store(true, Ordering::Relaxed);
    }

    pub(super) fn stop(&mut self) -> Result<(), Error> {
        for tx in &self.commands {
            let _ = tx.send(Command::Shutdown);
        }
        if let Some(guards) = self.guards.take() {
            for r in guards.join() {
                r.map_err(|_| Error::WorkerFailed)?;
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
