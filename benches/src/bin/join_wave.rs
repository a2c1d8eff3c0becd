//! W4 join waves (issue 6): on W1's state (the workload ingested), membership joins offered
//! open-loop at fixed rates, through the embedded API ([`Matrix`]) and through `prr stream` as
//! a child process; and the naive from-scratch recomputation for one change.
//!
//! Open loop: join `i` of a rate `r` is due at `start + i / r`, whatever happened before it;
//! its latency is the time its result is out (embedded: `ingest_many` returned, every replica
//! final through its `Seq`; stream: its `room_members` delta read from `prr stream`'s standard
//! output) minus that scheduled time, so time spent queueing counts.
//!
//! - The embedded driver takes every join that is due when it is free (at most `--max-batch`)
//!   and ingests them with one `Matrix::ingest_many`: one source delta (`Seq`) per join, one
//!   durable commit (group commit) per batch, then steps until the batch is final.
//! - `prr stream` reads the lines a writer thread writes at their scheduled times; lines that
//!   arrived together form one source delta (its own batching, `--max-batch`); a reader
//!   thread timestamps its output lines.
//!
//! When the offered load runs more than `--max-lag` seconds behind schedule, the driver stops
//! offering (the row says how many joins were offered), and higher rates are skipped.
//!
//! ```text
//! cargo run --release -p prr-benches --bin join_wave -- --size small
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use prr_benches::drive::ingest_dir;
use prr_benches::harness::args::{
    IngestArgs, MemoryArgs, StoreArgs, WorkDirArgs, WorkersArgs, WorkloadArgs, skipped,
};
use prr_benches::harness::child::{
    ChildArgs, Children, emit_progress, emit_result, read_stderr_tail,
};
use prr_benches::harness::table::{
    Table, fmt_ratio, fmt_secs, fmt_secs_or_dash as ms, heading, verdict,
};
use prr_benches::measure::{load_average, machine_line, secs};
use prr_benches::waves::{Joins, latency_summary, median, prr_binary};
use prr_benches::{Matching, NaiveState, Size, item_to_json};
use prr_replicas::{Matrix, SourceItem};
use serde_json::{Value, json};

/// W4 join waves: embedded API and `prr stream`, open loop at fixed rates.
#[derive(Debug, Parser)]
#[command(name = "join_wave")]
struct Cli {
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    workers: WorkersArgs,
    /// Offered rates, joins per second, in increasing order.
    #[arg(long, value_delimiter = ',', default_value = "100,300,1000,3000,10000")]
    rates: Vec<f64>,
    /// Seconds each rate is offered (default: 2 at small, 4 otherwise).
    #[arg(long)]
    secs: Option<f64>,
    /// At most this many joins in one batch (embedded) or one source delta (`prr stream`).
    #[arg(long, default_value_t = 4096)]
    max_batch: usize,
    /// Stop offering a rate once the driver is this many seconds behind schedule.
    #[arg(long, default_value_t = 3.0)]
    max_lag: f64,
    /// Repetitions of the naive recomputation of one change.
    #[arg(long)]
    naive_reps: Option<usize>,
    /// Systems to leave out: `embedded`, `stream`, `naive`.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    #[command(flatten)]
    memory: MemoryArgs,
    #[command(flatten)]
    work: WorkDirArgs,
    /// A child measurement (internal).
    #[command(subcommand)]
    child: Option<Child>,
}

#[derive(Debug, clap::Args)]
struct WaveArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[arg(long, value_delimiter = ',')]
    rates: Vec<f64>,
    #[arg(long)]
    secs: f64,
    #[arg(long)]
    max_batch: usize,
    #[arg(long)]
    max_lag: f64,
}

#[derive(Debug, Subcommand)]
enum Child {
    /// Fresh store: ingest every file, then a clean shutdown.
    #[command(hide = true)]
    Ingest(IngestArgs),
    /// The waves through the embedded API.
    #[command(hide = true)]
    Embedded(WaveArgs),
    /// The waves through `prr stream`.
    #[command(hide = true)]
    Stream(WaveArgs),
    /// The naive recomputation of one change.
    #[command(hide = true)]
    Naive {
        #[command(flatten)]
        workload: WorkloadArgs,
        #[arg(long)]
        reps: usize,
    },
}

/// The latencies of one rate, as a JSON object for the parent.
fn rate_result(rate: f64, planned: usize, offered: usize, lat: Vec<f64>, extra: Value) -> Value {
    let completed = lat.len();
    let mut m = latency_summary(lat);
    if let Value::Object(e) = json!({
        "rate": rate, "planned": planned, "offered": offered, "completed": completed,
    }) {
        m.extend(e);
    }
    if let Value::Object(e) = extra {
        m.extend(e);
    }
    Value::Object(m)
}

/// Joins sent one at a time before the first rate (not measured).
const WARMUP: u64 = 20;

fn due(start: Instant, i: usize, rate: f64) -> Instant {
    start + Duration::from_secs_f64(i as f64 / rate)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn run_embedded(a: &WaveArgs) -> anyhow::Result<()> {
    let (_, w) = a.workload.generate();
    let mut joins = Joins::new(&w, a.workload.seed);
    let t = Instant::now();
    let mut m = Matrix::start(a.store.config().with_revision_on_shutdown(false))?;
    let bans_id = m.runtime().replica("member_bans")?;
    let bans = m.runtime().subscribe(bans_id)?;
    m.runtime().sync()?;
    // The first join, then warm-up joins, one at a time, not measured.
    m.ingest(&[joins.next_join()])?;
    let ready = secs(t);
    for _ in 1..WARMUP {
        m.ingest(&[joins.next_join()])?;
    }
    let _ = bans.try_iter().count();
    let mut rates = Vec::new();
    for &rate in &a.rates {
        let planned = (rate * a.secs).round() as usize;
        let events: Vec<SourceItem> = (0..planned).map(|_| joins.next_join()).collect();
        let mut lat = Vec::with_capacity(planned);
        let (mut batches, mut largest, mut ban_updates) = (0usize, 0usize, 0usize);
        let start = Instant::now() + Duration::from_millis(20);
        let mut i = 0;
        let mut busy = 0.0;
        // (seconds in ingest_many, joins, last Seq) of batches slower than 50 ms.
        let mut slow: Vec<(f64, usize, u64)> = Vec::new();
        while i < planned {
            sleep_until(due(start, i, rate));
            let now = Instant::now();
            if now.duration_since(due(start, i, rate)).as_secs_f64() > a.max_lag {
                break;
            }
            let mut j = i;
            while j < planned && j - i < a.max_batch && due(start, j, rate) <= now {
                j += 1;
            }
            let batch: Vec<Vec<SourceItem>> =
                events[i..j].iter().map(|e| vec![e.clone()]).collect();
            let t0 = Instant::now();
            let seqs = m.ingest_many(&batch)?;
            let done = Instant::now();
            let took = (done - t0).as_secs_f64();
            busy += took;
            if took > 0.05 {
                slow.push((took, j - i, seqs.last().map(|s| s.0).unwrap_or(0)));
            }
            for k in i..j {
                lat.push((done - due(start, k, rate)).as_secs_f64());
            }
            ban_updates += bans.try_iter().map(|d| d.updates.len()).sum::<usize>();
            batches += 1;
            largest = largest.max(j - i);
            i = j;
        }
        let offered = i;
        let r = rate_result(
            rate,
            planned,
            offered,
            lat,
            json!({"batches": batches, "mean_batch": offered as f64 / batches.max(1) as f64,
                   "largest_batch": largest, "busy": busy, "ban_updates": ban_updates,
                   "slow_batches": slow.len(),
                   "slowest_batch": slow.iter().map(|s| s.0).fold(0.0, f64::max),
                   "slow": slow.iter().take(20).map(|(t, n, seq)| json!([t, n, seq])).collect::<Vec<_>>()}),
        );
        emit_progress(r.clone());
        let overloaded = offered < planned;
        rates.push(r);
        if overloaded {
            break;
        }
    }
    emit_result(json!({"ready": ready, "rates": rates, "last_seq": m.runtime().last_seq().0}));
    Ok(())
}

fn run_stream(a: &WaveArgs) -> anyhow::Result<()> {
    let (_, w) = a.workload.generate();
    let mut joins = Joins::new(&w, a.workload.seed);
    let prr = prr_binary()?;
    let t = Instant::now();
    let mut child = Command::new(&prr)
        .arg("--store")
        .arg(&a.store.store)
        .args(["--workers", &a.store.workers.to_string(), "stream"])
        .args(["--emit", "room_members,member_bans"])
        .args(["--max-batch", &a.max_batch.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", prr.display()))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let err_reader = read_stderr_tail(child.stderr.take().expect("piped stderr"), false);
    // The reader thread: (join key, time its room_members delta was read), or a ban update.
    enum Out {
        Member(String, Instant),
        Ban,
    }
    let (tx, rx) = mpsc::channel::<Out>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let now = Instant::now();
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let msg = match v["replica"].as_str() {
                Some("room_members") if v["diff"] == 1 => {
                    match v["record"]["displayname"].as_str() {
                        Some(name) => Out::Member(name.to_string(), now),
                        None => continue,
                    }
                }
                Some("member_bans") => Out::Ban,
                _ => continue,
            };
            if tx.send(msg).is_err() {
                break;
            }
        }
    });
    let mut input = std::io::BufWriter::new(stdin);
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let mut ban_updates = 0usize;
    let wait_for = |keys: &[String],
                    seen: &mut HashMap<String, Instant>,
                    bans: &mut usize,
                    limit: Duration|
     -> usize {
        let deadline = Instant::now() + limit;
        let mut missing = keys.iter().filter(|k| !seen.contains_key(*k)).count();
        while missing > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Out::Member(k, at)) => {
                    if keys.contains(&k) && !seen.contains_key(&k) {
                        missing -= 1;
                    }
                    seen.insert(k, at);
                }
                Ok(Out::Ban) => *bans += 1,
                Err(_) => break,
            }
        }
        missing
    };
    // Warm-up: the dataflow is restored when the first line arrives; wait for its delta, then
    // for more joins one at a time, not measured.
    let mut ready = f64::NAN;
    for k in 0..WARMUP {
        writeln!(input, "{}", item_to_json(&joins.next_join()))?;
        input.flush()?;
        if wait_for(
            &[Joins::key(k)],
            &mut seen,
            &mut ban_updates,
            Duration::from_secs(1800),
        ) > 0
        {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "prr stream never answered warm-up join {k}: {}",
                err_reader.join().unwrap_or_default()
            );
        }
        if k == 0 {
            ready = secs(t);
        }
    }
    let mut rates = Vec::new();
    let mut next_key = WARMUP;
    for &rate in &a.rates {
        let planned = (rate * a.secs).round() as usize;
        let lines: Vec<String> = (0..planned)
            .map(|_| item_to_json(&joins.next_join()).to_string())
            .collect();
        let keys: Vec<String> = (0..planned as u64)
            .map(|k| Joins::key(next_key + k))
            .collect();
        next_key += planned as u64;
        ban_updates = 0;
        let start = Instant::now() + Duration::from_millis(20);
        let mut i = 0;
        while i < planned {
            sleep_until(due(start, i, rate));
            let now = Instant::now();
            if now.duration_since(due(start, i, rate)).as_secs_f64() > a.max_lag {
                break;
            }
            while i < planned && due(start, i, rate) <= now {
                input.write_all(lines[i].as_bytes())?;
                input.write_all(b"\n")?;
                i += 1;
            }
            input.flush()?;
        }
        let offered = i;
        let missing = wait_for(
            &keys[..offered],
            &mut seen,
            &mut ban_updates,
            Duration::from_secs(600),
        );
        let lat: Vec<f64> = (0..offered)
            .filter_map(|k| {
                seen.get(&keys[k])
                    .map(|at| at.duration_since(due(start, k, rate)).as_secs_f64())
            })
            .collect();
        let r = rate_result(
            rate,
            planned,
            offered,
            lat,
            json!({"missing": missing, "ban_updates": ban_updates}),
        );
        emit_progress(r.clone());
        rates.push(r);
        if offered < planned || missing > 0 {
            break;
        }
    }
    // Our own child: no clean shutdown (it would capture revisions), it has answered everything.
    let _ = child.kill();
    let _ = child.wait();
    drop(input);
    let _ = reader.join();
    let _ = err_reader.join();
    emit_result(json!({"ready": ready, "rates": rates}));
    Ok(())
}

fn run_naive(workload: &WorkloadArgs, reps: usize) -> anyhow::Result<()> {
    let (_, w) = workload.generate();
    let mut state = NaiveState::new();
    for f in w.files() {
        state.apply(&f.items);
    }
    let mut joins = Joins::new(&w, workload.seed);
    let mut times = Vec::new();
    let mut bans = 0;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        state.apply(&[joins.next_join()]);
        let out = state.compute(Matching::Indexed, |_, _| true);
        times.push(secs(t));
        bans = out.member_bans;
    }
    emit_result(json!({"times": times, "median": median(times.clone()), "member_bans": bans}));
    Ok(())
}

fn run_as_child(c: Child) -> anyhow::Result<()> {
    match c {
        Child::Ingest(IngestArgs { dir, store }) => {
            let mut m = Matrix::start(store.config())?;
            let t = ingest_dir(&mut m, &dir, 0)?;
            m.shutdown()?;
            emit_result(json!({"parse": t.parse, "ingest": t.ingest}));
            Ok(())
        }
        Child::Embedded(a) => run_embedded(&a),
        Child::Stream(a) => run_stream(&a),
        Child::Naive { workload, reps } => run_naive(&workload, reps),
    }
}

/// Per rate: the rows of one system's table; returns the highest rate with p99 < 100 ms.
fn wave_table(out: &Value, embedded: bool) -> (Table, Option<f64>) {
    let mut headers = vec![
        "offered rate (joins/s)",
        "joins offered / planned",
        "p50",
        "p99",
        "p999",
        "max",
        "member_bans updates",
    ];
    if embedded {
        headers.extend([
            "batches",
            "mean batch",
            "largest batch",
            "busy",
            "batches > 50 ms",
            "slowest batch",
        ]);
    }
    let mut t = Table::new(&headers);
    let mut best = None;
    for r in out["rates"].as_array().into_iter().flatten() {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let complete = r["offered"] == r["planned"] && r["completed"] == r["offered"];
        if complete && f("p99") < 0.1 {
            best = Some(f("rate"));
        }
        let mut row = vec![
            format!("{}", f("rate")),
            format!(
                "{} / {}{}",
                r["offered"],
                r["planned"],
                if complete { "" } else { " (overloaded)" }
            ),
            ms(f("p50")),
            ms(f("p99")),
            ms(f("p999")),
            ms(f("max")),
            r["ban_updates"].to_string(),
        ];
        if embedded {
            row.extend([
                r["batches"].to_string(),
                format!("{:.1}", f("mean_batch")),
                r["largest_batch"].to_string(),
                ms(f("busy")),
                r["slow_batches"].to_string(),
                ms(f("slowest_batch")),
            ]);
        }
        t.row(row);
    }
    (t, best)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(c) = cli.child {
        return run_as_child(c);
    }
    let size = cli.workload.size;
    let wave_secs = cli
        .secs
        .unwrap_or(if size == Size::Small { 2.0 } else { 4.0 });
    let naive_reps = cli.naive_reps.unwrap_or(match size {
        Size::Small => 5,
        Size::Medium => 3,
        Size::Large => 1,
    });
    let (config, workload) = cli.workload.generate();
    let tmp = tempfile::tempdir()?;
    let work = cli.work.prepare(tmp.path())?;
    let dir = cli.workload.prepare_in("join_wave", &workload, &work)?;
    let base = work.join("join-wave-base.redb");
    let _ = std::fs::remove_file(&base);
    let workers = cli.workers.workers;
    let children = Children::new("join_wave", cli.memory.uncapped());
    let ingest = children.result(
        &ChildArgs::new("ingest")
            .path("--dir", &dir)
            .store(&base, workers),
        "ingest W1 (the workload) into the base store",
    )?;
    let wave_args = |sub: &str, store: &Path| {
        ChildArgs::new(sub)
            .store(store, workers)
            .workload(size, cli.workload.seed)
            .list("--rates", &cli.rates)
            .opt("--secs", wave_secs)
            .opt("--max-batch", cli.max_batch)
            .opt("--max-lag", cli.max_lag)
    };
    let run_wave = |sub: &str| -> anyhow::Result<Value> {
        let copy = work.join(format!("join-wave-{sub}.redb"));
        std::fs::copy(&base, &copy)?;
        let out = children.result(&wave_args(sub, &copy), &format!("W4 through {sub}"))?;
        std::fs::remove_file(&copy)?;
        Ok(out.result.unwrap_or(Value::Null))
    };
    let skip = |s: &str| skipped(&cli.skip, s);
    let embedded = if skip("embedded") {
        None
    } else {
        Some(run_wave("embedded")?)
    };
    let stream = if skip("stream") {
        None
    } else {
        Some(run_wave("stream")?)
    };
    let naive = if skip("naive") {
        None
    } else {
        let out = children.result(
            &ChildArgs::new("naive")
                .workload(size, cli.workload.seed)
                .opt("--reps", naive_reps),
            "naive recomputation of one change",
        )?;
        out.result
    };

    println!(
        "{}\n",
        heading(
            "W4 join waves",
            size,
            &workload,
            config.instances,
            false,
            workers
        )
    );
    println!(
        "Machine: {}. Load average at the end: {}. Each rate offered open-loop for {} s (joins due at start + i/rate); latency from the scheduled time. W1 ingest (base store): {}.\n",
        machine_line(),
        load_average(),
        wave_secs,
        fmt_secs(ingest.num("ingest").unwrap_or(f64::NAN))
    );
    let mut summary = Table::new(&[
        "system",
        "ready (restore + first join)",
        "highest rate with p99 < 100 ms",
    ]);
    let mut single: Option<(f64, f64)> = None;
    for (name, out, emb) in [
        (
            "embedded API (`Matrix::ingest_many`, one `Seq` per join, one commit per batch)",
            &embedded,
            true,
        ),
        (
            "`prr stream` child process (one `Seq` per batch of lines)",
            &stream,
            false,
        ),
    ] {
        let Some(out) = out else { continue };
        let (t, best) = wave_table(out, emb);
        println!("### {name}\n\n{}", t.render());
        summary.row(vec![
            name.into(),
            ms(out["ready"].as_f64().unwrap_or(f64::NAN)),
            best.map(|b| format!("{b} joins/s"))
                .unwrap_or_else(|| "none".into()),
        ]);
        if emb && let Some(first) = out["rates"].as_array().and_then(|a| a.first()) {
            single = Some((
                first["p50"].as_f64().unwrap_or(f64::NAN),
                first["p99"].as_f64().unwrap_or(f64::NAN),
            ));
        }
    }
    println!("{}", summary.render());
    if let Some(n) = &naive {
        let naive_t = n["median"].as_f64().unwrap_or(f64::NAN);
        let mut t = Table::new(&["single change (one join)", "latency", "naive / this"]);
        t.row(vec![
            format!(
                "naive plain-Rust recomputation from scratch (per-instance hash maps + glob scan), median of {naive_reps}"
            ),
            ms(naive_t),
            "1.00x".into(),
        ]);
        if let Some((p50, p99)) = single {
            let rate = cli.rates.first().copied().unwrap_or(f64::NAN);
            t.row(vec![
                format!("prr embedded, p50 at {rate} joins/s"),
                ms(p50),
                fmt_ratio(naive_t, p50),
            ]);
            t.row(vec![
                format!("prr embedded, p99 at {rate} joins/s"),
                ms(p99),
                fmt_ratio(naive_t, p99),
            ]);
            println!("{}", t.render());
            println!(
                "Target \"W4 single changes: at least 100x lower latency than the naive recomputation\": {} at p50 ({} vs {}), {} at p99.\n",
                verdict(naive_t / p50 >= 100.0),
                ms(p50),
                ms(naive_t),
                verdict(naive_t / p99 >= 100.0),
            );
        } else {
            println!("{}", t.render());
        }
    }
    drop(tmp);
    Ok(())
}
