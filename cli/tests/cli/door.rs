//! Checks at the door (`prr check join|invite|sender`, `POST /v1/check/*`): every answer
//! equals an oracle made from `prr explain` (which matches by scanning the rules) over the
//! instances protecting the room; a rule added or removed is in force for the next check;
//! bad bodies are 400s.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::serve::Server;
use super::support::{demo_store, eventually};

fn check(server: &Server, path: &str, body: Value) -> Value {
    let (status, text) = server.post(path, body.to_string().as_bytes());
    assert_eq!(status, 200, "{path} {body}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// What the check must answer for `user` in `room`: the ban or takedown rule with the smallest
/// `(room_id, event_id)` that `prr explain` finds for any instance protecting the room.
fn oracle(
    server: &Server,
    protectors: &BTreeMap<String, BTreeSet<String>>,
    user: &str,
    room: &str,
) -> Value {
    let mut best: Option<(String, String, String, Value)> = None;
    for instance in protectors.get(room).into_iter().flatten() {
        let q = format!(
            "/v1/explain?instance={}&user={}",
            urlencode(instance),
            urlencode(user)
        );
        for r in server.json(&q)["rules"].as_array().unwrap() {
            if !matches!(r["class"].as_str(), Some("ban" | "takedown")) {
                continue;
            }
            let order = (r["room_id"].to_string(), r["event_id"].to_string());
            if best
                .as_ref()
                .is_none_or(|b| order < (b.0.clone(), b.1.clone()))
            {
                let mut shown = serde_json::Map::new();
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
                best = Some((order.0, order.1, instance.clone(), Value::Object(shown)));
            }
        }
    }
    match best {
        None => json!({"allow": true}),
        Some((_, _, instance, rule)) => {
            json!({"allow": false, "instance": instance, "rule": rule, "user_id": user})
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn protectors(server: &Server) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in server.rows("/v1/replicas/instances") {
        if r["relation"] == "protect" {
            out.entry(r["room_id"].as_str().unwrap().into())
                .or_default()
                .insert(r["instance"].as_str().unwrap().into());
        }
    }
    out
}

#[test]
fn every_check_equals_the_oracle_and_follows_the_rules() {
    let s = demo_store();
    let server = Server::start(&s, &[]);
    let protectors = protectors(&server);
    let mut users: BTreeSet<String> = (server.rows("/v1/replicas/room_members").iter())
        .map(|r| r["user_id"].as_str().unwrap().to_string())
        .collect();
    // Strangers: a server glob, a user glob, the own server, nothing.
    for u in [
        "@x:a.spam.example",
        "@spamfoo:any.org",
        "@carol:example.org",
        "@friend:example.net",
        "@Spam:SPAM.EXAMPLE:8448",
    ] {
        users.insert(u.into());
    }
    let mut rooms: Vec<String> = protectors.keys().cloned().collect();
    rooms.push("!unprotected:example.org".into());
    let mut refused = 0;
    for room in &rooms {
        for user in &users {
            let want = oracle(&server, &protectors, user, room);
            let got = check(
                &server,
                "/v1/check/join",
                json!({"user_id": user, "room_id": room}),
            );
            assert_eq!(got, want, "{user} in {room}");
            let sender = check(
                &server,
                "/v1/check/sender",
                json!({"user_id": user, "room_id": room}),
            );
            assert_eq!(sender, want, "{user} sending in {room}");
            refused += usize::from(got["allow"] == false);
        }
    }
    assert!(refused > 20, "{refused}");
    // An invite is refused when the invitee or the inviter is.
    let room = "!demo-room:example.org";
    let invite = |inviter: &str, invitee: &str| {
        check(
            &server,
            "/v1/check/invite",
            json!({"inviter": inviter, "invitee": invitee, "room_id": room}),
        )
    };
    assert_eq!(
        invite("@alice:example.net", "@friend:example.net"),
        json!({"allow": true})
    );
    assert_eq!(
        invite("@alice:example.net", "@troll:troll.example")["user_id"],
        "@troll:troll.example"
    );
    assert_eq!(
        invite("@troll:troll.example", "@friend:example.net")["user_id"],
        "@troll:troll.example"
    );

    // A rule added is in force for the next check; redacted, it refuses no more.
    let who = json!({"user_id": "@friend:example.net", "room_id": room});
    assert_eq!(
        check(&server, "/v1/check/join", who.clone()),
        json!({"allow": true})
    );
    server.ingest(
        br#"[{"event_id": "$friendban", "room_id": "!demo-policies:example.org",
              "type": "m.policy.rule.user", "state_key": "rule:friend", "sender": "@mod:example.org",
              "content": {"entity": "@friend:*", "recommendation": "m.ban", "reason": "new"}}]"#,
    );
    let got = check(&server, "/v1/check/join", who.clone());
    assert_eq!(got["rule"]["reason"], "new", "{got}");
    server.ingest(
        br#"[{"event_id": "$unban", "room_id": "!demo-policies:example.org",
              "type": "m.room.redaction", "redacts": "$friendban", "sender": "@mod:example.org",
              "content": {}}]"#,
    );
    assert_eq!(
        check(&server, "/v1/check/join", who.clone()),
        json!({"allow": true})
    );
    // The instance stops protecting the room: nobody is refused there.
    server.ingest(br#"{"instances": [{"id": "@draupnir:example.org", "watch": ["!demo-policies:example.org"], "protect": []}]}"#);
    let troll = json!({"user_id": "@troll:troll.example", "room_id": room});
    assert_eq!(
        check(&server, "/v1/check/join", troll),
        json!({"allow": true})
    );

    for (path, body) in [
        ("/v1/check/join", "not json"),
        ("/v1/check/join", "[]"),
        ("/v1/check/join", r#"{"room_id": "!r:x"}"#),
        (
            "/v1/check/invite",
            r#"{"inviter": "@a:x", "room_id": "!r:x"}"#,
        ),
        ("/v1/check/sender", r#"{"user_id": 5, "room_id": "!r:x"}"#),
    ] {
        let (status, text) = server.post(path, body.as_bytes());
        assert_eq!(status, 400, "{path} {body}: {text}");
    }
}

#[test]
fn the_cli_checks_as_serve_does() {
    let s = demo_store();
    let room = "!demo-room:example.org";
    let cli = |args: &[&str]| -> Value {
        let mut all = vec!["check"];
        all.extend(args);
        serde_json::from_str(&s.ok(&all)).unwrap()
    };
    let join = cli(&["join", "@evil:spam.example", room]);
    assert_eq!(join["rule"]["match"], "hashed", "{join}");
    let invite = cli(&["invite", "@alice:example.org", "@troll:troll.example", room]);
    let sender = cli(&["sender", "@friend:example.net", room]);
    assert_eq!(sender, json!({"allow": true}));
    let server = Server::start(&s, &[]);
    assert_eq!(
        check(
            &server,
            "/v1/check/join",
            json!({"user_id": "@evil:spam.example", "room_id": room})
        ),
        join
    );
    assert_eq!(
        check(
            &server,
            "/v1/check/invite",
            json!({"inviter": "@alice:example.org", "invitee": "@troll:troll.example", "room_id": room})
        ),
        invite
    );
}

/// The nice values and scheduling policies of `pid`'s threads named `name` (Linux's `/proc`).
#[cfg(target_os = "linux")]
fn thread_priorities(pid: u32, name: &str) -> Vec<(i32, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(name) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // After the `(comm)` field: state is field 3, nice field 19, policy field 41.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        out.push((fields[16].parse().unwrap(), fields[38].parse().unwrap()));
    }
    out
}

/// Linux's `SCHED_OTHER`.
#[cfg(target_os = "linux")]
const NORMAL: u32 = 0;

/// Linux's `SCHED_IDLE`.
#[cfg(target_os = "linux")]
const IDLE: u32 = 5;

#[cfg(target_os = "linux")]
#[test]
fn serve_runs_its_bulk_threads_at_a_lower_priority() {
    let s = demo_store();
    let own = thread_priorities(std::process::id(), "")
        .into_iter()
        .map(|(nice, _)| nice)
        .min()
        .unwrap();
    for (args, nice, policy) in [
        (&[][..], 10.max(own), NORMAL),
        (&["--bulk-priority", "idle"][..], own, IDLE),
        (&["--bulk-priority", "3"][..], 3.max(own), NORMAL),
        (&["--bulk-priority", "0"][..], own, NORMAL),
    ] {
        let server = Server::start(&s, args);
        let expect = (nice, policy);
        // A new thread names itself when it first runs (until then it has its parent's name):
        // polled until the names settle; a priority, once set, does not change.
        eventually(
            &format!("the threads' priorities with {args:?}"),
            10,
            || {
                let core = thread_priorities(server.pid(), "prr-core");
                let workers = thread_priorities(server.pid(), "timely:work");
                let http = thread_priorities(server.pid(), "tokio-rt-worker");
                let holds = core == [expect]
                    && !workers.is_empty()
                    && workers.iter().all(|p| *p == expect)
                    && !http.is_empty()
                    && http.iter().all(|p| *p == (own, NORMAL));
                holds
                    .then_some(())
                    .ok_or(format!("core {core:?}, workers {workers:?}, http {http:?}"))
            },
        );
    }
    for bad in ["20", "low"] {
        let out = s.prr(&["serve", "--bulk-priority", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--bulk-priority"), "{err}");
        assert!(
            err.contains("expected `idle` or a nice value from 0 to 19"),
            "{err}"
        );
    }
}
