//! The effect handlers (issue 17) against a real Synapse: `prr enact` (one-shot) and `prr serve
//! --enact`, acting as the instance's bot through the appservice. What they did is checked
//! through Synapse (memberships, the room's `m.room.server_acl`, its timeline, its access log)
//! and through the `outcomes` and `pending` replicas.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prr_synapse_harness::{
    AppserviceRegistration, PolicyRule, RuleKind, Synapse, SynapseConfig, free_port,
};
use serde_json::{Value, json};

use super::super::serve::Server;
use super::super::support::{Scratch, bytes};
use super::{HS, World, appservice_world, banned, caught_up, eventually, slot, users};

/// The instance: a user of the registration's namespace (`@prr_.*`).
fn instance() -> String {
    format!("@prr_bot:{HS}")
}

/// Gives the instance's bot power `level` in the protected room (100: it may ban and set the
/// ACL; 0: neither), before it is there: catch-up registers it and joins it to the rooms. (A
/// bot in the rooms before `prr serve` listens would make Synapse mark the appservice down.)
fn bot_power(world: &World, level: i64) -> String {
    let bot = instance();
    (world.moderator)
        .set_power_level(&world.protected, &bot, level)
        .unwrap();
    bot
}

/// A Synapse module (third-party event rules) that holds the ban of one user `seconds` long,
/// after creating the file `marker`: a test kills prr while that ban is in flight.
const HOLD_BAN: &str = r#"
class HoldBan:
    def __init__(self, config, api):
        self.api = api
        self.user = config["user"]
        self.marker = config["marker"]
        self.seconds = config["seconds"]
        api.register_third_party_rules_callbacks(check_event_allowed=self.check)

    async def check(self, event, state_events):
        if (
            event.type == "m.room.member"
            and event.state_key == self.user
            and event.content.get("membership") == "ban"
        ):
            open(self.marker, "w").close()
            await self.api.sleep(self.seconds)
        return True, None
"#;

/// [`appservice_world`] with Synapse loading [`HOLD_BAN`] for the ban of `user`.
fn held_ban_world(s: &Scratch, user: &str, marker: &Path) -> (World, PathBuf, String) {
    let listen = format!("127.0.0.1:{}", free_port().unwrap());
    let reg = AppserviceRegistration::new(HS, Some(&format!("http://{listen}")));
    let file = s.dir.path().join("registration.yaml");
    reg.write(&file).unwrap();
    let modules = s.dir.path().join("modules");
    std::fs::create_dir(&modules).unwrap();
    std::fs::write(modules.join("hold_ban.py"), HOLD_BAN).unwrap();
    let module = json!({"module": "hold_ban.HoldBan",
        "config": {"user": user, "marker": marker, "seconds": 3}});
    let config = (SynapseConfig::new().with_appservice(reg))
        .with_python_path(&modules)
        .with_option("modules", json!([module]));
    (World::start(config), file, listen)
}

/// One `prr enact` run: its exit code, its stdout's ndjson lines, its stderr.
struct Run {
    code: Option<i32>,
    lines: Vec<Value>,
    stderr: String,
}

/// `prr --store <s> enact --homeserver <synapse> --registration <registration> --format ndjson
/// args...`.
fn enact(s: &Scratch, synapse: &Synapse, registration: &Path, args: &[&str]) -> Run {
    let mut all = vec![
        "enact",
        "--homeserver",
        synapse.base_url(),
        "--registration",
        registration.to_str().unwrap(),
        "--format",
        "ndjson",
    ];
    all.extend(args);
    let out = s.prr(&all);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines = (stdout.lines())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{stderr}")))
        .collect();
    Run {
        code: out.status.code(),
        lines,
        stderr,
    }
}

/// `prr serve --enact` as the appservice of `registration`, listening at `listen`.
fn enact_server(
    s: &Scratch,
    listen: &str,
    world: &World,
    registration: &Path,
    args: &[&str],
) -> Server {
    let mut all = vec![
        "--homeserver",
        world.synapse.base_url(),
        "--registration",
        registration.to_str().unwrap(),
        "--resync-every",
        "3600",
        "--enact",
    ];
    all.extend(args);
    Server::start_at(s, listen, &all)
}

/// An outcome's or a pending action's key without its instance: (room, action, target).
type Key = (String, String, String);

fn key(r: &Value) -> Key {
    let field = |f: &str| (r[f].as_str()).unwrap_or_else(|| panic!("no {f} in {r}"));
    (
        field("room_id").into(),
        field("action").into(),
        field("target").into(),
    )
}

fn ban(room: &str, user: &str) -> Key {
    (room.into(), "ban".into(), user.into())
}

fn acl(room: &str) -> Key {
    (room.into(), "server_acl".into(), String::new())
}

/// The rows of `instance` by key; panics on a key seen twice.
fn by_key(rows: &[Value], instance: &str) -> BTreeMap<Key, Value> {
    let mut out = BTreeMap::new();
    for r in rows.iter().filter(|r| r["instance"] == instance) {
        if let Some(old) = out.insert(key(r), r.clone()) {
            panic!("two rows for one key:\n {old}\n {r}");
        }
    }
    out
}

/// The keys of `instance`'s rows.
fn keys(rows: &[Value], instance: &str) -> BTreeSet<Key> {
    by_key(rows, instance).into_keys().collect()
}

/// The targets of the `ban` outcomes of `rows` that are `done` and whose target starts with
/// `prefix`.
fn done_bans(rows: &[Value], prefix: &str) -> BTreeSet<String> {
    (rows.iter())
        .filter(|r| r["action"] == "ban" && r["status"] == "done")
        .filter_map(|r| r["target"].as_str())
        .filter(|t| t.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    since.as_millis() as u64
}

/// Asserts that `o` is an outcome of `instance`, `done` at the first attempt, between `from`
/// and `to` (ms since the epoch).
fn done_at_first_attempt(o: &Value, instance: &str, from: u64, to: u64) {
    assert_eq!(o["instance"], instance, "{o}");
    assert_eq!(o["status"], "done", "{o}");
    assert_eq!(o["error"], Value::Null, "{o}");
    assert_eq!(o["attempts"], 1, "{o}");
    assert!(o["intent_seq"].as_u64().is_some(), "{o}");
    let at = o["at"].as_u64().unwrap_or_else(|| panic!("no at in {o}"));
    assert!(from <= at && at <= to, "at {at} not in [{from}, {to}]: {o}");
}

/// Asserts that `o` is `failed` with errcode `M_FORBIDDEN` after one attempt.
fn forbidden_once(o: &Value) {
    assert_eq!(o["status"], "failed", "{o}");
    assert_eq!(o["error"]["errcode"], "M_FORBIDDEN", "{o}");
    assert!(o["error"]["error"].is_string(), "{o}");
    assert_eq!(o["attempts"], 1, "{o}");
}

/// The lines of `rows` as a set of JSON texts (printed outcomes come in the order they were
/// made; the replica's in key order).
fn texts(rows: &[Value]) -> BTreeSet<String> {
    rows.iter().map(Value::to_string).collect()
}

/// The event of `(event_type, state_key)` in the current state of `room`, as the moderator
/// sees it.
fn state_event(world: &World, room: &str, event_type: &str, state_key: &str) -> Option<Value> {
    (world.moderator.state(room).unwrap().into_iter())
        .find(|e| e["type"] == event_type && e["state_key"] == state_key)
}

/// The membership of `user` in `room`, from Synapse.
fn membership(world: &World, room: &str, user: &str) -> Option<String> {
    world.moderator.membership_of(room, user).unwrap()
}

/// Every member's membership in `room` (one `/state` request), from Synapse.
fn memberships(world: &World, room: &str) -> BTreeMap<String, String> {
    (world.moderator.state(room).unwrap().into_iter())
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| {
            let user = e["state_key"].as_str().unwrap().to_string();
            (
                user,
                e["content"]["membership"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// How many ban events each user has in `room`'s timeline.
fn ban_events(world: &World, room: &str) -> BTreeMap<String, usize> {
    let filter = json!({"types": ["m.room.member"]});
    let mut count = BTreeMap::new();
    for e in world.moderator.messages(room, Some(&filter)).unwrap() {
        if e["content"]["membership"] == "ban" {
            let user = e["state_key"].as_str().unwrap().to_string();
            *count.entry(user).or_insert(0) += 1;
        }
    }
    count
}

/// How many requests Synapse's access log shows with `method` on a path of `room` ending in
/// `suffix` (a trailing `/` aside; every run of this Synapse).
fn requests(synapse: &Synapse, method: &str, room: &str, suffix: &str) -> usize {
    let log = std::fs::read_to_string(synapse.log_path()).unwrap();
    // The room id without its `!`, which a client may send percent-encoded.
    let id = &room[1..];
    (log.lines())
        .filter(|l| l.contains("Processed request"))
        .filter_map(|l| l.split_once(&format!("\"{method} /_matrix/client/v3/rooms/")))
        .filter(|(_, rest)| {
            let path = rest.split([' ', '?']).next().unwrap_or("");
            path.contains(id) && path.trim_end_matches('/').ends_with(suffix)
        })
        .count()
}

/// Waits until the outcomes of `server` say the intents of the world from its start are done:
/// the ban of `@baduser` and the protected room's ACL.
fn first_intents_done(server: &Server, world: &World, instance: &str) {
    let want = BTreeSet::from([
        ban(&world.protected, &format!("@baduser:{HS}")),
        acl(&world.protected),
    ]);
    eventually("the first intents are done", 60, || {
        let rows = server.rows("/v1/replicas/outcomes");
        let done: BTreeSet<Key> = (by_key(&rows, instance).into_iter())
            .filter(|(_, o)| o["status"] == "done")
            .map(|(k, _)| k)
            .collect();
        (done == want).then_some(()).ok_or(format!("{rows:?}"))
    });
}

/// Polls `f` every 10 ms for at most 60 s until it gives `Some`.
fn soon<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `prr enact` as the appservice: a dry run lists the pending actions and changes nothing;
/// then the users a literal, a glob and a hashed rule match are banned, with the rule's
/// reason, also one that only the run's catch-up can know, and the protected room gets the
/// ACL of the server rule; each has a `done` outcome of one attempt, printed and recorded, and
/// nothing is pending. A second run does nothing.
#[test]
fn enact_bans_and_sets_the_acl_once_and_a_second_run_does_nothing() {
    let _slot = slot();
    let s = Scratch::new();
    let (world, registration, _listen) = appservice_world(&s);
    let bot = bot_power(&world, 100);
    world.user_joins("spammer");
    world.user_joins("hashme");
    let instance = instance();
    let protected = world.protected.clone();
    world.ingest_into(&s, &world.manifest(&instance), &world.rooms());

    // A dry run: the pending actions, and no write to the store or to Synapse.
    let store = bytes(&s.store());
    let dry = enact(&s, &world.synapse, &registration, &["--dry-run"]);
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    let mut want = BTreeSet::from([acl(&protected)]);
    for user in users(&["baduser", "spammer", "hashme"]) {
        want.insert(ban(&protected, &user));
    }
    assert_eq!(keys(&dry.lines, &instance), want, "{:?}", dry.lines);
    assert_eq!(dry.lines.len(), want.len(), "{:?}", dry.lines);
    assert_eq!(bytes(&s.store()), store, "a dry run wrote to the store");
    for user in users(&["baduser", "spammer", "hashme"]) {
        assert_eq!(
            membership(&world, &protected, &user).as_deref(),
            Some("join")
        );
    }
    assert_eq!(world.moderator.server_acl(&protected).unwrap(), None);

    // A user who joins after the exports: only the run's catch-up can know them.
    world.user_joins("spamlate");
    let from = now_ms();
    let run = enact(&s, &world.synapse, &registration, &[&instance]);
    let to = now_ms();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let outcomes = s.show("outcomes");
    want.insert(ban(&protected, &format!("@spamlate:{HS}")));
    assert_eq!(keys(&outcomes, &instance), want, "{outcomes:?}");
    for o in &outcomes {
        done_at_first_attempt(o, &instance, from, to);
    }
    assert_eq!(texts(&run.lines), texts(&outcomes), "printed and recorded");
    let pending = s.show("pending");
    assert!(keys(&pending, &instance).is_empty(), "{pending:?}");

    // Synapse: the bans, by the bot with the rule's reason, and the ACL.
    let reasons = [
        ("baduser", "literal"),
        ("spammer", "glob"),
        ("spamlate", "glob"),
        ("hashme", "hashed"),
    ];
    for (localpart, reason) in reasons {
        let user = format!("@{localpart}:{HS}");
        let e = state_event(&world, &protected, "m.room.member", &user).unwrap();
        assert_eq!(e["content"]["membership"], "ban", "{e}");
        assert_eq!(e["content"]["reason"], reason, "{e}");
        assert_eq!(e["sender"], bot.as_str(), "{e}");
    }
    let alice = format!("@alice:{HS}");
    assert_eq!(
        membership(&world, &protected, &alice).as_deref(),
        Some("join")
    );
    let acl_event = state_event(&world, &protected, "m.room.server_acl", "").unwrap();
    assert_eq!(acl_event["sender"], bot.as_str(), "{acl_event}");
    assert_eq!(
        acl_event["content"]["deny"],
        json!(["evil.example"]),
        "{acl_event}"
    );
    let allow = acl_event["content"]["allow"].as_array().unwrap();
    assert!(allow.contains(&json!("*")), "{acl_event}");

    // A second run: it catches up (the ACL is now in sync), enacts nothing, and changes no
    // outcome.
    let events: Vec<Value> = (state_event(&world, &protected, "m.room.server_acl", ""))
        .into_iter()
        .chain(reasons.iter().map(|(l, _)| {
            state_event(&world, &protected, "m.room.member", &format!("@{l}:{HS}")).unwrap()
        }))
        .map(|e| e["event_id"].clone())
        .collect();
    let again = enact(&s, &world.synapse, &registration, &[]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again.lines.is_empty(), "{:?}", again.lines);
    assert_eq!(s.show("outcomes"), outcomes);
    let sync: Vec<Value> = (s.show("acl_sync").into_iter())
        .filter(|r| r["instance"] == instance.as_str())
        .collect();
    assert_eq!(sync.len(), 1, "{sync:?}");
    assert_eq!(sync[0]["in_sync"], true, "{sync:?}");
    let events_after: Vec<Value> = (state_event(&world, &protected, "m.room.server_acl", ""))
        .into_iter()
        .chain(reasons.iter().map(|(l, _)| {
            state_event(&world, &protected, "m.room.member", &format!("@{l}:{HS}")).unwrap()
        }))
        .map(|e| e["event_id"].clone())
        .collect();
    assert_eq!(events_after, events);
    assert_eq!(requests(&world.synapse, "POST", &protected, "/ban"), 4);
    let acl_puts = requests(&world.synapse, "PUT", &protected, "m.room.server_acl");
    assert_eq!(acl_puts, 1);
}

/// `prr serve --enact` is SIGKILLed while it bans 40 users a new glob rule matches: while the
/// ban of the sixth is in flight (Synapse holds it, [`HOLD_BAN`]), five done. Once Synapse has
/// made that ban, prr restarts on the same store: every user is banned, each with one `done`
/// outcome of one attempt (those done before the kill unchanged; the one in flight done too, a
/// user banned already counting as done), one ban event in the room's timeline, and Synapse saw
/// one ban request per user, or two for the one in flight.
#[test]
fn serve_enact_sigkilled_during_a_batch_of_bans_loses_and_repeats_none() {
    let _slot = slot();
    let s = Scratch::new();
    let marker = s.dir.path().join("ban-held");
    let held = format!("@batch05:{HS}");
    let (world, registration, listen) = held_ban_world(&s, &held, &marker);
    bot_power(&world, 100);
    let names: Vec<String> = (0..40).map(|i| format!("batch{i:02}")).collect();
    for n in &names {
        world.user_joins(n);
    }
    let batch = users(&names.iter().map(String::as_str).collect::<Vec<_>>());
    let prefix = "@batch";
    let instance = instance();
    let protected = world.protected.clone();
    let server = enact_server(&s, &listen, &world, &registration, &[]);
    server.ingest(&world.manifest(&instance));
    caught_up(&server, &instance);
    first_intents_done(&server, &world, &instance);

    let rule = PolicyRule::entity(RuleKind::User, "@batch*:localhost").with_reason("batch");
    world.moderator.send_rule(&world.policy, &rule).unwrap();
    soon("the ban of the sixth reaches Synapse", || {
        marker.exists().then_some(())
    });
    server.kill();
    // What the store holds after the kill: the five bans before the one in flight.
    let at_kill = by_key(&s.show("outcomes"), &instance);
    let done_at_kill: BTreeMap<Key, Value> = (at_kill.into_iter())
        .filter(|((_, _, t), o)| t.starts_with(prefix) && o["status"] == "done")
        .collect();
    let before: BTreeSet<Key> = (0..5)
        .map(|i| ban(&protected, &format!("@batch{i:02}:{HS}")))
        .collect();
    assert_eq!(
        done_at_kill.keys().cloned().collect::<BTreeSet<_>>(),
        before
    );
    eventually("Synapse makes the ban it held", 30, || {
        let m = membership(&world, &protected, &held);
        (m.as_deref() == Some("ban"))
            .then_some(())
            .ok_or(format!("{m:?}"))
    });

    let server = enact_server(&s, &listen, &world, &registration, &[]);
    caught_up(&server, &instance);
    eventually("the batch is banned and nothing is pending", 60, || {
        let pending = keys(&server.rows("/v1/replicas/pending"), &instance);
        let now = memberships(&world, &protected);
        let not_banned: Vec<&String> = (batch.iter())
            .filter(|u| now.get(*u).map(String::as_str) != Some("ban"))
            .collect();
        (pending.is_empty() && not_banned.is_empty())
            .then_some(())
            .ok_or(format!("pending {pending:?}; not banned {not_banned:?}"))
    });
    let rows = server.rows("/v1/replicas/outcomes");
    let outcomes = by_key(&rows, &instance);
    for (k, o) in &done_at_kill {
        assert_eq!(
            outcomes.get(k),
            Some(o),
            "a done outcome changed after the restart"
        );
    }

    // Synapse: one ban event per user, and no more ban requests than bans plus the one that
    // may have been in flight at the kill.
    let events = ban_events(&world, &protected);
    let mut all = batch.clone();
    all.insert(format!("@baduser:{HS}"));
    let want: BTreeMap<String, usize> = all.iter().map(|u| (u.clone(), 1)).collect();
    assert_eq!(events, want);
    let posts = requests(&world.synapse, "POST", &protected, "/ban");
    eprintln!("{posts} ban requests for {} bans", all.len());
    assert!(
        all.len() <= posts && posts <= all.len() + 1,
        "{posts} ban requests for {} bans",
        all.len()
    );

    // Every ban of the batch has its `done` outcome, of one attempt.
    let intended = banned(&server, &protected);
    let wrong: Vec<String> = (batch.iter())
        .filter(|u| {
            let o = outcomes.get(&ban(&protected, u));
            !o.is_some_and(|o| o["status"] == "done" && o["attempts"] == 1)
        })
        .map(|u| {
            format!(
                "{u}: Synapse says {:?}, in member_bans: {}, outcome: {:?}",
                membership(&world, &protected, u),
                intended.contains(u),
                outcomes.get(&ban(&protected, u)),
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "bans without a done outcome of one attempt: {wrong:#?}"
    );
    for user in &batch {
        done_at_first_attempt(&outcomes[&ban(&protected, user)], &instance, 0, now_ms());
    }
    assert_eq!(server.terminate(), Some(0));
}

/// A bot whose power level is lowered to 0: `prr enact` records the ban and the ACL as
/// `failed` with `M_FORBIDDEN` and exits 1; neither a second run nor `serve --enact` (the ACL
/// interval at 1 s) retries them. With power again, `--retry-failed` enacts both.
#[test]
fn a_bot_without_power_records_failed_outcomes_and_does_not_retry_them() {
    let _slot = slot();
    let s = Scratch::new();
    let (world, registration, listen) = appservice_world(&s);
    let bot = bot_power(&world, 0);
    let instance = instance();
    let protected = world.protected.clone();
    let baduser = format!("@baduser:{HS}");
    let manifest = s.file("manifest.json", &world.manifest(&instance));
    s.ok(&["ingest", manifest.to_str().unwrap()]);

    let first = enact(&s, &world.synapse, &registration, &[]);
    assert_eq!(first.code, Some(1), "{}", first.stderr);
    let outcomes = s.show("outcomes");
    let want = BTreeSet::from([ban(&protected, &baduser), acl(&protected)]);
    assert_eq!(keys(&outcomes, &instance), want, "{outcomes:?}");
    outcomes.iter().for_each(forbidden_once);
    assert_eq!(
        texts(&first.lines),
        texts(&outcomes),
        "printed and recorded"
    );
    assert_eq!(
        membership(&world, &protected, &baduser).as_deref(),
        Some("join")
    );
    assert_eq!(world.moderator.server_acl(&protected).unwrap(), None);

    // A second run retries neither.
    let second = enact(&s, &world.synapse, &registration, &[]);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert!(second.lines.is_empty(), "{:?}", second.lines);
    assert_eq!(s.show("outcomes"), outcomes);
    let pending = s.show("pending");
    assert_eq!(
        keys(&pending, &instance),
        want,
        "failed is not done: {pending:?}"
    );

    // Nor does the service, though the ACL interval passes three times.
    let server = enact_server(&s, &listen, &world, &registration, &["--acl-interval", "1"]);
    caught_up(&server, &instance);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(server.rows("/v1/replicas/outcomes"), outcomes);
    assert_eq!(server.terminate(), Some(0));
    assert_eq!(requests(&world.synapse, "POST", &protected, "/ban"), 1);
    let acl_puts = requests(&world.synapse, "PUT", &protected, "m.room.server_acl");
    assert_eq!(acl_puts, 1);

    // The bot gets its power back; an operator asks for a retry.
    (world.moderator)
        .set_power_level(&protected, bot.as_str(), 100)
        .unwrap();
    let retry = enact(&s, &world.synapse, &registration, &["--retry-failed"]);
    assert_eq!(retry.code, Some(0), "{}", retry.stderr);
    let after = by_key(&s.show("outcomes"), &instance);
    assert_eq!(after.keys().cloned().collect::<BTreeSet<_>>(), want);
    for o in after.values() {
        assert_eq!(o["status"], "done", "{o}");
        assert_eq!(o["error"], Value::Null, "{o}");
        assert_eq!(o["attempts"], 2, "{o}");
    }
    assert_eq!(
        membership(&world, &protected, &baduser).as_deref(),
        Some("ban")
    );
    let acl = world.moderator.server_acl(&protected).unwrap().unwrap();
    assert_eq!(acl["deny"], json!(["evil.example"]), "{acl}");
}

/// The rules are in the policy room before `prr serve --enact` starts: a glob matching 60 users
/// and a literal rule naming a user whose id sorts after theirs, so that the first pass holds
/// every ban, the late user's last in the room's order. Once the crowd's bans have begun, the
/// literal rule is redacted, before the late user's turn: the user is not banned, and the
/// outcome is `withdrawn`.
#[test]
fn a_rule_removed_before_its_ban_is_enacted_bans_no_one_and_is_withdrawn() {
    let _slot = slot();
    let s = Scratch::new();
    let (world, registration, listen) = appservice_world(&s);
    bot_power(&world, 100);
    let names: Vec<String> = (0..60).map(|i| format!("crowd{i:02}")).collect();
    for n in &names {
        world.user_joins(n);
    }
    let crowd = users(&names.iter().map(String::as_str).collect::<Vec<_>>());
    world.user_joins("zzzlast");
    let last = format!("@zzzlast:{HS}");
    let glob = PolicyRule::entity(RuleKind::User, "@crowd*:localhost").with_reason("crowd");
    world.moderator.send_rule(&world.policy, &glob).unwrap();
    let literal = PolicyRule::entity(RuleKind::User, &last).with_reason("late");
    let rule_event = world.moderator.send_rule(&world.policy, &literal).unwrap();
    let instance = instance();
    let protected = world.protected.clone();
    let server = enact_server(&s, &listen, &world, &registration, &[]);
    server.ingest(&world.manifest(&instance));
    caught_up(&server, &instance);

    soon("the crowd's bans have begun", || {
        let n = done_bans(&server.rows("/v1/replicas/outcomes"), "@crowd").len();
        (n >= 1).then_some(())
    });
    let pending = server.rows("/v1/replicas/pending");
    assert!(
        keys(&pending, &instance).contains(&ban(&protected, &last)),
        "{pending:?}"
    );
    let done = done_bans(&server.rows("/v1/replicas/outcomes"), "@crowd").len();
    assert!(
        done < crowd.len(),
        "the crowd's bans were over before the rule was redacted: the race is lost"
    );
    world
        .moderator
        .redact(&world.policy, &rule_event, Some("mistake"))
        .unwrap();
    eprintln!("rule redacted with {done} of the crowd's 60 bans done");

    eventually("the crowd is banned and the late ban withdrawn", 60, || {
        let rows = server.rows("/v1/replicas/outcomes");
        let got = done_bans(&rows, "@crowd");
        let outcomes = by_key(&rows, &instance);
        let last_outcome = outcomes.get(&ban(&protected, &last));
        let first = [ban(&protected, &format!("@baduser:{HS}")), acl(&protected)];
        let first_done = first
            .iter()
            .all(|k| outcomes.get(k).is_some_and(|o| o["status"] == "done"));
        (got == crowd && last_outcome.is_some() && first_done)
            .then_some(())
            .ok_or(format!("{} done; late: {last_outcome:?}", got.len()))
    });
    let outcomes = by_key(&server.rows("/v1/replicas/outcomes"), &instance);
    let o = &outcomes[&ban(&protected, &last)];
    assert_eq!(o["status"], "withdrawn", "{o}");
    assert_eq!(o["instance"], instance.as_str(), "{o}");
    assert_eq!(
        membership(&world, &protected, &last).as_deref(),
        Some("join")
    );
    for user in &crowd {
        assert_eq!(outcomes[&ban(&protected, user)]["status"], "done");
    }
    let at: Vec<u64> = (crowd.iter())
        .map(|u| outcomes[&ban(&protected, u)]["at"].as_u64().unwrap())
        .collect();
    let (first, end) = (at.iter().min().unwrap(), at.iter().max().unwrap());
    eprintln!("the crowd's bans took {} ms", end - first);
    let pending = server.rows("/v1/replicas/pending");
    assert!(keys(&pending, &instance).is_empty(), "{pending:?}");
    // The bans of baduser and the crowd, none for the late user.
    let posts = requests(&world.synapse, "POST", &protected, "/ban");
    assert_eq!(posts, 1 + crowd.len());
    assert!(!ban_events(&world, &protected).contains_key(&last));
    assert_eq!(server.terminate(), Some(0));
}
