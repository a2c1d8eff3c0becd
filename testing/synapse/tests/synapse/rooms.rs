//! A policy room and a protected room (room version 12) built through the harness, read back
//! from `/state`, and fed to prr's parser and replicas.

use prr_synapse_harness::{
    Client, PolicyRule, RoomOptions, RuleKind, Synapse, SynapseConfig, sha256_base64,
};
use serde_json::{Value, json};

use super::shared::Shared;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The rooms every test of this file reads.
struct Rooms {
    synapse: Synapse,
    admin: Client,
    alice: Client,
    bob: Client,
    policy: String,
    protected: String,
    literal: String,
    glob: String,
    server: String,
    hashed: String,
    redaction: String,
}

/// The number of tests below that call `ROOMS.get()`.
static ROOMS: Shared<Rooms> = Shared::new(6, build);

fn build() -> Rooms {
    let synapse = Synapse::start(SynapseConfig::new()).unwrap_or_else(|e| panic!("{e}"));
    let step = |what: &str, e: prr_synapse_harness::Error| -> ! {
        panic!("{what}: {e}\n--- Synapse log ---\n{}", synapse.log_tail(30))
    };
    let admin = synapse
        .register("admin", "admin-pw", true)
        .unwrap_or_else(|e| step("register admin", e));
    let alice = synapse
        .register("alice", "alice-pw", false)
        .unwrap_or_else(|e| step("register alice", e));
    let bob = synapse
        .register("bob", "bob-pw", false)
        .unwrap_or_else(|e| step("register bob", e));
    let policy = admin
        .create_room(&RoomOptions::new().with_name("ban list"))
        .unwrap_or_else(|e| step("create the policy room", e));
    let rule = |r: PolicyRule| {
        admin
            .send_rule(&policy, &r)
            .unwrap_or_else(|e| step("send a rule", e))
    };
    let literal = rule(PolicyRule::entity(RuleKind::User, "@bob:localhost").with_reason("spam"));
    let glob = rule(PolicyRule::entity(RuleKind::User, "@spam*:localhost"));
    let server = rule(
        PolicyRule::entity(RuleKind::Server, "evil.example").with_recommendation("m.takedown"),
    );
    let hashed = rule(PolicyRule::hashed(RuleKind::User, "@alice:localhost").with_reason("hashed"));
    let redaction = admin
        .redact(&policy, &glob, Some("too broad"))
        .unwrap_or_else(|e| step("redact the glob rule", e));
    let protected = admin
        .create_room(&RoomOptions::new().with_name("protected").public())
        .unwrap_or_else(|e| step("create the protected room", e));
    alice
        .join(&protected)
        .unwrap_or_else(|e| step("alice joins", e));
    bob.join(&protected)
        .unwrap_or_else(|e| step("bob joins", e));
    admin
        .ban(&protected, bob.user_id(), Some("listed"))
        .unwrap_or_else(|e| step("ban bob", e));
    Rooms {
        synapse,
        admin,
        alice,
        bob,
        policy,
        protected,
        literal,
        glob,
        server,
        hashed,
        redaction,
    }
}

/// The state event at `(type, state_key)` in a `/state` answer.
fn find<'a>(state: &'a [Value], event_type: &str, state_key: &str) -> &'a Value {
    state
        .iter()
        .find(|e| e["type"] == event_type && e["state_key"] == state_key)
        .unwrap_or_else(|| panic!("no {event_type} / {state_key:?} in {state:#?}"))
}

#[test]
fn v12_rooms_have_ids_without_server_part_and_an_implicit_creator() -> TestResult {
    let rooms = ROOMS.get();
    for room in [&rooms.policy, &rooms.protected] {
        assert!(room.starts_with('!') && !room.contains(':'), "{room}");
        assert_eq!(room.len(), 44, "{room}: `!` and 43 characters");
    }
    let state = rooms.admin.state(&rooms.policy)?;
    let create = find(&state, "m.room.create", "");
    assert_eq!(create["content"]["room_version"], "12");
    assert_eq!(create["sender"], rooms.admin.user_id());
    let power = find(&state, "m.room.power_levels", "");
    assert!(
        power["content"]["users"]
            .get(rooms.admin.user_id())
            .is_none(),
        "the v12 creator's power is implicit: {power}"
    );
    // What this Synapse offers: 12 is the default.
    let caps = rooms.alice.capabilities()?;
    assert_eq!(caps["capabilities"]["m.room_versions"]["default"], "12");
    assert_eq!(
        caps["capabilities"]["m.room_versions"]["available"]["12"],
        "stable"
    );
    // Listing the creator in the power levels is refused in room version 12.
    let listed =
        RoomOptions::new().with_power_levels(json!({"users": {rooms.alice.user_id(): 100}}));
    let refused = rooms.alice.create_room(&listed).unwrap_err();
    assert_eq!(refused.status(), Some(400), "{refused}");
    // Additional creators share the creator's implicit power.
    let shared = RoomOptions::new().with_additional_creators(&[rooms.bob.user_id()]);
    let room = rooms.alice.create_room(&shared)?;
    rooms.bob.join(&room).unwrap_err(); // private: an invite is still needed to join
    rooms.alice.invite(&room, rooms.bob.user_id())?;
    rooms.bob.join(&room)?;
    rooms
        .bob
        .send_state(&room, "m.room.topic", "", &json!({"topic": "bob may"}))?;
    let create = rooms.bob.state(&room)?;
    let create = find(&create, "m.room.create", "");
    assert_eq!(
        create["content"]["additional_creators"],
        json!([rooms.bob.user_id()])
    );
    // Room version 11 rooms still have a server part.
    let v11 = rooms
        .alice
        .create_room(&RoomOptions::new().with_version("11"))?;
    assert!(
        v11.ends_with(&format!(":{}", rooms.synapse.server_name())),
        "{v11}"
    );
    Ok(())
}

#[test]
fn policy_rules_and_a_redaction_read_back_from_state() -> TestResult {
    let rooms = ROOMS.get();
    let state = rooms.alice.state(&rooms.policy).err();
    // alice never joined the (private) policy room: Synapse refuses her its state.
    assert_eq!(state.and_then(|e| e.status()), Some(403));
    let state = rooms.admin.state(&rooms.policy)?;

    let literal = find(&state, "m.policy.rule.user", "rule:@bob:localhost");
    assert_eq!(literal["event_id"], rooms.literal.as_str());
    assert_eq!(
        literal["content"],
        json!({"entity": "@bob:localhost", "recommendation": "m.ban", "reason": "spam"})
    );
    let server = find(&state, "m.policy.rule.server", "rule:evil.example");
    assert_eq!(server["event_id"], rooms.server.as_str());
    assert_eq!(server["content"]["recommendation"], "m.takedown");

    let sha = sha256_base64("@alice:localhost");
    assert_eq!(sha, prr_replicas::sha256_base64("@alice:localhost"));
    let hashed = find(&state, "m.policy.rule.user", &format!("rule:sha256:{sha}"));
    assert_eq!(hashed["event_id"], rooms.hashed.as_str());
    assert_eq!(
        hashed["content"]["org.matrix.msc4205.hashes"]["sha256"],
        sha.as_str()
    );
    assert!(hashed["content"].get("entity").is_none(), "{hashed}");

    // The redacted glob rule stays at its key with its content stripped.
    let glob = find(&state, "m.policy.rule.user", "rule:@spam*:localhost");
    assert_eq!(glob["event_id"], rooms.glob.as_str());
    assert_eq!(glob["content"], json!({}), "{glob}");
    let redacted_by = &glob["unsigned"]["redacted_because"];
    assert_eq!(redacted_by["event_id"], rooms.redaction.as_str(), "{glob}");
    // Room version 11+ redactions carry `redacts` in their content.
    assert_eq!(redacted_by["content"]["redacts"], rooms.glob.as_str());
    let redaction = rooms.admin.event(&rooms.policy, &rooms.redaction)?;
    assert_eq!(redaction["type"], "m.room.redaction");
    Ok(())
}

#[test]
fn account_data_reads_back_per_user() -> TestResult {
    let rooms = ROOMS.get();
    let kind = "org.matrix.mjolnir.protected_rooms";
    assert_eq!(rooms.alice.account_data(kind)?, None);
    let content = json!({"rooms": [rooms.protected]});
    rooms.alice.set_account_data(kind, &content)?;
    assert_eq!(rooms.alice.account_data(kind)?, Some(content));
    // Another user's account data is its own.
    assert_eq!(rooms.admin.account_data(kind)?, None);
    Ok(())
}

#[test]
fn joins_and_a_ban_read_back_from_state() -> TestResult {
    let rooms = ROOMS.get();
    let state = rooms.alice.state(&rooms.protected)?;
    let alice = find(&state, "m.room.member", rooms.alice.user_id());
    assert_eq!(alice["content"]["membership"], "join");
    let bob = find(&state, "m.room.member", rooms.bob.user_id());
    assert_eq!(bob["content"]["membership"], "ban");
    assert_eq!(bob["content"]["reason"], "listed");
    assert_eq!(bob["sender"], rooms.admin.user_id());
    // Banned, bob can neither read the state nor join again.
    assert_eq!(
        rooms.bob.state(&rooms.protected).unwrap_err().status(),
        Some(403)
    );
    let again = rooms.bob.join(&rooms.protected).unwrap_err();
    // Synapse 1.163 says M_BAD_STATE ("Cannot join user who was banned").
    assert_eq!(again.status(), Some(403), "{again}");
    assert_eq!(rooms.alice.joined_rooms()?, vec![rooms.protected.clone()]);
    // The same through `membership_of`, and the ban once in the room's timeline.
    let of = |user: &str| rooms.alice.membership_of(&rooms.protected, user);
    assert_eq!(of(rooms.bob.user_id())?.as_deref(), Some("ban"));
    assert_eq!(of(rooms.alice.user_id())?.as_deref(), Some("join"));
    assert_eq!(of("@nobody:localhost")?, None);
    let members = json!({"types": ["m.room.member"]});
    let timeline = rooms.alice.messages(&rooms.protected, Some(&members))?;
    assert!(timeline.iter().all(|e| e["type"] == "m.room.member"));
    let bans: Vec<&Value> = (timeline.iter())
        .filter(|e| e["content"]["membership"] == "ban")
        .collect();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0]["state_key"], rooms.bob.user_id());
    Ok(())
}

/// `set_power_level` gives a member the power to set the room's `m.room.server_acl` (100 in a
/// public room) and takes it away: then Synapse refuses with 403 `M_FORBIDDEN`, as it does a
/// ban (50).
#[test]
fn power_levels_give_and_take_the_power_to_set_a_server_acl() -> TestResult {
    let rooms = ROOMS.get();
    let room = (rooms.admin).create_room(&RoomOptions::new().public().with_name("acl"))?;
    // Users of their own: the other tests count alice's and bob's rooms.
    let member = rooms.synapse.register("aclmember", "pw", false)?;
    let victim = rooms.synapse.register("aclvictim", "pw", false)?;
    member.join(&room)?;
    victim.join(&room)?;
    assert_eq!(rooms.admin.server_acl(&room)?, None);
    rooms.admin.set_power_level(&room, member.user_id(), 100)?;
    let acl = json!({"allow": ["*"], "deny": ["evil.example"], "allow_ip_literals": false});
    member.send_state(&room, "m.room.server_acl", "", &acl)?;
    assert_eq!(rooms.admin.server_acl(&room)?, Some(acl.clone()));
    rooms.admin.set_power_level(&room, member.user_id(), 0)?;
    let refused = member
        .send_state(&room, "m.room.server_acl", "", &json!({"allow": ["*"]}))
        .unwrap_err();
    assert_eq!(refused.status(), Some(403), "{refused}");
    assert_eq!(refused.errcode(), Some("M_FORBIDDEN"), "{refused}");
    let refused = member.ban(&room, victim.user_id(), None).unwrap_err();
    assert_eq!(refused.errcode(), Some("M_FORBIDDEN"), "{refused}");
    assert_eq!(rooms.admin.server_acl(&room)?, Some(acl));
    let levels = (rooms.admin.state_event(&room, "m.room.power_levels", "")?).unwrap();
    assert_eq!(levels["users"][member.user_id()], 0, "{levels}");
    Ok(())
}

#[test]
fn state_exports_parse_and_give_prr_its_rules_members_and_a_ban_intent() -> TestResult {
    let rooms = ROOMS.get();
    let dir = tempfile::tempdir()?;
    // `PRR_SYNAPSE_EXPORT_DIR=DIR` keeps the three files, to try `prr ingest DIR` by hand.
    let keep = std::env::var_os("PRR_SYNAPSE_EXPORT_DIR").map(std::path::PathBuf::from);
    // Both shapes `prr ingest` reads: the client API's array and the admin API's `{"state"}`.
    let policy = rooms.admin.state_export(&rooms.policy)?;
    let protected = rooms.admin.admin_state_export(&rooms.protected)?;
    assert!(protected.starts_with("{\"state\":"), "{protected:.60}");
    let manifest = json!({"instances": [{
        "id": "@draupnir:localhost",
        "watch": [rooms.policy],
        "protect": [rooms.protected],
    }]})
    .to_string();
    let mut batches = Vec::new();
    for (name, text) in [
        ("policy.json", &policy),
        ("protected.json", &protected),
        ("manifest.json", &manifest),
    ] {
        std::fs::write(dir.path().join(name), text)?;
        if let Some(keep) = &keep {
            std::fs::create_dir_all(keep)?;
            std::fs::write(keep.join(name), text)?;
        }
        batches.push(prr_replicas::parse_file(name, text.as_bytes())?);
    }
    let config = prr_engine::RuntimeConfig::new()
        .with_store(dir.path().join("prr.redb"))
        .with_workers(1);
    let mut m = prr_replicas::Matrix::start(config)?;
    m.ingest_many(&batches)?;

    let mut rules: Vec<(String, String, String)> = m
        .show("policy_room", Some(&rooms.policy), None)?
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("null").to_string();
            (s("kind"), s("match"), s("event_id"))
        })
        .collect();
    rules.sort();
    let mut want = vec![
        ("server".into(), "literal".into(), rooms.server.clone()),
        ("user".into(), "hashed".into(), rooms.hashed.clone()),
        ("user".into(), "literal".into(), rooms.literal.clone()),
    ];
    want.sort();
    assert_eq!(rules, want, "the redacted glob rule is no rule");

    let members: Vec<(String, String)> = m
        .show("room_members", Some(&rooms.protected), None)?
        .iter()
        .map(|r| (r["user_id"].to_string(), r["membership"].to_string()))
        .collect();
    for (user, membership) in [
        (rooms.admin.user_id(), "join"),
        (rooms.alice.user_id(), "join"),
        (rooms.bob.user_id(), "ban"),
    ] {
        let want = (json!(user).to_string(), json!(membership).to_string());
        assert!(members.contains(&want), "{want:?} not in {members:?}");
    }

    // alice matches the hashed rule and is present: prr intends to ban her; bob is banned already.
    let bans = m.show("member_bans", Some("@draupnir:localhost"), None)?;
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0]["user_id"], rooms.alice.user_id());
    assert_eq!(bans[0]["room_id"], rooms.protected.as_str());
    assert_eq!(bans[0]["rule_event_id"], rooms.hashed.as_str());
    assert_eq!(bans[0]["reason"], "hashed");
    let acl = m.show("server_acl", Some("@draupnir:localhost"), None)?;
    assert_eq!(acl[0]["deny"], json!(["evil.example"]), "{acl:?}");
    m.shutdown()?;
    Ok(())
}
