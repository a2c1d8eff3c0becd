//! Collecting the dictionary: strings that no retained log entry or revision uses leave the
//! store (see `docs/design.md`, "The dictionary").

use super::Runtime;
use crate::bits::Bits;
use crate::codec::{self, LoggedDelta};
use crate::error::Error;
use crate::record::Record;
use crate::stored::with_new_strings;

impl<R: Record> Runtime<R> {
    /// Captures revisions (so that every record the dataflow holds is in one), then removes
    /// from the store every string that no retained log entry or revision uses, and returns
    /// how many went. Their ids become holes, never handed out again; their strings stay in
    /// this process's memory until it ends, and go back into the store if its records use
    /// them again. A DAG without `Dag::with_record_ids` cannot tell which ids its records
    /// use: nothing is collected.
    pub fn collect_strings(&mut self) -> Result<u64, Error> {
        let Some(ids) = self.stored.dag.record_ids() else {
            return Ok(0);
        };
        self.capture_revisions()?;
        let store = self.stored.store("collecting strings")?.clone();
        let dictionary = self.stored.dictionary.clone();
        let (revived, persisted) = dictionary.pinned();
        let mut live = Bits::with_len(persisted);
        for id in revived {
            live.insert(id);
        }
        let mut mark = |r: &R| ids(r, &mut |id| live.insert(id));
        store.for_each_log(.., |seq, bytes| {
            let logged: LoggedDelta<R> = codec::decode(bytes, &format!("log entry {seq}"))?;
            logged
                .iter()
                .flat_map(|(_, rows)| rows)
                .for_each(|(r, _)| mark(r));
            Ok::<_, Error>(())
        })?;
        store.for_each_chunk(|bytes| {
            let rows: Vec<(R, i64)> = codec::decode(bytes, "a revision chunk")?;
            rows.iter().for_each(|(r, _)| mark(r));
            Ok::<_, Error>(())
        })?;
        let collected = store.collect_strings(&|id| id >= persisted || live.contains(id))?;
        dictionary.mark_collected(&collected);
        Ok(collected.len() as u64)
    }

    /// [`Runtime::collect_strings`], then gives the collected strings' memory back, as a
    /// restart of the process would, without one: the dataflow stops, the dictionary is
    /// loaded again from the store (without the collected strings), and the dataflow restarts
    /// from the revisions just captured; subscriptions go on with the new dataflow. Returns
    /// how many strings the store collected.
    ///
    /// An id of a collected string means nothing afterwards: a caller that holds ids read
    /// from the replicas (deltas not yet taken from a subscription included) drops them
    /// first, and reads again after. The ids the DAG's build handed out are never collected.
    /// When deltas of a rebuild are waiting to be taken ([`Runtime::take_rebuild_deltas`]),
    /// the strings stay in memory.
    pub fn collect_strings_in_memory(&mut self) -> Result<u64, Error> {
        let collected = self.collect_strings()?;
        if !self.stored.dictionary.has_holes() || !self.rebuild_deltas.is_empty() {
            return Ok(collected);
        }
        let store = self.stored.store("collecting strings")?.clone();
        let dictionary = self.stored.dictionary.clone();
        self.wait_capture();
        let (subscribers, stopped) = self.take_dataflow();
        // Strings interned since the capture (no record uses them yet) and revived ones are
        // stored first, once no worker interns any more: the dictionary is loaded from the
        // store.
        let reloaded = with_new_strings(&dictionary, &store, |first_id, strings| {
            store.append(&[], first_id, strings)
        })
        .map_err(Error::from)
        .and_then(|_| {
            let n = store.string_count()?;
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            dictionary.load_parallel(n, threads as u64, |from, to, f| {
                Ok(store.for_each_string_in(from, to, f)?)
            })
        });
        // The dataflow restarts with its subscribers whatever happened (after a load that
        // failed, on an empty dictionary, its restore fails: the store is damaged).
        self.restore_dataflow(self.stored.last_seq, subscribers)?;
        reloaded?;
        stopped?;
        Ok(collected)
    }
}
