//! `source_positions`: where each homeserver source is (a `/sync` client's `next_batch`), a
//! source. A position is committed in the same source delta as what the source brought with
//! it, so a restart resumes exactly there: no gap, no duplicate.

use prr_engine::{Dictionary, ReplicaDescription};

use crate::known::Known;
use crate::record::Rec;

/// `source_positions`' description.
pub(crate) fn description(_dict: &Dictionary, _known: &Known) -> ReplicaDescription<Rec> {
    ReplicaDescription::source("source_positions", "source", Rec::partition)
        .with_record_type("(source, position)")
        .with_logic_version(1)
}
