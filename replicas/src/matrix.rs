//! The Matrix replicas on a runtime: ingest parsed files, read replicas as JSON.

use std::collections::{BTreeMap, HashMap, HashSet};

use prr_engine::{Error, Id, Runtime, RuntimeConfig, Seq, catch_damage};
use serde_json::Value;

use crate::dag::matrix_dag;
use crate::ingest::Ingestor;
use crate::parse::{Event, SourceItem};
use crate::record::Rec;
use crate::render::{render_sorted, to_json};

mod effects;
mod preview;

pub use effects::{Gone, IntentKey, Intents, NewOutcome, Previous, Work};

/// A runtime running the Matrix replicas, with the ingest state beside it.
pub struct Matrix {
    rt: Runtime<Rec>,
    ingestor: Option<Ingestor>,
    /// How many deltas the runtime had quarantined when the ingest state was loaded.
    ingestor_poisoned: usize,
    /// The event IDs of `source_events`, loaded when first needed (and again after a failed
    /// commit or a quarantine, like the ingest state).
    seen: Option<HashSet<Id>>,
}

/// An event that a homeserver source delivered (an event of an appservice transaction), for
/// [`Matrix::ingest_received`].
// Valid events are by far the most common; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Received {
    /// A valid state event or redaction: applied to `room_state`.
    Valid(Event),
    /// An event that is not valid: it goes to `rejects` (through `source_events`) with its
    /// reason. Fields the event lacks are empty strings.
    Invalid {
        /// The room, as written.
        room_id: String,
        /// The event ID, or a stand-in derived from the event's JSON when it has none.
        event_id: String,
        /// The type, as written.
        event_type: String,
        /// The state key, as written.
        state_key: String,
        /// What is wrong (the field and why).
        reason: String,
    },
}

impl Received {
    /// The event ID it is deduplicated by.
    pub fn event_id(&self) -> &str {
        match self {
            Received::Valid(e) => &e.event_id,
            Received::Invalid { event_id, .. } => event_id,
        }
    }
}

/// What one ingest changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestSummary {
    /// The source deltas added, in order.
    pub seqs: Vec<Seq>,
    /// Per replica, the records added and removed.
    pub changes: BTreeMap<String, (u64, u64)>,
}

impl Matrix {
    /// Starts the runtime (opening its store, if configured) with the Matrix replicas.
    pub fn start(config: RuntimeConfig) -> Result<Self, Error> {
        let rt = Runtime::start_with(config, matrix_dag)?;
        Ok(Self::from_runtime(rt))
    }

    /// The Matrix replicas on a runtime already started with [`matrix_dag`] (e.g. on a store
    /// with a fault-injecting backend, for tests).
    pub fn from_runtime(rt: Runtime<Rec>) -> Self {
        Matrix {
            rt,
            ingestor: None,
            ingestor_poisoned: 0,
            seen: None,
        }
    }

    /// The runtime underneath.
    pub fn runtime(&mut self) -> &mut Runtime<Rec> {
        &mut self.rt
    }

    /// The ingest state, loaded from the replicas when first needed, and again after the
    /// runtime quarantined a delta: the state had applied it, the replicas have not.
    fn ingestor(&mut self) -> Result<&mut Ingestor, Error> {
        let poisoned = self.rt.newly_poisoned().len();
        if poisoned != self.ingestor_poisoned {
            self.ingestor = None;
            self.seen = None;
            self.ingestor_poisoned = poisoned;
        }
        if self.ingestor.is_none() {
            let rs = self.rt.replica("room_state")?;
            let inst = self.rt.replica("instances")?;
            // After a restore, `room_state` is the revision restored from (shared, looked up
            // in place) and the changes since it: nothing of a million records is copied.
            let states = self.rt.read_split(rs)?;
            let instances = self.rt.read(inst, None)?;
            let changes = states.changes.into_iter().chain(instances);
            self.ingestor = Some(Ingestor::split(rs, inst, states.base, changes));
        }
        Ok(self.ingestor.as_mut().expect("ingestor loaded"))
    }

    /// Ingests one source delta (a parsed file): commits it durably and feeds it. Returns its
    /// `Seq`; replicas are final through it when this returns (a delta that a replica's
    /// computation panicked on is quarantined instead: see `Runtime::newly_poisoned`).
    pub fn ingest(&mut self, items: &[SourceItem]) -> Result<Seq, Error> {
        Ok(self.ingest_many(&[items])?[0])
    }

    /// Ingests several source deltas in one durable commit (a group commit); replicas are final
    /// through the last when this returns.
    pub fn ingest_many<B: AsRef<[SourceItem]>>(
        &mut self,
        batches: &[B],
    ) -> Result<Vec<Seq>, Error> {
        let seqs = self.submit_many(batches)?;
        self.rt
            .step_until(*seqs.last().expect("at least one batch"))?;
        Ok(seqs)
    }

    /// Commits several source deltas in one durable commit (a group commit) and hands them to
    /// the dataflow, without waiting for them to be computed: the workers compute while the
    /// caller prepares and commits the next group ([`Pipeline`]). Each delta is acknowledged
    /// (durable) when this returns; [`Matrix::wait`] waits until replicas are final through a
    /// `Seq`. At least one batch.
    pub fn submit_many<B: AsRef<[SourceItem]>>(
        &mut self,
        batches: &[B],
    ) -> Result<Vec<Seq>, Error> {
        assert!(!batches.is_empty(), "submit_many needs at least one batch");
        self.ingestor()?;
        let dict = self.rt.dictionary().clone();
        let ingestor = self.ingestor.as_mut().expect("ingestor loaded");
        // Each batch sees the state left by the ones before it.
        let mut deltas = Vec::with_capacity(batches.len());
        for items in batches {
            // A lookup in a damaged revision is an error: the batches before it are staged
            // but not stored, so the ingest state is reloaded.
            let mut prepared = match catch_damage(|| ingestor.prepare(&dict, items.as_ref())) {
                Ok(p) => p,
                Err(e) => {
                    self.ingestor = None;
                    return Err(e);
                }
            };
            deltas.push(std::mem::take(&mut prepared.delta));
            ingestor.commit(prepared);
        }
        self.rt.push_many(deltas).inspect_err(|e| {
            if e.committed().is_empty() {
                // The ingest state ran ahead of the store: reload it from the replicas.
                self.ingestor = None;
            }
        })
    }

    /// Ingests the events a homeserver source delivered (one appservice transaction) as one
    /// source delta, **exactly once by event ID**: an event whose ID `source_events` holds
    /// (from any earlier delta, whatever transaction brought it) or that came earlier in
    /// `events` is left out. The others are applied (valid ones to `room_state`, invalid ones to
    /// `rejects`) and their IDs added to `source_events` in the same source delta, so the IDs
    /// are durable exactly when their effect is. Returns the new `Seq` once replicas are final
    /// through it, or `None` when nothing was new (nothing is stored).
    ///
    /// An error with [`Error::committed`] empty stored nothing; a retry is safe either way.
    ///
    /// A state event older (by `origin_server_ts`) than the current record at its key is
    /// recorded in `source_events` but not applied: a homeserver retrying a backlog after prr
    /// was down delivers events older than the state catch-up fetched since. (With clocks
    /// that disagree, a newer event may look older: the next resync applies it.)
    pub fn ingest_received(&mut self, events: Vec<Received>) -> Result<Option<Seq>, Error> {
        let fresh = self.fresh(events)?;
        let dict = self.rt.dictionary().clone();
        let ingestor = self.ingestor()?;
        let stale: HashSet<String> = catch_damage(|| {
            (fresh.iter())
                .filter_map(|e| match e {
                    Received::Valid(ev) if ingestor.older_than_current(&dict, ev) => {
                        Some(ev.event_id.clone())
                    }
                    _ => None,
                })
                .collect()
        })?;
        self.apply(fresh, Vec::new(), None, &stale)
    }

    /// Ingests a room's current state as the homeserver gives it (`GET /rooms/{room}/state`,
    /// for catch-up and resync), as **authoritative**: every state event that is not the
    /// current `room_state` record at its key is applied, even if its event ID was seen
    /// before (an older event may have been applied after it), so that afterwards the room's
    /// `room_state` equals the homeserver's state at those keys. The IDs not yet in
    /// `source_events` are added there in the same source delta, so a transaction that
    /// brings one of these events later is a duplicate. Invalid events are rejects, once.
    /// The keys `(type, state_key)` in `newer` are left as they are: a transaction changed
    /// them while the state was being fetched, so the fetched event there may be older.
    /// Returns `None` when the state was already current (nothing is stored).
    pub fn ingest_room_state(
        &mut self,
        room_id: &str,
        events: Vec<Received>,
        newer: &HashSet<(String, String)>,
    ) -> Result<Option<Seq>, Error> {
        self.load_seen()?;
        // (event ID, redacted) by key: an event the homeserver redacted since it was applied
        // (the redaction lost) differs too, and is applied again, redacted.
        let current: HashMap<(String, String), (String, bool)> =
            (self.show("room_state", Some(room_id), None)?)
                .into_iter()
                .filter_map(|r| {
                    let field = |f: &str| r[f].as_str().map(str::to_string);
                    let now = (field("event_id")?, r["redacted"] == true);
                    Some(((field("type")?, field("state_key")?), now))
                })
                .collect();
        let dict = self.rt.dictionary().clone();
        let seen = self.seen.as_ref().expect("seen loaded");
        let mut in_batch = HashSet::new();
        let differs: Vec<Received> = (events.into_iter())
            .filter(|e| {
                let new = match e {
                    Received::Valid(ev) => match &ev.state_key {
                        Some(key) => {
                            let at = (ev.event_type.clone(), key.clone());
                            !newer.contains(&at)
                                && current.get(&at).is_none_or(|(id, redacted)| {
                                    *id != ev.event_id || (ev.redacted_because && !redacted)
                                })
                        }
                        None => !(dict.lookup(&ev.event_id)).is_some_and(|id| seen.contains(&id)),
                    },
                    Received::Invalid { event_id, .. } => {
                        !(dict.lookup(event_id)).is_some_and(|id| seen.contains(&id))
                    }
                };
                new && in_batch.insert(e.event_id().to_string())
            })
            .collect();
        self.apply_received(differs)
    }

    /// The events of `events` whose IDs neither `source_events` holds nor an earlier event of
    /// `events` has: each new event once, in order.
    fn fresh(&mut self, events: Vec<Received>) -> Result<Vec<Received>, Error> {
        self.load_seen()?;
        let dict = self.rt.dictionary().clone();
        let seen = self.seen.as_ref().expect("seen loaded");
        let mut in_batch = HashSet::new();
        Ok((events.into_iter())
            .filter(|e| {
                let old = (dict.lookup(e.event_id())).is_some_and(|id| seen.contains(&id));
                !old && in_batch.insert(e.event_id().to_string())
            })
            .collect())
    }

    /// Loads the IDs of `source_events` once.
    fn load_seen(&mut self) -> Result<(), Error> {
        self.ingestor()?;
        if self.seen.is_none() {
            let source_events = self.rt.replica("source_events")?;
            let rows = self.rt.read(source_events, None)?;
            let ids = rows.into_iter().filter_map(|(r, _)| match r {
                Rec::SourceEvent { event_id, .. } => Some(event_id),
                _ => None,
            });
            self.seen = Some(ids.collect());
        }
        Ok(())
    }

    /// Ingests what one `/sync` response of a homeserver source brought, as one source delta:
    /// its events exactly once by event ID (as [`Matrix::ingest_received`]), `extra` items
    /// before them (the instance manifest read from the account's data), and the source's new
    /// `position` in `source_positions`, so that the position is durable exactly when what
    /// came before it is. Returns `None`, storing nothing (not even the position), when
    /// nothing is new: resuming from an older position then brings nothing new either.
    pub fn ingest_from_source(
        &mut self,
        events: Vec<Received>,
        extra: Vec<SourceItem>,
        source: &str,
        position: &str,
    ) -> Result<Option<Seq>, Error> {
        let fresh = self.fresh(events)?;
        self.apply(fresh, extra, Some((source, position)), &HashSet::new())
    }

    /// Where the homeserver source `source` is, as stored in `source_positions`.
    pub fn source_position(&mut self, source: &str) -> Result<Option<String>, Error> {
        let rows = self.show("source_positions", Some(source), None)?;
        Ok(rows
            .first()
            .and_then(|r| r["position"].as_str())
            .map(str::to_string))
    }

    /// Applies `fresh` (each event once) as one source delta, adding to `source_events` the
    /// IDs it does not hold yet.
    fn apply_received(&mut self, fresh: Vec<Received>) -> Result<Option<Seq>, Error> {
        self.apply(fresh, Vec::new(), None, &HashSet::new())
    }

    /// [`Matrix::apply_received`] with `extra` items first and a source position; the events
    /// whose IDs are in `stale` are only recorded in `source_events`.
    fn apply(
        &mut self,
        fresh: Vec<Received>,
        extra: Vec<SourceItem>,
        position: Option<(&str, &str)>,
        stale: &HashSet<String>,
    ) -> Result<Option<Seq>, Error> {
        if fresh.is_empty() && extra.is_empty() {
            return Ok(None);
        }
        let old_position = match position {
            Some((source, _)) => self.source_position(source)?,
            None => None,
        };
        self.ingestor()?;
        let source_events = self.rt.replica("source_events")?;
        let dict = self.rt.dictionary().clone();
        let mut items = extra;
        items.extend(fresh.iter().filter_map(|e| match e {
            Received::Valid(ev) if !stale.contains(&ev.event_id) => {
                Some(SourceItem::Event(ev.clone()))
            }
            _ => None,
        }));
        let ingestor = self.ingestor.as_mut().expect("ingestor loaded");
        let mut prepared = catch_damage(|| ingestor.prepare(&dict, &items))?;
        let mut delta = std::mem::take(&mut prepared.delta);
        ingestor.commit(prepared);
        let mut ids = Vec::with_capacity(fresh.len());
        for e in &fresh {
            let record = match e {
                Received::Valid(ev) => Rec::SourceEvent {
                    room: dict.intern(&ev.room_id),
                    event_id: dict.intern(&ev.event_id),
                    event_type: dict.intern(&ev.event_type),
                    state_key: dict.intern(ev.state_key.as_deref().unwrap_or("")),
                    invalid: None,
                },
                Received::Invalid {
                    room_id,
                    event_id,
                    event_type,
                    state_key,
                    reason,
                } => Rec::SourceEvent {
                    room: dict.intern(room_id),
                    event_id: dict.intern(event_id),
                    event_type: dict.intern(event_type),
                    state_key: dict.intern(state_key),
                    invalid: Some(dict.intern(reason)),
                },
            };
            if let Rec::SourceEvent { event_id, .. } = &record {
                if self
                    .seen
                    .as_ref()
                    .is_some_and(|seen| seen.contains(event_id))
                {
                    continue;
                }
                ids.push(*event_id);
            }
            delta.insert(source_events, record);
        }
        if let Some((source, new)) = position {
            let positions = self.rt.replica("source_positions")?;
            let source = dict.intern(source);
            if let Some(old) = old_position {
                let position = dict.intern(&old);
                delta.remove(positions, Rec::SourcePosition { source, position });
            }
            let position = dict.intern(new);
            delta.insert(positions, Rec::SourcePosition { source, position });
        }
        match self.rt.push(delta) {
            Ok(seq) => {
                self.seen.as_mut().expect("seen loaded").extend(ids);
                self.rt.step_until(seq)?;
                Ok(Some(seq))
            }
            Err(e) => {
                if e.committed().is_empty() {
                    // Perhaps committed (in doubt), perhaps not: both reload from the store.
                    self.ingestor = None;
                    self.seen = None;
                } else {
                    self.seen.as_mut().expect("seen loaded").extend(ids);
                }
                Err(e)
            }
        }
    }

    /// Waits until every replica is final through `seq` (and delivers the deltas up to it to
    /// subscribers).
    pub fn wait(&mut self, seq: Seq) -> Result<(), Error> {
        self.rt.step_until(seq)
    }

    /// A replica's records as the spec's JSON objects, sorted by key: all of them or one
    /// partition (a room or instance ID), now or as of an earlier `Seq`.
    pub fn show(
        &mut self,
        replica: &str,
        partition: Option<&str>,
        as_of: Option<Seq>,
    ) -> Result<Vec<Value>, Error> {
        let id = self.rt.replica(replica)?;
        let part = match partition {
            Some(p) => match self.rt.dictionary().lookup(p) {
                Some(pid) => Some(pid),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let rows = match as_of {
            Some(seq) => self.rt.read_as_of(id, seq, part)?,
            None => self.rt.read(id, part)?,
        };
        Ok(render_sorted(self.rt.dictionary(), &rows))
    }

    /// A replica's deltas after `since`, as `{"seq", "diff", "record"}` objects in `Seq` order.
    pub fn deltas(&mut self, replica: &str, since: Seq) -> Result<Vec<Value>, Error> {
        let id = self.rt.replica(replica)?;
        let deltas = self.rt.deltas_since(id, since)?;
        Ok(self.render_deltas(&deltas, false))
    }

    /// `deltas` (of one replica, in `Seq` order) as the lines [`Matrix::deltas`] gives.
    pub fn deltas_json(&self, deltas: &[prr_engine::Delta<Rec>]) -> Vec<Value> {
        self.render_deltas(deltas, false)
    }

    /// Each update of `deltas` as JSON lines `{"seq", "diff", "record"}` (`diff` 1 or -1, an
    /// update of multiplicity n as n lines), per delta in the order of [`Matrix::deltas`];
    /// with `named`, each line starts with `"replica"`.
    fn render_deltas(&self, deltas: &[prr_engine::Delta<Rec>], named: bool) -> Vec<Value> {
        let dict = self.rt.dictionary();
        let dag = self.rt.dag();
        let mut out = Vec::new();
        for d in deltas {
            let mut rows: Vec<(Vec<String>, isize, Value)> = d
                .updates
                .iter()
                .map(|(r, diff)| (crate::render::sort_key(dict, r), *diff, to_json(dict, r)))
                .collect();
            rows.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
            for (_, diff, record) in rows {
                let mut line = serde_json::Map::new();
                if named {
                    line.insert("replica".into(), dag.replica(d.replica).name().into());
                }
                line.insert("seq".into(), d.seq.0.into());
                line.insert("diff".into(), diff.signum().into());
                line.insert("record".into(), record);
                for _ in 0..diff.unsigned_abs() {
                    out.push(Value::Object(line.clone()));
                }
            }
        }
        out
    }

    /// Stops the runtime, capturing revisions first.
    pub fn shutdown(self) -> Result<(), Error> {
        self.rt.shutdown()
    }
}

/// Group commits in a pipeline of depth one: each [`Pipeline::submit`] commits a group
/// ([`Matrix::submit_many`]) and then waits for the group submitted before it, so the workers
/// compute one group while the next is prepared and committed, and no more than two groups are
/// ever in flight. `prr ingest` ingests directories this way.
#[derive(Debug, Default)]
pub struct Pipeline {
    in_flight: Option<Seq>,
    final_through: Option<Seq>,
}

impl Pipeline {
    /// A group holds consecutive batches up to this many...
    pub const GROUP_BATCHES: usize = 64;
    /// ...or until it holds this many items, whichever comes first.
    pub const GROUP_ITEMS: usize = 100_000;

    /// The end (exclusive) of the group of batches that starts at `start`, among the first
    /// `len`: at least one batch, then more while the group has fewer than
    /// [`Pipeline::GROUP_BATCHES`] batches and [`Pipeline::GROUP_ITEMS`] items. `items(i)` is
    /// the number of items of batch `i`.
    pub fn group_end(start: usize, len: usize, items: impl Fn(usize) -> usize) -> usize {
        let mut end = start;
        let mut n = 0;
        while end < len
            && (end == start || (end - start < Self::GROUP_BATCHES && n < Self::GROUP_ITEMS))
        {
            n += items(end);
            end += 1;
        }
        end
    }

    /// An empty pipeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Commits `batches` (at least one) as one group, each its own source delta, then waits
    /// until the group submitted before is final. Returns the new group's `Seq`s.
    pub fn submit<B: AsRef<[SourceItem]>>(
        &mut self,
        m: &mut Matrix,
        batches: &[B],
    ) -> Result<Vec<Seq>, Error> {
        let seqs = m.submit_many(batches).inspect_err(|e| {
            // Committed, but the revision capture after them failed: they are in flight.
            if let Some(last) = e.committed().last() {
                self.in_flight = self.in_flight.max(Some(*last));
            }
        })?;
        if let Some(previous) = self
            .in_flight
            .replace(*seqs.last().expect("at least one batch"))
        {
            m.wait(previous)?;
            self.final_through = Some(previous);
        }
        Ok(seqs)
    }

    /// Waits until everything submitted is final.
    pub fn finish(&mut self, m: &mut Matrix) -> Result<(), Error> {
        if let Some(last) = self.in_flight.take() {
            m.wait(last)?;
            self.final_through = Some(last);
        }
        Ok(())
    }

    /// The last `Seq` this pipeline has waited for: every replica is final through it.
    pub fn final_through(&self) -> Option<Seq> {
        self.final_through
    }
}

#[cfg(test)]
mod tests {
    use prr_engine::{RuntimeConfig, Seq};

    use super::{Matrix, Pipeline};
    use crate::parse::parse_file;

    /// The Matrix replicas on a runtime, plus `tripwire`, which panics on `$poison`.
    fn with_tripwire(config: RuntimeConfig) -> Matrix {
        let rt = prr_engine::Runtime::start_with(config, |dict| {
            crate::dag_with_tripwire(dict, "$poison")
        })
        .unwrap();
        Matrix::from_runtime(rt)
    }

    fn member(event_id: &str, user: &str, membership: &str) -> Vec<crate::parse::SourceItem> {
        let file = format!(
            r#"[{{"event_id": "{event_id}", "room_id": "!r:x", "type": "m.room.member",
                "state_key": "{user}", "sender": "{user}", "content": {{"membership": "{membership}"}}}}]"#
        );
        parse_file("f.json", file.as_bytes()).unwrap()
    }

    /// After a quarantine, the ingest state is reloaded from the replicas: the next delta
    /// replaces what the replicas hold, not what the quarantined delta would have put there.
    #[test]
    fn the_ingest_state_forgets_a_quarantined_delta() {
        for workers in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let config = RuntimeConfig::new()
                .with_store(dir.path().join("s.redb"))
                .with_workers(workers);
            let mut m = with_tripwire(config);
            m.ingest(&member("$1", "@a:x", "join")).unwrap();
            assert_eq!(
                m.ingest(&member("$poison", "@b:x", "join")).unwrap(),
                Seq(2)
            );
            assert_eq!(m.runtime().newly_poisoned(), [Seq(2)]);
            m.ingest(&member("$3", "@b:x", "leave")).unwrap();
            let state = m.show("room_state", None, None).unwrap();
            let ids: Vec<&str> = state
                .iter()
                .map(|r| r["event_id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, ["$1", "$3"], "{workers} workers: {state:?}");
            let members = m.show("room_members", None, None).unwrap();
            let got: Vec<(&str, &str)> = (members.iter())
                .map(|r| {
                    (
                        r["user_id"].as_str().unwrap(),
                        r["membership"].as_str().unwrap(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [("@a:x", "join"), ("@b:x", "leave")],
                "{workers} workers"
            );
            m.shutdown().unwrap();
        }
    }

    fn received(event_id: &str, user: &str, membership: &str) -> super::Received {
        match member(event_id, user, membership).remove(0) {
            crate::parse::SourceItem::Event(e) => super::Received::Valid(e),
            other => panic!("{other:?}"),
        }
    }

    /// A room's fetched state is authoritative: an event seen before is applied again when
    /// an older one was applied after it; what is current stores nothing; and a transaction
    /// that brings a fetched event later is a duplicate.
    #[test]
    fn fetched_room_state_is_authoritative_and_marks_its_events_seen() {
        let dir = tempfile::tempdir().unwrap();
        let config = RuntimeConfig::new().with_store(dir.path().join("s.redb"));
        let mut m = Matrix::start(config).unwrap();
        let ids = |m: &mut Matrix| -> Vec<String> {
            (m.show("room_state", Some("!r:x"), None).unwrap().iter())
                .map(|r| r["event_id"].as_str().unwrap().to_string())
                .collect()
        };
        // $2 (leave) is newer than $1 (join), but a late transaction applied $1 after it.
        assert_eq!(
            m.ingest_received(vec![received("$2", "@a:x", "leave")])
                .unwrap(),
            Some(Seq(1))
        );
        assert_eq!(
            m.ingest_received(vec![received("$1", "@a:x", "join")])
                .unwrap(),
            Some(Seq(2))
        );
        assert_eq!(ids(&mut m), ["$1"]);
        // The homeserver's state says $2, and has @b's join ($3) that no transaction brought.
        let state = vec![
            received("$2", "@a:x", "leave"),
            received("$3", "@b:x", "join"),
        ];
        assert_eq!(
            m.ingest_room_state("!r:x", state.clone(), &Default::default())
                .unwrap(),
            Some(Seq(3))
        );
        assert_eq!(ids(&mut m), ["$2", "$3"]);
        // Fetched again: already current, nothing stored. Then the homeserver redacted $3 and
        // its redaction was lost: the fetched $3, redacted, applies, once.
        let mut state = state;
        assert_eq!(
            m.ingest_room_state("!r:x", state.clone(), &Default::default())
                .unwrap(),
            None
        );
        if let super::Received::Valid(e) = &mut state[1] {
            e.redacted_because = true;
        }
        for seq in [Some(Seq(4)), None] {
            let got = m.ingest_room_state("!r:x", state.clone(), &Default::default());
            assert_eq!(got.unwrap(), seq);
        }
        assert_eq!(
            m.show("room_state", Some("!r:x"), None).unwrap()[1]["redacted"],
            true
        );
        // $3 arriving in a transaction now is a duplicate.
        assert_eq!(
            m.ingest_received(vec![received("$3", "@b:x", "join")])
                .unwrap(),
            None
        );
        // A key a transaction changed while the state was fetched keeps the transaction's event.
        assert_eq!(
            m.ingest_received(vec![received("$5", "@b:x", "leave")])
                .unwrap(),
            Some(Seq(5))
        );
        let stale = vec![received("$3", "@b:x", "join")];
        let newer = [("m.room.member".to_string(), "@b:x".to_string())].into();
        assert_eq!(m.ingest_room_state("!r:x", stale, &newer).unwrap(), None);
        assert_eq!(ids(&mut m), ["$2", "$5"]);
        // Each event ID is in source_events once.
        let seen = m.show("source_events", None, None).unwrap();
        assert_eq!(seen.len(), 4, "{seen:?}");
        m.shutdown().unwrap();
    }

    fn received_at(event_id: &str, user: &str, membership: &str, ts: i64) -> super::Received {
        let file = format!(
            r#"[{{"event_id": "{event_id}", "room_id": "!r:x", "type": "m.room.member",
                "state_key": "{user}", "sender": "{user}", "origin_server_ts": {ts},
                "content": {{"membership": "{membership}"}}}}]"#
        );
        match parse_file("f.json", file.as_bytes()).unwrap().remove(0) {
            crate::parse::SourceItem::Event(e) => super::Received::Valid(e),
            other => panic!("{other:?}"),
        }
    }

    /// A backlog delivered after the state was fetched: a transaction's event older than the
    /// current one at its key is recorded (seen once) but not applied; a newer one is.
    #[test]
    fn a_transaction_event_older_than_the_current_state_is_seen_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let config = RuntimeConfig::new().with_store(dir.path().join("s.redb"));
        let mut m = Matrix::start(config).unwrap();
        let state = |m: &mut Matrix| -> Vec<(String, String)> {
            (m.show("room_state", Some("!r:x"), None).unwrap().iter())
                .map(|r| {
                    let id = r["event_id"].as_str().unwrap().to_string();
                    (id, r["content"]["membership"].as_str().unwrap().to_string())
                })
                .collect()
        };
        let fetched = vec![received_at("$30", "@a:x", "leave", 30)];
        (m.ingest_room_state("!r:x", fetched, &Default::default())).unwrap();
        // The backlog: joins at 10 and 20 (both older than the leave), in one transaction.
        let backlog = vec![
            received_at("$10", "@a:x", "join", 10),
            received_at("$20", "@a:x", "join", 20),
        ];
        assert_eq!(m.ingest_received(backlog.clone()).unwrap(), Some(Seq(2)));
        assert_eq!(state(&mut m), [("$30".to_string(), "leave".to_string())]);
        assert_eq!(m.ingest_received(backlog).unwrap(), None, "seen once");
        // A newer event applies; an event without a timestamp is not judged.
        let newer = vec![received_at("$40", "@a:x", "join", 40)];
        assert_eq!(m.ingest_received(newer).unwrap(), Some(Seq(3)));
        assert_eq!(state(&mut m), [("$40".to_string(), "join".to_string())]);
        m.ingest_received(vec![received("$50", "@a:x", "leave")])
            .unwrap();
        assert_eq!(state(&mut m), [("$50".to_string(), "leave".to_string())]);
        let seen = m.show("source_events", None, None).unwrap();
        assert_eq!(seen.len(), 5, "{seen:?}");
        m.shutdown().unwrap();
    }

    #[test]
    fn groups_stop_at_the_batch_or_item_bound_and_hold_at_least_one_batch() {
        // Small batches: 64 per group.
        assert_eq!(Pipeline::group_end(0, 200, |_| 10), 64);
        assert_eq!(Pipeline::group_end(64, 100, |_| 10), 100);
        // Items: the group closes once it holds 100k or more.
        assert_eq!(Pipeline::group_end(0, 10, |_| 40_000), 3);
        // A batch larger than the bound is a group of its own.
        assert_eq!(Pipeline::group_end(5, 10, |_| 1_000_000), 6);
        assert_eq!(Pipeline::group_end(9, 10, |_| 1), 10);
        assert_eq!(Pipeline::group_end(10, 10, |_| 1), 10);
    }
}
