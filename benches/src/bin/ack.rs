//! Durable acknowledgement versus one fsync (issue 6): on W1's state (the workload ingested),
//! the latency of one small source delta (one membership join) until `Runtime::push` returns
//! (committed to redb: durable) and until every replica is final through it, beside one fsync
//! of this machine (4 KiB written into a preallocated temporary file in the store's directory,
//! then `File::sync_data`). The two are measured interleaved, one of each per repetition, in
//! one child process, so both see the same disk and load.
//!
//! ```text
//! cargo run --release -p prr-benches --bin ack -- --size small
//! ```

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use clap::{Parser, Subcommand};
use prr_benches::drive::ingest_dir;
use prr_benches::measure::{
    Limits, Table, emit_result, fmt_ratio, fmt_secs, machine_line, run_child, secs, self_command,
};
use prr_benches::waves::{Joins, percentile};
use prr_benches::{Size, Workload, WorkloadConfig, list_files};
use prr_engine::RuntimeConfig;
use prr_replicas::{Ingestor, Matrix, Rec};
use serde_json::{Value, json};

/// Durable acknowledgement of one source delta versus one fsync.
#[derive(Debug, Parser)]
#[command(name = "ack")]
struct Cli {
    /// The workload size (the state the deltas are added to).
    #[arg(long, value_enum, default_value_t = Size::Small)]
    size: Size,
    /// Timely workers (1 or 2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=2))]
    workers: u64,
    /// The workload's seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Repetitions (each: one fsync, one source delta).
    #[arg(long, default_value_t = 1000)]
    reps: usize,
    /// Where the workload and the store go (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// A child measurement (internal).
    #[command(subcommand)]
    child: Option<Child>,
}

#[derive(Debug, Subcommand)]
enum Child {
    /// Ingest the workload, then measure.
    #[command(hide = true)]
    Measure {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        workers: u64,
        #[arg(long, value_enum)]
        size: Size,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        reps: usize,
    },
}

fn stats(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({"p50": percentile(&v, 50.0), "p99": percentile(&v, 99.0),
           "p999": percentile(&v, 99.9), "max": v.last().copied().unwrap_or(f64::NAN), "n": v.len()})
}

fn measure(
    dir: &Path,
    store: &Path,
    workers: u64,
    size: Size,
    seed: u64,
    reps: usize,
) -> anyhow::Result<()> {
    let mut m = Matrix::start(
        RuntimeConfig::new()
            .with_store(store)
            .with_workers(workers as usize)
            .with_revision_on_shutdown(false),
    )?;
    let t = Instant::now();
    ingest_dir(&mut m, dir, 0)?;
    let ingest = secs(t);
    let w = Workload::generate(&WorkloadConfig::for_size(size).with_seed(seed));
    let mut joins = Joins::new(&w, seed);
    // The ingest state, as `Matrix` keeps it, to push source deltas one by one.
    let rt = m.runtime();
    let rs = rt.replica("room_state")?;
    let inst = rt.replica("instances")?;
    let mut contents: Vec<Rec> = rt.read(rs, None)?.into_iter().map(|(r, _)| r).collect();
    contents.extend(rt.read(inst, None)?.into_iter().map(|(r, _)| r));
    let mut ingestor = Ingestor::new(rs, inst, contents);
    // One fsync: 4 KiB into a preallocated file beside the store (no size change).
    let probe_path = store.with_extension("fsync-probe");
    let mut probe = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&probe_path)?;
    const SLOTS: u64 = 256;
    probe.write_all(&vec![0u8; (SLOTS * 4096) as usize])?;
    probe.sync_all()?;
    let block = vec![0xa5u8; 4096];
    let (mut fsync, mut ack, mut fin) = (Vec::new(), Vec::new(), Vec::new());
    let warmup = 20;
    for i in 0..reps + warmup {
        let t = Instant::now();
        probe.seek(SeekFrom::Start((i as u64 % SLOTS) * 4096))?;
        probe.write_all(&block)?;
        probe.sync_data()?;
        let f = secs(t);
        let item = joins.next_join();
        let t = Instant::now();
        let dict = rt.dictionary().clone();
        let mut prepared = ingestor.prepare(&dict, &[item]);
        let delta = std::mem::take(&mut prepared.delta);
        let seq = rt.push(delta)?;
        ingestor.commit(prepared);
        let a = secs(t);
        rt.step_until(seq)?;
        let d = secs(t);
        if i >= warmup {
            fsync.push(f);
            ack.push(a);
            fin.push(d);
        }
    }
    drop(probe);
    std::fs::remove_file(&probe_path)?;
    let last_seq = rt.last_seq().0;
    emit_result(json!({
        "ingest": ingest, "fsync": stats(fsync), "ack": stats(ack), "final": stats(fin),
        "last_seq": last_seq,
    }));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Child::Measure {
        dir,
        store,
        workers,
        size,
        seed,
        reps,
    }) = cli.child
    {
        return measure(&dir, &store, workers, size, seed, reps);
    }
    let config = WorkloadConfig::for_size(cli.size).with_seed(cli.seed);
    let workload = Workload::generate(&config);
    let tmp = tempfile::tempdir()?;
    let work = cli
        .work_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let dir = work.join(format!("workload-{}-{}", cli.size.name(), cli.seed));
    if !dir.exists() || list_files(&dir)?.is_empty() {
        eprintln!("ack: generating the workload into {}", dir.display());
        workload.write(&dir)?;
    }
    let store = work.join("ack.redb");
    let _ = std::fs::remove_file(&store);
    eprintln!("ack: ingest W1, then {} repetitions", cli.reps);
    let mut cmd = self_command()?;
    cmd.arg("measure")
        .arg("--dir")
        .arg(&dir)
        .arg("--store")
        .arg(&store)
        .args(["--workers", &cli.workers.to_string()])
        .args(["--size", cli.size.name()])
        .args(["--seed", &cli.seed.to_string()])
        .args(["--reps", &cli.reps.to_string()]);
    let out = run_child(cmd, Limits::default(), true)?;
    let _ = std::fs::remove_file(&store);
    let Some(r) = out.result.clone() else {
        bail!("ack: {}", out.failure());
    };
    let get = |a: &str, b: &str| r[a][b].as_f64().unwrap_or(f64::NAN);
    println!(
        "## Durable acknowledgement vs one fsync: size {} ({} rules, {} membership records, {} instances), {} worker(s)\n",
        cli.size.name(),
        workload.rules(),
        workload.memberships(),
        config.instances,
        cli.workers
    );
    println!(
        "Machine: {}. Load average at the end: {}. {} repetitions after 20 of warm-up, interleaved (one fsync, one source delta), on a store holding the workload (ingest {}).\n",
        machine_line(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        cli.reps,
        fmt_secs(r["ingest"].as_f64().unwrap_or(f64::NAN)),
    );
    let fsync_p99 = get("fsync", "p99");
    let mut t = Table::new(&[
        "measurement",
        "p50",
        "p99",
        "p999",
        "max",
        "p99 / fsync p99",
    ]);
    for (key, label) in [
        (
            "fsync",
            "one fsync: write 4 KiB + `File::sync_data` (preallocated file, store's directory)",
        ),
        (
            "ack",
            "**prr durable acknowledgement**: one-join source delta prepared and `Runtime::push` returned (committed to redb)",
        ),
        (
            "final",
            "prr: the same delta final in every replica (`step_until`)",
        ),
    ] {
        t.row(vec![
            label.into(),
            fmt_secs(get(key, "p50")),
            fmt_secs(get(key, "p99")),
            fmt_secs(get(key, "p999")),
            fmt_secs(get(key, "max")),
            fmt_ratio(get(key, "p99"), fsync_p99),
        ]);
    }
    println!("{}", t.render());
    let ratio = get("ack", "p99") / fsync_p99;
    println!(
        "Target \"durable acknowledgement p99 within 2x of one fsync\": {} (ack p99 {} = {} of fsync p99 {}; p50: {}).\n",
        if ratio <= 2.0 { "met" } else { "not met" },
        fmt_secs(get("ack", "p99")),
        fmt_ratio(get("ack", "p99"), fsync_p99),
        fmt_secs(fsync_p99),
        fmt_ratio(get("ack", "p50"), get("fsync", "p50")),
    );
    drop(tmp);
    Ok(())
}
