//! `source_events`: the events a homeserver source delivered (appservice transactions), a
//! source. It makes a homeserver source exactly once: an event ID it holds is never applied
//! again, and it is committed in the same source delta as the event's effect on `room_state`.
//! Its invalid events are `rejects`.

use prr_engine::{Dictionary, ReplicaDescription};

use crate::known::Known;
use crate::record::Rec;

/// `source_events`' description.
pub(crate) fn description(_dict: &Dictionary, _known: &Known) -> ReplicaDescription<Rec> {
    ReplicaDescription::source("source_events", "room_id", Rec::partition)
        .with_record_type("(room_id, event_id, type, state_key, invalid reason)")
        .with_logic_version(1)
}
