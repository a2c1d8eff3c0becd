//! Policy rule events (`m.policy.rule.*`), as prr reads them (`docs/replicas.md`, `policy_room`).

use base64::Engine;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// What a rule is about: the event type is `m.policy.rule.<kind>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// `m.policy.rule.user`: user ids.
    User,
    /// `m.policy.rule.room`: room ids.
    Room,
    /// `m.policy.rule.server`: server names.
    Server,
}

impl RuleKind {
    /// `user`, `room` or `server`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::User => "user",
            RuleKind::Room => "room",
            RuleKind::Server => "server",
        }
    }
}

/// A policy rule state event: its type, state key and content.
///
/// ```
/// use prr_synapse_harness::{PolicyRule, RuleKind};
///
/// let literal = PolicyRule::entity(RuleKind::User, "@spam:localhost").with_reason("spam");
/// assert_eq!(literal.event_type(), "m.policy.rule.user");
/// assert_eq!(literal.state_key(), "rule:@spam:localhost");
/// assert_eq!(literal.content()["recommendation"], "m.ban");
///
/// // MSC4205: the entity is replaced by the padded base64 of its SHA-256.
/// let hashed = PolicyRule::hashed(RuleKind::Server, "evil.example");
/// let sha = hashed.content()["org.matrix.msc4205.hashes"]["sha256"].as_str().unwrap();
/// assert_eq!(sha.len(), 44);
/// assert!(hashed.content().get("entity").is_none());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyRule {
    kind: RuleKind,
    state_key: String,
    /// Always a JSON object.
    content: Value,
}

impl PolicyRule {
    /// A rule with `entity` (literal, or a glob when it contains `*` or `?`), recommendation
    /// `m.ban`, state key `rule:<entity>`.
    pub fn entity(kind: RuleKind, entity: &str) -> Self {
        let content = json!({"entity": entity, "recommendation": "m.ban"});
        PolicyRule {
            kind,
            state_key: format!("rule:{entity}"),
            content,
        }
    }

    /// A hashed rule (MSC4205): no `entity`, `org.matrix.msc4205.hashes.sha256` the padded
    /// standard base64 of SHA-256 of `entity`'s UTF-8 (for server rules prr compares the hash
    /// of the lower-cased server name without port), recommendation `m.ban`, state key
    /// `rule:sha256:<hash>`.
    pub fn hashed(kind: RuleKind, entity: &str) -> Self {
        let sha = sha256_base64(entity);
        let content = json!({
            "org.matrix.msc4205.hashes": {"sha256": sha},
            "recommendation": "m.ban",
        });
        PolicyRule {
            kind,
            state_key: format!("rule:sha256:{sha}"),
            content,
        }
    }

    /// Moves a hashed rule's hash to the stable `hashes` field (which prr prefers when both are
    /// present).
    pub fn with_stable_hashes(mut self) -> Self {
        let map = self.map();
        if let Some(h) = map.remove("org.matrix.msc4205.hashes") {
            map.insert("hashes".into(), h);
        }
        self
    }

    /// Sets `recommendation` (`m.ban` by default; `m.takedown`, `org.matrix.mjolnir.ban`, ...).
    pub fn with_recommendation(self, recommendation: &str) -> Self {
        self.with_field("recommendation", json!(recommendation))
    }

    /// Sets `reason`.
    pub fn with_reason(self, reason: &str) -> Self {
        self.with_field("reason", json!(reason))
    }

    /// Sets the state key.
    pub fn with_state_key(mut self, state_key: &str) -> Self {
        self.state_key = state_key.into();
        self
    }

    /// Sets any content field (for malformed rules: a non-string `entity`, ...).
    pub fn with_field(mut self, key: &str, value: Value) -> Self {
        self.map().insert(key.into(), value);
        self
    }

    fn map(&mut self) -> &mut Map<String, Value> {
        self.content
            .as_object_mut()
            .expect("rule content is an object")
    }

    /// The rule's kind.
    pub fn kind(&self) -> RuleKind {
        self.kind
    }

    /// `m.policy.rule.<kind>`.
    pub fn event_type(&self) -> String {
        format!("m.policy.rule.{}", self.kind.as_str())
    }

    /// The state key.
    pub fn state_key(&self) -> &str {
        &self.state_key
    }

    /// The event content (a JSON object).
    pub fn content(&self) -> &Value {
        &self.content
    }
}

/// Padded standard base64 of SHA-256 of `s`'s UTF-8: the hash MSC4205 rules carry.
pub fn sha256_base64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_padded_standard_base64_of_sha256() {
        assert_eq!(
            sha256_base64(""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn stable_hashes_move_the_hash() {
        let r = PolicyRule::hashed(RuleKind::User, "@a:b").with_stable_hashes();
        assert_eq!(r.content()["hashes"]["sha256"], sha256_base64("@a:b"));
        assert!(r.content().get("org.matrix.msc4205.hashes").is_none());
        assert_eq!(
            r.state_key(),
            format!("rule:sha256:{}", sha256_base64("@a:b"))
        );
    }
}
