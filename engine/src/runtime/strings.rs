//! Collecting the dictionary: strings that no retained log entry or revision uses leave the
//! store (see `docs/design.md`, "The dictionary").

use super::Runtime;
use crate::bits::Bits;
use crate::codec::{self, LoggedDelta};
use crate::error::Error;
use crate::record::Record;

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
}
