//! `check`: every checksum and invariant of the store (`prr_persist::Store::check`), plus what
//! only the engine can see: every log entry and revision chunk decodes as this program's
//! records, names replicas it declares, uses only dictionary ids the dictionary holds, chunks
//! are sorted and distinct, the dictionary holds no string twice, and a restore point exists.

use std::sync::Arc;

use crate::api::RuntimeConfig;
use crate::codec::{self, LoggedDelta};
use crate::dag::Dag;
use crate::dictionary::Dictionary;
use crate::error::{DagError, Error};
use crate::record::Record;
use crate::stored::Stored;

/// The problems of the store of `stored` (empty when it is sound).
pub(crate) fn check<R: Record>(stored: &Stored<R>) -> Result<Vec<String>, Error> {
    let store = stored.store("checking the store")?;
    let dag = &stored.dag;
    let ids = stored.id_check();
    let mut problems = store.check(
        |seq, bytes| {
            let logged: LoggedDelta<R> = codec::decode_log(bytes, seq, &ids).map_err(plain)?;
            for (name, _) in logged {
                if dag.id(&name).is_none() {
                    return Err(format!(
                        "it names replica `{name}`, which this program does not declare"
                    ));
                }
            }
            Ok(())
        },
        |replica, as_of, i, bytes| {
            let rows: Vec<(R, isize)> =
                codec::decode_chunk(bytes, replica, as_of, i, &ids).map_err(plain)?;
            if let Some(n) = rows.windows(2).position(|w| w[0].0 >= w[1].0) {
                return Err(format!(
                    "records {n} and {} are not sorted and distinct",
                    n + 1
                ));
            }
            Ok(rows.len() as u64)
        },
    )?;
    if let Err(e) = stored.start_point(stored.last_seq) {
        problems.push(format!("no restore point: {}", plain(e)));
    }
    Ok(problems)
}

/// Checks the store of `config` (opened read-only) without starting a runtime on it, so that
/// damage that keeps a runtime from starting (its dictionary or metadata) is reported like
/// any other: a dictionary that does not load is a problem, and the records are then decoded
/// without checking their ids.
pub(crate) fn check_at<R: Record>(
    config: RuntimeConfig,
    build: impl FnOnce(&Dictionary) -> Result<Dag<R>, DagError>,
) -> Result<Vec<String>, Error> {
    let path = config
        .store
        .clone()
        .ok_or(Error::NoStore("checking the store"))?;
    let store = config.open_store(&path, true)?;
    let mut problems = Vec::new();
    let dictionary = Dictionary::new();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let loaded = store.string_count().map_err(Error::from).and_then(|n| {
        dictionary.load_parallel(n, threads as u64, |from, to, f| {
            Ok(store.for_each_string_in(from, to, f)?)
        })
    });
    if let Err(e) = &loaded {
        problems.push(format!("the dictionary does not load: {}", plain_ref(e)));
    }
    let last_seq = store.last_seq().unwrap_or(0);
    // A damaged quarantine is reported by the store's own check; here, skip what is readable.
    let quarantine = (store.quarantined().unwrap_or_default().into_iter())
        .map(|q| (q.seq, q))
        .collect();
    let mut dag = build(&dictionary)?;
    if loaded.is_err() {
        // Every id would look out of range: only the store's own checks and decoding apply.
        dag = dag.without_record_ids();
    }
    let stored = Stored {
        config: config.with_read_only(true),
        dag: Arc::new(dag),
        dictionary,
        store: Some(Arc::new(store)),
        last_seq,
        quarantine,
    };
    problems.extend(check(&stored)?);
    Ok(problems)
}

/// A damage message without the prefixes of the errors that carry it.
fn plain(e: Error) -> String {
    plain_ref(&e)
}

fn plain_ref(e: &Error) -> String {
    match e {
        Error::Corrupt(m) | Error::Store(prr_persist::Error::Corrupt(m)) => m.clone(),
        e => e.to_string(),
    }
}
