//! Resuming a derived replica at a restore point instead of recomputing it.
//!
//! A restore feeds the source revisions and recomputes every derived replica from them, unless
//! the replica can be *resumed*: its revision at the restore point `as_of` becomes its initial
//! contents, and only its delta after `as_of` is computed, from its inputs' deltas after
//! `as_of` and their contents at `as_of` (the [`Seeds`]). A replica can be resumed when
//! - every input is read in [`crate::InputMode::Deltas`]: its computation, applied to the
//!   inputs' deltas, yields its delta (it is linear); or
//! - it declares a resume computation ([`crate::ReplicaDescription::with_resume`]) that derives
//!   its delta from the inputs' deltas and seeds; the oracle tests check it against the
//!   computation at every `Seq` after a restart.
//!
//! A resumed replica's collection in the dataflow is its revision (at `as_of`) plus its delta,
//! so replicas that read it in full are recomputed as before; a replica that reads a
//! recomputed one in deltas gets that collection's updates after `as_of`.

use std::any::Any;
use std::sync::{Arc, OnceLock};

use crate::description::{Coll, Record};

/// What a resume computation gets besides its inputs' deltas: the restore point and the
/// inputs' contents there (their revisions), plus a place for indexes built from them once
/// per process and shared by the workers.
pub struct Seeds<R> {
    as_of: u64,
    inputs: Vec<Arc<Vec<(R, isize)>>>,
    shared: Arc<OnceLock<Arc<dyn Any + Send + Sync>>>,
}

impl<R> Clone for Seeds<R> {
    fn clone(&self) -> Self {
        Seeds {
            as_of: self.as_of,
            inputs: self.inputs.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<R: Record> Seeds<R> {
    pub(crate) fn new(as_of: u64, inputs: Vec<Arc<Vec<(R, isize)>>>) -> Self {
        Seeds {
            as_of,
            inputs,
            shared: Arc::new(OnceLock::new()),
        }
    }

    /// The restore point: the deltas the computation gets are at later `Seq`s.
    pub fn as_of(&self) -> u64 {
        self.as_of
    }

    /// Input `i`'s consolidated contents at the restore point, in no particular order (empty
    /// for a replica resumed because it reads its inputs' deltas only).
    pub fn input(&self, i: usize) -> &[(R, isize)] {
        self.inputs.get(i).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// The value `build` makes from the seeds, built once per resumed replica and shared by
    /// every worker (the first caller builds it; the others wait for it).
    ///
    /// # Panics
    /// If the same seeds are asked for values of two different types.
    pub fn shared<T: Send + Sync + 'static>(&self, build: impl FnOnce(&Self) -> T) -> Arc<T> {
        let any = self
            .shared
            .get_or_init(|| Arc::new(build(self)) as Arc<dyn Any + Send + Sync>)
            .clone();
        any.downcast::<T>()
            .unwrap_or_else(|_| panic!("Seeds::shared asked for two types"))
    }
}

/// A resume computation: from the inputs' deltas after the restore point (in the order of
/// [`crate::ReplicaDescription::inputs`]) and their [`Seeds`], the replica's delta after it.
pub type Resume<R> = Arc<dyn for<'s> Fn(&[Coll<'s, R>], &Seeds<R>) -> Coll<'s, R> + Send + Sync>;

/// How a restored dataflow starts: the restore point and, per replica, the seeds of a resumed
/// replica (`None`: a source, a view, or a replica recomputed from its inputs).
pub(crate) struct ResumePlan<R> {
    pub as_of: u64,
    pub seeds: Vec<Option<Seeds<R>>>,
}
