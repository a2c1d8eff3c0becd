//! Lists of `(record, diff)` updates: consolidating them, their difference, and merging a
//! sorted base with changes.

/// Sorts updates and sums the diffs of equal records, dropping zeros.
pub(crate) fn consolidate<R: Ord>(mut updates: Vec<(R, isize)>) -> Vec<(R, isize)> {
    updates.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<(R, isize)> = Vec::with_capacity(updates.len());
    for (r, d) in updates {
        match out.last_mut() {
            Some((last, ld)) if *last == r => *ld += d,
            _ => out.push((r, d)),
        }
    }
    out.retain(|(_, d)| *d != 0);
    out
}

/// The difference `new - old` of two consolidated, sorted contents.
pub(crate) fn difference<R: Ord + Clone>(
    old: &[(R, isize)],
    new: &[(R, isize)],
) -> Vec<(R, isize)> {
    let mut all: Vec<(R, isize)> = new.to_vec();
    all.extend(old.iter().map(|(r, d)| (r.clone(), -d)));
    consolidate(all)
}

/// `rows` sorted by record (decoded revisions are; this only checks, for a store written
/// otherwise).
pub(crate) fn sorted<R: Ord>(mut rows: Vec<(R, isize)>) -> Vec<(R, isize)> {
    if !rows.is_sorted_by(|a, b| a.0 <= b.0) {
        rows.sort_by(|a, b| a.0.cmp(&b.0));
    }
    rows
}

/// The consolidated sum of two collections sorted by record: a base and a delta.
pub(crate) fn merge_sorted<'a, R: Ord + Clone + 'a>(
    base: impl Iterator<Item = &'a (R, isize)>,
    delta: Vec<(R, isize)>,
) -> Vec<(R, isize)> {
    let mut out = Vec::with_capacity(delta.len());
    let mut delta = delta.into_iter().peekable();
    for (r, d) in base {
        while let Some(x) = delta.next_if(|(x, _)| x < r) {
            if x.1 != 0 {
                out.push(x);
            }
        }
        let mut sum = *d;
        if let Some((_, dd)) = delta.next_if(|(x, _)| x == r) {
            sum += dd;
        }
        if sum != 0 {
            out.push((r.clone(), sum));
        }
    }
    out.extend(delta.filter(|(_, d)| *d != 0));
    out
}
