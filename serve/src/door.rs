//! Checks at the door (`POST /v1/check/join|invite|sender`): the index of ban rules, shared
//! with the HTTP handlers, which read it without asking the core. The core keeps it current:
//! after each commit, before the commit is answered, it applies the deltas of `policy_room`
//! and `instances`, so an answer reflects every source delta acknowledged before it.

use std::sync::{Arc, RwLock};

use prr_engine::{Error, Subscription};
use prr_replicas::{DoorIndex, Matrix, Rec, to_json};

/// The replicas the index follows.
const FOLLOWED: [&str; 2] = ["policy_room", "instances"];

/// The index as the handlers share it.
pub(crate) type SharedIndex = Arc<RwLock<DoorIndex>>;

/// The core's side: the index and the subscriptions that keep it current.
pub(crate) struct Door {
    index: SharedIndex,
    subscriptions: Vec<(&'static str, Subscription<Rec>)>,
}

impl Door {
    /// Loads the index from the replicas and follows their deltas from now on.
    pub(crate) fn start(m: &mut Matrix) -> Result<Door, Error> {
        let mut subscriptions = Vec::new();
        for name in FOLLOWED {
            let id = m.runtime().replica(name)?;
            subscriptions.push((name, m.runtime().subscribe(id)?));
        }
        let index = DoorIndex::load(m)?;
        Ok(Door {
            index: Arc::new(RwLock::new(index)),
            subscriptions,
        })
    }

    /// The index, for the handlers.
    pub(crate) fn shared(&self) -> SharedIndex {
        self.index.clone()
    }

    /// Applies the deltas delivered since the last call.
    pub(crate) fn refresh(&mut self, m: &mut Matrix) {
        let dict = m.runtime().dictionary().clone();
        let mut changes = Vec::new();
        for (name, sub) in &self.subscriptions {
            for delta in sub.try_iter() {
                for (rec, diff) in &delta.updates {
                    changes.push((*name, to_json(&dict, rec), *diff));
                }
            }
        }
        if changes.is_empty() {
            return;
        }
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for (name, record, diff) in &changes {
            index.apply(name, record, *diff);
        }
    }
}
