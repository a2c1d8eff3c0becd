//! Part 2, through the API: `GET /v1/replicas/member_bans?partition=INSTANCE` on the workload,
//! one read after the other from one thread (each instance in turn), first with nothing else
//! running, then while a join wave is ingested through `POST /v1/ingest` at a fixed rate from
//! another thread.

use std::time::Instant;

use anyhow::bail;
use prr_benches::harness::table::{Table, fmt_ratio, fmt_secs};
use prr_benches::waves::percentile;
use serde_json::Value;

use crate::Setup;
use crate::server::{Client, Serve, encode};
use crate::stream::{JoinStream, copy_store, sorted, warm_up};

/// Instance ids of the service's `/v1/status`, sorted.
pub fn instances(client: &Client) -> anyhow::Result<Vec<String>> {
    let status = client.json("/v1/status")?;
    let ids: Vec<String> = (status["instances"].as_array().into_iter().flatten())
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    if ids.is_empty() {
        bail!("the status names no instance");
    }
    Ok(ids)
}

/// The path of a read of `member_bans` in one instance's partition.
pub fn bans_path(instance: &str) -> String {
    format!("/v1/replicas/member_bans?partition={}", encode(instance))
}

/// Latencies (seconds) of `n` reads, instance after instance, and the rows they returned.
fn reads(client: &Client, ids: &[String], n: usize) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut lat = Vec::with_capacity(n);
    let mut rows = 0;
    for i in 0..n {
        let path = bans_path(&ids[i % ids.len()]);
        let t = Instant::now();
        let (status, body) = client.get(&path)?;
        lat.push(t.elapsed().as_secs_f64());
        if status != 200 {
            bail!("GET {path}: {status} {body}");
        }
        rows += body.lines().count();
    }
    Ok((lat, rows))
}

struct Phase {
    label: String,
    reads: Vec<f64>,
    rows: usize,
    /// The wave's achieved rate and its ingest latencies (from due to answered).
    wave: Option<(f64, Vec<f64>)>,
}

/// Runs part 2 and prints its table.
pub fn run(setup: &Setup, n: usize, rates: &[f64]) -> anyhow::Result<()> {
    let store = setup.work.join("serve-api.redb");
    copy_store(&setup.base, &store)?;
    let serve = Serve::start(
        &setup.prr,
        &store,
        "127.0.0.1:0",
        &["--revision-interval", "3600"],
    )?;
    let client = serve.client().clone();
    let ids = instances(&client)?;
    warm_up(&client, &setup.workload, setup.seed ^ 0xa11, setup.warmup)?;
    reads(&client, &ids, n.min(100))?;
    let mut phases = Vec::new();
    let (lat, rows) = reads(&client, &ids, n)?;
    phases.push(Phase {
        label: "no wave".into(),
        reads: lat,
        rows,
        wave: None,
    });
    for (k, &rate) in rates.iter().enumerate() {
        let wave = JoinStream::start(
            client.clone(),
            &setup.workload,
            setup.seed ^ (0xa9e + k as u64),
            rate,
        );
        let t = Instant::now();
        let (lat, rows) = reads(&client, &ids, n)?;
        let wall = t.elapsed().as_secs_f64();
        let sent = wave.finish()?;
        let achieved = sent.len() as f64 / wall;
        let wave_lat = sent.iter().map(|s| s.latency()).collect();
        phases.push(Phase {
            label: format!("while joins are offered at {rate:.0}/s"),
            reads: lat,
            rows,
            wave: Some((achieved, wave_lat)),
        });
    }
    let status: Value = client.json("/v1/status")?;
    drop(serve);
    let _ = std::fs::remove_file(&store);

    println!("### Reads through the API, with and without a join wave\n");
    println!(
        "`GET /v1/replicas/member_bans?partition=INSTANCE`, {n} reads one after the other from one thread, cycling through the {} instances (after a warm-up: joins at 100/s for {} s, then 100 reads); a wave is one `POST /v1/ingest` of one join per request, offered open-loop at the rate from another thread (latency from when it was due). Last seq at the end: {}.\n",
        ids.len(),
        setup.warmup,
        status["seq"],
    );
    let base = sorted(phases[0].reads.clone());
    let (b50, b99) = (percentile(&base, 50.0), percentile(&base, 99.0));
    let mut t = Table::new(&[
        "reads",
        "rows / read",
        "p50",
        "p99",
        "max",
        "p50 / no wave",
        "p99 / no wave",
        "wave: joins/s achieved",
        "wave: ingest p50",
        "wave: ingest p99",
    ]);
    for p in &phases {
        let v = sorted(p.reads.clone());
        let (p50, p99) = (percentile(&v, 50.0), percentile(&v, 99.0));
        let (rate, w50, w99) = match &p.wave {
            Some((rate, w)) => {
                let w = sorted(w.clone());
                (
                    format!("{rate:.0}"),
                    fmt_secs(percentile(&w, 50.0)),
                    fmt_secs(percentile(&w, 99.0)),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        t.row(vec![
            p.label.clone(),
            format!("{:.1}", p.rows as f64 / v.len().max(1) as f64),
            fmt_secs(p50),
            fmt_secs(p99),
            fmt_secs(v.last().copied().unwrap_or(f64::NAN)),
            fmt_ratio(p50, b50),
            fmt_ratio(p99, b99),
            rate,
            w50,
            w99,
        ]);
    }
    println!("{}", t.render());
    Ok(())
}
