//! `policy_list`: one record per instance and rule of a policy room it watches. A view: one
//! record per (instance, watched rule) is the largest replica by far (18.9M records for 100k
//! rules and 1,000 instances) and nothing else reads it, so it is evaluated from
//! `policy_room` and the watches when read instead of being stored (never resumed).

use prr_engine::{Dictionary, JoinView, ReplicaDescription};

use crate::known::Known;
use crate::record::{Rec, Relation};

/// `policy_list`'s description: `policy_room ⋈ watches` on the rule's room.
pub(crate) fn description(_dict: &Dictionary, _known: &Known) -> ReplicaDescription<Rec> {
    ReplicaDescription::join_view(
        "policy_list",
        "instance",
        Rec::partition,
        "policy_room",
        "instances",
        JoinView {
            left_key: |r| match r {
                Rec::Rule(rule) => Some(rule.room),
                _ => None,
            },
            right_key: |r| match r {
                Rec::Instance {
                    relation: Relation::Watch,
                    room,
                    ..
                } => Some(*room),
                _ => None,
            },
            combine: |l, r| match (l, r) {
                (Rec::Rule(rule), Rec::Instance { instance, .. }) => Some(Rec::ListRule {
                    instance: *instance,
                    rule: rule.clone(),
                }),
                _ => None,
            },
            partition_follows_right: true,
        },
    )
    .with_record_type("(instance, rule)")
    .with_logic_version(1)
}
