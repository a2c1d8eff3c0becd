//! Restore: start points, replaying revisions and the log into a dataflow, rebuild deltas.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use prr_persist::{RevisionInfo, Store};

use super::Runtime;
use crate::codec::{self, LoggedDelta};
use crate::description::{Record, ReplicaId};
use crate::engine::{Delta, DeltaKind, Engine, difference};
use crate::resume::{Decoders, Decoding, ResumePlan, Seeds};
use crate::worker::SourceUpdate;
use crate::{Error, Seq};

/// The decoded rows of a part of a revision.
type PartRows<R> = Vec<(R, isize)>;

/// A resumed restore's plan, and the threads decoding its seeds.
type Planned<R> = (ResumePlan<R>, Decoders<R>);

/// Revisions being decoded in the background, and the threads decoding them.
type Decoded<R> = (BTreeMap<ReplicaId, Arc<Decoding<R>>>, Decoders<R>);

/// While replaying the log, the dataflow is stepped to completion every this many entries.
const REPLAY_STEP: u64 = 1024;

/// How [`Runtime::replay_log`] feeds the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Replay {
    /// Each entry at its own `Seq`: for a subscriber to the deltas.
    EachSeq,
    /// The entries of each step at once: for the contents.
    Batched,
}

/// Where a replay starts: the revisions of every source replica as of `as_of` (none when 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StartPoint {
    pub(super) as_of: u64,
}

impl<R: Record> Runtime<R> {
    pub(super) fn ensure_engine(&mut self) -> Result<(), Error> {
        if self.engine.is_some() {
            return Ok(());
        }
        let start = self.start_point(self.last_seq)?;
        let mut engine = match self.resume_plan(start)? {
            Some((plan, decoders)) => {
                self.resumed = (plan.seeds.iter().enumerate())
                    .filter(|(_, s)| s.is_some())
                    .map(|(i, _)| self.dag.replica(ReplicaId(i as u32)).name().to_string())
                    .collect();
                self.resumed_engine(start, plan, decoders)?
            }
            None => self.replay_engine(start, start.as_of, None)?,
        };
        // Rebuild deltas: derived replicas whose stored revision at the start point was made by
        // other logic are recomputed; the difference is published.
        let mut stale = false;
        if start.as_of > 0 {
            for (i, desc) in self.dag.replicas().iter().enumerate() {
                let id = ReplicaId(i as u32);
                if desc.is_source() || desc.is_view() {
                    continue;
                }
                if let Some(info) = self.revision_info(id, start.as_of)
                    && !self.is_fresh(&info)
                {
                    stale = true;
                    let stored = self.decode_revision(desc.name(), start.as_of)?;
                    let now = engine.read(id, None)?;
                    let updates = difference(&stored, &now);
                    self.rebuild_deltas.push(Delta {
                        seq: Seq(start.as_of),
                        replica: id,
                        kind: DeltaKind::Rebuild,
                        updates,
                    });
                }
            }
        }
        self.replay_log(&mut engine, start.as_of + 1, self.last_seq, Replay::Batched)?;
        engine.step_until(self.last_seq)?;
        self.engine = Some(engine);
        if stale && !self.config.read_only {
            self.capture_revisions()?;
        }
        Ok(())
    }

    /// The replicas the dataflow's restore resumed from their revisions instead of
    /// recomputing them (none before the dataflow starts, or when it started from scratch).
    pub fn resumed(&self) -> &[String] {
        &self.resumed
    }

    /// What a restore at `start` resumes instead of recomputing: every resumable derived
    /// replica, provided every derived replica has a current revision at the restore point
    /// (else everything is recomputed, and stale revisions give rebuild deltas). Decodes the
    /// revisions that resume computations read, in parallel.
    fn resume_plan(&self, start: StartPoint) -> Result<Option<Planned<R>>, Error> {
        if start.as_of == 0 || !self.config.resume {
            return Ok(None);
        }
        let dag = &self.dag;
        let n = dag.len();
        let derived = |i: usize| {
            let d = dag.replica(ReplicaId(i as u32));
            !d.is_source() && !d.is_view()
        };
        let all_current = (0..n).filter(|i| derived(*i)).all(|i| {
            self.revision_info(ReplicaId(i as u32), start.as_of)
                .is_some_and(|info| self.is_fresh(&info))
        });
        let resumed: Vec<bool> = (0..n)
            .map(|i| derived(i) && dag.replica(ReplicaId(i as u32)).is_resumable())
            .collect();
        if !all_current || !resumed.contains(&true) {
            return Ok(None);
        }
        // Based: a source or resumed replica that no recomputed replica reads.
        let based: Vec<bool> = (0..n)
            .map(|i| {
                let id = ReplicaId(i as u32);
                (dag.replica(id).is_source() || resumed[i])
                    && (0..n).all(|j| {
                        resumed[j]
                            || !derived(j)
                            || !dag.inputs_of(ReplicaId(j as u32)).contains(&id)
                    })
            })
            .collect();
        let wanted: BTreeSet<ReplicaId> = (0..n)
            .filter(|i| resumed[*i] && dag.replica(ReplicaId(*i as u32)).has_resume())
            .flat_map(|i| dag.inputs_of(ReplicaId(i as u32)).iter().copied())
            .collect();
        let (decoded, decoders) = self.decode_revisions(&wanted, start.as_of)?;
        let seeds = (0..n)
            .map(|i| {
                let id = ReplicaId(i as u32);
                resumed[i].then(|| {
                    let inputs = if dag.replica(id).has_resume() {
                        dag.inputs_of(id)
                            .iter()
                            .map(|x| decoded[x].clone())
                            .collect()
                    } else {
                        Vec::new()
                    };
                    Seeds::new(start.as_of, inputs)
                })
            })
            .collect();
        let plan = ResumePlan {
            as_of: start.as_of,
            seeds,
            based,
        };
        Ok(Some((plan, decoders)))
    }

    /// The revisions of `replicas` as of `as_of`, each sorted by record, read and decoded in
    /// the background by as many threads as there are cores, the smallest first, each
    /// revision's chunks shared among the threads (the restore does not wait for them; their
    /// first reader of all of it does, and lookups read the chunks they need meanwhile). A
    /// missing revision is an error here.
    fn decode_revisions(
        &self,
        replicas: &BTreeSet<ReplicaId>,
        as_of: u64,
    ) -> Result<Decoded<R>, Error> {
        let store = self.store.as_ref().expect("store");
        let infos = store.revisions()?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut revisions = Vec::new();
        let mut decoding = BTreeMap::new();
        for id in replicas {
            let name = self.dag.replica(*id).name().to_string();
            let info = (infos.iter())
                .find(|i| i.replica == name && i.as_of == as_of)
                .ok_or_else(|| {
                    Error::Store(prr_persist::Error::Missing(format!(
                        "no revision of `{name}` as of seq {as_of}"
                    )))
                })?;
            let cell = Decoding::stored(store, &name, as_of, info.chunks);
            decoding.insert(*id, cell.clone());
            revisions.push((std::cmp::Reverse(info.records), info.chunks, name, cell));
        }
        // Popped from the end: the smallest first. Those are what indexes are built from
        // (rules, instances); the large ones are mostly looked up, which their chunks serve
        // until they are decoded.
        revisions.sort_by_key(|r| r.0);
        let mut pieces = Vec::new();
        for (_, chunks, name, cell) in revisions {
            let n = chunks.div_ceil(threads as u32).max(1);
            let parts = chunks.div_ceil(n).max(1) as usize;
            let assembly = Arc::new(Assembly {
                name,
                as_of,
                parts: Mutex::new((0..parts).map(|_| None).collect()),
                remaining: AtomicUsize::new(parts),
                cell,
            });
            // The last part first: within a revision, the first part is popped first.
            for part in (0..parts).rev() {
                let from = (part as u32 * n).min(chunks);
                pieces.push(DecodePiece {
                    part,
                    range: from..(from + n).min(chunks),
                    assembly: assembly.clone(),
                });
            }
        }
        let pieces = Arc::new(Mutex::new(pieces));
        let stop = Arc::new(AtomicBool::new(false));
        #[cfg(test)]
        let paused = self.config.pause_decoding;
        let threads = (0..threads)
            .map(|_| {
                let (pieces, store, stop) = (pieces.clone(), store.clone(), stop.clone());
                std::thread::spawn(move || {
                    loop {
                        #[cfg(test)]
                        while paused && !stop.load(AtomicOrdering::SeqCst) {
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                        if stop.load(AtomicOrdering::SeqCst) {
                            break;
                        }
                        let piece = pieces.lock().expect("decode pieces lock").pop();
                        let Some(piece) = piece else { break };
                        piece.run(&store);
                    }
                })
            })
            .collect();
        let decoders = Decoders::new(stop, threads, decoding.values().cloned().collect());
        Ok((decoding, decoders))
    }

    /// A fresh engine that resumes the replicas of `plan`: fed with the revisions at the
    /// restore point of the sources and resumed replicas that are not based (see
    /// [`ResumePlan`]); the log after it is replayed by the caller.
    fn resumed_engine(
        &self,
        start: StartPoint,
        plan: ResumePlan<R>,
        decoders: Decoders<R>,
    ) -> Result<Engine<R>, Error> {
        let mut updates: Vec<SourceUpdate<R>> = Vec::new();
        for (i, desc) in self.dag.replicas().iter().enumerate() {
            if (desc.is_source() || plan.seeds[i].is_some()) && !plan.based[i] {
                let rows = self.decode_revision(desc.name(), start.as_of)?;
                updates.extend(rows.into_iter().map(|(r, d)| (i as u32, r, d)));
            }
        }
        // The seeds' revisions serve reads of based replicas too.
        let mut bases: Vec<Option<Arc<Decoding<R>>>> = vec![None; self.dag.len()];
        for (i, s) in plan.seeds.iter().enumerate() {
            let Some(s) = s else { continue };
            for (k, x) in self.dag.inputs_of(ReplicaId(i as u32)).iter().enumerate() {
                if plan.based[x.index()] {
                    bases[x.index()] = bases[x.index()].take().or_else(|| s.decoding(k));
                }
            }
        }
        let mut engine = Engine::start_resumed(
            self.dag.clone(),
            self.config.workers,
            Some((Arc::new(plan), decoders)),
        )?;
        for (i, rows) in bases.into_iter().enumerate() {
            if let Some(rows) = rows {
                engine.set_base(ReplicaId(i as u32), rows);
            }
        }
        engine.feed(start.as_of, updates)?;
        engine.step_until(start.as_of)?;
        Ok(engine)
    }

    /// A fresh engine fed with the source revisions of `start` and the log up to `upto`.
    pub(super) fn replay_engine(
        &self,
        start: StartPoint,
        upto: u64,
        _capture: Option<ReplicaId>,
    ) -> Result<Engine<R>, Error> {
        let mut engine = Engine::start(self.dag.clone(), self.config.workers)?;
        if start.as_of > 0 {
            let mut updates: Vec<SourceUpdate<R>> = Vec::new();
            for id in self.dag.sources() {
                let rows = self.decode_revision(self.dag.replica(id).name(), start.as_of)?;
                updates.extend(rows.into_iter().map(|(r, d)| (id.0, r, d)));
            }
            engine.feed(start.as_of, updates)?;
            engine.step_until(start.as_of)?;
        }
        self.replay_log(&mut engine, start.as_of + 1, upto, Replay::Batched)?;
        engine.step_until(upto)?;
        Ok(engine)
    }

    /// Feeds the log entries `from..=through` to `engine`. With [`Replay::EachSeq`], each at
    /// its own `Seq` (a subscriber sees each one's delta); with [`Replay::Batched`], the
    /// entries of each step (up to [`REPLAY_STEP`] of them) together at the step's last `Seq`:
    /// the contents through each step are the same, computed once per step instead of once
    /// per entry.
    pub(super) fn replay_log(
        &self,
        engine: &mut Engine<R>,
        from: u64,
        through: u64,
        replay: Replay,
    ) -> Result<(), Error> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        if from > through {
            return Ok(());
        }
        let mut expected = from;
        let mut pending: Vec<SourceUpdate<R>> = Vec::new();
        store.for_each_log(from, |seq, bytes| {
            if seq > through {
                return Ok(());
            }
            if seq != expected {
                return Err(Error::HistoryUnavailable(format!(
                    "the source log lacks seq {expected} (next retained: {seq})"
                )));
            }
            expected += 1;
            let logged: LoggedDelta<R> = codec::decode(bytes, &format!("log entry {seq}"))?;
            for (name, rows) in logged {
                let id = self.dag.id(&name).ok_or_else(|| {
                    Error::Corrupt(format!("log entry {seq} names replica `{name}`, which this program does not declare"))
                })?;
                pending.extend(rows.into_iter().map(|(r, d)| (id.0, r, d as isize)));
            }
            // Step now and then: a long tail fed at once would pile up uncomputed (and its
            // arrangements uncompacted) until the end.
            let step_ends = (seq - from + 1).is_multiple_of(REPLAY_STEP) || seq == through;
            if replay == Replay::EachSeq || step_ends {
                engine.feed(seq, std::mem::take(&mut pending))?;
            }
            if step_ends {
                engine.step_until(seq)?;
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

    /// The newest restore point at or before `upto`: a complete, current set of source
    /// revisions, or the empty beginning when the log reaches back to seq 1.
    pub(super) fn start_point(&self, upto: u64) -> Result<StartPoint, Error> {
        let Some(store) = &self.store else {
            return Ok(StartPoint { as_of: 0 });
        };
        let revisions = store.revisions()?;
        let first_log = store.first_log_seq()?;
        let sets = self.source_sets(&revisions);
        if let Some(as_of) = sets.iter().rev().find(|a| **a <= upto) {
            return Ok(StartPoint { as_of: *as_of });
        }
        if self.log_reaches_start(first_log) {
            return Ok(StartPoint { as_of: 0 });
        }
        Err(Error::HistoryUnavailable(format!(
            "nothing retained reaches back to seq {upto}: the log {} and the oldest restore point is {}",
            first_log
                .map(|f| format!("starts at seq {f}"))
                .unwrap_or_else(|| "is empty".into()),
            sets.first()
                .map(|s| format!("seq {s}"))
                .unwrap_or_else(|| "none".into())
        )))
    }

    /// The oldest restore point: the start of a rebuild from the log.
    pub(super) fn log_start_point(&self) -> Result<StartPoint, Error> {
        let store = self.store.as_ref().expect("store");
        let first_log = store.first_log_seq()?;
        if self.log_reaches_start(first_log) {
            return Ok(StartPoint { as_of: 0 });
        }
        let sets = self.source_sets(&store.revisions()?);
        sets.first()
            .map(|a| StartPoint { as_of: *a })
            .ok_or_else(|| {
                Error::HistoryUnavailable(
                    "the log does not start at seq 1 and no source revision is retained".into(),
                )
            })
    }

    /// Whether the retained log begins at seq 1 (an empty log only if nothing was committed).
    pub(super) fn log_reaches_start(&self, first_log: Option<u64>) -> bool {
        match first_log {
            Some(f) => f <= 1,
            None => self.last_seq == 0,
        }
    }

    /// The `as_of`s at which every source replica has a current revision, ascending.
    pub(super) fn source_sets(&self, revisions: &[RevisionInfo]) -> Vec<u64> {
        let mut by_as_of: BTreeMap<u64, usize> = BTreeMap::new();
        for info in revisions {
            if let Some(id) = self.dag.id(&info.replica)
                && self.dag.replica(id).is_source()
                && self.is_fresh(info)
            {
                *by_as_of.entry(info.as_of).or_default() += 1;
            }
        }
        let n = self.dag.sources().count();
        by_as_of
            .into_iter()
            .filter(|(_, c)| *c == n)
            .map(|(a, _)| a)
            .collect()
    }
}

/// A revision decoded in the background in parts (see [`Runtime::decode_revisions`]): the
/// thread that decodes its last part assembles it.
struct Assembly<R> {
    name: String,
    as_of: u64,
    /// Each part's rows, once decoded.
    parts: Mutex<Vec<Option<PartRows<R>>>>,
    remaining: AtomicUsize,
    cell: Arc<Decoding<R>>,
}

/// Some chunks of a revision to decode.
struct DecodePiece<R> {
    part: usize,
    range: std::ops::Range<u32>,
    assembly: Arc<Assembly<R>>,
}

impl<R: Record> DecodePiece<R> {
    fn run(self, store: &Store) {
        let a = &self.assembly;
        let (name, as_of) = (&a.name, a.as_of);
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut rows = Vec::new();
            let n = self.range.len();
            store.for_each_revision_chunk(name, as_of, self.range.clone(), |i, chunk| {
                let part = codec::decode_chunk(chunk, name, as_of, i)?;
                if rows.is_empty() {
                    rows.reserve(part.len() * n);
                }
                rows.extend(part);
                Ok::<_, Error>(())
            })?;
            Ok::<_, Error>(rows)
        }));
        let rows = match decoded {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return a.cell.set(Err(e.to_string())),
            Err(_) => {
                return a
                    .cell
                    .set(Err(format!("decoding revision ({name}, {as_of}) panicked")));
            }
        };
        a.parts.lock().expect("decoded parts lock")[self.part] = Some(rows);
        if a.remaining.fetch_sub(1, AtomicOrdering::AcqRel) == 1 {
            let parts = std::mem::take(&mut *a.parts.lock().expect("decoded parts lock"));
            let mut all = Vec::with_capacity(parts.iter().flatten().map(Vec::len).sum());
            for part in parts.into_iter().flatten() {
                all.extend(part);
            }
            a.cell.set(Ok(Arc::new(super::sorted(all))));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::mpsc::{Receiver, Sender, channel};
    use std::sync::{Arc, Mutex};

    use prr_persist::Store;

    use crate::{Dag, Input, ReplicaDescription, Runtime, RuntimeConfig, SourceDelta};

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
}
