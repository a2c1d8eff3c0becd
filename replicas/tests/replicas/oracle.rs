//! The correctness oracle: every replica of `docs/replicas.md`, recomputed from scratch
//! with ordinary Rust over `BTreeMap`s, with no incremental machinery at all.
//!
//! The oracle keeps only the source state (the current `room_state` records, the instances of
//! the manifests and the effect handlers' outcomes). [`Oracle::replicas`] derives every replica
//! from that state each time it is called, so the incremental implementation can be compared
//! with it after every source delta.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

#[path = "oracle/outcomes.rs"]
mod outcomes;

use outcomes::OutcomeRecord;
pub use outcomes::{IntentKey, Served};

/// One item of a source delta. Items of a delta are applied in order.
#[derive(Clone, Debug)]
pub enum Item {
    /// A validated event with `room_id` filled in: a state event, or an `m.room.redaction`
    /// (which may lack a `state_key`).
    Event(Value),
    /// A validated instance manifest `{"instances": [...]}`.
    Manifest(Value),
}

/// The names of all replicas, in the spec's order.
#[allow(dead_code)]
pub const REPLICAS: [&str; 12] = [
    "room_state",
    "policy_room",
    "policy_list",
    "room_members",
    "member_set",
    "member_matches",
    "member_bans",
    "server_acl",
    "acl_sync",
    "outcomes",
    "pending",
    "rejects",
];

/// Rule kinds, in the order the oracle scans them (rows are sorted afterwards anyway).
const RULE_KINDS: [&str; 3] = ["user", "server", "room"];

/// Memberships that make a `room_members` record.
const MEMBERSHIPS: [&str; 5] = ["join", "invite", "knock", "leave", "ban"];

/// Memberships that make a user present (`member_set`).
const PRESENT: [&str; 3] = ["join", "invite", "knock"];

/// The reason of a member ban whose rule has none.
const NO_REASON: &str = "<no reason supplied>";

/// The rule event types of `kind`, newest first.
fn rule_types(kind: &str) -> [String; 3] {
    [
        format!("m.policy.rule.{kind}"),
        format!("m.room.rule.{kind}"),
        format!("org.matrix.mjolnir.rule.{kind}"),
    ]
}

/// Padded standard base64 of the SHA-256 of the UTF-8 bytes of `s`.
pub fn sha256_b64(s: &str) -> String {
    STANDARD.encode(Sha256::digest(s.as_bytes()))
}

/// The spec's limit on user IDs (and so server names), in bytes: a glob is never compared with
/// a longer text (`docs/replicas.md`).
const MAX_ID_LEN: usize = 255;

/// Anchored glob match: `*` is any run of characters (possibly empty), `?` exactly one Unicode
/// scalar value, every other character literal. Plain dynamic programming, O(pattern × text).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // row[j]: does p[..i] match t[..j], for the current i.
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for &pc in &p {
        let mut next = vec![false; t.len() + 1];
        next[0] = row[0] && pc == '*';
        for j in 1..=t.len() {
            next[j] = match pc {
                '*' => row[j] || next[j - 1],
                '?' => row[j - 1],
                c => row[j - 1] && c == t[j - 1],
            };
        }
        row = next;
    }
    row[t.len()]
}

/// The server name of a user ID: everything after its first `:` (`None` without a `:`).
fn server_name(user_id: &str) -> Option<&str> {
    user_id.split_once(':').map(|(_, server)| server)
}

/// A server name as server rules and ACLs compare it: a trailing `:digits` port dropped, ASCII
/// lower-cased.
fn normalize_server(server: &str) -> String {
    let host = match server.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => server,
    };
    host.to_ascii_lowercase()
}

/// Whether a literal or glob server entity matches a normalized server name (case-insensitive).
fn server_entity_matches(matcher: &Matcher, normalized: &str) -> bool {
    match matcher {
        Matcher::Literal(e) => e.to_ascii_lowercase() == normalized,
        Matcher::Glob(g) => {
            normalized.len() <= MAX_ID_LEN && glob_match(&g.to_ascii_lowercase(), normalized)
        }
        Matcher::Hashed(h) => sha256_b64(normalized) == *h,
    }
}

/// The content keys that survive redaction for an event of type `ty`.
fn survives_redaction(ty: &str, key: &str) -> bool {
    match ty {
        "m.room.member" => matches!(key, "membership" | "join_authorised_via_users_server"),
        "m.room.create" => true,
        "m.room.join_rules" => matches!(key, "join_rule" | "allow"),
        "m.room.power_levels" => matches!(
            key,
            "ban"
                | "events"
                | "events_default"
                | "invite"
                | "kick"
                | "redact"
                | "state_default"
                | "users"
                | "users_default"
        ),
        "m.room.history_visibility" => key == "history_visibility",
        _ => false,
    }
}

fn str_field<'a>(value: &'a Value, field: &str) -> Option<&'a str> {
    value.get(field).and_then(Value::as_str)
}

/// The strings of a JSON array (non-strings skipped; a missing or non-array value is empty).
fn string_set(value: Option<&Value>) -> BTreeSet<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// One `room_state` record (its key is the position in [`Oracle::room_state`]).
#[derive(Clone, Debug)]
struct StateRecord {
    event_id: String,
    sender: String,
    origin_server_ts: Value,
    content: Map<String, Value>,
    redacted: bool,
}

impl StateRecord {
    /// Marks the record redacted and strips its content to the keys that survive.
    fn redact(&mut self, ty: &str) {
        self.redacted = true;
        self.content.retain(|key, _| survives_redaction(ty, key));
    }
}

/// The watched and protected rooms of one instance.
#[derive(Clone, Debug, Default)]
struct Instance {
    watch: BTreeSet<String>,
    protect: BTreeSet<String>,
}

/// How a rule names its entity.
#[derive(Clone, Debug)]
enum Matcher {
    Literal(String),
    Glob(String),
    Hashed(String),
}

/// One rule in force (a `policy_room` record).
#[derive(Clone, Debug)]
struct Rule {
    room_id: String,
    kind: &'static str,
    state_key: String,
    ty: String,
    event_id: String,
    sender: String,
    matcher: Matcher,
    recommendation: String,
    class: &'static str,
    reason: Option<String>,
}

impl Rule {
    fn match_name(&self) -> &'static str {
        match self.matcher {
            Matcher::Literal(_) => "literal",
            Matcher::Glob(_) => "glob",
            Matcher::Hashed(_) => "hashed",
        }
    }

    fn entity(&self) -> Option<&str> {
        match &self.matcher {
            Matcher::Literal(e) | Matcher::Glob(e) => Some(e),
            Matcher::Hashed(_) => None,
        }
    }

    fn sha256(&self) -> Option<&str> {
        match &self.matcher {
            Matcher::Hashed(h) => Some(h),
            _ => None,
        }
    }

    /// The `policy_room` fields, in the spec's order.
    fn fields(&self) -> Map<String, Value> {
        let Value::Object(map) = json!({
            "room_id": self.room_id,
            "kind": self.kind,
            "state_key": self.state_key,
            "type": self.ty,
            "event_id": self.event_id,
            "sender": self.sender,
            "match": self.match_name(),
            "entity": self.entity(),
            "sha256": self.sha256(),
            "recommendation": self.recommendation,
            "class": self.class,
            "reason": self.reason,
        }) else {
            unreachable!("json! of an object literal is an object")
        };
        map
    }

    /// Whether the rule matches the user ID (`member_matches`).
    fn matches_user(&self, user_id: &str) -> bool {
        match self.kind {
            "user" => match &self.matcher {
                Matcher::Literal(e) => e == user_id,
                Matcher::Glob(g) => user_id.len() <= MAX_ID_LEN && glob_match(g, user_id),
                Matcher::Hashed(h) => sha256_b64(user_id) == *h,
            },
            "server" => server_name(user_id).is_some_and(|server| {
                server_entity_matches(&self.matcher, &normalize_server(server))
            }),
            _ => false,
        }
    }
}

/// The class of a recommendation.
fn class_of(recommendation: &str) -> &'static str {
    match recommendation {
        "m.ban" | "org.matrix.mjolnir.ban" => "ban",
        "m.takedown" | "org.matrix.msc4204.takedown" => "takedown",
        "org.matrix.mjolnir.allow" => "allow",
        _ => "unknown",
    }
}

/// The `sha256` string of `content[field]`, if `content[field]` is an object holding one.
fn hash_in(content: &Map<String, Value>, field: &str) -> Option<String> {
    content
        .get(field)?
        .get("sha256")?
        .as_str()
        .map(str::to_owned)
}

/// Parses the non-empty content of a slot event: `(matcher, recommendation, reason)` or the
/// reason it is not a rule.
fn parse_rule(content: &Map<String, Value>) -> Result<(Matcher, String, Option<String>), String> {
    let matcher = match content.get("entity") {
        Some(Value::String(e)) if e.contains(['*', '?']) => Matcher::Glob(e.clone()),
        Some(Value::String(e)) => Matcher::Literal(e.clone()),
        Some(_) => return Err("entity is not a string".to_owned()),
        None => match hash_in(content, "hashes")
            .or_else(|| hash_in(content, "org.matrix.msc4205.hashes"))
        {
            Some(h) => Matcher::Hashed(h),
            None => return Err("rule has neither entity nor hashes.sha256".to_owned()),
        },
    };
    let recommendation = match content.get("recommendation") {
        Some(Value::String(r)) => r.clone(),
        Some(_) => return Err("recommendation is not a string".to_owned()),
        None => return Err("recommendation is missing".to_owned()),
    };
    let reason = content
        .get("reason")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok((matcher, recommendation, reason))
}

/// One `rejects` record.
#[derive(Clone, Debug)]
struct Reject {
    room_id: String,
    event_id: String,
    ty: String,
    state_key: String,
    replica: &'static str,
    reason: String,
}

/// One `room_members` record.
#[derive(Clone, Debug)]
struct Member {
    membership: String,
    displayname: Option<String>,
}

/// Sorted, key-unique rows of one replica.
#[derive(Default)]
struct Rows(BTreeMap<Vec<String>, Value>);

impl Rows {
    fn put(&mut self, key: &[&str], row: Value) {
        let key: Vec<String> = key.iter().map(|s| (*s).to_owned()).collect();
        if let Some(old) = self.0.insert(key.clone(), row) {
            panic!("oracle bug: duplicate key {key:?} (previous row {old})");
        }
    }

    fn into_vec(self) -> Vec<Value> {
        self.0.into_values().collect()
    }
}

/// The oracle: the source state, and the replicas recomputed from it on demand.
#[derive(Debug, Default)]
pub struct Oracle {
    /// `room_id -> (type, state_key) -> record`.
    room_state: BTreeMap<String, BTreeMap<(String, String), StateRecord>>,
    /// `instance id -> watched and protected rooms`.
    instances: BTreeMap<String, Instance>,
    /// The effect handlers' outcomes by intent.
    outcomes: BTreeMap<IntentKey, OutcomeRecord>,
}

impl Oracle {
    /// An oracle with no source data.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one source delta (one `seq`), item by item.
    pub fn apply(&mut self, delta: &[Item]) {
        for item in delta {
            match item {
                Item::Event(event) => self.apply_event(event),
                Item::Manifest(manifest) => self.apply_manifest(manifest),
            }
        }
    }

    fn apply_event(&mut self, event: &Value) {
        let (Some(room_id), Some(ty), Some(event_id), Some(sender)) = (
            str_field(event, "room_id"),
            str_field(event, "type"),
            str_field(event, "event_id"),
            str_field(event, "sender"),
        ) else {
            return;
        };
        if ty == "m.room.redaction" {
            let target = str_field(event, "redacts")
                .or_else(|| event.get("content").and_then(|c| str_field(c, "redacts")));
            if let (Some(target), Some(room)) = (target, self.room_state.get_mut(room_id)) {
                for ((rec_ty, _), record) in room.iter_mut() {
                    if record.event_id == target {
                        record.redact(rec_ty);
                    }
                }
            }
        }
        let Some(state_key) = str_field(event, "state_key") else {
            return;
        };
        let mut record = StateRecord {
            event_id: event_id.to_owned(),
            sender: sender.to_owned(),
            origin_server_ts: match event.get("origin_server_ts") {
                Some(ts @ Value::Number(_)) => ts.clone(),
                _ => Value::Null,
            },
            content: event
                .get("content")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            redacted: false,
        };
        let redacted_because = event
            .get("unsigned")
            .and_then(|u| u.get("redacted_because"))
            .is_some_and(|r| !r.is_null());
        if redacted_because {
            record.redact(ty);
        }
        self.room_state
            .entry(room_id.to_owned())
            .or_default()
            .insert((ty.to_owned(), state_key.to_owned()), record);
    }

    fn apply_manifest(&mut self, manifest: &Value) {
        let Some(entries) = manifest.get("instances").and_then(Value::as_array) else {
            return;
        };
        for entry in entries {
            let Some(id) = str_field(entry, "id") else {
                continue;
            };
            if entry.get("remove").and_then(Value::as_bool) == Some(true) {
                self.instances.remove(id);
            } else {
                let instance = Instance {
                    watch: string_set(entry.get("watch")),
                    protect: string_set(entry.get("protect")),
                };
                self.instances.insert(id.to_owned(), instance);
            }
        }
    }

    /// The rules in force (`policy_room`) by room, and the slot events that are not rules.
    fn policy_rooms(&self) -> (BTreeMap<&str, Vec<Rule>>, Vec<Reject>) {
        let mut rules: BTreeMap<&str, Vec<Rule>> = BTreeMap::new();
        let mut rejects = Vec::new();
        for (room_id, state) in &self.room_state {
            for kind in RULE_KINDS {
                let types = rule_types(kind);
                let state_keys: BTreeSet<&str> = state
                    .keys()
                    .filter(|(ty, _)| types.contains(ty))
                    .map(|(_, sk)| sk.as_str())
                    .collect();
                for state_key in state_keys {
                    let (ty, record) = types
                        .iter()
                        .find_map(|ty| {
                            state
                                .get(&(ty.clone(), state_key.to_owned()))
                                .map(|r| (ty, r))
                        })
                        .expect("a state key collected from one of the types");
                    if record.redacted || record.content.is_empty() {
                        continue;
                    }
                    match parse_rule(&record.content) {
                        Ok((matcher, recommendation, reason)) => {
                            rules.entry(room_id).or_default().push(Rule {
                                room_id: room_id.clone(),
                                kind,
                                state_key: state_key.to_owned(),
                                ty: ty.clone(),
                                event_id: record.event_id.clone(),
                                sender: record.sender.clone(),
                                matcher,
                                class: class_of(&recommendation),
                                recommendation,
                                reason,
                            })
                        }
                        Err(reason) => rejects.push(Reject {
                            room_id: room_id.clone(),
                            event_id: record.event_id.clone(),
                            ty: ty.clone(),
                            state_key: state_key.to_owned(),
                            replica: "policy_room",
                            reason,
                        }),
                    }
                }
            }
        }
        (rules, rejects)
    }

    /// The `room_members` records by `(room_id, user_id)`, and the member events that are not.
    fn room_members(&self) -> (BTreeMap<(&str, &str), Member>, Vec<Reject>) {
        let mut members = BTreeMap::new();
        let mut rejects = Vec::new();
        for (room_id, state) in &self.room_state {
            for ((ty, state_key), record) in state {
                if ty != "m.room.member" {
                    continue;
                }
                let reject = |reason: String| Reject {
                    room_id: room_id.clone(),
                    event_id: record.event_id.clone(),
                    ty: ty.clone(),
                    state_key: state_key.clone(),
                    replica: "room_members",
                    reason,
                };
                match record.content.get("membership") {
                    Some(Value::String(m)) if MEMBERSHIPS.contains(&m.as_str()) => {
                        let displayname = record
                            .content
                            .get("displayname")
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                        members.insert(
                            (room_id.as_str(), state_key.as_str()),
                            Member {
                                membership: m.clone(),
                                displayname,
                            },
                        );
                    }
                    Some(Value::String(m)) => {
                        rejects.push(reject(format!("unknown membership value {m:?}")))
                    }
                    Some(_) => rejects.push(reject("membership is not a string".to_owned())),
                    None => rejects.push(reject("membership is missing".to_owned())),
                }
            }
        }
        (members, rejects)
    }

    /// Every replica, recomputed from scratch from the current source state: name -> rows in
    /// the spec's field order, sorted by the replica's key.
    pub fn replicas(&self) -> BTreeMap<&'static str, Vec<Value>> {
        let (rules_by_room, policy_rejects) = self.policy_rooms();
        let (members, member_rejects) = self.room_members();

        // room_state
        let mut room_state = Rows::default();
        for (room_id, state) in &self.room_state {
            for ((ty, state_key), r) in state {
                room_state.put(
                    &[room_id, ty, state_key],
                    json!({
                        "room_id": room_id,
                        "type": ty,
                        "state_key": state_key,
                        "event_id": r.event_id,
                        "sender": r.sender,
                        "origin_server_ts": r.origin_server_ts,
                        "content": Value::Object(r.content.clone()),
                        "redacted": r.redacted,
                    }),
                );
            }
        }

        // policy_room
        let mut policy_room = Rows::default();
        for rule in rules_by_room.values().flatten() {
            policy_room.put(
                &[&rule.room_id, rule.kind, &rule.state_key],
                Value::Object(rule.fields()),
            );
        }

        // room_members
        let mut room_members = Rows::default();
        for ((room_id, user_id), m) in &members {
            room_members.put(
                &[room_id, user_id],
                json!({
                    "room_id": room_id,
                    "user_id": user_id,
                    "membership": m.membership,
                    "displayname": m.displayname,
                }),
            );
        }

        let mut policy_list = Rows::default();
        let mut member_set = Rows::default();
        let mut member_matches = Rows::default();
        let mut member_bans = Rows::default();
        let mut server_acl = Rows::default();
        let mut acl_sync = Rows::default();
        for (instance, inst) in &self.instances {
            // policy_list
            let list: Vec<&Rule> = inst
                .watch
                .iter()
                .filter_map(|room| rules_by_room.get(room.as_str()))
                .flatten()
                .collect();
            for rule in &list {
                let mut row = Map::new();
                row.insert("instance".to_owned(), json!(instance));
                row.extend(rule.fields());
                policy_list.put(
                    &[instance, &rule.room_id, rule.kind, &rule.state_key],
                    Value::Object(row),
                );
            }

            // member_set
            let mut present: BTreeMap<&str, u64> = BTreeMap::new();
            for ((room_id, user_id), m) in &members {
                if inst.protect.contains(*room_id) && PRESENT.contains(&m.membership.as_str()) {
                    *present.entry(user_id).or_default() += 1;
                }
            }
            for (user_id, rooms) in &present {
                member_set.put(
                    &[instance, user_id],
                    json!({"instance": instance, "user_id": user_id, "rooms": rooms}),
                );
            }

            // member_matches
            for user_id in present.keys() {
                for rule in list.iter().filter(|rule| rule.matches_user(user_id)) {
                    member_matches.put(
                        &[instance, user_id, &rule.room_id, rule.kind, &rule.state_key],
                        json!({
                            "instance": instance,
                            "user_id": user_id,
                            "room_id": rule.room_id,
                            "kind": rule.kind,
                            "state_key": rule.state_key,
                            "event_id": rule.event_id,
                            "match": rule.match_name(),
                            "entity": rule.entity(),
                            "recommendation": rule.recommendation,
                            "class": rule.class,
                            "reason": rule.reason,
                        }),
                    );
                }
            }

            // member_bans
            for room_id in &inst.protect {
                for user_id in present.keys() {
                    let Some(m) = members.get(&(room_id.as_str(), *user_id)) else {
                        continue;
                    };
                    if m.membership == "ban" {
                        continue;
                    }
                    let chosen = list
                        .iter()
                        .filter(|rule| {
                            rule.kind == "user"
                                && matches!(rule.class, "ban" | "takedown")
                                && rule.matches_user(user_id)
                        })
                        .min_by(|a, b| {
                            (&a.room_id, &a.event_id, &a.state_key).cmp(&(
                                &b.room_id,
                                &b.event_id,
                                &b.state_key,
                            ))
                        });
                    if let Some(rule) = chosen {
                        member_bans.put(
                            &[instance, room_id, user_id],
                            json!({
                                "instance": instance,
                                "room_id": room_id,
                                "user_id": user_id,
                                "rule_room_id": rule.room_id,
                                "rule_event_id": rule.event_id,
                                "reason": rule.reason.as_deref().unwrap_or(NO_REASON),
                            }),
                        );
                    }
                }
            }

            // server_acl
            let own = server_name(instance).map(normalize_server);
            let deny: BTreeSet<&str> = list
                .iter()
                .filter(|rule| rule.kind == "server" && matches!(rule.class, "ban" | "takedown"))
                .filter(|rule| !matches!(rule.matcher, Matcher::Hashed(_)))
                .filter(|rule| {
                    !own.as_deref()
                        .is_some_and(|own| server_entity_matches(&rule.matcher, own))
                })
                .filter_map(|rule| rule.entity())
                .collect();
            server_acl.put(
                &[instance],
                json!({
                    "instance": instance,
                    "allow": ["*"],
                    "deny": deny.iter().collect::<Vec<_>>(),
                    "allow_ip_literals": false,
                }),
            );

            // acl_sync
            for room_id in &inst.protect {
                let acl = self
                    .room_state
                    .get(room_id)
                    .and_then(|state| state.get(&("m.room.server_acl".to_owned(), String::new())));
                let in_sync = acl.is_some_and(|acl| acl_equals_intent(&acl.content, &deny));
                acl_sync.put(
                    &[instance, room_id],
                    json!({"instance": instance, "room_id": room_id, "in_sync": in_sync}),
                );
            }
        }

        // rejects
        let mut rejects = Rows::default();
        for r in policy_rejects.iter().chain(&member_rejects) {
            rejects.put(
                &[&r.room_id, &r.ty, &r.state_key, r.replica],
                json!({
                    "room_id": r.room_id,
                    "event_id": r.event_id,
                    "type": r.ty,
                    "state_key": r.state_key,
                    "replica": r.replica,
                    "reason": r.reason,
                }),
            );
        }

        let (member_bans, server_acl, acl_sync) = (
            member_bans.into_vec(),
            server_acl.into_vec(),
            acl_sync.into_vec(),
        );
        let (outcomes, pending) = self.effects(&member_bans, &server_acl, &acl_sync);
        BTreeMap::from([
            ("room_state", room_state.into_vec()),
            ("policy_room", policy_room.into_vec()),
            ("policy_list", policy_list.into_vec()),
            ("room_members", room_members.into_vec()),
            ("member_set", member_set.into_vec()),
            ("member_matches", member_matches.into_vec()),
            ("member_bans", member_bans),
            ("server_acl", server_acl),
            ("acl_sync", acl_sync),
            ("outcomes", outcomes),
            ("pending", pending),
            ("rejects", rejects.into_vec()),
        ])
    }
}

/// Whether an `m.room.server_acl` content equals the intent `{allow: ["*"], deny, allow_ip_literals:
/// false}`: `allow` and `deny` as sets of strings (missing = empty; not an array, or holding a
/// non-string, = unequal), `allow_ip_literals` missing = `true`. Other keys are ignored.
fn acl_equals_intent(content: &Map<String, Value>, deny: &BTreeSet<&str>) -> bool {
    fn as_set(value: Option<&Value>) -> Option<BTreeSet<&str>> {
        match value {
            None => Some(BTreeSet::new()),
            Some(Value::Array(items)) => items.iter().map(Value::as_str).collect(),
            Some(_) => None,
        }
    }
    let allow_ip_literals = content
        .get("allow_ip_literals")
        .unwrap_or(&Value::Bool(true));
    as_set(content.get("allow")) == Some(BTreeSet::from(["*"]))
        && as_set(content.get("deny")).as_ref() == Some(deny)
        && *allow_ip_literals == Value::Bool(false)
}
