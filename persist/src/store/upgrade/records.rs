//! The records step of an upgrade: the records of a format before 6, in revision chunks and
//! source-log entries, are rewritten by the program that knows them (a [`RecordUpgrade`]).
//! This crate sees records as opaque bytes: it hands each chunk payload and log entry to the
//! program, with the dictionary, and stores what comes back. Every chunk and log entry is then
//! stored packed (format 7, see `packed`), whatever its format.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::super::chunks_ahead::CHUNKS_AHEAD;
use super::super::revisions::{CHUNKS, REVISIONS, RevisionInfo, chunk_key};
use super::super::strings::{STRINGS, for_each_in, put_in};
use super::super::{KEY_DICT_LEN, LOG, META, read_meta_u64, sealed, sealed_u64};
use crate::Error;

/// The first format whose records the program need not rewrite: format 6 gave the Matrix
/// replicas' `room_state` records their facts; format 7 changed only how values are kept.
const RECORDS_CHANGED_BEFORE: u32 = 6;

/// How a program rewrites its records of an older format for the current one: `prr`'s Matrix
/// replicas give every `room_state` record the facts parsed from its content at format 6.
pub trait RecordUpgrade {
    /// The payload of a revision chunk written by format `from` (its record count, then its
    /// records), rewritten; `None` when it is the same. An `Err` says why it cannot be read,
    /// and fails the upgrade.
    fn chunk(
        &self,
        from: u32,
        payload: &[u8],
        strings: &mut UpgradeStrings,
    ) -> Result<Option<Vec<u8>>, String>;

    /// The payload of a source-log entry written by format `from`, rewritten; `None` when it
    /// is the same.
    fn log_entry(
        &self,
        from: u32,
        payload: &[u8],
        strings: &mut UpgradeStrings,
    ) -> Result<Option<Vec<u8>>, String>;

    /// Called as the rewriting goes: `done` of the `total` chunks and log entries handed over
    /// so far (the last call has `done == total`), for a progress line.
    fn progress(&self, _done: u64, _total: u64) {}
}

/// Records that are the same in every format: for stores whose records are opaque to their
/// program (this crate's tests, a program that never changed its records).
pub struct RecordsUnchanged;

impl RecordUpgrade for RecordsUnchanged {
    fn chunk(&self, _: u32, _: &[u8], _: &mut UpgradeStrings) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }

    fn log_entry(
        &self,
        _: u32,
        _: &[u8],
        _: &mut UpgradeStrings,
    ) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
}

/// The dictionary during an upgrade: its strings by id, and the strings the upgrade adds
/// (stored with it, in the same transaction).
pub struct UpgradeStrings {
    by_id: Vec<Option<String>>,
    /// Id by string, built at the first [`UpgradeStrings::intern`].
    index: Option<HashMap<String, u64>>,
    /// The ids handed out before the upgrade.
    stored: u64,
}

impl UpgradeStrings {
    /// A dictionary of the given strings (`by_id[id]`, `None` for a collected id); tests.
    pub fn of(by_id: Vec<Option<String>>) -> Self {
        let stored = by_id.len() as u64;
        UpgradeStrings {
            by_id,
            index: None,
            stored,
        }
    }

    /// The string of `id`, if the dictionary holds one.
    pub fn get(&self, id: u64) -> Option<&str> {
        self.by_id.get(usize::try_from(id).ok()?)?.as_deref()
    }

    /// The id of `s`, added if the dictionary does not hold it.
    pub fn intern(&mut self, s: &str) -> u64 {
        let by_id = &self.by_id;
        let index = self.index.get_or_insert_with(|| {
            (by_id.iter().enumerate())
                .filter_map(|(id, s)| s.as_ref().map(|s| (s.clone(), id as u64)))
                .collect()
        });
        if let Some(id) = index.get(s) {
            return *id;
        }
        let id = self.by_id.len() as u64;
        index.insert(s.to_string(), id);
        self.by_id.push(Some(s.to_string()));
        id
    }

    /// The strings added, in id order from the first id after the stored ones.
    fn added(&self) -> Vec<&str> {
        (self.by_id[self.stored as usize..].iter())
            .map(|s| s.as_deref().unwrap_or_default())
            .collect()
    }
}

/// Rewrites the records of a store of format `from` with `records` (before format 6), in
/// `txn`: every chunk a revision lists (with the headers that list it), every log entry, and
/// the new strings; every chunk and log entry is stored packed. The chunks that no revision
/// lists (written ahead by a capture that never finished) are dropped with their notes, as
/// garbage collection would.
pub(in super::super) fn records_in(
    txn: &WriteTransaction,
    from: u32,
    records: &dyn RecordUpgrade,
) -> Result<(), Error> {
    let dict_len = read_meta_u64(&txn.open_table(META)?, KEY_DICT_LEN)?;
    let mut by_id: Vec<Option<String>> = vec![None; usize::try_from(dict_len).unwrap_or(0)];
    for_each_in(&txn.open_table(STRINGS)?, 0, dict_len, |id, s| {
        by_id[id as usize] = Some(s.to_string());
    })?;
    let mut strings = UpgradeStrings::of(by_id);
    let refused = |what: String, why: String| {
        Error::Corrupt(format!(
            "{what}: its records of format {from} cannot be upgraded: {why}"
        ))
    };
    // The revisions' headers, and the chunks they list.
    let mut headers: Vec<RevisionInfo> = Vec::new();
    for entry in txn.open_table(REVISIONS)?.iter()? {
        let (k, v) = entry?;
        let (replica, as_of) = k.value();
        headers.push(RevisionInfo::decode(replica, as_of, v.value())?);
    }
    let listed: BTreeSet<u128> = (headers.iter())
        .flat_map(|h| h.chunks.iter().map(|c| c.key))
        .collect();
    let mut moved: BTreeMap<u128, u128> = BTreeMap::new();
    let total = listed.len() as u64 + txn.open_table(LOG)?.len()?;
    let mut done = 0u64;
    let mut step = || {
        done += 1;
        records.progress(done, total);
    };
    {
        let mut chunks = txn.open_table(CHUNKS)?;
        let all = (chunks.iter()?)
            .map(|e| e.map(|(k, _)| k.value()))
            .collect::<Result<Vec<u128>, _>>()?;
        // The chunks written packed so far (under their new keys): not read again as raw.
        let mut fresh = BTreeSet::new();
        let mut stale = Vec::new();
        for key in all {
            if !listed.contains(&key) {
                stale.push(key);
                continue;
            }
            if fresh.contains(&key) {
                // Another chunk's new contents hashed to this key: what it holds is new.
                step();
                continue;
            }
            let what = || format!("table chunks: chunk {key:032x}");
            let Some(raw) = chunks.get(key)?.map(|v| v.value().to_vec()) else {
                continue;
            };
            let payload = sealed::chunk(key).open(&raw, what)?;
            let new = match from < RECORDS_CHANGED_BEFORE {
                true => (records.chunk(from, payload, &mut strings))
                    .map_err(|why| refused(what(), why))?,
                false => None,
            };
            step();
            let (new_key, new) = match &new {
                Some(new) => (chunk_key(new), new.as_slice()),
                None => (key, payload),
            };
            if !fresh.contains(&new_key) {
                chunks.insert(new_key, sealed::chunk(new_key).seal_packed(new).as_slice())?;
                fresh.insert(new_key);
            }
            if new_key != key {
                moved.insert(key, new_key);
                stale.push(key);
            }
        }
        for key in stale.into_iter().filter(|k| !fresh.contains(k)) {
            chunks.remove(key)?;
        }
        let mut missing = listed.iter().filter(|k| !moved.contains_key(k));
        if let Some(key) = missing.find(|k| chunks.get(**k).ok().flatten().is_none()) {
            return Err(Error::Corrupt(format!(
                "table chunks: chunk {key:032x}, listed by a revision, is missing"
            )));
        }
    }
    let _ = txn.delete_table(CHUNKS_AHEAD)?;
    {
        let mut revs = txn.open_table(REVISIONS)?;
        for mut h in headers {
            if !h.chunks.iter().any(|c| moved.contains_key(&c.key)) {
                continue;
            }
            for c in &mut h.chunks {
                c.key = moved.get(&c.key).copied().unwrap_or(c.key);
            }
            revs.insert((h.replica.as_str(), h.as_of), h.encode().as_slice())?;
        }
    }
    super::rewrite_log_in(txn, |seq, raw| {
        let what = || format!("table log: entry at seq {seq}");
        let payload = sealed::log(seq).open(raw, what)?;
        let new = match from < RECORDS_CHANGED_BEFORE {
            true => (records.log_entry(from, payload, &mut strings))
                .map_err(|why| refused(what(), why))?,
            false => None,
        };
        step();
        Ok(Some(
            sealed::log(seq).seal_packed(new.as_deref().unwrap_or(payload)),
        ))
    })?;
    let added = strings.added();
    if !added.is_empty() {
        put_in(txn, dict_len, &added, &BTreeMap::new())?;
        txn.open_table(META)?.insert(
            KEY_DICT_LEN,
            sealed_u64(KEY_DICT_LEN, dict_len + added.len() as u64).as_slice(),
        )?;
    }
    Ok(())
}
