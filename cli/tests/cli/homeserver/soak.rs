//! A bounded soak of `prr serve` as Synapse's appservice: rounds of a mixed stream (joins,
//! leaves, rules set and changed at their state keys, rules redacted) with the instance
//! manifest changed at the start of each round, `prr serve` SIGKILLed halfway through each
//! round but the last while Synapse goes on, and `prr compact` run on the store before the
//! restart. At the end every replica equals a batch ingest of Synapse's `/state` exports and
//! each event is in `source_events` once. Resident memory and the store's size after
//! compaction are read every round, once `source_events` has been pruned (the series is
//! printed): the replicas stay small (16 members, 8 rule keys), and `source_events` keeps the
//! current state's events and what came in the last `--dedup-retention` (3 s here); the
//! service compacts in process every 4 s (`--compact-every`) and `prr compact` between rounds,
//! collecting the log and the strings nothing uses any more (pruned event IDs, replaced
//! events' contents). Both stay flat.
//!
//! The size is bounded for CI: `PRR_SOAK_ROUNDS` (default 6) rounds of `PRR_SOAK_OPS`
//! (default 80) operations; longer by hand, e.g. `PRR_SOAK_ROUNDS=40 PRR_SOAK_OPS=200 cargo
//! test -p prr-cli --test cli soak -- --nocapture`. `PRR_SOAK_RESTARTS=0` runs one `prr
//! serve` throughout, neither killed nor compacted by `prr compact`: its memory and store stay
//! flat by its compaction in process alone.

use prr_synapse_harness::{Client, PolicyRule, RuleKind};
use serde_json::json;

use super::super::serve::Server;
use super::super::support::Scratch;
use super::{HS, World, appservice_world, caught_up, each_event_once, slot};

/// `--dedup-retention`, in seconds: `source_events` keeps what each round's service received
/// this long (and the current state), so it stays small over the run.
const RETENTION: u64 = 3;

/// How many users take part in the stream (each joins and leaves many times).
const MEMBERS: usize = 16;
/// How many rule state keys the stream sets, changes and redacts.
const RULE_KEYS: usize = 8;

fn knob(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

/// A small seeded generator (xorshift64*): the stream is the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// The stream's side of the world: who is joined, and what it does next.
struct Stream<'w> {
    world: &'w World,
    members: Vec<Client>,
    joined: Vec<bool>,
    rng: Rng,
    /// Operations done, by kind: joins, leaves, rules set, rules redacted.
    counts: [usize; 4],
}

impl Stream<'_> {
    /// One operation, chosen at random: a member joins or leaves (45%), a rule is set at one
    /// of the keys (35%: a member's literal id, a glob over some members, a server), or the
    /// rule at a key is redacted (20%).
    fn step(&mut self) {
        let w = self.world;
        match self.rng.below(20) {
            0..9 => {
                let i = self.rng.below(MEMBERS);
                if self.joined[i] {
                    self.members[i].leave(&w.protected).unwrap();
                    self.counts[1] += 1;
                } else {
                    self.members[i].join(&w.protected).unwrap();
                    self.counts[0] += 1;
                }
                self.joined[i] = !self.joined[i];
            }
            9..16 => {
                let key = format!("soak-{}", self.rng.below(RULE_KEYS));
                let rule = match self.rng.below(3) {
                    0 => {
                        let user = format!("@soak{}:{HS}", self.rng.below(MEMBERS));
                        PolicyRule::entity(RuleKind::User, &user)
                    }
                    1 => {
                        let glob = format!("@soak{}*:{HS}", self.rng.below(MEMBERS));
                        PolicyRule::entity(RuleKind::User, &glob)
                    }
                    _ => {
                        let server = format!("evil{}.example", self.rng.below(4));
                        PolicyRule::entity(RuleKind::Server, &server)
                    }
                };
                let rule = rule.with_state_key(&key).with_reason("soak");
                w.moderator.send_rule(&w.policy, &rule).unwrap();
                self.counts[2] += 1;
            }
            _ => {
                let key = format!("soak-{}", self.rng.below(RULE_KEYS));
                let state = w.moderator.state(&w.policy).unwrap();
                let live = state.iter().find(|e| {
                    e["state_key"] == key.as_str()
                        && e["content"].as_object().is_some_and(|c| !c.is_empty())
                });
                if let Some(e) = live {
                    let id = e["event_id"].as_str().unwrap();
                    w.moderator.redact(&w.policy, id, Some("soak")).unwrap();
                    self.counts[3] += 1;
                }
            }
        }
    }
}

/// One round's readings.
struct Reading {
    /// `VmRSS` of `prr serve` halfway through the round.
    rss: u64,
    /// The store file's size after `prr compact`.
    compacted: u64,
    /// Records of `room_members`, `member_bans` and `source_events` halfway through the round.
    members: usize,
    bans: usize,
    events: usize,
}

const MIB: f64 = 1024.0 * 1024.0;

#[test]
fn soak_mixed_stream_with_sigkills_and_compaction_ends_equal_to_a_batch_ingest() {
    let _slot = slot();
    let rounds = knob("PRR_SOAK_ROUNDS", 6).max(2);
    let ops = knob("PRR_SOAK_OPS", 80).max(2);
    let s = Scratch::new();
    let (world, registration, listen) = appservice_world(&s);
    let one = format!("@prr_bot:{HS}");
    let two = format!("@prr_two:{HS}");
    // Each round's manifest replaces the last one's: the second instance comes and goes.
    let manifests = [
        json!({"instances": [
            {"id": one, "watch": [world.policy], "protect": [world.protected]},
            {"id": two, "remove": true},
        ]})
        .to_string()
        .into_bytes(),
        json!({"instances": [
            {"id": one, "watch": [world.policy], "protect": [world.protected]},
            {"id": two, "watch": [world.policy], "protect": [world.protected]},
        ]})
        .to_string()
        .into_bytes(),
    ];
    let members = (0..MEMBERS)
        .map(|i| (world.synapse.register(&format!("soak{i}"), "pw", false)).unwrap())
        .collect();
    let mut stream = Stream {
        world: &world,
        members,
        joined: vec![false; MEMBERS],
        rng: Rng(0x5eed_50a4),
        counts: [0; 4],
    };
    let mut readings = Vec::new();
    let mut last: Option<Server> = None;
    // With `PRR_SOAK_RESTARTS=0`, one `prr serve` runs every round: what it keeps flat is then
    // its compaction in process alone (the store's size is the file's, not compacted).
    let restarts = knob("PRR_SOAK_RESTARTS", 1) != 0;
    let mut running: Option<(Server, std::time::Instant)> = None;
    for round in 0..rounds {
        // A short resync: Synapse backs off from an appservice that failed, and the state
        // fetched at start and every 5 s heals what it has not retried yet.
        let args = [
            "--homeserver",
            world.synapse.base_url(),
            "--registration",
            registration.to_str().unwrap(),
            "--resync-every",
            "5",
            "--dedup-retention",
            &RETENTION.to_string(),
            "--compact-every",
            "4",
        ];
        let (server, started) = running.take().unwrap_or_else(|| {
            let started = std::time::Instant::now();
            (Server::start_at(&s, &listen, &args), started)
        });
        let manifest = &manifests[round % 2];
        server.ingest(manifest);
        caught_up(&server, &one);
        if round % 2 == 1 {
            caught_up(&server, &two);
        }
        for _ in 0..ops / 2 {
            stream.step();
        }
        // Read once `source_events` has been pruned at least once.
        let pruned = std::time::Duration::from_millis(RETENTION * 1000 + 1500);
        std::thread::sleep(pruned.saturating_sub(started.elapsed()));
        let rss = server.rss();
        let members = server.rows("/v1/replicas/room_members").len();
        let bans = server.rows("/v1/replicas/member_bans").len();
        let events = server.rows("/v1/replicas/source_events").len();
        if round + 1 == rounds {
            for _ in ops / 2..ops {
                stream.step();
            }
            readings.push(Reading {
                rss,
                compacted: 0,
                members,
                bans,
                events,
            });
            last = Some(server);
            break;
        }
        let compacted = if restarts {
            // SIGKILL in the middle of the stream: the second half is sent while prr is down
            // and compacting.
            server.kill();
            for _ in ops / 2..ops {
                stream.step();
            }
            let out = s.ok(&["compact"]);
            assert!(out.contains("revisions captured"), "{out}");
            std::fs::metadata(s.store()).unwrap().len()
        } else {
            for _ in ops / 2..ops {
                stream.step();
            }
            running = Some((server, started));
            std::fs::metadata(s.store()).unwrap().len()
        };
        readings.push(Reading {
            rss,
            compacted,
            members,
            bans,
            events,
        });
    }
    let server = last.expect("the last round's server");
    let manifest = &manifests[(rounds - 1) % 2];
    world.equals_the_cli(&server, manifest);
    each_event_once(&server, &world, std::slice::from_ref(&world.protected));
    assert_eq!(server.terminate(), Some(0));
    s.ok(&["compact"]);
    readings.last_mut().unwrap().compacted = std::fs::metadata(s.store()).unwrap().len();

    let [joins, leaves, rules, redactions] = stream.counts;
    eprintln!(
        "soak: {rounds} rounds of {ops} operations ({joins} joins, {leaves} leaves, {rules} \
         rules set, {redactions} redacted), {}",
        if restarts {
            "SIGKILL + compact between rounds"
        } else {
            "one `prr serve` throughout (the store's file size, not compacted)"
        }
    );
    eprintln!(
        "| round | RSS (MiB) | store after compact (MiB) | source_events | room_members | member_bans |"
    );
    eprintln!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, r) in readings.iter().enumerate() {
        eprintln!(
            "| {i} | {:.1} | {:.2} | {} | {} | {} |",
            r.rss as f64 / MIB,
            r.compacted as f64 / MIB,
            r.events,
            r.members,
            r.bans
        );
    }
    // Round 0 warms up. From round 1 on, `source_events` holds the current state and what
    // came in the last `RETENTION` seconds: at most this round's operations and the last
    // round's (sent while prr was down, retried by Synapse after the restart). Memory and the
    // store after compaction are flat: a leak of revisions, log, dataflow state or
    // exactly-once IDs breaks these bounds in a long run.
    let (first, last) = (&readings[1], readings.last().unwrap());
    eprintln!(
        "from round 1 to the last: store {:+.3} MiB, RSS {:+.1} MiB, source_events {:+}",
        (last.compacted as f64 - first.compacted as f64) / MIB,
        (last.rss as f64 - first.rss as f64) / MIB,
        last.events as i64 - first.events as i64,
    );
    for (i, r) in readings.iter().enumerate().skip(1) {
        assert!(
            r.events <= first.events + 2 * ops,
            "round {i}: {} records in source_events (round 1: {})",
            r.events,
            first.events
        );
    }
    assert!(
        last.compacted as f64 <= first.compacted as f64 + MIB,
        "the store grew from {} to {} bytes",
        first.compacted,
        last.compacted
    );
    assert!(
        last.rss as f64 <= first.rss as f64 + 8.0 * MIB,
        "RSS grew from {} to {} bytes",
        first.rss,
        last.rss
    );
}
