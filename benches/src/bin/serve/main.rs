//! `prr serve` (issue 16): the real binary in a child process, driven over HTTP.
//!
//! 1. **synapse**: `prr serve` as the appservice of a real local Synapse (SQLite, no rate
//!    limits): from a state event sent to Synapse (a join matching a ban rule, a new ban rule)
//!    until its ban is a delta of `member_bans` (`GET .../deltas?since=SEQ&wait=S`), and the
//!    appservice transactions and events per second while users join from several threads.
//!    Skipped, with the reason printed, when the Synapse venv is missing.
//! 2. **api**: `GET /v1/replicas/member_bans?partition=INSTANCE` on the workload, with and
//!    without a join wave ingested through `POST /v1/ingest` at a fixed rate.
//! 3. **restart**: `prr serve` on the store after a clean stop, until it answers a read with
//!    the right rows and until a first new delta is durable, beside `prr show`.
//! 4. **capture**: a steady stream of `POST /v1/ingest` with periodic revision capture
//!    (`--revision-interval`) and without: the longest stall and the p99.
//! 5. **compact**: the same stream with periodic compaction in process (`--compact-every`)
//!    and without: the longest stall, each compaction's logged seconds, and the service's
//!    resident memory just before and just after each.
//!
//! The workload is loaded by `prr ingest` of its files into a store (a clean stop); each part
//! runs on its own copy. Prints markdown tables.
//!
//! ```text
//! cargo run --release -p prr-benches --bin serve -- --size small
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use prr_benches::Size;
use prr_benches::harness::args::{DirArgs, WorkDirArgs, WorkloadArgs, skipped};
use prr_benches::harness::table::{fmt_bytes, fmt_secs, heading};
use prr_benches::measure::{disk_size, load_average, machine_line, secs};
use prr_benches::waves::prr_binary;

mod api;
mod capture;
mod compact;
mod restart;
mod server;
mod stream;
mod synapse;

/// `prr serve` through Synapse and through its API: latency, throughput, restart, stalls.
#[derive(Debug, Parser)]
#[command(name = "serve")]
struct Cli {
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    dir: DirArgs,
    #[command(flatten)]
    work: WorkDirArgs,
    /// Parts to skip: synapse, api, restart, capture, compact.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Join rates (per second) of the waves ingested while reading (api).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    wave_rates: Vec<f64>,
    /// Reads per measurement (api; default by size: 200, 1000, 1000).
    #[arg(long)]
    reads: Option<usize>,
    /// Restarts (restart; the table shows medians).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Rate of the ingest streams (capture, compact), per second.
    #[arg(long, default_value_t = 100.0)]
    capture_rate: f64,
    /// `--revision-interval` of the capturing run, in seconds (default by size: 2, 3, 10).
    #[arg(long)]
    capture_interval: Option<u64>,
    /// How long each ingest stream runs, in seconds (capture; default by size: 8, 20, 45).
    #[arg(long)]
    capture_secs: Option<u64>,
    /// `--compact-every` of the compacting run, in seconds (default by size: 2, 6, 15).
    #[arg(long)]
    compact_every: Option<u64>,
    /// How long each ingest stream runs, in seconds (compact; default by size: 6, 20, 45).
    #[arg(long)]
    compact_secs: Option<u64>,
    /// Latency samples of each kind (synapse; default by size: 5, 30, 100).
    #[arg(long)]
    samples: Option<usize>,
    /// Users joining for the throughput (synapse; default by size: 24, 120, 400).
    #[arg(long)]
    joiners: Option<usize>,
    /// Seconds of joins at 100/s before the reads (api) and streams (capture, compact) are measured,
    /// after a first ingest restored the dataflow (default by size: 1, 5, 10).
    #[arg(long)]
    warmup_secs: Option<u64>,
}

/// What every part runs on.
pub struct Setup {
    /// The `prr` binary.
    pub prr: PathBuf,
    /// Where the stores go.
    pub work: PathBuf,
    /// The workload's directory.
    pub dir: PathBuf,
    /// The workload's store after `prr ingest` (a clean stop).
    pub base: PathBuf,
    /// The workload (its plan: joins are drawn from its users and rooms).
    pub workload: prr_benches::Workload,
    /// The workload's seed.
    pub seed: u64,
    /// Seconds of joins at 100/s before the reads and the ingest streams are measured.
    pub warmup: u64,
}

/// Runs `prr --store STORE ingest ARGS...`; fails with its standard error.
pub fn prr_ingest(prr: &Path, store: &Path, args: &[PathBuf]) -> anyhow::Result<()> {
    let out = Command::new(prr)
        .arg("--store")
        .arg(store)
        .arg("ingest")
        .args(args)
        .env_remove("PRR_STORE")
        .output()
        .with_context(|| format!("cannot run {}", prr.display()))?;
    if !out.status.success() {
        bail!(
            "prr ingest into {}: {}",
            store.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn by_size<T>(size: Size, small: T, medium: T, large: T) -> T {
    match size {
        Size::Small => small,
        Size::Medium => medium,
        Size::Large => large,
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let size = cli.workload.size;
    let (config, workload) = cli.workload.generate();
    let tmp = tempfile::tempdir()?;
    let work = cli.work.prepare(tmp.path())?;
    let dir = cli.dir.prepare("serve", &cli.workload, &workload, &work)?;
    let prr = prr_binary()?;
    let base = work.join("serve-base.redb");
    let _ = std::fs::remove_file(&base);
    let t = Instant::now();
    prr_ingest(&prr, &base, std::slice::from_ref(&dir))?;
    let ingest = secs(t);
    println!(
        "{}\n",
        heading("prr serve", size, &workload, config.instances, true, 1)
    );
    println!(
        "Machine: {}. Load average at the start: {}. The workload loaded by `prr ingest DIR` into a store in {} ({}, a clean stop); every part runs `prr serve` (release, 1 worker) on its own copy, over HTTP on loopback with keep-alive connections.\n",
        machine_line(),
        load_average(),
        fmt_secs(ingest),
        fmt_bytes(disk_size(&base) as f64),
    );
    let setup = Setup {
        prr,
        work,
        dir,
        base,
        workload,
        seed: cli.workload.seed,
        warmup: cli.warmup_secs.unwrap_or(by_size(size, 1, 5, 10)),
    };
    if !skipped(&cli.skip, "synapse") {
        let o = synapse::Options {
            samples: cli.samples.unwrap_or(by_size(size, 5, 30, 100)),
            joiners: cli.joiners.unwrap_or(by_size(size, 24, 120, 400)),
        };
        synapse::run(&setup, &o)?;
    }
    if !skipped(&cli.skip, "api") {
        let reads = cli.reads.unwrap_or(by_size(size, 200, 1000, 1000));
        api::run(&setup, reads, &cli.wave_rates)?;
    }
    if !skipped(&cli.skip, "restart") {
        restart::run(&setup, cli.runs)?;
    }
    if !skipped(&cli.skip, "capture") {
        let o = capture::Options {
            rate: cli.capture_rate,
            interval: cli.capture_interval.unwrap_or(by_size(size, 2, 3, 10)),
            secs: cli.capture_secs.unwrap_or(by_size(size, 8, 20, 45)),
        };
        capture::run(&setup, &o)?;
    }
    if !skipped(&cli.skip, "compact") {
        let o = compact::Options {
            rate: cli.capture_rate,
            every: cli.compact_every.unwrap_or(by_size(size, 2, 6, 15)),
            secs: cli.compact_secs.unwrap_or(by_size(size, 6, 20, 45)),
        };
        compact::run(&setup, &o)?;
    }
    println!("Load average at the end: {}.", load_average());
    let _ = std::fs::remove_file(&setup.base);
    drop(tmp);
    Ok(())
}
