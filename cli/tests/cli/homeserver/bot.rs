//! `prr serve` in bot mode (`/sync` as one bot account, as Draupnir runs) against Synapse: the
//! instance manifest is the bot's Draupnir configuration, set through the Client-Server API
//! (`PUT /user/{userId}/account_data/{type}`), and prr joins the rooms it names.

use prr_synapse_harness::{Client, PolicyRule, RoomOptions, RuleKind, encode};
use serde_json::{Value, json};

use super::super::serve::Server;
use super::super::support::Scratch;
use super::{
    HS, World, banned, caught_up, each_event_once, eventually, glob_rule, joined, literal_rule,
    slot, users,
};

/// The account data types of a Draupnir bot's configuration (as Draupnir names them).
const PROTECTED_ROOMS: &str = "org.matrix.mjolnir.protected_rooms";
const WATCHED_LISTS: &str = "org.matrix.mjolnir.watched_lists";

/// The world of the appservice tests and a bot account, already in the policy room (as a
/// Draupnir that was told to watch it), whose configuration watches the policy room (as the
/// `matrix.to` permalink Draupnir writes) and protects the protected room, which prr joins.
fn bot_world() -> (World, Client) {
    let world = World::start(prr_synapse_harness::SynapseConfig::new());
    let bot = world.synapse.register("prrbot", "pw", false).unwrap();
    bot.join(&world.policy).unwrap();
    let permalink = format!("https://matrix.to/#/{}?via={HS}", encode(&world.policy));
    bot.set_account_data(WATCHED_LISTS, &json!({"references": [permalink]}))
        .unwrap();
    bot.set_account_data(PROTECTED_ROOMS, &json!({"rooms": [world.protected]}))
        .unwrap();
    (world, bot)
}

/// `prr serve` in bot mode with `bot`'s access token (in a file of `s`; never printed).
fn bot_server(s: &Scratch, world: &World, bot: &Client) -> Server {
    let token = s.file("bot-token", format!("{}\n", bot.access_token()).as_bytes());
    Server::start(
        s,
        &[
            "--homeserver",
            world.synapse.base_url(),
            "--access-token-file",
            token.to_str().unwrap(),
        ],
    )
}

/// The manifest prr makes of the bot's configuration: its user id is the instance.
fn manifest(bot: &Client, watch: &[&String], protect: &[&String]) -> Vec<u8> {
    json!({"instances": [{"id": bot.user_id(), "watch": watch, "protect": protect}]})
        .to_string()
        .into_bytes()
}

/// The status's `sources.sync`.
fn sync_status(server: &Server) -> Value {
    server.json("/v1/status")["sources"]["sync"].clone()
}

/// The `next_batch` the status says was committed last.
fn position(server: &Server) -> String {
    let sync = sync_status(server);
    (sync["position"].as_str())
        .unwrap_or_else(|| panic!("no sources.sync.position: {sync}"))
        .to_string()
}

/// Whether this run of the bot's source resumed from a stored position (`sources.sync.resumed`,
/// once the source has started).
fn resumed(server: &Server) -> bool {
    eventually("the sync source started", 60, || {
        let sync = sync_status(server);
        sync["resumed"].as_bool().ok_or(sync.to_string())
    })
}

/// The position stored in `source_positions` for the bot's source.
fn stored_position(server: &Server, bot: &Client) -> Option<String> {
    let source = format!("sync:{}", bot.user_id());
    (server.rows("/v1/replicas/source_positions").iter())
        .find(|r| r["source"] == source.as_str())
        .and_then(|r| r["position"].as_str().map(str::to_string))
}

/// The rooms `instances` says the bot protects.
fn protected_rooms(server: &Server, bot: &Client) -> Vec<String> {
    (server.rows("/v1/replicas/instances").iter())
        .filter(|r| r["instance"] == bot.user_id() && r["relation"] == "protect")
        .map(|r| r["room_id"].as_str().unwrap().to_string())
        .collect()
}

/// The initial sync brings the rooms' state (prr joins the protected room itself); incremental
/// syncs bring joins (matching a glob, a hashed and no rule), a rule changed at its state key
/// and a rule redacted; the manifest follows the bot's account data (a protected room added,
/// the watched list removed); a SIGTERM restart resumes from the stored `next_batch`. Each
/// time, every replica equals the CLI's on `/state` exports.
#[test]
fn bot_mode_syncs_follows_its_configuration_and_resumes_after_sigterm() {
    let _slot = slot();
    let s = Scratch::new();
    let (world, bot) = bot_world();
    let server = bot_server(&s, &world, &bot);
    let id = bot.user_id().to_string();
    let (policy, protected) = (world.policy.clone(), world.protected.clone());
    caught_up(&server, &id);
    assert!(bot.joined_rooms().unwrap().contains(&protected));
    let sync = sync_status(&server);
    assert_eq!(sync["user"], id.as_str(), "{sync}");
    assert_eq!(sync["state"], "syncing", "{sync}");
    assert!(!resumed(&server), "{sync}");
    assert_eq!(
        joined(&server, &protected),
        users(&["alice", "baduser", "moderator", "prrbot"])
    );
    assert_eq!(banned(&server, &protected), users(&["baduser"]));
    let first = manifest(&bot, &[&policy], &[&protected]);
    world.equals_the_cli(&server, &first);
    let position_at_start = position(&server);
    let stored_at_start = stored_position(&server, &bot);
    assert!(stored_at_start.is_some());

    // Incremental syncs: joins, a rule changed at its state key, a rule redacted.
    world.user_joins("spammer");
    let hashme = world.user_joins("hashme");
    world.user_joins("bob");
    eventually("the joins arrive", 60, || {
        let got = banned(&server, &protected);
        let want = users(&["baduser", "spammer", "hashme"]);
        (got == want).then_some(()).ok_or(format!("{got:?}"))
    });
    let literal = literal_rule();
    let changed = PolicyRule::entity(RuleKind::User, "@otherbad:localhost")
        .with_state_key(literal.state_key());
    world.moderator.send_rule(&policy, &changed).unwrap();
    let glob = glob_rule();
    let glob_event = (world.moderator.state(&policy).unwrap().into_iter())
        .find(|e| e["state_key"] == glob.state_key())
        .expect("the glob rule is in the state")["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    (world.moderator)
        .redact(&policy, &glob_event, Some("not any more"))
        .unwrap();
    eventually("the rule changes arrive", 60, || {
        let got = banned(&server, &protected);
        (got == users(&["hashme"]))
            .then_some(())
            .ok_or(format!("{got:?}"))
    });
    world.equals_the_cli(&server, &first);
    assert_ne!(position(&server), position_at_start);
    assert_ne!(stored_position(&server, &bot), stored_at_start);

    // The configuration changes: a second protected room, which prr joins and follows.
    let protected2 = (world.moderator)
        .create_room(&RoomOptions::new().public().with_name("protected 2"))
        .unwrap();
    hashme.join(&protected2).unwrap();
    let otherbad = world.synapse.register("otherbad", "pw", false).unwrap();
    otherbad.join(&protected2).unwrap();
    bot.set_account_data(PROTECTED_ROOMS, &json!({"rooms": [protected, protected2]}))
        .unwrap();
    eventually("the second protected room is followed", 60, || {
        let got = banned(&server, &protected2);
        (got == users(&["hashme", "otherbad"]))
            .then_some(())
            .ok_or(format!("{got:?}"))
    });
    let mut both = vec![protected.clone(), protected2.clone()];
    both.sort();
    assert_eq!(protected_rooms(&server, &bot), both);
    caught_up(&server, &id);
    let rooms = vec![policy.clone(), protected.clone(), protected2.clone()];
    let second = manifest(&bot, &[&policy], &[&both[0], &both[1]]);
    world.equals_the_cli_on(&server, &second, &rooms);

    // The watched list removed: no rule applies any more (the policy room's state stays: the
    // bot is still in it).
    bot.set_account_data(WATCHED_LISTS, &json!({"references": []}))
        .unwrap();
    eventually("the watched list is dropped", 60, || {
        let got = server.rows("/v1/replicas/member_bans");
        got.is_empty().then_some(()).ok_or(format!("{got:?}"))
    });
    let third = manifest(&bot, &[], &[&both[0], &both[1]]);
    world.equals_the_cli_on(&server, &third, &rooms);

    // SIGTERM; while prr is down, a join, and a rule redacted followed by more messages than
    // a sync's timeline holds (10): the policy room's timeline is limited, and the redaction
    // is in the gap. The restart resumes from the stored `next_batch`.
    let before = position(&server);
    assert_eq!(server.terminate(), Some(0));
    world.user_joins("carol");
    let hashed = (world.moderator.state(&policy).unwrap().into_iter())
        .find(|e| e["state_key"] == super::hashed_rule().state_key())
        .expect("the hashed rule is in the state")["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    world.moderator.redact(&policy, &hashed, None).unwrap();
    for i in 0..15 {
        world
            .moderator
            .send_text(&policy, &format!("chatter {i}"))
            .unwrap();
    }
    let server = bot_server(&s, &world, &bot);
    assert!(resumed(&server));
    caught_up(&server, &id);
    eventually("the join made while prr was down arrives", 60, || {
        let got = joined(&server, &protected);
        (got.contains(&format!("@carol:{HS}")))
            .then_some(())
            .ok_or(format!("{got:?}"))
    });
    world.equals_the_cli_on(&server, &third, &rooms);
    each_event_once(&server, &world, &rooms);
    assert_ne!(position(&server), before);
    assert_eq!(server.terminate(), Some(0));
}

/// `prr serve` is SIGKILLed while 20 users join; restarted on the same store, it resumes from
/// the last committed `next_batch` (the joins made meanwhile come in a limited timeline and
/// its state): every join arrives, each event once, and the position moved on.
#[test]
fn bot_mode_sigkill_during_a_burst_of_joins_loses_and_repeats_nothing() {
    let _slot = slot();
    let s = Scratch::new();
    let (world, bot) = bot_world();
    let server = bot_server(&s, &world, &bot);
    let id = bot.user_id().to_string();
    caught_up(&server, &id);
    let protected = world.protected.clone();
    let names: Vec<String> = (0..20).map(|i| format!("burst{i}")).collect();
    let members: Vec<_> = (names.iter())
        .map(|n| world.synapse.register(n, "pw", false).unwrap())
        .collect();
    let room = protected.clone();
    let joiner = std::thread::spawn(move || {
        for m in &members {
            m.join(&room).unwrap();
        }
    });
    // alice, baduser, the moderator and the bot, and some of the burst.
    eventually("some joins arrive before the kill", 60, || {
        let n = joined(&server, &protected).len();
        (n >= 4 + 4).then_some(()).ok_or(format!("{n} joined"))
    });
    let stored_before = stored_position(&server, &bot);
    assert!(stored_before.is_some());
    let before_kill = joined(&server, &protected).len() - 4;
    server.kill();
    let burst_done_before_kill = joiner.is_finished();
    joiner.join().unwrap();
    eprintln!("killed with {before_kill} of the burst in (burst over: {burst_done_before_kill})");
    let server = bot_server(&s, &world, &bot);
    assert!(resumed(&server));
    let all: std::collections::BTreeSet<String> =
        (names.iter()).map(|n| format!("@{n}:{HS}")).collect();
    eventually("every join arrives after the restart", 60, || {
        let got = joined(&server, &protected);
        let missing: Vec<_> = all.difference(&got).collect();
        (missing.is_empty())
            .then_some(())
            .ok_or(format!("missing {missing:?}"))
    });
    caught_up(&server, &id);
    let first = manifest(&bot, &[&world.policy], &[&protected]);
    world.equals_the_cli(&server, &first);
    each_event_once(&server, &world, &world.rooms());
    // One more join after the burst: the stored position moves on from where it was.
    world.user_joins("late");
    eventually("a join after the burst arrives", 60, || {
        let got = joined(&server, &protected);
        (got.contains(&format!("@late:{HS}")))
            .then_some(())
            .ok_or(format!("{got:?}"))
    });
    let stored_after = stored_position(&server, &bot);
    assert!(stored_after.is_some());
    assert_ne!(
        stored_after, stored_before,
        "the stored sync position moved on"
    );
    world.equals_the_cli(&server, &first);
    each_event_once(&server, &world, &world.rooms());
    assert_eq!(server.terminate(), Some(0));
}
