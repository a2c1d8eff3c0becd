//! What flows through the dataflow: the record bound and the collection type.

use std::hash::Hash;

use differential_dataflow::VecCollection;

/// What a record type must provide to flow through the dataflow: it crosses workers (serde),
/// is ordered and hashable, can be shared by workers, and can be written to the store.
pub trait Record: differential_dataflow::ExchangeData + Hash + Sync {}

impl<T: differential_dataflow::ExchangeData + Hash + Sync> Record for T {}

/// Lists the dictionary ids a record holds (calls its second argument with each): a DAG that
/// knows them (`Dag::with_record_ids`) has every record read from the store checked against
/// the dictionary, so that an id out of range is reported as damage instead of failing a
/// lookup later.
pub type RecordIds<R> = fn(&R, &mut dyn FnMut(u64));

/// A collection of records at `Seq` timestamps (the raw `u64` of [`crate::Seq`]) inside a dataflow.
pub type Coll<'s, R> = VecCollection<'s, u64, R, isize>;
