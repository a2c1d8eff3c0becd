//! Policy rules and identifiers: parsing rule content, server names, hashes, and the keys by
//! which rules and users meet in the matching join.

use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use prr_engine::{Id, Strings};

use crate::glob::{Glob, IndexKey, server_glob_key, server_keys, user_glob_key, user_keys};
use crate::record::{Kind, MatchKind, RejectReason, Rule};

/// What a rule slot's content says, before its strings are interned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RuleContent<'a> {
    pub matcher: MatchKind,
    pub entity: Option<&'a str>,
    pub sha256: Option<&'a str>,
    pub recommendation: &'a str,
    pub reason: Option<&'a str>,
}

fn hash_in<'a>(content: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    content.get(field)?.as_object()?.get("sha256")?.as_str()
}

/// Parses the content of the event that takes a rule slot. `Ok(None)`: the slot is empty
/// (empty content). `Err`: the event is not a valid rule.
pub(crate) fn parse_rule(
    content: &Map<String, Value>,
) -> Result<Option<RuleContent<'_>>, RejectReason> {
    if content.is_empty() {
        return Ok(None);
    }
    let (matcher, entity, sha256) = match content.get("entity") {
        Some(Value::String(e)) if Glob::is_glob(e) => (MatchKind::Glob, Some(e.as_str()), None),
        Some(Value::String(e)) => (MatchKind::Literal, Some(e.as_str()), None),
        Some(_) => return Err(RejectReason::EntityNotString),
        None => match hash_in(content, "hashes")
            .or_else(|| hash_in(content, "org.matrix.msc4205.hashes"))
        {
            Some(h) => (MatchKind::Hashed, None, Some(h)),
            None => return Err(RejectReason::NoEntityOrHash),
        },
    };
    let recommendation = match content.get("recommendation") {
        Some(Value::String(r)) => r.as_str(),
        _ => return Err(RejectReason::RecommendationNotString),
    };
    let reason = content.get("reason").and_then(Value::as_str);
    Ok(Some(RuleContent {
        matcher,
        entity,
        sha256,
        recommendation,
        reason,
    }))
}

/// The strings of a rule or member event's content that the dataflow turns into ids: the
/// ingest interns them beforehand, so ids are assigned in ingest order.
pub(crate) fn content_strings(content: &Map<String, Value>) -> Vec<&str> {
    let mut out = Vec::new();
    for f in ["entity", "recommendation", "reason", "displayname"] {
        if let Some(Value::String(s)) = content.get(f) {
            out.push(s.as_str());
        }
    }
    for f in ["hashes", "org.matrix.msc4205.hashes"] {
        if let Some(h) = hash_in(content, f) {
            out.push(h);
        }
    }
    out
}

/// The server name of a user ID: everything after its first `:`.
pub fn server_name(user_id: &str) -> Option<&str> {
    user_id.split_once(':').map(|(_, s)| s)
}

/// A server name as server rules and ACLs compare it: a trailing `:digits` port dropped, ASCII
/// lower-cased.
pub fn normalize_server(server: &str) -> String {
    let host = match server.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => server,
    };
    host.to_ascii_lowercase()
}

/// Padded standard base64 of the SHA-256 of `s`: the form of hashed rules.
pub fn sha256_base64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))
}

/// 64-bit FNV-1a, the same in every build.
pub(crate) fn fnv64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The kinds of key in the matching join: each rule has one key, each user several.
const USER_LITERAL: u8 = 0;
const USER_GLOB: u8 = 1;
const USER_HASH: u8 = 2;
const SERVER_LITERAL: u8 = 3;
const SERVER_GLOB: u8 = 4;
const SERVER_HASH: u8 = 5;

/// A key of the matching join: `(kind of key, hash of its text)`. Equal keys are candidates,
/// checked exactly afterwards, so a hash collision costs a comparison, never a wrong match.
pub(crate) type MatchKey = (u8, u64);

fn index_key_hash(k: &IndexKey) -> u64 {
    match k {
        IndexKey::ColonSuffix(s) => fnv64(&[b"c", s.as_bytes()]),
        IndexKey::Prefix(s) => fnv64(&[b"p", s.as_bytes()]),
        IndexKey::Labels(s) => fnv64(&[b"l", s.as_bytes()]),
        IndexKey::Scan => fnv64(&[b"s"]),
    }
}

/// The key of a rule in the matching join (`None`: room rules never match users).
pub(crate) fn rule_key(
    kind: Kind,
    matcher: MatchKind,
    entity: Option<&str>,
    sha256: Option<&str>,
) -> Option<MatchKey> {
    let text = |s: Option<&str>| s.unwrap_or("").as_bytes().to_vec();
    Some(match (kind, matcher) {
        (Kind::Room, _) => return None,
        (Kind::User, MatchKind::Literal) => (USER_LITERAL, fnv64(&[&text(entity)])),
        (Kind::User, MatchKind::Glob) => (
            USER_GLOB,
            index_key_hash(&user_glob_key(entity.unwrap_or(""))),
        ),
        (Kind::User, MatchKind::Hashed) => (USER_HASH, fnv64(&[&text(sha256)])),
        (Kind::Server, MatchKind::Literal) => (
            SERVER_LITERAL,
            fnv64(&[entity.unwrap_or("").to_ascii_lowercase().as_bytes()]),
        ),
        (Kind::Server, MatchKind::Glob) => (
            SERVER_GLOB,
            index_key_hash(&server_glob_key(entity.unwrap_or(""))),
        ),
        (Kind::Server, MatchKind::Hashed) => (SERVER_HASH, fnv64(&[&text(sha256)])),
    })
}

/// The families of a user's match keys: what a user's keys of each cost differs (a literal key
/// is the user ID, a glob key a part of it, a hashed key a SHA-256 of it, the server keys
/// depend on its server only), so a resumed index builds each family when a rule first needs
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyFamily {
    UserLiteral,
    UserGlob,
    UserHash,
    Server,
}

impl KeyFamily {
    pub(crate) const ALL: [KeyFamily; 4] = [
        KeyFamily::UserLiteral,
        KeyFamily::UserGlob,
        KeyFamily::UserHash,
        KeyFamily::Server,
    ];

    /// The family of a key.
    pub(crate) fn of(k: &MatchKey) -> KeyFamily {
        match k.0 {
            USER_LITERAL => KeyFamily::UserLiteral,
            USER_GLOB => KeyFamily::UserGlob,
            USER_HASH => KeyFamily::UserHash,
            _ => KeyFamily::Server,
        }
    }
}

/// A user's keys of `family` (the server family: those of its server, see
/// [`server_match_keys`]), appended to `out`, unsorted and possibly repeated.
pub(crate) fn user_keys_of(user: &str, family: KeyFamily, out: &mut Vec<MatchKey>) {
    match family {
        KeyFamily::UserLiteral => out.push((USER_LITERAL, fnv64(&[user.as_bytes()]))),
        KeyFamily::UserGlob => out.extend(
            user_keys(user)
                .iter()
                .map(|k| (USER_GLOB, index_key_hash(k))),
        ),
        KeyFamily::UserHash => out.push((USER_HASH, fnv64(&[sha256_base64(user).as_bytes()]))),
        KeyFamily::Server => {
            if let Some(server) = server_name(user) {
                out.extend(server_match_keys(server));
            }
        }
    }
}

/// The keys under which the users of a server (as a user ID names it) meet server rules.
pub(crate) fn server_match_keys(server: &str) -> Vec<MatchKey> {
    let n = normalize_server(server);
    let mut keys = vec![
        (SERVER_LITERAL, fnv64(&[n.as_bytes()])),
        (SERVER_HASH, fnv64(&[sha256_base64(&n).as_bytes()])),
    ];
    keys.extend(
        server_keys(&n)
            .iter()
            .map(|k| (SERVER_GLOB, index_key_hash(k))),
    );
    keys
}

/// Every key under which a user can meet the rules that may match it.
pub(crate) fn user_match_keys(user: &str) -> Vec<MatchKey> {
    let mut keys = Vec::new();
    for family in KeyFamily::ALL {
        user_keys_of(user, family, &mut keys);
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Whether a rule matches a user, exactly as the spec says.
pub(crate) fn rule_matches_user(
    kind: Kind,
    matcher: MatchKind,
    entity: Option<&str>,
    sha256: Option<&str>,
    user: &str,
) -> bool {
    match kind {
        Kind::Room => false,
        Kind::User => match matcher {
            MatchKind::Literal => entity == Some(user),
            MatchKind::Glob => entity.is_some_and(|e| Glob::new(e).matches(user)),
            MatchKind::Hashed => sha256.is_some_and(|h| h == sha256_base64(user)),
        },
        Kind::Server => match server_name(user) {
            None => false,
            Some(server) => {
                server_entity_matches(matcher, entity, sha256, &normalize_server(server))
            }
        },
    }
}

/// The key by which a rule meets the users it may match (`None`: it matches no user).
pub(crate) fn rule_match_key(rule: &Rule, s: &Strings<'_>) -> Option<MatchKey> {
    rule_key(
        rule.kind,
        rule.matcher,
        rule.entity.map(|e| s.get(e)),
        rule.sha256.map(|h| s.get(h)),
    )
}

/// Whether `rule` matches `user` (once they meet by key).
pub(crate) fn rule_matches(rule: &Rule, user: Id, s: &Strings<'_>) -> bool {
    rule_matches_user(
        rule.kind,
        rule.matcher,
        rule.entity.map(|e| s.get(e)),
        rule.sha256.map(|h| s.get(h)),
        s.get(user),
    )
}

/// Whether a server rule matches a normalized server name (port dropped, lower case).
pub(crate) fn server_entity_matches(
    matcher: MatchKind,
    entity: Option<&str>,
    sha256: Option<&str>,
    normalized: &str,
) -> bool {
    match matcher {
        MatchKind::Literal => entity.is_some_and(|e| e.eq_ignore_ascii_case(normalized)),
        MatchKind::Glob => {
            entity.is_some_and(|e| Glob::new_ignore_ascii_case(e).matches(normalized))
        }
        MatchKind::Hashed => sha256.is_some_and(|h| h == sha256_base64(normalized)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_drop_the_port_and_case() {
        assert_eq!(server_name("@a:Evil.ORG:8448"), Some("Evil.ORG:8448"));
        assert_eq!(normalize_server("Evil.ORG:8448"), "evil.org");
        assert_eq!(normalize_server("[::1]:80"), "[::1]");
        assert_eq!(normalize_server("evil.org:"), "evil.org:");
        assert_eq!(server_name("@nocolon"), None);
    }

    #[test]
    fn hashes_are_padded_standard_base64() {
        assert_eq!(
            sha256_base64(""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    /// A user's keys are the union of its keys of each family, each key of the family that
    /// [`KeyFamily::of`] names (a resumed index is built per family and searched by it).
    #[test]
    fn the_key_families_partition_a_users_keys() {
        for u in [
            "@spam1:evil.org",
            "@a:Evil.ORG:8448",
            "@x:good.net",
            "@:jki.re",
            "@nocolon",
            "@a:[::1]:80",
        ] {
            let mut union = Vec::new();
            for family in KeyFamily::ALL {
                let mut keys = Vec::new();
                user_keys_of(u, family, &mut keys);
                assert!(
                    !keys.is_empty() || family == KeyFamily::Server,
                    "{u}: {family:?}"
                );
                assert!(
                    keys.iter().all(|k| KeyFamily::of(k) == family),
                    "{u}: {family:?}"
                );
                union.extend(keys);
            }
            union.sort_unstable();
            union.dedup();
            assert_eq!(union, user_match_keys(u), "{u}");
            if let Some(server) = server_name(u) {
                let mut keys = Vec::new();
                user_keys_of(u, KeyFamily::Server, &mut keys);
                assert_eq!(keys, server_match_keys(server), "{u}");
            }
        }
    }

    #[test]
    fn every_match_is_found_under_a_shared_key() {
        let users = [
            "@spam1:evil.org",
            "@a:Evil.ORG:8448",
            "@x:good.net",
            "@:jki.re",
            "@nocolon",
        ];
        let rules: Vec<(Kind, MatchKind, Option<String>, Option<String>)> = vec![
            (
                Kind::User,
                MatchKind::Literal,
                Some("@x:good.net".into()),
                None,
            ),
            (Kind::User, MatchKind::Glob, Some("@spam*".into()), None),
            (Kind::User, MatchKind::Glob, Some("*:evil.org".into()), None),
            (
                Kind::User,
                MatchKind::Hashed,
                None,
                Some(sha256_base64("@:jki.re")),
            ),
            (
                Kind::Server,
                MatchKind::Literal,
                Some("EVIL.org".into()),
                None,
            ),
            (Kind::Server, MatchKind::Glob, Some("*.org".into()), None),
            (Kind::Server, MatchKind::Glob, Some("e?il.*".into()), None),
            (
                Kind::Server,
                MatchKind::Hashed,
                None,
                Some(sha256_base64("good.net")),
            ),
        ];
        let mut matched = 0;
        for u in users {
            let keys = user_match_keys(u);
            for (k, m, e, h) in &rules {
                if rule_matches_user(*k, *m, e.as_deref(), h.as_deref(), u) {
                    matched += 1;
                    let key = rule_key(*k, *m, e.as_deref(), h.as_deref()).unwrap();
                    assert!(
                        keys.contains(&key),
                        "{u} matches {e:?}/{h:?} but shares no key"
                    );
                }
            }
        }
        assert!(matched >= 10, "{matched}");
    }

    #[test]
    fn rule_content_parsing_follows_the_spec() {
        let parse = |v: Value| -> Result<Option<(MatchKind, String)>, RejectReason> {
            let m = v.as_object().unwrap().clone();
            parse_rule(&m).map(|r| r.map(|r| (r.matcher, r.recommendation.to_string())))
        };
        assert_eq!(parse(serde_json::json!({})), Ok(None));
        assert_eq!(
            parse(serde_json::json!({"entity": "@a*", "recommendation": "m.ban"})),
            Ok(Some((MatchKind::Glob, "m.ban".into())))
        );
        assert_eq!(
            parse(
                serde_json::json!({"org.matrix.msc4205.hashes": {"sha256": "x"}, "recommendation": "m.ban"})
            ),
            Ok(Some((MatchKind::Hashed, "m.ban".into())))
        );
        assert_eq!(
            parse(
                serde_json::json!({"entity": null, "hashes": {"sha256": "x"}, "recommendation": "m.ban"})
            ),
            Err(RejectReason::EntityNotString)
        );
        assert_eq!(
            parse(serde_json::json!({"recommendation": "m.ban"})),
            Err(RejectReason::NoEntityOrHash)
        );
        assert_eq!(
            parse(serde_json::json!({"entity": "x", "recommendation": 1})),
            Err(RejectReason::RecommendationNotString)
        );
    }
}
