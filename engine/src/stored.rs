//! The runtime's persistent side: the store, the DAG it serves, the dictionary and the last
//! committed `Seq`; what the store holds for this DAG (revisions, their freshness, restore
//! points) and writing revisions.

use std::collections::BTreeMap;
use std::sync::Arc;

use prr_persist::{Quarantined, RevisionInfo, RevisionWrite, Store};

use crate::api::RuntimeConfig;
use crate::codec;
use crate::dag::Dag;
use crate::description::ReplicaId;
use crate::dictionary::{Dictionary, Id};
use crate::error::Error;
use crate::record::Record;

/// Where a replay starts: the revisions of every source replica as of `as_of` (none when 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StartPoint {
    pub(crate) as_of: u64,
}

/// Runs `write`, a store write that takes the dictionary's strings not yet stored (`first_id`
/// and on), and has it put back the revived ones (see `Dictionary::revive`); marks them
/// stored once it succeeds. On failure they stay pending for the next write: the dataflow
/// may hold their ids already.
pub(crate) fn with_new_strings<T>(
    dictionary: &Dictionary,
    store: &Store,
    write: impl FnOnce(u64, &[String]) -> Result<T, prr_persist::Error>,
) -> Result<T, prr_persist::Error> {
    let _persisting = dictionary.persisting();
    let (first_id, strings) = dictionary.unpersisted();
    let revived = dictionary.revived();
    let ids: Vec<Id> = revived.iter().map(|(id, _)| *id).collect();
    if !revived.is_empty() {
        store.put_back_strings(revived);
    }
    let written = write(first_id, &strings);
    if written.is_ok() {
        dictionary.mark_persisted(first_id + strings.len() as u64);
        dictionary.mark_revived(ids);
    }
    written
}

/// Writes revisions as of `as_of` in one transaction of `store`, with the strings of
/// `dictionary` not yet stored (see [`with_new_strings`]).
pub(crate) fn write_revisions(
    dictionary: &Dictionary,
    store: &Store,
    as_of: u64,
    writes: &[RevisionWrite],
) -> Result<(), Error> {
    with_new_strings(dictionary, store, |first_id, strings| {
        store.write_revisions(as_of, writes, first_id, strings)
    })?;
    Ok(())
}

/// The persistent side of a runtime (see the module documentation).
pub(crate) struct Stored<R: Record> {
    pub(crate) config: RuntimeConfig,
    pub(crate) dag: Arc<Dag<R>>,
    pub(crate) dictionary: Dictionary,
    /// Shared with the threads that decode a restore's seeds.
    pub(crate) store: Option<Arc<Store>>,
    /// The last committed (or, without a store, pushed) `Seq`.
    pub(crate) last_seq: u64,
    /// The quarantined source deltas, by `Seq` (a copy of the store's, plus those quarantined
    /// by a read-only runtime, for its life only): every replay skips them.
    pub(crate) quarantine: BTreeMap<u64, Quarantined>,
}

impl<R: Record> Stored<R> {
    /// The store, or an error saying that `what` needs one.
    pub(crate) fn store(&self, what: &'static str) -> Result<&Arc<Store>, Error> {
        self.store.as_ref().ok_or(Error::NoStore(what))
    }

    /// Whether the source delta at `seq` is quarantined: no replay feeds it.
    pub(crate) fn is_quarantined(&self, seq: u64) -> bool {
        self.quarantine.contains_key(&seq)
    }

    /// The stored revisions' headers (none without a store).
    pub(crate) fn revisions(&self) -> Result<Vec<RevisionInfo>, Error> {
        match &self.store {
            Some(s) => Ok(s.revisions()?),
            None => Ok(Vec::new()),
        }
    }

    /// Whether a revision was made by this program's logic for its replica.
    pub(crate) fn is_fresh(&self, info: &RevisionInfo) -> bool {
        self.dag.id(&info.replica).is_some_and(|id| {
            let d = self.dag.replica(id);
            d.logic_version() == info.logic_version && d.description_hash() == info.description_hash
        })
    }

    /// The header of `replica`'s revision as of `as_of`, if stored.
    pub(crate) fn revision_info(
        &self,
        replica: ReplicaId,
        as_of: u64,
    ) -> Result<Option<RevisionInfo>, Error> {
        let name = self.dag.replica(replica).name();
        Ok(self
            .revisions()?
            .into_iter()
            .find(|i| i.replica == name && i.as_of == as_of))
    }

    /// Whether `replica` has a revision as of `as_of` made by this program's logic.
    pub(crate) fn has_fresh(&self, replica: ReplicaId, as_of: u64) -> Result<bool, Error> {
        Ok(self
            .revision_info(replica, as_of)?
            .is_some_and(|info| self.is_fresh(&info)))
    }

    /// `replica`'s revision as of `as_of`, decoded, if one made by this program's logic is
    /// stored.
    pub(crate) fn fresh_revision(
        &self,
        replica: ReplicaId,
        as_of: u64,
    ) -> Result<Option<Vec<(R, isize)>>, Error> {
        match self.revision_info(replica, as_of)? {
            Some(info) if self.is_fresh(&info) => {
                Ok(Some(self.decode_revision(&info.replica, as_of)?))
            }
            _ => Ok(None),
        }
    }

    /// Checks records read from the store against the dictionary (see [`crate::RecordIds`]).
    pub(crate) fn id_check(&self) -> codec::IdCheck<R> {
        codec::IdCheck::new(self.dag.record_ids(), self.dictionary.clone())
    }

    /// The records of revision `(replica, as_of)`, in chunk order.
    pub(crate) fn decode_revision(
        &self,
        replica: &str,
        as_of: u64,
    ) -> Result<Vec<(R, isize)>, Error> {
        let store = self.store("reading a revision")?;
        let ids = self.id_check();
        let mut rows = Vec::new();
        for (i, chunk) in store.revision_chunks(replica, as_of)?.iter().enumerate() {
            rows.extend(codec::decode_chunk(chunk, replica, as_of, i as u32, &ids)?);
        }
        Ok(rows)
    }

    /// Writes revisions in one transaction with the dictionary strings not yet stored.
    pub(crate) fn write_revisions(
        &self,
        as_of: u64,
        writes: &[RevisionWrite],
    ) -> Result<(), Error> {
        write_revisions(
            &self.dictionary,
            self.store("writing revisions")?,
            as_of,
            writes,
        )
    }

    /// The rows of `replica` in `partition` (all of them without one).
    pub(crate) fn filter_partition(
        &self,
        replica: ReplicaId,
        rows: Vec<(R, isize)>,
        partition: Option<u64>,
    ) -> Vec<(R, isize)> {
        match partition {
            None => rows,
            Some(p) => {
                let desc = self.dag.replica(replica);
                rows.into_iter()
                    .filter(|(r, _)| desc.partition_of(r) == p)
                    .collect()
            }
        }
    }

    /// The newest restore point at or before `upto`: a complete, current set of source
    /// revisions, or the empty beginning when the log reaches back to seq 1.
    pub(crate) fn start_point(&self, upto: u64) -> Result<StartPoint, Error> {
        let Some(store) = &self.store else {
            return Ok(StartPoint { as_of: 0 });
        };
        let revisions = store.revisions()?;
        let first_log = store.first_log_seq()?;
        let sets = self.source_sets(&revisions);
        // A set the log goes on from (the running dataflow's base may be older than the log).
        let usable = |a: u64| a <= upto && (a == upto || self.log_goes_on_from(a, first_log));
        if let Some(as_of) = sets.iter().rev().find(|a| usable(**a)) {
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
    pub(crate) fn log_start_point(&self) -> Result<StartPoint, Error> {
        let store = self.store("rebuilding from the log")?;
        let first_log = store.first_log_seq()?;
        if self.log_reaches_start(first_log) {
            return Ok(StartPoint { as_of: 0 });
        }
        let sets = self.source_sets(&store.revisions()?);
        (sets.iter())
            .find(|a| self.log_goes_on_from(**a, first_log))
            .map(|a| StartPoint { as_of: *a })
            .ok_or_else(|| {
                Error::HistoryUnavailable(
                    "the log does not start at seq 1 and no source revision is retained".into(),
                )
            })
    }

    /// Whether the retained log holds every entry after `as_of` (none are needed at the last
    /// `Seq`).
    fn log_goes_on_from(&self, as_of: u64, first_log: Option<u64>) -> bool {
        as_of >= self.last_seq || first_log.is_some_and(|f| f <= as_of + 1)
    }

    /// Whether the retained log begins at seq 1 (an empty log only if nothing was committed).
    fn log_reaches_start(&self, first_log: Option<u64>) -> bool {
        match first_log {
            Some(f) => f <= 1,
            None => self.last_seq == 0,
        }
    }

    /// The `as_of`s at which every source replica has a current revision, ascending.
    fn source_sets(&self, revisions: &[RevisionInfo]) -> Vec<u64> {
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
