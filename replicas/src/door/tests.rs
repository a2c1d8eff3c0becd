//! The index against a scan: random changes of rules and manifests, and every check equal to
//! the choice a scan of every rule makes.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::{DoorIndex, rule_of};
use crate::rules::sha256_base64;

const USERS: [&str; 8] = [
    "@alice:good.org",
    "@spam1:evil.org",
    "@spam2:evil.org",
    "@bot:sub.evil.org",
    "@spammer:Other.NET",
    "@x:good.org:8448",
    "@ab:a.b.c.d",
    "@stranger:nowhere.example",
];

const ENTITIES: [(&str, &str); 12] = [
    ("user", "@spam1:evil.org"),
    ("user", "@spam*:evil.org"),
    ("user", "@*:evil.org"),
    ("user", "@spa?*"),
    ("user", "*"),
    ("user", "@alice:good.org"),
    ("server", "evil.org"),
    ("server", "*.evil.org"),
    ("server", "other.net"),
    ("server", "good.*"),
    ("server", "*"),
    ("user", "@bot:sub.evil.org"),
];

const RECOMMENDATIONS: [&str; 4] = ["m.ban", "org.matrix.mjolnir.ban", "m.takedown", "m.allow"];

fn rule(rng: &mut StdRng, list: usize, slot: usize, event: u32) -> Value {
    let (kind, entity) = ENTITIES[rng.random_range(0..ENTITIES.len())];
    let hashed = rng.random_bool(0.2) && !entity.contains('*') && !entity.contains('?');
    let matcher = match () {
        _ if hashed => "hashed",
        _ if entity.contains(['*', '?']) => "glob",
        _ => "literal",
    };
    let recommendation = RECOMMENDATIONS[rng.random_range(0..RECOMMENDATIONS.len())];
    let class = crate::record::Class::of(recommendation).as_str();
    json!({
        "room_id": format!("!list{list}:lists.org"),
        "kind": kind,
        "state_key": format!("slot{slot}"),
        "event_id": format!("$e{event:05}"),
        "match": matcher,
        "entity": if hashed { Value::Null } else { json!(entity) },
        "sha256": if hashed { json!(sha256_base64(entity)) } else { Value::Null },
        "recommendation": recommendation,
        "class": class,
        "reason": format!("reason {event}"),
    })
}

/// The refusal a scan of every rule chooses: `(instance, event_id)`.
fn scan(
    rules: &BTreeMap<(usize, usize), Value>,
    manifest: &BTreeMap<(String, &str, String), ()>,
    user: &str,
    room: &str,
) -> Option<(String, String)> {
    let mut best: Option<((String, String), String)> = None;
    for (instance, _, _) in manifest
        .keys()
        .filter(|(_, r, x)| *r == "protect" && x == room)
    {
        for (_, _, list) in manifest
            .keys()
            .filter(|(i, r, _)| i == instance && *r == "watch")
        {
            for r in rules.values().filter(|r| r["room_id"] == *list.as_str()) {
                let Some(rule) = rule_of(r) else { continue };
                if !rule.matches(user) {
                    continue;
                }
                let candidate = (rule.order.clone(), instance.clone());
                if best.as_ref().is_none_or(|b| candidate < *b) {
                    best = Some(candidate);
                }
            }
        }
    }
    best.map(|((_, event), instance)| (instance, event))
}

#[test]
fn every_check_equals_a_scan_of_the_rules() {
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut index = DoorIndex::new();
        let mut rules: BTreeMap<(usize, usize), Value> = BTreeMap::new();
        let mut manifest: BTreeMap<(String, &str, String), ()> = BTreeMap::new();
        let mut event = 0;
        for _ in 0..300 {
            match rng.random_range(0..10) {
                // A rule set, replaced or removed, the removal and insertion in either order.
                0..=5 => {
                    let key = (rng.random_range(0..3), rng.random_range(0..6));
                    let old = rules.remove(&key);
                    let new = rng.random_bool(0.8).then(|| {
                        event = rng.random_range(0..100_000);
                        rule(&mut rng, key.0, key.1, event)
                    });
                    let insert_first = rng.random_bool(0.5);
                    if insert_first && let Some(n) = &new {
                        index.apply("policy_room", n, 1);
                    }
                    if let Some(o) = &old {
                        index.apply("policy_room", o, -1);
                    }
                    if !insert_first && let Some(n) = &new {
                        index.apply("policy_room", n, 1);
                    }
                    if let Some(n) = new {
                        rules.insert(key, n);
                    }
                }
                // A manifest record added or removed.
                _ => {
                    let instance = format!("@bot{}:good.org", rng.random_range(0..4));
                    let (relation, room) = match rng.random_bool(0.5) {
                        true => (
                            "watch",
                            format!("!list{}:lists.org", rng.random_range(0..3)),
                        ),
                        false => ("protect", format!("!room{}", rng.random_range(0..2))),
                    };
                    let record =
                        json!({"instance": instance, "relation": relation, "room_id": room});
                    let key = (instance, relation, room);
                    if manifest.remove(&key).is_some() {
                        index.apply("instances", &record, -1);
                    } else {
                        manifest.insert(key, ());
                        index.apply("instances", &record, 1);
                    }
                }
            }
            for user in USERS {
                for room in ["!room0", "!room1"] {
                    let got = index.check(user, room).map(|r| {
                        (
                            r.instance,
                            r.rule["room_id"].clone(),
                            r.rule["state_key"].clone(),
                        )
                    });
                    let want = scan(&rules, &manifest, user, room).map(|(instance, event)| {
                        let r = rules.values().find(|r| r["event_id"] == *event.as_str());
                        let r = r.expect("the chosen rule");
                        (instance, r["room_id"].clone(), r["state_key"].clone())
                    });
                    assert_eq!(got, want, "seed {seed}, {user} in {room}");
                }
            }
        }
    }
}
