//! Hostile policy rules end to end (issue 15, problem 5): rules built to make matching slow,
//! ingested through [`Matrix`] on a store, one protected room of many members, each case in a
//! fresh child process:
//!
//! - **long**: one rule whose entity is `"*a" * 32767 + "*b"` (64 KiB), as a user rule and as
//!   a server rule, ingested after the members: the time until every replica is final;
//! - **short**: many rules `*a*a*a*a*a*a*a*a*b` (no literal part to index them by: every one
//!   is compared with every member), ingested after the members;
//! - **joins**: 100 long rules in force, then single membership joins, one source delta each:
//!   the median time until every replica is final, beside the same joins without the rules.
//!
//! A few members are built to match the short rules (`@aaaaaaaa:b`), so the run checks the
//! matches it finds: exactly those members for each short rule, none for the long rules.
//!
//! ```text
//! cargo run --release -p prr-benches --bin hostile_rules -- --size small
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use prr_benches::Size;
use prr_benches::harness::args::{MemoryArgs, StoreArgs, WorkDirArgs, WorkersArgs};
use prr_benches::harness::child::{ChildArgs, Children, emit_result};
use prr_benches::harness::table::{Table, fmt_ratio, fmt_secs, verdict};
use prr_benches::measure::{machine_line, secs};
use prr_benches::waves::median;
use prr_replicas::{Matrix, SourceItem, parse_file};
use serde_json::{Value, json};

/// Hostile policy rules through the replicas: one 64 KiB glob, many short hostile globs, and
/// single joins under long rules.
#[derive(Debug, Parser)]
#[command(name = "hostile_rules")]
struct Cli {
    /// The size: `large` is issue 15's (10,000 members, 10,000 short rules, 100 long rules).
    #[arg(long, value_enum, default_value_t = Size::Small)]
    size: Size,
    #[command(flatten)]
    workers: WorkersArgs,
    #[command(flatten)]
    memory: MemoryArgs,
    #[command(flatten)]
    work: WorkDirArgs,
    /// A child measurement (internal).
    #[command(subcommand)]
    child: Option<Child>,
}

#[derive(Debug, Subcommand)]
enum Child {
    /// Ingest the members, then measure one case.
    #[command(hide = true)]
    Measure {
        #[command(flatten)]
        store: StoreArgs,
        /// `long-user`, `long-server`, `short`, `joins` or `joins-baseline`.
        #[arg(long)]
        case: String,
        #[arg(long)]
        members: usize,
        #[arg(long)]
        rules: usize,
        #[arg(long)]
        joins: usize,
    },
}

/// The counts of one size: members, short rules, long rules, single joins.
fn counts(size: Size) -> (usize, usize, usize, usize) {
    match size {
        Size::Small => (1_000, 200, 10, 10),
        Size::Medium => (10_000, 1_000, 100, 30),
        Size::Large => (10_000, 10_000, 100, 50),
    }
}

const LIST: &str = "!list:hostile.example";
const ROOM: &str = "!room:hostile.example";
/// Members built to match the short rule (eight `a`, then a `b` at the end).
const MATCHING: [&str; 3] = ["@aaaaaaaa:b", "@a:aaaaaaab", "@xaxaxaxaxaxaxaxa:yb"];
const SHORT: &str = "*a*a*a*a*a*a*a*a*b";

/// Issue 15's long rule: `"*a" * 32767 + "*b"`.
fn long_entity() -> String {
    format!("{}*b", "*a".repeat(32_767))
}

fn file(name: &str, events: Vec<Value>) -> anyhow::Result<Vec<SourceItem>> {
    let bytes = serde_json::to_vec(&events)?;
    parse_file(name, &bytes).with_context(|| format!("parsing the generated {name}"))
}

fn member(i: usize, user: &str) -> Value {
    json!({"event_id": format!("$m{i}"), "room_id": ROOM, "type": "m.room.member",
           "state_key": user, "sender": user, "content": {"membership": "join"}})
}

fn rule(i: usize, kind: &str, entity: &str) -> Value {
    json!({"event_id": format!("$r{kind}{i}"), "room_id": LIST,
           "type": format!("m.policy.rule.{kind}"), "state_key": format!("{kind}{i}"),
           "sender": "@mod:hostile.example",
           "content": {"entity": entity, "recommendation": "m.ban", "reason": "hostile"}})
}

/// Member `i`'s user ID: spread over 50 servers, none matching the hostile rules.
fn user(i: usize) -> String {
    format!("@user{i}:server{}.example.org", i % 50)
}

fn matches(m: &mut Matrix) -> anyhow::Result<usize> {
    let rt = m.runtime();
    let id = rt.replica("member_matches")?;
    Ok(rt.read(id, None)?.len())
}

fn measure(
    store: &StoreArgs,
    case: &str,
    members: usize,
    rules: usize,
    joins: usize,
) -> anyhow::Result<()> {
    let mut m = Matrix::start(store.config().with_revision_on_shutdown(false))?;
    let manifest = br#"{"instances": [{"id": "@bot:good.example", "watch": ["!list:hostile.example"], "protect": ["!room:hostile.example"]}]}"#;
    m.ingest(&parse_file("manifest.json", manifest)?)?;
    let mut events: Vec<Value> = (0..members).map(|i| member(i, &user(i))).collect();
    events.extend(
        MATCHING
            .iter()
            .enumerate()
            .map(|(i, u)| member(members + i, u)),
    );
    m.ingest(&file("members.json", events)?)?;
    let long = long_entity();
    let (secs_taken, expected, extra) = match case {
        "long-user" | "long-server" => {
            let kind = case.trim_start_matches("long-");
            let items = file("rule.json", vec![rule(0, kind, &long)])?;
            let t = Instant::now();
            m.ingest(&items)?;
            (secs(t), 0, json!({}))
        }
        "short" => {
            let items = file(
                "rules.json",
                (0..rules).map(|i| rule(i, "user", SHORT)).collect(),
            )?;
            let t = Instant::now();
            m.ingest(&items)?;
            (secs(t), rules * MATCHING.len(), json!({}))
        }
        "joins" | "joins-baseline" => {
            if case == "joins" {
                let items = file(
                    "rules.json",
                    (0..rules).map(|i| rule(i, "user", &long)).collect(),
                )?;
                m.ingest(&items)?;
            }
            let mut each = Vec::with_capacity(joins);
            for j in 0..joins {
                let u = format!("@joiner{j}:late.example.org");
                let items = file("join.json", vec![member(members + 100 + j, &u)])?;
                let t = Instant::now();
                m.ingest(&items)?;
                each.push(secs(t));
            }
            (median(each.clone()), 0, json!({"each": each}))
        }
        other => bail!("unknown case {other:?}"),
    };
    let found = matches(&mut m)?;
    if found != expected {
        bail!("{case}: {found} member_matches records, expected {expected}");
    }
    emit_result(json!({"secs": secs_taken, "matches": found, "extra": extra}));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Child::Measure {
        store,
        case,
        members,
        rules,
        joins,
    }) = &cli.child
    {
        return measure(store, case, *members, *rules, *joins);
    }
    let tmp = tempfile::tempdir()?;
    let work = cli.work.prepare(tmp.path())?;
    let (members, short, long, joins) = counts(cli.size);
    let children = Children::new("hostile_rules", cli.memory.uncapped()).showing_load();
    let run = |case: &str, rules: usize| -> anyhow::Result<(f64, f64)> {
        let store: PathBuf = work.join(format!("{case}.redb"));
        let _ = std::fs::remove_file(&store);
        let args = ChildArgs::new("measure")
            .store(&store, cli.workers.workers)
            .opt("--case", case)
            .opt("--members", members)
            .opt("--rules", rules)
            .opt("--joins", joins);
        let out = children.result(&args, case)?;
        let _ = std::fs::remove_file(&store);
        Ok((
            out.num("secs").unwrap_or(f64::NAN),
            out.num("matches").unwrap_or(f64::NAN),
        ))
    };
    let (long_user, _) = run("long-user", 1)?;
    let (long_server, _) = run("long-server", 1)?;
    let (short_secs, short_matches) = run("short", short)?;
    let (joins_secs, _) = run("joins", long)?;
    let (baseline_secs, _) = run("joins-baseline", 0)?;

    println!(
        "## Hostile rules (issue 15, problem 5): size {}, {members} members in one protected room (+{} built to match), {} worker(s)\n",
        cli.size.name(),
        MATCHING.len(),
        cli.workers.workers
    );
    println!("{}\n", machine_line());
    let mut t = Table::new(&["case", "issue 15 (before)", "now", "target", "verdict"]);
    let full = cli.size == Size::Large;
    let issue = |s: &str| if full { s.to_string() } else { "-".into() };
    t.row(vec![
        "(a) one user rule `\"*a\" * 32767 + \"*b\"`: its ingest".into(),
        issue("40 s"),
        fmt_secs(long_user),
        "< 50 ms".into(),
        verdict(long_user < 0.05).into(),
    ]);
    t.row(vec![
        "(a) the same as a server rule".into(),
        issue("52 s"),
        fmt_secs(long_server),
        "< 50 ms".into(),
        verdict(long_server < 0.05).into(),
    ]);
    t.row(vec![
        format!("(b) {short} rules `{SHORT}`: their ingest ({short_matches} matches)"),
        issue("98 s"),
        fmt_secs(short_secs),
        "≤ 4.9 s (20x faster) at large".into(),
        if full {
            format!(
                "{} ({})",
                verdict(short_secs <= 4.9),
                fmt_ratio(98.0, short_secs)
            )
        } else {
            "-".into()
        },
    ]);
    t.row(vec![
        format!("(c) one join, {long} long rules in force (median of {joins})"),
        issue("0.44 s"),
        fmt_secs(joins_secs),
        "≤ 2x without the rules".into(),
        format!(
            "{} ({} without)",
            verdict(joins_secs <= 2.0 * baseline_secs),
            fmt_ratio(joins_secs, baseline_secs)
        ),
    ]);
    t.row(vec![
        format!("(c) one join, no rules (median of {joins})"),
        issue("0.02 s"),
        fmt_secs(baseline_secs),
        "-".into(),
        "-".into(),
    ]);
    println!("{}", t.render());
    Ok(())
}
