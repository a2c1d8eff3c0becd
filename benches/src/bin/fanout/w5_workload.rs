//! The W5 workload: many idle instances over a shared base, and one active instance.

use std::collections::BTreeSet;
use std::path::Path;

use prr_benches::{Size, Workload, WorkloadConfig};
use prr_replicas::{ManifestEntry, SourceItem};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::ops::{state_event, write_items, write_ops};

/// The W5 base: rooms and lists shared by the idle instances.
pub(crate) fn w5_base(size: Size, seed: u64) -> WorkloadConfig {
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

pub(crate) const W5_KINDS: [(&str, &str); 2] = [
    ("join", "join of a glob-banned user into the active room"),
    ("rule", "new literal ban of an active-room member"),
];

/// Writes a W5 workload with `idle` idle instances into `dir`, and its ops (the same for every
/// `idle`) into `ops_path`.
pub(crate) fn write_w5(
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
