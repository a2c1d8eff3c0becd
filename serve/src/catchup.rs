//! Catch-up and resync: the state of every room an instance names, fetched from the
//! homeserver.
//!
//! Appservice transactions bring only what happens after the bot is in a room, and a
//! homeserver drops queued transactions when it stops. So when the `instances` replica names
//! a room for an instance (a manifest through `POST /v1/ingest`), this task registers the
//! instance's user if need be, joins it to the room (acting as it with the `as_token`),
//! fetches the room's state and ingests it as one source delta
//! ([`prr_replicas::Matrix::ingest_room_state`]: authoritative, so afterwards the room's
//! `room_state` equals the homeserver's state). An instance is **caught up** once every room
//! it names has been fetched. Every `resync_every` every room is fetched again, and what
//! differs is ingested: this heals events the homeserver lost.
//!
//! A room that cannot be fetched (the bot may not join, the homeserver is down) is tried
//! again every [`RETRY_EVERY`]; its instance stays not caught up, and the status says why.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prr_homeserver::Homeserver;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::core::{Command, ask};
use crate::received::received;

/// How soon a room that could not be fetched is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(30);

/// What the status shows of catch-up: per instance, whether it is caught up and, if not, why.
#[derive(Clone, Debug, Default)]
pub(crate) struct CatchUp {
    /// Instance -> (caught up, the last failure for one of its rooms).
    pub instances: BTreeMap<String, (bool, Option<String>)>,
    /// Rooms fetched in all, and the time of the last full resync (Unix ms).
    pub rooms_fetched: u64,
    pub last_resync_ms: Option<u64>,
    /// Bot mode: the `/sync` source's user, state and last error.
    pub sync: Option<Value>,
}

impl CatchUp {
    /// Whether `instance` is caught up (an instance the task has not seen yet is not).
    pub fn caught_up(&self, instance: &str) -> bool {
        self.instances.get(instance).is_some_and(|(c, _)| *c)
    }

    /// The JSON of the status's `sources.catch_up`.
    pub fn to_json(&self) -> Value {
        let failing: BTreeMap<&String, &String> = (self.instances.iter())
            .filter_map(|(i, (_, e))| e.as_ref().map(|e| (i, e)))
            .collect();
        json!({
            "rooms_fetched": self.rooms_fetched,
            "last_resync_ms": self.last_resync_ms,
            "failing": failing,
        })
    }
}

/// Shared between the task and the status handler.
pub(crate) type Shared = Arc<Mutex<CatchUp>>;

/// Runs catch-up until `stopping` becomes true: `hs` carries the `as_token`; each instance
/// is acted as with `?user_id=`.
pub(crate) async fn run(
    hs: Homeserver,
    core: Sender<Command>,
    mut seq: watch::Receiver<u64>,
    mut stopping: watch::Receiver<bool>,
    resync_every: Duration,
    shared: Shared,
) {
    // (Instance, room) -> when the instance joined and fetched it; instances whose user is
    // registered.
    let mut fetched: HashMap<(String, String), Instant> = HashMap::new();
    let mut registered: HashSet<String> = HashSet::new();
    let mut last_resync = Instant::now();
    loop {
        if last_resync.elapsed() >= resync_every {
            tracing::info!(rooms = fetched.len(), "resync: fetching every room again");
            fetched.clear();
            last_resync = Instant::now();
            lock(&shared).last_resync_ms = Some(now_ms());
        }
        let named = match named_rooms(&core).await {
            Some(named) => named,
            None => return, // the core is stopping
        };
        let mut failed = false;
        let mut status: BTreeMap<String, (bool, Option<String>)> = BTreeMap::new();
        for (instance, rooms) in &named {
            let mut error = None;
            for room in rooms {
                let key = (instance.clone(), room.clone());
                if fetched.contains_key(&key) {
                    continue;
                }
                match fetch(&hs, &core, instance, room, &mut registered).await {
                    Ok(seq) => {
                        tracing::info!(%instance, %room, seq = seq.map(|s| s.0), "room state fetched");
                        fetched.insert(key, Instant::now());
                        lock(&shared).rooms_fetched += 1;
                    }
                    Err(e) => {
                        tracing::warn!(%instance, %room, error = %e, "catch-up failed; retrying");
                        error = Some(format!("{room}: {e}"));
                        failed = true;
                    }
                }
            }
            let done = (rooms.iter()).all(|r| fetched.contains_key(&(instance.clone(), r.clone())));
            status.insert(instance.clone(), (done, error));
        }
        lock(&shared).instances = status;
        let next_resync = resync_every.saturating_sub(last_resync.elapsed());
        let wait = if failed {
            RETRY_EVERY.min(next_resync)
        } else {
            next_resync
        };
        tokio::select! {
            // A new source delta may name new rooms (a manifest).
            changed = seq.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        // Let a burst of deltas settle before asking again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Registers the instance's user (once), joins it to the room, fetches the state and
/// ingests it.
pub(crate) async fn fetch(
    hs: &Homeserver,
    core: &Sender<Command>,
    instance: &str,
    room: &str,
    registered: &mut HashSet<String>,
) -> Result<Option<prr_engine::Seq>, String> {
    if !registered.contains(instance) {
        let localpart = instance
            .strip_prefix('@')
            .and_then(|u| u.split(':').next())
            .ok_or_else(|| format!("{instance} is not a user ID"))?;
        hs.register_appservice_user(localpart)
            .await
            .map_err(|e| e.to_string())?;
        registered.insert(instance.to_string());
    }
    fetch_as(&hs.acting_as(instance), core, room).await
}

/// Joins `bot` to the room (a no-op when it is in it), fetches the state and ingests it.
pub(crate) async fn fetch_as(
    bot: &Homeserver,
    core: &Sender<Command>,
    room: &str,
) -> Result<Option<prr_engine::Seq>, String> {
    bot.join(room, &[]).await.map_err(|e| e.to_string())?;
    // Transactions that change the room from now on win over the fetched state.
    let room_id = room.to_string();
    let _ = core.send(Command::FetchStarted { room_id });
    let state = match bot.room_state(room).await {
        Ok(state) => state,
        Err(e) => {
            // An empty state ends the fetch in the core, changing nothing.
            let _ = ask(core, |reply| Command::RoomState {
                room_id: room.to_string(),
                events: Vec::new(),
                reply,
            })
            .await;
            return Err(e.to_string());
        }
    };
    let events = received(&format!("state of {room}"), state);
    let room_id = room.to_string();
    match ask(core, |reply| Command::RoomState {
        room_id,
        events,
        reply,
    })
    .await
    {
        None => Err("the service is stopping".into()),
        Some(got) => got.map_err(|e| e.to_string()),
    }
}

/// Instance -> the rooms it watches or protects, from the `instances` replica.
pub(crate) async fn named_rooms(
    core: &Sender<Command>,
) -> Option<BTreeMap<String, BTreeSet<String>>> {
    let rows = ask(core, |reply| Command::Show {
        replica: "instances".into(),
        partition: None,
        as_of: None,
        reply,
    })
    .await?;
    let mut named: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rows.unwrap_or_default() {
        let Some(instance) = r["instance"].as_str() else {
            continue;
        };
        let rooms = named.entry(instance.to_string()).or_default();
        if let Some(room) = r["room_id"].as_str() {
            rooms.insert(room.to_string());
        }
    }
    Some(named)
}

pub(crate) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, CatchUp> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
        .map_or(0, |d| d.as_millis() as u64)
}
