//! `prr explain` and `GET /v1/explain` on the demo data: agree with the replicas they explain
//! (every ban's cited rule, every present user's matching rules, the ACL's deny list and sync),
//! explain users who are not present too (a server glob, a hashed rule), and refuse bad
//! requests.

use std::collections::BTreeSet;

use serde_json::Value;

use super::serve::Server;
use super::support::{Scratch, demo_store};

const INSTANCE: &str = "@draupnir:example.org";

fn explain(s: &Scratch, args: &[&str]) -> Value {
    let mut all = vec!["explain", INSTANCE];
    all.extend(args);
    all.extend(["--format", "json"]);
    serde_json::from_str(&s.ok(&all)).unwrap()
}

/// The rule key of a `member_matches` record or an explained rule.
fn rule_key(r: &Value) -> (String, String) {
    (r["room_id"].to_string(), r["event_id"].to_string())
}

#[test]
fn explanations_agree_with_the_replicas_for_every_member() {
    let s = demo_store();
    let bans = s.show("member_bans");
    let matches = s.show("member_matches");
    let members = s.show("room_members");
    let users: BTreeSet<&str> = members
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    assert!(users.len() > 40, "{}", users.len());
    for user in users {
        let e = explain(&s, &[user]);
        let want: Vec<&Value> = bans.iter().filter(|b| b["user_id"] == user).collect();
        assert_eq!(e["banned"], !want.is_empty(), "{user}: {e}");
        for b in &want {
            let room = (e["protected_rooms"].as_array().unwrap().iter())
                .find(|r| r["room_id"] == b["room_id"])
                .unwrap_or_else(|| panic!("{user}: {e}"));
            assert_eq!(&room["ban"], *b, "{user}");
            assert_eq!(e["cited"]["rule_event_id"], b["rule_event_id"], "{user}");
        }
        // A present user's matching rules are the replica's.
        let present =
            (e["protected_rooms"].as_array().unwrap().iter()).any(|r| r["present"] == true);
        if present {
            let want: BTreeSet<_> = (matches.iter())
                .filter(|m| m["user_id"] == user)
                .map(rule_key)
                .collect();
            let got: BTreeSet<_> = e["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(rule_key)
                .collect();
            assert_eq!(got, want, "{user}: {e}");
        }
    }
}

#[test]
fn a_hashed_rule_a_server_glob_and_a_stranger_are_explained() {
    let s = demo_store();
    // Matched by a hashed takedown rule, which the ban cites.
    let e = explain(&s, &["@evil:spam.example"]);
    assert_eq!(e["banned"], true, "{e}");
    let cited: Vec<&Value> = (e["rules"].as_array().unwrap().iter())
        .filter(|r| r["cited"] == true)
        .collect();
    assert_eq!(cited.len(), 1, "{e}");
    assert_eq!(cited[0]["match"], "hashed");
    assert_eq!(cited[0]["recommendation"], "m.takedown");
    // Not present anywhere, matched only by the server glob `*.spam.example`.
    let e = explain(&s, &["@nobody:x.spam.example"]);
    assert_eq!(e["banned"], false);
    let rules = e["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{e}");
    assert_eq!(
        (rules[0]["kind"].as_str(), rules[0]["match"].as_str()),
        (Some("server"), Some("glob"))
    );
    assert!(e["verdict"].as_str().unwrap().contains("server ACL"), "{e}");
    // Matched by nothing.
    let e = explain(
        &s,
        &["@friend:example.net", "--room", "!demo-room:example.org"],
    );
    assert_eq!(e["rules"], serde_json::json!([]));
    assert_eq!(e["protected_rooms"].as_array().unwrap().len(), 1);
    assert!(e["verdict"].as_str().unwrap().contains("no rule"), "{e}");
    // An unknown instance says so.
    let o = s.ok(&[
        "explain",
        "@nobody:example.org",
        "@evil:spam.example",
        "--format",
        "json",
    ]);
    assert!(o.contains("is not an instance"), "{o}");
    let o = s.prr(&["explain", INSTANCE]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_acl_explanation_agrees_with_server_acl_and_acl_sync() {
    let s = demo_store();
    let e = explain(&s, &["--acl"]);
    let acl = s.show("server_acl");
    let deny: Vec<&Value> = (e["deny"].as_array().unwrap().iter())
        .map(|d| &d["entity"])
        .collect();
    let want: Vec<&Value> = acl[0]["deny"].as_array().unwrap().iter().collect();
    assert_eq!(deny, want);
    let left: Vec<&str> = (e["left_out"].as_array().unwrap().iter())
        .map(|l| l["rule"]["entity"].as_str().unwrap_or("<hashed>"))
        .collect();
    assert!(left.contains(&"example.org"), "{e}");
    for sync in s.show("acl_sync") {
        let room = (e["rooms"].as_array().unwrap().iter())
            .find(|r| r["room_id"] == sync["room_id"])
            .unwrap();
        assert_eq!(room["in_sync"], sync["in_sync"]);
    }
    let demo_room = (e["rooms"].as_array().unwrap().iter())
        .find(|r| r["room_id"] == "!demo-room:example.org")
        .unwrap();
    assert!(
        demo_room["differs"]["deny_missing"].is_array(),
        "{demo_room}"
    );
}

#[test]
fn serve_explains_as_the_cli_does() {
    let s = demo_store();
    let cli = explain(&s, &["@spam2:chat.spam.example"]);
    let acl = explain(&s, &["--acl"]);
    let server = Server::start(&s, &[]);
    let got = server
        .json("/v1/explain?instance=%40draupnir%3Aexample.org&user=%40spam2%3Achat.spam.example");
    assert_eq!(got, cli);
    assert_eq!(
        server.json("/v1/explain?instance=%40draupnir%3Aexample.org&acl=true"),
        acl
    );
    for bad in [
        "/v1/explain?user=%40a%3Ax",
        "/v1/explain?instance=%40draupnir%3Aexample.org",
        "/v1/explain?instance=%40draupnir%3Aexample.org&acl=true&user=%40a%3Ax",
        "/v1/explain?instance=%40draupnir%3Aexample.org&acl=maybe",
        "/v1/explain?instance=%40draupnir%3Aexample.org&user=%40a%3Ax&bogus=1",
    ] {
        assert_eq!(server.get(bad).0, 400, "{bad}");
    }
}
