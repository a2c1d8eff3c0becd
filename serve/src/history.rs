//! The recent deltas of every replica, kept in memory for `GET /v1/replicas/{name}/deltas`:
//! a consumer following a replica asks for the deltas after the last `seq` it saw, and the
//! answer comes from here instead of a replay of the source log (which recomputes every replica
//! from the newest revision: seconds on a large store, on the core thread).
//!
//! The history holds every replica's deltas after `from`, the seq at which it started (or up to
//! which it dropped deltas to stay within [`BUDGET`] records); an older `since` is answered by
//! the replay.

use std::collections::BTreeMap;

use prr_engine::{Delta, Error, ReplicaId, Seq, Subscription};
use prr_replicas::{Matrix, Rec};

/// The most records the history keeps (about 100 bytes each); the oldest source deltas' go
/// first.
pub(crate) const BUDGET: usize = 500_000;

/// The deltas of every replica after `from`, by seq.
pub(crate) struct DeltaHistory {
    subscriptions: Vec<Subscription<Rec>>,
    by_seq: BTreeMap<Seq, Vec<Delta<Rec>>>,
    /// Every delta with a seq after this one is held.
    from: Seq,
    records: usize,
    budget: usize,
}

impl DeltaHistory {
    /// Follows every replica's deltas from the current seq on.
    pub(crate) fn start(m: &mut Matrix, budget: usize) -> Result<DeltaHistory, Error> {
        let names: Vec<String> = (m.runtime().dag().replicas().iter())
            .map(|d| d.name().to_string())
            .collect();
        let mut subscriptions = Vec::with_capacity(names.len());
        for name in &names {
            let id = m.runtime().replica(name)?;
            subscriptions.push(m.runtime().subscribe(id)?);
        }
        Ok(DeltaHistory {
            subscriptions,
            by_seq: BTreeMap::new(),
            from: m.runtime().last_seq(),
            records: 0,
            budget,
        })
    }

    /// Takes the deltas delivered since the last call, dropping the oldest source deltas'
    /// beyond the budget.
    pub(crate) fn absorb(&mut self) {
        for sub in &self.subscriptions {
            for delta in sub.try_iter() {
                if delta.seq <= self.from {
                    continue;
                }
                self.records += delta.updates.len();
                self.by_seq.entry(delta.seq).or_default().push(delta);
            }
        }
        while self.records > self.budget {
            let Some((seq, deltas)) = self.by_seq.pop_first() else {
                break;
            };
            self.records -= deltas.iter().map(|d| d.updates.len()).sum::<usize>();
            self.from = seq;
        }
    }

    /// `replica`'s deltas after `since`, in seq order, if the history holds all of them.
    pub(crate) fn since(&mut self, replica: ReplicaId, since: Seq) -> Option<Vec<Delta<Rec>>> {
        self.absorb();
        if since < self.from {
            return None;
        }
        let after = Seq(since.0.saturating_add(1));
        Some(
            (self.by_seq.range(after..).flat_map(|(_, ds)| ds))
                .filter(|d| d.replica == replica)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use prr_engine::RuntimeConfig;
    use prr_replicas::parse_file;

    use super::*;

    fn member(event_id: &str, user: &str) -> Vec<prr_replicas::SourceItem> {
        let file = format!(
            r#"[{{"event_id": "{event_id}", "room_id": "!r:x", "type": "m.room.member",
                "state_key": "{user}", "sender": "{user}", "content": {{"membership": "join"}}}}]"#
        );
        parse_file("f.json", file.as_bytes()).unwrap()
    }

    /// The history answers as the replay does while it holds every delta after `since`, and
    /// declines once the budget dropped them.
    #[test]
    fn the_history_answers_as_the_replay_and_declines_what_it_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let config = RuntimeConfig::new().with_store(dir.path().join("s.redb"));
        let mut m = Matrix::start(config).unwrap();
        m.ingest(&member("$0", "@a:x")).unwrap();
        let mut h = DeltaHistory::start(&mut m, 4).unwrap();
        let members = m.runtime().replica("room_members").unwrap();
        assert_eq!(
            h.since(members, Seq(0)),
            None,
            "seq 1 came before the history"
        );
        for (i, user) in ["@b:x", "@c:x"].iter().enumerate() {
            m.ingest(&member(&format!("$e{i}"), user)).unwrap();
        }
        for since in [1, 2, 3] {
            let got = h.since(members, Seq(since)).unwrap();
            let want = m.runtime().deltas_since(members, Seq(since)).unwrap();
            assert_eq!(got, want, "since {since}");
        }
        // Each join adds 2 records (room_state, room_members): a third one after the start goes
        // past the budget of 4 and drops the oldest seq.
        m.ingest(&member("$e3", "@d:x")).unwrap();
        h.absorb();
        assert!(h.since(members, Seq(1)).is_none());
        let got = h.since(members, Seq(3)).unwrap();
        assert_eq!(got, m.runtime().deltas_since(members, Seq(3)).unwrap());
    }
}
