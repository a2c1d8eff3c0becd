//! `prr status`, `revisions`, `compact`, `rebuild`, `check`, `graph`.

use std::io::Write;

use prr_engine::{InputMode, Runtime, RuntimeConfig, Seq};
use prr_replicas::{Matrix, REPLICAS, Rec, matrix_dag, status_json};
use serde_json::json;

use super::Ctx;
use crate::args::{GraphFormat, InfoFormat};
use crate::output::escape;
use crate::{Failure, exit};

pub fn status(ctx: &Ctx, format: InfoFormat) -> Result<u8, Failure> {
    let mut m = ctx.open_read()?;
    let st = m.runtime().status()?;
    let rejects = st
        .replicas
        .iter()
        .find(|r| r.name == "rejects")
        .map(|r| r.records)
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    match format {
        InfoFormat::Json => {
            let v = status_json(&st, &ctx.store);
            writeln!(out, "{v}")?;
        }
        InfoFormat::Table => {
            writeln!(out, "store    {}", ctx.store.display())?;
            writeln!(out, "seq      {}", st.seq.0)?;
            if let Some(s) = &st.store {
                let first = s
                    .first_log_seq
                    .map(|f| format!(" (from seq {f})"))
                    .unwrap_or_default();
                writeln!(out, "log      {} source deltas{first}", s.log_entries)?;
                writeln!(
                    out,
                    "size     {} bytes, {} identifiers",
                    s.file_bytes, s.strings
                )?;
            }
            writeln!(out, "rejects  {rejects}")?;
            if !st.poisoned.is_empty() {
                let seqs: Vec<String> = st.poisoned.iter().map(|s| s.0.to_string()).collect();
                writeln!(
                    out,
                    "poisoned {} quarantined source deltas: seq {} (see `prr show poisoned`)",
                    seqs.len(),
                    seqs.join(", ")
                )?;
            } else {
                writeln!(out, "poisoned 0")?;
            }
            writeln!(out)?;
            // The name column as wide as the longest name.
            let w = (st.replicas.iter().map(|r| r.name.len()))
                .chain([15])
                .max()
                .unwrap_or(15);
            writeln!(
                out,
                "{:<w$} {:>9} {:>10} {:>16} {:>6}",
                "replica", "frontier", "records", "newest revision", "logic"
            )?;
            for r in &st.replicas {
                let rev = r
                    .newest_revision
                    .map(|s| s.0.to_string())
                    .unwrap_or_else(|| "-".into());
                writeln!(
                    out,
                    "{:<w$} {:>9} {:>10} {:>16} {:>6}",
                    r.name, r.frontier.0, r.records, rev, r.logic_version
                )?;
            }
        }
    }
    m.shutdown()?;
    Ok(exit::OK)
}

/// `prr ack-poisoned SEQ`: drops a quarantined source delta for good.
pub fn ack_poisoned(ctx: &Ctx, seq: u64) -> Result<u8, Failure> {
    // A missing store is `no store at PATH` from `open_read`. An unknown seq leaves the file as it was: a store opened for writing is rewritten in
    // part even when nothing is committed.
    let mut m = ctx.open_read()?;
    let quarantined: Vec<Seq> = (m.runtime().poisoned().iter())
        .map(|q| Seq(q.seq))
        .collect();
    m.shutdown()?;
    if !quarantined.contains(&Seq(seq)) {
        return Err(prr_engine::Error::NotPoisoned {
            seq: Seq(seq),
            poisoned: quarantined,
        }
        .into());
    }
    let mut m = ctx.open()?;
    m.runtime().ack_poisoned(Seq(seq))?;
    m.shutdown()?;
    println!("dropped the quarantined source delta at seq {seq} for good");
    Ok(exit::OK)
}

pub fn revisions(ctx: &Ctx, replica: Option<&str>, format: InfoFormat) -> Result<u8, Failure> {
    let mut m = ctx.open_read()?;
    if let Some(r) = replica {
        m.runtime().replica(r)?;
    }
    let revs: Vec<_> = m
        .runtime()
        .revisions()?
        .into_iter()
        .filter(|r| replica.is_none_or(|n| r.replica == n))
        .collect();
    let mut out = std::io::stdout().lock();
    match format {
        InfoFormat::Json => {
            let v: Vec<_> = revs
                .iter()
                .map(|r| {
                    json!({"replica": r.replica, "as_of": r.as_of, "logic_version": r.logic_version,
                           "description_hash": format!("{:016x}", r.description_hash), "records": r.records})
                })
                .collect();
            writeln!(out, "{}", serde_json::Value::Array(v))?;
        }
        InfoFormat::Table => {
            writeln!(
                out,
                "{:<15} {:>8} {:>6} {:>10}",
                "replica", "as_of", "logic", "records"
            )?;
            for r in &revs {
                writeln!(
                    out,
                    "{:<15} {:>8} {:>6} {:>10}",
                    escape(&r.replica),
                    r.as_of,
                    r.logic_version,
                    r.records
                )?;
            }
        }
    }
    m.shutdown()?;
    Ok(exit::OK)
}

pub fn compact(ctx: &Ctx) -> Result<u8, Failure> {
    let mut m = ctx.open_existing()?;
    let before = std::fs::metadata(&ctx.store).map(|m| m.len()).unwrap_or(0);
    let as_of = m.runtime().capture_revisions()?;
    m.runtime().collect_garbage(true)?;
    let collected = m.runtime().collect_strings()?;
    m.runtime().compact_store()?;
    let after = std::fs::metadata(&ctx.store).map(|m| m.len()).unwrap_or(0);
    m.shutdown()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "revisions captured as of seq {}; store {} -> {} bytes",
        as_of.0, before, after
    )?;
    writeln!(
        out,
        "dictionary: {collected} strings no longer used, collected"
    )?;
    Ok(exit::OK)
}

pub fn rebuild(ctx: &Ctx, replicas: &[String], check: bool) -> Result<u8, Failure> {
    let mut m = if check {
        ctx.open_read()?
    } else {
        ctx.open_existing()?
    };
    let ids = replicas
        .iter()
        .map(|r| m.runtime().replica(r))
        .collect::<Result<Vec<_>, _>>()?;
    let outcomes = m.runtime().rebuild(&ids, check)?;
    let mut differ = false;
    for o in &outcomes {
        let state = if let Some(damage) = &o.damage {
            differ = true;
            format!(
                "damaged: {damage}{}",
                if o.replaced {
                    "; replaced by the recomputation"
                } else {
                    ""
                }
            )
        } else if o.missing + o.extra == 0 {
            "same".to_string()
        } else {
            differ = true;
            format!(
                "differs: {} missing, {} extra{}",
                o.missing,
                o.extra,
                if o.replaced { "; replaced" } else { "" }
            )
        };
        writeln!(
            std::io::stdout().lock(),
            "{:<15} as of seq {:<6} {state}",
            o.replica,
            o.as_of.0
        )?;
    }
    if outcomes.is_empty() {
        writeln!(
            std::io::stdout().lock(),
            "no revisions to compare (run `prr compact` to capture some)"
        )?;
    }
    m.shutdown()?;
    Ok(if check && differ {
        exit::DIFFERENCES
    } else {
        exit::OK
    })
}

pub fn check(ctx: &Ctx) -> Result<u8, Failure> {
    // Not through a started runtime: damage can keep one from starting, and `check` reports
    // it like any other.
    let config = RuntimeConfig::new()
        .with_store(&ctx.store)
        .with_workers(ctx.workers)
        .with_read_only(true)
        .with_record_upgrade(super::store_upgrade());
    let problems = Runtime::<Rec>::check_store_at(config, matrix_dag)?;
    if problems.is_empty() {
        writeln!(
            std::io::stdout().lock(),
            "ok: {} is sound",
            ctx.store.display()
        )?;
        Ok(exit::OK)
    } else {
        for p in &problems {
            writeln!(
                std::io::stdout().lock(),
                "problem: {}",
                escape(&p.to_string())
            )?;
        }
        Ok(exit::DIFFERENCES)
    }
}

/// How `graph` labels a replica: stored as it enters, computed and stored, or evaluated when read.
fn kind_of<R: prr_engine::Record>(d: &prr_engine::ReplicaDescription<R>) -> &'static str {
    if d.is_source() {
        "source"
    } else if d.is_view() {
        "view (evaluated when read)"
    } else {
        "derived"
    }
}

pub fn graph(ctx: &Ctx, format: GraphFormat) -> Result<u8, Failure> {
    let m = Matrix::start(RuntimeConfig::new().with_workers(ctx.workers))?;
    let mut m = m;
    let dag = m.runtime().dag();
    debug_assert_eq!(dag.len(), REPLICAS.len());
    let mut out = String::new();
    match format {
        GraphFormat::Dot => {
            out.push_str("digraph prr {\n  rankdir=LR;\n  node [shape=box];\n");
            for d in dag.replicas() {
                let what = kind_of(d);
                out.push_str(&format!(
                    "  {} [label=\"{}\\n{what}, partition: {}\\nlogic v{}\"{}];\n",
                    d.name(),
                    d.name(),
                    d.partition_key(),
                    d.logic_version(),
                    if d.is_source() {
                        ", style=bold"
                    } else if d.is_view() {
                        ", style=rounded"
                    } else {
                        ""
                    }
                ));
            }
            for d in dag.replicas() {
                for i in d.inputs() {
                    let style = if i.mode == InputMode::Deltas {
                        ", style=dashed"
                    } else {
                        ""
                    };
                    out.push_str(&format!(
                        "  {} -> {} [label=\"{}\"{style}];\n",
                        i.replica,
                        d.name(),
                        i.mode
                    ));
                }
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for d in dag.replicas() {
                let what = kind_of(d);
                out.push_str(&format!(
                    "  {}[\"{}<br/>{what} · {}\"]\n",
                    d.name(),
                    d.name(),
                    d.partition_key()
                ));
            }
            for d in dag.replicas() {
                for i in d.inputs() {
                    let arrow = if i.mode == InputMode::Deltas {
                        "-.->"
                    } else {
                        "-->"
                    };
                    out.push_str(&format!(
                        "  {} {arrow}|{}| {}\n",
                        i.replica,
                        i.mode,
                        d.name()
                    ));
                }
            }
        }
    }
    write!(std::io::stdout().lock(), "{out}")?;
    let _ = m.runtime();
    m.shutdown()?;
    Ok(exit::OK)
}
