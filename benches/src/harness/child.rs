//! Child processes: every measurement runs in a fresh child process (the benchmark binary
//! itself, with a hidden subcommand, or `node` for the matrix-protection-suite peer), so
//! memory and caches do not leak from one measurement into the next.
//!
//! A child prints JSON lines on standard output: `{"progress": {...}}` while it works and
//! `{"result": {...}}` at the end ([`emit_progress`], [`emit_result`]). The parent runs it
//! with [`run_child`] or, naming the benchmark and its limits once, with [`Children`]; it kills
//! a child that outlives its cap or passes its memory limit, and keeps its last progress line.

use std::fmt::Display;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::harness::table::fmt_bytes;
use crate::measure::{load_average, peak_rss, rss_of, secs};
use crate::workload::Size;

/// Prints one JSON line for the parent and flushes it.
pub fn emit(line: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints a progress line: `{"progress": value}`.
pub fn emit_progress(value: Value) {
    emit(&json!({ "progress": value }));
}

/// Prints the result line: `{"result": value}`, with the peak RSS added.
pub fn emit_result(mut value: Value) {
    if let Value::Object(m) = &mut value {
        m.insert("peak_rss".into(), peak_rss().into());
    }
    emit(&json!({ "result": value }));
}

/// How a child process ended.
#[derive(Debug, Default)]
pub struct ChildOutcome {
    /// Its `{"result": ...}` value, if it printed one.
    pub result: Option<Value>,
    /// Its last `{"progress": ...}` value.
    pub last_progress: Option<Value>,
    /// Whether it was killed at the time cap.
    pub timed_out: bool,
    /// Whether it was killed for passing the memory limit.
    pub out_of_memory: bool,
    /// The largest resident size the parent saw while polling (every 200 ms), in bytes.
    pub max_rss_seen: u64,
    /// Wall-clock seconds from spawn to exit (or kill).
    pub wall: f64,
    /// Its exit status, if it exited by itself.
    pub status: Option<std::process::ExitStatus>,
    /// The end of its standard error.
    pub stderr_tail: String,
}

impl ChildOutcome {
    /// A number from the result.
    pub fn num(&self, field: &str) -> Option<f64> {
        self.result.as_ref()?.get(field)?.as_f64()
    }

    /// Why there is no result, for a table cell.
    pub fn failure(&self) -> String {
        if self.timed_out {
            "timed out".into()
        } else if self.out_of_memory {
            format!(
                "killed above the memory limit (RSS {})",
                fmt_bytes(self.max_rss_seen as f64)
            )
        } else {
            let tail: String = self
                .stderr_tail
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .join(" / ");
            format!(
                "failed ({}): {tail}",
                self.status.map(|s| s.to_string()).unwrap_or_default()
            )
        }
    }
}

/// Limits of a child process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// Wall-clock time after which it is killed.
    pub cap: Option<Duration>,
    /// Resident memory (bytes) above which it is killed, so that a run too large for the
    /// machine does not bring the OOM killer onto other processes.
    pub max_rss: Option<u64>,
}

/// Runs a child to completion, or kills it when it passes a limit. Its standard error is
/// kept (the last 4 KiB) and also echoed to ours when `echo_stderr`.
pub fn run_child(
    mut cmd: Command,
    limits: Limits,
    echo_stderr: bool,
) -> anyhow::Result<ChildOutcome> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let err_reader = read_stderr_tail(stderr, echo_stderr);
    let mut outcome = ChildOutcome::default();
    let deadline = limits.cap.map(|c| start + c);
    let tick = Duration::from_millis(200);
    loop {
        match rx.recv_timeout(tick) {
            Ok(v) => {
                if let Some(p) = v.get("progress") {
                    outcome.last_progress = Some(p.clone());
                }
                if let Some(r) = v.get("result") {
                    outcome.result = Some(r.clone());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let over_time = deadline.is_some_and(|d| Instant::now() >= d);
        let rss = rss_of(child.id()).unwrap_or(0);
        outcome.max_rss_seen = outcome.max_rss_seen.max(rss);
        let over_memory = limits.max_rss.is_some_and(|m| rss > m);
        if over_time || over_memory {
            outcome.timed_out = over_time;
            outcome.out_of_memory = over_memory;
            // Our own child, by its handle.
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait()?;
    outcome.wall = secs(start);
    if !outcome.timed_out && !outcome.out_of_memory {
        outcome.status = Some(status);
    }
    let _ = reader.join();
    outcome.stderr_tail = err_reader.join().unwrap_or_default();
    if echo_stderr {
        // A record on standard error of every child, so a run cut short keeps what it measured.
        let summary = match (&outcome.result, &outcome.last_progress) {
            (Some(r), _) => format!("result {r}"),
            (None, Some(p)) => format!("{}; last progress {p}", outcome.failure()),
            (None, None) => outcome.failure(),
        };
        eprintln!("  -> {:.1} s wall: {summary}", outcome.wall);
    }
    Ok(outcome)
}

/// Reads a child's standard error until it closes, on a thread of its own (so the child never
/// blocks on a full pipe); the thread returns the end of it (the last 4 to 8 KiB), and echoes
/// it to ours as it comes when `echo`.
pub fn read_stderr_tail(mut stderr: ChildStderr, echo: bool) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if echo {
                        let _ = std::io::stderr().write_all(&buf[..n]);
                    }
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 8192 {
                        tail.drain(..tail.len() - 4096);
                    }
                }
            }
        }
        String::from_utf8_lossy(&tail).into_owned()
    })
}

/// The current executable, to spawn children of the same benchmark.
pub fn self_command() -> anyhow::Result<Command> {
    Ok(Command::new(std::env::current_exe()?))
}

/// The command line of a child process of a benchmark binary: a (hidden) subcommand and its
/// options, built in the order they are given.
///
/// ```
/// use prr_benches::harness::child::ChildArgs;
///
/// let args = ChildArgs::new("ingest").opt("--workers", 2).list("--rates", &[100, 300]);
/// assert_eq!(args.as_slice(), ["ingest", "--workers", "2", "--rates", "100,300"]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildArgs(Vec<String>);

impl ChildArgs {
    /// The subcommand alone.
    pub fn new(subcommand: &str) -> Self {
        ChildArgs(vec![subcommand.to_string()])
    }

    /// Adds an option and its value: `--name value`.
    pub fn opt(mut self, name: &str, value: impl Display) -> Self {
        self.0.push(name.to_string());
        self.0.push(value.to_string());
        self
    }

    /// Adds an option whose value is a path.
    pub fn path(self, name: &str, path: &Path) -> Self {
        self.opt(name, path.display())
    }

    /// Adds an option whose value is a path, if there is one.
    pub fn path_if(self, name: &str, path: Option<&Path>) -> Self {
        match path {
            Some(p) => self.path(name, p),
            None => self,
        }
    }

    /// Adds an option whose value is a comma-separated list.
    pub fn list(self, name: &str, values: &[impl Display]) -> Self {
        let joined: Vec<String> = values.iter().map(ToString::to_string).collect();
        self.opt(name, joined.join(","))
    }

    /// Adds a flag without a value.
    pub fn flag(mut self, name: &str) -> Self {
        self.0.push(name.to_string());
        self
    }

    /// Adds `--size` and `--seed` (as `harness::args::WorkloadArgs` reads them).
    pub fn workload(self, size: Size, seed: u64) -> Self {
        self.opt("--size", size.name()).opt("--seed", seed)
    }

    /// Adds `--store` and `--workers` (as `harness::args::StoreArgs` reads them).
    pub fn store(self, store: &Path, workers: u64) -> Self {
        self.path("--store", store).opt("--workers", workers)
    }

    /// The arguments, subcommand first.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// Ends a child once its result is printed, without the teardown of its large maps and
/// dataflows (not part of the measurement).
pub fn exit_without_teardown() -> ! {
    std::process::exit(0);
}

/// The children of one benchmark: each is the benchmark binary itself with a subcommand,
/// announced on standard error as `WHO: WHAT`, run under the benchmark's limits unless told
/// otherwise, its standard error echoed.
#[derive(Clone, Copy, Debug)]
pub struct Children {
    who: &'static str,
    limits: Limits,
    show_load: bool,
}

impl Children {
    /// The children of benchmark `who`, run under `limits`.
    pub fn new(who: &'static str, limits: Limits) -> Self {
        Children {
            who,
            limits,
            show_load: false,
        }
    }

    /// Adds the machine's load average to the line announcing each child.
    pub fn showing_load(mut self) -> Self {
        self.show_load = true;
        self
    }

    /// Prints the line announcing a child: `WHO: WHAT`.
    pub fn announce(&self, what: &str) {
        if self.show_load {
            eprintln!("{}: {what} (load {})", self.who, load_average());
        } else {
            eprintln!("{}: {what}", self.who);
        }
    }

    /// Runs a child of this binary under the benchmark's limits.
    pub fn run(&self, args: &ChildArgs, what: &str) -> anyhow::Result<ChildOutcome> {
        self.run_limited(args, self.limits, what)
    }

    /// Runs a child of this binary under other limits.
    pub fn run_limited(
        &self,
        args: &ChildArgs,
        limits: Limits,
        what: &str,
    ) -> anyhow::Result<ChildOutcome> {
        let mut cmd = self_command()?;
        cmd.args(args.as_slice());
        self.run_command(cmd, limits, what)
    }

    /// Runs another program as a child (the node peer).
    pub fn run_command(
        &self,
        cmd: Command,
        limits: Limits,
        what: &str,
    ) -> anyhow::Result<ChildOutcome> {
        self.announce(what);
        run_child(cmd, limits, true)
    }

    /// Runs a child of this binary that must print a result: its absence is an error.
    pub fn result(&self, args: &ChildArgs, what: &str) -> anyhow::Result<ChildOutcome> {
        let out = self.run(args, what)?;
        if out.result.is_none() {
            bail!("{what}: {}", out.failure());
        }
        Ok(out)
    }

    /// Runs a child of this binary until it prints its result, then kills it with SIGKILL
    /// (`Child::kill` on Unix: no clean shutdown). Returns its result.
    pub fn result_then_sigkill(&self, args: &ChildArgs, what: &str) -> anyhow::Result<Value> {
        self.announce(what);
        let mut proc = self_command()?
            .args(args.as_slice())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = proc.stdout.take().expect("piped stdout");
        let mut result = None;
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && let Some(r) = v.get("result")
            {
                result = Some(r.clone());
                break;
            }
        }
        // Our own child, by its handle: SIGKILL, no clean shutdown.
        proc.kill()?;
        let status = proc.wait()?;
        eprintln!("  -> killed ({status}): {result:?}");
        result.with_context(|| format!("{what}: the child ended without a result ({status})"))
    }
}

/// The directory of the node peer (`benches/peers`).
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// Makes the node peer runnable: `node` present and `npm ci` done (`who` names the harness in
/// its progress line). Returns node's version; `Err`: why the peer cannot run.
pub fn prepare_node_peer(who: &str) -> Result<String, String> {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("node not found ({e})"))?;
    if !node.status.success() {
        return Err("`node --version` failed".into());
    }
    let version = String::from_utf8_lossy(&node.stdout).trim().to_string();
    let dir = peers_dir();
    if !dir
        .join("node_modules/@the-draupnir-project/matrix-protection-suite")
        .exists()
    {
        eprintln!("{who}: running `npm ci` in {}", dir.display());
        let mut cmd = Command::new("npm");
        // Bounded, so that a machine without the registry skips the peer quickly.
        cmd.args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--fetch-retries=0",
            "--fetch-timeout=10000",
        ])
        .current_dir(&dir);
        let out = run_child(
            cmd,
            Limits {
                cap: Some(Duration::from_secs(40)),
                max_rss: None,
            },
            false,
        )
        .map_err(|e| format!("npm not runnable ({e})"))?;
        if !out.status.is_some_and(|s| s.success()) {
            return Err(format!("`npm ci` failed: {}", out.failure()));
        }
    }
    Ok(version)
}

/// The command running the matrix-protection-suite peer (`benches/peers/mps.js`), with
/// options for node itself before the script; its own options follow.
pub fn mps_command(node_options: &[String]) -> Command {
    let mut cmd = Command::new("node");
    cmd.args(node_options).arg(peers_dir().join("mps.js"));
    cmd
}
