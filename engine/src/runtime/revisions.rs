//! Capturing revisions: at once ([`Runtime::capture_revisions`]), or in the background
//! ([`Runtime::start_capture`], [`Runtime::finish_capture`]) so that source deltas go on being
//! committed and computed while a capture encodes and writes.
//!
//! Only reading the replicas' contents from the dataflow needs the runtime's thread: the
//! changed chunks are encoded on a thread of their own, and written ahead of their headers in
//! transactions of about 1 MiB each ([`Store::write_chunks_ahead`]), so that commits go between
//! them; the headers follow in one short transaction. What could change the chunks a capture
//! in flight lists (garbage collection, a restart of the dataflow, compaction, a rebuild, the
//! collection of strings, another capture) first waits for it to end.

use std::sync::Arc;
use std::thread::JoinHandle;

use prr_persist::{ChunkWrite, RevisionWrite, Store};

use super::Runtime;
use crate::api::Split;
use crate::capture;
use crate::dag::Dag;
use crate::description::ReplicaId;
use crate::dictionary::Dictionary;
use crate::error::{Error, catch_damage, panic_message};
use crate::record::Record;
use crate::seq::Seq;
use crate::stored::write_revisions;

/// A capture running on a thread of its own.
pub(super) struct InFlight {
    as_of: u64,
    thread: JoinHandle<Result<(), Error>>,
}

/// What a capture writes once the dataflow's part is done: each stored replica's contents.
struct Contents<R: Record> {
    as_of: u64,
    splits: Vec<(ReplicaId, Split<R>)>,
    dag: Arc<Dag<R>>,
    per_chunk: usize,
}

impl<R: Record> Contents<R> {
    /// Encodes the revisions (only the changed chunks, for a replica with a base) one replica
    /// at a time, writing each one's new chunks ahead before the next is encoded. Returns the
    /// headers to write.
    fn write_ahead(self, store: &Store) -> Result<(u64, Vec<RevisionWrite>), Error> {
        let (dag, per_chunk) = (self.dag, self.per_chunk);
        let mut ahead = ChunksAhead::new(store, 0);
        for (id, split) in self.splits {
            let write = catch_damage(|| {
                capture::revision(split, dag.replica(id), per_chunk, &mut |w, b| {
                    ahead.grew(w, b)
                })
            })??;
            ahead.push(write)?;
        }
        Ok((self.as_of, ahead.writes))
    }
}

/// How many bytes of new chunks a capture at once holds before it writes them ahead of their
/// headers.
const AHEAD_BYTES: usize = 16 << 20;

/// The revisions of one capture, pushed one replica at a time: once their new chunks come to
/// `ahead` bytes, they are written ahead of the headers ([`Store::write_chunks_ahead`]) and
/// only their keys are kept. A capture at once ([`AHEAD_BYTES`]) smaller than that writes
/// nothing ahead: its chunks go with the headers, in one transaction. A capture in the
/// background (0) writes every chunk ahead, so that the headers' transaction is short.
///
/// A replica's revision being encoded is written ahead as it grows, by [`AHEAD_BYTES`] at a
/// time (or `ahead`, if larger): a large replica is never held encoded whole.
struct ChunksAhead<'s> {
    store: &'s Store,
    ahead: usize,
    writes: Vec<RevisionWrite>,
    /// `writes[written..]` may hold chunks not written yet, of `pending` bytes.
    written: usize,
    pending: usize,
    /// The new chunks' bytes of the revision being encoded, not written yet.
    growing: usize,
    /// How many bytes of new chunks, with those of the revision being encoded, are written
    /// ahead while it is encoded.
    grow_at: usize,
    /// Whether chunks were written ahead yet (the first write sweeps an earlier capture's).
    swept: bool,
}

impl<'s> ChunksAhead<'s> {
    fn new(store: &'s Store, ahead: usize) -> Self {
        ChunksAhead {
            store,
            ahead,
            writes: Vec::new(),
            written: 0,
            pending: 0,
            growing: 0,
            grow_at: ahead.max(AHEAD_BYTES),
            swept: false,
        }
    }

    /// `write`, being encoded, gained a new chunk of `bytes`: once the chunks not written yet
    /// come to [`AHEAD_BYTES`] (or `ahead`), they are written ahead, with those of the
    /// revisions pushed before.
    fn grew(&mut self, write: &mut RevisionWrite, bytes: usize) -> Result<(), Error> {
        self.growing += bytes;
        if self.pending + self.growing >= self.grow_at {
            self.write_ahead()?;
            write_ahead_of(self.store, &mut self.swept, std::slice::from_mut(write))?;
            self.growing = 0;
        }
        Ok(())
    }

    /// Writes the new chunks of the revisions pushed and not written yet.
    fn write_ahead(&mut self) -> Result<(), Error> {
        let unwritten = &mut self.writes[self.written..];
        write_ahead_of(self.store, &mut self.swept, unwritten)?;
        self.written = self.writes.len();
        self.pending = 0;
        Ok(())
    }

    /// Keeps `write`, and writes the new chunks held so far ahead once they are enough (the
    /// first time, sweeping what an earlier capture left there).
    fn push(&mut self, write: RevisionWrite) -> Result<(), Error> {
        self.pending += (write.chunks.iter())
            .map(|c| match c {
                ChunkWrite::New { payload, .. } => payload.len(),
                ChunkWrite::Stored(_) => 0,
            })
            .sum::<usize>();
        self.writes.push(write);
        self.growing = 0;
        if self.pending >= self.ahead {
            self.write_ahead()?;
        }
        Ok(())
    }
}

/// Writes the new chunks of `writes` ahead of their headers: the first time (`swept` unset)
/// sweeping what an earlier capture left there.
fn write_ahead_of(
    store: &Store,
    swept: &mut bool,
    writes: &mut [RevisionWrite],
) -> Result<(), Error> {
    if std::mem::replace(swept, true) {
        store.write_more_chunks_ahead(writes)?;
    } else {
        store.write_chunks_ahead(writes)?;
    }
    Ok(())
}

impl<R: Record> Runtime<R> {
    /// Captures a revision of every replica as of the last `Seq`, one replica at a time (its
    /// new chunks written ahead once they come to 16 MiB; the headers, which make the
    /// revisions visible, in one transaction), then collects garbage. Returns the `as_of`. A
    /// capture in the background ends first.
    pub fn capture_revisions(&mut self) -> Result<Seq, Error> {
        self.wait_capture();
        let store = self.stored.store("capturing revisions")?.clone();
        let as_of = match self.due()? {
            // One replica at a time: its contents read and encoded, then dropped, so that the
            // capture holds one replica's copy (and at most `AHEAD_BYTES` of new chunks) on
            // top of the dataflow.
            Some((as_of, due)) => {
                let dag = self.stored.dag.clone();
                let per_chunk = self.stored.config.chunk_records;
                let mut ahead = ChunksAhead::new(&store, AHEAD_BYTES);
                for id in due {
                    let split = self.read_split(id)?;
                    let write = catch_damage(|| {
                        let spill: capture::Spill<'_> = &mut |w, b| ahead.grew(w, b);
                        capture::revision(split, dag.replica(id), per_chunk, spill)
                    })??;
                    ahead.push(write)?;
                }
                write_revisions(&self.stored.dictionary, &store, as_of, &ahead.writes)?;
                as_of
            }
            None => self.stored.last_seq,
        };
        self.since_revision = 0;
        self.collect_garbage(self.stored.config.log_gc)?;
        Ok(Seq(as_of))
    }

    /// Starts capturing a revision of every replica as of the last `Seq` in the background:
    /// reads their contents from the dataflow, then encodes and writes them on a thread of
    /// its own while this runtime goes on. Returns false, starting nothing, when a capture is
    /// in flight already or every replica has a revision as of the last `Seq`.
    /// [`Runtime::finish_capture`] says how it ended.
    pub fn start_capture(&mut self) -> Result<bool, Error> {
        if self.capturing.is_some() {
            return Ok(false);
        }
        let store = self.stored.store("capturing revisions")?.clone();
        let Some(contents) = self.capture_contents()? else {
            self.since_revision = 0;
            return Ok(false);
        };
        let as_of = contents.as_of;
        let dictionary = self.stored.dictionary.clone();
        let thread = std::thread::Builder::new()
            .name("prr-capture".into())
            .spawn(move || write_in_background(contents, &store, &dictionary))
            .map_err(|e| Error::Workers(format!("cannot start the capture thread: {e}")))?;
        self.capturing = Some(InFlight { as_of, thread });
        self.since_revision = 0;
        Ok(true)
    }

    /// How the capture started by [`Runtime::start_capture`] ended: `None` while it runs
    /// (unless `wait`) or when none was started since the last call. After a capture that
    /// wrote its revisions, garbage is collected first.
    pub fn finish_capture(&mut self, wait: bool) -> Option<Result<Seq, Error>> {
        let Some(in_flight) = self.capturing.take() else {
            return self.captured.take();
        };
        if !wait && !in_flight.thread.is_finished() {
            self.capturing = Some(in_flight);
            return None;
        }
        let written = in_flight.thread.join().unwrap_or_else(|panic| {
            let what = panic_message(panic.as_ref());
            Err(Error::Workers(format!("the capture thread failed: {what}")))
        });
        let outcome = written
            .and_then(|()| self.collect_garbage(self.stored.config.log_gc))
            .map(|()| Seq(in_flight.as_of));
        if outcome.is_err() {
            // Whatever it wrote is superseded by the next capture.
            self.since_revision = self.since_revision.max(1);
        }
        Some(outcome)
    }

    /// Waits for a capture in flight, keeping its outcome for [`Runtime::finish_capture`].
    pub(super) fn wait_capture(&mut self) {
        if self.capturing.is_some() {
            self.captured = self.finish_capture(true);
        }
    }

    /// The contents of every stored replica as of the last `Seq` (the dataflow stepped
    /// through it), or `None` when each has a fresh revision as of it already.
    fn capture_contents(&mut self) -> Result<Option<Contents<R>>, Error> {
        let Some((as_of, due)) = self.due()? else {
            return Ok(None);
        };
        let mut splits = Vec::with_capacity(due.len());
        for id in due {
            splits.push((id, self.read_split(id)?));
        }
        Ok(Some(Contents {
            as_of,
            splits,
            dag: self.stored.dag.clone(),
            per_chunk: self.stored.config.chunk_records,
        }))
    }

    /// The last `Seq`, with the dataflow stepped through it, and the stored replicas (every
    /// one but the views, which are evaluated from their inputs' revisions when read), or
    /// `None` when each has a fresh revision as of it already.
    fn due(&mut self) -> Result<Option<(u64, Vec<ReplicaId>)>, Error> {
        self.settle()?;
        let as_of = self.stored.last_seq;
        let dag = self.stored.dag.clone();
        let mut all_fresh = self.controller.is_none();
        for (i, d) in dag.replicas().iter().enumerate() {
            if !all_fresh {
                break;
            }
            all_fresh = d.is_view() || self.stored.has_fresh(ReplicaId(i as u32), as_of)?;
        }
        if all_fresh {
            return Ok(None);
        }
        self.step_until(Seq(as_of))?;
        let due = (dag.replicas().iter().enumerate())
            .filter(|(_, d)| !d.is_view())
            .map(|(i, _)| ReplicaId(i as u32))
            .collect();
        Ok(Some((as_of, due)))
    }
}

/// A capture's thread: encodes `contents` and writes the new chunks ahead in short
/// transactions, one replica at a time, then the headers with the dictionary strings not yet
/// stored.
fn write_in_background<R: Record>(
    contents: Contents<R>,
    store: &Store,
    dictionary: &Dictionary,
) -> Result<(), Error> {
    let (as_of, writes) = contents.write_ahead(store)?;
    write_revisions(dictionary, store, as_of, &writes)
}

#[cfg(test)]
mod tests {
    use prr_persist::ChunkWrite;

    use super::*;

    fn write(replica: &str, payloads: &[&[u8]]) -> RevisionWrite {
        RevisionWrite {
            replica: replica.into(),
            logic_version: 1,
            description_hash: 1,
            records: payloads.len() as u64,
            chunks: (payloads.iter())
                .map(|p| ChunkWrite::New {
                    payload: p.to_vec(),
                    records: 1,
                })
                .collect(),
            overwrite: false,
        }
    }

    /// Writes the headers of the revisions pushed to `ahead`, as of 1.
    fn write_headers(store: &Store, ahead: ChunksAhead<'_>) {
        store
            .write_revisions(1, &ahead.writes, 0, &[] as &[&str])
            .unwrap();
    }

    /// The chunks of `replica`'s revision as of 1.
    fn chunks(store: &Store, replica: &str) -> Vec<Vec<u8>> {
        store.revision_chunks(replica, 1).unwrap()
    }

    fn new_chunks(writes: &[RevisionWrite]) -> usize {
        (writes.iter().flat_map(|w| &w.chunks))
            .filter(|c| matches!(c, ChunkWrite::New { .. }))
            .count()
    }

    /// New chunks are written ahead once they come to the threshold, those of earlier
    /// replicas too (and only their keys kept); below it they wait for the headers; with no
    /// threshold each replica's are written at once. The headers list all of them.
    #[test]
    fn chunks_are_written_ahead_once_they_come_to_the_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb")).unwrap();
        let mut ahead = ChunksAhead::new(&store, 10);
        ahead.push(write("a", &[b"1234", b"5678"])).unwrap();
        assert_eq!(new_chunks(&ahead.writes), 2, "8 bytes wait");
        ahead.push(write("b", &[b"abc"])).unwrap();
        assert_eq!(new_chunks(&ahead.writes), 0, "11 bytes are written ahead");
        ahead.push(write("c", &[b"xy"])).unwrap();
        assert_eq!(new_chunks(&ahead.writes), 1);
        write_headers(&store, ahead);
        assert_eq!(
            chunks(&store, "a"),
            vec![b"1234".to_vec(), b"5678".to_vec()]
        );
        assert_eq!(chunks(&store, "b"), vec![b"abc".to_vec()]);
        assert_eq!(chunks(&store, "c"), vec![b"xy".to_vec()]);
        let mut each = ChunksAhead::new(&store, 0);
        each.push(write("a", &[b"new"])).unwrap();
        assert_eq!(new_chunks(&each.writes), 0, "written at once");
    }

    /// A revision being encoded is written ahead as it grows, with the revisions pushed
    /// before it, once their new chunks come to the threshold; the rest waits. The headers
    /// list every chunk, in order.
    #[test]
    fn a_growing_revision_is_written_ahead_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb")).unwrap();
        let mut ahead = ChunksAhead::new(&store, 100);
        ahead.grow_at = 10;
        ahead.push(write("a", &[b"1234"])).unwrap();
        assert_eq!(new_chunks(&ahead.writes), 1, "4 bytes wait");
        let mut growing = write("b", &[]);
        // After each chunk: the new chunks of `a` and of `b` not written yet. At the second,
        // 4 + 3 + 3 = 10 bytes: `a` and `b`'s first two go ahead.
        let expected = [(1, 1), (0, 0), (0, 1), (0, 2)];
        for (chunk, want) in [&b"abc"[..], b"def", b"ghi", b"jk"]
            .into_iter()
            .zip(expected)
        {
            growing.chunks.push(ChunkWrite::New {
                payload: chunk.to_vec(),
                records: 1,
            });
            growing.records += 1;
            ahead.grew(&mut growing, chunk.len()).unwrap();
            let unwritten = (
                new_chunks(&ahead.writes),
                new_chunks(std::slice::from_ref(&growing)),
            );
            assert_eq!(unwritten, want);
        }
        ahead.push(growing).unwrap();
        write_headers(&store, ahead);
        assert_eq!(chunks(&store, "a"), vec![b"1234".to_vec()]);
        assert_eq!(
            chunks(&store, "b"),
            vec![
                b"abc".to_vec(),
                b"def".to_vec(),
                b"ghi".to_vec(),
                b"jk".to_vec()
            ]
        );
    }
}
