//! The ingest state's changes over its base: per `(room, type, state_key)`, the current
//! `room_state` record, or the removal of the base's. Each entry is the record's `Arc` and a
//! flag, ordered by the record's key: the key is not stored beside the record that holds it
//! (a million state events cost about 30 MB less than a map from keys to records).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Bound;

use prr_engine::Id;

use super::{State, StateKey, key_of};

/// One key's change: `state` is the current record, or (`removed`) the base's record that is
/// gone, kept for its key.
struct Change {
    state: State,
    removed: bool,
}

impl Change {
    fn current(&self) -> Option<&State> {
        (!self.removed).then_some(&self.state)
    }
}

/// What the set is ordered and looked up by: a key, or a change (by its record's key).
trait Keyed {
    fn key(&self) -> StateKey;
}

impl Keyed for StateKey {
    fn key(&self) -> StateKey {
        *self
    }
}

impl Keyed for Change {
    fn key(&self) -> StateKey {
        key_of(&self.state)
    }
}

impl<'a> Borrow<dyn Keyed + 'a> for Change {
    fn borrow(&self) -> &(dyn Keyed + 'a) {
        self
    }
}

impl PartialEq for dyn Keyed + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn Keyed + '_ {}

impl PartialOrd for dyn Keyed + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn Keyed + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialEq for Change {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Change {}

impl PartialOrd for Change {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Change {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The changes over the base, one per key, ordered by key: a room's are a range.
#[derive(Default)]
pub(super) struct Changes(BTreeSet<Change>);

impl Changes {
    /// From records sorted by key, one per key (a load: the map is built from sorted
    /// entries).
    pub(super) fn from_sorted(states: impl IntoIterator<Item = State>) -> Changes {
        Changes(
            (states.into_iter())
                .map(|state| Change {
                    state,
                    removed: false,
                })
                .collect(),
        )
    }

    /// The change at `key`: `None` if unchanged, `Some(None)` if the base's record is gone.
    pub(super) fn get(&self, key: &StateKey) -> Option<Option<&State>> {
        self.0.get(key as &dyn Keyed).map(Change::current)
    }

    /// The changes of `room`, by key: the current record, or `None` where the base's is gone.
    pub(super) fn room(&self, room: Id) -> impl Iterator<Item = (StateKey, Option<&State>)> {
        let (lo, hi): (StateKey, StateKey) = ((room, 0, 0), (room, Id::MAX, Id::MAX));
        let range = (
            Bound::Included(&lo as &dyn Keyed),
            Bound::Included(&hi as &dyn Keyed),
        );
        (self.0.range::<dyn Keyed, _>(range)).map(|c| (c.key(), c.current()))
    }

    /// `state` is the current record at its key.
    pub(super) fn set(&mut self, state: State) {
        self.0.replace(Change {
            state,
            removed: false,
        });
    }

    /// The base's record `base` is gone from its key.
    pub(super) fn set_removed(&mut self, base: State) {
        self.0.replace(Change {
            state: base,
            removed: true,
        });
    }

    /// No change at `key` (the key reads as the base's).
    pub(super) fn unset(&mut self, key: &StateKey) {
        self.0.remove(key as &dyn Keyed);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every change, by key (for tests).
    #[cfg(test)]
    pub(super) fn entries(&self) -> Vec<(StateKey, Option<State>)> {
        (self.0.iter())
            .map(|c| (c.key(), c.current().cloned()))
            .collect()
    }

    /// The current records of the changed keys (for tests).
    #[cfg(test)]
    pub(super) fn current(&self) -> impl Iterator<Item = &State> {
        self.0.iter().filter_map(Change::current)
    }
}
