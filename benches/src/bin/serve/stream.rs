//! Streams of membership joins through `POST /v1/ingest`, offered open-loop at a fixed rate
//! from another thread, each request's latency measured from the time it was due (so a stall
//! counts for every request that waits behind it), and the store copies the parts run on.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use prr_benches::Workload;
use prr_benches::item_to_json;
use prr_benches::waves::Joins;
use serde_json::Value;

use crate::server::Client;

/// One request of a stream: when it was due and when it was answered.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    pub due: Instant,
    pub answered: Instant,
}

impl Sent {
    /// Seconds from due to answered.
    pub fn latency(&self) -> f64 {
        (self.answered - self.due).as_secs_f64()
    }
}

/// The body of `POST /v1/ingest` for one join: a JSON array of one state event.
pub fn join_body(joins: &mut Joins) -> Vec<u8> {
    let event = item_to_json(&joins.next_join());
    serde_json::to_vec(&Value::Array(vec![event])).expect("JSON")
}

/// A stream of joins running on its own thread until stopped.
pub struct JoinStream {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<anyhow::Result<Vec<Sent>>>>,
}

impl JoinStream {
    /// Starts offering joins of `w` (seeded) to `client` at `rate` per second: request `i` is
    /// due at `start + i / rate` and sent then, or at once when the one before it was answered
    /// late; each is one source delta answered `{"seq":N}`.
    pub fn start(client: Client, w: &Workload, seed: u64, rate: f64) -> JoinStream {
        let mut joins = Joins::new(w, seed);
        JoinStream::start_with(client, rate, move || join_body(&mut joins))
    }

    /// Starts offering the bodies `body` makes (each a JSON array for `POST /v1/ingest`) to
    /// `client` at `rate` per second, as [`JoinStream::start`] does.
    pub fn start_with<F>(client: Client, rate: f64, mut body: F) -> JoinStream
    where
        F: FnMut() -> Vec<u8> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut sent = Vec::new();
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                client.ingest(&body()).context("a request of the stream")?;
                sent.push(Sent {
                    due,
                    answered: Instant::now(),
                });
                i += 1;
            }
            Ok(sent)
        });
        JoinStream {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the stream and returns its requests.
    pub fn finish(mut self) -> anyhow::Result<Vec<Sent>> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => anyhow::bail!("the join stream panicked"),
            None => Ok(Vec::new()),
        }
    }
}

impl Drop for JoinStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Warms a service up: one join ingested (it restores the dataflow; reads before it are served
/// from the stored revisions), then joins at 100/s for `secs` seconds (a restored dataflow
/// decodes its revisions in the background at first), not measured.
pub fn warm_up(client: &Client, w: &Workload, seed: u64, secs: u64) -> anyhow::Result<()> {
    let mut joins = Joins::new(w, seed ^ 0x3a7);
    client.ingest(&join_body(&mut joins))?;
    let s = JoinStream::start(client.clone(), w, seed ^ 0x3a8, 100.0);
    std::thread::sleep(Duration::from_secs(secs));
    s.finish()?;
    Ok(())
}

/// Copies a store and writes the copy out before it is measured (as the restore benchmark
/// does: a restart right after the copy would compete with the kernel's writeback).
pub fn copy_store(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {} out", to.display()))?;
    Ok(())
}

/// Seconds, sorted.
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}
