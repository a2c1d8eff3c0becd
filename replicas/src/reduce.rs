//! Reductions over groups, and how a restore resumes one: the group logic as DD's `reduce`
//! calls it ([`GroupLogic`]), shared by a replica's computation and its resume computation
//! ([`resume_reduce`]).

use prr_engine::Coll;
use prr_engine::dataflow::differential_dataflow::{Data, ExchangeData, Hashable};

/// A reduction's logic as DD's `reduce` calls it: the key, the group (sorted, consolidated,
/// non-empty) and the output to fill.
pub(crate) trait GroupLogic<K, V, O>:
    Fn(&K, &[(&V, isize)], &mut Vec<(O, isize)>) + 'static
{
}

impl<K, V, O, F: Fn(&K, &[(&V, isize)], &mut Vec<(O, isize)>) + 'static> GroupLogic<K, V, O> for F {}

/// Sorts by value and sums the multiplicities of equal values, dropping zeros.
pub(crate) fn consolidate<V: Ord>(v: &mut Vec<(V, isize)>) {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(V, isize)> = Vec::with_capacity(v.len());
    for (x, d) in v.drain(..) {
        match out.last_mut() {
            Some(last) if last.0 == x => last.1 += d,
            _ => out.push((x, d)),
        }
    }
    out.retain(|(_, d)| *d != 0);
    *v = out;
}

/// `logic` applied to `group` (any order, not consolidated) as DD's `reduce` would: nothing
/// for a group that consolidates to empty.
pub(crate) fn apply_group<K, V: Ord, O>(
    key: &K,
    mut group: Vec<(V, isize)>,
    logic: &impl Fn(&K, &[(&V, isize)], &mut Vec<(O, isize)>),
) -> Vec<(O, isize)> {
    consolidate(&mut group);
    let mut out = Vec::new();
    if !group.is_empty() {
        let refs: Vec<(&V, isize)> = group.iter().map(|(v, d)| (v, *d)).collect();
        logic(key, &refs, &mut out);
    }
    out
}

/// The delta of `delta.reduce(logic)` over groups that held `old(key)` at the restore point:
/// for each key whose group changed, `logic(old + d) − logic(old)`. `logic` is the
/// reduction's own (it sees a group as DD's `reduce` presents it: sorted, consolidated,
/// non-empty).
pub(crate) fn resume_reduce<'s, K, V, O>(
    name: &str,
    delta: Coll<'s, (K, V)>,
    old: impl Fn(&K) -> Vec<(V, isize)> + 'static,
    logic: impl GroupLogic<K, V, O>,
) -> Coll<'s, (K, O)>
where
    K: ExchangeData + Hashable,
    V: ExchangeData,
    O: Data + Ord,
{
    delta.reduce_named(name, move |key, input, output| {
        let before = old(key);
        let mut after = before.clone();
        after.extend(input.iter().map(|(v, d)| ((*v).clone(), *d)));
        let mut out = apply_group(key, after, &logic);
        let undo = apply_group(key, before, &logic);
        out.extend(undo.into_iter().map(|(o, d)| (o, -d)));
        consolidate(&mut out);
        output.extend(out);
    })
}
