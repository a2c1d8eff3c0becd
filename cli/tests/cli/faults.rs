//! Exact acknowledgement under a failing disk: `prr ingest` with a file-size limit
//! (`ulimit -f`, SIGXFSZ ignored, so growing the store fails with EFBIG as a full disk would)
//! at many sizes. Whatever it exits with, the store holds exactly what it says is committed,
//! and ingesting again what it says is not committed gives the store of a clean run: nothing
//! lost, nothing twice.

use std::process::Command;

use super::support::{Scratch, example};

const FILES: usize = 120;

fn member_files(s: &Scratch) -> Vec<String> {
    (1..=FILES)
        .map(|i| {
            let event = serde_json::json!({"event_id": format!("$m{i}"), "room_id": "!room:x",
                "type": "m.room.member", "state_key": format!("@spam{i}:evil.example"),
                "sender": "@x:x", "content": {"membership": "join", "pad": "x".repeat(500)}});
            let name = format!("f{i:03}.json");
            s.file(&name, format!("{event}\n").as_bytes());
            name
        })
        .collect()
}

fn last_seq(s: &Scratch) -> u64 {
    let status = s.ok(&["status"]);
    let line = status.lines().find(|l| l.starts_with("seq")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `prr ingest files` with the store limited to `limit` bytes; its exit code and stderr.
fn ingest_limited(s: &Scratch, files: &[String], limit: u64) -> (i32, String) {
    let script = format!(
        "ulimit -f {}; trap '' XFSZ; exec \"$0\" --store \"$1\" ingest {}",
        limit / 1024,
        files.join(" ")
    );
    let out = Command::new("bash")
        .args(["-c", &script, env!("CARGO_BIN_EXE_prr")])
        .arg(s.store())
        .current_dir(s.dir.path())
        .env_remove("PRR_STORE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn problem_6_a_failed_ingest_says_exactly_what_it_committed() {
    let demo = example("demo");
    let reference = Scratch::new();
    let files = member_files(&reference);
    reference.ok(&["ingest", demo.to_str().unwrap()]);
    let all: Vec<&str> = std::iter::once("ingest")
        .chain(files.iter().map(String::as_str))
        .collect();
    reference.ok(&all);
    let expected = reference.show("room_members");
    assert_eq!(last_seq(&reference), 3 + FILES as u64);

    let step = if std::env::var("CI").is_ok_and(|v| v == "true") {
        24
    } else {
        8
    };
    let mut exits = std::collections::BTreeSet::new();
    for extra_kib in (0..=96).step_by(step) {
        let s = Scratch::new();
        member_files(&s);
        s.ok(&["ingest", demo.to_str().unwrap()]);
        let size = std::fs::metadata(s.store()).unwrap().len();
        let (code, stderr) = ingest_limited(&s, &files, size + extra_kib * 1024);
        exits.insert(code);
        let what = format!("limit +{extra_kib} KiB: exit {code}: {stderr}");
        let retry: Vec<String> = match code {
            0 | 5 => {
                if code == 5 {
                    assert!(stderr.contains("committed and durable"), "{what}");
                }
                Vec::new()
            }
            1 => {
                assert!(!stderr.contains("in doubt"), "{what}");
                let committed = match stderr.lines().find(|l| l.starts_with("committed: ")) {
                    Some(l) if l.contains("none of the files") => 0,
                    Some(l) => {
                        let n: u64 = l["committed: ".len()..]
                            .split(' ')
                            .next()
                            .unwrap()
                            .parse()
                            .unwrap();
                        assert!(l.contains(&format!("as seq 4..={}", 3 + n)), "{what}");
                        n
                    }
                    None => panic!("{what}: no acknowledgement"),
                };
                assert_eq!(last_seq(&s), 3 + committed, "{what}");
                files[committed as usize..].to_vec()
            }
            _ => panic!("{what}"),
        };
        if code != 1 {
            assert_eq!(last_seq(&s), 3 + FILES as u64, "{what}");
        }
        // Ingest again what was not committed, without the limit.
        if !retry.is_empty() {
            let args: Vec<&str> = std::iter::once("ingest")
                .chain(retry.iter().map(String::as_str))
                .collect();
            s.ok(&args);
        }
        assert_eq!(last_seq(&s), 3 + FILES as u64, "{what}: after the retry");
        assert_eq!(s.show("room_members"), expected, "{what}: after the retry");
        s.ok(&["rebuild", "--check"]); // exits 0: the revisions equal a rebuild from the log
    }
    assert!(
        exits.contains(&1),
        "no limit made the ingest fail: {exits:?}"
    );
}

/// A `prr stream --emit room_members --max-batch 5` on `s`'s store whose file may grow by
/// 64 KB (a soft limit: `prlimit` can lift it), fed 400 joins of 2 KB each from a thread.
struct LimitedStream {
    child: std::process::Child,
    emitted: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

const JOINS: usize = 400;

/// 2,000 characters that LZ4 does not shorten (hex digits of a xorshift sequence seeded by
/// `i`): each join grows the store by about as much, packed or not.
fn pad(i: usize) -> String {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ i as u64;
    (0..125)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{x:016x}")
        })
        .collect()
}

impl LimitedStream {
    fn start(s: &Scratch) -> LimitedStream {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::{Arc, Mutex};
        let limit = std::fs::metadata(s.store()).unwrap().len() + 64 * 1024;
        let script = format!(
            "ulimit -S -f {}; trap '' XFSZ; exec \"$0\" --store \"$1\" stream --emit room_members --max-batch 5",
            limit / 1024
        );
        let mut child = Command::new("bash")
            .args(["-c", &script, env!("CARGO_BIN_EXE_prr")])
            .arg(s.store())
            .env_remove("PRR_STORE")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let emitted = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let (e1, e2) = (emitted.clone(), stderr.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let line = line.unwrap();
                e1.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                e2.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // Written from a thread: while the stream retries it reads no more, and a write blocks.
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            for i in 1..=JOINS {
                let event = serde_json::json!({"event_id": format!("$m{i}"), "room_id": "!room:x",
                    "type": "m.room.member", "state_key": format!("@spam{i}:evil.example"),
                    "sender": "@x:x", "content": {"membership": "join", "pad": pad(i)}});
                if writeln!(stdin, "{event}").is_err() {
                    break;
                }
            }
        });
        LimitedStream {
            child,
            emitted,
            stderr,
            threads: vec![writer, reader, err_reader],
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the stream reports a retry, checking that it stays alive.
    fn wait_for_retry(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !self.stderr().contains("retrying") {
            assert!(
                std::time::Instant::now() < deadline,
                "no retry reported: {}",
                self.stderr()
            );
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the stream died: {}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the stream died: {}",
            self.stderr()
        );
    }

    /// Joins the threads once the process is gone; the seqs of the emitted records and
    /// stderr.
    fn finish(self) -> (Vec<u64>, String) {
        for t in self.threads {
            t.join().unwrap();
        }
        let stderr = self.stderr.lock().unwrap().clone();
        assert!(!stderr.contains("panicked"), "{stderr}");
        let seqs = (self.emitted.lock().unwrap().iter())
            .map(|v| v["seq"].as_u64().unwrap())
            .collect();
        (seqs, stderr)
    }
}

/// The members of the streamed room.
fn streamed_members(s: &Scratch) -> usize {
    s.ok(&[
        "show",
        "room_members",
        "--partition",
        "!room:x",
        "--format",
        "ndjson",
    ])
    .lines()
    .count()
}

/// `prr stream` on a store that cannot grow: the batch that cannot commit is reported and
/// retried (the process does not die), and the store holds exactly the deltas emitted before
/// it: nothing emitted is lost, nothing unemitted is committed.
#[test]
fn stream_retries_a_batch_the_disk_refuses_and_commits_nothing_unacknowledged() {
    let s = Scratch::new();
    s.ok(&["ingest", example("demo").to_str().unwrap()]);
    let mut stream = LimitedStream::start(&s);
    stream.wait_for_retry();
    stream.child.kill().unwrap();
    stream.child.wait().unwrap();
    let (emitted, stderr) = stream.finish();
    let last_emitted = emitted.iter().max().copied().unwrap_or(3);
    assert_eq!(
        last_seq(&s),
        last_emitted,
        "the store holds exactly the emitted deltas: {stderr}"
    );
    // One joined member per emitted record, each once.
    assert_eq!(streamed_members(&s), emitted.len(), "{stderr}");
    assert!(s.ok(&["check"]).starts_with("ok:"));
}

/// The same stream, and the disk gets room while it retries: the same process goes on by
/// itself, without a restart, and every line is applied exactly once.
#[test]
fn stream_resumes_by_itself_once_the_disk_has_room() {
    let s = Scratch::new();
    s.ok(&["ingest", example("demo").to_str().unwrap()]);
    let before = last_seq(&s);
    let mut stream = LimitedStream::start(&s);
    stream.wait_for_retry();
    let pid = stream.child.id().to_string();
    let lifted = Command::new("prlimit")
        .args(["--pid", &pid, "--fsize=unlimited:"])
        .status()
        .unwrap();
    assert!(lifted.success(), "prlimit failed");
    // The writer ends its input after the last join: the stream ends when it has all.
    let status = stream.child.wait().unwrap();
    let (emitted, stderr) = stream.finish();
    assert!(status.success(), "{status:?}: {stderr}");
    assert_eq!(emitted.len(), JOINS, "{stderr}");
    assert_eq!(streamed_members(&s), JOINS, "{stderr}");
    // Nothing committed twice: the seqs emitted are the store's, each batch once.
    let mut seqs = emitted.clone();
    seqs.dedup();
    assert_eq!(seqs.first().copied(), Some(before + 1), "{stderr}");
    assert_eq!(seqs.last().copied(), Some(last_seq(&s)), "{stderr}");
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(s.ok(&["check"]).starts_with("ok:"));
}
