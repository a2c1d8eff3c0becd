//! The report: table cells of the children's latencies, and the W3 and W5 sections.

use prr_benches::harness::child::ChildOutcome;
use prr_benches::harness::table::{Table, fmt_bytes, fmt_ratio, fmt_secs, heading};
use prr_benches::waves::percentile;
use prr_benches::{Workload, WorkloadConfig};
use serde_json::{Map, Value};

use crate::Cli;
use crate::w3_workload::{W3_KINDS, W3Plan};
use crate::w5_workload::W5_KINDS;

/// Latencies of one kind from a child's result.
fn lat(o: &ChildOutcome, kind: &str) -> Vec<f64> {
    o.result
        .as_ref()
        .and_then(|r| r.get("latencies")?.get(kind)?.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_f64)
        .collect()
}

/// The `q`-th percentile (0..=100, nearest rank) of the latencies of one kind, if any.
fn p(o: Option<&ChildOutcome>, kind: &str, q: f64) -> Option<f64> {
    let mut samples = lat(o?, kind);
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    Some(percentile(&samples, q))
}

/// Why a child has no result, short enough for a table cell (the full reason is on stderr).
fn short_failure(o: &ChildOutcome) -> String {
    if o.timed_out || o.out_of_memory {
        o.failure()
    } else if o.stderr_tail.contains("heap out of memory") {
        "failed: JavaScript heap out of memory".into()
    } else {
        format!(
            "failed ({})",
            o.status.map(|s| s.to_string()).unwrap_or_default()
        )
    }
}

fn cell(o: Option<&ChildOutcome>, kind: &str, q: f64) -> String {
    match o {
        None => "skipped".into(),
        Some(out) if out.result.is_none() => short_failure(out),
        Some(_) => p(o, kind, q).map(fmt_secs).unwrap_or_else(|| "-".into()),
    }
}

/// The outcomes of the W3 children (`None`: skipped).
pub(crate) struct W3Outcomes {
    pub(crate) prr: ChildOutcome,
    pub(crate) dd: Option<ChildOutcome>,
    pub(crate) naive: Option<ChildOutcome>,
    pub(crate) mps: Option<ChildOutcome>,
    /// Why matrix-protection-suite did not run, if it did not.
    pub(crate) mps_skipped: Option<String>,
}

/// The W3 section of the report.
pub(crate) fn w3(
    cli: &Cli,
    workload: &Workload,
    plan: &W3Plan,
    reps: usize,
    naive_reps: usize,
    outcomes: &W3Outcomes,
) -> String {
    let W3Outcomes {
        prr,
        dd,
        naive,
        mps,
        mps_skipped,
    } = outcomes;
    let mut report = String::new();
    report.push_str(&heading(
        "W3 policy fan-out",
        cli.workload.size,
        workload,
        plan.instances,
        false,
        cli.workers.workers,
    ));
    report.push_str("\n\n");
    report.push_str(&format!(
        "Setup (untimed): W1's files, then a policy room with 102 rules watched by all {} instances. \
         {} distinct present members. Globs (share of present members): new `{}` ({:.2}%), modified `{}` ({:.2}%) \
         <-> `{}` ({:.2}%), removed `{}` ({:.2}%). Literal bans name users present in {}..{} protected rooms. \
         {reps} changes of each kind{}, interleaved with untimed undos. \
         Latency: from submit until every replica (prr) or every instance's matches and intents (peers) are \
         final.\n\n",
        plan.instances,
        plan.present,
        plan.globs[0].0,
        plan.globs[0].1 * 100.0,
        plan.globs[1].0,
        plan.globs[1].1 * 100.0,
        plan.globs[2].0,
        plan.globs[2].1 * 100.0,
        plan.globs[3].0,
        plan.globs[3].1 * 100.0,
        plan.literal_rooms.iter().min().unwrap_or(&0),
        plan.literal_rooms.iter().max().unwrap_or(&0),
        if naive.is_some() {
            format!(" (naive: the first {naive_reps} of each)")
        } else {
            String::new()
        },
    ));
    let mut t = Table::new(&[
        "change",
        "changed (prr): member_matches / member_bans / instances",
        "changed (MPS): matches / ban intents / instances",
        "**prr** p50",
        "**prr** p99",
        "prr no store p50",
        "prr no store p99",
        "naive p50",
        "naive p99",
        "MPS p50",
        "MPS p99",
    ]);
    let changed = |o: Option<&ChildOutcome>, kind: &str, fields: [&str; 3]| -> String {
        o.and_then(|o| o.result.as_ref()?.get("changed")?.get(kind).cloned())
            .map(|c| {
                fields
                    .iter()
                    .map(|f| c.get(*f).map(|v| v.to_string()).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .unwrap_or_default()
    };
    for (kind, label) in W3_KINDS {
        t.row(vec![
            label.into(),
            changed(
                Some(prr),
                kind,
                ["member_matches", "member_bans", "instances"],
            ),
            changed(
                mps.as_ref(),
                kind,
                ["member_matches", "ban_intents", "instances"],
            ),
            cell(Some(prr), kind, 50.0),
            cell(Some(prr), kind, 99.0),
            cell(dd.as_ref(), kind, 50.0),
            cell(dd.as_ref(), kind, 99.0),
            cell(naive.as_ref(), kind, 50.0),
            cell(naive.as_ref(), kind, 99.0),
            cell(mps.as_ref(), kind, 50.0),
            cell(mps.as_ref(), kind, 99.0),
        ]);
    }
    report.push_str(&t.render());
    report.push('\n');
    if let Some(why) = mps_skipped {
        report.push_str(&format!("matrix-protection-suite skipped: {why}.\n\n"));
    }
    let setup_line = |name: &str, o: Option<&ChildOutcome>, field: &str| -> String {
        match o {
            None => String::new(),
            Some(o) => match o.num(field) {
                Some(s) => format!(
                    "{name}: {} (peak RSS {}); ",
                    fmt_secs(s),
                    fmt_bytes(o.num("peak_rss").unwrap_or(o.max_rss_seen as f64))
                ),
                None => {
                    let progress = o
                        .last_progress
                        .as_ref()
                        .map(|p| format!(", last progress {p}"))
                        .unwrap_or_default();
                    format!("{name}: {}{progress}; ", short_failure(o))
                }
            },
        }
    };
    report.push_str(&format!(
        "Setup times (untimed part): {}{}{}{}\n\n",
        setup_line("prr ingest", Some(prr), "setup"),
        setup_line("prr no store", dd.as_ref(), "setup"),
        setup_line("naive: one full recomputation", naive.as_ref(), "full"),
        setup_line(
            &format!("MPS build ({} initial matches)", cli.mps_setup),
            mps.as_ref(),
            "setup"
        ),
    ));
    // Agreement: prr's intents against the naive recomputation's, before and after.
    if let (Some(pr), Some(nv)) = (
        prr.result.as_ref(),
        naive.as_ref().and_then(|n| n.result.as_ref()),
    ) {
        let same = ["counts_before", "counts_after"].iter().all(|k| {
            ["member_matches", "member_bans", "ban_intents", "acl_deny"]
                .iter()
                .all(|f| pr[k][f] == nv[k][f])
        });
        report.push_str(&format!(
            "prr and the naive recomputation agree on the intent counts before and after the changes: **{}** \
             (prr after: {}).\n\n",
            if same { "yes" } else { "NO" },
            pr["counts_after"]
        ));
    }
    let mut targets = Table::new(&[
        "target (issue 6)",
        "change",
        "prr p50 / p99",
        "peer p50 / p99",
        "peer / prr: p50 / p99",
        "met? (both)",
    ]);
    let peers = [
        (
            format!(
                "W3 fan-out over {} instances: ≥ 50x faster than matrix-protection-suite{}",
                plan.instances,
                if plan.instances < 1000 {
                    " (the target is at 1,000)"
                } else {
                    ""
                }
            ),
            mps.as_ref(),
            50.0,
        ),
        (
            "W3 single changes: ≥ 100x lower latency than the naive recomputation".to_string(),
            naive.as_ref(),
            100.0,
        ),
    ];
    for (target, peer, need) in &peers {
        for (kind, label) in W3_KINDS {
            let pair = |o: Option<&ChildOutcome>| (p(o, kind, 50.0), p(o, kind, 99.0));
            let (a50, a99) = pair(Some(prr));
            let (b50, b99) = pair(*peer);
            let both = |x: Option<f64>, y: Option<f64>| match (x, y) {
                (Some(x), Some(y)) => format!("{} / {}", fmt_secs(x), fmt_secs(y)),
                _ => String::new(),
            };
            let (ratio, met) = match (a50, a99, b50, b99) {
                (Some(a50), Some(a99), Some(b50), Some(b99)) => (
                    format!("{} / {}", fmt_ratio(b50, a50), fmt_ratio(b99, a99)),
                    if b50 / a50 >= *need && b99 / a99 >= *need {
                        "met"
                    } else {
                        "**not met**"
                    }
                    .to_string(),
                ),
                _ => ("n/a".into(), "not measured".into()),
            };
            targets.row(vec![
                target.clone(),
                label.into(),
                both(a50, a99),
                match peer {
                    None => "skipped".into(),
                    Some(o) if o.result.is_none() => short_failure(o),
                    Some(_) => both(b50, b99),
                },
                ratio,
                met,
            ]);
        }
    }
    report.push_str(&targets.render());
    report.push('\n');
    report
}

/// The W5 section of the report: `per_round[k]` holds the outcomes of the children of
/// `idle[k]` idle instances, one a round.
pub(crate) fn w5(
    cli: &Cli,
    base: &Workload,
    base_config: &WorkloadConfig,
    idle: &[usize],
    mut per_round: Vec<Vec<ChildOutcome>>,
    reps: usize,
    rounds: usize,
) -> String {
    let mut report = String::new();
    // Pooled: the first round's outcome with every round's latency samples.
    let mut outcomes: Vec<(usize, ChildOutcome)> = Vec::new();
    let mut round_p50s: Vec<String> = Vec::new();
    for (k, &n) in idle.iter().enumerate() {
        let mut rs = std::mem::take(&mut per_round[k]);
        let p50s: Vec<String> = W5_KINDS
            .iter()
            .map(|(kind, _)| {
                rs.iter()
                    .map(|o| cell(Some(o), kind, 50.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        round_p50s.push(p50s.join(" / "));
        let mut first = rs.remove(0);
        if let Some(Value::Object(r)) = first.result.as_mut() {
            let mut lats = Map::new();
            for (kind, _) in W5_KINDS {
                let mut all = r
                    .get("latencies")
                    .and_then(|l| l.get(kind))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for o in &rs {
                    all.extend(lat(o, kind).into_iter().map(Value::from));
                }
                lats.insert(kind.into(), Value::Array(all));
            }
            r.insert("latencies".into(), Value::Object(lats));
        }
        outcomes.push((n, first));
    }
    report.push_str(&format!(
        "## W5 many idle instances: size {}, {} worker(s)\n\n",
        cli.workload.name(),
        cli.workers.workers
    ));
    report.push_str(&format!(
        "Base: {} rules in {} lists, {} membership records in {} rooms. Each idle instance watches 1-3 of \
         the lists and protects 1-3 of the rooms; the active instance watches its own list (101 rules) and \
         one base list and protects its own room (300 members). {reps} changes of each kind, interleaved with \
         untimed undos; prr {}, one source delta per change. {rounds} round(s), the \
         sizes alternating, each child a fresh process; percentiles over the samples of every round \
         (setup and RSS: the first round).\n\n",
        base.rules(),
        base_config.policy_rooms,
        base.memberships(),
        base_config.protected_rooms,
        if cli.w5_no_store {
            "without a store (raw differential dataflow)"
        } else {
            "with its redb store (one durable commit per change)"
        },
    ));
    let mut t = Table::new(&[
        "idle instances",
        "setup (ingest)",
        "peak RSS",
        "join p50",
        "join p99",
        "new ban p50",
        "new ban p99",
        "changed per join / per ban (member_matches)",
        "p50 of each round: join / new ban",
    ]);
    for (k, (n, o)) in outcomes.iter().enumerate() {
        let ch = |kind: &str| {
            o.result
                .as_ref()
                .and_then(|r| r["changed"][kind]["member_matches"].as_u64())
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        t.row(vec![
            n.to_string(),
            o.num("setup")
                .map(fmt_secs)
                .unwrap_or_else(|| short_failure(o)),
            fmt_bytes(o.num("peak_rss").unwrap_or(o.max_rss_seen as f64)),
            cell(Some(o), "join", 50.0),
            cell(Some(o), "join", 99.0),
            cell(Some(o), "rule", 50.0),
            cell(Some(o), "rule", 99.0),
            format!("{} / {}", ch("join"), ch("rule")),
            round_p50s[k].clone(),
        ]);
    }
    report.push_str(&t.render());
    report.push('\n');
    if let [(n1, a), .., (n2, b)] = outcomes.as_slice() {
        let mut targets = Table::new(&[
            "target (issue 6)",
            "change",
            &format!("{n1} idle: p50 / p99"),
            &format!("{n2} idle: p50 / p99"),
            "ratio: p50 / p99",
            "met? (p50)",
        ]);
        for (kind, label) in W5_KINDS {
            let (x50, x99) = (p(Some(a), kind, 50.0), p(Some(a), kind, 99.0));
            let (y50, y99) = (p(Some(b), kind, 50.0), p(Some(b), kind, 99.0));
            let both = |x: Option<f64>, y: Option<f64>| match (x, y) {
                (Some(x), Some(y)) => format!("{} / {}", fmt_secs(x), fmt_secs(y)),
                _ => "n/a".into(),
            };
            let ratio = match (x50, x99, y50, y99) {
                (Some(x50), Some(x99), Some(y50), Some(y99)) => {
                    format!("{} / {}", fmt_ratio(y50, x50), fmt_ratio(y99, x99))
                }
                _ => "n/a".into(),
            };
            let met = match (x50, y50) {
                (Some(x), Some(y)) if y / x <= 1.5 => "met",
                (Some(_), Some(_)) => "**not met**",
                _ => "not measured",
            };
            targets.row(vec![
                format!(
                    "W5: one change with {n2} idle instances within 1.5x of the same with {n1}"
                ),
                label.into(),
                both(x50, x99),
                both(y50, y99),
                ratio,
                met.into(),
            ]);
        }
        report.push_str(&targets.render());
        report.push('\n');
    }
    report
}
