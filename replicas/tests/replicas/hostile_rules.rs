//! Hostile policy rules (issue 15, problem 5): globs built to make matching slow stay rules,
//! and match exactly the members they should, computed from scratch and resumed after a
//! restart. (How fast: `benches/src/bin/hostile_rules.rs` and `docs/benchmarks.md`.)

use std::collections::BTreeSet;

use prr_engine::RuntimeConfig;
use prr_replicas::Matrix;
use serde_json::json;

use super::differs::{
    BOT, LIST, ROOM, field, ingest_events, ingest_manifest, member, server_rule, show, user_ban,
};

/// Eight `a`, then a `b` at the end: matched by [`SHORT`] in every part of an ID.
const SHORT: &str = "*a*a*a*a*a*a*a*a*b";

/// Issue 15's rule: 64 KiB, needing 32,768 bytes of text, more than any ID has.
fn long() -> String {
    format!("{}*b", "*a".repeat(32_767))
}

/// `(user_id, kind, state_key)` of every `member_matches` row.
fn matches(m: &mut Matrix) -> BTreeSet<(String, String, String)> {
    show(m, "member_matches")
        .iter()
        .map(|r| {
            (
                field(r, "user_id").to_owned(),
                field(r, "kind").to_owned(),
                field(r, "state_key").to_owned(),
            )
        })
        .collect()
}

fn expect(rows: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    rows.iter()
        .map(|(u, k, s)| ((*u).to_owned(), (*k).to_owned(), (*s).to_owned()))
        .collect()
}

/// `(kind, state_key)` of the rules a replica holds (`policy_room` or `policy_list`).
fn rules_in(m: &mut Matrix, replica: &str) -> BTreeSet<(String, String)> {
    show(m, replica)
        .iter()
        .map(|r| {
            (
                field(r, "kind").to_owned(),
                field(r, "state_key").to_owned(),
            )
        })
        .collect()
}

#[test]
fn problem_5_hostile_rules_stay_rules_and_match_exactly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = || RuntimeConfig::new().with_store(dir.path().join("store.redb"));
    let mut m = Matrix::start(config()).expect("runtime starts");
    ingest_manifest(
        &mut m,
        json!([{"id": BOT, "watch": [LIST], "protect": [ROOM]}]),
    );
    // The longest valid user ID (255 bytes) and one byte more: no glob is compared with it.
    let id255 = format!("@{}:b", "a".repeat(252));
    let id256 = format!("@{}:b", "a".repeat(253));
    let users = [
        "@aaaaaaaa:b",
        "@alice:example.org",
        "@a:aaaaaaaab",
        id255.as_str(),
        id256.as_str(),
    ];
    ingest_events(
        &mut m,
        users
            .iter()
            .enumerate()
            .map(|(i, u)| member(&format!("$m{i}"), ROOM, u, "join"))
            .collect(),
    );
    let long = long();
    ingest_events(
        &mut m,
        vec![
            user_ban("$r1", LIST, "long", &long, None),
            server_rule("$r2", LIST, "long-server", &long, "m.ban"),
            user_ban("$r3", LIST, "short", SHORT, None),
            server_rule("$r4", LIST, "short-server", SHORT, "m.ban"),
            // A literal rule of the 256-byte ID still matches it: literals are compared exactly.
            user_ban("$r5", LIST, "literal-256", &id256, None),
        ],
    );
    let all_rules: BTreeSet<(String, String)> = [
        ("user", "long"),
        ("server", "long-server"),
        ("user", "short"),
        ("server", "short-server"),
        ("user", "literal-256"),
    ]
    .iter()
    .map(|(k, s)| ((*k).to_owned(), (*s).to_owned()))
    .collect();
    // The long rules are rules: in the policy room and in the instance's list.
    assert_eq!(rules_in(&mut m, "policy_room"), all_rules);
    assert_eq!(rules_in(&mut m, "policy_list"), all_rules);
    let before = expect(&[
        ("@aaaaaaaa:b", "user", "short"),
        ("@a:aaaaaaaab", "user", "short"),
        (&id255, "user", "short"),
        ("@a:aaaaaaaab", "server", "short-server"),
        (&id256, "user", "literal-256"),
    ]);
    assert_eq!(matches(&mut m), before);
    // `member_bans` follows: the long rules ban nobody.
    let banned: BTreeSet<String> = show(&mut m, "member_bans")
        .iter()
        .map(|r| field(r, "user_id").to_owned())
        .collect();
    let expected_banned: BTreeSet<String> = ["@aaaaaaaa:b", "@a:aaaaaaaab", &id255, &id256]
        .iter()
        .map(|u| (*u).to_owned())
        .collect();
    assert_eq!(banned, expected_banned);
    m.shutdown().expect("clean stop");

    // Resumed: old rules meet new members, new rules meet old members.
    let mut m = Matrix::start(config()).expect("runtime restarts");
    ingest_events(
        &mut m,
        vec![
            member("$m9", ROOM, "@xaxaxaxaxaxaxaxa:yb", "join"),
            member("$m10", ROOM, "@bob:example.org", "join"),
        ],
    );
    ingest_events(
        &mut m,
        vec![
            user_ban("$r6", LIST, "long-2", &format!("@{long}"), None),
            user_ban("$r7", LIST, "short-2", &format!("@{SHORT}"), None),
        ],
    );
    assert!(
        m.runtime().resumed().iter().any(|r| r == "member_matches"),
        "member_matches was resumed: {:?}",
        m.runtime().resumed()
    );
    let mut after = before.clone();
    after.extend(expect(&[
        ("@xaxaxaxaxaxaxaxa:yb", "user", "short"),
        ("@aaaaaaaa:b", "user", "short-2"),
        ("@a:aaaaaaaab", "user", "short-2"),
        (&id255, "user", "short-2"),
        ("@xaxaxaxaxaxaxaxa:yb", "user", "short-2"),
    ]));
    assert_eq!(matches(&mut m), after);
    assert!(rules_in(&mut m, "policy_list").contains(&("user".to_owned(), "long-2".to_owned())));
    m.shutdown().expect("clean stop");
}
