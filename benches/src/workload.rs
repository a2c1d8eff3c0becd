//! A seeded workload generator: policy rooms, protected rooms and an instance manifest, as the
//! files `prr ingest` reads and as parsed [`SourceItem`]s.
//!
//! The shape follows a draupnir4all deployment:
//! - **Users** live on a pool of servers whose popularity is Zipf-distributed (rank 0 is
//!   `matrix.org`); about 1% of localparts start with `spam`, a few servers carry a port.
//! - **Policy rooms** (lists) have Zipf-distributed sizes. Their rules are about 89% literal
//!   user rules (30% of them naming a user of the pool, the rest users who are not around),
//!   2% user globs (`@*:tail.server` and `@spamN*:*`), 2% hashed user rules (SHA-256 of a user
//!   of the pool), 6% server rules (half literal, half `*.label.tld` globs; only servers of the
//!   long tail), 1% room rules. Recommendations: 90% `m.ban`, 5% `m.takedown`, 5%
//!   `org.matrix.mjolnir.allow`.
//! - **Protected rooms** have power-law sizes (size of the room of rank `i` proportional to
//!   `1/i`), so the largest room at size `large` has about 110k members. Memberships: 88% join,
//!   3% invite, 1% knock, 6% leave, 2% ban. About 30% of the rooms have an `m.room.server_acl`.
//! - **Instances** watch 1-5 lists (popular lists more often) and protect 1-20 rooms; every
//!   room is protected by at least one instance when there are enough protect slots.
//!
//! Every file is generated on demand from its own seeded random stream ([`Workload::file`]),
//! so a large workload is never held in memory at once and a file is the same whether it is
//! written to disk or handed over in memory.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use prr_replicas::{Event, ManifestEntry, SourceItem, parse_file, sha256_base64};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

/// The named workload sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Size {
    /// CI smoke size: 2k rules, 20k memberships, 20 instances (seconds).
    Small,
    /// 20k rules, 200k memberships, 200 instances.
    Medium,
    /// 100k rules, 1M memberships, 1,000 instances (the size of issue 3's criterion).
    Large,
}

impl Size {
    /// The size's name, as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }
}

/// The parameters of a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// Policy rules, over all policy rooms.
    pub rules: usize,
    /// Policy rooms (lists).
    pub policy_rooms: usize,
    /// Membership records (`m.room.member` events), over all protected rooms.
    pub memberships: usize,
    /// Protected rooms.
    pub protected_rooms: usize,
    /// Instances in the manifest.
    pub instances: usize,
    /// Servers in the pool.
    pub servers: usize,
    /// Users in the pool.
    pub users: usize,
}

impl WorkloadConfig {
    /// The configuration of a named size, with the default seed.
    pub fn for_size(size: Size) -> Self {
        let (rules, policy_rooms, memberships, protected_rooms, instances, servers, users) =
            match size {
                Size::Small => (2_000, 6, 20_000, 100, 20, 100, 8_000),
                Size::Medium => (20_000, 20, 200_000, 1_000, 200, 500, 70_000),
                Size::Large => (100_000, 40, 1_000_000, 5_000, 1_000, 1_000, 350_000),
            };
        WorkloadConfig {
            seed: 42,
            rules,
            policy_rooms,
            memberships,
            protected_rooms,
            instances,
            servers,
            users,
        }
    }

    /// The same configuration with another seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// One file of a workload: its name (which sorts in ingest order) and its items.
#[derive(Clone, Debug)]
pub struct WorkloadFile {
    /// The file name, e.g. `10-room-00042.json`.
    pub name: String,
    /// The parsed items, exactly what [`parse_file`] gives for the written file.
    pub items: Vec<SourceItem>,
}

/// What a written workload holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadStats {
    /// Files written.
    pub files: usize,
    /// State events, over all files.
    pub events: usize,
    /// Policy rules.
    pub rules: usize,
    /// Membership records.
    pub memberships: usize,
    /// Members of the largest protected room.
    pub largest_room: usize,
    /// Instances.
    pub instances: usize,
    /// Bytes written.
    pub bytes: u64,
}

#[derive(Clone, Debug)]
struct PolicyRoomPlan {
    room_id: String,
    server: String,
    rules: usize,
}

#[derive(Clone, Debug)]
struct RoomPlan {
    room_id: String,
    members: usize,
    acl: bool,
}

#[derive(Clone, Debug)]
struct InstancePlan {
    id: String,
    watch: Vec<usize>,
    protect: Vec<usize>,
}

/// A generated workload: the plan of every file; files are generated from it on demand.
#[derive(Clone, Debug)]
pub struct Workload {
    config: WorkloadConfig,
    servers: Vec<String>,
    users: Vec<String>,
    policy_rooms: Vec<PolicyRoomPlan>,
    protected_rooms: Vec<RoomPlan>,
    instances: Vec<InstancePlan>,
}

/// Sizes proportional to `1 / (i + 1)^s` summing to `total`, each at least 1 (when `total`
/// allows), largest first.
fn zipf_counts(total: usize, n: usize, s: f64) -> Vec<usize> {
    let weights: Vec<f64> = (0..n).map(|i| 1.0 / ((i + 1) as f64).powf(s)).collect();
    let sum: f64 = weights.iter().sum();
    let mut counts: Vec<usize> = weights
        .iter()
        .map(|w| ((w / sum) * total as f64).floor().max(1.0) as usize)
        .collect();
    let mut assigned: usize = counts.iter().sum();
    let mut i = 0;
    while assigned < total {
        counts[i % n] += 1;
        assigned += 1;
        i += 1;
    }
    while assigned > total {
        let j = counts
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| **c)
            .map(|(j, _)| j)
            .expect("n > 0");
        counts[j] -= 1;
        assigned -= 1;
    }
    counts
}

/// A sampler of indices `0..n` with probability proportional to `1 / (i + 1)^s`.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (0..n)
            .map(|i| {
                acc += 1.0 / ((i + 1) as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let x: f64 = rng.random();
        self.cdf.partition_point(|c| *c < x).min(self.cdf.len() - 1)
    }
}

/// The random stream of one part of the workload.
fn stream(seed: u64, part: u64, index: u64) -> StdRng {
    let mixed = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(part.wrapping_mul(0xbf58_476d_1ce4_e5b9))
        .wrapping_add(index.wrapping_mul(0x94d0_49bb_1331_11eb));
    StdRng::seed_from_u64(mixed)
}

const REASONS: [&str; 6] = [
    "spam",
    "harassment",
    "ban evasion",
    "raid",
    "scam links",
    "abuse",
];

/// The `m.room.create` event of `room` by `creator` (room version 10).
fn room_create(event_id: String, room: &str, creator: &str, ts: i64) -> SourceItem {
    state_event(
        event_id,
        room,
        "m.room.create",
        "",
        creator,
        ts,
        json!({"creator": creator, "room_version": "10"}),
    )
}

/// A state event as the generator writes it (the benchmarks build their own events with it).
pub fn state_event(
    event_id: String,
    room_id: &str,
    ty: &str,
    state_key: &str,
    sender: &str,
    ts: i64,
    content: Value,
) -> SourceItem {
    let Value::Object(content) = content else {
        unreachable!("content is an object")
    };
    SourceItem::Event(Event {
        event_id,
        room_id: room_id.to_string(),
        event_type: ty.to_string(),
        state_key: Some(state_key.to_string()),
        sender: sender.to_string(),
        origin_server_ts: Some(ts),
        content,
        redacted_because: false,
        redacts: None,
    })
}

/// The JSON form of an item, as `prr ingest` reads it.
pub fn item_to_json(item: &SourceItem) -> Value {
    match item {
        SourceItem::Event(e) => {
            let mut m = Map::new();
            m.insert("event_id".into(), e.event_id.clone().into());
            m.insert("room_id".into(), e.room_id.clone().into());
            m.insert("type".into(), e.event_type.clone().into());
            if let Some(k) = &e.state_key {
                m.insert("state_key".into(), k.clone().into());
            }
            m.insert("sender".into(), e.sender.clone().into());
            m.insert(
                "origin_server_ts".into(),
                e.origin_server_ts.map(Value::from).unwrap_or(Value::Null),
            );
            m.insert("content".into(), Value::Object(e.content.clone()));
            Value::Object(m)
        }
        SourceItem::Manifest(entries) => {
            let list: Vec<Value> = entries
                .iter()
                .map(|e| match e {
                    ManifestEntry::Set { id, watch, protect } => {
                        json!({"id": id, "watch": watch, "protect": protect})
                    }
                    ManifestEntry::Remove { id } => json!({"id": id, "remove": true}),
                })
                .collect();
            json!({ "instances": list })
        }
    }
}

impl Workload {
    /// Plans a workload: the users, servers, rooms and instances. Cheap; files are generated
    /// by [`Workload::file`].
    pub fn generate(config: &WorkloadConfig) -> Self {
        let seed = config.seed;
        let mut rng = stream(seed, 0, 0);
        let servers: Vec<String> = (0..config.servers)
            .map(|i| match i {
                0 => "matrix.org".to_string(),
                i if i % 4 == 0 => format!("chat.h{i}.net"),
                i if i % 97 == 13 => format!("s{i}.org:8448"),
                i => format!("s{i}.org"),
            })
            .collect();
        let server_pick = Zipf::new(config.servers, 1.1);
        let users: Vec<String> = (0..config.users)
            .map(|u| {
                let server = &servers[server_pick.sample(&mut rng)];
                if rng.random_ratio(1, 100) {
                    format!("@spam{u}:{server}")
                } else {
                    format!("@u{u}:{server}")
                }
            })
            .collect();
        let policy_rooms = zipf_counts(config.rules, config.policy_rooms, 0.8)
            .into_iter()
            .enumerate()
            .map(|(i, rules)| {
                let server = servers[i % servers.len()].clone();
                PolicyRoomPlan {
                    room_id: format!("!list{i}:{server}"),
                    server,
                    rules,
                }
            })
            .collect::<Vec<_>>();
        let protected_rooms = zipf_counts(config.memberships, config.protected_rooms, 1.0)
            .into_iter()
            .enumerate()
            .map(|(i, members)| RoomPlan {
                room_id: format!("!room{i}:{}", servers[(i * 7) % servers.len()]),
                members: members.min(config.users),
                acl: rng.random_ratio(3, 10),
            })
            .collect::<Vec<_>>();
        // Instances: watch 1-5 lists (popular ones more often), protect 1-20 rooms, every room
        // protected at least once when the slots allow it.
        let list_pick = Zipf::new(config.policy_rooms, 1.0);
        let mut uncovered: Vec<usize> = (0..config.protected_rooms).collect();
        for i in (1..uncovered.len()).rev() {
            uncovered.swap(i, rng.random_range(0..=i));
        }
        let mut instances = Vec::with_capacity(config.instances);
        for i in 0..config.instances {
            let server = &servers[server_pick.sample(&mut rng)];
            let n_watch = rng.random_range(1..=5usize).min(config.policy_rooms);
            let mut watch = BTreeSet::new();
            while watch.len() < n_watch {
                watch.insert(list_pick.sample(&mut rng));
            }
            let n_protect = rng.random_range(1..=20usize).min(config.protected_rooms);
            let mut protect = BTreeSet::new();
            while protect.len() < n_protect {
                match uncovered.pop() {
                    Some(r) => protect.insert(r),
                    None => protect.insert(rng.random_range(0..config.protected_rooms)),
                };
            }
            instances.push(InstancePlan {
                id: format!("@draupnir{i}:{server}"),
                watch: watch.into_iter().collect(),
                protect: protect.into_iter().collect(),
            });
        }
        Workload {
            config: config.clone(),
            servers,
            users,
            policy_rooms,
            protected_rooms,
            instances,
        }
    }

    /// The configuration it was generated from.
    pub fn config(&self) -> &WorkloadConfig {
        &self.config
    }

    /// The number of files: policy rooms, then protected rooms, then the manifest.
    pub fn file_count(&self) -> usize {
        self.policy_rooms.len() + self.protected_rooms.len() + 1
    }

    /// The users of the pool.
    pub fn users(&self) -> &[String] {
        &self.users
    }

    /// The protected rooms' IDs, largest first.
    pub fn protected_room_ids(&self) -> Vec<&str> {
        self.protected_rooms
            .iter()
            .map(|r| r.room_id.as_str())
            .collect()
    }

    /// The policy rooms' IDs, in order.
    pub fn policy_room_ids(&self) -> Vec<&str> {
        self.policy_rooms
            .iter()
            .map(|r| r.room_id.as_str())
            .collect()
    }

    /// The members of the largest protected room.
    pub fn largest_room(&self) -> usize {
        self.protected_rooms
            .iter()
            .map(|r| r.members)
            .max()
            .unwrap_or(0)
    }

    /// The total of membership records.
    pub fn memberships(&self) -> usize {
        self.protected_rooms.iter().map(|r| r.members).sum()
    }

    /// The total of policy rules.
    pub fn rules(&self) -> usize {
        self.policy_rooms.iter().map(|r| r.rules).sum()
    }

    /// File `i` (`0..file_count()`), generated from its own random stream.
    pub fn file(&self, i: usize) -> WorkloadFile {
        let p = self.policy_rooms.len();
        let r = self.protected_rooms.len();
        if i < p {
            WorkloadFile {
                name: format!("00-policy-{i:04}.json"),
                items: self.policy_room(i),
            }
        } else if i < p + r {
            WorkloadFile {
                name: format!("10-room-{:05}.json", i - p),
                items: self.protected_room(i - p),
            }
        } else {
            assert_eq!(i, p + r, "file index out of range");
            WorkloadFile {
                name: "90-manifest.json".into(),
                items: vec![self.manifest()],
            }
        }
    }

    /// Every file, in ingest order, generated one at a time.
    pub fn files(&self) -> impl Iterator<Item = WorkloadFile> + '_ {
        (0..self.file_count()).map(|i| self.file(i))
    }

    fn tail_server(&self, rng: &mut StdRng) -> &str {
        let n = self.servers.len();
        &self.servers[rng.random_range((n / 4).max(1).min(n - 1)..n)]
    }

    fn policy_room(&self, p: usize) -> Vec<SourceItem> {
        let plan = &self.policy_rooms[p];
        let mut rng = stream(self.config.seed, 1, p as u64);
        let room = plan.room_id.as_str();
        let admin = format!("@mod:{}", plan.server);
        let ts0 = 1_700_000_000_000i64 + (p as i64) * 10_000_000;
        let mut items = Vec::with_capacity(plan.rules + 2);
        items.push(room_create(format!("$l{p}c"), room, &admin, ts0));
        items.push(state_event(
            format!("$l{p}n"),
            room,
            "m.room.name",
            "",
            &admin,
            ts0 + 1,
            json!({"name": format!("Ban list {p}")}),
        ));
        for n in 0..plan.rules {
            let x: f64 = rng.random();
            let recommendation = match rng.random_range(0..100) {
                0..90 => "m.ban",
                90..95 => "m.takedown",
                _ => "org.matrix.mjolnir.allow",
            };
            let mut content = Map::new();
            let ty = if x < 0.89 {
                let entity = if rng.random_ratio(3, 10) {
                    self.users[rng.random_range(0..self.users.len())].clone()
                } else {
                    let server = self.servers[rng.random_range(0..self.servers.len())].clone();
                    format!("@gone{p}x{n}:{server}")
                };
                content.insert("entity".into(), entity.into());
                "m.policy.rule.user"
            } else if x < 0.91 {
                let entity = if rng.random_bool(0.5) {
                    format!("@*:{}", self.tail_server(&mut rng))
                } else {
                    format!("@spam{}*:*", rng.random_range(0..10))
                };
                content.insert("entity".into(), entity.into());
                "m.policy.rule.user"
            } else if x < 0.93 {
                let user = &self.users[rng.random_range(0..self.users.len())];
                content.insert("hashes".into(), json!({"sha256": sha256_base64(user)}));
                "m.policy.rule.user"
            } else if x < 0.99 {
                let entity = if rng.random_bool(0.5) {
                    if rng.random_bool(0.5) {
                        let s = self.tail_server(&mut rng);
                        s.split(':').next().unwrap_or(s).to_string()
                    } else {
                        format!("evil{p}x{n}.example")
                    }
                } else {
                    let s = self.tail_server(&mut rng).to_string();
                    match s.strip_prefix("chat.") {
                        Some(base) if rng.random_bool(0.7) => format!("*.{base}"),
                        _ => format!("*.evil{}.example", rng.random_range(0..50)),
                    }
                };
                content.insert("entity".into(), entity.into());
                "m.policy.rule.server"
            } else {
                content.insert(
                    "entity".into(),
                    format!("!banned{p}x{n}:{}", self.servers[n % self.servers.len()]).into(),
                );
                "m.policy.rule.room"
            };
            content.insert("recommendation".into(), recommendation.into());
            if rng.random_ratio(4, 5) {
                content.insert(
                    "reason".into(),
                    REASONS[rng.random_range(0..REASONS.len())].into(),
                );
            }
            items.push(state_event(
                format!("$l{p}r{n}"),
                room,
                ty,
                &format!("rule:{n}"),
                &admin,
                ts0 + 2 + n as i64,
                Value::Object(content),
            ));
        }
        items
    }

    fn protected_room(&self, k: usize) -> Vec<SourceItem> {
        let plan = &self.protected_rooms[k];
        let mut rng = stream(self.config.seed, 2, k as u64);
        let room = plan.room_id.as_str();
        let picked = rand::seq::index::sample(&mut rng, self.users.len(), plan.members);
        let creator = self.users[picked.index(0)].clone();
        let ts0 = 1_710_000_000_000i64 + (k as i64) * 1_000_000;
        let mut items = Vec::with_capacity(plan.members + 3);
        items.push(room_create(format!("$r{k}c"), room, &creator, ts0));
        items.push(state_event(
            format!("$r{k}p"),
            room,
            "m.room.power_levels",
            "",
            &creator,
            ts0 + 1,
            json!({"users": {creator.clone(): 100}, "ban": 50, "kick": 50, "redact": 50, "users_default": 0}),
        ));
        if plan.acl {
            items.push(state_event(
                format!("$r{k}a"),
                room,
                "m.room.server_acl",
                "",
                &creator,
                ts0 + 2,
                json!({"allow": ["*"], "deny": [], "allow_ip_literals": false}),
            ));
        }
        for (j, u) in picked.iter().enumerate() {
            let user = &self.users[u];
            let membership = match rng.random_range(0..100) {
                0..88 => "join",
                88..91 => "invite",
                91..92 => "knock",
                92..98 => "leave",
                _ => "ban",
            };
            let content = if rng.random_ratio(7, 10) {
                json!({"membership": membership, "displayname": format!("Name {u}")})
            } else {
                json!({"membership": membership})
            };
            items.push(state_event(
                format!("$r{k}m{j}"),
                room,
                "m.room.member",
                user,
                user,
                ts0 + 3 + j as i64,
                content,
            ));
        }
        items
    }

    fn manifest(&self) -> SourceItem {
        SourceItem::Manifest(
            self.instances
                .iter()
                .map(|i| ManifestEntry::Set {
                    id: i.id.clone(),
                    watch: i
                        .watch
                        .iter()
                        .map(|w| self.policy_rooms[*w].room_id.clone())
                        .collect(),
                    protect: i
                        .protect
                        .iter()
                        .map(|r| self.protected_rooms[*r].room_id.clone())
                        .collect(),
                })
                .collect(),
        )
    }

    /// Writes every file into `dir` (created if missing): state files as JSON arrays of
    /// events, the manifest as an object.
    pub fn write(&self, dir: &Path) -> anyhow::Result<WorkloadStats> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut stats = WorkloadStats {
            instances: self.instances.len(),
            largest_room: self.largest_room(),
            ..Default::default()
        };
        for file in self.files() {
            let path = dir.join(&file.name);
            let f =
                File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
            let mut w = BufWriter::new(f);
            match file.items.as_slice() {
                [SourceItem::Manifest(_)] => {
                    serde_json::to_writer(&mut w, &item_to_json(&file.items[0]))?
                }
                items => {
                    w.write_all(b"[")?;
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            w.write_all(b",\n")?;
                        }
                        serde_json::to_writer(&mut w, &item_to_json(item))?;
                        if let SourceItem::Event(e) = item {
                            stats.events += 1;
                            if e.event_type == "m.room.member" {
                                stats.memberships += 1;
                            } else if e.event_type.starts_with("m.policy.rule.") {
                                stats.rules += 1;
                            }
                        }
                    }
                    w.write_all(b"]\n")?;
                }
            }
            w.flush()?;
            stats.bytes += std::fs::metadata(&path)?.len();
            stats.files += 1;
        }
        Ok(stats)
    }
}

/// The workload files in `dir`, sorted by name (the order `prr ingest DIR` uses).
pub fn list_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Reads and parses one workload file.
pub fn read_file(path: &Path) -> anyhow::Result<Vec<SourceItem>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(parse_file(&path.display().to_string(), &bytes)?)
}

/// Reads and parses every file of `dir`, in ingest order.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<WorkloadFile>> {
    list_files(dir)?
        .iter()
        .map(|p| {
            Ok(WorkloadFile {
                name: p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                items: read_file(p)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> WorkloadConfig {
        WorkloadConfig {
            seed: 7,
            rules: 300,
            policy_rooms: 3,
            memberships: 2_000,
            protected_rooms: 12,
            instances: 4,
            servers: 40,
            users: 900,
        }
    }

    #[test]
    fn written_files_parse_back_to_the_generated_items() {
        let w = Workload::generate(&tiny());
        let dir = tempfile::tempdir().unwrap();
        let stats = w.write(dir.path()).unwrap();
        assert_eq!(stats.files, w.file_count());
        assert_eq!(stats.memberships, w.memberships());
        assert_eq!(stats.rules, w.rules());
        let read = read_dir(dir.path()).unwrap();
        for (a, b) in read.iter().zip(w.files()) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.items, b.items, "{}", a.name);
        }
    }

    #[test]
    fn generation_is_deterministic_and_sizes_add_up() {
        let a = Workload::generate(&tiny());
        let b = Workload::generate(&tiny());
        assert_eq!(a.file(5).items, b.file(5).items);
        assert_eq!(a.memberships(), 2_000);
        assert_eq!(a.rules(), 300);
        let c = Workload::generate(&tiny().with_seed(8));
        assert_ne!(a.file(0).items, c.file(0).items);
    }

    #[test]
    fn zipf_counts_sum_to_the_total() {
        for (t, n) in [
            (20_000, 100),
            (200_000, 1_000),
            (1_000_000, 5_000),
            (2_000, 6),
        ] {
            let c = zipf_counts(t, n, 1.0);
            assert_eq!(c.iter().sum::<usize>(), t);
            assert!(c.iter().all(|x| *x >= 1), "{t} {n}");
        }
        let c = zipf_counts(1_000_000, 5_000, 1.0);
        assert!((100_000..120_000).contains(&c[0]), "largest room {}", c[0]);
    }
}
