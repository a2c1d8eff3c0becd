//! Cold build (issue 6, W1): ingest everything, time until every replica is final, peak
//! memory; against peers on the same files: matrix-protection-suite driven by node (as
//! Draupnir uses it, and with scoped lookups), a naive from-scratch recomputation in plain
//! Rust (nested loops, and hash maps), and prr without its store (raw differential dataflow).
//!
//! Every system runs in a fresh child process; peers are killed at `--cap-secs` and reported
//! as "> cap", with a clearly labelled extrapolation from the instances they finished.
//!
//! ```text
//! cargo run --release -p prr-benches --bin cold_build -- --size small
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand};
use prr_benches::drive::{Ablated, ingest_dir, intent_counts};
use prr_benches::harness::args::{
    CapArgs, DirArgs, MemoryArgs, RuntimeArgs, WorkersArgs, WorkloadArgs, skipped,
};
use prr_benches::harness::child::{
    ChildArgs, ChildOutcome, Children, emit_progress, emit_result, exit_without_teardown,
    mps_command, prepare_node_peer,
};
use prr_benches::harness::table::{Table, fmt_bytes, fmt_ratio, fmt_secs, heading};
use prr_benches::measure::{machine_line, peak_rss, secs};
use prr_benches::{Matching, NaiveState, list_files, read_file};
use prr_replicas::Matrix;
use serde_json::{Value, json};

/// Cold build of every replica, against peers.
#[derive(Debug, Parser)]
#[command(name = "cold_build")]
struct Cli {
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    workers: WorkersArgs,
    #[command(flatten)]
    dir: DirArgs,
    #[command(flatten)]
    cap: CapArgs,
    #[command(flatten)]
    memory: MemoryArgs,
    /// Peers to leave out: `mps`, `mps-scoped`, `naive-nested`, `naive-indexed`, `dd`.
    /// (An ablation, prr without some replicas, runs as the child `prr --without NAMES`.)
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// How many times prr runs with and without the store, alternately; each row reports the
    /// run with the median build time (the first process after an idle spell is often slow on
    /// a shared virtual machine).
    #[arg(long, default_value_t = 1)]
    runs: usize,

    /// A child measurement (internal).
    #[command(subcommand)]
    child: Option<Child>,
}

#[derive(Debug, Subcommand)]
enum Child {
    /// prr: ingest every file, one source delta each (with a store unless `--store` is absent).
    #[command(hide = true)]
    Prr {
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        runtime: RuntimeArgs,
        /// Leave these replicas out of the DAG (an ablation, without a store).
        #[arg(long, value_delimiter = ',')]
        without: Vec<String>,
    },
    /// The naive recomputation.
    #[command(hide = true)]
    Naive {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, value_enum)]
        matching: Matching,
    },
}

fn run_as_child(child: Child) -> anyhow::Result<()> {
    match child {
        Child::Prr {
            dir,
            runtime,
            without,
        } if !without.is_empty() => {
            anyhow::ensure!(runtime.store.is_none(), "an ablation runs without a store");
            let start = Instant::now();
            let mut a = Ablated::start(runtime.config(), &without)?;
            let open = secs(start);
            let (mut parse, mut build) = (0.0, open);
            for path in list_files(&dir)? {
                let t = Instant::now();
                let items = read_file(&path)?;
                parse += secs(t);
                let t = Instant::now();
                a.ingest(&items)?;
                build += secs(t);
            }
            let counts = intent_counts(a.runtime())?;
            emit_result(json!({"open": open, "parse": parse, "build": build, "counts": counts}));
        }
        Child::Prr {
            dir,
            runtime,
            without: _,
        } => {
            let start = Instant::now();
            let mut m = Matrix::start(runtime.config())?;
            let open = secs(start);
            let t = ingest_dir(&mut m, &dir, 100)?;
            let counts = intent_counts(m.runtime())?;
            emit_result(
                json!({"open": open, "parse": t.parse, "build": open + t.ingest, "last_file": t.last_file, "counts": counts}),
            );
        }
        Child::Naive { dir, matching } => {
            let mut parse = 0.0;
            let mut files = Vec::new();
            for path in list_files(&dir)? {
                let t = Instant::now();
                files.push(read_file(&path)?);
                parse += secs(t);
            }
            let start = Instant::now();
            let mut state = NaiveState::new();
            for items in &files {
                state.apply(items);
            }
            drop(files);
            let setup = secs(start);
            let out = state.compute(matching, |out, total| {
                emit_progress(json!({
                    "instances": out.instances, "of": total, "elapsed": secs(start),
                    "instances_seconds": secs(start) - setup,
                    "peak_rss": peak_rss(),
                }));
                true
            });
            emit_result(json!({
                "parse": parse, "build": secs(start),
                "counts": {
                    "member_set": out.member_set, "member_matches": out.member_matches, "member_bans": out.member_bans,
                    "ban_intents": out.ban_intents, "acl_deny": out.acl_deny,
                },
                "comparisons": out.comparisons,
            }));
        }
    }
    exit_without_teardown();
}

/// One row of the table.
struct Row {
    system: String,
    outcome: Option<ChildOutcome>,
    note: String,
}

impl Row {
    fn build(&self) -> Option<f64> {
        self.outcome.as_ref()?.num("build")
    }

    fn counts(&self) -> Option<&Value> {
        self.outcome.as_ref()?.result.as_ref()?.get("counts")
    }

    fn rss(&self) -> Option<f64> {
        let o = self.outcome.as_ref()?;
        o.num("peak_rss")
            .or_else(|| o.last_progress.as_ref()?.get("peak_rss")?.as_f64())
            .or((o.max_rss_seen > 0).then_some(o.max_rss_seen as f64))
    }
}

/// An extrapolation of a capped run from its last progress line.
fn extrapolate(p: &Value) -> Option<(f64, u64, u64)> {
    let done = p.get("instances")?.as_u64()?;
    let of = p.get("of")?.as_u64()?;
    let elapsed = p.get("elapsed")?.as_f64()?;
    let per = p.get("instances_seconds")?.as_f64()?;
    if done == 0 {
        return None;
    }
    Some(((elapsed - per) + per * of as f64 / done as f64, done, of))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(c) = cli.child {
        return run_as_child(c);
    }
    let (config, workload) = cli.workload.generate();
    let tmp = tempfile::tempdir()?;
    let dir = cli
        .dir
        .prepare("cold_build", &cli.workload, &workload, tmp.path())?;
    let cap = cli.memory.capped(&cli.cap);
    let uncapped = cli.memory.uncapped();
    let children = Children::new("cold_build", uncapped);
    let skip = |name: &str| skipped(&cli.skip, name);
    let mut rows: Vec<Row> = Vec::new();

    let mut with_store = Vec::new();
    let mut without_store = Vec::new();
    let prr_args = |store: Option<&Path>| {
        ChildArgs::new("prr")
            .path("--dir", &dir)
            .opt("--workers", cli.workers.workers)
            .path_if("--store", store)
    };
    for run_index in 0..cli.runs.max(1) {
        let store = tmp.path().join(format!("cold{run_index}.redb"));
        with_store.push(children.run(&prr_args(Some(&store)), "prr (store)")?);
        let _ = std::fs::remove_file(&store);
        if !skip("dd") {
            without_store.push(children.run(
                &prr_args(None),
                "prr without a store (raw differential dataflow)",
            )?);
        }
    }
    let runs_note = |outcomes: &[ChildOutcome]| {
        if outcomes.len() < 2 {
            return String::new();
        }
        let builds: Vec<String> = outcomes
            .iter()
            .filter_map(|o| o.num("build"))
            .map(fmt_secs)
            .collect();
        format!("median of {} runs: {}", outcomes.len(), builds.join(", "))
    };
    let note = runs_note(&with_store);
    rows.push(Row {
        system: "**prr** (redb store, one source delta per file, group-committed)".into(),
        outcome: median_run(with_store),
        note,
    });
    if !without_store.is_empty() {
        let note = runs_note(&without_store);
        rows.push(Row {
            system: "prr without a store (raw differential dataflow)".into(),
            outcome: median_run(without_store),
            note,
        });
    }
    for (name, matching, label) in [
        (
            "naive-nested",
            "nested",
            "plain Rust, nested loops (instance, member, rule)",
        ),
        (
            "naive-indexed",
            "indexed",
            "plain Rust, per-instance hash maps + glob scan",
        ),
    ] {
        if skip(name) {
            continue;
        }
        let args = ChildArgs::new("naive")
            .path("--dir", &dir)
            .opt("--matching", matching);
        let o = children.run_limited(&args, cap, label)?;
        rows.push(Row {
            system: label.into(),
            outcome: Some(o),
            note: String::new(),
        });
    }
    let node = if skip("mps") && skip("mps-scoped") {
        Err("skipped by --skip".to_string())
    } else {
        prepare_node_peer("cold_build")
    };
    for (name, mode, label) in [
        (
            "mps",
            "draupnir",
            "matrix-protection-suite 7.1.0, as Draupnir uses it",
        ),
        (
            "mps-scoped",
            "scoped",
            "matrix-protection-suite 7.1.0, scoped lookups (best case)",
        ),
    ] {
        if skip(name) {
            continue;
        }
        match &node {
            Ok(_) => {
                let mut cmd = mps_command(&[]);
                cmd.arg("--dir").arg(&dir).args(["--mode", mode]);
                let o = children.run_command(cmd, cap, label)?;
                rows.push(Row {
                    system: label.into(),
                    outcome: Some(o),
                    note: String::new(),
                });
            }
            Err(why) => rows.push(Row {
                system: label.into(),
                outcome: None,
                note: format!("skipped: {why}"),
            }),
        }
    }

    let memberships = workload.memberships() as f64;
    let prr_build = rows[0].build().unwrap_or(f64::NAN);
    let prr_counts = rows[0].counts().cloned().unwrap_or(Value::Null);
    println!(
        "{}\n",
        heading(
            "cold_build",
            cli.workload.size,
            &workload,
            config.instances,
            true,
            cli.workers.workers
        )
    );
    println!(
        "Machine: {}. Each system in a fresh process; peers capped at {} s. \"build\": from parsed input to every \
         intent final (prr: every replica final); \"parse\": reading and parsing the files, not included.\n",
        machine_line(),
        cli.cap.cap_secs
    );
    let mut t = Table::new(&[
        "system",
        "build",
        "time / prr's",
        "parse",
        "peak RSS",
        "RSS per membership",
        "ban intents (instance, user)",
        "member_matches",
        "ACL deny entries",
    ]);
    for row in &rows {
        let Some(o) = &row.outcome else {
            t.row(vec![row.system.clone(), row.note.clone()]);
            continue;
        };
        let count = |k: &str| -> String {
            match row.counts().and_then(|c| c.get(k)).and_then(Value::as_u64) {
                Some(n) => {
                    let same = prr_counts.get(k).and_then(Value::as_u64) == Some(n);
                    if same || row.system.starts_with("**prr") {
                        n.to_string()
                    } else {
                        format!("{n} (differs)")
                    }
                }
                None => "-".into(),
            }
        };
        let rss = row.rss();
        let (time, ratio) = match (row.build(), o.timed_out) {
            (Some(b), _) => (fmt_secs(b), fmt_ratio(b, prr_build)),
            (None, true) => match o.last_progress.as_ref().and_then(extrapolate) {
                Some((est, done, of)) => (
                    format!(
                        "> {} s cap ({done} of {of} instances); extrapolated ~{}",
                        cli.cap.cap_secs,
                        fmt_secs(est)
                    ),
                    format!(
                        "> {} (extrapolated ~{})",
                        fmt_ratio(cli.cap.cap_secs as f64, prr_build),
                        fmt_ratio(est, prr_build)
                    ),
                ),
                None => (
                    format!("> {} s cap (no instance finished)", cli.cap.cap_secs),
                    format!("> {}", fmt_ratio(cli.cap.cap_secs as f64, prr_build)),
                ),
            },
            (None, false) => (o.failure(), String::new()),
        };
        let system = if row.note.is_empty() {
            row.system.clone()
        } else {
            format!("{} ({})", row.system, row.note)
        };
        t.row(vec![
            system,
            time,
            ratio,
            o.num("parse").map(fmt_secs).unwrap_or_default(),
            rss.map(fmt_bytes).unwrap_or_default(),
            rss.map(|r| format!("{:.0} B", r / memberships))
                .unwrap_or_default(),
            count("ban_intents"),
            count("member_matches"),
            count("acl_deny"),
        ]);
    }
    println!("{}", t.render());
    println!(
        "Counts marked \"(differs)\" disagree with prr. The plain-Rust peers compute the spec's semantics and must \
         agree; matrix-protection-suite differs by design (see docs/replicas.md, **Differs**: it does not match \
         hashed rules, and matches server rules against the whole user ID).\n"
    );
    drop(tmp);
    Ok(())
}

/// The run with the median build time (the lower median for an even count).
fn median_run(mut outcomes: Vec<ChildOutcome>) -> Option<ChildOutcome> {
    outcomes.sort_by(|a, b| {
        let key = |o: &ChildOutcome| o.num("build").unwrap_or(f64::INFINITY);
        key(a).total_cmp(&key(b))
    });
    let mid = outcomes.len().saturating_sub(1) / 2;
    outcomes.into_iter().nth(mid)
}
