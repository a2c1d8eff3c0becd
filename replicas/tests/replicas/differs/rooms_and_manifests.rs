//! A policy room that is also protected, and manifest removal.

use super::*;

// A policy room that is also protected

#[test]
fn policy_room_that_is_also_a_protected_room() {
    let mut m = matrix();
    let both = "!both:good.net";
    ingest_manifest(
        &mut m,
        json!([{"id": BOT, "watch": [both], "protect": [both]}]),
    );
    ingest_events(
        &mut m,
        vec![
            member("$m0", both, MOD, "join"),
            member("$m1", both, "@spam:evil.org", "join"),
            user_ban("$u", both, "u", "@spam:evil.org", Some("spam")),
            server_rule("$s", both, "s", "evil.org", "m.ban"),
            acl(
                "$acl",
                both,
                json!({"allow": ["*"], "deny": ["evil.org"], "allow_ip_literals": false}),
            ),
        ],
    );
    assert_eq!(show_in(&mut m, "policy_room", both).len(), 2);
    assert_eq!(show_in(&mut m, "policy_list", BOT).len(), 2);
    assert_eq!(
        show(&mut m, "member_set"),
        vec![
            json!({"instance": BOT, "user_id": MOD, "rooms": 1}),
            json!({"instance": BOT, "user_id": "@spam:evil.org", "rooms": 1}),
        ]
    );
    let rows = show(&mut m, "member_matches");
    assert_eq!(
        match_keys(&rows),
        keys(&[
            ("@spam:evil.org", "server", "s"),
            ("@spam:evil.org", "user", "u")
        ])
    );
    assert!(rows.iter().all(|r| r["room_id"] == both));
    assert_eq!(
        show(&mut m, "member_bans"),
        vec![
            json!({"instance": BOT, "room_id": both, "user_id": "@spam:evil.org",
                    "rule_room_id": both, "rule_event_id": "$u", "reason": "spam"})
        ]
    );
    assert_eq!(deny_of(&mut m, BOT), vec!["evil.org"]);
    assert_eq!(sync_of(&mut m, BOT), syncs(&[(both, true)]));

    // The user is banned: no intent left; the list is unchanged.
    ingest_events(&mut m, vec![member("$m2", both, "@spam:evil.org", "ban")]);
    assert_eq!(show(&mut m, "member_bans"), Vec::<Value>::new());
    assert_eq!(
        show(&mut m, "member_set"),
        vec![json!({"instance": BOT, "user_id": MOD, "rooms": 1})]
    );
    assert_eq!(show_in(&mut m, "policy_list", BOT).len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Manifests

#[test]
fn manifest_replace_and_remove() {
    const INSTANCE_REPLICAS: [&str; 6] = [
        "policy_list",
        "member_set",
        "member_matches",
        "member_bans",
        "server_acl",
        "acl_sync",
    ];
    let other = "@other:good.net";
    let mut m = matrix();
    ingest_manifest(
        &mut m,
        json!([
            {"id": BOT, "watch": [LIST], "protect": [ROOM]},
            {"id": other, "watch": [LIST], "protect": [ROOM]},
        ]),
    );
    ingest_events(
        &mut m,
        vec![
            member("$m1", ROOM, "@spam:evil.org", "join"),
            member("$m2", ROOM2, "@x:good.net", "join"),
            user_ban("$u", LIST, "u", "@spam:evil.org", None),
            server_rule("$s", LIST, "s", "evil.org", "m.ban"),
        ],
    );
    let other_before: Vec<Vec<Value>> = INSTANCE_REPLICAS
        .iter()
        .map(|r| show_in(&mut m, r, other))
        .collect();
    for (name, rows) in INSTANCE_REPLICAS.iter().zip(&other_before) {
        assert!(!rows.is_empty(), "{name} has rows for {other}");
        assert_eq!(
            show_in(&mut m, name, BOT).len(),
            rows.len(),
            "{name}: both instances alike"
        );
    }

    // Replace: the entry's sets replace the old ones (no union).
    ingest_manifest(
        &mut m,
        json!([{"id": BOT, "watch": [], "protect": [ROOM2]}]),
    );
    assert_eq!(show_in(&mut m, "policy_list", BOT), Vec::<Value>::new());
    assert_eq!(
        show_in(&mut m, "member_set", BOT),
        vec![json!({"instance": BOT, "user_id": "@x:good.net", "rooms": 1})]
    );
    assert_eq!(show_in(&mut m, "member_matches", BOT), Vec::<Value>::new());
    assert_eq!(show_in(&mut m, "member_bans", BOT), Vec::<Value>::new());
    assert_eq!(deny_of(&mut m, BOT), Vec::<String>::new());
    assert_eq!(sync_of(&mut m, BOT), syncs(&[(ROOM2, false)]));

    // Remove: nothing is left for the instance; the other instance is untouched.
    ingest_manifest(&mut m, json!([{"id": BOT, "remove": true}]));
    for (name, rows) in INSTANCE_REPLICAS.iter().zip(&other_before) {
        assert_eq!(
            show_in(&mut m, name, BOT),
            Vec::<Value>::new(),
            "{name} after remove"
        );
        assert_eq!(
            &show_in(&mut m, name, other),
            rows,
            "{name} of {other} unchanged"
        );
        assert!(
            show(&mut m, name).iter().all(|r| r["instance"] == other),
            "{name}: only {other} left"
        );
    }
    // The source rooms are untouched.
    assert_eq!(show_in(&mut m, "policy_room", LIST).len(), 2);
    assert_eq!(show(&mut m, "room_members").len(), 2);

    // Re-adding the instance brings its records back.
    ingest_manifest(
        &mut m,
        json!([{"id": BOT, "watch": [LIST], "protect": [ROOM]}]),
    );
    for (name, rows) in INSTANCE_REPLICAS.iter().zip(&other_before) {
        assert_eq!(
            show_in(&mut m, name, BOT).len(),
            rows.len(),
            "{name} after re-adding"
        );
    }
}
