//! The DAG of replicas: a validated set of descriptions in a topological order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::description::{ReplicaDescription, ReplicaId};
use crate::error::DagError;
use crate::record::{Record, RecordIds};

/// A validated set of replica descriptions, in a topological order (every replica after its
/// inputs).
pub struct Dag<R: Record> {
    replicas: Vec<ReplicaDescription<R>>,
    inputs: Vec<Vec<ReplicaId>>,
    by_name: BTreeMap<String, ReplicaId>,
    record_ids: Option<RecordIds<R>>,
}

impl<R: Record> fmt::Debug for Dag<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.replicas.iter()).finish()
    }
}

impl<R: Record> Dag<R> {
    /// Validates the descriptions: unique names, known inputs, no cycles. The replicas keep
    /// their declaration order where it is already topological, and are reordered otherwise.
    pub fn new(descriptions: Vec<ReplicaDescription<R>>) -> Result<Self, DagError> {
        let mut names = BTreeSet::new();
        for d in &descriptions {
            if !names.insert(d.name().to_string()) {
                return Err(DagError::DuplicateName(d.name().to_string()));
            }
        }
        for d in &descriptions {
            if !d.is_source() && d.inputs().is_empty() {
                return Err(DagError::NoInputs(d.name().to_string()));
            }
            for i in d.inputs() {
                if !names.contains(&i.replica) {
                    return Err(DagError::UnknownInput {
                        replica: d.name().to_string(),
                        input: i.replica.clone(),
                    });
                }
            }
        }
        let views: BTreeSet<&str> = descriptions
            .iter()
            .filter(|d| d.is_view())
            .map(|d| d.name())
            .collect();
        for d in &descriptions {
            if let Some(i) = d
                .inputs()
                .iter()
                .find(|i| views.contains(i.replica.as_str()))
            {
                return Err(DagError::ViewInput {
                    replica: d.name().to_string(),
                    view: i.replica.clone(),
                });
            }
        }
        // Kahn's algorithm, stable: repeatedly take the first description whose inputs are placed.
        let mut pending: Vec<ReplicaDescription<R>> = descriptions;
        let mut placed: BTreeSet<String> = BTreeSet::new();
        let mut ordered = Vec::with_capacity(pending.len());
        while !pending.is_empty() {
            let pos = pending
                .iter()
                .position(|d| d.inputs().iter().all(|i| placed.contains(&i.replica)));
            match pos {
                Some(p) => {
                    let d = pending.remove(p);
                    placed.insert(d.name().to_string());
                    ordered.push(d);
                }
                None => {
                    // Every pending replica waits on another pending one: name one on a cycle.
                    return Err(DagError::Cycle(cycle_member(&pending)));
                }
            }
        }
        let by_name: BTreeMap<String, ReplicaId> = ordered
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name().to_string(), ReplicaId(i as u32)))
            .collect();
        let inputs = ordered
            .iter()
            .map(|d| d.inputs().iter().map(|i| by_name[&i.replica]).collect())
            .collect();
        Ok(Dag {
            replicas: ordered,
            inputs,
            by_name,
            record_ids: None,
        })
    }

    /// Declares which fields of a record are dictionary ids: every record read from the store
    /// (log entries, revision chunks) is then checked to use only ids the dictionary holds, and
    /// `check` verifies it for the whole store. Without it, ids are not checked.
    pub fn with_record_ids(mut self, ids: RecordIds<R>) -> Self {
        self.record_ids = Some(ids);
        self
    }

    /// The same DAG without its [`Dag::with_record_ids`].
    pub(crate) fn without_record_ids(mut self) -> Self {
        self.record_ids = None;
        self
    }

    /// The function listing a record's dictionary ids, if declared.
    pub(crate) fn record_ids(&self) -> Option<RecordIds<R>> {
        self.record_ids
    }
}

/// Walks input edges among the pending descriptions until a name repeats: that one is on a cycle.
fn cycle_member<R: Record>(pending: &[ReplicaDescription<R>]) -> String {
    let pending_names: BTreeSet<&str> = pending.iter().map(|d| d.name()).collect();
    let by_name: BTreeMap<&str, &ReplicaDescription<R>> =
        pending.iter().map(|d| (d.name(), d)).collect();
    let mut seen = BTreeSet::new();
    let mut current = pending[0].name();
    loop {
        if !seen.insert(current) {
            return current.to_string();
        }
        let d = by_name[current];
        current = d
            .inputs()
            .iter()
            .map(|i| i.replica.as_str())
            .find(|n| pending_names.contains(n))
            .expect("a pending replica waits on a pending input");
    }
}

impl<R: Record> Dag<R> {
    /// The replicas, every one after its inputs.
    pub fn replicas(&self) -> &[ReplicaDescription<R>] {
        &self.replicas
    }

    /// The replica of this id.
    pub fn replica(&self, id: ReplicaId) -> &ReplicaDescription<R> {
        &self.replicas[id.index()]
    }

    /// The id of the replica of this name.
    pub fn id(&self, name: &str) -> Option<ReplicaId> {
        self.by_name.get(name).copied()
    }

    /// The ids of a replica's inputs.
    pub fn inputs_of(&self, id: ReplicaId) -> &[ReplicaId] {
        &self.inputs[id.index()]
    }

    /// The number of replicas.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Every replica's id, in order.
    pub(crate) fn ids(&self) -> Vec<ReplicaId> {
        (0..self.replicas.len() as u32).map(ReplicaId).collect()
    }

    /// Whether the DAG has no replicas.
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// The ids of the source replicas.
    pub fn sources(&self) -> impl Iterator<Item = ReplicaId> + '_ {
        self.replicas
            .iter()
            .enumerate()
            .filter(|(_, d)| d.is_source())
            .map(|(i, _)| ReplicaId(i as u32))
    }

    /// The replicas that depend on `id`, directly or transitively.
    pub fn dependents(&self, id: ReplicaId) -> BTreeSet<ReplicaId> {
        let mut out = BTreeSet::new();
        for (i, inputs) in self.inputs.iter().enumerate() {
            if inputs.iter().any(|x| *x == id || out.contains(x)) {
                out.insert(ReplicaId(i as u32));
            }
        }
        out
    }

    /// The replicas that `id` depends on, directly or transitively.
    pub fn ancestors(&self, id: ReplicaId) -> BTreeSet<ReplicaId> {
        let mut out = BTreeSet::new();
        let mut stack = vec![id];
        while let Some(x) = stack.pop() {
            for i in &self.inputs[x.index()] {
                if out.insert(*i) {
                    stack.push(*i);
                }
            }
        }
        out
    }
}
