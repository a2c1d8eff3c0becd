//! Bot mode: a Client-Server `/sync` client for one bot account, as Draupnir runs in bot mode.
//!
//! The initial sync brings the joined rooms' state; then incremental syncs long-poll. What
//! each response brings (state events, timeline state events and redactions, exactly once by
//! event ID; after a gap in a room's timeline, also the redactions its current state carries)
//! is one source delta, committed together with the response's `next_batch` in
//! `source_positions`, so a restart resumes from there with no gap and no duplicate. The
//! instance manifest is the account's Draupnir configuration (its account data: protected
//! rooms, watched lists), read at the first sync and again whenever a sync says it changed;
//! the bot joins the rooms it names that it is not in (their state comes with the next sync).
//!
//! The client retries `429` (after `retry_after_ms`), `5xx` and network errors with backoff.
//! A `401` stops the source with a clear message in the log and the status. A storage
//! failure retries the same response until it commits, without syncing further.

use std::collections::BTreeSet;
use std::sync::mpsc::Sender;
use std::time::Duration;

use prr_homeserver::{Error as HsError, Homeserver, SyncBatch, draupnir};
use prr_replicas::{SourceItem, parse_file};
use serde_json::Value;
use tokio::sync::watch;

use crate::catchup::{Shared, lock};
use crate::core::{Command, ask};
use crate::received::received;

/// How long one incremental sync waits for something new.
const LONG_POLL: Duration = Duration::from_secs(30);

/// The name of the bot's source in `source_positions`.
pub(crate) fn source_name(user: &str) -> String {
    format!("sync:{user}")
}

/// Follows `/sync` as `user` (the account of `hs`'s token) until `stopping`.
pub(crate) async fn run(
    hs: Homeserver,
    user: String,
    core: Sender<Command>,
    mut stopping: watch::Receiver<bool>,
    shared: Shared,
) {
    let source = source_name(&user);
    let mut since = match ask(&core, |reply| Command::SourcePosition {
        source: source.clone(),
        reply,
    })
    .await
    {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            stop(&shared, &user, format!("cannot read its position: {e}"));
            return;
        }
        None => return,
    };
    let resumed = since.is_some();
    tracing::info!(%user, resumed, "bot mode: syncing");
    lock(&shared).sync = Some(serde_json::json!({"resumed": resumed}));
    set_sync_at(&shared, &user, "syncing", None, since.as_deref());
    let mut manifest: Option<Value> = None;
    let mut named: BTreeSet<String> = BTreeSet::new();
    let mut joined: BTreeSet<String> = BTreeSet::new();
    // An initial sync lists every joined room; an incremental one only those with something
    // new, so a resumed run asks which rooms the account is in first (else it would take the
    // quiet ones for rooms to join, and never be caught up).
    let mut rooms_known = !resumed;
    // The first sync of a run does not wait: the status is caught up at once.
    let mut first = true;
    loop {
        if !rooms_known {
            match hs.joined_rooms().await {
                Ok(rooms) => {
                    joined.extend(rooms);
                    rooms_known = true;
                }
                Err(e @ HsError::Unauthorized { .. }) => {
                    tracing::error!(%user, error = %e, "bot mode stopped");
                    stop(&shared, &user, e.to_string());
                    return;
                }
                Err(e) => {
                    tracing::warn!(%user, error = %e, "cannot list the joined rooms; retrying");
                    set_sync(&shared, &user, "retrying", Some(e.to_string()));
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                }
            }
        }
        let timeout = if first { Duration::ZERO } else { LONG_POLL };
        let batch = tokio::select! {
            b = hs.sync(since.as_deref(), timeout) => b,
            _ = stopping.wait_for(|s| *s) => return,
        };
        let batch = match batch {
            Ok(b) => {
                first = false;
                b
            }
            Err(e @ HsError::Unauthorized { .. }) => {
                tracing::error!(%user, error = %e, "bot mode stopped");
                stop(&shared, &user, e.to_string());
                return;
            }
            Err(e) => {
                tracing::warn!(%user, error = %e, "sync failed; retrying");
                set_sync(&shared, &user, "retrying", Some(e.to_string()));
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let mut batch = batch;
        if since.is_some() {
            match recover_redactions(&hs, &mut batch).await {
                Ok(()) => {}
                Err(e @ HsError::Unauthorized { .. }) => {
                    tracing::error!(%user, error = %e, "bot mode stopped");
                    stop(&shared, &user, e.to_string());
                    return;
                }
                Err(e) => {
                    tracing::warn!(%user, error = %e, "cannot fetch a room's state after a gap; retrying");
                    set_sync(&shared, &user, "retrying", Some(e.to_string()));
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                }
            }
        }
        for r in &batch.rooms {
            if r.left {
                joined.remove(&r.room_id);
            } else {
                joined.insert(r.room_id.clone());
            }
        }
        // The manifest: at the first sync of this run, and when the configuration changed.
        let mut extra = Vec::new();
        if manifest.is_none() || configuration_changed(&batch) {
            match draupnir::instance_manifest(&hs, &user).await {
                Ok(m) if Some(&m) != manifest.as_ref() => {
                    named = rooms_of(&m);
                    extra = manifest_items(&user, &m);
                    manifest = Some(m);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%user, error = %e, "cannot read the Draupnir configuration");
                    set_sync(&shared, &user, "retrying", Some(e.to_string()));
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            }
        }
        let events = received("sync", batch.events().cloned().collect());
        // Commit, retrying while the storage fails: the position only moves once it is in.
        loop {
            let got = ask(&core, |reply| Command::Sync {
                events: events.clone(),
                extra: extra.clone(),
                source: source.clone(),
                position: batch.next_batch.clone(),
                reply,
            })
            .await;
            match got {
                None => return,
                Some(Ok(_)) => break,
                Some(Err(e)) => {
                    tracing::warn!(%user, error = %e, "committing a sync response failed; retrying");
                    set_sync(&shared, &user, "retrying", Some(e.to_string()));
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                }
            }
        }
        since = Some(batch.next_batch.clone());
        // Join what the configuration names and the bot is not in.
        let mut error = None;
        for room in named.difference(&joined).cloned().collect::<Vec<_>>() {
            match hs.join(&room, &[]).await {
                Ok(_) => tracing::info!(%user, %room, "joined"),
                Err(e) => {
                    tracing::warn!(%user, %room, error = %e, "cannot join");
                    error = Some(format!("{room}: {e}"));
                }
            }
        }
        let caught_up = named.is_subset(&joined);
        lock(&shared)
            .instances
            .insert(user.clone(), (caught_up, error.clone()));
        set_sync_at(&shared, &user, "syncing", error, since.as_deref());
    }
}

/// After a gap (an incremental sync whose timeline for a room is `limited`), the redactions of
/// state events in it: the response has the gap's state but not its redactions, so the room's
/// current state is fetched and the redactions its redacted events carry are added to the
/// batch (each once by event id, as always: those seen before are dropped at ingest).
async fn recover_redactions(hs: &Homeserver, batch: &mut SyncBatch) -> Result<(), HsError> {
    for room in batch.rooms.iter_mut().filter(|r| r.limited && !r.left) {
        let state = hs.room_state(&room.room_id).await?;
        let added = room.add_redactions_of(&state);
        tracing::debug!(room = %room.room_id, redactions = added, "a gap in the timeline");
    }
    Ok(())
}

/// Whether a sync brought a change of the Draupnir configuration.
fn configuration_changed(batch: &SyncBatch) -> bool {
    (batch.account_data.iter())
        .any(|(kind, _)| kind == draupnir::PROTECTED_ROOMS || kind == draupnir::WATCHED_LISTS)
}

/// The rooms a manifest names.
fn rooms_of(manifest: &Value) -> BTreeSet<String> {
    let mut rooms = BTreeSet::new();
    for i in manifest["instances"].as_array().into_iter().flatten() {
        for list in ["watch", "protect"] {
            for r in i[list].as_array().into_iter().flatten() {
                if let Some(r) = r.as_str() {
                    rooms.insert(r.to_string());
                }
            }
        }
    }
    rooms
}

/// A manifest as source items, as `prr ingest` reads one.
fn manifest_items(user: &str, manifest: &Value) -> Vec<SourceItem> {
    let name = format!("account data of {user}");
    match parse_file(&name, manifest.to_string().as_bytes()) {
        Ok(items) => items,
        Err(e) => {
            // The rooms are checked room references; a bad user ID is the homeserver's.
            tracing::warn!(%user, error = %e, "the Draupnir configuration is not a valid manifest");
            Vec::new()
        }
    }
}

/// The status's `sources.sync`: the user, the state, the last error, the position (the
/// `next_batch` synced last, kept from the previous call when `position` is `None`) and
/// whether this run resumed from a stored position (kept).
fn set_sync(shared: &Shared, user: &str, state: &str, error: Option<String>) {
    set_sync_at(shared, user, state, error, None);
}

fn set_sync_at(
    shared: &Shared,
    user: &str,
    state: &str,
    error: Option<String>,
    position: Option<&str>,
) {
    let mut s = lock(shared);
    let kept = (s.sync.as_ref()).and_then(|v| v["position"].as_str().map(str::to_string));
    let resumed = (s.sync.as_ref()).and_then(|v| v["resumed"].as_bool());
    let position = position.map(str::to_string).or(kept);
    s.sync = Some(serde_json::json!({
        "user": user, "state": state, "error": error, "position": position, "resumed": resumed,
    }));
}

fn stop(shared: &Shared, user: &str, why: String) {
    let mut s = lock(shared);
    s.sync = Some(serde_json::json!({"user": user, "state": "stopped", "error": why}));
    s.instances.insert(user.to_string(), (false, Some(why)));
}
