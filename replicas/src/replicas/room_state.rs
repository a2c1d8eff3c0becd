//! `room_state`: the latest state event per `(room, type, state_key)`, a source.

use prr_engine::{Dictionary, ReplicaDescription};

use crate::known::Known;
use crate::record::Rec;

/// `room_state`'s description.
pub(crate) fn description(_dict: &Dictionary, _known: &Known) -> ReplicaDescription<Rec> {
    ReplicaDescription::source("room_state", "room_id", Rec::partition)
        .with_record_type(
            "(room_id, type, state_key, event_id, sender, origin_server_ts, content, redacted)",
        )
        .with_logic_version(1)
}
