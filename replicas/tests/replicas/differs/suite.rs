//! The points where the spec deliberately differs from the protection suite (its **Differs**
//! notes), one section each.

use super::*;

// ---------------------------------------------------------------------------------------------
// Differs 1: policy_room

#[test]
fn differs_policy_room_edit_replaces_the_rule_instead_of_keeping_the_old_one() {
    let (mut m, _dir) = matrix_with_store();
    standard_manifest(&mut m);
    ingest_events(
        &mut m,
        vec![
            member("$m1", ROOM, "@old:evil.org", "join"),
            member("$m2", ROOM, "@new:evil.org", "join"),
        ],
    );
    let first = ingest_events(
        &mut m,
        vec![user_ban("$r1", LIST, "r1", "@old:evil.org", Some("first"))],
    );
    let first_rule = json!({
        "room_id": LIST, "kind": "user", "state_key": "r1", "type": "m.policy.rule.user",
        "event_id": "$r1", "sender": MOD, "match": "literal", "entity": "@old:evil.org",
        "sha256": null, "recommendation": "m.ban", "class": "ban", "reason": "first",
    });
    assert_eq!(
        show_in(&mut m, "policy_room", LIST),
        vec![first_rule.clone()]
    );
    assert_eq!(
        show(&mut m, "member_bans"),
        vec![json!({
            "instance": BOT, "room_id": ROOM, "user_id": "@old:evil.org",
            "rule_room_id": LIST, "rule_event_id": "$r1", "reason": "first",
        })]
    );

    // The rule is edited: same slot, new entity. Exactly one rule, the new one.
    ingest_events(
        &mut m,
        vec![user_ban("$r2", LIST, "r1", "@new:evil.org", Some("second"))],
    );
    let second_rule = json!({
        "room_id": LIST, "kind": "user", "state_key": "r1", "type": "m.policy.rule.user",
        "event_id": "$r2", "sender": MOD, "match": "literal", "entity": "@new:evil.org",
        "sha256": null, "recommendation": "m.ban", "class": "ban", "reason": "second",
    });
    assert_eq!(
        show_in(&mut m, "policy_room", LIST),
        vec![second_rule.clone()]
    );
    let mut listed = second_rule.clone();
    listed
        .as_object_mut()
        .unwrap()
        .insert("instance".into(), json!(BOT));
    assert_eq!(show(&mut m, "policy_list"), vec![listed]);
    let matches = show(&mut m, "member_matches");
    assert_eq!(
        match_keys(&matches),
        keys(&[("@new:evil.org", "user", "r1")]),
        "{matches:?}"
    );
    assert_eq!(
        show(&mut m, "member_bans"),
        vec![json!({
            "instance": BOT, "room_id": ROOM, "user_id": "@new:evil.org",
            "rule_room_id": LIST, "rule_event_id": "$r2", "reason": "second",
        })]
    );

    // The rule is removed (blanked): nothing keeps matching.
    ingest_events(
        &mut m,
        vec![rule("$r3", LIST, "m.policy.rule.user", "r1", json!({}))],
    );
    assert_eq!(show(&mut m, "policy_room"), Vec::<Value>::new());
    assert_eq!(show(&mut m, "policy_list"), Vec::<Value>::new());
    assert_eq!(show(&mut m, "member_matches"), Vec::<Value>::new());
    assert_eq!(show(&mut m, "member_bans"), Vec::<Value>::new());

    // History is still readable: as of the first rule, the first version alone.
    assert_eq!(
        m.show("policy_room", Some(LIST), Some(first)).unwrap(),
        vec![first_rule]
    );

    // Two versions of one slot in the same file: the later line wins, alone.
    ingest_events(
        &mut m,
        vec![
            user_ban("$r4", LIST, "r1", "@old:evil.org", Some("third")),
            user_ban("$r5", LIST, "r1", "@new:evil.org", Some("fourth")),
        ],
    );
    let rows = show(&mut m, "policy_room");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(field(&rows[0], "event_id"), "$r5");
    assert_eq!(field(&rows[0], "entity"), "@new:evil.org");
    let matches = show(&mut m, "member_matches");
    assert_eq!(
        match_keys(&matches),
        keys(&[("@new:evil.org", "user", "r1")]),
        "{matches:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Differs 2: member_set

#[test]
fn differs_member_set_counts_invite_then_join_once_and_leave_removes_presence() {
    let (mut m, _dir) = matrix_with_store();
    standard_manifest(&mut m);
    let user = "@u:evil.org";
    let row = |rooms: u64| vec![json!({"instance": BOT, "user_id": user, "rooms": rooms})];

    let invited = ingest_events(&mut m, vec![member("$i", ROOM, user, "invite")]);
    assert_eq!(show(&mut m, "member_set"), row(1));

    // invite -> join in the same room: still one room, and no member_set change at all.
    let joined = ingest_events(&mut m, vec![member("$j", ROOM, user, "join")]);
    assert_eq!(show(&mut m, "member_set"), row(1));
    let changes: Vec<Value> = m
        .deltas("member_set", invited)
        .unwrap()
        .into_iter()
        .filter(|d| d["seq"] == json!(joined.0))
        .collect();
    assert_eq!(
        changes,
        Vec::<Value>::new(),
        "invite -> join changes nothing in member_set"
    );
    // (The delta history itself works: the invite added the record.)
    assert_eq!(
        m.deltas("member_set", Seq(invited.0 - 1)).unwrap(),
        vec![
            json!({"seq": invited.0, "diff": 1, "record": {"instance": BOT, "user_id": user, "rooms": 1}})
        ]
    );

    // The same join re-sent: still one.
    ingest_events(&mut m, vec![member("$j", ROOM, user, "join")]);
    assert_eq!(show(&mut m, "member_set"), row(1));

    // Presence in a room that is not protected does not count.
    ingest_events(
        &mut m,
        vec![member("$x", "!elsewhere:good.net", user, "join")],
    );
    assert_eq!(show(&mut m, "member_set"), row(1));

    ingest_events(&mut m, vec![member("$j2", ROOM2, user, "join")]);
    assert_eq!(show(&mut m, "member_set"), row(2));

    // Leave removes presence in that room.
    ingest_events(&mut m, vec![member("$l", ROOM, user, "leave")]);
    assert_eq!(show(&mut m, "member_set"), row(1));

    // Ban in the last room: no longer present anywhere, no record.
    ingest_events(&mut m, vec![member("$b", ROOM2, user, "ban")]);
    assert_eq!(show(&mut m, "member_set"), Vec::<Value>::new());

    // Knock is presence.
    ingest_events(&mut m, vec![member("$k", ROOM, user, "knock")]);
    assert_eq!(show(&mut m, "member_set"), row(1));

    // Leave and invite again in one file, then join, then leave: 1, 1, 0.
    ingest_events(
        &mut m,
        vec![
            member("$l2", ROOM, user, "leave"),
            member("$i2", ROOM, user, "invite"),
        ],
    );
    assert_eq!(show(&mut m, "member_set"), row(1));
    ingest_events(&mut m, vec![member("$j3", ROOM, user, "join")]);
    assert_eq!(show(&mut m, "member_set"), row(1));
    ingest_events(&mut m, vec![member("$l3", ROOM, user, "leave")]);
    assert_eq!(show(&mut m, "member_set"), Vec::<Value>::new());
}

// ---------------------------------------------------------------------------------------------
// Differs 3: member_matches, server rules

#[test]
fn differs_member_matches_server_rules_match_the_server_name_not_the_whole_user_id() {
    let mut m = matrix();
    standard_manifest(&mut m);
    ingest_events(
        &mut m,
        vec![
            member("$m1", ROOM, "@alice:evil.org", "join"),
            member("$m2", ROOM, "@bob:EVIL.org:8448", "join"),
            member("$m3", ROOM, "@evil.org:good.net", "join"),
            member("$m4", ROOM2, "@carol:sub.evil.org", "join"),
            member("$m5", ROOM2, "@dave:good.net", "invite"),
        ],
    );
    ingest_events(
        &mut m,
        vec![
            server_rule("$s1", LIST, "s1", "evil.org", "m.ban"),
            // Would match @bob's whole ID; the port is dropped from the server name.
            server_rule("$s2", LIST, "s2", "*:8448", "m.ban"),
            // Would match every whole user ID; a server name never starts with `@`.
            server_rule("$s3", LIST, "s3", "@*", "m.ban"),
            server_rule("$s4", LIST, "s4", "*.evil.org", "m.ban"),
            server_rule("$s5", LIST, "s5", "EVIL.ORG", "m.ban"),
            // Would match "@evil.org:good.net" as a whole ID; its server is good.net.
            server_rule("$s6", LIST, "s6", "*evil.org*", "m.ban"),
            server_rule("$s7", LIST, "s7", "good.n?t", "m.ban"),
            // A server rule with a port matches nobody: names are compared without ports.
            server_rule("$s8", LIST, "s8", "evil.org:8448", "m.ban"),
            // User rules are matched against the whole user ID, case-sensitively.
            user_ban("$u1", LIST, "u1", "*:evil.org", None),
            user_ban("$u2", LIST, "u2", "evil.org", None),
            // Room rules never match users.
            rule(
                "$r1",
                LIST,
                "m.policy.rule.room",
                "r1",
                json!({"entity": "*", "recommendation": "m.ban"}),
            ),
        ],
    );
    let rows = show_in(&mut m, "member_matches", BOT);
    let expected = keys(&[
        ("@alice:evil.org", "server", "s1"),
        ("@alice:evil.org", "server", "s5"),
        ("@alice:evil.org", "server", "s6"),
        ("@alice:evil.org", "user", "u1"),
        ("@bob:EVIL.org:8448", "server", "s1"),
        ("@bob:EVIL.org:8448", "server", "s5"),
        ("@bob:EVIL.org:8448", "server", "s6"),
        ("@carol:sub.evil.org", "server", "s4"),
        ("@carol:sub.evil.org", "server", "s6"),
        ("@dave:good.net", "server", "s7"),
        ("@evil.org:good.net", "server", "s7"),
    ]);
    assert_eq!(match_keys(&rows), expected, "{rows:#?}");
    assert_eq!(rows.len(), expected.len());
    let bob_s1 = rows
        .iter()
        .find(|r| r["user_id"] == "@bob:EVIL.org:8448" && r["state_key"] == "s1")
        .expect("bob matches s1");
    assert_eq!(
        *bob_s1,
        json!({
            "instance": BOT, "user_id": "@bob:EVIL.org:8448", "room_id": LIST, "kind": "server",
            "state_key": "s1", "event_id": "$s1", "match": "literal", "entity": "evil.org",
            "recommendation": "m.ban", "class": "ban", "reason": null,
        })
    );

    // Only user rules make bans: alice, by u1, in the room she is in.
    assert_eq!(
        show(&mut m, "member_bans"),
        vec![json!({
            "instance": BOT, "room_id": ROOM, "user_id": "@alice:evil.org",
            "rule_room_id": LIST, "rule_event_id": "$u1", "reason": NO_REASON,
        })]
    );

    // A member joining after the rules matches at once.
    ingest_events(
        &mut m,
        vec![member("$m6", ROOM, "@erin:Evil.Org:443", "join")],
    );
    let rows = show_in(&mut m, "member_matches", BOT);
    let erin: BTreeSet<_> = match_keys(&rows)
        .into_iter()
        .filter(|(u, _, _)| u == "@erin:Evil.Org:443")
        .collect();
    assert_eq!(
        erin,
        keys(&[
            ("@erin:Evil.Org:443", "server", "s1"),
            ("@erin:Evil.Org:443", "server", "s5"),
            ("@erin:Evil.Org:443", "server", "s6")
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// Differs 4: member_matches, hashed rules

#[test]
fn differs_member_matches_hashed_rules_join_directly_without_a_reversal_step() {
    let (mut m, _dir) = matrix_with_store();
    standard_manifest(&mut m);
    ingest_events(
        &mut m,
        vec![
            member("$m1", ROOM, "@spam:evil.org", "join"),
            member("$m2", ROOM, "@Eve:Evil.ORG:8448", "join"),
            member("$m3", ROOM2, "@ok:good.net", "join"),
        ],
    );
    let hashed = |id: &str, kind: &str, sk: &str, hash_field: &str, of: &str| {
        rule(
            id,
            LIST,
            &format!("m.policy.rule.{kind}"),
            sk,
            json!({ hash_field: {"sha256": sha(of)}, "recommendation": "m.ban" }),
        )
    };
    let msc = "org.matrix.msc4205.hashes";
    let rules_seq = ingest_events(
        &mut m,
        vec![
            hashed("$h1", "user", "h1", "hashes", "@spam:evil.org"),
            // User hashes are of the exact user ID: no lower-casing, port kept.
            hashed("$h2", "user", "h2", msc, "@Eve:Evil.ORG:8448"),
            hashed("$h3", "user", "h3", "hashes", "@eve:evil.org"),
            // Server hashes are of the lower-cased server name without its port.
            hashed("$h4", "server", "h4", "hashes", "evil.org"),
            hashed("$h5", "server", "h5", msc, "evil.org"),
            hashed("$h6", "server", "h6", "hashes", "Evil.ORG"),
            hashed("$h7", "server", "h7", "hashes", "evil.org:8448"),
            // Not the hash of the whole user ID.
            hashed("$h8", "server", "h8", "hashes", "@spam:evil.org"),
            // Both fields: `hashes.sha256` is the one used.
            rule(
                "$h9",
                LIST,
                "m.policy.rule.server",
                "h9",
                json!({
                    "hashes": {"sha256": sha("good.net")},
                    msc: {"sha256": sha("evil.org")},
                    "recommendation": "m.ban",
                }),
            ),
        ],
    );

    // policy_room: hashed rules have no entity and carry their hash.
    let rows = show_in(&mut m, "policy_room", LIST);
    assert_eq!(rows.len(), 9, "{rows:#?}");
    let h1 = rows.iter().find(|r| r["state_key"] == "h1").unwrap();
    assert_eq!(
        *h1,
        json!({
            "room_id": LIST, "kind": "user", "state_key": "h1", "type": "m.policy.rule.user",
            "event_id": "$h1", "sender": MOD, "match": "hashed", "entity": null,
            "sha256": sha("@spam:evil.org"), "recommendation": "m.ban", "class": "ban", "reason": null,
        })
    );
    let h2 = rows.iter().find(|r| r["state_key"] == "h2").unwrap();
    assert_eq!(h2["sha256"], json!(sha("@Eve:Evil.ORG:8448")));
    let h9 = rows.iter().find(|r| r["state_key"] == "h9").unwrap();
    assert_eq!(h9["sha256"], json!(sha("good.net")));

    // The matches exist at the Seq that added the rules: no separate reversal step.
    let expected = keys(&[
        ("@Eve:Evil.ORG:8448", "server", "h4"),
        ("@Eve:Evil.ORG:8448", "server", "h5"),
        ("@Eve:Evil.ORG:8448", "user", "h2"),
        ("@ok:good.net", "server", "h9"),
        ("@spam:evil.org", "server", "h4"),
        ("@spam:evil.org", "server", "h5"),
        ("@spam:evil.org", "user", "h1"),
    ]);
    let rows = m
        .show("member_matches", Some(BOT), Some(rules_seq))
        .unwrap();
    assert_eq!(match_keys(&rows), expected, "{rows:#?}");
    assert_eq!(rows.len(), expected.len());
    let spam_h1 = rows
        .iter()
        .find(|r| r["user_id"] == "@spam:evil.org" && r["state_key"] == "h1")
        .unwrap();
    assert_eq!(
        *spam_h1,
        json!({
            "instance": BOT, "user_id": "@spam:evil.org", "room_id": LIST, "kind": "user",
            "state_key": "h1", "event_id": "$h1", "match": "hashed", "entity": null,
            "recommendation": "m.ban", "class": "ban", "reason": null,
        })
    );

    // Hashed user rules make bans; hashed server rules never reach the ACL.
    assert_eq!(
        show(&mut m, "member_bans"),
        vec![
            json!({"instance": BOT, "room_id": ROOM, "user_id": "@Eve:Evil.ORG:8448",
                   "rule_room_id": LIST, "rule_event_id": "$h2", "reason": NO_REASON}),
            json!({"instance": BOT, "room_id": ROOM, "user_id": "@spam:evil.org",
                   "rule_room_id": LIST, "rule_event_id": "$h1", "reason": NO_REASON}),
        ]
    );
    assert_eq!(deny_of(&mut m, BOT), Vec::<String>::new());

    // A user joining after the rules matches in the same Seq.
    let joined = ingest_events(
        &mut m,
        vec![member("$m4", ROOM2, "@spam2:EVIL.org", "join")],
    );
    let rows = m.show("member_matches", Some(BOT), Some(joined)).unwrap();
    let spam2: BTreeSet<_> = match_keys(&rows)
        .into_iter()
        .filter(|(u, _, _)| u == "@spam2:EVIL.org")
        .collect();
    assert_eq!(
        spam2,
        keys(&[
            ("@spam2:EVIL.org", "server", "h4"),
            ("@spam2:EVIL.org", "server", "h5")
        ])
    );

    // Leaving, and blanking a rule, remove matches.
    ingest_events(
        &mut m,
        vec![
            member("$m5", ROOM, "@spam:evil.org", "leave"),
            rule("$h2x", LIST, "m.policy.rule.user", "h2", json!({})),
        ],
    );
    let rows = show_in(&mut m, "member_matches", BOT);
    assert_eq!(
        match_keys(&rows),
        keys(&[
            ("@Eve:Evil.ORG:8448", "server", "h4"),
            ("@Eve:Evil.ORG:8448", "server", "h5"),
            ("@ok:good.net", "server", "h9"),
            ("@spam2:EVIL.org", "server", "h4"),
            ("@spam2:EVIL.org", "server", "h5"),
        ])
    );
}

// ---------------------------------------------------------------------------------------------
// Differs 5: server_acl class filter

#[test]
fn differs_server_acl_never_denies_allow_or_unknown_recommendations() {
    let mut m = matrix();
    standard_manifest(&mut m);
    // Rules arrive one file at a time (the suite's incremental path), with the deny list
    // expected after each.
    let steps: Vec<(Value, &[&str], &str)> = vec![
        (
            server_rule("$a", LIST, "a", "a.example", "m.ban"),
            &["a.example"],
            "ban",
        ),
        (
            server_rule("$e", LIST, "e", "e.example", "org.matrix.mjolnir.allow"),
            &["a.example"],
            "allow",
        ),
        (
            server_rule("$f", LIST, "f", "f.example", "com.example.unknown"),
            &["a.example"],
            "unknown",
        ),
        (
            server_rule("$g", LIST, "g", "g.example", "M.BAN"),
            &["a.example"],
            "unknown",
        ),
        (
            server_rule("$b", LIST, "b", "b.example", "org.matrix.mjolnir.ban"),
            &["a.example", "b.example"],
            "ban",
        ),
        (
            server_rule("$c", LIST, "c", "c.example", "m.takedown"),
            &["a.example", "b.example", "c.example"],
            "takedown",
        ),
        (
            server_rule(
                "$d",
                LIST,
                "d",
                "*.d.example",
                "org.matrix.msc4204.takedown",
            ),
            &["*.d.example", "a.example", "b.example", "c.example"],
            "takedown",
        ),
        // An allow rule for a denied server does not remove it, and adds nothing.
        (
            server_rule(
                "$a2",
                LIST,
                "a-allow",
                "a.example",
                "org.matrix.mjolnir.allow",
            ),
            &["*.d.example", "a.example", "b.example", "c.example"],
            "allow",
        ),
        // The same entity banned twice is denied once.
        (
            server_rule("$a3", LIST, "a-again", "a.example", "m.ban"),
            &["*.d.example", "a.example", "b.example", "c.example"],
            "ban",
        ),
        // Hashed server rules, user rules and room rules are never in the deny list.
        (
            rule(
                "$h",
                LIST,
                "m.policy.rule.server",
                "h",
                json!({"hashes": {"sha256": sha("h.example")}, "recommendation": "m.ban"}),
            ),
            &["*.d.example", "a.example", "b.example", "c.example"],
            "ban",
        ),
        (
            user_ban("$u", LIST, "u", "@x:u.example", None),
            &["*.d.example", "a.example", "b.example", "c.example"],
            "ban",
        ),
        (
            rule(
                "$r",
                LIST,
                "m.policy.rule.room",
                "r",
                json!({"entity": "r.example", "recommendation": "m.ban"}),
            ),
            &["*.d.example", "a.example", "b.example", "c.example"],
            "ban",
        ),
        // A ban edited into an allow leaves the list; an allow edited into a ban joins it.
        (
            server_rule("$c2", LIST, "c", "c.example", "org.matrix.mjolnir.allow"),
            &["*.d.example", "a.example", "b.example"],
            "allow",
        ),
        (
            server_rule("$e2", LIST, "e", "e.example", "m.ban"),
            &["*.d.example", "a.example", "b.example", "e.example"],
            "ban",
        ),
    ];
    for (i, (event, deny, class)) in steps.into_iter().enumerate() {
        let event_id = field(&event, "event_id").to_owned();
        ingest_events(&mut m, vec![event]);
        let rule_row = show_in(&mut m, "policy_room", LIST)
            .into_iter()
            .find(|r| r["event_id"] == json!(event_id))
            .unwrap_or_else(|| panic!("step {i}: rule {event_id} is in policy_room"));
        assert_eq!(
            rule_row["class"],
            json!(class),
            "step {i}: class of {rule_row}"
        );
        assert_eq!(
            show(&mut m, "server_acl"),
            vec![
                json!({"instance": BOT, "allow": ["*"], "deny": deny, "allow_ip_literals": false})
            ],
            "step {i} ({event_id})"
        );
    }
}
