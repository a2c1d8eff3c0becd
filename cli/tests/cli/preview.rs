//! `prr preview`: the deltas an ingest would cause, without storing anything; equal to the
//! deltas the same ingest then causes (`prr deltas`), for every replica.

use serde_json::Value;

use super::serve::Server;
use super::support::{Scratch, example};

/// A store with the policy list and the rooms, but no manifest yet.
fn without_manifest() -> Scratch {
    let s = Scratch::new();
    s.ok(&[
        "ingest",
        example("demo/10-policy-list.json").to_str().unwrap(),
        example("demo/20-demo-room.json").to_str().unwrap(),
        example("real/derived/chitchat_matrix-spec_state.json")
            .to_str()
            .unwrap(),
    ]);
    s
}

fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The preview lines of `replica`, without their `replica` field: as `prr deltas` prints them.
fn of_replica(previewed: &[Value], replica: &str) -> Vec<Value> {
    (previewed.iter())
        .filter(|r| r["replica"] == replica)
        .map(|r| {
            let mut r = r.as_object().unwrap().clone();
            r.remove("replica");
            Value::Object(r)
        })
        .collect()
}

/// Every replica but the view (`policy_list`, evaluated when read).
fn stored_replicas() -> impl Iterator<Item = &'static str> {
    prr_replicas::REPLICAS
        .into_iter()
        .filter(|r| *r != "policy_list")
}

#[test]
fn a_preview_equals_the_ingest_after_it_and_stores_nothing() {
    let s = without_manifest();
    // The manifest (the instance starts protecting the rooms: bans by a literal, a glob, a
    // server glob and a hashed rule), then a new rule and a redaction of an old one.
    let rule = s.file(
        "new-rule.json",
        br#"[{"event_id": "$new", "room_id": "!demo-policies:example.org",
              "type": "m.policy.rule.user", "state_key": "rule:@alice*",
              "sender": "@mod:example.org", "origin_server_ts": 9,
              "content": {"entity": "@alice*", "recommendation": "m.ban", "reason": "test"}},
             {"event_id": "$redact", "room_id": "!demo-policies:example.org",
              "type": "m.room.redaction", "redacts": "$demo4",
              "sender": "@mod:example.org", "origin_server_ts": 10, "content": {}}]"#,
    );
    let manifest = example("demo/30-manifest.json");
    let files = [manifest.to_str().unwrap(), rule.to_str().unwrap()];
    let before = std::fs::read(s.store()).unwrap();
    let mut args = vec!["preview", "--format", "ndjson"];
    args.extend(files);
    let previewed = lines(&s.ok(&args));
    assert!(
        std::fs::read(s.store()).unwrap() == before,
        "the store changed"
    );
    let bans: Vec<&Value> = (previewed.iter())
        .filter(|r| r["replica"] == "member_bans" && r["diff"] == 1)
        .collect();
    assert!(
        bans.iter()
            .any(|r| r["record"]["user_id"] == "@spam2:chat.spam.example"),
        "a ban by the server glob: {bans:?}"
    );
    assert!(
        bans.iter()
            .any(|r| r["record"]["user_id"] == "@legacy:old.example"),
        "a ban by the hashed rule: {bans:?}"
    );

    let mut args = vec!["ingest"];
    args.extend(files);
    s.ok(&args);
    for replica in stored_replicas() {
        let real = lines(&s.ok(&["deltas", replica, "--since", "3"]));
        let preview = of_replica(&previewed, replica);
        assert_eq!(preview, real, "{replica}");
    }
    assert!(previewed.iter().any(|r| r["seq"] == 5), "the second file");
}

#[test]
fn preview_selects_replicas_formats_and_refuses_bad_input() {
    let s = without_manifest();
    let manifest = example("demo/30-manifest.json");
    let m = manifest.to_str().unwrap();
    let out = lines(&s.ok(&["preview", m, "--emit", "server_acl", "--format", "ndjson"]));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["replica"], "server_acl");
    assert_eq!(out[0]["record"]["instance"], "@draupnir:example.org");
    let table = s.ok(&["preview", m, "--emit", "member_bans", "--format", "table"]);
    assert!(table.starts_with("member_bans:\n"), "{table}");
    assert!(table.contains("(5 records)"), "{table}");

    let before = std::fs::read(s.store()).unwrap();
    let bad = s.file("bad.json", br#"[{"event_id": "$x", "room_id": "!r:x"}]"#);
    let o = s.prr(&["preview", m, bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.json"), "{err}");
    let o = s.prr(&["preview", m, "--emit", "member_banz"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown replica `member_banz`"));
    assert!(
        std::fs::read(s.store()).unwrap() == before,
        "the store changed"
    );
}

/// `POST /v1/preview` answers what `POST /v1/ingest` of the same body then does, and stores
/// nothing; bad input is a 400.
#[test]
fn serve_previews_what_an_ingest_then_does() {
    let s = without_manifest();
    let server = Server::start(&s, &[]);
    let manifest = std::fs::read(example("demo/30-manifest.json")).unwrap();
    let (status, body) = server.post("/v1/preview?emit=member_bans,server_acl", &manifest);
    assert_eq!(status, 200, "{body}");
    let previewed = lines(&body);
    assert_eq!(previewed.len(), 6, "5 bans and an ACL: {previewed:?}");
    assert_eq!(server.json("/v1/status")["seq"], 3, "nothing stored");
    assert_eq!(server.ingest(&manifest), 4);
    for replica in ["member_bans", "server_acl"] {
        let real = server.rows(&format!("/v1/replicas/{replica}/deltas?since=3"));
        let preview = of_replica(&previewed, replica);
        assert_eq!(preview, real, "{replica}");
    }
    let (status, body) = server.post("/v1/preview?emit=nope", &manifest);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown replica `nope`"), "{body}");
    let (status, body) = server.post("/v1/preview", br#"{"instances": [{"id": "x"}]}"#);
    assert_eq!(status, 400, "{body}");
    assert_eq!(server.json("/v1/status")["seq"], 4);
}
