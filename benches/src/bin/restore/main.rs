//! Restore after a restart versus re-ingesting the same data (issue 3), and restore with N
//! source deltas after the last revision (issue 6, W2): after a clean stop, and after a
//! SIGKILL (a child restores the clean-stop store, appends N one-event source deltas in group
//! commits with revision capture off, reports, and is killed with SIGKILL; a fresh child
//! measures the restart, redb's repair of the unclean file included).
//!
//! Every measurement runs in a fresh child process of this binary, on its own copy of the
//! store (copies are made before the clock starts, so the store file is in the page cache:
//! a warm-cache restart). Prints markdown tables to standard output.
//!
//! ```text
//! cargo run --release -p prr-benches --bin restore -- --size small
//! ```

use std::path::Path;

use anyhow::Context;
use clap::Parser;
use prr_benches::harness::args::{DirArgs, MemoryArgs, WorkDirArgs, WorkersArgs, WorkloadArgs};
use prr_benches::harness::child::{ChildArgs, ChildOutcome, Children};
use prr_benches::harness::table::{Table, fmt_bytes, fmt_ratio, fmt_secs, heading, verdict};
use prr_benches::measure::machine_line;
use serde_json::Value;

/// Restore after a restart versus re-ingest, and restore with deltas after the last revision.
#[derive(Debug, Parser)]
#[command(name = "restore")]
struct Cli {
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    workers: WorkersArgs,
    #[command(flatten)]
    dir: DirArgs,
    /// Runs of each measurement (the table shows the median).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Source deltas after the last revision to restore with (0: a clean stop).
    #[arg(long, value_delimiter = ',', default_value = "0,1000")]
    deltas: Vec<usize>,
    /// Source deltas after the last revision before a SIGKILL (W2 after a crash); `none`:
    /// skip the SIGKILL runs.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,100000", value_parser = count_or_none)]
    kill_deltas: Vec<Option<usize>>,
    #[command(flatten)]
    memory: MemoryArgs,
    #[command(flatten)]
    work: WorkDirArgs,
    /// A child measurement (internal).
    #[command(subcommand)]
    child: Option<Child>,
}

mod child;

use child::{Child, run_as_child};

/// A count, or `none` (nothing).
fn count_or_none(s: &str) -> Result<Option<usize>, String> {
    match s {
        "none" => Ok(None),
        _ => s
            .parse()
            .map(Some)
            .map_err(|e| format!("{e} (a count, or `none`)")),
    }
}

/// The upper median (the middle value, the higher of the two for an even count); NaN when
/// empty.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The command line of an `append` or `append-and-wait` child: `n` deltas into `room`.
fn append_args(sub: &str, store: &Path, workers: u64, n: usize, room: &str) -> ChildArgs {
    ChildArgs::new(sub)
        .store(store, workers)
        .opt("--n", n)
        .opt("--room", room)
}

/// Copies a store and writes the copy out before it is measured: a restart right after the
/// copy would otherwise compete with the kernel's writeback of its hundreds of MiB (the open
/// of the large store measured 0.73 s so against 0.46 s after a sync).
fn copy_store(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {} out", to.display()))?;
    Ok(())
}

/// Medians of the restore children's fields.
struct Restored {
    open: f64,
    read: f64,
    dataflow: f64,
    first: f64,
    rss: f64,
    bans: f64,
    /// The first ban rule after the first delta, and the bans it added.
    first_rule: f64,
    rule_bans: f64,
    /// Then a first glob rule.
    first_glob: f64,
    resumed: Value,
}

/// The restarts of one kind: `runs` children `restore` (with `extra` flags), each on its own
/// copy of `base`.
struct Restarts<'a> {
    children: &'a Children,
    work: &'a Path,
    workers: u64,
    room: &'a str,
    policy_room: &'a str,
    runs: usize,
}

impl Restarts<'_> {
    fn run(&self, base: &Path, label: &str, extra: &[&str]) -> anyhow::Result<Restored> {
        let mut outs = Vec::new();
        for run in 0..self.runs {
            let copy = self.work.join("restore.redb");
            copy_store(base, &copy)?;
            let args = extra.iter().fold(
                ChildArgs::new("restore")
                    .store(&copy, self.workers)
                    .opt("--room", self.room)
                    .opt("--policy-room", self.policy_room),
                |args, flag| args.flag(flag),
            );
            outs.push(
                self.children
                    .result(&args, &format!("restart ({label}), run {}", run + 1))?,
            );
            std::fs::remove_file(&copy)?;
        }
        Ok(Restored::median_of(&outs))
    }
}

impl Restored {
    /// The medians of the children's fields.
    fn median_of(outs: &[ChildOutcome]) -> Restored {
        let field = |f: &str| median(outs.iter().filter_map(|o| o.num(f)).collect());
        Restored {
            open: field("open"),
            read: field("read"),
            dataflow: field("dataflow"),
            first: field("first"),
            first_rule: field("first_rule"),
            rule_bans: field("rule_bans"),
            first_glob: field("first_glob"),
            rss: field("peak_rss"),
            bans: field("member_bans"),
            resumed: outs
                .first()
                .and_then(|o| o.result.as_ref())
                .and_then(|r| r.get("resumed"))
                .cloned()
                .unwrap_or(Value::Null),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(c) = cli.child {
        return run_as_child(c);
    }
    let workers = cli.workers.workers;
    let (config, workload) = cli.workload.generate();
    let tmp = tempfile::tempdir()?;
    let dir = cli
        .dir
        .prepare("restore", &cli.workload, &workload, tmp.path())?;
    let work = cli.work.prepare(&tmp.path().join("stores"))?;
    let room = workload.protected_room_ids()[0].to_string();
    let policy_room = workload.policy_room_ids()[0].to_string();
    let children = Children::new("restore", cli.memory.uncapped());
    let restarts = Restarts {
        children: &children,
        work: &work,
        workers,
        room: &room,
        policy_room: &policy_room,
        runs: cli.runs.max(1),
    };

    // (a) Re-ingest: fresh store, every file, then a clean shutdown (revisions captured).
    let base = work.join("base.redb");
    let mut ingests = Vec::new();
    for run in 0..cli.runs.max(1) {
        let store = if run == 0 {
            base.clone()
        } else {
            work.join("again.redb")
        };
        let _ = std::fs::remove_file(&store);
        ingests.push(
            children.result(
                &ChildArgs::new("ingest")
                    .path("--dir", &dir)
                    .store(&store, workers),
                &format!("re-ingest, run {}", run + 1),
            )?,
        );
        if run > 0 {
            std::fs::remove_file(&store)?;
        }
    }
    let ingest_field = |f: &str| median(ingests.iter().filter_map(|o| o.num(f)).collect());
    let (parse, ingest, shutdown) = (
        ingest_field("parse"),
        ingest_field("ingest"),
        ingest_field("shutdown"),
    );
    let reingest = parse + ingest;
    let ingest_rss = ingest_field("peak_rss");
    let counts = ingests[0]
        .result
        .as_ref()
        .and_then(|r| r.get("counts"))
        .cloned()
        .unwrap_or(Value::Null);
    let store_bytes = ingest_field("store_bytes");

    // (b) Restart after a clean stop.
    let clean = restarts.run(&base, "clean stop", &[])?;
    // The same restart, recomputing every derived replica (side by side, same store).
    let recomputed = restarts.run(&base, "clean stop, recomputing", &["--recompute"])?;

    // Where restore time goes.
    let copy = work.join("breakdown.redb");
    copy_store(&base, &copy)?;
    let bd = children.result(
        &ChildArgs::new("breakdown").store(&copy, workers),
        "restore breakdown",
    )?;
    std::fs::remove_file(&copy)?;
    let bd = bd.result.unwrap_or(Value::Null);

    // (c) Restart with N source deltas after the last revision.
    let mut with_deltas: Vec<(usize, Restored)> = Vec::new();
    for &n in &cli.deltas {
        if n == 0 {
            continue;
        }
        let store = work.join(format!("deltas{n}.redb"));
        copy_store(&base, &store)?;
        children.result(
            &append_args("append", &store, workers, n, &room),
            &format!("appending {n} deltas"),
        )?;
        with_deltas.push((n, restarts.run(&store, &format!("{n} deltas"), &[])?));
        std::fs::remove_file(&store)?;
    }

    // (d) Restart after a SIGKILL, with N source deltas after the last revision.
    let mut killed: Vec<(usize, f64, Restored)> = Vec::new();
    for &n in cli.kill_deltas.iter().flatten() {
        let store = work.join(format!("killed{n}.redb"));
        copy_store(&base, &store)?;
        let r = children.result_then_sigkill(
            &append_args("append-and-wait", &store, workers, n, &room),
            &format!("appending {n} deltas, then SIGKILL"),
        )?;
        let append = r.get("append").and_then(Value::as_f64).unwrap_or(f64::NAN);
        killed.push((
            n,
            append,
            restarts.run(&store, &format!("SIGKILL after {n} deltas"), &[])?,
        ));
        std::fs::remove_file(&store)?;
    }

    let memberships = workload.memberships();
    println!(
        "{}\n",
        heading(
            "restore",
            cli.workload.size,
            &workload,
            config.instances,
            true,
            workers
        )
    );
    println!(
        "Machine: {}. Median of {} run(s), each in a fresh process; warm page cache.\n",
        machine_line(),
        cli.runs.max(1)
    );
    println!(
        "Store after the clean stop: {}. Intents: {}.\n",
        fmt_bytes(store_bytes),
        counts
    );

    let mut t = Table::new(&["measurement", "time", "re-ingest / this", "peak RSS"]);
    t.row(vec![
        "re-ingest: read + parse files".into(),
        fmt_secs(parse),
        String::new(),
        String::new(),
    ]);
    t.row(vec![
        "re-ingest: ingest until every replica is final".into(),
        fmt_secs(ingest),
        String::new(),
        String::new(),
    ]);
    t.row(vec![
        "re-ingest: of which the last file (the manifest: every instance's list, members, intents)"
            .into(),
        fmt_secs(ingest_field("last_file")),
        String::new(),
        String::new(),
    ]);
    t.row(vec![
        "**re-ingest: total (parse + ingest)**".into(),
        fmt_secs(reingest),
        "1.00x".into(),
        fmt_bytes(ingest_field("rss_before_shutdown")),
    ]);
    t.row(vec![
        "clean shutdown: capture revisions".into(),
        fmt_secs(shutdown),
        String::new(),
        fmt_bytes(ingest_rss),
    ]);
    t.row(vec![
        "restart: open the store (dictionary, restore point)".into(),
        fmt_secs(clean.open),
        fmt_ratio(reingest, clean.open),
        String::new(),
    ]);
    t.row(vec![
        "**restart: ready to read** (`show member_bans` served from its revision)".into(),
        fmt_secs(clean.read),
        fmt_ratio(reingest, clean.read),
        String::new(),
    ]);
    t.row(vec![
        "**restart: dataflow restored, ready to ingest** (`runtime().sync()`)".into(),
        fmt_secs(clean.dataflow),
        fmt_ratio(reingest, clean.dataflow),
        String::new(),
    ]);
    t.row(vec![
        "restart: first new delta ingested and final".into(),
        fmt_secs(clean.first),
        fmt_ratio(reingest, clean.first),
        fmt_bytes(clean.rss),
    ]);
    t.row(vec![
        format!(
            "restart: then a first new ban rule (literal, on a watched list) final, adding {} bans",
            clean.rule_bans
        ),
        fmt_secs(clean.first_rule),
        String::new(),
        String::new(),
    ]);
    t.row(vec![
        "restart: then a first glob ban rule (`@probe*:probe.example`) final".into(),
        fmt_secs(clean.first_glob),
        String::new(),
        String::new(),
    ]);
    t.row(vec![
        "restart, recomputing every derived replica: dataflow restored".into(),
        fmt_secs(recomputed.dataflow),
        fmt_ratio(reingest, recomputed.dataflow),
        String::new(),
    ]);
    t.row(vec![
        "restart, recomputing every derived replica: first new delta final".into(),
        fmt_secs(recomputed.first),
        fmt_ratio(reingest, recomputed.first),
        fmt_bytes(recomputed.rss),
    ]);
    println!("{}", t.render());
    println!(
        "Resumed from their revisions (the others recomputed): {}. Restore with resuming / recomputing: {}.\n",
        clean.resumed,
        fmt_ratio(recomputed.dataflow, clean.dataflow)
    );

    let f = |k: &str| bd.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let mut b = Table::new(&["restart step (separate run)", "time"]);
    b.row(vec!["open the store".into(), fmt_secs(f("open"))]);
    b.row(vec![
        "decode the source revisions (room_state, instances)".into(),
        fmt_secs(f("decode_sources")),
    ]);
    b.row(vec![
        "decode the derived revisions (not needed by a restore)".into(),
        fmt_secs(f("decode_derived")),
    ]);
    b.row(vec![
        "restore the dataflow (decode, feed, resume or recompute derived)".into(),
        fmt_secs(f("dataflow")),
    ]);
    println!("{}", b.render());
    if let Some(rec) = bd.get("records") {
        println!("Records per replica: {rec}\n");
    }
    if let Some(bytes) = bd.get("revision_bytes") {
        println!(
            "Encoded revision bytes per replica: {bytes}. Interned strings (loaded at open): {} ({}).\n",
            bd.get("strings").and_then(Value::as_u64).unwrap_or(0),
            fmt_bytes(
                bd.get("string_bytes")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0)
            ),
        );
    }

    let mut w = Table::new(&[
        "source deltas after the last revision",
        "ready to read",
        "dataflow restored",
        "first delta final",
        "re-ingest / restored",
        "peak RSS",
    ]);
    w.row(vec![
        "0 (clean stop)".into(),
        fmt_secs(clean.read),
        fmt_secs(clean.dataflow),
        fmt_secs(clean.first),
        fmt_ratio(reingest, clean.dataflow),
        fmt_bytes(clean.rss),
    ]);
    for (n, r) in &with_deltas {
        w.row(vec![
            format!("{n} (clean stop without revision capture)"),
            fmt_secs(r.read),
            fmt_secs(r.dataflow),
            fmt_secs(r.first),
            fmt_ratio(reingest, r.dataflow),
            fmt_bytes(r.rss),
        ]);
    }
    for (n, _, r) in &killed {
        w.row(vec![
            format!("{n} (SIGKILL)"),
            fmt_secs(r.read),
            fmt_secs(r.dataflow),
            fmt_secs(r.first),
            fmt_ratio(reingest, r.dataflow),
            fmt_bytes(r.rss),
        ]);
    }
    println!("{}", w.render());
    if !killed.is_empty() {
        let mut k = Table::new(&[
            "SIGKILL after N source deltas",
            "appending them (group commits of 1000)",
            "restart: open the store (redb repair after the crash)",
            "clean stop: open the store",
        ]);
        for (n, append, r) in &killed {
            k.row(vec![
                n.to_string(),
                fmt_secs(*append),
                fmt_secs(r.open),
                fmt_secs(clean.open),
            ]);
        }
        println!("{}", k.render());
    }
    for (n, _, r) in &killed {
        if r.bans < clean.bans {
            eprintln!(
                "restore: note: SIGKILL after {n} deltas: member_bans {} < {} after a clean stop",
                r.bans, clean.bans
            );
        }
    }
    for (n, r) in &with_deltas {
        if r.bans < clean.bans {
            eprintln!(
                "restore: note: {n} deltas: member_bans {} < {} after a clean stop",
                r.bans, clean.bans
            );
        }
    }

    let verdict = |r: f64| verdict(r >= 10.0);
    println!(
        "Issue 3 criterion (restore at least 10x faster than re-ingest, at {} membership records): ready to read {} ({}); dataflow restored {} ({}); first new delta final {} ({}).",
        memberships,
        fmt_ratio(reingest, clean.read),
        verdict(reingest / clean.read),
        fmt_ratio(reingest, clean.dataflow),
        verdict(reingest / clean.dataflow),
        fmt_ratio(reingest, clean.first),
        verdict(reingest / clean.first),
    );
    drop(tmp);
    Ok(())
}
