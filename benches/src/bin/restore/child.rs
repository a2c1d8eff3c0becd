//! The children of the restore benchmark: each measurement runs in its own process.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;
use prr_benches::drive::{ingest_dir, intent_counts};
use prr_benches::measure::{disk_size, emit_result, peak_rss, secs};
use prr_engine::RuntimeConfig;
use prr_replicas::{Event, Matrix, SourceItem};
use serde_json::{Map, json};

#[derive(Debug, Subcommand)]
pub(crate) enum Child {
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
    /// Restart on an existing store: read, restore the dataflow, ingest one membership (in
    /// `room`), then one ban rule matching it (in `policy_room`).
    #[command(hide = true)]
    Restore {
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        workers: u64,
        #[arg(long)]
        room: String,
        #[arg(long)]
        policy_room: String,
        /// Recompute every derived replica instead of resuming those that can be resumed.
        #[arg(long)]
        recompute: bool,
    },
    /// Where restore time goes: decode every revision, then restore the dataflow.
    #[command(hide = true)]
    Breakdown {
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        workers: u64,
    },
    /// Restore the dataflow, append `n` one-event source deltas without capturing revisions,
    /// print the result, then wait to be killed (SIGKILL by the parent).
    #[command(hide = true)]
    AppendAndWait {
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        workers: u64,
        #[arg(long)]
        n: usize,
        #[arg(long)]
        room: String,
    },
    /// Append `n` one-event source deltas without capturing revisions.
    #[command(hide = true)]
    Append {
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        workers: u64,
        #[arg(long)]
        n: usize,
        #[arg(long)]
        room: String,
    },
}

pub(crate) fn member_event(room: &str, user: &str, membership: &str, n: usize) -> SourceItem {
    let mut content = Map::new();
    content.insert("membership".into(), membership.into());
    SourceItem::Event(Event {
        event_id: format!("$bench{n}"),
        room_id: room.to_string(),
        event_type: "m.room.member".into(),
        state_key: Some(user.to_string()),
        sender: user.to_string(),
        origin_server_ts: Some(1_800_000_000_000 + n as i64),
        content,
        redacted_because: false,
        redacts: None,
    })
}

/// A literal ban rule on `user` in policy room `room`.
fn ban_rule(room: &str, user: &str, event_id: &str) -> SourceItem {
    let mut content = Map::new();
    content.insert("entity".into(), user.into());
    content.insert("recommendation".into(), "m.ban".into());
    content.insert("reason".into(), "restore benchmark".into());
    SourceItem::Event(Event {
        event_id: event_id.into(),
        room_id: room.to_string(),
        event_type: "m.policy.rule.user".into(),
        state_key: Some(format!("rule:{user}")),
        sender: "@bench:bench.example".into(),
        origin_server_ts: Some(1_900_000_000_000),
        content,
        redacted_because: false,
        redacts: None,
    })
}

/// Appends `n` one-event source deltas (joins and leaves of late users), each its own `Seq`,
/// in group commits of `group` deltas (`Matrix::ingest_many`).
fn append_deltas(m: &mut Matrix, n: usize, room: &str, group: usize) -> anyhow::Result<()> {
    let batches: Vec<Vec<SourceItem>> = (0..n)
        .map(|i| {
            let user = format!("@late{}:late.example", i / 2);
            vec![member_event(
                room,
                &user,
                if i % 2 == 0 { "join" } else { "leave" },
                i + 1,
            )]
        })
        .collect();
    for chunk in batches.chunks(group.max(1)) {
        m.ingest_many(chunk)?;
    }
    Ok(())
}

fn config(store: &Path, workers: u64) -> RuntimeConfig {
    RuntimeConfig::new()
        .with_store(store)
        .with_workers(workers as usize)
}

pub(crate) fn run_as_child(child: Child) -> anyhow::Result<()> {
    match child {
        Child::Ingest {
            dir,
            store,
            workers,
        } => {
            let mut m = Matrix::start(config(&store, workers))?;
            let t = ingest_dir(&mut m, &dir, 0)?;
            let counts = intent_counts(m.runtime())?;
            let rss_before_shutdown = peak_rss();
            let start = Instant::now();
            m.shutdown()?;
            let shutdown = secs(start);
            emit_result(json!({
                "parse": t.parse, "ingest": t.ingest, "last_file": t.last_file, "files": t.files,
                "shutdown": shutdown, "rss_before_shutdown": rss_before_shutdown,
                "store_bytes": disk_size(&store), "counts": counts,
            }));
        }
        Child::Restore {
            store,
            workers,
            room,
            policy_room,
            recompute,
        } => {
            let start = Instant::now();
            let mut m = Matrix::start(
                config(&store, workers)
                    .with_revision_on_shutdown(false)
                    .with_resume(!recompute),
            )?;
            let open = secs(start);
            let bans = m.show("member_bans", None, None)?.len();
            let read = secs(start);
            m.runtime().sync()?;
            let dataflow = secs(start);
            let resumed = m.runtime().resumed().to_vec();
            m.ingest(&[member_event(&room, "@probe:probe.example", "join", 0)])?;
            let first = secs(start);
            // The first policy change after a restart meets the old users: what it waits for.
            let t = Instant::now();
            m.ingest(&[ban_rule(&policy_room, "@probe:probe.example", "$benchrule")])?;
            let first_rule = secs(t);
            let rule_bans = m.show("member_bans", None, None)?.len() as i64 - bans as i64;
            // A glob rule meets the old users by their match keys: an index of them all.
            let t = Instant::now();
            m.ingest(&[ban_rule(
                &policy_room,
                "@probe*:probe.example",
                "$benchglob",
            )])?;
            let first_glob = secs(t);
            emit_result(json!({
                "open": open, "read": read, "dataflow": dataflow, "first": first,
                "first_rule": first_rule, "rule_bans": rule_bans, "first_glob": first_glob,
                "member_bans": bans, "resumed": resumed,
            }));
        }
        Child::Breakdown { store, workers } => {
            let start = Instant::now();
            let mut m = Matrix::start(config(&store, workers).with_revision_on_shutdown(false))?;
            let open = secs(start);
            let names: Vec<(String, bool)> = m
                .runtime()
                .dag()
                .replicas()
                .iter()
                .map(|d| (d.name().to_string(), d.is_source()))
                .collect();
            let mut decode = Map::new();
            let (mut sources, mut derived, mut records) = (0.0, 0.0, Map::new());
            for (name, is_source) in &names {
                let id = m.runtime().replica(name)?;
                let t = Instant::now();
                let rows = m.runtime().read(id, None)?;
                let s = secs(t);
                if *is_source {
                    sources += s
                } else {
                    derived += s
                }
                decode.insert(name.clone(), s.into());
                records.insert(name.clone(), rows.len().into());
            }
            let t = Instant::now();
            m.runtime().sync()?;
            let dataflow = secs(t);
            // What the store holds (after the clock): strings, revision bytes per replica.
            let mut revision_bytes = Map::new();
            let (mut strings, mut string_bytes) = (0u64, 0u64);
            if let Some(s) = m.runtime().store() {
                let infos = s.revisions()?;
                let newest = infos.iter().map(|i| i.as_of).max().unwrap_or(0);
                for info in infos.iter().filter(|i| i.as_of == newest) {
                    let bytes: usize = s
                        .revision_chunks(&info.replica, newest)?
                        .iter()
                        .map(Vec::len)
                        .sum();
                    revision_bytes.insert(info.replica.clone(), bytes.into());
                }
                let all = s.strings()?;
                strings = all.len() as u64;
                string_bytes = all.iter().map(|x| x.len() as u64).sum();
            }
            emit_result(json!({
                "open": open, "decode_sources": sources, "decode_derived": derived, "decode": decode,
                "records": records, "dataflow": dataflow, "revision_bytes": revision_bytes,
                "strings": strings, "string_bytes": string_bytes,
            }));
        }
        Child::Append {
            store,
            workers,
            n,
            room,
        } => {
            let mut m = Matrix::start(
                config(&store, workers)
                    .with_revision_on_shutdown(false)
                    .with_revision_every(None),
            )?;
            append_deltas(&mut m, n, &room, 100)?;
            let last = m.runtime().last_seq().0;
            m.shutdown()?;
            emit_result(json!({"appended": n, "last_seq": last}));
        }
        Child::AppendAndWait {
            store,
            workers,
            n,
            room,
        } => {
            let mut m = Matrix::start(
                config(&store, workers)
                    .with_revision_on_shutdown(false)
                    .with_revision_every(None),
            )?;
            m.runtime().sync()?;
            let start = Instant::now();
            append_deltas(&mut m, n, &room, 1000)?;
            let append = secs(start);
            let last = m.runtime().last_seq().0;
            emit_result(json!({"appended": n, "last_seq": last, "append": append}));
            // Committed and final: now wait for the SIGKILL (never a clean stop).
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
    Ok(())
}
