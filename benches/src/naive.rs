//! A naive from-scratch recomputation of `member_matches`, `member_bans` and `server_acl`
//! over ordinary maps: the peer that shows what prr's incremental dataflow costs or saves.
//!
//! It follows the spec literally: the latest state event per key, the newest-type rule event
//! per slot, then, for every instance, a loop over its members and the rules of its watched
//! lists. Nothing is shared between instances except a cache of each user's server name and
//! hashes. Two ways of matching:
//! - [`Matching::Nested`]: plain nested loops over (instance, member, rule), the spec's
//!   definition;
//! - [`Matching::Indexed`]: per instance, hash maps of the literal and hashed rules, and a scan
//!   of the globs only: what a careful hand-written recomputation would do.
//!
//! It covers what the generator emits (no redaction events; `unsigned.redacted_because`
//! empties a slot).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prr_replicas::{Glob, ManifestEntry, SourceItem, normalize_server, server_name, sha256_base64};
use serde_json::{Map, Value};

/// How rules are matched against members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Matching {
    /// Nested loops over (instance, member, rule).
    Nested,
    /// Per-instance hash maps for literal and hashed rules, a scan of the globs.
    Indexed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    User,
    Server,
    Room,
}

#[derive(Clone, Debug)]
enum Matcher {
    Literal(String),
    Glob(Glob),
    Hashed(String),
}

#[derive(Clone, Debug)]
struct Rule {
    room: String,
    event_id: String,
    kind: Kind,
    matcher: Matcher,
    /// Class `ban` or `takedown`.
    bans: bool,
}

/// One slot's candidate: the latest event of one rule type at `(room, kind, state_key)`.
#[derive(Clone, Debug)]
struct SlotEvent {
    event_id: String,
    content: Map<String, Value>,
    redacted: bool,
}

/// The source state, as the naive recomputation keeps it.
#[derive(Default)]
pub struct NaiveState {
    /// `(room, kind, state_key)` -> candidates by type rank (0: `m.policy.rule.*`, newest).
    slots: HashMap<(String, Kind, String), [Option<SlotEvent>; 3]>,
    /// room -> user -> membership.
    members: HashMap<String, HashMap<String, String>>,
    /// instance -> (watch, protect).
    instances: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
}

/// What the recomputation found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NaiveOutput {
    /// `member_set` records.
    pub member_set: u64,
    /// `member_matches` records.
    pub member_matches: u64,
    /// `member_bans` records: (instance, protected room, user).
    pub member_bans: u64,
    /// Distinct (instance, user) pairs with a ban intent.
    pub ban_intents: u64,
    /// Entities denied, summed over the instances' ACL intents.
    pub acl_deny: u64,
    /// Instances computed.
    pub instances: u64,
    /// Rule comparisons made (nested loops) or lookups made (indexed).
    pub comparisons: u64,
}

fn rule_type(ty: &str) -> Option<(Kind, usize)> {
    let (kind, rest) = if let Some(k) = ty.strip_suffix(".user") {
        (Kind::User, k)
    } else if let Some(k) = ty.strip_suffix(".server") {
        (Kind::Server, k)
    } else if let Some(k) = ty.strip_suffix(".room") {
        (Kind::Room, k)
    } else {
        return None;
    };
    let rank = match rest {
        "m.policy.rule" => 0,
        "m.room.rule" => 1,
        "org.matrix.mjolnir.rule" => 2,
        _ => return None,
    };
    Some((kind, rank))
}

fn hash_in<'a>(content: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    content.get(field)?.as_object()?.get("sha256")?.as_str()
}

fn parse_rule(room: &str, kind: Kind, ev: &SlotEvent) -> Option<Rule> {
    if ev.redacted || ev.content.is_empty() {
        return None;
    }
    let c = &ev.content;
    let matcher = match c.get("entity") {
        Some(Value::String(e)) if Glob::is_glob(e) => Matcher::Glob(match kind {
            Kind::Server => Glob::new_ignore_ascii_case(e),
            _ => Glob::new(e),
        }),
        Some(Value::String(e)) => Matcher::Literal(e.clone()),
        Some(_) => return None,
        None => Matcher::Hashed(
            hash_in(c, "hashes")
                .or_else(|| hash_in(c, "org.matrix.msc4205.hashes"))?
                .to_string(),
        ),
    };
    let Some(Value::String(rec)) = c.get("recommendation") else {
        return None;
    };
    let bans = matches!(
        rec.as_str(),
        "m.ban" | "org.matrix.mjolnir.ban" | "m.takedown" | "org.matrix.msc4204.takedown"
    );
    Some(Rule {
        room: room.to_string(),
        event_id: ev.event_id.clone(),
        kind,
        matcher,
        bans,
    })
}

/// A user's strings that rules compare with, computed once per user.
struct UserInfo {
    sha: String,
    server: Option<String>,
    server_sha: Option<String>,
}

impl UserInfo {
    fn new(user: &str) -> Self {
        let server = server_name(user).map(normalize_server);
        UserInfo {
            sha: sha256_base64(user),
            server_sha: server.as_deref().map(sha256_base64),
            server,
        }
    }
}

fn matches(rule: &Rule, user: &str, info: &UserInfo) -> bool {
    match rule.kind {
        Kind::Room => false,
        Kind::User => match &rule.matcher {
            Matcher::Literal(e) => e == user,
            Matcher::Glob(g) => g.matches(user),
            Matcher::Hashed(h) => *h == info.sha,
        },
        Kind::Server => match (&info.server, &rule.matcher) {
            (None, _) => false,
            (Some(s), Matcher::Literal(e)) => e.eq_ignore_ascii_case(s),
            (Some(s), Matcher::Glob(g)) => g.matches(s),
            (Some(_), Matcher::Hashed(h)) => info.server_sha.as_deref() == Some(h.as_str()),
        },
    }
}

/// Per-instance index of its rules, for [`Matching::Indexed`].
#[derive(Default)]
struct RuleIndex<'a> {
    user_literal: HashMap<&'a str, Vec<&'a Rule>>,
    user_hashed: HashMap<&'a str, Vec<&'a Rule>>,
    server_literal: HashMap<String, Vec<&'a Rule>>,
    server_hashed: HashMap<&'a str, Vec<&'a Rule>>,
    globs: Vec<&'a Rule>,
}

impl<'a> RuleIndex<'a> {
    fn new(rules: &[&'a Rule]) -> Self {
        let mut ix = RuleIndex::default();
        for r in rules {
            match (r.kind, &r.matcher) {
                (Kind::Room, _) => {}
                (_, Matcher::Glob(_)) => ix.globs.push(r),
                (Kind::User, Matcher::Literal(e)) => ix.user_literal.entry(e).or_default().push(r),
                (Kind::User, Matcher::Hashed(h)) => ix.user_hashed.entry(h).or_default().push(r),
                (Kind::Server, Matcher::Literal(e)) => ix
                    .server_literal
                    .entry(e.to_ascii_lowercase())
                    .or_default()
                    .push(r),
                (Kind::Server, Matcher::Hashed(h)) => {
                    ix.server_hashed.entry(h).or_default().push(r)
                }
            }
        }
        ix
    }

    fn for_each_match(&self, user: &str, info: &UserInfo, mut f: impl FnMut(&'a Rule)) -> u64 {
        let mut lookups = 4;
        let none: Vec<&'a Rule> = Vec::new();
        for r in self.user_literal.get(user).unwrap_or(&none) {
            f(r);
        }
        for r in self.user_hashed.get(info.sha.as_str()).unwrap_or(&none) {
            f(r);
        }
        if let Some(s) = &info.server {
            for r in self.server_literal.get(s).unwrap_or(&none) {
                f(r);
            }
        }
        if let Some(h) = &info.server_sha {
            for r in self.server_hashed.get(h.as_str()).unwrap_or(&none) {
                f(r);
            }
        }
        for r in &self.globs {
            lookups += 1;
            if matches(r, user, info) {
                f(r);
            }
        }
        lookups
    }
}

impl NaiveState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one source delta (a file's items), in order: later events win.
    pub fn apply(&mut self, items: &[SourceItem]) {
        for item in items {
            match item {
                SourceItem::Event(e) => {
                    let Some(key) = &e.state_key else { continue };
                    if let Some((kind, rank)) = rule_type(&e.event_type) {
                        let slot = self
                            .slots
                            .entry((e.room_id.clone(), kind, key.clone()))
                            .or_default();
                        slot[rank] = Some(SlotEvent {
                            event_id: e.event_id.clone(),
                            content: e.content.clone(),
                            redacted: e.redacted_because,
                        });
                    } else if e.event_type == "m.room.member" {
                        let room = self.members.entry(e.room_id.clone()).or_default();
                        match e.content.get("membership").and_then(Value::as_str) {
                            Some(m @ ("join" | "invite" | "knock" | "leave" | "ban"))
                                if !e.redacted_because =>
                            {
                                room.insert(key.clone(), m.to_string());
                            }
                            _ => {
                                room.remove(key);
                            }
                        }
                    }
                }
                SourceItem::Manifest(entries) => {
                    for entry in entries {
                        match entry {
                            ManifestEntry::Set { id, watch, protect } => {
                                self.instances.insert(
                                    id.clone(),
                                    (
                                        watch.iter().cloned().collect(),
                                        protect.iter().cloned().collect(),
                                    ),
                                );
                            }
                            ManifestEntry::Remove { id } => {
                                self.instances.remove(id);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The number of instances.
    pub fn instances(&self) -> usize {
        self.instances.len()
    }

    /// Recomputes the intents from scratch. `progress(done, total)` is called after each
    /// instance; returning `false` stops early (the output then covers the instances done).
    pub fn compute(
        &self,
        how: Matching,
        mut progress: impl FnMut(&NaiveOutput, usize) -> bool,
    ) -> NaiveOutput {
        // The rules in force, by room: the newest-type event present takes the slot.
        let mut rules: HashMap<&str, Vec<Rule>> = HashMap::new();
        for ((room, kind, _), candidates) in &self.slots {
            if let Some(ev) = candidates.iter().flatten().next()
                && let Some(rule) = parse_rule(room, *kind, ev)
            {
                rules.entry(room.as_str()).or_default().push(rule);
            }
        }
        let mut users: HashMap<&str, UserInfo> = HashMap::new();
        let mut out = NaiveOutput::default();
        let total = self.instances.len();
        let empty = HashMap::new();
        for (instance, (watch, protect)) in &self.instances {
            let list: Vec<&Rule> = watch
                .iter()
                .filter_map(|w| rules.get(w.as_str()))
                .flatten()
                .collect();
            // member_set: users present in at least one protected room.
            let mut member_set: HashMap<&str, u32> = HashMap::new();
            for room in protect {
                for (user, m) in self.members.get(room).unwrap_or(&empty) {
                    if matches!(m.as_str(), "join" | "invite" | "knock") {
                        *member_set.entry(user.as_str()).or_default() += 1;
                    }
                }
            }
            out.member_set += member_set.len() as u64;
            let index = (how == Matching::Indexed).then(|| RuleIndex::new(&list));
            let mut best: Vec<(&str, (&str, &str))> = Vec::new();
            for user in member_set.keys() {
                let info = users.entry(user).or_insert_with(|| UserInfo::new(user));
                let mut found: Vec<&Rule> = Vec::new();
                match &index {
                    None => {
                        for r in &list {
                            out.comparisons += 1;
                            if matches(r, user, info) {
                                found.push(r);
                            }
                        }
                    }
                    Some(ix) => out.comparisons += ix.for_each_match(user, info, |r| found.push(r)),
                }
                out.member_matches += found.len() as u64;
                let chosen = found
                    .iter()
                    .filter(|r| r.kind == Kind::User && r.bans)
                    .map(|r| (r.room.as_str(), r.event_id.as_str()))
                    .min();
                if let Some(c) = chosen {
                    best.push((user, c));
                }
            }
            out.ban_intents += best.len() as u64;
            for (user, _rule) in &best {
                for room in protect {
                    if let Some(m) = self.members.get(room).and_then(|r| r.get(*user))
                        && m != "ban"
                    {
                        out.member_bans += 1;
                    }
                }
            }
            // server_acl: non-hashed server ban rules, minus those matching the own server.
            let own = server_name(instance).map(normalize_server);
            let mut deny: BTreeSet<&str> = BTreeSet::new();
            for r in &list {
                if r.kind != Kind::Server || !r.bans {
                    continue;
                }
                let entity = match &r.matcher {
                    Matcher::Literal(e) => e.as_str(),
                    Matcher::Glob(g) => g.pattern(),
                    Matcher::Hashed(_) => continue,
                };
                let own_matches = own.as_deref().is_some_and(|o| match &r.matcher {
                    Matcher::Literal(e) => e.eq_ignore_ascii_case(o),
                    Matcher::Glob(g) => g.matches(o),
                    Matcher::Hashed(_) => false,
                });
                if !own_matches {
                    deny.insert(entity);
                }
            }
            out.acl_deny += deny.len() as u64;
            out.instances += 1;
            if !progress(&out, total) {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Workload, WorkloadConfig};

    #[test]
    fn nested_and_indexed_agree() {
        let config = WorkloadConfig {
            seed: 3,
            rules: 400,
            policy_rooms: 3,
            memberships: 3_000,
            protected_rooms: 10,
            instances: 5,
            servers: 30,
            users: 800,
        };
        let w = Workload::generate(&config);
        let mut s = NaiveState::new();
        for f in w.files() {
            s.apply(&f.items);
        }
        let a = s.compute(Matching::Nested, |_, _| true);
        let b = s.compute(Matching::Indexed, |_, _| true);
        assert_eq!(
            (a.member_matches, a.member_bans, a.ban_intents, a.acl_deny),
            (b.member_matches, b.member_bans, b.ban_intents, b.acl_deny)
        );
        assert!(a.member_bans > 0 && a.acl_deny > 0, "{a:?}");
    }
}
