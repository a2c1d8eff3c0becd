//! Issue 18, through Synapse: the latency a join gains from the door-check module
//! (`contrib/synapse/prr_synapse.py`). Two Synapses run side by side from the harness's venv
//! (`bash scripts/synapse-venv.sh` first), one loading the module that asks a `prr serve` whose
//! store holds a policy room of that Synapse (literal, glob and hashed user rules) protecting
//! the joined room, one without it. Ordinary users join each Synapse's public room in turn
//! (one join at a time, alternating between the two); the users are let in. A few users that a
//! rule names are refused on the module's Synapse, for comparison.
//!
//! ```text
//! cargo run --release -p prr-benches --bin synapse_door -- --size small
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use prr_benches::measure::{load_average, machine_line};
use prr_benches::waves::{percentile, prr_binary};
use prr_synapse_harness::{
    Client, PolicyRule, RoomOptions, RuleKind, Synapse, SynapseConfig, venv_dir,
};
use serde_json::json;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Size {
    Small,
    Medium,
    Large,
}

/// Joins through Synapse with and without the door-check module.
#[derive(Debug, Parser)]
#[command(name = "synapse_door")]
struct Cli {
    /// small: 30 joins on each Synapse and 50 rules; medium: 300 and 500; large: 1000 and 2000.
    #[arg(long, value_enum, default_value_t = Size::Small)]
    size: Size,
}

/// `prr serve` on a free loopback port, killed on drop.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start(store: &Path) -> anyhow::Result<Serve> {
        let mut child = Command::new(prr_binary()?)
            .arg("--store")
            .arg(store)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start prr serve")?;
        let stdout = child.stdout.take().context("prr serve's stdout")?;
        let mut serve = Serve {
            child,
            url: String::new(),
        };
        for line in BufReader::new(stdout).lines() {
            if let Some(a) = line?.strip_prefix("listening on ") {
                serve.url = format!("http://{a}");
                return Ok(serve);
            }
        }
        bail!("prr serve ended without `listening on ADDR`")
    }

    fn ingest(&self, body: &str) -> anyhow::Result<()> {
        ureq::post(&format!("{}/v1/ingest", self.url))
            .send(body)
            .context("POST /v1/ingest")?;
        Ok(())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The module's directory.
fn contrib() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/synapse");
    dir.canonicalize()
        .with_context(|| format!("{}", dir.display()))
}

fn synapse(module_url: Option<&str>) -> anyhow::Result<Synapse> {
    let mut c = SynapseConfig::new().with_option("bcrypt_rounds", json!(4));
    if let Some(url) = module_url {
        c = c.with_python_path(&contrib()?).with_option(
            "modules",
            json!([{"module": "prr_synapse.PrrDoorCheck", "config": {"url": url}}]),
        );
    }
    Synapse::start(c).with_context(|| format!("start Synapse from {}", venv_dir().display()))
}

/// A public room of `owner` that every member may invite to.
fn room(owner: &Client) -> anyhow::Result<String> {
    let options = RoomOptions::new().public().with_name("protected");
    Ok(owner.create_room(&options.with_power_levels(json!({"invite": 0})))?)
}

/// Milliseconds of one join, and whether it was let in.
fn timed_join(user: &Client, room: &str) -> (f64, bool) {
    let start = Instant::now();
    let ok = user.join(room).is_ok();
    (start.elapsed().as_secs_f64() * 1e3, ok)
}

fn row(what: &str, mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
    format!(
        "| {what} | {} | {:.1} | {:.1} | {:.1} |",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        mean
    )
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (joins, rules) = match cli.size {
        Size::Small => (30, 50),
        Size::Medium => (300, 500),
        Size::Large => (1000, 2000),
    };
    let store = tempfile::tempdir()?;
    let serve = Serve::start(&store.path().join("prr.redb"))?;
    let with = synapse(Some(&serve.url))?;
    let without = synapse(None)?;

    // The module's Synapse: a policy room (an admin keeps it) and a protected room.
    let moderator = with.register("moderator", "pw", true)?;
    let list = moderator.create_room(&RoomOptions::new().public().with_name("ban list"))?;
    for i in 0..rules {
        let rule = match i % 10 {
            0 => PolicyRule::entity(RuleKind::User, &format!("@spam{i}*:localhost")),
            1 => PolicyRule::hashed(RuleKind::User, &format!("@hidden{i}:localhost")),
            _ => PolicyRule::entity(RuleKind::User, &format!("@bad{i}:localhost")),
        };
        moderator.send_rule(&list, &rule.with_reason("bench"))?;
    }
    let owners = [
        with.register("owner", "pw", false)?,
        without.register("owner", "pw", false)?,
    ];
    let rooms = [room(&owners[0])?, room(&owners[1])?];
    let manifest = json!({"instances": [
        {"id": "@bot:localhost", "watch": [list], "protect": [rooms[0]]},
    ]});
    serve.ingest(&manifest.to_string())?;
    serve.ingest(&moderator.state_export(&list)?)?;

    // The same user names on both Synapses, in pairs.
    let mut pairs = Vec::new();
    for i in 0..joins {
        let name = format!("user{i}");
        pairs.push([
            with.register(&name, "pw", false)?,
            without.register(&name, "pw", false)?,
        ]);
    }
    let mut ms = [Vec::new(), Vec::new()];
    for pair in &pairs {
        for side in [0, 1] {
            let (t, ok) = timed_join(&pair[side], &rooms[side]);
            if !ok {
                bail!("{} was refused (side {side})", pair[side].user_id());
            }
            ms[side].push(t);
        }
    }
    let mut refused = Vec::new();
    for i in (2..rules).step_by(10).take(joins.min(50)) {
        let user = with.register(&format!("bad{i}"), "pw", false)?;
        let (t, ok) = timed_join(&user, &rooms[0]);
        if ok {
            bail!("bad{i} was let in");
        }
        refused.push(t);
    }

    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        percentile(&v, 50.0)
    };
    let added = median(&ms[0]) - median(&ms[1]);
    println!("## Joins through Synapse with and without the door-check module ({rules} rules)\n");
    println!("{}", machine_line());
    println!();
    println!("| Synapse | joins | p50 (ms) | p99 (ms) | mean (ms) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!("{}", row("with the module, let in", ms[0].clone()));
    println!("{}", row("without it", ms[1].clone()));
    println!("{}", row("with the module, refused", refused));
    println!(
        "\nAdded by the module (p50 with minus p50 without): {added:.1} ms. Load average after: {}.",
        load_average()
    );
    // Both Synapses and prr serve stop on drop.
    Ok(())
}
