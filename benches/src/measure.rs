//! Measuring: peak memory, child processes that report JSON lines, markdown tables.
//!
//! Every measurement runs in a fresh child process (the benchmark binary itself, with a
//! subcommand), so memory and caches do not leak from one measurement into the next. A child
//! prints JSON lines on standard output: `{"progress": {...}}` while it works and
//! `{"result": {...}}` at the end. The parent kills a child that outlives its cap and keeps its
//! last progress line.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A field of `/proc/self/status` in bytes (`VmHWM`, `VmRSS`), when available (Linux).
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The peak resident set size of this process so far (`VmHWM`), in bytes; 0 if unknown.
pub fn peak_rss() -> u64 {
    proc_status_bytes("VmHWM:").unwrap_or(0)
}

/// The current resident set size of this process (`VmRSS`), in bytes; 0 if unknown.
pub fn current_rss() -> u64 {
    proc_status_bytes("VmRSS:").unwrap_or(0)
}

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

/// Seconds since `t`, as a float.
pub fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
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

/// The resident set size of process `pid`, in bytes (Linux); `None` once it is gone.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
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
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<Value>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if echo_stderr {
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
    });
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

/// The current executable, to spawn children of the same benchmark.
pub fn self_command() -> anyhow::Result<Command> {
    Ok(Command::new(std::env::current_exe()?))
}

/// A markdown table.
#[derive(Clone, Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as GitHub markdown.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        out.push_str(&line(&self.headers));
        out.push_str(&line(
            &self
                .headers
                .iter()
                .map(|_| "---".to_string())
                .collect::<Vec<_>>(),
        ));
        for r in &self.rows {
            let mut cells = r.clone();
            cells.resize(self.headers.len(), String::new());
            out.push_str(&line(&cells));
        }
        out
    }
}

/// Seconds for a table: `12.3 s`, `456 ms`, `7.8 ms`.
pub fn fmt_secs(s: f64) -> String {
    if s >= 100.0 {
        format!("{s:.0} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.01 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}

/// Bytes for a table, in MiB or KiB.
pub fn fmt_bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.0} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

/// A ratio `a / b` for a table: `12.3x`.
pub fn fmt_ratio(a: f64, b: f64) -> String {
    if b <= 0.0 || !a.is_finite() || !b.is_finite() {
        return "n/a".into();
    }
    let r = a / b;
    if r >= 100.0 {
        format!("{r:.0}x")
    } else if r >= 10.0 {
        format!("{r:.1}x")
    } else {
        format!("{r:.2}x")
    }
}

/// One line about the machine: cores, CPU model, RAM.
pub fn machine_line() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.1} GiB RAM", kb as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|| "unknown RAM".into());
    format!("{cores} cores, {model}, {mem}")
}

/// The size of a file or of a directory's files, in bytes.
pub fn disk_size(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| disk_size(&e.path())).sum())
            .unwrap_or(0),
        _ => 0,
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
