//! `prr serve` as Synapse's appservice.

use prr_synapse_harness::{PolicyRule, RuleKind};

use super::super::serve::Server;
use super::super::support::Scratch;
use super::{
    HS, appservice_server, appservice_world, banned, caught_up, each_event_once, eventually,
    glob_rule, joined, literal_rule, slot, users,
};

/// The instance: a user of the registration's namespace (`@prr_.*`).
fn instance() -> String {
    format!("@prr_bot:{HS}")
}

/// The number of rooms catch-up fetched, from the status.
fn rooms_fetched(server: &Server) -> u64 {
    server.json("/v1/status")["sources"]["catch_up"]["rooms_fetched"]
        .as_u64()
        .expect("sources.catch_up.rooms_fetched")
}

/// Catch-up brings what happened before the manifest; transactions bring what happens after
/// (joins matching a glob, a hashed and no rule, a rule changed at its state key, a rule
/// redacted), and a Synapse restart does not stop them. Each time, every replica equals the
/// CLI's on `/state` exports.
#[test]
fn appservice_catch_up_then_transactions_equal_the_cli_across_a_synapse_restart() {
    let _slot = slot();
    let s = Scratch::new();
    let (mut world, registration, listen) = appservice_world(&s);
    let server = appservice_server(&s, &listen, &world.synapse, &registration, "3600");
    let instance = instance();
    let manifest = world.manifest(&instance);
    server.ingest(&manifest);
    caught_up(&server, &instance);
    let protected = world.protected.clone();
    // Catch-up: the members from before, and the ban of the one a literal rule names.
    assert_eq!(
        joined(&server, &protected),
        users(&["alice", "baduser", "moderator", "prr_bot"])
    );
    assert_eq!(banned(&server, &protected), users(&["baduser"]));
    assert_eq!(rooms_fetched(&server), 2);
    world.equals_the_cli(&server, &manifest);

    // Transactions: joins. (No member can be on the banned server `evil.example`: there is
    // one homeserver; that rule is checked through `server_acl`'s deny list.)
    for user in ["spammer", "hashme", "bob"] {
        world.user_joins(user);
    }
    eventually("the joins arrive", 60, || {
        let got = banned(&server, &protected);
        let want = users(&["baduser", "spammer", "hashme"]);
        (got == want).then_some(()).ok_or(format!("{got:?}"))
    });
    let acl = server.rows("/v1/replicas/server_acl");
    assert_eq!(acl.len(), 1, "{acl:?}");
    assert_eq!(acl[0]["deny"], serde_json::json!(["evil.example"]));

    // A rule changed at its state key, a rule redacted.
    let literal = literal_rule();
    let changed = PolicyRule::entity(RuleKind::User, "@otherbad:localhost")
        .with_state_key(literal.state_key());
    world.moderator.send_rule(&world.policy, &changed).unwrap();
    let glob = glob_rule();
    let glob_event = world
        .moderator
        .state(&world.policy)
        .unwrap()
        .into_iter()
        .find(|e| e["state_key"] == glob.state_key())
        .expect("the glob rule is in the state")["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    world
        .moderator
        .redact(&world.policy, &glob_event, Some("not any more"))
        .unwrap();
    eventually("the rule changes arrive", 60, || {
        let got = banned(&server, &protected);
        (got == users(&["hashme"]))
            .then_some(())
            .ok_or(format!("{got:?}"))
    });
    world.equals_the_cli(&server, &manifest);
    // All of it came by transactions: catch-up fetched each room once.
    assert_eq!(rooms_fetched(&server), 2);
    let status = server.json("/v1/status");
    assert_eq!(
        status["sources"]["appservice"]["last_transaction"]["outcome"], "applied",
        "{status}"
    );

    // Synapse restarts; new joins still arrive by transactions.
    world.synapse.restart().unwrap();
    world.user_joins("carol");
    world.user_joins("spam2");
    world
        .moderator
        .send_rule(
            &world.policy,
            &PolicyRule::entity(RuleKind::User, "@spam2:localhost"),
        )
        .unwrap();
    eventually("joins after the Synapse restart arrive", 60, || {
        let got = banned(&server, &protected);
        (got == users(&["hashme", "spam2"]))
            .then_some(())
            .ok_or(format!("{got:?}"))
    });
    assert!(joined(&server, &protected).contains(&format!("@carol:{HS}")));
    world.equals_the_cli(&server, &manifest);
    assert_eq!(rooms_fetched(&server), 2);
    each_event_once(&server, &world, &[world.protected.clone()]);
    assert_eq!(server.terminate(), Some(0));
}

/// `prr serve` is SIGKILLed while 30 users join; restarted on the same store and port, it
/// gets what Synapse retries (and a Synapse restart makes it retry at once if it backed off):
/// every join arrives, each event once.
#[test]
fn appservice_sigkill_during_a_burst_of_joins_loses_and_repeats_nothing() {
    let _slot = slot();
    let s = Scratch::new();
    let (mut world, registration, listen) = appservice_world(&s);
    let server = appservice_server(&s, &listen, &world.synapse, &registration, "3600");
    let instance = instance();
    let manifest = world.manifest(&instance);
    server.ingest(&manifest);
    caught_up(&server, &instance);
    let protected = world.protected.clone();
    let names: Vec<String> = (0..30).map(|i| format!("burst{i}")).collect();
    let members: Vec<_> = (names.iter())
        .map(|n| world.synapse.register(n, "pw", false).unwrap())
        .collect();
    let joiner = std::thread::spawn(move || {
        for m in &members {
            m.join(&protected).unwrap();
        }
    });
    let protected = world.protected.clone();
    eventually("some joins arrive before the kill", 60, || {
        let n = joined(&server, &protected).len();
        (n >= 8).then_some(()).ok_or(format!("{n} joined"))
    });
    let before_kill = joined(&server, &protected).len();
    server.kill();
    let burst_done_before_kill = joiner.is_finished();
    joiner.join().unwrap();
    let server = appservice_server(&s, &listen, &world.synapse, &registration, "3600");
    let all: std::collections::BTreeSet<String> =
        (names.iter()).map(|n| format!("@{n}:{HS}")).collect();
    let arrived = || {
        let got = joined(&server, &protected);
        let missing: Vec<_> = all.difference(&got).collect();
        missing
            .is_empty()
            .then_some(())
            .ok_or(format!("missing {missing:?}"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while arrived().is_err() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let restarted = arrived().is_err();
    if restarted {
        // Synapse backs off from an appservice that failed; a restart retries at once.
        world.synapse.restart().unwrap();
    }
    eprintln!(
        "killed with {before_kill} joined (burst over by then: {burst_done_before_kill}); \
         Synapse restarted to retry: {restarted}"
    );
    eventually("every join arrives after the restart", 60, arrived);
    world.equals_the_cli(&server, &manifest);
    each_event_once(&server, &world, &[world.protected.clone()]);
}
