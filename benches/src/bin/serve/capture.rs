//! Part 4, ingest stalls during revision capture: a steady stream of `POST /v1/ingest` (one
//! join each, offered open-loop at a fixed rate, latency from when each was due) into `prr
//! serve` on the workload, once with `--revision-interval 3600` (no capture while it runs)
//! and once with a short interval (serve's core captures revisions of every replica that
//! changed, blocking the ingests queued behind it). The end of each capture is the time its
//! `revisions captured` log line was read; a request is "during a capture" when it was due
//! before such an end and answered after it.

use std::time::{Duration, Instant};

use prr_benches::harness::table::{Table, fmt_ratio, fmt_secs, fmt_secs_or_dash};
use prr_benches::waves::percentile;

use crate::Setup;
use crate::server::Serve;
use crate::stream::{JoinStream, Sent, copy_store, sorted, warm_up};

/// The stream's rate and length, and the capturing run's interval.
pub struct Options {
    pub rate: f64,
    pub interval: u64,
    pub secs: u64,
}

struct Measured {
    sent: Vec<Sent>,
    captures: Vec<Instant>,
}

fn stream(setup: &Setup, o: &Options, interval: u64, seed: u64) -> anyhow::Result<Measured> {
    let store = setup.work.join("serve-capture.redb");
    copy_store(&setup.base, &store)?;
    let serve = Serve::start(
        &setup.prr,
        &store,
        "127.0.0.1:0",
        &["--revision-interval", &interval.to_string()],
    )?;
    let client = serve.client().clone();
    warm_up(&client, &setup.workload, seed ^ 0xfee, setup.warmup)?;
    let started = Instant::now();
    let s = JoinStream::start(client, &setup.workload, seed, o.rate);
    std::thread::sleep(Duration::from_secs(o.secs));
    let sent = s.finish()?;
    let captures = (serve.captures().into_iter())
        .filter(|c| *c >= started)
        .collect();
    drop(serve);
    let _ = std::fs::remove_file(&store);
    Ok(Measured { sent, captures })
}

/// Runs part 4 and prints its table.
pub fn run(setup: &Setup, o: &Options) -> anyhow::Result<()> {
    let quiet = stream(setup, o, 3600, setup.seed ^ 0xc0)?;
    let capturing = stream(setup, o, o.interval, setup.seed ^ 0xc1)?;
    println!("### Ingest stalls during revision capture\n");
    println!(
        "A stream of `POST /v1/ingest` (one join each) offered open-loop at {:.0}/s for {} s from one thread after a warm-up (joins at 100/s for {} s), latency from when each request was due (a stall counts for every request queued behind it); `--revision-interval 3600` (no capture while it runs) versus `--revision-interval {}` (a capture of every changed replica every {} s while joins arrive). \"During a capture\": due before a capture ended and answered after.\n",
        o.rate, o.secs, setup.warmup, o.interval, o.interval,
    );
    let quiet_all = sorted(quiet.sent.iter().map(Sent::latency).collect());
    let quiet_max = quiet_all.last().copied().unwrap_or(f64::NAN);
    let mut t = Table::new(&[
        "run",
        "requests",
        "captures",
        "p50",
        "p99",
        "**max (longest stall)**",
        "max / no capture",
        "requests during a capture",
        "their p99",
        "p99 of the others",
    ]);
    for (label, m) in [
        ("no capture (`--revision-interval 3600`)", &quiet),
        (&*format!("capture every {} s", o.interval), &capturing),
    ] {
        let (during, others): (Vec<&Sent>, Vec<&Sent>) = m
            .sent
            .iter()
            .partition(|s| m.captures.iter().any(|c| s.due <= *c && *c <= s.answered));
        let all = sorted(m.sent.iter().map(Sent::latency).collect());
        let during = sorted(during.iter().map(|s| s.latency()).collect());
        let others = sorted(others.iter().map(|s| s.latency()).collect());
        let max = all.last().copied().unwrap_or(f64::NAN);
        t.row(vec![
            label.into(),
            all.len().to_string(),
            m.captures.len().to_string(),
            fmt_secs(percentile(&all, 50.0)),
            fmt_secs(percentile(&all, 99.0)),
            fmt_secs(max),
            fmt_ratio(max, quiet_max),
            during.len().to_string(),
            fmt_secs_or_dash(percentile(&during, 99.0)),
            fmt_secs_or_dash(percentile(&others, 99.0)),
        ]);
    }
    println!("{}", t.render());
    Ok(())
}
