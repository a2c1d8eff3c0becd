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

use prr_persist::{RevisionWrite, Store};

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
    /// The revisions to write, encoded (only the changed chunks, for a replica with a base).
    fn encode(self) -> Result<(u64, Vec<RevisionWrite>), Error> {
        let dag = self.dag;
        let writes = (self.splits.into_iter())
            .map(|(id, split)| {
                catch_damage(|| capture::revision(split, dag.replica(id), self.per_chunk))?
            })
            .collect::<Result<_, Error>>()?;
        Ok((self.as_of, writes))
    }
}

impl<R: Record> Runtime<R> {
    /// Captures a revision of every replica as of the last `Seq`, in one transaction, then
    /// collects garbage. Returns the `as_of`. A capture in the background ends first.
    pub fn capture_revisions(&mut self) -> Result<Seq, Error> {
        self.wait_capture();
        self.stored.store("capturing revisions")?;
        let as_of = match self.capture_contents()? {
            Some(contents) => {
                let (as_of, writes) = contents.encode()?;
                self.stored.write_revisions(as_of, &writes)?;
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
        let mut splits = Vec::with_capacity(dag.len());
        for (i, desc) in dag.replicas().iter().enumerate() {
            if desc.is_view() {
                continue; // evaluated from its inputs' revisions when read
            }
            let id = ReplicaId(i as u32);
            splits.push((id, self.read_split(id)?));
        }
        Ok(Some(Contents {
            as_of,
            splits,
            dag,
            per_chunk: self.stored.config.chunk_records,
        }))
    }
}

/// A capture's thread: encodes `contents`, writes the new chunks ahead in short transactions,
/// then the headers with the dictionary strings not yet stored.
fn write_in_background<R: Record>(
    contents: Contents<R>,
    store: &Store,
    dictionary: &Dictionary,
) -> Result<(), Error> {
    let (as_of, mut writes) = contents.encode()?;
    store.write_chunks_ahead(&mut writes)?;
    write_revisions(dictionary, store, as_of, &writes)
}
