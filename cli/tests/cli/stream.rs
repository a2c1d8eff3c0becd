//! `prr stream` as a child process: events in, deltas out, a bad line skipped, and every
//! emitted delta in the store after a SIGKILL.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use super::support::Scratch;

fn member(i: u64, membership: &str) -> String {
    json!({"event_id": format!("$m{i}-{membership}"), "room_id": "!room:x", "type": "m.room.member",
           "state_key": format!("@spam{i}:evil.example"), "sender": "@x:x", "content": {"membership": membership}})
    .to_string()
}

/// `prr stream --emit <emit>` on the scratch store, its standard streams piped.
fn stream(s: &Scratch, emit: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_prr"))
        .arg("--store")
        .arg(s.store())
        .args(["stream", "--emit", emit])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn stream_emits_deltas_skips_bad_lines_and_survives_sigkill() {
    let s = Scratch::new();
    let mut child = stream(&s, "member_bans,room_members");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut emitted: Vec<Value> = Vec::new();
    let mut read_until = |emitted: &mut Vec<Value>, pred: &dyn Fn(&Value) -> bool| loop {
        let line = stdout.next().expect("stream output").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        emitted.push(v.clone());
        if pred(&v) {
            return;
        }
    };
    let manifest = json!({"instances": [{"id": "@bot:good.example", "watch": ["!list:x"], "protect": ["!room:x"]}]});
    let rule = json!({"event_id": "$r", "room_id": "!list:x", "type": "m.policy.rule.user", "state_key": "r",
                      "sender": "@mod:x", "content": {"entity": "@spam*:evil.example", "recommendation": "m.ban"}});
    writeln!(stdin, "{manifest}\n{rule}").unwrap();
    writeln!(stdin, "{}", member(1, "join")).unwrap();
    stdin.flush().unwrap();
    read_until(&mut emitted, &|v| {
        v["replica"] == "member_bans" && v["record"]["user_id"] == "@spam1:evil.example"
    });
    // A bad line is skipped; the stream goes on.
    writeln!(stdin, "{{\"event_id\": \"$bad\", \"room_id\": 7}}").unwrap();
    writeln!(stdin, "{}", member(2, "join")).unwrap();
    stdin.flush().unwrap();
    read_until(&mut emitted, &|v| {
        v["replica"] == "member_bans" && v["record"]["user_id"] == "@spam2:evil.example"
    });
    for i in 3..40 {
        writeln!(
            stdin,
            "{}",
            member(i, if i % 3 == 0 { "leave" } else { "join" })
        )
        .unwrap();
    }
    stdin.flush().unwrap();
    read_until(&mut emitted, &|v| {
        v["replica"] == "room_members" && v["record"]["user_id"] == "@spam39:evil.example"
    });
    child.kill().unwrap(); // SIGKILL: no clean shutdown, no revision capture
    let status = child.wait().unwrap();
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("line 4"),
        "the bad line is reported with its number: {stderr}"
    );
    // Every emitted delta is in the store.
    for replica in ["member_bans", "room_members"] {
        let stored: BTreeSet<String> = s
            .ok(&["deltas", replica])
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                json!({"seq": v["seq"], "diff": v["diff"], "record": v["record"]}).to_string()
            })
            .collect();
        for e in emitted.iter().filter(|e| e["replica"] == replica) {
            let key =
                json!({"seq": e["seq"], "diff": e["diff"], "record": e["record"]}).to_string();
            assert!(stored.contains(&key), "emitted but not stored: {key}");
        }
    }
    let members = s.show("room_members");
    assert_eq!(members.len(), 39);
    assert!(s.ok(&["check"]).starts_with("ok:"));
}

/// After a crash with source deltas past the last revision, a restart resumes from the
/// revisions, whose seeds read the store until they are decoded; `prr compact` then still gets
/// the store back to rewrite it (it waited forever once), and nothing is lost.
#[test]
fn compact_after_a_crash_past_the_last_revision_finishes() {
    let s = Scratch::new();
    // A clean stop captures revisions.
    s.ok(&["ingest", super::support::example("demo").to_str().unwrap()]);
    let mut child = stream(&s, "room_members");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    writeln!(stdin, "{}\n{}", member(1, "join"), member(2, "join")).unwrap();
    stdin.flush().unwrap();
    let mut seen = 0;
    while seen < 2 {
        let line = stdout.next().expect("stream output").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["replica"] == "room_members" && v["diff"] == 1 {
            seen += 1;
        }
    }
    child.kill().unwrap(); // SIGKILL: the two deltas are past the last revision
    child.wait().unwrap();
    let mut compact = Command::new(env!("CARGO_BIN_EXE_prr"))
        .arg("--store")
        .arg(s.store())
        .arg("compact")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = compact.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            compact.kill().unwrap();
            panic!("prr compact did not finish in 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "prr compact failed");
    let members: Vec<Value> = s.show("room_members");
    for user in ["@spam1:evil.example", "@spam2:evil.example"] {
        assert!(
            members.iter().any(|m| m["user_id"] == user),
            "{user} lost: {members:?}"
        );
    }
    assert!(s.ok(&["check"]).starts_with("ok:"));
}
