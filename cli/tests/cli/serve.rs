//! `prr serve`: the real binary on a free port, driven over HTTP. Its answers are compared with
//! the CLI's on a store built by `prr ingest` of the same files.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use prr_replicas::REPLICAS;
use serde_json::{Value, json};

use super::support::{Scratch, example};

/// A running `prr serve`.
pub(super) struct Server {
    child: Child,
    addr: String,
    agent: ureq::Agent,
    token: Option<String>,
}

impl Server {
    /// Starts `prr --store <store> serve --listen 127.0.0.1:0 args...` and waits for its
    /// `listening on ADDR`.
    pub(super) fn start(s: &Scratch, args: &[&str]) -> Server {
        Server::start_at(s, "127.0.0.1:0", args)
    }

    /// Like [`Server::start`], listening on `listen` (a fixed port: an appservice's URL).
    pub(super) fn start_at(s: &Scratch, listen: &str, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_prr"))
            .arg("--store")
            .arg(s.store())
            .args(["serve", "--listen", listen])
            .args(args)
            .current_dir(s.dir.path())
            .env_remove("PRR_STORE")
            // `PRR_TEST_SERVE_LOG=info` shows the service's logs (warnings only by default).
            .env(
                "RUST_LOG",
                std::env::var("PRR_TEST_SERVE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("listening on ") {
                    let _ = tx.send(a.to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("prr serve printed `listening on ADDR`");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Server {
            child,
            addr,
            agent,
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` with every request from now on (a service started
    /// with `--api-token-file`).
    pub(super) fn with_token(mut self, token: &str) -> Server {
        self.token = Some(token.to_string());
        self
    }

    /// The service's process ID.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", &format!("Bearer {t}")),
            None => req,
        }
    }

    pub(super) fn get(&self, path: &str) -> (u16, String) {
        let r = self.auth(self.agent.get(self.url(path))).call().unwrap();
        answer(r)
    }

    pub(super) fn post(&self, path: &str, body: &[u8]) -> (u16, String) {
        let r = self
            .auth(self.agent.post(self.url(path)))
            .send(body)
            .unwrap();
        answer(r)
    }

    /// A PUT with the given bearer token (none: no header).
    fn put(&self, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
        let mut req = self.agent.put(self.url(path));
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        answer(req.send(body).unwrap())
    }

    pub(super) fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub(super) fn rows(&self, path: &str) -> Vec<Value> {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub(super) fn ingest(&self, body: &[u8]) -> u64 {
        let (status, body) = self.post("/v1/ingest", body);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["seq"]
            .as_u64()
            .unwrap()
    }

    /// The process's resident memory in bytes (`VmRSS`).
    pub(super) fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb = (status.lines())
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS in /proc/PID/status");
        kb * 1024
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(ok.success());
    }

    /// Sends SIGTERM and returns the exit code.
    pub(super) fn terminate(mut self) -> Option<i32> {
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        status.code()
    }

    /// Sends SIGKILL and waits for the process to be gone.
    pub(super) fn kill(mut self) {
        self.signal("-KILL");
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(mut r: ureq::http::Response<ureq::Body>) -> (u16, String) {
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap())
}

fn demo_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(example("demo"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn cli_lines(s: &Scratch, args: &[&str]) -> Vec<Value> {
    s.ok(args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn serve_answers_as_the_cli_does_on_the_same_files() {
    let reference = Scratch::new();
    let files = demo_files();
    let mut args = vec!["ingest"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    reference.ok(&args);

    let s = Scratch::new();
    let server = Server::start(&s, &[]);
    for (i, f) in files.iter().enumerate() {
        assert_eq!(server.ingest(&std::fs::read(f).unwrap()), i as u64 + 1);
    }
    for r in REPLICAS {
        let want = cli_lines(&reference, &["show", r, "--format", "ndjson"]);
        assert_eq!(server.rows(&format!("/v1/replicas/{r}")), want, "{r}");
        let want = cli_lines(&reference, &["deltas", r, "--since", "1"]);
        let got = server.rows(&format!("/v1/replicas/{r}/deltas?since=1"));
        assert_eq!(got, want, "deltas of {r}");
    }
    // A delta after the service followed the deltas: answered from its in-memory history,
    // the same as the CLI's replay.
    let last = files.len() as u64;
    let more = br#"[{"event_id": "$more", "room_id": "!demo-room:example.org",
        "type": "m.room.member", "state_key": "@spammer9:spam.example",
        "sender": "@spammer9:spam.example", "content": {"membership": "join"}}]"#;
    reference.ok(&[
        "ingest",
        reference.file("more.json", more).to_str().unwrap(),
    ]);
    assert_eq!(server.ingest(more), last + 1);
    for r in REPLICAS {
        let since = last.to_string();
        let want = cli_lines(&reference, &["deltas", r, "--since", &since]);
        let got = server.rows(&format!("/v1/replicas/{r}/deltas?since={last}"));
        assert_eq!(got, want, "deltas of {r} after {last}");
    }
    let room = "!demo-room:example.org";
    let want = cli_lines(
        &reference,
        &["show", "room_members", "--partition", room, "--as-of", "2"],
    );
    let path = format!(
        "/v1/replicas/room_members?partition={}&as_of=2",
        "%21demo-room%3Aexample.org"
    );
    assert_eq!(server.rows(&path), want);
    assert!(!want.is_empty());

    let want = cli_lines(&reference, &["show", "poisoned", "--format", "ndjson"]);
    assert_eq!(server.rows("/v1/replicas/poisoned"), want);
    assert_eq!(server.get("/v1/replicas/poisoned?as_of=1").0, 400);

    let status = server.json("/v1/status");
    let cli: Value = serde_json::from_str(&reference.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(status["seq"], cli["seq"]);
    assert_eq!(status["rejects"], cli["rejects"]);
    let records = |v: &Value| -> Vec<(String, u64)> {
        (v["replicas"].as_array().unwrap().iter())
            .map(|r| {
                (
                    r["name"].as_str().unwrap().into(),
                    r["records"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(records(&status), records(&cli));
    assert_eq!(status["sources"]["api"]["last_seq"], last + 1);
    assert_eq!(status["instances"][0]["id"], "@draupnir:example.org");
    assert_eq!(status["instances"][0]["caught_up"], true);

    let (code, body) = server.get("/v1/replicas/nope");
    assert_eq!(code, 404);
    let cli = reference.prr(&["show", "nope"]);
    let cli_text = String::from_utf8_lossy(&cli.stderr);
    assert!(cli_text.contains(body.trim()), "{cli_text} / {body}");
    for bad in [
        "/v1/replicas/room_state?as_of=x",
        "/v1/replicas/room_state?colour=red",
        "/v1/replicas/room_state?as_of=99",
        "/v1/replicas/room_state/deltas?since=-1",
        "/v1/replicas/room_state/deltas?wait=soon",
    ] {
        let (code, body) = server.get(bad);
        assert_eq!(code, 400, "{bad}: {body}");
    }
}

#[test]
fn bad_input_is_a_400_naming_the_place_and_stores_nothing() {
    let s = Scratch::new();
    let server = Server::start(&s, &[]);
    for (body, want) in [
        (&b"[{\"event_id\": \"$1\""[..], "request body"),
        (
            br#"[{"event_id": "$1", "room_id": "!r:x", "type": "m.room.member", "state_key": "@a:x", "sender": 5, "content": {}}]"#,
            "index 0: field \"sender\"",
        ),
        (b"{\"instances\": [{\"id\": \"nobody\"}]}", "instances[0].id"),
        (b"", "empty"),
    ] {
        let (code, text) = server.post("/v1/ingest", body);
        assert_eq!(code, 400, "{text}");
        assert!(text.contains(want), "{want} in {text}");
    }
    let status = server.json("/v1/status");
    assert_eq!(status["seq"], 0);
    assert_eq!(status["log"]["entries"], 0);
}

#[test]
fn with_an_api_token_every_v1_request_needs_it() {
    let s = Scratch::new();
    let token = s.file("token", b"s3cret-token\n");
    let mut server = Server::start(&s, &["--api-token-file", token.to_str().unwrap()]);
    for path in [
        "/v1/status",
        "/v1/replicas/room_state",
        "/v1/replicas/room_state/deltas",
    ] {
        assert_eq!(server.get(path).0, 401, "{path}");
    }
    assert_eq!(server.post("/v1/ingest", b"[]").0, 401);
    server.token = Some("s3cret-tokeN".into());
    assert_eq!(server.get("/v1/status").0, 401);
    server.token = Some("s3cret-token".into());
    assert_eq!(server.get("/v1/status").0, 200);
    assert_eq!(server.get("/metrics").0, 200);
}

#[test]
fn it_refuses_what_it_cannot_do_safely_or_at_all() {
    let s = Scratch::new();
    let out = s.prr(&["serve", "--listen", "0.0.0.0:0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("refusing to listen on 0.0.0.0:0"), "{err}");
    assert!(
        !s.store().exists(),
        "nothing is opened before the options are checked"
    );

    let token = s.file("token", b"t");
    let out = s.prr(&[
        "serve",
        "--homeserver",
        "https://matrix.example.org",
        "--access-token-file",
        "missing-token",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing-token"), "{err}");
    assert!(!out.status.success());

    let out = s.prr(&[
        "serve",
        "--homeserver",
        "not a url",
        "--access-token-file",
        token.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--homeserver not a url"), "{err}");
}

#[test]
fn deltas_wait_for_a_delta_and_time_out_empty() {
    let s = Scratch::new();
    let server = Server::start(&s, &[]);
    let (code, body) = server.get("/v1/replicas/room_members/deltas?since=0&wait=1");
    assert_eq!((code, body.as_str()), (200, ""));
    std::thread::scope(|scope| {
        let waiting =
            scope.spawn(|| server.rows("/v1/replicas/room_members/deltas?since=0&wait=60"));
        std::thread::sleep(Duration::from_millis(300));
        // A delta of another replica only does not end the wait.
        server.ingest(br#"{"instances": [{"id": "@bot:x", "watch": [], "protect": ["!r:x"]}]}"#);
        server.ingest(
            br#"[{"event_id": "$1", "room_id": "!r:x", "type": "m.room.member", "state_key": "@a:x", "sender": "@a:x", "content": {"membership": "join"}}]"#,
        );
        let rows = waiting.join().unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["seq"], 2);
        assert_eq!(rows[0]["record"]["user_id"], "@a:x");
    });
    let (code, body) = server.get("/v1/replicas/room_members/deltas?since=2&wait=1");
    assert_eq!((code, body.as_str()), (200, ""));
}

const REGISTRATION: &str = "id: prr\nurl: http://127.0.0.1:9797\nas_token: as-secret\n\
    hs_token: hs-secret\nsender_localpart: prr\nnamespaces:\n  users: []\n  aliases: []\n  rooms: []\n";

fn member(event_id: &str, user: &str, membership: &str) -> Value {
    json!({"event_id": event_id, "room_id": "!r:x", "type": "m.room.member", "state_key": user,
           "sender": user, "origin_server_ts": 1, "content": {"membership": membership}})
}

fn txn(events: Vec<Value>) -> Vec<u8> {
    json!({ "events": events }).to_string().into_bytes()
}

fn appservice(s: &Scratch) -> Server {
    let reg = s.file("registration.yaml", REGISTRATION.as_bytes());
    Server::start(
        s,
        &[
            "--homeserver",
            "http://127.0.0.1:8008",
            "--registration",
            reg.to_str().unwrap(),
        ],
    )
}

/// A format 4 store's `source_events` (the golden store: an event that is the current state,
/// a redaction, an invalid event) is pruned by `serve` after the upgrade: its records get
/// their time at the first pruning and leave after the retention, but the current state's.
#[test]
fn serve_prunes_the_source_events_of_a_format_4_store() {
    let s = Scratch::new();
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/demo-v4.redb");
    std::fs::copy(golden, s.store()).unwrap();
    let reg = s.file("registration.yaml", REGISTRATION.as_bytes());
    let args = [
        "--homeserver",
        "http://127.0.0.1:8008",
        "--registration",
        reg.to_str().unwrap(),
        "--dedup-retention",
        "1",
    ];
    let server = Server::start(&s, &args);
    let ids = |server: &Server| -> Vec<String> {
        (server.rows("/v1/replicas/source_events").iter())
            .map(|r| r["event_id"].as_str().unwrap().to_string())
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ids(&server).len() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(ids(&server), ["$golden-join"]);
    assert!(server.rows("/v1/replicas/rejects").is_empty());
    assert_eq!(server.rows("/v1/replicas/member_bans").len(), 5);
    assert_eq!(server.terminate(), Some(0));
    assert!(s.ok(&["check"]).starts_with("ok:"));
}

#[test]
fn appservice_transactions_are_authenticated_checked_and_applied_once() {
    let s = Scratch::new();
    let server = appservice(&s);
    let path = "/_matrix/app/v1/transactions/1";
    let body = txn(vec![member("$a", "@a:x", "join")]);
    for token in [None, Some("as-secret"), Some("wrong")] {
        let (code, text) = server.put(path, token, &body);
        assert_eq!(code, 403, "{text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["errcode"],
            "M_FORBIDDEN"
        );
    }
    let hs = Some("hs-secret");
    for (bad, errcode) in [
        (&b"nope"[..], "M_NOT_JSON"),
        (b"[]", "M_BAD_JSON"),
        (b"{\"events\": 1}", "M_BAD_JSON"),
    ] {
        let (code, text) = server.put(path, hs, bad);
        assert_eq!(code, 400, "{text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["errcode"],
            errcode
        );
    }
    let seq = || server.json("/v1/status")["seq"].as_u64().unwrap();
    assert_eq!(seq(), 0, "nothing stored by refused transactions");

    // A valid member, a message (not state: left out) and an invalid state event.
    let invalid = json!({"event_id": "$bad", "room_id": "!r:x", "type": "m.room.member",
                         "state_key": "@b:x", "sender": 5, "content": {"membership": "join"}});
    let message = json!({"event_id": "$msg", "room_id": "!r:x", "type": "m.room.message",
                         "sender": "@a:x", "content": {"body": "hi"}});
    let first = txn(vec![member("$a", "@a:x", "join"), message, invalid]);
    let (code, text) = server.put(path, hs, &first);
    assert_eq!((code, text.trim()), (200, "{}"));
    assert_eq!(seq(), 1);
    let rejects = server.rows("/v1/replicas/rejects");
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0]["event_id"], "$bad");
    assert!(
        rejects[0]["reason"].as_str().unwrap().contains("sender"),
        "{rejects:?}"
    );
    let members = server.rows("/v1/replicas/room_members");
    assert_eq!(members.len(), 1);

    // The same transaction again (a retry): 200, nothing new.
    assert_eq!(server.put(path, hs, &first).0, 200);
    // The same event in another transaction, through the legacy path and query token.
    let again = txn(vec![member("$a", "@a:x", "join")]);
    let legacy = "/transactions/2?access_token=hs-secret";
    assert_eq!(server.put(legacy, None, &again).0, 200);
    assert_eq!(seq(), 1, "no delta for events already applied");
    assert_eq!(server.rows("/v1/replicas/rejects").len(), 1);

    // Transaction id 1 reused (Synapse on SQLite after a restart) with new content: applied.
    let reused = txn(vec![
        member("$a", "@a:x", "join"),
        member("$c", "@a:x", "leave"),
    ]);
    assert_eq!(server.put(path, hs, &reused).0, 200);
    assert_eq!(seq(), 2);
    let members = server.rows("/v1/replicas/room_members");
    assert_eq!(members[0]["membership"], "leave", "{members:?}");
    let events = server.rows("/v1/replicas/source_events");
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["$a", "$bad", "$c"]);

    // The event ids survive a restart: a retry after it is still a duplicate.
    assert_eq!(server.terminate(), Some(0));
    let server = appservice(&s);
    assert_eq!(
        server.put("/_matrix/app/v1/transactions/9", hs, &reused).0,
        200
    );
    assert_eq!(server.json("/v1/status")["seq"], 2);
    let status = server.json("/v1/status");
    assert_eq!(
        status["sources"]["appservice"]["last_transaction"]["outcome"],
        "duplicate"
    );
    // No manifest names an instance: there is nothing to catch up with (catch-up itself is
    // tested in catch_up.rs).
    assert_eq!(status["instances"], serde_json::json!([]));
    assert_eq!(status["caught_up"], true);

    let (code, text) = server.agent_post("/_matrix/app/v1/ping", hs);
    assert_eq!((code, text.trim()), (200, "{}"));
    assert_eq!(server.agent_post("/_matrix/app/v1/ping", None).0, 403);
    let (code, text) = server.get("/_matrix/app/v1/users/%40a%3Ax?access_token=hs-secret");
    assert_eq!(code, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["errcode"],
        "M_NOT_FOUND"
    );
    assert_eq!(server.get("/_matrix/app/v1/rooms/%23a%3Ax").0, 403);
}

impl Server {
    /// The users of every `member_bans` intent, in the replica's order.
    pub(super) fn banned_users(&self) -> Vec<String> {
        (self.rows("/v1/replicas/member_bans").iter())
            .map(|r| r["user_id"].as_str().unwrap().to_string())
            .collect()
    }

    fn agent_post(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = self.agent.post(self.url(path));
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        answer(req.send(&b"{}"[..]).unwrap())
    }
}

#[test]
fn sigterm_exits_0_with_revisions_and_the_next_start_has_everything() {
    let s = Scratch::new();
    let server = Server::start(&s, &[]);
    for f in demo_files() {
        server.ingest(&std::fs::read(f).unwrap());
    }
    let before: Vec<Vec<Value>> = (REPLICAS.iter())
        .map(|r| server.rows(&format!("/v1/replicas/{r}")))
        .collect();
    assert_eq!(server.terminate(), Some(0));
    let status: Value = serde_json::from_str(&s.ok(&["status", "--format", "json"])).unwrap();
    // `policy_list` is a view: never stored.
    for r in (status["replicas"].as_array().unwrap().iter()).filter(|r| r["name"] != "policy_list")
    {
        assert_eq!(
            r["newest_revision"], 3,
            "revisions captured at shutdown: {r}"
        );
    }
    let server = Server::start(&s, &[]);
    for (r, rows) in REPLICAS.iter().zip(&before) {
        assert_eq!(&server.rows(&format!("/v1/replicas/{r}")), rows, "{r}");
    }
}

#[test]
fn sigkill_after_answers_loses_nothing_answered() {
    let s = Scratch::new();
    let server = appservice(&s);
    for f in demo_files() {
        server.ingest(&std::fs::read(f).unwrap());
    }
    let body = txn(vec![member("$k", "@k:x", "join")]);
    assert_eq!(
        server
            .put("/_matrix/app/v1/transactions/k", Some("hs-secret"), &body)
            .0,
        200
    );
    let before: Vec<Vec<Value>> = (REPLICAS.iter())
        .map(|r| server.rows(&format!("/v1/replicas/{r}")))
        .collect();
    server.kill();
    for (r, rows) in REPLICAS.iter().zip(&before) {
        assert_eq!(&s.show(r), rows, "{r}");
    }
}

/// Whether a line is in the Prometheus / OpenMetrics text format: a `# HELP`, `# TYPE`,
/// `# UNIT` or `# EOF` line, or `name{label="value",...} number`.
fn exposition_line(line: &str) -> bool {
    if let Some(rest) = line.strip_prefix("# ") {
        let mut words = rest.splitn(3, ' ');
        return match words.next() {
            Some("EOF") => rest == "EOF",
            Some("HELP") | Some("UNIT") => words.next().is_some_and(metric_name),
            Some("TYPE") => {
                words.next().is_some_and(metric_name)
                    && words.next().is_some_and(|t| {
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "unknown",
                            "info",
                            "stateset",
                        ]
                        .contains(&t)
                    })
            }
            _ => false,
        };
    }
    let (series, value) = match line.rsplit_once(' ') {
        Some(parts) => parts,
        None => return false,
    };
    let number = value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value);
    let (name, labels) = match series.split_once('{') {
        Some((n, l)) => match l.strip_suffix('}') {
            Some(l) => (n, Some(l)),
            None => return false,
        },
        None => (series, None),
    };
    let labels_ok = labels.is_none_or(|l| {
        l.split(',').all(|pair| {
            pair.split_once('=').is_some_and(|(k, v)| {
                metric_name(k) && v.len() >= 2 && v.starts_with('"') && v.ends_with('"')
            })
        })
    });
    number && metric_name(name) && labels_ok
}

fn metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[test]
fn metrics_lines_parse_and_count_what_happened() {
    let s = Scratch::new();
    let server = appservice(&s);
    server.ingest(&std::fs::read(&demo_files()[0]).unwrap());
    let body = txn(vec![member("$m", "@m:x", "join")]);
    server.put("/_matrix/app/v1/transactions/m", Some("hs-secret"), &body);
    server.put("/_matrix/app/v1/transactions/m", Some("hs-secret"), &body);
    server.put("/_matrix/app/v1/transactions/m", None, &body);
    server.get("/v1/replicas/nope");
    let (code, text) = server.get("/metrics");
    assert_eq!(code, 200);
    for line in text.lines() {
        assert!(
            exposition_line(line),
            "not in the exposition format: {line:?}"
        );
    }
    for want in [
        "prr_last_seq 2",
        "prr_source_deltas_total{source=\"api\"} 1",
        "prr_source_deltas_total{source=\"appservice\"} 1",
        "prr_appservice_transactions_total{outcome=\"applied\"} 1",
        "prr_appservice_transactions_total{outcome=\"duplicate\"} 1",
        "prr_appservice_transactions_total{outcome=\"forbidden\"} 1",
        "prr_http_requests_total{route=\"/v1/replicas/{name}\",status=\"404\"} 1",
        "prr_replica_frontier_lag{replica=\"member_bans\"} 0",
    ] {
        assert!(text.lines().any(|l| l == want), "{want} in\n{text}");
    }
    assert!(
        text.contains("prr_commit_seconds_bucket{le=\"+Inf\"} 2"),
        "{text}"
    );
    assert!(!exposition_line("prr_x{a=b} 1") && !exposition_line("9x 1"));
}

#[test]
fn revisions_are_captured_while_serving_after_a_change() {
    let s = Scratch::new();
    let server = Server::start(&s, &["--revision-interval", "1"]);
    server.ingest(&std::fs::read(&demo_files()[0]).unwrap());
    // Polled (at most 30 s): the capture comes about a second after the change.
    let stored = |status: &Value| -> Vec<Value> {
        (status["replicas"].as_array().unwrap().iter())
            .filter(|r| r["name"] != "policy_list")
            .map(|r| r["newest_revision"].clone())
            .collect()
    };
    let mut captured = false;
    for _ in 0..300 {
        if stored(&server.json("/v1/status")).iter().all(|r| r == 1) {
            captured = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(captured, "{}", server.json("/v1/status"));
    server.kill();
    let status: Value = serde_json::from_str(&s.ok(&["status", "--format", "json"])).unwrap();
    assert!(stored(&status).iter().all(|r| r == 1), "{status}");
}
