//! Explanations: why an instance bans (or does not ban) a user, and what its server ACL holds
//! and why. Read from the replicas; rules are matched against the user by the same function
//! `member_matches` uses, so a user who is not present is explained too.

use std::collections::{BTreeMap, BTreeSet};

use prr_engine::Error;
use serde_json::{Map, Value, json};

use crate::matrix::Matrix;
use crate::record::{Kind, MatchKind};
use crate::rules::{normalize_server, rule_matches_user, server_entity_matches, server_name};

/// Why `member_bans` cites the rule it cites.
const CITED_WHY: &str = "of the matching user rules of class ban or takedown, the one with the \
                         smallest (room_id, event_id)";

fn kind(v: &Value) -> Option<Kind> {
    match v.as_str()? {
        "user" => Some(Kind::User),
        "server" => Some(Kind::Server),
        "room" => Some(Kind::Room),
        _ => None,
    }
}

fn match_kind(v: &Value) -> Option<MatchKind> {
    match v.as_str()? {
        "literal" => Some(MatchKind::Literal),
        "glob" => Some(MatchKind::Glob),
        "hashed" => Some(MatchKind::Hashed),
        _ => None,
    }
}

/// Whether a `policy_list` record's rule matches `user`.
fn rule_matches(rule: &Value, user: &str) -> bool {
    match (kind(&rule["kind"]), match_kind(&rule["match"])) {
        (Some(k), Some(m)) => {
            rule_matches_user(k, m, rule["entity"].as_str(), rule["sha256"].as_str(), user)
        }
        _ => false,
    }
}

fn is_ban_class(rule: &Value) -> bool {
    matches!(rule["class"].as_str(), Some("ban" | "takedown"))
}

/// The fields of a rule an explanation shows.
fn rule_fields(rule: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for f in [
        "room_id",
        "kind",
        "state_key",
        "event_id",
        "entity",
        "sha256",
        "match",
        "recommendation",
        "class",
        "reason",
    ] {
        out.insert(f.into(), rule[f].clone());
    }
    out
}

/// The rooms `instance` protects, and whether it exists at all.
fn protected_rooms(m: &mut Matrix, instance: &str) -> Result<(bool, Vec<String>), Error> {
    let rows = m.show("instances", Some(instance), None)?;
    let rows: Vec<&Value> = rows.iter().filter(|r| r["instance"] == instance).collect();
    let rooms = (rows.iter())
        .filter(|r| r["relation"] == "protect")
        .filter_map(|r| r["room_id"].as_str().map(str::to_string))
        .collect();
    Ok((!rows.is_empty(), rooms))
}

/// The `outcomes` records of `instance` for `action` (and `target`), by room.
fn outcomes_by_room(
    m: &mut Matrix,
    instance: &str,
    action: &str,
    target: &str,
) -> Result<BTreeMap<String, Value>, Error> {
    Ok((m.show("outcomes", Some(instance), None)?.into_iter())
        .filter(|o| o["instance"] == instance && o["action"] == action && o["target"] == target)
        .filter_map(|o| Some((o["room_id"].as_str()?.to_string(), o)))
        .collect())
}

/// Why `instance` bans `user` or not (`prr explain INSTANCE USER`, `GET /v1/explain`): the
/// protected rooms (only `room` when given) with the user's membership there and the ban
/// intended there, if any; every rule of the instance's lists that matches the user, with its
/// effect; the rule the bans cite and why; and a one-line verdict. Each room carries the ban's
/// outcome so far (`outcomes`), if an effect handler acted on it.
pub fn explain_user(
    m: &mut Matrix,
    instance: &str,
    user: &str,
    room: Option<&str>,
) -> Result<Value, Error> {
    let (exists, mut rooms) = protected_rooms(m, instance)?;
    if let Some(r) = room {
        rooms.retain(|p| p == r);
    }
    let bans: Vec<Value> = (m.show("member_bans", Some(instance), None)?.into_iter())
        .filter(|b| b["user_id"] == user && b["instance"] == instance)
        .collect();
    let matching: Vec<Value> = (m.show("policy_list", Some(instance), None)?.into_iter())
        .filter(|r| r["instance"] == instance && rule_matches(r, user))
        .collect();
    let mut outcomes = outcomes_by_room(m, instance, "ban", user)?;
    let mut present_anywhere = false;
    let mut room_rows = Vec::new();
    for r in &rooms {
        let membership = (m.show("room_members", Some(r), None)?.into_iter())
            .find(|row| row["user_id"] == user)
            .map(|row| row["membership"].clone())
            .unwrap_or(Value::Null);
        let present = matches!(membership.as_str(), Some("join" | "invite" | "knock"));
        present_anywhere |= present;
        let ban = bans.iter().find(|b| b["room_id"] == r.as_str()).cloned();
        room_rows.push(json!({
            "room_id": r,
            "membership": membership,
            "present": present,
            "ban": ban,
            "outcome": outcomes.remove(r.as_str()),
        }));
    }
    let bannable: Vec<&Value> = (matching.iter())
        .filter(|r| r["kind"] == "user" && is_ban_class(r))
        .collect();
    let cited = (bans.first()).map(|b| {
        json!({"rule_room_id": b["rule_room_id"], "rule_event_id": b["rule_event_id"],
               "reason": b["reason"], "why": CITED_WHY})
    });
    let rules: Vec<Value> = (matching.iter())
        .map(|r| {
            let mut f = rule_fields(r);
            let effect = match (r["kind"].as_str(), is_ban_class(r), r["match"].as_str()) {
                (Some("user"), true, _) => {
                    "ban: the user is banned from the protected rooms where present"
                }
                (Some("server"), true, Some("hashed")) => {
                    "none: a hashed server rule names no server an ACL could deny"
                }
                (Some("server"), true, _) => "server ACL: the user's server is denied",
                (_, false, _) => "none: the recommendation is not ban or takedown",
                _ => "none",
            };
            f.insert("effect".into(), effect.into());
            let is_cited = (bans.first()).is_some_and(|b| {
                b["rule_room_id"] == r["room_id"] && b["rule_event_id"] == r["event_id"]
            });
            f.insert("cited".into(), is_cited.into());
            Value::Object(f)
        })
        .collect();
    let verdict = if !exists {
        format!("{instance} is not an instance (no manifest names it)")
    } else if !bans.is_empty() {
        let n = bans.len();
        format!(
            "banned in {n} protected room{}",
            if n == 1 { "" } else { "s" }
        )
    } else if bannable.is_empty() {
        let server_denied = (matching.iter()).any(|r| r["kind"] == "server" && is_ban_class(r));
        if matching.is_empty() {
            "not banned: no rule of the instance's lists matches the user".into()
        } else if server_denied {
            "not banned by a user rule; a server rule denies the user's server in the server ACL"
                .into()
        } else {
            "not banned: no matching rule is of class ban or takedown".into()
        }
    } else if !present_anywhere {
        "not banned: a ban rule matches, but the user is not present (join, invite or knock) in \
         any protected room"
            .into()
    } else {
        "not banned: a ban rule matches, but the user is already banned where present".into()
    };
    Ok(json!({
        "instance": instance,
        "user_id": user,
        "verdict": verdict,
        "banned": !bans.is_empty(),
        "protected_rooms": room_rows,
        "rules": rules,
        "cited": cited,
    }))
}

/// What `instance`'s intended server ACL holds and why (`prr explain INSTANCE --acl`): each
/// denied entity with the rules that deny it; the server rules left out (they match the
/// instance's own server, or are hashed and name no server); and per protected room whether
/// its ACL is in sync, what differs from the intent, and the outcome so far of setting it.
pub fn explain_acl(m: &mut Matrix, instance: &str) -> Result<Value, Error> {
    let (exists, rooms) = protected_rooms(m, instance)?;
    let intent = (m.show("server_acl", Some(instance), None)?.into_iter())
        .find(|r| r["instance"] == instance);
    let own = server_name(instance).map(normalize_server);
    let mut denied: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut left_out = Vec::new();
    for r in m.show("policy_list", Some(instance), None)? {
        if r["instance"] != instance || r["kind"] != "server" || !is_ban_class(&r) {
            continue;
        }
        let fields = Value::Object(rule_fields(&r));
        let Some(entity) = r["entity"].as_str().filter(|_| r["match"] != "hashed") else {
            left_out.push(json!({"rule": fields, "why": "hashed: an ACL needs the server's name"}));
            continue;
        };
        let matches_own = own.as_deref().is_some_and(|own| {
            server_entity_matches(
                match_kind(&r["match"]).unwrap_or(MatchKind::Literal),
                Some(entity),
                None,
                own,
            )
        });
        if matches_own {
            left_out.push(json!({"rule": fields, "why": "matches the instance's own server"}));
        } else {
            denied.entry(entity.to_string()).or_default().push(fields);
        }
    }
    let deny: Vec<Value> = (denied.into_iter())
        .map(|(entity, rules)| json!({"entity": entity, "rules": rules}))
        .collect();
    let sync: BTreeMap<String, Value> = (m.show("acl_sync", Some(instance), None)?.into_iter())
        .filter(|r| r["instance"] == instance)
        .filter_map(|r| Some((r["room_id"].as_str()?.to_string(), r["in_sync"].clone())))
        .collect();
    let mut outcomes = outcomes_by_room(m, instance, "server_acl", "")?;
    let mut room_rows = Vec::new();
    for room in &rooms {
        let current = (m.show("room_state", Some(room), None)?.into_iter())
            .find(|e| e["type"] == "m.room.server_acl" && e["state_key"] == "")
            .map(|e| e["content"].clone());
        let differs = intent.as_ref().map(|i| differences(i, current.as_ref()));
        room_rows.push(json!({
            "room_id": room,
            "in_sync": sync.get(room).cloned().unwrap_or(Value::Null),
            "current": current,
            "differs": differs,
            "outcome": outcomes.remove(room.as_str()),
        }));
    }
    Ok(json!({
        "instance": instance,
        "exists": exists,
        "intent": intent,
        "deny": deny,
        "left_out": left_out,
        "rooms": room_rows,
    }))
}

fn strings(v: &Value) -> BTreeSet<String> {
    (v.as_array().into_iter().flatten())
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// What a room's current ACL content lacks and has beyond the intent (`allow`, `deny` as sets;
/// `allow_ip_literals` missing = true), as `acl_sync` compares them.
fn differences(intent: &Value, current: Option<&Value>) -> Value {
    let Some(current) = current else {
        return json!({"no_acl_event": true});
    };
    let mut out = Map::new();
    for field in ["allow", "deny"] {
        let want = strings(&intent[field]);
        let have = strings(&current[field]);
        let missing: Vec<&String> = want.difference(&have).collect();
        let extra: Vec<&String> = have.difference(&want).collect();
        if !missing.is_empty() {
            out.insert(format!("{field}_missing"), json!(missing));
        }
        if !extra.is_empty() {
            out.insert(format!("{field}_extra"), json!(extra));
        }
    }
    let ip = current["allow_ip_literals"].as_bool().unwrap_or(true);
    if Some(ip) != intent["allow_ip_literals"].as_bool() {
        out.insert(
            "allow_ip_literals".into(),
            json!({"intended": intent["allow_ip_literals"], "current": ip}),
        );
    }
    Value::Object(out)
}
