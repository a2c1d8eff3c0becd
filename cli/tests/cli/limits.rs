//! Limits and messages: a bound on `--workers`, `no store at PATH` for every reader, table
//! output that escapes what would act on the terminal, I/O errors said once and as what they
//! are (issue 15, problems 7 to 10).

use std::path::Path;
use std::process::Output;

use super::support::{Scratch, bytes, example};

fn demo() -> Scratch {
    let s = Scratch::new();
    s.ok(&["ingest", example("demo").to_str().unwrap()]);
    s
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The most workers the machine allows, computed here apart from prr: 4 per core.
fn max_workers() -> usize {
    4 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[test]
fn problem_7_workers_without_bound_are_refused() {
    let s = demo();
    let before = bytes(&s.store());
    let max = max_workers();
    for workers in [max + 1, 256.max(max + 1), 100_000] {
        let n = workers.to_string();
        for args in [
            vec!["--workers", n.as_str(), "status"],
            vec!["--workers", n.as_str(), "show", "member_bans"],
            vec!["--workers", n.as_str(), "compact"],
            vec![
                "--workers",
                n.as_str(),
                "ingest",
                example("demo/30-manifest.json").to_str().unwrap(),
            ],
        ] {
            let out = s.prr(&args);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(out.stdout.is_empty(), "{args:?}: nothing is done");
            for expect in [
                format!("--workers {workers} is too many"),
                format!("at most {max}"),
                "cores".to_string(),
            ] {
                assert!(err.contains(&expect), "{args:?}: {err:?} lacks {expect:?}");
            }
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
    assert_eq!(
        bytes(&s.store()),
        before,
        "a refused command changed the store"
    );
    // At the limit it runs; 0 and other absurd settings are refused too.
    s.ok(&["--workers", &max.to_string(), "status"]);
    for (args, expect) in [
        (["--workers", "0", "status"], "--workers must be at least 1"),
        (
            ["--keep-revisions", "0", "status"],
            "--keep-revisions must be at least 1",
        ),
        (
            ["--revision-every", "0", "status"],
            "--revision-every must be at least 1",
        ),
    ] {
        let out = s.prr(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(expect), "{args:?}: {}", stderr(&out));
    }
    let fresh = Scratch::new();
    let out = fresh.prr(&[
        "--workers",
        "100000",
        "ingest",
        example("demo").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !fresh.store().exists(),
        "a refused ingest created the store"
    );
}

/// Every command that reads a store: the same message, exit 1, no file created.
const READERS: &[&[&str]] = &[
    &["status"],
    &["status", "--format", "json"],
    &["show", "member_bans"],
    &["show", "server_acl", "--as-of", "1"],
    &["deltas", "member_bans"],
    &["revisions"],
    &["revisions", "member_bans", "--format", "json"],
    &["check"],
    &["rebuild"],
    &["rebuild", "--check"],
    &["compact"],
    &["show", "poisoned"],
    &["ack-poisoned", "1"],
];

#[test]
fn problem_8_every_reader_says_no_store_at_path() {
    let s = Scratch::new();
    let missing = s.dir.path().join("mistyped.redb");
    // A dangling symbolic link is a missing store too, and is not followed to create one.
    let dangling = s.dir.path().join("dangling.redb");
    std::os::unix::fs::symlink(s.dir.path().join("gone.redb"), &dangling).unwrap();
    for path in [&missing, &dangling] {
        for args in READERS {
            let out = at(&s, path, args);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
            assert_eq!(
                stderr(&out),
                format!("prr: error: no store at {}\n", path.display()),
                "{args:?}"
            );
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }
    assert!(!missing.exists(), "a reader created the store");
    assert!(
        !s.dir.path().join("gone.redb").exists(),
        "a reader created the link's target"
    );
    // The writers create a new store; `graph` needs none and creates none.
    s.ok(&["graph"]);
    assert!(!s.store().exists());
    let out = s.prr_stdin(&["stream"], Some(b""));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.store().exists(), "stream creates its store");
    let other = Scratch::new();
    other.ok(&["ingest", example("demo").to_str().unwrap()]);
    assert!(other.store().exists(), "ingest creates its store");
    assert_eq!(other.show("member_bans").len(), 5);
}

/// Runs `prr --store path args...` in the scratch directory.
fn at(s: &Scratch, path: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_prr"))
        .arg("--store")
        .arg(path)
        .args(args)
        .current_dir(s.dir.path())
        .env_remove("PRR_STORE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Whether a character would act on a terminal (a C0 or C1 control other than the newline
/// ending a line, or a bidi or zero-width format character).
fn acts_on_terminal(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[test]
fn problem_9_table_output_escapes_untrusted_keys() {
    let s = demo();
    let hostile = [
        "\u{1b}[2K\u{1b}[1A@admin:example.org",
        "fake\rrow",
        "two\nlines",
        "tab\there",
        "bell\u{7}del\u{7f}",
        "csi\u{9b}31m",
        "\u{202e}gro.elpmaxe:nimda@",
        "iso\u{2066}late\u{2069}",
    ];
    let events: Vec<serde_json::Value> = hostile
        .iter()
        .enumerate()
        .map(|(i, k)| {
            serde_json::json!({
                "event_id": format!("$h{i}"),
                "room_id": "!hostile:example.org",
                "type": "m.room.topic",
                "state_key": k,
                "sender": "@mallory:example.org",
                "content": {"topic": k},
            })
        })
        .collect();
    let file = s.file(
        "hostile.json",
        serde_json::to_string(&events).unwrap().as_bytes(),
    );
    s.ok(&["ingest", file.to_str().unwrap()]);
    let table = s.ok(&[
        "show",
        "room_state",
        "--partition",
        "!hostile:example.org",
        "--format",
        "table",
    ]);
    assert!(!table.chars().any(acts_on_terminal), "{table:?}");
    assert_eq!(
        table.lines().count(),
        hostile.len() + 2,
        "a header, one line per record and the count: {table}"
    );
    for visible in [
        "\\u{1b}[2K",
        "fake\\rrow",
        "two\\nlines",
        "tab\\there",
        "\\u{202e}",
    ] {
        assert!(table.contains(visible), "{table} lacks {visible:?}");
    }
    let deltas = s.ok(&["deltas", "room_state", "--since", "3", "--format", "table"]);
    assert!(!deltas.chars().any(acts_on_terminal), "{deltas:?}");
    assert_eq!(deltas.lines().count(), hostile.len() + 2, "{deltas}");
    // The JSON formats keep the exact strings.
    let rows = s.show("room_state");
    for k in hostile {
        assert!(rows.iter().any(|r| r["state_key"] == k), "{k:?} lost");
    }
}

#[test]
fn problem_10_a_symlink_loop_says_so_once() {
    let s = Scratch::new();
    let a = s.dir.path().join("a.redb");
    let b = s.dir.path().join("b.redb");
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    for args in with_writers() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = at(&s, &a, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("symbolic link loop"), "{args:?}: {err}");
        assert!(!err.contains("no such file"), "{args:?}: {err}");
        said_once(&err, &a);
    }
}

#[test]
fn problem_10_a_parent_that_is_a_file_is_said_once() {
    let s = Scratch::new();
    let file = s.file("plain", b"not a directory");
    let path = file.join("prr.redb");
    for args in with_writers() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = at(&s, &path, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("not a directory"), "{args:?}: {err}");
        assert!(!err.contains("not a prr store"), "{args:?}: {err}");
        said_once(&err, &path);
    }
}

/// The readers and the writers (`ingest`, `stream`), which open a store the same way.
fn with_writers() -> Vec<Vec<String>> {
    let manifest = example("demo/30-manifest.json").display().to_string();
    READERS
        .iter()
        .map(|a| a.iter().map(|s| s.to_string()).collect())
        .chain([vec!["ingest".into(), manifest], vec!["stream".into()]])
        .collect()
}

/// One line, naming the path once, with no clause repeated.
fn said_once(err: &str, path: &Path) {
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches(path.to_str().unwrap()).count(), 1, "{err}");
    let clauses: Vec<&str> = err.trim_end().split(": ").collect();
    for (i, c) in clauses.iter().enumerate() {
        assert!(!clauses[i + 1..].contains(c), "{c:?} is repeated: {err}");
    }
}

#[test]
fn problem_10_permission_denied_says_so() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let s = demo();
    let store = s.store();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads any file whatever its mode: as root, run prr as `nobody` (65534), with the
    // scratch directory open to it, so that the file's mode is what denies it.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if root {
        std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for args in [
        &["status"][..],
        &["show", "member_bans"],
        &["check"],
        &["compact"],
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_prr"));
        cmd.arg("--store")
            .arg(&store)
            .args(args)
            .env_remove("PRR_STORE");
        cmd.stdin(std::process::Stdio::null());
        if root {
            cmd.uid(65534).gid(65534).current_dir("/");
        }
        let out = match cmd.output() {
            Ok(out) => out,
            Err(e) if root => {
                eprintln!(
                    "SKIPPED the permission assertion: running as root, and prr cannot be started \
                     as another user here ({e}); root is never denied a read by a file's mode"
                );
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("permission denied"), "{args:?}: {err}");
        assert!(!err.contains("not a prr store"), "{args:?}: {err}");
        said_once(&err, &store);
    }
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(s.show("member_bans").len(), 5, "the store is intact");
}
