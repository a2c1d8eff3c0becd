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

mod child;
mod ops;
mod report;
mod w3_workload;
mod w5_workload;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use prr_benches::Size;
use prr_benches::Workload;
use prr_benches::harness::args::{
    CapArgs, MemoryArgs, RuntimeArgs, WorkersArgs, WorkloadArgs, skipped,
};
use prr_benches::harness::child::{
    ChildArgs, ChildOutcome, Children, exit_without_teardown, mps_command, prepare_node_peer,
};
use prr_benches::measure::{load_average, machine_line};

use crate::w3_workload::write_w3;
use crate::w5_workload::{w5_base, write_w5};

/// W3 policy fan-out and W5 idle instances, against peers.
#[derive(Debug, Parser)]
#[command(name = "fanout")]
struct Cli {
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    workers: WorkersArgs,
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
    #[command(flatten)]
    cap: CapArgs,
    #[command(flatten)]
    memory: MemoryArgs,
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
        #[command(flatten)]
        runtime: RuntimeArgs,
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

fn run_as_child(child: Child) -> anyhow::Result<()> {
    match child {
        Child::Prr { dir, ops, runtime } => child::prr(&dir, &ops, &runtime)?,
        Child::Naive { dir, ops, reps } => child::naive(&dir, &ops, reps)?,
    }
    exit_without_teardown();
}

/// The command line of a `prr` child: the workload directory, the ops, the runtime.
fn prr_args(dir: &Path, ops: &Path, workers: u64, store: Option<&Path>) -> ChildArgs {
    ChildArgs::new("prr")
        .path("--dir", dir)
        .path("--ops", ops)
        .opt("--workers", workers)
        .path_if("--store", store)
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if let Some(c) = cli.child.take() {
        return run_as_child(c);
    }
    anyhow::ensure!(
        ["draupnir", "scoped"].contains(&cli.mps_setup.as_str()),
        "--mps-setup is draupnir or scoped"
    );
    let skip = |name: &str| skipped(&cli.skip, name);
    let workers = cli.workers.workers;
    let cap = cli.memory.capped(&cli.cap);
    let children = Children::new("fanout", cli.memory.uncapped()).showing_load();
    let tmp = tempfile::tempdir()?;
    let load_start = load_average();
    let mut report = String::new();
    let size = cli.workload.size;

    if !skip("w3") {
        let mut config = cli.workload.config();
        if let Some(n) = cli.instances {
            config.instances = n;
        }
        let reps = cli.reps.unwrap_or(match size {
            Size::Small => 10,
            Size::Medium => 30,
            Size::Large => 20,
        });
        let naive_reps = cli.naive_reps.unwrap_or(match size {
            Size::Small => 3,
            Size::Medium => 5,
            Size::Large => 2,
        });
        let workload = Workload::generate(&config);
        let dir = tmp.path().join("w3");
        let ops = tmp.path().join("w3-ops.ndjson");
        eprintln!(
            "fanout: writing the {} W3 workload into {}",
            size.name(),
            dir.display()
        );
        let plan = write_w3(&workload, &dir, &ops, reps)?;
        let store = tmp.path().join("w3.redb");
        let prr = children.run(
            &prr_args(&dir, &ops, workers, Some(&store)),
            "W3: prr (store)",
        )?;
        let _ = std::fs::remove_file(&store);
        let dd = if skip("dd") {
            None
        } else {
            Some(children.run(
                &prr_args(&dir, &ops, workers, None),
                "W3: prr without a store (raw differential dataflow)",
            )?)
        };
        let naive = if skip("naive") {
            None
        } else {
            let args = ChildArgs::new("naive")
                .path("--dir", &dir)
                .path("--ops", &ops)
                .opt("--reps", naive_reps);
            Some(children.run_limited(
                &args,
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
                // Every instance keeps its revisions: above node's default heap limit at 1,000
                // instances.
                let mut cmd = mps_command(&[format!(
                    "--max-old-space-size={}",
                    (cli.memory.max_rss_gib * 1024.0) as u64
                )]);
                cmd.arg("--dir")
                    .arg(&dir)
                    .args(["--mode", "w3", "--ops"])
                    .arg(&ops)
                    .args(["--setup", &cli.mps_setup]);
                Some(children.run_command(
                    cmd,
                    cap,
                    &format!("W3: matrix-protection-suite (setup {})", cli.mps_setup),
                )?)
            }
            Err(why) => {
                eprintln!("fanout: skipping matrix-protection-suite: {why}");
                None
            }
        };

        let outcomes = report::W3Outcomes {
            prr,
            dd,
            naive,
            mps,
            mps_skipped: node.err(),
        };
        report.push_str(&report::w3(
            &cli, &workload, &plan, reps, naive_reps, &outcomes,
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    if !skip("w5") {
        let idle = if cli.idle.is_empty() {
            match size {
                Size::Small => vec![100, 1_000],
                _ => vec![1_000, 10_000],
            }
        } else {
            cli.idle.clone()
        };
        let reps = cli.w5_reps.unwrap_or(match size {
            Size::Small => 20,
            _ => 50,
        });
        let base_config = w5_base(size, cli.workload.seed);
        let base = Workload::generate(&base_config);
        let ops = tmp.path().join("w5-ops.ndjson");
        // The machine is shared: run the sizes alternately, `--w5-rounds` times, and pool the
        // samples, so that a change of load between two children does not decide the ratio.
        let rounds = cli.w5_rounds.unwrap_or(match size {
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
                let store = (!cli.w5_no_store).then_some(store.as_path());
                let o = children.run(
                    &prr_args(&dirs[k], &ops, workers, store),
                    &format!(
                        "W5: prr ({}), {n} idle instances, round {} of {rounds}",
                        if cli.w5_no_store { "no store" } else { "store" },
                        round + 1
                    ),
                )?;
                if let Some(store) = store {
                    let _ = std::fs::remove_file(store);
                }
                per_round[k].push(o);
            }
        }
        for dir in &dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        report.push_str(&report::w5(
            &cli,
            &base,
            &base_config,
            &idle,
            per_round,
            reps,
            rounds,
        ));
    }

    println!(
        "Machine: {}. Load average (1, 5, 15 min) at start: {load_start}; at end: {}. Each system in a fresh \
         process; peers capped at {} s.\n",
        machine_line(),
        load_average(),
        cli.cap.cap_secs
    );
    println!("{report}");
    drop(tmp);
    Ok(())
}
