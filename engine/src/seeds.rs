//! Seeds: what resuming a derived replica at a restore point instead of recomputing it.
//!
//! A restore feeds the source revisions and recomputes every derived replica from them, unless
//! the replica can be *resumed*: its revision at the restore point `as_of` becomes its initial
//! contents, and only its delta after `as_of` is computed, from its inputs' deltas after
//! `as_of` and their contents at `as_of` (the [`Seeds`]). A replica can be resumed when
//! - every input is read in `InputMode::Deltas`: its computation, applied to the
//!   inputs' deltas, yields its delta (it is linear); or
//! - it declares a resume computation (`ReplicaDescription::with_resume`) that derives
//!   its delta from the inputs' deltas and seeds; the oracle tests check it against the
//!   computation at every `Seq` after a restart.
//!
//! A resumed replica that a recomputed replica reads in full has its revision fed to the
//! dataflow at `as_of`, so its collection there is its revision plus its delta. A source or
//! resumed replica that no recomputed replica reads is *based*: the dataflow holds only its
//! delta after `as_of`, and reads add its revision (the base) to it. When every derived replica
//! is resumed, a restore feeds nothing to the dataflow.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{damage_panic, panic_message};
use crate::record::{Coll, Record};
use crate::revision::{Decoding, Revision};

/// What a shared build left: the value, or the message of its panic.
type Built = Result<Arc<dyn Any + Send + Sync>, String>;

/// A shared value's build, until its first reader runs it.
type Builder = Arc<Mutex<Option<Box<dyn FnOnce() -> Built + Send>>>>;

/// What a resume computation gets besides its inputs' deltas: the restore point and the
/// inputs' contents there (their revisions), plus a place for an index built from them once
/// per process, when first needed, and shared by the workers.
pub struct Seeds<R> {
    as_of: u64,
    inputs: Vec<Arc<Decoding<R>>>,
    /// Whether the runtime decodes the inputs ahead (see [`Seeds::ahead`]).
    ahead: bool,
    started: Arc<AtomicBool>,
    shared: Arc<OnceLock<Built>>,
    builder: Builder,
}

impl<R> Clone for Seeds<R> {
    fn clone(&self) -> Self {
        Seeds {
            as_of: self.as_of,
            inputs: self.inputs.clone(),
            ahead: self.ahead,
            started: self.started.clone(),
            shared: self.shared.clone(),
            builder: self.builder.clone(),
        }
    }
}

/// A value built from [`Seeds`] by its first reader ([`Shared::get`]); the others wait for it.
pub struct Shared<T> {
    slot: Arc<OnceLock<Built>>,
    builder: Builder,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared {
            slot: self.slot.clone(),
            builder: self.builder.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: 'static> Shared<T> {
    /// The value: built by the first call, which the others wait for.
    ///
    /// # Panics
    /// If its build panicked (with the build's message), or if the same seeds were asked for
    /// values of two different types.
    pub fn get(&self) -> &T {
        let built = self.slot.get_or_init(|| {
            let build = self.builder.lock().expect("builder lock").take();
            build.map_or_else(|| Err("built twice".into()), |b| b())
        });
        match built {
            Ok(any) => any
                .downcast_ref::<T>()
                .unwrap_or_else(|| panic!("Seeds::shared asked for two types")),
            // Its own panic was printed already, unless it was damage.
            Err(message) => damage_panic(format!("building a resume index failed: {message}")),
        }
    }
}

impl<R: Record> Seeds<R> {
    pub(crate) fn new(as_of: u64, inputs: Vec<Arc<Decoding<R>>>, ahead: bool) -> Self {
        Seeds {
            as_of,
            inputs,
            ahead,
            started: Arc::new(AtomicBool::new(false)),
            shared: Arc::new(OnceLock::new()),
            builder: Arc::new(Mutex::new(None)),
        }
    }

    /// The restore point: the deltas the computation gets are at later `Seq`s.
    pub fn as_of(&self) -> u64 {
        self.as_of
    }

    /// Whether the runtime decodes the inputs ahead, in the background (a long-running
    /// process, see `RuntimeConfig::with_decode_ahead`): a resume computation may then build
    /// its indexes ahead too, on a thread of its own. Otherwise (a command that applies a few
    /// changes and exits) it builds them when first needed.
    pub fn ahead(&self) -> bool {
        self.ahead
    }

    /// Input `i`'s consolidated contents at the restore point, sorted by record (empty for a
    /// replica resumed because it reads its inputs' deltas only). The restore decodes them on
    /// other threads: this waits until they are.
    ///
    /// # Panics
    /// If the revision does not decode (a corrupt store).
    pub fn input(&self, i: usize) -> &[(R, isize)] {
        self.inputs
            .get(i)
            .map(|v| v.rows().as_slice())
            .unwrap_or(&[])
    }

    /// Input `i`'s contents at the restore point, like [`Seeds::input`], or why they cannot
    /// be decoded: a corrupt store, or a store closed since (its runtime stopped). For threads
    /// of the resume computation's own that outlive the dataflow.
    pub fn try_input(&self, i: usize) -> Result<&[(R, isize)], String> {
        match self.inputs.get(i) {
            Some(d) => d.wait().map(|rows| rows.as_slice()).map_err(str::to_string),
            None => Ok(&[]),
        }
    }

    /// Input `i`'s revision at the restore point, to look up without decoding it whole
    /// ([`Revision::range`]).
    ///
    /// # Panics
    /// If the replica has no input `i` (one resumed because it reads deltas only has none).
    pub fn revision(&self, i: usize) -> Revision<R> {
        Revision::new(self.inputs[i].clone())
    }

    /// Input `i`'s revision, if decoded for this replica (every input of a replica with a
    /// resume computation; none for one that reads deltas only).
    pub(crate) fn decoding(&self, i: usize) -> Option<Arc<Decoding<R>>> {
        self.inputs.get(i).cloned()
    }

    /// The value `build` makes from the seeds, built once per resumed replica, by the first
    /// update that needs it ([`Shared::get`]), and shared by every worker. A restore does not
    /// build it: a replica whose inputs do not change after a restart never does.
    pub fn shared<T: Send + Sync + 'static>(
        &self,
        build: impl FnOnce(&Self) -> T + Send + 'static,
    ) -> Shared<T> {
        if !self.started.swap(true, Ordering::SeqCst) {
            // The build gets the inputs, not this slot (which would then hold itself).
            let seeds = Seeds::new(self.as_of, self.inputs.clone(), self.ahead);
            *self.builder.lock().expect("builder lock") = Some(Box::new(move || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    Arc::new(build(&seeds)) as Arc<dyn Any + Send + Sync>
                }))
                .map_err(|p| panic_message(p.as_ref()))
            }));
        }
        Shared {
            slot: self.shared.clone(),
            builder: self.builder.clone(),
            _type: PhantomData,
        }
    }
}

/// A resume computation: from the inputs' deltas after the restore point (in the order of
/// `ReplicaDescription::inputs`) and their [`Seeds`], the replica's delta after it.
pub type Resume<R> = Arc<dyn for<'s> Fn(&[Coll<'s, R>], &Seeds<R>) -> Coll<'s, R> + Send + Sync>;
