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

/// The server name of a user ID: everything after its first `:`.
pub fn server_name(user_id: &str) -> Option<&str> {
    user_id.split_once(':').map(|(_, s)| s)
}

/// A server name as server rules and ACLs compare it: a trailing `:digits` port dropped, ASCII
/// lower-cased.
pub fn normalize_server(server: &str) -> String {
    host(server).to_ascii_lowercase()
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
    if matcher == MatchKind::Glob && !entity.is_some_and(glob_can_match) {
        return None;
    }
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
        // No glob is compared with a text longer than any ID.
        KeyFamily::UserGlob if user.len() > MAX_ID_LEN => {}
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
    // No glob is compared with a text longer than any ID.
    if n.len() <= MAX_ID_LEN {
        keys.extend(
            server_keys(&n)
                .iter()
                .map(|k| (SERVER_GLOB, index_key_hash(k))),
        );
    }
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

/// The longest user ID the spec allows, in bytes (so no server name is longer either). No glob
/// is compared with a longer text, so a glob that needs more bytes ([`Glob::min_len`]) never
/// matches: such a rule stays a rule (in `policy_room`, `policy_list`), but it has no match key
/// and is never compared. This bounds the cost of one comparison (see [`crate::glob`]).
pub(crate) const MAX_ID_LEN: usize = 255;

/// The bytes of text a glob pattern needs at least (its [`Glob::min_len`], without compiling it).
fn glob_min_len(pattern: &str) -> usize {
    pattern.bytes().filter(|&b| b != b'*').count()
}

/// Whether a rule's glob can match any text (user ID or server name) at all.
pub(crate) fn glob_can_match(pattern: &str) -> bool {
    glob_min_len(pattern) <= MAX_ID_LEN
}

/// A rule entity's glob: case-sensitive for user rules, ASCII case folding for server rules.
pub(crate) fn compile_glob(kind: Kind, entity: &str) -> Glob {
    match kind {
        Kind::Server => Glob::new_ignore_ascii_case(entity),
        _ => Glob::new(entity),
    }
}

/// Whether a compiled glob matches `text`: never for a text longer than any ID.
fn glob_matches(glob: &Glob, text: &str) -> bool {
    text.len() <= MAX_ID_LEN && glob.matches(text)
}

/// A server name without its trailing `:digits` port, as it is (not lower-cased).
fn host(server: &str) -> &str {
    match server.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => server,
    }
}

/// Whether a rule matches a user, exactly as the spec says (compiling its glob, if any: for
/// explanations and tests; the replicas use [`rule_matches`], which compiles a rule once).
pub(crate) fn rule_matches_user(
    kind: Kind,
    matcher: MatchKind,
    entity: Option<&str>,
    sha256: Option<&str>,
    user: &str,
) -> bool {
    let glob = entity
        .filter(|e| matcher == MatchKind::Glob && glob_can_match(e))
        .map(|e| compile_glob(kind, e));
    matches_user(kind, matcher, entity, sha256, glob.as_ref(), user)
}

/// Whether a rule matches a user, its glob (if a glob rule that can match) compiled.
pub(crate) fn matches_user(
    kind: Kind,
    matcher: MatchKind,
    entity: Option<&str>,
    sha256: Option<&str>,
    glob: Option<&Glob>,
    user: &str,
) -> bool {
    match kind {
        Kind::Room => false,
        Kind::User => match matcher {
            MatchKind::Literal => entity == Some(user),
            MatchKind::Glob => glob.is_some_and(|g| glob_matches(g, user)),
            MatchKind::Hashed => sha256.is_some_and(|h| h == sha256_base64(user)),
        },
        Kind::Server => match server_name(user) {
            None => false,
            Some(server) => match matcher {
                MatchKind::Literal => entity.is_some_and(|e| e.eq_ignore_ascii_case(host(server))),
                // The glob folds ASCII case itself: the host needs no lower-cased copy.
                MatchKind::Glob => glob.is_some_and(|g| glob_matches(g, host(server))),
                MatchKind::Hashed => {
                    sha256.is_some_and(|h| h == sha256_base64(&normalize_server(server)))
                }
            },
        },
    }
}

/// The key by which a rule meets the users it may match (`None`: it matches no user, e.g. a
/// glob that needs more bytes than any ID has).
pub(crate) fn rule_match_key(rule: &Rule, s: &Strings<'_>) -> Option<MatchKey> {
    rule_key(
        rule.kind,
        rule.matcher,
        rule.entity.map(|e| s.get(e)),
        rule.sha256.map(|h| s.get(h)),
    )
}

/// Whether `rule` matches `user` (once they meet by key). A glob is compiled at the rule's
/// first comparison and kept with the rule ([`Rule::glob`]).
pub(crate) fn rule_matches(rule: &Rule, user: Id, s: &Strings<'_>) -> bool {
    let entity = rule.entity.map(|e| s.get(e));
    let glob = entity
        .filter(|e| rule.matcher == MatchKind::Glob && glob_can_match(e))
        .map(|e| rule.glob(|| compile_glob(rule.kind, e)));
    matches_user(
        rule.kind,
        rule.matcher,
        entity,
        rule.sha256.map(|h| s.get(h)),
        glob,
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
        MatchKind::Glob => entity.is_some_and(|e| {
            glob_can_match(e) && glob_matches(&Glob::new_ignore_ascii_case(e), normalized)
        }),
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

    /// A glob rule of `kind` with `entity`, interned in `dict`.
    fn glob_rule(dict: &prr_engine::Dictionary, kind: Kind, entity: &str) -> Rule {
        let id = |s: &str| dict.intern(s);
        Rule {
            room: id("!list:x"),
            kind,
            state_key: id("k"),
            event_type: id("m.policy.rule.user"),
            event_id: id("$e"),
            sender: id("@mod:x"),
            matcher: MatchKind::Glob,
            entity: Some(id(entity)),
            sha256: None,
            recommendation: id("m.ban"),
            class: crate::record::Class::Ban,
            reason: None,
            compiled: Default::default(),
        }
    }

    /// Problem 5 of issue 15: a rule's glob is compiled once, at its first comparison, and
    /// kept with the rule (a second compilation would run the closure, which fails); a glob
    /// that needs more bytes than any ID has no match key, is never compiled and matches
    /// nothing, with the same answer as a fresh comparison.
    #[test]
    fn problem_5_a_rule_is_compiled_once_and_a_too_long_glob_never() {
        let dict = prr_engine::Dictionary::new();
        let users = ["@aaaaaaaa:b", "@alice:example.org", "@a:aaaaaaab"];
        let user_ids: Vec<Id> = users.iter().map(|u| dict.intern(u)).collect();
        let short = std::sync::Arc::new(glob_rule(&dict, Kind::User, "*a*a*a*a*a*a*a*a*b"));
        let shared = short.clone();
        let long = format!("{}*b", "*a".repeat(32_767));
        let long_user = glob_rule(&dict, Kind::User, &long);
        let long_server = glob_rule(&dict, Kind::Server, &long);
        let s = dict.strings();
        let found: Vec<bool> = user_ids
            .iter()
            .map(|u| rule_matches(&short, *u, &s))
            .collect();
        assert_eq!(found, [true, false, true]);
        // Compiled by the first comparison, shared by every clone of the rule's `Arc`.
        let g = shared.glob(|| panic!("the rule's glob was compiled a second time"));
        assert_eq!(g.pattern(), "*a*a*a*a*a*a*a*a*b");
        for u in &user_ids {
            rule_matches(&shared, *u, &s);
        }
        for (rule, kind) in [(&long_user, "user"), (&long_server, "server")] {
            assert_eq!(rule_match_key(rule, &s), None, "{kind}");
            for (u, text) in user_ids.iter().zip(users) {
                assert!(!rule_matches(rule, *u, &s), "{kind} {text}");
                assert!(
                    !rule_matches_user(rule.kind, MatchKind::Glob, Some(&long), None, text),
                    "{kind} {text}"
                );
            }
            assert!(!rule.compiled.is_compiled(), "{kind} rule compiled");
        }
    }

    /// The 255-byte bound: a glob that needs exactly 255 bytes matches a 255-byte user ID; one
    /// that needs 256 has no key; no glob matches a longer text (but literal rules still do).
    #[test]
    fn globs_compare_ids_of_at_most_255_bytes() {
        let id255 = format!("@{}:b", "a".repeat(252));
        assert_eq!(id255.len(), MAX_ID_LEN);
        // 255 bytes needed (254 literal, one `?`), then 256.
        let fits = format!("@{}*:?", "a".repeat(252));
        let too_long = format!("@{}*:?", "a".repeat(253));
        let user =
            |e: &str, u: &str| rule_matches_user(Kind::User, MatchKind::Glob, Some(e), None, u);
        assert!(user(&fits, &id255));
        assert!(rule_key(Kind::User, MatchKind::Glob, Some(&fits), None).is_some());
        assert!(rule_key(Kind::User, MatchKind::Glob, Some(&too_long), None).is_none());
        let id256 = format!("@{}:b", "a".repeat(253));
        assert!(!user("@*", &id256));
        assert!(!user("*", &id256));
        assert!(user("*", &id255));
        assert!(rule_matches_user(
            Kind::User,
            MatchKind::Literal,
            Some(&id256),
            None,
            &id256
        ));
        // No glob key for a user no glob is compared with, so it meets no glob rule.
        let mut keys = Vec::new();
        user_keys_of(&id256, KeyFamily::UserGlob, &mut keys);
        assert!(keys.is_empty());
        // Server rules compare the host (port dropped), case-insensitively, without a copy.
        let server =
            |e: &str, u: &str| rule_matches_user(Kind::Server, MatchKind::Glob, Some(e), None, u);
        assert!(server("*.EVIL.org", "@a:x.evil.ORG:8448"));
        assert!(!server("*.evil.org", "@a:x.evil.org:84a8"));
        let host = format!("{}.org", "h".repeat(251));
        assert!(server("*.org", &format!("@a:{host}")));
        assert!(!server("*.org", &format!("@a:h{host}")));
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

    /// Characters of the generated user IDs and rule entities: ID punctuation, ASCII case,
    /// non-ASCII, and the glob's wildcards (in entities).
    const ID_CHARS: &[char] = &[
        'a', 'A', 'b', 'e', 'E', 'v', 'o', 'r', 'g', ':', '.', '@', '1', '8', 'é', 'İ', '𝔸',
    ];

    fn id_text(max: usize, wild: bool) -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let mut chars = ID_CHARS.to_vec();
        if wild {
            chars.extend(['*', '*', '?']);
        }
        prop::collection::vec(prop::sample::select(chars), 0..max).prop_map(String::from_iter)
    }

    fn fuzz_cases() -> u32 {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            256
        } else {
            2048
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(fuzz_cases()))]

        /// Fuzzing the matching join's keys: whenever a rule (user or server; literal, glob or
        /// hashed) matches a user, the rule's key is among the user's, so the join never
        /// misses a match; and the replicas' comparison (its glob compiled once, kept with the
        /// rule) answers as a fresh one.
        #[test]
        fn fuzz_match_keys_never_exclude_a_match(
            local in id_text(6, false),
            server in id_text(14, false),
            port in proptest::option::of(0u16..10_000),
            kind in proptest::sample::select(vec![Kind::User, Kind::Server]),
            matcher in proptest::sample::select(vec![MatchKind::Literal, MatchKind::Glob, MatchKind::Hashed]),
            entity in id_text(12, true),
            from_user in proptest::bool::ANY,
        ) {
            let user = match port {
                Some(p) => format!("@{local}:{server}:{p}"),
                None => format!("@{local}:{server}"),
            };
            // Half the entities are taken from the user, so that many rules match.
            let entity = match (from_user, kind) {
                (true, Kind::Server) => normalize_server(&server).to_ascii_uppercase(),
                (true, _) => user.clone(),
                (false, _) => entity,
            };
            let hashed = match kind {
                Kind::Server => sha256_base64(&normalize_server(&server)),
                _ => sha256_base64(&user),
            };
            let (entity, sha256) = match matcher {
                MatchKind::Hashed => (None, Some(hashed.as_str())),
                _ => (Some(entity.as_str()), None),
            };
            let matched = rule_matches_user(kind, matcher, entity, sha256, &user);
            if matched {
                let key = rule_key(kind, matcher, entity, sha256);
                proptest::prop_assert!(key.is_some_and(|k| user_match_keys(&user).contains(&k)));
            }
            let dict = prr_engine::Dictionary::new();
            let mut rule = glob_rule(&dict, kind, entity.unwrap_or(""));
            rule.matcher = matcher;
            rule.entity = entity.map(|e| dict.intern(e));
            rule.sha256 = sha256.map(|h| dict.intern(h));
            let u = dict.intern(&user);
            let s = dict.strings();
            proptest::prop_assert_eq!(rule_matches(&rule, u, &s), matched);
            proptest::prop_assert_eq!(rule_matches(&rule, u, &s), matched);
        }
    }
}
