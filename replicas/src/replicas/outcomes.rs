//! `outcomes`: what the effect handlers did for each intent (`prr enact`, `prr serve
//! --enact`), a source: recorded as source deltas like any other, so that after a restart
//! nothing done is redone and nothing failed is forgotten.

use prr_engine::{Dictionary, ReplicaDescription};

use crate::known::Known;
use crate::record::Rec;

/// `outcomes`' description.
pub(crate) fn description(_dict: &Dictionary, _known: &Known) -> ReplicaDescription<Rec> {
    ReplicaDescription::source("outcomes", "instance", Rec::partition)
        .with_record_type(
            "(instance, room_id, ban|server_acl, target, status, error, intent_seq, attempts, at)",
        )
        .with_logic_version(1)
}
