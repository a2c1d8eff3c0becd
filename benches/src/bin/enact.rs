//! Issue 17's effect handlers through a real Synapse: `prr serve --enact` as the appservice of
//! a local Synapse (the harness of `testing/synapse`: SQLite, every rate limit off, bcrypt
//! rounds 4), enacting the bans of one instance (`@prr_botK:localhost`, power level 100 in its
//! protected rooms).
//!
//! Each case has its own policy room, protected rooms, users and `prr serve` (on a fresh
//! store); Synapse is shared. `prr serve` runs first, so Synapse's transactions flow in real
//! time. The case's users (appservice-registered: no password, no rate limit) join its
//! protected rooms; the manifest is ingested and the instance caught up (its rooms fetched),
//! and the handler sets each room's server ACL (the rooms have none: `acl_sync` is false),
//! waited for as `done` outcomes. Then one glob ban rule (`@vK_*:localhost`) matching every
//! one of the users is sent to the policy room through Synapse, and the instance's partition
//! of `outcomes` is polled every 20 ms until every ban is `done`:
//!
//! - **one room**: N users in one protected room (the handler bans one room's users in order);
//! - **rooms in parallel**: N users spread over several rooms, with `--enact-concurrency 1`
//!   and with the default, to show the rooms enacted in parallel.
//!
//! Reported: from the rule's send until every ban intent is in `member_bans`, until the first
//! and the last `done` outcome (by the outcomes' `at`, ms since the epoch, against the send's
//! clock), bans/s = N / (last done − first done), the p50 and p99 of each ban's `at` minus the
//! send; then checked: every user banned in Synapse (`GET /rooms/{room}/state`), every outcome
//! `done` with one attempt, and still so once the bans came back by transaction.
//!
//! ```text
//! cargo run --release -p prr-benches --bin enact -- --size small
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use prr_benches::harness::table::{Table, fmt_secs};
use prr_benches::measure::{load_average, machine_line};
use prr_benches::waves::{percentile, prr_binary};
use prr_synapse_harness::{
    AppserviceRegistration, Client as MatrixClient, Error as SynapseError, Namespace, PolicyRule,
    RoomOptions, RuleKind, Synapse, SynapseConfig, free_port,
};
use serde_json::{Value, json};

#[path = "serve/server.rs"]
#[allow(dead_code)] // shared with the `serve` benchmark, which uses all of it
mod server;

use server::{Client, Serve, encode};

/// The homeserver's server name.
const HS: &str = "localhost";
/// Client threads registering and joining users.
const THREADS: usize = 4;
/// `prr serve`'s default `--enact-concurrency` (`prr_serve::DEFAULT_CONCURRENCY`).
const DEFAULT_CONCURRENCY: usize = 8;
/// How often the outcomes are polled.
const POLL: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Size {
    Small,
    Medium,
    Large,
}

/// Bans enacted by `prr serve --enact` through Synapse.
#[derive(Debug, Parser)]
#[command(name = "enact")]
struct Cli {
    /// small: 20 users in one room, 20 over 4 rooms; medium: 100 and 1000 in one room, 500
    /// over 10 rooms; large: 1000 and 3000 in one room, 2000 over 20 rooms.
    #[arg(long, value_enum, default_value_t = Size::Small)]
    size: Size,
    /// Users of the one-room cases (default by size).
    #[arg(long, value_delimiter = ',')]
    users: Option<Vec<usize>>,
    /// Users of the rooms-in-parallel cases (0: skip them; default by size).
    #[arg(long)]
    spread_users: Option<usize>,
    /// Rooms of the rooms-in-parallel cases (default by size).
    #[arg(long)]
    rooms: Option<usize>,
    /// Seconds to wait for the last ban of a case.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

/// What every case shares.
struct World {
    prr: PathBuf,
    work: PathBuf,
    synapse: Synapse,
    moderator: MatrixClient,
    registration: PathBuf,
    listen: String,
}

/// One case: N users over `rooms` rooms, `prr serve --enact` with `concurrency` (None: the
/// default).
struct Case {
    k: usize,
    users: usize,
    rooms: usize,
    concurrency: Option<usize>,
}

/// What one case measured (seconds from the rule's send).
struct Measured {
    users: usize,
    rooms: usize,
    concurrency: String,
    setup: f64,
    catch_up: f64,
    intents: Option<f64>,
    first: f64,
    last: f64,
    seen_last: f64,
    per_ban: Vec<f64>,
    banned_in_synapse: usize,
    retried: usize,
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Runs `f` on each item from `THREADS` threads; the first error.
fn parallel<T: Sync>(
    items: &[T],
    f: impl Fn(&T) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|k| {
                let f = &f;
                s.spawn(move || -> anyhow::Result<()> {
                    items.iter().skip(k).step_by(THREADS).try_for_each(f)
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap_or_else(|_| bail!("a thread panicked"))?;
        }
        Ok(())
    })
}

/// Waits (at most `secs`) until `f` gives `Some`, trying every `every`.
fn until<T>(
    what: &str,
    secs: u64,
    every: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {secs} s");
        }
        std::thread::sleep(every);
    }
}

/// Waits until `/v1/status` says `instance` is caught up.
fn caught_up(client: &Client, instance: &str) -> anyhow::Result<()> {
    until(
        &format!("{instance} caught up"),
        300,
        Duration::from_millis(20),
        || {
            let status = client.json("/v1/status")?;
            let done = (status["instances"].as_array().into_iter().flatten())
                .any(|i| i["id"] == instance && i["caught_up"] == true);
            Ok(done.then_some(()))
        },
    )
}

/// The users of `room` whose user id starts with `prefix` and whose membership in `prr
/// serve`'s `room_members` is `membership`.
fn members(client: &Client, room: &str, prefix: &str, membership: &str) -> anyhow::Result<usize> {
    let rows = client.rows(&format!(
        "/v1/replicas/room_members?partition={}",
        encode(room)
    ))?;
    Ok((rows.iter())
        .filter(|r| r["membership"] == membership)
        .filter(|r| (r["user_id"].as_str()).is_some_and(|u| u.starts_with(prefix)))
        .count())
}

/// The users of `room` banned in Synapse (its `/state`, as the moderator sees it) whose
/// localpart starts with `prefix`.
fn banned_in_synapse(moderator: &MatrixClient, room: &str, prefix: &str) -> anyhow::Result<usize> {
    let state = moderator.state(room)?;
    Ok((state.iter())
        .filter(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "ban")
        .filter(|e| {
            e["state_key"]
                .as_str()
                .is_some_and(|u| u.starts_with(prefix))
        })
        .count())
}

/// The ban outcomes of `instance`, by status.
fn outcomes(client: &Client, instance: &str) -> anyhow::Result<BTreeMap<String, Vec<Value>>> {
    outcomes_of(client, instance, "ban")
}

/// The `action` outcomes of `instance`, by status.
fn outcomes_of(
    client: &Client,
    instance: &str,
    action: &str,
) -> anyhow::Result<BTreeMap<String, Vec<Value>>> {
    let rows = client.rows(&format!(
        "/v1/replicas/outcomes?partition={}",
        encode(instance)
    ))?;
    let mut by = BTreeMap::<String, Vec<Value>>::new();
    for r in rows.into_iter().filter(|r| r["action"] == action) {
        let status = r["status"].as_str().unwrap_or("?").to_string();
        by.entry(status).or_default().push(r);
    }
    Ok(by)
}

/// Whether some outcome ended otherwise than `done` (`started` is an action in flight).
fn settled_badly(by: &BTreeMap<String, Vec<Value>>) -> bool {
    by.keys().any(|s| s != "done" && s != "started")
}

/// A short account of outcomes not `done`, for an error.
fn not_done(by: &BTreeMap<String, Vec<Value>>) -> String {
    let mut out = Vec::new();
    for (status, rows) in by.iter().filter(|(s, _)| *s != "done") {
        let first = rows.first().map(Value::to_string).unwrap_or_default();
        out.push(format!("{} {status} (first: {first})", rows.len()));
    }
    out.join("; ")
}

impl World {
    fn start(work: &Path) -> anyhow::Result<Option<World>> {
        let listen = format!("127.0.0.1:{}", free_port()?);
        // The bots (`@prr_…`, exclusive) and the benchmark's users (`@v…`), which the
        // appservice registers without a password.
        let registration = AppserviceRegistration::new(HS, Some(&format!("http://{listen}")))
            .with_users(vec![
                Namespace {
                    regex: format!("@prr_.*:{HS}"),
                    exclusive: true,
                },
                Namespace {
                    regex: format!("@v[0-9]+_.*:{HS}"),
                    exclusive: false,
                },
            ]);
        let reg_file = work.join("registration.yaml");
        registration.write(&reg_file)?;
        let config = SynapseConfig::new()
            .with_appservice(registration)
            .with_option("bcrypt_rounds", json!(4));
        let synapse = match Synapse::start(config) {
            Ok(s) => s,
            Err(e @ SynapseError::VenvMissing { .. }) => {
                println!("Skipped: {e}\n");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let moderator = synapse.register("moderator", "pw", true)?;
        Ok(Some(World {
            prr: prr_binary()?,
            work: work.to_path_buf(),
            synapse,
            moderator,
            registration: reg_file,
            listen,
        }))
    }

    /// Runs one case.
    fn run(&self, case: &Case, timeout: u64) -> anyhow::Result<Measured> {
        let k = case.k;
        let bot = format!("@prr_bot{k}:{HS}");
        let store = self.work.join(format!("enact-{k}.redb"));
        let _ = std::fs::remove_file(&store);
        let mut args = vec![
            "--homeserver",
            self.synapse.base_url(),
            "--registration",
            self.registration.to_str().context("a UTF-8 path")?,
            "--resync-every",
            "3600",
            "--revision-interval",
            "3600",
            "--enact",
        ];
        let concurrency = case.concurrency.map(|c| c.to_string());
        if let Some(c) = &concurrency {
            args.extend(["--enact-concurrency", c]);
        }
        let serve = Serve::start(&self.prr, &store, &self.listen, &args)?;
        let client = serve.client().clone();

        let t = Instant::now();
        let m = &self.moderator;
        let policy = m.create_room(&RoomOptions::new().public().with_name("ban list"))?;
        // Power to ban and to set the server ACL (which the handler sets once caught up).
        let power = json!({"users": {bot.clone(): 100}});
        let rooms: Vec<String> = (0..case.rooms)
            .map(|r| {
                let options = RoomOptions::new()
                    .public()
                    .with_name(&format!("protected {r}"))
                    .with_power_levels(power.clone());
                m.create_room(&options)
            })
            .collect::<Result<_, _>>()?;
        // User i joins room i % rooms.
        let prefix = format!("@v{k}_");
        let users: Vec<usize> = (0..case.users).collect();
        parallel(&users, |&i| {
            let user = self
                .synapse
                .register_appservice_user(&format!("v{k}_{i}"))?;
            user.join(&rooms[i % rooms.len()])?;
            Ok(())
        })?;
        let setup = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let manifest = json!({"instances": [{"id": bot, "watch": [policy], "protect": rooms}]});
        client.ingest(manifest.to_string().as_bytes())?;
        caught_up(&client, &bot)?;
        for (r, room) in rooms.iter().enumerate() {
            let want = case.users / rooms.len() + usize::from(r < case.users % rooms.len());
            until("the members in prr serve", 120, POLL, || {
                Ok((members(&client, room, &prefix, "join")? == want).then_some(()))
            })?;
        }
        let catch_up = t.elapsed().as_secs_f64();
        // The rooms have no server ACL: the handler sets one in each once caught up. Those
        // actions end before the rule is sent, so that they do not share Synapse with the bans.
        until("the server ACLs set", 120, POLL, || {
            let by = outcomes_of(&client, &bot, "server_acl")?;
            let done = by.get("done").map_or(0, Vec::len);
            if settled_badly(&by) {
                bail!("server ACL outcomes: {}", not_done(&by));
            }
            Ok((done == case.rooms).then_some(()))
        })?;
        let before = outcomes(&client, &bot)?;
        if !before.is_empty() {
            bail!("outcomes before the rule: {}", not_done(&before));
        }

        // The rule; then the intents, then every ban done.
        let rule = PolicyRule::entity(RuleKind::User, &format!("@v{k}_*:{HS}"))
            .with_reason("enact benchmark");
        let sent_ms = now_ms();
        let sent = Instant::now();
        m.send_rule(&policy, &rule)?;
        let bans_path = format!("/v1/replicas/member_bans?partition={}", encode(&bot));
        let mut polls = 0usize;
        let intents = until("the ban intents", timeout, Duration::from_millis(5), || {
            polls += 1;
            if client.rows(&bans_path)?.len() >= case.users {
                return Ok(Some(Some(sent.elapsed().as_secs_f64())));
            }
            // Bans under way already: the intents may be leaving `member_bans`.
            let started = polls.is_multiple_of(10) && !outcomes(&client, &bot)?.is_empty();
            Ok(started.then_some(None))
        })?;
        let done = until("every ban done", timeout, POLL, || {
            let by = outcomes(&client, &bot)?;
            let done = by.get("done").map_or(0, Vec::len);
            if settled_badly(&by) {
                bail!(
                    "outcomes not done: {} ({done} done)\n{}",
                    not_done(&by),
                    self.synapse.log_tail(20)
                );
            }
            Ok((done >= case.users).then(|| by["done"].clone()))
        })?;
        let seen_last = sent.elapsed().as_secs_f64();
        if done.len() != case.users {
            bail!("{} done outcomes for {} users", done.len(), case.users);
        }
        let mut per_ban: Vec<f64> = (done.iter())
            .map(|r| (r["at"].as_f64().unwrap_or(f64::NAN) - sent_ms) / 1e3)
            .collect();
        per_ban.sort_by(f64::total_cmp);
        let retried = (done.iter())
            .filter(|r| r["attempts"].as_u64() != Some(1))
            .count();

        // Through Synapse: every user banned.
        let mut banned = 0;
        for room in &rooms {
            banned += banned_in_synapse(m, room, &prefix)?;
        }
        // The bans come back by transaction; the outcomes stay done.
        for room in &rooms {
            until("the bans back in prr serve", 120, POLL, || {
                Ok((members(&client, room, &prefix, "join")? == 0).then_some(()))
            })?;
        }
        std::thread::sleep(Duration::from_secs(1));
        let after = outcomes(&client, &bot)?;
        if after.len() != 1 || after.get("done").map_or(0, Vec::len) != case.users {
            bail!(
                "after the bans came back: {} ({} done)",
                not_done(&after),
                after.get("done").map_or(0, Vec::len)
            );
        }
        drop(serve);
        let _ = std::fs::remove_file(&store);
        Ok(Measured {
            users: case.users,
            rooms: case.rooms,
            concurrency: concurrency.unwrap_or_else(|| format!("default ({DEFAULT_CONCURRENCY})")),
            setup,
            catch_up,
            intents,
            first: per_ban.first().copied().unwrap_or(f64::NAN),
            last: per_ban.last().copied().unwrap_or(f64::NAN),
            seen_last,
            per_ban,
            banned_in_synapse: banned,
            retried,
        })
    }
}

/// What a baseline measured: each ban's latency, and the wall time of all of them.
struct Baseline {
    users: usize,
    rooms: usize,
    threads: usize,
    lat: Vec<f64>,
    wall: f64,
}

impl World {
    /// The same bans sent by a plain client (no prr): `n` users join `rooms` rooms of the
    /// moderator (user i the room i % rooms), who bans them from `threads` threads, each
    /// thread taking rooms in turn and banning a room's users one at a time, as the handler
    /// does.
    fn baseline(
        &self,
        k: usize,
        n: usize,
        rooms: usize,
        threads: usize,
    ) -> anyhow::Result<Baseline> {
        let m = &self.moderator;
        let ids: Vec<String> = (0..rooms)
            .map(|r| {
                m.create_room(
                    &RoomOptions::new()
                        .public()
                        .with_name(&format!("baseline {r}")),
                )
            })
            .collect::<Result<_, _>>()?;
        let users: Vec<usize> = (0..n).collect();
        parallel(&users, |&i| {
            let user = self
                .synapse
                .register_appservice_user(&format!("v{k}_{i}"))?;
            user.join(&ids[i % rooms])?;
            Ok(())
        })?;
        let t = Instant::now();
        let lat = std::thread::scope(|s| -> anyhow::Result<Vec<f64>> {
            let handles: Vec<_> = (0..threads)
                .map(|th| {
                    let ids = &ids;
                    s.spawn(move || -> anyhow::Result<Vec<f64>> {
                        let mut lat = Vec::new();
                        for r in (th..rooms).step_by(threads) {
                            for i in (r..n).step_by(rooms) {
                                let t = Instant::now();
                                m.ban(
                                    &ids[r],
                                    &format!("@v{k}_{i}:{HS}"),
                                    Some("enact benchmark"),
                                )?;
                                lat.push(t.elapsed().as_secs_f64());
                            }
                        }
                        Ok(lat)
                    })
                })
                .collect();
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.join().unwrap_or_else(|_| bail!("a thread panicked"))?);
            }
            Ok(all)
        })?;
        let wall = t.elapsed().as_secs_f64();
        let mut banned = 0;
        for room in &ids {
            banned += banned_in_synapse(m, room, &format!("@v{k}_"))?;
        }
        if banned != n {
            bail!("baseline: {banned} of {n} banned");
        }
        let mut lat = lat;
        lat.sort_by(f64::total_cmp);
        Ok(Baseline {
            users: n,
            rooms,
            threads,
            lat,
            wall,
        })
    }
}

fn baseline_table(rows: &[Baseline]) -> String {
    let mut t = Table::new(&[
        "a plain client (no prr) bans, each room's users one at a time",
        "bans",
        "rooms",
        "client threads",
        "per-ban p50",
        "per-ban p99",
        "**bans / s**",
    ]);
    for b in rows {
        t.row(vec![
            "the rooms' creator".into(),
            b.users.to_string(),
            b.rooms.to_string(),
            b.threads.to_string(),
            fmt_secs(percentile(&b.lat, 50.0)),
            fmt_secs(percentile(&b.lat, 99.0)),
            format!("{:.1}", b.users as f64 / b.wall),
        ]);
    }
    t.render()
}

fn table(rows: &[Measured]) -> String {
    let mut t = Table::new(&[
        "users / rooms",
        "enact concurrency",
        "intents in `member_bans`",
        "first ban done",
        "**last ban done**",
        "**bans / s**",
        "per-ban p50",
        "per-ban p99",
        "banned in Synapse",
    ]);
    for m in rows {
        let span = m.last - m.first;
        t.row(vec![
            format!("{} / {}", m.users, m.rooms),
            m.concurrency.clone(),
            m.intents.map_or("(bans began first)".into(), fmt_secs),
            fmt_secs(m.first),
            fmt_secs(m.last),
            if span > 0.0 {
                format!("{:.1}", m.users as f64 / span)
            } else {
                "-".into()
            },
            fmt_secs(percentile(&m.per_ban, 50.0)),
            fmt_secs(percentile(&m.per_ban, 99.0)),
            format!("{} of {}", m.banned_in_synapse, m.users),
        ]);
    }
    t.render()
}

fn notes(rows: &[Measured]) -> String {
    let mut out = Vec::new();
    for m in rows {
        out.push(format!(
            "{} users / {} rooms (concurrency {}): users registered and joined in {}, catch-up {}, last `done` seen by polling at {}, {} outcomes with more than one attempt",
            m.users,
            m.rooms,
            m.concurrency,
            fmt_secs(m.setup),
            fmt_secs(m.catch_up),
            fmt_secs(m.seen_last),
            m.retried
        ));
    }
    out.join("; ")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (users, spread, rooms) = match cli.size {
        Size::Small => (vec![20], 20, 4),
        Size::Medium => (vec![100, 1000], 500, 10),
        Size::Large => (vec![1000, 3000], 2000, 20),
    };
    let users = cli.users.unwrap_or(users);
    let spread = cli.spread_users.unwrap_or(spread);
    let rooms = cli.rooms.unwrap_or(rooms);
    let tmp = tempfile::tempdir()?;
    println!("### Effects: bans enacted by `prr serve --enact` through Synapse\n");
    let Some(world) = World::start(tmp.path())? else {
        return Ok(());
    };
    println!(
        "Machine: {}. Load average at the start: {}. Synapse {} (SQLite, every rate limit off, bcrypt rounds 4) with `prr serve --enact` (1 worker) as its appservice, a fresh store for each case; times from the glob rule's send to Synapse (the client's request included); a ban's time is its outcome's `at`.\n",
        machine_line(),
        load_average(),
        prr_synapse_harness::SYNAPSE_VERSION,
    );
    let mut k = 0;
    let mut next = |users, rooms, concurrency| {
        k += 1;
        Case {
            k,
            users,
            rooms,
            concurrency,
        }
    };
    let mut one_room = Vec::new();
    for &n in users.iter().filter(|n| **n > 0) {
        one_room.push(world.run(&next(n, 1, None), cli.timeout)?);
    }
    if !one_room.is_empty() {
        println!("One protected room, one glob rule banning every member:\n");
        println!("{}", table(&one_room));
        println!("{}.\n", notes(&one_room));
    }
    let n = users.iter().copied().min().unwrap_or(0);
    if n > 0 {
        let b = world.baseline(next(n, 1, None).k, n, 1, 1)?;
        println!("{}", baseline_table(&[b]));
    }
    if spread > 0 && rooms > 0 {
        let mut parallel = Vec::new();
        for concurrency in [Some(1), None] {
            parallel.push(world.run(&next(spread, rooms, concurrency), cli.timeout)?);
        }
        println!(
            "The users spread over {rooms} rooms, with `--enact-concurrency 1` and the default:\n"
        );
        println!("{}", table(&parallel));
        println!("{}.\n", notes(&parallel));
        let mut plain = Vec::new();
        for threads in [1, DEFAULT_CONCURRENCY] {
            plain.push(world.baseline(next(spread, rooms, None).k, spread, rooms, threads)?);
        }
        println!("{}", baseline_table(&plain));
    }
    println!("Load average at the end: {}.", load_average());
    Ok(())
}
