//! Policy fan-out (issue 6, W3) and many idle instances (issue 6, W5): latency of single
//! changes, measured side by side in one run, each system in a fresh child process.
//!
//! **W3.** On W1's state (the whole workload ingested), one more policy room watched by every
//! instance (a manifest delta adds it to every instance's watch set). Then four kinds of
//! change to that room, repeated `--reps` times each and interleaved so that the state returns
//! (undo steps are applied but not timed): a new literal user ban (a user present in many
//! protected rooms), a new glob ban matching about 1% of the present members, a glob rule
//! modified (alternating between two globs of about 1% each) and a glob rule removed (restored
//! after). Each change is timed from submit until every replica is final (prr:
//! `Matrix::ingest` returns once every replica's probe has passed the new `Seq`). Peers: prr
//! without a store, the naive recomputation (plain Rust, per-instance hash maps: the time of
//! one recomputation from scratch on the new state) and matrix-protection-suite driven as
//! Draupnir propagates a policy change (`benches/peers/mps.js --mode w3`).
//!
//! **W5.** A base of protected rooms and policy lists, N idle instances each with its own
//! watch and protect sets over that base, and one active instance with its own list and
//! protected room. Single changes that affect only the active instance (a join into its room
//! of a user matched by a glob of its list; a new ban on its list) are timed at N = 1k and
//! N = 10k (100 and 1k at `--size small`), each N in its own child process.
//!
//! ```text
//! cargo run --release -p prr-benches --bin fanout -- --size small
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use prr_benches::drive::{ingest_dir, intent_counts};
use prr_benches::measure::{
    ChildOutcome, Limits, Table, emit_progress, emit_result, fmt_bytes, fmt_ratio, fmt_secs,
    machine_line, peers_dir, prepare_node_peer, run_child, secs, self_command,
};
use prr_benches::{
    Matching, NaiveState, Size, Workload, WorkloadConfig, item_to_json, list_files, read_file,
};
use prr_engine::RuntimeConfig;
use prr_replicas::{Event, ManifestEntry, Matrix, Rec, SourceItem, parse_file};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

/// W3 policy fan-out and W5 idle instances, against peers.
#[derive(Debug, Parser)]
#[command(name = "fanout")]
struct Cli {
    /// The workload size.
    #[arg(long, value_enum, default_value_t = Size::Small)]
    size: Size,
    /// Timely workers (1 or 2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=2))]
    workers: u64,
    /// The workload's seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// W3: instances in the workload (default: the size's).
    #[arg(long)]
    instances: Option<usize>,
    /// W3: repetitions of each kind of change (default: 10 small, 30 medium, 20 large).
    #[arg(long)]
    reps: Option<usize>,
    /// W3: recomputations timed per kind of change for the naive peer (default: 3 small,
    /// 5 medium, 2 large).
    #[arg(long)]
    naive_reps: Option<usize>,
    /// W3: how matrix-protection-suite builds its initial member matches (untimed):
    /// `draupnir` (Draupnir's scan of every rule for every member) or `scoped` (the scoped
    /// lookups, much faster; the timed propagation is the same).
    #[arg(long, default_value = "draupnir")]
    mps_setup: String,
    /// W5: the idle instance counts to compare (default: 1000,10000; 100,1000 at small).
    #[arg(long, value_delimiter = ',')]
    idle: Vec<usize>,
    /// W5: repetitions of each kind of change (default: 20 small, 50 otherwise).
    #[arg(long)]
    w5_reps: Option<usize>,
    /// W5: run prr without a store (raw differential dataflow) instead of with one.
    #[arg(long)]
    w5_no_store: bool,
    /// W5: rounds of the children, the sizes alternating (default: 1 small, 3 otherwise).
    #[arg(long)]
    w5_rounds: Option<usize>,
    /// Each peer's time limit, in seconds (prr itself has none).
    #[arg(long, default_value_t = 600)]
    cap_secs: u64,
    /// Memory limit of each child, in GiB.
    #[arg(long, default_value_t = 16.0)]
    max_rss_gib: f64,
    /// Parts to leave out: `w3`, `w5`, `dd` (prr without a store), `naive`, `mps`.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// A child measurement (internal).
    #[command(subcommand)]
    child: Option<Child>,
}

#[derive(Debug, Subcommand)]
enum Child {
    /// prr: ingest the directory (untimed), then time every op.
    #[command(hide = true)]
    Prr {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        ops: PathBuf,
        #[arg(long)]
        workers: u64,
        #[arg(long)]
        store: Option<PathBuf>,
    },
    /// The naive recomputation: apply the directory, then recompute after timed ops.
    #[command(hide = true)]
    Naive {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        ops: PathBuf,
        /// Recomputations timed per kind.
        #[arg(long)]
        reps: usize,
    },
}

/// One change: a source delta of its own.
struct Op {
    kind: String,
    timed: bool,
    items: Vec<SourceItem>,
}

fn read_ops(path: &Path) -> anyhow::Result<Vec<Op>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut ops = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)?;
        let kind = v["kind"].as_str().context("op kind")?.to_string();
        let timed = v["timed"].as_bool().context("op timed")?;
        let events = serde_json::to_vec(&v["events"])?;
        let items = parse_file(&format!("{}:{}", path.display(), i + 1), &events)?;
        ops.push(Op { kind, timed, items });
    }
    Ok(ops)
}

fn write_ops(path: &Path, ops: &[(String, bool, Vec<SourceItem>)]) -> anyhow::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    for (kind, timed, items) in ops {
        let events: Vec<Value> = items.iter().map(item_to_json).collect();
        serde_json::to_writer(
            &mut w,
            &json!({"kind": kind, "timed": timed, "events": events}),
        )?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

fn write_items(path: &Path, items: &[SourceItem]) -> anyhow::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    match items {
        [item @ SourceItem::Manifest(_)] => serde_json::to_writer(&mut w, &item_to_json(item))?,
        items => serde_json::to_writer(
            &mut w,
            &Value::Array(items.iter().map(item_to_json).collect()),
        )?,
    }
    w.flush()?;
    Ok(())
}

fn state_event(
    event_id: String,
    room: &str,
    ty: &str,
    state_key: &str,
    sender: &str,
    content: Value,
) -> SourceItem {
    let Value::Object(content) = content else {
        unreachable!("content is an object")
    };
    SourceItem::Event(Event {
        event_id,
        room_id: room.to_string(),
        event_type: ty.to_string(),
        state_key: Some(state_key.to_string()),
        sender: sender.to_string(),
        origin_server_ts: Some(1_800_000_000_000),
        content,
        redacted_because: false,
        redacts: None,
    })
}

fn user_rule(event_id: String, room: &str, key: &str, entity: Option<&str>) -> SourceItem {
    let content = match entity {
        Some(e) => json!({"entity": e, "recommendation": "m.ban", "reason": "fan-out test"}),
        None => json!({}),
    };
    state_event(
        event_id,
        room,
        "m.policy.rule.user",
        key,
        "@mod:w3.example",
        content,
    )
}

/// Nearest-rank percentile of unsorted samples.
fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

fn run_as_child(child: Child) -> anyhow::Result<()> {
    match child {
        Child::Prr {
            dir,
            ops,
            workers,
            store,
        } => {
            let ops = read_ops(&ops)?;
            let mut config = RuntimeConfig::new().with_workers(workers as usize);
            if let Some(s) = &store {
                config = config.with_store(s).with_revision_on_shutdown(false);
            }
            let start = Instant::now();
            let mut m = Matrix::start(config)?;
            let t = ingest_dir(&mut m, &dir, 0)?;
            let setup = secs(start);
            emit_progress(json!({"setup": setup, "parse": t.parse}));
            let counts_before = intent_counts(m.runtime())?;
            // Subscribed as a deployment acting on intents would be; also counts what changed.
            let rt = m.runtime();
            let subs = [
                (
                    "member_matches",
                    rt.subscribe(rt.replica("member_matches")?)?,
                ),
                ("member_bans", rt.subscribe(rt.replica("member_bans")?)?),
                ("server_acl", rt.subscribe(rt.replica("server_acl")?)?),
            ];
            let mut latencies: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            let mut changed: BTreeMap<String, Value> = BTreeMap::new();
            for op in &ops {
                let t = Instant::now();
                m.ingest(&op.items)?;
                let dt = secs(t);
                let mut sizes = Map::new();
                let mut instances: BTreeSet<u64> = BTreeSet::new();
                for (name, sub) in &subs {
                    let mut n: u64 = 0;
                    for d in sub.try_iter() {
                        for (r, diff) in &d.updates {
                            n += diff.unsigned_abs() as u64;
                            if let Rec::Match { instance, .. } = r {
                                instances.insert(*instance);
                            }
                        }
                    }
                    sizes.insert((*name).into(), n.into());
                }
                sizes.insert("instances".into(), instances.len().into());
                if op.timed {
                    latencies.entry(op.kind.clone()).or_default().push(dt);
                    changed
                        .entry(op.kind.clone())
                        .or_insert(Value::Object(sizes));
                }
            }
            let counts_after = intent_counts(m.runtime())?;
            emit_result(json!({
                "setup": setup, "parse": t.parse, "latencies": latencies, "changed": changed,
                "counts_before": counts_before, "counts_after": counts_after,
            }));
        }
        Child::Naive { dir, ops, reps } => {
            let ops = read_ops(&ops)?;
            let start = Instant::now();
            let mut state = NaiveState::new();
            for path in list_files(&dir)? {
                state.apply(&read_file(&path)?);
            }
            let setup = secs(start);
            let t = Instant::now();
            let first = state.compute(Matching::Indexed, |_, _| true);
            let full = secs(t);
            emit_progress(json!({"setup": setup, "full": full}));
            let mut latencies: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            let mut last = first.clone();
            for op in &ops {
                state.apply(&op.items);
                let done = latencies.get(&op.kind).map_or(0, Vec::len);
                if op.timed && done < reps {
                    let t = Instant::now();
                    last = state.compute(Matching::Indexed, |_, _| true);
                    latencies.entry(op.kind.clone()).or_default().push(secs(t));
                    emit_progress(json!({"kind": op.kind, "done": done + 1}));
                }
            }
            // The ops end on an untimed undo, so the state is back: recompute it for the counts.
            last = if ops.last().is_some_and(|o| !o.timed) {
                state.compute(Matching::Indexed, |_, _| true)
            } else {
                last
            };
            let counts = |o: &prr_benches::NaiveOutput| {
                json!({"member_set": o.member_set, "member_matches": o.member_matches,
                       "member_bans": o.member_bans, "ban_intents": o.ban_intents, "acl_deny": o.acl_deny})
            };
            emit_result(json!({
                "setup": setup, "full": full, "latencies": latencies,
                "counts_before": counts(&first), "counts_after": counts(&last),
            }));
        }
    }
    // Skip the teardown of large maps and dataflows: it is not part of the measurement.
    std::process::exit(0);
}

/// The W3 change kinds, in table order: (key, description).
const W3_KINDS: [(&str, &str); 4] = [
    ("literal", "new literal user ban"),
    ("glob-new", "new glob ban (~1% of members)"),
    ("glob-modify", "glob modified (~1% to ~1%)"),
    ("glob-remove", "glob removed (~1%)"),
];

/// What the W3 setup chose, for the report.
struct W3Plan {
    globs: Vec<(String, f64)>,
    present: usize,
    literal_rooms: Vec<usize>,
    instances: usize,
}

/// Writes the W3 workload: W1's files, the fan-out list (`95-w3-list.json`), the manifest
/// delta adding it to every instance (`96-w3-manifest.json`), and the ops file.
fn write_w3(w: &Workload, dir: &Path, ops_path: &Path, reps: usize) -> anyhow::Result<W3Plan> {
    w.write(dir)?;
    // Present members over every protected room, and in how many rooms each is present.
    let mut rooms_of: HashMap<String, usize> = HashMap::new();
    let mut instances_manifest = Vec::new();
    for f in w.files() {
        for item in &f.items {
            match item {
                SourceItem::Event(e) if e.event_type == "m.room.member" => {
                    let present = matches!(
                        e.content.get("membership").and_then(Value::as_str),
                        Some("join" | "invite" | "knock")
                    );
                    if present && let Some(k) = &e.state_key {
                        *rooms_of.entry(k.clone()).or_default() += 1;
                    }
                }
                SourceItem::Manifest(entries) => instances_manifest = entries.clone(),
                _ => {}
            }
        }
    }
    let present = rooms_of.len();
    let mut per_server: HashMap<&str, usize> = HashMap::new();
    for u in rooms_of.keys() {
        if let Some((_, server)) = u.split_once(':') {
            *per_server.entry(server).or_default() += 1;
        }
    }
    // Globs `@*:server` (servers without a port) by closeness of their share to 1%.
    let mut candidates: Vec<(String, f64)> = per_server
        .iter()
        .filter(|(s, _)| !s.contains(':'))
        .map(|(s, n)| (format!("@*:{s}"), *n as f64 / present.max(1) as f64))
        .collect();
    candidates.sort_by(|a, b| {
        (a.1 - 0.01)
            .abs()
            .total_cmp(&(b.1 - 0.01).abs())
            .then(a.0.cmp(&b.0))
    });
    anyhow::ensure!(candidates.len() >= 4, "too few servers for the W3 globs");
    let globs: Vec<(String, f64)> = candidates.into_iter().take(4).collect();
    // Literal bans: the users present in the most protected rooms.
    let mut by_rooms: Vec<(&String, &usize)> = rooms_of.iter().collect();
    by_rooms.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let literal: Vec<(String, usize)> = by_rooms
        .iter()
        .take(reps.max(1))
        .map(|(u, n)| ((*u).clone(), **n))
        .collect();

    let room = "!w3list:w3.example";
    let mut list = vec![state_event(
        "$w3c".into(),
        room,
        "m.room.create",
        "",
        "@mod:w3.example",
        json!({"creator": "@mod:w3.example", "room_version": "10"}),
    )];
    // A hundred literal rules naming users who are not around, and the two globs changed below.
    for n in 0..100 {
        list.push(user_rule(
            format!("$w3b{n}"),
            room,
            &format!("base:{n}"),
            Some(&format!("@gone{n}:w3.example")),
        ));
    }
    list.push(user_rule(
        "$w3m0".into(),
        room,
        "w3:modify",
        Some(&globs[1].0),
    ));
    list.push(user_rule(
        "$w3r0".into(),
        room,
        "w3:remove",
        Some(&globs[3].0),
    ));
    write_items(&dir.join("95-w3-list.json"), &list)?;
    let manifest = SourceItem::Manifest(
        instances_manifest
            .into_iter()
            .map(|e| match e {
                ManifestEntry::Set {
                    id,
                    mut watch,
                    protect,
                } => {
                    watch.push(room.to_string());
                    ManifestEntry::Set { id, watch, protect }
                }
                other => other,
            })
            .collect(),
    );
    let instances = match &manifest {
        SourceItem::Manifest(e) => e.len(),
        _ => 0,
    };
    write_items(&dir.join("96-w3-manifest.json"), &[manifest])?;

    let mut ops: Vec<(String, bool, Vec<SourceItem>)> = Vec::new();
    let op = |kind: &str, timed: bool, item: SourceItem| (kind.to_string(), timed, vec![item]);
    for r in 0..reps {
        let lit = &literal[r % literal.len()].0;
        ops.push(op(
            "literal",
            true,
            user_rule(format!("$w3l{r}a"), room, "w3:literal", Some(lit)),
        ));
        ops.push(op(
            "literal-undo",
            false,
            user_rule(format!("$w3l{r}b"), room, "w3:literal", None),
        ));
        ops.push(op(
            "glob-new",
            true,
            user_rule(format!("$w3g{r}a"), room, "w3:glob", Some(&globs[0].0)),
        ));
        ops.push(op(
            "glob-new-undo",
            false,
            user_rule(format!("$w3g{r}b"), room, "w3:glob", None),
        ));
        let to = if r % 2 == 0 { &globs[2].0 } else { &globs[1].0 };
        ops.push(op(
            "glob-modify",
            true,
            user_rule(format!("$w3m{}", r + 1), room, "w3:modify", Some(to)),
        ));
        ops.push(op(
            "glob-remove",
            true,
            user_rule(format!("$w3r{r}a"), room, "w3:remove", None),
        ));
        ops.push(op(
            "glob-remove-undo",
            false,
            user_rule(format!("$w3r{r}b"), room, "w3:remove", Some(&globs[3].0)),
        ));
    }
    // Back to the first glob when the number of modifications is odd.
    if reps % 2 == 1 {
        ops.push(op(
            "glob-modify-undo",
            false,
            user_rule("$w3mz".into(), room, "w3:modify", Some(&globs[1].0)),
        ));
    }
    write_ops(ops_path, &ops)?;
    Ok(W3Plan {
        globs,
        present,
        literal_rooms: literal.iter().map(|(_, n)| *n).collect(),
        instances,
    })
}

/// The W5 base: rooms and lists shared by the idle instances.
fn w5_base(size: Size, seed: u64) -> WorkloadConfig {
    let (rules, policy_rooms, memberships, protected_rooms, servers, users) = match size {
        Size::Small => (500, 10, 5_000, 200, 50, 3_000),
        Size::Medium => (2_000, 20, 40_000, 2_000, 200, 20_000),
        Size::Large => (10_000, 40, 200_000, 10_000, 500, 100_000),
    };
    WorkloadConfig {
        seed,
        rules,
        policy_rooms,
        memberships,
        protected_rooms,
        instances: 1,
        servers,
        users,
    }
}

const W5_KINDS: [(&str, &str); 2] = [
    ("join", "join of a glob-banned user into the active room"),
    ("rule", "new literal ban of an active-room member"),
];

/// Writes a W5 workload with `idle` idle instances into `dir`, and its ops (the same for every
/// `idle`) into `ops_path`.
fn write_w5(
    base: &Workload,
    idle: usize,
    dir: &Path,
    ops_path: &Path,
    reps: usize,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let config = base.config().clone();
    // The base's rooms and lists (its own manifest is not used).
    for i in 0..base.file_count() - 1 {
        let f = base.file(i);
        write_items(&dir.join(&f.name), &f.items)?;
    }
    let list_ids: Vec<String> = (0..config.policy_rooms)
        .map(|i| match &base.file(i).items[0] {
            SourceItem::Event(e) => e.room_id.clone(),
            _ => unreachable!("a policy room starts with its create event"),
        })
        .collect();
    let room_ids: Vec<String> = base
        .protected_room_ids()
        .into_iter()
        .map(String::from)
        .collect();
    // The active instance's room and list.
    let room = "!w5room:active.example";
    let list = "!w5list:active.example";
    let admin = "@mod:active.example";
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x5757);
    let members: Vec<String> = rand::seq::index::sample(&mut rng, base.users().len(), 300)
        .iter()
        .map(|i| base.users()[i].clone())
        .collect();
    let mut room_items = vec![state_event(
        "$w5rc".into(),
        room,
        "m.room.create",
        "",
        admin,
        json!({"creator": admin, "room_version": "10"}),
    )];
    for (j, u) in members.iter().enumerate() {
        room_items.push(state_event(
            format!("$w5rm{j}"),
            room,
            "m.room.member",
            u,
            u,
            json!({"membership": "join"}),
        ));
    }
    write_items(&dir.join("20-w5-room.json"), &room_items)?;
    let mut list_items = vec![state_event(
        "$w5lc".into(),
        list,
        "m.room.create",
        "",
        admin,
        json!({"creator": admin, "room_version": "10"}),
    )];
    for (n, member) in members.iter().enumerate().take(100) {
        let entity = if n % 10 == 0 {
            member.clone()
        } else {
            format!("@gone{n}:active.example")
        };
        list_items.push(state_event(
            format!("$w5lr{n}"),
            list,
            "m.policy.rule.user",
            &format!("base:{n}"),
            admin,
            json!({"entity": entity, "recommendation": "m.ban"}),
        ));
    }
    list_items.push(state_event(
        "$w5lg".into(),
        list,
        "m.policy.rule.user",
        "glob",
        admin,
        json!({"entity": "@w5joiner*:bad.example", "recommendation": "m.ban"}),
    ));
    write_items(&dir.join("21-w5-list.json"), &list_items)?;
    // The manifest: idle instance i's sets come from a stream of its own, so the first 1k of
    // 10k idle instances are the 1k of the smaller run.
    let mut entries = Vec::with_capacity(idle + 1);
    for i in 0..idle {
        let mut r = StdRng::seed_from_u64(config.seed.wrapping_mul(1_000_003) ^ (i as u64));
        let n_watch = r.random_range(1..=3usize);
        let watch: BTreeSet<usize> = (0..n_watch)
            .map(|_| r.random_range(0..list_ids.len()))
            .collect();
        let n_protect = r.random_range(1..=3usize);
        let protect: BTreeSet<usize> = (0..n_protect)
            .map(|_| r.random_range(0..room_ids.len()))
            .collect();
        entries.push(ManifestEntry::Set {
            id: format!("@idle{i}:idle{}.example", i % 97),
            watch: watch.into_iter().map(|w| list_ids[w].clone()).collect(),
            protect: protect.into_iter().map(|p| room_ids[p].clone()).collect(),
        });
    }
    entries.push(ManifestEntry::Set {
        id: "@active:active.example".into(),
        watch: vec![list.to_string(), list_ids[0].clone()],
        protect: vec![room.to_string()],
    });
    write_items(
        &dir.join("90-manifest.json"),
        &[SourceItem::Manifest(entries)],
    )?;

    let mut ops: Vec<(String, bool, Vec<SourceItem>)> = Vec::new();
    for r in 0..reps {
        let joiner = format!("@w5joiner{r}:bad.example");
        let membership = |m: &str, id: String| {
            state_event(
                id,
                room,
                "m.room.member",
                &joiner,
                &joiner,
                json!({"membership": m}),
            )
        };
        ops.push((
            "join".into(),
            true,
            vec![membership("join", format!("$w5j{r}a"))],
        ));
        ops.push((
            "join-undo".into(),
            false,
            vec![membership("leave", format!("$w5j{r}b"))],
        ));
        let target = &members[1 + (r % 9)];
        let rule = |content: Value, id: String| {
            state_event(id, list, "m.policy.rule.user", "w5:new", admin, content)
        };
        ops.push((
            "rule".into(),
            true,
            vec![rule(
                json!({"entity": target, "recommendation": "m.ban"}),
                format!("$w5n{r}a"),
            )],
        ));
        ops.push((
            "rule-undo".into(),
            false,
            vec![rule(json!({}), format!("$w5n{r}b"))],
        ));
    }
    write_ops(ops_path, &ops)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Latencies of one kind from a child's result.
fn lat(o: &ChildOutcome, kind: &str) -> Vec<f64> {
    o.result
        .as_ref()
        .and_then(|r| r.get("latencies")?.get(kind)?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_f64)
        .collect()
}

fn p(o: Option<&ChildOutcome>, kind: &str, q: f64) -> Option<f64> {
    percentile(&lat(o?, kind), q)
}

/// Why a child has no result, short enough for a table cell (the full reason is on stderr).
fn short_failure(o: &ChildOutcome) -> String {
    if o.timed_out || o.out_of_memory {
        o.failure()
    } else if o.stderr_tail.contains("heap out of memory") {
        "failed: JavaScript heap out of memory".into()
    } else {
        format!(
            "failed ({})",
            o.status.map(|s| s.to_string()).unwrap_or_default()
        )
    }
}

fn cell(o: Option<&ChildOutcome>, kind: &str, q: f64) -> String {
    match o {
        None => "skipped".into(),
        Some(out) if out.result.is_none() => short_failure(out),
        Some(_) => p(o, kind, q).map(fmt_secs).unwrap_or_else(|| "-".into()),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(c) = cli.child {
        return run_as_child(c);
    }
    anyhow::ensure!(
        ["draupnir", "scoped"].contains(&cli.mps_setup.as_str()),
        "--mps-setup is draupnir or scoped"
    );
    let skip = |name: &str| cli.skip.iter().any(|s| s == name);
    let workers = cli.workers.to_string();
    let max_rss = Some((cli.max_rss_gib * (1u64 << 30) as f64) as u64);
    let cap = Limits {
        cap: Some(Duration::from_secs(cli.cap_secs)),
        max_rss,
    };
    let uncapped = Limits { cap: None, max_rss };
    let tmp = tempfile::tempdir()?;
    let load_start = loadavg();
    let mut report = String::new();
    let run = |args: Vec<String>, limits: Limits, what: &str| -> anyhow::Result<ChildOutcome> {
        eprintln!("fanout: {what} (load {})", loadavg());
        let mut cmd = self_command()?;
        cmd.args(args);
        run_child(cmd, limits, true)
    };

    if !skip("w3") {
        let mut config = WorkloadConfig::for_size(cli.size).with_seed(cli.seed);
        if let Some(n) = cli.instances {
            config.instances = n;
        }
        let reps = cli.reps.unwrap_or(match cli.size {
            Size::Small => 10,
            Size::Medium => 30,
            Size::Large => 20,
        });
        let naive_reps = cli.naive_reps.unwrap_or(match cli.size {
            Size::Small => 3,
            Size::Medium => 5,
            Size::Large => 2,
        });
        let workload = Workload::generate(&config);
        let dir = tmp.path().join("w3");
        let ops = tmp.path().join("w3-ops.ndjson");
        eprintln!(
            "fanout: writing the {} W3 workload into {}",
            cli.size.name(),
            dir.display()
        );
        let plan = write_w3(&workload, &dir, &ops, reps)?;
        let (d, o) = (dir.display().to_string(), ops.display().to_string());
        let prr_args = |store: Option<&Path>| {
            let mut a = vec![
                "prr".to_string(),
                "--dir".into(),
                d.clone(),
                "--ops".into(),
                o.clone(),
                "--workers".into(),
                workers.clone(),
            ];
            if let Some(s) = store {
                a.extend(["--store".into(), s.display().to_string()]);
            }
            a
        };
        let store = tmp.path().join("w3.redb");
        let prr = run(prr_args(Some(&store)), uncapped, "W3: prr (store)")?;
        let _ = std::fs::remove_file(&store);
        let dd = if skip("dd") {
            None
        } else {
            Some(run(
                prr_args(None),
                uncapped,
                "W3: prr without a store (raw differential dataflow)",
            )?)
        };
        let naive = if skip("naive") {
            None
        } else {
            Some(run(
                vec![
                    "naive".into(),
                    "--dir".into(),
                    d.clone(),
                    "--ops".into(),
                    o.clone(),
                    "--reps".into(),
                    naive_reps.to_string(),
                ],
                cap,
                "W3: naive recomputation (plain Rust, hash maps)",
            )?)
        };
        let node = if skip("mps") {
            Err("skipped by --skip".to_string())
        } else {
            prepare_node_peer("fanout")
        };
        let mps = match &node {
            Ok(_) => {
                eprintln!(
                    "fanout: W3: matrix-protection-suite (setup {}) (load {})",
                    cli.mps_setup,
                    loadavg()
                );
                let mut cmd = Command::new("node");
                // Every instance keeps its revisions: above node's default heap limit at 1,000
                // instances.
                cmd.arg(format!(
                    "--max-old-space-size={}",
                    (cli.max_rss_gib * 1024.0) as u64
                ))
                .arg(peers_dir().join("mps.js"))
                .args([
                    "--dir",
                    &d,
                    "--mode",
                    "w3",
                    "--ops",
                    &o,
                    "--setup",
                    &cli.mps_setup,
                ]);
                Some(run_child(cmd, cap, true)?)
            }
            Err(why) => {
                eprintln!("fanout: skipping matrix-protection-suite: {why}");
                None
            }
        };

        report.push_str(&format!(
            "## W3 policy fan-out: size {} ({} rules, {} membership records, {} instances), {} worker(s)\n\n",
            cli.size.name(),
            workload.rules(),
            workload.memberships(),
            plan.instances,
            cli.workers
        ));
        report.push_str(&format!(
            "Setup (untimed): W1's files, then a policy room with 102 rules watched by all {} instances. \
             {} distinct present members. Globs (share of present members): new `{}` ({:.2}%), modified `{}` ({:.2}%) \
             <-> `{}` ({:.2}%), removed `{}` ({:.2}%). Literal bans name users present in {}..{} protected rooms. \
             {reps} changes of each kind{}, interleaved with untimed undos. \
             Latency: from submit until every replica (prr) or every instance's matches and intents (peers) are \
             final.\n\n",
            plan.instances,
            plan.present,
            plan.globs[0].0,
            plan.globs[0].1 * 100.0,
            plan.globs[1].0,
            plan.globs[1].1 * 100.0,
            plan.globs[2].0,
            plan.globs[2].1 * 100.0,
            plan.globs[3].0,
            plan.globs[3].1 * 100.0,
            plan.literal_rooms.iter().min().unwrap_or(&0),
            plan.literal_rooms.iter().max().unwrap_or(&0),
            if naive.is_some() {
                format!(" (naive: the first {naive_reps} of each)")
            } else {
                String::new()
            },
        ));
        let mut t = Table::new(&[
            "change",
            "changed (prr): member_matches / member_bans / instances",
            "changed (MPS): matches / ban intents / instances",
            "**prr** p50",
            "**prr** p99",
            "prr no store p50",
            "prr no store p99",
            "naive p50",
            "naive p99",
            "MPS p50",
            "MPS p99",
        ]);
        let changed = |o: Option<&ChildOutcome>, kind: &str, fields: [&str; 3]| -> String {
            o.and_then(|o| o.result.as_ref()?.get("changed")?.get(kind).cloned())
                .map(|c| {
                    fields
                        .iter()
                        .map(|f| c.get(*f).map(|v| v.to_string()).unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(" / ")
                })
                .unwrap_or_default()
        };
        for (kind, label) in W3_KINDS {
            t.row(vec![
                label.into(),
                changed(
                    Some(&prr),
                    kind,
                    ["member_matches", "member_bans", "instances"],
                ),
                changed(
                    mps.as_ref(),
                    kind,
                    ["member_matches", "ban_intents", "instances"],
                ),
                cell(Some(&prr), kind, 0.5),
                cell(Some(&prr), kind, 0.99),
                cell(dd.as_ref(), kind, 0.5),
                cell(dd.as_ref(), kind, 0.99),
                cell(naive.as_ref(), kind, 0.5),
                cell(naive.as_ref(), kind, 0.99),
                cell(mps.as_ref(), kind, 0.5),
                cell(mps.as_ref(), kind, 0.99),
            ]);
        }
        report.push_str(&t.render());
        report.push('\n');
        if let Err(why) = &node {
            report.push_str(&format!("matrix-protection-suite skipped: {why}.\n\n"));
        }
        let setup_line = |name: &str, o: Option<&ChildOutcome>, field: &str| -> String {
            match o {
                None => String::new(),
                Some(o) => match o.num(field) {
                    Some(s) => format!(
                        "{name}: {} (peak RSS {}); ",
                        fmt_secs(s),
                        fmt_bytes(o.num("peak_rss").unwrap_or(o.max_rss_seen as f64))
                    ),
                    None => {
                        let progress = o
                            .last_progress
                            .as_ref()
                            .map(|p| format!(", last progress {p}"))
                            .unwrap_or_default();
                        format!("{name}: {}{progress}; ", short_failure(o))
                    }
                },
            }
        };
        report.push_str(&format!(
            "Setup times (untimed part): {}{}{}{}\n\n",
            setup_line("prr ingest", Some(&prr), "setup"),
            setup_line("prr no store", dd.as_ref(), "setup"),
            setup_line("naive: one full recomputation", naive.as_ref(), "full"),
            setup_line(
                &format!("MPS build ({} initial matches)", cli.mps_setup),
                mps.as_ref(),
                "setup"
            ),
        ));
        // Agreement: prr's intents against the naive recomputation's, before and after.
        if let (Some(pr), Some(nv)) = (
            prr.result.as_ref(),
            naive.as_ref().and_then(|n| n.result.as_ref()),
        ) {
            let same = ["counts_before", "counts_after"].iter().all(|k| {
                ["member_matches", "member_bans", "ban_intents", "acl_deny"]
                    .iter()
                    .all(|f| pr[k][f] == nv[k][f])
            });
            report.push_str(&format!(
                "prr and the naive recomputation agree on the intent counts before and after the changes: **{}** \
                 (prr after: {}).\n\n",
                if same { "yes" } else { "NO" },
                pr["counts_after"]
            ));
        }
        let mut targets = Table::new(&[
            "target (issue 6)",
            "change",
            "prr p50 / p99",
            "peer p50 / p99",
            "peer / prr: p50 / p99",
            "met? (both)",
        ]);
        let peers = [
            (
                format!(
                    "W3 fan-out over {} instances: ≥ 50x faster than matrix-protection-suite{}",
                    plan.instances,
                    if plan.instances < 1000 {
                        " (the target is at 1,000)"
                    } else {
                        ""
                    }
                ),
                mps.as_ref(),
                50.0,
            ),
            (
                "W3 single changes: ≥ 100x lower latency than the naive recomputation".to_string(),
                naive.as_ref(),
                100.0,
            ),
        ];
        for (target, peer, need) in &peers {
            for (kind, label) in W3_KINDS {
                let pair = |o: Option<&ChildOutcome>| (p(o, kind, 0.5), p(o, kind, 0.99));
                let (a50, a99) = pair(Some(&prr));
                let (b50, b99) = pair(*peer);
                let both = |x: Option<f64>, y: Option<f64>| match (x, y) {
                    (Some(x), Some(y)) => format!("{} / {}", fmt_secs(x), fmt_secs(y)),
                    _ => String::new(),
                };
                let (ratio, met) = match (a50, a99, b50, b99) {
                    (Some(a50), Some(a99), Some(b50), Some(b99)) => (
                        format!("{} / {}", fmt_ratio(b50, a50), fmt_ratio(b99, a99)),
                        if b50 / a50 >= *need && b99 / a99 >= *need {
                            "met"
                        } else {
                            "**not met**"
                        }
                        .to_string(),
                    ),
                    _ => ("n/a".into(), "not measured".into()),
                };
                targets.row(vec![
                    target.clone(),
                    label.into(),
                    both(a50, a99),
                    match peer {
                        None => "skipped".into(),
                        Some(o) if o.result.is_none() => short_failure(o),
                        Some(_) => both(b50, b99),
                    },
                    ratio,
                    met,
                ]);
            }
        }
        report.push_str(&targets.render());
        report.push('\n');
        let _ = std::fs::remove_dir_all(&dir);
    }

    if !skip("w5") {
        let idle = if cli.idle.is_empty() {
            match cli.size {
                Size::Small => vec![100, 1_000],
                _ => vec![1_000, 10_000],
            }
        } else {
            cli.idle.clone()
        };
        let reps = cli.w5_reps.unwrap_or(match cli.size {
            Size::Small => 20,
            _ => 50,
        });
        let base_config = w5_base(cli.size, cli.seed);
        let base = Workload::generate(&base_config);
        let ops = tmp.path().join("w5-ops.ndjson");
        // The machine is shared: run the sizes alternately, `--w5-rounds` times, and pool the
        // samples, so that a change of load between two children does not decide the ratio.
        let rounds = cli.w5_rounds.unwrap_or(match cli.size {
            Size::Small => 1,
            _ => 3,
        });
        let mut dirs = Vec::new();
        for &n in &idle {
            let dir = tmp.path().join(format!("w5-{n}"));
            write_w5(&base, n, &dir, &ops, reps)?;
            dirs.push(dir);
        }
        let mut per_round: Vec<Vec<ChildOutcome>> = idle.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for (k, &n) in idle.iter().enumerate() {
                let store = tmp.path().join(format!("w5-{n}.redb"));
                let mut args = vec![
                    "prr".to_string(),
                    "--dir".into(),
                    dirs[k].display().to_string(),
                    "--ops".into(),
                    ops.display().to_string(),
                    "--workers".into(),
                    workers.clone(),
                ];
                if !cli.w5_no_store {
                    args.extend(["--store".into(), store.display().to_string()]);
                }
                let o = run(
                    args,
                    uncapped,
                    &format!(
                        "W5: prr ({}), {n} idle instances, round {} of {rounds}",
                        if cli.w5_no_store { "no store" } else { "store" },
                        round + 1
                    ),
                )?;
                let _ = std::fs::remove_file(&store);
                per_round[k].push(o);
            }
        }
        for dir in &dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        // Pooled: the first round's outcome with every round's latency samples.
        let mut outcomes: Vec<(usize, ChildOutcome)> = Vec::new();
        let mut round_p50s: Vec<String> = Vec::new();
        for (k, &n) in idle.iter().enumerate() {
            let mut rs = std::mem::take(&mut per_round[k]);
            let p50s: Vec<String> = W5_KINDS
                .iter()
                .map(|(kind, _)| {
                    rs.iter()
                        .map(|o| cell(Some(o), kind, 0.5))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .collect();
            round_p50s.push(p50s.join(" / "));
            let mut first = rs.remove(0);
            if let Some(Value::Object(r)) = first.result.as_mut() {
                let mut lats = Map::new();
                for (kind, _) in W5_KINDS {
                    let mut all = r
                        .get("latencies")
                        .and_then(|l| l.get(kind))
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    for o in &rs {
                        all.extend(lat(o, kind).into_iter().map(Value::from));
                    }
                    lats.insert(kind.into(), Value::Array(all));
                }
                r.insert("latencies".into(), Value::Object(lats));
            }
            outcomes.push((n, first));
        }
        report.push_str(&format!(
            "## W5 many idle instances: size {}, {} worker(s)\n\n",
            cli.size.name(),
            cli.workers
        ));
        report.push_str(&format!(
            "Base: {} rules in {} lists, {} membership records in {} rooms. Each idle instance watches 1-3 of \
             the lists and protects 1-3 of the rooms; the active instance watches its own list (101 rules) and \
             one base list and protects its own room (300 members). {reps} changes of each kind, interleaved with \
             untimed undos; prr {}, one source delta per change. {rounds} round(s), the \
             sizes alternating, each child a fresh process; percentiles over the samples of every round \
             (setup and RSS: the first round).\n\n",
            base.rules(),
            base_config.policy_rooms,
            base.memberships(),
            base_config.protected_rooms,
            if cli.w5_no_store {
                "without a store (raw differential dataflow)"
            } else {
                "with its redb store (one durable commit per change)"
            },
        ));
        let mut t = Table::new(&[
            "idle instances",
            "setup (ingest)",
            "peak RSS",
            "join p50",
            "join p99",
            "new ban p50",
            "new ban p99",
            "changed per join / per ban (member_matches)",
            "p50 of each round: join / new ban",
        ]);
        for (k, (n, o)) in outcomes.iter().enumerate() {
            let ch = |kind: &str| {
                o.result
                    .as_ref()
                    .and_then(|r| r["changed"][kind]["member_matches"].as_u64())
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            };
            t.row(vec![
                n.to_string(),
                o.num("setup")
                    .map(fmt_secs)
                    .unwrap_or_else(|| short_failure(o)),
                fmt_bytes(o.num("peak_rss").unwrap_or(o.max_rss_seen as f64)),
                cell(Some(o), "join", 0.5),
                cell(Some(o), "join", 0.99),
                cell(Some(o), "rule", 0.5),
                cell(Some(o), "rule", 0.99),
                format!("{} / {}", ch("join"), ch("rule")),
                round_p50s[k].clone(),
            ]);
        }
        report.push_str(&t.render());
        report.push('\n');
        if let [(n1, a), .., (n2, b)] = outcomes.as_slice() {
            let mut targets = Table::new(&[
                "target (issue 6)",
                "change",
                &format!("{n1} idle: p50 / p99"),
                &format!("{n2} idle: p50 / p99"),
                "ratio: p50 / p99",
                "met? (p50)",
            ]);
            for (kind, label) in W5_KINDS {
                let (x50, x99) = (p(Some(a), kind, 0.5), p(Some(a), kind, 0.99));
                let (y50, y99) = (p(Some(b), kind, 0.5), p(Some(b), kind, 0.99));
                let both = |x: Option<f64>, y: Option<f64>| match (x, y) {
                    (Some(x), Some(y)) => format!("{} / {}", fmt_secs(x), fmt_secs(y)),
                    _ => "n/a".into(),
                };
                let ratio = match (x50, x99, y50, y99) {
                    (Some(x50), Some(x99), Some(y50), Some(y99)) => {
                        format!("{} / {}", fmt_ratio(y50, x50), fmt_ratio(y99, x99))
                    }
                    _ => "n/a".into(),
                };
                let met = match (x50, y50) {
                    (Some(x), Some(y)) if y / x <= 1.5 => "met",
                    (Some(_), Some(_)) => "**not met**",
                    _ => "not measured",
                };
                targets.row(vec![
                    format!(
                        "W5: one change with {n2} idle instances within 1.5x of the same with {n1}"
                    ),
                    label.into(),
                    both(x50, x99),
                    both(y50, y99),
                    ratio,
                    met.into(),
                ]);
            }
            report.push_str(&targets.render());
            report.push('\n');
        }
    }

    println!(
        "Machine: {}. Load average (1, 5, 15 min) at start: {load_start}; at end: {}. Each system in a fresh \
         process; peers capped at {} s.\n",
        machine_line(),
        loadavg(),
        cli.cap_secs
    );
    println!("{report}");
    drop(tmp);
    Ok(())
}
