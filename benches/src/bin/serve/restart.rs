//! Part 3, restart: `prr serve` on the workload's store after a clean stop (a fresh copy per
//! run, written out before the clock starts: a warm page cache), timed from the spawn until
//! it prints `listening on`, until `GET /v1/replicas/member_bans?partition=INSTANCE` answers
//! 200 with the rows `prr show` gives, and until a first `POST /v1/ingest` is answered
//! `{"seq":N}` (durable). Beside it, `prr show member_bans --partition INSTANCE` on another
//! copy of the same store, from the spawn to the exit (the CLI's restore cost).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use prr_benches::harness::table::{Table, fmt_ratio, fmt_secs};
use prr_benches::waves::{Joins, median};
use serde_json::Value;

use crate::Setup;
use crate::api::bans_path;
use crate::server::{Serve, ndjson};
use crate::stream::{copy_store, join_body};

/// `prr --store STORE show member_bans [--partition P] --format ndjson`: its rows and its wall
/// time from the spawn to the exit.
fn prr_show(
    prr: &Path,
    store: &Path,
    partition: Option<&str>,
) -> anyhow::Result<(Vec<Value>, f64)> {
    let mut cmd = Command::new(prr);
    cmd.arg("--store")
        .arg(store)
        .args(["show", "member_bans", "--format", "ndjson"])
        .env_remove("PRR_STORE");
    if let Some(p) = partition {
        cmd.args(["--partition", p]);
    }
    let t = Instant::now();
    let out = cmd.output().context("cannot run prr show")?;
    let wall = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("prr show: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((ndjson(&String::from_utf8_lossy(&out.stdout))?, wall))
}

/// The instance with the most `member_bans` rows, and how many.
fn busiest_instance(setup: &Setup) -> anyhow::Result<(String, usize)> {
    let copy = setup.work.join("serve-show.redb");
    copy_store(&setup.base, &copy)?;
    let (rows, _) = prr_show(&setup.prr, &copy, None)?;
    let _ = std::fs::remove_file(&copy);
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        if let Some(i) = r["instance"].as_str() {
            *count.entry(i.to_string()).or_default() += 1;
        }
    }
    count
        .into_iter()
        .max_by_key(|(i, n)| (*n, std::cmp::Reverse(i.clone())))
        .context("member_bans has no row with an instance")
}

struct Run {
    show: f64,
    listening: f64,
    read: f64,
    delta: f64,
    polls: usize,
}

fn one_run(setup: &Setup, instance: &str, run: usize) -> anyhow::Result<Run> {
    let show_copy = setup.work.join("serve-show.redb");
    copy_store(&setup.base, &show_copy)?;
    let (want, show) = prr_show(&setup.prr, &show_copy, Some(instance))?;
    let _ = std::fs::remove_file(&show_copy);
    let store = setup.work.join("serve-restart.redb");
    copy_store(&setup.base, &store)?;
    let mut joins = Joins::new(&setup.workload, setup.seed ^ (0x7e57 + run as u64));
    let body = join_body(&mut joins);
    let serve = Serve::start(
        &setup.prr,
        &store,
        "127.0.0.1:0",
        &["--revision-interval", "3600"],
    )?;
    let client = serve.client().clone();
    let path = bans_path(instance);
    let mut polls = 0;
    let read = loop {
        polls += 1;
        let (status, text) = client.get(&path)?;
        if status == 200 && ndjson(&text)? == want {
            break serve.spawned.elapsed();
        }
        if serve.spawned.elapsed() > Duration::from_secs(600) {
            bail!("GET {path} did not give prr show's rows within 600 s ({status})");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    client.ingest(&body)?;
    let delta = serve.spawned.elapsed();
    let listening = serve.listening.as_secs_f64();
    drop(serve);
    let _ = std::fs::remove_file(&store);
    Ok(Run {
        show,
        listening,
        read: read.as_secs_f64(),
        delta: delta.as_secs_f64(),
        polls,
    })
}

/// Runs part 3 and prints its table.
pub fn run(setup: &Setup, runs: usize) -> anyhow::Result<()> {
    let (instance, rows) = busiest_instance(setup)?;
    let mut all = Vec::new();
    for run in 0..runs.max(1) {
        all.push(one_run(setup, &instance, run)?);
    }
    let med = |f: fn(&Run) -> f64| median(all.iter().map(f).collect());
    let show = med(|r| r.show);
    println!("### Restart on the store after a clean stop\n");
    println!(
        "Median of {} run(s), each on a fresh copy of the store (warm page cache); the read is `member_bans` of the instance with the most bans ({rows} rows), polled every 1 ms after `listening on` until it answers 200 with the rows `prr show` gives ({} poll(s) in the first run); the first delta is one join through `POST /v1/ingest`.\n",
        all.len(),
        all[0].polls,
    );
    let mut t = Table::new(&["from the spawn until", "time", "/ `prr show`"]);
    for (label, v) in [
        (
            "`prr show member_bans --partition INSTANCE` exits (the CLI: open, restore, read)",
            show,
        ),
        (
            "prr serve: `listening on ADDR` printed",
            med(|r| r.listening),
        ),
        (
            "**prr serve: answers the read with the right rows**",
            med(|r| r.read),
        ),
        (
            "**prr serve: a first new delta durable** (`POST /v1/ingest` answered `{\"seq\":N}`)",
            med(|r| r.delta),
        ),
    ] {
        t.row(vec![label.into(), fmt_secs(v), fmt_ratio(v, show)]);
    }
    println!("{}", t.render());
    Ok(())
}
