//! The replicas agree with the oracle (a plain recomputation of the spec) on random
//! workloads, at every Seq, with 1 and 2 workers: both as read from the arrangements and as
//! accumulated from the published deltas. Between the workload's deltas the tests act as an
//! effect handler: they read some instances' intents (checked against the oracle too) and
//! record outcomes for some of them, so `outcomes` and `pending` are checked like the rest.

use prr_engine::oracle::DeltaLog;
use prr_engine::{RuntimeConfig, Seq};
use prr_replicas::{
    Action, IntentKey, Intents, Matrix, NewOutcome, OutcomeStatus, Pipeline, REPLICAS, SourceItem,
    parse_line, render_sorted,
};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::oracle::{self, Item, Oracle, Served};
use super::workload::{INSTANCES, random_workload};

/// The spec's replicas (the oracle's names).
const SPEC_REPLICAS: [&str; 12] = [
    "room_state",
    "policy_room",
    "policy_list",
    "room_members",
    "member_set",
    "member_matches",
    "member_bans",
    "server_acl",
    "acl_sync",
    "outcomes",
    "pending",
    "rejects",
];

/// Items as NDJSON lines through the real parser, so parsing is covered too.
pub fn to_source_items(items: &[Item]) -> Vec<SourceItem> {
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| {
            let v = match item {
                Item::Event(v) | Item::Manifest(v) => v,
            };
            parse_line("workload", i as u64 + 1, &v.to_string()).expect("workload items are valid")
        })
        .collect()
}

/// Rejects' `reason` is free text: compare the other fields.
fn comparable(replica: &str, mut rows: Vec<Value>) -> Vec<Value> {
    if replica == "rejects" {
        for r in &mut rows {
            r.as_object_mut().unwrap().remove("reason");
        }
    }
    rows
}

/// What the runs saw, summed over seeds, so that the tests cannot pass vacuously.
#[derive(Debug, Default)]
struct Seen {
    /// `pending` ban records, over every check.
    pending_bans: usize,
    /// `pending` server ACL records, over every check.
    pending_acls: usize,
    /// Outcomes recorded.
    outcomes: usize,
    /// Outcomes recorded for gone intents (serving their earlier outcome's intent).
    gone: usize,
    /// `done` server ACL outcomes recorded.
    done_acls: usize,
    /// `pending` server ACL records whose intent has a `done` outcome (for an earlier deny
    /// list), over every check.
    stale_acls: usize,
}

impl Seen {
    fn assert_not_vacuous(&self) {
        assert!(
            self.pending_bans > 0
                && self.pending_acls > 0
                && self.outcomes > 0
                && self.gone > 0
                && self.done_acls > 0
                && self.stale_acls > 0,
            "the runs exercised too little: {self:?}"
        );
    }
}

/// The oracle's key of an `outcomes` or `pending` row.
fn key_of(row: &Value) -> oracle::IntentKey {
    let field = |f: &str| row[f].as_str().unwrap().to_owned();
    (
        field("instance"),
        field("room_id"),
        field("action"),
        field("target"),
    )
}

/// The oracle's key of an intent.
fn oracle_key(k: &IntentKey) -> oracle::IntentKey {
    (
        k.instance.clone(),
        k.room_id.clone(),
        k.action.as_str().to_owned(),
        k.target.clone(),
    )
}

/// Every replica, read and accumulated from the published deltas, equals the oracle's.
fn check_replicas(
    m: &mut Matrix,
    log: &DeltaLog<prr_replicas::Rec>,
    oracle: &Oracle,
    seq: Seq,
    context: &str,
    seen: &mut Seen,
) {
    let want = oracle.replicas();
    for row in &want["pending"] {
        if row["action"] == "ban" {
            seen.pending_bans += 1;
        } else {
            seen.pending_acls += 1;
            let outcome = oracle.outcome(&key_of(row));
            if outcome.is_some_and(|o| o["status"] == "done") {
                seen.stale_acls += 1;
            }
        }
    }
    for name in SPEC_REPLICAS {
        let expected = comparable(name, want[name].clone());
        let shown = comparable(name, m.show(name, None, None).unwrap());
        assert_eq!(shown, expected, "{context}, {seq}, replica {name} (read)");
        let id = m.runtime().replica(name).unwrap();
        let from_deltas = comparable(
            name,
            render_sorted(m.runtime().dictionary(), &log.contents(id)),
        );
        assert_eq!(
            from_deltas, expected,
            "{context}, {seq}, replica {name} (deltas)"
        );
    }
}

/// The statuses of the outcomes recorded, `done` the most often.
const STATUSES: [OutcomeStatus; 5] = [
    OutcomeStatus::Done,
    OutcomeStatus::Done,
    OutcomeStatus::Failed,
    OutcomeStatus::Withdrawn,
    OutcomeStatus::Started,
];

/// The effect handler's choices, seeded like the workload.
fn handler_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ 0x00ef_fec7)
}

/// A random outcome of the intent `key`, serving the intent `intent` read at `intent_seq`.
fn new_outcome(
    rng: &mut StdRng,
    key: IntentKey,
    intent_seq: u64,
    attempts_before: u32,
    intent: u64,
) -> NewOutcome {
    NewOutcome {
        key,
        status: *STATUSES.choose(rng).unwrap(),
        error: (rng.random_bool(0.4)).then(|| ("M_FORBIDDEN".to_owned(), "no".to_owned())),
        intent_seq,
        attempts: attempts_before + rng.random_range(1..=3),
        at: 1_700_000_000_000 + rng.random_range(0..1_000_000),
        intent,
    }
}

/// An outcome as `outcomes` shows it.
fn outcome_row(o: &NewOutcome) -> Value {
    json!({
        "instance": o.key.instance,
        "room_id": o.key.room_id,
        "action": o.key.action.as_str(),
        "target": o.key.target,
        "status": o.status.as_str(),
        "error": o.error.as_ref().map(|(errcode, error)| json!({"errcode": errcode, "error": error})),
        "intent_seq": o.intent_seq,
        "attempts": o.attempts,
        "at": o.at,
    })
}

/// `instance`'s intents as [`Matrix::intents`] reads them agree with the oracle: the work is
/// its `pending` records, in order, with the ban's reason or the ACL's content and the
/// earlier outcome; the gone intents are its `failed` outcomes that are not pending.
fn check_intents(instance: &str, intents: &Intents, oracle: &Oracle, context: &str) {
    let want = oracle.replicas();
    let pending: Vec<oracle::IntentKey> = (want["pending"].iter())
        .filter(|r| r["instance"] == instance)
        .map(key_of)
        .collect();
    let work: Vec<oracle::IntentKey> = intents.work.iter().map(|w| oracle_key(&w.key)).collect();
    assert_eq!(work, pending, "{context}: {instance}'s work");
    let previous = |k: &oracle::IntentKey| {
        let o = oracle.outcome(k)?;
        Some((o["status"].clone(), o["attempts"].clone()))
    };
    for w in &intents.work {
        let k = oracle_key(&w.key);
        assert_eq!(
            w.previous
                .map(|p| (json!(p.status.as_str()), json!(p.attempts))),
            previous(&k),
            "{context}: {k:?}'s earlier outcome"
        );
        match w.key.action {
            Action::Ban => {
                let ban = (want["member_bans"].iter())
                    .find(|r| r["instance"] == k.0 && r["room_id"] == k.1 && r["user_id"] == k.3)
                    .unwrap_or_else(|| panic!("{context}: {k:?} is pending without its ban"));
                assert_eq!(
                    w.reason.as_deref(),
                    ban["reason"].as_str(),
                    "{context}: {k:?}"
                );
                assert_eq!(w.content, None, "{context}: {k:?}");
            }
            Action::ServerAcl => {
                let acl = (want["server_acl"].iter())
                    .find(|r| r["instance"] == instance)
                    .unwrap();
                let content = json!({
                    "allow": acl["allow"],
                    "deny": acl["deny"],
                    "allow_ip_literals": acl["allow_ip_literals"],
                });
                assert_eq!(w.content, Some(content), "{context}: {k:?}");
                assert_eq!(w.reason, None, "{context}: {k:?}");
            }
        }
    }
    let gone: Vec<_> = (intents.gone.iter())
        .map(|g| {
            let attempts = g.previous.expect("an outcome").attempts;
            (oracle_key(&g.key), json!(attempts))
        })
        .collect();
    let failed: Vec<_> = (oracle.outcomes_of(instance))
        .filter(|(k, o)| {
            (o["status"] == "failed" || o["status"] == "started") && !pending.contains(k)
        })
        .map(|(k, o)| (k.clone(), o["attempts"].clone()))
        .collect();
    assert_eq!(gone, failed, "{context}: {instance}'s gone intents");
}

/// Acts as an effect handler: for some instances, reads their intents (checked against the
/// oracle), records random outcomes for some of their work (serving the intent read) and of
/// their gone intents (serving the intent of their earlier outcome) as one delta, and tells the
/// oracle the same. The delta's Seq, if it recorded anything.
fn record_some_outcomes(
    m: &mut Matrix,
    oracle: &mut Oracle,
    rng: &mut StdRng,
    seen: &mut Seen,
    context: &str,
) -> Option<Seq> {
    let mut outcomes: Vec<(NewOutcome, Served)> = Vec::new();
    for instance in INSTANCES {
        if !rng.random_bool(0.6) {
            continue;
        }
        let intents = m.intents(instance, None, &[]).unwrap();
        check_intents(instance, &intents, oracle, context);
        for w in &intents.work {
            if rng.random_bool(0.5) {
                let before = w.previous.map_or(0, |p| p.attempts);
                let o = new_outcome(rng, w.key.clone(), w.intent_seq, before, w.intent);
                outcomes.push((o, Served::Current));
            }
        }
        for g in &intents.gone {
            let previous = g.previous.expect("an outcome");
            if rng.random_bool(0.5) {
                let seq = m.runtime().last_seq().0;
                let o = new_outcome(rng, g.key.clone(), seq, previous.attempts, previous.intent);
                outcomes.push((o, Served::Previous));
            }
        }
    }
    // Sometimes a second outcome for the same intent in the same delta: the later one wins.
    if let Some((first, served)) = outcomes.first().cloned()
        && rng.random_bool(0.2)
    {
        let (before, intent) = (first.attempts, first.intent);
        let o = new_outcome(rng, first.key, first.intent_seq, before, intent);
        outcomes.push((o, served));
    }
    let news: Vec<NewOutcome> = outcomes.iter().map(|(o, _)| o.clone()).collect();
    let seq = m.record_outcomes(&news).unwrap();
    let rows: Vec<(Value, Served)> = (outcomes.iter())
        .map(|(o, served)| (outcome_row(o), *served))
        .collect();
    oracle.record_outcomes(&rows);
    seen.outcomes += news.len();
    seen.gone += (outcomes.iter())
        .filter(|(_, served)| *served == Served::Previous)
        .count();
    seen.done_acls += (news.iter())
        .filter(|o| o.key.action == Action::ServerAcl && o.status == OutcomeStatus::Done)
        .count();
    seq
}

/// Half the time, [`record_some_outcomes`], then checks every replica.
fn maybe_record_outcomes(
    m: &mut Matrix,
    log: &mut DeltaLog<prr_replicas::Rec>,
    oracle: &mut Oracle,
    rng: &mut StdRng,
    seen: &mut Seen,
    context: &str,
) {
    if !rng.random_bool(0.5) {
        return;
    }
    let context = format!("{context}, outcomes recorded");
    if let Some(seq) = record_some_outcomes(m, oracle, rng, seen, &context) {
        log.advance(m.runtime(), seq)
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        check_replicas(m, log, oracle, seq, &context, seen);
    }
}

fn run(seed: u64, workers: usize, deltas: usize, seen: &mut Seen) {
    let workload = random_workload(seed, deltas);
    let mut rng = handler_rng(seed);
    let mut m = Matrix::start(RuntimeConfig::new().with_workers(workers)).unwrap();
    let mut log = DeltaLog::attach(m.runtime()).unwrap();
    let mut oracle = Oracle::new();
    for (i, delta) in workload.iter().enumerate() {
        oracle.apply(delta);
        let seq = m.ingest(&to_source_items(delta)).unwrap();
        log.advance(m.runtime(), seq)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let context = format!("seed {seed}, {workers} workers, delta {i}\nitems: {delta:#?}");
        check_replicas(&mut m, &log, &oracle, seq, &context, seen);
        maybe_record_outcomes(&mut m, &mut log, &mut oracle, &mut rng, seen, &context);
    }
}

fn seeds() -> std::ops::Range<u64> {
    if std::env::var("CI").is_ok() {
        0..12
    } else {
        0..24
    }
}

#[test]
fn replicas_agree_with_the_oracle_one_worker() {
    let mut seen = Seen::default();
    for seed in seeds() {
        run(seed, 1, 25, &mut seen);
    }
    seen.assert_not_vacuous();
}

#[test]
fn replicas_agree_with_the_oracle_two_workers() {
    let mut seen = Seen::default();
    for seed in seeds() {
        run(seed + 1000, 2, 25, &mut seen);
    }
    seen.assert_not_vacuous();
}

/// Pipelined group commits ([`Pipeline`]: `submit_many`, then waiting for the group before): every delta
/// computed while the next group is committed is still published whole and in order, and the
/// contents at every waited `Seq` are the oracle's.
fn run_pipelined(seed: u64, workers: usize, deltas: usize) {
    let workload = random_workload(seed, deltas);
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig::new()
        .with_workers(workers)
        .with_store(dir.path().join("prr.redb"));
    let mut m = Matrix::start(config).unwrap();
    let mut log = DeltaLog::attach(m.runtime()).unwrap();
    let mut oracle = Oracle::new();
    let mut expected = Vec::new(); // the oracle's replicas after each delta
    let items: Vec<Vec<SourceItem>> = workload.iter().map(|d| to_source_items(d)).collect();
    for delta in &workload {
        oracle.apply(delta);
        expected.push(oracle.replicas());
    }
    let check = |m: &mut Matrix, log: &DeltaLog<_>, seq: prr_engine::Seq| {
        let want = &expected[seq.0 as usize - 1];
        for name in SPEC_REPLICAS {
            let id = m.runtime().replica(name).unwrap();
            let from_deltas = comparable(
                name,
                render_sorted(m.runtime().dictionary(), &log.contents(id)),
            );
            assert_eq!(
                from_deltas,
                comparable(name, want[name].clone()),
                "seed {seed}, {workers} workers, pipelined, {seq}, replica {name} (deltas)"
            );
        }
    };
    let mut start = 0;
    let mut pipeline = Pipeline::new();
    let mut group = 1;
    while start < items.len() {
        let end = (start + group).min(items.len());
        let seqs = pipeline.submit(&mut m, &items[start..end]).unwrap();
        assert_eq!(
            seqs.first().unwrap().0,
            start as u64 + 1,
            "one Seq per delta"
        );
        if let Some(previous) = pipeline.final_through() {
            log.advance(m.runtime(), previous)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            check(&mut m, &log, previous);
        }
        start = end;
        group = group % 4 + 1;
    }
    pipeline.finish(&mut m).unwrap();
    let last = pipeline.final_through().unwrap();
    assert_eq!(last.0, items.len() as u64);
    log.advance(m.runtime(), last)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    check(&mut m, &log, last);
    let want = expected.last().unwrap();
    for name in SPEC_REPLICAS {
        assert_eq!(
            comparable(name, m.show(name, None, None).unwrap()),
            comparable(name, want[name].clone()),
            "seed {seed}, {workers} workers, pipelined, replica {name} (read)"
        );
    }
}

#[test]
fn pipelined_group_commits_agree_with_the_oracle() {
    for seed in seeds().take(6) {
        run_pipelined(seed + 2000, 1, 25);
        run_pipelined(seed + 3000, 2, 25);
    }
}

/// The derived replicas that are stored: all but the sources and the view `policy_list`.
fn derived() -> impl Iterator<Item = &'static str> {
    REPLICAS.into_iter().filter(|n| {
        ![
            "room_state",
            "instances",
            "source_events",
            "source_positions",
            "outcomes",
            "policy_list",
        ]
        .contains(n)
    })
}

/// Restarts at many points: after a clean shutdown, after capturing revisions and dropping the
/// runtime, and after dropping it with source deltas past the newest revisions. Each restore
/// resumes every derived replica from its revision (through its resume computation), so the
/// dataflow holds only what changes after the restore point; from there on, every replica must agree with the oracle at every `Seq`, read
/// and accumulated from the deltas published after the restart. The restores alternate
/// between decoding their seeds ahead (as `prr serve` does) and decoding each when first read
/// whole (as a one-shot command does).
fn run_with_restarts(seed: u64, workers: usize, deltas: usize, seen: &mut Seen) -> usize {
    let workload = random_workload(seed, deltas);
    let mut rng = handler_rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let config = |ahead: bool| {
        RuntimeConfig::new()
            .with_workers(workers)
            .with_store(dir.path().join("prr.redb"))
            .with_decode_ahead(ahead)
    };
    let mut m = Matrix::start(config(true)).unwrap();
    let mut log = DeltaLog::attach(m.runtime()).unwrap();
    let mut oracle = Oracle::new();
    let every = 2 + (seed % 3) as usize;
    let mut resumed = 0;
    for (i, delta) in workload.iter().enumerate() {
        oracle.apply(delta);
        let seq = m.ingest(&to_source_items(delta)).unwrap();
        log.advance(m.runtime(), seq)
            .unwrap_or_else(|e| panic!("seed {seed}, {workers} workers: {e}"));
        let context = format!("seed {seed}, {workers} workers, delta {i}, with restarts");
        check_replicas(&mut m, &log, &oracle, seq, &context, seen);
        if i % every == every - 1 {
            match (i / every + seed as usize) % 3 {
                0 => m.shutdown().unwrap(),
                1 => {
                    m.runtime().capture_revisions().unwrap();
                    drop(m);
                }
                _ => drop(m), // the log after the newest revisions is replayed
            }
            m = Matrix::start(config((i / every).is_multiple_of(2))).unwrap();
            log = DeltaLog::attach(m.runtime()).unwrap();
            let names = m.runtime().resumed();
            if derived().all(|d| names.iter().any(|r| r == d)) {
                resumed += 1;
            }
        }
        // After a restart, sometimes the first delta is outcomes.
        maybe_record_outcomes(&mut m, &mut log, &mut oracle, &mut rng, seen, &context);
    }
    resumed
}

#[test]
fn replicas_resumed_after_restarts_agree_with_the_oracle() {
    let mut resumed = 0;
    let mut seen = Seen::default();
    for seed in seeds().take(8) {
        resumed += run_with_restarts(seed + 4000, 1, 25, &mut seen);
        resumed += run_with_restarts(seed + 5000, 2, 25, &mut seen);
    }
    seen.assert_not_vacuous();
    // Restores after a revision resume every derived replica (not after a restart at seq 0).
    assert!(
        resumed > 20,
        "every derived replica was resumed {resumed} times"
    );
}

/// A revision the restore decodes in the background (a seed) that does not decode: the
/// restore itself succeeds, and the first delta that needs the seed fails with an error that
/// names the revision, not a hang or a bare worker failure.
#[test]
fn a_seed_revision_that_does_not_decode_is_a_clear_error() {
    let workload = random_workload(7, 12);
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        RuntimeConfig::new()
            .with_workers(1)
            .with_store(dir.path().join("prr.redb"))
    };
    let mut m = Matrix::start(config()).unwrap();
    for delta in &workload {
        m.ingest(&to_source_items(delta)).unwrap();
    }
    let as_of = m.runtime().capture_revisions().unwrap().0;
    let info = (m.runtime().revisions().unwrap().into_iter())
        .find(|i| i.replica == "policy_room" && i.as_of == as_of)
        .unwrap();
    // Overwrite the revision with a chunk that does not decode, in the file itself.
    drop(m);
    let store = prr_persist::Store::open(dir.path().join("prr.redb")).unwrap();
    let next_id = store.string_count().unwrap();
    store
        .write_revisions(
            as_of,
            &[prr_persist_write(&info, vec![b"not a revision".to_vec()])],
            next_id,
            &[] as &[&str],
        )
        .unwrap();
    drop(store);
    let mut m = Matrix::start(config()).unwrap();
    m.runtime().sync().unwrap();
    // A new policy rule needs the old rules of its slot (policy_room's seed: room_state) and
    // member_matches' old rules (its seed: policy_room).
    let rule = r#"{"event_id":"$new","room_id":"!list:good.net","type":"m.policy.rule.user","state_key":"new","sender":"@mod:good.net","origin_server_ts":1,"content":{"entity":"@x:evil.org","recommendation":"m.ban","reason":"r"}}"#;
    let items = vec![parse_line("rule.ndjson", 1, rule).unwrap().unwrap()];
    let e = m.ingest(&items).unwrap_err().to_string();
    assert!(
        e.contains("revision (policy_room") && e.contains("does not decode"),
        "{e}"
    );
}

fn prr_persist_write(
    info: &prr_engine::RevisionInfo,
    chunks: Vec<Vec<u8>>,
) -> prr_persist::RevisionWrite {
    prr_persist::RevisionWrite {
        replica: info.replica.clone(),
        logic_version: info.logic_version,
        description_hash: info.description_hash,
        records: info.records,
        chunks: (chunks.into_iter())
            .map(|payload| prr_persist::ChunkWrite::New {
                payload,
                records: 1,
            })
            .collect(),
        overwrite: true,
    }
}
