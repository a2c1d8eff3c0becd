//! Previews: what ingesting files would change, computed without committing anything.

use prr_engine::{Error, ReplicaId};
use serde_json::Value;

use super::Matrix;
use crate::parse::SourceItem;

impl Matrix {
    /// The deltas that ingesting `batches` (each its own source delta, as `prr ingest` makes
    /// one of each file) would cause in `replicas` (every replica but the views when empty),
    /// as JSON lines `{"replica", "seq", "diff", "record"}` in order of `seq`, then of the
    /// replicas' order: the lines [`Matrix::deltas`] gives for each replica after the same
    /// ingest, at the same `Seq`s. Nothing is committed (a read-only store previews too).
    pub fn preview<B: AsRef<[SourceItem]>>(
        &mut self,
        batches: &[B],
        replicas: &[String],
    ) -> Result<Vec<Value>, Error> {
        let ids: Vec<ReplicaId> = if replicas.is_empty() {
            let dag = self.rt.dag();
            (0..dag.len() as u32)
                .map(ReplicaId)
                .filter(|id| !dag.replica(*id).is_view())
                .collect()
        } else {
            (replicas.iter())
                .map(|r| self.rt.replica(r))
                .collect::<Result<_, _>>()?
        };
        let dict = self.rt.dictionary().clone();
        self.ingestor()?;
        let mut ingestor = self.ingestor.take().expect("ingestor loaded");
        // Each batch sees the state left by the ones before it, as in `submit_many`; the
        // ingest state then holds what was never committed: it is reloaded when next needed.
        let deltas = (batches.iter())
            .map(|items| {
                let mut prepared = ingestor.prepare(&dict, items.as_ref());
                let delta = std::mem::take(&mut prepared.delta);
                ingestor.commit(prepared);
                delta
            })
            .collect();
        drop(ingestor);
        let deltas = self.rt.preview(&ids, deltas)?;
        Ok(self.render_deltas(&deltas, true))
    }
}
