//! Every command, on real and demo data.

use serde_json::Value;

use super::support::{Scratch, example};

fn demo() -> Scratch {
    let s = Scratch::new();
    let out = s.ok(&[
        "ingest",
        example("real/derived/chitchat_matrix-spec_state.json")
            .to_str()
            .unwrap(),
        example("demo").to_str().unwrap(),
    ]);
    assert!(
        out.contains("ingested 4 source deltas (seq 1..=4)"),
        "{out}"
    );
    assert!(out.contains("member_bans     +5 -0"), "{out}");
    assert!(out.contains("rejects: 0"), "{out}");
    s
}

#[test]
fn ingest_then_show_gives_the_intents() {
    let s = demo();
    let bans = s.show("member_bans");
    let users: Vec<&str> = bans
        .iter()
        .map(|b| b["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        users,
        [
            "@evil:spam.example",
            "@legacy:old.example",
            "@spam2:chat.spam.example",
            "@spammer1:spam.example",
            "@troll:troll.example"
        ]
    );
    assert_eq!(bans[3]["reason"], "spam");
    assert_eq!(bans[0]["reason"], "<no reason supplied>");
    let acl = s.show("server_acl");
    assert_eq!(
        acl[0]["deny"],
        serde_json::json!(["*.spam.example", "spam.example", "troll.example"])
    );
    assert_eq!(acl[0]["allow_ip_literals"], false);
    let sync = s.show("acl_sync");
    assert_eq!(sync.len(), 2);
    assert!(sync.iter().all(|r| r["in_sync"] == false));
}

#[test]
fn show_formats_partitions_and_time_travel() {
    let s = demo();
    let json: Value =
        serde_json::from_str(&s.ok(&["show", "room_members", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 91);
    let table = s.ok(&["show", "server_acl", "--format", "table"]);
    assert!(
        table.starts_with("instance")
            && table.contains("@draupnir:example.org")
            && table.contains("(1 records)"),
        "{table}"
    );
    let part = s.ok(&[
        "show",
        "room_members",
        "--partition",
        "!demo-room:example.org",
    ]);
    assert_eq!(part.lines().count(), 8);
    assert_eq!(
        s.ok(&["show", "room_members", "--partition", "!unknown:x"]),
        ""
    );
    // As of seq 1, only the real room was ingested.
    let then = s.ok(&["show", "room_members", "--as-of", "1"]);
    assert_eq!(then.lines().count(), 83);
    assert_eq!(
        s.ok(&["show", "member_bans", "--as-of", "3"]),
        "",
        "no manifest before seq 4"
    );
    let out = s.prr(&["show", "member_bans", "--as-of", "9"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn deltas_since_a_seq() {
    let s = demo();
    let lines: Vec<Value> = s
        .ok(&["deltas", "acl_sync", "--since", "3"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .all(|l| l["seq"] == 4 && l["diff"] == 1 && l["record"]["in_sync"] == false)
    );
    let all = s.ok(&["deltas", "room_members"]);
    assert_eq!(all.lines().count(), 91);
    assert!(s.ok(&["deltas", "room_members", "--since", "4"]).is_empty());
    let table = s.ok(&["deltas", "member_bans", "--format", "table"]);
    assert!(
        table.starts_with("seq") && table.contains("(5 records)"),
        "{table}"
    );
}

#[test]
fn status_reports_seq_frontiers_and_counts() {
    let s = Scratch::new();
    s.ok(&["ingest", example("demo/30-manifest.json").to_str().unwrap()]);
    let one: Value = serde_json::from_str(&s.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(one["seq"], 1);
    let s = demo();
    let st: Value = serde_json::from_str(&s.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(st["seq"], 4);
    let replicas = st["replicas"].as_array().unwrap();
    let bans = replicas
        .iter()
        .find(|r| r["name"] == "member_bans")
        .unwrap();
    assert_eq!(
        (bans["frontier"].as_u64(), bans["records"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(st["log"]["entries"], 4);
    assert!(st["store_bytes"].as_u64().unwrap() > 0);
    let table = s.ok(&["status"]);
    assert!(
        table.contains("seq      4") && table.contains("member_bans"),
        "{table}"
    );
}

#[test]
fn revisions_compact_rebuild_check() {
    let s = demo();
    let revs: Value =
        serde_json::from_str(&s.ok(&["revisions", "member_bans", "--format", "json"])).unwrap();
    assert_eq!(revs.as_array().unwrap().len(), 1);
    assert_eq!(revs[0]["as_of"], 4);
    assert!(s.ok(&["revisions"]).contains("room_state"));
    let compacted = s.ok(&["compact"]);
    assert!(compacted.contains("as of seq 4"), "{compacted}");
    let st: Value = serde_json::from_str(&s.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(
        st["log"]["entries"], 0,
        "compact cut the log before the revisions"
    );
    let rebuilt = s.ok(&["rebuild", "--check"]);
    assert!(rebuilt.lines().all(|l| l.ends_with("same")), "{rebuilt}");
    assert!(s.ok(&["rebuild", "member_bans"]).contains("member_bans"));
    assert!(s.ok(&["check"]).starts_with("ok:"));
    // The state survives all of it.
    assert_eq!(s.show("member_bans").len(), 5);
}

#[test]
fn ingest_reads_directories_in_name_order_and_standard_input() {
    let s = Scratch::new();
    let dir = s.dir.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    let ev = |id: &str, m: &str| {
        format!(
            r#"[{{"event_id":"{id}","room_id":"!r:x","type":"m.room.member","state_key":"@a:x","sender":"@a:x","content":{{"membership":"{m}"}}}}]"#
        )
    };
    std::fs::write(dir.join("b.json"), ev("$2", "leave")).unwrap();
    std::fs::write(dir.join("a.json"), ev("$1", "join")).unwrap();
    s.ok(&["ingest", dir.to_str().unwrap()]);
    assert_eq!(
        s.show("room_members")[0]["membership"],
        "leave",
        "b.json came after a.json"
    );
    let out = s.prr_stdin(&["ingest", "-"], Some(ev("$3", "join").as_bytes()));
    assert!(out.status.success());
    assert_eq!(s.show("room_members")[0]["membership"], "join");
    assert_eq!(s.show("room_state")[0]["event_id"], "$3");
}

#[test]
fn graph_and_completions() {
    let s = Scratch::new();
    let dot = s.ok(&["graph"]);
    assert!(
        dot.starts_with("digraph prr") && dot.contains("member_matches -> member_bans"),
        "{dot}"
    );
    let mermaid = s.ok(&["graph", "--format", "mermaid"]);
    assert!(
        mermaid.starts_with("flowchart LR")
            && mermaid.contains("policy_room -->|full| policy_list"),
        "{mermaid}"
    );
    assert!(s.ok(&["completions", "bash"]).contains("prr"));
    assert!(!s.store().exists());
    let help = s.ok(&["ingest", "--help"]);
    assert!(help.contains("Examples:"));
}

/// The committed golden stores of formats 1 to 6 (the demo, ingested by the builds of their
/// time; format 4's with an appservice transaction too, format 5's and 6's with
/// `golden/demo-v5-extra.json`) open, are upgraded to the current format, answer as they did,
/// check sound, rebuild the same, and take new data.
#[test]
fn the_golden_stores_of_older_formats_still_open() {
    for (file, older_revision) in [
        ("demo-v1.redb", None),
        ("demo-v2.redb", Some(("3", 91))),
        ("demo-v3.redb", Some(("2", 8))),
        ("demo-v4.redb", None),
        ("demo-v5.redb", None),
        ("demo-v6.redb", None),
    ] {
        let s = Scratch::new();
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(file);
        std::fs::copy(golden, s.store()).unwrap();
        let bans = s.show("member_bans");
        assert_eq!(bans.len(), 5, "{file}");
        assert_eq!(bans[4]["user_id"], "@troll:troll.example");
        assert!(s.ok(&["check"]).starts_with("ok:"), "{file}");
        let rebuilt = s.ok(&["rebuild", "--check"]);
        assert!(
            rebuilt.lines().all(|l| l.ends_with("same")),
            "{file}: {rebuilt}"
        );
        if let Some((seq, members)) = older_revision {
            // The older revision survived the upgrade too: read at its seq, as before.
            let old = s.ok(&["show", "room_members", "--as-of", seq, "--format", "ndjson"]);
            assert_eq!(old.lines().count(), members, "{file}: {old}");
            let none = s.ok(&["show", "member_bans", "--as-of", seq, "--format", "ndjson"]);
            assert_eq!(none.lines().count(), 0, "{file}: {none}");
        }
        if file == "demo-v4.redb" {
            // Its `source_events` records, of format 4 (without the time received), read as
            // they did; the invalid one is still a reject.
            let events = s.show("source_events");
            let ids: Vec<&str> = (events.iter())
                .map(|r| r["event_id"].as_str().unwrap())
                .collect();
            assert_eq!(
                ids,
                ["$golden-invalid", "$golden-join", "$golden-redaction"]
            );
            assert_eq!(events[0]["valid"], false);
            assert_eq!(s.show("rejects")[0]["event_id"], "$golden-invalid");
        }
        if file == "demo-v5.redb" || file == "demo-v6.redb" {
            // Format 5's `room_state` records, without facts, got them from their contents;
            // format 6's had them, and were repacked: a rename, a member reject, a rule
            // reject, a redacted rule, an ACL equal to the intent. The revision as of seq 3
            // was rewritten too.
            let alice = (s.show("room_members").into_iter())
                .find(|r| r["user_id"] == "@alice:example.org")
                .unwrap();
            assert_eq!(alice["displayname"], "Alice (golden 5)");
            let rejects: Vec<String> = (s.show("rejects").iter())
                .map(|r| r["event_id"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(rejects, ["$golden5-reject-rule", "$golden5-dance"]);
            let rules = s.ok(&["show", "policy_room", "--format", "ndjson"]);
            assert!(!rules.contains("$golden5-gone-rule"), "{rules}");
            let in_sync: Vec<bool> = (s.show("acl_sync").iter())
                .map(|r| r["in_sync"].as_bool().unwrap())
                .collect();
            assert_eq!(in_sync, [true, false]);
            let old = s.ok(&["show", "room_members", "--as-of", "3", "--format", "ndjson"]);
            assert_eq!(old.lines().count(), 8, "{old}");
            assert!(old.contains(r#""displayname":"Alice""#), "{old}");
        }
        // And it takes new data.
        s.ok(&["ingest", example("demo/30-manifest.json").to_str().unwrap()]);
        assert_eq!(s.show("member_bans").len(), 5);
    }
}

/// `policy_list`'s record count in `prr status`.
fn policy_list_records(s: &Scratch) -> i64 {
    let st: Value = serde_json::from_str(&s.ok(&["status", "--format", "json"])).unwrap();
    let replicas = st["replicas"].as_array().unwrap();
    let r = replicas.iter().find(|r| r["name"] == "policy_list");
    r.unwrap()["records"].as_i64().unwrap()
}

#[test]
fn ingest_reports_a_views_change_as_its_record_count_changes() {
    let s = demo();
    let rule = |key: &str, event: &str| {
        serde_json::json!([{
            "event_id": event, "room_id": "!demo-policies:example.org",
            "type": "m.policy.rule.user", "state_key": key, "sender": "@moderator:example.org",
            "origin_server_ts": 1700000009000u64,
            "content": {"entity": format!("@{key}:example.org"), "recommendation": "m.ban"}
        }])
    };
    let manifest = |watch: &[&str]| {
        serde_json::json!({"instances": [
            {"id": "@second:example.org", "watch": watch, "protect": ["!demo-room:example.org"]}
        ]})
    };
    let list = ["!demo-policies:example.org"];
    // Each step: files ingested in one command (manifest changes, rule changes, both).
    let steps: Vec<Vec<Value>> = vec![
        vec![manifest(&list)],
        vec![rule("new1", "$new1")],
        vec![rule("new2", "$new2"), manifest(&[])],
        vec![
            manifest(&list),
            rule("new1", "$new1b"),
            rule("new3", "$new3"),
        ],
        vec![rule("other", "$other")],
    ];
    for (i, files) in steps.iter().enumerate() {
        let before = policy_list_records(&s);
        let paths: Vec<String> = (files.iter().enumerate())
            .map(|(j, f)| {
                let p = s.file(&format!("step{i}-{j}.json"), f.to_string().as_bytes());
                p.to_str().unwrap().to_string()
            })
            .collect();
        let mut args = vec!["ingest"];
        args.extend(paths.iter().map(String::as_str));
        let out = s.ok(&args);
        let after = policy_list_records(&s);
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("policy_list "));
        let (plus, minus) = line.map_or((0, 0), |l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[1][1..].parse::<i64>().unwrap(),
                f[2][1..].parse::<i64>().unwrap(),
            )
        });
        assert_eq!(plus - minus, after - before, "step {i}: {out}");
        assert!(plus == 0 || minus == 0, "a net change: {out}");
    }
    assert!(policy_list_records(&s) > 0);
}

#[test]
fn ingest_counts_the_rejects_in_its_summary() {
    let s = Scratch::new();
    let events = serde_json::json!([
        {"event_id": "$m1", "room_id": "!r:example.org", "type": "m.room.member",
         "state_key": "@a:example.org", "sender": "@a:example.org", "content": {}},
        {"event_id": "$m2", "room_id": "!r:example.org", "type": "m.room.member",
         "state_key": "@b:example.org", "sender": "@b:example.org",
         "content": {"membership": "wandering"}},
        {"event_id": "$m3", "room_id": "!r:example.org", "type": "m.room.member",
         "state_key": "@c:example.org", "sender": "@c:example.org",
         "content": {"membership": "join"}}
    ]);
    let f = s.file("members.json", events.to_string().as_bytes());
    let out = s.ok(&["ingest", f.to_str().unwrap()]);
    assert!(out.contains("rejects: 2 (see `prr show rejects`)"), "{out}");
    assert_eq!(s.show("rejects").len(), 2);
}
