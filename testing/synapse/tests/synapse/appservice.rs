//! The appservice registration: Synapse loads it, the `as_token` masquerades, and Synapse
//! pushes transactions with the `hs_token` to the registration's URL.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use prr_synapse_harness::{
    AppserviceRegistration, Method, PolicyRule, RoomOptions, RuleKind, Synapse, SynapseConfig,
    free_port,
};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn registration_loads_and_the_as_token_masquerades_with_a_closed_url() -> TestResult {
    // Nothing listens at the URL: Synapse starts all the same (prr serve may come up later).
    let url = format!("http://127.0.0.1:{}", free_port()?);
    let reg = AppserviceRegistration::new("as.test", Some(&url));
    let synapse = Synapse::start(
        SynapseConfig::new()
            .with_server_name("as.test")
            .with_appservice(reg.clone()),
    )?;
    let file = synapse.appservice_file().expect("written");
    assert_eq!(std::fs::read_to_string(file)?, reg.to_yaml());

    let sender = synapse.appservice_client("@prr:as.test")?;
    assert_eq!(sender.whoami()?, "@prr:as.test");
    let bot = synapse.register_appservice_user("prr_bot")?;
    assert_eq!(bot.whoami()?, "@prr_bot:as.test");
    // Registering it again is fine (the harness tolerates M_USER_IN_USE).
    assert_eq!(
        synapse.register_appservice_user("prr_bot")?.user_id(),
        bot.user_id()
    );

    // Outside the namespace, masquerading is refused.
    synapse.register("alice", "pw", false)?;
    let err = synapse
        .appservice_client("@alice:as.test")?
        .whoami()
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    // Ordinary registration is closed; only the appservice registers in its namespace.
    let open = synapse.request(
        Method::Post,
        "/_matrix/client/v3/register",
        Some(&serde_json::json!({"username": "eve", "password": "pw", "auth": {"type": "m.login.dummy"}})),
    );
    assert_eq!(open.unwrap_err().status(), Some(403));
    // A wrong as_token is unknown.
    let wrong = synapse.request(
        Method::Get,
        "/_matrix/client/v3/account/whoami?access_token=wrong",
        None,
    );
    assert_eq!(wrong.unwrap_err().errcode(), Some("M_UNKNOWN_TOKEN"));
    Ok(())
}

/// One HTTP request the listener received.
#[derive(Debug)]
struct Received {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Value,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that answers `200 {}` to every request and passes
/// each request on. Its threads end with the test process.
fn listen() -> std::io::Result<(String, Receiver<Received>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || serve(stream, tx));
        }
    });
    Ok((url, rx))
}

/// Serves one connection (Synapse keeps connections alive) until the peer closes it.
fn serve(stream: TcpStream, tx: Sender<Received>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone a socket"));
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let reply =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
        let _ = tx.send(Received {
            method,
            path,
            headers,
            body,
        });
    }
}

#[test]
fn a_state_event_in_the_bots_room_reaches_the_listener_with_the_hs_token() -> TestResult {
    let (url, received) = listen()?;
    let reg = AppserviceRegistration::new("localhost", Some(&url));
    let synapse = Synapse::start(SynapseConfig::new().with_appservice(reg.clone()))?;
    let admin = synapse.register("admin", "pw", true)?;
    let room = admin.create_room(&RoomOptions::new().public().with_name("watched"))?;
    let bot = synapse.register_appservice_user("prr_watcher")?;
    assert_eq!(bot.join(&room)?, room);
    let rule = PolicyRule::entity(RuleKind::User, "@spam:localhost");
    let event_id = admin.send_rule(&room, &rule)?;

    // Transactions carry the bot's join and more; wait for the one with the rule.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (txn, event) = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = received.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "no transaction with {event_id} within 30 s\n--- Synapse log ---\n{}",
                synapse.log_tail(30)
            )
        });
        assert_eq!(r.method, "PUT", "{r:?}");
        assert!(r.path.starts_with("/_matrix/app/v1/transactions/"), "{r:?}");
        let auth = r.headers.get("authorization").map(String::as_str);
        assert!(
            auth == Some(format!("Bearer {}", reg.hs_token()).as_str()),
            "the transaction's Authorization header is not `Bearer <hs_token>`"
        );
        let events = r.body["events"].as_array().expect("`events` is an array");
        if let Some(e) = events.iter().find(|e| e["event_id"] == event_id.as_str()) {
            break (r.path.clone(), e.clone());
        }
    };
    assert!(txn.len() > "/_matrix/app/v1/transactions/".len(), "{txn}");
    assert_eq!(event["type"], "m.policy.rule.user");
    assert_eq!(event["state_key"], "rule:@spam:localhost");
    assert_eq!(event["room_id"], room.as_str());
    assert_eq!(event["sender"], admin.user_id());
    assert_eq!(&event["content"], rule.content());
    Ok(())
}
