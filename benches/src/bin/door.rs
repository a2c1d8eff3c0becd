//! Issue 18: checks at the door. On W1's state (the workload ingested), p50/p99 of a join check
//! (`DoorIndex::check`) for users that are refused and users that are let in, in process and
//! through `POST /v1/check/join` of `prr serve` over loopback HTTP, idle and while a join wave
//! is ingested through `POST /v1/ingest`.
//!
//! The sampled users: the workload's user pool (literal and hashed rules name some, server
//! rules and globs match others) and as many strangers (`@strangerN:` a pool server), each in
//! a random protected room; each answer is counted as refused or allowed by what it says.
//!
//! ```text
//! cargo run --release -p prr-benches --bin door -- --size small
//! ```

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use prr_benches::drive::ingest_dir;
use prr_benches::harness::args::WorkloadArgs;
use prr_benches::measure::{load_average, machine_line};
use prr_benches::waves::{Joins, percentile, prr_binary};
use prr_benches::{Workload, item_to_json};
use prr_engine::RuntimeConfig;
use prr_replicas::{DoorIndex, Matrix};
use prr_serve::BulkPriority;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// Checks at the door: in process and over HTTP, idle and during a join wave.
#[derive(Debug, Parser)]
#[command(name = "door")]
struct Cli {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Checks per measurement.
    #[arg(long, default_value_t = 20_000)]
    checks: usize,
    /// Joins per second offered during the wave.
    #[arg(long, default_value_t = 500.0)]
    wave_rate: f64,
    /// The `prr serve --bulk-priority` values measured over HTTP, one after the other, each
    /// on a `prr serve` started anew (its wave continues the previous one's joins).
    #[arg(long, value_delimiter = ',', default_values_t = [BulkPriority::Nice(0), BulkPriority::Nice(10), BulkPriority::Idle])]
    bulk_priority: Vec<BulkPriority>,
    /// Rounds over the `--bulk-priority` values, alternating, so that each setting sees the same
    /// machine; each round measures `--checks` checks idle and as many during a wave.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

/// A sample: a user and a protected room.
type Sample = (String, String);

fn samples(w: &Workload, n: usize, seed: u64) -> Vec<Sample> {
    let mut rng = StdRng::seed_from_u64(seed);
    let rooms = w.protected_room_ids();
    let users = w.users();
    (0..n)
        .map(|i| {
            let room = rooms[rng.random_range(0..rooms.len())].to_string();
            let known = &users[rng.random_range(0..users.len())];
            let user = if i % 2 == 0 {
                known.clone()
            } else {
                let server = known.split_once(':').map_or("example.org", |(_, s)| s);
                format!("@stranger{i}:{server}")
            };
            (user, room)
        })
        .collect()
}

/// Latencies in microseconds, split by the answer.
#[derive(Default)]
struct Split {
    refused: Vec<f64>,
    allowed: Vec<f64>,
}

impl Split {
    fn add(&mut self, refused: bool, micros: f64) {
        match refused {
            true => self.refused.push(micros),
            false => self.allowed.push(micros),
        }
    }

    fn extend(&mut self, other: Split) {
        self.refused.extend(other.refused);
        self.allowed.extend(other.allowed);
    }

    fn rows(mut self, what: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (answer, v) in [
            ("refused", &mut self.refused),
            ("allowed", &mut self.allowed),
        ] {
            v.sort_by(f64::total_cmp);
            if v.is_empty() {
                out.push(format!("| {what} | {answer} | 0 | - | - | - |"));
                continue;
            }
            out.push(format!(
                "| {what} | {answer} | {} | {:.1} | {:.1} | {:.1} |",
                v.len(),
                percentile(v, 50.0),
                percentile(v, 99.0),
                v[v.len() - 1]
            ));
        }
        out
    }
}

/// `prr serve` on `store`, stopped on drop.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start(store: &Path, bulk_priority: BulkPriority) -> anyhow::Result<Serve> {
        let mut child = Command::new(prr_binary()?)
            .arg("--store")
            .arg(store)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--revision-interval",
                "3600",
                "--bulk-priority",
                &bulk_priority.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting prr serve")?;
        let stdout = child.stdout.take().context("prr serve's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .context("prr serve stopped before listening")??;
            if let Some(a) = line.strip_prefix("listening on ") {
                break a.to_string();
            }
        };
        // Keep reading its standard output so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Serve {
            child,
            url: format!("http://{addr}"),
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Checks every sample over HTTP.
fn over_http(url: &str, samples: &[Sample]) -> anyhow::Result<Split> {
    let agent = agent();
    let mut split = Split::default();
    for (user, room) in samples {
        let body = json!({"user_id": user, "room_id": room}).to_string();
        let t = Instant::now();
        let mut answer = agent
            .post(format!("{url}/v1/check/join"))
            .send(body.as_bytes())?;
        let v: Value = answer.body_mut().read_json()?;
        split.add(v["allow"] == false, t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(split)
}

/// One `prr serve --bulk-priority P`: its checks idle and during a join wave.
struct HttpRun {
    idle: Split,
    during: Split,
    joins: u64,
    wave_secs: f64,
    load_before: String,
}

impl HttpRun {
    /// `other`'s measurements with these (another round of the same setting).
    fn add(&mut self, other: HttpRun) {
        self.idle.extend(other.idle);
        self.during.extend(other.during);
        self.joins += other.joins;
        self.wave_secs += other.wave_secs;
        self.load_before = format!("{}; {}", self.load_before, other.load_before);
    }
}

/// Starts `prr serve --bulk-priority priority` on `store`, checks every sample idle, then again while
/// a join wave (the next joins of `joins`, at `rate` a second) is ingested from another thread.
/// Returns the measurements and `joins`, to continue from.
fn over_http_with_wave(
    store: &Path,
    priority: BulkPriority,
    samples: &[Sample],
    mut joins: Joins,
    rate: f64,
) -> anyhow::Result<(HttpRun, Joins)> {
    let load_before = load_average();
    let serve = Serve::start(store, priority)?;
    // Warm up the connection and the service.
    over_http(&serve.url, &samples[..samples.len().min(200)])?;
    let idle = over_http(&serve.url, samples)?;
    let stop = Arc::new(AtomicBool::new(false));
    let joined = Arc::new(AtomicU64::new(0));
    let wave = {
        let (stop, joined, url) = (stop.clone(), joined.clone(), serve.url.clone());
        let period = Duration::from_secs_f64(1.0 / rate);
        std::thread::spawn(move || -> anyhow::Result<Joins> {
            let agent = agent();
            let start = Instant::now();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let body = json!([item_to_json(&joins.next_join())]).to_string();
                let answer = agent
                    .post(format!("{url}/v1/ingest"))
                    .send(body.as_bytes())?;
                anyhow::ensure!(answer.status() == 200, "ingest: {}", answer.status());
                joined.fetch_add(1, Ordering::Relaxed);
                n += 1;
                if let Some(wait) = (start + period * n).checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            Ok(joins)
        })
    };
    let t = Instant::now();
    let during = over_http(&serve.url, samples)?;
    let wave_secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let joins = (wave.join()).map_err(|_| anyhow::anyhow!("the wave thread panicked"))??;
    let run = HttpRun {
        idle,
        during,
        joins: joined.load(Ordering::Relaxed),
        wave_secs,
        load_before,
    };
    Ok((run, joins))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (config, workload) = cli.workload.generate();
    let work = tempfile::tempdir()?;
    let dir = cli.workload.prepare_in("door", &workload, work.path())?;
    let store = work.path().join("door.redb");
    let mut m = Matrix::start(RuntimeConfig::new().with_store(&store))?;
    ingest_dir(&mut m, &dir, 0)?;
    let t = Instant::now();
    let index = DoorIndex::load(&mut m)?;
    let load_secs = t.elapsed().as_secs_f64();
    m.shutdown()?;
    let samples = samples(&workload, cli.checks, cli.workload.seed);

    let mut in_process = Split::default();
    for (user, room) in &samples {
        let t = Instant::now();
        let refused = index.check(user, room).is_some();
        in_process.add(refused, t.elapsed().as_secs_f64() * 1e6);
    }
    drop(index);

    let mut joins = Joins::new(&workload, cli.workload.seed);
    let mut http: Vec<(BulkPriority, HttpRun)> = Vec::new();
    for _ in 0..cli.rounds.max(1) {
        for &priority in &cli.bulk_priority {
            let (run, next) =
                over_http_with_wave(&store, priority, &samples, joins, cli.wave_rate)?;
            joins = next;
            match http.iter_mut().find(|(p, _)| *p == priority) {
                Some((_, all)) => all.add(run),
                None => http.push((priority, run)),
            }
        }
    }

    println!("## Checks at the door ({})\n", cli.workload.name());
    println!("{}", machine_line());
    println!(
        "Workload: {} rules, {} instances, {} memberships; index loaded in {:.2} s; load {}.\n",
        workload.rules(),
        config.instances,
        workload.memberships(),
        load_secs,
        load_average()
    );
    println!("| how | answer | checks | p50 (µs) | p99 (µs) | max (µs) |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let mut rows = vec![in_process.rows("in process (`DoorIndex::check`)")];
    for (priority, run) in &mut http {
        let idle = std::mem::take(&mut run.idle);
        let during = std::mem::take(&mut run.during);
        rows.push(idle.rows(&format!("HTTP, idle, bulk priority {priority}")));
        rows.push(during.rows(&format!(
            "HTTP, during a join wave, bulk priority {priority}"
        )));
    }
    for row in rows.iter().flatten() {
        println!("{row}");
    }
    println!();
    for (priority, run) in &http {
        println!(
            "The wave at bulk priority {priority}: {} joins through `POST /v1/ingest` in {:.1} s ({:.0}/s offered, {:.0}/s done), each durable before the next; load before each round: {}.",
            run.joins,
            run.wave_secs,
            cli.wave_rate,
            run.joins as f64 / run.wave_secs,
            run.load_before,
        );
    }
    Ok(())
}
