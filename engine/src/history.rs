//! History: time travel and delta history by replaying retained revisions and the log, and
//! rebuilds that compare stored revisions with a recomputation from the log.

use std::collections::BTreeSet;

use crate::api::{Delta, RebuildOutcome};
use crate::capture;
use crate::codec;
use crate::description::ReplicaId;
use crate::error::Error;
use crate::record::Record;
use crate::restore::{Replay, replay, replay_log};
use crate::seq::Seq;
use crate::stored::Stored;
use crate::updates::difference;

/// A stored replica's contents as of `seq` (at most the last committed), from a fresh
/// revision at exactly `seq` or a replay of the log from the newest restore point before it.
pub(crate) fn read_as_of<R: Record>(
    stored: &Stored<R>,
    replica: ReplicaId,
    seq: u64,
    partition: Option<u64>,
) -> Result<Vec<(R, isize)>, Error> {
    stored.store("reading an earlier seq")?;
    if let Some(rows) = stored.fresh_revision(replica, seq)? {
        return Ok(stored.filter_partition(replica, rows, partition));
    }
    let start = stored.start_point(seq)?;
    let mut controller = replay(stored, start, seq)?;
    let rows = controller.read(replica, partition)?;
    controller.stop()?;
    Ok(rows)
}

/// A replica's deltas for every `Seq > since`, in order, as far back as the retained log
/// and revisions reach.
pub(crate) fn deltas_since<R: Record>(
    stored: &Stored<R>,
    replica: ReplicaId,
    since: Seq,
) -> Result<Vec<Delta<R>>, Error> {
    stored.store("reading delta history")?;
    let start = stored.start_point(since.0.min(stored.last_seq))?;
    let mut controller = replay(stored, start, start.as_of)?;
    let sub = controller.subscribe(replica)?;
    replay_log(
        stored,
        &mut controller,
        start.as_of + 1,
        stored.last_seq,
        Replay::EachSeq,
    )?;
    controller.step_until(stored.last_seq)?;
    controller.stop()?;
    Ok(sub.try_iter().filter(|d| d.seq > since).collect())
}

/// Recomputes replicas from the source log alone (in batch) and compares them with every
/// retained revision of `selected`; unless `check_only`, replaces the revisions that differ
/// (or were made by other logic). The caller stops its running dataflow first.
pub(crate) fn rebuild<R: Record>(
    stored: &Stored<R>,
    selected: &BTreeSet<ReplicaId>,
    check_only: bool,
) -> Result<Vec<RebuildOutcome>, Error> {
    let dag = &stored.dag;
    let start = stored.log_start_point()?;
    // The log is verified whole before anything is recomputed: a rebuild never replaces a
    // revision from a log that fails its checksums or does not decode.
    verify_log(stored, start.as_of + 1)?;
    let mut controller = replay(stored, start, start.as_of)?;
    let revisions = stored.revisions()?;
    let mut as_ofs: BTreeSet<u64> = BTreeSet::new();
    for info in &revisions {
        if let Some(id) = dag.id(&info.replica)
            && selected.contains(&id)
            && info.as_of >= start.as_of
        {
            as_ofs.insert(info.as_of);
        }
    }
    let mut outcomes = Vec::new();
    let mut at = start.as_of;
    for as_of in as_ofs {
        replay_log(stored, &mut controller, at + 1, as_of, Replay::Batched)?;
        controller.step_until(as_of)?;
        at = as_of;
        let mut writes = Vec::new();
        for info in revisions.iter().filter(|i| i.as_of == as_of) {
            let Some(id) = dag.id(&info.replica) else {
                continue;
            };
            // A view's revision (from a store of an earlier program) is not maintained;
            // garbage collection deletes it.
            if !selected.contains(&id) || dag.replica(id).is_view() {
                continue;
            }
            let desc = dag.replica(id);
            let rebuilt = controller.read(id, None)?;
            // A revision that cannot be read is damage to repair, not a reason to stop.
            let (old, damage) = match stored.decode_revision(&info.replica, as_of) {
                Ok(old) => (old, None),
                Err(e @ (Error::Corrupt(_) | Error::Store(prr_persist::Error::Corrupt(_)))) => {
                    (Vec::new(), Some(e.to_string()))
                }
                Err(e) => return Err(e),
            };
            let diff = difference(&old, &rebuilt);
            let missing = diff
                .iter()
                .filter(|(_, d)| *d > 0)
                .map(|(_, d)| *d as u64)
                .sum();
            let extra = diff
                .iter()
                .filter(|(_, d)| *d < 0)
                .map(|(_, d)| (-*d) as u64)
                .sum();
            let stale = info.logic_version != desc.logic_version()
                || info.description_hash != desc.description_hash();
            let replace = !check_only && (!diff.is_empty() || stale || damage.is_some());
            if replace {
                // Every chunk written, a damaged one (whose sound contents have its key) too.
                // Held whole: a rebuild replaces revisions in one transaction (`overwrite`).
                let mut write =
                    capture::whole(desc, rebuilt, stored.config.chunk_records, &mut |_, _| {
                        Ok(())
                    })?;
                write.overwrite = true;
                writes.push(write);
            }
            outcomes.push(RebuildOutcome {
                replica: info.replica.clone(),
                as_of: Seq(as_of),
                missing,
                extra,
                replaced: replace,
                damage,
            });
        }
        if !writes.is_empty() {
            stored.write_revisions(as_of, &writes)?;
        }
    }
    controller.stop()?;
    Ok(outcomes)
}

/// Reads and decodes every log entry from `from` on (checksums, records, dictionary ids,
/// replica names, no gap): the first that fails is an error naming it, and the rebuild stops
/// before replacing anything.
fn verify_log<R: Record>(stored: &Stored<R>, from: u64) -> Result<(), Error> {
    let store = stored.store("rebuilding from the log")?;
    let ids = stored.id_check();
    let mut expected = from;
    let verified = store.for_each_log(from.., |seq, bytes| {
        if seq != expected {
            return Err(Error::HistoryUnavailable(format!(
                "the source log lacks seq {expected} (next retained: {seq})"
            )));
        }
        expected += 1;
        let logged = codec::decode_log(bytes, seq, &ids)?;
        if let Some((name, _)) = logged.iter().find(|(n, _)| stored.dag.id(n).is_none()) {
            return Err(Error::Corrupt(format!(
                "log entry {seq} names replica `{name}`, which this program does not declare"
            )));
        }
        Ok(())
    });
    verified.map_err(|e| {
        Error::Corrupt(format!(
            "the source log cannot be rebuilt from, so no revision is replaced: {e}"
        ))
    })?;
    if expected <= stored.last_seq {
        return Err(Error::Corrupt(format!(
            "the source log ends at seq {}, before the last seq {}: no revision is replaced",
            expected - 1,
            stored.last_seq
        )));
    }
    Ok(())
}
