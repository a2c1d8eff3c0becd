//! Replica descriptions: what a replica is named, how it is partitioned, what it reads, how it
//! is computed and resumed, and the join views evaluated when read.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::record::{Coll, Record};
use crate::seeds::{Resume, Seeds};
use crate::updates::consolidate;

/// The identifier of a replica in its DAG: its index in the DAG's (topological) order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplicaId(pub u32);

impl ReplicaId {
    /// The index of the replica, for vectors indexed by replica.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// How a computation reads one of its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputMode {
    /// The computation needs the input's full contents (it joins or reduces over it): restoring
    /// or rebuilding the dependent replays the input's whole state.
    Full,
    /// The computation only transforms the input's deltas record by record (map, filter,
    /// flat-map): it never looks at other records of the input.
    Deltas,
}

impl fmt::Display for InputMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputMode::Full => "full",
            InputMode::Deltas => "deltas",
        })
    }
}

/// One input of a derived replica.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Input {
    /// The name of the input replica.
    pub replica: String,
    /// Whether the computation needs the input's full state or only its deltas.
    pub mode: InputMode,
}

impl Input {
    /// An input whose full state the computation needs.
    pub fn full(replica: &str) -> Input {
        Input {
            replica: replica.to_string(),
            mode: InputMode::Full,
        }
    }

    /// An input whose deltas alone the computation needs.
    pub fn deltas(replica: &str) -> Input {
        Input {
            replica: replica.to_string(),
            mode: InputMode::Deltas,
        }
    }
}

/// The computation of a derived replica: differential operators over the inputs' collections
/// (in the order of [`ReplicaDescription::inputs`]) that yield the replica's collection. The
/// collection it returns is the replica: each step derives a delta and applies it in one go.
pub type Compute<R> = Arc<dyn for<'s> Fn(&[Coll<'s, R>]) -> Coll<'s, R> + Send + Sync>;

/// A view: a derived replica that is the join of two inputs on an integer key, never computed in
/// the dataflow, arranged or stored. The runtime evaluates it from its inputs when it is read
/// (from their revisions when the dataflow is not running), and derives its deltas from theirs
/// (`dL ⋈ R + L' ⋈ dR`) for subscribers. Use it for a replica that is large, cheap to derive
/// and that no other replica reads: a per-instance copy of shared data, for example.
///
/// The view's records are `combine(l, r)` for every `l` of the left input and `r` of the right
/// input with `left_key(l) == right_key(r)` (both `Some`), with multiplicity `dl * dr`.
pub struct JoinView<R> {
    /// The join key of a record of the left input (`None`: it joins nothing).
    pub left_key: fn(&R) -> Option<u64>,
    /// The join key of a record of the right input.
    pub right_key: fn(&R) -> Option<u64>,
    /// The view's record for a pair with equal keys (`None`: no record).
    pub combine: fn(&R, &R) -> Option<R>,
    /// Whether every record `combine(l, r)` has the partition of `r` in the right input's
    /// partitioning: a read of one partition then reads one partition of the right input.
    pub partition_follows_right: bool,
}

impl<R> Clone for JoinView<R> {
    fn clone(&self) -> Self {
        JoinView {
            left_key: self.left_key,
            right_key: self.right_key,
            combine: self.combine,
            partition_follows_right: self.partition_follows_right,
        }
    }
}

impl<R> JoinView<R> {
    /// Calls `f(l, r, dl * dr)` for every pair of records with equal keys.
    fn for_each_pair(
        &self,
        left: &[(R, isize)],
        right: &[(R, isize)],
        mut f: impl FnMut(&R, &R, isize),
    ) {
        let mut by_key: foldhash::HashMap<u64, Vec<(&R, isize)>> = Default::default();
        for (r, d) in right {
            if let Some(k) = (self.right_key)(r) {
                by_key.entry(k).or_default().push((r, *d));
            }
        }
        for (l, dl) in left {
            let Some(k) = (self.left_key)(l) else {
                continue;
            };
            for (r, dr) in by_key.get(&k).into_iter().flatten() {
                f(l, r, dl * dr);
            }
        }
    }

    /// The view's contents for the consolidated contents of its inputs, consolidated.
    pub(crate) fn eval(&self, left: &[(R, isize)], right: &[(R, isize)]) -> Vec<(R, isize)>
    where
        R: Ord,
    {
        let mut out = Vec::new();
        self.for_each_pair(left, right, |l, r, d| {
            if let Some(v) = (self.combine)(l, r) {
                out.push((v, d));
            }
        });
        consolidate(out)
    }

    /// The number of records (counting multiplicity) of the view, without building them.
    pub(crate) fn count(&self, left: &[(R, isize)], right: &[(R, isize)]) -> u64 {
        self.signed_count(left, right).max(0) as u64
    }

    /// The sum of the multiplicities of the view's records for `left` and `right`, which may
    /// be deltas: the count is bilinear in its inputs.
    pub(crate) fn signed_count(&self, left: &[(R, isize)], right: &[(R, isize)]) -> i64 {
        let mut n: i64 = 0;
        self.for_each_pair(left, right, |l, r, d| {
            if (self.combine)(l, r).is_some() {
                n += d as i64;
            }
        });
        n
    }
}

/// The partition of a record: an integer (typically an interned identifier) that groups the
/// records read together and places them on one worker.
pub type PartitionFn<R> = fn(&R) -> u64;

/// The declaration of a replica.
#[derive(Clone)]
pub struct ReplicaDescription<R: Record> {
    name: String,
    partition_key: String,
    record_type: String,
    inputs: Vec<Input>,
    compute: Option<Compute<R>>,
    resume: Option<Resume<R>>,
    view: Option<JoinView<R>>,
    partition: PartitionFn<R>,
    logic_version: u32,
}

impl<R: Record> fmt::Debug for ReplicaDescription<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaDescription")
            .field("name", &self.name)
            .field("partition_key", &self.partition_key)
            .field("record_type", &self.record_type)
            .field("inputs", &self.inputs)
            .field("source", &self.is_source())
            .field("view", &self.view.is_some())
            .field("logic_version", &self.logic_version)
            .finish()
    }
}

impl<R: Record> ReplicaDescription<R> {
    /// A source replica: its records enter from outside, as source deltas.
    pub fn source(name: &str, partition_key: &str, partition: PartitionFn<R>) -> Self {
        ReplicaDescription {
            name: name.to_string(),
            partition_key: partition_key.to_string(),
            record_type: String::new(),
            inputs: Vec::new(),
            compute: None,
            resume: None,
            view: None,
            partition,
            logic_version: 1,
        }
    }

    /// A derived replica computed from `inputs` by `compute`.
    pub fn derived<F>(
        name: &str,
        partition_key: &str,
        partition: PartitionFn<R>,
        inputs: Vec<Input>,
        compute: F,
    ) -> Self
    where
        F: for<'s> Fn(&[Coll<'s, R>]) -> Coll<'s, R> + Send + Sync + 'static,
    {
        ReplicaDescription {
            name: name.to_string(),
            partition_key: partition_key.to_string(),
            record_type: String::new(),
            inputs,
            compute: Some(Arc::new(compute)),
            resume: None,
            view: None,
            partition,
            logic_version: 1,
        }
    }

    /// A view: the join of `left` and `right` defined by `view`, evaluated when read instead
    /// of computed and stored (see [`JoinView`]). Both inputs are read in full; neither may be
    /// a view, and no computed replica may read a view.
    pub fn join_view(
        name: &str,
        partition_key: &str,
        partition: PartitionFn<R>,
        left: &str,
        right: &str,
        view: JoinView<R>,
    ) -> Self {
        ReplicaDescription {
            name: name.to_string(),
            partition_key: partition_key.to_string(),
            record_type: String::new(),
            inputs: vec![Input::full(left), Input::full(right)],
            compute: None,
            resume: None,
            view: Some(view),
            partition,
            logic_version: 1,
        }
    }

    /// Sets the version number of the replica's logic. Change it whenever the computation
    /// changes: a stored revision of another version is recomputed on restore.
    pub fn with_logic_version(mut self, version: u32) -> Self {
        self.logic_version = version;
        self
    }

    /// Declares how the replica is resumed at a restore point instead of recomputed (see
    /// [`crate::Seeds`]): `resume` derives the replica's delta after the restore point from its
    /// inputs' deltas after it and their contents there. It must agree with the computation:
    /// the replica's contents at every later `Seq` are its revision plus what `resume` yields.
    /// A replica whose inputs are all read in deltas is resumed without one.
    pub fn with_resume<F>(mut self, resume: F) -> Self
    where
        F: for<'s> Fn(&[Coll<'s, R>], &Seeds<R>) -> Coll<'s, R> + Send + Sync + 'static,
    {
        self.resume = Some(Arc::new(resume));
        self
    }

    /// Sets a human-readable description of the record type (for `graph` and the docs).
    pub fn with_record_type(mut self, record_type: &str) -> Self {
        self.record_type = record_type.to_string();
        self
    }

    /// The replica's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the partition key.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The description of the record type.
    pub fn record_type(&self) -> &str {
        &self.record_type
    }

    /// The inputs, in the order the computation receives them.
    pub fn inputs(&self) -> &[Input] {
        &self.inputs
    }

    /// Whether this is a source replica.
    pub fn is_source(&self) -> bool {
        self.compute.is_none() && self.view.is_none()
    }

    /// Whether this is a view (see [`JoinView`]): evaluated when read, never stored.
    pub fn is_view(&self) -> bool {
        self.view.is_some()
    }

    /// The view's definition, for a view.
    pub fn view(&self) -> Option<&JoinView<R>> {
        self.view.as_ref()
    }

    /// The logic version.
    pub fn logic_version(&self) -> u32 {
        self.logic_version
    }

    /// The partition of a record of this replica.
    pub fn partition_of(&self, record: &R) -> u64 {
        (self.partition)(record)
    }

    /// The partition function.
    pub fn partition_fn(&self) -> PartitionFn<R> {
        self.partition
    }

    pub(crate) fn compute(&self) -> Option<&Compute<R>> {
        self.compute.as_ref()
    }

    pub(crate) fn resume(&self) -> Option<&Resume<R>> {
        self.resume.as_ref()
    }

    pub(crate) fn has_resume(&self) -> bool {
        self.resume.is_some()
    }

    /// Whether a restore can resume this replica from its revision (see [`crate::Seeds`]).
    pub fn is_resumable(&self) -> bool {
        self.compute.is_some()
            && (self.resume.is_some()
                || (!self.inputs.is_empty()
                    && self.inputs.iter().all(|i| i.mode == InputMode::Deltas)))
    }

    /// A stable hash of the declaration (name, partition key, record type, inputs, logic
    /// version), stored with revisions. FNV-1a, so it does not change between builds.
    pub fn description_hash(&self) -> u64 {
        let mut h = Fnv64::default();
        self.name.hash(&mut h);
        self.partition_key.hash(&mut h);
        self.record_type.hash(&mut h);
        for input in &self.inputs {
            input.replica.hash(&mut h);
            (input.mode == InputMode::Full).hash(&mut h);
        }
        self.is_source().hash(&mut h);
        if self.is_view() {
            // Only views hash this, so the hashes of other replicas are those of format 1.
            "view".hash(&mut h);
        }
        self.logic_version.hash(&mut h);
        h.finish()
    }
}

/// 64-bit FNV-1a: a hash that is the same in every build, for values written to disk.
#[derive(Clone, Copy)]
pub(crate) struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
