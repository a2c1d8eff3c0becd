//! A seeded random workload of source deltas over a small universe of users, servers, rooms and
//! instances, so that rules, memberships and ACLs collide often.
//!
//! The universe has case and port variants of the same server (`evil.org`, `Evil.ORG`,
//! `evil.org:8448`), a room that is both a policy room and protected, rules of all three type
//! generations, literal, glob and hashed entities, invalid rules and memberships, blanked rules,
//! ACLs that match an instance's intent and ACLs that do not, redactions of current and
//! non-current events, re-sent events and manifests that add, change and remove instances.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use super::oracle::{Item, Oracle, sha256_b64};

const USERS: [&str; 10] = [
    "@u1:evil.org",
    "@U1:Evil.ORG",
    "@x:evil.org:8448",
    "@Spam2:good.net",
    "@spam2:good.net",
    "@alice:good.net",
    "@bob:spam.example",
    "@ü1:good.net",
    "@mallory:sub.evil.org",
    "@:evil.org",
];

/// Rooms that instances protect.
const PROTECTABLE: [&str; 4] = ["!a:good.net", "!b:evil.org", "!both:good.net", "!v12room"];
/// Rooms that instances watch (`!both:good.net` is also protectable).
const POLICY_ROOMS: [&str; 3] = ["!list:good.net", "!both:good.net", "!list2:Evil.ORG"];
const ROOMS: [&str; 6] = [
    "!a:good.net",
    "!b:evil.org",
    "!both:good.net",
    "!v12room",
    "!list:good.net",
    "!list2:Evil.ORG",
];

pub const INSTANCES: [&str; 3] = [
    "@draupnir:good.net",
    "@bot:Evil.ORG:8448",
    "@d4a:spam.example",
];

const USER_LITERALS: [&str; 5] = [
    "@nobody:good.net",
    "@u1:EVIL.ORG",
    "@SPAM2:good.net",
    "",
    "@x:evil.org",
];
const USER_GLOBS: [&str; 9] = [
    "@u*:evil.org",
    "@*:evil.org:8448",
    "@?1:good.net",
    "*",
    "@spam?:good.net",
    "@Spam*",
    "*:evil.org",
    "@*a*a*:*",
    "@?:evil.org",
];
const SERVER_LITERALS: [&str; 9] = [
    "evil.org",
    "EVIL.org",
    "evil.org:8448",
    "good.net",
    "spam.example",
    "sub.evil.org",
    "",
    "Good.Net",
    "other.example",
];
const SERVER_GLOBS: [&str; 8] = [
    "*.evil.org",
    "*evil.org",
    "*",
    "Evil.*",
    "good.n?t",
    "?pam.example",
    "*.*",
    "evil.org:*",
];
const SERVER_HASHED: [&str; 6] = [
    "evil.org",
    "good.net",
    "spam.example",
    "sub.evil.org",
    "Evil.ORG",
    "evil.org:8448",
];
const ROOM_ENTITIES: [&str; 5] = [
    "!a:good.net",
    "!b:evil.org",
    "!*:good.net",
    "*",
    "#room:evil.org",
];
const REASONS: [&str; 4] = ["spam", "abuse", "ban evasion", ""];
const RULE_KEYS: [&str; 4] = ["r1", "r2", "r3", "rule:evil"];

/// A workload of `deltas` source deltas, determined by `seed`.
pub fn random_workload(seed: u64, deltas: usize) -> Vec<Vec<Item>> {
    let mut generator = Generator {
        rng: StdRng::seed_from_u64(seed),
        next_event: 0,
        history: Vec::new(),
        protect: BTreeMap::new(),
        intents: BTreeMap::new(),
        oracle: Oracle::new(),
    };
    (0..deltas).map(|seq| generator.delta(seq == 0)).collect()
}

struct Generator {
    rng: StdRng,
    next_event: u64,
    /// Every event generated so far, for redactions and re-sends.
    history: Vec<Value>,
    /// The protected rooms of the live instances (as the manifests so far set them).
    protect: BTreeMap<String, Vec<String>>,
    /// The `server_acl` intent (deny list) of each instance, as of the previous delta.
    intents: BTreeMap<String, Vec<String>>,
    /// Tracks the state, to know the intents.
    oracle: Oracle,
}

impl Generator {
    fn delta(&mut self, first: bool) -> Vec<Item> {
        let mut items = Vec::new();
        if first {
            items.push(self.manifest(true));
        }
        let count = self.rng.random_range(1..=8);
        for _ in 0..count {
            let item = match self.rng.random_range(0..100) {
                0..35 => Item::Event(self.member_event()),
                35..65 => Item::Event(self.rule_event()),
                65..74 => Item::Event(self.acl_event()),
                74..84 => Item::Event(self.redaction_event()),
                84..88 => Item::Event(self.other_state_event()),
                88..92 => match self.history.choose(&mut self.rng) {
                    // Re-send an earlier event, identical.
                    Some(event) => Item::Event(event.clone()),
                    None => Item::Event(self.member_event()),
                },
                _ => self.manifest(false),
            };
            // Sometimes a second event at the same key in the same delta (the later one wins).
            let again = match &item {
                Item::Event(event)
                    if event.get("state_key").is_some() && self.rng.random_bool(0.12) =>
                {
                    Some(self.same_key_again(event))
                }
                _ => None,
            };
            items.push(item);
            items.extend(again.map(Item::Event));
        }
        self.oracle.apply(&items);
        self.intents = self.oracle.replicas()["server_acl"]
            .iter()
            .map(|row| {
                let instance = row["instance"].as_str().unwrap_or_default().to_owned();
                let deny = row["deny"]
                    .as_array()
                    .map(|d| {
                        d.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                (instance, deny)
            })
            .collect();
        items
    }

    fn manifest(&mut self, all: bool) -> Item {
        let ids: Vec<&str> = if all {
            INSTANCES.to_vec()
        } else {
            let n = self.rng.random_range(1..=3);
            (0..n)
                .map(|_| *INSTANCES.choose(&mut self.rng).expect("non-empty"))
                .collect()
        };
        let mut entries = Vec::new();
        for id in ids {
            if !all && self.rng.random_bool(0.15) {
                self.protect.remove(id);
                entries.push(json!({"id": id, "remove": true}));
                continue;
            }
            let mut watch = self.subset(&POLICY_ROOMS, 0.6);
            if self.rng.random_bool(0.15) {
                watch.push(ROOMS.choose(&mut self.rng).expect("non-empty").to_string());
            }
            let protect = self.subset(&PROTECTABLE, 0.6);
            self.protect.insert(id.to_owned(), protect.clone());
            entries.push(json!({"id": id, "watch": watch, "protect": protect}));
        }
        Item::Manifest(json!({ "instances": entries }))
    }

    fn subset(&mut self, from: &[&str], p: f64) -> Vec<String> {
        from.iter()
            .filter(|_| self.rng.random_bool(p))
            .map(|s| s.to_string())
            .collect()
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from.choose(&mut self.rng).expect("non-empty")
    }

    /// A fresh event with the common fields; `unsigned` and `origin_server_ts` vary.
    fn event(
        &mut self,
        room_id: &str,
        ty: &str,
        state_key: Option<&str>,
        sender: &str,
        content: Value,
    ) -> Value {
        self.next_event += 1;
        let mut event = Map::new();
        event.insert("event_id".into(), json!(format!("$e{}", self.next_event)));
        event.insert("room_id".into(), json!(room_id));
        event.insert("type".into(), json!(ty));
        if let Some(state_key) = state_key {
            event.insert("state_key".into(), json!(state_key));
        }
        event.insert("sender".into(), json!(sender));
        match self.rng.random_range(0..10) {
            0 => {}
            1 => {
                event.insert("origin_server_ts".into(), Value::Null);
            }
            _ => {
                event.insert(
                    "origin_server_ts".into(),
                    json!(1_700_000_000_000u64 + self.next_event),
                );
            }
        }
        event.insert("content".into(), content);
        match self.rng.random_range(0..100) {
            0..6 => {
                let because = json!({"type": "m.room.redaction", "event_id": "$r", "sender": "@mod:good.net"});
                event.insert(
                    "unsigned".into(),
                    json!({"age": 7, "redacted_because": because}),
                );
            }
            6..8 => {
                event.insert("unsigned".into(), json!({"redacted_because": null}));
            }
            8..14 => {
                event.insert("unsigned".into(), json!({"age": 1234}));
            }
            _ => {}
        }
        let event = Value::Object(event);
        self.history.push(event.clone());
        event
    }

    fn member_content(&mut self) -> Value {
        let mut content = Map::new();
        let membership = match self.rng.random_range(0..100) {
            0..38 => Some(json!("join")),
            38..48 => Some(json!("invite")),
            48..54 => Some(json!("knock")),
            54..70 => Some(json!("leave")),
            70..82 => Some(json!("ban")),
            82..86 => None,
            86..90 => Some(json!("foo")),
            90..93 => Some(json!("JOIN")),
            93..97 => Some(json!(42)),
            _ => Some(json!(["join"])),
        };
        match self.rng.random_range(0..100) {
            0..50 => {
                let name = format!("name{}", self.rng.random_range(0..5));
                content.insert("displayname".into(), json!(name));
            }
            50..58 => {
                content.insert("displayname".into(), json!(7));
            }
            58..62 => {
                content.insert("displayname".into(), Value::Null);
            }
            _ => {}
        }
        if let Some(membership) = membership {
            content.insert("membership".into(), membership);
        }
        if self.rng.random_bool(0.1) {
            content.insert(
                "join_authorised_via_users_server".into(),
                json!("@admin:good.net"),
            );
        }
        if self.rng.random_bool(0.2) {
            content.insert("avatar_url".into(), json!("mxc://good.net/abc"));
        }
        Value::Object(content)
    }

    fn member_event(&mut self) -> Value {
        let room = if self.rng.random_bool(0.75) {
            self.pick(&PROTECTABLE)
        } else {
            self.pick(&ROOMS)
        };
        let user = self.pick(&USERS);
        let sender = if self.rng.random_bool(0.7) {
            user
        } else {
            self.pick(&USERS)
        };
        let content = self.member_content();
        self.event(room, "m.room.member", Some(user), sender, content)
    }

    fn hash_field(&mut self, content: &mut Map<String, Value>, hash: String) {
        match self.rng.random_range(0..10) {
            0..5 => {
                content.insert("hashes".into(), json!({ "sha256": hash }));
            }
            5..9 => {
                content.insert(
                    "org.matrix.msc4205.hashes".into(),
                    json!({ "sha256": hash }),
                );
            }
            _ => {
                // Both: `hashes` wins.
                content.insert("hashes".into(), json!({ "sha256": hash }));
                content.insert(
                    "org.matrix.msc4205.hashes".into(),
                    json!({"sha256": sha256_b64("@nobody:good.net")}),
                );
            }
        }
    }

    fn rule_content(&mut self, kind: &str) -> Value {
        if self.rng.random_bool(0.12) {
            return json!({});
        }
        let mut content = Map::new();
        match self.rng.random_range(0..100) {
            0..50 => {
                let entity = match kind {
                    "user" if self.rng.random_bool(0.7) => self.pick(&USERS),
                    "user" => self.pick(&USER_LITERALS),
                    "server" => self.pick(&SERVER_LITERALS),
                    _ => self.pick(&ROOM_ENTITIES),
                };
                content.insert("entity".into(), json!(entity));
            }
            50..72 => {
                let entity = match kind {
                    "user" => self.pick(&USER_GLOBS),
                    "server" => self.pick(&SERVER_GLOBS),
                    _ => self.pick(&ROOM_ENTITIES),
                };
                content.insert("entity".into(), json!(entity));
            }
            72..90 => {
                let hash = match kind {
                    "user" if self.rng.random_bool(0.8) => sha256_b64(self.pick(&USERS)),
                    "server" if self.rng.random_bool(0.8) => sha256_b64(self.pick(&SERVER_HASHED)),
                    "room" => sha256_b64(self.pick(&ROOMS)),
                    _ => "bm90IGEgaGFzaA==".to_owned(),
                };
                self.hash_field(&mut content, hash);
            }
            // Invalid entities.
            90..92 => {
                content.insert("entity".into(), json!(42));
            }
            92..94 => {
                content.insert("entity".into(), Value::Null);
                if self.rng.random_bool(0.5) {
                    let hash = sha256_b64(self.pick(&USERS));
                    self.hash_field(&mut content, hash);
                }
            }
            94..96 => {
                content.insert("entity".into(), json!(["@u1:evil.org"]));
            }
            96..98 => {
                content.insert("hashes".into(), json!({"sha256": 5}));
            }
            _ => {}
        }
        let recommendation = match self.rng.random_range(0..100) {
            0..30 => Some(json!("m.ban")),
            30..42 => Some(json!("org.matrix.mjolnir.ban")),
            42..52 => Some(json!("m.takedown")),
            52..60 => Some(json!("org.matrix.msc4204.takedown")),
            60..70 => Some(json!("org.matrix.mjolnir.allow")),
            70..78 => Some(json!("com.example.watch")),
            78..82 => Some(json!("M.BAN")),
            82..88 => None,
            88..94 => Some(json!(7)),
            _ => Some(Value::Null),
        };
        if let Some(recommendation) = recommendation {
            content.insert("recommendation".into(), recommendation);
        }
        match self.rng.random_range(0..10) {
            0..6 => {
                let reason = self.pick(&REASONS);
                content.insert("reason".into(), json!(reason));
            }
            6 => {
                content.insert("reason".into(), json!({"text": "x"}));
            }
            _ => {}
        }
        Value::Object(content)
    }

    fn rule_event(&mut self) -> Value {
        let room = if self.rng.random_bool(0.8) {
            self.pick(&POLICY_ROOMS)
        } else {
            self.pick(&ROOMS)
        };
        let kind = self.pick(&["user", "user", "server", "room"]);
        let ty = match self.rng.random_range(0..10) {
            0..4 => format!("m.policy.rule.{kind}"),
            4..7 => format!("m.room.rule.{kind}"),
            _ => format!("org.matrix.mjolnir.rule.{kind}"),
        };
        let state_key = self.pick(&RULE_KEYS);
        let content = self.rule_content(kind);
        self.event(room, &ty, Some(state_key), "@mod:good.net", content)
    }

    fn acl_content(&mut self) -> Value {
        let intent: Vec<String> = {
            let intents: Vec<&Vec<String>> = self.intents.values().collect();
            intents
                .choose(&mut self.rng)
                .map(|d| (*d).clone())
                .unwrap_or_default()
        };
        let mut deny = intent.clone();
        let mut content = Map::new();
        let mut allow = json!(["*"]);
        let mut allow_ip_literals = Some(json!(false));
        match self.rng.random_range(0..100) {
            0..40 => {}
            40..50 => {
                deny.shuffle(&mut self.rng);
                if let Some(first) = deny.first().cloned() {
                    deny.push(first);
                }
            }
            50..60 => allow_ip_literals = None,
            60..65 => allow_ip_literals = Some(json!(true)),
            65..72 => allow = json!(["*", "good.net"]),
            72..78 => {
                if deny.pop().is_none() {
                    deny.push("extra.example".to_owned());
                }
            }
            78..84 => {
                content.insert("allow".into(), allow);
                if let Some(v) = allow_ip_literals {
                    content.insert("allow_ip_literals".into(), v);
                }
                return Value::Object(content);
            }
            84..88 => {
                content.insert("deny".into(), json!(deny));
                content.insert("allow_ip_literals".into(), json!(false));
                return Value::Object(content);
            }
            88..92 => return json!({}),
            92..95 => {
                return json!({"allow": ["*"], "deny": "evil.org", "allow_ip_literals": false});
            }
            _ => allow = json!([]),
        }
        content.insert("allow".into(), allow);
        content.insert("deny".into(), json!(deny));
        if let Some(v) = allow_ip_literals {
            content.insert("allow_ip_literals".into(), v);
        }
        Value::Object(content)
    }

    fn acl_event(&mut self) -> Value {
        let protected: Vec<&String> = self.protect.values().flatten().collect();
        let room = match protected.choose(&mut self.rng) {
            Some(room) if self.rng.random_bool(0.85) => (*room).clone(),
            _ => self.pick(&ROOMS).to_owned(),
        };
        let state_key = if self.rng.random_bool(0.92) { "" } else { "x" };
        let content = self.acl_content();
        self.event(
            &room,
            "m.room.server_acl",
            Some(state_key),
            "@admin:good.net",
            content,
        )
    }

    fn redaction_event(&mut self) -> Value {
        let recent = self.history.len().saturating_sub(12);
        let target = self.history[recent..].choose(&mut self.rng).cloned();
        let (room, redacts) = match target {
            Some(target) if self.rng.random_bool(0.85) => {
                let room = if self.rng.random_bool(0.9) {
                    target["room_id"].as_str().unwrap_or_default().to_owned()
                } else {
                    self.pick(&ROOMS).to_owned()
                };
                (
                    room,
                    target["event_id"].as_str().unwrap_or_default().to_owned(),
                )
            }
            _ => (
                self.pick(&ROOMS).to_owned(),
                format!("$unknown{}", self.rng.random_range(0..3)),
            ),
        };
        let mut content = Map::new();
        content.insert("reason".into(), json!("cleanup"));
        let top_level = match self.rng.random_range(0..10) {
            0..5 => true,
            5..9 => {
                content.insert("redacts".into(), json!(redacts));
                false
            }
            _ => {
                // Both: the top-level one wins.
                content.insert("redacts".into(), json!("$unknown9"));
                true
            }
        };
        let state_key = match self.rng.random_range(0..10) {
            0 => Some(""),
            _ => None,
        };
        let mut event = self.event(
            &room,
            "m.room.redaction",
            state_key,
            "@mod:good.net",
            Value::Object(content),
        );
        if top_level {
            event["redacts"] = json!(redacts);
            if let Some(last) = self.history.last_mut() {
                *last = event.clone();
            }
        }
        event
    }

    fn other_state_event(&mut self) -> Value {
        let room = self.pick(&ROOMS);
        let (ty, content) = match self.rng.random_range(0..5) {
            0 => (
                "m.room.create",
                json!({"creator": "@admin:good.net", "room_version": "10"}),
            ),
            1 => (
                "m.room.power_levels",
                json!({"ban": 50, "users": {"@admin:good.net": 100}, "events_default": 0, "notifications": {"room": 50}}),
            ),
            2 => (
                "m.room.join_rules",
                json!({"join_rule": "restricted", "allow": [], "extra": 1}),
            ),
            3 => (
                "m.room.history_visibility",
                json!({"history_visibility": "shared", "other": true}),
            ),
            _ => ("m.room.name", json!({"name": "A room"})),
        };
        self.event(room, ty, Some(""), "@admin:good.net", content)
    }

    /// Another event at the key of `event`, with a fresh id and freshly generated content.
    fn same_key_again(&mut self, event: &Value) -> Value {
        let room = event["room_id"].as_str().unwrap_or_default().to_owned();
        let ty = event["type"].as_str().unwrap_or_default().to_owned();
        let state_key = event["state_key"].as_str().unwrap_or_default().to_owned();
        let sender = event["sender"].as_str().unwrap_or_default().to_owned();
        let content = if ty == "m.room.member" {
            self.member_content()
        } else if let Some(kind) = ty.rsplit('.').next().filter(|_| ty.contains(".rule.")) {
            let kind = kind.to_owned();
            self.rule_content(&kind)
        } else if ty == "m.room.server_acl" {
            self.acl_content()
        } else {
            json!({"changed": true})
        };
        self.event(&room, &ty, Some(&state_key), &sender, content)
    }
}
