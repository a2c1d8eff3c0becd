//! Turning parsed files into source deltas: the latest state event per key (with redactions)
//! and the instances' watch and protect sets.
//!
//! The ingestor keeps the current contents of the two source replicas, so that a new event
//! retracts the record it replaces. Changes are staged and only applied to that state once the
//! source delta is committed, so a failed commit leaves it as it was.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use foldhash::HashMap;

use prr_engine::{Dictionary, Id, ReplicaId, Revision, SourceDelta};
use serde_json::{Map, Value};

use crate::facts::facts_of;
use crate::parse::{Event, ManifestEntry, SourceItem, redact_content};
use crate::record::{Delivered, Facts, Rec, Relation, RoomState};

mod changes;

use changes::Changes;

type StateKey = (Id, Id, Id);

/// A `room_state` record, shared with the source deltas that carry it.
type State = Arc<RoomState>;

/// An instance's manifest entry: `(watch, protect)`.
type InstanceRooms = (BTreeSet<Id>, BTreeSet<Id>);

/// The current contents of the source replicas, as the ingest needs them.
///
/// `room_state` is a sorted base (after a restore: the revision the runtime restored from,
/// shared, not copied) and, over it, the changes since: a restore need not hash a million
/// records before its first ingest.
#[derive(Default)]
pub struct Ingestor {
    /// `room_state` at the restore point: records sorted by key, `(room, type, state_key)`,
    /// looked up in place.
    base: Revision<Rec>,
    /// The changes over `base`: per key its current record, or the removal of the base's.
    /// Ordered, so that a room's records are a range: a redaction finds the keys where its
    /// event is current by scanning its room, without an index by event (which cost a fresh
    /// ingest of a million state events about 100 MB).
    state: Changes,
    instances: BTreeMap<Id, InstanceRooms>,
    room_state: Option<ReplicaId>,
    instances_replica: Option<ReplicaId>,
}

/// A source delta prepared from parsed items, with the state changes to apply once it is
/// committed.
pub struct Prepared {
    /// The source delta to push.
    pub delta: SourceDelta<Rec>,
    state: HashMap<StateKey, Option<State>>,
    instances: BTreeMap<Id, Option<InstanceRooms>>,
}

fn key_of(s: &RoomState) -> StateKey {
    (s.room, s.event_type, s.state_key)
}

/// A record's key in the base. `room_state` records sort first (their variant is `Rec`'s
/// first) by their key; a record of another replica (in a damaged store: stored data, not a
/// bug) sorts after them all, so a lookup never finds it.
fn base_key(r: &Rec) -> StateKey {
    match r {
        Rec::RoomState(s) => key_of(s),
        _ => (Id::MAX, Id::MAX, Id::MAX),
    }
}

/// A `room_state` record of the base, owned (`None` for a record of another replica).
fn into_state(r: Rec) -> Option<State> {
    match r {
        Rec::RoomState(s) => Some(s),
        _ => None,
    }
}

impl Ingestor {
    /// An ingestor over the given contents of `room_state` and `instances`.
    pub fn new(
        room_state: ReplicaId,
        instances: ReplicaId,
        contents: impl IntoIterator<Item = Rec>,
    ) -> Self {
        Self::split(
            room_state,
            instances,
            Revision::default(),
            contents.into_iter().map(|r| (r, 1)),
        )
    }

    /// An ingestor over `room_state`'s contents as `base` (as
    /// [`prr_engine::Runtime::read_split`] gives them, its multiplicities 1) plus `changes`,
    /// and over `instances`' contents (in `changes`). `changes` holds consolidated updates:
    /// of a key, at most one record with multiplicity 1, and records of `base` with -1.
    pub fn split(
        room_state: ReplicaId,
        instances: ReplicaId,
        base: Revision<Rec>,
        changes: impl IntoIterator<Item = (Rec, isize)>,
    ) -> Self {
        let mut ing = Ingestor {
            base,
            room_state: Some(room_state),
            instances_replica: Some(instances),
            ..Default::default()
        };
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for (rec, diff) in changes {
            match rec {
                Rec::RoomState(s) if diff > 0 => added.push(s),
                Rec::RoomState(s) => removed.push(s),
                Rec::Instance {
                    instance,
                    relation,
                    room,
                } if diff > 0 => {
                    let e = ing.instances.entry(instance).or_default();
                    match relation {
                        Relation::Exists => {}
                        Relation::Watch => {
                            e.0.insert(room);
                        }
                        Relation::Protect => {
                            e.1.insert(room);
                        }
                    }
                }
                _ => {}
            }
        }
        ing.load_states(added);
        for s in removed {
            if ing.state.get(&key_of(&s)).is_none() {
                ing.state.set_removed(s);
            }
        }
        ing
    }

    /// Loads `room_state` records (without a base, a restore hands over a million). Of two
    /// records for one key (not from a consolidated replica), the later one replaces the
    /// earlier, as in [`Ingestor::commit`].
    fn load_states(&mut self, states: Vec<State>) {
        debug_assert!(self.state.is_empty(), "loaded into a new ingestor only");
        let mut keyed = states;
        // Sorted by key, the later of equal keys first, then one per key: the set is built
        // from sorted records, its nodes full.
        keyed.reverse();
        keyed.sort_by_key(|s| key_of(s));
        keyed.dedup_by_key(|s| key_of(s));
        self.state = Changes::from_sorted(keyed);
    }

    /// The base's records of `room`.
    fn base_room(&self, room: Id) -> Vec<State> {
        (self.base.range(|r| base_key(r).0, &room).into_iter())
            .filter_map(|(r, _)| into_state(r))
            .collect()
    }

    /// The base's record at `key`.
    fn base_get(&self, key: &StateKey) -> Option<State> {
        (self.base.range(base_key, key).into_iter()).find_map(|(r, _)| into_state(r))
    }

    /// The current record at `key`.
    fn get(&self, key: &StateKey) -> Option<State> {
        match self.state.get(key) {
            Some(changed) => changed.cloned(),
            None => self.base_get(key),
        }
    }

    /// Whether the delivered event `e` is the current record at its key.
    pub fn is_current(&self, e: &Delivered) -> bool {
        (self.get(&(e.room, e.event_type, e.state_key))).is_some_and(|s| s.event_id == e.event_id)
    }

    /// Whether the state event `ev` is older than the current record at its key: another
    /// event, whose `origin_server_ts` is later. A homeserver delivers a room's events in
    /// order, but what it delivers late (a backlog retried after prr was down) may be older
    /// than the state fetched since.
    pub fn older_than_current(&self, dict: &Dictionary, ev: &Event) -> bool {
        let Some(state_key) = &ev.state_key else {
            return false;
        };
        let key = (
            dict.lookup(&ev.room_id),
            dict.lookup(&ev.event_type),
            dict.lookup(state_key),
        );
        let (Some(room), Some(kind), Some(state_key)) = key else {
            return false;
        };
        let Some(current) = self.get(&(room, kind, state_key)) else {
            return false;
        };
        match (ev.origin_server_ts, current.ts) {
            (Some(ts), Some(current_ts)) => {
                ts < current_ts && dict.lookup(&ev.event_id) != Some(current.event_id)
            }
            _ => false,
        }
    }

    /// The keys where `event` of `room` may be the current record: those of the changes, and
    /// those of the base (which the changes may have replaced).
    fn event_keys(&self, room: Id, event: Id) -> Vec<StateKey> {
        let mut keys: Vec<StateKey> = (self.state.room(room))
            .filter(|(_, s)| s.is_some_and(|s| s.event_id == event))
            .map(|(k, _)| k)
            .collect();
        keys.extend(
            (self.base_room(room).iter())
                .filter(|s| s.event_id == event)
                .map(|s| key_of(s)),
        );
        keys
    }

    fn set_state(&mut self, key: StateKey, new: Option<State>) {
        match new {
            Some(new) => {
                debug_assert_eq!(key_of(&new), key, "a record is set at its own key");
                self.state.set(new);
            }
            // A removal is kept only over a base record (the key reads as the base's else).
            None => match self.base_get(&key) {
                Some(base) => self.state.set_removed(base),
                None => self.state.unset(&key),
            },
        }
    }

    /// Prepares the source delta of one file (or streamed batch). Interns the strings it
    /// uses. Nothing changes until [`Ingestor::commit`].
    pub fn prepare(&self, dict: &Dictionary, items: &[SourceItem]) -> Prepared {
        let mut staged: HashMap<StateKey, Option<State>> = HashMap::default();
        let mut staged_events: HashMap<(Id, Id), Vec<StateKey>> = HashMap::default();
        let mut instances: BTreeMap<Id, Option<InstanceRooms>> = BTreeMap::new();
        for item in items {
            match item {
                SourceItem::Event(ev) => {
                    self.stage_event(dict, ev, &mut staged, &mut staged_events)
                }
                SourceItem::Manifest(entries) => {
                    for entry in entries {
                        match entry {
                            ManifestEntry::Set { id, watch, protect } => {
                                let rooms = (
                                    watch.iter().map(|r| dict.intern(r)).collect(),
                                    protect.iter().map(|r| dict.intern(r)).collect(),
                                );
                                instances.insert(dict.intern(id), Some(rooms));
                            }
                            ManifestEntry::Remove { id } => {
                                instances.insert(dict.intern(id), None);
                            }
                        }
                    }
                }
            }
        }
        let mut delta = SourceDelta::new();
        let rs = self.room_state.expect("room_state replica");
        for (key, new) in &staged {
            if let Some(old) = self.get(key) {
                delta.remove(rs, Rec::RoomState(old));
            }
            if let Some(new) = new {
                delta.insert(rs, Rec::RoomState(new.clone()));
            }
        }
        let ir = self.instances_replica.expect("instances replica");
        for (instance, new) in &instances {
            let records = |rooms: &InstanceRooms| {
                let mut v = vec![Rec::Instance {
                    instance: *instance,
                    relation: Relation::Exists,
                    room: 0,
                }];
                v.extend(rooms.0.iter().map(|r| Rec::Instance {
                    instance: *instance,
                    relation: Relation::Watch,
                    room: *r,
                }));
                v.extend(rooms.1.iter().map(|r| Rec::Instance {
                    instance: *instance,
                    relation: Relation::Protect,
                    room: *r,
                }));
                v
            };
            if let Some(old) = self.instances.get(instance) {
                for r in records(old) {
                    delta.remove(ir, r);
                }
            }
            if let Some(new) = new {
                for r in records(new) {
                    delta.insert(ir, r);
                }
            }
        }
        Prepared {
            delta,
            state: staged,
            instances,
        }
    }

    fn current(&self, staged: &HashMap<StateKey, Option<State>>, key: &StateKey) -> Option<State> {
        match staged.get(key) {
            Some(s) => s.clone(),
            None => self.get(key),
        }
    }

    fn stage_event(
        &self,
        dict: &Dictionary,
        ev: &Event,
        staged: &mut HashMap<StateKey, Option<State>>,
        staged_events: &mut HashMap<(Id, Id), Vec<StateKey>>,
    ) {
        let room = dict.intern(&ev.room_id);
        if ev.event_type == "m.room.redaction"
            && let Some(target) = &ev.redacts
            && let Some(target_id) = dict.lookup(target)
        {
            let mut keys = self.event_keys(room, target_id);
            keys.extend(
                staged_events
                    .get(&(room, target_id))
                    .cloned()
                    .unwrap_or_default(),
            );
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                if let Some(cur) = self.current(staged, &key)
                    && cur.event_id == target_id
                    && !cur.redacted
                {
                    let type_name = dict.get(cur.event_type);
                    let content = dict.with(cur.content, |c| {
                        serde_json::from_str::<Map<String, Value>>(c).unwrap_or_default()
                    });
                    let stripped = redact_content(&type_name, &content);
                    let mut redacted = RoomState::clone(&cur);
                    redacted.facts =
                        facts_of(&redacted, &type_name, &stripped, &mut |s| dict.intern(s));
                    redacted.content = intern_content(dict, &stripped);
                    redacted.redacted = true;
                    staged.insert(key, Some(Arc::new(redacted)));
                }
            }
        }
        let Some(state_key) = &ev.state_key else {
            return;
        };
        let key = (room, dict.intern(&ev.event_type), dict.intern(state_key));
        // Borrowed unless redacted: a member event's content is not copied to be read.
        let content = if ev.redacted_because {
            Cow::Owned(redact_content(&ev.event_type, &ev.content))
        } else {
            Cow::Borrowed(&ev.content)
        };
        let mut record = RoomState {
            room,
            event_type: key.1,
            state_key: key.2,
            event_id: dict.intern(&ev.event_id),
            sender: dict.intern(&ev.sender),
            ts: ev.origin_server_ts,
            content: 0,
            redacted: ev.redacted_because,
            facts: Facts::Other,
        };
        // The facts' strings first, then the content: ids are assigned in ingest order.
        record.facts = facts_of(&record, &ev.event_type, &content, &mut |s| dict.intern(s));
        record.content = intern_content(dict, &content);
        staged_events
            .entry((room, record.event_id))
            .or_default()
            .push(key);
        staged.insert(key, Some(Arc::new(record)));
    }

    /// Applies a committed source delta's changes to the ingestor's state.
    pub fn commit(&mut self, prepared: Prepared) {
        for (key, new) in prepared.state {
            self.set_state(key, new);
        }
        for (instance, new) in prepared.instances {
            match new {
                Some(rooms) => {
                    self.instances.insert(instance, rooms);
                }
                None => {
                    self.instances.remove(&instance);
                }
            }
        }
    }
}

/// Interns an event's content as compact JSON.
fn intern_content(dict: &Dictionary, content: &Map<String, Value>) -> Id {
    dict.intern(&serde_json::to_string(content).expect("JSON values serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(state_key: Id, event_id: Id) -> State {
        Arc::new(RoomState {
            room: 1,
            event_type: 2,
            state_key,
            event_id,
            sender: 5,
            ts: None,
            content: 6,
            redacted: false,
            facts: Facts::Other,
        })
    }

    /// Loading gives what applying the records one by one gives, also with two records for
    /// one key (the later replaces) and one event at two keys.
    #[test]
    fn loading_equals_applying_in_order() {
        let records = [state(3, 10), state(3, 11), state(4, 10), state(7, 12)];
        let loaded = Ingestor::new(
            ReplicaId(0),
            ReplicaId(1),
            records.iter().cloned().map(Rec::RoomState),
        );
        let mut applied = Ingestor::default();
        for s in records {
            applied.set_state((s.room, s.event_type, s.state_key), Some(s));
        }
        let contents = |i: &Ingestor| i.state.entries();
        assert_eq!(contents(&loaded), contents(&applied));
        assert_eq!(loaded.get(&(1, 2, 3)).map(|s| s.event_id), Some(11));
        assert_eq!(loaded.event_keys(1, 10), vec![(1, 2, 4)]);
        assert_eq!(loaded.event_keys(1, 11), vec![(1, 2, 3)]);
        assert_eq!(loaded.event_keys(2, 11), vec![]);
    }

    type Op = ((Id, Id, Id), Option<Id>);

    fn record((room, event_type, state_key): StateKey, event_id: Id) -> State {
        Arc::new(RoomState {
            room,
            event_type,
            state_key,
            event_id,
            ..RoomState::clone(&state(0, 0))
        })
    }

    fn apply(ing: &mut Ingestor, ops: &[Op]) {
        for (key, event) in ops {
            ing.set_state(*key, event.map(|e| record(*key, e)));
        }
    }

    /// Every key's current record, and per event the keys where it is current.
    fn observed(ing: &Ingestor) -> (Vec<Option<State>>, Vec<Vec<StateKey>>) {
        let keys = || (1..4).flat_map(|r| (1..3).flat_map(move |t| (1..5).map(move |k| (r, t, k))));
        let state = keys().map(|k| ing.get(&k)).collect();
        let events = (1..4)
            .flat_map(|room| (1..9).map(move |e| (room, e)))
            .map(|(room, e)| {
                let mut ks: Vec<_> = (ing.event_keys(room, e).into_iter())
                    .filter(|k| ing.get(k).is_some_and(|s| s.event_id == e))
                    .collect();
                ks.sort_unstable();
                ks.dedup();
                ks
            })
            .collect();
        (state, events)
    }

    fn ops() -> impl proptest::strategy::Strategy<Value = Vec<Op>> {
        proptest::collection::vec(
            (
                (1..4u64, 1..3u64, 1..5u64),
                proptest::option::weighted(0.7, 1..9u64),
            ),
            0..40,
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// An ingestor over a base and the changes since it (as a restore makes it) reads and
        /// changes like one that holds every record, before and after further changes.
        #[test]
        fn a_base_and_its_changes_act_as_the_whole(
            before in ops(), since in ops(), after in ops()
        ) {
            let mut whole = Ingestor::default();
            apply(&mut whole, &before);
            let mut base: Vec<(Rec, isize)> = (whole.state.current())
                .map(|s| (Rec::RoomState(s.clone()), 1))
                .collect();
            base.sort();
            apply(&mut whole, &since);
            let mut now: Vec<(Rec, isize)> = (whole.state.current())
                .map(|s| (Rec::RoomState(s.clone()), 1))
                .collect();
            now.sort();
            // The changes, consolidated: what is new, and what of the base is gone.
            let mut changes: Vec<(Rec, isize)> =
                now.iter().filter(|r| !base.contains(r)).cloned().collect();
            changes.extend(
                (base.iter().filter(|r| !now.contains(r))).map(|(r, _)| (r.clone(), -1)),
            );
            let mut split =
                Ingestor::split(ReplicaId(0), ReplicaId(1), Revision::of(Arc::new(base)), changes);
            proptest::prop_assert_eq!(observed(&split), observed(&whole));
            apply(&mut whole, &after);
            apply(&mut split, &after);
            proptest::prop_assert_eq!(observed(&split), observed(&whole));
        }
    }
}
