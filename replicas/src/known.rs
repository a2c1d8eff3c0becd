//! What the computations read from the dictionary: the ids of the strings they compare with,
//! interned once when the DAG is built.

use std::sync::Arc;

use foldhash::HashMap;
use prr_engine::{Dictionary, Id};

use crate::record::Kind;

/// Ids of the strings the computations compare with, interned once when the DAG is built.
#[derive(Clone)]
pub(crate) struct Known {
    pub member: Id,
    pub server_acl: Id,
    pub empty: Id,
    /// Rule event type -> (kind, rank: 0 newest).
    pub rule_types: Arc<HashMap<Id, (Kind, u8)>>,
}

/// Rule event types by kind, newest first.
pub(crate) fn rule_type_names(kind: Kind) -> [String; 3] {
    let k = kind.as_str();
    [
        format!("m.policy.rule.{k}"),
        format!("m.room.rule.{k}"),
        format!("org.matrix.mjolnir.rule.{k}"),
    ]
}

/// The kind of a rule event type (by its name, one of [`rule_type_names`]), if it is one.
pub(crate) fn rule_kind(event_type: &str) -> Option<Kind> {
    let kind = ["m.policy.rule.", "m.room.rule.", "org.matrix.mjolnir.rule."]
        .iter()
        .find_map(|prefix| event_type.strip_prefix(prefix))?;
    match kind {
        "user" => Some(Kind::User),
        "server" => Some(Kind::Server),
        "room" => Some(Kind::Room),
        _ => None,
    }
}

impl Known {
    pub(crate) fn new(dict: &Dictionary) -> Known {
        let mut rule_types = HashMap::default();
        for kind in [Kind::User, Kind::Server, Kind::Room] {
            for (rank, t) in rule_type_names(kind).iter().enumerate() {
                rule_types.insert(dict.intern(t), (kind, rank as u8));
            }
        }
        Known {
            member: dict.intern("m.room.member"),
            server_acl: dict.intern("m.room.server_acl"),
            empty: dict.intern(""),
            rule_types: Arc::new(rule_types),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_kinds_are_those_of_the_rule_type_names() {
        for kind in [Kind::User, Kind::Server, Kind::Room] {
            for name in rule_type_names(kind) {
                assert_eq!(rule_kind(&name), Some(kind), "{name}");
            }
        }
        for other in [
            "m.room.member",
            "m.policy.rule.users",
            "m.policy.rule.",
            "m.rule.user",
        ] {
            assert_eq!(rule_kind(other), None, "{other}");
        }
    }
}
