//! `RuntimeConfig` refuses absurd settings, with the setting, the value and the bound, before
//! the runtime opens or starts anything.

use prr_engine::{Dag, Error, ReplicaDescription, Runtime, RuntimeConfig};

fn dag() -> Dag<u64> {
    Dag::new(vec![ReplicaDescription::source("numbers", "x", |x| *x)]).unwrap()
}

fn refused(config: RuntimeConfig, expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let text = match Runtime::start(config.with_store(&path), dag()) {
        Err(e @ Error::InvalidConfig(_)) => e.to_string(),
        Err(other) => panic!("expected InvalidConfig, got {other:?}"),
        Ok(_) => panic!("an absurd config was accepted, expected {expect:?}"),
    };
    for e in expect {
        assert!(text.contains(e), "{text:?} lacks {e:?}");
    }
    assert!(!path.exists(), "a refused config created the store");
}

#[test]
fn problem_7_workers_without_bound_are_refused() {
    let max = RuntimeConfig::max_workers();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(max, cores * RuntimeConfig::WORKERS_PER_CORE);
    assert!(RuntimeConfig::new().with_workers(max).validate().is_ok());
    refused(
        RuntimeConfig::new().with_workers(max + 1),
        &[
            &format!("workers is {}", max + 1),
            &format!("limit of {max}"),
        ],
    );
    refused(
        RuntimeConfig::new().with_workers(100_000),
        &["workers is 100000", &format!("limit of {max}")],
    );
    refused(RuntimeConfig::new().with_workers(0), &["workers is 0"]);
}

#[test]
fn problem_7_other_absurd_settings_are_refused_not_clamped() {
    refused(
        RuntimeConfig::new().with_keep_revisions(0),
        &["keep_revisions is 0"],
    );
    refused(
        RuntimeConfig::new().with_chunk_records(0),
        &["chunk_records is 0"],
    );
    refused(
        RuntimeConfig::new().with_chunk_records(RuntimeConfig::MAX_CHUNK_RECORDS + 1),
        &[
            "chunk_records",
            &RuntimeConfig::MAX_CHUNK_RECORDS.to_string(),
        ],
    );
    refused(
        RuntimeConfig::new().with_revision_every(Some(0)),
        &["revision_every is Some(0)"],
    );
    // The bounds themselves are accepted, and the defaults are valid.
    let edge = RuntimeConfig::new()
        .with_keep_revisions(1)
        .with_chunk_records(RuntimeConfig::MAX_CHUNK_RECORDS)
        .with_revision_every(Some(1));
    assert!(edge.validate().is_ok());
    assert!(RuntimeConfig::new().validate().is_ok());
    let rt = Runtime::start(RuntimeConfig::new().with_workers(1), dag()).unwrap();
    rt.shutdown().unwrap();
}
