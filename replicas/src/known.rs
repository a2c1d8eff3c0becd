//! What the computations read from the dictionary: the ids of the strings they compare with
//! (interned once when the DAG is built), and stored contents.

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

/// A stored content (an interned JSON object, written by the ingest) read back: stored data,
/// so anything else (not JSON, not an object) reads as an empty object, never a panic.
pub(crate) fn content_of<T: serde::de::DeserializeOwned + Default>(dict: &Dictionary, id: Id) -> T {
    dict.with(id, |s| serde_json::from_str(s).unwrap_or_default())
}
