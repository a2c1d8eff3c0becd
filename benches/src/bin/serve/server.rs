//! A `prr serve` child process, killed when dropped (also on a panic), and a small HTTP client
//! for it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// A running `prr serve`: killed and waited for on drop.
pub struct Serve {
    child: Child,
    client: Client,
    /// When the process was spawned.
    pub spawned: Instant,
    /// From the spawn until `listening on ADDR` was printed.
    pub listening: Duration,
    log: Arc<Mutex<Log>>,
}

/// What the log said, with the time each line was read.
#[derive(Default)]
struct Log {
    /// `revisions captured`.
    captures: Vec<Instant>,
    /// `compacted: ...` and `compacting failed` lines, whole.
    compactions: Vec<(Instant, String)>,
}

impl Serve {
    /// Starts `prr --store STORE serve --listen LISTEN ARGS...` and waits (at most 10 minutes)
    /// for its `listening on ADDR`. Its log (`RUST_LOG=info`) is read by a thread: the time of
    /// each `revisions captured` line is kept, and each compaction's line with its time;
    /// warnings and errors are passed on to standard error.
    pub fn start(prr: &Path, store: &Path, listen: &str, args: &[&str]) -> anyhow::Result<Serve> {
        let spawned = Instant::now();
        let mut child = Command::new(prr)
            .arg("--store")
            .arg(store)
            .args(["serve", "--listen", listen])
            .args(args)
            .env_remove("PRR_STORE")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", prr.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("listening on ") {
                    let _ = tx.send(a.to_string());
                }
            }
        });
        let log = Arc::new(Mutex::new(Log::default()));
        let seen = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let at = Instant::now();
                if line.contains("revisions captured") {
                    seen.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .captures
                        .push(at);
                } else if line.contains("compacted: ") || line.contains("compacting failed") {
                    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                    seen.compactions.push((at, line.clone()));
                }
                if line.contains(" WARN ") || line.contains(" ERROR ") {
                    eprintln!("prr serve: {line}");
                }
            }
        });
        let mut serve = Serve {
            child,
            client: Client::new("unknown"),
            spawned,
            listening: Duration::ZERO,
            log,
        };
        let addr = match rx.recv_timeout(Duration::from_secs(600)) {
            Ok(a) => a,
            Err(_) => {
                let status = serve.child.try_wait().ok().flatten();
                bail!("prr serve did not print `listening on ADDR` (exit: {status:?})");
            }
        };
        serve.listening = spawned.elapsed();
        serve.client = Client::new(&addr);
        Ok(serve)
    }

    /// The client of this service (cheap to clone, for other threads).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The process ID of the service.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When each `revisions captured` line was read so far.
    pub fn captures(&self) -> Vec<Instant> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.captures.clone()
    }

    /// Each `compacted: ...` or `compacting failed` line read so far, with when it was read.
    pub fn compactions(&self) -> Vec<(Instant, String)> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.compactions.clone()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client of one `prr serve` (keeps its connections open).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    /// A client of the service at `addr` (`HOST:PORT`).
    pub fn new(addr: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        Client {
            agent,
            base: format!("http://{addr}"),
        }
    }

    /// `GET path`: the status and the body.
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let r = self.agent.get(format!("{}{path}", self.base)).call();
        answer(r.with_context(|| format!("GET {path}"))?)
    }

    /// `POST path` with `body`: the status and the body.
    pub fn post(&self, path: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
        let r = self.agent.post(format!("{}{path}", self.base)).send(body);
        answer(r.with_context(|| format!("POST {path}"))?)
    }

    /// `GET path` answered 200, as JSON.
    pub fn json(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.get(path)?;
        if status != 200 {
            bail!("GET {path}: {status} {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// `GET path` answered 200, as NDJSON lines.
    pub fn rows(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let (status, body) = self.get(path)?;
        if status != 200 {
            bail!("GET {path}: {status} {body}");
        }
        ndjson(&body)
    }

    /// `POST /v1/ingest` of `body`, answered `{"seq":N}`: N.
    pub fn ingest(&self, body: &[u8]) -> anyhow::Result<u64> {
        let (status, text) = self.post("/v1/ingest", body)?;
        if status != 200 {
            bail!("POST /v1/ingest: {status} {text}");
        }
        let v: Value = serde_json::from_str(&text)?;
        v["seq"].as_u64().context("no seq in the answer")
    }

    /// The sum of the `/metrics` samples named `name` whose labels contain `label` (empty:
    /// any), e.g. `prr_source_events_total` and `source="appservice"`.
    pub fn metric(&self, name: &str, label: &str) -> anyhow::Result<f64> {
        let (status, text) = self.get("/metrics")?;
        if status != 200 {
            bail!("GET /metrics: {status}");
        }
        Ok(metric_sum(&text, name, label))
    }
}

/// The sum of the samples of `name` with `label` among their labels, in a Prometheus text.
pub fn metric_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match key.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (key, ""),
            };
            (metric == name && labels.contains(label)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// NDJSON lines as values.
pub fn ndjson(body: &str) -> anyhow::Result<Vec<Value>> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).context("an NDJSON line"))
        .collect()
}

fn answer(mut r: ureq::http::Response<ureq::Body>) -> anyhow::Result<(u16, String)> {
    let status = r.status().as_u16();
    let body = r.body_mut().with_config().limit(1 << 30).read_to_string()?;
    Ok((status, body))
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
