//! `Store::check`: every checksum and every invariant of the store that can be seen without
//! knowing what the opaque values encode (the caller checks that, through its closures).

use std::collections::BTreeMap;

use redb::{ReadableTable, ReadableTableMetadata};

use super::{
    CHUNKS, DICT, KEY_DICT_LEN, KEY_LAST_SEQ, LOG, META, REVISIONS, RevisionInfo, Store, callback,
    contained, open_chunk, open_log, open_string, open_u64,
};
use crate::Error;

impl Store {
    /// Checks the store: every value's checksum; the metadata; the dictionary's ids dense from 0
    /// up to `dict_len` and its strings UTF-8; the log contiguous up to `last_seq`; each
    /// revision's chunks numbered `0..chunks` as its header says, holding `records` records,
    /// and `as_of <= last_seq`; no chunk without a header. `decode_log` checks a log entry's
    /// payload (given its seq); `decode_chunk` a chunk's (given its replica, `as_of` and
    /// number) and returns its number of records. Returns the problems found, each naming the
    /// table and the entry (empty when the store is sound); a part of the file the storage
    /// library fails to read is a problem too.
    pub fn check(
        &self,
        mut decode_log: impl FnMut(u64, &[u8]) -> Result<(), String>,
        mut decode_chunk: impl FnMut(&str, u64, u32, &[u8]) -> Result<u64, String>,
    ) -> Result<Vec<String>, Error> {
        let mut problems = Vec::new();
        let note = |r: Result<(), Error>, problems: &mut Vec<String>| {
            if let Err(e) = r {
                problems.push(match e {
                    Error::Corrupt(m) => m,
                    e => e.to_string(),
                });
            }
        };
        let meta = |key: &str, problems: &mut Vec<String>| {
            let r = contained("meta", || {
                let txn = self.begin_read()?;
                let meta = txn.open_table(META)?;
                let v = meta
                    .get(key)?
                    .ok_or_else(|| Error::Corrupt(format!("table meta: `{key}` is missing")))?;
                open_u64(key, v.value())
            });
            match r {
                Ok(v) => Some(v),
                Err(e) => {
                    note(Err(e), problems);
                    None
                }
            }
        };
        let last_seq = meta(KEY_LAST_SEQ, &mut problems);
        let dict_len = meta(KEY_DICT_LEN, &mut problems);
        let r = contained("dictionary", || {
            let txn = self.begin_read()?;
            let dict = txn.open_table(DICT)?;
            let mut next = 0u64;
            for entry in dict.iter()? {
                let (k, v) = entry?;
                let id = k.value();
                if id != next {
                    problems.push(format!(
                        "table dictionary: id {id} follows id {}: ids must be dense from 0",
                        next as i64 - 1
                    ));
                }
                if let Err(Error::Corrupt(m)) = open_string(id, v.value()) {
                    problems.push(m);
                }
                next = id + 1;
            }
            if let Some(n) = dict_len
                && dict.len()? != n
            {
                problems.push(format!(
                    "table dictionary: holds {} strings, meta `dict_len` says {n}",
                    dict.len()?
                ));
            }
            Ok(())
        });
        note(r, &mut problems);
        let r = contained("log", || {
            let txn = self.begin_read()?;
            let log = txn.open_table(LOG)?;
            let mut previous: Option<u64> = None;
            for entry in log.iter()? {
                let (k, v) = entry?;
                let seq = k.value();
                if seq == 0 || last_seq.is_some_and(|l| seq > l) {
                    problems.push(format!(
                        "table log: entry at seq {seq} is outside 1..={}",
                        last_seq.map_or("?".into(), |l| l.to_string())
                    ));
                }
                if let Some(p) = previous
                    && seq != p + 1
                {
                    problems.push(format!("table log: a gap between seq {p} and seq {seq}"));
                }
                previous = Some(seq);
                match open_log(seq, v.value()) {
                    Ok(payload) => {
                        if let Err(e) = callback(|| decode_log(seq, payload)) {
                            problems.push(format!(
                                "table log: entry at seq {seq} does not decode: {e}"
                            ));
                        }
                    }
                    Err(Error::Corrupt(m)) => problems.push(m),
                    Err(e) => return Err(e),
                }
            }
            if let (Some(p), Some(l)) = (previous, last_seq)
                && p != l
            {
                problems.push(format!(
                    "table log: ends at seq {p}, meta `last_seq` says {l}"
                ));
            }
            Ok(())
        });
        note(r, &mut problems);
        // Headers, then chunks: every chunk checked, counted against its header.
        let mut headers: BTreeMap<(String, u64), Option<RevisionInfo>> = BTreeMap::new();
        let r = contained("revisions", || {
            let txn = self.begin_read()?;
            let revs = txn.open_table(REVISIONS)?;
            for entry in revs.iter()? {
                let (k, v) = entry?;
                let (replica, as_of) = k.value();
                match RevisionInfo::decode(replica, as_of, v.value()) {
                    Ok(info) => {
                        if last_seq.is_some_and(|l| as_of > l) {
                            problems.push(format!(
                                "table revisions: revision ({replica}, {as_of}) is newer than the last seq {}",
                                last_seq.unwrap_or(0)
                            ));
                        }
                        headers.insert((replica.to_string(), as_of), Some(info));
                    }
                    Err(Error::Corrupt(m)) => {
                        problems.push(m);
                        headers.insert((replica.to_string(), as_of), None);
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        note(r, &mut problems);
        // Per revision: (chunks seen in order, records decoded, all chunks decoded).
        let mut seen: BTreeMap<(String, u64), (u32, u64, bool)> = BTreeMap::new();
        let r = contained("revision_chunks", || {
            let txn = self.begin_read()?;
            let chunks = txn.open_table(CHUNKS)?;
            for entry in chunks.iter()? {
                let (k, v) = entry?;
                let (replica, as_of, i) = k.value();
                let key = (replica.to_string(), as_of);
                if !headers.contains_key(&key) {
                    problems.push(format!(
                        "table revision_chunks: chunk {i} of revision ({replica}, {as_of}), which has no header"
                    ));
                    continue;
                }
                let s = seen.entry(key).or_insert((0, 0, true));
                if i != s.0 {
                    problems.push(format!(
                        "table revision_chunks: revision ({replica}, {as_of}) has chunk {i} where chunk {} belongs",
                        s.0
                    ));
                }
                s.0 = i.saturating_add(1);
                match open_chunk(replica, as_of, i, v.value()) {
                    Ok(payload) => match callback(|| decode_chunk(replica, as_of, i, payload)) {
                        Ok(n) => s.1 += n,
                        Err(e) => {
                            s.2 = false;
                            problems.push(format!(
                                "table revision_chunks: revision ({replica}, {as_of}) chunk {i} does not decode: {e}"
                            ));
                        }
                    },
                    Err(Error::Corrupt(m)) => {
                        s.2 = false;
                        problems.push(m);
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        note(r, &mut problems);
        for ((replica, as_of), info) in &headers {
            let Some(info) = info else { continue };
            let (chunks, records, whole) = seen
                .get(&(replica.clone(), *as_of))
                .copied()
                .unwrap_or((0, 0, true));
            if chunks != info.chunks {
                problems.push(format!(
                    "table revision_chunks: revision ({replica}, {as_of}) has {chunks} chunks, its header says {}",
                    info.chunks
                ));
            } else if whole && records != info.records {
                problems.push(format!(
                    "table revision_chunks: revision ({replica}, {as_of}) holds {records} records, its header says {}",
                    info.records
                ));
            }
        }
        Ok(problems)
    }
}
