//! The check of a replica's resume computation, shared by each replica's property test: a
//! DAG of the replica's own description over its inputs declared as sources (same names,
//! same partition function), so that the inputs can be fed arbitrary well-formed contents.
//! Contents at a restore point are pushed into a runtime with a store whose revisions have
//! several chunks; it restarts (the replica must be resumed), and after each of the following
//! input deltas the resumed replica equals its computation from scratch (a runtime without a
//! store fed the same contents).
//!
//! Every string the records and the computations use is interned first, in the order of
//! [`pool`], so that an id is the same in every runtime: id `i` is `pool()[i]`.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prr_engine::{
    Dag, DagError, Dictionary, Id, ReplicaDescription, Runtime, RuntimeConfig, SourceDelta,
};

use crate::facts::facts_of;
use crate::intent::acl_fingerprint_of;
use crate::known::{Known, rule_type_names};
use crate::record::{
    Action, ChosenRule, Class, Facts, Kind, MatchKind, Membership, Outcome, OutcomeStatus, Rec,
    Relation, RoomState, Rule,
};
use crate::rules::sha256_base64;

/// Rooms: protected, watched, or both.
pub(crate) const ROOMS: [&str; 3] = ["!a:x", "!b:x", "!c:y"];
/// Users (members), two of them also instances.
pub(crate) const USERS: [&str; 5] = [
    "@spam1:evil.org",
    "@spam2:evil.org",
    "@bob:good.net",
    "@eve:Evil.ORG:8448",
    "@bot:good.net",
];
/// Bot instances.
pub(crate) const INSTANCES: [&str; 2] = ["@bot:good.net", "@bot:evil.org"];
const EVENTS: [&str; 3] = ["$1", "$2", "$3"];
const RULE_KEYS: [&str; 2] = ["r1", "r2"];
const USER_ENTITIES: [&str; 3] = ["@bob:good.net", "@spam*:evil.org", "@eve*"];
const SERVER_ENTITIES: [&str; 3] = ["evil.org", "*.org", "good.net"];
const RECOMMENDATIONS: [&str; 3] = [
    "m.ban",
    "org.matrix.mjolnir.ban",
    "org.matrix.mjolnir.allow",
];
const REASONS: [&str; 1] = ["spam"];
const MEMBER_CONTENTS: [&str; 9] = [
    r#"{"membership":"join"}"#,
    r#"{"membership":"join","displayname":"Bob"}"#,
    r#"{"membership":"invite"}"#,
    r#"{"membership":"knock"}"#,
    r#"{"membership":"leave"}"#,
    r#"{"membership":"ban"}"#,
    r#"{"membership":"dance"}"#,
    r#"{"displayname":"Bob"}"#,
    "not JSON",
];
const ACL_CONTENTS: [&str; 4] = [
    r#"{"allow":["*"],"deny":["evil.org"],"allow_ip_literals":false}"#,
    r#"{"allow":["*"],"deny":["*.org","evil.org"],"allow_ip_literals":false}"#,
    r#"{"allow":["*"],"deny":[],"allow_ip_literals":false}"#,
    r#"{"allow":["*"],"deny":["evil.org"]}"#,
];

/// The contents of rule events: rules of every matcher, invalid rules, an empty slot.
fn rule_contents() -> Vec<String> {
    let hash = sha256_base64("@bob:good.net");
    vec![
        r#"{"entity":"@spam*:evil.org","recommendation":"m.ban","reason":"spam"}"#.into(),
        r#"{"entity":"@bob:good.net","recommendation":"org.matrix.mjolnir.ban"}"#.into(),
        r#"{"entity":"@eve*","recommendation":"org.matrix.mjolnir.allow"}"#.into(),
        format!(r#"{{"hashes":{{"sha256":"{hash}"}},"recommendation":"m.ban"}}"#),
        r#"{"entity":"evil.org","recommendation":"m.ban","reason":"spam"}"#.into(),
        r#"{"entity":"*.org","recommendation":"m.ban"}"#.into(),
        r#"{"entity":"good.net","recommendation":"m.ban"}"#.into(),
        r#"{"entity":1,"recommendation":"m.ban"}"#.into(),
        r#"{"recommendation":"m.ban"}"#.into(),
        r#"{"entity":"x","recommendation":2}"#.into(),
        "{}".into(),
    ]
}

/// Every string of the records and of the computations, in the order they are interned.
pub(crate) fn pool() -> &'static [String] {
    static POOL: LazyLock<Vec<String>> = LazyLock::new(|| {
        let mut pool: Vec<String> = Vec::new();
        let mut add = |s: &str| {
            if !pool.iter().any(|p| p == s) {
                pool.push(s.to_string());
            }
        };
        for s in ROOMS.iter().chain(&USERS).chain(&INSTANCES).chain(&EVENTS) {
            add(s);
        }
        for s in RULE_KEYS
            .iter()
            .chain(&USER_ENTITIES)
            .chain(&SERVER_ENTITIES)
        {
            add(s);
        }
        for s in RECOMMENDATIONS
            .iter()
            .chain(&REASONS)
            .chain(&MEMBER_CONTENTS)
        {
            add(s);
        }
        for s in ACL_CONTENTS
            .iter()
            .chain(&["", "Bob", "x", "@mod:x", "m.room.name", "{}"])
        {
            add(s);
        }
        for s in rule_contents() {
            add(&s);
        }
        add(&sha256_base64("@bob:good.net"));
        for s in ["m.room.member", "m.room.server_acl"] {
            add(s);
        }
        for kind in [Kind::User, Kind::Server, Kind::Room] {
            for t in rule_type_names(kind) {
                add(&t);
            }
        }
        pool
    });
    &POOL
}

/// The id of a string of the pool.
pub(crate) fn id(s: &str) -> Id {
    match pool().iter().position(|p| p == s) {
        Some(i) => i as Id,
        None => panic!("{s:?} is not in the pool"),
    }
}

/// One of `strings`, as an id.
pub(crate) fn one_of(strings: &'static [&'static str]) -> BoxedStrategy<Id> {
    prop::sample::select(strings).prop_map(id).boxed()
}

/// A replica's description over the dictionary and the known ids.
pub(crate) type Describe = fn(&Dictionary, &Known) -> ReplicaDescription<Rec>;

/// The DAG of `describe`'s replica over its inputs as sources.
fn dag(describe: Describe, dict: &Dictionary) -> Result<Dag<Rec>, DagError> {
    for (i, s) in pool().iter().enumerate() {
        assert_eq!(dict.intern(s), i as Id, "the pool is interned first");
    }
    let replica = describe(dict, &Known::new(dict));
    let mut descs: Vec<ReplicaDescription<Rec>> = (replica.inputs().iter())
        .map(|i| ReplicaDescription::source(&i.replica, "partition", Rec::partition))
        .collect();
    descs.push(replica);
    Dag::new(descs)
}

/// The contents of each input (in the replica's input order) at one point.
pub(crate) type Point = Vec<BTreeSet<Rec>>;

/// A history: the inputs at the restore point, then after each delta (an input is `None`
/// where it does not change).
pub(crate) type History = (Point, Vec<Vec<Option<BTreeSet<Rec>>>>);

/// Histories of the inputs with the contents `inputs` (one strategy per input), with up to
/// `steps` deltas after the restore point.
pub(crate) fn histories(
    inputs: Vec<BoxedStrategy<BTreeSet<Rec>>>,
    steps: usize,
) -> BoxedStrategy<History> {
    let changes: Vec<BoxedStrategy<Option<BTreeSet<Rec>>>> = (inputs.iter())
        .map(|s| prop::option::weighted(0.7, s.clone()).boxed())
        .collect();
    (inputs, prop::collection::vec(changes, 1..=steps)).boxed()
}

/// Pushes the change of the inputs of `replica` from `from` to `to` as one source delta
/// (empty if nothing changes: every point has its `Seq`).
fn push(
    rt: &mut Runtime<Rec>,
    replica: &str,
    from: &Point,
    to: &Point,
) -> Result<(), TestCaseError> {
    let target = rt.replica(replica).map_err(fail)?;
    let inputs = rt.dag().inputs_of(target).to_vec();
    let mut delta = SourceDelta::new();
    for (input, (old, new)) in inputs.into_iter().zip(from.iter().zip(to)) {
        for r in old.difference(new) {
            delta.remove(input, r.clone());
        }
        for r in new.difference(old) {
            delta.insert(input, r.clone());
        }
    }
    rt.push(delta).map_err(fail)?;
    rt.sync().map_err(fail)
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// The replica's contents, sorted.
fn read(rt: &mut Runtime<Rec>, replica: &str) -> Result<Vec<(Rec, isize)>, TestCaseError> {
    let id = rt.replica(replica).map_err(fail)?;
    let mut rows = rt.read(id, None).map_err(fail)?;
    rows.sort();
    Ok(rows)
}

/// Runs the check for `describe`'s replica with `workers` workers over `history`.
pub(crate) fn check_resume(
    describe: Describe,
    workers: usize,
    history: &History,
) -> Result<(), TestCaseError> {
    let (restore, steps) = history;
    let name = describe(&Dictionary::new(), &Known::new(&Dictionary::new()))
        .name()
        .to_string();
    let dir = tempfile::tempdir().map_err(fail)?;
    let path = dir.path().join("prr.redb");
    let stored = || {
        RuntimeConfig::new()
            .with_workers(workers)
            .with_store(&path)
            .with_chunk_records(2)
    };
    let empty: Point = vec![BTreeSet::new(); restore.len()];
    let mut before = Runtime::start_with(stored(), |d| dag(describe, d)).map_err(fail)?;
    push(&mut before, &name, &empty, restore)?;
    before.shutdown().map_err(fail)?;

    let mut resumed = Runtime::start_with(stored(), |d| dag(describe, d)).map_err(fail)?;
    resumed.sync().map_err(fail)?;
    prop_assert!(
        resumed.resumed().contains(&name),
        "{name} is resumed: {:?}",
        resumed.resumed()
    );
    let fresh_config = RuntimeConfig::new().with_workers(workers);
    let mut fresh = Runtime::start_with(fresh_config, |d| dag(describe, d)).map_err(fail)?;
    push(&mut fresh, &name, &empty, restore)?;
    prop_assert_eq!(
        read(&mut resumed, &name)?,
        read(&mut fresh, &name)?,
        "at the restore point"
    );

    let mut prev = restore.clone();
    for (i, step) in steps.iter().enumerate() {
        let next: Point = (prev.iter().zip(step))
            .map(|(old, new)| new.clone().unwrap_or_else(|| old.clone()))
            .collect();
        push(&mut resumed, &name, &prev, &next)?;
        push(&mut fresh, &name, &prev, &next)?;
        prop_assert_eq!(
            read(&mut resumed, &name)?,
            read(&mut fresh, &name)?,
            "{} after delta {}",
            name,
            i + 1
        );
        prev = next;
    }
    Ok(())
}

/// A replica's resume property test, `tests::resumed_equals_recomputed`, in the replica's
/// file: a doc line for what it guards, then the contents of its inputs (functions of this
/// module), in the replica's input order.
macro_rules! resume_test {
    ($doc:literal, $($input:ident),+ $(,)?) => {
        use proptest::prelude::*;

        use crate::replicas::resume_check::{check_resume, config, histories};

        proptest! {
            #![proptest_config(config())]

            #[doc = $doc]
            #[test]
            fn resumed_equals_recomputed(
                workers in 1..=2usize,
                history in histories(
                    vec![$(crate::replicas::resume_check::$input()),+],
                    3,
                ),
            ) {
                check_resume(super::description, workers, &history)?;
            }
        }
    };
}
pub(crate) use resume_test;

/// The proptest configuration of the resume checks: few, small cases (each starts three
/// runtimes), so that all of them take seconds.
pub(crate) fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    }
}

// Input contents, each valid for its replica.

/// The records of `keyed`, one per key: the last of each.
fn one_per_key<K: Ord>(keyed: impl IntoIterator<Item = (K, Rec)>) -> BTreeSet<Rec> {
    let by_key: std::collections::BTreeMap<K, Rec> = keyed.into_iter().collect();
    by_key.into_values().collect()
}

/// `room_state`: member events, ACL events, rule events of every type, another state event;
/// one per `(room, type, state_key)`.
pub(crate) fn room_state() -> BoxedStrategy<BTreeSet<Rec>> {
    let rule_types: Vec<String> = [Kind::User, Kind::Server, Kind::Room]
        .into_iter()
        .flat_map(rule_type_names)
        .collect();
    let rule_contents: Vec<String> = rule_contents();
    let event = prop_oneof![
        (
            one_of(&USERS),
            prop::sample::select(MEMBER_CONTENTS.to_vec())
        )
            .prop_map(|(user, c)| (id("m.room.member"), user, id(c), false)),
        prop::sample::select(ACL_CONTENTS.to_vec()).prop_map(|c| (
            id("m.room.server_acl"),
            id(""),
            id(c),
            false
        )),
        (
            prop::sample::select(rule_types),
            one_of(&RULE_KEYS),
            prop::sample::select(rule_contents),
            prop::bool::weighted(0.15),
        )
            .prop_map(|(t, key, c, redacted)| (id(&t), key, id(&c), redacted)),
        Just((id("m.room.name"), id(""), id("{}"), false)),
    ];
    let record = (one_of(&ROOMS), event, one_of(&EVENTS)).prop_map(
        |(room, (event_type, state_key, content, redacted), event_id)| {
            let content = if redacted { id("{}") } else { content };
            let mut s = RoomState {
                room,
                event_type,
                state_key,
                event_id,
                sender: id("@mod:x"),
                ts: Some(1),
                content,
                redacted,
                facts: Facts::Other,
            };
            // As the ingest does: facts of the content ("not JSON" reads as an empty object).
            let text = &pool()[content as usize];
            let object = serde_json::from_str(text).unwrap_or_default();
            s.facts = facts_of(&s, &pool()[event_type as usize], &object, &mut |x| id(x));
            Arc::new(s)
        },
    );
    prop::collection::vec(record, 0..10)
        .prop_map(|states| {
            one_per_key(
                (states.into_iter())
                    .map(|s| ((s.room, s.event_type, s.state_key), Rec::RoomState(s))),
            )
        })
        .boxed()
}

/// `instances`: each instance absent, or existing with the rooms it watches and protects.
pub(crate) fn instances() -> BoxedStrategy<BTreeSet<Rec>> {
    let rooms = || prop::collection::btree_set(one_of(&ROOMS), 0..=2);
    let one = prop::option::weighted(0.8, (rooms(), rooms()));
    prop::collection::vec(one, INSTANCES.len())
        .prop_map(|all| {
            let mut out = BTreeSet::new();
            for (instance, rooms) in INSTANCES.iter().zip(all) {
                let Some((watch, protect)) = rooms else {
                    continue;
                };
                let instance = id(instance);
                let rec = |relation, room| Rec::Instance {
                    instance,
                    relation,
                    room,
                };
                out.insert(rec(Relation::Exists, 0));
                out.extend(watch.into_iter().map(|r| rec(Relation::Watch, r)));
                out.extend(protect.into_iter().map(|r| rec(Relation::Protect, r)));
            }
            out
        })
        .boxed()
}

/// A `policy_room` rule: user and server rules of every matcher, with and without a reason.
pub(crate) fn rule() -> BoxedStrategy<Arc<Rule>> {
    let hash = sha256_base64("@bob:good.net");
    let matcher = prop_oneof![
        one_of(&USER_ENTITIES).prop_map(|e| (Kind::User, Some(e), None)),
        Just((Kind::User, None, Some(id(&hash)))),
        one_of(&SERVER_ENTITIES).prop_map(|e| (Kind::Server, Some(e), None)),
    ];
    (
        one_of(&ROOMS),
        one_of(&RULE_KEYS),
        matcher,
        prop::sample::select(RECOMMENDATIONS.to_vec()),
        prop::option::of(one_of(&REASONS)),
        one_of(&EVENTS),
    )
        .prop_map(
            |(room, state_key, (kind, entity, sha256), rec, reason, event_id)| {
                let text = |e: Id| pool()[e as usize].clone();
                let matcher = match entity {
                    None => MatchKind::Hashed,
                    Some(e) if text(e).contains('*') => MatchKind::Glob,
                    Some(_) => MatchKind::Literal,
                };
                Arc::new(Rule {
                    room,
                    kind,
                    state_key,
                    event_type: id(&rule_type_names(kind)[0]),
                    event_id,
                    sender: id("@mod:x"),
                    matcher,
                    entity,
                    sha256,
                    recommendation: id(rec),
                    class: Class::of(rec),
                    reason,
                    compiled: Default::default(),
                })
            },
        )
        .boxed()
}

/// `policy_room`: rules, one per slot `(room, kind, state_key)`.
pub(crate) fn policy_room() -> BoxedStrategy<BTreeSet<Rec>> {
    prop::collection::vec(rule(), 0..8)
        .prop_map(|rules| {
            one_per_key((rules.into_iter()).map(|r| ((r.room, r.kind, r.state_key), Rec::Rule(r))))
        })
        .boxed()
}

/// `room_members`: one membership per `(room, user)`.
pub(crate) fn room_members() -> BoxedStrategy<BTreeSet<Rec>> {
    let membership = prop::sample::select(vec![
        Membership::Join,
        Membership::Join,
        Membership::Invite,
        Membership::Knock,
        Membership::Leave,
        Membership::Ban,
    ]);
    let member = (
        one_of(&ROOMS),
        one_of(&USERS),
        membership,
        prop::option::of(Just(id("Bob"))),
    );
    prop::collection::vec(member, 0..10)
        .prop_map(|members| {
            one_per_key(
                members
                    .into_iter()
                    .map(|(room, user, membership, displayname)| {
                        let member = Rec::Member {
                            room,
                            user,
                            membership,
                            displayname,
                        };
                        ((room, user), member)
                    }),
            )
        })
        .boxed()
}

/// `member_set`: one count per `(instance, user)`.
pub(crate) fn member_set() -> BoxedStrategy<BTreeSet<Rec>> {
    let pair = (one_of(&INSTANCES), one_of(&USERS), 1..=3u32);
    prop::collection::vec(pair, 0..8)
        .prop_map(|pairs| {
            one_per_key(pairs.into_iter().map(|(instance, user, rooms)| {
                let count = Rec::MemberSet {
                    instance,
                    user,
                    rooms,
                };
                ((instance, user), count)
            }))
        })
        .boxed()
}

/// `member_matches`: `(instance, user, rule)` triples.
pub(crate) fn member_matches() -> BoxedStrategy<BTreeSet<Rec>> {
    let m = (one_of(&INSTANCES), one_of(&USERS), rule()).prop_map(|(instance, user, rule)| {
        Rec::Match {
            instance,
            user,
            rule,
        }
    });
    prop::collection::btree_set(m, 0..8).boxed()
}

/// `server_acl`: at most one intent per instance, its entities sorted by text.
pub(crate) fn server_acl() -> BoxedStrategy<BTreeSet<Rec>> {
    let deny = prop::collection::btree_set(prop::sample::select(SERVER_ENTITIES.to_vec()), 0..=3)
        .prop_map(|set| set.into_iter().map(id).collect::<Vec<Id>>());
    prop::collection::vec(prop::option::weighted(0.8, deny), INSTANCES.len())
        .prop_map(|intents| {
            (INSTANCES.iter().zip(intents))
                .filter_map(|(i, deny)| {
                    deny.map(|deny| Rec::Acl {
                        instance: id(i),
                        deny,
                    })
                })
                .collect()
        })
        .boxed()
}

/// `member_bans`: one per `(instance, room, user)`.
pub(crate) fn member_bans() -> BoxedStrategy<BTreeSet<Rec>> {
    let ban = (
        one_of(&INSTANCES),
        one_of(&ROOMS),
        one_of(&USERS),
        one_of(&ROOMS),
        one_of(&EVENTS),
        prop::option::of(one_of(&REASONS)),
    )
        .prop_map(|(instance, room, user, rule_room, rule_event, reason)| {
            let key = (instance, room, user);
            let rule = Arc::new(ChosenRule {
                room: rule_room,
                event: rule_event,
                reason,
            });
            let rec = Rec::Ban {
                instance,
                room,
                user,
                rule,
            };
            (key, rec)
        });
    prop::collection::vec(ban, 0..8)
        .prop_map(one_per_key)
        .boxed()
}

/// `acl_sync`: one per `(instance, room)`.
pub(crate) fn acl_sync() -> BoxedStrategy<BTreeSet<Rec>> {
    let sync = (one_of(&INSTANCES), one_of(&ROOMS), any::<bool>()).prop_map(
        |(instance, room, in_sync)| {
            let rec = Rec::AclSync {
                instance,
                room,
                in_sync,
            };
            ((instance, room), rec)
        },
    );
    prop::collection::vec(sync, 0..6)
        .prop_map(one_per_key)
        .boxed()
}

/// `outcomes`: one per `(instance, room, action, target)`, of every status; an ACL outcome's
/// fingerprint is that of a deny list `server_acl` may hold (sorted by text), so that some
/// serve the current intent.
pub(crate) fn outcomes() -> BoxedStrategy<BTreeSet<Rec>> {
    let deny = prop::collection::btree_set(prop::sample::select(SERVER_ENTITIES.to_vec()), 0..=3)
        .prop_map(acl_fingerprint_of);
    let status = prop::sample::select(vec![
        OutcomeStatus::Done,
        OutcomeStatus::Failed,
        OutcomeStatus::Withdrawn,
        OutcomeStatus::Started,
    ]);
    let outcome = (
        one_of(&INSTANCES),
        one_of(&ROOMS),
        prop::option::of(one_of(&USERS)),
        status,
        deny,
        1u32..3,
    )
        .prop_map(|(instance, room, user, status, fingerprint, attempts)| {
            let (action, target, intent) = match user {
                Some(u) => (Action::Ban, u, 7),
                None => (Action::ServerAcl, id(""), fingerprint),
            };
            let o = Outcome {
                instance,
                room,
                action,
                target,
                status,
                error: None,
                intent_seq: 1,
                attempts,
                at: 0,
                intent,
            };
            ((instance, room, action, target), Rec::Outcome(Arc::new(o)))
        });
    prop::collection::vec(outcome, 0..8)
        .prop_map(one_per_key)
        .boxed()
}
