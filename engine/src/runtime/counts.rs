//! Record counts of replicas and views, without building a view's records.

use super::Runtime;
use crate::description::ReplicaId;
use crate::error::Error;
use crate::record::Record;

impl<R: Record> Runtime<R> {
    /// The number of records of a replica now, counting multiplicity. A view's records are
    /// counted from its inputs without being built.
    pub fn records(&mut self, replica: ReplicaId) -> Result<u64, Error> {
        let dag = self.stored.dag.clone();
        if let Some(view) = dag.replica(replica).view() {
            let inputs = dag.inputs_of(replica);
            let left = self.read(inputs[0], None)?;
            let right = self.read(inputs[1], None)?;
            return Ok(view.count(&left, &right));
        }
        Ok(self
            .read(replica, None)?
            .iter()
            .map(|(_, d)| *d as u64)
            .sum())
    }

    /// The net change of a view's record count (counting multiplicity) since its inputs were
    /// as they are now minus `left` and `right` (the updates of its two inputs since then),
    /// counted without building its records and without reading an input when the other did
    /// not change: the count is bilinear, so the change is `V(L, dR) + V(dL, R) - V(dL, dR)`
    /// with `L` and `R` the inputs now.
    pub fn view_records_change(
        &mut self,
        view: ReplicaId,
        left: &[(R, isize)],
        right: &[(R, isize)],
    ) -> Result<i64, Error> {
        let dag = self.stored.dag.clone();
        let Some(join) = dag.replica(view).view() else {
            return Err(Error::NotAView(dag.replica(view).name().to_string()));
        };
        let inputs = dag.inputs_of(view);
        let mut change = 0;
        if !right.is_empty() {
            let now = self.read(inputs[0], None)?;
            change += join.signed_count(&now, right);
        }
        if !left.is_empty() {
            let now = self.read(inputs[1], None)?;
            change += join.signed_count(left, &now) - join.signed_count(left, right);
        }
        Ok(change)
    }
}
