//! The ops files (one change per line, each a source delta of its own) and the source items
//! the W3 and W5 workload writers build.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use prr_benches::item_to_json;
use prr_replicas::{SourceItem, parse_file};
use serde_json::{Value, json};

/// One change: a source delta of its own.
pub(crate) struct Op {
    pub(crate) kind: String,
    pub(crate) timed: bool,
    pub(crate) items: Vec<SourceItem>,
}

pub(crate) fn read_ops(path: &Path) -> anyhow::Result<Vec<Op>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut ops = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)?;
        let kind = v["kind"].as_str().context("op kind")?.to_string();
        let timed = v["timed"].as_bool().context("op timed")?;
        let events = serde_json::to_vec(&v["events"])?;
        let items = parse_file(&format!("{}:{}", path.display(), i + 1), &events)?;
        ops.push(Op { kind, timed, items });
    }
    Ok(ops)
}

pub(crate) fn write_ops(
    path: &Path,
    ops: &[(String, bool, Vec<SourceItem>)],
) -> anyhow::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    for (kind, timed, items) in ops {
        let events: Vec<Value> = items.iter().map(item_to_json).collect();
        serde_json::to_writer(
            &mut w,
            &json!({"kind": kind, "timed": timed, "events": events}),
        )?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

pub(crate) fn write_items(path: &Path, items: &[SourceItem]) -> anyhow::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    match items {
        [item @ SourceItem::Manifest(_)] => serde_json::to_writer(&mut w, &item_to_json(item))?,
        items => serde_json::to_writer(
            &mut w,
            &Value::Array(items.iter().map(item_to_json).collect()),
        )?,
    }
    w.flush()?;
    Ok(())
}

/// A state event of the W3 and W5 workloads (all at one time).
pub(crate) fn state_event(
    event_id: String,
    room: &str,
    ty: &str,
    state_key: &str,
    sender: &str,
    content: Value,
) -> SourceItem {
    prr_benches::state_event(
        event_id,
        room,
        ty,
        state_key,
        sender,
        1_800_000_000_000,
        content,
    )
}

pub(crate) fn user_rule(
    event_id: String,
    room: &str,
    key: &str,
    entity: Option<&str>,
) -> SourceItem {
    let content = match entity {
        Some(e) => json!({"entity": e, "recommendation": "m.ban", "reason": "fan-out test"}),
        None => json!({}),
    };
    state_event(
        event_id,
        room,
        "m.policy.rule.user",
        key,
        "@mod:w3.example",
        content,
    )
}
