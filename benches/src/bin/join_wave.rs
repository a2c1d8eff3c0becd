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
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use prr_benches::drive::ingest_dir;
use prr_benches::measure::{
    ChildOutcome, Limits, Table, emit_progress, emit_result, fmt_ratio, fmt_secs, machine_line,
    run_child, secs, self_command,
};
use prr_benches::waves::{Joins, median, percentile, prr_binary};
use prr_benches::{Matching, NaiveState, Size, Workload, WorkloadConfig, item_to_json, list_files};
use prr_engine::RuntimeConfig;
use prr_replicas::{Matrix, SourceItem};
use serde_json::{Value, json};

/// W4 join waves: embedded API and `prr stream`, open loop at fixed rates.
#[derive(Debug, Parser)]
#[command(name = "join_wave")]
struct Cli {
    /// The workload size.
    #[arg(long, value_enum, default_value_t = Size::Small)]
    size: Size,
    /// Timely workers (1 or 2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=2))]
    workers: u64,
    /// The workload's seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
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
    /// Memory limit of each child, in GiB.
    #[arg(long, default_value_t = 16.0)]
    max_rss_gib: f64,
    /// Where the workload and stores go (default: a temporary directory, deleted at the end).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// A child measurement (internal).
    #[command(subcommand)]
    child: Option<Child>,
}

#[derive(Debug, clap::Args)]
struct WaveArgs {
    #[arg(long)]
    store: PathBuf,
    #[arg(long)]
    workers: u64,
    #[arg(long, value_enum)]
    size: Size,
    #[arg(long)]
    seed: u64,
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
    Ingest {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        workers: u64,
    },
    /// The waves through the embedded API.
    #[command(hide = true)]
    Embedded(WaveArgs),
    /// The waves through `prr stream`.
    #[command(hide = true)]
    Stream(WaveArgs),
    /// The naive recomputation of one change.
    #[command(hide = true)]
    Naive {
        #[arg(long, value_enum)]
        size: Size,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        reps: usize,
    },
}

/// The latencies of one rate, as a JSON object for the parent.
fn rate_result(
    rate: f64,
    planned: usize,
    offered: usize,
    mut lat: Vec<f64>,
    extra: Value,
) -> Value {
    lat.sort_by(f64::total_cmp);
    let mut v = json!({
        "rate": rate, "planned": planned, "offered": offered, "completed": lat.len(),
        "p50": percentile(&lat, 50.0), "p99": percentile(&lat, 99.0),
        "p999": percentile(&lat, 99.9), "max": lat.last().copied().unwrap_or(f64::NAN),
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v
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

fn store_config(a: &WaveArgs) -> RuntimeConfig {
    RuntimeConfig::new()
        .with_store(&a.store)
        .with_workers(a.workers as usize)
        .with_revision_on_shutdown(false)
}

fn run_embedded(a: &WaveArgs) -> anyhow::Result<()> {
    let w = Workload::generate(&WorkloadConfig::for_size(a.size).with_seed(a.seed));
    let mut joins = Joins::new(&w, a.seed);
    let t = Instant::now();
    let mut m = Matrix::start(store_config(a))?;
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
    let w = Workload::generate(&WorkloadConfig::for_size(a.size).with_seed(a.seed));
    let mut joins = Joins::new(&w, a.seed);
    let prr = prr_binary()?;
    let t = Instant::now();
    let mut child = Command::new(&prr)
        .arg("--store")
        .arg(&a.store)
        .args(["--workers", &a.workers.to_string(), "stream"])
        .args(["--emit", "room_members,member_bans"])
        .args(["--max-batch", &a.max_batch.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", prr.display()))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
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

fn run_naive(size: Size, seed: u64, reps: usize) -> anyhow::Result<()> {
    let w = Workload::generate(&WorkloadConfig::for_size(size).with_seed(seed));
    let mut state = NaiveState::new();
    for f in w.files() {
        state.apply(&f.items);
    }
    let mut joins = Joins::new(&w, seed);
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
        Child::Ingest {
            dir,
            store,
            workers,
        } => {
            let mut m = Matrix::start(
                RuntimeConfig::new()
                    .with_store(&store)
                    .with_workers(workers as usize),
            )?;
            let t = ingest_dir(&mut m, &dir, 0)?;
            m.shutdown()?;
            emit_result(json!({"parse": t.parse, "ingest": t.ingest}));
            Ok(())
        }
        Child::Embedded(a) => run_embedded(&a),
        Child::Stream(a) => run_stream(&a),
        Child::Naive { size, seed, reps } => run_naive(size, seed, reps),
    }
}

static MAX_RSS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn child(args: &[String], what: &str) -> anyhow::Result<ChildOutcome> {
    eprintln!("join_wave: {what}");
    let mut cmd = self_command()?;
    cmd.args(args);
    let max = MAX_RSS.load(std::sync::atomic::Ordering::Relaxed);
    let out = run_child(
        cmd,
        Limits {
            cap: None,
            max_rss: (max > 0).then_some(max),
        },
        true,
    )?;
    if out.result.is_none() {
        bail!("{what}: {}", out.failure());
    }
    Ok(out)
}

fn ms(s: f64) -> String {
    if s.is_finite() {
        fmt_secs(s)
    } else {
        "-".into()
    }
}

/// Per rate: the rows of one system's table; returns the highest rate with p99 < 100 ms.
fn wave_table(name: &str, out: &Value, embedded: bool) -> (Table, Option<f64>) {
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
    let _ = name;
    (t, best)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(c) = cli.child {
        return run_as_child(c);
    }
    MAX_RSS.store(
        (cli.max_rss_gib * (1u64 << 30) as f64) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let wave_secs = cli
        .secs
        .unwrap_or(if cli.size == Size::Small { 2.0 } else { 4.0 });
    let naive_reps = cli.naive_reps.unwrap_or(match cli.size {
        Size::Small => 5,
        Size::Medium => 3,
        Size::Large => 1,
    });
    let config = WorkloadConfig::for_size(cli.size).with_seed(cli.seed);
    let workload = Workload::generate(&config);
    let tmp = tempfile::tempdir()?;
    let work = match &cli.work_dir {
        Some(w) => w.clone(),
        None => tmp.path().to_path_buf(),
    };
    let dir = work.join(format!("workload-{}-{}", cli.size.name(), cli.seed));
    if !dir.exists() || list_files(&dir)?.is_empty() {
        eprintln!("join_wave: generating the workload into {}", dir.display());
        workload.write(&dir)?;
    }
    let base = work.join("join-wave-base.redb");
    let _ = std::fs::remove_file(&base);
    let s = |p: &Path| p.display().to_string();
    let workers = cli.workers.to_string();
    let ingest = child(
        &[
            "ingest".into(),
            "--dir".into(),
            s(&dir),
            "--store".into(),
            s(&base),
            "--workers".into(),
            workers.clone(),
        ],
        "ingest W1 (the workload) into the base store",
    )?;
    let rates: Vec<String> = cli.rates.iter().map(|r| r.to_string()).collect();
    let wave_args = |store: &Path| -> Vec<String> {
        vec![
            "--store".into(),
            s(store),
            "--workers".into(),
            workers.clone(),
            "--size".into(),
            cli.size.name().into(),
            "--seed".into(),
            cli.seed.to_string(),
            "--rates".into(),
            rates.join(","),
            "--secs".into(),
            wave_secs.to_string(),
            "--max-batch".into(),
            cli.max_batch.to_string(),
            "--max-lag".into(),
            cli.max_lag.to_string(),
        ]
    };
    let run_wave = |sub: &str| -> anyhow::Result<Value> {
        let copy = work.join(format!("join-wave-{sub}.redb"));
        std::fs::copy(&base, &copy)?;
        let mut args = vec![sub.to_string()];
        args.extend(wave_args(&copy));
        let out = child(&args, &format!("W4 through {sub}"))?;
        std::fs::remove_file(&copy)?;
        Ok(out.result.unwrap_or(Value::Null))
    };
    let skip = |s: &str| cli.skip.iter().any(|x| x == s);
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
        let out = child(
            &[
                "naive".into(),
                "--size".into(),
                cli.size.name().into(),
                "--seed".into(),
                cli.seed.to_string(),
                "--reps".into(),
                naive_reps.to_string(),
            ],
            "naive recomputation of one change",
        )?;
        out.result
    };

    println!(
        "## W4 join waves: size {} ({} rules, {} membership records, {} instances), {} worker(s)\n",
        cli.size.name(),
        workload.rules(),
        workload.memberships(),
        config.instances,
        cli.workers
    );
    println!(
        "Machine: {}. Load average at the end: {}. Each rate offered open-loop for {} s (joins due at start + i/rate); latency from the scheduled time. W1 ingest (base store): {}.\n",
        machine_line(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
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
        let (t, best) = wave_table(name, out, emb);
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
            let verdict = if naive_t / p50 >= 100.0 {
                "met"
            } else {
                "not met"
            };
            println!(
                "Target \"W4 single changes: at least 100x lower latency than the naive recomputation\": {} at p50 ({} vs {}), {} at p99.\n",
                verdict,
                ms(p50),
                ms(naive_t),
                if naive_t / p99 >= 100.0 {
                    "met"
                } else {
                    "not met"
                },
            );
        } else {
            println!("{}", t.render());
        }
    }
    drop(tmp);
    Ok(())
}
