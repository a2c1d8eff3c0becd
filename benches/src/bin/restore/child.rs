//! The children of the restore benchmark: each measurement runs in its own process.

use std::path::Path;
use std::time::Instant;

use clap::{Args, Subcommand};
use prr_benches::drive::{ingest_dir, intent_counts};
use prr_benches::harness::args::{IngestArgs, StoreArgs};
use prr_benches::harness::child::emit_result;
use prr_benches::measure::{disk_size, peak_rss, secs};
use prr_benches::state_event;
use prr_persist::Store;
use prr_replicas::{Matrix, SourceItem};
use serde_json::{Map, json};

#[derive(Debug, Subcommand)]
pub(crate) enum Child {
    /// Fresh store: ingest every file, then a clean shutdown.
    #[command(hide = true)]
    Ingest(IngestArgs),
    /// Restart on an existing store: read, restore the dataflow, ingest one membership (in
    /// `room`), then one ban rule matching it (in `policy_room`).
    #[command(hide = true)]
    Restore {
        #[command(flatten)]
        store: StoreArgs,
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
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Restore the dataflow, append `n` one-event source deltas without capturing revisions,
    /// print the result, then wait to be killed (SIGKILL by the parent).
    #[command(hide = true)]
    AppendAndWait(AppendArgs),
    /// Append `n` one-event source deltas without capturing revisions.
    #[command(hide = true)]
    Append(AppendArgs),
}

/// The options of the children that append source deltas.
#[derive(Debug, Args)]
pub(crate) struct AppendArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// How many one-event source deltas.
    #[arg(long)]
    n: usize,
    /// The protected room they go to.
    #[arg(long)]
    room: String,
}

impl AppendArgs {
    /// Starts the runtime on the store, capturing no revision, and appends the deltas in group
    /// commits of `group`; returns it with the seconds the appending took.
    fn start_and_append(&self, group: usize, sync: bool) -> anyhow::Result<(Matrix, f64)> {
        let mut m = Matrix::start(
            self.store
                .config()
                .with_revision_on_shutdown(false)
                .with_revision_every(None),
        )?;
        if sync {
            m.runtime().sync()?;
        }
        let start = Instant::now();
        append_deltas(&mut m, self.n, &self.room, group)?;
        Ok((m, secs(start)))
    }
}

/// A membership event of `user` in `room`, number `n`.
fn member_event(room: &str, user: &str, membership: &str, n: usize) -> SourceItem {
    state_event(
        format!("$bench{n}"),
        room,
        "m.room.member",
        user,
        user,
        1_800_000_000_000 + n as i64,
        json!({ "membership": membership }),
    )
}

/// A literal ban rule on `user` in policy room `room`.
fn ban_rule(room: &str, user: &str, event_id: &str) -> SourceItem {
    state_event(
        event_id.into(),
        room,
        "m.policy.rule.user",
        &format!("rule:{user}"),
        "@bench:bench.example",
        1_900_000_000_000,
        json!({"entity": user, "recommendation": "m.ban", "reason": "restore benchmark"}),
    )
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

/// What the store holds: the encoded bytes of each replica's newest revision, and the
/// interned strings (their count and bytes). Read from the file once no runtime holds it.
fn store_contents(path: &Path) -> anyhow::Result<(Map<String, serde_json::Value>, u64, u64)> {
    let s = Store::open_read_only(path)?;
    let mut revision_bytes = Map::new();
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
    let strings = all.len() as u64;
    let string_bytes = all.iter().map(|x| x.len() as u64).sum();
    Ok((revision_bytes, strings, string_bytes))
}

pub(crate) fn run_as_child(child: Child) -> anyhow::Result<()> {
    match child {
        Child::Ingest(IngestArgs { dir, store }) => {
            let mut m = Matrix::start(store.config())?;
            let t = ingest_dir(&mut m, &dir, 0)?;
            let counts = intent_counts(m.runtime())?;
            let rss_before_shutdown = peak_rss();
            let start = Instant::now();
            m.shutdown()?;
            let shutdown = secs(start);
            emit_result(json!({
                "parse": t.parse, "ingest": t.ingest, "last_file": t.last_file, "files": t.files,
                "shutdown": shutdown, "rss_before_shutdown": rss_before_shutdown,
                "store_bytes": disk_size(&store.store), "counts": counts,
            }));
        }
        Child::Restore {
            store,
            room,
            policy_room,
            recompute,
        } => {
            let start = Instant::now();
            let mut m = Matrix::start(
                store
                    .config()
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
        Child::Breakdown { store } => {
            let start = Instant::now();
            let mut m = Matrix::start(store.config().with_revision_on_shutdown(false))?;
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
            // What the store holds (after the clock), read once the runtime has let it go
            // (stopped without capturing a revision: the store is as the restart found it).
            m.shutdown()?;
            let (revision_bytes, strings, string_bytes) = store_contents(&store.store)?;
            emit_result(json!({
                "open": open, "decode_sources": sources, "decode_derived": derived, "decode": decode,
                "records": records, "dataflow": dataflow, "revision_bytes": revision_bytes,
                "strings": strings, "string_bytes": string_bytes,
            }));
        }
        Child::Append(args) => {
            let (mut m, _) = args.start_and_append(100, false)?;
            let last = m.runtime().last_seq().0;
            m.shutdown()?;
            emit_result(json!({"appended": args.n, "last_seq": last}));
        }
        Child::AppendAndWait(args) => {
            let (mut m, append) = args.start_and_append(1000, true)?;
            let last = m.runtime().last_seq().0;
            emit_result(json!({"appended": args.n, "last_seq": last, "append": append}));
            // Committed and final: now wait for the SIGKILL (never a clean stop).
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
    Ok(())
}
