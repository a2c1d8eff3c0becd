//! Parsing the facts of a `room_state` event (see [`Facts`]) from its content, once: when the
//! event is ingested, and when a store of format 5 or older is upgraded.

use std::sync::Arc;

use prr_engine::Id;
use serde_json::{Map, Value};

use crate::known::rule_kind;
use crate::record::{Class, Facts, Membership, RejectReason, RoomState, Rule};
use crate::rules::parse_rule;

/// The facts of `state`, an event of type `event_type` (its name) whose content is `content`;
/// `intern` gives the id of a string. `state`'s own facts are not read.
pub(crate) fn facts_of(
    state: &RoomState,
    event_type: &str,
    content: &Map<String, Value>,
    intern: &mut dyn FnMut(&str) -> Id,
) -> Facts {
    if event_type == "m.room.member" {
        return match content.get("membership") {
            Some(Value::String(m)) => match Membership::parse(m) {
                Some(membership) => Facts::Member {
                    membership,
                    displayname: content
                        .get("displayname")
                        .and_then(Value::as_str)
                        .map(&mut *intern),
                },
                None => Facts::BadMember(RejectReason::MembershipUnknown),
            },
            _ => Facts::BadMember(RejectReason::MembershipMissing),
        };
    }
    if event_type == "m.room.server_acl" {
        return Facts::Acl(acl_deny(content, intern));
    }
    let Some(kind) = rule_kind(event_type) else {
        return Facts::Other;
    };
    match parse_rule(content) {
        Ok(None) => Facts::NoRule,
        Err(reason) => Facts::BadRule(reason),
        Ok(Some(rc)) => Facts::Rule(Arc::new(Rule {
            room: state.room,
            kind,
            state_key: state.state_key,
            event_type: state.event_type,
            event_id: state.event_id,
            sender: state.sender,
            matcher: rc.matcher,
            entity: rc.entity.map(&mut *intern),
            sha256: rc.sha256.map(&mut *intern),
            recommendation: intern(rc.recommendation),
            class: Class::of(rc.recommendation),
            reason: rc.reason.map(&mut *intern),
            compiled: Default::default(),
        })),
    }
}

/// What an ACL content denies, if an intent can equal it (see [`Facts::Acl`]): `allow` and
/// `deny` compared as sets (missing: empty; not an array of strings: no set), and
/// `allow_ip_literals` missing meaning `true`.
fn acl_deny(content: &Map<String, Value>, intern: &mut dyn FnMut(&str) -> Id) -> Option<Arc<[Id]>> {
    fn strings(v: Option<&Value>) -> Option<Vec<&str>> {
        match v {
            None => Some(Vec::new()),
            Some(Value::Array(items)) => items.iter().map(Value::as_str).collect(),
            Some(_) => None,
        }
    }
    let allow = strings(content.get("allow"))?;
    let allow_ip = content.get("allow_ip_literals");
    if allow.is_empty() || allow.iter().any(|s| *s != "*") || allow_ip != Some(&Value::Bool(false))
    {
        return None;
    }
    let mut deny: Vec<Id> = (strings(content.get("deny"))?.into_iter())
        .map(intern)
        .collect();
    deny.sort_unstable();
    deny.dedup();
    Some(deny.into())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::record::{Kind, MatchKind, acl_equals};

    fn state() -> RoomState {
        RoomState {
            room: 1,
            event_type: 2,
            state_key: 3,
            event_id: 4,
            sender: 5,
            ts: None,
            content: 6,
            redacted: false,
            facts: Facts::Other,
        }
    }

    /// Facts with strings interned from id 100 up, and the strings by id.
    fn facts(event_type: &str, content: Value) -> (Facts, HashMap<Id, String>) {
        let mut ids: HashMap<String, Id> = HashMap::new();
        let mut intern = |s: &str| {
            let next = 100 + ids.len() as Id;
            *ids.entry(s.to_string()).or_insert(next)
        };
        let Value::Object(content) = content else {
            panic!("an object")
        };
        let f = facts_of(&state(), event_type, &content, &mut intern);
        (f, ids.into_iter().map(|(s, id)| (id, s)).collect())
    }

    #[test]
    fn member_events_give_their_membership_or_why_not() {
        let (f, names) = facts(
            "m.room.member",
            json!({"membership": "join", "displayname": "A"}),
        );
        let Facts::Member {
            membership: Membership::Join,
            displayname: Some(d),
        } = f
        else {
            panic!("{f:?}")
        };
        assert_eq!(names[&d], "A");
        let (f, _) = facts(
            "m.room.member",
            json!({"membership": "leave", "displayname": 7}),
        );
        assert_eq!(
            f,
            Facts::Member {
                membership: Membership::Leave,
                displayname: None
            }
        );
        let (f, _) = facts("m.room.member", json!({"membership": "dance"}));
        assert_eq!(f, Facts::BadMember(RejectReason::MembershipUnknown));
        let (f, _) = facts("m.room.member", json!({"membership": ["join"]}));
        assert_eq!(f, Facts::BadMember(RejectReason::MembershipMissing));
    }

    #[test]
    fn rule_events_give_their_rule_or_why_not() {
        let content =
            json!({"entity": "@*:spam.example", "recommendation": "m.ban", "reason": "spam"});
        let (f, names) = facts("m.policy.rule.user", content);
        let Facts::Rule(rule) = f else {
            panic!("{f:?}")
        };
        assert_eq!(
            (rule.room, rule.kind, rule.state_key, rule.event_id),
            (1, Kind::User, 3, 4)
        );
        assert_eq!((rule.matcher, rule.class), (MatchKind::Glob, Class::Ban));
        assert_eq!(names[&rule.entity.unwrap()], "@*:spam.example");
        assert_eq!(names[&rule.reason.unwrap()], "spam");
        let (f, _) = facts("org.matrix.mjolnir.rule.server", json!({}));
        assert_eq!(f, Facts::NoRule);
        let (f, _) = facts(
            "m.room.rule.room",
            json!({"entity": 1, "recommendation": "m.ban"}),
        );
        assert_eq!(f, Facts::BadRule(RejectReason::EntityNotString));
        let (f, _) = facts("m.room.topic", json!({"topic": "hi"}));
        assert_eq!(f, Facts::Other);
    }

    #[test]
    fn acls_give_what_they_deny_when_an_intent_can_equal_them() {
        let acl = |content: Value| facts("m.room.server_acl", content);
        let (f, names) =
            acl(json!({"allow": ["*", "*"], "deny": ["b", "a", "b"], "allow_ip_literals": false}));
        let Facts::Acl(Some(deny)) = &f else {
            panic!("{f:?}")
        };
        let mut texts: Vec<&str> = deny.iter().map(|id| names[id].as_str()).collect();
        texts.sort_unstable();
        assert_eq!(texts, ["a", "b"]);
        let ids: Vec<Id> = names.keys().copied().collect();
        assert!(acl_equals(&Some(deny.clone()), &ids));
        assert!(!acl_equals(&Some(deny.clone()), &ids[..1]));
        assert!(!acl_equals(&None, &[]));
        for never in [
            json!({"allow": ["*"], "deny": []}),
            json!({"allow": ["*"], "deny": [], "allow_ip_literals": true}),
            json!({"allow": ["*", "x"], "allow_ip_literals": false}),
            json!({"deny": [], "allow_ip_literals": false}),
            json!({"allow": ["*"], "deny": [1], "allow_ip_literals": false}),
            json!({"allow": ["*"], "deny": "a", "allow_ip_literals": false}),
        ] {
            assert_eq!(acl(never.clone()).0, Facts::Acl(None), "{never}");
        }
        let (empty, _) = acl(json!({"allow": ["*"], "allow_ip_literals": false}));
        assert_eq!(empty, Facts::Acl(Some(Vec::new().into())));
        assert!(acl_equals(&Some(Vec::new().into()), &[]));
    }
}
