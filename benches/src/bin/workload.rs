//! Writes a benchmark workload as the files `prr ingest` reads, and prints what it holds.
//!
//! ```text
//! cargo run --release -p prr-benches --bin workload -- --size medium --dir /tmp/wl
//! prr --store /tmp/wl.redb ingest /tmp/wl
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use prr_benches::harness::args::WorkloadArgs;
use prr_benches::harness::table::{Table, fmt_bytes};
use prr_replicas::{ManifestEntry, SourceItem};

/// Writes a benchmark workload.
#[derive(Debug, Parser)]
#[command(name = "workload")]
struct Cli {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Where to write the files (default: a temporary directory, deleted at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (config, w) = cli.workload.generate();
    let tmp = tempfile::tempdir()?;
    let dir = cli
        .dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("workload"));
    let stats = w.write(&dir)?;

    // Rules per instance (the size of `policy_list`) and rooms per instance, from the manifest.
    let mut rules_by_room: BTreeMap<String, usize> = BTreeMap::new();
    let mut list_records = 0usize;
    let mut protect_slots = 0usize;
    for file in w.files() {
        for item in &file.items {
            match item {
                SourceItem::Event(e) if e.event_type.starts_with("m.policy.rule.") => {
                    *rules_by_room.entry(e.room_id.clone()).or_default() += 1;
                }
                SourceItem::Manifest(entries) => {
                    for entry in entries {
                        if let ManifestEntry::Set { watch, protect, .. } = entry {
                            list_records += watch
                                .iter()
                                .map(|r| rules_by_room.get(r).copied().unwrap_or(0))
                                .sum::<usize>();
                            protect_slots += protect.len();
                        }
                    }
                }
                _ => {}
            }
        }
    }

    println!(
        "## workload: size {}, seed {}\n",
        cli.workload.name(),
        cli.workload.seed
    );
    let mut t = Table::new(&["what", "count"]);
    t.row(vec![
        "files (policy rooms, protected rooms, manifest)".into(),
        stats.files.to_string(),
    ]);
    t.row(vec!["state events".into(), stats.events.to_string()]);
    t.row(vec!["policy rules".into(), stats.rules.to_string()]);
    t.row(vec!["policy rooms".into(), config.policy_rooms.to_string()]);
    t.row(vec![
        "membership records".into(),
        stats.memberships.to_string(),
    ]);
    t.row(vec![
        "protected rooms".into(),
        config.protected_rooms.to_string(),
    ]);
    t.row(vec![
        "largest protected room".into(),
        stats.largest_room.to_string(),
    ]);
    t.row(vec![
        "users in the pool / servers".into(),
        format!("{} / {}", config.users, config.servers),
    ]);
    t.row(vec!["instances".into(), stats.instances.to_string()]);
    t.row(vec![
        "(instance, protected room) pairs".into(),
        protect_slots.to_string(),
    ]);
    t.row(vec![
        "(instance, rule) pairs: `policy_list` records".into(),
        list_records.to_string(),
    ]);
    t.row(vec!["bytes written".into(), fmt_bytes(stats.bytes as f64)]);
    println!("{}", t.render());
    if cli.dir.is_some() {
        println!("Written to {}.", dir.display());
    }
    Ok(())
}
