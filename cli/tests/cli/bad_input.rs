//! Bad input: a clear error naming file, place and field; a non-zero exit; the store unchanged.

use super::support::{Scratch, bytes, example};

/// A store with the demo data in it.
fn seeded() -> Scratch {
    let s = Scratch::new();
    s.ok(&["ingest", example("demo").to_str().unwrap()]);
    s
}

/// Runs `prr ingest` on a bad file after a good one: exit 3, the message names what it must,
/// and the store is byte-for-byte unchanged (the good file was not stored either).
fn rejected(name: &str, content: &[u8], expect: &[&str]) {
    let s = seeded();
    let before = bytes(&s.store());
    let good = s.file("good.json", br#"[{"event_id":"$g","room_id":"!r:x","type":"m.room.member","state_key":"@g:x","sender":"@g:x","content":{"membership":"join"}}]"#);
    let bad = s.file(name, content);
    let out = s.prr(&["ingest", good.to_str().unwrap(), bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {err}");
    for e in expect {
        assert!(err.contains(e), "stderr lacks {e:?}: {err}");
    }
    assert_eq!(
        bytes(&s.store()),
        before,
        "the store changed after a failed ingest"
    );
    assert_eq!(
        s.show("room_members").len(),
        8,
        "nothing of the good file was stored"
    );
}

#[test]
fn truncated_json_is_rejected_with_its_index() {
    rejected("t.json", br#"[{"event_id":"$1","room_id":"!r:x","type":"m.room.member","state_key":"@a:x","sender":"@a:x","content":{"membership":"jo"#, &["t.json", "index 0", "EOF"]);
}

#[test]
fn truncated_ndjson_is_rejected_with_its_line() {
    let text = b"{\"event_id\":\"$1\",\"room_id\":\"!r:x\",\"type\":\"m.room.topic\",\"state_key\":\"\",\"sender\":\"@a:x\",\"content\":{}}\n{\"event_id\":\"$2\",\"room_id\":";
    rejected("t.ndjson", text, &["t.ndjson", "line 2"]);
}

#[test]
fn wrong_field_type_is_rejected_with_the_field() {
    rejected("w.json", br#"[{"event_id":"$1","room_id":"!r:x","type":"m.room.member","state_key":"@a:x","sender":5,"content":{}}]"#, &["w.json", "index 0", "sender"]);
}

#[test]
fn missing_field_is_rejected_with_the_field() {
    rejected("m.json", br#"[{"event_id":"$1","room_id":"!r:x","type":"m.room.member","state_key":"@a:x","sender":"@a:x","content":{}},{"event_id":"$2","room_id":"!r:x","type":"m.room.member","state_key":"@b:x","sender":"@b:x"}]"#, &["m.json", "index 1", "content"]);
}

#[test]
fn invalid_utf8_is_rejected() {
    let mut text = br#"[{"event_id":"$1","room_id":"!r:x","type":"m.room.topic","state_key":"","sender":"@a:x","content":{"topic":""#.to_vec();
    text.extend_from_slice(&[0xff, 0xfe]);
    text.extend_from_slice(br#""}}]"#);
    rejected("u.json", &text, &["u.json", "UTF-8"]);
}

#[test]
fn invalid_manifest_is_rejected_with_the_field() {
    rejected(
        "bad-manifest.json",
        br##"{"instances":[{"id":"@a:x","watch":["#alias:x"]}]}"##,
        &["bad-manifest.json", "instances[0].watch[0]"],
    );
}

#[test]
fn a_missing_file_is_an_error_and_stores_nothing() {
    let s = seeded();
    let before = bytes(&s.store());
    let out = s.prr(&["ingest", "no-such-file.json"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-file.json"));
    assert_eq!(bytes(&s.store()), before);
}

#[test]
fn unknown_replica_is_a_usage_error_and_changes_nothing() {
    let s = seeded();
    let before = bytes(&s.store());
    for args in [
        vec!["show", "nope"],
        vec!["deltas", "nope"],
        vec!["rebuild", "nope", "--check"],
        vec!["revisions", "nope"],
    ] {
        let out = s.prr(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("unknown replica `nope`") && err.contains("member_bans"),
            "{err}"
        );
        assert_eq!(bytes(&s.store()), before, "{args:?} changed the store");
    }
}

#[test]
fn a_second_writer_is_refused_while_the_store_is_in_use() {
    let s = seeded();
    // A stream holds the store open while its standard input stays open. It has the store once
    // it has emitted the delta of a first event (trying a second writer before that would race
    // with its open).
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_prr"))
        .arg("--store")
        .arg(s.store())
        .args(["stream", "--emit", "room_state"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::{BufRead, Write};
        let event = serde_json::json!({"event_id": "$w", "room_id": "!w:x", "type": "m.room.topic",
            "state_key": "", "sender": "@x:x", "content": {"topic": "t"}});
        let stdin = child.stdin.as_mut().unwrap();
        writeln!(stdin, "{event}").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("$w"), "the stream emitted {line:?}");
    }
    let out = s.prr(&["ingest", example("demo").to_str().unwrap()]);
    let refused = (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).to_string());
    drop(child.stdin.take());
    child.wait().unwrap();
    let err = refused.expect("the second writer was refused");
    assert!(err.contains("in use by another process"), "{err}");
}

#[test]
fn a_store_of_another_format_is_refused() {
    let s = Scratch::new();
    std::fs::write(s.store(), b"not a database at all, just text").unwrap();
    let out = s.prr(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a prr store"));
}
