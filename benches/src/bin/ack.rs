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
use prr_benches::harness::args::{StoreArgs, WorkDirArgs, WorkersArgs, WorkloadArgs};
use prr_benches::harness::child::{ChildArgs, Children, Limits, emit_result};
use prr_benches::harness::table::{Table, fmt_ratio, fmt_secs, heading, verdict};
use prr_benches::measure::{load_average, machine_line, secs};
use prr_benches::waves::{Joins, latency_summary};
use prr_replicas::{Ingestor, Matrix, Rec};
use serde_json::{Value, json};

/// Durable acknowledgement of one source delta versus one fsync.
#[derive(Debug, Parser)]
#[command(name = "ack")]
struct Cli {
    // The workload: the state the deltas are added to.
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    workers: WorkersArgs,
    /// Repetitions (each: one fsync, one source delta).
    #[arg(long, default_value_t = 1000)]
    reps: usize,
    #[command(flatten)]
    work: WorkDirArgs,
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
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        workload: WorkloadArgs,
        #[arg(long)]
        reps: usize,
    },
}

fn stats(v: Vec<f64>) -> Value {
    Value::Object(latency_summary(v))
}

fn measure(
    dir: &Path,
    store: &StoreArgs,
    workload: &WorkloadArgs,
    reps: usize,
) -> anyhow::Result<()> {
    let mut m = Matrix::start(store.config().with_revision_on_shutdown(false))?;
    let t = Instant::now();
    ingest_dir(&mut m, dir, 0)?;
    let ingest = secs(t);
    let (_, w) = workload.generate();
    let mut joins = Joins::new(&w, workload.seed);
    // The ingest state, as `Matrix` keeps it, to push source deltas one by one.
    let rt = m.runtime();
    let rs = rt.replica("room_state")?;
    let inst = rt.replica("instances")?;
    let mut contents: Vec<Rec> = rt.read(rs, None)?.into_iter().map(|(r, _)| r).collect();
    contents.extend(rt.read(inst, None)?.into_iter().map(|(r, _)| r));
    let mut ingestor = Ingestor::new(rs, inst, contents);
    // One fsync: 4 KiB into a preallocated file beside the store (no size change).
    let probe_path = store.store.with_extension("fsync-probe");
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
        workload,
        reps,
    }) = cli.child
    {
        return measure(&dir, &store, &workload, reps);
    }
    let (config, workload) = cli.workload.generate();
    let tmp = tempfile::tempdir()?;
    let work = cli.work.prepare(tmp.path())?;
    let dir = cli.workload.prepare_in("ack", &workload, &work)?;
    let store = work.join("ack.redb");
    let _ = std::fs::remove_file(&store);
    let workers = cli.workers.workers;
    let args = ChildArgs::new("measure")
        .path("--dir", &dir)
        .store(&store, workers)
        .workload(cli.workload.size, cli.workload.seed)
        .opt("--reps", cli.reps);
    let out = Children::new("ack", Limits::default())
        .run(&args, &format!("ingest W1, then {} repetitions", cli.reps))?;
    let _ = std::fs::remove_file(&store);
    let Some(r) = out.result.clone() else {
        bail!("ack: {}", out.failure());
    };
    let get = |a: &str, b: &str| r[a][b].as_f64().unwrap_or(f64::NAN);
    println!(
        "{}\n",
        heading(
            "Durable acknowledgement vs one fsync",
            cli.workload.size,
            &workload,
            config.instances,
            false,
            workers
        )
    );
    println!(
        "Machine: {}. Load average at the end: {}. {} repetitions after 20 of warm-up, interleaved (one fsync, one source delta), on a store holding the workload (ingest {}).\n",
        machine_line(),
        load_average(),
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
        verdict(ratio <= 2.0),
        fmt_secs(get("ack", "p99")),
        fmt_ratio(get("ack", "p99"), fsync_p99),
        fmt_secs(fsync_p99),
        fmt_ratio(get("ack", "p50"), get("fsync", "p50")),
    );
    drop(tmp);
    Ok(())
}
