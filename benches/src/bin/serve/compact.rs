//! Part 5, ingest stalls during compaction in process: the stream of part 4 (one join per
//! `POST /v1/ingest`, offered open-loop at a fixed rate, latency from when each was due) into
//! `prr serve` on the workload, once with `--compact-every 3600` (no compaction while it runs)
//! and once with a short interval, both with `--revision-interval 3600`; then, with the short
//! interval, a stream of renames (each request replaces the member event of a user joined by
//! the stream a second before, so its ID and content become strings to collect). A compaction
//! (`Matrix::compact_in_process`) captures revisions, cuts the source log, collects the unused
//! strings and, when it collected any, reloads the dictionary and restores the dataflow from
//! the revisions, on the core thread: the ingests queue behind it. Its end is the time its
//! `compacted: log and strings collected` line was read, its start that minus the line's
//! `seconds`; a request is "during a compaction" when it was due before such an end and
//! answered after it. The service's `VmRSS` is sampled every 20 ms from its start, to give it
//! just before, at the peak during, just after and a few seconds after each compaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prr_benches::harness::table::{Table, fmt_bytes, fmt_ratio, fmt_secs, fmt_secs_or_dash};
use prr_benches::measure::rss_of;
use prr_benches::waves::{join_event, percentile};
use prr_benches::{Workload, item_to_json};
use serde_json::Value;

use crate::Setup;
use crate::server::{Client, Serve};
use crate::stream::{JoinStream, Sent, copy_store, sorted, warm_up};

/// The stream's rate and length, and the compacting run's interval.
pub struct Options {
    pub rate: f64,
    pub every: u64,
    pub secs: u64,
}

/// What a stream offers.
#[derive(Clone, Copy)]
enum Kind {
    /// New joins (`waves::Joins`): every event of the stream stays current; on the workloads
    /// measured, a compaction collected nothing.
    Joins,
    /// Renames: request `n` is a join of `@renameK:rename.example` (K = n mod [`SLOTS`]) into
    /// a protected room with the ID `$renameN` and the displayname `rename N`, replacing the
    /// one of `n - SLOTS`: what it replaces becomes strings to collect once the log before
    /// the revisions that follow is cut.
    Renames,
}

/// The (room, user) pairs renames cycle through: each is replaced a second later at 100/s.
const SLOTS: u64 = 100;

/// The body of rename `n` (see [`Kind::Renames`]) into one of `rooms`.
fn rename_body(rooms: &[String], n: u64) -> Vec<u8> {
    let slot = n % SLOTS;
    let user = format!("@rename{slot}:rename.example");
    let room_id = rooms[(slot as usize * 7919) % rooms.len()].clone();
    let event = item_to_json(&join_event(
        format!("$rename{n}"),
        room_id,
        user,
        format!("rename {n}"),
        n,
    ));
    serde_json::to_vec(&Value::Array(vec![event])).expect("JSON")
}

/// A stream of `kind` into `client`.
fn start(kind: Kind, client: Client, w: &Workload, seed: u64, rate: f64) -> JoinStream {
    match kind {
        Kind::Joins => JoinStream::start(client, w, seed, rate),
        Kind::Renames => {
            let rooms: Vec<String> = (w.protected_room_ids().into_iter())
                .map(str::to_string)
                .collect();
            let mut n = 0;
            JoinStream::start_with(client, rate, move || {
                n += 1;
                rename_body(&rooms, n - 1)
            })
        }
    }
}

/// One compaction, from its log line.
struct Compaction {
    /// When its line was read.
    end: Instant,
    /// Its `seconds` field (from its start to the line).
    seconds: f64,
    /// Its `collected` field: strings collected.
    collected: u64,
}

impl Compaction {
    fn start(&self) -> Instant {
        (Duration::try_from_secs_f64(self.seconds).ok())
            .and_then(|d| self.end.checked_sub(d))
            .unwrap_or(self.end)
    }
}

/// The value of `name=VALUE` among a log line's fields.
fn field<T: std::str::FromStr>(line: &str, name: &str) -> Option<T> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.trim_matches('"').parse().ok())
}

/// `VmRSS` of a process sampled every 20 ms on a thread of its own, until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<(Instant, u64)>>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match rss_of(pid) {
                    Some(rss) => samples.push((Instant::now(), rss)),
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        });
        RssSampler {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<(Instant, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        (self.handle.take())
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The resident sizes sampled around one compaction: the last sample before its start, the
/// largest from then to the first sample after its end, that one, and the last sample at
/// most [`SETTLE`] after its end and before `next` (the next compaction's start).
struct Around {
    before: Option<u64>,
    peak: Option<u64>,
    after: Option<u64>,
    settled: Option<u64>,
}

/// How long after a compaction its resident size is taken as settled: a restored dataflow
/// decodes its revisions in the background for a second or two.
const SETTLE: Duration = Duration::from_secs(5);

fn around(rss: &[(Instant, u64)], c: &Compaction, next: Option<Instant>) -> Around {
    let start = c.start();
    let before = rss.iter().rposition(|(t, _)| *t <= start);
    let after = rss.iter().position(|(t, _)| *t >= c.end);
    let from = before.unwrap_or(0);
    let to = after.map_or(rss.len(), |i| i + 1);
    let until = next.map_or(c.end + SETTLE, |n| n.min(c.end + SETTLE));
    let settled = after.and_then(|i| rss[i..].iter().take_while(|(t, _)| *t <= until).last());
    Around {
        before: before.map(|i| rss[i].1),
        peak: rss
            .get(from..to)
            .and_then(|s| s.iter().map(|(_, r)| *r).max()),
        after: after.map(|i| rss[i].1),
        settled: settled.map(|(_, r)| *r),
    }
}

struct Measured {
    sent: Vec<Sent>,
    started: Instant,
    compactions: Vec<Compaction>,
    /// `compacting failed` lines.
    failed: Vec<String>,
    rss: Vec<(Instant, u64)>,
}

impl Measured {
    /// `VmRSS` at the stream's start and at its end.
    fn rss_span(&self) -> (Option<u64>, Option<u64>) {
        let first = (self.rss.iter())
            .find(|(t, _)| *t >= self.started)
            .map(|(_, r)| *r);
        (first, self.rss.last().map(|(_, r)| *r))
    }
}

fn stream(
    setup: &Setup,
    o: &Options,
    kind: Kind,
    every: u64,
    seed: u64,
) -> anyhow::Result<Measured> {
    let store = setup.work.join("serve-compact.redb");
    copy_store(&setup.base, &store)?;
    let serve = Serve::start(
        &setup.prr,
        &store,
        "127.0.0.1:0",
        &[
            "--revision-interval",
            "3600",
            "--compact-every",
            &every.to_string(),
        ],
    )?;
    let sampler = RssSampler::start(serve.pid());
    let client = serve.client().clone();
    warm_up(&client, &setup.workload, seed ^ 0xfee, setup.warmup)?;
    let started = Instant::now();
    let s = start(kind, client, &setup.workload, seed, o.rate);
    std::thread::sleep(Duration::from_secs(o.secs));
    let sent = s.finish()?;
    let rss = sampler.finish();
    let mut compactions = Vec::new();
    let mut failed = Vec::new();
    for (at, line) in serve.compactions() {
        if at < started {
            continue;
        }
        if line.contains("compacting failed") {
            failed.push(line);
            continue;
        }
        compactions.push(Compaction {
            end: at,
            seconds: field(&line, "seconds").unwrap_or(f64::NAN),
            collected: field(&line, "collected").unwrap_or(0),
        });
    }
    drop(serve);
    let _ = std::fs::remove_file(&store);
    Ok(Measured {
        sent,
        started,
        compactions,
        failed,
        rss,
    })
}

fn fmt_rss(b: Option<u64>) -> String {
    b.map_or_else(|| "-".into(), |b| fmt_bytes(b as f64))
}

/// `after - before` in MiB, signed.
fn fmt_change(before: Option<u64>, after: Option<u64>) -> String {
    match (before, after) {
        (Some(b), Some(a)) => {
            let mib = ((a as f64 - b as f64) / (1024.0 * 1024.0)).round();
            // No `-0` for a change of less than half a MiB down.
            format!("{:+.0} MiB", if mib == 0.0 { 0.0 } else { mib })
        }
        _ => "-".into(),
    }
}

/// Whether `s` waited for the end of `c`: due before it, answered after.
fn during(s: &Sent, c: &Compaction) -> bool {
    s.due <= c.end && c.end <= s.answered
}

/// Runs part 5 and prints its tables.
pub fn run(setup: &Setup, o: &Options) -> anyhow::Result<()> {
    let quiet = stream(setup, o, Kind::Joins, 3600, setup.seed ^ 0xd0)?;
    let joins = stream(setup, o, Kind::Joins, o.every, setup.seed ^ 0xd1)?;
    let renames = stream(setup, o, Kind::Renames, o.every, setup.seed ^ 0xd2)?;
    println!("### Ingest stalls during compaction in process\n");
    println!(
        "A stream of `POST /v1/ingest` (one join each) offered open-loop at {:.0}/s for {} s from one thread after a warm-up (joins at 100/s for {} s), latency from when each request was due (a stall counts for every request queued behind it), with `--revision-interval 3600`: `--compact-every 3600` (no compaction while it runs) versus `--compact-every {}` (the core captures revisions, cuts the log, collects unused strings and, when it collected any, reloads the dictionary and restores the dataflow, commands waiting). New joins may leave nothing to collect (every event of the stream stays current), so the last run offers renames instead: each request a join of one of {} users of the stream with a new event ID and displayname, replacing that user's event of {} requests before. A compaction ends when its `compacted` log line is read and starts its logged `seconds` before; \"during a compaction\": due before one ended and answered after. `VmRSS` of `prr serve` sampled every 20 ms; \"settled\": the last sample at most 5 s after the compaction's end and before the next one started (a restored dataflow decodes its revisions in the background for a second or two).\n",
        o.rate, o.secs, setup.warmup, o.every, SLOTS, SLOTS,
    );
    let quiet_all = sorted(quiet.sent.iter().map(Sent::latency).collect());
    let quiet_max = quiet_all.last().copied().unwrap_or(f64::NAN);
    let every = format!("compaction every {} s", o.every);
    let runs = [
        (
            "joins, no compaction (`--compact-every 3600`)".to_string(),
            &quiet,
        ),
        (format!("joins, {every}"), &joins),
        (format!("renames, {every}"), &renames),
    ];
    let mut t = Table::new(&[
        "run",
        "requests",
        "compactions",
        "p50",
        "p99",
        "**max (longest stall)**",
        "max / no compaction",
        "requests during a compaction",
        "their p99",
        "p99 of the others",
        "VmRSS at the stream's start",
        "at its end",
    ]);
    for (label, m) in &runs {
        let (during_any, others): (Vec<&Sent>, Vec<&Sent>) =
            (m.sent.iter()).partition(|s| m.compactions.iter().any(|c| during(s, c)));
        let all = sorted(m.sent.iter().map(Sent::latency).collect());
        let during_any = sorted(during_any.iter().map(|s| s.latency()).collect());
        let others = sorted(others.iter().map(|s| s.latency()).collect());
        let max = all.last().copied().unwrap_or(f64::NAN);
        let mut count = m.compactions.len().to_string();
        if !m.failed.is_empty() {
            count = format!("{count} (+{} failed)", m.failed.len());
        }
        let (rss_start, rss_end) = m.rss_span();
        t.row(vec![
            label.clone(),
            all.len().to_string(),
            count,
            fmt_secs(percentile(&all, 50.0)),
            fmt_secs(percentile(&all, 99.0)),
            fmt_secs(max),
            fmt_ratio(max, quiet_max),
            during_any.len().to_string(),
            fmt_secs_or_dash(percentile(&during_any, 99.0)),
            fmt_secs_or_dash(percentile(&others, 99.0)),
            fmt_rss(rss_start),
            fmt_rss(rss_end),
        ]);
    }
    println!("{}", t.render());
    let mut t = Table::new(&[
        "run",
        "compaction",
        "ended (s into the stream)",
        "logged `seconds`",
        "strings collected",
        "requests during it",
        "their longest latency",
        "VmRSS just before",
        "peak during",
        "just after",
        "settled (up to 5 s after)",
        "settled - before",
    ]);
    for (label, m) in &runs[1..] {
        for (i, c) in m.compactions.iter().enumerate() {
            let waited = sorted(
                (m.sent.iter())
                    .filter(|s| during(s, c))
                    .map(Sent::latency)
                    .collect(),
            );
            let next = m.compactions.get(i + 1).map(Compaction::start);
            let r = around(&m.rss, c, next);
            t.row(vec![
                label.clone(),
                (i + 1).to_string(),
                format!("{:.1}", (c.end - m.started).as_secs_f64()),
                fmt_secs_or_dash(c.seconds),
                c.collected.to_string(),
                waited.len().to_string(),
                fmt_secs_or_dash(waited.last().copied().unwrap_or(f64::NAN)),
                fmt_rss(r.before),
                fmt_rss(r.peak),
                fmt_rss(r.after),
                fmt_rss(r.settled),
                fmt_change(r.before, r.settled),
            ]);
        }
    }
    println!("{}", t.render());
    for (_, m) in &runs {
        for line in &m.failed {
            println!("A compaction failed: `{line}`\n");
        }
    }
    Ok(())
}
