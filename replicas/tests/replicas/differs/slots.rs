//! The rule slot: which event type of a `(room, kind, state_key)` slot is in force.

use super::*;

// ---------------------------------------------------------------------------------------------
// The rule slot

#[test]
fn slot_newest_type_wins_even_when_blank() {
    let mut m = matrix();
    let ban = |entity: &str| json!({"entity": entity, "recommendation": "m.ban"});
    ingest_events(
        &mut m,
        vec![rule("$old", LIST, "m.room.rule.user", "s", ban("@a:x.org"))],
    );
    let rows = show_in(&mut m, "policy_room", LIST);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (field(&rows[0], "type"), field(&rows[0], "entity")),
        ("m.room.rule.user", "@a:x.org")
    );

    // An older type arriving later does not take the slot.
    ingest_events(
        &mut m,
        vec![rule(
            "$older",
            LIST,
            "org.matrix.mjolnir.rule.user",
            "s",
            ban("@b:x.org"),
        )],
    );
    let rows = show_in(&mut m, "policy_room", LIST);
    assert_eq!(rows.len(), 1);
    assert_eq!(field(&rows[0], "event_id"), "$old");

    // The newest type with empty content empties the slot, though the older ones have content.
    ingest_events(
        &mut m,
        vec![rule("$blank", LIST, "m.policy.rule.user", "s", json!({}))],
    );
    assert_eq!(show_in(&mut m, "policy_room", LIST), Vec::<Value>::new());
    assert_eq!(
        show_in(&mut m, "room_state", LIST).len(),
        3,
        "all three events stay in room_state"
    );
    assert_eq!(
        show(&mut m, "rejects"),
        Vec::<Value>::new(),
        "a blank rule is not a reject"
    );

    // The newest type with content takes the slot.
    ingest_events(
        &mut m,
        vec![rule(
            "$new",
            LIST,
            "m.policy.rule.user",
            "s",
            ban("@c:x.org"),
        )],
    );
    assert_eq!(
        show_in(&mut m, "policy_room", LIST),
        vec![json!({
            "room_id": LIST, "kind": "user", "state_key": "s", "type": "m.policy.rule.user",
            "event_id": "$new", "sender": MOD, "match": "literal", "entity": "@c:x.org",
            "sha256": null, "recommendation": "m.ban", "class": "ban", "reason": null,
        })]
    );

    // The newest type, invalid: the slot is empty (no fallback) and the event is a reject.
    ingest_events(
        &mut m,
        vec![rule(
            "$bad",
            LIST,
            "m.policy.rule.user",
            "s",
            json!({"entity": 5, "recommendation": "m.ban"}),
        )],
    );
    assert_eq!(show_in(&mut m, "policy_room", LIST), Vec::<Value>::new());
    let rejects = show(&mut m, "rejects");
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    let mut reject = rejects[0].clone();
    reject.as_object_mut().unwrap().remove("reason");
    assert_eq!(
        reject,
        json!({"room_id": LIST, "event_id": "$bad", "type": "m.policy.rule.user", "state_key": "s", "replica": "policy_room"})
    );

    // Only the slot's event is parsed: an invalid older-type event under a valid newer one is
    // neither a rule nor a reject. Kinds have separate slots at the same state_key.
    ingest_events(
        &mut m,
        vec![
            rule(
                "$t1",
                LIST,
                "org.matrix.mjolnir.rule.user",
                "t",
                json!({"recommendation": "m.ban"}),
            ),
            rule("$t2", LIST, "m.room.rule.user", "t", ban("@t:x.org")),
            rule("$srv", LIST, "m.policy.rule.server", "s", ban("x.org")),
            // A type that is not a rule type.
            rule("$not", LIST, "m.policy.rule.users", "u", ban("@u:x.org")),
        ],
    );
    let rows = show_in(&mut m, "policy_room", LIST);
    let got: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                field(r, "kind"),
                field(r, "state_key"),
                field(r, "event_id"),
            )
        })
        .collect();
    assert_eq!(got, vec![("server", "s", "$srv"), ("user", "t", "$t2")]);
    assert_eq!(show(&mut m, "rejects").len(), 1, "still only $bad");

    // A redacted newest-type event also empties the slot.
    ingest_events(
        &mut m,
        vec![
            rule("$w1", LIST, "m.room.rule.user", "w", ban("@w:x.org")),
            json!({
                "event_id": "$w2", "room_id": LIST, "type": "m.policy.rule.user", "state_key": "w",
                "sender": MOD, "content": ban("@w2:x.org"),
                "unsigned": {"redacted_because": {"type": "m.room.redaction", "event_id": "$rw", "sender": MOD, "content": {}}},
            }),
        ],
    );
    let rows = show_in(&mut m, "policy_room", LIST);
    assert!(rows.iter().all(|r| r["state_key"] != "w"), "{rows:?}");
}

// ---------------------------------------------------------------------------------------------
