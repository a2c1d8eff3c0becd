//! The facts of a `room_state` event that the computations read, parsed once from its content
//! (by `crate::facts`): what a member event says of its user, the rule a policy rule event
//! makes, what a server ACL denies. No operator parses JSON or reads the dictionary; the
//! content itself stays in `room_state` for output only.

use std::sync::Arc;

use prr_engine::Id;
use serde::{Deserialize, Serialize};

use super::{Membership, RejectReason, Rule};

/// The facts of a `room_state` event: by its type, parsed from its content (stripped, if it
/// was redacted).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Facts {
    /// An event whose content no computation reads.
    Other,
    /// An `m.room.member` event with a valid membership.
    Member {
        /// The membership.
        membership: Membership,
        /// The display name, if a string.
        displayname: Option<Id>,
    },
    /// An `m.room.member` event without a valid membership: why (a `rejects` record).
    BadMember(RejectReason),
    /// A policy rule event that makes a rule: the `policy_room` record, shared with it.
    Rule(Arc<Rule>),
    /// A policy rule event whose content is empty: its slot holds no rule.
    NoRule,
    /// A policy rule event that is not a valid rule: why (a `rejects` record).
    BadRule(RejectReason),
    /// An `m.room.server_acl` event: what it denies (ids, sorted, without duplicates) if it
    /// allows every server (`allow` is `["*"]` as a set) and denies IP literals
    /// (`allow_ip_literals` is `false`), the only ACLs an intent can equal; `None` otherwise,
    /// or when `deny` is not an array of strings.
    Acl(Option<Arc<[Id]>>),
}

impl Facts {
    /// Calls `f` with each dictionary id the facts hold.
    pub(crate) fn ids(&self, f: &mut dyn FnMut(Id)) {
        match self {
            Facts::Member {
                displayname: Some(d),
                ..
            } => f(*d),
            Facts::Rule(rule) => rule.ids(f),
            Facts::Acl(Some(deny)) => deny.iter().for_each(|id| f(*id)),
            _ => {}
        }
    }
}

/// Whether an ACL's facts equal an intent that denies `deny` (ids of distinct strings).
pub(crate) fn acl_equals(acl: &Option<Arc<[Id]>>, deny: &[Id]) -> bool {
    let Some(acl) = acl else { return false };
    let mut want = deny.to_vec();
    want.sort_unstable();
    want.dedup();
    **acl == *want
}
