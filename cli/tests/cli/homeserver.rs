//! `prr serve` against a real Synapse (the harness of `testing/synapse`; `bash
//! scripts/synapse-venv.sh` once first): as an appservice (catch-up, then transactions), across
//! a SIGKILL of prr during a burst of joins and across a Synapse restart, and in bot mode
//! (`/sync`). Every test ends by comparing the service's replicas with the CLI's on a store
//! made by `prr ingest` of Synapse's `/state` exports and the same manifest. Also the Synapse
//! module `contrib/synapse/prr_synapse.py` asking `prr serve` at the door ([`door`]).
//!
//! At most two of these tests run a Synapse at once ([`slot`]): CI has two cores.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

use prr_synapse_harness::{
    AppserviceRegistration, Client, PolicyRule, RoomOptions, RuleKind, Synapse, SynapseConfig,
    free_port,
};
use serde_json::{Value, json};

use super::serve::Server;
use super::support::{Scratch, eventually};

#[path = "homeserver/appservice.rs"]
mod appservice;
#[path = "homeserver/bot.rs"]
mod bot;
#[path = "homeserver/door.rs"]
mod door;
#[path = "homeserver/enact.rs"]
mod enact;
#[path = "homeserver/soak.rs"]
mod soak;

/// The homeserver's server name.
const HS: &str = "localhost";

/// Every replica but the service's own sources: `source_events` holds every event received,
/// also those replaced since, where a `/state` export holds only the current ones, and
/// `source_positions` holds a bot's `/sync` position, which an export has not. `room_state` is compared whole:
/// the bot's own joins are in both (catch-up fetches the state after joining, and the
/// transaction bringing the join again is deduplicated by event id). `acl_sync` is compared
/// too: no room has an ACL event, so both sides say out of sync. `outcomes` and `pending` are
/// not: a CLI reference store has no outcomes (only an effect handler records them), so its
/// `pending` lists every intent.
fn compared() -> impl Iterator<Item = &'static str> {
    (prr_replicas::REPLICAS.into_iter()).filter(|r| {
        !matches!(
            *r,
            "source_events" | "source_positions" | "outcomes" | "pending"
        )
    })
}

/// How many of these tests may run a Synapse at once.
const PARALLEL: usize = 2;
static RUNNING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// A turn to run a Synapse; ends on drop (declare it first, so it is dropped last).
struct Slot;

fn slot() -> Slot {
    let (count, turn) = &RUNNING;
    let mut n = count.lock().unwrap_or_else(|p| p.into_inner());
    while *n >= PARALLEL {
        n = turn.wait(n).unwrap_or_else(|p| p.into_inner());
    }
    *n += 1;
    Slot
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (count, turn) = &RUNNING;
        *count.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        turn.notify_one();
    }
}

/// A Synapse with a moderator, a policy room (room version 12, public) with rules of every
/// kind, and a public protected room that some users joined.
struct World {
    synapse: Synapse,
    moderator: Client,
    policy: String,
    protected: String,
}

/// The rules the moderator sets up.
fn literal_rule() -> PolicyRule {
    PolicyRule::entity(RuleKind::User, "@baduser:localhost").with_reason("literal")
}
fn glob_rule() -> PolicyRule {
    PolicyRule::entity(RuleKind::User, "@spam*:localhost").with_reason("glob")
}
fn hashed_rule() -> PolicyRule {
    PolicyRule::hashed(RuleKind::User, "@hashme:localhost").with_reason("hashed")
}
/// A server no member can be on (one Synapse, no federation): denied in `server_acl`.
fn evil_server_rule() -> PolicyRule {
    PolicyRule::entity(RuleKind::Server, "evil.example")
}
/// Matches every member's server (`localhost`): in `member_matches` for everyone, but never
/// in the deny list (it matches the instance's own server).
fn own_server_rule() -> PolicyRule {
    PolicyRule::entity(RuleKind::Server, "local*")
}

impl World {
    fn start(config: SynapseConfig) -> World {
        // Cheap password hashes: tests register dozens of users.
        let config = config.with_option("bcrypt_rounds", json!(4));
        let synapse = Synapse::start(config).expect("Synapse starts");
        let moderator = synapse.register("moderator", "pw", true).unwrap();
        let policy = moderator
            .create_room(&RoomOptions::new().public().with_name("ban list"))
            .unwrap();
        for rule in [
            literal_rule(),
            glob_rule(),
            hashed_rule(),
            evil_server_rule(),
            own_server_rule(),
        ] {
            moderator.send_rule(&policy, &rule).unwrap();
        }
        let protected = moderator
            .create_room(&RoomOptions::new().public().with_name("protected"))
            .unwrap();
        let world = World {
            synapse,
            moderator,
            policy,
            protected,
        };
        // Members from before prr: only catch-up can know them.
        world.user_joins("alice");
        world.user_joins("baduser");
        world
    }

    /// Registers `localpart` and joins it to the protected room.
    fn user_joins(&self, localpart: &str) -> Client {
        let user = self.synapse.register(localpart, "pw", false).unwrap();
        user.join(&self.protected).unwrap();
        user
    }

    fn manifest(&self, instance: &str) -> Vec<u8> {
        json!({"instances": [{"id": instance, "watch": [self.policy], "protect": [self.protected]}]})
            .to_string()
            .into_bytes()
    }

    /// The policy room and the protected room.
    fn rooms(&self) -> Vec<String> {
        vec![self.policy.clone(), self.protected.clone()]
    }

    /// A store made by `prr ingest` of the manifest and the `/state` exports of `rooms` (as
    /// the moderator sees them).
    fn reference(&self, manifest: &[u8], rooms: &[String]) -> Scratch {
        let r = Scratch::new();
        self.ingest_into(&r, manifest, rooms);
        r
    }

    /// `prr ingest` into the store of `s` of the manifest and the `/state` exports of `rooms`
    /// (as the moderator sees them now).
    fn ingest_into(&self, s: &Scratch, manifest: &[u8], rooms: &[String]) {
        let mut files = vec![s.file("manifest.json", manifest)];
        for (i, room) in rooms.iter().enumerate() {
            let export = self.moderator.state_export(room).unwrap();
            files.push(s.file(&format!("room{i}.json"), export.as_bytes()));
        }
        let mut args = vec!["ingest"];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        s.ok(&args);
    }

    /// Waits (60 s at most) until every compared replica of `server` equals the CLI's on a
    /// store made from the policy and protected rooms' `/state` exports.
    fn equals_the_cli(&self, server: &Server, manifest: &[u8]) {
        self.equals_the_cli_on(server, manifest, &self.rooms());
    }

    /// [`World::equals_the_cli`] with the exports of `rooms`: every room whose state the
    /// service holds.
    fn equals_the_cli_on(&self, server: &Server, manifest: &[u8], rooms: &[String]) {
        eventually("the service's replicas equal the CLI's", 60, || {
            let reference = self.reference(manifest, rooms);
            for name in compared() {
                let want = reference.show(name);
                let got = server.rows(&format!("/v1/replicas/{name}"));
                if got != want {
                    return Err(format!(
                        "{name}:\n service {}\n     cli {}",
                        lines(&got),
                        lines(&want)
                    ));
                }
            }
            Ok(())
        });
    }
}

fn lines(rows: &[Value]) -> String {
    let text: Vec<String> = rows.iter().map(Value::to_string).collect();
    text.join("\n         ")
}

/// The users of the protected room's `member_bans` intents.
fn banned(server: &Server, room: &str) -> BTreeSet<String> {
    (server.rows("/v1/replicas/member_bans").iter())
        .filter(|r| r["room_id"] == room)
        .map(|r| r["user_id"].as_str().unwrap().to_string())
        .collect()
}

/// The users whose membership in `room` is `join`.
fn joined(server: &Server, room: &str) -> BTreeSet<String> {
    (server.rows("/v1/replicas/room_members").iter())
        .filter(|r| r["room_id"] == room && r["membership"] == "join")
        .map(|r| r["user_id"].as_str().unwrap().to_string())
        .collect()
}

fn users(localparts: &[&str]) -> BTreeSet<String> {
    localparts.iter().map(|l| format!("@{l}:{HS}")).collect()
}

/// Waits until `/v1/status` says `instance` is caught up.
fn caught_up(server: &Server, instance: &str) {
    eventually(&format!("{instance} caught up"), 60, || {
        let status = server.json("/v1/status");
        let found = (status["instances"].as_array().into_iter().flatten())
            .any(|i| i["id"] == instance && i["caught_up"] == true);
        if found {
            Ok(())
        } else {
            Err(status.to_string())
        }
    });
}

/// Asserts that `source_events` holds each event id once, and holds every event of the
/// current state of `rooms`.
fn each_event_once(server: &Server, world: &World, rooms: &[String]) {
    let rows = server.rows("/v1/replicas/source_events");
    let mut seen = BTreeSet::new();
    for r in &rows {
        let id = r["event_id"].as_str().unwrap().to_string();
        assert!(seen.insert(id.clone()), "{id} twice in source_events");
    }
    for room in rooms {
        for e in world.moderator.state(room).unwrap() {
            let id = e["event_id"].as_str().unwrap();
            assert!(
                seen.contains(id),
                "{id} of the state of {room} not in source_events"
            );
        }
    }
}

/// `prr serve` as the appservice of `registration`, listening at `listen`.
fn appservice_server(
    s: &Scratch,
    listen: &str,
    synapse: &Synapse,
    registration: &std::path::Path,
    resync: &str,
) -> Server {
    Server::start_at(
        s,
        listen,
        &[
            "--homeserver",
            synapse.base_url(),
            "--registration",
            registration.to_str().unwrap(),
            "--resync-every",
            resync,
        ],
    )
}

/// A Synapse whose appservice is at `127.0.0.1:<a free port>`; the registration file and the
/// listen address for `prr serve`.
fn appservice_world(s: &Scratch) -> (World, PathBuf, String) {
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
    let reg = AppserviceRegistration::new(HS, Some(&format!("http://{listen}")));
    let file = s.dir.path().join("registration.yaml");
    reg.write(&file).unwrap();
    let world = World::start(SynapseConfig::new().with_appservice(reg));
    (world, file, listen)
}
