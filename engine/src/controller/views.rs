//! The deltas of a join view, derived by the controller from its inputs' deltas while someone
//! subscribes to it.

use std::collections::BTreeMap;

use foldhash::HashMap;

use crate::description::JoinView;
use crate::record::Record;
use crate::updates::consolidate;

/// The state a subscribed view keeps to derive its deltas: both inputs' contents by join key.
pub(super) struct ViewState<R> {
    left: HashMap<u64, BTreeMap<R, isize>>,
    right: HashMap<u64, BTreeMap<R, isize>>,
}

impl<R: Record> ViewState<R> {
    pub(super) fn new(view: &JoinView<R>, left: Vec<(R, isize)>, right: Vec<(R, isize)>) -> Self {
        let mut state = ViewState {
            left: HashMap::default(),
            right: HashMap::default(),
        };
        apply(&mut state.left, view.left_key, &left);
        apply(&mut state.right, view.right_key, &right);
        state
    }

    /// Applies the inputs' deltas at one `Seq` and returns the view's delta:
    /// `dL ⋈ R + (L + dL) ⋈ dR`.
    pub(super) fn step(
        &mut self,
        view: &JoinView<R>,
        d_left: &[(R, isize)],
        d_right: &[(R, isize)],
    ) -> Vec<(R, isize)> {
        let mut out = Vec::new();
        for (l, dl) in d_left {
            let Some(k) = (view.left_key)(l) else {
                continue;
            };
            for (r, dr) in self.right.get(&k).into_iter().flatten() {
                if let Some(v) = (view.combine)(l, r) {
                    out.push((v, dl * dr));
                }
            }
        }
        apply(&mut self.left, view.left_key, d_left);
        for (r, dr) in d_right {
            let Some(k) = (view.right_key)(r) else {
                continue;
            };
            for (l, dl) in self.left.get(&k).into_iter().flatten() {
                if let Some(v) = (view.combine)(l, r) {
                    out.push((v, dl * dr));
                }
            }
        }
        apply(&mut self.right, view.right_key, d_right);
        consolidate(out)
    }
}

fn apply<R: Record>(
    side: &mut HashMap<u64, BTreeMap<R, isize>>,
    key: fn(&R) -> Option<u64>,
    updates: &[(R, isize)],
) {
    for (r, d) in updates {
        let Some(k) = key(r) else { continue };
        let group = side.entry(k).or_default();
        let count = group.entry(r.clone()).or_insert(0);
        *count += d;
        if *count == 0 {
            group.remove(r);
            if group.is_empty() {
                side.remove(&k);
            }
        }
    }
}
