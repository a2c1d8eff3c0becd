//! `prr enact` against a fake homeserver on loopback: what the homeserver answers decides each
//! outcome (a ban done, a user banned already, a refusal, a rate limit honoured, a server error
//! retried), a second run does nothing, `--retry-failed` tries a refusal again, `--dry-run`
//! changes nothing, and the ACL set is the intent. The tests against a real Synapse are with
//! the other homeserver tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use super::serve::Server;
use super::support::{Scratch, serve_fake, until};

const AS_TOKEN: &str = "as-secret-9";
const BOT: &str = "@bot:x";
const ROOM: &str = "!room:x";
const LIST: &str = "!list:x";

/// The fake homeserver: rooms' state, and every ban and ACL asked (with when).
#[derive(Default)]
struct Fake {
    rooms: HashMap<String, Vec<Value>>,
    bans: Vec<(String, String, Instant)>,
    acls: Vec<(String, Value)>,
    /// User -> how the ban endpoint answers: "ok", "forbidden", "banned" (a 403, the user
    /// being banned already: its member state says so, not the room's `/state`), "429"
    /// (once, then ok), "500" (once, then ok), "slow" (ok after 300 ms).
    behaviour: HashMap<String, &'static str>,
    /// Users whose one-off failure happened.
    failed_once: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn error(status: StatusCode, errcode: &str, extra: Value) -> Response {
    let mut body = json!({"errcode": errcode, "error": format!("fake {errcode}")});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    (status, axum::Json(body)).into_response()
}

fn authorized(headers: &HeaderMap, q: &HashMap<String, String>) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {AS_TOKEN}"))
        && q.get("user_id").map(String::as_str) == Some(BOT)
}

fn member(room: &str, id: &str, user: &str, membership: &str) -> Value {
    json!({"event_id": id, "room_id": room, "type": "m.room.member", "state_key": user,
           "sender": user, "origin_server_ts": 1, "content": {"membership": membership}})
}

async fn ok_json(_: State<Shared>) -> Response {
    axum::Json(json!({})).into_response()
}

async fn join(Path(room): Path<String>) -> Response {
    axum::Json(json!({"room_id": room})).into_response()
}

async fn state(
    State(f): State<Shared>,
    Path(room): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers, &q) {
        return error(StatusCode::FORBIDDEN, "M_FORBIDDEN", json!({}));
    }
    let f = f.lock().unwrap();
    axum::Json(json!(f.rooms.get(&room).cloned().unwrap_or_default())).into_response()
}

async fn member_state(
    State(f): State<Shared>,
    Path((room, user)): Path<(String, String)>,
) -> Response {
    let f = f.lock().unwrap();
    // The homeserver banned this one already, though `/state` (stale) says otherwise.
    if f.behaviour.get(&user) == Some(&"banned") {
        return axum::Json(json!({"membership": "ban"})).into_response();
    }
    let found = (f.rooms.get(&room).into_iter().flatten())
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == user.as_str());
    match found {
        Some(e) => axum::Json(e["content"].clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "M_NOT_FOUND", json!({})),
    }
}

async fn ban(
    State(fake): State<Shared>,
    Path(room): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !authorized(&headers, &q) {
        return error(StatusCode::FORBIDDEN, "M_FORBIDDEN", json!({}));
    }
    let body: Value = serde_json::from_str(&body).unwrap();
    let user = body["user_id"].as_str().unwrap().to_string();
    let slow = fake.lock().unwrap().behaviour.get(&user) == Some(&"slow");
    if slow {
        // Lets a test change the intents while a pass is busy.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut f = fake.lock().unwrap();
    f.bans
        .push((user.clone(), body["reason"].to_string(), Instant::now()));
    let behaviour = f.behaviour.get(&user).copied().unwrap_or("ok");
    let first = !f.failed_once.contains(&user);
    match behaviour {
        "forbidden" => return error(StatusCode::FORBIDDEN, "M_FORBIDDEN", json!({})),
        "banned" => return error(StatusCode::FORBIDDEN, "M_FORBIDDEN", json!({})),
        "429" if first => {
            f.failed_once.push(user);
            let extra = json!({"retry_after_ms": 700});
            return error(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", extra);
        }
        "500" if first => {
            f.failed_once.push(user);
            return error(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", json!({}));
        }
        _ => {}
    }
    let id = format!("$ban-{}", f.bans.len());
    let events = f.rooms.get_mut(&room).unwrap();
    events.retain(|e| !(e["type"] == "m.room.member" && e["state_key"] == user.as_str()));
    events.push(member(&room, &id, &user, "ban"));
    axum::Json(json!({})).into_response()
}

async fn set_acl(
    State(f): State<Shared>,
    Path(room): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if !authorized(&headers, &q) {
        return error(StatusCode::FORBIDDEN, "M_FORBIDDEN", json!({}));
    }
    let content: Value = serde_json::from_str(&body).unwrap();
    let mut f = f.lock().unwrap();
    f.acls.push((room.clone(), content.clone()));
    let id = format!("$acl-{}", f.acls.len());
    let events = f.rooms.get_mut(&room).unwrap();
    events.retain(|e| e["type"] != "m.room.server_acl");
    events.push(
        json!({"event_id": id, "room_id": room, "type": "m.room.server_acl",
        "state_key": "", "sender": BOT, "origin_server_ts": 2, "content": content}),
    );
    axum::Json(json!({"event_id": id})).into_response()
}

fn start_fake(f: Shared) -> String {
    let app = axum::Router::new()
        .route("/_matrix/client/v3/register", post(ok_json))
        .route("/_matrix/client/v3/join/{room}", post(join))
        .route("/_matrix/client/v3/rooms/{room}/state", get(state))
        .route(
            "/_matrix/client/v3/rooms/{room}/state/m.room.member/{user}",
            get(member_state),
        )
        .route(
            "/_matrix/client/v3/rooms/{room}/state/m.room.server_acl/",
            put(set_acl),
        )
        .route("/_matrix/client/v3/rooms/{room}/ban", post(ban))
        .with_state(f);
    serve_fake(app)
}

/// A policy list banning `@spam*:evil.example` and the server `evil.example`, and a protected
/// room with five spammers (each answered differently) and one ordinary user.
fn world() -> (Shared, Scratch, Vec<String>) {
    let fake = Shared::default();
    {
        let mut f = fake.lock().unwrap();
        let rule = |key: &str, kind: &str, entity: &str| {
            json!({"event_id": format!("$r-{key}"), "room_id": LIST, "type": kind,
                   "state_key": key, "sender": "@mod:x", "origin_server_ts": 1,
                   "content": {"entity": entity, "recommendation": "m.ban", "reason": "spam"}})
        };
        f.rooms.insert(
            LIST.into(),
            vec![
                rule("u", "m.policy.rule.user", "@spam*:evil.example"),
                rule("s", "m.policy.rule.server", "evil.example"),
            ],
        );
        let mut room = vec![member(ROOM, "$ok", "@ok:good.example", "join")];
        for (user, behaviour) in [
            ("@spam-ok:evil.example", "ok"),
            ("@spam-banned:evil.example", "banned"),
            ("@spam-forbidden:evil.example", "forbidden"),
            ("@spam-429:evil.example", "429"),
            ("@spam-500:evil.example", "500"),
        ] {
            room.push(member(ROOM, &format!("$j-{user}"), user, "join"));
            f.behaviour.insert(user.into(), behaviour);
        }
        f.rooms.insert(ROOM.into(), room);
    }
    let base = start_fake(fake.clone());
    let s = Scratch::new();
    let manifest = json!({"instances": [{"id": BOT, "watch": [LIST], "protect": [ROOM]}]});
    let path = s.file("manifest.json", manifest.to_string().as_bytes());
    s.ok(&["ingest", path.to_str().unwrap()]);
    let registration = format!(
        "id: prr\nurl: null\nas_token: {AS_TOKEN}\nhs_token: hs-secret\nsender_localpart: prr\n"
    );
    let reg = s.file("registration.yaml", registration.as_bytes());
    let args = vec![
        "enact".to_string(),
        "--homeserver".into(),
        base,
        "--registration".into(),
        reg.to_str().unwrap().to_string(),
        "--format".into(),
        "ndjson".into(),
    ];
    (fake, s, args)
}

fn lines(out: &[u8]) -> Vec<Value> {
    (String::from_utf8_lossy(out).lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `(target, status, errcode, attempts)` of each outcome, sorted.
fn summary(rows: &[Value]) -> Vec<(String, String, Value, u64)> {
    let mut got: Vec<_> = (rows.iter())
        .map(|r| {
            (
                r["target"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
                r["error"]["errcode"].clone(),
                r["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| (&a.0, &a.1, a.3).cmp(&(&b.0, &b.1, b.3)));
    got
}

#[test]
fn enact_bans_and_sets_the_acl_recording_each_outcome_once() {
    let (fake, s, args) = world();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // A dry run (no catch-up: the store knows no rule and no member yet, so the intended
    // ACL denies nothing) lists the one action and changes nothing.
    let before = std::fs::read(s.store()).unwrap();
    let dry = s.prr(&["enact", "--dry-run", "--format", "ndjson"]);
    assert!(dry.status.success());
    let listed = lines(&dry.stdout);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["action"], "server_acl");
    assert_eq!(listed[0]["content"]["deny"], json!([]));
    assert_eq!(std::fs::read(s.store()).unwrap(), before);

    let out = s.prr(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refusal fails the run: {stderr}"
    );
    assert!(stderr.contains("1 action(s) refused"), "{stderr}");
    let printed = lines(&out.stdout);
    let want = vec![
        ("".to_string(), "done".to_string(), Value::Null, 1),
        (
            "@spam-429:evil.example".into(),
            "done".into(),
            Value::Null,
            1,
        ),
        (
            "@spam-500:evil.example".into(),
            "done".into(),
            Value::Null,
            1,
        ),
        (
            "@spam-banned:evil.example".into(),
            "done".into(),
            Value::Null,
            1,
        ),
        (
            "@spam-forbidden:evil.example".into(),
            "failed".into(),
            json!("M_FORBIDDEN"),
            1,
        ),
        (
            "@spam-ok:evil.example".into(),
            "done".into(),
            Value::Null,
            1,
        ),
    ];
    assert_eq!(summary(&printed), want);
    // What was printed is what was recorded.
    let outcomes = s.show("outcomes");
    assert_eq!(summary(&outcomes), want);
    let forbidden = (outcomes.iter()).find(|o| o["status"] == "failed").unwrap();
    assert_eq!(forbidden["error"]["error"], "fake M_FORBIDDEN");
    assert_eq!(forbidden["action"], "ban");
    for o in &outcomes {
        assert!(o["intent_seq"].as_u64().unwrap() >= 1, "{o}");
        assert!(o["at"].as_i64().unwrap() > 1_700_000_000_000, "{o}");
    }

    {
        let f = fake.lock().unwrap();
        // The ordinary user was never banned; each ban carries the rule's reason.
        assert!(f.bans.iter().all(|(u, _, _)| u.starts_with("@spam-")));
        assert!(f.bans.iter().all(|(_, why, _)| why == "\"spam\""));
        // The rate limit was honoured: the second try came after retry_after_ms.
        let tries: Vec<Instant> = (f.bans.iter())
            .filter(|(u, _, _)| u == "@spam-429:evil.example")
            .map(|(_, _, t)| *t)
            .collect();
        assert_eq!(tries.len(), 2);
        assert!(tries[1] - tries[0] >= Duration::from_millis(700));
        let server_error = (f.bans.iter())
            .filter(|(u, _, _)| u == "@spam-500:evil.example")
            .count();
        assert_eq!(server_error, 2, "a 5xx is retried");
        assert_eq!(
            f.acls,
            vec![(
                ROOM.to_string(),
                json!({"allow": ["*"], "deny": ["evil.example"], "allow_ip_literals": false})
            )]
        );
    }
    // Pending: only the refused ban (it is not done).
    let pending = s.show("pending");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["target"], "@spam-forbidden:evil.example");

    // A second run catches up (the bans and the ACL are now in the room's state), does
    // nothing and records nothing: the refusal is not retried for the same intent.
    let calls = fake.lock().unwrap().bans.len();
    let again = s.prr(&args);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(lines(&again.stdout).is_empty());
    assert_eq!(fake.lock().unwrap().bans.len(), calls);
    assert_eq!(summary(&s.show("outcomes")), want);
    assert_eq!(s.show("acl_sync")[0]["in_sync"], true);

    // Explain shows the outcome so far, of a ban and of the ACL.
    let why: Value = serde_json::from_str(&s.ok(&[
        "explain",
        BOT,
        "@spam-forbidden:evil.example",
        "--format",
        "json",
    ]))
    .unwrap();
    let outcome = &why["protected_rooms"][0]["outcome"];
    assert_eq!(outcome["status"], "failed", "{why}");
    assert_eq!(outcome["error"]["errcode"], "M_FORBIDDEN");
    let text = s.ok(&[
        "explain",
        BOT,
        "@spam-forbidden:evil.example",
        "--format",
        "text",
    ]);
    assert!(
        text.contains("outcome: failed (1 attempt, M_FORBIDDEN: fake M_FORBIDDEN)"),
        "{text}"
    );
    let acl: Value =
        serde_json::from_str(&s.ok(&["explain", BOT, "--acl", "--format", "json"])).unwrap();
    assert_eq!(acl["rooms"][0]["outcome"]["status"], "done", "{acl}");
    assert_eq!(acl["rooms"][0]["in_sync"], true);

    // An operator asks: the refusal is tried again (a second attempt).
    let mut retry = args.clone();
    retry.push("--retry-failed");
    let out = s.prr(&retry);
    assert_eq!(out.status.code(), Some(1));
    let printed = summary(&lines(&out.stdout));
    assert_eq!(
        printed,
        vec![(
            "@spam-forbidden:evil.example".to_string(),
            "failed".to_string(),
            json!("M_FORBIDDEN"),
            2
        )]
    );
}

#[test]
fn enact_refuses_an_unknown_instance_and_a_missing_store() {
    let (_fake, s, args) = world();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.insert(1, "@nobody:x");
    let out = s.prr(&args);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("@nobody:x") && stderr.contains("no such instance"),
        "{stderr}"
    );

    let empty = Scratch::new();
    let out = empty.prr(&args);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store"));
    assert!(!empty.store().exists());
}

/// `serve --enact`: an intent that enters `pending` and leaves it while a pass is busy with
/// other bans (a rule added, then removed) is never enacted and gets a `withdrawn` outcome.
#[test]
fn serve_withdraws_an_intent_that_came_and_went_during_a_pass() {
    let (fake, s, args) = world();
    {
        let mut f = fake.lock().unwrap();
        for (_, behaviour) in f.behaviour.iter_mut() {
            *behaviour = "slow";
        }
    }
    let hs = args[2].clone();
    let reg = args[4].clone();
    let server = Server::start(
        &s,
        &["--homeserver", &hs, "--registration", &reg, "--enact"],
    );
    // The first bans are under way: 5 of 300 ms each.
    until("a first ban", || !fake.lock().unwrap().bans.is_empty());
    let late = "@late:bad.example";
    let join = member(ROOM, "$late-join", late, "join");
    let rule = |content: Value| {
        json!({"event_id": format!("$late-rule-{}", content.as_object().unwrap().len()),
               "room_id": LIST, "type": "m.policy.rule.user", "state_key": "late",
               "sender": "@mod:x", "origin_server_ts": 5, "content": content})
    };
    let ban_rule = rule(json!({"entity": late, "recommendation": "m.ban", "reason": "late"}));
    server.ingest(json!([join, ban_rule]).to_string().as_bytes());
    let pending = server.rows(&format!("/v1/replicas/pending?partition={}", "%40bot%3Ax"));
    assert!(
        pending.iter().any(|p| p["target"] == late),
        "the late ban is pending: {pending:?}"
    );
    server.ingest(json!([rule(json!({}))]).to_string().as_bytes());
    let outcome_of = |user: &str| {
        (server.rows("/v1/replicas/outcomes").into_iter()).find(|o| o["target"] == user)
    };
    until("the late intent withdrawn", || {
        outcome_of(late).is_some_and(|o| o["status"] == "withdrawn")
    });
    until("the batch done", || {
        let done = (server.rows("/v1/replicas/outcomes").iter())
            .filter(|o| o["status"] == "done" && o["action"] == "ban")
            .count();
        done == 5
    });
    let f = fake.lock().unwrap();
    assert!(f.bans.iter().all(|(u, _, _)| u != late), "never banned");
    assert_eq!(outcome_of(late).unwrap()["attempts"], 0);
}
