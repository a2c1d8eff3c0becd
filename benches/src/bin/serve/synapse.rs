//! Part 1, through Synapse: `prr serve` as the appservice of a real local Synapse (the
//! harness of `testing/synapse`: SQLite, no rate limits), on a store holding the workload's
//! rooms (its files but the manifest, so catch-up has only the benchmark's rooms to fetch),
//! with one instance (`@prr_bot:localhost`) that watches a policy room holding the glob rule
//! `@spam*:localhost` and protects one room.
//!
//! - **latency**: from a state event sent to Synapse (the client's request included) until
//!   the ban it causes is visible: a join of `@spamN` (matches the glob), and a new literal
//!   ban rule on a member who joined before; seen by polling the instance's partition of
//!   `member_bans` every 2 ms, and (a few samples) by waiting with
//!   `GET /v1/replicas/member_bans/deltas?since=SEQ&wait=10`, which replays the log from the
//!   newest revision at each call;
//! - **throughput**: users join the protected room from several client threads at once;
//!   appservice transactions (`prr_appservice_transactions_total`) and events
//!   (`prr_source_events_total{source="appservice"}`) per second, from the first join sent
//!   until every join is in `prr serve`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use prr_benches::harness::table::{Table, fmt_secs};
use prr_benches::list_files;
use prr_benches::waves::percentile;
use prr_synapse_harness::{
    AppserviceRegistration, Client as MatrixClient, Error as SynapseError, PolicyRule, RoomOptions,
    RuleKind, Synapse, SynapseConfig, free_port,
};
use serde_json::{Value, json};

use crate::server::{Client, Serve, encode};
use crate::stream::sorted;
use crate::{Setup, prr_ingest};

/// The homeserver's server name.
const HS: &str = "localhost";
/// Client threads joining users for the throughput.
const THREADS: usize = 4;
/// Joins whose ban is waited for on the deltas (each call replays the log since the newest
/// revision: seconds at medium).
const DELTA_SAMPLES: usize = 3;

/// Latency samples of each kind and users joining for the throughput.
pub struct Options {
    pub samples: usize,
    pub joiners: usize,
}

/// Waits until `/v1/status` says `instance` is caught up (at most 120 s).
fn caught_up(client: &Client, instance: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = client.json("/v1/status")?;
        let done = (status["instances"].as_array().into_iter().flatten())
            .any(|i| i["id"] == instance && i["caught_up"] == true);
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{instance} not caught up within 120 s: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (at most 60 s) until a `member_bans` delta after `since` adds a ban of `user` in
/// `room`; `since` moves past every delta seen.
fn wait_ban(client: &Client, since: &mut u64, user: &str, room: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = client.rows(&format!(
            "/v1/replicas/member_bans/deltas?since={since}&wait=10"
        ))?;
        let mut found = false;
        for r in &rows {
            *since = (*since).max(r["seq"].as_u64().unwrap_or(0));
            let rec = &r["record"];
            found |= r["diff"] == 1 && rec["user_id"] == user && rec["room_id"] == room;
        }
        if found {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no ban of {user} in {room} within 60 s");
        }
    }
}

/// Polls `path` (the instance's partition of `member_bans`) every 2 ms, at most 60 s, until
/// it holds a ban of `user` in `room`.
fn poll_ban(client: &Client, path: &str, user: &str, room: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = client.rows(path)?;
        if rows
            .iter()
            .any(|r| r["user_id"] == user && r["room_id"] == room)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no ban of {user} in {room} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Registers `@{prefix}{i}` for `i` in `0..n`, from two threads.
fn register(synapse: &Synapse, prefix: &str, n: usize) -> anyhow::Result<Vec<MatrixClient>> {
    let half = n.div_ceil(2);
    let made: Vec<anyhow::Result<Vec<MatrixClient>>> = std::thread::scope(|s| {
        let handles: Vec<_> = [0..half, half..n]
            .into_iter()
            .map(|range| {
                s.spawn(move || {
                    range
                        .map(|i| Ok(synapse.register(&format!("{prefix}{i}"), "pw", false)?))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a thread panicked")))
            .collect()
    });
    let mut out = Vec::new();
    for m in made {
        out.extend(m?);
    }
    Ok(out)
}

/// The current seq of the service.
fn seq(client: &Client) -> anyhow::Result<u64> {
    client.json("/v1/status")?["seq"]
        .as_u64()
        .context("no seq in the status")
}

/// Seconds to a cell: p50 and p99.
fn p50_p99(v: Vec<f64>) -> (String, String) {
    let v = sorted(v);
    (
        fmt_secs(percentile(&v, 50.0)),
        fmt_secs(percentile(&v, 99.0)),
    )
}

/// Runs part 1 and prints its tables (or why it was skipped).
pub fn run(setup: &Setup, o: &Options) -> anyhow::Result<()> {
    println!("### Through Synapse: prr serve as its appservice\n");
    let store = setup.work.join("serve-synapse.redb");
    let _ = std::fs::remove_file(&store);
    let rooms: Vec<PathBuf> = (list_files(&setup.dir)?.into_iter())
        .filter(|f| !f.ends_with("90-manifest.json"))
        .collect();
    prr_ingest(&setup.prr, &store, &rooms)?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let registration = AppserviceRegistration::new(HS, Some(&format!("http://{listen}")));
    let reg_file = setup.work.join("registration.yaml");
    registration.write(&reg_file)?;
    let config = SynapseConfig::new()
        .with_appservice(registration)
        .with_option("bcrypt_rounds", json!(4));
    let synapse = match Synapse::start(config) {
        Ok(s) => s,
        Err(e @ SynapseError::VenvMissing { .. }) => {
            println!("Skipped: {e}\n");
            let _ = std::fs::remove_file(&store);
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let moderator = synapse.register("moderator", "pw", true)?;
    let policy = moderator.create_room(&RoomOptions::new().public().with_name("ban list"))?;
    moderator.send_rule(
        &policy,
        &PolicyRule::entity(RuleKind::User, &format!("@spam*:{HS}")),
    )?;
    let protected = moderator.create_room(&RoomOptions::new().public().with_name("protected"))?;
    let serve = Serve::start(
        &setup.prr,
        &store,
        &listen,
        &[
            "--homeserver",
            synapse.base_url(),
            "--registration",
            reg_file.to_str().context("a UTF-8 path")?,
            "--resync-every",
            "3600",
            "--revision-interval",
            "3600",
        ],
    )?;
    let client = serve.client().clone();
    let instance = format!("@prr_bot:{HS}");
    let manifest =
        json!({"instances": [{"id": instance, "watch": [policy], "protect": [protected]}]});
    let t = Instant::now();
    client.ingest(manifest.to_string().as_bytes())?;
    caught_up(&client, &instance)?;
    let catch_up = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let spammers = register(&synapse, "spam", o.samples + DELTA_SAMPLES)?;
    let members = register(&synapse, "member", o.samples)?;
    let joiners = register(&synapse, "burst", o.joiners)?;
    let registering = t.elapsed().as_secs_f64();
    // The members join before their rules come.
    let mut since = seq(&client)?;
    for m in &members {
        m.join(&protected)?;
    }
    let last = members.last().map(|m| m.user_id().to_string());
    let members_path = format!("/v1/replicas/room_members?partition={}", encode(&protected));
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(user) = &last {
        let rows = client.rows(&members_path)?;
        if rows.iter().any(|r| r["user_id"] == *user.as_str()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the members' joins did not arrive within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // Latency: a join matching the glob rule; a new literal ban rule on a member.
    let bans_path = crate::api::bans_path(&instance);
    let mut join_lat = Vec::new();
    for u in spammers.iter().skip(DELTA_SAMPLES) {
        let t = Instant::now();
        u.join(&protected)?;
        poll_ban(&client, &bans_path, u.user_id(), &protected)?;
        join_lat.push(t.elapsed().as_secs_f64());
    }
    let mut rule_lat = Vec::new();
    for m in &members {
        let t = Instant::now();
        moderator.send_rule(&policy, &PolicyRule::entity(RuleKind::User, m.user_id()))?;
        poll_ban(&client, &bans_path, m.user_id(), &protected)?;
        rule_lat.push(t.elapsed().as_secs_f64());
    }
    // The same for a few joins, waiting on the deltas; and the cost of one empty deltas call.
    let mut delta_lat = Vec::new();
    for u in spammers.iter().take(DELTA_SAMPLES) {
        since = since.max(seq(&client)?);
        let t = Instant::now();
        u.join(&protected)?;
        wait_ban(&client, &mut since, u.user_id(), &protected)?;
        delta_lat.push(t.elapsed().as_secs_f64());
    }
    let now = seq(&client)?;
    let t = Instant::now();
    client.rows(&format!("/v1/replicas/member_bans/deltas?since={now}"))?;
    let empty_deltas = t.elapsed().as_secs_f64();

    // Throughput: users join from several threads at once.
    let txn_metric = "prr_appservice_transactions_total";
    let ev_metric = "prr_source_events_total";
    let appservice = "source=\"appservice\"";
    let (txn0, ev0) = (
        client.metric(txn_metric, "")?,
        client.metric(ev_metric, appservice)?,
    );
    let t = Instant::now();
    let sent = std::thread::scope(|s| -> anyhow::Result<f64> {
        let handles: Vec<_> = (0..THREADS)
            .map(|k| {
                let (joiners, protected) = (&joiners, &protected);
                s.spawn(move || -> anyhow::Result<()> {
                    for j in joiners.iter().skip(k).step_by(THREADS) {
                        j.join(protected)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .unwrap_or_else(|_| bail!("a joining thread panicked"))?;
        }
        Ok(t.elapsed().as_secs_f64())
    })?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let want = ev0 + joiners.len() as f64;
    while client.metric(ev_metric, appservice)? < want {
        if Instant::now() > deadline {
            bail!("the burst's joins did not arrive within 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = t.elapsed().as_secs_f64();
    let (txn1, ev1) = (
        client.metric(txn_metric, "")?,
        client.metric(ev_metric, appservice)?,
    );
    let joined: Vec<Value> = client.rows(&members_path)?;
    let burst_in = (joined.iter())
        .filter(|r| r["membership"] == "join")
        .filter(|r| {
            r["user_id"]
                .as_str()
                .is_some_and(|u| u.starts_with("@burst"))
        })
        .count();
    drop(serve);
    drop(synapse);
    let _ = std::fs::remove_file(&store);
    if burst_in != joiners.len() {
        bail!(
            "{burst_in} of the {} burst joins in room_members",
            joiners.len()
        );
    }

    println!(
        "Synapse {} (SQLite, rate limits off, bcrypt rounds 4) and `prr serve` as its appservice, on a store holding the workload's rooms (not its manifest); one instance watching a policy room and protecting one room. Catch-up of the two rooms: {}. {} users registered in {}.\n",
        prr_synapse_harness::SYNAPSE_VERSION,
        fmt_secs(catch_up),
        2 * o.samples + o.joiners,
        fmt_secs(registering),
    );
    let mut t = Table::new(&[
        "from the event sent to Synapse until its ban is visible",
        "samples",
        "p50",
        "p99",
    ]);
    let (j50, j99) = p50_p99(join_lat);
    t.row(vec![
        "a join of `@spamN` (the glob `@spam*:localhost` bans it)".into(),
        o.samples.to_string(),
        j50,
        j99,
    ]);
    let (r50, r99) = p50_p99(rule_lat);
    t.row(vec![
        "a new literal ban rule on a member".into(),
        o.samples.to_string(),
        r50,
        r99,
    ]);
    let (d50, d99) = p50_p99(delta_lat);
    t.row(vec![
        "a join of `@spamN`, waited for on `member_bans/deltas?since=SEQ&wait=10`".into(),
        DELTA_SAMPLES.to_string(),
        d50,
        d99,
    ]);
    println!("{}", t.render());
    println!(
        "Seen by polling `GET /v1/replicas/member_bans?partition=@prr_bot:localhost` every 2 ms, except the last row. One `GET /v1/replicas/member_bans/deltas?since=LAST_SEQ` (an empty answer) took {} on this store: it replays the log after the newest revision (here the store's, before the benchmark).\n",
        fmt_secs(empty_deltas)
    );
    let txns = txn1 - txn0;
    let events = ev1 - ev0;
    let mut t = Table::new(&[
        "throughput",
        "joins",
        "client threads",
        "joins sent / s (Synapse's answers)",
        "wall until all in prr serve",
        "**transactions / s**",
        "**events / s**",
        "events / transaction",
    ]);
    t.row(vec![
        "users join the protected room at once".into(),
        joiners.len().to_string(),
        THREADS.to_string(),
        format!("{:.0}", joiners.len() as f64 / sent),
        fmt_secs(wall),
        format!("{:.1}", txns / wall),
        format!("{:.1}", events / wall),
        format!("{:.2}", events / txns.max(1.0)),
    ]);
    println!("{}", t.render());
    Ok(())
}
