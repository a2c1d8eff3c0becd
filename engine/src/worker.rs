//! The worker side of the runtime: the compiled dataflow and the command loop of one timely
//! worker thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use differential_dataflow::input::InputSession;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::TraceReader;
use differential_dataflow::trace::cursor::{Cursor, cursor_list};
use differential_dataflow::trace::implementations::ValSpine;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::progress::frontier::Antichain;
use timely::worker::Worker;

use differential_dataflow::AsCollection;
use timely::dataflow::operators::core::Filter;

use crate::description::{Coll, Dag, Record};
use crate::resume::ResumePlan;

/// The arrangement of one replica: records keyed by their partition.
type Trace<R> = TraceAgent<ValSpine<u64, R, u64, isize>>;

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

/// Updates of replica `.0` captured for subscribers: `(record, time, diff)`.
pub(crate) type Captured<R> = (u32, Vec<(R, u64, isize)>);

/// Channels and flags a worker shares with the controller.
pub(crate) struct WorkerLink<R> {
    pub commands: Receiver<Command<R>>,
    pub replies: Sender<(usize, Reply<R>)>,
    pub captured: Sender<Captured<R>>,
    /// `capture[i]`: whether replica `i`'s deltas are sent to the controller.
    pub capture: Arc<Vec<AtomicBool>>,
}

/// Builds the shared dataflow on this worker and serves commands until `Shutdown`. With a
/// `plan`, the replicas it resumes compute only their deltas after the restore point; those
/// that are not based start from their revisions, fed at the restore point through an input of
/// their own, like a source.
pub(crate) fn run_worker<R: Record>(
    worker: &mut Worker,
    dag: &Dag<R>,
    link: WorkerLink<R>,
    plan: Option<&ResumePlan<R>>,
) {
    let index = worker.index();
    let n = dag.len();
    let all_probe: ProbeHandle<u64> = ProbeHandle::new();
    let probes: Vec<ProbeHandle<u64>> = (0..n).map(|_| ProbeHandle::new()).collect();

    let (mut inputs, mut traces) = worker.dataflow::<u64, _, _>(|scope| {
        let mut inputs: Vec<Option<InputSession<u64, R, isize>>> = Vec::with_capacity(n);
        let mut colls: Vec<Option<Coll<'_, R>>> = Vec::with_capacity(n);
        // A replica's updates after the restore point, once a resumed replica needs them.
        let mut deltas: Vec<Option<Coll<'_, R>>> = vec![None; n];
        let mut traces: Vec<Option<Trace<R>>> = Vec::with_capacity(n);
        for (i, desc) in dag.replicas().iter().enumerate() {
            if desc.is_view() {
                // Views are evaluated by the controller when read; nothing runs here.
                inputs.push(None);
                colls.push(None);
                traces.push(None);
                continue;
            }
            let id = crate::ReplicaId(i as u32);
            let resumed = plan.and_then(|p| p.seeds[i].as_ref().map(|s| (p.as_of, s)));
            let coll = match (desc.compute(), resumed) {
                (None, _) => {
                    let mut session = InputSession::new();
                    let c = session.to_collection(scope);
                    inputs.push(Some(session));
                    c
                }
                (Some(compute), None) => {
                    inputs.push(None);
                    let ins: Vec<Coll<'_, R>> = dag
                        .inputs_of(id)
                        .iter()
                        .map(|x| colls[x.index()].clone().expect("inputs are not views"))
                        .collect();
                    compute(&ins)
                }
                (Some(compute), Some((as_of, seeds))) => {
                    let mut session = InputSession::new();
                    let revision = session.to_collection(scope);
                    inputs.push(Some(session));
                    let ins: Vec<Coll<'_, R>> = dag
                        .inputs_of(id)
                        .iter()
                        .map(|x| {
                            deltas[x.index()]
                                .get_or_insert_with(|| {
                                    let c = colls[x.index()].clone().expect("inputs are not views");
                                    // A based input holds only its updates after `as_of`.
                                    if plan.is_some_and(|p| p.based[x.index()]) {
                                        c
                                    } else {
                                        after(c, as_of)
                                    }
                                })
                                .clone()
                        })
                        .collect();
                    let delta = match desc.resume() {
                        Some(resume) => resume(&ins, seeds),
                        None => compute(&ins),
                    };
                    deltas[i] = Some(delta.clone());
                    revision.concat(delta)
                }
            };
            colls.push(Some(coll.clone()));
            let partition = desc.partition_fn();
            let arranged = coll
                .map(move |r| (partition(&r), r))
                .arrange_by_key_named(desc.name());
            traces.push(Some(arranged.trace.clone()));
            let flag = link.capture.clone();
            let sink = link.captured.clone();
            let replica = i as u32;
            arranged
                .flat_map_ref(move |_k, v| {
                    if flag[replica as usize].load(Ordering::Relaxed) {
                        Some(v.clone())
                    } else {
                        None
                    }
                })
                .inspect_batch(move |_t, data| {
                    if !data.is_empty() {
                        // The controller outlives the workers; a closed channel means shutdown.
                        let _ = sink.send((replica, data.to_vec()));
                    }
                })
                .probe_with(&probes[i])
                .probe_with(&all_probe);
        }
        (inputs, traces)
    });

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
                        let inputs = dag.inputs_of(crate::ReplicaId(i as u32));
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

/// The updates of `coll` at times after `as_of`: its delta since the restore point.
fn after<R: Record>(coll: Coll<'_, R>, as_of: u64) -> Coll<'_, R> {
    coll.inner
        .filter(move |(_, t, _)| *t > as_of)
        .as_collection()
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
