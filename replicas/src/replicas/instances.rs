//! `instances`: the bot instances of the manifests, their watched and protected rooms, a
//! source.

use prr_engine::{Dictionary, ReplicaDescription};

use crate::known::Known;
use crate::record::Rec;

/// `instances`' description.
pub(crate) fn description(_dict: &Dictionary, _known: &Known) -> ReplicaDescription<Rec> {
    ReplicaDescription::source("instances", "instance", Rec::partition)
        .with_record_type("(instance, exists|watch|protect, room_id)")
        .with_logic_version(1)
}
