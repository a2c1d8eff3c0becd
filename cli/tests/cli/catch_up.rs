//! `prr serve`'s catch-up against a fake homeserver on loopback: the rooms a manifest names are
//! joined and fetched as the instance's bot, the instance becomes caught up, a room the bot
//! may not join is said in the status, and a resync heals an event the homeserver never sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::serve::Server;
use super::support::{Scratch, serve_fake, until};

const AS_TOKEN: &str = "as-secret-7";

/// The fake homeserver's rooms (id -> state events) and what it was asked.
#[derive(Default)]
struct Fake {
    rooms: HashMap<String, Vec<Value>>,
    registered: Vec<String>,
    joins: Vec<(String, String)>,
}

type Shared = Arc<Mutex<Fake>>;

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {AS_TOKEN}"))
}

fn forbidden() -> Response {
    let body = json!({"errcode": "M_FORBIDDEN", "error": "not allowed"});
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

async fn register(State(f): State<Shared>, headers: HeaderMap, body: String) -> Response {
    if !authorized(&headers) {
        return forbidden();
    }
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "m.login.application_service");
    let user = v["username"].as_str().unwrap().to_string();
    f.lock().unwrap().registered.push(user.clone());
    axum::Json(json!({"user_id": format!("@{user}:x")})).into_response()
}

async fn join(
    State(f): State<Shared>,
    Path(room): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut f = f.lock().unwrap();
    if !authorized(&headers) || !f.rooms.contains_key(&room) {
        return forbidden();
    }
    f.joins.push((q["user_id"].clone(), room.clone()));
    axum::Json(json!({"room_id": room})).into_response()
}

async fn state(State(f): State<Shared>, Path(room): Path<String>, headers: HeaderMap) -> Response {
    let f = f.lock().unwrap();
    match f.rooms.get(&room) {
        Some(events) if authorized(&headers) => axum::Json(json!(events)).into_response(),
        _ => forbidden(),
    }
}

/// Starts the fake homeserver on a free loopback port, in its own thread; its base URL.
fn start_fake(f: Shared) -> String {
    let app = axum::Router::new()
        .route("/_matrix/client/v3/register", post(register))
        .route("/_matrix/client/v3/join/{room}", post(join))
        .route("/_matrix/client/v3/rooms/{room}/state", get(state))
        .with_state(f);
    serve_fake(app)
}

fn event(room: &str, id: &str, kind: &str, key: &str, content: Value) -> Value {
    json!({"event_id": id, "room_id": room, "type": kind, "state_key": key,
           "sender": "@mod:x", "origin_server_ts": 1, "content": content})
}

fn join_event(room: &str, id: &str, user: &str) -> Value {
    event(
        room,
        id,
        "m.room.member",
        user,
        json!({"membership": "join"}),
    )
}

#[test]
fn catch_up_fetches_the_rooms_an_instance_names_and_resync_heals() {
    let fake = Shared::default();
    {
        let mut f = fake.lock().unwrap();
        let rule =
            json!({"entity": "@spam*:evil.example", "recommendation": "m.ban", "reason": "spam"});
        f.rooms.insert(
            "!list:x".into(),
            vec![event("!list:x", "$r1", "m.policy.rule.user", "r1", rule)],
        );
        f.rooms.insert(
            "!room:x".into(),
            vec![
                join_event("!room:x", "$j1", "@spam1:evil.example"),
                join_event("!room:x", "$j2", "@ok:good.example"),
            ],
        );
    }
    let base = start_fake(fake.clone());
    let s = Scratch::new();
    let registration = format!(
        "id: prr\nurl: http://127.0.0.1:9\nas_token: {AS_TOKEN}\nhs_token: hs-secret\n\
         sender_localpart: prr\nnamespaces:\n  users: []\n"
    );
    let reg = s.file("registration.yaml", registration.as_bytes());
    let server = Server::start(
        &s,
        &[
            "--homeserver",
            &base,
            "--registration",
            reg.to_str().unwrap(),
            "--resync-every",
            "2",
        ],
    );
    let manifest = json!({"instances": [
        {"id": "@bot:x", "watch": ["!list:x"], "protect": ["!room:x"]},
        {"id": "@locked:x", "watch": [], "protect": ["!forbidden:x"]}
    ]});
    server.ingest(manifest.to_string().as_bytes());
    let caught_up = |server: &Server, who: &str| {
        let status = server.json("/v1/status");
        (status["instances"].as_array().unwrap().iter())
            .any(|i| i["id"] == who && i["caught_up"] == true)
    };
    until("@bot:x is caught up", || caught_up(&server, "@bot:x"));
    assert_eq!(server.banned_users(), ["@spam1:evil.example"]);
    {
        let f = fake.lock().unwrap();
        assert!(
            f.registered.contains(&"bot".to_string()),
            "{:?}",
            f.registered
        );
        for room in ["!list:x", "!room:x"] {
            assert!(
                f.joins.contains(&("@bot:x".into(), room.into())),
                "{room}: {:?}",
                f.joins
            );
        }
    }
    // The instance whose room cannot be joined is not caught up, and the status says why.
    let status = server.json("/v1/status");
    assert!(!caught_up(&server, "@locked:x"), "{status}");
    assert_eq!(status["caught_up"], false, "{status}");
    let failing = &status["sources"]["catch_up"]["failing"]["@locked:x"];
    assert!(
        failing.as_str().unwrap().contains("!forbidden:x"),
        "{status}"
    );
    // An event the homeserver never sent to prr: the next resync ingests it.
    fake.lock()
        .unwrap()
        .rooms
        .get_mut("!room:x")
        .unwrap()
        .push(join_event("!room:x", "$j3", "@spam2:evil.example"));
    until("the resync brings @spam2's join", || {
        server.banned_users() == ["@spam1:evil.example", "@spam2:evil.example"]
    });
    // What was current already was not ingested again: one delta per change, not per resync.
    let seqs: Vec<u64> = (server.rows("/v1/replicas/room_state/deltas?since=0").iter())
        .map(|d| d["seq"].as_u64().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
    assert!(distinct.len() <= 3, "{seqs:?}");
}
