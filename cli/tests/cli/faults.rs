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
