//! The Synapse module `contrib/synapse/prr_synapse.py` (`PrrDoorCheck`): Synapse loads it
//! (`contrib/synapse` on its Python path) and asks `prr serve`, fed as Synapse's appservice,
//! whether a join or an invite may happen. Rules come from real policy rooms and reach prr by
//! transactions; every user the module is asked about is an ordinary user (Synapse does not
//! call spam checkers for server admins). Also: the module's own Python unit tests.

use std::path::PathBuf;
use std::process::Command;

use prr_synapse_harness::{
    AppserviceRegistration, Client, Error, PolicyRule, RoomOptions, RuleKind, Synapse,
    SynapseConfig, free_port, venv_dir,
};
use serde_json::{Value, json};

use super::super::serve::Server;
use super::super::support::Scratch;
use super::{HS, caught_up, eventually, slot};

/// The module's `error` when prr does not answer and `fail_open` is false.
const NO_ANSWER: &str = "The moderation service did not answer; try again later";

/// `contrib/synapse`: the module's directory.
fn contrib() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../contrib/synapse");
    dir.canonicalize().expect("contrib/synapse exists")
}

/// A Synapse loading the module with `config`, and the appservice `registration` if any.
fn synapse_with_module(config: Value, registration: Option<AppserviceRegistration>) -> Synapse {
    let mut c = SynapseConfig::new()
        .with_python_path(&contrib())
        .with_option(
            "modules",
            json!([{"module": "prr_synapse.PrrDoorCheck", "config": config}]),
        )
        // Cheap password hashes: the tests register many users.
        .with_option("bcrypt_rounds", json!(4));
    if let Some(r) = registration {
        c = c.with_appservice(r);
    }
    Synapse::start(c).expect("Synapse starts with the module")
}

/// A public room where any member may invite (an admin's invites bypass the module).
fn public_room(name: &str) -> RoomOptions {
    (RoomOptions::new().public().with_name(name)).with_power_levels(json!({"invite": 0}))
}

/// Asserts that `result` is Synapse's 403 `M_FORBIDDEN` whose `error` is `message`.
fn refused<T: std::fmt::Debug>(result: Result<T, Error>, message: &str) {
    match result {
        Err(Error::Status {
            status: 403,
            errcode: Some(code),
            body,
            ..
        }) if code == "M_FORBIDDEN" => {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"], message, "{body}");
        }
        other => panic!("expected 403 M_FORBIDDEN ({message}), got {other:?}"),
    }
}

/// The membership of `user_id` in `room` as the room's state says it (`None`: no event).
fn membership(owner: &Client, room: &str, user_id: &str) -> Option<String> {
    (owner.state(room).unwrap().into_iter())
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == user_id)
        .map(|e| e["content"]["membership"].as_str().unwrap().to_string())
}

/// Waits until prr's own `/v1/check/join` says `allow` for `localpart` in `room`.
fn prr_says(server: &Server, localpart: &str, room: &str, allow: bool) {
    let user = format!("@{localpart}:{HS}");
    let body = json!({"user_id": user, "room_id": room}).to_string();
    eventually(&format!("prr's check of {user}: allow {allow}"), 60, || {
        let (status, text) = server.post("/v1/check/join", body.as_bytes());
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{status} {text}: {e}"))?;
        (status == 200 && v["allow"] == allow)
            .then_some(())
            .ok_or(format!("{status} {text}"))
    });
}

/// With the module loaded and `prr serve` running as the appservice (behind an API token),
/// users matching a literal, a glob and a hashed rule, and users whose server is banned, are
/// refused on join and on invite with their rule's reason; ordinary users come in; an admin
/// bypasses the module; a rule added to a policy room refuses the next join and a rule
/// redacted stops refusing. Then `prr serve` stops and the module (`fail_open` by default)
/// lets everyone in, saying so in Synapse's log, which never shows the token.
#[test]
fn the_module_refuses_at_the_door_what_prr_refuses_and_fails_open_without_prr() {
    let _slot = slot();
    let s = Scratch::new();
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
    let url = format!("http://{listen}");
    let reg = AppserviceRegistration::new(HS, Some(&url));
    let registration = s.dir.path().join("registration.yaml");
    reg.write(&registration).unwrap();
    let token = "door-token-4c1d9e";
    let token_file = s.file("token", token.as_bytes());
    // A generous timeout: a slow machine must not let a banned user in by failing open.
    let synapse = synapse_with_module(
        json!({"url": url, "api_token": token, "timeout_ms": 20000}),
        Some(reg),
    );
    let server = Server::start_at(
        &s,
        &listen,
        &[
            "--homeserver",
            synapse.base_url(),
            "--registration",
            registration.to_str().unwrap(),
            "--api-token-file",
            token_file.to_str().unwrap(),
        ],
    )
    .with_token(token);

    // An admin keeps the lists; an ordinary user owns the protected rooms (invites by an
    // admin would bypass the module).
    let moderator = synapse.register("moderator", "pw", true).unwrap();
    let owner = synapse.register("owner", "pw", false).unwrap();
    let public = |name: &str| public_room(name);
    let users_list = moderator.create_room(&public("ban list")).unwrap();
    let literal = PolicyRule::entity(RuleKind::User, "@baduser:localhost").with_reason("literal");
    let glob = PolicyRule::entity(RuleKind::User, "@spam*:localhost").with_reason("a glob");
    let hashed = PolicyRule::hashed(RuleKind::User, "@hashme:localhost").with_reason("hashed");
    for rule in [&literal, &glob, &hashed] {
        moderator.send_rule(&users_list, rule).unwrap();
    }
    let servers_list = moderator.create_room(&public("server list")).unwrap();
    let protected = owner.create_room(&public("protected")).unwrap();
    let strict = owner.create_room(&public("strict")).unwrap();
    let manifest = json!({"instances": [
        {"id": format!("@prr_bot:{HS}"), "watch": [users_list], "protect": [protected]},
        {"id": format!("@prr_strict:{HS}"), "watch": [servers_list], "protect": [strict]},
    ]});
    server.ingest(manifest.to_string().as_bytes());
    caught_up(&server, &format!("@prr_bot:{HS}"));
    caught_up(&server, &format!("@prr_strict:{HS}"));
    prr_says(&server, "baduser", &protected, false);

    // Literal, glob and hashed rules: refused on join and on invite, with the rule's reason.
    for (localpart, reason) in [
        ("baduser", "literal"),
        ("spammer", "a glob"),
        ("hashme", "hashed"),
    ] {
        let user = synapse.register(localpart, "pw", false).unwrap();
        refused(user.join(&protected), reason);
        refused(owner.invite(&protected, user.user_id()), reason);
        assert_eq!(membership(&owner, &protected, user.user_id()), None);
    }
    // An admin bypasses the module: its invite goes through; the invited user's join is still
    // refused.
    let baduser = synapse.login("baduser", "pw").unwrap();
    moderator.join(&protected).unwrap();
    moderator.invite(&protected, baduser.user_id()).unwrap();
    refused(baduser.join(&protected), "literal");
    assert_eq!(
        membership(&owner, &protected, baduser.user_id()).as_deref(),
        Some("invite")
    );
    // Ordinary users come in, by joining or by invitation.
    let alice = synapse.register("alice", "pw", false).unwrap();
    alice.join(&protected).unwrap();
    let bob = synapse.register("bob", "pw", false).unwrap();
    owner.invite(&protected, bob.user_id()).unwrap();
    bob.join(&protected).unwrap();
    for user in [&alice, &bob] {
        assert_eq!(
            membership(&owner, &protected, user.user_id()).as_deref(),
            Some("join")
        );
    }

    // A banned server (the only one there is: every user's, in the strict room's list only):
    // the rule is added once prr's bots are in, and refuses the next join and invite.
    let carol = synapse.register("carol", "pw", false).unwrap();
    carol.join(&strict).unwrap();
    let server_rule = PolicyRule::entity(RuleKind::Server, "localhost").with_reason("server");
    moderator.send_rule(&servers_list, &server_rule).unwrap();
    prr_says(&server, "dave", &strict, false);
    let dave = synapse.register("dave", "pw", false).unwrap();
    refused(dave.join(&strict), "server");
    refused(owner.invite(&strict, alice.user_id()), "server");
    // The other room's instance does not watch that list.
    dave.join(&protected).unwrap();

    // A rule added to the policy room is in force for the next join.
    let erin = synapse.register("erin", "pw", false).unwrap();
    let added = PolicyRule::entity(RuleKind::User, "@erin:localhost").with_reason("added");
    moderator.send_rule(&users_list, &added).unwrap();
    prr_says(&server, "erin", &protected, false);
    refused(erin.join(&protected), "added");

    // A rule redacted stops refusing.
    let glob_event = (moderator.state(&users_list).unwrap().into_iter())
        .find(|e| e["state_key"] == glob.state_key())
        .expect("the glob rule is in the list's state")["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    moderator
        .redact(&users_list, &glob_event, Some("lifted"))
        .unwrap();
    prr_says(&server, "spammer", &protected, true);
    let spammer = synapse.login("spammer", "pw").unwrap();
    spammer.join(&protected).unwrap();
    let spam2 = synapse.register("spam2", "pw", false).unwrap();
    owner.invite(&protected, spam2.user_id()).unwrap();
    spam2.join(&protected).unwrap();

    // prr serve stops: the module fails open (the default), even for users a rule names.
    assert_eq!(server.terminate(), Some(0));
    baduser.join(&protected).unwrap();
    erin.join(&protected).unwrap();
    let log = std::fs::read_to_string(synapse.log_path()).unwrap();
    assert!(
        log.contains(&format!(
            "prr door check: {} joining {protected} let in: prr did not answer",
            erin.user_id()
        )),
        "{}",
        synapse.log_tail(40)
    );
    assert!(!log.contains(token), "the token is in Synapse's log");
}

/// With `fail_open: false`, no API token and `prr serve` running without rules, users come
/// in; with `prr serve` stopped, the module refuses every join and invite of ordinary users
/// (an admin still bypasses it); `prr serve` started again, users come in again.
#[test]
fn with_fail_open_false_the_module_refuses_while_prr_is_stopped() {
    let _slot = slot();
    let s = Scratch::new();
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
    let synapse = synapse_with_module(
        json!({"url": format!("http://{listen}/"), "fail_open": false, "timeout_ms": 20000}),
        None,
    );
    let server = Server::start_at(&s, &listen, &[]);
    let admin = synapse.register("admin", "pw", true).unwrap();
    let owner = synapse.register("owner", "pw", false).unwrap();
    let room = owner.create_room(&public_room("room")).unwrap();
    let alice = synapse.register("alice", "pw", false).unwrap();
    alice.join(&room).unwrap();

    assert_eq!(server.terminate(), Some(0));
    let bob = synapse.register("bob", "pw", false).unwrap();
    refused(bob.join(&room), NO_ANSWER);
    refused(owner.invite(&room, bob.user_id()), NO_ANSWER);
    assert_eq!(membership(&owner, &room, bob.user_id()), None);
    admin.join(&room).unwrap();
    admin.invite(&room, bob.user_id()).unwrap();
    refused(bob.join(&room), NO_ANSWER);
    let log = std::fs::read_to_string(synapse.log_path()).unwrap();
    assert!(
        log.contains(&format!(
            "prr door check: {} joining {room} refused: prr did not answer",
            bob.user_id()
        )),
        "{}",
        synapse.log_tail(40)
    );

    let server = Server::start_at(&s, &listen, &[]);
    bob.join(&room).unwrap();
    assert_eq!(
        membership(&owner, &room, bob.user_id()).as_deref(),
        Some("join")
    );
    assert_eq!(server.terminate(), Some(0));
}

/// The module's Python unit tests (`contrib/synapse/test_prr_synapse.py`: a fake ModuleApi and
/// a fake prr; configs, answers, refusals, timeouts, both fail modes), run by the venv's Python.
#[test]
fn the_modules_python_unit_tests_pass() {
    let python = venv_dir().join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/synapse-venv.sh`",
        python.display()
    );
    let out = Command::new(&python)
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(contrib())
        .args(["-p", "test_*.py"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Not an empty run.
    assert!(err.contains("\nOK"), "{err}");
    assert!(!err.contains("Ran 0 tests"), "{err}");
}
