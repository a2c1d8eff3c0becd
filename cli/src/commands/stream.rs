//! `prr stream`: embedded streaming mode.

use std::io::{BufRead, Write};
use std::sync::mpsc;

use prr_replicas::{SourceItem, parse_line, to_json};
use serde_json::json;

use super::Ctx;
use crate::{Failure, exit};

pub fn stream(ctx: &Ctx, emit: &[String], max_batch: usize) -> Result<u8, Failure> {
    let mut m = ctx.open_streaming()?;
    let mut subs = Vec::new();
    for name in emit {
        let id = m.runtime().replica(name)?;
        subs.push((name.clone(), m.runtime().subscribe(id)?));
    }
    // A reader thread, so that lines that arrived together can be taken together.
    let (tx, rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(max_batch.max(1) * 4);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for (i, line) in stdin.lock().split(b'\n').enumerate() {
            match line {
                Ok(l) => {
                    if tx.send((i as u64 + 1, l)).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    let mut out = std::io::stdout().lock();
    let mut bad = 0u64;
    while let Ok(first) = rx.recv() {
        let mut lines = vec![first];
        while lines.len() < max_batch.max(1) {
            match rx.try_recv() {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        let line_range = match (lines.first(), lines.last()) {
            (Some(a), Some(b)) => format!("lines {}..={}", a.0, b.0),
            _ => String::new(),
        };
        let mut items: Vec<SourceItem> = Vec::with_capacity(lines.len());
        for (no, bytes) in lines {
            let text = match std::str::from_utf8(&bytes) {
                Ok(t) => t.trim_end_matches('\r'),
                Err(e) => {
                    bad += 1;
                    eprintln!(
                        "prr: <stdin>: line {no}: invalid UTF-8 at byte {}; line skipped",
                        e.valid_up_to()
                    );
                    continue;
                }
            };
            match parse_line("<stdin>", no, text) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {}
                Err(e) => {
                    bad += 1;
                    eprintln!("prr: {e}; line skipped");
                }
            }
        }
        if items.is_empty() {
            continue;
        }
        ingest_until_committed(&mut m, &items, &line_range)?;
        let dict = m.runtime().dictionary().clone();
        for (name, sub) in &subs {
            for d in sub.try_iter() {
                for (rec, diff) in &d.updates {
                    let line = json!({"seq": d.seq.0, "replica": name, "diff": diff, "record": to_json(&dict, rec)});
                    writeln!(out, "{line}")?;
                }
            }
        }
        out.flush()?;
    }
    let poisoned: Vec<String> = (m.runtime().newly_poisoned().iter())
        .map(|s| s.0.to_string())
        .collect();
    m.shutdown()?;
    if !poisoned.is_empty() {
        eprintln!(
            "prr: seq {} quarantined, a replica panicked on them (see `prr show poisoned`)",
            poisoned.join(", ")
        );
    }
    if bad > 0 {
        eprintln!("prr: {bad} bad lines skipped");
    }
    Ok(exit::OK)
}

/// Ingests one batch of lines as one source delta. A failure of the storage is reported and
/// the batch retried (each second, then less often) until it commits: the store says whether a
/// failed commit took place, so a batch is never committed twice. A revision capture that
/// fails after the commit is reported and left to the next capture. Any other error ends the
/// stream, naming the lines not committed.
fn ingest_until_committed(
    m: &mut prr_replicas::Matrix,
    items: &[SourceItem],
    lines: &str,
) -> Result<(), Failure> {
    let mut wait = std::time::Duration::from_secs(1);
    loop {
        let before = m.runtime().last_seq();
        let e = match m.ingest(items) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if let Some(seq) = e.committed().last() {
            eprintln!("prr: warning: <stdin>: {lines}: {e}");
            return Ok(m.wait(*seq)?);
        }
        if !e.is_storage_failure() {
            return Err(Failure::new(
                exit::FAILURE,
                anyhow::anyhow!(
                    "<stdin>: {lines} not committed (the last committed seq is {before}): {e}"
                ),
            ));
        }
        eprintln!(
            "prr: <stdin>: {lines}: {e}; retrying in {}s",
            wait.as_secs()
        );
        std::thread::sleep(wait);
        wait = (wait * 2).min(std::time::Duration::from_secs(30));
        if e.is_in_doubt() {
            // Read the store back (settling the commit in doubt) before sending it again.
            if m.runtime().sync().is_ok() && m.runtime().last_seq() > before {
                eprintln!(
                    "prr: <stdin>: {lines}: committed after all as seq {}",
                    m.runtime().last_seq()
                );
                return Ok(());
            }
        }
    }
}
