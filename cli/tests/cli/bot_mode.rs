//! `prr serve` in bot mode against a fake homeserver on loopback: the Draupnir configuration
//! in the account data becomes the instance manifest, the bot joins what it names, `/sync`
//! brings the rooms' state and what happens next, a restart after SIGKILL resumes from the
//! committed `next_batch` with nothing lost or applied twice, a configuration change is
//! followed, and a refused token stops the start with a clear message.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::serve::Server;
use super::support::{Scratch, serve_fake, until};

const TOKEN: &str = "syt_bot_secret";
const BOT: &str = "@bot:x";

/// The fake homeserver: a clock that ticks at every change (the sync token), the state events
/// (with their tick), the rooms the bot is in (and the tick it joined at), its account data
/// (and the tick it changed at), and the `since` of every sync it was asked.
#[derive(Default)]
struct Fake {
    clock: usize,
    events: Vec<(usize, Value)>,
    joined: BTreeMap<String, usize>,
    joinable: BTreeSet<String>,
    account_data: HashMap<String, (Value, usize)>,
    syncs: Vec<Option<String>>,
}

type Shared = Arc<Mutex<Fake>>;

impl Fake {
    fn tick(&mut self) -> usize {
        self.clock += 1;
        self.clock
    }

    fn add(&mut self, room: &str, id: &str, kind: &str, key: &str, content: Value) {
        let at = self.tick();
        let event = json!({"event_id": id, "room_id": room, "type": kind, "state_key": key,
            "sender": "@mod:x", "origin_server_ts": 1, "content": content});
        self.events.push((at, event));
    }

    fn set_account_data(&mut self, kind: &str, content: Value) {
        let at = self.tick();
        self.account_data.insert(kind.into(), (content, at));
    }

    fn join(&mut self, room: &str) {
        if !self.joined.contains_key(room) {
            let at = self.tick();
            self.joined.insert(room.to_string(), at);
        }
    }

    /// A sync response after tick `since` (`None`: initial).
    fn sync(&self, since: Option<usize>) -> Value {
        let after = since.unwrap_or(0);
        let mut join = serde_json::Map::new();
        for (room, &joined_at) in &self.joined {
            let in_room = (self.events.iter()).filter(|(_, e)| e["room_id"] == room.as_str());
            let strip = |(_, e): &(usize, Value)| {
                let mut e = e.clone();
                e.as_object_mut().unwrap().remove("room_id");
                e
            };
            // A room joined after `since` (or the initial sync): its whole state.
            let (state, timeline): (Vec<Value>, Vec<Value>) =
                if since.is_none() || joined_at > after {
                    (in_room.map(strip).collect(), vec![])
                } else {
                    let new = in_room.filter(|(at, _)| *at > after).map(strip);
                    (vec![], new.collect())
                };
            if !state.is_empty() || !timeline.is_empty() {
                join.insert(
                    room.clone(),
                    json!({"state": {"events": state}, "timeline": {"events": timeline}}),
                );
            }
        }
        let account_data: Vec<Value> = (self.account_data.iter())
            .filter(|(_, (_, at))| since.is_none() || *at > after)
            .map(|(k, (c, _))| json!({"type": k, "content": c}))
            .collect();
        json!({"next_batch": self.clock.to_string(), "rooms": {"join": join},
               "account_data": {"events": account_data}})
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn refused() -> Response {
    let body = json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."});
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

async fn whoami(headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return refused();
    }
    axum::Json(json!({"user_id": BOT})).into_response()
}

async fn account_data(
    State(f): State<Shared>,
    Path((user, kind)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return refused();
    }
    assert_eq!(user, BOT);
    match f.lock().unwrap().account_data.get(&kind) {
        Some((content, _)) => axum::Json(content.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"errcode": "M_NOT_FOUND", "error": "none"})),
        )
            .into_response(),
    }
}

async fn join(State(f): State<Shared>, Path(room): Path<String>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return refused();
    }
    let mut f = f.lock().unwrap();
    if !f.joinable.contains(&room) {
        let body = json!({"errcode": "M_FORBIDDEN", "error": "not invited"});
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    f.join(&room);
    axum::Json(json!({"room_id": room})).into_response()
}

async fn joined_rooms(State(f): State<Shared>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return refused();
    }
    let rooms: Vec<String> = f.lock().unwrap().joined.keys().cloned().collect();
    axum::Json(json!({"joined_rooms": rooms})).into_response()
}

async fn sync(
    State(f): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return refused();
    }
    let since = q.get("since").cloned();
    f.lock().unwrap().syncs.push(since.clone());
    let since: Option<usize> = since.map(|s| s.parse().unwrap());
    // Long-poll (briefly) while there is nothing after `since`.
    let deadline = Instant::now() + Duration::from_millis(300);
    loop {
        {
            let f = f.lock().unwrap();
            let nothing_new = since == Some(f.clock);
            if !nothing_new || Instant::now() >= deadline {
                return axum::Json(f.sync(since)).into_response();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start_fake(f: Shared) -> String {
    let app = axum::Router::new()
        .route("/_matrix/client/v3/account/whoami", get(whoami))
        .route(
            "/_matrix/client/v3/user/{user}/account_data/{kind}",
            get(account_data),
        )
        .route("/_matrix/client/v3/join/{room}", post(join))
        .route("/_matrix/client/v3/joined_rooms", get(joined_rooms))
        .route("/_matrix/client/v3/sync", get(sync))
        .with_state(f);
    serve_fake(app)
}

fn member(f: &mut Fake, room: &str, id: &str, user: &str) {
    f.add(
        room,
        id,
        "m.room.member",
        user,
        json!({"membership": "join"}),
    );
}

fn bot(s: &Scratch, base: &str, token: &std::path::Path) -> Server {
    Server::start(
        s,
        &[
            "--homeserver",
            base,
            "--access-token-file",
            token.to_str().unwrap(),
        ],
    )
}

#[test]
fn bot_mode_follows_sync_resumes_after_sigkill_and_follows_its_configuration() {
    let fake = Shared::default();
    {
        let mut f = fake.lock().unwrap();
        let rule =
            json!({"entity": "@spam*:evil.example", "recommendation": "m.ban", "reason": "spam"});
        f.add("!list:x", "$rule", "m.policy.rule.user", "r1", rule);
        member(&mut f, "!room:x", "$j1", "@spam1:evil.example");
        member(&mut f, "!room:x", "$j2", "@ok:good.example");
        // The bot is in the list; the configuration names !room:x, which it joins itself.
        f.join("!list:x");
        f.joinable = ["!list:x", "!room:x", "!room2:x"].map(String::from).into();
        f.set_account_data(
            "org.matrix.mjolnir.watched_lists",
            json!({"references": ["https://matrix.to/#/!list:x?via=x"]}),
        );
        f.set_account_data(
            "org.matrix.mjolnir.protected_rooms",
            json!({"rooms": ["!room:x"]}),
        );
    }
    let base = start_fake(fake.clone());
    let s = Scratch::new();
    let token = s.file("token", format!("{TOKEN}\n").as_bytes());
    let server = bot(&s, &base, &token);
    let caught_up = |server: &Server| {
        let status = server.json("/v1/status");
        (status["instances"].as_array().unwrap().iter())
            .any(|i| i["id"] == BOT && i["caught_up"] == true)
    };
    until("the bot is caught up", || caught_up(&server));
    until("@spam1 is banned", || {
        server.banned_users() == ["@spam1:evil.example"]
    });
    let status = server.json("/v1/status");
    assert_eq!(status["sources"]["sync"]["user"], BOT, "{status}");
    assert_eq!(status["sources"]["sync"]["state"], "syncing", "{status}");
    assert!(
        status["sources"]["sync"]["position"].is_string(),
        "{status}"
    );
    // What happens next comes through incremental syncs.
    member(
        &mut fake.lock().unwrap(),
        "!room:x",
        "$j3",
        "@spam2:evil.example",
    );
    until("@spam2 is banned", || server.banned_users().len() == 2);
    // SIGKILL; an event while it is down; the restart resumes from the committed position.
    server.kill();
    let syncs_before = fake.lock().unwrap().syncs.len();
    member(
        &mut fake.lock().unwrap(),
        "!room:x",
        "$j4",
        "@spam3:evil.example",
    );
    let server = bot(&s, &base, &token);
    until("@spam3 is banned", || server.banned_users().len() == 3);
    // Caught up again, though the list had nothing new: the bot knows it is in it.
    until("the bot is caught up after the restart", || {
        caught_up(&server)
    });
    assert_eq!(
        server.json("/v1/status")["sources"]["sync"]["resumed"],
        true
    );
    let first_after_restart = fake.lock().unwrap().syncs[syncs_before].clone();
    assert!(
        first_after_restart.is_some(),
        "the restart resumed from a stored next_batch"
    );
    // Each event once: source_events holds each event ID once.
    let seen = server.rows("/v1/replicas/source_events");
    let ids: BTreeSet<&str> = seen
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), seen.len(), "{seen:?}");
    assert_eq!(ids, ["$j1", "$j2", "$j3", "$j4", "$rule"].into());
    let positions = server.rows("/v1/replicas/source_positions");
    assert_eq!(positions.len(), 1, "{positions:?}");
    assert_eq!(positions[0]["source"], format!("sync:{BOT}"));
    // The configuration changes: a second protected room; the bot joins it and follows it.
    {
        let mut f = fake.lock().unwrap();
        member(&mut f, "!room2:x", "$k1", "@spam9:evil.example");
        f.set_account_data(
            "org.matrix.mjolnir.protected_rooms",
            json!({"rooms": ["!room:x", "!room2:x"]}),
        );
    }
    until("@spam9 in !room2:x is banned", || {
        server.banned_users().len() == 4
    });
    let protect: Vec<Value> = (server.rows("/v1/replicas/instances").into_iter())
        .filter(|r| r["relation"] == "protect")
        .collect();
    assert_eq!(protect.len(), 2, "{protect:?}");
}

#[test]
fn a_refused_token_stops_the_start_with_a_clear_message() {
    let base = start_fake(Shared::default());
    let s = Scratch::new();
    let token = s.file("token", b"syt_wrong_secret");
    let out = s.prr(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--homeserver",
        &base,
        "--access-token-file",
        token.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("refused the access token"), "{err}");
    assert!(err.contains("M_UNKNOWN_TOKEN"), "{err}");
    assert!(
        !err.contains("syt_wrong_secret"),
        "the token is never printed: {err}"
    );
}
