//! What homeserver sources deliver: appservice transactions and `/sync` responses, exactly
//! once by event ID (`source_events`), a room's state fetched as authoritative, and the
//! pruning of `source_events` after its retention.

use std::collections::{HashMap, HashSet};

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prr_engine::{Error, Id, Seq, SourceDelta, catch_damage};

use super::Matrix;
use crate::parse::{Event, SourceItem};
use crate::record::{Delivered, Rec};

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

impl Matrix {
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
            let ids = (rows.iter()).filter_map(|(r, _)| Some(r.delivered()?.event_id));
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
        let received = unix_now();
        for e in &fresh {
            let event = match e {
                Received::Valid(ev) => Delivered {
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
                } => Delivered {
                    room: dict.intern(room_id),
                    event_id: dict.intern(event_id),
                    event_type: dict.intern(event_type),
                    state_key: dict.intern(state_key),
                    invalid: Some(dict.intern(reason)),
                },
            };
            if (self.seen.as_ref()).is_some_and(|seen| seen.contains(&event.event_id)) {
                continue;
            }
            ids.push(event.event_id);
            let event = Arc::new(event);
            delta.insert(source_events, Rec::SourceEvent { event, received });
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

    /// Prunes `source_events`, as one source delta: the events received before `before`
    /// (seconds since the Unix epoch) leave it, except those that are the current
    /// `room_state` record at their key. An event that left may be applied again if a source
    /// brings it back: that is harmless for a current record's event (kept) and for a
    /// redaction, and an older state event is not applied over a newer one (see
    /// [`Matrix::ingest_received`]). Invalid events leave `rejects` with their record.
    /// Records of a format 4 store, whose time is unknown, become records received now.
    /// Returns the new `Seq` once replicas are final through it, or `None` when nothing
    /// changed (nothing is stored).
    pub fn prune_source_events(&mut self, before: u64) -> Result<Option<Seq>, Error> {
        self.load_seen()?;
        let source_events = self.rt.replica("source_events")?;
        let rows = self.rt.read(source_events, None)?;
        let ingestor = self.ingestor.as_ref().expect("ingestor loaded");
        let now = unix_now();
        // The ingest state's base is read from the store as looked up: damage there is an
        // error, not a panic.
        let (delta, gone) = catch_damage(|| {
            let mut delta = SourceDelta::new();
            let mut gone = Vec::new();
            for (r, _) in rows {
                match r {
                    Rec::UntimedSourceEvent(ref event) => {
                        let event = event.clone();
                        delta.remove(source_events, r);
                        let received = now;
                        delta.insert(source_events, Rec::SourceEvent { event, received });
                    }
                    Rec::SourceEvent {
                        ref event,
                        received,
                    } if received < before
                        && !(event.invalid.is_none() && ingestor.is_current(event)) =>
                    {
                        gone.push(event.event_id);
                        delta.remove(source_events, r);
                    }
                    _ => {}
                }
            }
            (delta, gone)
        })?;
        if delta.is_empty() {
            return Ok(None);
        }
        let forget = |seen: &mut Option<HashSet<Id>>| {
            if let Some(seen) = seen {
                for id in &gone {
                    seen.remove(id);
                }
            }
        };
        match self.rt.push(delta) {
            Ok(seq) => {
                forget(&mut self.seen);
                self.rt.step_until(seq)?;
                Ok(Some(seq))
            }
            Err(e) => {
                if e.committed().is_empty() {
                    // In doubt: reload from the store.
                    self.seen = None;
                } else {
                    forget(&mut self.seen);
                }
                Err(e)
            }
        }
    }
}

/// Now, in seconds since the Unix epoch (0 for a clock before it).
fn unix_now() -> u64 {
    (SystemTime::now().duration_since(UNIX_EPOCH)).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use prr_engine::{RuntimeConfig, Seq};

    use super::Matrix;
    use crate::matrix::tests::member;
    use crate::parse::parse_file;
    use crate::record::{Delivered, Rec};

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

    fn redaction(event_id: &str, redacts: &str) -> super::Received {
        let file = format!(
            r#"[{{"event_id": "{event_id}", "room_id": "!r:x", "type": "m.room.redaction",
                "sender": "@m:x", "redacts": "{redacts}", "content": {{}}}}]"#
        );
        match parse_file("f.json", file.as_bytes()).unwrap().remove(0) {
            crate::parse::SourceItem::Event(e) => super::Received::Valid(e),
            other => panic!("{other:?}"),
        }
    }

    fn ids(m: &mut Matrix, replica: &str) -> Vec<String> {
        (m.show(replica, None, None).unwrap().iter())
            .map(|r| r["event_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Pruning `source_events` removes what was received before the cutoff, except the
    /// current state; an invalid event leaves `rejects` with it; a pruned event that comes
    /// back is deduplicated no more, but an older state event is still not applied over the
    /// current one. A record without its time (format 4) becomes one received at the pruning.
    #[test]
    fn pruning_source_events_keeps_the_current_state() {
        for workers in [1, 2] {
            let dir = tempfile::tempdir().unwrap();
            let config = RuntimeConfig::new()
                .with_store(dir.path().join("s.redb"))
                .with_workers(workers);
            let mut m = Matrix::start(config).unwrap();
            let invalid = super::Received::Invalid {
                room_id: "!r:x".into(),
                event_id: "$bad".into(),
                event_type: "m.room.member".into(),
                state_key: "@b:x".into(),
                reason: "`content.membership` is missing".into(),
            };
            let events = vec![
                received_at("$1", "@a:x", "join", 10),
                received_at("$2", "@a:x", "leave", 20),
                redaction("$r", "$nothing"),
                invalid,
            ];
            assert_eq!(m.ingest_received(events).unwrap(), Some(Seq(1)));
            assert_eq!(ids(&mut m, "source_events"), ["$1", "$2", "$bad", "$r"]);
            assert_eq!(ids(&mut m, "rejects"), ["$bad"]);
            let now = super::unix_now();
            assert_eq!(m.prune_source_events(now - 60).unwrap(), None, "all recent");
            assert_eq!(m.prune_source_events(now + 60).unwrap(), Some(Seq(2)));
            assert_eq!(ids(&mut m, "source_events"), ["$2"], "{workers} workers");
            assert!(ids(&mut m, "rejects").is_empty());
            assert_eq!(m.prune_source_events(now + 60).unwrap(), None);
            // $1 again: recorded, not applied over $2 (older); $2 again: a duplicate.
            let again = vec![received_at("$1", "@a:x", "join", 10)];
            assert_eq!(m.ingest_received(again).unwrap(), Some(Seq(3)));
            assert_eq!(ids(&mut m, "room_state"), ["$2"]);
            let again = vec![received_at("$2", "@a:x", "leave", 20)];
            assert_eq!(m.ingest_received(again).unwrap(), None);

            // A format 4 record: timed at the first pruning, pruned by a later one.
            let replica = m.runtime().replica("source_events").unwrap();
            let dict = m.runtime().dictionary().clone();
            let untimed = Rec::UntimedSourceEvent(std::sync::Arc::new(Delivered {
                room: dict.intern("!r:x"),
                event_id: dict.intern("$old"),
                event_type: dict.intern("m.room.redaction"),
                state_key: dict.intern(""),
                invalid: None,
            }));
            let mut delta = prr_engine::SourceDelta::new();
            delta.insert(replica, untimed);
            let seq = m.runtime().push(delta).unwrap();
            m.wait(seq).unwrap();
            m.seen = None;
            assert_eq!(m.prune_source_events(now - 60).unwrap(), Some(Seq(5)));
            let rows = m.runtime().read(replica, None).unwrap();
            assert!(
                (rows.iter()).any(|(r, _)| matches!(r, Rec::SourceEvent { received, .. }
                    if *received >= now)),
                "{rows:?}"
            );
            assert!(!(rows.iter()).any(|(r, _)| matches!(r, Rec::UntimedSourceEvent(_))));
            assert_eq!(
                m.ingest_received(vec![redaction("$old", "$x")]).unwrap(),
                None
            );
            m.prune_source_events(now + 60).unwrap();
            assert_eq!(ids(&mut m, "source_events"), ["$2"]);
            m.shutdown().unwrap();
        }
    }
}
