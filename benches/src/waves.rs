//! Pieces shared by the latency benchmarks (W4 join waves, durable acknowledgement): a
//! generator of membership joins into the protected rooms of a workload, percentiles, and the
//! `prr` binary for the child-process measurements.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use prr_replicas::{Event, SourceItem};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use crate::workload::Workload;

/// New `m.room.member` joins into a workload's protected rooms, each with a unique
/// `displayname` (`wave{n}`) so that its `room_members` delta can be told apart:
/// - 60% users who are not in the workload yet, on the workload's servers (picked with their
///   popularity), so `@*:server` globs and server rules of some lists match them;
/// - 10% new users named `@spam{d}wave{n}:...`, which the `@spam{d}*:*` user globs ban;
/// - 30% users of the pool joining a protected room (literal and hashed rules name some of
///   them).
///
/// A (room, user) pair is never used twice, so no two joins of one run change the same
/// record (a batch that is one source delta would consolidate them away).
pub struct Joins {
    users: Vec<String>,
    rooms: Vec<String>,
    rng: StdRng,
    used: HashSet<(usize, String)>,
    next: u64,
}

impl Joins {
    /// Joins into the protected rooms of `w`, seeded.
    pub fn new(w: &Workload, seed: u64) -> Self {
        Joins {
            users: w.users().to_vec(),
            rooms: w
                .protected_room_ids()
                .into_iter()
                .map(str::to_string)
                .collect(),
            rng: StdRng::seed_from_u64(seed ^ 0x5741_5645),
            used: HashSet::new(),
            next: 0,
        }
    }

    /// The next join event; its `displayname` is [`Joins::key`] of its number.
    pub fn next_join(&mut self) -> SourceItem {
        let n = self.next;
        self.next += 1;
        loop {
            let room = self.rng.random_range(0..self.rooms.len());
            let pick = &self.users[self.rng.random_range(0..self.users.len())];
            let server = pick
                .split_once(':')
                .map(|(_, s)| s)
                .unwrap_or("wave.example");
            let user = match self.rng.random_range(0..100) {
                0..60 => format!("@wave{n}:{server}"),
                60..70 => format!("@spam{}wave{n}:{server}", self.rng.random_range(0..10)),
                _ => pick.clone(),
            };
            if !self.used.insert((room, user.clone())) {
                continue;
            }
            let room_id = self.rooms[room].clone();
            return join_event(format!("$wave{n}"), room_id, user, Self::key(n), n);
        }
    }

    /// The `displayname` of join number `n`.
    pub fn key(n: u64) -> String {
        format!("wave{n}")
    }
}

/// The `p`-th percentile (0..=100) of sorted values, nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Less a hair, so that 99.9% of 1000 is rank 999 despite rounding.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Nearest-rank p50, p99 and p999, the maximum and the count of some latencies, as JSON
/// fields `p50`, `p99`, `p999`, `max`, `n` (a missing value is `null`).
pub fn latency_summary(mut v: Vec<f64>) -> Map<String, Value> {
    v.sort_by(f64::total_cmp);
    let json = json!({
        "p50": percentile(&v, 50.0), "p99": percentile(&v, 99.0),
        "p999": percentile(&v, 99.9), "max": v.last().copied().unwrap_or(f64::NAN), "n": v.len(),
    });
    match json {
        Value::Object(m) => m,
        _ => unreachable!("an object"),
    }
}

/// The median of some values; NaN when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

/// The `prr` binary of this workspace, in the same profile as the running benchmark: built
/// with `cargo build -p prr-cli --bin prr` when cargo is at hand (as under `cargo run`), else
/// the one next to the running executable.
pub fn prr_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the executable has no directory")?;
    let release = dir.file_name().is_some_and(|n| n == "release");
    if let Ok(cargo) = std::env::var("CARGO") {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-q",
            "-p",
            "prr-cli",
            "--bin",
            "prr",
            "--manifest-path",
        ])
        .arg(&manifest);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().context("cannot run cargo to build prr")?;
        if !status.success() {
            bail!("cargo build -p prr-cli failed: {status}");
        }
    }
    let prr = dir.join("prr");
    if !prr.exists() {
        bail!(
            "no prr binary at {}: build it with `cargo build --release -p prr-cli`",
            prr.display()
        );
    }
    Ok(prr)
}

/// Join number `n` (its `origin_server_ts` `n` ms after the streams' epoch) of `user` into
/// `room_id`, with `event_id` and `displayname`.
pub fn join_event(
    event_id: String,
    room_id: String,
    user: String,
    displayname: String,
    n: u64,
) -> SourceItem {
    let mut content = Map::new();
    content.insert("membership".into(), "join".into());
    content.insert("displayname".into(), displayname.into());
    SourceItem::Event(Event {
        event_id,
        room_id,
        event_type: "m.room.member".into(),
        state_key: Some(user.clone()),
        sender: user,
        origin_server_ts: Some(1_900_000_000_000 + n as i64),
        content,
        redacted_because: false,
        redacts: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::WorkloadConfig;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 500.0);
        assert_eq!(percentile(&v, 99.0), 990.0);
        assert_eq!(percentile(&v, 99.9), 999.0);
        assert_eq!(percentile(&v, 100.0), 1000.0);
        assert_eq!(percentile(&[7.0], 99.9), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn joins_are_distinct_and_deterministic() {
        let config = WorkloadConfig {
            seed: 5,
            rules: 100,
            policy_rooms: 2,
            memberships: 500,
            protected_rooms: 5,
            instances: 2,
            servers: 20,
            users: 300,
        };
        let w = Workload::generate(&config);
        let mut a = Joins::new(&w, 1);
        let mut b = Joins::new(&w, 1);
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let (x, y) = (a.next_join(), b.next_join());
            assert_eq!(x, y);
            let SourceItem::Event(e) = x else {
                panic!("not an event")
            };
            assert!(seen.insert((e.room_id, e.state_key)));
        }
    }
}
