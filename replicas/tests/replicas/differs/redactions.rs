//! Redactions: of current and non-current events, top-level and in content.

use super::*;

// Redactions

fn redaction(
    event_id: &str,
    room: &str,
    top_level: Option<&str>,
    in_content: Option<&str>,
) -> Value {
    let mut ev = json!({"event_id": event_id, "room_id": room, "type": "m.room.redaction", "sender": MOD, "content": {}});
    if let Some(t) = top_level {
        ev["redacts"] = json!(t);
    }
    if let Some(t) = in_content {
        ev["content"]["redacts"] = json!(t);
    }
    ev
}

#[test]
fn redaction_by_later_event_top_level_and_content_redacts() {
    let mut m = matrix();
    standard_manifest(&mut m);
    let user = "@mallory:evil.org";
    ingest_events(
        &mut m,
        vec![
            state(
                "$m1",
                ROOM,
                "m.room.member",
                user,
                user,
                json!({"membership": "join", "displayname": "Mallory", "avatar_url": "mxc://x/y"}),
            ),
            user_ban("$r1", LIST, "r1", user, Some("spam")),
            state(
                "$pl",
                ROOM,
                "m.room.power_levels",
                "",
                MOD,
                json!({"ban": 50, "users": {MOD: 100}, "notifications": {"room": 50}, "state_default": 50}),
            ),
            state(
                "$jr",
                ROOM,
                "m.room.join_rules",
                "",
                MOD,
                json!({"join_rule": "restricted", "allow": [], "x": 1}),
            ),
            state(
                "$cr",
                ROOM,
                "m.room.create",
                "",
                MOD,
                json!({"room_version": "11", "creator": MOD, "x": 1}),
            ),
            state(
                "$tp",
                ROOM,
                "m.room.topic",
                "",
                MOD,
                json!({"topic": "hello"}),
            ),
        ],
    );
    assert_eq!(show(&mut m, "member_bans").len(), 1);

    // Top-level `redacts` (room versions before 11).
    ingest_events(&mut m, vec![redaction("$x1", LIST, Some("$r1"), None)]);
    assert_eq!(
        show_in(&mut m, "room_state", LIST),
        vec![json!({
            "room_id": LIST, "type": "m.policy.rule.user", "state_key": "r1", "event_id": "$r1",
            "sender": MOD, "origin_server_ts": 1_700_000_000_000_i64, "content": {}, "redacted": true,
        })]
    );
    assert_eq!(show(&mut m, "policy_room"), Vec::<Value>::new());
    assert_eq!(show(&mut m, "member_bans"), Vec::<Value>::new());
    assert_eq!(show(&mut m, "rejects"), Vec::<Value>::new());

    // `content.redacts` (room version 11), several in one file.
    ingest_events(
        &mut m,
        vec![
            redaction("$x2", ROOM, None, Some("$m1")),
            redaction("$x3", ROOM, None, Some("$pl")),
            redaction("$x4", ROOM, None, Some("$jr")),
            redaction("$x5", ROOM, None, Some("$cr")),
            redaction("$x6", ROOM, Some("$tp"), Some("$tp")),
        ],
    );
    let by_type = |m: &mut Matrix, ty: &str| {
        show_in(m, "room_state", ROOM)
            .into_iter()
            .find(|r| r["type"] == ty)
            .unwrap_or_else(|| panic!("{ty} in room_state"))
    };
    let mem = by_type(&mut m, "m.room.member");
    assert_eq!(
        mem,
        json!({
            "room_id": ROOM, "type": "m.room.member", "state_key": user, "event_id": "$m1",
            "sender": user, "origin_server_ts": 1_700_000_000_000_i64,
            "content": {"membership": "join"}, "redacted": true,
        })
    );
    assert_eq!(
        show_in(&mut m, "room_members", ROOM),
        vec![json!({"room_id": ROOM, "user_id": user, "membership": "join", "displayname": null})]
    );
    let pl = by_type(&mut m, "m.room.power_levels");
    assert_eq!(
        pl["content"],
        json!({"ban": 50, "users": {MOD: 100}, "state_default": 50})
    );
    assert_eq!(pl["redacted"], json!(true));
    let jr = by_type(&mut m, "m.room.join_rules");
    assert_eq!(
        jr["content"],
        json!({"join_rule": "restricted", "allow": []})
    );
    let cr = by_type(&mut m, "m.room.create");
    assert_eq!(
        cr["content"],
        json!({"room_version": "11", "creator": MOD, "x": 1})
    );
    assert_eq!(cr["redacted"], json!(true));
    // Both forms at once, naming the same event.
    let tp = by_type(&mut m, "m.room.topic");
    assert_eq!(
        (tp["content"].clone(), tp["redacted"].clone()),
        (json!({}), json!(true))
    );

    // An event and its redaction in one file, in that order: redacted. The other order: the
    // redaction came first, so it redacts nothing.
    ingest_events(
        &mut m,
        vec![
            user_ban("$r2", LIST, "r2", "@a:x.org", None),
            redaction("$x7", LIST, Some("$r2"), None),
        ],
    );
    ingest_events(
        &mut m,
        vec![
            redaction("$x8", LIST, Some("$r3"), None),
            user_ban("$r3", LIST, "r3", "@b:x.org", None),
        ],
    );
    let rows = show_in(&mut m, "policy_room", LIST);
    let got: Vec<&str> = rows.iter().map(|r| field(r, "event_id")).collect();
    assert_eq!(got, vec!["$r3"]);

    // A redaction in another room does not touch the event.
    ingest_events(&mut m, vec![redaction("$x9", ROOM2, Some("$r3"), None)]);
    assert_eq!(show_in(&mut m, "policy_room", LIST).len(), 1);
}

#[test]
fn redaction_of_a_non_current_event_does_nothing() {
    let mut m = matrix();
    ingest_events(
        &mut m,
        vec![user_ban("$v1", LIST, "s", "@a:x.org", Some("one"))],
    );
    ingest_events(
        &mut m,
        vec![user_ban("$v2", LIST, "s", "@b:x.org", Some("two"))],
    );
    let before_state = show(&mut m, "room_state");
    let before_rules = show(&mut m, "policy_room");
    assert_eq!(before_rules.len(), 1);
    assert_eq!(field(&before_rules[0], "event_id"), "$v2");

    ingest_events(&mut m, vec![redaction("$x1", LIST, Some("$v1"), None)]);
    assert_eq!(show(&mut m, "room_state"), before_state);
    assert_eq!(show(&mut m, "policy_room"), before_rules);

    // A redaction of an event never seen does nothing either.
    ingest_events(&mut m, vec![redaction("$x2", LIST, None, Some("$unknown"))]);
    assert_eq!(show(&mut m, "room_state"), before_state);

    // Redact the current one, then a new event at the key is unredacted again.
    ingest_events(&mut m, vec![redaction("$x3", LIST, Some("$v2"), None)]);
    assert_eq!(show(&mut m, "policy_room"), Vec::<Value>::new());
    ingest_events(&mut m, vec![user_ban("$v3", LIST, "s", "@c:x.org", None)]);
    let rows = show(&mut m, "room_state");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (field(&rows[0], "event_id"), rows[0]["redacted"].clone()),
        ("$v3", json!(false))
    );
    assert_eq!(
        rows[0]["content"],
        json!({"entity": "@c:x.org", "recommendation": "m.ban"})
    );
}

#[test]
fn unsigned_redacted_because_marks_the_event_redacted() {
    let mut m = matrix();
    let because = json!({"redacted_because": {"type": "m.room.redaction", "event_id": "$r", "sender": MOD, "content": {}}});
    let mut mem = state(
        "$m1",
        ROOM,
        "m.room.member",
        "@u:x.org",
        "@u:x.org",
        json!({"membership": "invite", "displayname": "U", "join_authorised_via_users_server": "@a:x.org"}),
    );
    mem["unsigned"] = because.clone();
    let mut rl = user_ban("$rl", LIST, "r", "@u:x.org", Some("gone"));
    rl["unsigned"] = because.clone();
    let mut jr = state(
        "$jr",
        ROOM,
        "m.room.join_rules",
        "",
        MOD,
        json!({"join_rule": "public", "extra": true}),
    );
    jr["unsigned"] = because;
    ingest_events(&mut m, vec![mem, rl, jr]);

    assert_eq!(
        show_in(&mut m, "room_state", ROOM),
        vec![
            json!({"room_id": ROOM, "type": "m.room.join_rules", "state_key": "", "event_id": "$jr", "sender": MOD,
                   "origin_server_ts": 1_700_000_000_000_i64, "content": {"join_rule": "public"}, "redacted": true}),
            json!({"room_id": ROOM, "type": "m.room.member", "state_key": "@u:x.org", "event_id": "$m1",
                   "sender": "@u:x.org", "origin_server_ts": 1_700_000_000_000_i64,
                   "content": {"membership": "invite", "join_authorised_via_users_server": "@a:x.org"},
                   "redacted": true}),
        ]
    );
    assert_eq!(
        show(&mut m, "room_members"),
        vec![
            json!({"room_id": ROOM, "user_id": "@u:x.org", "membership": "invite", "displayname": null})
        ]
    );
    let rule_state = show_in(&mut m, "room_state", LIST);
    assert_eq!(
        (
            rule_state[0]["content"].clone(),
            rule_state[0]["redacted"].clone()
        ),
        (json!({}), json!(true))
    );
    assert_eq!(show(&mut m, "policy_room"), Vec::<Value>::new());
    assert_eq!(show(&mut m, "rejects"), Vec::<Value>::new());
}

// ---------------------------------------------------------------------------------------------
// server_acl: an instance never bans its own server

#[test]
fn server_acl_never_denies_the_instance_own_server_with_port_and_case() {
    let mut m = matrix();
    let own = "@bot:Evil.ORG:8448";
    ingest_manifest(
        &mut m,
        json!([{"id": own, "watch": [LIST], "protect": [ROOM]}, {"id": BOT, "watch": [LIST]}]),
    );
    ingest_events(
        &mut m,
        [
            ("1", "evil.org"),
            ("2", "EVIL.org"),
            ("3", "*.org"),
            ("4", "ev?l.*"),
            ("5", "*"),
            ("6", "sub.evil.org"),
            ("7", "good.net"),
            ("8", "other.example"),
        ]
        .iter()
        .map(|(sk, entity)| server_rule(&format!("${sk}"), LIST, sk, entity, "m.ban"))
        .collect(),
    );
    assert_eq!(
        deny_of(&mut m, own),
        vec!["good.net", "other.example", "sub.evil.org"]
    );
    // Another instance (on good.net) watching the same list: only its own server and `*` go.
    assert_eq!(
        deny_of(&mut m, BOT),
        vec![
            "*.org",
            "EVIL.org",
            "ev?l.*",
            "evil.org",
            "other.example",
            "sub.evil.org"
        ]
    );
    assert_eq!(
        show(&mut m, "server_acl"),
        vec![
            json!({"instance": own, "allow": ["*"], "deny": ["good.net", "other.example", "sub.evil.org"], "allow_ip_literals": false}),
            json!({"instance": BOT, "allow": ["*"],
                   "deny": ["*.org", "EVIL.org", "ev?l.*", "evil.org", "other.example", "sub.evil.org"],
                   "allow_ip_literals": false}),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// acl_sync

#[test]
fn acl_sync_compares_sets_and_treats_missing_allow_ip_literals_as_true() {
    let (mut m, _dir) = matrix_with_store();
    let rooms = [
        "!r1:good.net",
        "!r2:good.net",
        "!r3:good.net",
        "!r4:good.net",
        "!r5:good.net",
        "!r6:good.net",
    ];
    ingest_manifest(
        &mut m,
        json!([{"id": BOT, "watch": [LIST], "protect": rooms}]),
    );
    // No rules yet: the intent is an empty deny list, and every room lacks an ACL.
    assert_eq!(
        show(&mut m, "server_acl"),
        vec![json!({"instance": BOT, "allow": ["*"], "deny": [], "allow_ip_literals": false})]
    );
    assert!(sync_of(&mut m, BOT).iter().all(|(_, s)| !s));

    ingest_events(
        &mut m,
        vec![
            server_rule("$s1", LIST, "s1", "evil.org", "m.ban"),
            server_rule("$s2", LIST, "s2", "*.evil.org", "m.ban"),
        ],
    );
    ingest_events(
        &mut m,
        vec![
            // Other order, a duplicate: equal as sets.
            acl(
                "$a1",
                rooms[0],
                json!({"allow": ["*"], "deny": ["evil.org", "*.evil.org", "evil.org"], "allow_ip_literals": false}),
            ),
            // allow_ip_literals missing = true: out of sync.
            acl(
                "$a2",
                rooms[1],
                json!({"allow": ["*"], "deny": ["*.evil.org", "evil.org"]}),
            ),
            acl(
                "$a3",
                rooms[2],
                json!({"allow": ["*"], "deny": ["*.evil.org", "evil.org"], "allow_ip_literals": true}),
            ),
            // rooms[3]: no ACL at all.
            acl(
                "$a5",
                rooms[4],
                json!({"allow": ["*"], "deny": ["*.evil.org", "evil.org", "more.example"], "allow_ip_literals": false}),
            ),
            acl(
                "$a6",
                rooms[5],
                json!({"allow": ["*", "good.net"], "deny": ["*.evil.org", "evil.org"], "allow_ip_literals": false}),
            ),
        ],
    );
    assert_eq!(
        sync_of(&mut m, BOT),
        syncs(&[
            (rooms[0], true),
            (rooms[1], false),
            (rooms[2], false),
            (rooms[3], false),
            (rooms[4], false),
            (rooms[5], false),
        ])
    );
    assert_eq!(
        show_in(&mut m, "acl_sync", BOT)[0],
        json!({"instance": BOT, "room_id": rooms[0], "in_sync": true})
    );

    // Fix rooms[1]: now in sync.
    ingest_events(
        &mut m,
        vec![acl(
            "$a2b",
            rooms[1],
            json!({"allow": ["*"], "deny": ["*.evil.org", "evil.org"], "allow_ip_literals": false}),
        )],
    );
    assert_eq!(
        sync_of(&mut m, BOT)[..2],
        syncs(&[(rooms[0], true), (rooms[1], true)])[..]
    );

    // A new ban rule: every room falls out of sync.
    let added = ingest_events(
        &mut m,
        vec![server_rule("$s3", LIST, "s3", "more.example", "m.ban")],
    );
    assert_eq!(
        sync_of(&mut m, BOT),
        syncs(&[
            (rooms[0], false),
            (rooms[1], false),
            (rooms[2], false),
            (rooms[3], false),
            (rooms[4], true),
            (rooms[5], false),
        ])
    );

    // A rule and the matching ACL in one file: in sync at that very Seq (both branches).
    let both = ingest_events(
        &mut m,
        vec![
            server_rule("$s4", LIST, "s4", "fourth.example", "m.ban"),
            acl(
                "$a1b",
                rooms[0],
                json!({"allow": ["*"], "deny": ["*.evil.org", "evil.org", "fourth.example", "more.example"], "allow_ip_literals": false}),
            ),
        ],
    );
    let at = |m: &mut Matrix, seq: Seq| -> Vec<(String, bool)> {
        m.show("acl_sync", Some(BOT), Some(seq))
            .unwrap()
            .iter()
            .map(|r| {
                (
                    field(r, "room_id").to_owned(),
                    r["in_sync"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        at(&mut m, both),
        syncs(&[
            (rooms[0], true),
            (rooms[1], false),
            (rooms[2], false),
            (rooms[3], false),
            (rooms[4], false),
            (rooms[5], false),
        ])
    );
    assert_eq!(
        at(&mut m, added)[4],
        (rooms[4].to_owned(), true),
        "history is kept"
    );
}

// ---------------------------------------------------------------------------------------------
// member_bans

/// `(rule_room_id, rule_event_id, reason)` of each `member_bans` row of `user`.
fn chosen_rules<'a>(rows: &'a [Value], user: &str) -> Vec<(&'a str, &'a str, &'a str)> {
    rows.iter()
        .filter(|r| r["user_id"] == user)
        .map(|r| {
            (
                field(r, "rule_room_id"),
                field(r, "rule_event_id"),
                field(r, "reason"),
            )
        })
        .collect()
}

#[test]
fn member_bans_reason_default_and_smallest_rule_room_and_event_id() {
    let mut m = matrix();
    let list_a = "!a-list:good.net";
    let list_b = "!b-list:good.net";
    ingest_manifest(
        &mut m,
        json!([{"id": BOT, "watch": [list_b, list_a], "protect": [ROOM, ROOM2]}]),
    );
    ingest_events(
        &mut m,
        vec![
            member("$1", ROOM, "@spam:evil.org", "join"),
            member("$2", ROOM2, "@spam:evil.org", "leave"),
            member("$3", ROOM, "@banned:evil.org", "ban"),
            member("$4", ROOM2, "@banned:evil.org", "join"),
            member("$5", ROOM, "@gone:evil.org", "leave"),
            member("$6", ROOM, "@nr:evil.org", "join"),
            member("$7", ROOM, "@srv:evil.org", "join"),
            member("$8", ROOM, "@allowed:evil.org", "join"),
        ],
    );
    ingest_events(
        &mut m,
        vec![
            user_ban("$b1", list_b, "b1", "@spam:evil.org", Some("from b")),
            rule(
                "$b2",
                list_b,
                "m.policy.rule.user",
                "b2",
                json!({"entity": "@banned:evil.org", "recommendation": "m.takedown", "reason": "takedown!"}),
            ),
            // A non-string reason is no reason.
            rule(
                "$b3",
                list_b,
                "m.policy.rule.user",
                "b3",
                json!({"entity": "@nr:evil.org", "recommendation": "m.ban", "reason": 7}),
            ),
            user_ban("$b4", list_b, "b4", "@gone:evil.org", Some("gone")),
            user_ban("$2", list_a, "a2", "@spam:*", Some("a two")),
            // "$10" < "$2" as strings.
            rule(
                "$10",
                list_a,
                "m.policy.rule.user",
                "a10",
                json!({"entity": "@sp*:evil.org", "recommendation": "org.matrix.mjolnir.ban"}),
            ),
            server_rule("$s", list_a, "s", "evil.org", "m.ban"),
            rule(
                "$al",
                list_a,
                "m.policy.rule.user",
                "al",
                json!({"entity": "@allowed:evil.org", "recommendation": "org.matrix.mjolnir.allow", "reason": "ok"}),
            ),
            rule(
                "$un",
                list_a,
                "m.policy.rule.user",
                "un",
                json!({"entity": "@allowed:evil.org", "recommendation": "com.example.watch"}),
            ),
        ],
    );
    let ban = |room: &str, user: &str, rule_room: &str, rule_event: &str, reason: &str| {
        json!({"instance": BOT, "room_id": room, "user_id": user, "rule_room_id": rule_room,
               "rule_event_id": rule_event, "reason": reason})
    };
    assert_eq!(
        show_in(&mut m, "member_bans", BOT),
        vec![
            // "!room2:..." sorts before "!room:..." ('2' < ':').
            ban(ROOM2, "@banned:evil.org", list_b, "$b2", "takedown!"),
            // Left ROOM2 but present in ROOM: the intent covers ROOM2 too.
            ban(ROOM2, "@spam:evil.org", list_a, "$10", NO_REASON),
            ban(ROOM, "@nr:evil.org", list_b, "$b3", NO_REASON),
            ban(ROOM, "@spam:evil.org", list_a, "$10", NO_REASON),
        ]
    );

    // Remove the chosen rule: the next smallest takes over.
    ingest_events(
        &mut m,
        vec![rule("$10x", list_a, "m.policy.rule.user", "a10", json!({}))],
    );
    let rows = show_in(&mut m, "member_bans", BOT);
    let spam = chosen_rules(&rows, "@spam:evil.org");
    assert_eq!(spam, vec![(list_a, "$2", "a two"), (list_a, "$2", "a two")]);
    ingest_events(
        &mut m,
        vec![rule("$2x", list_a, "m.policy.rule.user", "a2", json!({}))],
    );
    let rows = show_in(&mut m, "member_bans", BOT);
    let spam = chosen_rules(&rows, "@spam:evil.org");
    assert_eq!(
        spam,
        vec![(list_b, "$b1", "from b"), (list_b, "$b1", "from b")]
    );

    // Banned in ROOM: no longer present anywhere, so no intent at all for them.
    ingest_events(&mut m, vec![member("$9", ROOM, "@spam:evil.org", "ban")]);
    assert_eq!(
        show_in(&mut m, "member_bans", BOT),
        vec![
            ban(ROOM2, "@banned:evil.org", list_b, "$b2", "takedown!"),
            ban(ROOM, "@nr:evil.org", list_b, "$b3", NO_REASON)
        ]
    );
}

// ---------------------------------------------------------------------------------------------

#[test]
fn one_event_id_current_at_several_keys_is_redacted_at_each_until_replaced() {
    // Hostile or broken exports reuse an event ID at several state keys of one room: a
    // redaction of it redacts every key where it is current, and a key where it was replaced
    // is left alone.
    let (mut m, dir) = matrix_with_store();
    ingest_events(
        &mut m,
        vec![
            user_ban("$dup", LIST, "a", "@a:x.org", Some("one")),
            user_ban("$dup", LIST, "b", "@b:x.org", Some("two")),
            user_ban("$dup", LIST, "c", "@c:x.org", Some("three")),
        ],
    );
    assert_eq!(show(&mut m, "policy_room").len(), 3);
    // Key `a` gets another event: `$dup` stays current at `b` and `c` only.
    ingest_events(
        &mut m,
        vec![user_ban("$new", LIST, "a", "@a:x.org", Some("new"))],
    );
    ingest_events(&mut m, vec![redaction("$x1", LIST, Some("$dup"), None)]);
    let rules = show(&mut m, "policy_room");
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(field(&rules[0], "event_id"), "$new");
    let rows = show(&mut m, "room_state");
    let redacted: Vec<(&str, &Value)> = rows
        .iter()
        .map(|r| (field(r, "state_key"), &r["redacted"]))
        .collect();
    assert_eq!(
        redacted,
        vec![
            ("a", &json!(false)),
            ("b", &json!(true)),
            ("c", &json!(true))
        ]
    );
    // The ingest state is rebuilt the same way after a restart (from the revisions).
    drop(m);
    let mut m = Matrix::start(RuntimeConfig::new().with_store(dir.path().join("store.redb")))
        .expect("runtime restarts");
    ingest_events(
        &mut m,
        vec![user_ban("$dup", LIST, "d", "@d:x.org", Some("four"))],
    );
    ingest_events(&mut m, vec![redaction("$x2", LIST, Some("$dup"), None)]);
    assert_eq!(show(&mut m, "policy_room").len(), 1);
}
