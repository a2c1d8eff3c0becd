//! `prr stream`: embedded streaming mode.

use std::io::{BufRead, Write};
use std::sync::mpsc;

use prr_replicas::{SourceItem, parse_line, to_json};
use serde_json::json;

use super::Ctx;
use crate::{Failure, exit};

pub fn stream(ctx: &Ctx, emit: &[String], max_batch: usize) -> Result<u8, Failure> {
    let mut m = ctx.open()?;
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
        m.ingest(&items)?;
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
