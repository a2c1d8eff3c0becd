//! Previews: the deltas that source deltas would cause, computed on the running dataflow
//! without committing anything; the dataflow is then restored from the store.

use super::Runtime;
use crate::api::{Delta, SourceDelta};
use crate::description::ReplicaId;
use crate::error::Error;
use crate::record::Record;

impl<R: Record> Runtime<R> {
    /// The deltas of `replicas` that pushing `deltas` (in order, as `Seq`s after the last)
    /// would cause, **without committing anything**: nothing is written to the store (a
    /// read-only runtime previews too), and the same deltas pushed for real then produce the
    /// same replica deltas at the same `Seq`s. They are computed on the running dataflow,
    /// which then holds what was never committed: it is dropped, and restored from the store
    /// when next needed (at once when it has subscribers; they see nothing of the preview).
    /// Needs a store.
    pub fn preview(
        &mut self,
        replicas: &[ReplicaId],
        deltas: Vec<SourceDelta<R>>,
    ) -> Result<Vec<Delta<R>>, Error> {
        self.stored.store("previewing source deltas")?;
        self.only_sources(&deltas)?;
        let last = self.stored.last_seq;
        self.ensure_controller()?;
        self.give_bases(replicas)?;
        let controller = (self.controller.as_mut())
            .ok_or_else(|| Error::WorkerFailed("the dataflow is not running".into()))?;
        let subscribers = controller.take_subscribers();
        let n = deltas.len() as u64;
        let computed = (|| {
            let subs = (replicas.iter())
                .map(|r| controller.subscribe(*r))
                .collect::<Result<Vec<_>, _>>()?;
            for (seq, delta) in (last + 1..).zip(deltas) {
                let updates = (delta.updates.into_iter())
                    .map(|(r, rec, d)| (r.0, rec, d))
                    .collect();
                controller.feed(seq, updates)?;
            }
            controller.step_until(last + n)?;
            let mut out: Vec<Delta<R>> = (subs.iter())
                .flat_map(|s| s.try_iter())
                .filter(|d| d.seq.0 > last)
                .collect();
            out.sort_by_key(|d| (d.seq, d.replica));
            Ok(out)
        })();
        // The dataflow holds the preview: it goes, whatever happened.
        if let Some(mut old) = self.controller.take() {
            let _ = old.wait_decodings();
            let _ = old.stop_threads();
        }
        self.resumed.clear();
        if subscribers.iter().any(|s| !s.is_empty()) {
            self.ensure_controller()?;
            self.adopt_subscribers(subscribers)?;
        }
        computed
    }
}
