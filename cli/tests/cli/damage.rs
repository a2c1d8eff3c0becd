//! Damage: bytes of a copy of the demo store changed, every command run on it. Each gives an
//! error (a non-zero exit, never the 101 of a panic, and no "panicked" on standard error) or
//! the same answer as on the undamaged store: never a silently wrong one.
//!
//! The scan flips one byte at four places of every 4 KB page of the file, so
//! every page redb writes is hit: the file header, region and allocator pages, and the b-tree
//! branch and leaf pages of every table. `PRR_DAMAGE_STEP=N` scans every N-th byte instead (a
//! larger scan, run by hand; see the report of issue 15).

use std::process::Output;

use super::support::{Scratch, example};

/// redb's page size.
const PAGE: usize = 4096;

fn ingest_file() -> String {
    example("demo/30-manifest.json")
        .to_str()
        .unwrap()
        .to_string()
}

/// The commands run on every damaged copy.
fn commands() -> Vec<Vec<String>> {
    let cmds: [&[&str]; 6] = [
        &["check"],
        &["status", "--format", "json"],
        &["show", "member_bans", "--format", "ndjson"],
        &["deltas", "room_state"],
        &["rebuild", "--check"],
        &["ingest", &ingest_file()],
    ];
    cmds.iter()
        .map(|c| c.iter().map(|a| a.to_string()).collect())
        .collect()
}

/// The demo store's bytes (the README's ingest).
fn demo_store() -> Vec<u8> {
    let s = Scratch::new();
    s.ok(&[
        "ingest",
        example("real/derived/chitchat_matrix-spec_state.json")
            .to_str()
            .unwrap(),
        example("demo").to_str().unwrap(),
    ]);
    std::fs::read(s.store()).unwrap()
}

/// What a command did: its exit code and its output, the scratch path replaced by `STORE`.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn outcome(s: &Scratch, out: Output) -> Outcome {
    let path = s.store().display().to_string();
    let dir = s.dir.path().display().to_string();
    let clean = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .replace(&path, "STORE")
            .replace(&dir, "DIR")
    };
    Outcome {
        code: out.status.code(),
        stdout: clean(&out.stdout),
        stderr: clean(&out.stderr),
    }
}

/// Runs `args` on a fresh copy of `bytes`.
fn run_on(bytes: &[u8], args: &[String]) -> Outcome {
    let s = Scratch::new();
    std::fs::write(s.store(), bytes).unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = s.prr(&args);
    outcome(&s, out)
}

/// An error or the undamaged answer; `Err` says what is wrong.
fn judge(args: &[String], got: &Outcome, want: &Outcome) -> Result<&'static str, String> {
    if got.code.is_none() || got.code == Some(101) || got.stderr.contains("panicked") {
        return Err(format!("prr {args:?} panicked or was killed: {got:?}"));
    }
    if got.code == want.code && got.stdout == want.stdout {
        return Ok("same");
    }
    if got.code == Some(0) {
        return Err(format!(
            "prr {args:?} answered differently, without an error:\n{}\nwanted:\n{}",
            got.stdout, want.stdout
        ));
    }
    if got.stderr.trim().is_empty() && got.code != Some(4) {
        return Err(format!("prr {args:?} failed without saying why: {got:?}"));
    }
    Ok("error")
}

/// Runs every command on `damaged` and judges each against the undamaged outcomes.
fn all_commands(damaged: &[u8], baseline: &[Outcome], what: &str) -> Vec<Outcome> {
    let mut outs = Vec::new();
    for (args, want) in commands().iter().zip(baseline) {
        let got = run_on(damaged, args);
        if let Err(e) = judge(args, &got, want) {
            panic!("{what}: {e}");
        }
        outs.push(got);
    }
    outs
}

fn baseline(bytes: &[u8]) -> Vec<Outcome> {
    let outs: Vec<Outcome> = commands().iter().map(|a| run_on(bytes, a)).collect();
    for (a, o) in commands().iter().zip(&outs) {
        assert_eq!(o.code, Some(0), "undamaged: prr {a:?}: {o:?}");
    }
    outs
}

/// Every start of `pattern` in `bytes`.
fn find_all(bytes: &[u8], pattern: &[u8]) -> Vec<usize> {
    (bytes.windows(pattern.len()).enumerate())
        .filter(|(_, w)| *w == pattern)
        .map(|(i, _)| i)
        .collect()
}

/// The store of `bytes`, opened read-only from a copy: what the tests read to find where a
/// value sits in the file (values are packed, so their records' bytes are not in it as such).
fn open_copy(bytes: &[u8]) -> (tempfile::TempDir, prr_persist::Store) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.redb");
    std::fs::write(&path, bytes).unwrap();
    let store = prr_persist::Store::open_read_only(&path).unwrap();
    (dir, store)
}

/// Where `bytes` hold the first chunk of the newest revision of `replica` (the last byte of
/// every copy: redb copies pages on write, and freed pages keep the old ones), and that
/// revision's `as_of`.
fn chunk_copies(bytes: &[u8], replica: &str) -> (u64, Vec<usize>) {
    let (_dir, store) = open_copy(bytes);
    let info = (store.revisions().unwrap().into_iter())
        .filter(|r| r.replica == replica && !r.chunks.is_empty())
        .max_by_key(|r| r.as_of)
        .unwrap_or_else(|| panic!("no revision of {replica}"));
    let first = store
        .revision_chunks(replica, info.as_of)
        .unwrap()
        .remove(0);
    let stored = prr_persist::stored_chunk(&first);
    // The value's last bytes: the end of its packed payload.
    (
        info.as_of,
        find_all(bytes, &stored)
            .into_iter()
            .map(|h| h + stored.len() - 1)
            .collect(),
    )
}

/// Offsets where a larger scan (`PRR_DAMAGE_STEP=97`) once found a failure, scanned always:
/// 53447 made redb panic on a poisoned lock while `ingest` closed the store.
const FOUND: [usize; 1] = [53447];

/// The offsets of the scan: four in every page, each page at other places, or every
/// `PRR_DAMAGE_STEP`-th byte.
fn offsets(len: usize) -> Vec<usize> {
    match std::env::var("PRR_DAMAGE_STEP")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
    {
        Some(step) if step > 0 => (0..len).step_by(step).collect(),
        _ => (0..len.div_ceil(PAGE))
            .flat_map(|p| (0..4).map(move |k| p * PAGE + (p * 977 + k * 1031 + 13) % PAGE))
            .chain(FOUND.iter().copied())
            .filter(|o| *o < len)
            .collect(),
    }
}

#[test]
fn flipped_bytes_in_every_page_give_errors_or_the_right_answers() {
    let bytes = demo_store();
    let base = baseline(&bytes);
    let offsets = offsets(bytes.len());
    assert!(offsets.len() >= bytes.len() / PAGE, "every page is hit");
    // Two threads: the machine running the tests has two cores.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let halves: Vec<_> = (0..2)
            .map(|h| {
                let (bytes, base, offsets) = (&bytes, &base, &offsets);
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    let (mut same, mut errors) = (0, 0);
                    for &off in offsets.iter().skip(h).step_by(2) {
                        let mut damaged = bytes.clone();
                        damaged[off] ^= 0xFF;
                        for (args, want) in commands().iter().zip(base) {
                            let got = run_on(&damaged, args);
                            match judge(args, &got, want) {
                                Ok("same") => same += 1,
                                Ok(_) => errors += 1,
                                Err(e) => failures.push(format!("byte {off} flipped: {e}")),
                            }
                        }
                    }
                    eprintln!(
                        "damage scan (half {h}): {same} same answers, {errors} errors, {} failures",
                        failures.len()
                    );
                    failures
                })
            })
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Problem 1: one byte of an interned string set to 0xFF (the byte after
/// `@evil:spam.example`) made every command panic, `check` included, in redb's `&str`
/// decoding. Now `check` names the damaged dictionary block and every command fails cleanly.
#[test]
fn problem_1_a_damaged_interned_string_is_reported_not_a_panic() {
    let bytes = demo_store();
    let base = baseline(&bytes);
    let hits = find_all(&bytes, b"@evil:spam.example");
    assert!(!hits.is_empty());
    let mut damaged = bytes.clone();
    for h in hits {
        damaged[h + b"@evil:spam.example".len()] = 0xFF;
    }
    let outs = all_commands(&damaged, &base, "problem 1");
    assert_eq!(outs[0].code, Some(4), "{:?}", outs[0]);
    assert!(
        outs[0]
            .stdout
            .contains("problem: table strings: block at id"),
        "{}",
        outs[0].stdout
    );
}

/// Copies of `bytes` with a byte changed in every `room_state` log entry (the last byte of its
/// packed payload, every copy of it in the file): the last entry included. Before checksums, a
/// byte changed so pushed a dictionary id out of range, which `check` did not see.
fn room_state_log_entries_damaged(bytes: &[u8]) -> Vec<u8> {
    // A logged delta: (name: u64 length, bytes), ...: its decoded payload names the replica.
    let mut pattern = 10u64.to_le_bytes().to_vec();
    pattern.extend_from_slice(b"room_state");
    let (_dir, store) = open_copy(bytes);
    let mut damaged = bytes.to_vec();
    let mut n = 0;
    for (seq, payload) in store.log_from(1).unwrap() {
        if find_all(&payload, &pattern).is_empty() {
            continue;
        }
        let stored = prr_persist::stored_log_entry(seq, &payload);
        for h in find_all(bytes, &stored) {
            damaged[h + stored.len() - 1] ^= 0x7F;
            n += 1;
        }
    }
    assert!(n > 0, "no room_state log entry found");
    damaged
}

/// Problem 2: a dictionary id pushed out of range inside the last `room_state` log entry
/// passed `check`, and `deltas room_state` panicked with an index out of bounds. Now such a
/// changed byte fails the entry's checksum: `check` names the entry, and the commands that
/// read it fail with an error.
#[test]
fn problem_2_an_id_out_of_range_in_the_log_is_found_by_check() {
    let bytes = demo_store();
    let base = baseline(&bytes);
    let damaged = room_state_log_entries_damaged(&bytes);
    let outs = all_commands(&damaged, &base, "problem 2");
    assert_eq!(outs[0].code, Some(4), "{:?}", outs[0]);
    assert!(
        outs[0].stdout.contains("problem: table log: entry at seq"),
        "{}",
        outs[0].stdout
    );
    assert_eq!(outs[3].code, Some(1), "deltas: {:?}", outs[3]);
    assert!(outs[3].stderr.contains("log"), "{}", outs[3].stderr);
}

/// Problem 3: `rebuild` replaced correct revisions with recomputations from a damaged log, and
/// did not repair a revision chunk that does not decode though the log reaches back to seq 1.
#[test]
fn problem_3_rebuild_refuses_a_damaged_log_and_repairs_a_damaged_revision() {
    let bytes = demo_store();
    let s = Scratch::new();
    std::fs::write(s.store(), room_state_log_entries_damaged(&bytes)).unwrap();
    let before = s.ok(&["revisions"]);
    let out = s.prr(&["rebuild"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no revision is replaced"), "{err}");
    assert!(err.contains("table log: entry at seq"), "{err}");
    assert_eq!(s.ok(&["revisions"]), before);
    let check = outcome(&s, s.prr(&["check"]));
    assert!(
        !check.stdout.contains("table chunks"),
        "the revisions are untouched: {}",
        check.stdout
    );

    // A damaged member_bans chunk: its checksum fails; the log is sound and starts at seq 1.
    let mut damaged = bytes.clone();
    let (as_of, hits) = chunk_copies(&bytes, "member_bans");
    assert_eq!(as_of, 4);
    assert!(!hits.is_empty());
    for h in hits {
        damaged[h] ^= 0x01;
    }
    let s = Scratch::new();
    std::fs::write(s.store(), &damaged).unwrap();
    let check = outcome(&s, s.prr(&["check"]));
    assert_eq!(check.code, Some(4), "{check:?}");
    assert!(
        check
            .stdout
            .contains("table chunks: revision (member_bans, 4) chunk 0 (key")
            && check.stdout.contains("fails its checksum"),
        "{}",
        check.stdout
    );
    let rebuilt = s.ok(&["rebuild"]);
    assert!(
        rebuilt.contains("member_bans")
            && rebuilt.contains("damaged")
            && rebuilt.contains("replaced"),
        "{rebuilt}"
    );
    assert!(s.ok(&["check"]).starts_with("ok:"));
    let clean = Scratch::new();
    std::fs::write(clean.store(), &bytes).unwrap();
    for r in ["member_bans", "room_state", "member_matches"] {
        assert_eq!(s.show(r), clean.show(r), "{r}");
    }
}

/// Problem 4: `ingest` panicked on a store whose revision page was overwritten, where `show`
/// gave an error. Now it fails (exit 1) and stores nothing. The file ingested joins a member
/// to the demo room: its prior state is looked up in `room_state`'s revision chunk, so the
/// ingest reads the damaged page whatever the timing of the background decoding.
#[test]
fn problem_4_ingest_on_an_overwritten_revision_page_fails_cleanly() {
    let bytes = demo_store();
    let dir = tempfile::tempdir().unwrap();
    let join = dir.path().join("join.json");
    std::fs::write(
        &join,
        serde_json::json!([{
            "type": "m.room.member", "state_key": "@newcomer:example.org",
            "sender": "@newcomer:example.org", "event_id": "$problem4",
            "room_id": "!demo-room:example.org", "origin_server_ts": 1700000100000u64,
            "content": {"membership": "join"}
        }])
        .to_string(),
    )
    .unwrap();
    let join = join.to_str().unwrap().to_string();
    let args = ["ingest".to_string(), join.clone()];
    let want = run_on(&bytes, &args);
    assert_eq!(want.code, Some(0), "undamaged: {want:?}");
    let base = baseline(&bytes);
    // room_state's revision chunk. redb copies pages on write: older copies of the chunk may
    // sit in freed pages, whose damage changes nothing. The live one must make ingest fail.
    let mut failed = 0;
    let (_, hits) = chunk_copies(&bytes, "room_state");
    assert!(!hits.is_empty());
    for h in hits {
        let page = h / PAGE * PAGE;
        let end = (page + PAGE).min(bytes.len());
        let mut damaged = bytes.clone();
        damaged[page..end].fill(0xA5);
        let s = Scratch::new();
        std::fs::write(s.store(), &damaged).unwrap();
        let got = outcome(&s, s.prr(&["ingest", &join]));
        if let Err(e) = judge(&args, &got, &want) {
            panic!("page at {page}: {e}");
        }
        if got.code == Some(0) {
            continue;
        }
        failed += 1;
        assert_eq!(got.code, Some(1), "page at {page}: {got:?}");
        assert!(!got.stderr.contains("panicked"), "{}", got.stderr);
        assert!(got.stderr.contains("damaged"), "{}", got.stderr);
        // Nothing was stored: with the page put back, the store is as it was.
        let mut after = std::fs::read(s.store()).unwrap();
        after[page..end].copy_from_slice(&bytes[page..end]);
        std::fs::write(s.store(), &after).unwrap();
        assert!(s.ok(&["check"]).starts_with("ok:"));
        let status = outcome(&s, s.prr(&["status", "--format", "json"]));
        assert_eq!(status.stdout, base[1].stdout, "page at {page}");
        all_commands(&damaged, &base, "problem 4");
    }
    assert!(failed > 0, "no copy of room_state's chunk was live");
}
