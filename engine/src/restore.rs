//! Restore: starting a dataflow from the store (the newest restore point's revisions, resuming
//! the replicas that can be resumed, the rebuild deltas of stale revisions), and replaying the
//! source log into a dataflow.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::api::{Delta, DeltaKind};
use crate::codec::{self, LoggedDelta};
use crate::controller::Controller;
use crate::decoders::{Decoders, decode_in_background, decode_when_read};
use crate::description::ReplicaId;
use crate::error::Error;
use crate::record::Record;
use crate::revision::Decoding;
use crate::seeds::Seeds;
use crate::seq::Seq;
use crate::stored::{StartPoint, Stored};
use crate::updates::difference;
use crate::worker::{ResumePlan, SourceUpdate};

/// A resumed restore's plan, and the threads decoding its seeds.
type Planned<R> = (ResumePlan<R>, Decoders<R>);

/// While replaying the log, the dataflow is stepped to completion every this many entries.
const REPLAY_STEP: u64 = 1024;

/// How [`replay_log`] feeds the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Each entry at its own `Seq`: for a subscriber to the deltas.
    EachSeq,
    /// The entries of each step at once: for the contents.
    Batched,
}

/// A dataflow restored from the store, through its last committed `Seq`.
pub(crate) struct Restored<R: Record> {
    pub(crate) controller: Controller<R>,
    /// The replicas resumed from their revisions instead of recomputed.
    pub(crate) resumed: Vec<String>,
    /// The differences between stale revisions at the restore point (made by other logic)
    /// and their recomputation; when there are any, fresh revisions should be captured.
    pub(crate) rebuild_deltas: Vec<Delta<R>>,
}

/// Restores the dataflow through `through` (the last committed `Seq`, or an earlier one to
/// re-apply the deltas after it one by one): from the newest restore point at or before it,
/// resuming what can be resumed (see [`crate::seeds`]), then the log after it, quarantined
/// deltas skipped.
pub(crate) fn restore<R: Record>(stored: &Stored<R>, through: u64) -> Result<Restored<R>, Error> {
    let dag = &stored.dag;
    let start = stored.start_point(through)?;
    let mut resumed = Vec::new();
    let mut controller = match resume_plan(stored, start)? {
        Some((plan, decoders)) => {
            resumed = (plan.seeds.iter().enumerate())
                .filter(|(_, s)| s.is_some())
                .map(|(i, _)| dag.replica(ReplicaId(i as u32)).name().to_string())
                .collect();
            resumed_controller(stored, start, plan, decoders)?
        }
        None => replay(stored, start, start.as_of)?,
    };
    // Rebuild deltas: derived replicas whose stored revision at the start point was made by
    // other logic are recomputed; the difference is published.
    let mut rebuild_deltas = Vec::new();
    if start.as_of > 0 {
        for (i, desc) in dag.replicas().iter().enumerate() {
            let id = ReplicaId(i as u32);
            if desc.is_source() || desc.is_view() {
                continue;
            }
            if let Some(info) = stored.revision_info(id, start.as_of)?
                && !stored.is_fresh(&info)
            {
                let old = stored.decode_revision(desc.name(), start.as_of)?;
                let now = controller.read(id, None)?;
                rebuild_deltas.push(Delta {
                    seq: Seq(start.as_of),
                    replica: id,
                    kind: DeltaKind::Rebuild,
                    updates: difference(&old, &now),
                });
            }
        }
    }
    replay_log(
        stored,
        &mut controller,
        start.as_of + 1,
        through,
        Replay::Batched,
    )?;
    controller.step_until(through)?;
    Ok(Restored {
        controller,
        resumed,
        rebuild_deltas,
    })
}

/// What a restore at `start` resumes instead of recomputing: every resumable derived
/// replica, provided every derived replica has a current revision at the restore point
/// (else everything is recomputed, and stale revisions give rebuild deltas). Starts decoding
/// the revisions that resume computations read, in the background.
fn resume_plan<R: Record>(
    stored: &Stored<R>,
    start: StartPoint,
) -> Result<Option<Planned<R>>, Error> {
    if start.as_of == 0 || !stored.config.resume {
        return Ok(None);
    }
    let dag = &stored.dag;
    let n = dag.len();
    let derived = |i: usize| {
        let d = dag.replica(ReplicaId(i as u32));
        !d.is_source() && !d.is_view()
    };
    for i in (0..n).filter(|i| derived(*i)) {
        if !stored.has_fresh(ReplicaId(i as u32), start.as_of)? {
            return Ok(None);
        }
    }
    let resumed: Vec<bool> = (0..n)
        .map(|i| derived(i) && dag.replica(ReplicaId(i as u32)).is_resumable())
        .collect();
    if !resumed.contains(&true) {
        return Ok(None);
    }
    // Based: a source or resumed replica that no recomputed replica reads.
    let based: Vec<bool> = (0..n)
        .map(|i| {
            let id = ReplicaId(i as u32);
            (dag.replica(id).is_source() || resumed[i])
                && (0..n).all(|j| {
                    resumed[j] || !derived(j) || !dag.inputs_of(ReplicaId(j as u32)).contains(&id)
                })
        })
        .collect();
    let wanted: BTreeSet<ReplicaId> = (0..n)
        .filter(|i| resumed[*i] && dag.replica(ReplicaId(*i as u32)).has_resume())
        .flat_map(|i| dag.inputs_of(ReplicaId(i as u32)).iter().copied())
        .collect();
    let store = stored.store("restoring")?;
    let infos = store.revisions()?;
    let mut to_decode = Vec::new();
    for id in &wanted {
        let name = dag.replica(*id).name().to_string();
        let info = (infos.iter())
            .find(|i| i.replica == name && i.as_of == start.as_of)
            .ok_or_else(|| {
                Error::Store(prr_persist::Error::Missing(format!(
                    "no revision of `{name}` as of seq {}",
                    start.as_of
                )))
            })?;
        to_decode.push(Arc::new(info.clone()));
    }
    let (cells, decoders) = match stored.config.decode_ahead {
        true => decode_in_background(
            store,
            to_decode,
            start.as_of,
            stored.config.pause_decoding,
            &stored.id_check(),
        ),
        false => decode_when_read(store, to_decode, &stored.id_check()),
    };
    let decoded: Vec<(ReplicaId, Arc<Decoding<R>>)> = wanted.into_iter().zip(cells).collect();
    let decoding_of = |x: &ReplicaId| {
        let at = decoded.binary_search_by_key(x, |(id, _)| *id);
        at.map(|k| decoded[k].1.clone())
    };
    let mut seeds = Vec::with_capacity(n);
    for (i, is_resumed) in resumed.iter().enumerate() {
        let id = ReplicaId(i as u32);
        if !is_resumed {
            seeds.push(None);
            continue;
        }
        let mut inputs = Vec::new();
        if dag.replica(id).has_resume() {
            for x in dag.inputs_of(id) {
                inputs.push(
                    decoding_of(x).map_err(|_| {
                        Error::Corrupt(format!("no seed decoded for input {}", x.0))
                    })?,
                );
            }
        }
        seeds.push(Some(Seeds::new(
            start.as_of,
            inputs,
            stored.config.decode_ahead,
        )));
    }
    let plan = ResumePlan {
        as_of: start.as_of,
        seeds,
        based,
    };
    Ok(Some((plan, decoders)))
}

/// A fresh controller that resumes the replicas of `plan`: fed with the revisions at the
/// restore point of the sources and resumed replicas that are not based (see [`ResumePlan`]);
/// the log after it is replayed by the caller.
fn resumed_controller<R: Record>(
    stored: &Stored<R>,
    start: StartPoint,
    plan: ResumePlan<R>,
    decoders: Decoders<R>,
) -> Result<Controller<R>, Error> {
    let dag = &stored.dag;
    let mut updates: Vec<SourceUpdate<R>> = Vec::new();
    for (i, desc) in dag.replicas().iter().enumerate() {
        if (desc.is_source() || plan.seeds[i].is_some()) && !plan.based[i] {
            let rows = stored.decode_revision(desc.name(), start.as_of)?;
            updates.extend(rows.into_iter().map(|(r, d)| (i as u32, r, d)));
        }
    }
    // The seeds' revisions serve reads of based replicas too.
    let mut bases: Vec<Option<Arc<Decoding<R>>>> = vec![None; dag.len()];
    for (i, s) in plan.seeds.iter().enumerate() {
        let Some(s) = s else { continue };
        for (k, x) in dag.inputs_of(ReplicaId(i as u32)).iter().enumerate() {
            if plan.based[x.index()] {
                bases[x.index()] = bases[x.index()].take().or_else(|| s.decoding(k));
            }
        }
    }
    let mut controller = Controller::start_resumed(
        dag.clone(),
        stored.config.workers,
        Some((Arc::new(plan), decoders)),
    )?;
    for (i, rows) in bases.into_iter().enumerate() {
        if let Some(rows) = rows {
            controller.set_base(ReplicaId(i as u32), rows);
        }
    }
    controller.feed(start.as_of, updates)?;
    controller.step_until(start.as_of)?;
    Ok(controller)
}

/// A fresh controller fed with the source revisions of `start` and the log up to `upto`.
pub(crate) fn replay<R: Record>(
    stored: &Stored<R>,
    start: StartPoint,
    upto: u64,
) -> Result<Controller<R>, Error> {
    let dag = &stored.dag;
    let mut controller = Controller::start(dag.clone(), stored.config.workers)?;
    if start.as_of > 0 {
        let mut updates: Vec<SourceUpdate<R>> = Vec::new();
        for id in dag.sources() {
            let rows = stored.decode_revision(dag.replica(id).name(), start.as_of)?;
            updates.extend(rows.into_iter().map(|(r, d)| (id.0, r, d)));
        }
        controller.feed(start.as_of, updates)?;
        controller.step_until(start.as_of)?;
    }
    replay_log(
        stored,
        &mut controller,
        start.as_of + 1,
        upto,
        Replay::Batched,
    )?;
    controller.step_until(upto)?;
    Ok(controller)
}

/// Feeds the log entries `from..=through` to `controller`, except the quarantined ones. With
/// [`Replay::EachSeq`], each at its own `Seq` (a subscriber sees each one's delta); with
/// [`Replay::Batched`], the entries of each step (up to [`REPLAY_STEP`] of them) together at
/// the step's last `Seq`: the contents through each step are the same, computed once per step
/// instead of once per entry.
pub(crate) fn replay_log<R: Record>(
    stored: &Stored<R>,
    controller: &mut Controller<R>,
    from: u64,
    through: u64,
    replay: Replay,
) -> Result<(), Error> {
    let Some(store) = &stored.store else {
        return Ok(());
    };
    if from > through {
        return Ok(());
    }
    let mut expected = from;
    let ids = stored.id_check();
    let mut pending: Vec<SourceUpdate<R>> = Vec::new();
    store.for_each_log(from..=through, |seq, bytes| {
        if seq != expected {
            return Err(Error::HistoryUnavailable(format!(
                "the source log lacks seq {expected} (next retained: {seq})"
            )));
        }
        expected += 1;
        let logged: LoggedDelta<R> = if stored.is_quarantined(seq) {
            Vec::new()
        } else {
            codec::decode_log(bytes, seq, &ids)?
        };
        for (name, rows) in logged {
            let id = stored.dag.id(&name).ok_or_else(|| {
                Error::Corrupt(format!(
                    "log entry {seq} names replica `{name}`, which this program does not declare"
                ))
            })?;
            pending.extend(rows.into_iter().map(|(r, d)| (id.0, r, d as isize)));
        }
        // Step now and then: a long tail fed at once would pile up uncomputed (and its
        // arrangements uncompacted) until the end.
        let step_ends = (seq - from + 1).is_multiple_of(REPLAY_STEP) || seq == through;
        if replay == Replay::EachSeq || step_ends {
            controller.feed(seq, std::mem::take(&mut pending))?;
        }
        if step_ends {
            controller.step_until(seq)?;
        }
        Ok(())
    })?;
    if expected <= through {
        return Err(Error::HistoryUnavailable(format!(
            "the source log ends before seq {expected}"
        )));
    }
    Ok(())
}

/// After a failed commit whose outcome was not known: reads the store back, feeds the running
/// dataflow (if any) the log entries committed after its last fed `Seq` after all, each at its
/// own `Seq`, and marks the strings the store holds as persisted. Returns the store's last
/// `Seq`. Changes nothing when the store cannot be read.
pub(crate) fn settle_after_fault<R: Record>(
    stored: &Stored<R>,
    controller: Option<&mut Controller<R>>,
) -> Result<u64, Error> {
    let Some(store) = &stored.store else {
        return Ok(stored.last_seq);
    };
    let last = store.last_seq()?;
    let strings = store.string_count()?;
    if let Some(controller) = controller {
        replay_log(
            stored,
            controller,
            stored.last_seq + 1,
            last,
            Replay::EachSeq,
        )?;
    }
    stored.dictionary.mark_persisted(strings);
    Ok(last)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::sync::{Arc, Mutex};

    use prr_persist::Store;

    use crate::api::{RuntimeConfig, SourceDelta};
    use crate::dag::Dag;
    use crate::description::{Input, ReplicaDescription};
    use crate::runtime::Runtime;

    /// What a thread of `copy`'s resume computation got when it read the seed.
    type Got = Result<usize, String>;

    /// numbers (source) -> copy, which reads numbers in full and resumes from their deltas.
    /// Its resume computation also starts a thread of its own that reads the seed whole and
    /// sends what it got to `got`, like a resume index built in the background.
    fn dag(got: Option<Sender<Got>>) -> Dag<u64> {
        let got = Arc::new(Mutex::new(got));
        Dag::new(vec![
            ReplicaDescription::source("numbers", "x", |x| *x),
            ReplicaDescription::derived(
                "copy",
                "x",
                |x| *x,
                vec![Input::full("numbers")],
                |i| i[0].clone(),
            )
            .with_resume(move |d, seeds| {
                if let Some(tx) = got.lock().unwrap().take() {
                    let seeds = seeds.clone();
                    std::thread::spawn(move || {
                        let _ = tx.send(seeds.try_input(0).map(|rows| rows.len()));
                    });
                }
                d[0].clone()
            }),
        ])
        .unwrap()
    }

    fn push(rt: &mut Runtime<u64>, xs: impl IntoIterator<Item = u64>) {
        let numbers = rt.replica("numbers").unwrap();
        let mut d = SourceDelta::new();
        for x in xs {
            d.insert(numbers, x);
        }
        rt.push(d).unwrap();
    }

    fn start(path: &Path, pause_decoding: bool) -> (Runtime<u64>, Receiver<Got>) {
        let mut config = RuntimeConfig::new()
            .with_store(path)
            .with_revision_on_shutdown(false);
        config.pause_decoding = pause_decoding;
        let (tx, rx) = channel();
        (
            Runtime::start_with(config, |_| Ok(dag(Some(tx)))).unwrap(),
            rx,
        )
    }

    /// A runtime stopped while its restore's seeds are still being decoded (here, by threads
    /// that do not get to decode) stops the decoding threads: they no longer hold the store,
    /// which closes with the runtime (cleanly, and it opens again at once, nothing lost). A
    /// thread of the resume computation that waits for a seed then learns that the store is
    /// closed, instead of waiting forever or reading it.
    #[test]
    fn a_shutdown_during_the_seed_decoding_closes_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (mut rt, _) = start(&path, false);
        push(&mut rt, 0..20_000);
        rt.capture_revisions().unwrap();
        push(&mut rt, [20_000]);
        rt.shutdown().unwrap();

        let (mut rt, got) = start(&path, true);
        rt.sync().unwrap();
        assert_eq!(
            rt.resumed(),
            ["copy"],
            "the restore resumes `copy` from its seeds"
        );
        rt.shutdown().unwrap();
        let store = Store::open(&path).expect("the store is closed when the runtime stops");
        drop(store);
        let got = got.recv().unwrap().unwrap_err();
        assert!(got.contains("the store is closed"), "{got}");

        // Dropped without a shutdown (an error path), it stops the same way.
        let (mut rt, got) = start(&path, true);
        rt.sync().unwrap();
        drop(rt);
        drop(Store::open(&path).expect("the store is closed when the runtime is dropped"));
        let got = got.recv().unwrap().unwrap_err();
        assert!(got.contains("the store is closed"), "{got}");

        // Undisturbed, the thread reads the seed.
        let (mut rt, got) = start(&path, false);
        let copy = rt.replica("copy").unwrap();
        assert_eq!(rt.read(copy, None).unwrap().len(), 20_001);
        assert_eq!(got.recv().unwrap(), Ok(20_000));
        rt.shutdown().unwrap();
    }

    /// Without decoding ahead, no thread decodes the seeds: the resume reads what it looks up,
    /// and the first reader of all of a seed decodes it (on several threads), whole and in
    /// order; the replicas are the same.
    #[test]
    fn a_restore_that_does_not_decode_ahead_decodes_a_seed_when_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let (mut rt, _) = start(&path, false);
        push(&mut rt, (0..20_000).rev());
        rt.capture_revisions().unwrap();
        push(&mut rt, [20_000]);
        rt.shutdown().unwrap();

        let (tx, got) = channel();
        let config = RuntimeConfig::new()
            .with_store(&path)
            .with_revision_on_shutdown(false)
            .with_decode_ahead(false);
        let mut rt = Runtime::start_with(config, |_| Ok(dag(Some(tx)))).unwrap();
        rt.sync().unwrap();
        assert_eq!(rt.resumed(), ["copy"]);
        assert_eq!(got.recv().unwrap(), Ok(20_000));
        let copy = rt.replica("copy").unwrap();
        let rows = rt.read(copy, None).unwrap();
        assert_eq!(
            rows.iter().map(|(x, _)| *x).collect::<Vec<_>>(),
            (0..=20_000).collect::<Vec<_>>()
        );
        rt.shutdown().unwrap();
    }
}
