//! A test harness that checks a runtime against an oracle: a plain, from-scratch
//! recomputation of every replica.
//!
//! [`DeltaLog`] subscribes to every replica of a runtime and accumulates the deltas it
//! publishes. After each source delta, [`DeltaLog::check`] compares, for every replica, both the
//! contents accumulated from the deltas and the contents read from the arrangements with the
//! oracle's answer, and checks that every delta carried the provenance of that source delta.
//! Used by this crate's tests on random DAGs and by `prr-replicas` on the Matrix replicas.

use std::collections::BTreeMap;
use std::fmt::Debug;

use crate::api::{Delta, DeltaKind, Subscription};
use crate::description::ReplicaId;
use crate::error::Error;
use crate::record::Record;
use crate::runtime::Runtime;
use crate::seq::Seq;

/// A difference between the runtime and the oracle.
#[derive(Debug)]
pub struct Mismatch {
    /// The source delta after which it was seen.
    pub seq: Seq,
    /// The replica.
    pub replica: String,
    /// What differs.
    pub detail: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: replica `{}`: {}",
            self.seq, self.replica, self.detail
        )
    }
}

impl std::error::Error for Mismatch {}

/// Accumulates every replica's deltas from a runtime's subscriptions.
pub struct DeltaLog<R: Record> {
    subscriptions: Vec<(ReplicaId, String, Subscription<R>)>,
    state: BTreeMap<ReplicaId, BTreeMap<R, isize>>,
    last: BTreeMap<ReplicaId, Seq>,
}

impl<R: Record> DeltaLog<R> {
    /// Subscribes to every replica of `runtime`, starting from its current contents.
    pub fn attach(runtime: &mut Runtime<R>) -> Result<Self, Error> {
        let mut subscriptions = Vec::new();
        let mut state = BTreeMap::new();
        let n = runtime.dag().len();
        for i in 0..n {
            let id = ReplicaId(i as u32);
            let name = runtime.dag().replica(id).name().to_string();
            subscriptions.push((id, name, runtime.subscribe(id)?));
            let rows: BTreeMap<R, isize> = runtime.read(id, None)?.into_iter().collect();
            state.insert(id, rows);
        }
        Ok(DeltaLog {
            subscriptions,
            state,
            last: BTreeMap::new(),
        })
    }

    /// Steps `runtime` until `seq` is final and applies the deltas delivered, checking that
    /// each is consolidated, in `Seq` order and no later than `seq`.
    pub fn advance(
        &mut self,
        runtime: &mut Runtime<R>,
        seq: Seq,
    ) -> Result<Vec<Delta<R>>, Mismatch> {
        runtime.step_until(seq).map_err(|e| Mismatch {
            seq,
            replica: "*".into(),
            detail: e.to_string(),
        })?;
        let mut all = Vec::new();
        for (id, name, sub) in &self.subscriptions {
            for delta in sub.try_iter() {
                let fail = |detail: String| Mismatch {
                    seq,
                    replica: name.clone(),
                    detail,
                };
                if delta.kind != DeltaKind::Source {
                    return Err(fail(format!("unexpected {:?} delta", delta.kind)));
                }
                if delta.replica != *id {
                    return Err(fail(format!("delta names replica {:?}", delta.replica)));
                }
                if delta.seq > seq {
                    return Err(fail(format!(
                        "delta at {} published before it was final",
                        delta.seq
                    )));
                }
                if let Some(prev) = self.last.get(id)
                    && delta.seq <= *prev
                {
                    return Err(fail(format!(
                        "delta at {} after one at {prev}: out of order",
                        delta.seq
                    )));
                }
                if delta.updates.is_empty() || delta.updates.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Err(fail("delta is empty or not consolidated".into()));
                }
                self.last.insert(*id, delta.seq);
                let state = self.state.entry(*id).or_default();
                for (r, d) in &delta.updates {
                    let e = state.entry(r.clone()).or_insert(0);
                    *e += d;
                    if *e == 0 {
                        state.remove(r);
                    }
                }
                all.push(delta);
            }
        }
        Ok(all)
    }

    /// The contents of a replica accumulated from its deltas.
    pub fn contents(&self, replica: ReplicaId) -> Vec<(R, isize)> {
        self.state
            .get(&replica)
            .map(|m| m.iter().map(|(r, d)| (r.clone(), *d)).collect())
            .unwrap_or_default()
    }

    /// Compares every replica for which `expected` answers, both as accumulated from deltas
    /// and as read from the runtime, with the oracle.
    pub fn check(
        &self,
        runtime: &mut Runtime<R>,
        seq: Seq,
        mut expected: impl FnMut(ReplicaId, &str) -> Option<Vec<(R, isize)>>,
    ) -> Result<(), Mismatch> {
        for (id, name, _) in &self.subscriptions {
            let Some(mut want) = expected(*id, name) else {
                continue;
            };
            want.sort();
            let from_deltas = self.contents(*id);
            if from_deltas != want {
                return Err(Mismatch {
                    seq,
                    replica: name.clone(),
                    detail: describe(&want, &from_deltas, "deltas"),
                });
            }
            let read = runtime.read(*id, None).map_err(|e| Mismatch {
                seq,
                replica: name.clone(),
                detail: e.to_string(),
            })?;
            if read != want {
                return Err(Mismatch {
                    seq,
                    replica: name.clone(),
                    detail: describe(&want, &read, "read"),
                });
            }
        }
        Ok(())
    }
}

/// Names the first records that differ between `want` and `got`.
pub fn describe<R: Debug + Ord + Clone>(
    want: &[(R, isize)],
    got: &[(R, isize)],
    what: &str,
) -> String {
    let w: BTreeMap<R, isize> = want.iter().cloned().collect();
    let g: BTreeMap<R, isize> = got.iter().cloned().collect();
    let missing: Vec<_> = w
        .iter()
        .filter(|(r, d)| g.get(*r) != Some(d))
        .take(3)
        .collect();
    let extra: Vec<_> = g
        .iter()
        .filter(|(r, d)| w.get(*r) != Some(d))
        .take(3)
        .collect();
    format!(
        "{what}: {} records, oracle {}; oracle has (first 3) {missing:?}; runtime has (first 3) {extra:?}",
        got.len(),
        want.len()
    )
}

/// Decodes log entry `seq` (a source delta as the log holds it: per source replica by name,
/// its updates) as a restore does, for fuzz tests of a crate with its own record type. The
/// records' dictionary ids are not checked (there is no dictionary here).
#[allow(clippy::type_complexity)]
pub fn decode_log_entry<R: serde::de::DeserializeOwned>(
    bytes: &[u8],
    seq: u64,
) -> Result<Vec<(String, Vec<(R, i64)>)>, Error> {
    let unchecked = crate::codec::IdCheck::new(None, crate::dictionary::Dictionary::new());
    crate::codec::decode_log(bytes, seq, &unchecked)
}

/// Decodes revision chunk `(replica, as_of, i)` whole, and its first record alone, as a read
/// and a lookup do, for fuzz tests of a crate with its own record type. The records'
/// dictionary ids are not checked.
#[allow(clippy::type_complexity)]
pub fn decode_revision_chunk<R: serde::de::DeserializeOwned>(
    bytes: &[u8],
    replica: &str,
    as_of: u64,
    i: u32,
) -> (Result<Vec<(R, isize)>, Error>, Result<R, Error>) {
    let unchecked = crate::codec::IdCheck::new(None, crate::dictionary::Dictionary::new());
    (
        crate::codec::decode_chunk(bytes, replica, as_of, i, &unchecked),
        crate::codec::decode_first(bytes, replica, as_of, i, &unchecked),
    )
}
