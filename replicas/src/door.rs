//! Checks at the door: whether an instance protecting a room refuses a user (a ban or takedown
//! rule of a list it watches matches the user or the user's server), answered from an index of
//! the rules by what they match, never by scanning them. The index is built from the
//! `policy_room` and `instances` replicas and kept current by their deltas.

use std::collections::BTreeSet;

use foldhash::HashMap;

use prr_engine::Error;
use serde_json::{Map, Value, json};

use crate::glob::server_glob_key;
use crate::glob::{Glob, IndexKey, server_keys, user_glob_key, user_keys};
use crate::matrix::Matrix;
use crate::record::{Kind, MatchKind};
use crate::rules::{
    compile_glob, glob_can_match, matches_user, normalize_server, server_name, sha256_base64,
};

/// Where a rule is filed, and what a user is looked up by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Probe {
    UserLiteral(String),
    UserHash(String),
    UserGlob(IndexKey),
    ServerLiteral(String),
    ServerHash(String),
    ServerGlob(IndexKey),
}

/// A ban or takedown rule, ready to be compared.
#[derive(Debug)]
struct Rule {
    kind: Kind,
    matcher: MatchKind,
    entity: Option<String>,
    sha256: Option<String>,
    glob: Option<Glob>,
    /// `(room_id, event_id)`: the order of the choice among matching rules.
    order: (String, String),
    /// Where it is filed.
    probe: Probe,
    /// The fields an answer shows.
    shown: Value,
}

impl Rule {
    fn matches(&self, user: &str) -> bool {
        matches_user(
            self.kind,
            self.matcher,
            self.entity.as_deref(),
            self.sha256.as_deref(),
            self.glob.as_ref(),
            user,
        )
    }
}

/// A rule's `(kind, state_key)`: its slot in its list.
type Slot = (String, String);

/// The ban and takedown rules of one policy room, by slot and by probe. A probe's rules are
/// ordered by event ID (in one list, the order of the choice among matching rules), so a
/// check compares them in that order and stops at the first that matches.
#[derive(Debug, Default)]
struct List {
    rules: HashMap<Slot, Rule>,
    by_probe: HashMap<Probe, BTreeSet<(String, Slot)>>,
}

impl List {
    fn file(&mut self, rule: &Rule, slot: &Slot) {
        let entry = (rule.order.1.clone(), slot.clone());
        self.by_probe
            .entry(rule.probe.clone())
            .or_default()
            .insert(entry);
    }

    fn unfile(&mut self, rule: &Rule, slot: &Slot) {
        if let Some(filed) = self.by_probe.get_mut(&rule.probe) {
            filed.remove(&(rule.order.1.clone(), slot.clone()));
            if filed.is_empty() {
                self.by_probe.remove(&rule.probe);
            }
        }
    }

    /// The first rule filed under `probe` that matches `user`, if it comes before `before`.
    fn first_match(&self, probe: &Probe, user: &str, before: Option<&Rule>) -> Option<&Rule> {
        for (event, slot) in self.by_probe.get(probe)? {
            // An entry of a rule its slot no longer holds (between the insertion of its
            // successor and its own removal) is skipped: its place in the order is not the
            // slot's rule's.
            let Some(rule) = self.rules.get(slot).filter(|r| r.order.1 == *event) else {
                continue;
            };
            if before.is_some_and(|b| rule.order >= b.order) {
                return None;
            }
            if rule.matches(user) {
                return Some(rule);
            }
        }
        None
    }
}

/// The index of the checks; see the module's documentation.
#[derive(Debug, Default)]
pub struct DoorIndex {
    /// Room -> the instances protecting it.
    protectors: HashMap<String, BTreeSet<String>>,
    /// Instance -> the policy rooms it watches.
    watches: HashMap<String, BTreeSet<String>>,
    lists: HashMap<String, List>,
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// The probe a `policy_room` record is filed under, and the rule; `None` for what no check
/// uses (room rules, other recommendations, a glob that can match nothing).
fn rule_of(r: &Value) -> Option<Rule> {
    if !matches!(r["class"].as_str(), Some("ban" | "takedown")) {
        return None;
    }
    let kind = match r["kind"].as_str()? {
        "user" => Kind::User,
        "server" => Kind::Server,
        _ => return None,
    };
    let matcher = match r["match"].as_str()? {
        "literal" => MatchKind::Literal,
        "glob" => MatchKind::Glob,
        "hashed" => MatchKind::Hashed,
        _ => return None,
    };
    let entity = text(&r["entity"]);
    let sha256 = text(&r["sha256"]);
    let probe = match (kind, matcher) {
        (Kind::User, MatchKind::Literal) => Probe::UserLiteral(entity.clone()?),
        (Kind::User, MatchKind::Hashed) => Probe::UserHash(sha256.clone()?),
        (Kind::User, MatchKind::Glob) => Probe::UserGlob(user_glob_key(entity.as_deref()?)),
        (Kind::Server, MatchKind::Literal) => {
            Probe::ServerLiteral(entity.as_deref()?.to_ascii_lowercase())
        }
        (Kind::Server, MatchKind::Hashed) => Probe::ServerHash(sha256.clone()?),
        (Kind::Server, MatchKind::Glob) => Probe::ServerGlob(server_glob_key(entity.as_deref()?)),
        (Kind::Room, _) => return None,
    };
    let glob = match (matcher, entity.as_deref()) {
        (MatchKind::Glob, Some(e)) if glob_can_match(e) => Some(compile_glob(kind, e)),
        (MatchKind::Glob, _) => return None,
        _ => None,
    };
    let mut shown = Map::new();
    for f in [
        "room_id",
        "kind",
        "state_key",
        "entity",
        "match",
        "recommendation",
        "reason",
    ] {
        shown.insert(f.into(), r[f].clone());
    }
    let order = (text(&r["room_id"])?, text(&r["event_id"])?);
    Some(Rule {
        kind,
        matcher,
        entity,
        sha256,
        glob,
        order,
        probe,
        shown: Value::Object(shown),
    })
}

/// The probes a user is looked up by: the user ID (literal, hash, glob keys) and its server
/// name (normalized: port dropped, lower case; literal, hash, glob keys).
fn probes(user: &str) -> Vec<Probe> {
    let mut out = vec![
        Probe::UserLiteral(user.to_string()),
        Probe::UserHash(sha256_base64(user)),
    ];
    out.extend(user_keys(user).into_iter().map(Probe::UserGlob));
    if let Some(server) = server_name(user) {
        let server = normalize_server(server);
        out.push(Probe::ServerHash(sha256_base64(&server)));
        out.extend(server_keys(&server).into_iter().map(Probe::ServerGlob));
        out.push(Probe::ServerLiteral(server));
    }
    out
}

/// A refusal: the instance, the rule (`room_id`, `kind`, `state_key`, `entity`, `match`,
/// `recommendation`, `reason`) and the user it matched.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    /// The instance (the smallest ID among those protecting the room that watch the rule's
    /// list).
    pub instance: String,
    /// The rule's fields.
    pub rule: Value,
    /// The user the rule matched.
    pub user_id: String,
}

impl Refusal {
    /// `{"allow": false, "instance", "rule", "user_id"}`.
    pub fn to_json(&self) -> Value {
        json!({"allow": false, "instance": self.instance, "rule": self.rule, "user_id": self.user_id})
    }
}

impl DoorIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of what `m`'s replicas hold now.
    pub fn load(m: &mut Matrix) -> Result<Self, Error> {
        let mut index = Self::new();
        for replica in ["policy_room", "instances"] {
            for r in m.show(replica, None, None)? {
                index.apply(replica, &r, 1);
            }
        }
        Ok(index)
    }

    /// Applies one record of `policy_room` or `instances` (others are ignored) with its
    /// multiplicity change (records are sets: positive inserts, negative removes).
    pub fn apply(&mut self, replica: &str, record: &Value, diff: isize) {
        match replica {
            "policy_room" => self.apply_rule(record, diff),
            "instances" => self.apply_instance(record, diff),
            _ => {}
        }
    }

    fn apply_rule(&mut self, r: &Value, diff: isize) {
        let (Some(room), Some(kind), Some(state_key)) =
            (text(&r["room_id"]), text(&r["kind"]), text(&r["state_key"]))
        else {
            return;
        };
        let slot = (kind, state_key);
        let Some(rule) = rule_of(r) else {
            return;
        };
        let list = self.lists.entry(room.clone()).or_default();
        // A change at a slot is a removal and an insertion, in either order: a removal only
        // removes the rule it names (by its event), an insertion replaces what is there.
        let old = if diff > 0 {
            list.file(&rule, &slot);
            list.rules
                .insert(slot.clone(), rule)
                .filter(|old| old.order != list.rules[&slot].order)
        } else if list
            .rules
            .get(&slot)
            .is_some_and(|old| old.order == rule.order)
        {
            list.rules.remove(&slot)
        } else {
            None
        };
        if let Some(old) = old {
            list.unfile(&old, &slot);
        }
        if list.rules.is_empty() {
            self.lists.remove(&room);
        }
    }

    fn apply_instance(&mut self, r: &Value, diff: isize) {
        let (Some(instance), Some(room)) = (text(&r["instance"]), text(&r["room_id"])) else {
            return;
        };
        let map = match r["relation"].as_str() {
            Some("watch") => &mut self.watches,
            Some("protect") => &mut self.protectors,
            _ => return,
        };
        let (outer, inner) = match r["relation"].as_str() {
            Some("protect") => (room, instance),
            _ => (instance, room),
        };
        if diff > 0 {
            map.entry(outer).or_default().insert(inner);
        } else if let Some(set) = map.get_mut(&outer) {
            set.remove(&inner);
            if set.is_empty() {
                map.remove(&outer);
            }
        }
    }

    /// Whether an instance protecting `room` refuses `user`: the matching ban or takedown
    /// rule with the smallest `(room_id, event_id)` among the lists those instances watch
    /// (as `member_bans` chooses), or `None`.
    pub fn check(&self, user: &str, room: &str) -> Option<Refusal> {
        let instances = self.protectors.get(room)?;
        // Each list once, however many of the room's protectors watch it.
        let mut lists: Vec<&String> = (instances.iter())
            .filter_map(|i| self.watches.get(i))
            .flatten()
            .collect();
        lists.sort_unstable();
        lists.dedup();
        let probes = probes(user);
        let mut best: Option<&Rule> = None;
        for list in lists.into_iter().filter_map(|l| self.lists.get(l)) {
            for probe in &probes {
                if let Some(rule) = list.first_match(probe, user, best) {
                    best = Some(rule);
                }
            }
        }
        let rule = best?;
        // The smallest protecting instance that watches the rule's list.
        let instance = instances.iter().find(|i| {
            self.watches
                .get(*i)
                .is_some_and(|w| w.contains(&rule.order.0))
        })?;
        Some(Refusal {
            instance: instance.to_string(),
            rule: rule.shown.clone(),
            user_id: user.to_string(),
        })
    }

    /// The answer to a check of `users` (a joiner; an inviter and an invitee) in `room`:
    /// `{"allow": true}`, or the first user's refusal.
    pub fn answer(&self, users: &[&str], room: &str) -> Value {
        (users.iter())
            .find_map(|u| self.check(u, room))
            .map_or_else(|| json!({"allow": true}), |r| r.to_json())
    }
}

#[cfg(test)]
mod tests;
