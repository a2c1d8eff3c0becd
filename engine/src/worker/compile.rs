//! Compiling a DAG into one worker's dataflow: an input per source replica (and per resumed
//! replica fed its revision), each replica's collection, its arrangement by partition, the
//! capture of its deltas for subscribers, and its probe.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crossbeam_channel::Sender;
use differential_dataflow::AsCollection;
use differential_dataflow::input::InputSession;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::trace::implementations::ValSpine;
use timely::dataflow::operators::core::Filter;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::worker::Worker;

use crate::dag::Dag;
use crate::description::ReplicaId;
use crate::record::{Coll, Record};
use crate::seeds::Seeds;

/// The arrangement of one replica: records keyed by their partition.
pub(crate) type Trace<R> = TraceAgent<ValSpine<u64, R, u64, isize>>;

/// What of a replica's deltas its arrangement sends to the controller, in increasing order:
/// each level serves the subscribers of the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Capture {
    Nothing = 0,
    /// How many records each `Seq` adds and removes, not the records.
    Counts = 1,
    /// The updates themselves.
    Records = 2,
}

/// What a worker's arrangement of one replica sends the controller.
pub(crate) enum Captured<R> {
    /// Updates of replica `.0`: `(record, time, diff)`.
    Records(u32, Vec<(R, u64, isize)>),
    /// Per time, the sums of replica `.0`'s positive and (negated) negative diffs on this
    /// worker: `(time, added, removed)`. A record lives on one worker and in one batch per
    /// time, consolidated there, so the sums over the workers are those of the consolidated
    /// delta.
    Counts(u32, Vec<(u64, u64, u64)>),
}

/// A captured update: a replica's record, or only its diff (see [`Capture::Counts`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Caught<R> {
    Record(R),
    Counted,
}

/// How a restored dataflow starts: the restore point and, per replica, the seeds of a resumed
/// replica (`None`: a source, a view, or a replica recomputed from its inputs), and whether it
/// is based (its collection holds only its delta after the restore point).
pub(crate) struct ResumePlan<R> {
    pub as_of: u64,
    pub seeds: Vec<Option<Seeds<R>>>,
    pub based: Vec<bool>,
}

/// One worker's compiled dataflow: what the worker loop drives and reads.
pub(crate) struct Compiled<R: Record> {
    /// Per replica: its input session (a source, or a resumed replica fed its revision).
    pub(crate) inputs: Vec<Option<InputSession<u64, R, isize>>>,
    /// Per replica other than a view: its arrangement by partition.
    pub(crate) traces: Vec<Option<Trace<R>>>,
    /// Per replica: its probe.
    pub(crate) probes: Vec<ProbeHandle<u64>>,
    /// One probe over every replica.
    pub(crate) all_probe: ProbeHandle<u64>,
}

/// Builds the shared dataflow on this worker. With a `plan`, the replicas it resumes compute
/// only their deltas after the restore point; those that are not based start from their
/// revisions, fed at the restore point through an input of their own, like a source. A
/// replica's updates are sent to `captured` while `capture[i]` is set.
pub(crate) fn compile<R: Record>(
    worker: &mut Worker,
    dag: &Dag<R>,
    capture: &Arc<Vec<AtomicU8>>,
    captured: &Sender<Captured<R>>,
    plan: Option<&ResumePlan<R>>,
) -> Compiled<R> {
    let n = dag.len();
    let all_probe: ProbeHandle<u64> = ProbeHandle::new();
    let probes: Vec<ProbeHandle<u64>> = (0..n).map(|_| ProbeHandle::new()).collect();
    let (inputs, traces) = worker.dataflow::<u64, _, _>(|scope| {
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
            let id = ReplicaId(i as u32);
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
            let flag = capture.clone();
            let sink = captured.clone();
            let replica = i as u32;
            arranged
                .flat_map_ref(move |_k, v| {
                    let what = flag[replica as usize].load(Ordering::Relaxed);
                    if what == Capture::Records as u8 {
                        Some(Caught::Record(v.clone()))
                    } else if what == Capture::Counts as u8 {
                        Some(Caught::Counted)
                    } else {
                        None
                    }
                })
                .inspect_batch(move |_t, data| {
                    // The controller outlives the workers; a closed channel means shutdown.
                    for captured in captured_of(replica, data) {
                        let _ = sink.send(captured);
                    }
                })
                .probe_with(&probes[i])
                .probe_with(&all_probe);
        }
        (inputs, traces)
    });
    Compiled {
        inputs,
        traces,
        probes,
        all_probe,
    }
}

/// What a batch of captured updates of `replica` sends the controller: its records, and the
/// counts of what was only counted.
fn captured_of<R: Record>(replica: u32, data: &[(Caught<R>, u64, isize)]) -> Vec<Captured<R>> {
    let mut records = Vec::new();
    let mut counts: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for (caught, t, d) in data {
        match caught {
            Caught::Record(r) => records.push((r.clone(), *t, *d)),
            Caught::Counted => {
                let c = counts.entry(*t).or_default();
                if *d > 0 {
                    c.0 += d.unsigned_abs() as u64;
                } else {
                    c.1 += d.unsigned_abs() as u64;
                }
            }
        }
    }
    let mut out = Vec::new();
    if !records.is_empty() {
        out.push(Captured::Records(replica, records));
    }
    if !counts.is_empty() {
        let counts = counts.into_iter().map(|(t, (a, r))| (t, a, r)).collect();
        out.push(Captured::Counts(replica, counts));
    }
    out
}

/// The updates of `coll` at times after `as_of`: its delta since the restore point.
fn after<R: Record>(coll: Coll<'_, R>, as_of: u64) -> Coll<'_, R> {
    coll.inner
        .filter(move |(_, t, _)| *t > as_of)
        .as_collection()
}
